// JT/T 808 message bodies a sanitation fleet uses: parsers for what terminals send, builders
// for what the platform sends. Pure code: bytes in, structs or a precise error out. Stateless.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "core/status.h"
#include "jt808/frame.h"

namespace sanigate::dev::jt808 {

namespace msg {
inline constexpr uint16_t kTerminalResponse = 0x0001;
inline constexpr uint16_t kHeartbeat = 0x0002;
inline constexpr uint16_t kLogout = 0x0003;
inline constexpr uint16_t kTerminalAttributes = 0x0107;
inline constexpr uint16_t kUpgradeResult = 0x0108;
inline constexpr uint16_t kRegister = 0x0100;
inline constexpr uint16_t kAuthenticate = 0x0102;
inline constexpr uint16_t kLocation = 0x0200;
inline constexpr uint16_t kPositionReply = 0x0201;
inline constexpr uint16_t kBatchLocation = 0x0704;
inline constexpr uint16_t kPlatformResponse = 0x8001;
inline constexpr uint16_t kRegisterResponse = 0x8100;
inline constexpr uint16_t kSetParams = 0x8103;
inline constexpr uint16_t kQueryAttributes = 0x8107;
inline constexpr uint16_t kUpgradePackage = 0x8108;
inline constexpr uint16_t kPositionQuery = 0x8201;
inline constexpr uint16_t kAlarmConfirm = 0x8203;
inline constexpr uint16_t kTextMessage = 0x8300;
}  // namespace msg

// Results of 0x8001 / 0x0001.
enum class ResponseResult : uint8_t { kOk = 0, kFail = 1, kMessageError = 2, kUnsupported = 3, kAlarmConfirmed = 4 };
// Results of 0x8100.
enum class RegisterResult : uint8_t {
  kOk = 0, kVehicleRegistered = 1, kVehicleUnknown = 2, kTerminalRegistered = 3, kTerminalUnknown = 4
};

namespace alarm_bit {
inline constexpr int kSos = 0, kOverspeed = 1, kFatigue = 2, kGnssFault = 4, kGnssAntennaOpen = 5,
                     kGnssAntennaShort = 6, kPowerLow = 7, kPowerLost = 8, kFuelAbnormal = 25,
                     kCollision = 29, kRollover = 30;
}
namespace status_bit {
inline constexpr int kAcc = 0, kPositioned = 1, kSouth = 2, kWest = 3;
}

struct Location {
  uint32_t alarm = 0;
  uint32_t status = 0;
  double lat = 0, lon = 0;  // signed WGS-84 degrees (hemispheres from the status bits)
  uint16_t altitude_m = 0;
  double speed_kmh = 0;
  uint16_t heading_deg = 0;
  int64_t ts_ms = 0;  // UTC; the terminal sends GMT+8
  std::optional<double> odometer_km;      // item 0x01
  std::optional<double> fuel_l;           // item 0x02
  std::optional<uint8_t> signal_strength;  // item 0x30
  std::optional<uint8_t> satellites;       // item 0x31
  bool acc_on() const { return status & (1u << status_bit::kAcc); }
  bool positioned() const { return status & (1u << status_bit::kPositioned); }
  bool alarm_set(int bit) const { return alarm & (1u << bit); }
};

struct Registration {
  uint16_t province = 0, city = 0;
  std::string maker, model, terminal_id;  // ASCII, padding removed
  uint8_t plate_color = 0;
  std::string plate;  // UTF-8 (converted from GBK); the VIN when plate_color is 0 (2019)
};

struct Authentication {
  std::string code;
  std::string imei, software;  // 2019 only
};

struct TerminalResponse {
  uint16_t reply_serial = 0;
  uint16_t reply_id = 0;
  uint8_t result = 0;
};

struct BatchLocation {
  bool backfill = false;  // type 1: blind-area back-fill (points stored while out of coverage)
  std::vector<Location> points;
  std::vector<std::string> bad_points;  // why each unreadable point was skipped
};

struct PositionReply {
  uint16_t reply_serial = 0;
  Location location;
};

// 0x8108 upgrade types (decimal 0, 12, 52 in the standard's table).
namespace upgrade_type {
inline constexpr uint8_t kTerminal = 0x00, kIcCardReader = 0x0C, kBeidouModule = 0x34;
}
// 0x0108 results.
namespace upgrade_result {
inline constexpr uint8_t kSuccess = 0, kFailed = 1, kCancelled = 2;
}

// 0x8108 "issue terminal upgrade package": type BYTE | manufacturer id BYTE[5] (2019: BYTE[11]) |
// version length BYTE | version STRING | package length DWORD | package. Usually sent as a
// subpackaged message (each packet answered by 0x0001 with reply id 0x8108).
struct UpgradePackage {
  uint8_t type = upgrade_type::kTerminal;
  std::string maker;    // ASCII, NUL padding removed
  std::string version;  // UTF-8 (GBK on the wire)
  Bytes package;
};
// Width of the manufacturer id in 0x8108: 5 bytes in 2013; 11 in 2019, as in the 2019 0x0100
// (the 2019 text's table is read both ways by implementations; SmallChi/JT808 and
// hylexus/xtream-codec use 11 for 2019, and so do we).
size_t UpgradeMakerWidth(bool v2019);

// 0x0108 "terminal upgrade result": type BYTE | result BYTE (0 success, 1 failed, 2 cancelled).
struct UpgradeResult {
  uint8_t type = upgrade_type::kTerminal;
  uint8_t result = upgrade_result::kSuccess;
};

// 0x0107 "query terminal attributes" answer (to 0x8107, whose body is empty).
// terminal type WORD | manufacturer BYTE[5] | model BYTE[20] (2019: [30]) | terminal id BYTE[7]
// (2019: [30]) | ICCID BCD[10] | hw version length BYTE | hw version STRING | fw version length
// BYTE | fw version STRING | GNSS attributes BYTE | communication attributes BYTE.
struct TerminalAttributes {
  uint16_t terminal_type = 0;
  std::string maker, model, terminal_id;  // ASCII, padding removed
  std::string iccid;                      // 20 hex digits of the BCD (digits for a valid ICCID)
  std::string hw_version, fw_version;     // UTF-8 (GBK on the wire)
  uint8_t gnss = 0, comm = 0;
};

Result<Location> ParseLocation(std::span<const uint8_t> body);
Result<Registration> ParseRegistration(std::span<const uint8_t> body, bool v2019);
Result<Authentication> ParseAuthentication(std::span<const uint8_t> body, bool v2019);
Result<TerminalResponse> ParseTerminalResponse(std::span<const uint8_t> body);
Result<BatchLocation> ParseBatchLocation(std::span<const uint8_t> body);
Result<PositionReply> ParsePositionReply(std::span<const uint8_t> body);
Result<UpgradeResult> ParseUpgradeResult(std::span<const uint8_t> body);
// 2019 bodies are read with the standard's 5-byte manufacturer id; a body that only fits with an
// 11-byte one (as some 2019 terminals send, like their 0x0100) is read that way.
Result<TerminalAttributes> ParseTerminalAttributes(std::span<const uint8_t> body, bool v2019);

// "YYMMDDhhmmss" BCD in GMT+8 -> UTC ms since the epoch. Years are 2000..2099.
Result<int64_t> TimeFromBcd(std::span<const uint8_t> bcd6);
Bytes BcdFromTime(int64_t utc_ms);  // the inverse, for simulators

Bytes BuildPlatformResponse(uint16_t reply_serial, uint16_t reply_id, ResponseResult result);
Bytes BuildRegisterResponse(uint16_t reply_serial, RegisterResult result, const std::string& auth_code);
// 0x8103: terminal parameters as DWORDs (report intervals, heartbeat, overspeed limit...).
Bytes BuildSetParams(const std::vector<std::pair<uint32_t, uint32_t>>& dword_params);
// 0x8203: confirms alarms (mask of alarm bits) for the report with `alarm_serial` (0 = all).
Bytes BuildAlarmConfirm(uint16_t alarm_serial, uint32_t alarm_mask);
// 0x8300: text to the driver's display (and read aloud). Fails if the text has no GBK form.
Result<Bytes> BuildTextMessage(const std::string& utf8_text, bool v2019);
// 0x8108 body up to (without) the package bytes, for a package of `package_length` bytes that the
// caller streams after it. Fails on a manufacturer id longer than its field, a version without a
// GBK form or longer than 255 bytes.
Result<Bytes> BuildUpgradePackageHead(uint8_t type, const std::string& maker, const std::string& utf8_version,
                                      uint32_t package_length, bool v2019);
// The whole 0x8108 body (head + package); split it with SplitIntoPackets.
Result<Bytes> BuildUpgradePackage(const UpgradePackage& p, bool v2019);
// 0x8107: the body is empty.
Bytes BuildQueryAttributes();
// How many packets of at most `max_packet_body` bytes a body needs (at least 1).
size_t PacketCount(size_t body_bytes, size_t max_packet_body);

// Builders of terminal messages, for simulators and tests.
Bytes BuildLocation(const Location& loc);
Bytes BuildRegistration(const Registration& reg, bool v2019);
Bytes BuildAuthentication(const Authentication& auth, bool v2019);
Bytes BuildTerminalResponse(const TerminalResponse& r);
Bytes BuildBatchLocation(const std::vector<Location>& points, bool backfill);
Bytes BuildUpgradeResult(const UpgradeResult& r);
Result<Bytes> BuildTerminalAttributes(const TerminalAttributes& a, bool v2019);
// The terminal side of 0x8108 (the reassembled body).
Result<UpgradePackage> ParseUpgradePackage(std::span<const uint8_t> body, bool v2019);

// GBK <-> UTF-8 (glibc iconv). JT/T 808 STRING fields are GBK.
Result<std::string> GbkToUtf8(std::span<const uint8_t> gbk);
Result<Bytes> Utf8ToGbk(const std::string& utf8);

// Names of the terminal parameters `set_params` accepts, with their JT/T 808 ids.
std::optional<uint32_t> ParamId(const std::string& name);
std::vector<std::string> ParamNames();

}  // namespace sanigate::dev::jt808
