// The fleet health evaluator (fleet/health): state and reasons from readings, events, statuses and
// Modbus counters; silence and overflow timers at their exact boundaries; Restore, Forget and
// SetConfig; the deadline heap against a reference; and 50k devices whose Tick touches only the
// due ones. Pure logic: time is always passed in, nothing sleeps.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "health/deadline_heap.h"
#include "health/health.h"
#include "health/trackers.h"

namespace sanigate::fleet {
namespace {

constexpr int64_t kSec = 1000;
constexpr int64_t kMin = 60 * kSec;
constexpr int64_t kHour = 60 * kMin;
constexpr int64_t kT0 = 1'763'712'000'000;  // 2025-11-21T08:00:00Z
constexpr int64_t kNoDeadline = std::numeric_limits<int64_t>::max();

using Metrics = std::vector<std::pair<std::string, double>>;

Observation Reading(const std::string& device, int64_t ts, Metrics metrics = {},
                    const std::string& kind = "bin") {
  Observation o;
  o.type = Observation::Type::kReading;
  o.ts_ms = ts;
  o.device = device;
  o.kind = kind;
  o.metrics = std::move(metrics);
  return o;
}

Observation Event(const std::string& device, int64_t ts, const std::string& event, bool active,
                  const std::string& severity = "warning") {
  Observation o;
  o.type = Observation::Type::kEvent;
  o.ts_ms = ts;
  o.device = device;
  o.kind = "bin";
  o.event = event;
  o.event_active = active;
  o.severity = severity;
  return o;
}

Observation Status(const std::string& device, int64_t ts, bool online) {
  Observation o;
  o.type = Observation::Type::kStatus;
  o.ts_ms = ts;
  o.device = device;
  o.online = online;
  return o;
}

// "code" or "code:subject" with the level, in verdict order.
std::vector<std::string> Reasons(const HealthVerdict& v) {
  std::vector<std::string> out;
  for (const HealthReason& r : v.reasons) {
    out.push_back(std::string(HealthStateName(r.level)) + " " + r.code +
                  (r.subject.empty() ? "" : ":" + r.subject));
  }
  return out;
}

const HealthReason* FindReason(const HealthVerdict& v, std::string_view code) {
  for (const HealthReason& r : v.reasons) {
    if (r.code == code) return &r;
  }
  return nullptr;
}

HealthState StateOf(const HealthEvaluator& ev, const std::string& device) {
  const HealthVerdict* v = ev.Find(device);
  EXPECT_NE(v, nullptr) << device;
  return v ? v->state : HealthState::kUnknown;
}

// n live readings `interval` apart from `start` (ts == now); returns the last time.
int64_t Feed(HealthEvaluator& ev, const std::string& device, int64_t start, int64_t interval, int n,
             const std::string& kind = "bin") {
  int64_t t = start;
  for (int i = 0; i < n; ++i) {
    t = start + i * interval;
    ev.Observe(Reading(device, t, {{"fill_level_pct", 10.0 + i}}, kind), t);
  }
  return t;
}

TEST(FleetHealthTest, StateNamesRoundTrip) {
  const std::vector<std::pair<HealthState, std::string>> names = {
      {HealthState::kUnknown, "unknown"},
      {HealthState::kOk, "ok"},
      {HealthState::kDegraded, "degraded"},
      {HealthState::kCritical, "critical"},
      {HealthState::kOffline, "offline"}};
  for (const auto& [state, name] : names) {
    EXPECT_EQ(HealthStateName(state), name);
    EXPECT_EQ(ParseHealthState(name), state);
  }
  EXPECT_EQ(ParseHealthState("OK"), std::nullopt);
  EXPECT_EQ(ParseHealthState(""), std::nullopt);
  EXPECT_EQ(ParseHealthState("broken"), std::nullopt);
}

TEST(FleetHealthTest, UnknownUntilFirstReadingThenOk) {
  HealthEvaluator ev;
  EXPECT_EQ(ev.Find("bin-1"), nullptr);
  EXPECT_EQ(ev.size(), 0u);

  auto change = ev.Observe(Reading("bin-1", kT0, {{"fill_level_pct", 40}}), kT0 + 5);
  ASSERT_TRUE(change);
  EXPECT_TRUE(change->state_changed);
  EXPECT_EQ(change->previous, HealthState::kUnknown);
  EXPECT_EQ(change->verdict.state, HealthState::kOk);
  EXPECT_EQ(change->verdict.device, "bin-1");
  EXPECT_EQ(change->verdict.kind, "bin");
  EXPECT_EQ(change->verdict.since_ms, kT0 + 5);
  EXPECT_EQ(change->verdict.last_seen_ms, kT0 + 5);
  EXPECT_EQ(change->verdict.expected_interval_ms, 0);
  EXPECT_TRUE(change->verdict.reasons.empty());
  EXPECT_EQ(ev.size(), 1u);

  // Nothing new to say on the next healthy reading; last_seen still moves.
  EXPECT_FALSE(ev.Observe(Reading("bin-1", kT0 + kMin, {{"fill_level_pct", 41}}), kT0 + kMin));
  EXPECT_EQ(ev.Find("bin-1")->last_seen_ms, kT0 + kMin);
  EXPECT_EQ(ev.Find("bin-1")->since_ms, kT0 + 5);

  // A device known only from Modbus counters has not been observed: still unknown.
  EXPECT_FALSE(ev.ObserveRequestCounters("room-1", 100, 0, kT0));
  EXPECT_EQ(StateOf(ev, "room-1"), HealthState::kUnknown);
  // An observation without a device id is ignored.
  EXPECT_FALSE(ev.Observe(Reading("", kT0, {}), kT0));
  EXPECT_EQ(ev.size(), 2u);
}

TEST(FleetHealthTest, LearnedIntervalSilenceAtExactBoundariesThenBackToOk) {
  HealthEvaluator ev;
  const int64_t last = Feed(ev, "bin-1", kT0, 10 * kMin, 4);  // 3 gaps of 10 min
  const HealthVerdict* v = ev.Find("bin-1");
  ASSERT_NE(v, nullptr);
  EXPECT_EQ(v->expected_interval_ms, 10 * kMin);
  EXPECT_EQ(ev.NextDeadline(), last + 20 * kMin);

  EXPECT_TRUE(ev.Tick(last + 20 * kMin - 1).empty());
  EXPECT_EQ(v->state, HealthState::kOk);

  auto changes = ev.Tick(last + 20 * kMin);
  ASSERT_EQ(changes.size(), 1u);
  EXPECT_TRUE(changes[0].state_changed);
  EXPECT_EQ(changes[0].previous, HealthState::kOk);
  EXPECT_EQ(changes[0].verdict.state, HealthState::kDegraded);
  EXPECT_EQ(Reasons(changes[0].verdict), std::vector<std::string>{"degraded silent"});
  EXPECT_EQ(changes[0].verdict.since_ms, last + 20 * kMin);
  EXPECT_NE(changes[0].verdict.reasons[0].detail.find("10m"), std::string::npos)
      << changes[0].verdict.reasons[0].detail;
  EXPECT_EQ(ev.NextDeadline(), last + 30 * kMin);

  EXPECT_TRUE(ev.Tick(last + 30 * kMin - 1).empty());
  EXPECT_EQ(v->state, HealthState::kDegraded);
  changes = ev.Tick(last + 30 * kMin);
  ASSERT_EQ(changes.size(), 1u);
  EXPECT_EQ(changes[0].previous, HealthState::kDegraded);
  EXPECT_EQ(changes[0].verdict.state, HealthState::kOffline);
  EXPECT_EQ(Reasons(changes[0].verdict), std::vector<std::string>{"offline silent"});
  EXPECT_EQ(ev.NextDeadline(), kNoDeadline);
  EXPECT_TRUE(ev.Tick(last + 100 * kHour).empty());

  // New traffic removes "silent".
  const int64_t back = last + 101 * kHour;
  auto change = ev.Observe(Reading("bin-1", back, {{"fill_level_pct", 50}}), back);
  ASSERT_TRUE(change);
  EXPECT_EQ(change->previous, HealthState::kOffline);
  EXPECT_EQ(change->verdict.state, HealthState::kOk);
  EXPECT_TRUE(change->verdict.reasons.empty());
  EXPECT_EQ(change->verdict.last_seen_ms, back);
  // The outage gap (clamped) is one of 4 gaps: the median stays 10 min.
  EXPECT_EQ(change->verdict.expected_interval_ms, 10 * kMin);
  EXPECT_EQ(ev.NextDeadline(), back + 20 * kMin);
}

// Issue 16: a broker outage of sanifleet's own link made healthy devices offline, because
// silence was judged while nothing could be heard. Deadlines inside the deaf window get one
// expected interval after the link is back; a device silent before the outage stays offline.
TEST(FleetHealthTest, SilenceWhileSanifleetCouldNotListenIsNotHeldAgainstDevices) {
  HealthEvaluator ev;
  const int64_t last = Feed(ev, "room-1", kT0, 10 * kMin, 4);          // talks every 10 min
  const int64_t dead = Feed(ev, "room-2", kT0 - 5 * kHour, 10 * kMin, 4);  // silent for hours
  (void)ev.Tick(last);
  EXPECT_EQ(StateOf(ev, "room-2"), HealthState::kOffline);
  // sanifleet's link goes down 5 min after room-1's last report and comes back 40 min later:
  // room-1's degraded (last+20) and offline (last+30) deadlines fell inside the outage.
  const int64_t down = last + 5 * kMin, up = last + 45 * kMin;
  ev.PauseSilence(down, up);
  EXPECT_TRUE(ev.Tick(up).empty()) << "no verdict for silence nobody could hear";
  EXPECT_EQ(StateOf(ev, "room-1"), HealthState::kOk);
  EXPECT_EQ(StateOf(ev, "room-2"), HealthState::kOffline) << "silent before the outage: still offline";
  // Its queued report arrives: fine. Had it not, it would be judged one interval after `up`.
  EXPECT_TRUE(ev.Tick(up + 10 * kMin - 1).empty());
  auto changes = ev.Tick(up + 10 * kMin);
  ASSERT_EQ(changes.size(), 1u);
  EXPECT_EQ(changes[0].verdict.device, "room-1");
  EXPECT_EQ(changes[0].verdict.state, HealthState::kOffline);
  (void)dead;
}

TEST(FleetHealthTest, NoSilenceVerdictBeforeThreeGaps) {
  HealthEvaluator ev;
  const int64_t last = Feed(ev, "bin-1", kT0, 10 * kMin, 3);  // only 2 gaps
  EXPECT_EQ(ev.Find("bin-1")->expected_interval_ms, 0);
  EXPECT_EQ(ev.NextDeadline(), kNoDeadline);
  EXPECT_TRUE(ev.Tick(last + 1000 * kHour).empty());
  EXPECT_EQ(StateOf(ev, "bin-1"), HealthState::kOk);
}

TEST(FleetHealthTest, IntervalLearningIsARobustMedian) {
  detail::IntervalLearner l;
  l.Add(kT0);
  l.Add(kT0);              // duplicate: ignored
  l.Add(kT0 + 500);        // below 1 s: ignored, base kept
  l.Add(kT0 + 10 * kMin);  // gap 10 min
  l.Add(kT0 + 20 * kMin);  // 10 min
  EXPECT_EQ(l.gaps(), 2);
  EXPECT_EQ(l.Estimate(), 0);
  l.Add(kT0 + 20 * kMin + 3 * kHour);  // one outage gap
  EXPECT_EQ(l.Estimate(), 10 * kMin);  // median of {10m, 10m, 3h}
  l.Add(kT0 + 20 * kMin + 3 * kHour + 10 * kMin);
  EXPECT_EQ(l.Estimate(), 10 * kMin);
  // A regime change wins once it holds the majority of the window (7 gaps).
  int64_t t = kT0 + 20 * kMin + 3 * kHour + 10 * kMin;
  for (int i = 0; i < 3; ++i) l.Add(t += kHour);
  EXPECT_EQ(l.Estimate(), kHour);  // {10m,10m,3h,10m,1h,1h,1h}: upper middle of 7 is 1h

  detail::IntervalLearner clamp;
  for (int i = 0; i < 4; ++i) clamp.Add(kT0 + i * 30 * 24 * kHour);
  EXPECT_EQ(clamp.Estimate(), 7 * 24 * kHour);

  // A clock that jumps back only moves the base.
  detail::IntervalLearner back;
  back.Add(kT0);
  back.Add(kT0 - 365 * 24 * kHour);
  for (int i = 1; i <= 3; ++i) back.Add(kT0 - 365 * 24 * kHour + i * kMin);
  EXPECT_EQ(back.Estimate(), kMin);
}

TEST(FleetHealthTest, ConfiguredIntervalPerKindAndPerProfileProfileWins) {
  HealthConfig config;
  HealthThresholds bin = config.defaults;
  bin.expected_interval_ms = kHour;
  HealthThresholds ldds = config.defaults;
  ldds.expected_interval_ms = 15 * kMin;
  config.by_kind["bin"] = bin;
  config.by_profile["dragino-ldds75"] = ldds;
  HealthEvaluator ev(config);

  ev.Observe(Reading("bin-kind", kT0, {{"fill_level_pct", 1}}, "bin"), kT0);
  Observation profiled = Reading("bin-profile", kT0, {{"fill_level_pct", 1}}, "bin");
  profiled.profile = "dragino-ldds75";
  ev.Observe(profiled, kT0);
  ev.Observe(Reading("truck-1", kT0, {{"speed_kmh", 1}}, "vehicle"), kT0);

  EXPECT_EQ(ev.Find("bin-kind")->expected_interval_ms, kHour);
  EXPECT_EQ(ev.Find("bin-profile")->expected_interval_ms, 15 * kMin);
  EXPECT_EQ(ev.Find("truck-1")->expected_interval_ms, 0);  // default: learn, nothing known yet
  EXPECT_EQ(ev.NextDeadline(), kT0 + 30 * kMin);

  auto changes = ev.Tick(kT0 + 30 * kMin);
  ASSERT_EQ(changes.size(), 1u);
  EXPECT_EQ(changes[0].verdict.device, "bin-profile");
  EXPECT_EQ(changes[0].verdict.state, HealthState::kDegraded);
  changes = ev.Tick(kT0 + 45 * kMin);
  ASSERT_EQ(changes.size(), 1u);
  EXPECT_EQ(changes[0].verdict.device, "bin-profile");
  EXPECT_EQ(changes[0].verdict.state, HealthState::kOffline);
  EXPECT_TRUE(ev.Tick(kT0 + 2 * kHour - 1).empty());
  changes = ev.Tick(kT0 + 2 * kHour);
  ASSERT_EQ(changes.size(), 1u);
  EXPECT_EQ(changes[0].verdict.device, "bin-kind");
  EXPECT_EQ(changes[0].verdict.state, HealthState::kDegraded);
  EXPECT_EQ(StateOf(ev, "truck-1"), HealthState::kOk);

  // The configured interval wins over a learned one.
  Feed(ev, "bin-kind", kT0 + 3 * kHour, kMin, 6);
  EXPECT_EQ(ev.Find("bin-kind")->expected_interval_ms, kHour);

  // A later message without a profile keeps the profile.
  ev.Observe(Reading("bin-profile", kT0 + 3 * kHour, {}, "bin"), kT0 + 3 * kHour);
  EXPECT_EQ(ev.Find("bin-profile")->expected_interval_ms, 15 * kMin);
}

TEST(FleetHealthTest, BackfillDoesNotResetSilenceNorTeachTheInterval) {
  HealthEvaluator ev;
  const int64_t last = Feed(ev, "truck-1", kT0, 10 * kMin, 4, "vehicle");
  ASSERT_EQ(ev.Tick(last + 20 * kMin).size(), 1u);
  ASSERT_EQ(StateOf(ev, "truck-1"), HealthState::kDegraded);

  // A JT/T 808 batch arrives: points with fresh-looking times, flagged backfill.
  for (int i = 1; i <= 5; ++i) {
    Observation b = Reading("truck-1", last + i * kMin, {{"speed_kmh", 30}}, "vehicle");
    b.backfill = true;
    EXPECT_FALSE(ev.Observe(b, last + 21 * kMin + i));
  }
  EXPECT_EQ(ev.Find("truck-1")->last_seen_ms, last);
  EXPECT_EQ(StateOf(ev, "truck-1"), HealthState::kDegraded);
  EXPECT_TRUE(ev.Tick(last + 30 * kMin - 1).empty());
  auto changes = ev.Tick(last + 30 * kMin);
  ASSERT_EQ(changes.size(), 1u);
  EXPECT_EQ(changes[0].verdict.state, HealthState::kOffline);

  // A device seen only through backfill is known (ok) but has no interval and no silence.
  HealthEvaluator ev2;
  for (int i = 0; i < 10; ++i) {
    Observation b = Reading("truck-2", kT0 + i * kMin, {{"speed_kmh", 30}}, "vehicle");
    b.backfill = true;
    ev2.Observe(b, kT0 + i * kMin);
  }
  EXPECT_EQ(StateOf(ev2, "truck-2"), HealthState::kOk);
  EXPECT_EQ(ev2.Find("truck-2")->expected_interval_ms, 0);
  EXPECT_EQ(ev2.Find("truck-2")->last_seen_ms, 0);
  EXPECT_EQ(ev2.NextDeadline(), kNoDeadline);
}

TEST(FleetHealthTest, RetainedStatusOfflineThenOnline) {
  HealthEvaluator ev;
  ev.Observe(Reading("room-7", kT0, {{"fill_level_pct", 1}}, "garbage_room"), kT0);

  auto change = ev.Observe(Status("room-7", kT0 + kMin, false), kT0 + kMin);
  ASSERT_TRUE(change);
  EXPECT_EQ(change->verdict.state, HealthState::kOffline);
  EXPECT_EQ(Reasons(change->verdict), std::vector<std::string>{"offline offline"});
  EXPECT_FALSE(change->verdict.reasons[0].detail.empty());
  EXPECT_EQ(change->verdict.last_seen_ms, kT0);  // a status is not traffic of the device
  EXPECT_FALSE(ev.Observe(Status("room-7", kT0 + kMin, false), kT0 + kMin));  // retained replay

  // Traffic alone does not override the gateway's offline status ...
  EXPECT_FALSE(
      ev.Observe(Reading("room-7", kT0 + 2 * kMin, {{"fill_level_pct", 2}}), kT0 + 2 * kMin));
  EXPECT_EQ(StateOf(ev, "room-7"), HealthState::kOffline);
  // ... online=true does.
  change = ev.Observe(Status("room-7", kT0 + 3 * kMin, true), kT0 + 3 * kMin);
  ASSERT_TRUE(change);
  EXPECT_EQ(change->previous, HealthState::kOffline);
  EXPECT_EQ(change->verdict.state, HealthState::kOk);
  EXPECT_TRUE(change->verdict.reasons.empty());

  // A status alone makes a device known.
  change = ev.Observe(Status("room-8", kT0, true), kT0);
  ASSERT_TRUE(change);
  EXPECT_EQ(change->verdict.state, HealthState::kOk);

  // The gateway's "offline" event is the same verdict and is not traffic either.
  change = ev.Observe(Event("room-7", kT0 + 4 * kMin, "offline", true), kT0 + 4 * kMin);
  ASSERT_TRUE(change);
  EXPECT_EQ(change->verdict.state, HealthState::kOffline);
  EXPECT_EQ(change->verdict.last_seen_ms, kT0 + 2 * kMin);
  change = ev.Observe(Event("room-7", kT0 + 5 * kMin, "offline", false), kT0 + 5 * kMin);
  ASSERT_TRUE(change);
  EXPECT_EQ(change->verdict.state, HealthState::kOk);
}

TEST(FleetHealthTest, LowBatteryByPercentAndVolts) {
  HealthEvaluator ev;
  int64_t t = kT0;
  auto battery = [&](Metrics m) {
    t += kMin;
    return ev.Observe(Reading("bin-1", t, std::move(m)), t);
  };
  ASSERT_TRUE(battery({{"battery_pct", 50}}));  // unknown → ok
  auto change = battery({{"battery_pct", 20}});
  ASSERT_TRUE(change);
  EXPECT_EQ(change->verdict.state, HealthState::kDegraded);
  ASSERT_NE(FindReason(change->verdict, reason::kLowBattery), nullptr);
  EXPECT_EQ(FindReason(change->verdict, reason::kLowBattery)->detail, "battery_pct 20 <= 20");

  change = battery({{"battery_pct", 21}});
  ASSERT_TRUE(change);
  EXPECT_EQ(change->verdict.state, HealthState::kOk);

  change = battery({{"battery_pct", 5}});
  ASSERT_TRUE(change);
  EXPECT_EQ(change->verdict.state, HealthState::kCritical);
  EXPECT_EQ(change->verdict.reasons[0].detail, "battery_pct 5 <= 5");

  change = battery({{"battery_pct", 12}});
  ASSERT_TRUE(change);  // the level of the reason changed
  EXPECT_TRUE(change->state_changed);
  EXPECT_EQ(change->previous, HealthState::kCritical);
  EXPECT_EQ(change->verdict.state, HealthState::kDegraded);

  // A reading without battery metrics keeps the last verdict; new numbers are not a change.
  EXPECT_FALSE(battery({{"fill_level_pct", 30}}));
  EXPECT_FALSE(battery({{"battery_pct", 11}}));
  EXPECT_EQ(FindReason(*ev.Find("bin-1"), reason::kLowBattery)->detail, "battery_pct 11 <= 20");

  change = battery({{"battery_pct", 80}, {"battery_v", 3.2}});
  ASSERT_FALSE(change);  // still degraded low_battery, now from the voltage
  EXPECT_EQ(FindReason(*ev.Find("bin-1"), reason::kLowBattery)->detail, "battery_v 3.2 <= 3.3");
  change = battery({{"battery_v", 3.4}});
  ASSERT_TRUE(change);
  EXPECT_EQ(change->verdict.state, HealthState::kOk);
  change = battery({{"battery_v", 3.3}});
  ASSERT_TRUE(change);
  EXPECT_EQ(change->verdict.state, HealthState::kDegraded);
}

TEST(FleetHealthTest, WeakRadioIsAveragedOverFiveReadings) {
  HealthEvaluator ev;
  int64_t t = kT0;
  auto uplink = [&](const std::string& dev, double rssi) {
    t += kMin;
    Observation o = Reading(dev, t, {{"fill_level_pct", 1}});
    o.rssi_dbm = rssi;
    o.snr_db = 5;
    return ev.Observe(o, t);
  };
  // One bad reading alone, first or after good ones, does not trigger.
  uplink("bin-a", -140);
  EXPECT_EQ(StateOf(ev, "bin-a"), HealthState::kOk);
  for (int i = 0; i < 4; ++i) uplink("bin-b", -100);
  EXPECT_FALSE(uplink("bin-b", -140));  // mean -108
  EXPECT_EQ(StateOf(ev, "bin-b"), HealthState::kOk);

  // Five weak ones do.
  ASSERT_TRUE(uplink("bin-c", -125));  // unknown → ok
  EXPECT_EQ(StateOf(ev, "bin-c"), HealthState::kOk);
  for (int i = 0; i < 3; ++i) EXPECT_FALSE(uplink("bin-c", -125));
  auto change = uplink("bin-c", -125);
  ASSERT_TRUE(change);
  EXPECT_EQ(Reasons(change->verdict), std::vector<std::string>{"degraded weak_radio"});
  EXPECT_NE(change->verdict.reasons[0].detail.find("-125"), std::string::npos);
  // One good reading brings the mean to exactly -120, which is not below the limit.
  change = uplink("bin-c", -100);
  ASSERT_TRUE(change);
  EXPECT_EQ(change->verdict.state, HealthState::kOk);

  // SNR reported as a metric (NB-IoT style) is averaged the same way.
  for (int i = 0; i < 5; ++i) {
    t += kMin;
    ev.Observe(Reading("bin-d", t, {{"snr_db", -20}}), t);
  }
  ASSERT_NE(FindReason(*ev.Find("bin-d"), reason::kWeakRadio), nullptr);
  EXPECT_NE(FindReason(*ev.Find("bin-d"), reason::kWeakRadio)->detail.find("snr_db"),
            std::string::npos);
}

TEST(FleetHealthTest, PacketLossFromFrameCounterGaps) {
  HealthEvaluator ev;
  int64_t t = kT0;
  auto uplink = [&](const std::string& dev, int64_t fcnt) {
    t += kMin;
    Observation o = Reading(dev, t, {{"fill_level_pct", 1}});
    o.fcnt = fcnt;
    return ev.Observe(o, t);
  };
  for (int f = 0; f < 20; ++f) uplink("bin-1", f);  // 20 received
  EXPECT_FALSE(uplink("bin-1", 22));                // 2 lost of 23: 8.7 %
  EXPECT_EQ(StateOf(ev, "bin-1"), HealthState::kOk);
  auto change = uplink("bin-1", 25);  // 4 lost of 26: 15.4 %
  ASSERT_TRUE(change);
  EXPECT_EQ(Reasons(change->verdict), std::vector<std::string>{"degraded packet_loss"});
  EXPECT_NE(change->verdict.reasons[0].detail.find("lost 4 of the last 26"), std::string::npos)
      << change->verdict.reasons[0].detail;
  // Later frames without loss push the lost ones out of the 100-frame window.
  std::optional<HealthChange> cleared;
  int f = 26;
  for (; f < 200 && !cleared; ++f) cleared = uplink("bin-1", f);
  ASSERT_TRUE(cleared);
  EXPECT_EQ(cleared->verdict.state, HealthState::kOk);
  EXPECT_EQ(f - 1, 39);  // cleared at fcnt 39: 4 lost of 40 expected = 10 %, not above the limit

  // A short start is not judged: 1 lost of 3 is not a verdict yet.
  uplink("bin-2", 0);
  uplink("bin-2", 2);
  EXPECT_EQ(StateOf(ev, "bin-2"), HealthState::kOk);
}

TEST(FleetHealthTest, FrameCounterResetAndRepeatsAreNotLoss) {
  HealthEvaluator ev;
  int64_t t = kT0;
  auto uplink = [&](int64_t fcnt, Observation::Type type = Observation::Type::kReading,
                    const std::string& dev = "bin-1") {
    t += kMin;
    Observation o = type == Observation::Type::kReading ? Reading(dev, t, {{"fill_level_pct", 1}})
                                                        : Event(dev, t, "tilt", false);
    o.fcnt = fcnt;
    ev.Observe(o, t);
  };
  for (int f = 1000; f < 1040; ++f) {
    uplink(f);
    uplink(f, Observation::Type::kEvent);  // the event of the same uplink repeats the fcnt
  }
  for (int f = 0; f < 40; ++f) uplink(f);  // re-join: the counter starts again
  EXPECT_EQ(FindReason(*ev.Find("bin-1"), reason::kPacketLoss), nullptr);
  EXPECT_EQ(StateOf(ev, "bin-1"), HealthState::kOk);
  // ... whereas a real gap after the re-join is loss: 30 lost in the last 100 expected.
  uplink(70);
  ASSERT_NE(FindReason(*ev.Find("bin-1"), reason::kPacketLoss), nullptr);
  EXPECT_NE(
      FindReason(*ev.Find("bin-1"), reason::kPacketLoss)->detail.find("lost 30 of the last 100"),
      std::string::npos);

  // A 16-bit counter rolling over is not loss either.
  for (int64_t f = 65500; f < 65536 + 10; ++f)
    uplink(f % 65536, Observation::Type::kReading, "bin-2");
  EXPECT_EQ(StateOf(ev, "bin-2"), HealthState::kOk);
}

TEST(FleetHealthTest, PacketLossFromCumulativeLostFrames) {
  HealthEvaluator ev;
  int64_t t = kT0;
  auto uplink = [&](int64_t lost) {
    t += kMin;
    Observation o = Reading("bin-1", t, {{"fill_level_pct", 1}});
    o.frames_lost = lost;
    return ev.Observe(o, t);
  };
  for (int i = 0; i < 30; ++i) uplink(7);  // baseline 7, no new loss
  EXPECT_EQ(StateOf(ev, "bin-1"), HealthState::kOk);
  for (int i = 0; i < 30; ++i) uplink(0);  // gateway restarted: new baseline, no loss
  EXPECT_EQ(StateOf(ev, "bin-1"), HealthState::kOk);
  auto change = uplink(8);  // 8 lost of 69 expected: 11.6 %
  ASSERT_TRUE(change);
  EXPECT_EQ(change->verdict.state, HealthState::kDegraded);
}

TEST(FleetHealthTest, ModbusErrorRateFromCounterDeltasWithReset) {
  HealthEvaluator ev;
  ev.Observe(Reading("room-1", kT0, {{"nh3_ppm", 3}}, "garbage_room"), kT0);
  EXPECT_FALSE(ev.ObserveRequestCounters("room-1", 1000, 900, kT0));              // baseline only
  EXPECT_FALSE(ev.ObserveRequestCounters("room-1", 1100, 920, kT0 + 30 * kSec));  // exactly 20 %
  EXPECT_EQ(StateOf(ev, "room-1"), HealthState::kOk);

  auto change = ev.ObserveRequestCounters("room-1", 1200, 950, kT0 + 60 * kSec);  // 30 %
  ASSERT_TRUE(change);
  EXPECT_EQ(change->verdict.state, HealthState::kDegraded);
  EXPECT_EQ(FindReason(change->verdict, reason::kModbusErrors)->detail,
            "modbus errors 30% of 100 requests > 20%");

  change = ev.ObserveRequestCounters("room-1", 1300, 1040, kT0 + 90 * kSec);  // exactly 90 %
  ASSERT_TRUE(change);
  EXPECT_EQ(change->verdict.state, HealthState::kCritical);

  change = ev.ObserveRequestCounters("room-1", 1400, 1041, kT0 + 120 * kSec);  // 1 %
  ASSERT_TRUE(change);
  EXPECT_EQ(change->verdict.state, HealthState::kOk);

  // Gateway restart: counters drop. New baseline, nothing judged on this sample.
  EXPECT_FALSE(ev.ObserveRequestCounters("room-1", 50, 0, kT0 + 150 * kSec));
  EXPECT_EQ(StateOf(ev, "room-1"), HealthState::kOk);
  change = ev.ObserveRequestCounters("room-1", 150, 25, kT0 + 180 * kSec);  // 25 % since restart
  ASSERT_TRUE(change);
  EXPECT_EQ(change->verdict.state, HealthState::kDegraded);
  EXPECT_EQ(FindReason(change->verdict, reason::kModbusErrors)->detail,
            "modbus errors 25% of 100 requests > 20%");
  change = ev.ObserveRequestCounters("room-1", 250, 26, kT0 + 210 * kSec);  // 1 %
  ASSERT_TRUE(change);
  EXPECT_EQ(change->verdict.state, HealthState::kOk);
  // No requests in the delta: no verdict either way.
  EXPECT_FALSE(ev.ObserveRequestCounters("room-1", 250, 26, kT0 + 240 * kSec));
  EXPECT_EQ(StateOf(ev, "room-1"), HealthState::kOk);
}

TEST(FleetHealthTest, StuckValueNeedsBothCountAndSpanAndAChangeResets) {
  HealthEvaluator ev;
  // Count first: 20 identical values within 19 minutes are not stuck yet ...
  int64_t t = kT0;
  for (int i = 0; i < 20; ++i, t += kMin) {
    ev.Observe(Reading("bin-1", t, {{"fill_level_pct", 42}, {"humidity_pct", 60}}), t);
  }
  EXPECT_EQ(StateOf(ev, "bin-1"), HealthState::kOk);
  // ... until the run spans 6 h.
  std::optional<HealthChange> change;
  int64_t start = kT0;
  for (; t <= kT0 + 7 * kHour && !change; t += kMin) {
    change = ev.Observe(Reading("bin-1", t, {{"fill_level_pct", 42}, {"humidity_pct", 60}}), t);
  }
  ASSERT_TRUE(change);
  EXPECT_EQ(t - kMin, start + 6 * kHour);
  EXPECT_EQ(Reasons(change->verdict),
            std::vector<std::string>{"degraded stuck_value:fill_level_pct"});  // not humidity
  EXPECT_NE(change->verdict.reasons[0].detail.find("42"), std::string::npos);

  // A change clears it and starts a new run.
  change = ev.Observe(Reading("bin-1", t, {{"fill_level_pct", 43}}), t);
  ASSERT_TRUE(change);
  EXPECT_EQ(change->verdict.state, HealthState::kOk);

  // Span first: 19 identical values over 6 h 20 min are not stuck; the 20th is.
  t = kT0;
  for (int i = 0; i < 19; ++i, t += 20 * kMin) {
    ev.Observe(Reading("bin-2", t, {{"temperature_c", 21.5}}), t);
  }
  EXPECT_EQ(StateOf(ev, "bin-2"), HealthState::kOk);
  change = ev.Observe(Reading("bin-2", t, {{"temperature_c", 21.5}}), t);
  ASSERT_TRUE(change);
  EXPECT_EQ(Reasons(change->verdict),
            std::vector<std::string>{"degraded stuck_value:temperature_c"});
}

TEST(FleetHealthTest, OutOfRangeWhileTheLatestReadingOfTheMetricIsFlagged) {
  HealthEvaluator ev;
  ev.Observe(Reading("bin-1", kT0, {{"fill_level_pct", 40}}), kT0);
  Observation bad = Reading("bin-1", kT0 + kMin, {{"fill_level_pct", 130}, {"battery_pct", 0}});
  bad.quality = {{"fill_level_pct", "out_of_range"}, {"battery_pct", "out_of_range"}};
  auto change = ev.Observe(bad, kT0 + kMin);
  ASSERT_TRUE(change);
  EXPECT_EQ(Reasons(change->verdict),
            (std::vector<std::string>{"degraded out_of_range:battery_pct",
                                      "degraded out_of_range:fill_level_pct"}));  // no low_battery
  EXPECT_NE(change->verdict.reasons[1].detail.find("130"), std::string::npos);

  // A reading without the metric keeps the flag; a good value of one metric clears only it.
  EXPECT_FALSE(
      ev.Observe(Reading("bin-1", kT0 + 2 * kMin, {{"temperature_c", 20}}), kT0 + 2 * kMin));
  change = ev.Observe(Reading("bin-1", kT0 + 3 * kMin, {{"fill_level_pct", 50}}), kT0 + 3 * kMin);
  ASSERT_TRUE(change);
  EXPECT_FALSE(change->state_changed);
  EXPECT_EQ(Reasons(change->verdict),
            std::vector<std::string>{"degraded out_of_range:battery_pct"});
  // Another quality flag is not out of range.
  Observation other = Reading("bin-1", kT0 + 4 * kMin, {{"battery_pct", 80}});
  other.quality = {{"battery_pct", "estimated"}};
  change = ev.Observe(other, kT0 + 4 * kMin);
  ASSERT_TRUE(change);
  EXPECT_EQ(change->verdict.state, HealthState::kOk);
}

TEST(FleetHealthTest, OverflowDegradedThenUnattendedCriticalThenCleared) {
  HealthEvaluator ev;
  const int64_t t = kT0 + kHour;
  auto change = ev.Observe(Event("bin-1", t, "overflow", true), t);
  ASSERT_TRUE(change);
  EXPECT_EQ(Reasons(change->verdict), std::vector<std::string>{"degraded overflow"});
  EXPECT_EQ(ev.NextDeadline(), t + 2 * kHour);
  EXPECT_FALSE(ev.Observe(Event("bin-1", t + kMin, "overflow", true), t + kMin));  // repeat
  EXPECT_EQ(ev.NextDeadline(), t + 2 * kHour);  // still from the first activation

  EXPECT_TRUE(ev.Tick(t + 2 * kHour - 1).empty());
  auto changes = ev.Tick(t + 2 * kHour);
  ASSERT_EQ(changes.size(), 1u);
  EXPECT_EQ(changes[0].previous, HealthState::kDegraded);
  EXPECT_EQ(changes[0].verdict.state, HealthState::kCritical);
  EXPECT_EQ(Reasons(changes[0].verdict), std::vector<std::string>{"critical overflow_unattended"});

  change = ev.Observe(Event("bin-1", t + 3 * kHour, "overflow", false), t + 3 * kHour);
  ASSERT_TRUE(change);
  EXPECT_EQ(change->verdict.state, HealthState::kOk);
  EXPECT_TRUE(change->verdict.reasons.empty());

  // Cleared in time: no critical, and no timer left behind.
  const int64_t u = t + 4 * kHour;
  ev.Observe(Event("bin-2", u, "overflow", true), u);
  change = ev.Observe(Event("bin-2", u + kHour, "overflow", false), u + kHour);
  ASSERT_TRUE(change);
  EXPECT_EQ(change->verdict.state, HealthState::kOk);
  EXPECT_EQ(ev.NextDeadline(), kNoDeadline);
  EXPECT_TRUE(ev.Tick(u + 10 * kHour).empty());
}

TEST(FleetHealthTest, SosAndAlarmsBySeverity) {
  HealthEvaluator ev;
  ev.Observe(Reading("worker-3", kT0, {{"battery_pct", 90}}, "worker"), kT0);
  auto change = ev.Observe(Event("worker-3", kT0 + 1, "sos", true, "warning"), kT0 + 1);
  ASSERT_TRUE(change);
  EXPECT_EQ(change->verdict.state, HealthState::kCritical);
  EXPECT_EQ(Reasons(change->verdict), std::vector<std::string>{"critical sos"});
  change = ev.Observe(Event("worker-3", kT0 + 2, "sos", false), kT0 + 2);
  ASSERT_TRUE(change);
  EXPECT_EQ(change->verdict.state, HealthState::kOk);

  change = ev.Observe(Event("bin-1", kT0, "fire", true, "warning"), kT0);
  ASSERT_TRUE(change);
  EXPECT_EQ(Reasons(change->verdict), std::vector<std::string>{"critical alarm:fire"});
  EXPECT_EQ(change->verdict.reasons[0].detail, "fire");
  change = ev.Observe(Event("bin-1", kT0 + 1, "tilt", true, "warning"), kT0 + 1);
  ASSERT_TRUE(change);
  EXPECT_FALSE(change->state_changed);
  EXPECT_EQ(Reasons(change->verdict),
            (std::vector<std::string>{"critical alarm:fire", "degraded alarm:tilt"}));
  EXPECT_FALSE(ev.Observe(Event("bin-1", kT0 + 2, "door_open", true, "info"), kT0 + 2));
  change = ev.Observe(Event("bin-1", kT0 + 3, "fire", false, "warning"), kT0 + 3);
  ASSERT_TRUE(change);
  EXPECT_EQ(change->verdict.state, HealthState::kDegraded);
  change = ev.Observe(Event("bin-1", kT0 + 4, "odour", true, "critical"), kT0 + 4);
  ASSERT_TRUE(change);
  EXPECT_EQ(change->verdict.state, HealthState::kCritical);
  ev.Observe(Event("bin-1", kT0 + 5, "odour", false, "critical"), kT0 + 5);
  change = ev.Observe(Event("bin-1", kT0 + 6, "tilt", false, "warning"), kT0 + 6);
  ASSERT_TRUE(change);
  EXPECT_EQ(change->verdict.state, HealthState::kOk);
  // Events are traffic of the device.
  EXPECT_EQ(change->verdict.last_seen_ms, kT0 + 6);
}

// Issue 16 item 9: a reason says what it rests on, the value and the threshold, and keeps the
// value current while the condition lasts.
TEST(FleetHealthTest, AlarmReasonsCarryTheValueAndTheThreshold) {
  HealthEvaluator ev;
  ev.Observe(Reading("room-1", kT0, {{"nh3_ppm", 3}}, "garbage_room"), kT0);
  Observation odour = Event("room-1", kT0 + 1, "odour", true);
  odour.metrics = {{"nh3_ppm", 12.4}};
  odour.threshold = 10;
  auto change = ev.Observe(odour, kT0 + 1);
  ASSERT_TRUE(change);
  const HealthReason* r = FindReason(change->verdict, reason::kAlarm);
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->detail, "odour: nh3_ppm 12.4 >= 10");
  EXPECT_EQ(r->metric, "nh3_ppm");
  EXPECT_EQ(r->value, 12.4);
  EXPECT_EQ(r->threshold, 10);
  EXPECT_FALSE(r->stale);
  // A later reading of the metric updates the value; only the detail changed, so no change.
  EXPECT_FALSE(ev.Observe(Reading("room-1", kT0 + kMin, {{"nh3_ppm", 15.5}}, "garbage_room"), kT0 + kMin));
  EXPECT_EQ(FindReason(*ev.Find("room-1"), reason::kAlarm)->detail, "odour: nh3_ppm 15.5 >= 10");

