// sanictl firmware / rollout: the pure parts (issue 7). Chunking and base64 of an image for the
// `firmware_put` upload, upload progress text, the campaign spec built from command-line flags,
// artifact prefixes, and the human views of sanifleet's answers: firmware and rollout tables,
// the plan summary of `rollout_create`, the progress bar and the status view of `rollout_status`,
// and the one-line form `rollout status --watch` prints when stdout is not a terminal.
// Pure functions of their arguments (ReadFileRange reads the file it is given; local times use
// the process's TZ): no MQTT, no shared state, thread-safe. Built as `sanictl_rollout`.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/status.h"
#include "ctl/format.h"

namespace sanigate::ctl {

// ---- upload ----

// What sanictl puts into one `firmware_put` request (sanifleet accepts up to 256 KiB decoded).
inline constexpr size_t kUploadChunkBytes = 192 * 1024;

// Standard base64 (RFC 4648, alphabet + /, with '=' padding), as sanifleet decodes it.
std::string Base64Encode(std::string_view bytes);

// One chunk of an upload: bytes [offset, offset + length) of the image.
struct ChunkSpan {
  uint64_t offset = 0;
  size_t length = 0;
  bool last = false;
};
// The chunks of an image of `size` bytes, from `from` on, `chunk_bytes` each (the last may be
// shorter). Empty when size == 0 or from >= size; chunk_bytes 0 counts as 1.
std::vector<ChunkSpan> PlanChunks(uint64_t size, size_t chunk_bytes, uint64_t from = 0);

// Bytes [offset, offset + length) of a file; Invalid (with the path) when it cannot be opened,
// DataLoss when it is shorter than that (it changed since it was hashed).
Result<std::string> ReadFileRange(const std::string& path, uint64_t offset, size_t length);

// The `firmware_put` arguments of one chunk: sha256, offset, data (base64), last, and the signed
// manifest object with the chunk at offset 0 (a null `manifest` is left out).
nlohmann::json FirmwarePutArgs(const std::string& sha256, const ChunkSpan& chunk, std::string_view bytes,
                               const nlohmann::json& manifest);

// sanifleet's refusal of an oversized chunk ("a chunk may hold at most 65536 bytes") → 65536.
std::optional<size_t> ChunkLimitFromError(std::string_view error);

// "900 B", "472 KiB", "1.2 MiB", "3.4 GiB" (binary units, one decimal from MiB on).
std::string HumanBytes(uint64_t bytes);

// "uploading  45%  1.2 MiB of 2.6 MiB  340 KiB/s" (the rate from bytes sent over elapsed_ms;
// left out while elapsed_ms <= 0).
std::string UploadProgress(uint64_t sent, uint64_t total, int64_t elapsed_ms);

// ---- artifacts ----

// The sha256 of the one stored artifact (`firmware_list` result) whose sha256 starts with
// `prefix` (case-insensitive). Invalid when the prefix is not hex or matches more than one
// image (the message lists them), NotFound when it matches none.
Result<std::string> ResolveArtifact(std::string_view prefix, const nlohmann::json& firmware_list);

// SHA256 (12 digits), MODEL, VERSION, TARGET, SIZE, CREATED (local), KEY ID.
Table FirmwareTable(const nlohmann::json& firmware_list);

// The stored artifact (`firmware_put` last answer, or a `firmware_list` entry) as key: value lines.
std::string ArtifactText(const nlohmann::json& artifact);

// ---- campaign spec ----

// `sanictl rollout create` flags; unset / empty ones leave the spec (file or default) alone.
struct RolloutSpecArgs {
  std::string spec_file;  // read by the caller; its JSON is BuildSpec's `base`
  std::string id, artifact;
  std::vector<std::string> kinds, profiles, models, sites, gateways, tags, devices;
  std::optional<std::string> version_range;
  std::optional<int> canary;
  std::optional<std::string> waves;  // "10,50,100"
  std::optional<double> success_pct, max_failure_pct;
  std::optional<int> max_failures, per_gateway, per_bus, retries;
  std::optional<int64_t> timeout_s, health_gate_s;
  std::vector<std::string> blackout;  // "06:00-09:00" each (a comma-separated list is split)
  std::optional<std::string> utc_offset;
  bool start = false;
};

// "10,50,100" or "10%, 50%, 100%" → {10, 50, 100}: numbers, rising, in (0, 100], ending at 100.
Result<std::vector<double>> ParseWaves(std::string_view text);

// The campaign spec (fleet/rollout/campaign.h, ParseSpec) of `base` (a spec file's object, or
// {}) with the given flags applied over it: --id → id, --artifact → artifact_sha256, filters →
// target.{kinds, …}, --canary → canary_count, --waves → waves_pct, --success-pct →
// success_threshold_pct, --max-failures → failure_limit_count, --max-failure-pct →
// failure_limit_pct, --per-gateway / --per-bus → max_parallel_per_*, --timeout-s →
// device_timeout_s, --retries, --health-gate-s, --blackout, --utc-offset → utc_offset. Invalid
// when base is not an object, --waves is malformed, or id / artifact_sha256 are missing.
// Everything else is left for sanifleet to check (it lists every problem at once).
Result<nlohmann::json> BuildSpec(const nlohmann::json& base, const RolloutSpecArgs& args);

// ---- campaign views ----

// draft dim, running cyan, paused yellow, aborted red, completed green.
Color CampaignStateColor(std::string_view state);
// succeeded green, failed red, updating/verifying yellow, deferred dim, pending none.
Color DeviceStateColor(std::string_view state);

// Group names for a status's `groups` (or a plan's group count): "canary" for group 0 when the
// campaign has one, then "wave 1", "wave 2", … (waves are numbered from 1 with or without a canary).
std::vector<std::string> GroupNames(size_t groups, bool has_canary);

// "40 devices: canary 1, wave 1 4, wave 2 35" from a `rollout_create` result ({"total",
// "groups":[n…]}); "no devices: ..." for an empty plan. `has_canary`: the spec's canary_count > 0.
std::string PlanSummary(const nlohmann::json& create_result, bool has_canary);

// The bar's segments, in this order (left to right).
struct BarCounts {
  int64_t succeeded = 0, failed = 0, updating = 0, deferred = 0, pending = 0;  // updating includes verifying
  int64_t total() const { return succeeded + failed + updating + deferred + pending; }
};
// From a status's `counts` (missing, non-numeric or negative counts are 0).
BarCounts CountsOf(const nlohmann::json& status);
// Cells per segment (succeeded, failed, updating, deferred, pending) for a bar `width` cells
// wide: proportional (largest remainder), every
// non-zero count gets at least one cell while there are cells to give, the sum is `width`
// (0 for an empty campaign: all zeros).
std::vector<int> BarWidths(const BarCounts& counts, int width);
// "[###xx>>~~....]": succeeded '#', failed 'x', updating '>', deferred '~', pending '.', or with
// `utf8` '█', '▓', '▒', '░', '·'; with `color` green, red, yellow, dim, none. `width` cells inside
// the brackets; an empty campaign is all blanks.
std::string ProgressBar(const BarCounts& counts, int width, bool color, bool utf8);

struct StatusViewOptions {
  bool color = false;
  bool utf8 = false;
  int width = 80;          // terminal columns: the bar takes what the line leaves
  int64_t now_ms = 0;      // for "5s ago"
  std::string site;        // device keys "site/device" of this site are shown without it
  size_t max_devices = 0;  // rows of the device table; 0 = all ("… and N more" when cut)
};
// The human view of a `rollout_status` result: headline (id, coloured state, current group),
// image, reason, progress bar and counts, blackout note, times, the per-group table, and with
// a `devices` member a table of the devices not yet succeeded (DEVICE, GATEWAY, GROUP, STATE,
// ATTEMPTS, LAST FAILURE; failed first, then updating, deferred, pending). Ends with "\n".
std::string RenderRolloutStatus(const nlohmann::json& status, const StatusViewOptions& opt);

// One line per campaign for `rollout list`: ID, STATE, IMAGE (model version), TARGET, GROUP,
// PROGRESS (succeeded/total), FAILED, UPDATED (relative).
Table RolloutTable(const nlohmann::json& rollout_list, int64_t now_ms);

// "12:00:01 fw-142 running wave 1: succeeded 12/40, failed 1, updating 3, pending 20, deferred 4
// (reason)" — what `rollout status --watch` prints per change when stdout is not a terminal
// (the clock is the status's `ts`, local time).
std::string RolloutStatusLine(const nlohmann::json& status);
// What changes a status line: state, reason, group, counts, groups, blackout_now (not ts).
std::string StatusChangeKey(const nlohmann::json& status);

}  // namespace sanigate::ctl
