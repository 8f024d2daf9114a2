// Rollout campaigns: which devices get an image, in what order, and when the next device may
// start (issue 7). Pure logic, no I/O or threads: sanifleet's worker feeds it the registry's
// devices and what the gateways report, calls Tick, and carries out the returned starts. The
// whole state is a JSON document (ToJson/FromJson), so a campaign survives a restart exactly
// where it was, and a device that has succeeded is never flashed again.
//
// Semantics (hawkBit / AWS IoT Jobs style, plus what a sanitation district needs):
//  - targets: every registry device matching all given filters (kind, profile, model, site,
//    gateway, tags, current version accepted by `version_ok`) or an explicit list;
//  - the canary group goes first, then waves up to cumulative percentages of the targets;
//  - a wave advances when all its reachable devices are done and its success rate reaches
//    success_threshold_pct; otherwise the campaign pauses with the reason;
//  - failures beyond failure_limit (count, or % of attempted once failure_limit_min_devices
//    have finished) pause it at once;
//  - at most max_parallel_per_gateway devices update at once behind one gateway and
//    max_parallel_per_bus on one serial bus;
//  - no device starts inside a blackout window (local time, e.g. 06:00-09:00 for the morning
//    collection round); devices already updating finish;
//  - a device counts as updated only after it reports the new version and then stays healthy
//    for health_gate_s; a device that does not finish within device_timeout_s fails that
//    attempt and is retried up to `retries` times;
//  - offline devices are deferred, not failed: they are started when they come back, and they
//    do not hold their wave back.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/status.h"

namespace sanigate::fleet::rollout {

struct TargetFilter {
  std::vector<std::string> kinds, profiles, models, sites, gateways, tags, devices;  // empty = any
  std::string version_range;  // e.g. ">=2.0.0,<2.1.0"; checked by the caller's version_ok
};

struct DailyWindow {
  int start_min = 0, end_min = 0;  // minutes after local midnight; end < start wraps midnight
  bool Contains(int minute_of_day) const;
};

struct CampaignSpec {
  std::string id;
  std::string target_type;  // gateway | modbus | jt808
  std::string model, version, artifact_sha256;
  TargetFilter filter;
  int canary_count = 1;
  std::vector<double> waves_pct = {25, 100};  // cumulative, the last is 100
  double success_threshold_pct = 95;
  int failure_limit_count = 10;
  double failure_limit_pct = 10;
  int failure_limit_min_devices = 10;  // the % limit applies once this many have finished (1 of 1 is not a trend)
  int max_parallel_per_gateway = 5;
  int max_parallel_per_bus = 1;
  int64_t device_timeout_s = 1800;
  int retries = 2;
  int64_t health_gate_s = 600;
  std::vector<DailyWindow> blackout;
  int64_t utc_offset_s = 8 * 3600;
};
// Reads a spec from its JSON form (sanictl rollout create); every problem is listed.
Result<CampaignSpec> ParseSpec(const nlohmann::json& j);
nlohmann::json SpecJson(const CampaignSpec& s);

// A registry device as the planner sees it.
struct Candidate {
  std::string key;  // "site/device"
  std::string site, device, kind, profile, model, gateway, bus, firmware;
  std::vector<std::string> tags;
  bool online = true;
};

// Targets in rollout order, split into groups: group 0 is the canary, then one per wave.
struct Plan {
  std::vector<std::vector<std::string>> groups;  // registry keys
  size_t total() const;
};
// Deterministic: the same devices always give the same plan. Devices are spread over gateways
// (round robin) so a wave never lands on one garbage-room cluster alone.
Plan MakePlan(const CampaignSpec& spec, const std::vector<Candidate>& devices,
              const std::function<bool(const std::string& version)>& version_ok);

enum class CampaignState { kDraft, kRunning, kPaused, kAborted, kCompleted };
enum class DeviceState { kPending, kDeferred, kUpdating, kVerifying, kSucceeded, kFailed };
const char* CampaignStateName(CampaignState s);
const char* DeviceStateName(DeviceState s);

struct DeviceProgress {
  std::string key, gateway, bus;
  int group = 0;
  DeviceState state = DeviceState::kPending;
  int attempts = 0;
  int64_t started_ms = 0, version_seen_ms = 0, finished_ms = 0;
  std::string reason;  // of the last failure
};

// One start for the caller to carry out (hand the device's gateway the install job).
struct StartJob {
  std::string key;
  int attempt;
};

class Campaign {
 public:
  Campaign(CampaignSpec spec, const Plan& plan, int64_t now_ms);
  static Result<Campaign> FromJson(const nlohmann::json& j);
  nlohmann::json ToJson() const;
  // The retained fleet/rollouts/{id} view: state, reason, counts per state and per group.
  nlohmann::json StatusJson(int64_t now_ms) const;

  const CampaignSpec& spec() const { return spec_; }
  CampaignState state() const { return state_; }
  const std::string& reason() const { return reason_; }
  int current_group() const { return group_; }
  int64_t updated_ms() const { return updated_ms_; }
  // Bumped by every change. Callers compare it, not updated_ms(), to know whether there is
  // something to save and publish: two changes can fall in the same millisecond.
  uint64_t revision() const { return revision_; }
  const std::map<std::string, DeviceProgress>& devices() const { return devices_; }
  // Where a device sits, for the per-gateway and per-bus caps (from the registry and profile).
  void SetPlacement(const std::string& key, const std::string& gateway, const std::string& bus);

  Status Start(int64_t now_ms);
  Status Pause(const std::string& why, int64_t now_ms);
  Status Resume(int64_t now_ms);
  Status Abort(const std::string& why, int64_t now_ms);

  // What the fleet learns about a target device.
  void OnOnline(const std::string& key, bool online, int64_t now_ms);
  // `reported_ms`: when the new version was seen (the gateway's report time; now when unknown).
  void OnVersion(const std::string& key, const std::string& version, int64_t now_ms, int64_t reported_ms = 0);
  // `observed_ms`: when the record behind the verdict was measured. An unhealthy verdict from
  // before the new version was reported (the device's own reboot during the install) does not
  // count against the health gate.
  void OnHealth(const std::string& key, bool healthy, int64_t observed_ms, int64_t now_ms);
  void OnFailed(const std::string& key, const std::string& reason, int64_t now_ms);

  // Timeouts, the health gate, wave advance and pauses; returns the devices to start now.
  std::vector<StartJob> Tick(int64_t now_ms);

 private:
  Campaign() = default;
  void Fail(DeviceProgress& d, const std::string& reason, int64_t now_ms);
  bool InBlackout(int64_t now_ms) const;
  void CheckFailureLimit(int64_t now_ms);
  int Count(DeviceState s) const;
  void Touch(int64_t now_ms) {
    updated_ms_ = now_ms;
    ++revision_;
  }
  std::string GroupName(int group) const;

  CampaignSpec spec_;
  CampaignState state_ = CampaignState::kDraft;
  std::string reason_;
  int group_ = 0;
  int groups_ = 0;
  int64_t created_ms_ = 0, updated_ms_ = 0;
  uint64_t revision_ = 0;
  std::map<std::string, DeviceProgress> devices_;
  std::map<std::string, bool> unhealthy_;  // devices whose latest health is not ok
  int failure_baseline_ = 0;               // failures accepted by the last Resume
  bool wave_gate_failed_ = false;          // paused because a wave missed its threshold
};

}  // namespace sanigate::fleet::rollout