  // A rule that fires at or below its level reads the other way round.
  Observation low = Event("bin-1", kT0, "low_fuel", true);
  low.metrics = {{"fuel_pct", 4}};
  low.threshold = 5;
  ASSERT_TRUE(ev.Observe(low, kT0));
  EXPECT_EQ(FindReason(*ev.Find("bin-1"), reason::kAlarm)->detail, "low_fuel: fuel_pct 4 <= 5");
  // Without a threshold in the event the value alone; without a metric the event's name.
  Observation tilt = Event("bin-2", kT0, "tilt", true);
  tilt.metrics = {{"tilt_deg", 47}};
  ASSERT_TRUE(ev.Observe(tilt, kT0));
  EXPECT_EQ(FindReason(*ev.Find("bin-2"), reason::kAlarm)->detail, "tilt: tilt_deg 47");
  ASSERT_TRUE(ev.Observe(Event("bin-3", kT0, "fire", true), kT0));
  EXPECT_EQ(FindReason(*ev.Find("bin-3"), reason::kAlarm)->detail, "fire");
  EXPECT_EQ(FindReason(*ev.Find("bin-3"), reason::kAlarm)->metric, "");
}

TEST(FleetHealthTest, OverflowReasonsCarryTheFillLevel) {
  HealthEvaluator ev;
  Observation full = Event("bin-1", kT0, "overflow", true);
  full.metrics = {{"fill_level_pct", 96}};
  full.threshold = 90;
  auto change = ev.Observe(full, kT0);
  ASSERT_TRUE(change);
  const HealthReason* r = FindReason(change->verdict, reason::kOverflow);
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->detail, "overflow active (fill_level_pct 96 >= 90), unattended after 2h");
  EXPECT_EQ(r->value, 96);
  ev.Observe(Reading("bin-1", kT0 + kMin, {{"fill_level_pct", 98}}), kT0 + kMin);
  auto changes = ev.Tick(kT0 + 2 * kHour);
  ASSERT_EQ(changes.size(), 1u);
  r = FindReason(changes[0].verdict, reason::kOverflowUnattended);
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->detail, "overflow active for more than 2h without being cleared (fill_level_pct 98 >= 90)");
}

