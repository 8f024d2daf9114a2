// The heat-map feed end to end: a real Mosquitto, the real sanigate with a JT/T 808 truck (our
// terminal over TCP, live reports and a back-fill batch from hours ago) and a simulated Modbus
// garbage room, and the real sanifleet publishing retained heatmap/{layer} feeds. Recorded model
// messages (mosquitto_pub, a real peer) script the unattended-overflow scenario. The admin verb
// `heatmap` is driven with mosquitto_rr.
#include <filesystem>
#include <thread>

#include "fleet_fixture.h"
#include "heatmap/geohash.h"
#include "jt808_terminal.h"

namespace sanigate::test {
namespace {

using namespace dev::jt808;

int64_t WallMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string Geohash(double lat, double lon, int precision) {
  return heatmap::ToString(heatmap::Encode(lat, lon, precision), precision);
}

class HeatmapTest : public FleetFixture {
 protected:
  uint16_t jt_port = 0;

  void StartFleetWithHeatmap(const std::string& heatmap_extra = "") {
    WriteFleetConfigText(FleetBaseConfig() + "[heatmap]\nfeed_interval_ms = 200\n" + heatmap_extra);
    StartFleet();
  }

  // The latest retained feed of a layer (null when none yet).
  static json Feed(const std::vector<Captured>& m, const std::string& layer) {
    json last;
    for (const auto& c : m)
      if (c.topic == "sanigate/v1/houpu/heatmap/" + layer) last = json::parse(c.payload, nullptr, false);
    return last;
  }
  // Waits until the layer's feed satisfies `ok`; returns that feed (null on timeout).
  json WaitFeed(const std::string& layer, const std::function<bool(const json&)>& ok, std::chrono::milliseconds t = 10s) {
    json found;
    capture->WaitFor([&](const std::vector<Captured>& m) {
      json f = Feed(m, layer);
      if (f.is_object() && ok(f)) found = f;
      return !found.is_null();
    }, t);
    return found;
  }
  // Values of a cell by field name.
  static json Field(const json& doc, const json& cell, const std::string& name) {
    const auto& fields = doc["fields"];
    for (size_t i = 0; i < fields.size(); ++i)
      if (fields[i] == name) return cell[i];
    return nullptr;
  }

