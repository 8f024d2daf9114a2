// sanictl's output helpers: aligned text tables (display width aware, so CJK device names line
// up), relative times and durations, ANSI colours that can be switched off, and the one-line
// rendering of a live message for `sanictl tail`.
// Pure functions of their arguments (local time uses the process's TZ): no I/O, no shared state,
// thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace sanigate::ctl {

using json = nlohmann::json;

// ---- colours ----

enum class Color { kNone, kGreen, kYellow, kRed, kRedBold, kDim, kCyan, kBold };

// Wraps `text` in the ANSI sequence of `color` when `enabled`; otherwise returns it unchanged.
std::string Paint(std::string_view text, Color color, bool enabled);
// ok green, degraded yellow, critical red, offline red bold, unknown (and anything else) dim.
Color HealthColor(std::string_view state);
// Events: critical red bold, warning yellow, info none; a cleared event is green.
Color EventColor(std::string_view severity, std::string_view state);

// ---- text width ----

// Whether stdout is a terminal whose locale (LC_ALL, LC_CTYPE or LANG, the first one set) is
// UTF-8: then block shades and box characters may be drawn.
bool Utf8Terminal();

// Terminal columns of a UTF-8 string: East Asian wide and fullwidth characters count 2,
// combining marks and zero-width characters 0, everything else 1. Invalid bytes count 1 each.
size_t DisplayWidth(std::string_view utf8);

// ---- tables ----

struct Cell {
  std::string text;
  Color color = Color::kNone;
  Cell(std::string t = {}, Color c = Color::kNone) : text(std::move(t)), color(c) {}  // NOLINT
  Cell(const char* t, Color c = Color::kNone) : text(t), color(c) {}                // NOLINT
};

struct Table {
  std::vector<std::string> headers;
  std::vector<std::vector<Cell>> rows;
};

// Columns separated by two spaces, each as wide as its widest cell; the last column is not
// padded (no trailing blanks). Colour codes wrap the text only, never the padding, so alignment
// is the same with and without colour. Short rows are padded with empty cells. Ends with "\n".
std::string RenderTable(const Table& table, bool color);

// "key: value" lines with the values aligned after the longest key (plus one space).
std::string RenderKeyValues(const std::vector<std::pair<std::string, std::string>>& pairs);

// ---- time ----

// "12s ago", "5m ago", "3h ago", "2d ago"; "in 5s" for the future (a clock ahead of ours);
// "-" when ts_ms <= 0 (never).
std::string RelativeTime(int64_t ts_ms, int64_t now_ms);
// A duration, two units at most: "45s", "5m 10s", "2h 05m", "3d 4h". Negative counts as 0.
std::string Duration(int64_t ms);
// Local wall clock of an epoch-ms timestamp: "HH:MM:SS.mmm".
std::string LocalClock(int64_t ts_ms);
// Local date and time: "2025-11-21 12:00:00".
std::string LocalDateTime(int64_t ts_ms);

// ---- values ----

// A JSON value for humans: strings without quotes, null as "-", numbers as JSON prints them
// (shortest round-trip form), objects and arrays as compact JSON.
std::string ValueText(const json& v);
// Metrics object as "k=v k=v" in the object's (sorted) key order.
std::string MetricsText(const json& metrics);

// ---- tail ----

// One live message of the MQTT model, already taken apart from its topic.
struct TailMessage {
  std::string group;  // "devices" or "gateway"
  std::string id;     // device or gateway id
  std::string type;   // "telemetry", "event" or "status"
  json payload;
};

// "HH:MM:SS.mmm  room-07           telemetry  fill_level_pct=81.5 door_open=false"
// Telemetry: metrics as k=v; event: name, state, severity, then its metrics; device status:
// online/offline with last seen; gateway status: online/offline, version, adapters, outbox.
// The clock is the payload's ts (CONTRACT: the time of the measurement). The id column is
// padded to 16 columns, the type to 9. Colour (when enabled): events by severity, online green,
// offline red.
std::string TailLine(const TailMessage& m, bool color);

// True if `id` matches `pattern`, where '*' matches any run of characters (glob, no '?').
bool GlobMatch(std::string_view pattern, std::string_view id);

}  // namespace sanigate::ctl