// The silence a reason names is the silence when it was judged, not the threshold it crossed.
TEST(FleetHealthTest, SilentReasonSaysHowLongTheDeviceHasBeenSilent) {
  HealthEvaluator ev;
  const int64_t last = Feed(ev, "bin-1", kT0, 10 * kMin, 4);
  auto changes = ev.Tick(last + 20 * kMin);
  ASSERT_EQ(changes.size(), 1u);
  EXPECT_EQ(changes[0].verdict.reasons[0].detail, "no traffic for 20m (degraded after 2 x expected interval 10m)");
  // sanifleet could not listen for a while: the verdict comes later, and says the real silence.
  ev.PauseSilence(last + 25 * kMin, last + 40 * kMin);
  changes = ev.Tick(last + 50 * kMin);
  ASSERT_EQ(changes.size(), 1u);
  EXPECT_EQ(changes[0].verdict.state, HealthState::kOffline);
  EXPECT_EQ(changes[0].verdict.reasons[0].detail, "no traffic for 50m (offline after 3 x expected interval 10m)");
}

// An alarm a device raised before it went offline is last known, not current: marked stale
// (in the detail and the flag) while the device is offline, and fresh again when it is back.
TEST(FleetHealthTest, AlarmsOfAnOfflineDeviceAreStale) {
  HealthEvaluator ev;
  ev.Observe(Reading("worker-1", kT0, {{"battery_pct", 12}}, "worker"), kT0);
  ev.Observe(Event("worker-1", kT0 + 1, "sos", true), kT0 + 1);
  Observation fire = Event("worker-1", kT0 + 2, "fire", true, "critical");
  fire.metrics = {{"temperature_c", 71}};
  fire.threshold = 60;
  ev.Observe(fire, kT0 + 2);
  auto change = ev.Observe(Status("worker-1", kT0 + 3, false), kT0 + 3);
  ASSERT_TRUE(change);
  EXPECT_EQ(change->verdict.state, HealthState::kOffline);
  std::map<std::string, std::pair<std::string, bool>> by_code;
  for (const HealthReason& r : change->verdict.reasons) by_code[r.code] = {r.detail, r.stale};
  EXPECT_EQ(by_code["sos"], std::make_pair(std::string("sos (stale: device offline)"), true));
  EXPECT_EQ(by_code["alarm"], std::make_pair(std::string("fire: temperature_c 71 >= 60 (stale: device offline)"), true));
  EXPECT_EQ(by_code["low_battery"], std::make_pair(std::string("battery_pct 12 <= 20"), false));
  EXPECT_EQ(by_code["offline"].second, false);

  // Back online: the alarms are current again, and that is a change worth publishing.
  change = ev.Observe(Status("worker-1", kT0 + 4, true), kT0 + 4);
  ASSERT_TRUE(change);
  EXPECT_EQ(change->verdict.state, HealthState::kCritical);
  for (const HealthReason& r : change->verdict.reasons) {
    EXPECT_FALSE(r.stale) << r.code;
    EXPECT_EQ(r.detail.find("stale"), std::string::npos) << r.detail;
  }

  // Offline by silence too.
  const int64_t last = Feed(ev, "bin-9", kT0, 10 * kMin, 4);
  ev.Observe(Event("bin-9", last, "tilt", true), last);
  auto changes = ev.Tick(last + 30 * kMin);
  ASSERT_EQ(changes.size(), 1u);
  EXPECT_EQ(changes[0].verdict.state, HealthState::kOffline);
  EXPECT_EQ(FindReason(changes[0].verdict, reason::kAlarm)->detail, "tilt (stale: device offline)");
}