  void Publish(const std::string& device, const std::string& leaf, const json& payload) {
    int rc = Process::Run({"mosquitto_pub", "-h", "127.0.0.1", "-p", std::to_string(broker->port()), "-q", "1", "-t",
                           "sanigate/v1/houpu/devices/" + device + "/" + leaf, "-m", payload.dump()},
                          10s, {.stderr_path = path("pub.err")});
    ASSERT_TRUE(ExitedWith(rc, 0)) << ReadFile(path("pub.err"));
  }
};

TEST_F(HeatmapTest, TrucksAndRoomsThroughTheGatewayBuildTheFeed) {
  StartBroker();
  Capture();
  StartSim(1);
  jt_port = FreeTcpPort();
  WriteConfig(BaseConfig() + "[modbus]\n" + RoomConfig("room-1", 0, 200) + "[jt808]\nlisten = \"127.0.0.1:" +
              std::to_string(jt_port) + "\"\n\n[[jt808.terminals]]\nphone = \"13912345678\"\ndevice = \"truck-01\"\n");
  StartGateway();
  ASSERT_TRUE(WaitForTcpPort(jt_port, 10s)) << GatewayLog();
  WaitGatewayOnline();
  StartFleetWithHeatmap();

  Jt808Terminal t("13912345678");
  ASSERT_TRUE(t.Connect(jt_port).ok());
  auto code = t.Register();
  ASSERT_TRUE(code.ok()) << code.status().ToString();
  ASSERT_TRUE(t.Authenticate(*code).ok());
  // Live: three reports a few seconds old, moving east ~10 m each, all inside one 15-minute
  // window that stays current while the test looks (else wait for the next one).
  int64_t into = (WallMs() % 900'000);
  if (into < 10'000 || into > 860'000) std::this_thread::sleep_for(std::chrono::milliseconds((900'000 - into + 10'000) % 900'000));
  int64_t now = WallMs();
  for (int i = 0; i < 3; ++i) ASSERT_EQ(t.Report(SampleLocation(now - 6000 + i * 2000, i)).value_or(99), 0);
  // Back-fill: 20 points from three hours ago, out of coverage then.
  int64_t past = now - 3 * 3600'000;
  std::vector<Location> pts;
  for (int i = 0; i < 20; ++i) pts.push_back(SampleLocation(past + i * 10'000, i));
  uint16_t last = t.Send(msg::kBatchLocation, BuildBatchLocation(pts, true));
  ASSERT_EQ(t.WaitAck(last, 10s).value_or(99), 0);

  // The truck is in the state of its live cell; the 15-minute window holds the live points only;
  // the day window (from local midnight, UTC+8) also the back-filled ones of the same day.
  Location live = SampleLocation(now, 2);
  std::string cell = Geohash(live.lat, live.lon, 7);
  auto day = [](int64_t ts) { return (ts + 8 * 3600'000) / 86400'000; };
  int64_t in_day = 0;
  for (const auto& p : pts) in_day += day(p.ts_ms) == day(now) && Geohash(p.lat, p.lon, 7) == cell;
  json coverage = WaitFeed("vehicle_coverage", [&](const json& f) {
    auto& w15 = f["windows"][0]["cells"];
    auto& w24 = f["windows"][2]["cells"];
    return f["state"]["cells"].contains(cell) && w15.contains(cell) && w15[cell][0] == 3 && w24.contains(cell) &&
           w24[cell][0] == 3 + in_day;
  });
  ASSERT_TRUE(coverage.is_object()) << Feed(capture->Messages(), "vehicle_coverage").dump() << FleetLog();
  EXPECT_EQ(coverage["grid"], "geohash");
  EXPECT_EQ(coverage["precision"], 7);
  EXPECT_EQ(coverage["crs"], "wgs84");
  json w15 = coverage["windows"][0];
  EXPECT_EQ(w15["size_s"], 900);
  EXPECT_EQ(Field(coverage, w15["cells"][cell], "n"), 3);
  EXPECT_DOUBLE_EQ(Field(coverage, w15["cells"][cell], "max").get<double>(), 18.5);
  EXPECT_EQ(Field(coverage, w15["cells"][cell], "passes"), 1);
  EXPECT_EQ(Field(coverage, w15["cells"][cell], "dwell_s"), 4);
  // The admin verb finds the back-fill in the 15-minute window of its own timestamp.
  json backfilled = Admin("heatmap", {{"layer", "vehicle_coverage"}, {"window", 900}, {"at", pts[0].ts_ms}});
  ASSERT_EQ(backfilled["ok"], true) << backfilled.dump();
  json r = backfilled["result"];
  EXPECT_LE(r["window"]["start"].get<int64_t>(), pts[0].ts_ms);
  EXPECT_GT(r["window"]["end"].get<int64_t>(), pts[0].ts_ms);
  int64_t n = 0;
  for (auto& [k, v] : r["cells"].items()) n += Field(r, v, "n").get<int64_t>();
  // The 20 points span 190 s: all in this window or split with the next one.
  json next = Admin("heatmap", {{"layer", "vehicle_coverage"}, {"window", 900}, {"at", pts[19].ts_ms}});
  if (next["result"]["window"]["start"] != r["window"]["start"])
    for (auto& [k, v] : next["result"]["cells"].items()) n += Field(r, v, "n").get<int64_t>();
  EXPECT_EQ(n, 20);
  // One track per vehicle (issue 16 item 2): the batch older than the live points was merged
  // into it, and the status says so.
  json hs = Admin("status")["result"]["heatmap"];
  EXPECT_EQ(hs["late_merged"], 20) << hs.dump();
  EXPECT_EQ(hs["duplicates"], 0) << hs.dump();

  // The room's fill level, at the room's configured place.
  std::string room_cell = Geohash(24.5123, 118.1342, 7);
  json fill = WaitFeed("bin_fill", [&](const json& f) { return f["state"]["cells"].contains(room_cell); });
  ASSERT_TRUE(fill.is_object()) << FleetLog();
  EXPECT_EQ(Field(fill, fill["state"]["cells"][room_cell], "n"), 1);
  // Precision 8 on request.
  json fine = Admin("heatmap", {{"layer", "bin_fill"}, {"precision", 8}});
  ASSERT_EQ(fine["ok"], true) << fine.dump();
  EXPECT_TRUE(fine["result"]["cells"].contains(Geohash(24.5123, 118.1342, 8))) << fine.dump();
  ExpectPayloadsMatchSchemas();
}

TEST_F(HeatmapTest, OverflowIsUnattendedUntilATruckPassesAndAlarmsShow) {
  StartBroker();
  Capture();
  StartFleetWithHeatmap("unattended_after_s = 3600\n");
  int64_t now = WallMs();
  // A bin that has overflowed for two hours; no truck has been near.
  json overflow = {{"id", "gw:1"}, {"ts", now - 2 * 3600'000}, {"device", "bin-0412"}, {"kind", "bin"},
                   {"source", {{"protocol", "lorawan"}, {"gateway", "gw-test"}}}, {"event", "overflow"},
                   {"state", "active"}, {"severity", "warning"}, {"metrics", {{"fill_level_pct", 96}}},
                   {"location", {{"lat", 24.4800}, {"lon", 118.1000}}}};
  Publish("bin-0412", "event", overflow);
  std::string cell = Geohash(24.48, 118.10, 7);
  json un = WaitFeed("unattended", [&](const json& f) { return f["state"]["cells"].contains(cell); });
  ASSERT_TRUE(un.is_object()) << FleetLog();
  json c = un["state"]["cells"][cell];
  EXPECT_EQ(Field(un, c, "n"), 1);
  EXPECT_GE(Field(un, c, "min").get<double>(), 7200.0);
  EXPECT_EQ(Field(un, c, "first"), now - 2 * 3600'000);
  EXPECT_TRUE(un["windows"].empty());
  json ov = WaitFeed("overflow", [&](const json& f) { return f["state"]["cells"].contains(cell); });
  ASSERT_TRUE(ov.is_object());

  // A truck far away changes nothing; one passing ~100 m east does.
  json far = {{"id", "gw:2"}, {"ts", now}, {"device", "truck-9"}, {"kind", "vehicle"},
              {"source", {{"protocol", "jt808"}, {"gateway", "gw-test"}}}, {"metrics", {{"speed_kmh", 20}}}, {"location", {{"lat", 24.52}, {"lon", 118.20}}}};
  Publish("truck-9", "telemetry", far);
  ASSERT_TRUE(WaitFeed("vehicle_coverage", [&](const json& f) { return f["state"]["cells"].size() == 1; }).is_object());
  EXPECT_TRUE(Feed(capture->Messages(), "unattended")["state"]["cells"].contains(cell));
  json near = far;
  near["id"] = "gw:3";
  near["ts"] = now + 1000;  // a later point of the same truck (one at the same time is a duplicate)
  near["location"] = {{"lat", 24.4800}, {"lon", 118.1010}};
  Publish("truck-9", "telemetry", near);
  ASSERT_TRUE(WaitFeed("unattended", [&](const json& f) { return f["state"]["cells"].empty(); }).is_object()) << FleetLog();

  // An SOS from a crew member, with no location of its own: placed where the worker last was.
  json pos = {{"id", "gw:4"}, {"ts", now}, {"device", "crew-3"}, {"kind", "worker"},
              {"source", {{"protocol", "nmea"}, {"gateway", "gw-test"}}}, {"metrics", {{"gnss_fix", true}}}, {"location", {{"lat", 24.49}, {"lon", 118.11}}}};
  Publish("crew-3", "telemetry", pos);
  json sos = {{"id", "gw:5"}, {"ts", now + 1}, {"device", "crew-3"}, {"kind", "worker"},
              {"source", {{"protocol", "nmea"}, {"gateway", "gw-test"}}}, {"event", "sos"}, {"state", "active"},
              {"severity", "critical"}};
  Publish("crew-3", "event", sos);
  std::string crew = Geohash(24.49, 118.11, 7);
  json alarms = WaitFeed("alarms", [&](const json& f) { return f["state"]["cells"].contains(crew); });
  ASSERT_TRUE(alarms.is_object()) << FleetLog();
  EXPECT_EQ(Field(alarms, alarms["state"]["cells"][crew], "sos"), 1);
  EXPECT_TRUE(WaitFeed("workers", [&](const json& f) { return f["state"]["cells"].contains(crew); }).is_object());

  // Bad queries get a clear answer.
  json bad = Admin("heatmap", {{"layer", "potholes"}});
  EXPECT_EQ(bad["code"], "invalid") << bad.dump();
  bad = Admin("heatmap", {{"layer", "bin_fill"}, {"window", 123}});
  EXPECT_EQ(bad["code"], "invalid") << bad.dump();
  bad = Admin("heatmap", {{"layer", "bin_fill"}, {"precision", 9}});
  EXPECT_EQ(bad["code"], "invalid") << bad.dump();
  bad = Admin("heatmap", {{"layer", "bin_fill"}, {"site", "elsewhere"}});
  EXPECT_EQ(bad["code"], "not_found") << bad.dump();
  json status = Admin("status");
  EXPECT_EQ(status["result"]["heatmap"]["events"], 2) << status.dump();
  ExpectPayloadsMatchSchemas();
}

TEST_F(HeatmapTest, Gcj02FeedBinsTheConvertedPoint) {
  StartBroker();
  Capture();
  StartFleetWithHeatmap("crs = \"gcj02\"\nfeed_precision = 8\nlayers = [\"bin_fill\"]\n");
  json reading = {{"id", "gw:1"}, {"ts", WallMs()}, {"device", "bin-1"}, {"kind", "bin"},
                  {"source", {{"protocol", "lorawan"}, {"gateway", "gw-test"}}}, {"metrics", {{"fill_level_pct", 55.5}}}, {"location", {{"lat", 24.48}, {"lon", 118.10}}}};
  Publish("bin-1", "telemetry", reading);
  // protocols.md §6: WGS-84 (24.48, 118.10) is GCJ-02 (24.477354826, 118.104973866).
  std::string gcj = Geohash(24.477354826, 118.104973866, 8);
  json feed = WaitFeed("bin_fill", [&](const json& f) { return f["state"]["cells"].contains(gcj); });
  ASSERT_TRUE(feed.is_object()) << Feed(capture->Messages(), "bin_fill").dump() << FleetLog();
  EXPECT_EQ(feed["crs"], "gcj02");
  EXPECT_FALSE(feed["state"]["cells"].contains(Geohash(24.48, 118.10, 8)));
  // Only the configured layers are published.
  EXPECT_TRUE(Feed(capture->Messages(), "vehicle_coverage").is_null());
}

TEST_F(HeatmapTest, RestartOfSanifleetKeepsTheDaysMap) {
  StartBroker();
  Capture();
  StartFleetWithHeatmap();
  json reading = {{"id", "gw:1"}, {"ts", WallMs()}, {"device", "bin-1"}, {"kind", "bin"},
                  {"source", {{"protocol", "lorawan"}, {"gateway", "gw-test"}}}, {"metrics", {{"fill_level_pct", 72.5}}},
                  {"location", {{"lat", 24.48}, {"lon", 118.10}}}};
  Publish("bin-1", "telemetry", reading);
  std::string cell = Geohash(24.48, 118.10, 7);
  ASSERT_TRUE(WaitFeed("bin_fill", [&](const json& f) { return f["windows"][2]["cells"].contains(cell); }).is_object()) << FleetLog();
  fleet.Stop(10s);
  StartFleet();
  json day = Admin("heatmap", {{"layer", "bin_fill"}, {"window", 86400}});
  ASSERT_EQ(day["ok"], true) << day.dump();
  ASSERT_TRUE(day["result"]["cells"].contains(cell)) << day.dump() << FleetLog();
  EXPECT_DOUBLE_EQ(Field(day["result"], day["result"]["cells"][cell], "max").get<double>(), 72.5);
  json state = Admin("heatmap", {{"layer", "bin_fill"}});
  EXPECT_TRUE(state["result"]["cells"].contains(cell)) << state.dump();
  EXPECT_NE(FleetLog().find("heatmap: houpu restored"), std::string::npos) << FleetLog();
}

// Issue 16 item 8: a crash lost the heat map back to the last clean stop. With a snapshot every
// second, what was binned before the last snapshot survives a kill -9.
TEST_F(HeatmapTest, KilledSanifleetKeepsTheMapOfItsLastSnapshot) {
  StartBroker();
  Capture();
  StartFleetWithHeatmap("snapshot_interval_s = 1\n");
  int64_t now = WallMs();
  json reading = {{"id", "gw:1"}, {"device", "bin-1"}, {"kind", "bin"}, {"source", {{"protocol", "lorawan"}, {"gateway", "gw-test"}}},
                  {"location", {{"lat", 24.48}, {"lon", 118.10}}}};
  for (int i = 0; i < 3; ++i) {
    reading["id"] = "gw:" + std::to_string(i + 1);
    reading["ts"] = now - 3000 + i * 1000;
    reading["metrics"] = {{"fill_level_pct", 60.0 + i}};
    Publish("bin-1", "telemetry", reading);
  }
  json truck = {{"device", "truck-1"}, {"kind", "vehicle"}, {"source", {{"protocol", "jt808"}, {"gateway", "gw-test"}}},
                {"metrics", {{"speed_kmh", 12}}}};
  for (int i = 0; i < 4; ++i) {
    truck["id"] = "gw:t" + std::to_string(i);
    truck["ts"] = now - 4000 + i * 1000;
    truck["location"] = {{"lat", 24.49}, {"lon", 118.11}};
    Publish("truck-1", "telemetry", truck);
  }
  std::string cell = Geohash(24.48, 118.10, 7), road = Geohash(24.49, 118.11, 7);
  ASSERT_TRUE(WaitFeed("bin_fill", [&](const json& f) { return f["windows"][2]["cells"].contains(cell) && f["windows"][2]["cells"][cell][0] == 3; })
                  .is_object()) << FleetLog();
  json coverage = WaitFeed("vehicle_coverage", [&](const json& f) {
    return f["windows"][2]["cells"].contains(road) && f["windows"][2]["cells"][road][0] == 4;
  });
  ASSERT_TRUE(coverage.is_object()) << FleetLog();
  json road_before = coverage["windows"][2]["cells"][road];
  // A snapshot taken after all of it was binned, then a crash. Two writes after the feed showed
  // it: the second snapshot was taken after the first was written, so after the binning.
  std::string file = path("fleet") + "/heatmap/houpu.bin";
  auto written_after = [&](std::filesystem::file_time_type since) {
    std::error_code ec;
    auto t = std::filesystem::last_write_time(file, ec);
    return !ec && t > since ? std::optional(t) : std::nullopt;
  };
  auto since = std::filesystem::file_time_type::clock::now();
  for (int round = 0; round < 2; ++round) {
    std::optional<std::filesystem::file_time_type> t;
    for (auto deadline = std::chrono::steady_clock::now() + 10s; !(t = written_after(since)) && std::chrono::steady_clock::now() < deadline;)
      std::this_thread::sleep_for(50ms);
    ASSERT_TRUE(t) << "no snapshot written within 10 s\n" << FleetLog();
    since = *t;
  }
  fleet.Kill();
  StartFleet();
  EXPECT_NE(ReadFile(path("fleet.2.log")).find("heatmap: houpu restored"), std::string::npos) << FleetLog();
  json day = Admin("heatmap", {{"layer", "bin_fill"}, {"window", 86400}});
  ASSERT_EQ(day["ok"], true) << day.dump();
  ASSERT_TRUE(day["result"]["cells"].contains(cell)) << day.dump() << FleetLog();
  EXPECT_EQ(Field(day["result"], day["result"]["cells"][cell], "n"), 3);
  EXPECT_DOUBLE_EQ(Field(day["result"], day["result"]["cells"][cell], "max").get<double>(), 62.0);
  json roads = Admin("heatmap", {{"layer", "vehicle_coverage"}, {"window", 86400}});
  ASSERT_TRUE(roads["result"]["cells"].contains(road)) << roads.dump();
  EXPECT_EQ(roads["result"]["cells"][road], road_before) << roads.dump();
  // The map goes on from there: the truck's next point is not a new pass.
  truck["id"] = "gw:t9";
  truck["ts"] = WallMs();
  truck["location"] = {{"lat", 24.49}, {"lon", 118.11}};
  Publish("truck-1", "telemetry", truck);
  json after = WaitFeed("vehicle_coverage", [&](const json& f) {
    return f["windows"][2]["cells"].contains(road) && f["windows"][2]["cells"][road][0] == 5;
  });
  ASSERT_TRUE(after.is_object()) << FleetLog();
  EXPECT_EQ(Field(after, after["windows"][2]["cells"][road], "passes"), Field(coverage, road_before, "passes"));
}

}  // namespace
}  // namespace sanigate::test
