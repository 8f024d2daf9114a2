// LoRaWAN 1.0.x PHYPayload codec: data frames (parse, MIC, FRMPayload encryption, 32-bit FCnt
// reconstruction, building), Join Request (parse, MIC), Join Accept (build, encrypt; and the
// device-side decrypt for simulators) and session-key derivation. Bytes in, frames or a precise
// error out; no I/O and no state, so thread-safe. Layouts: protocols.md §3 (LoRaWAN 1.0.3 §4, §6).
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "core/status.h"
#include "lorawan/lorawan_crypto.h"

namespace sanigate::dev::lorawan {

// MHDR bits 7..5 (LoRaWAN 1.0.3 §4.2.1).
enum class MType : uint8_t {
  kJoinRequest = 0,
  kJoinAccept = 1,
  kUnconfirmedUp = 2,
  kUnconfirmedDown = 3,
  kConfirmedUp = 4,
  kConfirmedDown = 5,
  kRfu = 6,
  kProprietary = 7,
};
const char* MTypeName(MType t);
bool IsDataFrame(MType t);
bool IsUplink(MType t);  // join request, unconfirmed up, confirmed up

enum class Direction : uint8_t { kUp = 0, kDown = 1 };  // the Dir byte of the A and B0 blocks

// The frame counter gap beyond which a frame is dropped: LoRaWAN 1.0.0-1.0.3 MAX_FCNT_GAP. 1.0.4
// removed it (a gap limit of 0 below means none).
inline constexpr uint32_t kMaxFCntGap = 16384;

// The MType of a PHYPayload, without parsing the rest. Empty input or Major != 0 is an error.
Result<MType> PeekMType(std::span<const uint8_t> phy);

// FCtrl as on air; bit 4 means ClassB in uplinks (1.0.3) and FPending in downlinks.
struct FCtrl {
  uint8_t raw = 0;
  bool adr() const { return raw & 0x80; }
  bool adr_ack_req() const { return raw & 0x40; }  // uplink only (RFU downlink)
  bool ack() const { return raw & 0x20; }
  bool class_b() const { return raw & 0x10; }    // uplink
  bool f_pending() const { return raw & 0x10; }  // downlink
  uint8_t fopts_len() const { return raw & 0x0F; }
};

struct DataFrame {
  MType mtype = MType::kUnconfirmedUp;
  uint32_t dev_addr = 0;  // numeric: 0x260B1234 travels as 34 12 0B 26
  FCtrl fctrl;
  uint16_t fcnt16 = 0;  // the 16 LSBs of the counter; the rest is reconstructed
  Bytes fopts;          // MAC commands in the clear (1.0.x)
  std::optional<uint8_t> fport;
  Bytes frm_payload;  // still encrypted, as on air
  Mic mic{};
  Bytes mic_input;  // MHDR .. end of FRMPayload: what the MIC covers

