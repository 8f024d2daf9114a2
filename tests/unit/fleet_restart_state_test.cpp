// What sanifleet carries across a restart (issue 16 items 4 and 8), below the daemon: the health
// evaluator's per-device memory (verdict, active conditions, trackers) through its JSON text and
// back into a fresh evaluator, the registry database that stores it (including one written by
// the previous schema), and the [heatmap] snapshot interval of the config.
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <cmath>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "app/fleet_config.h"
#include "health/health.h"
#include "health/memory_json.h"
#include "health/trackers.h"
#include "registry/registry.h"
#include "test_support.h"

namespace sanigate::fleet {
namespace {

constexpr int64_t kSec = 1000;
constexpr int64_t kMin = 60 * kSec;
constexpr int64_t kT0 = 1'763'712'000'000;

Observation Reading(const std::string& device, int64_t ts, std::vector<std::pair<std::string, double>> metrics,
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

std::vector<std::string> Codes(const HealthVerdict& v) {
  std::vector<std::string> out;
  for (const auto& r : v.reasons)
    out.push_back(std::string(HealthStateName(r.level)) + " " + r.code + (r.subject.empty() ? "" : ":" + r.subject));
  return out;
}

// Saves every device of `before` through the JSON text and restores it into a fresh evaluator,
// as sanifleet does across a restart at `now`.
HealthEvaluator Restart(const HealthEvaluator& before, const HealthConfig& config, int64_t now) {
  HealthEvaluator after(config);
  for (const HealthVerdict* v : before.All()) {
    auto memory = before.Memory(v->device);
    EXPECT_TRUE(memory.has_value());
    auto decoded = DecodeHealthMemory(EncodeHealthMemory(*memory));
    EXPECT_TRUE(decoded.has_value()) << EncodeHealthMemory(*memory);
    after.Restore(v->device, v->kind, "", v->last_seen_ms, v->expected_interval_ms, now, *decoded);
  }
  return after;
}

TEST(FleetRestartStateTest, TrackersSaveAndLoadTheirWindows) {
  detail::MeanWindow w;
  for (double x : {-100.0, -110.0, -121.5}) w.Add(x);
  EXPECT_EQ(w.Samples(), (std::vector<double>{-100.0, -110.0, -121.5}));
  for (double x : {-122.0, -123.0, -124.0, -125.0}) w.Add(x);  // wraps: the oldest two are gone
  EXPECT_EQ(w.Samples(), (std::vector<double>{-121.5, -122.0, -123.0, -124.0, -125.0}));
  detail::MeanWindow copy;
  for (double x : w.Samples()) copy.Add(x);
  EXPECT_TRUE(copy.full());
  EXPECT_DOUBLE_EQ(copy.Mean(), w.Mean());

  detail::LossWindow loss;
  loss.AddFcnt(1);
  loss.AddFcnt(5);    // 3 lost
  loss.AddFcnt(130);  // 100 expected frames at most: the ring wraps
  detail::LossWindow back;
  back.Load(loss.Save());
  EXPECT_EQ(back.expected(), loss.expected());
  EXPECT_EQ(back.lost(), loss.lost());
  back.AddFcnt(133);  // the baseline came along: 2 more lost
  loss.AddFcnt(133);
  EXPECT_EQ(back.lost(), loss.lost());
  EXPECT_EQ(back.expected(), loss.expected());
  // A saved state out of range is refused whole.
  detail::LossWindow bad;
  bad.Load({~0ull, ~0ull, 300, 5, 1, -1});
  EXPECT_EQ(bad.expected(), 0);
  EXPECT_EQ(bad.lost(), 0);
}

TEST(FleetRestartStateTest, ActiveConditionsSurviveARestartAndClearAfterIt) {
  HealthConfig config;
  config.defaults.missed_reports_degraded = 0;  // silence across restarts is the integration tests' part
  config.defaults.missed_reports_offline = 0;
  HealthEvaluator ev(config);
  int64_t t = kT0;
  ev.Observe(Event("bin-over", t, "overflow", true), t);
  ev.Observe(Event("crew-sos", t, "sos", true, "critical"), t);
  ev.Observe(Event("room-fire", t, "fire", true, "critical"), t);
  ev.Observe(Reading("bin-batt", t, {{"battery_pct", 12}}), t);
  ev.Observe(Reading("bin-ok", t, {{"fill_level_pct", 10}}), t);
  Observation oor = Reading("room-nh3", t, {{"nh3_ppm", 900}});
  oor.quality = {{"nh3_ppm", "out_of_range"}};
  ev.Observe(oor, t);
  std::map<std::string, HealthVerdict> before;
  for (const HealthVerdict* v : ev.All()) before[v->device] = *v;
  ASSERT_EQ(before["bin-over"].state, HealthState::kDegraded);
  ASSERT_EQ(before["crew-sos"].state, HealthState::kCritical);

  int64_t now = t + 2 * kMin;
  HealthEvaluator after = Restart(ev, config, now);
  // At once, before any tick: the same verdicts, not `unknown`.
  for (const auto& [id, v] : before) {
    const HealthVerdict* r = after.Find(id);
    ASSERT_NE(r, nullptr) << id;
    EXPECT_EQ(r->state, v.state) << id;
    EXPECT_EQ(r->since_ms, v.since_ms) << id;
    EXPECT_EQ(Codes(*r), Codes(v)) << id;
  }
  // The first tick re-judges them and finds nothing to report.
  after.PauseSilence(t, now);
  EXPECT_TRUE(after.Tick(now).empty());
  EXPECT_EQ(Codes(*after.Find("bin-over")), std::vector<std::string>{"degraded overflow"});
  EXPECT_EQ(Codes(*after.Find("crew-sos")), std::vector<std::string>{"critical sos"});
  EXPECT_EQ(Codes(*after.Find("room-fire")), std::vector<std::string>{"critical alarm:fire"});
  EXPECT_EQ(Codes(*after.Find("bin-batt")), std::vector<std::string>{"degraded low_battery"});
  EXPECT_EQ(Codes(*after.Find("room-nh3")), std::vector<std::string>{"degraded out_of_range:nh3_ppm"});
  EXPECT_EQ(after.Find("bin-ok")->state, HealthState::kOk);

  // The overflow keeps its start: unattended two hours after it began, not after the restart.
  auto changes = after.Tick(t + 2 * 3600 * kSec);
  bool unattended = false;
  for (const auto& c : changes)
    if (c.verdict.device == "bin-over") unattended = Codes(c.verdict) == std::vector<std::string>{"critical overflow_unattended"};
  EXPECT_TRUE(unattended);

  // Each clears when its condition does.
  int64_t later = t + 2 * 3600 * kSec + kSec;
  auto cleared = after.Observe(Event("bin-over", later, "overflow", false), later);
  ASSERT_TRUE(cleared);
  EXPECT_EQ(cleared->verdict.state, HealthState::kOk);
  EXPECT_EQ(cleared->previous, HealthState::kCritical);
  EXPECT_EQ(after.Observe(Event("crew-sos", later, "sos", false), later)->verdict.state, HealthState::kOk);
  EXPECT_EQ(after.Observe(Event("room-fire", later, "fire", false), later)->verdict.state, HealthState::kOk);
  EXPECT_EQ(after.Observe(Reading("bin-batt", later, {{"battery_pct", 80}}), later)->verdict.state, HealthState::kOk);
  EXPECT_EQ(after.Observe(Reading("room-nh3", later, {{"nh3_ppm", 3}}), later)->verdict.state, HealthState::kOk);
}

TEST(FleetRestartStateTest, ThresholdTrackersCarryOver) {
  HealthConfig config;
  config.defaults.missed_reports_degraded = 0;
  config.defaults.missed_reports_offline = 0;
  HealthEvaluator ev(config);
  int64_t t = kT0;
  // Weak radio over a full window, 30 of 50 frames lost, a value stuck for 7 h, Modbus errors.
  for (int i = 0; i < 5; ++i) {
    Observation o = Reading("bin-radio", t + i * kMin, {});
    o.rssi_dbm = -125;
    o.fcnt = i == 4 ? 49 : i;  // 0..3 then 49: 45 lost of 50
    ev.Observe(o, t + i * kMin);
  }
  for (int i = 0; i < 25; ++i) ev.Observe(Reading("room-stuck", t + i * 20 * kMin, {{"temperature_c", 21}}, "garbage_room"), t + i * 20 * kMin);
  ev.Observe(Reading("room-mb", t, {{"temperature_c", 20}}, "garbage_room"), t);
  ev.ObserveRequestCounters("room-mb", 100, 0, t);
  ev.ObserveRequestCounters("room-mb", 200, 50, t + kMin);
  auto codes_of = [](const HealthEvaluator& e, const std::string& id) { return Codes(*e.Find(id)); };
  auto radio = codes_of(ev, "bin-radio"), stuck = codes_of(ev, "room-stuck"), mb = codes_of(ev, "room-mb");
  ASSERT_EQ(radio, (std::vector<std::string>{"degraded packet_loss", "degraded weak_radio"}));
  ASSERT_EQ(stuck, std::vector<std::string>{"degraded stuck_value:temperature_c"});
  ASSERT_EQ(mb, std::vector<std::string>{"degraded modbus_errors"});

  int64_t now = t + 9 * 3600 * kSec;
  HealthEvaluator after = Restart(ev, config, now);
  after.PauseSilence(now - kMin, now);
  after.Tick(now);
  EXPECT_EQ(codes_of(after, "bin-radio"), radio);
  EXPECT_EQ(codes_of(after, "room-stuck"), stuck);
  EXPECT_EQ(codes_of(after, "room-mb"), mb);
  // The windows go on from where they were: five good readings clear weak_radio, a new value
  // ends the stuck run, the same counters again judge nothing new, better ones clear the errors.
  for (int i = 0; i < 5; ++i) {
    Observation o = Reading("bin-radio", now + i * kSec * 2, {});
    o.rssi_dbm = -80;
    o.fcnt = 50 + i;
    after.Observe(o, now + i * kSec * 2);
  }
  EXPECT_EQ(codes_of(after, "bin-radio"), std::vector<std::string>{"degraded packet_loss"});
  after.Observe(Reading("room-stuck", now, {{"temperature_c", 22}}, "garbage_room"), now);
  EXPECT_TRUE(codes_of(after, "room-stuck").empty());
  after.ObserveRequestCounters("room-mb", 200, 50, now);
  EXPECT_EQ(codes_of(after, "room-mb"), mb);
  after.ObserveRequestCounters("room-mb", 300, 50, now + kMin);
  EXPECT_TRUE(codes_of(after, "room-mb").empty());
}

// Issue 16 item 9: what a reason rests on (metric, value, threshold) and its staleness come
// back after a restart as they were, and nothing is reported for them; the published reasons
// carry them as fields next to code, level and detail.
TEST(FleetRestartStateTest, ReasonValuesAndStalenessSurviveARestart) {
  HealthConfig config;
  config.defaults.missed_reports_degraded = 0;
  config.defaults.missed_reports_offline = 0;
  HealthEvaluator ev(config);
  int64_t t = kT0;
  Observation odour = Event("room-1", t, "odour", true);
  odour.metrics = {{"nh3_ppm", 12.4}};
  odour.threshold = 10;
  ev.Observe(odour, t);
  Observation full = Event("bin-1", t, "overflow", true);
  full.metrics = {{"fill_level_pct", 96}};
  full.threshold = 90;
  ev.Observe(full, t);
  Observation gone;
  gone.type = Observation::Type::kStatus;
  gone.device = "bin-1";
  gone.ts_ms = t + 1;
  gone.online = false;
  ev.Observe(gone, t + 1);
  std::map<std::string, HealthVerdict> before;
  for (const HealthVerdict* v : ev.All()) before[v->device] = *v;
  ASSERT_EQ(before["bin-1"].state, HealthState::kOffline);

  int64_t now = t + 2 * kMin;
  HealthEvaluator after = Restart(ev, config, now);
  after.PauseSilence(t, now);
  EXPECT_TRUE(after.Tick(now).empty());
  for (const auto& [id, v] : before) {
    const HealthVerdict* r = after.Find(id);
    ASSERT_NE(r, nullptr) << id;
    ASSERT_EQ(r->reasons.size(), v.reasons.size()) << id;
    for (size_t i = 0; i < v.reasons.size(); ++i) {
      EXPECT_EQ(r->reasons[i].detail, v.reasons[i].detail) << id;
      EXPECT_EQ(r->reasons[i].metric, v.reasons[i].metric) << id;
      EXPECT_EQ(r->reasons[i].value, v.reasons[i].value) << id;
      EXPECT_EQ(r->reasons[i].threshold, v.reasons[i].threshold) << id;
      EXPECT_EQ(r->reasons[i].stale, v.reasons[i].stale) << id;
    }
  }
  // The overflow's fill level is still known to the restored device.
  auto changes = after.Tick(t + 2 * 3600 * kSec);
  ASSERT_EQ(changes.size(), 1u);
  EXPECT_EQ(changes[0].verdict.reasons[1].detail,
            "overflow active for more than 2h without being cleared (fill_level_pct 96 >= 90) (stale: device offline)");

  auto reasons = ReasonsToJson(after.Find("room-1")->reasons);
  EXPECT_EQ(reasons, nlohmann::json::parse(R"([{"code":"alarm","level":"degraded","detail":"odour: nh3_ppm 12.4 >= 10",
                                                 "metric":"nh3_ppm","value":12.4,"threshold":10}])"));
  reasons = ReasonsToJson(after.Find("bin-1")->reasons);
  ASSERT_EQ(reasons.size(), 2u) << reasons.dump();
  EXPECT_EQ(reasons[0], nlohmann::json::parse(R"({"code":"offline","level":"offline","detail":"gateway reports the device offline"})"));
  EXPECT_EQ(reasons[1]["stale"], true) << reasons.dump();
}

TEST(FleetRestartStateTest, MalformedOrForeignMemoryIsNotUsed) {
  for (const char* text : {"", "{", "[]", "{\"v\":2,\"state\":\"ok\",\"since\":1,\"reasons\":[]}",
                           "{\"v\":\"1\"}", "{\"v\":1,\"state\":\"sleepy\",\"since\":1,\"reasons\":[]}",
                           "{\"v\":1,\"state\":\"ok\",\"since\":\"x\",\"reasons\":[]}",
                           "{\"v\":1,\"state\":\"degraded\",\"since\":1,\"reasons\":[{\"code\":\"sos\",\"level\":\"ok\",\"detail\":\"\",\"subject\":\"\"}]}",
                           "{\"v\":1,\"state\":\"ok\",\"since\":1,\"reasons\":[],\"loss\":[1,2]}"})
    EXPECT_FALSE(DecodeHealthMemory(text).has_value()) << text;
  EXPECT_TRUE(DecodeHealthMemory("{\"v\":1,\"state\":\"ok\",\"since\":1,\"reasons\":[]}").has_value());
  // A device restored without memory is `unknown` until judged, as before.
  HealthEvaluator ev;
  ev.Restore("bin-1", "bin", "", kT0, 0, kT0 + kSec);
  EXPECT_EQ(ev.Find("bin-1")->state, HealthState::kUnknown);
}

TEST(FleetRestartStateTest, RegistryStoresTheHealthMemoryAndUpgradesAnOlderDatabase) {
  unit::ScratchDir dir;
  std::string path = (dir.path() / "registry.db").string();
  {
    // A registry.db of the previous schema (user_version 1, no health column).
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
    const char* sql =
        "CREATE TABLE devices (site TEXT NOT NULL, device TEXT NOT NULL, kind TEXT, protocol TEXT, gateway TEXT,"
        " profile TEXT, firmware TEXT, model TEXT, first_seen INTEGER, last_seen INTEGER, online INTEGER,"
        " metrics TEXT, metrics_ts INTEGER, lat REAL, lon REAL, interval_ms INTEGER, PRIMARY KEY (site, device)) WITHOUT ROWID;"
        "CREATE TABLE gateways (site TEXT NOT NULL, gateway TEXT NOT NULL, version TEXT, online INTEGER,"
        " first_seen INTEGER, last_status INTEGER, started INTEGER, status TEXT, PRIMARY KEY (site, gateway)) WITHOUT ROWID;"
        "INSERT INTO devices VALUES ('houpu','bin-old','bin','lorawan','gw','','','',1,2,1,'{}',2,NULL,NULL,0);"
        "PRAGMA user_version=1;";
    ASSERT_EQ(sqlite3_exec(db, sql, nullptr, nullptr, nullptr), SQLITE_OK);
    sqlite3_close(db);
  }
  {
    auto store = RegistryStore::Open(path);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    Registry reg;
    ASSERT_TRUE((*store)->Load(reg).ok());
    ASSERT_NE(reg.FindDevice("houpu/bin-old"), nullptr);
    EXPECT_TRUE(reg.FindDevice("houpu/bin-old")->health.empty());
    reg.Device("houpu", "bin-new", kT0);
    reg.MarkDirty("houpu/bin-new");
    reg.MarkDirty("houpu/bin-old");
    ASSERT_TRUE((*store)
                    ->Flush(reg, [](const std::string& key) { return key == "houpu/bin-new" ? std::string("{\"v\":1}") : ""; })
                    .ok());
  }
  auto store = RegistryStore::Open(path);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  Registry reg;
  ASSERT_TRUE((*store)->Load(reg).ok());
  ASSERT_NE(reg.FindDevice("houpu/bin-new"), nullptr);
  EXPECT_EQ(reg.FindDevice("houpu/bin-new")->health, "{\"v\":1}");
  EXPECT_TRUE(reg.FindDevice("houpu/bin-old")->health.empty());
}

TEST(FleetRestartStateTest, HeatmapSnapshotInterval) {
  const std::string base = "[fleet]\nid = \"f\"\nsite = \"s\"\n[heatmap]\n";
  auto cfg = LoadFleetConfigString(base, "t.toml");
  ASSERT_TRUE(cfg.ok()) << cfg.status().ToString();
  EXPECT_EQ(cfg->heatmap.snapshot_interval_s, 60);
  cfg = LoadFleetConfigString(base + "snapshot_interval_s = 0\n", "t.toml");
  ASSERT_TRUE(cfg.ok()) << cfg.status().ToString();
  EXPECT_EQ(cfg->heatmap.snapshot_interval_s, 0);
  auto bad = LoadFleetConfigString(base + "snapshot_interval_s = -5\n", "t.toml");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("heatmap.snapshot_interval_s"), std::string::npos) << bad.status().message();
}

}  // namespace
}  // namespace sanigate::fleet
