// sanifleet's heat-map service (fleet/app/heatmap_service.h) without a broker: decoded model
// messages in, and what it hands to its publish function out, on a fake clock. A feed goes out
// once per feed interval when it changed and not at all when it did not; a closed window goes
// out once, and again (amended) only when a late point changes it; the admin query; snapshots.
#include "app/heatmap_service.h"

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <thread>

#include "heatmap/geohash.h"
#include "test_support.h"

namespace sanigate::fleet {
namespace {

using nlohmann::json;

constexpr int64_t kT0 = 1763712000000;  // 2025-11-21 16:00 UTC+8: a quarter, an hour starts
constexpr int64_t kSec = 1000;
constexpr const char* kFeedBins = "sanigate/v1/houpu/heatmap/bin_fill";
constexpr const char* kClosedBins = "sanigate/v1/houpu/heatmap/bin_fill/closed";

struct Sent {
  std::string topic;
  json doc;
  bool retain;
};

ModelMessage Decode(const std::string& leaf, const std::string& payload) {
  std::string error;
  auto m = DecodeModelMessage(leaf, payload, &error);
  EXPECT_TRUE(m.has_value()) << error;
  return m ? std::move(*m) : ModelMessage{};
}

std::string Reading(int64_t ts, double fill) {
  return json{{"ts", ts}, {"kind", "bin"}, {"metrics", {{"fill_level_pct", fill}}}}.dump();
}

DeviceEntry Bin(double lat, double lon) {
  DeviceEntry e;
  e.kind = "bin";
  e.location = std::pair{lat, lon};
  return e;
}

class HeatmapServiceTest : public ::testing::Test {
 protected:
  void Make(int64_t snapshot_interval_s = 0) {
    HeatmapSettings s;
    s.map.feed_interval_ms = kSec;
    s.map.snapshot_interval_s = snapshot_interval_s;
    s.topic_prefix = "sanigate/v1";
    s.site = "houpu";
    s.sites = {"houpu"};
    s.data_dir = dir_.path().string();
    service_ = std::make_unique<HeatmapService>(
        s, [this](const std::string& t, const std::string& p, bool retain) { sent_.push_back({t, json::parse(p), retain}); },
        [this] { return now_; });
  }
  // What was published since the last call.
  std::vector<Sent> Take() { return std::exchange(sent_, {}); }
  static std::vector<Sent> On(const std::vector<Sent>& all, const std::string& topic) {
    std::vector<Sent> out;
    for (const auto& s : all)
      if (s.topic == topic) out.push_back(s);
    return out;
  }
  void ObserveFill(const std::string& device, const DeviceEntry& e, int64_t ts, double fill) {
    service_->Observe("houpu", device, Decode("telemetry", Reading(ts, fill)), e);
  }
  json Query(json args) {
    AdminAnswer a = service_->Query(args);
    EXPECT_TRUE(a.code.empty()) << a.error;
    return a.result;
  }

