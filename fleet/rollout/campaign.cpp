#include "rollout/campaign.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <set>

namespace sanigate::fleet::rollout {
namespace {

using json = nlohmann::json;

constexpr const char* kCampaignStates[] = {"draft", "running", "paused", "aborted", "completed"};
constexpr const char* kDeviceStates[] = {"pending", "deferred", "updating", "verifying", "succeeded", "failed"};

bool AnyOrMatch(const std::vector<std::string>& allowed, const std::string& v) {
  return allowed.empty() || std::find(allowed.begin(), allowed.end(), v) != allowed.end();
}

// FNV-1a: a stable order inside a gateway that does not follow naming (bin-001, bin-002…).
uint64_t StableHash(const std::string& s) {
  uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ULL;
  return h;
}

std::optional<int> ParseHhMm(const std::string& s) {
  int h = 0, m = 0;
  char tail = 0;
  if (s.size() != 5 || std::sscanf(s.c_str(), "%2d:%2d%c", &h, &m, &tail) != 2 || h > 24 || m > 59 || (h == 24 && m != 0))
    return std::nullopt;
  return h * 60 + m;
}

std::string HhMm(int minutes) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "%02d:%02d", minutes / 60, minutes % 60);
  return buf;
}

bool ValidId(const std::string& s) {
  return !s.empty() && s.size() <= 64 &&
         std::all_of(s.begin(), s.end(), [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'; });
}

std::string Percent(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.0f%%", v);
  return buf;
}

}  // namespace

bool DailyWindow::Contains(int minute) const {
  return start_min <= end_min ? minute >= start_min && minute < end_min : minute >= start_min || minute < end_min;
}

const char* CampaignStateName(CampaignState s) { return kCampaignStates[static_cast<int>(s)]; }
const char* DeviceStateName(DeviceState s) { return kDeviceStates[static_cast<int>(s)]; }

size_t Plan::total() const {
  size_t n = 0;
  for (const auto& g : groups) n += g.size();
  return n;
}

// ---- the spec ----

Result<CampaignSpec> ParseSpec(const json& j) {
  std::vector<std::string> problems;
  auto problem = [&](std::string p) { problems.push_back(std::move(p)); };
  if (!j.is_object()) return Invalid("a campaign is a JSON object");
  CampaignSpec s;
  static const std::set<std::string> kKnown = {"id", "target_type", "model", "version", "artifact_sha256", "target", "canary_count",
                                               "waves_pct", "success_threshold_pct", "failure_limit_count", "failure_limit_pct", "failure_limit_min_devices",
                                               "max_parallel_per_gateway", "max_parallel_per_bus", "device_timeout_s", "retries",
                                               "health_gate_s", "blackout", "utc_offset"};
  for (auto it = j.begin(); it != j.end(); ++it)
    if (!kKnown.count(it.key())) problem("unknown key \"" + it.key() + "\"");
  auto str = [&](const char* key, bool required) -> std::string {
    auto it = j.find(key);
    if (it == j.end()) {
      if (required) problem(std::string(key) + " is required");
      return "";
    }
    if (!it->is_string()) {
      problem(std::string(key) + " must be a string");
      return "";
    }
    return it->get<std::string>();
  };
  auto num = [&](const char* key, double def, double lo, double hi) -> double {
    auto it = j.find(key);
    if (it == j.end()) return def;
    if (!it->is_number() || it->get<double>() < lo || it->get<double>() > hi) {
      problem(std::string(key) + " must be a number from " + std::to_string(static_cast<int64_t>(lo)) + " to " +
              std::to_string(static_cast<int64_t>(hi)));
      return def;
    }
    return it->get<double>();
  };
  s.id = str("id", true);
  if (!s.id.empty() && !ValidId(s.id)) problem("id \"" + s.id + "\" must be [a-z0-9._-]{1,64}");
  s.target_type = str("target_type", true);
  if (s.target_type == "lorawan")
    problem("target_type lorawan: LoRaWAN FUOTA is not supported (targets: gateway, modbus, jt808)");
  else if (!s.target_type.empty() && s.target_type != "gateway" && s.target_type != "modbus" && s.target_type != "jt808")
    problem("target_type \"" + s.target_type + "\" must be gateway, modbus or jt808");
  s.model = str("model", true);
  s.version = str("version", true);
  s.artifact_sha256 = str("artifact_sha256", true);
  if (!s.artifact_sha256.empty() &&
      (s.artifact_sha256.size() != 64 || !std::all_of(s.artifact_sha256.begin(), s.artifact_sha256.end(), [](char c) {
         return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
       })))
    problem("artifact_sha256 must be 64 lower-case hex digits");
  if (auto t = j.find("target"); t != j.end()) {
    if (!t->is_object()) {
      problem("target must be an object");
    } else {
      auto list = [&](const char* key, std::vector<std::string>& out) {
        auto it = t->find(key);
        if (it == t->end()) return;
        if (!it->is_array()) return problem(std::string("target.") + key + " must be an array of strings");
        for (const auto& v : *it) {
          if (!v.is_string()) return problem(std::string("target.") + key + " must be an array of strings");
          out.push_back(v.get<std::string>());
        }
      };
      list("kinds", s.filter.kinds);
      list("profiles", s.filter.profiles);
      list("models", s.filter.models);
      list("sites", s.filter.sites);
      list("gateways", s.filter.gateways);
      list("tags", s.filter.tags);
      list("devices", s.filter.devices);
      if (auto v = t->find("version_range"); v != t->end()) {
        if (v->is_string()) s.filter.version_range = v->get<std::string>();
        else problem("target.version_range must be a string like \">=2.0.0,<2.1.0\"");
      }
      for (auto it = t->begin(); it != t->end(); ++it)
        if (!std::set<std::string>{"kinds", "profiles", "models", "sites", "gateways", "tags", "devices", "version_range"}.count(it.key()))
          problem("unknown key \"target." + it.key() + "\"");
    }
  }
  s.canary_count = static_cast<int>(num("canary_count", s.canary_count, 0, 100000));
  if (auto w = j.find("waves_pct"); w != j.end()) {
    s.waves_pct.clear();
    bool ok = w->is_array() && !w->empty();
    double prev = 0;
    for (const auto& v : ok ? *w : json::array()) {
      if (!v.is_number() || v.get<double>() <= prev || v.get<double>() > 100) ok = false;
      else s.waves_pct.push_back(prev = v.get<double>());
    }
    if (!ok || s.waves_pct.empty() || s.waves_pct.back() != 100)
      problem("waves_pct must be rising cumulative percentages ending at 100, e.g. [10, 50, 100]");
  }
  s.success_threshold_pct = num("success_threshold_pct", s.success_threshold_pct, 0, 100);
  s.failure_limit_count = static_cast<int>(num("failure_limit_count", s.failure_limit_count, 0, 1e9));
  s.failure_limit_pct = num("failure_limit_pct", s.failure_limit_pct, 0, 100);
  s.failure_limit_min_devices = static_cast<int>(num("failure_limit_min_devices", s.failure_limit_min_devices, 1, 1e9));
  s.max_parallel_per_gateway = static_cast<int>(num("max_parallel_per_gateway", s.max_parallel_per_gateway, 1, 10000));
  s.max_parallel_per_bus = static_cast<int>(num("max_parallel_per_bus", s.max_parallel_per_bus, 1, 10000));
  s.device_timeout_s = static_cast<int64_t>(num("device_timeout_s", static_cast<double>(s.device_timeout_s), 10, 7 * 86400));
  s.retries = static_cast<int>(num("retries", s.retries, 0, 10));
  s.health_gate_s = static_cast<int64_t>(num("health_gate_s", static_cast<double>(s.health_gate_s), 0, 7 * 86400));
  if (auto b = j.find("blackout"); b != j.end()) {
    if (!b->is_array()) problem("blackout must be an array of \"HH:MM-HH:MM\" local times");
    for (const auto& v : b->is_array() ? *b : json::array()) {
      std::string text = v.is_string() ? v.get<std::string>() : "";
      auto dash = text.find('-');
      auto from = dash == std::string::npos ? std::nullopt : ParseHhMm(text.substr(0, dash));
      auto to = dash == std::string::npos ? std::nullopt : ParseHhMm(text.substr(dash + 1));
      if (!from || !to || *from == *to) problem("blackout \"" + text + "\" is not a window like \"06:00-09:00\"");
      else s.blackout.push_back({*from, *to});
    }
  }
  if (auto o = j.find("utc_offset"); o != j.end()) {
    std::string text = o->is_string() ? o->get<std::string>() : "";
    auto hm = text.size() == 6 && (text[0] == '+' || text[0] == '-') ? ParseHhMm(text.substr(1)) : std::nullopt;
    if (!hm || *hm > 14 * 60) problem("utc_offset \"" + text + "\" is not an offset like \"+08:00\"");
    else s.utc_offset_s = (text[0] == '-' ? -1 : 1) * int64_t{*hm} * 60;
  }
  if (!problems.empty()) {
    std::string all;
    for (const auto& p : problems) all += (all.empty() ? "" : "; ") + p;
    return Invalid("campaign: " + all);
  }
  return s;
}

json SpecJson(const CampaignSpec& s) {
  json blackout = json::array();
  for (const auto& w : s.blackout) blackout.push_back(HhMm(w.start_min) + "-" + HhMm(w.end_min));
  int64_t off = std::abs(s.utc_offset_s) / 60;
  return {{"id", s.id},
          {"target_type", s.target_type},
          {"model", s.model},
          {"version", s.version},
          {"artifact_sha256", s.artifact_sha256},
          {"target",
           {{"kinds", s.filter.kinds},
            {"profiles", s.filter.profiles},
            {"models", s.filter.models},
            {"sites", s.filter.sites},
            {"gateways", s.filter.gateways},
            {"tags", s.filter.tags},
            {"devices", s.filter.devices},
            {"version_range", s.filter.version_range}}},
          {"canary_count", s.canary_count},
          {"waves_pct", s.waves_pct},
          {"success_threshold_pct", s.success_threshold_pct},
          {"failure_limit_count", s.failure_limit_count},
          {"failure_limit_pct", s.failure_limit_pct},
          {"failure_limit_min_devices", s.failure_limit_min_devices},
          {"max_parallel_per_gateway", s.max_parallel_per_gateway},
          {"max_parallel_per_bus", s.max_parallel_per_bus},
          {"device_timeout_s", s.device_timeout_s},
          {"retries", s.retries},
          {"health_gate_s", s.health_gate_s},
          {"blackout", blackout},
          {"utc_offset", std::string(s.utc_offset_s < 0 ? "-" : "+") + HhMm(static_cast<int>(off))}};
}

// ---- planning ----

Plan MakePlan(const CampaignSpec& spec, const std::vector<Candidate>& devices,
              const std::function<bool(const std::string& version)>& version_ok) {
  const TargetFilter& f = spec.filter;
  // Selected devices per gateway, each gateway's list in a stable pseudo-random order.
  std::map<std::string, std::vector<std::pair<uint64_t, const Candidate*>>> by_gateway;
  for (const Candidate& c : devices) {
    if (!f.devices.empty() && !AnyOrMatch(f.devices, c.key) && !AnyOrMatch(f.devices, c.device)) continue;
    if (!AnyOrMatch(f.kinds, c.kind) || !AnyOrMatch(f.profiles, c.profile) || !AnyOrMatch(f.models, c.model) ||
        !AnyOrMatch(f.sites, c.site) || !AnyOrMatch(f.gateways, c.gateway))
      continue;
    bool tagged = std::all_of(f.tags.begin(), f.tags.end(),
                              [&](const std::string& t) { return std::find(c.tags.begin(), c.tags.end(), t) != c.tags.end(); });
    if (!tagged) continue;
    if (c.firmware == spec.version) continue;  // already there: never flashed again
    if (!f.version_range.empty() && version_ok && !version_ok(c.firmware)) continue;
    by_gateway[c.gateway].emplace_back(StableHash(c.key), &c);
  }
  std::vector<const Candidate*> order;
  size_t longest = 0;
  for (auto& [gw, list] : by_gateway) {
    std::sort(list.begin(), list.end(), [](const auto& a, const auto& b) { return a.first != b.first ? a.first < b.first : a.second->key < b.second->key; });
    longest = std::max(longest, list.size());
  }
  order.reserve(devices.size());
  for (size_t i = 0; i < longest; ++i)
    for (auto& [gw, list] : by_gateway)
      if (i < list.size()) order.push_back(list[i].second);

  Plan plan;
  size_t n = order.size(), next = 0;
  size_t canary = std::min(n, static_cast<size_t>(std::max(0, spec.canary_count)));
  auto take = [&](size_t upto) {
    std::vector<std::string> group;
    for (; next < upto; ++next) group.push_back(order[next]->key);
    if (!group.empty()) plan.groups.push_back(std::move(group));
  };
  take(canary);
  for (double pct : spec.waves_pct) take(std::max(next, static_cast<size_t>(std::ceil(pct / 100.0 * static_cast<double>(n)))));
  return plan;
}

// ---- the campaign ----

Campaign::Campaign(CampaignSpec spec, const Plan& plan, int64_t now_ms)
    : spec_(std::move(spec)), created_ms_(now_ms), updated_ms_(now_ms) {
  groups_ = static_cast<int>(plan.groups.size());
  for (int g = 0; g < groups_; ++g)
    for (const auto& key : plan.groups[static_cast<size_t>(g)]) {
      DeviceProgress d;
      d.key = key;
      d.group = g;
      devices_[key] = std::move(d);
    }
}

void Campaign::SetPlacement(const std::string& key, const std::string& gateway, const std::string& bus) {
  if (auto it = devices_.find(key); it != devices_.end()) {
    it->second.gateway = gateway;
    it->second.bus = bus;
  }
}

Status Campaign::Start(int64_t now_ms) {
  if (state_ != CampaignState::kDraft) return Invalid("campaign " + spec_.id + " is " + CampaignStateName(state_) + ", not draft");
  state_ = CampaignState::kRunning;
  reason_.clear();
  Touch(now_ms);
  if (devices_.empty()) {
    state_ = CampaignState::kCompleted;
    reason_ = "no device needs this image";
  }
  return Status::Ok();
}

Status Campaign::Pause(const std::string& why, int64_t now_ms) {
  if (state_ != CampaignState::kRunning) return Invalid("campaign " + spec_.id + " is " + CampaignStateName(state_) + ", not running");
  state_ = CampaignState::kPaused;
  reason_ = why;
  Touch(now_ms);
  return Status::Ok();
}

Status Campaign::Resume(int64_t now_ms) {
  if (state_ != CampaignState::kPaused) return Invalid("campaign " + spec_.id + " is " + CampaignStateName(state_) + ", not paused");
  // Resuming is the operator's decision to go on: failures so far no longer count against the
  // limit, and a wave that missed its threshold is accepted.
  failure_baseline_ = Count(DeviceState::kFailed);
  if (wave_gate_failed_) {
    wave_gate_failed_ = false;
    ++group_;
  }
  state_ = CampaignState::kRunning;
  reason_.clear();
  Touch(now_ms);
  return Status::Ok();
}

Status Campaign::Abort(const std::string& why, int64_t now_ms) {
  if (state_ == CampaignState::kAborted || state_ == CampaignState::kCompleted)
    return Invalid("campaign " + spec_.id + " is already " + CampaignStateName(state_));
  state_ = CampaignState::kAborted;
  reason_ = why;
  Touch(now_ms);
  return Status::Ok();
}

std::string Campaign::GroupName(int group) const {
  // Without a canary the first group is wave 1.
  if (spec_.canary_count > 0) return group == 0 ? "canary" : "wave " + std::to_string(group);
  return "wave " + std::to_string(group + 1);
}

int Campaign::Count(DeviceState s) const {
  int n = 0;
  for (const auto& [key, d] : devices_) n += d.state == s;
  return n;
}

void Campaign::OnOnline(const std::string& key, bool online, int64_t now_ms) {
  auto it = devices_.find(key);
  if (it == devices_.end()) return;
  DeviceProgress& d = it->second;
  if (!online && d.state == DeviceState::kPending) d.state = DeviceState::kDeferred;
  else if (online && d.state == DeviceState::kDeferred) d.state = DeviceState::kPending;
  else return;
  Touch(now_ms);
}

void Campaign::OnVersion(const std::string& key, const std::string& version, int64_t now_ms, int64_t reported_ms) {
  auto it = devices_.find(key);
  if (it == devices_.end() || version != spec_.version) return;
  DeviceProgress& d = it->second;
  if (d.state == DeviceState::kUpdating) {
    d.state = DeviceState::kVerifying;
    d.version_seen_ms = reported_ms > 0 ? std::min(reported_ms, now_ms) : now_ms;
  } else if (d.state == DeviceState::kPending || d.state == DeviceState::kDeferred) {
    d.state = DeviceState::kSucceeded;  // updated some other way: nothing to do
    d.finished_ms = now_ms;
    d.reason = "already on " + version;
  } else {
    return;
  }
  Touch(now_ms);
}

void Campaign::OnHealth(const std::string& key, bool healthy, int64_t observed_ms, int64_t now_ms) {
  auto it = devices_.find(key);
  if (it == devices_.end()) return;
  if (!healthy && it->second.state == DeviceState::kVerifying && observed_ms <= it->second.version_seen_ms) return;
  if (healthy) unhealthy_.erase(key);
  else unhealthy_[key] = true;
  if (!healthy && it->second.state == DeviceState::kVerifying) Fail(it->second, "unhealthy after the update", now_ms);
}

void Campaign::OnFailed(const std::string& key, const std::string& reason, int64_t now_ms) {
  auto it = devices_.find(key);
  if (it == devices_.end()) return;
  if (it->second.state == DeviceState::kUpdating || it->second.state == DeviceState::kVerifying) Fail(it->second, reason, now_ms);
}

void Campaign::Fail(DeviceProgress& d, const std::string& reason, int64_t now_ms) {
  d.reason = reason;
  d.state = d.attempts <= spec_.retries ? DeviceState::kPending : DeviceState::kFailed;
  if (d.state == DeviceState::kFailed) d.finished_ms = now_ms;
  Touch(now_ms);
}

bool Campaign::InBlackout(int64_t now_ms) const {
  int64_t local = now_ms / 1000 + spec_.utc_offset_s;
  int minute = static_cast<int>(((local % 86400) + 86400) % 86400 / 60);
  return std::any_of(spec_.blackout.begin(), spec_.blackout.end(), [&](const DailyWindow& w) { return w.Contains(minute); });
}

void Campaign::CheckFailureLimit(int64_t now_ms) {
  if (state_ != CampaignState::kRunning) return;
  int failed = Count(DeviceState::kFailed) - failure_baseline_;
  int attempted = Count(DeviceState::kSucceeded) + Count(DeviceState::kFailed) - failure_baseline_;
  if (spec_.failure_limit_count > 0 && failed >= spec_.failure_limit_count) {
    (void)Pause(std::to_string(failed) + " devices failed (limit " + std::to_string(spec_.failure_limit_count) + ")", now_ms);
  } else if (spec_.failure_limit_pct > 0 && attempted >= spec_.failure_limit_min_devices &&
             failed * 100.0 / attempted > spec_.failure_limit_pct) {
    (void)Pause(std::to_string(failed) + " of " + std::to_string(attempted) + " devices failed (" + Percent(failed * 100.0 / attempted) +
                    " > limit " + Percent(spec_.failure_limit_pct) + ")",
                now_ms);
  }
}

std::vector<StartJob> Campaign::Tick(int64_t now_ms) {
  std::vector<StartJob> starts;
  if (state_ == CampaignState::kDraft || state_ == CampaignState::kCompleted) return starts;
  // Devices in flight finish (or time out) whatever the campaign's state.
  for (auto& [key, d] : devices_) {
    if (d.state == DeviceState::kUpdating && now_ms - d.started_ms >= spec_.device_timeout_s * 1000)
      Fail(d, "no result within " + std::to_string(spec_.device_timeout_s) + " s", now_ms);
    else if (d.state == DeviceState::kVerifying && now_ms - d.version_seen_ms >= spec_.health_gate_s * 1000 && !unhealthy_.count(key)) {
      d.state = DeviceState::kSucceeded;
      d.finished_ms = now_ms;
      Touch(now_ms);
    }
  }
  CheckFailureLimit(now_ms);
  if (state_ != CampaignState::kRunning) return starts;

  // Advance through the groups whose devices are all done (offline ones do not hold a wave).
  while (group_ < groups_) {
    int succeeded = 0, failed = 0, open = 0;
    for (const auto& [key, d] : devices_) {
      if (d.group != group_) continue;
      if (d.state == DeviceState::kSucceeded) ++succeeded;
      else if (d.state == DeviceState::kFailed) ++failed;
      else if (d.state != DeviceState::kDeferred) ++open;
    }
    if (open > 0 || succeeded + failed == 0) break;  // still running, or everyone is offline
    double rate = succeeded * 100.0 / (succeeded + failed);
    if (rate < spec_.success_threshold_pct) {
      wave_gate_failed_ = true;
      (void)Pause(GroupName(group_) + ": " +
                      Percent(rate) + " succeeded, below the " + Percent(spec_.success_threshold_pct) + " threshold",
                  now_ms);
      return starts;
    }
    ++group_;
    Touch(now_ms);
  }
  int waiting = 0;
  for (const auto& [key, d] : devices_)
    if (d.state != DeviceState::kSucceeded && d.state != DeviceState::kFailed) ++waiting;
  if (group_ >= groups_ && waiting == 0) {
    state_ = CampaignState::kCompleted;
    reason_.clear();
    Touch(now_ms);
    return starts;
  }
  if (InBlackout(now_ms)) return starts;

  std::map<std::string, int> per_gateway, per_bus;
  for (const auto& [key, d] : devices_)
    if (d.state == DeviceState::kUpdating) {
      ++per_gateway[d.gateway];
      if (!d.bus.empty()) ++per_bus[d.gateway + "/" + d.bus];
    }
  for (auto& [key, d] : devices_) {
    if (d.state != DeviceState::kPending || d.group > group_) continue;
    int& gw = per_gateway[d.gateway];
    if (gw >= spec_.max_parallel_per_gateway) continue;
    if (!d.bus.empty() && per_bus[d.gateway + "/" + d.bus] >= spec_.max_parallel_per_bus) continue;
    ++gw;
    if (!d.bus.empty()) ++per_bus[d.gateway + "/" + d.bus];
    d.state = DeviceState::kUpdating;
    d.started_ms = now_ms;
    ++d.attempts;
    starts.push_back({key, d.attempts});
    Touch(now_ms);
  }
  return starts;
}

// ---- persistence and status ----

json Campaign::ToJson() const {
  json devices = json::array();
  for (const auto& [key, d] : devices_)
    devices.push_back({{"key", d.key},
                       {"gateway", d.gateway},
                       {"bus", d.bus},
                       {"group", d.group},
                       {"state", DeviceStateName(d.state)},
                       {"attempts", d.attempts},
                       {"started", d.started_ms},
                       {"version_seen", d.version_seen_ms},
                       {"finished", d.finished_ms},
                       {"reason", d.reason}});
  json unhealthy = json::array();
  for (const auto& [key, v] : unhealthy_) unhealthy.push_back(key);
  return {{"v", 1},
          {"spec", SpecJson(spec_)},
          {"state", CampaignStateName(state_)},
          {"reason", reason_},
          {"group", group_},
          {"groups", groups_},
          {"created", created_ms_},
          {"updated", updated_ms_},
          {"failure_baseline", failure_baseline_},
          {"wave_gate_failed", wave_gate_failed_},
          {"unhealthy", unhealthy},
          {"devices", devices}};
}

Result<Campaign> Campaign::FromJson(const json& j) {
  try {
    if (!j.is_object() || j.value("v", 0) != 1) return Invalid("campaign state: not a v1 campaign document");
    auto spec = ParseSpec(j.at("spec"));
    if (!spec.ok()) return spec.status();
    Campaign c;
    c.spec_ = std::move(*spec);
    auto state = std::find(std::begin(kCampaignStates), std::end(kCampaignStates), j.at("state").get<std::string>());
    if (state == std::end(kCampaignStates)) return Invalid("campaign state: unknown state");
    c.state_ = static_cast<CampaignState>(state - std::begin(kCampaignStates));
    c.reason_ = j.at("reason").get<std::string>();
    c.group_ = j.at("group").get<int>();
    c.groups_ = j.at("groups").get<int>();
    c.created_ms_ = j.at("created").get<int64_t>();
    c.updated_ms_ = j.at("updated").get<int64_t>();
    c.failure_baseline_ = j.at("failure_baseline").get<int>();
    c.wave_gate_failed_ = j.at("wave_gate_failed").get<bool>();
    for (const auto& k : j.at("unhealthy")) c.unhealthy_[k.get<std::string>()] = true;
    for (const auto& d : j.at("devices")) {
      DeviceProgress p;
      p.key = d.at("key").get<std::string>();
      p.gateway = d.at("gateway").get<std::string>();
      p.bus = d.at("bus").get<std::string>();
      p.group = d.at("group").get<int>();
      auto ds = std::find(std::begin(kDeviceStates), std::end(kDeviceStates), d.at("state").get<std::string>());
      if (ds == std::end(kDeviceStates)) return Invalid("campaign state: device " + p.key + " has an unknown state");
      p.state = static_cast<DeviceState>(ds - std::begin(kDeviceStates));
      p.attempts = d.at("attempts").get<int>();
      p.started_ms = d.at("started").get<int64_t>();
      p.version_seen_ms = d.at("version_seen").get<int64_t>();
      p.finished_ms = d.at("finished").get<int64_t>();
      p.reason = d.at("reason").get<std::string>();
      c.devices_[p.key] = std::move(p);
    }
    return c;
  } catch (const json::exception& e) {
    return Invalid(std::string("campaign state: ") + e.what());
  }
}

json Campaign::StatusJson(int64_t now_ms) const {
  json counts = json::object();
  for (const char* s : kDeviceStates) counts[s] = 0;
  std::vector<json> groups(static_cast<size_t>(groups_));
  for (int g = 0; g < groups_; ++g)
    groups[static_cast<size_t>(g)] = {{"group", g},
                                      {"name", GroupName(g)},
                                      {"total", 0},
                                      {"succeeded", 0},
                                      {"failed", 0}};
  for (const auto& [key, d] : devices_) {
    counts[DeviceStateName(d.state)] = counts[DeviceStateName(d.state)].get<int>() + 1;
    json& g = groups[static_cast<size_t>(d.group)];
    g["total"] = g["total"].get<int>() + 1;
    if (d.state == DeviceState::kSucceeded) g["succeeded"] = g["succeeded"].get<int>() + 1;
    if (d.state == DeviceState::kFailed) g["failed"] = g["failed"].get<int>() + 1;
  }
  return {{"id", spec_.id},
          {"state", CampaignStateName(state_)},
          {"reason", reason_},
          {"target_type", spec_.target_type},
          {"model", spec_.model},
          {"version", spec_.version},
          {"group", group_},
          {"groups", groups},
          {"total", devices_.size()},
          {"counts", counts},
          {"blackout_now", InBlackout(now_ms)},
          {"created", created_ms_},
          {"updated", updated_ms_},
          {"ts", now_ms}};
}

}  // namespace sanigate::fleet::rollout
