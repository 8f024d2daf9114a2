#include "ctl/format.h"

#include <unistd.h>

#include <cctype>
#include <cstdlib>

#include <time.h>

#include <algorithm>
#include <cstdio>

namespace sanigate::ctl {
namespace {

// Decodes one UTF-8 sequence at s[i]; advances i. Invalid bytes decode as themselves (1 byte).
char32_t NextCodePoint(std::string_view s, size_t& i) {
  auto b = static_cast<unsigned char>(s[i]);
  int len = b < 0x80 ? 1 : (b >> 5) == 0x6 ? 2 : (b >> 4) == 0xE ? 3 : (b >> 3) == 0x1E ? 4 : 0;
  if (len <= 1 || i + static_cast<size_t>(len) > s.size()) {
    ++i;
    return b;
  }
  char32_t cp = b & (0xFF >> (len + 1));
  for (int k = 1; k < len; ++k) {
    auto c = static_cast<unsigned char>(s[i + static_cast<size_t>(k)]);
    if ((c & 0xC0) != 0x80) {  // truncated sequence: count the lead byte alone
      ++i;
      return b;
    }
    cp = (cp << 6) | (c & 0x3F);
  }
  i += static_cast<size_t>(len);
  return cp;
}

bool InRanges(char32_t cp, std::initializer_list<std::pair<char32_t, char32_t>> ranges) {
  for (auto [lo, hi] : ranges)
    if (cp >= lo && cp <= hi) return true;
  return false;
}

int CodePointWidth(char32_t cp) {
  if (cp < 0x20 || (cp >= 0x7F && cp < 0xA0)) return 0;  // control characters
  // Combining marks, zero-width space/joiners, variation selectors.
  if (InRanges(cp, {{0x0300, 0x036F}, {0x1AB0, 0x1AFF}, {0x1DC0, 0x1DFF}, {0x200B, 0x200F},
                    {0x20D0, 0x20FF}, {0xFE00, 0xFE0F}, {0xFE20, 0xFE2F}}))
    return 0;
  // East Asian Wide and Fullwidth (the blocks that matter for names), and emoji.
  if (InRanges(cp, {{0x1100, 0x115F}, {0x2E80, 0x303E}, {0x3041, 0x33FF}, {0x3400, 0x4DBF},
                    {0x4E00, 0x9FFF}, {0xA000, 0xA4CF}, {0xAC00, 0xD7A3}, {0xF900, 0xFAFF},
                    {0xFE30, 0xFE4F}, {0xFF00, 0xFF60}, {0xFFE0, 0xFFE6}, {0x1F300, 0x1F64F},
                    {0x1F900, 0x1F9FF}, {0x20000, 0x2FFFD}, {0x30000, 0x3FFFD}}))
    return 2;
  return 1;
}

std::string PadRight(const std::string& text, size_t width) {
  size_t w = DisplayWidth(text);
  return w >= width ? text : text + std::string(width - w, ' ');
}

struct tm LocalTm(int64_t ts_ms) {
  // Floor division without ts_ms - 999, which overflows for the smallest int64_t.
  time_t secs = static_cast<time_t>(ts_ms / 1000 - (ts_ms % 1000 < 0 ? 1 : 0));
  struct tm tm {};
  localtime_r(&secs, &tm);
  return tm;
}

}  // namespace

std::string Paint(std::string_view text, Color color, bool enabled) {
  const char* code = nullptr;
  switch (color) {
    case Color::kNone: break;
    case Color::kGreen: code = "32"; break;
    case Color::kYellow: code = "33"; break;
    case Color::kRed: code = "31"; break;
    case Color::kRedBold: code = "1;31"; break;
    case Color::kDim: code = "2"; break;
    case Color::kCyan: code = "36"; break;
    case Color::kBold: code = "1"; break;
  }
  if (!enabled || code == nullptr || text.empty()) return std::string(text);
  return std::string("\033[") + code + "m" + std::string(text) + "\033[0m";
}

Color HealthColor(std::string_view state) {
  if (state == "ok") return Color::kGreen;
  if (state == "degraded") return Color::kYellow;
  if (state == "critical") return Color::kRed;
  if (state == "offline") return Color::kRedBold;
  return Color::kDim;
}

Color EventColor(std::string_view severity, std::string_view state) {
  if (state == "cleared") return Color::kGreen;
  if (severity == "critical") return Color::kRedBold;
  if (severity == "warning") return Color::kYellow;
  return Color::kNone;
}

size_t DisplayWidth(std::string_view utf8) {
  size_t width = 0;
  for (size_t i = 0; i < utf8.size();) width += static_cast<size_t>(CodePointWidth(NextCodePoint(utf8, i)));
  return width;
}

std::string RenderTable(const Table& table, bool color) {
  size_t cols = table.headers.size();
  for (const auto& row : table.rows) cols = std::max(cols, row.size());
  std::vector<size_t> widths(cols, 0);
  for (size_t c = 0; c < table.headers.size(); ++c) widths[c] = DisplayWidth(table.headers[c]);
  for (const auto& row : table.rows)
    for (size_t c = 0; c < row.size(); ++c) widths[c] = std::max(widths[c], DisplayWidth(row[c].text));

  std::string out;
  auto emit = [&](const std::vector<Cell>& row) {
    std::string line;
    for (size_t c = 0; c < cols; ++c) {
      const Cell empty;
      const Cell& cell = c < row.size() ? row[c] : empty;
      if (c > 0) line += "  ";
      line += Paint(cell.text, cell.color, color);
      if (c + 1 < cols) line += std::string(widths[c] - DisplayWidth(cell.text), ' ');
    }
    // The last column's blanks (an empty last cell) are trailing blanks too.
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out += line + "\n";
  };
  if (!table.headers.empty()) {
    std::vector<Cell> header;
    for (const auto& h : table.headers) header.emplace_back(h, Color::kBold);
    emit(header);
  }
  for (const auto& row : table.rows) emit(row);
  return out;
}

std::string RenderKeyValues(const std::vector<std::pair<std::string, std::string>>& pairs) {
  size_t width = 0;
  for (const auto& [k, v] : pairs) width = std::max(width, DisplayWidth(k) + 1);
  std::string out;
  for (const auto& [k, v] : pairs) {
    std::string line = PadRight(k + ":", width) + " " + v;
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out += line + "\n";
  }
  return out;
}

std::string RelativeTime(int64_t ts_ms, int64_t now_ms) {
  if (ts_ms <= 0) return "-";
  int64_t d = now_ms - ts_ms;
  bool future = d < 0;
  if (future) d = -d;
  int64_t s = d / 1000;
  std::string amount = s < 60      ? std::to_string(s) + "s"
                       : s < 3600  ? std::to_string(s / 60) + "m"
                       : s < 86400 ? std::to_string(s / 3600) + "h"
                                   : std::to_string(s / 86400) + "d";
  return future ? "in " + amount : amount + " ago";
}

std::string Duration(int64_t ms) {
  int64_t s = std::max<int64_t>(ms, 0) / 1000;
  char buf[48];
  if (s < 60) std::snprintf(buf, sizeof buf, "%llds", static_cast<long long>(s));
  else if (s < 3600)
    std::snprintf(buf, sizeof buf, "%lldm %02llds", static_cast<long long>(s / 60), static_cast<long long>(s % 60));
  else if (s < 86400)
    std::snprintf(buf, sizeof buf, "%lldh %02lldm", static_cast<long long>(s / 3600),
                  static_cast<long long>(s % 3600 / 60));
  else
    std::snprintf(buf, sizeof buf, "%lldd %lldh", static_cast<long long>(s / 86400),
                  static_cast<long long>(s % 86400 / 3600));
  return buf;
}

std::string LocalClock(int64_t ts_ms) {
  struct tm tm = LocalTm(ts_ms);
  int64_t ms = ((ts_ms % 1000) + 1000) % 1000;
  char buf[32];
  std::snprintf(buf, sizeof buf, "%02d:%02d:%02d.%03d", tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms));
  return buf;
}

