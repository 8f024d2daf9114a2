#include "ctl/rollout_format.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>

namespace sanigate::ctl {
namespace {

using json = nlohmann::json;

std::string Str(const json& obj, const char* key, const std::string& def = "-") {
  if (!obj.is_object() || !obj.contains(key) || obj[key].is_null()) return def;
  std::string s = ValueText(obj[key]);
  return s.empty() ? def : s;
}

// Counts and times of an answer. Anything beyond ±2^53 (no count or epoch-ms time is) reads as
// 0 like a missing field: converting a larger float is undefined, and sums of these must not
// overflow. Floats inside the range are truncated.
int64_t Int(const json& obj, const char* key) {
  constexpr int64_t kLimit = int64_t{1} << 53;
  if (!obj.is_object() || !obj.contains(key)) return 0;
  const json& v = obj[key];
  if (v.is_number_unsigned()) return v.get<uint64_t>() <= static_cast<uint64_t>(kLimit) ? v.get<int64_t>() : 0;
  if (v.is_number_integer()) return v.get<int64_t>() >= -kLimit && v.get<int64_t>() <= kLimit ? v.get<int64_t>() : 0;
  if (!v.is_number_float()) return 0;
  double d = v.get<double>();
  return d >= -static_cast<double>(kLimit) && d <= static_cast<double>(kLimit) ? static_cast<int64_t>(d) : 0;
}

bool Flag(const json& obj, const char* key) {
  return obj.is_object() && obj.contains(key) && obj[key].is_boolean() && obj[key].get<bool>();
}

const json& Array(const json& obj, const char* key) {
  static const json kEmpty = json::array();
  return obj.is_object() && obj.contains(key) && obj[key].is_array() ? obj[key] : kEmpty;
}

std::string Trim(std::string_view s) {
  size_t a = 0, b = s.size();
  while (a < b && (s[a] == ' ' || s[a] == '\t')) ++a;
  while (b > a && (s[b - 1] == ' ' || s[b - 1] == '\t')) --b;
  return std::string(s.substr(a, b - a));
}

std::vector<std::string> Split(std::string_view s, char sep) {
  std::vector<std::string> out;
  size_t start = 0;
  while (true) {
    size_t at = s.find(sep, start);
    out.push_back(Trim(s.substr(start, at == std::string_view::npos ? std::string_view::npos : at - start)));
    if (at == std::string_view::npos) break;
    start = at + 1;
  }
  return out;
}

bool IsHex(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

std::string Printf(const char* fmt, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, fmt, v);
  return buf;
}

// "12:00:01" of an epoch-ms time, local.
std::string ClockOf(int64_t ms) {
  std::string dt = LocalDateTime(ms);
  return dt.size() > 11 ? dt.substr(11) : dt;
}

bool HasCanary(const json& status) {
  const json& groups = Array(status, "groups");
  return !groups.empty() && Str(groups[0], "name", "") == "canary";
}

// The current group's name while the campaign can still move ("" otherwise).
std::string CurrentGroup(const json& status) {
  std::string state = Str(status, "state", "");
  const json& groups = Array(status, "groups");
  int64_t g = Int(status, "group");
  if ((state != "running" && state != "paused") || g < 0 || static_cast<size_t>(g) >= groups.size()) return "";
  return GroupNames(groups.size(), HasCanary(status))[static_cast<size_t>(g)];
}

int DeviceRank(const std::string& state) {
  if (state == "failed") return 0;
  if (state == "updating" || state == "verifying") return 1;
  if (state == "deferred") return 2;
  if (state == "pending") return 3;
  return 4;
}

}  // namespace

// ---- upload ----

std::string Base64Encode(std::string_view bytes) {
  static const char* kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    uint32_t v = static_cast<uint32_t>(static_cast<uint8_t>(bytes[i])) << 16 |
                 static_cast<uint32_t>(static_cast<uint8_t>(bytes[i + 1])) << 8 | static_cast<uint8_t>(bytes[i + 2]);
    out += kAlphabet[v >> 18];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += kAlphabet[v & 63];
  }
  size_t rest = bytes.size() - i;
  if (rest > 0) {
    uint32_t v = static_cast<uint32_t>(static_cast<uint8_t>(bytes[i])) << 16;
    if (rest == 2) v |= static_cast<uint32_t>(static_cast<uint8_t>(bytes[i + 1])) << 8;
    out += kAlphabet[v >> 18];
    out += kAlphabet[(v >> 12) & 63];
    out += rest == 2 ? kAlphabet[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

std::vector<ChunkSpan> PlanChunks(uint64_t size, size_t chunk_bytes, uint64_t from) {
  std::vector<ChunkSpan> out;
  chunk_bytes = std::max<size_t>(chunk_bytes, 1);
  for (uint64_t off = from; off < size; off += chunk_bytes) {
    auto len = static_cast<size_t>(std::min<uint64_t>(chunk_bytes, size - off));
    out.push_back({off, len, off + len == size});
  }
  return out;
}

Result<std::string> ReadFileRange(const std::string& path, uint64_t offset, size_t length) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Invalid("cannot open " + path);
  in.seekg(static_cast<std::streamoff>(offset));
  std::string data(length, '\0');
  in.read(data.data(), static_cast<std::streamsize>(length));
  if (static_cast<size_t>(in.gcount()) != length)
    return DataLoss(path + " is shorter than " + std::to_string(offset + length) + " bytes: it changed while it was read");
  return data;
}

json FirmwarePutArgs(const std::string& sha256, const ChunkSpan& chunk, std::string_view bytes, const json& manifest) {
  json args = {{"sha256", sha256}, {"offset", chunk.offset}, {"data", Base64Encode(bytes)}, {"last", chunk.last}};
  if (chunk.offset == 0 && !manifest.is_null()) args["manifest"] = manifest;
  return args;
}

std::optional<size_t> ChunkLimitFromError(std::string_view error) {
  static constexpr std::string_view kPhrase = "a chunk may hold at most ";
  size_t at = error.find(kPhrase);
  if (at == std::string_view::npos) return std::nullopt;
  size_t i = at + kPhrase.size();
  size_t n = 0;
  bool any = false;
  for (; i < error.size() && error[i] >= '0' && error[i] <= '9'; ++i) {
    n = n * 10 + static_cast<size_t>(error[i] - '0');
    any = true;
  }
  if (!any || n == 0) return std::nullopt;
  return n;
}

std::string HumanBytes(uint64_t bytes) {
  if (bytes < 1024) return std::to_string(bytes) + " B";
  auto b = static_cast<double>(bytes);
  if (bytes < 1024 * 1024) return Printf("%.0f KiB", b / 1024);
  if (bytes < uint64_t{1024} * 1024 * 1024) return Printf("%.1f MiB", b / (1024.0 * 1024));
  return Printf("%.1f GiB", b / (1024.0 * 1024 * 1024));
}

std::string UploadProgress(uint64_t sent, uint64_t total, int64_t elapsed_ms) {
  uint64_t pct = total == 0 ? 100 : std::min<uint64_t>(100, sent * 100 / total);
  char head[32];
  std::snprintf(head, sizeof head, "uploading %3llu%%", static_cast<unsigned long long>(pct));
  std::string out = std::string(head) + "  " + HumanBytes(sent) + " of " + HumanBytes(total);
  if (elapsed_ms > 0) {
    double kib_s = static_cast<double>(sent) / 1024.0 / (static_cast<double>(elapsed_ms) / 1000.0);
    out += "  " + (kib_s >= 10240 ? Printf("%.1f MiB/s", kib_s / 1024) : Printf("%.0f KiB/s", kib_s));
  }
  return out;
}

// ---- artifacts ----

Result<std::string> ResolveArtifact(std::string_view prefix, const json& firmware_list) {
  std::string p(prefix);
  for (char& c : p) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (p.empty() || p.size() > 64 || !IsHex(p))
    return Invalid("--artifact \"" + std::string(prefix) + "\" is not a SHA-256 or a prefix of one (hex digits)");
  std::vector<std::string> hits;
  for (const auto& a : Array(firmware_list, "artifacts")) {
    std::string sha = Str(a, "sha256", "");
    if (sha.rfind(p, 0) == 0) hits.push_back(sha);
  }
  if (hits.size() == 1) return hits.front();
  if (hits.empty())
    return Status(Code::kNotFound, "no stored image matches " + p + " (sanictl firmware list shows them; sanictl firmware add stores one)");
  std::string all;
  for (const auto& h : hits) all += (all.empty() ? "" : ", ") + h.substr(0, 16);
  return Invalid("--artifact " + p + " matches " + std::to_string(hits.size()) + " images (" + all + "); give more digits");
}

Table FirmwareTable(const json& firmware_list) {
  Table t{{"SHA256", "MODEL", "VERSION", "TARGET", "SIZE", "CREATED", "KEY ID"}, {}};
  for (const auto& a : Array(firmware_list, "artifacts")) {
    int64_t created = Int(a, "created");
    t.rows.push_back({Str(a, "sha256").substr(0, 12), Str(a, "model"), Str(a, "version"), Str(a, "target"),
                      HumanBytes(static_cast<uint64_t>(std::max<int64_t>(Int(a, "size"), 0))),
                      created > 0 ? LocalDateTime(created) : "-", Str(a, "key_id")});
  }
  return t;
}

std::string ArtifactText(const json& a) {
  auto size = static_cast<uint64_t>(std::max<int64_t>(Int(a, "size"), 0));
  std::vector<std::pair<std::string, std::string>> kv = {
      {"sha256", Str(a, "sha256")},
      {"model", Str(a, "model")},
      {"version", Str(a, "version")},
      {"target", Str(a, "target")},
      {"size", HumanBytes(size) + (size >= 1024 ? " (" + std::to_string(size) + " bytes)" : "")},
      {"key id", Str(a, "key_id")},
  };
  if (int64_t created = Int(a, "created"); created > 0) kv.emplace_back("signed", LocalDateTime(created));
  if (std::string notes = Str(a, "notes", ""); !notes.empty()) kv.emplace_back("notes", notes);
  return RenderKeyValues(kv);
}

// ---- campaign spec ----

Result<std::vector<double>> ParseWaves(std::string_view text) {
  std::vector<double> out;
  auto bad = [&](const std::string& why) {
    return Invalid("--waves \"" + std::string(text) + "\": " + why + " (cumulative percentages ending at 100, e.g. 10,50,100)");
  };
  for (std::string part : Split(text, ',')) {
    if (!part.empty() && part.back() == '%') part = Trim(part.substr(0, part.size() - 1));
    if (part.empty()) return bad("an empty wave");
    char* end = nullptr;
    double v = std::strtod(part.c_str(), &end);
    if (end != part.c_str() + part.size() || !std::isfinite(v)) return bad("\"" + part + "\" is not a number");
    if (v <= 0 || v > 100) return bad(part + " is not in 1..100");
    if (!out.empty() && v <= out.back()) return bad("the percentages must rise");
    out.push_back(v);
  }
  if (out.back() != 100) return bad("the last wave must be 100");
  return out;
}

Result<json> BuildSpec(const json& base, const RolloutSpecArgs& a) {
  if (!base.is_object()) return Invalid("a campaign spec is a JSON object");
  json s = base;
  if (!a.id.empty()) s["id"] = a.id;
  if (!a.artifact.empty()) s["artifact_sha256"] = a.artifact;
  json target = s.contains("target") && s["target"].is_object() ? s["target"] : json::object();
  auto list = [&](const char* key, const std::vector<std::string>& v) {
    if (!v.empty()) target[key] = v;
  };
  list("kinds", a.kinds);
  list("profiles", a.profiles);
  list("models", a.models);
  list("sites", a.sites);
  list("gateways", a.gateways);
  list("tags", a.tags);
  list("devices", a.devices);
  if (a.version_range) target["version_range"] = *a.version_range;
  if (!target.empty() || s.contains("target")) s["target"] = target;
  if (a.canary) s["canary_count"] = *a.canary;
  if (a.waves) {
    auto waves = ParseWaves(*a.waves);
    if (!waves.ok()) return waves.status();
    json w = json::array();
    for (double v : *waves) {
      if (v == std::floor(v)) w.push_back(static_cast<int64_t>(v));
      else w.push_back(v);
    }
    s["waves_pct"] = w;
  }
  if (a.success_pct) s["success_threshold_pct"] = *a.success_pct;
  if (a.max_failures) s["failure_limit_count"] = *a.max_failures;
  if (a.max_failure_pct) s["failure_limit_pct"] = *a.max_failure_pct;
  if (a.per_gateway) s["max_parallel_per_gateway"] = *a.per_gateway;
  if (a.per_bus) s["max_parallel_per_bus"] = *a.per_bus;
  if (a.timeout_s) s["device_timeout_s"] = *a.timeout_s;
  if (a.retries) s["retries"] = *a.retries;
  if (a.health_gate_s) s["health_gate_s"] = *a.health_gate_s;
  if (!a.blackout.empty()) {
    json b = json::array();
    for (const auto& flag : a.blackout)
      for (const auto& w : Split(flag, ','))
        if (!w.empty()) b.push_back(w);
    s["blackout"] = b;
  }
  if (a.utc_offset) s["utc_offset"] = *a.utc_offset;
  if (!s.contains("id") || !s["id"].is_string() || s["id"].get<std::string>().empty())
    return Invalid("the rollout needs an id: --id ID (or \"id\" in the spec file)");
  if (!s.contains("artifact_sha256") || !s["artifact_sha256"].is_string() || s["artifact_sha256"].get<std::string>().empty())
    return Invalid("the rollout needs an image: --artifact SHA256 (or \"artifact_sha256\" in the spec file)");
  return s;
}

// ---- campaign views ----

Color CampaignStateColor(std::string_view state) {
  if (state == "running") return Color::kCyan;
  if (state == "paused") return Color::kYellow;
  if (state == "aborted") return Color::kRed;
  if (state == "completed") return Color::kGreen;
  return Color::kDim;
}

Color DeviceStateColor(std::string_view state) {
  if (state == "succeeded") return Color::kGreen;
  if (state == "failed") return Color::kRed;
  if (state == "updating" || state == "verifying") return Color::kYellow;
  if (state == "deferred") return Color::kDim;
  return Color::kNone;
}

std::vector<std::string> GroupNames(size_t groups, bool has_canary) {
  std::vector<std::string> out;
  for (size_t g = 0; g < groups; ++g)
    out.push_back(g == 0 && has_canary ? "canary" : "wave " + std::to_string(has_canary ? g : g + 1));
  return out;
}

std::string PlanSummary(const json& r, bool has_canary) {
  int64_t total = Int(r, "total");
  const json& groups = Array(r, "groups");
  if (total == 0 || groups.empty())
    return "0 devices: no device matches the target filters, or all of them run this version already";
  // A canary group exists only when the spec asked for one (and there are devices).
  auto names = GroupNames(groups.size(), has_canary);
  std::string out = std::to_string(total) + (total == 1 ? " device" : " devices") + " in " +
                    std::to_string(groups.size()) + (groups.size() == 1 ? " group: " : " groups: ");
  for (size_t g = 0; g < groups.size(); ++g) out += (g ? ", " : "") + names[g] + ": " + ValueText(groups[g]);
  return out;
}

BarCounts CountsOf(const json& status) {
  const json& c = status.is_object() && status.contains("counts") && status["counts"].is_object() ? status["counts"] : json::object();
  // A count below zero is no count: read as 0, so total() agrees with the bar, which ignores them.
  auto count = [&](const char* key) { return std::max<int64_t>(Int(c, key), 0); };
  BarCounts b;
  b.succeeded = count("succeeded");
  b.failed = count("failed");
  b.updating = count("updating") + count("verifying");
  b.deferred = count("deferred");
  b.pending = count("pending");
  return b;
}

std::vector<int> BarWidths(const BarCounts& counts, int width) {
  const int64_t c[5] = {counts.succeeded, counts.failed, counts.updating, counts.deferred, counts.pending};
  std::vector<int> w(5, 0);
  int64_t total = 0;
  for (int64_t v : c) total += std::max<int64_t>(v, 0);
  if (total == 0 || width <= 0) return w;
  double exact[5];
  int sum = 0;
  for (int i = 0; i < 5; ++i) {
    exact[i] = static_cast<double>(std::max<int64_t>(c[i], 0)) * width / static_cast<double>(total);
    w[i] = static_cast<int>(std::floor(exact[i]));
    if (c[i] > 0 && w[i] == 0) w[i] = 1;  // a single failure stays visible
    sum += w[i];
  }
  while (sum < width) {  // largest remainder first; ties go to the earlier segment
    int best = -1;
    for (int i = 0; i < 5; ++i)
      if (c[i] > 0 && (best < 0 || exact[i] - w[i] > exact[best] - w[best])) best = i;
    ++w[best];
    ++sum;
  }
  while (sum > width) {  // the minimum cells overshot: take from whoever has most beyond its share
    int best = -1;
    for (int pass = 0; pass < 2 && best < 0; ++pass)
      for (int i = 0; i < 5; ++i)
        if (w[i] > (pass == 0 ? 1 : 0) && (best < 0 || w[i] - exact[i] > w[best] - exact[best])) best = i;
    --w[best];
    --sum;
  }
  return w;
}

std::string ProgressBar(const BarCounts& counts, int width, bool color, bool utf8) {
  static const char* kAscii[5] = {"#", "x", ">", "~", "."};
  static const char* kUtf8[5] = {"█", "▓", "▒", "░", "·"};
  static const Color kColors[5] = {Color::kGreen, Color::kRed, Color::kYellow, Color::kDim, Color::kNone};
  width = std::max(width, 0);
  std::vector<int> w = BarWidths(counts, width);
  std::string out = "[";
  int used = 0;
  for (int i = 0; i < 5; ++i) {
    if (w[static_cast<size_t>(i)] == 0) continue;
    std::string run;
    for (int k = 0; k < w[static_cast<size_t>(i)]; ++k) run += utf8 ? kUtf8[i] : kAscii[i];
    out += Paint(run, kColors[i], color);
    used += w[static_cast<size_t>(i)];
  }
  out += std::string(static_cast<size_t>(width - used), ' ');
  return out + "]";
}

std::string RenderRolloutStatus(const json& st, const StatusViewOptions& opt) {
  std::string state = Str(st, "state", "?");
  const json& groups = Array(st, "groups");
  auto names = GroupNames(groups.size(), HasCanary(st));
  BarCounts counts = CountsOf(st);
  int64_t total = Int(st, "total");

  std::string out = "rollout " + Str(st, "id", "?") + "  " + Paint(state, CampaignStateColor(state), opt.color);
  if (std::string g = CurrentGroup(st); !g.empty())
    out += "  at " + g + " (group " + std::to_string(Int(st, "group") + 1) + " of " + std::to_string(groups.size()) + ")";
  if (state == "draft") out += "  (not started: sanictl rollout start " + Str(st, "id", "ID") + ")";
  out += "\n";

  std::string done = std::to_string(counts.succeeded) + "/" + std::to_string(total) + " succeeded";
  if (total > 0) done += Printf(" (%.0f%%)", 100.0 * static_cast<double>(counts.succeeded) / static_cast<double>(total));
  int bar = std::clamp(opt.width - 12 - 2 - 2 - static_cast<int>(done.size()), 10, 60);
  std::string detail;
  const json& c = st.is_object() && st.contains("counts") && st["counts"].is_object() ? st["counts"] : json::object();
  for (const char* s : {"failed", "updating", "verifying", "deferred", "pending"}) {
    int64_t n = Int(c, s);
    std::string item = std::string(s) + " " + std::to_string(n);
    detail += (detail.empty() ? "" : ", ") + (n > 0 ? Paint(item, DeviceStateColor(s), opt.color) : item);
  }
  std::vector<std::pair<std::string, std::string>> kv;
  kv.emplace_back("image", Str(st, "model") + " " + Str(st, "version") + " (" + Str(st, "target_type") + ")");
  if (std::string reason = Str(st, "reason", ""); !reason.empty()) kv.emplace_back("reason", reason);
  kv.emplace_back("progress", total == 0 ? "no devices in this rollout"
                                         : ProgressBar(counts, bar, opt.color, opt.utf8) + "  " + done);
  if (total > 0) kv.emplace_back("", detail);
  if (Flag(st, "blackout_now"))
    kv.emplace_back("blackout", Paint("now: no device starts until the window ends", Color::kYellow, opt.color));
  auto when = [&](int64_t ms) { return LocalDateTime(ms) + " (" + RelativeTime(ms, opt.now_ms) + ")"; };
  if (int64_t created = Int(st, "created"); created > 0) kv.emplace_back("created", when(created));
  if (int64_t updated = Int(st, "updated"); updated > 0) kv.emplace_back("updated", when(updated));
  // Key: value lines as RenderKeyValues, except that an empty key continues the line above.
  size_t key_width = 0;
  for (const auto& [k, v] : kv) key_width = std::max(key_width, k.size() + 1);
  for (const auto& [k, v] : kv) {
    std::string key = k.empty() ? "" : k + ":";
    out += key + std::string(key_width - key.size() + 1, ' ') + v + "\n";
  }

  if (!groups.empty()) {
    // A marker column ('>' on the current group) only while the campaign can still move.
    int64_t current = CurrentGroup(st).empty() ? -1 : Int(st, "group");
    Table t{{"GROUP", "TOTAL", "SUCCEEDED", "FAILED"}, {}};
    if (current >= 0) t.headers.insert(t.headers.begin(), "");
    for (size_t g = 0; g < groups.size(); ++g) {
      int64_t failed = Int(groups[g], "failed");
      std::vector<Cell> row = {names[g], Str(groups[g], "total", "0"), Str(groups[g], "succeeded", "0"),
                               Cell(std::to_string(failed), failed > 0 ? Color::kRed : Color::kNone)};
      if (current >= 0) row.insert(row.begin(), Cell(static_cast<int64_t>(g) == current ? ">" : ""));
      t.rows.push_back(std::move(row));
    }
    out += "\n" + RenderTable(t, opt.color);
  }

  if (st.is_object() && st.contains("devices") && st["devices"].is_array()) {
    std::vector<const json*> open;
    for (const auto& d : st["devices"])
      if (Str(d, "state", "") != "succeeded") open.push_back(&d);
    std::stable_sort(open.begin(), open.end(), [](const json* a, const json* b) {
      int ra = DeviceRank(Str(*a, "state", "")), rb = DeviceRank(Str(*b, "state", ""));
      if (ra != rb) return ra < rb;
      if (Int(*a, "group") != Int(*b, "group")) return Int(*a, "group") < Int(*b, "group");
      return Str(*a, "device", "") < Str(*b, "device", "");
    });
    out += "\n";
    if (open.empty()) {
      out += total == 0 ? "no devices\n" : "every device has succeeded\n";
    } else {
      Table t{{"DEVICE", "GATEWAY", "GROUP", "STATE", "ATTEMPTS", "LAST FAILURE"}, {}};
      size_t shown = opt.max_devices == 0 ? open.size() : std::min(open.size(), opt.max_devices);
      std::string site_prefix = opt.site.empty() ? "" : opt.site + "/";
      for (size_t i = 0; i < shown; ++i) {
        const json& d = *open[i];
        std::string id = Str(d, "device");
        if (!site_prefix.empty() && id.rfind(site_prefix, 0) == 0) id = id.substr(site_prefix.size());
        int64_t g = Int(d, "group");
        std::string group = g >= 0 && static_cast<size_t>(g) < names.size() ? names[static_cast<size_t>(g)] : std::to_string(g);
        std::string ds = Str(d, "state");
        t.rows.push_back({id, Str(d, "gateway"), group, Cell(ds, DeviceStateColor(ds)), Str(d, "attempts", "0"),
                          Str(d, "reason")});
      }
      out += RenderTable(t, opt.color);
      if (shown < open.size()) out += "… and " + std::to_string(open.size() - shown) + " more (sanictl rollout status " +
                                      Str(st, "id", "ID") + " --devices --json lists them all)\n";
    }
  }
  return out;
}

Table RolloutTable(const json& list, int64_t now_ms) {
  Table t{{"ID", "STATE", "IMAGE", "TARGET", "GROUP", "PROGRESS", "FAILED", "UPDATED"}, {}};
  for (const auto& st : Array(list, "rollouts")) {
    std::string state = Str(st, "state");
    BarCounts c = CountsOf(st);
    std::string group = CurrentGroup(st);
    t.rows.push_back({Str(st, "id"), Cell(state, CampaignStateColor(state)), Str(st, "model") + " " + Str(st, "version"),
                      Str(st, "target_type"), group.empty() ? "-" : group,
                      std::to_string(c.succeeded) + "/" + std::to_string(Int(st, "total")),
                      Cell(std::to_string(c.failed), c.failed > 0 ? Color::kRed : Color::kNone),
                      RelativeTime(Int(st, "updated"), now_ms)});
  }
  return t;
}

std::string RolloutStatusLine(const json& st) {
  BarCounts c = CountsOf(st);
  std::string out = (Int(st, "ts") > 0 ? ClockOf(Int(st, "ts")) + " " : "") + Str(st, "id", "?") + " " + Str(st, "state", "?");
  if (std::string g = CurrentGroup(st); !g.empty()) out += " " + g;
  out += ": succeeded " + std::to_string(c.succeeded) + "/" + std::to_string(Int(st, "total")) + ", failed " +
         std::to_string(c.failed) + ", updating " + std::to_string(c.updating) + ", deferred " + std::to_string(c.deferred) +
         ", pending " + std::to_string(c.pending);
  if (Flag(st, "blackout_now")) out += ", blackout now";
  if (std::string reason = Str(st, "reason", ""); !reason.empty()) out += " (" + reason + ")";
  return out;
}

std::string StatusChangeKey(const json& st) {
  json k = json::object();
  if (!st.is_object()) return k.dump();
  for (const char* key : {"state", "reason", "group", "groups", "total", "counts", "blackout_now"})
    if (st.contains(key)) k[key] = st[key];
  return k.dump();
}

}  // namespace sanigate::ctl