  unit::ScratchDir dir_;
  int64_t now_ = kT0 + 60 * kSec;
  std::vector<Sent> sent_;
  std::unique_ptr<HeatmapService> service_;
  const DeviceEntry bin_a_ = Bin(24.4805, 118.1005), bin_b_ = Bin(24.5305, 118.1805);
};

TEST_F(HeatmapServiceTest, AChangedFeedGoesOutOncePerIntervalAndAnUnchangedOneNot) {
  Make();
  ObserveFill("bin-a", bin_a_, now_, 40);
  service_->Tick();
  // The first round: every layer of the site, retained (the empty ones too: they replace
  // whatever an older run left on the broker).
  auto first = Take();
  ASSERT_EQ(first.size(), 6u);
  for (const auto& s : first) {
    EXPECT_TRUE(s.retain) << s.topic;
    EXPECT_EQ(s.doc["ts"], now_) << s.topic;
  }
  auto feed = On(first, kFeedBins);
  ASSERT_EQ(feed.size(), 1u);
  ASSERT_EQ(feed[0].doc["state"]["cells"].size(), 1u) << feed[0].doc.dump();
  EXPECT_EQ(feed[0].doc["state"]["cells"].begin()->at(0), 1);     // n
  EXPECT_EQ(feed[0].doc["state"]["cells"].begin()->at(1), 40.0);  // sum

  // Not due yet, then due but unchanged: nothing.
  service_->Tick();
  now_ += kSec;
  service_->Tick();
  EXPECT_TRUE(Take().empty());

  // Two changes within one interval: one publish of that layer only, at the next round.
  now_ += 300;
  ObserveFill("bin-a", bin_a_, now_, 50);
  ObserveFill("bin-b", bin_b_, now_ + 1, 70);
  service_->Tick();
  EXPECT_TRUE(Take().empty()) << "published before the interval was over";
  now_ += 700;
  service_->Tick();
  auto second = Take();
  ASSERT_EQ(second.size(), 1u);
  EXPECT_EQ(second[0].topic, kFeedBins);
  EXPECT_EQ(second[0].doc["ts"], now_);
  EXPECT_EQ(second[0].doc["state"]["cells"].size(), 2u) << second[0].doc.dump();
  now_ += kSec;
  service_->Tick();
  EXPECT_TRUE(Take().empty());

  // After a reconnect every feed again, changed or not, at the next round.
  service_->RepublishAll();
  service_->Tick();
  EXPECT_TRUE(Take().empty()) << "the forced round waits for the interval too";
  now_ += kSec;
  service_->Tick();
  EXPECT_EQ(Take().size(), 6u);
}

TEST_F(HeatmapServiceTest, AClosedWindowGoesOutOnceAndAgainOnlyWhenALatePointAmendsIt) {
  Make();
  ObserveFill("bin-a", bin_a_, kT0 + 60 * kSec, 40);
  service_->Tick();
  Take();
  // The quarter [kT0, kT0 + 15 min) closes.
  now_ = kT0 + 900 * kSec;
  service_->Tick();
  auto round = Take();
  auto closed = On(round, kClosedBins);
  ASSERT_EQ(closed.size(), 1u) << round.size();
  EXPECT_FALSE(closed[0].retain);
  EXPECT_EQ(closed[0].doc["window"]["size_s"], 900);
  EXPECT_EQ(closed[0].doc["window"]["start"], kT0);
  EXPECT_EQ(closed[0].doc["closed"], true);
  EXPECT_EQ(closed[0].doc["amended"], false);
  ASSERT_EQ(closed[0].doc["cells"].size(), 1u);
  // The feed changed too: its current quarter is a new, empty one.
  EXPECT_EQ(On(round, kFeedBins).size(), 1u);

  // Later rounds: not again.
  for (int i = 0; i < 3; ++i) {
    now_ += kSec;
    service_->Tick();
  }
  EXPECT_TRUE(On(Take(), kClosedBins).empty());

  // A late reading of that quarter (a back-fill): the window once more, amended.
  service_->Observe("houpu", "bin-b",
                    Decode("telemetry", R"({"ts":)" + std::to_string(kT0 + 120 * kSec) +
                                            R"(,"kind":"bin","source":{"backfill":true},"metrics":{"fill_level_pct":90}})"),
                    bin_b_);
  now_ += kSec;
  service_->Tick();
  closed = On(Take(), kClosedBins);
  ASSERT_EQ(closed.size(), 1u);
  EXPECT_EQ(closed[0].doc["window"]["start"], kT0);
  EXPECT_EQ(closed[0].doc["amended"], true);
  EXPECT_EQ(closed[0].doc["cells"].size(), 2u);
  now_ += kSec;
  service_->Tick();
  EXPECT_TRUE(On(Take(), kClosedBins).empty());
}

TEST_F(HeatmapServiceTest, WhatAMessageMeansForTheMap) {
  Make();
  const std::string ts = std::to_string(now_);
  DeviceEntry truck;
  truck.kind = "vehicle";
  truck.location = std::pair{24.48, 118.10};
  bool unlocated = false;
  // A truck's reading without a fix of its own is no position (its last location is not news).
  EXPECT_FALSE(HeatmapService::InputOf("houpu", "t1", Decode("telemetry", R"({"ts":)" + ts + R"(,"metrics":{"speed_kmh":30}})"),
                                       truck, now_, &unlocated));
  auto pos = HeatmapService::InputOf(
      "houpu", "t1",
      Decode("telemetry", R"({"ts":)" + ts + R"(,"metrics":{"speed_kmh":30},"location":{"lat":24.49,"lon":118.11}})"), truck,
      now_, &unlocated);
  ASSERT_TRUE(pos);
  EXPECT_EQ(pos->type, HeatmapService::Input::Type::kPosition);
  EXPECT_EQ(pos->value, 30.0);
  EXPECT_DOUBLE_EQ(pos->lat, 24.49);
  // A fix out of range is no fix.
  EXPECT_FALSE(HeatmapService::InputOf("houpu", "t1", Decode("telemetry", R"({"ts":)" + ts + R"(,"location":{"lat":95,"lon":118}})"),
                                       truck, now_, &unlocated));

  // An SOS at the place it says, even for a device whose entry knows another one.
  auto sos = HeatmapService::InputOf(
      "houpu", "t1",
      Decode("event", R"({"ts":)" + ts + R"(,"event":"sos","state":"active","location":{"lat":24.5,"lon":118.2}})"), truck, now_,
      &unlocated);
  ASSERT_TRUE(sos);
  EXPECT_EQ(sos->type, HeatmapService::Input::Type::kEvent);
  EXPECT_TRUE(sos->active);
  EXPECT_DOUBLE_EQ(sos->lon, 118.2);
  // Events the map has no layer for, statuses, and readings without a time say nothing.
  EXPECT_FALSE(HeatmapService::InputOf("houpu", "t1", Decode("event", R"({"ts":)" + ts + R"(,"event":"tilt","state":"active"})"),
                                       truck, now_, &unlocated));
  EXPECT_FALSE(HeatmapService::InputOf("houpu", "t1", Decode("status", R"({"ts":)" + ts + R"(,"online":true})"), truck, now_, &unlocated));
  EXPECT_FALSE(HeatmapService::InputOf("houpu", "b", Decode("telemetry", R"({"metrics":{"fill_level_pct":5}})"), bin_a_, now_, &unlocated));
  EXPECT_FALSE(unlocated);

  // A sorted-waste room: its fullest compartment, at the room's known place.
  DeviceEntry room;
  room.kind = "garbage_room";
  room.location = std::pair{24.47, 118.09};
  auto fill = HeatmapService::InputOf(
      "houpu", "room-07",
      Decode("telemetry", R"({"ts":)" + ts + R"(,"metrics":{"kitchen_fill_level_pct":35,"recyclable_fill_level_pct":81.5,"door_open":true}})"),
      room, now_, &unlocated);
  ASSERT_TRUE(fill);
  EXPECT_EQ(fill->type, HeatmapService::Input::Type::kFill);
  EXPECT_EQ(fill->value, 81.5);
  EXPECT_DOUBLE_EQ(fill->lat, 24.47);

  // A bin nobody knows the place of: counted as unlocated in the status.
  DeviceEntry nowhere;
  nowhere.kind = "bin";
  service_->Observe("houpu", "bin-x", Decode("telemetry", Reading(now_, 10)), nowhere);
  EXPECT_EQ(service_->StatusJson()["unlocated"], 1);
  EXPECT_EQ(service_->StatusJson()["sites"], 1);
  EXPECT_EQ(service_->StatusJson()["readings"], 0);
}

TEST_F(HeatmapServiceTest, TheAdminQuery) {
  Make();
  ObserveFill("bin-a", bin_a_, kT0 + 60 * kSec, 40);
  json state = Query({{"layer", "bin_fill"}});
  EXPECT_EQ(state["window"], nullptr);
  EXPECT_EQ(state["precision"], 7);
  ASSERT_EQ(state["cells"].size(), 1u);
  EXPECT_TRUE(state["cells"].contains(heatmap::ToString(heatmap::Encode(24.4805, 118.1005, 7), 7))) << state.dump();
  json quarter = Query({{"layer", "bin_fill"}, {"window", 900}, {"at", kT0}, {"precision", 8}});
  EXPECT_EQ(quarter["window"]["start"], kT0);
  EXPECT_EQ(quarter["cells"].size(), 1u);
  // A followed site with nothing binned yet: empty cells, not an error.
  EXPECT_TRUE(Query({{"layer", "overflow"}})["cells"].empty());

  auto code = [&](json args) { return service_->Query(args).code; };
  EXPECT_EQ(code({{"layer", "rainbows"}}), "invalid");
  EXPECT_EQ(code(json::object()), "invalid");
  EXPECT_EQ(code({{"layer", "bin_fill"}, {"window", 600}}), "invalid");
  EXPECT_EQ(code({{"layer", "bin_fill"}, {"precision", 9}}), "invalid");
  EXPECT_EQ(code({{"layer", "unattended"}, {"window", 900}}), "invalid");
  EXPECT_EQ(code({{"layer", "bin_fill"}, {"site", "elsewhere"}}), "not_found");
}

TEST_F(HeatmapServiceTest, SnapshotsKeepTheMapAndInputsWaitWhileOneIsTaken) {
  Make(/*snapshot_interval_s=*/1);
  service_->Start();
  ObserveFill("bin-a", bin_a_, now_, 40);
  service_->Tick();
  Take();
  // The snapshot falls due: the engines are read by the snapshot thread, so a reading that
  // arrives meanwhile waits, and so does the feed.
  now_ += kSec;
  service_->Tick();
  ASSERT_TRUE(service_->frozen());
  ObserveFill("bin-b", bin_b_, now_, 70);
  const std::string file = service_->FileOf("houpu");
  for (int i = 0; i < 500 && !std::filesystem::exists(file); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ASSERT_TRUE(std::filesystem::exists(file));
  EXPECT_TRUE(Take().empty());
  // The next round applies what waited, and its feed goes out. (No second snapshot meanwhile:
  // the file read back below is this one.)
  service_->SetSnapshotInterval(3600);
  service_->Tick();
  EXPECT_FALSE(service_->frozen());
  now_ += kSec;
  service_->Tick();
  auto feed = On(Take(), kFeedBins);
  ASSERT_EQ(feed.size(), 1u);
  EXPECT_EQ(feed[0].doc["state"]["cells"].size(), 2u);

  // The snapshot holds what was binned before it was taken; a restart reads it back.
  {
    HeatmapSettings s;
    s.site = "houpu";
    s.sites = {"houpu"};
    s.data_dir = dir_.path().string();
    HeatmapService restarted(s, [](const std::string&, const std::string&, bool) {}, [this] { return now_; });
    restarted.LoadSaved();
    AdminAnswer a = restarted.Query({{"layer", "bin_fill"}});
    ASSERT_TRUE(a.code.empty()) << a.error;
    EXPECT_EQ(a.result["cells"].size(), 1u) << a.result.dump();
  }
  // At stop: everything.
  service_->StopSnapshots();
  service_->Save();
  HeatmapSettings s;
  s.site = "houpu";
  s.sites = {"houpu"};
  s.data_dir = dir_.path().string();
  HeatmapService restarted(s, [](const std::string&, const std::string&, bool) {}, [this] { return now_; });
  restarted.LoadSaved();
  EXPECT_EQ(restarted.Query({{"layer", "bin_fill"}}).result["cells"].size(), 2u);
}

}  // namespace
}  // namespace sanigate::fleet
