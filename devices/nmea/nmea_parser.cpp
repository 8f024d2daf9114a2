#include "nmea/nmea_parser.h"

#include <array>
#include <charconv>
#include <chrono>
#include <cstdio>

namespace sanigate::dev::nmea {
namespace {

std::string Hex2(unsigned v) {
  std::array<char, 3> buf{};
  std::snprintf(buf.data(), buf.size(), "%02X", v & 0xFFu);
  return buf.data();
}

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;  // lower case is off-spec but harmless
  return -1;
}

bool IsDigit(char c) { return c >= '0' && c <= '9'; }

bool AllDigits(std::string_view s) {
  for (char c : s)
    if (!IsDigit(c)) return false;
  return !s.empty();
}

// A plain unsigned decimal: digits with at most one '.', as NMEA writes numbers. Rejects the
// exponents, signs and "inf" std::from_chars would accept.
bool IsDecimal(std::string_view s) {
  bool digit = false, dot = false;
  for (char c : s) {
    if (IsDigit(c)) {
      digit = true;
    } else if (c == '.' && !dot) {
      dot = true;
    } else {
      return false;
    }
  }
  return digit;
}

double ToDouble(std::string_view s) {
  double v = 0;
  std::from_chars(s.data(), s.data() + s.size(), v);
  return v;
}

int ToInt(std::string_view s) {
  int v = 0;
  std::from_chars(s.data(), s.data() + s.size(), v);
  return v;
}

std::string Quoted(std::string_view s) { return "\"" + std::string(s) + "\""; }

// Fields of one sentence after the address, with the sentence type for error messages. The
// first error wins; later getters then do nothing, so parsers read straight through.
class Fields {
 public:
  Fields(std::string_view address, std::vector<std::string_view> fields)
      : name_(address), f_(std::move(fields)) {}

  size_t size() const { return f_.size(); }
  const std::string& name() const { return name_; }
  bool failed() const { return !error_.empty(); }
  const std::string& error() const { return error_; }
  std::string_view At(size_t i) const { return i < f_.size() ? f_[i] : std::string_view(); }

  void Fail(size_t i, const char* what, std::string problem) {
    if (failed()) return;
    error_ = name_ + " field " + std::to_string(i + 1) + " (" + what + "): " + std::move(problem);
  }

  // hhmmss or hhmmss.sss -> UTC milliseconds of the day; empty -> nullopt.
  std::optional<int32_t> Time(size_t i) {
    std::string_view s = At(i);
    if (s.empty()) return std::nullopt;
    std::string_view frac = s.size() > 6 ? s.substr(6) : std::string_view();
    if (s.size() < 6 || !AllDigits(s.substr(0, 6)) ||
        (!frac.empty() && (frac[0] != '.' || (frac.size() > 1 && !AllDigits(frac.substr(1)))))) {
      Fail(i, "UTC time", Quoted(s) + " is not hhmmss[.ss]");
      return std::nullopt;
    }
    int h = ToInt(s.substr(0, 2)), m = ToInt(s.substr(2, 2)), sec = ToInt(s.substr(4, 2));
    if (h > 23 || m > 59 || sec > 60) {  // 60: a leap second
      Fail(i, "UTC time", Quoted(s) + " is not a time of day");
      return std::nullopt;
    }
    int ms = 0;
    if (frac.size() > 1) {
      // Round the fraction to milliseconds: ".5" -> 500, ".123456" -> 123.
      std::string digits(frac.substr(1, 3));
      while (digits.size() < 3) digits += '0';
      ms = ToInt(digits);
    }
    return ((h * 60 + m) * 60 + sec) * 1000 + ms;
  }

  // ddmmyy; empty -> nullopt.
  std::optional<Date> DateAt(size_t i) {
    std::string_view s = At(i);
    if (s.empty()) return std::nullopt;
    if (s.size() != 6 || !AllDigits(s)) {
      Fail(i, "date", Quoted(s) + " is not ddmmyy");
      return std::nullopt;
    }
    int yy = ToInt(s.substr(4, 2));
    // Two-digit years: receivers report 20yy; 80..99 are the years before GPS week 0 rolled.
    Date d{yy < 80 ? 2000 + yy : 1900 + yy, ToInt(s.substr(2, 2)), ToInt(s.substr(0, 2))};
    std::chrono::year_month_day ymd{std::chrono::year(d.year),
                                    std::chrono::month(static_cast<unsigned>(d.month)),
                                    std::chrono::day(static_cast<unsigned>(d.day))};
    if (!ymd.ok()) {
      Fail(i, "date", Quoted(s) + " is not a calendar date");
      return std::nullopt;
    }
    return d;
  }