TEST(FleetHealthTest, ReasonsSortedAndReasonOnlyChangesReported) {
  HealthEvaluator ev;
  ev.Observe(Reading("bin-1", kT0, {{"battery_pct", 15}}), kT0);
  EXPECT_EQ(StateOf(ev, "bin-1"), HealthState::kDegraded);

  Observation flagged = Reading("bin-1", kT0 + 1, {{"fill_level_pct", 130}});
  flagged.quality = {{"fill_level_pct", "out_of_range"}};
  auto change = ev.Observe(flagged, kT0 + 1);
  ASSERT_TRUE(change);
  EXPECT_FALSE(change->state_changed);
  EXPECT_EQ(change->previous, HealthState::kDegraded);
  EXPECT_EQ(change->verdict.since_ms, kT0);  // the state did not change
  EXPECT_EQ(
      Reasons(change->verdict),
      (std::vector<std::string>{"degraded low_battery", "degraded out_of_range:fill_level_pct"}));

  change = ev.Observe(Event("bin-1", kT0 + 2, "sos", true), kT0 + 2);
  ASSERT_TRUE(change);
  EXPECT_TRUE(change->state_changed);
  change = ev.Observe(Status("bin-1", kT0 + 3, false), kT0 + 3);
  ASSERT_TRUE(change);
  EXPECT_EQ(Reasons(change->verdict),
            (std::vector<std::string>{"offline offline", "critical sos", "degraded low_battery",
                                      "degraded out_of_range:fill_level_pct"}));
  // New numbers alone are not reported, but Find shows them.
  EXPECT_FALSE(ev.Observe(Reading("bin-1", kT0 + 4, {{"battery_pct", 14}}), kT0 + 4));
  EXPECT_EQ(FindReason(*ev.Find("bin-1"), reason::kLowBattery)->detail, "battery_pct 14 <= 20");
}

