#include "jt808/messages.h"

#include "core/untrusted.h"

#include <iconv.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <map>

namespace sanigate::dev::jt808 {
namespace {

// Big-endian reader that never runs past the end.
class Reader {
 public:
  explicit Reader(std::span<const uint8_t> d) : d_(d) {}
  size_t left() const { return d_.size() - pos_; }
  bool Has(size_t n) const { return left() >= n; }
  uint8_t U8() { return d_[pos_++]; }
  uint16_t U16() {
    uint16_t v = static_cast<uint16_t>((d_[pos_] << 8) | d_[pos_ + 1]);
    pos_ += 2;
    return v;
  }
  uint32_t U32() {
    uint32_t v = (uint32_t{d_[pos_]} << 24) | (uint32_t{d_[pos_ + 1]} << 16) |
                 (uint32_t{d_[pos_ + 2]} << 8) | d_[pos_ + 3];
    pos_ += 4;
    return v;
  }
  std::span<const uint8_t> Take(size_t n) {
    auto s = d_.subspan(pos_, n);
    pos_ += n;
    return s;
  }

 private:
  std::span<const uint8_t> d_;
  size_t pos_ = 0;
};

void PutU16(Bytes& b, uint16_t v) {
  b.push_back(static_cast<uint8_t>(v >> 8));
  b.push_back(static_cast<uint8_t>(v));
}
void PutU32(Bytes& b, uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) b.push_back(static_cast<uint8_t>(v >> s));
}
void PutPadded(Bytes& b, const std::string& s, size_t n) {
  for (size_t i = 0; i < n; ++i) b.push_back(i < s.size() ? static_cast<uint8_t>(s[i]) : 0);
}

// Fixed-size ASCII fields are padded with 0x00 (some terminals pad with spaces).
std::string Trimmed(std::span<const uint8_t> field) {
  std::string s(field.begin(), field.end());
  size_t end = s.find('\0');
  if (end != std::string::npos) s.resize(end);
  while (!s.empty() && s.back() == ' ') s.pop_back();
  return s;
}

// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's civil-days algorithm).
int64_t DaysFromCivil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<int64_t>(doe) - 719468;
}

constexpr int64_t kChinaOffsetMs = 8 * 3600 * 1000;

Result<std::string> IconvConvert(const char* to, const char* from, const char* in, size_t len) {
  iconv_t cd = iconv_open(to, from);
  if (cd == reinterpret_cast<iconv_t>(-1)) return Internal(std::string("iconv cannot convert ") + from + " to " + to);
  // One input byte can become up to 3 output bytes (GBK 0x80 is U+20AC, 3 bytes of UTF-8).
  std::string out(len * 4 + 8, '\0');
  char* inp = const_cast<char*>(in);
  size_t inleft = len;
  char* outp = out.data();
  size_t outleft = out.size();
  size_t rc = iconv(cd, &inp, &inleft, &outp, &outleft);
  int err = errno;
  iconv_close(cd);
  if (rc == static_cast<size_t>(-1)) {
    return Invalid(std::string("text is not valid ") + from + " (byte " + std::to_string(len - inleft) +
                   (err == EILSEQ ? ": invalid sequence)" : ": incomplete sequence)"));
  }
  out.resize(out.size() - outleft);
  return out;
}

}  // namespace