  // Latitude ddmm.mmmm at i with N/S at i+1, longitude dddmm.mmmm at i+2 with E/W at i+3.
  // All four empty -> nullopt (no position); anything half-filled is an error.
  std::optional<Position> PositionAt(size_t i) {
    bool any = !At(i).empty() || !At(i + 1).empty() || !At(i + 2).empty() || !At(i + 3).empty();
    if (!any) return std::nullopt;
    auto lat = Coordinate(i, 2, 90, 'N', 'S', "latitude");
    auto lon = Coordinate(i + 2, 3, 180, 'E', 'W', "longitude");
    if (!lat || !lon) return std::nullopt;
    return Position{*lat, *lon};
  }

  std::optional<double> Number(size_t i, const char* what, double max) {
    std::string_view s = At(i);
    if (s.empty()) return std::nullopt;
    if (!IsDecimal(s)) {
      Fail(i, what, Quoted(s) + " is not a number");
      return std::nullopt;
    }
    double v = ToDouble(s);
    if (v > max) {
      Fail(i, what, Quoted(s) + " is above " + std::to_string(static_cast<int>(max)));
      return std::nullopt;
    }
    return v;
  }

  // Altitude may be negative (below mean sea level: Dead Sea, mines).
  std::optional<double> SignedNumber(size_t i, const char* what) {
    std::string_view s = At(i);
    bool neg = !s.empty() && s[0] == '-';
    if (neg) s.remove_prefix(1);
    if (s.empty() && !neg) return std::nullopt;
    if (!IsDecimal(s)) {
      Fail(i, what, Quoted(At(i)) + " is not a number");
      return std::nullopt;
    }
    return neg ? -ToDouble(s) : ToDouble(s);
  }

  std::optional<int> Integer(size_t i, const char* what, int max) {
    std::string_view s = At(i);
    if (s.empty()) return std::nullopt;
    if (!AllDigits(s) || s.size() > 6 || ToInt(s) > max) {
      Fail(i, what, Quoted(s) + " is not an integer 0.." + std::to_string(max));
      return std::nullopt;
    }
    return ToInt(s);
  }

  // A one-letter field from `allowed`; empty -> nullopt.
  std::optional<char> Letter(size_t i, const char* what, std::string_view allowed) {
    std::string_view s = At(i);
    if (s.empty()) return std::nullopt;
    if (s.size() != 1 || allowed.find(s[0]) == std::string_view::npos) {
      std::string list;
      for (char c : allowed) list += (list.empty() ? "" : "|") + std::string(1, c);
      Fail(i, what, Quoted(s) + " is not one of " + list);
      return std::nullopt;
    }
    return s[0];
  }

  // An empty field or exactly `letter` (unit fields such as the 'M' after the altitude).
  void Unit(size_t i, const char* what, char letter) {
    std::string_view s = At(i);
    if (!s.empty() && (s.size() != 1 || s[0] != letter))
      Fail(i, what, Quoted(s) + " is not " + std::string(1, letter));
  }

 private:
  std::optional<double> Coordinate(size_t i, size_t deg_digits, double max_deg, char pos, char neg,
                                   const char* what) {
    std::string_view s = At(i);
    size_t dot = s.find('.');
    size_t int_len = dot == std::string_view::npos ? s.size() : dot;
    if (s.empty() || !IsDecimal(s) || int_len != deg_digits + 2) {
      Fail(i, what, Quoted(s) + " is not " + (deg_digits == 2 ? "ddmm.mmmm" : "dddmm.mmmm"));
      return std::nullopt;
    }
    double deg = ToInt(s.substr(0, deg_digits));
    double min = ToDouble(s.substr(deg_digits));
    if (min >= 60 || deg + min / 60 > max_deg) {
      Fail(i, what, Quoted(s) + " is out of range");
      return std::nullopt;
    }
    std::string allowed{pos, neg};
    auto hemi = Letter(i + 1, what, allowed);
    if (!hemi) {
      if (!failed()) Fail(i + 1, what, "hemisphere is missing");
      return std::nullopt;
    }
    double v = deg + min / 60;
    return *hemi == neg ? -v : v;
  }