TEST(FleetHealthTest, RestoreThenTickComputesStateFromSilence) {
  HealthEvaluator ev;
  const int64_t now = kT0 + 24 * kHour;
  ev.Restore("bin-a", "bin", "", now - 5 * kHour, kHour, now);    // 5 intervals: offline
  ev.Restore("bin-b", "bin", "", now - 30 * kMin, kHour, now);    // fine
  ev.Restore("bin-c", "bin", "", now - 150 * kMin, kHour, now);   // 2.5 intervals: degraded
  ev.Restore("bin-d", "bin", "", 0, 0, now);                      // never seen
  ev.Restore("bin-e", "bin", "", now - 30 * 24 * kHour, 0, now);  // no interval known
  EXPECT_EQ(ev.size(), 5u);
  EXPECT_EQ(StateOf(ev, "bin-a"), HealthState::kUnknown);
  EXPECT_EQ(ev.Find("bin-a")->expected_interval_ms, kHour);
  EXPECT_EQ(ev.Find("bin-a")->last_seen_ms, now - 5 * kHour);
  EXPECT_EQ(ev.NextDeadline(), now);

  auto changes = ev.Tick(now);
  std::map<std::string, HealthChange> by_device;
  for (auto& c : changes) by_device[c.verdict.device] = c;
  ASSERT_EQ(by_device.size(), 4u);
  EXPECT_EQ(by_device["bin-a"].verdict.state, HealthState::kOffline);
  EXPECT_EQ(Reasons(by_device["bin-a"].verdict), std::vector<std::string>{"offline silent"});
  EXPECT_EQ(by_device["bin-b"].verdict.state, HealthState::kOk);
  EXPECT_EQ(by_device["bin-c"].verdict.state, HealthState::kDegraded);
  EXPECT_EQ(by_device["bin-e"].verdict.state, HealthState::kOk);
  EXPECT_EQ(StateOf(ev, "bin-d"), HealthState::kUnknown);
  // Next timers: bin-c offline at last_seen + 3 h, bin-b degraded at last_seen + 2 h.
  EXPECT_EQ(ev.NextDeadline(), now + 30 * kMin);
  ASSERT_EQ(ev.Tick(now + 30 * kMin).size(), 1u);
  EXPECT_EQ(StateOf(ev, "bin-c"), HealthState::kOffline);
  EXPECT_EQ(ev.NextDeadline(), now + 90 * kMin);
  EXPECT_EQ(ev.stats().scheduled, 1u);

  // The seeded interval is replaced by what the device shows once it reports again.
  int64_t t = now + kMin;
  for (int i = 0; i < 5; ++i, t += 10 * kMin) {
    ev.Observe(Reading("bin-a", t, {{"fill_level_pct", 1.0 * i}}), t);
  }
  EXPECT_EQ(ev.Find("bin-a")->expected_interval_ms, 10 * kMin);
}