Result<int64_t> TimeFromBcd(std::span<const uint8_t> bcd6) {
  if (bcd6.size() != 6) return Invalid("time needs 6 BCD bytes");
  auto digits = DigitsFromBcd(bcd6);
  if (!digits.ok()) return Invalid("time: " + digits.status().message());
  const std::string& s = *digits;
  auto num = [&](int i) { return (s[i] - '0') * 10 + (s[i + 1] - '0'); };
  int yy = num(0), mo = num(2), dd = num(4), hh = num(6), mi = num(8), ss = num(10);
  static const int kDays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  if (mo < 1 || mo > 12 || dd < 1 || dd > kDays[mo - 1] || hh > 23 || mi > 59 || ss > 59)
    return Invalid("time 20" + s.substr(0, 2) + "-" + s.substr(2, 2) + "-" + s.substr(4, 2) + " " +
                   s.substr(6, 2) + ":" + s.substr(8, 2) + ":" + s.substr(10, 2) + " is not a valid date");
  bool leap = (yy % 4) == 0;  // 2000..2099: every fourth year (2000 is a leap year)
  if (mo == 2 && dd == 29 && !leap) return Invalid("time: 29 February in a common year");
  int64_t days = DaysFromCivil(2000 + yy, static_cast<unsigned>(mo), static_cast<unsigned>(dd));
  int64_t local_ms = ((days * 24 + hh) * 60 + mi) * 60000 + ss * 1000;
  return local_ms - kChinaOffsetMs;
}

Bytes BcdFromTime(int64_t utc_ms) {
  int64_t local_s = (utc_ms + kChinaOffsetMs) / 1000;
  int64_t days = local_s / 86400;
  int64_t secs = local_s % 86400;
  // civil_from_days (inverse of DaysFromCivil)
  int64_t z = days + 719468;
  int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  unsigned doe = static_cast<unsigned>(z - era * 146097);
  unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  int64_t y = static_cast<int64_t>(yoe) + era * 400;
  unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  unsigned mp = (5 * doy + 2) / 153;
  unsigned d = doy - (153 * mp + 2) / 5 + 1;
  unsigned m = mp < 10 ? mp + 3 : mp - 9;
  y += m <= 2;
  char buf[40];
  std::snprintf(buf, sizeof buf, "%02d%02u%02u%02d%02d%02d", static_cast<int>(y % 100), m, d,
                static_cast<int>(secs / 3600), static_cast<int>(secs / 60 % 60), static_cast<int>(secs % 60));
  return BcdFromDigits(buf, 6);
}

Result<Location> ParseLocation(std::span<const uint8_t> body) {
  if (body.size() < 28) return Invalid("location body of " + std::to_string(body.size()) + " bytes is shorter than 28");
  Reader r(body);
  Location l;
  l.alarm = r.U32();
  l.status = r.U32();
  uint32_t lat = r.U32(), lon = r.U32();  // unsigned: the hemisphere is in the status bits
  l.lat = lat / 1e6 * ((l.status & (1u << status_bit::kSouth)) ? -1 : 1);
  l.lon = lon / 1e6 * ((l.status & (1u << status_bit::kWest)) ? -1 : 1);
  if (lat > 90000000u || lon > 180000000u)
    return Invalid("position " + std::to_string(lat) + "," + std::to_string(lon) + " (x1e-6 degrees) is outside the globe");
  l.altitude_m = r.U16();
  l.speed_kmh = r.U16() / 10.0;
  l.heading_deg = r.U16();
  auto ts = TimeFromBcd(r.Take(6));
  if (!ts.ok()) return ts.status();
  l.ts_ms = *ts;
  // Additional items: id, len, value. Unknown ids are skipped by their length.
  while (r.left() > 0) {
    if (!r.Has(2)) return Invalid("additional item header cut off at the end of the body");
    uint8_t id = r.U8(), len = r.U8();
    if (!r.Has(len)) {
      char buf[80];
      std::snprintf(buf, sizeof buf, "additional item %02X says %u bytes, %zu left", id, len, r.left());
      return Invalid(buf);
    }
    auto v = r.Take(len);
    Reader iv(v);
    if (id == 0x01 && len == 4) {
      l.odometer_km = iv.U32() / 10.0;
    } else if (id == 0x02 && len == 2) {
      l.fuel_l = iv.U16() / 10.0;
    } else if (id == 0x30 && len == 1) {
      l.signal_strength = iv.U8();
    } else if (id == 0x31 && len == 1) {
      l.satellites = iv.U8();
    }
  }
  return l;
}

