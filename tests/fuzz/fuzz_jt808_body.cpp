// JT/T 808 message bodies: every body parser of messages.h, picked by the first input byte
// (low nibble: which parser; bit 4: the 2019 edition), over the rest of the input. What parses is
// built again with the matching builder and parsed once more: the same values must come back.
#include <cstdint>
#include <string>

#include "fuzz_common.h"
#include "jt808/frame.h"
#include "jt808/messages.h"

using namespace sanigate::dev::jt808;

namespace {

void SameLocation(const Location& a, const Location& b) {
  FUZZ_CHECK(a.alarm == b.alarm, "alarm");
  FUZZ_CHECK(a.status == b.status, "status");
  FUZZ_CHECK(a.lat == b.lat && a.lon == b.lon, "position " + std::to_string(a.lat) + "," + std::to_string(a.lon));
  FUZZ_CHECK(a.altitude_m == b.altitude_m, "altitude");
  FUZZ_CHECK(a.speed_kmh == b.speed_kmh, "speed");
  FUZZ_CHECK(a.heading_deg == b.heading_deg, "heading");
  FUZZ_CHECK(a.ts_ms == b.ts_ms, "time " + std::to_string(a.ts_ms) + " vs " + std::to_string(b.ts_ms));
  FUZZ_CHECK(a.odometer_km == b.odometer_km, "odometer");
  FUZZ_CHECK(a.fuel_l == b.fuel_l, "fuel");
  FUZZ_CHECK(a.signal_strength == b.signal_strength, "signal");
  FUZZ_CHECK(a.satellites == b.satellites, "satellites");
}

bool Clean(const std::string& s) {  // survives the NUL padding and the trimming of fixed fields
  return s.find('\0') == std::string::npos && (s.empty() || s.back() != ' ');
}

void Location_(std::span<const uint8_t> body) {
  auto l = ParseLocation(body);
  if (!l.ok()) return;
  auto again = ParseLocation(BuildLocation(l.value()));
  FUZZ_CHECK(again.ok(), "ParseLocation(BuildLocation(l)) failed: " + again.status().message());
  SameLocation(l.value(), again.value());
}

void Registration_(std::span<const uint8_t> body, bool v19) {
  auto r = ParseRegistration(body, v19);
  if (!r.ok()) return;
  auto again = ParseRegistration(BuildRegistration(r.value(), v19), v19);
  FUZZ_CHECK(again.ok(), "ParseRegistration(BuildRegistration(r)) failed: " + again.status().message());
  const Registration &a = r.value(), &b = again.value();
  FUZZ_CHECK(a.province == b.province && a.city == b.city, "province/city");
  FUZZ_CHECK(a.maker == b.maker && a.model == b.model && a.terminal_id == b.terminal_id, "maker/model/id");
  FUZZ_CHECK(a.plate_color == b.plate_color, "plate colour");
  // BuildRegistration leaves out a plate without a GBK form; glibc decodes GBK 0x80 as U+20AC
  // but has no GBK for U+20AC (a known one-way mapping, see README), so such a plate is lost.
  if (Utf8ToGbk(a.plate).ok())
    FUZZ_CHECK(a.plate == b.plate, "plate \"" + a.plate + "\" came back as \"" + b.plate + "\"");
}

void Authentication_(std::span<const uint8_t> body, bool v19) {
  auto a = ParseAuthentication(body, v19);
  if (!a.ok()) return;
  auto again = ParseAuthentication(BuildAuthentication(a.value(), v19), v19);
  FUZZ_CHECK(again.ok(), "ParseAuthentication(BuildAuthentication(a)) failed");
  FUZZ_CHECK(a.value().code == again.value().code, "code");
  FUZZ_CHECK(a.value().imei == again.value().imei, "imei");
  FUZZ_CHECK(a.value().software == again.value().software, "software");
}

void TerminalResponse_(std::span<const uint8_t> body) {
  auto t = ParseTerminalResponse(body);
  if (!t.ok()) return;
  Bytes built = BuildTerminalResponse(t.value());
  FUZZ_CHECK(Bytes(body.begin(), body.end()) == built, "terminal response bytes");
}

void Batch_(std::span<const uint8_t> body) {
  auto b = ParseBatchLocation(body);
  if (!b.ok()) return;
  if (b.value().points.size() > 0xFFFF) return;
  auto again = ParseBatchLocation(BuildBatchLocation(b.value().points, b.value().backfill));
  FUZZ_CHECK(again.ok(), "ParseBatchLocation(BuildBatchLocation(b)) failed: " + again.status().message());
  FUZZ_CHECK(again.value().backfill == b.value().backfill, "backfill");
  FUZZ_CHECK(again.value().bad_points.empty(), "a rebuilt point is unreadable");
  FUZZ_CHECK(again.value().points.size() == b.value().points.size(), "point count");
  for (size_t i = 0; i < b.value().points.size(); ++i) SameLocation(b.value().points[i], again.value().points[i]);
}

void PositionReply_(std::span<const uint8_t> body) {
  auto p = ParsePositionReply(body);
  if (!p.ok()) return;
  auto loc = ParseLocation(body.subspan(2));
  FUZZ_CHECK(loc.ok(), "position reply parsed, its location does not");
  SameLocation(p.value().location, loc.value());
}

void UpgradeResult_(std::span<const uint8_t> body) {
  auto u = ParseUpgradeResult(body);
  if (!u.ok()) return;
  Bytes built = BuildUpgradeResult(u.value());
  FUZZ_CHECK(built.size() == 2 && built[0] == body[0] && built[1] == body[1], "upgrade result bytes");
}

void Attributes_(std::span<const uint8_t> body, bool v19) {
  auto a = ParseTerminalAttributes(body, v19);
  if (!a.ok()) return;
  const TerminalAttributes& t = a.value();
  // The builder writes the standard 5-byte manufacturer id and a decimal ICCID only.
  if (t.maker.size() > 5 || t.iccid.find_first_not_of("0123456789") != std::string::npos) return;
  auto built = BuildTerminalAttributes(t, v19);
  if (!built.ok()) return;  // a version without a GBK form
  auto again = ParseTerminalAttributes(built.value(), v19);
  FUZZ_CHECK(again.ok(), "ParseTerminalAttributes(BuildTerminalAttributes(a)) failed: " + again.status().message());
  const TerminalAttributes& b = again.value();
  FUZZ_CHECK(t.terminal_type == b.terminal_type, "terminal type");
  FUZZ_CHECK(t.maker == b.maker && t.model == b.model && t.terminal_id == b.terminal_id, "maker/model/id");
  FUZZ_CHECK(t.iccid == b.iccid, "iccid");
  FUZZ_CHECK(t.hw_version == b.hw_version && t.fw_version == b.fw_version, "versions");
  FUZZ_CHECK(t.gnss == b.gnss && t.comm == b.comm, "gnss/comm");
}

void UpgradePackage_(std::span<const uint8_t> body, bool v19) {
  auto p = ParseUpgradePackage(body, v19);
  if (!p.ok()) return;
  auto built = BuildUpgradePackage(p.value(), v19);
  if (!built.ok()) return;  // empty version, or one without a GBK form
  auto again = ParseUpgradePackage(built.value(), v19);
  FUZZ_CHECK(again.ok(), "ParseUpgradePackage(BuildUpgradePackage(p)) failed: " + again.status().message());
  FUZZ_CHECK(again.value().type == p.value().type, "type");
  FUZZ_CHECK(again.value().maker == p.value().maker, "maker");
  FUZZ_CHECK(again.value().version == p.value().version, "version");
  FUZZ_CHECK(again.value().package == p.value().package, "package");
}

void UpgradeHead_(fuzz::Knobs& k, bool v19) {
  uint8_t type = k.U8();
  uint8_t maker_len = k.U8() % 16, pkg_len = k.U8() % 32;
  std::string_view rest = k.RestText();
  std::string maker(rest.substr(0, maker_len));
  std::string version(rest.substr(std::min<size_t>(maker_len, rest.size())));
  auto head = BuildUpgradePackageHead(type, maker, version, pkg_len, v19);
  if (!head.ok()) return;
  Bytes body = head.value();
  body.resize(body.size() + pkg_len, 0xA5);
  auto p = ParseUpgradePackage(body, v19);
  FUZZ_CHECK(p.ok(), "ParseUpgradePackage(BuildUpgradePackageHead(...) + package) failed: " + p.status().message());
  FUZZ_CHECK(p.value().type == type && p.value().package.size() == pkg_len, "type/package");
  if (Clean(maker)) FUZZ_CHECK(p.value().maker == maker, "maker");
  FUZZ_CHECK(p.value().version == version, "version \"" + version + "\" came back as \"" + p.value().version + "\"");
}

void Text_(std::string_view text, bool v19) {
  auto t = BuildTextMessage(std::string(text), v19);
  if (t.ok()) FUZZ_CHECK(t.value().size() <= 1023, "text message longer than a packet");
  auto gbk = Utf8ToGbk(std::string(text));
  if (gbk.ok()) {
    auto utf8 = GbkToUtf8(gbk.value());
    FUZZ_CHECK(utf8.ok() && utf8.value() == text, "UTF-8 -> GBK -> UTF-8 changed the text");
  }
  (void)GbkToUtf8(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
}

void Bcd_(std::span<const uint8_t> bytes) {
  auto digits = DigitsFromBcd(bytes);
  if (digits.ok()) {
    FUZZ_CHECK(BcdFromDigits(digits.value(), bytes.size()) == Bytes(bytes.begin(), bytes.end()), "BCD round trip");
    std::string phone = NormalizePhone(digits.value());
    FUZZ_CHECK(!phone.empty() && (phone == "0" || phone[0] != '0'), "NormalizePhone");
  }
  if (bytes.size() >= 6) {
    auto t = TimeFromBcd(bytes.first(6));
    if (t.ok()) FUZZ_CHECK(BcdFromTime(t.value()) == Bytes(bytes.begin(), bytes.begin() + 6), "BCD time round trip");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::Knobs k(data, size);
  uint8_t sel = k.U8();
  const bool v19 = sel & 0x10;
  std::span<const uint8_t> body = k.Rest();
  switch (sel & 0x0F) {
    case 0: Location_(body); break;
    case 1: Registration_(body, v19); break;
    case 2: Authentication_(body, v19); break;
    case 3: TerminalResponse_(body); break;
    case 4: Batch_(body); break;
    case 5: PositionReply_(body); break;
    case 6: UpgradeResult_(body); break;
    case 7: Attributes_(body, v19); break;
    case 8: UpgradePackage_(body, v19); break;
    case 9: UpgradeHead_(k, v19); break;
    case 10: Text_(k.RestText(), v19); break;
    case 11: Bcd_(body); break;
    default: {
      // Any parser on any body: what a confused or hostile terminal sends under the wrong id.
      (void)ParseLocation(body);
      (void)ParseRegistration(body, v19);
      (void)ParseAuthentication(body, v19);
      (void)ParseBatchLocation(body);
      (void)ParseTerminalAttributes(body, v19);
      (void)ParseUpgradePackage(body, v19);
      break;
    }
  }
  return 0;
}