  Direction direction() const;
};

// Parses a data frame (MType 2..5). Checks: Major 0 (LoRaWAN R1), length, FOptsLen fits, FPort 0
// carries no FOpts. It does not check the MIC: that needs the session and the 32-bit counter.
Result<DataFrame> ParseDataFrame(std::span<const uint8_t> phy);

// MIC of a data frame: AES-CMAC(NwkSKey, B0 | msg)[0..3] with
// B0 = 49 | 00000000 | Dir | DevAddr LE | FCnt32 LE | 00 | len(msg). msg is at most 255 bytes.
Result<Mic> ComputeDataMic(const Key& nwk_s_key, Direction dir, uint32_t dev_addr, uint32_t fcnt32,
                           std::span<const uint8_t> msg);
// True when `frame`'s MIC matches under `fcnt32`; an error only for library failures.
Result<bool> VerifyDataMic(const DataFrame& frame, const Key& nwk_s_key, uint32_t fcnt32);

// FRMPayload encryption; the same call decrypts (XOR with AES-ECB(K, A1) | AES-ECB(K, A2) ...).
Result<Bytes> CryptFrmPayload(const Key& key, Direction dir, uint32_t dev_addr, uint32_t fcnt32,
                              std::span<const uint8_t> data);

struct SessionKeys {
  Key nwk_s_key{};
  Key app_s_key{};
};

// Decrypts `frame`'s FRMPayload with the key its FPort selects (0 -> NwkSKey, else AppSKey).
// A frame without FPort has no payload: the result is empty.
Result<Bytes> DecryptFrmPayload(const DataFrame& frame, const SessionKeys& keys, uint32_t fcnt32);

// 32-bit counter reconstruction from the received 16 LSBs and the last accepted counter.
enum class FCntVerdict {
  kNew,          // ahead of the last one by 1..kMaxFCntGap-1: check the MIC with `fcnt32`
  kRepeat,       // equal to the last: a retransmission or a copy from another concentrator
  kReplay,       // behind the last (nearer behind than ahead): an old frame played again
  kGapTooLarge,  // ahead by kMaxFCntGap or more (and nearer ahead): too many frames lost
  kExhausted,    // would run past 0xFFFFFFFF: the session must be renewed
};
const char* FCntVerdictName(FCntVerdict v);
struct FCntCandidate {
  uint32_t fcnt32 = 0;  // meaningful for kNew and kRepeat
  FCntVerdict verdict = FCntVerdict::kNew;
};
// `last` is empty for a session that has accepted no uplink yet: then the 16 LSBs are the counter
// (kNew). Otherwise the candidate is the nearest value above `last` with those LSBs, so a 16-bit
// wrap (last 0x0000FFFF, received 0x0000) gives 0x00010000.
// `max_gap` 0 means no limit (LoRaWAN 1.0.4): any other 16 LSBs are then the next value ahead.
FCntCandidate ReconstructFCnt(uint16_t fcnt16, std::optional<uint32_t> last,
                              uint32_t max_gap = kMaxFCntGap);

// A session with no accepted uplink yet (ABP after a fresh install, a migration or a lost state
// file) may be far past 65535: the 32-bit candidates are the 16 LSBs in `epochs` consecutive
// 16-bit epochs, lowest first, never below `floor` (a counter seeded in the config) and never
// past 0xFFFFFFFF. The caller takes the first whose MIC verifies.
std::vector<uint32_t> FCntCandidatesWithoutSession(uint16_t fcnt16, uint32_t floor,
                                                   uint32_t epochs);

// How the server rebuilds and bounds one device's uplink counter.
struct FCntPolicy {
  uint32_t max_gap = kMaxFCntGap;  // 0: no limit (LoRaWAN 1.0.4)
  uint32_t floor = 0;              // no counter known yet: the lowest acceptable counter
  uint32_t search_epochs = 1;      // no counter known yet: how many 16-bit epochs to try
};

// What an uplink data frame is to a session. Every verdict but kBadMic means the MIC verified
// under `fcnt32`: only an authentic frame is called new, a repeat, a replay or a gap, so a
// forged frame can neither pass for a copy nor be blamed on the device.
enum class UplinkVerdict {
  kNew,          // accept with fcnt32
  kRepeat,       // the last accepted counter again (a copy or a retransmission)
  kReplay,       // an old frame: fcnt32 is its true counter, behind the last accepted one
  kGapTooLarge,  // authentic, but further ahead than the policy's max_gap
  kExhausted,    // the counter would pass 0xFFFFFFFF: the session must be renewed
  kBadMic,       // no candidate counter gives this MIC: forged, or another device's frame
};
const char* UplinkVerdictName(UplinkVerdict v);
struct UplinkCheck {
  UplinkVerdict verdict = UplinkVerdict::kBadMic;
  uint32_t fcnt32 = 0;  // the counter the MIC verified under (kBadMic: the first one tried)
};
// Rebuilds the counter of `frame` against `last` (empty: no uplink accepted yet, see
// FCntCandidatesWithoutSession) and checks the MIC under it. Costs at most two AES-CMACs with a
// known counter, at most `search_epochs` + 1 without. An error only for library failures.
Result<UplinkCheck> CheckUplink(const DataFrame& frame, const Key& nwk_s_key,
                                std::optional<uint32_t> last, const FCntPolicy& policy);

// A data frame to build (uplinks for simulators and tests, downlinks for the server).
struct DataFrameSpec {
  MType mtype = MType::kUnconfirmedDown;
  uint32_t dev_addr = 0;
  uint32_t fcnt32 = 0;      // FCntUp or FCntDown; the low 16 bits go on air
  uint8_t fctrl_flags = 0;  // ADR/ACK/FPending bits (0xF0); FOptsLen is set from `fopts`
  Bytes fopts;              // up to 15 bytes of MAC commands
  std::optional<uint8_t> fport;
  Bytes payload;  // plain FRMPayload; needs an FPort
};
inline constexpr uint8_t kFCtrlAdr = 0x80;
inline constexpr uint8_t kFCtrlAdrAckReq = 0x40;
inline constexpr uint8_t kFCtrlAck = 0x20;
inline constexpr uint8_t kFCtrlFPending = 0x10;  // downlink; ClassB in uplinks

// Encrypts the payload and appends the MIC. E.g. the ACK of a confirmed uplink:
// {kUnconfirmedDown, dev_addr, fcnt_down, kFCtrlAck} (no FPort, no payload).
Result<Bytes> BuildDataFrame(const DataFrameSpec& spec, const SessionKeys& keys);

// Join Request: 00 | AppEUI LE | DevEUI LE | DevNonce LE | MIC, 23 bytes.
struct JoinRequest {
  uint64_t app_eui = 0;  // numeric, as written MSB first
  uint64_t dev_eui = 0;
  uint16_t dev_nonce = 0;
  Mic mic{};
};
Result<JoinRequest> ParseJoinRequest(std::span<const uint8_t> phy);
// MIC = AES-CMAC(AppKey, MHDR | AppEUI | DevEUI | DevNonce)[0..3]. Needs a 23-byte frame.
Result<bool> VerifyJoinRequestMic(std::span<const uint8_t> phy, const Key& app_key);
// For simulators and tests: the 23 bytes of a join request with its MIC.
Result<Bytes> BuildJoinRequest(const JoinRequest& req, const Key& app_key);

struct JoinAccept {
  uint32_t app_nonce = 0;  // 24 bits
  uint32_t net_id = 0;     // 24 bits
  uint32_t dev_addr = 0;
  uint8_t dl_settings = 0;  // b6..4 RX1DROffset, b3..0 RX2 data rate; b7 must be 0 in 1.0.x
  uint8_t rx_delay = 1;     // b3..0 seconds; 0 means 1 s
  std::optional<std::array<uint8_t, 16>> cf_list;
};
// The wire bytes: MHDR 0x20 in the clear, then AES-ECB *decrypt*(AppKey, payload | MIC), as the
// spec prescribes so the device only needs AES encryption (17 or 33 bytes).
Result<Bytes> BuildJoinAccept(const JoinAccept& ja, const Key& app_key);
// The device side (simulators, tests): decrypt, check the MIC, parse.
Result<JoinAccept> OpenJoinAccept(std::span<const uint8_t> wire, const Key& app_key);

// NwkSKey = aes128_encrypt(AppKey, 01 | AppNonce | NetID | DevNonce | pad16), AppSKey with 02.
Result<SessionKeys> DeriveSessionKeys(const Key& app_key, uint32_t app_nonce, uint32_t net_id,
                                      uint16_t dev_nonce);

}  // namespace sanigate::dev::lorawan