Result<Registration> ParseRegistration(std::span<const uint8_t> body, bool v2019) {
  const size_t maker = v2019 ? 11 : 5, model = v2019 ? 30 : 20, term = v2019 ? 30 : 7;
  const size_t fixed = 4 + maker + model + term + 1;
  if (body.size() < fixed)
    return Invalid("registration body of " + std::to_string(body.size()) + " bytes is shorter than " + std::to_string(fixed));
  Reader r(body);
  Registration reg;
  reg.province = r.U16();
  reg.city = r.U16();
  reg.maker = Trimmed(r.Take(maker));
  reg.model = Trimmed(r.Take(model));
  reg.terminal_id = Trimmed(r.Take(term));
  reg.plate_color = r.U8();
  auto plate = r.Take(r.left());
  auto utf8 = GbkToUtf8(plate);
  reg.plate = utf8.ok() ? Trimmed(std::span(reinterpret_cast<const uint8_t*>(utf8->data()), utf8->size()))
                        : std::string();
  return reg;
}

Result<Authentication> ParseAuthentication(std::span<const uint8_t> body, bool v2019) {
  Authentication a;
  if (!v2019) {
    a.code = Trimmed(body);
    return a;
  }
  Reader r(body);
  if (!r.Has(1)) return Invalid("2019 authentication body is empty");
  uint8_t n = r.U8();
  if (!r.Has(n)) return Invalid("auth code length " + std::to_string(n) + " is longer than the body");
  a.code = Trimmed(r.Take(n));
  if (r.Has(15)) a.imei = Trimmed(r.Take(15));
  if (r.Has(20)) a.software = Trimmed(r.Take(20));
  return a;
}

Result<TerminalResponse> ParseTerminalResponse(std::span<const uint8_t> body) {
  if (body.size() != 5) return Invalid("terminal response must be 5 bytes, got " + std::to_string(body.size()));
  Reader r(body);
  TerminalResponse t;
  t.reply_serial = r.U16();
  t.reply_id = r.U16();
  t.result = r.U8();
  return t;
}

Result<BatchLocation> ParseBatchLocation(std::span<const uint8_t> body) {
  if (body.size() < 3) return Invalid("batch body shorter than its 3-byte header");
  Reader r(body);
  uint16_t count = r.U16();
  BatchLocation b;
  uint8_t type = r.U8();
  if (type > 1) return Invalid("batch type " + std::to_string(type) + " is neither 0 (normal) nor 1 (back-fill)");
  b.backfill = type == 1;
  for (uint16_t i = 0; i < count; ++i) {
    if (!r.Has(2)) return Invalid("batch says " + std::to_string(count) + " points, body ends after " + std::to_string(i));
    uint16_t len = r.U16();
    if (!r.Has(len)) return Invalid("batch point " + std::to_string(i) + " says " + std::to_string(len) + " bytes, " + std::to_string(r.left()) + " left");
    auto loc = ParseLocation(r.Take(len));
    if (loc.ok()) {
      b.points.push_back(*loc);
    } else {
      b.bad_points.push_back("point " + std::to_string(i) + ": " + loc.status().message());
    }
  }
  if (r.left() != 0) return Invalid(std::to_string(r.left()) + " bytes after the last batch point");
  return b;
}

Result<PositionReply> ParsePositionReply(std::span<const uint8_t> body) {
  if (body.size() < 2) return Invalid("position reply shorter than its reply serial");
  PositionReply p;
  p.reply_serial = static_cast<uint16_t>((body[0] << 8) | body[1]);
  auto loc = ParseLocation(body.subspan(2));
  if (!loc.ok()) return loc.status();
  p.location = *loc;
  return p;
}

size_t UpgradeMakerWidth(bool v2019) { return v2019 ? 11 : 5; }