std::string LocalDateTime(int64_t ts_ms) {
  struct tm tm = LocalTm(ts_ms);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm);
  return buf;
}

std::string ValueText(const json& v) {
  if (v.is_null()) return "-";
  if (v.is_string()) return v.get<std::string>();
  return v.dump();
}

std::string MetricsText(const json& metrics) {
  std::string out;
  if (!metrics.is_object()) return out;
  for (const auto& [k, v] : metrics.items()) {
    if (!out.empty()) out += ' ';
    out += k + "=" + ValueText(v);
  }
  return out;
}

namespace {

// Text from the broker made safe for one terminal line: control characters (C0, DEL and the
// UTF-8-encoded C1 range, which includes CSI) are written as escapes, so a message can neither
// break the line nor send escape sequences to the operator's terminal.
std::string Printable(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  char buf[8];
  for (size_t i = 0; i < text.size(); ++i) {
    auto c = static_cast<unsigned char>(text[i]);
    if (c < 0x20 || c == 0x7F) {
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else if (c == 0xC2 && i + 1 < text.size() && static_cast<unsigned char>(text[i + 1]) < 0xA0 &&
               static_cast<unsigned char>(text[i + 1]) >= 0x80) {
      std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned char>(text[++i]));
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

std::string Shown(const json& v) { return Printable(ValueText(v)); }

// A field of a message off the broker as text: anyone may publish there, so a field of another
// type is shown as its JSON (value() would throw and end `sanictl tail`).
std::string FieldText(const json& obj, const char* key, const std::string& fallback) {
  auto it = obj.find(key);
  return it == obj.end() || it->is_null() ? fallback : Shown(*it);
}

}  // namespace

std::string TailLine(const TailMessage& m, bool color) {
  const json& p = m.payload;
  int64_t ts = p.is_object() && p.contains("ts") && p["ts"].is_number_integer() ? p["ts"].get<int64_t>() : 0;
  std::string clock = ts > 0 ? LocalClock(ts) : "--:--:--.---";
  bool is_gateway = m.group == "gateway";
  std::string type = is_gateway ? "gateway" : m.type;

  std::string body;
  if (!p.is_object()) {
    body = p.is_discarded() ? "(not JSON)" : Shown(p);
  } else if (m.type == "telemetry") {
    body = Printable(MetricsText(p.value("metrics", json::object())));
    if (p.contains("location") && p["location"].is_object() && p["location"].contains("lat"))
      body += (body.empty() ? "" : " ") + std::string("@") + Shown(p["location"]["lat"]) + "," +
              Shown(p["location"].value("lon", json()));
  } else if (m.type == "event") {
    std::string name = FieldText(p, "event", "?"), state = FieldText(p, "state", ""), sev = FieldText(p, "severity", "");
    std::string head = name;
    if (!state.empty()) head += " " + state;
    if (!sev.empty()) head += " " + sev;
    body = Paint(head, EventColor(sev, state), color);
    std::string metrics = Printable(MetricsText(p.value("metrics", json::object())));
    if (!metrics.empty()) body += " " + metrics;
  } else if (m.type == "status") {
    auto online = p.find("online");
    if (online != p.end() && !online->is_boolean() && !online->is_null())  // neither online nor offline: say so
      body = Paint("online=" + Shown(*online), Color::kYellow, color);
    else if (online != p.end() && online->is_boolean() && online->get<bool>())
      body = Paint("online", Color::kGreen, color);
    else
      body = Paint("offline", Color::kRed, color);
    if (is_gateway) {
      if (p.contains("version")) body += " v" + Shown(p["version"]);
      if (p.contains("adapters") && p["adapters"].is_object())
        for (const auto& [name, a] : p["adapters"].items())
          body += " " + Printable(name) + ":" + (a.is_object() ? Shown(a.value("state", json())) : Shown(a));
      if (p.contains("outbox") && p["outbox"].is_object())
        body += " outbox=" + Shown(p["outbox"].value("pending", json()));
    } else if (p.contains("last_seen") && p["last_seen"].is_number_integer() && p["last_seen"].get<int64_t>() > 0) {
      body += " last seen " + LocalClock(p["last_seen"].get<int64_t>());
    }
  } else {
    body = Printable(p.dump());
  }
  std::string line = clock + "  " + PadRight(Printable(m.id), 16) + "  " + PadRight(type, 9) + "  " + body;
  while (!line.empty() && line.back() == ' ') line.pop_back();
  return line;
}

bool GlobMatch(std::string_view pattern, std::string_view id) {
  // Iterative matcher with one backtrack point (the last '*'): linear in practice.
  size_t p = 0, s = 0, star = std::string_view::npos, mark = 0;
  while (s < id.size()) {
    if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      mark = s;
    } else if (p < pattern.size() && pattern[p] == id[s]) {
      ++p;
      ++s;
    } else if (star != std::string_view::npos) {
      p = star + 1;
      s = ++mark;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

bool Utf8Terminal() {
  if (::isatty(STDOUT_FILENO) != 1) return false;
  for (const char* name : {"LC_ALL", "LC_CTYPE", "LANG"}) {
    const char* v = std::getenv(name);
    if (v == nullptr || *v == '\0') continue;  // the first one set decides, as for setlocale
    std::string s = v;
    for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s.find("utf-8") != std::string::npos || s.find("utf8") != std::string::npos;
  }
  return false;
}

}  // namespace sanigate::ctl
