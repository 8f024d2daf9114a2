// Rollout campaigns: the spec's checks, target selection and wave planning, and the campaign
// state machine (canary, waves, success gate, failure limit, caps per gateway and bus, blackout
// windows, timeouts and retries, the health gate, offline devices, restart from JSON).
#include <gtest/gtest.h>

#include <algorithm>
#include <random>

#include "rollout/campaign.h"

namespace sanigate::fleet::rollout {
namespace {

using json = nlohmann::json;

constexpr int64_t kT0 = 1763712000000;  // 2025-11-21 16:00 in UTC+8: outside the blackouts below
constexpr int64_t kS = 1000;

json BaseSpec() {
  return {{"id", "fw-room-2-1"},
          {"target_type", "modbus"},
          {"model", "gr-ctrl-v2"},
          {"version", "2.1.0"},
          {"artifact_sha256", std::string(64, 'a')},
          {"target", {{"kinds", {"garbage_room"}}, {"models", {"gr-ctrl-v2"}}}},
          {"canary_count", 2},
          {"waves_pct", {10, 50, 100}},
          {"success_threshold_pct", 90},
          {"failure_limit_count", 0},
          {"failure_limit_pct", 0},
          {"max_parallel_per_gateway", 100},
          {"max_parallel_per_bus", 100},
          {"device_timeout_s", 600},
          {"retries", 1},
          {"health_gate_s", 60},
          {"blackout", {"06:00-09:00", "17:00-20:00"}},
          {"utc_offset", "+08:00"}};
}

CampaignSpec Spec(json j = BaseSpec()) {
  auto s = ParseSpec(j);
  EXPECT_TRUE(s.ok()) << s.status().message();
  return s.ok() ? *s : CampaignSpec{};
}

std::vector<Candidate> Rooms(int n, int gateways, const std::string& firmware = "2.0.3") {
  std::vector<Candidate> out;
  for (int i = 0; i < n; ++i) {
    Candidate c;
    c.site = "houpu";
    c.device = "room-" + std::to_string(i);
    c.key = c.site + "/" + c.device;
    c.kind = "garbage_room";
    c.model = "gr-ctrl-v2";
    c.gateway = "gw-" + std::to_string(i % gateways);
    c.bus = "rs485-" + std::to_string((i / gateways) % 2);  // two buses behind each gateway
    c.firmware = firmware;
    out.push_back(c);
  }
  return out;
}

Campaign Make(const CampaignSpec& spec, const std::vector<Candidate>& devices) {
  Plan plan = MakePlan(spec, devices, nullptr);
  Campaign c(spec, plan, kT0);
  for (const auto& d : devices) c.SetPlacement(d.key, d.gateway, d.bus);
  return c;
}

// Completes every started device: reports the version and waits out the health gate.
void FinishAll(Campaign& c, const std::vector<StartJob>& started, int64_t& now) {
  for (const auto& s : started) c.OnVersion(s.key, c.spec().version, now);
  now += c.spec().health_gate_s * kS;
}

TEST(RolloutSpec, ParsesAndListsEveryProblem) {
  CampaignSpec s = Spec();
  EXPECT_EQ(s.waves_pct, (std::vector<double>{10, 50, 100}));
  ASSERT_EQ(s.blackout.size(), 2u);
  EXPECT_EQ(s.blackout[0].start_min, 360);
  EXPECT_EQ(s.utc_offset_s, 8 * 3600);
  auto again = ParseSpec(SpecJson(s));
  ASSERT_TRUE(again.ok()) << again.status().message();
  EXPECT_EQ(SpecJson(*again), SpecJson(s));

  json bad = BaseSpec();
  bad["target_type"] = "lorawan";
  bad["waves_pct"] = {50, 20};
  bad["blackout"] = {"6-9"};
  bad["artifact_sha256"] = "xyz";
  bad["colour"] = "red";
  bad.erase("version");
  auto r = ParseSpec(bad);
  ASSERT_FALSE(r.ok());
  for (const char* want : {"LoRaWAN FUOTA is not supported", "waves_pct must be rising", "blackout \"6-9\"",
                           "artifact_sha256 must be 64", "unknown key \"colour\"", "version is required"})
    EXPECT_NE(r.status().message().find(want), std::string::npos) << want << "\n" << r.status().message();
}

TEST(RolloutPlan, SelectsTargetsAndSplitsCanaryAndWavesAcrossGateways) {
  CampaignSpec spec = Spec();
  auto devices = Rooms(100, 4);
  devices[7].firmware = "2.1.0";      // already there
  devices[8].model = "gr-ctrl-v1";    // another model
  devices[9].kind = "bin";            // another kind
  Plan plan = MakePlan(spec, devices, nullptr);
  ASSERT_EQ(plan.groups.size(), 4u);
  EXPECT_EQ(plan.total(), 97u);
  EXPECT_EQ(plan.groups[0].size(), 2u);   // canary
  EXPECT_EQ(plan.groups[1].size(), 8u);   // up to ceil(10% of 97) = 10
  EXPECT_EQ(plan.groups[2].size(), 39u);  // up to ceil(50% of 97) = 49
  EXPECT_EQ(plan.groups[3].size(), 48u);
  // The canary sits behind two different gateways.
  auto gw = [&](const std::string& key) { return std::find_if(devices.begin(), devices.end(), [&](auto& d) { return d.key == key; })->gateway; };
  EXPECT_NE(gw(plan.groups[0][0]), gw(plan.groups[0][1]));
  // Deterministic whatever order the registry lists devices in.
  auto shuffled = devices;
  std::shuffle(shuffled.begin(), shuffled.end(), std::mt19937(3));
  EXPECT_EQ(MakePlan(spec, shuffled, nullptr).groups, plan.groups);
  // Version range through the caller's predicate; explicit device lists.
  json j = BaseSpec();
  j["target"]["version_range"] = ">=2.0.0,<2.0.5";
  devices[10].firmware = "1.9.0";
  Plan ranged = MakePlan(Spec(j), devices, [](const std::string& v) { return v >= "2.0.0" && v < "2.0.5"; });
  EXPECT_EQ(ranged.total(), 96u);
  j = BaseSpec();
  j["target"] = {{"devices", {"room-1", "houpu/room-2", "room-999"}}};
  EXPECT_EQ(MakePlan(Spec(j), devices, nullptr).total(), 2u);
}

TEST(RolloutCampaign, CanaryThenWavesUntilCompleted) {
  auto devices = Rooms(20, 2);
  Campaign c = Make(Spec(), devices);
  EXPECT_EQ(c.state(), CampaignState::kDraft);
  EXPECT_TRUE(c.Tick(kT0).empty());
  ASSERT_TRUE(c.Start(kT0).ok());
  int64_t now = kT0;
  std::vector<size_t> started_per_tick;
  for (int round = 0; round < 10 && c.state() == CampaignState::kRunning; ++round) {
    auto started = c.Tick(now);
    started_per_tick.push_back(started.size());
    FinishAll(c, started, now);
    // Not done before the health gate has passed.
    for (const auto& s : started) EXPECT_EQ(c.devices().at(s.key).state, DeviceState::kVerifying);
  }
  c.Tick(now);
  EXPECT_EQ(c.state(), CampaignState::kCompleted) << c.reason();
  // canary 2, wave 1 up to 10% of 20 = 2 → nothing more (empty groups are dropped), wave 2 up to 10, wave 3 the rest.
  EXPECT_EQ(started_per_tick[0], 2u);
  EXPECT_EQ(started_per_tick[1], 8u);
  EXPECT_EQ(started_per_tick[2], 10u);
  auto status = c.StatusJson(now);
  EXPECT_EQ(status["counts"]["succeeded"], 20);
  EXPECT_EQ(status["groups"][0]["name"], "canary");
}

TEST(RolloutCampaign, WaveBelowThresholdPausesAndResumeAcceptsIt) {
  json j = BaseSpec();
  j["retries"] = 0;
  Campaign c = Make(Spec(j), Rooms(40, 4));
  ASSERT_TRUE(c.Start(kT0).ok());
  int64_t now = kT0;
  auto canary = c.Tick(now);
  FinishAll(c, canary, now);
  auto wave1 = c.Tick(now);
  ASSERT_EQ(wave1.size(), 2u);  // up to 10% of 40 = 4
  c.OnFailed(wave1[0].key, "rebooted into the old version 2.0.3", now);
  c.OnVersion(wave1[1].key, "2.1.0", now);
  now += 60 * kS;
  EXPECT_TRUE(c.Tick(now).empty());
  EXPECT_EQ(c.state(), CampaignState::kPaused);
  EXPECT_EQ(c.reason(), "wave 1: 50% succeeded, below the 90% threshold");
  EXPECT_EQ(c.devices().at(wave1[0].key).reason, "rebooted into the old version 2.0.3");
  EXPECT_EQ(c.devices().at(wave1[0].key).state, DeviceState::kFailed);
  ASSERT_TRUE(c.Resume(now).ok());
  EXPECT_EQ(c.Tick(now).size(), 16u);  // wave 2 (up to 50% = 20)
}

TEST(RolloutCampaign, FailureLimitPausesAtOnce) {
  json j = BaseSpec();
  j["retries"] = 0;
  j["canary_count"] = 0;
  j["waves_pct"] = {100};
  j["failure_limit_count"] = 3;
  Campaign c = Make(Spec(j), Rooms(10, 1));
  ASSERT_TRUE(c.Start(kT0).ok());
  auto started = c.Tick(kT0);
  ASSERT_EQ(started.size(), 10u);
  for (int i = 0; i < 3; ++i) c.OnFailed(started[static_cast<size_t>(i)].key, "checksum refused by the device", kT0);
  c.Tick(kT0 + kS);
  EXPECT_EQ(c.state(), CampaignState::kPaused);
  EXPECT_EQ(c.reason(), "3 devices failed (limit 3)");
  // In-flight devices still finish while paused.
  c.OnVersion(started[5].key, "2.1.0", kT0 + kS);
  c.Tick(kT0 + 62 * kS);
  EXPECT_EQ(c.devices().at(started[5].key).state, DeviceState::kSucceeded);
}

TEST(RolloutCampaign, CapsPerGatewayAndBusAndBlackoutWindows) {
  json j = BaseSpec();
  j["canary_count"] = 0;
  j["waves_pct"] = {100};
  j["max_parallel_per_gateway"] = 3;
  j["max_parallel_per_bus"] = 1;
  Campaign c = Make(Spec(j), Rooms(12, 2));  // 2 gateways x 2 buses
  ASSERT_TRUE(c.Start(kT0).ok());
  auto started = c.Tick(kT0);
  EXPECT_EQ(started.size(), 4u);  // one per bus: 2 buses behind each of 2 gateways
  EXPECT_TRUE(c.Tick(kT0 + kS).empty());
  // 07:30 local is inside the morning collection round: nothing new starts.
  json b = BaseSpec();
  b["canary_count"] = 0;
  b["waves_pct"] = {100};
  Campaign morning = Make(Spec(b), Rooms(4, 1));
  ASSERT_TRUE(morning.Start(kT0).ok());
  int64_t at_0730 = 1763681400000;  // 2025-11-21 07:30 UTC+8
  EXPECT_TRUE(morning.Tick(at_0730).empty());
  EXPECT_TRUE(morning.StatusJson(at_0730)["blackout_now"].get<bool>());
  EXPECT_EQ(morning.Tick(at_0730 + 90 * 60 * kS).size(), 4u);  // 09:00
}

TEST(RolloutCampaign, TimeoutsRetryThenFailAndUnhealthyDevicesFail) {
  json j = BaseSpec();
  j["canary_count"] = 0;
  j["waves_pct"] = {100};
  j["success_threshold_pct"] = 0;
  Campaign c = Make(Spec(j), Rooms(2, 1));
  ASSERT_TRUE(c.Start(kT0).ok());
  auto started = c.Tick(kT0);
  ASSERT_EQ(started.size(), 2u);
  int64_t now = kT0 + 600 * kS;  // device_timeout_s
  auto retry = c.Tick(now);      // both time out; one retry each
  ASSERT_EQ(retry.size(), 2u);
  EXPECT_EQ(retry[0].attempt, 2);
  EXPECT_EQ(c.devices().at(retry[0].key).reason, "no result within 600 s");
  c.OnVersion(retry[1].key, "2.1.0", now);
  // Its offline flap from the reboot (measured before the version was reported) does not count…
  c.OnHealth(retry[1].key, false, now - 1 * kS, now + 10 * kS);
  EXPECT_EQ(c.devices().at(retry[1].key).state, DeviceState::kVerifying);
  // …being unhealthy after it came up with the new version does.
  c.OnHealth(retry[1].key, false, now + 10 * kS, now + 10 * kS);  // comes up with the new version but unhealthy
  now += 600 * kS;
  c.Tick(now);
  EXPECT_EQ(c.devices().at(retry[0].key).state, DeviceState::kFailed);
  EXPECT_EQ(c.devices().at(retry[1].key).state, DeviceState::kFailed);
  EXPECT_EQ(c.devices().at(retry[1].key).reason, "unhealthy after the update");
  EXPECT_EQ(c.state(), CampaignState::kCompleted);
}

TEST(RolloutCampaign, OfflineDevicesAreDeferredAndCaughtUpWhenBack) {
  json j = BaseSpec();
  j["canary_count"] = 0;
  j["waves_pct"] = {100};
  auto devices = Rooms(3, 1);
  Campaign c = Make(Spec(j), devices);
  c.OnOnline(devices[0].key, false, kT0);
  ASSERT_TRUE(c.Start(kT0).ok());
  int64_t now = kT0;
  auto started = c.Tick(now);
  EXPECT_EQ(started.size(), 2u);
  FinishAll(c, started, now);
  c.Tick(now);
  EXPECT_EQ(c.state(), CampaignState::kRunning);  // waiting for the offline room
  EXPECT_EQ(c.devices().at(devices[0].key).state, DeviceState::kDeferred);
  c.OnOnline(devices[0].key, true, now);
  auto late = c.Tick(now);
  ASSERT_EQ(late.size(), 1u);
  EXPECT_EQ(late[0].key, devices[0].key);
  FinishAll(c, late, now);
  c.Tick(now);
  EXPECT_EQ(c.state(), CampaignState::kCompleted);
}

TEST(RolloutCampaign, RestartFromJsonContinuesWhereItWas) {
  auto devices = Rooms(20, 2);
  Campaign c = Make(Spec(), devices);
  ASSERT_TRUE(c.Start(kT0).ok());
  int64_t now = kT0;
  auto canary = c.Tick(now);
  FinishAll(c, canary, now);
  auto wave1 = c.Tick(now);  // in flight when sanifleet stops
  ASSERT_FALSE(wave1.empty());
  json saved = c.ToJson();
  auto restored = Campaign::FromJson(json::parse(saved.dump()));
  ASSERT_TRUE(restored.ok()) << restored.status().message();
  EXPECT_EQ(restored->ToJson(), saved);
  // Done devices are not started again; the in-flight ones finish.
  EXPECT_TRUE(restored->Tick(now).empty());
  for (const auto& s : canary) EXPECT_EQ(restored->devices().at(s.key).state, DeviceState::kSucceeded);
  FinishAll(*restored, wave1, now);
  EXPECT_EQ(restored->Tick(now).size(), 10u);
  EXPECT_FALSE(Campaign::FromJson(json{{"v", 2}}).ok());
  saved["devices"][0]["state"] = "half-flashed";
  EXPECT_FALSE(Campaign::FromJson(saved).ok());
}

}  // namespace
}  // namespace sanigate::fleet::rollout