Result<UpgradeResult> ParseUpgradeResult(std::span<const uint8_t> body) {
  if (body.size() < 2)
    return Invalid("upgrade result body of " + std::to_string(body.size()) + " bytes is shorter than 2 (type, result)");
  return UpgradeResult{body[0], body[1]};
}

namespace {

// One reading of a 0x0107 body with the given fixed-field widths. `exact`: the body ended right
// after the communication attributes.
struct AttributesAttempt {
  std::optional<TerminalAttributes> attrs;
  bool exact = false;
  std::string error;
};

AttributesAttempt ReadAttributes(std::span<const uint8_t> body, size_t maker, size_t model, size_t term) {
  AttributesAttempt out;
  const size_t fixed = 2 + maker + model + term + 10 + 1;
  Reader r(body);
  if (!r.Has(fixed)) {
    out.error = "terminal attributes body of " + std::to_string(body.size()) + " bytes is shorter than " +
                std::to_string(fixed) + " (fixed fields and the hardware version length)";
    return out;
  }
  TerminalAttributes a;
  a.terminal_type = r.U16();
  a.maker = Trimmed(r.Take(maker));
  a.model = Trimmed(r.Take(model));
  a.terminal_id = Trimmed(r.Take(term));
  static const char kHex[] = "0123456789ABCDEF";
  for (uint8_t b : r.Take(10)) {
    a.iccid.push_back(kHex[b >> 4]);
    a.iccid.push_back(kHex[b & 0x0F]);
  }
  uint8_t hw_len = r.U8();
  if (!r.Has(hw_len)) {
    out.error = "hardware version length " + std::to_string(hw_len) + " runs past the body (" + std::to_string(r.left()) + " bytes left)";
    return out;
  }
  auto hw = r.Take(hw_len);
  if (!r.Has(1)) {
    out.error = "terminal attributes body ends before the firmware version length";
    return out;
  }
  uint8_t fw_len = r.U8();
  if (!r.Has(fw_len)) {
    out.error = "firmware version length " + std::to_string(fw_len) + " runs past the body (" + std::to_string(r.left()) + " bytes left)";
    return out;
  }
  auto fw = r.Take(fw_len);
  if (!r.Has(2)) {
    out.error = "terminal attributes body ends before the GNSS and communication attributes";
    return out;
  }
  a.gnss = r.U8();
  a.comm = r.U8();
  auto hw_utf8 = GbkToUtf8(hw);
  auto fw_utf8 = GbkToUtf8(fw);
  if (!fw_utf8.ok()) {
    out.error = "firmware version: " + fw_utf8.status().message();
    return out;
  }
  auto trim = [](const std::string& s) { return Trimmed(std::span(reinterpret_cast<const uint8_t*>(s.data()), s.size())); };
  a.fw_version = trim(*fw_utf8);
  a.hw_version = hw_utf8.ok() ? trim(*hw_utf8) : std::string();
  out.exact = r.left() == 0;
  out.attrs = std::move(a);
  return out;
}

}  // namespace

Result<TerminalAttributes> ParseTerminalAttributes(std::span<const uint8_t> body, bool v2019) {
  const size_t model = v2019 ? 30 : 20, term = v2019 ? 30 : 7;
  AttributesAttempt standard = ReadAttributes(body, 5, model, term);
  if (standard.attrs && standard.exact) return *standard.attrs;
  if (v2019) {
    AttributesAttempt wide = ReadAttributes(body, 11, model, term);
    if (wide.attrs && wide.exact) return *wide.attrs;
  }
  // Trailing bytes (vendor additions) after a complete standard body are tolerated.
  if (standard.attrs) return *standard.attrs;
  return Invalid(standard.error);
}

