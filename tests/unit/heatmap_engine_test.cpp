// The heat-map engine: binning into cells and windows, passes and dwell, late and backfilled
// points, the unattended layer, GCJ-02 cells, merging partials, and the JSON feed.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <utility>

#include "heatmap/feed.h"
#include "heatmap/gcj02.h"
#include "heatmap/geohash.h"
#include "heatmap/heatmap.h"

namespace sanigate::heatmap {
namespace {

constexpr int64_t kNow = 1763712000000;        // 2025-11-21 08:00:00 UTC = 16:00 in Xiamen
constexpr int64_t kLocalMidnight = 1763654400000;  // 2025-11-21 00:00 UTC+8
constexpr int64_t kMin = 60'000;

// The centre of a geohash cell: a point that is certainly inside it.
LatLon Centre(const char* geohash) {
  auto cell = Parse(geohash);
  EXPECT_TRUE(cell.has_value()) << geohash;
  CellBounds b = Bounds(*cell, static_cast<int>(std::string_view(geohash).size()));
  return {b.lat_center(), b.lon_center()};
}

// Partials equal up to the order floating-point sums were added in.
void ExpectSameCells(const std::vector<CellOut>& got, const std::vector<CellOut>& want, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i) {
    const Agg &g = got[i].value.agg, &w = want[i].value.agg;
    ASSERT_EQ(got[i].cell, want[i].cell) << what;
    EXPECT_EQ(g.n, w.n) << what;
    EXPECT_NEAR(g.sum, w.sum, 1e-9 * std::max(1.0, std::abs(w.sum))) << what;
    EXPECT_EQ(g.min, w.min) << what;
    EXPECT_EQ(g.max, w.max) << what;
    EXPECT_EQ(g.first, w.first) << what;
    EXPECT_EQ(g.last, w.last) << what;
    // dwell_s is exported as tenths × 0.1, so merged sums may differ in the last bit.
    for (size_t x = 0; x < want[i].value.extra.size(); ++x)
      EXPECT_NEAR(got[i].value.extra[x], want[i].value.extra[x], 1e-9 * std::max(1.0, std::abs(want[i].value.extra[x])))
          << what << " extra " << x;
  }
}

const CellOut* Find(const std::vector<CellOut>& cells, const char* geohash) {
  auto cell = Parse(geohash);
  for (const auto& c : cells)
    if (c.cell == *cell) return &c;
  return nullptr;
}

TEST(HeatmapEngine, BinsFillReadingsIntoCellsAndRollsUp) {
  HeatmapEngine e({});
  // 24.48N 118.10E is geohash ws7gr2my (textbook bisection, checked in python); 24.4805N
  // 118.1004E is ws7gr2w1: the same precision-6 cell, different 7 and 8 cells.
  auto a = e.Device("bin-a"), b = e.Device("bin-b"), c = e.Device("bin-c");
  e.Fill(a, kNow - 5 * kMin, 24.48, 118.10, 40.0, kNow);
  e.Fill(a, kNow - 1 * kMin, 24.48, 118.10, 60.0, kNow);  // latest of bin a
  e.Fill(b, kNow - 2 * kMin, 24.48, 118.10, 90.0, kNow);
  e.Fill(c, kNow - 3 * kMin, 24.4805, 118.1004, 10.0, kNow);

  auto state8 = e.State(Layer::kBinFill, 8, kNow);
  ASSERT_EQ(state8.size(), 2u);
  const CellOut* my = Find(state8, "ws7gr2my");
  ASSERT_NE(my, nullptr);
  EXPECT_EQ(my->value.agg.n, 2u);  // bins a and b, each with its latest fill
  EXPECT_DOUBLE_EQ(my->value.agg.sum, 150.0);
  EXPECT_DOUBLE_EQ(my->value.agg.min, 60.0);
  EXPECT_DOUBLE_EQ(my->value.agg.max, 90.0);
  EXPECT_EQ(my->value.agg.first, kNow - 2 * kMin);
  EXPECT_EQ(my->value.agg.last, kNow - 1 * kMin);

  auto state6 = e.State(Layer::kBinFill, 6, kNow);
  ASSERT_EQ(state6.size(), 1u);
  EXPECT_EQ(ToString(state6[0].cell, 6), "ws7gr2");
  EXPECT_EQ(state6[0].value.agg.n, 3u);
  EXPECT_DOUBLE_EQ(state6[0].value.agg.sum, 160.0);

  // The window holds every reading, not only the latest.
  WindowOut w = e.Window(Layer::kBinFill, 3600, kNow - 1, 7);
  EXPECT_EQ(w.start_ms, kNow - 3600'000);
  ASSERT_EQ(w.cells.size(), 2u);
  const CellOut* m7 = Find(w.cells, "ws7gr2m");
  ASSERT_NE(m7, nullptr);
  EXPECT_EQ(m7->value.agg.n, 3u);
  EXPECT_DOUBLE_EQ(m7->value.agg.sum, 190.0);
  EXPECT_DOUBLE_EQ(m7->value.agg.min, 40.0);
}

TEST(HeatmapEngine, WindowsAlignToLocalMidnight) {
  HeatmapEngine e({});
  EXPECT_EQ(e.WindowStart(kNow, 86400), kLocalMidnight);
  EXPECT_EQ(e.WindowStart(kLocalMidnight, 86400), kLocalMidnight);
  EXPECT_EQ(e.WindowStart(kLocalMidnight - 1, 86400), kLocalMidnight - 86400'000);
  EXPECT_EQ(e.WindowStart(kNow + 14 * kMin, 900), kNow);
  EXPECT_EQ(e.WindowStart(kNow + 15 * kMin, 900), kNow + 15 * kMin);
  HeatmapConfig utc;
  utc.utc_offset_s = 0;
  HeatmapEngine u(utc);
  EXPECT_EQ(u.WindowStart(kNow, 86400), kLocalMidnight + 8 * 3600'000);
}

TEST(HeatmapEngine, BackfilledPointsLandInTheWindowOfTheirTimestamp) {
  HeatmapEngine e({});
  auto truck = e.Device("truck-1");
  LatLon p = Centre("ws7gr2my");
  e.Position(truck, false, kNow - 1000, p.lat, p.lon, 30.0, false, kNow);
  // A JT/T 808 batch from three hours ago arrives now.
  for (int i = 0; i < 4; ++i) e.Position(truck, false, kNow - 3 * 3600'000 + i * 10'000, p.lat, p.lon, 10.0, true, kNow);
  // Too old for retention (24 h), and from the future.
  e.Position(truck, false, kNow - 25 * 3600'000, p.lat, p.lon, 10.0, true, kNow);
  e.Position(truck, false, kNow + 3600'000, p.lat, p.lon, 10.0, false, kNow);

  WindowOut now15 = e.Window(Layer::kVehicleCoverage, 900, kNow - 1000, 8);
  ASSERT_EQ(now15.cells.size(), 1u);
  EXPECT_EQ(now15.cells[0].value.agg.n, 1u);
  WindowOut past15 = e.Window(Layer::kVehicleCoverage, 900, kNow - 3 * 3600'000, 8);
  EXPECT_EQ(past15.start_ms, kNow - 3 * 3600'000);
  ASSERT_EQ(past15.cells.size(), 1u);
  EXPECT_EQ(past15.cells[0].value.agg.n, 4u);
  EXPECT_EQ(past15.cells[0].value.agg.first, kNow - 3 * 3600'000);
  WindowOut day = e.Window(Layer::kVehicleCoverage, 86400, kNow, 8);
  EXPECT_EQ(day.cells[0].value.agg.n, 5u);
  // The live position stays the state; the backfill does not move it back.
  auto state = e.State(Layer::kVehicleCoverage, 8, kNow);
  ASSERT_EQ(state.size(), 1u);
  EXPECT_DOUBLE_EQ(state[0].value.agg.sum, 30.0);
  auto s = e.stats();
  EXPECT_EQ(s.late_dropped, 1u);
  EXPECT_EQ(s.future_dropped, 1u);
  EXPECT_EQ(s.points, 5u);
}

TEST(HeatmapEngine, PassesAndDwellFollowTheTrack) {
  HeatmapConfig cfg;
  cfg.max_gap_s = 300;
  cfg.pass_gap_s = 600;
  HeatmapEngine e(cfg);
  auto truck = e.Device("truck-1");
  // ws7gr2my → ws7gr2mz (same 7-cell) → ws7gr2q* (next 7-cell), 10 s apart, then back to my
  // after 20 minutes (a new pass even though it left from my... it left from q).
  LatLon my = Centre("ws7gr2my"), mz = Centre("ws7gr2mz"), qb = Centre("ws7gr2qb");
  int64_t t0 = kNow - 30 * kMin;
  e.Position(truck, false, t0, my.lat, my.lon, 20.0, false, kNow);
  e.Position(truck, false, t0 + 10'000, my.lat, my.lon, 20.0, false, kNow);   // dwell 10 s in my, no pass
  e.Position(truck, false, t0 + 20'000, mz.lat, mz.lon, 20.0, false, kNow);   // dwell 10 s in mz; pass mz (8 only)
  e.Position(truck, false, t0 + 30'000, qb.lat, qb.lon, 20.0, false, kNow);   // dwell 10 s in qb; pass q (8 and 7)
  e.Position(truck, false, t0 + 30'000 + 20 * kMin, my.lat, my.lon, 20.0, false, kNow);  // gap: no dwell, new pass
  WindowOut w8 = e.Window(Layer::kVehicleCoverage, 86400, kNow, 8);
  auto fields = ExtraFields(Layer::kVehicleCoverage);
  ASSERT_EQ(std::string(fields[0].name), "passes");
  ASSERT_EQ(std::string(fields[1].name), "dwell_s");
  const CellOut* c_my = Find(w8.cells, "ws7gr2my");
  const CellOut* c_mz = Find(w8.cells, "ws7gr2mz");
  const CellOut* c_qb = Find(w8.cells, "ws7gr2qb");
  ASSERT_TRUE(c_my && c_mz && c_qb);
  EXPECT_EQ(c_my->value.agg.n, 3u);
  EXPECT_DOUBLE_EQ(c_my->value.extra[0], 2.0);   // first point, and the return after the gap
  EXPECT_DOUBLE_EQ(c_my->value.extra[1], 10.0);
  EXPECT_DOUBLE_EQ(c_mz->value.extra[0], 1.0);
  EXPECT_DOUBLE_EQ(c_mz->value.extra[1], 10.0);
  EXPECT_DOUBLE_EQ(c_qb->value.extra[0], 1.0);
  EXPECT_DOUBLE_EQ(c_qb->value.extra[1], 10.0);
  WindowOut w7 = e.Window(Layer::kVehicleCoverage, 86400, kNow, 7);
  const CellOut* c_m = Find(w7.cells, "ws7gr2m");
  ASSERT_NE(c_m, nullptr);
  EXPECT_EQ(c_m->value.agg.n, 4u);
  EXPECT_DOUBLE_EQ(c_m->value.extra[0], 2.0);  // entered m twice; moving from my to mz is no pass at 7
  EXPECT_DOUBLE_EQ(c_m->value.extra[1], 20.0);
  // The state forgets a vehicle after state_max_age_s.
  EXPECT_EQ(e.State(Layer::kVehicleCoverage, 7, t0 + 30'000 + 20 * kMin).size(), 1u);
  EXPECT_TRUE(e.State(Layer::kVehicleCoverage, 7, t0 + 30'000 + 20 * kMin + 301'000).empty());
}

TEST(HeatmapEngine, UnattendedOverflowUntilATruckPasses) {
  HeatmapConfig cfg;
  cfg.unattended_after_s = 3600;
  HeatmapEngine e(cfg);
  auto bin = e.Device("bin-0412"), truck = e.Device("truck-1");
  LatLon at = Centre("ws7gr2my");
  int64_t t0 = kNow;
  e.Event(bin, t0, at.lat, at.lon, "overflow", true, false, t0);
  EXPECT_EQ(e.State(Layer::kOverflow, 7, t0).size(), 1u);
  EXPECT_TRUE(e.State(Layer::kUnattended, 7, t0 + 3600'000 - 1).empty());
  auto un = e.State(Layer::kUnattended, 7, t0 + 3600'000);
  ASSERT_EQ(un.size(), 1u);
  EXPECT_EQ(ToString(un[0].cell, 7), "ws7gr2m");
  EXPECT_DOUBLE_EQ(un[0].value.agg.sum, 3600.0);
  EXPECT_EQ(un[0].value.agg.first, t0);
  // A truck far away does not count; a truck in a neighbouring 150 m cell does.
  LatLon far = Centre("ws7gr8");
  e.Position(truck, false, t0 + 3700'000, far.lat, far.lon, 20.0, false, t0 + 3700'000);
  EXPECT_EQ(e.State(Layer::kUnattended, 7, t0 + 3800'000).size(), 1u);
  auto next = Neighbour(*Parse("ws7gr2m"), 7, 0, 1);
  CellBounds nb = Bounds(*next, 7);
  e.Position(truck, false, t0 + 3900'000, nb.lat_center(), nb.lon_center(), 20.0, false, t0 + 3900'000);
  EXPECT_TRUE(e.State(Layer::kUnattended, 7, t0 + 3900'000).empty());
  // Still overflowing an hour after that pass: unattended again, with the pass time.
  auto again = e.State(Layer::kUnattended, 7, t0 + 3900'000 + 3600'000);
  ASSERT_EQ(again.size(), 1u);
  EXPECT_DOUBLE_EQ(again[0].value.extra[0], static_cast<double>(t0 + 3900'000));
  e.Event(bin, t0 + 7600'000, at.lat, at.lon, "overflow", false, false, t0 + 7600'000);
  EXPECT_TRUE(e.State(Layer::kUnattended, 7, t0 + 9000'000).empty());
  EXPECT_TRUE(e.State(Layer::kOverflow, 7, t0 + 9000'000).empty());
  WindowOut w = e.Window(Layer::kOverflow, 86400, t0, 7);
  ASSERT_EQ(w.cells.size(), 1u);
  EXPECT_EQ(w.cells[0].value.agg.n, 1u);          // one activation
  EXPECT_DOUBLE_EQ(w.cells[0].value.extra[0], 1.0);  // one clearing
}

TEST(HeatmapEngine, AlarmsCountByTypeAndKeepActiveOnesInTheState) {
  HeatmapEngine e({});
  auto truck = e.Device("truck-1"), room = e.Device("room-07");
  LatLon p = Centre("ws7gr2my");
  e.Event(truck, kNow - 1000, p.lat, p.lon, "sos", true, false, kNow);
  e.Event(room, kNow - 900, p.lat, p.lon, "fire", true, false, kNow);
  e.Event(room, kNow - 800, p.lat, p.lon, "tilt", true, false, kNow);  // not an alarm of this map
  e.Event(truck, kNow - 500, p.lat, p.lon, "sos", false, false, kNow);
  auto state = e.State(Layer::kAlarms, 8, kNow);
  ASSERT_EQ(state.size(), 1u);
  EXPECT_EQ(state[0].value.agg.n, 1u);
  EXPECT_DOUBLE_EQ(state[0].value.extra[1], 1.0);  // fire
  WindowOut w = e.Window(Layer::kAlarms, 900, kNow - 1000, 8);
  ASSERT_EQ(w.cells.size(), 1u);
  EXPECT_EQ(w.cells[0].value.agg.n, 2u);
  EXPECT_DOUBLE_EQ(w.cells[0].value.extra[0], 1.0);  // sos
  EXPECT_DOUBLE_EQ(w.cells[0].value.extra[2], 0.0);  // odour
}

// Issue 16: a back-filled SOS showed as active for 12 minutes; a clear made an empty cell.
TEST(HeatmapEngine, ABackfilledSosIsHistoryAndAClearMakesNoCell) {
  HeatmapEngine e({});
  auto truck = e.Device("truck-1"), other = e.Device("truck-2");
  LatLon p = Centre("ws7gr2my"), q = Centre("ws7gr2mz");
  e.Event(truck, kNow - 600'000, p.lat, p.lon, "sos", true, /*backfill=*/true, kNow);
  e.Event(truck, kNow - 590'000, p.lat, p.lon, "sos", false, /*backfill=*/true, kNow);
  EXPECT_TRUE(e.State(Layer::kAlarms, 8, kNow).empty()) << "a late SOS is not active now";
  e.Event(truck, kNow - 599'000, p.lat, p.lon, "sos", true, /*backfill=*/true, kNow);
  EXPECT_TRUE(e.State(Layer::kAlarms, 8, kNow).empty()) << "not even without its clear";
  WindowOut w = e.Window(Layer::kAlarms, 900, kNow - 600'000, 8);
  ASSERT_EQ(w.cells.size(), 1u) << "it is in the history of its own time";
  EXPECT_EQ(w.cells[0].value.agg.n, 2u);
  // A live clear of an alarm never raised, elsewhere: no cell.
  size_t before = e.Window(Layer::kAlarms, 900, kNow - 100, 8).cells.size();
  e.Event(other, kNow - 100, q.lat, q.lon, "sos", false, false, kNow);
  EXPECT_EQ(e.Window(Layer::kAlarms, 900, kNow - 100, 8).cells.size(), before);
}

TEST(HeatmapEngine, Gcj02CellsAreGeohashesOfTheConvertedPoint) {
  HeatmapConfig cfg;
  cfg.crs = Crs::kGcj02;
  HeatmapEngine e(cfg);
  auto bin = e.Device("bin");
  e.Fill(bin, kNow, 24.48, 118.10, 50.0, kNow);
  auto state = e.State(Layer::kBinFill, 8, kNow);
  ASSERT_EQ(state.size(), 1u);
  // protocols.md §6: WGS-84 (24.48, 118.10) → GCJ-02 (24.477354826, 118.104973866), 583 m away.
  EXPECT_EQ(state[0].cell, Encode(24.477354826, 118.104973866, 8));
  EXPECT_NE(state[0].cell, Encode(24.48, 118.10, 8));
  EXPECT_EQ(std::string(FeedJson(e, "houpu", Layer::kBinFill, kNow)["crs"]), "gcj02");
}

// Merging two sites' partials equals aggregating their union, at every precision and window.
TEST(HeatmapEngine, MergingTwoSitesEqualsTheUnion) {
  HeatmapEngine a({}), b({}), u({});
  std::mt19937 rng(42);
  std::uniform_real_distribution<double> lat(24.45, 24.52), lon(118.05, 118.15), fill(0, 100);
  std::uniform_int_distribution<int64_t> age(0, 20 * 3600'000);
  for (int i = 0; i < 4000; ++i) {
    bool site_a = i % 2 == 0;
    HeatmapEngine& s = site_a ? a : b;
    std::string id = (site_a ? "a/" : "b/") + std::to_string(i % 50);
    int64_t ts = kNow - age(rng);
    double la = lat(rng), lo = lon(rng);
    if (i % 3 == 0) {
      double f = fill(rng);
      s.Fill(s.Device(id), ts, la, lo, f, kNow);
      u.Fill(u.Device(id), ts, la, lo, f, kNow);
    } else if (i % 3 == 1) {
      s.Position(s.Device(id), false, ts, la, lo, 25.0, true, kNow);
      u.Position(u.Device(id), false, ts, la, lo, 25.0, true, kNow);
    } else {
      bool on = i % 4 != 0;
      s.Event(s.Device(id), ts, la, lo, "overflow", on, false, kNow);
      u.Event(u.Device(id), ts, la, lo, "overflow", on, false, kNow);
    }
  }
  for (int p = 6; p <= 8; ++p) {
    for (Layer l : {Layer::kBinFill, Layer::kVehicleCoverage, Layer::kOverflow}) {
      ExpectSameCells(MergeCells(a.State(l, p, kNow), b.State(l, p, kNow), l), u.State(l, p, kNow),
                      std::string(LayerName(l)) + " state p" + std::to_string(p));
      for (int64_t size : {900, 3600, 86400})
        for (int64_t at = kNow - 20 * 3600'000; at <= kNow; at += 3600'000) {
          auto wa = a.Window(l, size, at, p), wb = b.Window(l, size, at, p), wu = u.Window(l, size, at, p);
          ExpectSameCells(MergeCells(wa.cells, wb.cells, l), wu.cells,
                          std::string(LayerName(l)) + " p" + std::to_string(p) + " " + std::to_string(size));
        }
    }
  }
}

// Points land in the 15-minute windows, which are folded into the hour and the day when they
// close; late points after that go to all of them. Whether or when folding happens must not
// change any window.
TEST(HeatmapEngine, FoldingIntoLargerWindowsChangesNothing) {
  HeatmapEngine folded({}), plain({});
  std::mt19937 rng(7);
  std::uniform_real_distribution<double> lat(24.47, 24.49), lon(118.09, 118.11);
  std::uniform_int_distribution<int> late(0, 9);
  int64_t start = kLocalMidnight + 3600'000;
  for (int i = 0; i < 3000; ++i) {
    int64_t now = start + i * 5'000;
    // Every tenth point is back-fill from up to three hours earlier.
    int64_t ts = late(rng) == 0 ? now - std::uniform_int_distribution<int64_t>(0, 3 * 3600'000)(rng) : now;
    std::string id = "truck-" + std::to_string(i % 7);
    double la = lat(rng), lo = lon(rng);
    folded.Position(folded.Device(id), false, ts, la, lo, 20.0 + i % 5, ts != now, now);
    plain.Position(plain.Device(id), false, ts, la, lo, 20.0 + i % 5, ts != now, now);
    if (i % 3 == 0) {
      folded.Fill(folded.Device("bin-" + id), ts, la, lo, i % 100, now);
      plain.Fill(plain.Device("bin-" + id), ts, la, lo, i % 100, now);
    }
    if (i % 50 == 0) folded.TakeClosed(now);
  }
  int64_t end = start + 3000 * 5'000;
  for (Layer l : {Layer::kVehicleCoverage, Layer::kBinFill})
    for (int64_t size : {900, 3600, 86400})
      for (int64_t at = start - 3 * 3600'000; at <= end; at += 900'000)
        for (int p : {6, 8})
          ExpectSameCells(folded.Window(l, size, at, p).cells, plain.Window(l, size, at, p).cells,
                          std::string(LayerName(l)) + " " + std::to_string(size) + " at " + std::to_string(at));
  EXPECT_GT(folded.stats().cells, 0u);
}

TEST(HeatmapEngine, ClosedWindowsAreTakenOnceAndAgainWhenAmended) {
  HeatmapConfig cfg;
  cfg.windows_s = {900};
  HeatmapEngine e(cfg);
  auto bin = e.Device("bin");
  LatLon p = Centre("ws7gr2my");
  e.Fill(bin, kNow + 60'000, p.lat, p.lon, 50.0, kNow + 60'000);
  EXPECT_TRUE(e.TakeClosed(kNow + 60'000).empty());  // still open
  auto closed = e.TakeClosed(kNow + 900'000);
  ASSERT_EQ(closed.size(), 1u);
  EXPECT_EQ(closed[0].layer, Layer::kBinFill);
  EXPECT_EQ(closed[0].start_ms, kNow);
  EXPECT_FALSE(closed[0].amended);
  EXPECT_TRUE(e.TakeClosed(kNow + 901'000).empty());
  e.Fill(bin, kNow + 120'000, p.lat, p.lon, 70.0, kNow + 910'000);  // late
  closed = e.TakeClosed(kNow + 920'000);
  ASSERT_EQ(closed.size(), 1u);
  EXPECT_TRUE(closed[0].amended);
  // Past retention the window is dropped.
  e.TakeClosed(kNow + 900'000 + 86400'000);
  EXPECT_EQ(e.stats().windows, 0u);
}

// A snapshot restored into a fresh engine (a sanifleet restart) continues exactly as if the
// engine had never stopped: same windows, same state, same passes and dwell afterwards.
TEST(HeatmapEngine, SnapshotRestoresEverythingAndRefusesWhatDoesNotFit) {
  HeatmapEngine kept({}), first({});
  std::mt19937 rng(9);
  std::uniform_real_distribution<double> lat(24.47, 24.49), lon(118.09, 118.11);
  auto feed = [&](HeatmapEngine& e, int i) {
    int64_t now = kNow + i * 5'000;
    std::string id = "truck-" + std::to_string(i % 5);
    double la = lat(rng), lo = lon(rng);
    e.Position(e.Device(id), i % 7 == 0, now, la, lo, 20.0, false, now);
    if (i % 3 == 0) e.Fill(e.Device("bin-" + std::to_string(i % 11)), now, la, lo, i % 100, now);
    if (i % 17 == 0) e.Event(e.Device("bin-" + std::to_string(i % 11)), now, la, lo, i % 2 ? "overflow" : "sos", i % 4 != 1, false, now);
    if (i % 40 == 0) e.TakeClosed(now);
  };
  for (int i = 0; i < 1500; ++i) {
    std::mt19937 saved = rng;
    feed(kept, i);
    rng = saved;
    feed(first, i);
  }
  std::string snap = first.Snapshot();
  HeatmapEngine restored({});
  ASSERT_TRUE(restored.Restore(snap).ok());
  for (int i = 1500; i < 2500; ++i) {
    std::mt19937 saved = rng;
    feed(kept, i);
    rng = saved;
    feed(restored, i);
  }
  int64_t end = kNow + 2500 * 5'000;
  for (int l = 0; l < kLayerCount; ++l) {
    Layer layer = static_cast<Layer>(l);
    for (int p : {6, 8}) {
      ExpectSameCells(restored.State(layer, p, end), kept.State(layer, p, end), std::string(LayerName(layer)) + " state");
      if (layer == Layer::kUnattended) continue;
      for (int64_t at = kNow; at <= end; at += 900'000)
        ExpectSameCells(restored.Window(layer, 900, at, p).cells, kept.Window(layer, 900, at, p).cells, LayerName(layer));
      ExpectSameCells(restored.Window(layer, 86400, end, p).cells, kept.Window(layer, 86400, end, p).cells, LayerName(layer));
    }
  }
  EXPECT_EQ(restored.stats().points, kept.stats().points);
  HeatmapConfig other;
  other.crs = Crs::kGcj02;
  EXPECT_FALSE(HeatmapEngine(other).Restore(snap).ok());
  EXPECT_FALSE(HeatmapEngine({}).Restore(snap.substr(0, snap.size() / 2)).ok());
  EXPECT_FALSE(HeatmapEngine({}).Restore("garbage").ok());
}

// ---- issue 16: one track per vehicle, late points merged at their time ----

// A position as the terminal reported it.
struct Fix {
  int64_t ts;
  double lat, lon, speed;
};

// A truck's day: 10 s reports, mostly driving ~15 m east or north (a new 40 m cell every few
// points, a new 150 m cell every ten or so), sometimes standing, with a stop longer than
// max_gap_s (no dwell) and one longer than pass_gap_s (a new pass even in the same cell).
std::vector<Fix> Drive(uint32_t seed, int64_t t0, int count, const char* from = "ws7gr2my") {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> move(0, 9);
  LatLon at = Centre(from);
  std::vector<Fix> out;
  int64_t ts = t0;
  for (int i = 0; i < count; ++i) {
    out.push_back({ts, at.lat, at.lon, 5.0 + i % 30});
    int m = move(rng);
    if (m < 5) at.lon += 0.00015;
    else if (m < 8) at.lat += 0.00012;
    // else: standing
    ts += i == count / 3 ? 400'000 : i == 2 * count / 3 ? 700'000 : 10'000;
  }
  return out;
}

void Feed(HeatmapEngine& e, const std::string& vehicle, const Fix& f, bool backfill, int64_t now) {
  e.Position(e.Device(vehicle), false, f.ts, f.lat, f.lon, f.speed, backfill, now);
}

// The same fixes fed in time order to a fresh engine: what any arrival order must give.
struct Reference {
  std::vector<std::pair<std::string, Fix>> fixes;
  void Add(const std::string& vehicle, const std::vector<Fix>& f) {
    for (const Fix& x : f) fixes.push_back({vehicle, x});
  }
  std::unique_ptr<HeatmapEngine> Build(const HeatmapConfig& cfg, int64_t now) {
    std::stable_sort(fixes.begin(), fixes.end(), [](const auto& a, const auto& b) { return a.second.ts < b.second.ts; });
    auto e = std::make_unique<HeatmapEngine>(cfg);
    for (const auto& [v, f] : fixes) Feed(*e, v, f, false, now);
    return e;
  }
};

// Every window of every size over [from, to] and the state, at every precision.
void ExpectSameMaps(const HeatmapEngine& got, const HeatmapEngine& want, int64_t from, int64_t to, const std::string& what) {
  ASSERT_FALSE(want.Window(Layer::kVehicleCoverage, 86400, from, 8).cells.empty()) << what;
  for (Layer l : {Layer::kVehicleCoverage, Layer::kWorkers})
    for (int64_t size : want.config().windows_s)
      for (int64_t at = want.WindowStart(from, size); at <= to; at += size * 1000)
        for (int p = kCoarsestPrecision; p <= kStoragePrecision; ++p)
          ExpectSameCells(got.Window(l, size, at, p).cells, want.Window(l, size, at, p).cells,
                          what + " " + LayerName(l) + " " + std::to_string(size) + " at " + std::to_string(at) + " p" +
                              std::to_string(p));
  for (int p = kCoarsestPrecision; p <= kStoragePrecision; ++p)
    ExpectSameCells(got.State(Layer::kVehicleCoverage, p, to), want.State(Layer::kVehicleCoverage, p, to), what + " state");
}

// Sums of passes and dwell over a day window at one precision.
std::pair<double, double> Totals(const HeatmapEngine& e, int64_t at, int precision) {
  double passes = 0, dwell = 0;
  for (const CellOut& c : e.Window(Layer::kVehicleCoverage, 86400, at, precision).cells) {
    passes += c.value.extra[0];
    dwell += c.value.extra[1];
  }
  return {passes, dwell};
}

// Issue 16: a JT/T 808 blind-area batch was a stream of its own, so each batch re-entered its
// cells and the gap since the previous batch counted as dwell.
TEST(HeatmapTrack, ABlindAreaBatchBetweenLivePointsCountsAsIfItHadArrivedInOrder) {
  HeatmapConfig cfg;
  HeatmapEngine e(cfg);
  // Live: cell A, then B a minute later, then C (the network was gone in between).
  LatLon a = Centre("ws7gr2my"), b = Centre("ws7gr2mz"), c = Centre("ws7gr2qb");
  int64_t t0 = kNow - 2 * 3600'000;
  std::vector<Fix> live = {{t0, a.lat, a.lon, 10}, {t0 + 60'000, b.lat, b.lon, 12}, {t0 + 120'000, c.lat, c.lon, 14}};
  // What the terminal stored meanwhile: the way from A to B (through A and B) and from B to C,
  // through q8, the 40 m cell west of C.
  LatLon q8 = Centre("ws7gr2q8");
  std::vector<Fix> batch = {{t0 + 20'000, a.lat, a.lon, 8},  {t0 + 40'000, b.lat, b.lon, 9},
                            {t0 + 80'000, b.lat, b.lon, 11}, {t0 + 100'000, q8.lat, q8.lon, 13}};
  for (const Fix& f : live) Feed(e, "truck-1", f, false, f.ts);
  for (const Fix& f : batch) Feed(e, "truck-1", f, true, t0 + 130'000);
  Reference ref;
  ref.Add("truck-1", live);
  ref.Add("truck-1", batch);
  auto want = ref.Build(cfg, t0 + 130'000);
  ExpectSameMaps(e, *want, t0, t0 + 130'000, "A-B-C");
  // In time order: my, my, mz, mz, mz, q8, qb: 120 s of driving; entries into my, mz, q8 and qb
  // at precision 8, into ws7gr2m and ws7gr2q at 7.
  EXPECT_EQ(Totals(e, t0, 8), std::make_pair(4.0, 120.0));
  EXPECT_EQ(Totals(e, t0, 7), std::make_pair(2.0, 120.0));
  EXPECT_EQ(e.stats().late_merged, 4u);
  EXPECT_EQ(e.stats().late_untracked, 0u);

  // A longer drive: the network is lost twice; each batch arrives after the reconnect.
  HeatmapEngine f(cfg);
  auto day = Drive(1, kNow - 3 * 3600'000, 240);
  int64_t now = day.back().ts + 1000;
  for (size_t i = 0; i < day.size(); ++i) {
    bool blind = (i >= 30 && i < 75) || (i >= 150 && i < 154);
    if (!blind) Feed(f, "truck-1", day[i], false, day[i].ts);
    if (i == 80)
      for (size_t k = 30; k < 75; ++k) Feed(f, "truck-1", day[k], true, day[i].ts);
    if (i == 200)
      for (size_t k = 150; k < 154; ++k) Feed(f, "truck-1", day[k], true, day[i].ts);
  }
  Reference r2;
  r2.Add("truck-1", day);
  auto want2 = r2.Build(cfg, now);
  ExpectSameMaps(f, *want2, day.front().ts, now, "drive");
  // 239 intervals of 10 s but two stops longer than max_gap_s: 237 × 10 s of dwell.
  EXPECT_DOUBLE_EQ(Totals(f, day.front().ts, 7).second, 2370.0);
}

TEST(HeatmapTrack, BatchesInsideAGapBeforeTheFirstPointAndAcrossVehiclesMerge) {
  HeatmapConfig cfg;
  int64_t t0 = kNow - 5 * 3600'000;
  {  // A batch entirely between two live points.
    HeatmapEngine e(cfg);
    auto day = Drive(2, t0, 26);
    Feed(e, "truck-1", day.front(), false, day.front().ts);
    Feed(e, "truck-1", day.back(), false, day.back().ts);
    for (size_t i = 1; i + 1 < day.size(); ++i) Feed(e, "truck-1", day[i], true, day.back().ts + 5000);
    Reference ref;
    ref.Add("truck-1", day);
    ExpectSameMaps(e, *ref.Build(cfg, day.back().ts + 5000), t0, day.back().ts, "inside a gap");
  }
  {  // The truck's first points were in a blind area: the batch is older than the whole track.
    HeatmapEngine e(cfg);
    auto day = Drive(3, t0, 60);
    for (size_t i = 20; i < day.size(); ++i) Feed(e, "truck-1", day[i], false, day[i].ts);
    for (size_t i = 0; i < 20; ++i) Feed(e, "truck-1", day[i], true, day.back().ts);
    Reference ref;
    ref.Add("truck-1", day);
    ExpectSameMaps(e, *ref.Build(cfg, day.back().ts), t0, day.back().ts, "before the first point");
  }
  {  // Two trucks, both back from a blind area; their batches arrive interleaved.
    HeatmapEngine e(cfg);
    auto one = Drive(4, t0, 90), two = Drive(5, t0 + 3000, 90, "ws7gr2qb");
    for (size_t i = 0; i < 90; ++i) {
      if (i < 20 || i >= 60) {
        Feed(e, "truck-1", one[i], false, one[i].ts);
        Feed(e, "truck-2", two[i], false, two[i].ts);
      }
      if (i == 70)
        for (size_t k = 20; k < 60; ++k) {
          Feed(e, "truck-2", two[k], true, two[i].ts);
          Feed(e, "truck-1", one[k], true, two[i].ts);
        }
    }
    Reference ref;
    ref.Add("truck-1", one);
    ref.Add("truck-2", two);
    ExpectSameMaps(e, *ref.Build(cfg, two.back().ts), t0, two.back().ts, "two trucks");
  }
  {  // Any arrival order at all gives the map of the time order.
    HeatmapEngine e(cfg);
    auto day = Drive(6, t0, 300);
    auto shuffled = day;
    std::shuffle(shuffled.begin(), shuffled.end(), std::mt19937(11));
    for (const Fix& f : shuffled) Feed(e, "truck-1", f, true, day.back().ts);
    Reference ref;
    ref.Add("truck-1", day);
    ExpectSameMaps(e, *ref.Build(cfg, day.back().ts), t0, day.back().ts, "shuffled");
  }
}

TEST(HeatmapTrack, PointsReportedTwiceCountOnce) {
  HeatmapConfig cfg;
  HeatmapEngine e(cfg);
  int64_t t0 = kNow - 3600'000;
  auto day = Drive(7, t0, 80);
  int64_t now = day.back().ts;
  for (size_t i = 0; i < day.size(); ++i) {
    if (i >= 20 && i < 40) continue;
    Feed(e, "truck-1", day[i], false, day[i].ts);
    if (i % 10 == 0) Feed(e, "truck-1", day[i], false, day[i].ts);  // a live point delivered again
  }
  // The blind-area batch, sent again because its acknowledgement was lost.
  for (int round = 0; round < 2; ++round)
    for (size_t i = 20; i < 40; ++i) Feed(e, "truck-1", day[i], true, now);
  Reference ref;
  ref.Add("truck-1", day);
  auto want = ref.Build(cfg, now);
  ExpectSameMaps(e, *want, t0, now, "duplicates");
  EXPECT_EQ(e.stats().points, want->stats().points);
  EXPECT_EQ(e.stats().duplicates, 6u + 20u);
}

TEST(HeatmapTrack, LatePointsAfterARestartMergeAsWithoutIt) {
  HeatmapConfig cfg;
  int64_t t0 = kNow - 4 * 3600'000;
  auto one = Drive(8, t0, 200), two = Drive(9, t0 + 1000, 200, "ws7gr2qb");
  int64_t now = one.back().ts + 2000;
  HeatmapEngine kept(cfg), before(cfg);
  auto live = [&](HeatmapEngine& e, size_t from, size_t to) {
    for (size_t i = from; i < to; ++i) {
      if (i >= 50 && i < 120) continue;  // both trucks in a blind area
      Feed(e, "truck-1", one[i], false, one[i].ts);
      Feed(e, "truck-2", two[i], false, two[i].ts);
    }
  };
  auto batch = [&](HeatmapEngine& e, size_t from, size_t to) {
    for (size_t i = from; i < to; ++i) {
      Feed(e, "truck-1", one[i], true, now);
      Feed(e, "truck-2", two[i], true, now);
    }
  };
  live(kept, 0, 150);
  live(before, 0, 150);
  batch(kept, 50, 80);  // part of the batch before the restart, the rest after
  batch(before, 50, 80);
  kept.TakeClosed(one[150].ts);
  before.TakeClosed(one[150].ts);
  HeatmapEngine after(cfg);
  ASSERT_TRUE(after.Restore(before.Snapshot()).ok());
  for (HeatmapEngine* e : {&kept, &after}) {
    batch(*e, 80, 120);
    live(*e, 150, 200);
  }
  Reference ref;
  ref.Add("truck-1", one);
  ref.Add("truck-2", two);
  auto want = ref.Build(cfg, now);
  ExpectSameMaps(after, *want, t0, now, "restored");
  ExpectSameMaps(after, kept, t0, now, "restored vs kept");
}

// A late point changes the dwell and passes of the point after it, which may lie in a window
// already published as closed: that window is published again, amended.
TEST(HeatmapTrack, AMergeAmendsTheClosedWindowOfTheNextPoint) {
  HeatmapConfig cfg;
  cfg.windows_s = {900};
  HeatmapEngine e(cfg);
  LatLon a = Centre("ws7gr2my"), b = Centre("ws7gr2qb");
  // A at 14:58, B at 15:02 (another window); the late point is at 14:59:30, in A's window.
  int64_t a_ts = kNow - 62 * kMin, b_ts = kNow - 58 * kMin, late = kNow - 60 * kMin - 30'000;
  e.Position(e.Device("truck-1"), false, a_ts, a.lat, a.lon, 10.0, false, a_ts);
  e.Position(e.Device("truck-1"), false, b_ts, b.lat, b.lon, 10.0, false, b_ts);
  ASSERT_EQ(e.TakeClosed(kNow).size(), 2u);
  e.Position(e.Device("truck-1"), false, late, b.lat, b.lon, 10.0, true, kNow);
  auto closed = e.TakeClosed(kNow + 1000);
  ASSERT_EQ(closed.size(), 2u);
  for (const auto& c : closed) EXPECT_TRUE(c.amended);
  // B is no longer an entry into its cell (the truck was there 2.5 min before) and its dwell is
  // 150 s instead of 240 s; the late point has the entry and 90 s.
  auto wb = e.Window(Layer::kVehicleCoverage, 900, b_ts, 8);
  ASSERT_EQ(wb.cells.size(), 1u);
  EXPECT_DOUBLE_EQ(wb.cells[0].value.extra[0], 0.0);
  EXPECT_DOUBLE_EQ(wb.cells[0].value.extra[1], 150.0);
  auto wa = e.Window(Layer::kVehicleCoverage, 900, late, 8);
  const CellOut* late_cell = Find(wa.cells, "ws7gr2qb");
  ASSERT_NE(late_cell, nullptr);
  EXPECT_DOUBLE_EQ(late_cell->value.extra[0], 1.0);
  EXPECT_DOUBLE_EQ(late_cell->value.extra[1], 90.0);
}

// The track is bounded (kTrackPoints); a point older than all it kept is a sample only.
TEST(HeatmapTrack, ATrackKeepsItsNewestPointsAndOlderOnesAreSamplesOnly) {
  HeatmapConfig cfg;
  HeatmapEngine e(cfg), want(cfg);
  const int count = static_cast<int>(kTrackPoints) + 100;
  auto day = Drive(10, kNow - 20 * 3600'000, count);  // ~12 h of 10 s reports, within retention
  const size_t old_point = 5, recent = static_cast<size_t>(count) - 50;
  for (size_t i = 0; i < day.size(); ++i) {
    if (i != old_point) Feed(want, "truck-1", day[i], false, day[i].ts);
    if (i != old_point && i != recent) Feed(e, "truck-1", day[i], false, day[i].ts);
  }
  int64_t now = day.back().ts;
  auto before = Totals(e, now, 8);
  auto samples = [&] {
    uint64_t n = 0;
    for (const CellOut& c : e.Window(Layer::kVehicleCoverage, 86400, day[old_point].ts, 8).cells) n += c.value.agg.n;
    return n;
  };
  uint64_t n_before = samples();
  // Long let go (the track keeps the newest kTrackPoints): counted, but no entry, no dwell.
  Feed(e, "truck-1", day[old_point], true, now);
  EXPECT_EQ(e.stats().late_untracked, 1u);
  EXPECT_EQ(samples(), n_before + 1);
  EXPECT_EQ(Totals(e, now, 8), before);
  // Within the kept track: merged as usual.
  Feed(e, "truck-1", day[recent], true, now);
  EXPECT_EQ(e.stats().late_merged, 1u);
  int64_t from = want.WindowStart(day[old_point].ts, 900) + 900'000;
  for (int64_t at = from; at <= now; at += 900'000)
    ExpectSameCells(e.Window(Layer::kVehicleCoverage, 900, at, 8).cells, want.Window(Layer::kVehicleCoverage, 900, at, 8).cells,
                    "at " + std::to_string(at));
}

// A snapshot of the previous format (a live and a back-fill stream per vehicle, their last
// point each) is still read: the track goes on from the newest point.
TEST(HeatmapTrack, ASnapshotOfTheFormerFormatIsStillRead) {
  HeatmapConfig cfg;
  LatLon p = Centre("ws7gr2my");
  uint64_t cell = Encode(p.lat, p.lon, 8);
  int64_t last = kNow - 60'000;
  std::string v1("SGHM1", 6);
  auto put = [&](const auto& v) { v1.append(reinterpret_cast<const char*>(&v), sizeof v); };
  put(int32_t{0}), put(cfg.utc_offset_s), put(static_cast<uint32_t>(cfg.windows_s.size()));
  for (int64_t size : cfg.windows_s) put(size);
  put(uint32_t{1}), put(uint32_t{7});
  v1 += "truck-1";
  struct OldTrack {
    int64_t ts;
    uint64_t cell;
    bool valid;
  };
  OldTrack live, backfill;
  std::memset(&live, 0, sizeof live), std::memset(&backfill, 0, sizeof backfill);
  live = {last, cell, true};
  backfill = {last - 3600'000, cell, true};
  put(live), put(backfill);
  put(true), put(false), put(last), put(cell), put(20.0);                // position
  put(false), put(int64_t{0}), put(uint64_t{0}), put(0.0);              // fill
  put(false), put(int64_t{0}), put(uint64_t{0}), put(uint32_t{0});      // overflow, alarms
  for (int l = 0; l < kLayerCount; ++l) put(uint32_t{0});                // no windows
  put(uint64_t{0});                                                      // last vehicle per cell
  for (int i = 0; i < 7; ++i) put(uint64_t{i == 0 ? 1u : 0u});           // stats
  HeatmapEngine e(cfg);
  ASSERT_TRUE(e.Restore(v1).ok());
  EXPECT_EQ(e.stats().points, 1u);
  EXPECT_EQ(e.State(Layer::kVehicleCoverage, 8, kNow).size(), 1u);
  e.Position(e.Device("truck-1"), false, last + 10'000, p.lat, p.lon, 20.0, false, kNow);  // goes on: 10 s, no entry
  e.Position(e.Device("truck-1"), false, last - 5'000, p.lat, p.lon, 20.0, true, kNow);    // before it: unknown
  EXPECT_EQ(e.stats().late_untracked, 1u);
  auto w = e.Window(Layer::kVehicleCoverage, 86400, last, 8);
  ASSERT_EQ(w.cells.size(), 1u);
  EXPECT_EQ(w.cells[0].value.agg.n, 2u);
  EXPECT_DOUBLE_EQ(w.cells[0].value.extra[0], 0.0);
  EXPECT_DOUBLE_EQ(w.cells[0].value.extra[1], 10.0);
  // And the current format round-trips the track.
  HeatmapEngine again(cfg);
  ASSERT_TRUE(again.Restore(e.Snapshot()).ok());
  again.Position(again.Device("truck-1"), false, last + 20'000, p.lat, p.lon, 20.0, false, kNow);
  EXPECT_DOUBLE_EQ(again.Window(Layer::kVehicleCoverage, 86400, last, 8).cells[0].value.extra[1], 20.0);
}

TEST(HeatmapFeed, FeedJsonRoundTripsThroughParseCells) {
  HeatmapEngine e({});
  auto truck = e.Device("truck");
  LatLon p = Centre("ws7gr2my");
  e.Position(truck, false, kNow - 20'000, p.lat, p.lon, 12.5, false, kNow);
  e.Position(truck, false, kNow - 10'000, p.lat, p.lon, 13.0, false, kNow);
  auto doc = FeedJson(e, "houpu", Layer::kVehicleCoverage, kNow - 1);  // the 15-minute window ending at kNow
  EXPECT_EQ(doc["v"], 1);
  EXPECT_EQ(doc["layer"], "vehicle_coverage");
  EXPECT_EQ(doc["precision"], 7);
  EXPECT_EQ(doc["fields"], nlohmann::json({"n", "sum", "min", "max", "first", "last", "passes", "dwell_s"}));
  EXPECT_EQ(doc["merge"], nlohmann::json({"add", "add", "min", "max", "min", "max", "add", "add"}));
  ASSERT_EQ(doc["windows"].size(), 3u);
  const auto& w15 = doc["windows"][0];
  EXPECT_EQ(w15["size_s"], 900);
  EXPECT_EQ(w15["cells"]["ws7gr2m"], nlohmann::json({2, 25.5, 12.5, 13, kNow - 20'000, kNow - 10'000, 1, 10}));
  auto parsed = ParseCells(doc["fields"], w15["cells"], Layer::kVehicleCoverage);
  ASSERT_TRUE(parsed.has_value());
  EXPECT_EQ(*parsed, e.Window(Layer::kVehicleCoverage, 900, kNow - 1, 7).cells);
  nlohmann::json bad = w15;
  bad["cells"]["ws7gr2m"] = {1, 2};
  EXPECT_FALSE(ParseCells(doc["fields"], bad["cells"], Layer::kVehicleCoverage).has_value());
  bad["cells"] = {{"ws7gr2a", {1, 1, 1, 1, 1, 1, 0, 0}}};  // 'a' is not geohash
  EXPECT_FALSE(ParseCells(doc["fields"], bad["cells"], Layer::kVehicleCoverage).has_value());
  auto unattended = FeedJson(e, "houpu", Layer::kUnattended, kNow);
  EXPECT_TRUE(unattended["windows"].empty());
  EXPECT_TRUE(unattended["state"]["cells"].empty());
}

}  // namespace
}  // namespace sanigate::heatmap