TEST(FleetHealthTest, ForgetDropsTheDeviceAndItsTimer) {
  HealthEvaluator ev;
  Feed(ev, "bin-1", kT0, kMin, 5);
  ev.Observe(Event("bin-2", kT0, "overflow", true), kT0);
  EXPECT_NE(ev.NextDeadline(), kNoDeadline);
  ev.Forget("bin-1");
  ev.Forget("bin-2");
  ev.Forget("never-seen");
  EXPECT_EQ(ev.Find("bin-1"), nullptr);
  EXPECT_EQ(ev.size(), 0u);
  EXPECT_EQ(ev.NextDeadline(), kNoDeadline);
  EXPECT_TRUE(ev.Tick(kT0 + 1000 * kHour).empty());
  EXPECT_TRUE(ev.All().empty());
}

TEST(FleetHealthTest, SetConfigRejudgesEveryDeviceAtTheNextTick) {
  HealthEvaluator ev;
  const int64_t last = Feed(ev, "bin-1", kT0, 10 * kMin, 4);
  ev.Observe(Reading("bin-1", last, {{"battery_pct", 15}}), last);
  ev.Observe(Reading("truck-1", last, {{"speed_kmh", 20}}, "vehicle"), last);
  ASSERT_EQ(StateOf(ev, "bin-1"), HealthState::kDegraded);

  HealthConfig config;
  config.defaults.low_battery_pct = 10;
  HealthThresholds bins = config.defaults;
  bins.expected_interval_ms = kMin;
  config.by_kind["bin"] = bins;
  ev.SetConfig(config);
  EXPECT_EQ(StateOf(ev, "bin-1"), HealthState::kDegraded);  // nothing happens before the Tick
  EXPECT_EQ(ev.NextDeadline(), 0);

  const uint64_t before = ev.stats().timer_evaluations;
  auto changes = ev.Tick(last + 5 * kMin);
  EXPECT_EQ(ev.stats().timer_evaluations - before, 2u);
  ASSERT_EQ(changes.size(), 1u);
  EXPECT_EQ(changes[0].verdict.device, "bin-1");
  EXPECT_EQ(changes[0].verdict.expected_interval_ms, kMin);
  // battery 15 is fine under the new limit; 5 min of silence is offline at a 1 min interval.
  EXPECT_EQ(Reasons(changes[0].verdict), std::vector<std::string>{"offline silent"});
  EXPECT_EQ(StateOf(ev, "truck-1"), HealthState::kOk);
}