Result<Bytes> BuildUpgradePackageHead(uint8_t type, const std::string& maker, const std::string& utf8_version,
                                      uint32_t package_length, bool v2019) {
  const size_t width = UpgradeMakerWidth(v2019);
  if (maker.size() > width)
    return Invalid("manufacturer id \"" + maker + "\" is longer than " + std::to_string(width) + " bytes");
  auto version = Utf8ToGbk(utf8_version);
  if (!version.ok()) return Invalid("version \"" + utf8_version + "\": " + version.status().message());
  if (version->empty()) return Invalid("the version is empty");
  if (version->size() > 255) return Invalid("version is " + std::to_string(version->size()) + " bytes; at most 255 fit");
  Bytes b;
  b.reserve(1 + width + 1 + version->size() + 4);
  b.push_back(type);
  PutPadded(b, maker, width);
  b.push_back(static_cast<uint8_t>(version->size()));
  b.insert(b.end(), version->begin(), version->end());
  PutU32(b, package_length);
  return b;
}

Result<Bytes> BuildUpgradePackage(const UpgradePackage& p, bool v2019) {
  if (p.package.size() > 0xFFFFFFFFull) return Invalid("package larger than 4 GiB");
  auto head = BuildUpgradePackageHead(p.type, p.maker, p.version, static_cast<uint32_t>(p.package.size()), v2019);
  if (!head.ok()) return head.status();
  head->insert(head->end(), p.package.begin(), p.package.end());
  return std::move(*head);
}

Result<UpgradePackage> ParseUpgradePackage(std::span<const uint8_t> body, bool v2019) {
  const size_t width = UpgradeMakerWidth(v2019);
  Reader r(body);
  if (!r.Has(1 + width + 1))
    return Invalid("upgrade package body of " + std::to_string(body.size()) + " bytes is shorter than " + std::to_string(2 + width));
  UpgradePackage p;
  p.type = r.U8();
  p.maker = Trimmed(r.Take(width));
  uint8_t vlen = r.U8();
  if (!r.Has(vlen + size_t{4})) return Invalid("upgrade package body ends inside the version or the package length");
  auto v = GbkToUtf8(r.Take(vlen));
  if (!v.ok()) return Invalid("version: " + v.status().message());
  p.version = *v;
  uint32_t len = r.U32();
  if (r.left() != len)
    return Invalid("package length field says " + std::to_string(len) + " bytes, body has " + std::to_string(r.left()));
  auto pkg = r.Take(len);
  p.package.assign(pkg.begin(), pkg.end());
  return p;
}

Bytes BuildQueryAttributes() { return {}; }

size_t PacketCount(size_t body_bytes, size_t max_packet_body) {
  if (max_packet_body == 0) return 0;
  return body_bytes == 0 ? 1 : (body_bytes + max_packet_body - 1) / max_packet_body;
}

Bytes BuildUpgradeResult(const UpgradeResult& r) { return {r.type, r.result}; }

Result<Bytes> BuildTerminalAttributes(const TerminalAttributes& a, bool v2019) {
  Bytes b;
  PutU16(b, a.terminal_type);
  PutPadded(b, a.maker, 5);
  PutPadded(b, a.model, v2019 ? 30 : 20);
  PutPadded(b, a.terminal_id, v2019 ? 30 : 7);
  std::string iccid = a.iccid;
  if (iccid.size() > 20) return Invalid("ICCID longer than 20 digits");
  for (char c : iccid)
    if (c < '0' || c > '9') return Invalid("ICCID \"" + iccid + "\" is not digits");
  Bytes bcd = BcdFromDigits(iccid, 10);
  b.insert(b.end(), bcd.begin(), bcd.end());
  for (const std::string* s : {&a.hw_version, &a.fw_version}) {
    auto gbk = Utf8ToGbk(*s);
    if (!gbk.ok()) return gbk.status();
    if (gbk->size() > 255) return Invalid("version longer than 255 bytes");
    b.push_back(static_cast<uint8_t>(gbk->size()));
    b.insert(b.end(), gbk->begin(), gbk->end());
  }
  b.push_back(a.gnss);
  b.push_back(a.comm);
  return b;
}

