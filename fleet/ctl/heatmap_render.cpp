#include "ctl/heatmap_render.h"

#include <time.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <set>

namespace sanigate::ctl {
namespace {

using json = nlohmann::json;
using ordered_json = nlohmann::ordered_json;

constexpr const char* kCoreFields[] = {"n", "sum", "min", "max", "first", "last"};
constexpr double kPi = 3.14159265358979323846;
constexpr double kMetresPerDegreeLat = 110574.0;
constexpr double kMetresPerDegreeLonAtEquator = 111320.0;

bool IsCoreField(std::string_view name) {
  for (const char* f : kCoreFields)
    if (name == f) return true;
  return false;
}

bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

std::string Quote(std::string_view s) { return "\"" + std::string(s) + "\""; }

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return out;
}

std::string Upper(std::string_view s) {
  std::string out(s);
  for (char& c : out)
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
  return out;
}

// A number for humans: integers as integers, others with at most two decimals.
std::string NumText(double v) {
  if (!std::isfinite(v)) return "-";
  char buf[64];
  if (v == std::floor(v) && std::fabs(v) < 1e15) {
    std::snprintf(buf, sizeof buf, "%.0f", v == 0 ? 0.0 : v);
    return buf;
  }
  std::snprintf(buf, sizeof buf, "%.2f", v);
  std::string s = buf;
  while (!s.empty() && s.back() == '0') s.pop_back();
  if (!s.empty() && s.back() == '.') s.pop_back();
  return s == "-0" ? "0" : s;
}

// The shortest text that reads back as exactly `v` (nearest to it when there are several).
std::string ExactNumber(double v) {
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  return ec == std::errc() ? std::string(buf, end) : json(v).dump();
}

// A JSON number for CSV: integers as they are, floating point as ExactNumber; "" otherwise.
std::string CsvNumber(const json& x) {
  if (x.is_number_float()) return ExactNumber(x.get<double>());
  return x.is_number() ? x.dump() : std::string();
}

// "15m", "1h", "24h", "90s".
std::string SizeText(int64_t s) {
  if (s > 0 && s % 3600 == 0) return std::to_string(s / 3600) + "h";
  if (s > 0 && s % 60 == 0) return std::to_string(s / 60) + "m";
  return std::to_string(s) + "s";
}

// ---- time parsing ----

int64_t DaysFromCivil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2 ? 1 : 0;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const auto yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<int64_t>(doe) - 719468;
}