TEST(FleetHealthTest, DeadlineHeapMatchesAReference) {
  struct Item {
    uint32_t heap_pos = detail::kNotQueued;
    int id = 0;
  };
  std::vector<Item> items(200);
  for (int i = 0; i < 200; ++i) items[i].id = i;
  detail::DeadlineHeap<Item> heap;
  std::map<int, int64_t> reference;  // id → deadline
  std::mt19937 rng(7);
  int64_t now = 0;
  for (int step = 0; step < 20000; ++step) {
    int op = static_cast<int>(rng() % 10);
    Item& it = items[rng() % items.size()];
    if (op < 6) {
      int64_t at = now + static_cast<int64_t>(rng() % 1000);
      heap.Schedule(&it, at);
      reference[it.id] = at;
    } else if (op < 8) {
      heap.Cancel(&it);
      reference.erase(it.id);
    } else {
      now += static_cast<int64_t>(rng() % 50);
      while (Item* due = heap.PopDue(now)) {
        auto ref = reference.find(due->id);
        ASSERT_NE(ref, reference.end());
        ASSERT_LE(ref->second, now);
        for (const auto& [id, at] : reference) ASSERT_GE(at, ref->second);  // the earliest
        reference.erase(ref);
        EXPECT_EQ(due->heap_pos, detail::kNotQueued);
      }
      for (const auto& [id, at] : reference) ASSERT_GT(at, now);
    }
    ASSERT_EQ(heap.size(), reference.size());
    int64_t min = kNoDeadline;
    for (const auto& [id, at] : reference) min = std::min(min, at);
    ASSERT_EQ(heap.NextDeadline(), min);
  }
}