Bytes BuildPlatformResponse(uint16_t reply_serial, uint16_t reply_id, ResponseResult result) {
  Bytes b;
  PutU16(b, reply_serial);
  PutU16(b, reply_id);
  b.push_back(static_cast<uint8_t>(result));
  return b;
}

Bytes BuildRegisterResponse(uint16_t reply_serial, RegisterResult result, const std::string& auth_code) {
  Bytes b;
  PutU16(b, reply_serial);
  b.push_back(static_cast<uint8_t>(result));
  if (result == RegisterResult::kOk) b.insert(b.end(), auth_code.begin(), auth_code.end());
  return b;
}

Bytes BuildSetParams(const std::vector<std::pair<uint32_t, uint32_t>>& dword_params) {
  Bytes b;
  b.push_back(static_cast<uint8_t>(dword_params.size()));
  for (const auto& [id, value] : dword_params) {
    PutU32(b, id);
    b.push_back(4);
    PutU32(b, value);
  }
  return b;
}

Bytes BuildAlarmConfirm(uint16_t alarm_serial, uint32_t alarm_mask) {
  Bytes b;
  PutU16(b, alarm_serial);
  PutU32(b, alarm_mask);
  return b;
}

Result<Bytes> BuildTextMessage(const std::string& utf8_text, bool v2019) {
  auto gbk = Utf8ToGbk(utf8_text);
  if (!gbk.ok()) return gbk.status();
  Bytes b;
  b.push_back(0x04 | 0x08);  // flags: show on the terminal display, and read it aloud (TTS)
  if (v2019) b.push_back(1);  // text type 1: notice
  b.insert(b.end(), gbk->begin(), gbk->end());
  // The body is at most 1023 bytes: flags (1) and, in 2019, the text type (1) come first.
  if (b.size() > 1023)
    return Invalid("text is " + std::to_string(gbk->size()) + " bytes in GBK; a message holds at most " +
                   std::to_string(v2019 ? 1021 : 1022));
  return b;
}

Bytes BuildLocation(const Location& l) {
  Bytes b;
  PutU32(b, l.alarm);
  uint32_t status = l.status;
  if (l.lat < 0) status |= 1u << status_bit::kSouth;
  if (l.lon < 0) status |= 1u << status_bit::kWest;
  PutU32(b, status);
  PutU32(b, static_cast<uint32_t>(std::llround(std::fabs(l.lat) * 1e6)));
  PutU32(b, static_cast<uint32_t>(std::llround(std::fabs(l.lon) * 1e6)));
  PutU16(b, l.altitude_m);
  PutU16(b, static_cast<uint16_t>(std::lround(l.speed_kmh * 10)));
  PutU16(b, l.heading_deg);
  Bytes t = BcdFromTime(l.ts_ms);
  b.insert(b.end(), t.begin(), t.end());
  if (l.odometer_km) {
    b.push_back(0x01);
    b.push_back(4);
    PutU32(b, static_cast<uint32_t>(std::llround(*l.odometer_km * 10)));
  }
  if (l.fuel_l) {
    b.push_back(0x02);
    b.push_back(2);
    PutU16(b, static_cast<uint16_t>(std::lround(*l.fuel_l * 10)));
  }
  if (l.signal_strength) {
    b.push_back(0x30);
    b.push_back(1);
    b.push_back(*l.signal_strength);
  }
  if (l.satellites) {
    b.push_back(0x31);
    b.push_back(1);
    b.push_back(*l.satellites);
  }
  return b;
}