bool IsLeap(int y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

int DaysInMonth(int y, int m) {
  static const int kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  return m == 2 && IsLeap(y) ? 29 : kDays[m - 1];
}

struct Cursor {
  std::string_view s;
  size_t i = 0;
  bool Done() const { return i == s.size(); }
  bool Peek(char c) const { return i < s.size() && s[i] == c; }
  bool Eat(char c) {
    if (!Peek(c)) return false;
    ++i;
    return true;
  }
  // Exactly n decimal digits.
  bool Digits(int n, int& out) {
    if (i + static_cast<size_t>(n) > s.size()) return false;
    int v = 0;
    for (int k = 0; k < n; ++k) {
      char c = s[i + static_cast<size_t>(k)];
      if (c < '0' || c > '9') return false;
      v = v * 10 + (c - '0');
    }
    i += static_cast<size_t>(n);
    out = v;
    return true;
  }
};

Status NotATime(std::string_view text, const std::string& why = "") {
  return Invalid(Quote(text) + " is not a time" + (why.empty() ? "" : " (" + why + ")") +
                 ": give epoch milliseconds or ISO-8601 such as 2025-11-21T16:00:00+08:00, 2025-11-21T08:00Z or "
                 "2025-11-21 16:00 (local time)");
}

// ---- result parsing helpers ----

Status OptionalString(const json& doc, const char* key, std::string& out) {
  if (!doc.contains(key) || doc[key].is_null()) return Status::Ok();
  if (!doc[key].is_string()) return Invalid(Quote(key) + " is not a string: " + doc[key].dump());
  out = doc[key].get<std::string>();
  return Status::Ok();
}

Status OptionalInt(const json& doc, const char* key, int64_t& out) {
  if (!doc.contains(key) || doc[key].is_null()) return Status::Ok();
  if (!doc[key].is_number_integer()) return Invalid(Quote(key) + " is not an integer: " + doc[key].dump());
  out = doc[key].get<int64_t>();
  return Status::Ok();
}

Status StringArray(const json& doc, const char* key, std::vector<std::string>& out) {
  const json& a = doc[key];
  if (!a.is_array()) return Invalid(Quote(key) + " is not an array: " + a.dump());
  for (const auto& e : a) {
    if (!e.is_string()) return Invalid(Quote(key) + " holds a non-string: " + e.dump());
    out.push_back(e.get<std::string>());
  }
  return Status::Ok();
}

std::string JoinNames(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

struct Box {
  double lat_min = 0, lat_max = 0, lon_min = 0, lon_max = 0;
  double lat_step = 0, lon_step = 0;  // of the finest cell
};

Box BoxOf(const HeatmapResult& r) {
  Box b{90, -90, 180, -180, 180, 360};
  for (const auto& c : r.cells) {
    b.lat_min = std::min(b.lat_min, c.bounds.lat_min);
    b.lat_max = std::max(b.lat_max, c.bounds.lat_max);
    b.lon_min = std::min(b.lon_min, c.bounds.lon_min);
    b.lon_max = std::max(b.lon_max, c.bounds.lon_max);
    b.lat_step = std::min(b.lat_step, c.bounds.lat_max - c.bounds.lat_min);
    b.lon_step = std::min(b.lon_step, c.bounds.lon_max - c.bounds.lon_min);
  }
  return b;
}

double CosLat(double lat) { return std::max(std::cos(lat * kPi / 180.0), 0.01); }

std::string Metres(double m) {
  char buf[32];
  if (m < 10000)
    std::snprintf(buf, sizeof buf, "%.0f m", m);
  else
    std::snprintf(buf, sizeof buf, "%.1f km", m / 1000);
  return buf;
}

std::string CsvField(const std::string& s) {
  if (s.find_first_of(",\"\r\n") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

}  // namespace

// ---- command-line values ----

const std::vector<std::string>& HeatmapLayers() {
  static const std::vector<std::string> kLayers = {"vehicle_coverage", "bin_fill", "overflow",
                                                   "alarms",           "workers",  "unattended"};
  return kLayers;
}

bool IsHeatmapLayer(std::string_view layer) {
  const auto& layers = HeatmapLayers();
  return std::find(layers.begin(), layers.end(), layer) != layers.end();
}

Result<int64_t> ParseWindowArg(std::string_view text) {
  std::string t = Lower(text);
  if (t == "state") return int64_t{0};
  auto bad = [&] { return Invalid(Quote(text) + " is not a window: give state, 15m, 1h, 24h or a size in seconds"); };
  if (t.empty()) return bad();
  int64_t unit = 1;
  switch (t.back()) {
    case 's':
      unit = 1;
      t.pop_back();
      break;
    case 'm':
      unit = 60;
      t.pop_back();
      break;
    case 'h':
      unit = 3600;
      t.pop_back();
      break;
    case 'd':
      unit = 86400;
      t.pop_back();
      break;
    default:
      break;
  }
  if (t.empty() || t.size() > 9 || t.find_first_not_of("0123456789") != std::string::npos) return bad();
  int64_t v = std::stoll(t) * unit;
  if (v <= 0) return Invalid("the window must be longer than 0 seconds, not " + Quote(text));
  return v;
}

Result<int64_t> ParseTimeArg(std::string_view text) {
  if (text.empty()) return NotATime(text);
  if (text.find_first_not_of("0123456789") == std::string_view::npos) {
    if (text.size() > 15) return NotATime(text, "too many digits for epoch milliseconds");
    return static_cast<int64_t>(std::stoll(std::string(text)));
  }
  Cursor c{text};
  int year = 0, month = 0, day = 0, hour = 0, minute = 0, second = 0, ms = 0;
  if (!c.Digits(4, year) || !c.Eat('-') || !c.Digits(2, month) || !c.Eat('-') || !c.Digits(2, day))
    return NotATime(text);
  if (month < 1 || month > 12 || day < 1 || day > DaysInMonth(year, month)) return NotATime(text, "no such date");
  if (c.Eat('T') || c.Eat('t') || c.Eat(' ')) {
    if (!c.Digits(2, hour) || !c.Eat(':') || !c.Digits(2, minute)) return NotATime(text);
    if (c.Eat(':')) {
      if (!c.Digits(2, second)) return NotATime(text);
      if (c.Eat('.') || c.Eat(',')) {
        int digits = 0;
        while (!c.Done() && c.s[c.i] >= '0' && c.s[c.i] <= '9') {
          if (digits < 3) ms = ms * 10 + (c.s[c.i] - '0');
          ++digits;
          ++c.i;
        }
        if (digits == 0) return NotATime(text);
        for (int k = digits; k < 3; ++k) ms *= 10;
      }
    }
    if (hour > 23 || minute > 59 || second > 59) return NotATime(text, "no such time of day");
  }
  std::optional<int64_t> offset_s;
  if (c.Eat('Z') || c.Eat('z')) {
    offset_s = 0;
  } else if (c.Peek('+') || c.Peek('-')) {
    int sign = c.s[c.i] == '-' ? -1 : 1;
    ++c.i;
    int oh = 0, om = 0;
    if (!c.Digits(2, oh)) return NotATime(text);
    if (c.Eat(':')) {
      if (!c.Digits(2, om)) return NotATime(text);
    } else if (!c.Done() && !c.Digits(2, om)) {
      return NotATime(text);
    }
    if (oh > 18 || om > 59) return NotATime(text, "no such UTC offset");
    offset_s = sign * (oh * 3600 + om * 60);
  }
  if (!c.Done()) return NotATime(text);

  int64_t secs = 0;
  if (offset_s) {
    secs = DaysFromCivil(year, static_cast<unsigned>(month), static_cast<unsigned>(day)) * 86400 + hour * 3600 +
           minute * 60 + second - *offset_s;
  } else {
    struct tm tm {};
    tm.tm_year = year - 1900;
    tm.tm_mon = month - 1;
    tm.tm_mday = day;
    tm.tm_hour = hour;
    tm.tm_min = minute;
    tm.tm_sec = second;
    tm.tm_isdst = -1;
    time_t t = mktime(&tm);
    if (t == static_cast<time_t>(-1) && !(year == 1969 && month == 12 && day == 31))
      return NotATime(text, "not representable in local time");
    secs = static_cast<int64_t>(t);
  }
  return secs * 1000 + ms;
}

// ---- the result ----

std::optional<size_t> HeatmapResult::Field(std::string_view name) const {
  for (size_t i = 0; i < fields.size(); ++i)
    if (fields[i] == name) return i;
  return std::nullopt;
}

std::optional<double> HeatmapResult::Value(const HeatCell& cell, std::string_view name) const {
  auto i = Field(name);
  if (!i || *i >= cell.values.size()) return std::nullopt;
  return cell.values[*i];
}

std::optional<double> HeatmapResult::Mean(const HeatCell& cell) const {
  auto n = Value(cell, "n"), sum = Value(cell, "sum");
  if (!n || !sum || *n == 0) return std::nullopt;
  return *sum / *n;
}

std::vector<std::string> HeatmapResult::Extras() const {
  std::vector<std::string> out;
  for (const auto& f : fields)
    if (!IsCoreField(f)) out.push_back(f);
  return out;
}

Result<HeatmapResult> ParseHeatmapResult(const json& doc) {
  if (!doc.is_object()) return Invalid("the heatmap result is not a JSON object: " + doc.dump().substr(0, 80));
  HeatmapResult r;
  int64_t v = 1, precision = 0;
  for (Status s : {OptionalString(doc, "site", r.site), OptionalString(doc, "layer", r.layer),
                   OptionalString(doc, "grid", r.grid), OptionalString(doc, "crs", r.crs), OptionalInt(doc, "v", v),
                   OptionalInt(doc, "ts", r.ts), OptionalInt(doc, "precision", precision)})
    if (!s.ok()) return s;
  r.v = static_cast<int>(v);
  r.crs = Lower(r.crs);
  if (r.layer.empty()) return Invalid("the heatmap result names no \"layer\"");
  if (r.grid != "geohash") return Invalid("grid " + Quote(r.grid) + " is not supported (only geohash)");
  if (precision < 0 || precision > heatmap::kMaxPrecision)
    return Invalid("precision " + std::to_string(precision) + " is out of range (1..12)");
  r.precision = static_cast<int>(precision);

  if (!doc.contains("fields")) return Invalid("the heatmap result has no \"fields\"");
  if (Status s = StringArray(doc, "fields", r.fields); !s.ok()) return s;
  std::set<std::string> seen;
  for (const auto& f : r.fields) {
    if (f.empty()) return Invalid("\"fields\" holds an empty name");
    if (!seen.insert(f).second) return Invalid("\"fields\" names " + Quote(f) + " twice");
  }
  for (const char* needed : {"n", "sum"})
    if (!r.Field(needed)) return Invalid("\"fields\" lacks " + Quote(needed) + " (it has " + JoinNames(r.fields) + ")");
  if (doc.contains("merge") && !doc["merge"].is_null()) {
    if (Status s = StringArray(doc, "merge", r.merge); !s.ok()) return s;
    if (r.merge.size() != r.fields.size())
      return Invalid("\"merge\" has " + std::to_string(r.merge.size()) + " entries, \"fields\" " +
                     std::to_string(r.fields.size()));
  }

  if (doc.contains("window") && !doc["window"].is_null()) {
    const json& w = doc["window"];
    if (!w.is_object()) return Invalid("\"window\" is neither null nor an object: " + w.dump());
    HeatWindow hw;
    for (auto [key, out] :
         {std::pair{"size_s", &hw.size_s}, std::pair{"start", &hw.start}, std::pair{"end", &hw.end}}) {
      if (!w.contains(key) || !w[key].is_number_integer())
        return Invalid("\"window\" needs integer \"size_s\", \"start\" and \"end\": " + w.dump());
      *out = w[key].get<int64_t>();
    }
    r.window = hw;
  }

  if (doc.contains("cells") && !doc["cells"].is_null()) {
    const json& cells = doc["cells"];
    if (!cells.is_object()) return Invalid("\"cells\" is not an object: " + cells.dump().substr(0, 80));
    std::set<std::string> ids;
    for (const auto& [key, values] : cells.items()) {
      auto cell = heatmap::Parse(key);
      if (!cell) return Invalid("cell " + Quote(key) + " is not a geohash (1 to 12 of 0-9 b-h j k m n p-z)");
      HeatCell hc;
      hc.id = Lower(key);
      if (!ids.insert(hc.id).second) return Invalid("cell " + Quote(key) + " appears twice");
      hc.bounds = heatmap::Bounds(*cell, static_cast<int>(key.size()));
      if (!values.is_array()) return Invalid("cell " + Quote(key) + ": its values are not an array: " + values.dump());
      if (values.size() != r.fields.size())
        return Invalid("cell " + Quote(key) + " has " + std::to_string(values.size()) + " values, \"fields\" names " +
                       std::to_string(r.fields.size()));
      for (size_t i = 0; i < values.size(); ++i) {
        const json& x = values[i];
        if (x.is_null()) {
          hc.values.emplace_back(std::nullopt);
        } else if (x.is_number()) {
          hc.values.emplace_back(x.get<double>());
        } else {
          return Invalid("cell " + Quote(key) + ": " + Quote(r.fields[i]) + " is not a number: " + x.dump());
        }
        hc.raw.push_back(x);
      }
      r.cells.push_back(std::move(hc));
    }
    std::sort(r.cells.begin(), r.cells.end(), [](const HeatCell& a, const HeatCell& b) { return a.id < b.id; });
  }
  return r;
}

// ---- intensity ----

std::string DefaultMetric(std::string_view layer) {
  if (layer == "bin_fill") return "mean";
  if (layer == "unattended") return "sum";
  return "n";
}

Status CheckMetric(const HeatmapResult& r, std::string_view metric) {
  if (metric == "mean" || r.Field(metric)) return Status::Ok();
  return Invalid("unknown field " + Quote(metric) + ": the result has " + JoinNames(r.fields) + " (and mean)");
}

std::optional<double> Intensity(const HeatmapResult& r, const HeatCell& cell, std::string_view metric) {
  std::optional<double> v = metric == "mean" ? r.Mean(cell) : r.Value(cell, metric);
  if (v && !std::isfinite(*v)) return std::nullopt;
  return v;
}

double IntensityScale::Normalize(double v) const {
  if (!(hi > lo)) return 1.0;
  return std::clamp((v - lo) / (hi - lo), 0.0, 1.0);
}

IntensityScale ScaleOf(const HeatmapResult& r, std::string_view metric) {
  IntensityScale s;
  double lo = std::numeric_limits<double>::infinity(), hi = -lo;
  for (const auto& c : r.cells)
    if (auto v = Intensity(r, c, metric)) {
      lo = std::min(lo, *v);
      hi = std::max(hi, *v);
      s.any = true;
    }
  if (s.any) {
    s.lo = std::min(lo, 0.0);
    s.hi = hi;
  }
  return s;
}

std::vector<size_t> RankCells(const HeatmapResult& r, std::string_view metric) {
  std::vector<std::optional<double>> v;
  for (const auto& c : r.cells) v.push_back(Intensity(r, c, metric));
  std::vector<size_t> idx(r.cells.size());
  for (size_t i = 0; i < idx.size(); ++i) idx[i] = i;
  std::stable_sort(idx.begin(), idx.end(), [&](size_t a, size_t b) {
    if (v[a].has_value() != v[b].has_value()) return v[a].has_value();
    if (v[a] && *v[a] != *v[b]) return *v[a] > *v[b];
    return r.cells[a].id < r.cells[b].id;
  });
  return idx;
}

// ---- show ----

std::string HeatmapHeadline(const HeatmapResult& r) {
  std::string s = r.layer;
  if (!r.site.empty()) s += " at " + r.site;
  if (r.window)
    s += ", " + SizeText(r.window->size_s) + " window " + LocalDateTime(r.window->start) + " .. " +
         LocalDateTime(r.window->end);
  else
    s += ", state" + (r.ts > 0 ? " as of " + LocalDateTime(r.ts) : std::string());
  if (r.precision > 0) s += ", precision " + std::to_string(r.precision);
  s += ", " + r.crs;
  if (r.crs == "gcj02") s += " (GCJ-02 coordinates)";
  s += ": " + std::to_string(r.cells.size()) + (r.cells.size() == 1 ? " cell" : " cells");
  return s;
}

namespace {

bool IsTimeField(std::string_view name) {
  return name == "first" || name == "last" || name == "last_pass" || EndsWith(name, "_ms");
}

bool IsDurationField(const HeatmapResult& r, std::string_view name) {
  if (EndsWith(name, "_s")) return true;
  return r.layer == "unattended" && (name == "sum" || name == "min" || name == "max" || name == "mean");
}

std::string FieldText(const HeatmapResult& r, std::string_view name, std::optional<double> v) {
  if (!v) return "-";
  // A time or duration beyond ±2^53 ms is no real value and would not convert to int64_t.
  constexpr double kLimit = 9007199254740992.0;
  if (IsTimeField(name)) return *v > 0 && *v <= kLimit ? LocalDateTime(static_cast<int64_t>(*v)) : "-";
  if (IsDurationField(r, name))
    return *v * 1000 >= -kLimit && *v * 1000 <= kLimit ? Duration(static_cast<int64_t>(std::llround(*v * 1000))) : NumText(*v);
  return NumText(*v);
}

}  // namespace

Table TopCellsTable(const HeatmapResult& r, std::string_view metric, size_t top) {
  std::vector<std::string> extras = r.Extras();
  bool own_column = metric != "n" && metric != "mean" && metric != "max" && metric != "last" &&
                    std::find(extras.begin(), extras.end(), metric) == extras.end();
  Table t;
  t.headers = {"CELL", "CENTER", "N", "MEAN", "MAX"};
  if (own_column) t.headers.push_back(Upper(metric));
  for (const auto& e : extras) t.headers.push_back(Upper(e));
  t.headers.push_back("LAST");

  std::vector<size_t> order = RankCells(r, metric);
  for (size_t k = 0; k < order.size() && k < top; ++k) {
    const HeatCell& c = r.cells[order[k]];
    char center[64];
    std::snprintf(center, sizeof center, "%.5f,%.5f", c.bounds.lat_center(), c.bounds.lon_center());
    std::vector<Cell> row = {c.id, center, FieldText(r, "n", r.Value(c, "n")), FieldText(r, "mean", r.Mean(c)),
                             FieldText(r, "max", r.Value(c, "max"))};
    if (own_column) row.emplace_back(FieldText(r, metric, Intensity(r, c, metric)));
    for (const auto& e : extras) row.emplace_back(FieldText(r, e, r.Value(c, e)));
    row.emplace_back(FieldText(r, "last", r.Value(c, "last")));
    t.rows.push_back(std::move(row));
  }
  return t;
}

TermMap RenderTermMap(const HeatmapResult& r, const TermMapOptions& o) {
  TermMap m;
  m.unicode = o.unicode;
  m.shades = o.unicode ? std::vector<std::string>{" ", "·", "░", "▒", "▓", "█"}
                       : std::vector<std::string>{" ", ".", ":", "-", "=", "+", "*", "#", "%", "@"};
  const std::string metric = o.metric.empty() ? DefaultMetric(r.layer) : o.metric;
  const int levels = static_cast<int>(m.shades.size()) - 1;
  if (r.cells.empty()) {
    m.legend = "no cells";
    return m;
  }
  const Box b = BoxOf(r);
  m.lat_min = b.lat_min;
  m.lat_max = b.lat_max;
  m.lon_min = b.lon_min;
  m.lon_max = b.lon_max;
  const double dlat = b.lat_max - b.lat_min, dlon = b.lon_max - b.lon_min;
  const double coslat = CosLat((b.lat_min + b.lat_max) / 2);
  const int max_cols = std::max(o.max_cols, 1), max_rows = std::max(o.max_rows, 1);

  // Cells across and down the box; a terminal character is about twice as tall as wide, so one
  // row per cell wants `per_cell` columns to keep the cells' shape.
  const double C = std::max(1.0, std::round(dlon / b.lon_step)), R = std::max(1.0, std::round(dlat / b.lat_step));
  const double per_cell = 2.0 * b.lon_step * coslat / b.lat_step;
  const double k = std::max(1.0, std::round(per_cell));
  if (C * k <= max_cols && R <= max_rows) {
    m.cols = static_cast<int>(C * k);
    m.rows = static_cast<int>(R);
  } else {
    const double want_cols = C * per_cell;
    const double s = std::min({1.0, max_cols / want_cols, max_rows / R});
    m.cols = std::clamp(static_cast<int>(std::floor(want_cols * s)), 1, max_cols);
    m.rows = std::clamp(static_cast<int>(std::floor(R * s)), 1, max_rows);
  }

  // Each character: the hottest cell whose centre lies in it; a character no centre falls in
  // (a cell wider than one character) takes the cell under its own centre.
  const IntensityScale scale = ScaleOf(r, metric);
  auto level = [&](std::optional<double> v) {
    if (!v) return 1;
    return 1 + std::min(levels - 1, static_cast<int>(std::floor(scale.Normalize(*v) * levels)));
  };
  std::vector<int> shade(static_cast<size_t>(m.cols * m.rows), 0);
  std::vector<int> count(shade.size(), 0);
  std::map<std::string, size_t> by_id;
  std::set<int> precisions;
  for (size_t i = 0; i < r.cells.size(); ++i) {
    const HeatCell& c = r.cells[i];
    by_id[c.id] = i;
    precisions.insert(static_cast<int>(c.id.size()));
    int col =
        std::clamp(static_cast<int>(std::floor((c.bounds.lon_center() - b.lon_min) / dlon * m.cols)), 0, m.cols - 1);
    int row =
        std::clamp(static_cast<int>(std::floor((b.lat_max - c.bounds.lat_center()) / dlat * m.rows)), 0, m.rows - 1);
    auto at = static_cast<size_t>(row * m.cols + col);
    shade[at] = std::max(shade[at], level(Intensity(r, c, metric)));
    ++count[at];
  }
  bool merged = false;
  for (int row = 0; row < m.rows; ++row)
    for (int col = 0; col < m.cols; ++col) {
      auto at = static_cast<size_t>(row * m.cols + col);
      merged = merged || count[at] > 1;
      if (count[at] > 0) continue;
      double lat = b.lat_max - (row + 0.5) * dlat / m.rows, lon = b.lon_min + (col + 0.5) * dlon / m.cols;
      for (int p : precisions) {
        auto it = by_id.find(heatmap::ToString(heatmap::Encode(lat, lon, p), p));
        if (it != by_id.end()) shade[at] = std::max(shade[at], level(Intensity(r, r.cells[it->second], metric)));
      }
    }
  for (int row = 0; row < m.rows; ++row) {
    std::string line;
    for (int col = 0; col < m.cols; ++col)
      line += m.shades[static_cast<size_t>(shade[static_cast<size_t>(row * m.cols + col)])];
    m.grid.push_back(std::move(line));
  }

  std::string q = o.unicode ? "" : "'";
  m.legend = q + m.shades[1] + q + " " + (scale.any ? NumText(scale.lo) : "-") + " .. " + q + m.shades.back() + q +
             " " + (scale.any ? NumText(scale.hi) : "-") + " " + metric + " per cell" +
             (merged ? " (a character shows its hottest cell)" : "") + "; 1 char " + (o.unicode ? "≈ " : "~ ") +
             Metres(dlon / m.cols * coslat * kMetresPerDegreeLonAtEquator) + " x " +
             Metres(dlat / m.rows * kMetresPerDegreeLat) + "; north up";
  return m;
}

std::string TermMap::Text() const {
  if (cols == 0 || rows == 0) return "(no cells)\n";
  char top[32], bottom[32], west[32], east[32];
  std::snprintf(top, sizeof top, "%.4f", lat_max);
  std::snprintf(bottom, sizeof bottom, "%.4f", lat_min);
  std::snprintf(west, sizeof west, "%.4f", lon_min);
  std::snprintf(east, sizeof east, "%.4f", lon_max);
  const size_t lw = std::max(std::string(top).size(), std::string(bottom).size());
  auto pad = [&](const std::string& s) { return std::string(lw - s.size(), ' ') + s + " "; };
  std::string h, tl, tr, bl, br, v;
  if (unicode) {
    tl = "┌", tr = "┐", bl = "└", br = "┘", v = "│";
    for (int i = 0; i < cols; ++i) h += "─";
  } else {
    tl = tr = bl = br = "+", v = "|";
    h = std::string(static_cast<size_t>(cols), '-');
  }
  std::string out = pad(top) + tl + h + tr + "\n";
  for (const auto& line : grid) out += std::string(lw + 1, ' ') + v + line + v + "\n";
  out += pad(bottom) + bl + h + br + "\n";
  std::string w = west, e = east;
  const size_t frame = static_cast<size_t>(cols) + 2;
  std::string lon_line =
      frame >= w.size() + e.size() + 1 ? w + std::string(frame - w.size() - e.size(), ' ') + e : w + " .. " + e;
  out += std::string(lw + 1, ' ') + lon_line + "\n";
  out += legend + "\n";
  return out;
}

// ---- export ----

ordered_json ToGeoJson(const HeatmapResult& r) {
  ordered_json fc;
  fc["type"] = "FeatureCollection";
  if (!r.cells.empty()) {
    Box b = BoxOf(r);
    fc["bbox"] = {b.lon_min, b.lat_min, b.lon_max, b.lat_max};
  }
  ordered_json window = nullptr;
  if (r.window) window = {{"size_s", r.window->size_s}, {"start", r.window->start}, {"end", r.window->end}};
  ordered_json header;
  header["v"] = r.v;
  header["site"] = r.site;
  header["layer"] = r.layer;
  header["ts"] = r.ts;
  header["grid"] = r.grid;
  header["precision"] = r.precision > 0 ? ordered_json(r.precision) : ordered_json(nullptr);
  header["crs"] = r.crs;
  header["coordinates"] = r.crs == "gcj02" ? "GCJ-02" : r.crs == "wgs84" ? "WGS-84" : r.crs;
  header["fields"] = r.fields;
  header["merge"] = r.merge;
  header["window"] = window;
  header["cells"] = r.cells.size();
  fc["sanigate"] = header;

  ordered_json features = ordered_json::array();
  for (const auto& c : r.cells) {
    const auto& bd = c.bounds;
    ordered_json ring = ordered_json::array({{bd.lon_min, bd.lat_min},
                                             {bd.lon_max, bd.lat_min},
                                             {bd.lon_max, bd.lat_max},
                                             {bd.lon_min, bd.lat_max},
                                             {bd.lon_min, bd.lat_min}});
    ordered_json props;
    props["cell"] = c.id;
    for (size_t i = 0; i < r.fields.size(); ++i) props[r.fields[i]] = c.raw[i];
    auto set_derived = [&](const char* key, ordered_json value) {
      if (!props.contains(key)) props[key] = std::move(value);  // a field of that name wins
    };
    auto mean = r.Mean(c);
    set_derived("mean", mean && std::isfinite(*mean) ? ordered_json(*mean) : ordered_json(nullptr));
    set_derived("layer", r.layer);
    set_derived("site", r.site);
    set_derived("crs", r.crs);
    set_derived("ts", r.ts);
    set_derived("window_size_s", r.window ? ordered_json(r.window->size_s) : ordered_json(nullptr));
    set_derived("window_start", r.window ? ordered_json(r.window->start) : ordered_json(nullptr));
    set_derived("window_end", r.window ? ordered_json(r.window->end) : ordered_json(nullptr));
    ordered_json f;
    f["type"] = "Feature";
    f["id"] = c.id;
    f["geometry"] = {{"type", "Polygon"}, {"coordinates", ordered_json::array({ring})}};
    f["properties"] = std::move(props);
    features.push_back(std::move(f));
  }
  fc["features"] = std::move(features);
  return fc;
}

std::string ToCsv(const HeatmapResult& r) {
  std::string out = "cell,lat_min,lat_max,lon_min,lon_max,lat,lon";
  for (const auto& f : r.fields) out += "," + CsvField(f);
  out += ",mean\n";
  for (const auto& c : r.cells) {
    const auto& b = c.bounds;
    out += CsvField(c.id);
    for (double v : {b.lat_min, b.lat_max, b.lon_min, b.lon_max, b.lat_center(), b.lon_center()})
      out += "," + ExactNumber(v);
    for (const auto& x : c.raw) out += "," + CsvNumber(x);
    auto mean = r.Mean(c);
    out += "," + (mean && std::isfinite(*mean) ? ExactNumber(*mean) : std::string());
    out += "\n";
  }
  return out;
}

// ---- render ----

Rgba RampColor(double t) {
  struct Stop {
    double t;
    double r, g, b;
  };
  // ColorBrewer's YlOrRd, from its second class so the palest cell still shows on the grey box.
  static constexpr Stop kStops[] = {
      {0.00, 255, 237, 160}, {0.25, 254, 178, 76}, {0.50, 252, 78, 42}, {0.75, 189, 0, 38}, {1.00, 128, 0, 38}};
  if (!(t >= 0)) t = 0;  // also NaN
  if (t > 1) t = 1;
  size_t i = 0;
  while (i + 2 < std::size(kStops) && t > kStops[i + 1].t) ++i;
  const Stop& a = kStops[i];
  const Stop& b = kStops[i + 1];
  double u = (t - a.t) / (b.t - a.t);
  auto mix = [u](double x, double y) { return static_cast<uint8_t>(std::lround(x + (y - x) * u)); };
  return {mix(a.r, b.r), mix(a.g, b.g), mix(a.b, b.b), 255};
}

std::string HeatmapTitle(const HeatmapResult& r) {
  std::string s = r.layer;
  if (!r.site.empty()) s += "  " + r.site;
  if (r.window) {
    std::string start = LocalDateTime(r.window->start), end = LocalDateTime(r.window->end);
    // "2025-11-21 15:00" - "16:00" when the window ends on the same day
    std::string end_text = end.substr(0, 10) == start.substr(0, 10) ? end.substr(11, 5) : end.substr(0, 16);
    s += "  " + SizeText(r.window->size_s) + " " + start.substr(0, 16) + " - " + end_text;
  } else {
    s += "  state";
    if (r.ts > 0) s += " " + LocalDateTime(r.ts).substr(0, 16);
  }
  if (r.precision > 0) s += "  p" + std::to_string(r.precision);
  if (r.crs != "wgs84") s += "  " + r.crs;
  return s;
}

Result<HeatPicture> RenderHeatPicture(const HeatmapResult& r, const PictureOptions& o) {
  if (o.width < kMinPictureWidth || o.width > kMaxPictureWidth)
    return Invalid("a width of " + std::to_string(o.width) + " px is out of range (" +
                   std::to_string(kMinPictureWidth) + ".." + std::to_string(kMaxPictureWidth) + ")");
  const std::string metric = o.metric.empty() ? DefaultMetric(r.layer) : o.metric;
  if (Status s = CheckMetric(r, metric); !s.ok()) return s;

  const Rgba kWhite{255, 255, 255, 255}, kInk{40, 40, 40, 255}, kMapBg{238, 238, 238, 255},
      kNoValue{190, 190, 190, 255}, kFrame{90, 90, 90, 255};
  const int W = o.width, f = W >= 640 ? 2 : 1, margin = 8 * f, line = kGlyphHeight * f;
  auto fit = [&](std::string text, int room) {
    while (!text.empty() && TextWidth(text, f) > room) text.pop_back();
    return text;
  };

  // Layout first (the height depends on the box's shape), then draw.
  HeatPicture pic;
  int y = margin;
  // A long title goes down to the small font before it is cut.
  const int title_scale = TextWidth(o.title, f) <= W - 2 * margin ? f : 1;
  std::string title = o.title;
  while (!title.empty() && TextWidth(title, title_scale) > W - 2 * margin) title.pop_back();
  const int title_y = y;
  if (!title.empty()) y += kGlyphHeight * title_scale + 6 * f;

  const int mw_max = W - 2 * margin, mh_max = W;
  const bool have = !r.cells.empty();
  Box b;
  double coslat = 1, s = 1;  // s: pixels per degree of latitude
  int mw = mw_max, mh = mw_max / 2;
  if (have) {
    b = BoxOf(r);
    coslat = CosLat((b.lat_min + b.lat_max) / 2);
    const double gw = (b.lon_max - b.lon_min) * coslat, gh = b.lat_max - b.lat_min;
    s = std::min(mw_max / gw, mh_max / gh);
    mw = std::clamp(static_cast<int>(std::lround(gw * s)), 1, mw_max);
    mh = std::clamp(static_cast<int>(std::lround(gh * s)), 1, mh_max);
  }
  pic.map = {margin + (mw_max - mw) / 2, y, margin + (mw_max - mw) / 2 + mw, y + mh};
  y = pic.map.y1 + 8 * f;
  const int label_y = y;
  y += line + 4 * f;
  const int bw = std::min(mw_max, 256 * f), bh = 10 * f;
  pic.bar = {margin, y, margin + bw, y + bh};
  y += bh + 3 * f;
  const int values_y = y;
  y += line + margin;

  Image img(W, y, kWhite);
  if (!title.empty()) DrawText(img, margin, title_y, title, kInk, title_scale);

  img.FillRect(pic.map.x0, pic.map.y0, pic.map.x1, pic.map.y1, kMapBg);
  const IntensityScale scale = ScaleOf(r, metric);
  bool some_without_value = false;
  if (have) {
    auto X = [&](double lon) { return pic.map.x0 + static_cast<int>(std::lround((lon - b.lon_min) * coslat * s)); };
    auto Y = [&](double lat) { return pic.map.y0 + static_cast<int>(std::lround((b.lat_max - lat) * s)); };
    for (const auto& c : r.cells) {
      auto v = Intensity(r, c, metric);
      some_without_value = some_without_value || !v;
      int x0 = X(c.bounds.lon_min), x1 = std::max(X(c.bounds.lon_max), x0 + 1);
      int y0 = Y(c.bounds.lat_max), y1 = std::max(Y(c.bounds.lat_min), y0 + 1);
      img.FillRect(x0, y0, x1, y1, v ? RampColor(scale.Normalize(*v)) : kNoValue);
    }
    // Grid lines on the cell borders (of the finest cells), when they are far enough apart.
    const double cols = std::round((b.lon_max - b.lon_min) / b.lon_step),
                 rows = std::round((b.lat_max - b.lat_min) / b.lat_step);
    if (b.lon_step * coslat * s >= 4 && b.lat_step * s >= 4) {
      for (int k = 1; k < static_cast<int>(cols); ++k) {
        int x = X(b.lon_min + k * b.lon_step);
        for (int yy = pic.map.y0; yy < pic.map.y1; ++yy) img.Darken(x, yy, 4, 5);
      }
      for (int k = 1; k < static_cast<int>(rows); ++k) {
        int yy = Y(b.lat_max - k * b.lat_step);
        for (int x = pic.map.x0; x < pic.map.x1; ++x) img.Darken(x, yy, 4, 5);
      }
    }
  } else {
    const std::string none = "no cells";
    DrawText(img, (pic.map.x0 + pic.map.x1 - TextWidth(none, f)) / 2, (pic.map.y0 + pic.map.y1 - line) / 2, none, kInk,
             f);
  }
  img.StrokeRect(pic.map.x0 - 1, pic.map.y0 - 1, pic.map.x1 + 1, pic.map.y1 + 1, kFrame);

  // Legend: label, colour bar, its ends' values.
  DrawText(img, margin, label_y, fit(r.layer + ": " + metric + " per cell", W - 2 * margin), kInk, f);
  for (int x = 0; x < bw; ++x) {
    double t = bw > 1 ? static_cast<double>(x) / (bw - 1) : 1.0;
    img.FillRect(pic.bar.x0 + x, pic.bar.y0, pic.bar.x0 + x + 1, pic.bar.y1, RampColor(t));
  }
  img.StrokeRect(pic.bar.x0 - 1, pic.bar.y0 - 1, pic.bar.x1 + 1, pic.bar.y1 + 1, kFrame);
  const std::string lo = scale.any ? NumText(scale.lo) : "-", hi = scale.any ? NumText(scale.hi) : "-";
  DrawText(img, pic.bar.x0, values_y, lo, kInk, f);
  DrawText(img, std::max(pic.bar.x0 + TextWidth(lo, f) + 6 * f, pic.bar.x1 - TextWidth(hi, f)), values_y, hi, kInk, f);
  if (some_without_value && pic.bar.x1 + 14 * f + bh + TextWidth("no value", f) < W - margin) {
    int x = pic.bar.x1 + 12 * f;
    img.FillRect(x, pic.bar.y0, x + bh, pic.bar.y1, kNoValue);
    img.StrokeRect(x - 1, pic.bar.y0 - 1, x + bh + 1, pic.bar.y1 + 1, kFrame);
    DrawText(img, x + bh + 4 * f, pic.bar.y0 + (bh - line) / 2, "no value", kInk, f);
  }
  pic.image = std::move(img);
  return pic;
}

}  // namespace sanigate::ctl