TEST(FleetHealthTest, FiftyThousandDevicesTickTouchesOnlyDueDevices) {
  constexpr int kDevices = 50'000;
  HealthEvaluator ev;
  std::vector<int64_t> deadlines;  // every silence transition: degraded and offline per device
  deadlines.reserve(2 * kDevices);
  int first_changes = 0;
  for (int i = 0; i < kDevices; ++i) {
    const std::string id = "bin-" + std::to_string(i);
    const int64_t interval = (1 + i % 7) * kMin;
    const int64_t base = kT0 + (i % 13) * kSec;
    for (int k = 0; k < 4; ++k) {
      const int64_t t = base + k * interval;
      if (ev.Observe(Reading(id, t, {{"fill_level_pct", 1.0 * k}}), t)) ++first_changes;
    }
    const int64_t last = base + 3 * interval;
    deadlines.push_back(last + 2 * interval);
    deadlines.push_back(last + 3 * interval);
  }
  EXPECT_EQ(first_changes, kDevices);  // unknown → ok, once each
  EXPECT_EQ(ev.size(), static_cast<size_t>(kDevices));
  EXPECT_EQ(ev.stats().scheduled, static_cast<size_t>(kDevices));
  std::sort(deadlines.begin(), deadlines.end());
  EXPECT_EQ(ev.NextDeadline(), deadlines.front());

  int degraded = 0, offline = 0, idle_ticks = 0;
  int64_t prev = kT0;
  for (int64_t now = kT0; now <= kT0 + 50 * kMin; now += 10 * kSec) {
    const auto lo = std::upper_bound(deadlines.begin(), deadlines.end(), prev);
    const auto hi = std::upper_bound(deadlines.begin(), deadlines.end(), now);
    const size_t expected = static_cast<size_t>(hi - lo);
    const uint64_t before = ev.stats().timer_evaluations;
    auto changes = ev.Tick(now);
    ASSERT_EQ(changes.size(), expected) << "at +" << (now - kT0) / kSec << " s";
    ASSERT_EQ(ev.stats().timer_evaluations - before, expected);  // only due devices touched
    if (expected == 0) ++idle_ticks;
    for (const HealthChange& c : changes) {
      ASSERT_TRUE(c.state_changed);
      if (c.verdict.state == HealthState::kDegraded) ++degraded;
      if (c.verdict.state == HealthState::kOffline) ++offline;
    }
    prev = now;
  }
  EXPECT_EQ(degraded, kDevices);
  EXPECT_EQ(offline, kDevices);
  EXPECT_GT(idle_ticks, 0);
  EXPECT_EQ(ev.stats().scheduled, 0u);
  EXPECT_EQ(ev.NextDeadline(), kNoDeadline);
  size_t offline_now = 0;
  for (const HealthVerdict* v : ev.All()) offline_now += v->state == HealthState::kOffline;
  EXPECT_EQ(offline_now, static_cast<size_t>(kDevices));
}

}  // namespace
}  // namespace sanigate::fleet