Bytes BuildRegistration(const Registration& reg, bool v2019) {
  Bytes b;
  PutU16(b, reg.province);
  PutU16(b, reg.city);
  PutPadded(b, reg.maker, v2019 ? 11 : 5);
  PutPadded(b, reg.model, v2019 ? 30 : 20);
  PutPadded(b, reg.terminal_id, v2019 ? 30 : 7);
  b.push_back(reg.plate_color);
  auto gbk = Utf8ToGbk(reg.plate);
  if (gbk.ok()) b.insert(b.end(), gbk->begin(), gbk->end());
  return b;
}

Bytes BuildAuthentication(const Authentication& a, bool v2019) {
  Bytes b;
  if (!v2019) {
    b.assign(a.code.begin(), a.code.end());
    return b;
  }
  b.push_back(static_cast<uint8_t>(a.code.size()));
  b.insert(b.end(), a.code.begin(), a.code.end());
  PutPadded(b, a.imei, 15);
  PutPadded(b, a.software, 20);
  return b;
}

Bytes BuildTerminalResponse(const TerminalResponse& t) {
  Bytes b;
  PutU16(b, t.reply_serial);
  PutU16(b, t.reply_id);
  b.push_back(t.result);
  return b;
}

Bytes BuildBatchLocation(const std::vector<Location>& points, bool backfill) {
  Bytes b;
  PutU16(b, static_cast<uint16_t>(points.size()));
  b.push_back(backfill ? 1 : 0);
  for (const auto& p : points) {
    Bytes one = BuildLocation(p);
    PutU16(b, static_cast<uint16_t>(one.size()));
    b.insert(b.end(), one.begin(), one.end());
  }
  return b;
}

Result<std::string> GbkToUtf8(std::span<const uint8_t> gbk) {
  return IconvConvert("UTF-8", "GBK", reinterpret_cast<const char*>(gbk.data()), gbk.size());
}

Result<Bytes> Utf8ToGbk(const std::string& utf8) {
  if (size_t bad = FirstInvalidUtf8(utf8); bad != std::string::npos)
    return Invalid("text is not valid UTF-8 (byte " + std::to_string(bad) + ")");
  auto s = IconvConvert("GBK", "UTF-8", utf8.data(), utf8.size());
  if (s.ok()) return Bytes(s->begin(), s->end());
  // Valid UTF-8 that GBK has no code for (an emoji, a rare character): name the first one.
  for (size_t i = 0; i < utf8.size();) {
    auto lead = static_cast<unsigned char>(utf8[i]);
    size_t len = lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
    if (!IconvConvert("GBK", "UTF-8", utf8.data() + i, len).ok()) {
      uint32_t cp = len == 1 ? lead : lead & (0xFF >> (len + 1));
      for (size_t k = 1; k < len; ++k) cp = (cp << 6) | (static_cast<unsigned char>(utf8[i + k]) & 0x3F);
      char buf[16];
      std::snprintf(buf, sizeof buf, "U+%04X", cp);
      return Invalid(std::string("text has a character GBK cannot encode (") + buf + " at byte " + std::to_string(i) + ")");
    }
    i += len;
  }
  return s.status();
}

namespace {
// Terminal parameter ids of JT/T 808 table 12 that a sanitation fleet sets remotely.
const std::map<std::string, uint32_t>& ParamTable() {
  static const std::map<std::string, uint32_t> t = {
      {"heartbeat_s", 0x0001},
      {"sleep_report_interval_s", 0x0027},
      {"emergency_report_interval_s", 0x0028},
      {"report_interval_s", 0x0029},
      {"report_distance_m", 0x002C},
      {"overspeed_kmh", 0x0055},
      {"overspeed_duration_s", 0x0056},
  };
  return t;
}
}  // namespace

std::optional<uint32_t> ParamId(const std::string& name) {
  auto it = ParamTable().find(name);
  if (it == ParamTable().end()) return std::nullopt;
  return it->second;
}

std::vector<std::string> ParamNames() {
  std::vector<std::string> names;
  for (const auto& [n, id] : ParamTable()) names.push_back(n);
  return names;
}

}  // namespace sanigate::dev::jt808