  std::string name_;  // the address, e.g. GNRMC
  std::vector<std::string_view> f_;
  std::string error_;
};

std::vector<std::string_view> Split(std::string_view s) {
  std::vector<std::string_view> out;
  size_t start = 0;
  for (;;) {
    size_t comma = s.find(',', start);
    if (comma == std::string_view::npos) {
      out.push_back(s.substr(start));
      return out;
    }
    out.push_back(s.substr(start, comma - start));
    start = comma + 1;
  }
}

// RMC: time, status, lat, N/S, lon, E/W, speed kn, course, date, magvar, E/W [, mode [, nav]].
std::optional<std::string> ParseRmc(Fields& f, Rmc& r) {
  if (f.size() < 11 || f.size() > 13)
    return f.name() + " has " + std::to_string(f.size()) + " fields, expected 11..13";
  r.time_ms = f.Time(0);
  auto status = f.Letter(1, "status", "AV");
  if (!status && !f.failed()) f.Fail(1, "status", "is missing");
  r.status = status.value_or('V');
  r.position = f.PositionAt(2);
  r.speed_knots = f.Number(6, "speed", 1e5);
  r.course_deg = f.Number(7, "course", 360);
  r.date = f.DateAt(8);
  f.Number(9, "magnetic variation", 180);
  f.Letter(10, "variation direction", "EW");
  // NMEA 2.3 mode; 4.1 adds a navigational status (S safe, C caution, U unsafe, V not valid).
  r.mode = f.Letter(11, "mode", "ADEFMNPRS");
  f.Letter(12, "navigational status", "SCUV");
  if (f.failed()) return f.error();
  r.valid = r.status == 'A' && r.mode.value_or('A') != 'N';
  return std::nullopt;
}

// GGA: time, lat, N/S, lon, E/W, quality, satellites, hdop, altitude, M, geoid separation, M,
// DGPS age, DGPS station.
std::optional<std::string> ParseGga(Fields& f, Gga& g) {
  if (f.size() != 14) return f.name() + " has " + std::to_string(f.size()) + " fields, expected 14";
  g.time_ms = f.Time(0);
  g.position = f.PositionAt(1);
  auto quality = f.Integer(5, "fix quality", 8);
  if (!quality && !f.failed()) f.Fail(5, "fix quality", "is missing");
  g.quality = quality.value_or(0);
  g.satellites = f.Integer(6, "satellites", 99);
  g.hdop = f.Number(7, "hdop", 100);
  g.altitude_m = f.SignedNumber(8, "altitude");
  f.Unit(9, "altitude unit", 'M');
  f.SignedNumber(10, "geoid separation");
  f.Unit(11, "geoid separation unit", 'M');
  if (f.failed()) return f.error();
  return std::nullopt;
}

// VTG: course true, T, course magnetic, M, speed kn, N, speed km/h, K [, mode].
std::optional<std::string> ParseVtg(Fields& f, Vtg& v) {
  if (f.size() < 8 || f.size() > 9)
    return f.name() + " has " + std::to_string(f.size()) + " fields, expected 8..9";
  v.course_deg = f.Number(0, "course", 360);
  f.Unit(1, "course reference", 'T');
  f.Number(2, "magnetic course", 360);
  f.Unit(3, "magnetic course reference", 'M');
  v.speed_knots = f.Number(4, "speed", 1e5);
  f.Unit(5, "speed unit", 'N');
  v.speed_kmh = f.Number(6, "speed", 2e5);
  f.Unit(7, "speed unit", 'K');
  v.mode = f.Letter(8, "mode", "ADEFMNPRS");
  if (f.failed()) return f.error();
  return std::nullopt;
}

bool IsSupportedTalker(std::string_view t) {
  return t == "GP" || t == "GN" || t == "BD" || t == "GB" || t == "GL" || t == "GA";
}

ParseResult Fail(ParseStatus status, std::string error) {
  ParseResult r;
  r.status = status;
  r.error = std::move(error);
  return r;
}

}  // namespace

void LineSplitter::Feed(std::string_view chunk, std::vector<std::string>& out) {
  for (char c : chunk) {
    if (c == '$') {
      // A new sentence always starts here, even inside another one: the earlier part lost its
      // line end (a glitch, a receiver restart) and could never pass its checksum.
      if (state_ == State::kInside) stats_.truncated++;
      state_ = State::kInside;
      line_.assign(1, c);
      continue;
    }
    bool eol = c == '\r' || c == '\n';
    switch (state_) {
      case State::kOutside:
        if (!eol) stats_.garbage_bytes++;
        break;
      case State::kSkipping:
        if (eol) state_ = State::kOutside;
        break;
      case State::kInside:
        if (eol) {
          stats_.lines++;
          out.push_back(std::move(line_));
          line_.clear();
          state_ = State::kOutside;
        } else if (line_.size() >= kMaxSentence) {
          stats_.overlong++;
          line_.clear();
          state_ = State::kSkipping;  // drop the rest of it, up to the line end or the next '$'
        } else {
          line_ += c;
        }
        break;
    }
  }
}

void LineSplitter::Reset() {
  line_.clear();
  state_ = State::kOutside;
}

const char* SentenceTypeName(SentenceType t) {
  switch (t) {
    case SentenceType::kRmc:
      return "RMC";
    case SentenceType::kGga:
      return "GGA";
    case SentenceType::kVtg:
      return "VTG";
  }
  return "?";
}

const char* ParseStatusName(ParseStatus s) {
  switch (s) {
    case ParseStatus::kOk:
      return "ok";
    case ParseStatus::kUnsupported:
      return "unsupported";
    case ParseStatus::kBadChecksum:
      return "bad checksum";
    case ParseStatus::kMalformed:
      return "malformed";
  }
  return "?";
}

uint8_t Checksum(std::string_view between) {
  uint8_t sum = 0;
  for (char c : between) sum ^= static_cast<uint8_t>(c);
  return sum;
}

ParseResult ParseSentence(std::string_view line) {
  if (line.empty() || line[0] != '$')
    return Fail(ParseStatus::kMalformed, "does not start with '$'");
  size_t star = line.find('*');
  if (star == std::string_view::npos)
    return Fail(ParseStatus::kMalformed, "no checksum (*hh): sentences without one are rejected");
  std::string_view body = line.substr(1, star - 1);
  std::string_view sum = line.substr(star + 1);
  for (size_t i = 0; i < body.size(); ++i) {
    auto c = static_cast<unsigned char>(body[i]);
    if (c < 0x20 || c > 0x7E)
      return Fail(ParseStatus::kMalformed,
                  "invalid character 0x" + Hex2(c) + " at column " + std::to_string(i + 2));
  }
  if (sum.size() != 2 || HexDigit(sum[0]) < 0 || HexDigit(sum[1]) < 0)
    return Fail(ParseStatus::kMalformed, "checksum " + Quoted(sum) + " is not two hex digits");
  unsigned got = static_cast<unsigned>(HexDigit(sum[0]) * 16 + HexDigit(sum[1]));
  unsigned computed = Checksum(body);
  if (got != computed)
    return Fail(ParseStatus::kBadChecksum,
                "bad checksum: got " + Hex2(got) + ", computed " + Hex2(computed));

  std::vector<std::string_view> fields = Split(body);
  std::string_view address = fields.front();
  fields.erase(fields.begin());
  // Proprietary sentences ($PUBX, $PMTK ...) and other talkers or types are valid NMEA we do
  // not use: counted apart from errors so a chatty receiver does not look broken.
  if (!address.empty() && address[0] == 'P')
    return Fail(ParseStatus::kUnsupported, "proprietary sentence " + std::string(address));
  if (address.size() != 5)
    return Fail(ParseStatus::kMalformed, "address " + Quoted(address) + " is not talker + type");
  std::string_view talker = address.substr(0, 2), type = address.substr(2);
  if (!IsSupportedTalker(talker))
    return Fail(ParseStatus::kUnsupported, "talker " + std::string(talker) + " is not used");

  ParseResult r;
  r.sentence.talker = std::string(talker);
  std::optional<std::string> error;
  if (type == "RMC") {
    Fields f(address, std::move(fields));
    Rmc rmc;
    error = ParseRmc(f, rmc);
    r.sentence.type = SentenceType::kRmc;
    r.sentence.body = rmc;
  } else if (type == "GGA") {
    Fields f(address, std::move(fields));
    Gga gga;
    error = ParseGga(f, gga);
    r.sentence.type = SentenceType::kGga;
    r.sentence.body = gga;
  } else if (type == "VTG") {
    Fields f(address, std::move(fields));
    Vtg vtg;
    error = ParseVtg(f, vtg);
    r.sentence.type = SentenceType::kVtg;
    r.sentence.body = vtg;
  } else {
    return Fail(ParseStatus::kUnsupported, "sentence type " + std::string(type) + " is not used");
  }
  if (error) return Fail(ParseStatus::kMalformed, *error);
  r.status = ParseStatus::kOk;
  return r;
}

}  // namespace sanigate::dev::nmea
