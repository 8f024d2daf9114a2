// sanictl heatmap's pure rendering (fleet/ctl/heatmap_render.h, png_writer.h) from hand-written
// admin `heatmap` results: geohash rectangles in GeoJSON (checked against bounds computed by hand
// from the geohash definition, and by tests/schema/validate_geojson.py), CSV, the terminal map,
// the PNG picture (decoded back with libpng), the command-line values, and bad input.
#include <png.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "ctl/heatmap_render.h"
#include "ctl/png_writer.h"
#include "heatmap/geohash.h"

namespace sanigate::ctl {
namespace {

using json = nlohmann::json;
using ordered_json = nlohmann::ordered_json;

// ---- hand-computed geohash rectangles ----
//
// A geohash is base32 ("0123456789bcdefghjkmnpqrstuvwxyz", 5 bits per character); its bits,
// from the first, alternate longitude, latitude, longitude, ... Each longitude bit halves the
// current longitude interval (starting at [-180, 180]): 1 keeps the upper half, 0 the lower; the
// same for latitude starting at [-90, 90]. After k bits an axis index i gives the interval
// [lo + i * span / 2^k, lo + (i + 1) * span / 2^k].
//
// "wsk52": w=28=11100 s=24=11000 k=18=10010 5=00101 2=00010
//   bits 11100 11000 10010 00101 00010 (25): longitude = bits 0,2,4,..,24 (13 bits),
//   latitude = bits 1,3,..,23 (12 bits).
//   longitude bits 1101010000000 = 6784 → -180 + 6784 * 360/8192 = 118.125,
//     width 360/8192 = 0.0439453125 → [118.125, 118.1689453125]
//   latitude bits 101000101101 = 2605 → -90 + 2605 * 180/4096 = 24.4775390625,
//     height 180/4096 = 0.0439453125 → [24.4775390625, 24.521484375]
constexpr double kWsk52LatMin = 24.4775390625, kWsk52LatMax = 24.521484375;
constexpr double kWsk52LonMin = 118.125, kWsk52LonMax = 118.1689453125;
//
// Precision 7 near Xiamen (24.48 N, 118.10 E): 35 bits, longitude 18 bits, latitude 17 bits,
// both steps 360/2^18 = 180/2^17 = 0.001373291015625 degrees.
//   longitude index floor((118.10 + 180) / 0.001373291015625) = floor(217069.79…) = 217069
//     → [-180 + 217069 * step, + step] = [118.098907470703125, 118.10028076171875]
//   latitude index floor((24.48 + 90) / 0.001373291015625) = floor(83361.79…) = 83361
//     → [-90 + 83361 * step, + step] = [24.478912353515625, 24.48028564453125]
//   interleaved (longitude first) and read 5 bits at a time: 11100 11000 00111 01111 10111
//   00010 10011 = w s 7 g r 2 m → "ws7gr2m".
constexpr const char* kXiamen7 = "ws7gr2m";
constexpr double kX7LatMin = 24.478912353515625, kX7LatMax = 24.48028564453125;
constexpr double kX7LonMin = 118.098907470703125, kX7LonMax = 118.10028076171875;

constexpr int64_t kTs = 1763712005000;     // 2025-11-21 08:00:05 UTC
constexpr int64_t kStart = 1763708400000;  // 2025-11-21 07:00:00 UTC
constexpr int64_t kEnd = 1763712000000;    // 2025-11-21 08:00:00 UTC

const json kFields = {"n", "sum", "min", "max", "first", "last"};
const json kMerge = {"add", "add", "min", "max", "min", "max"};

// A result as sanifleet sends it: the feed header, window, cells.
json HeatDoc(const std::string& layer, json cells, json fields = kFields, json merge = kMerge, json window = nullptr) {
  return {{"v", 1},
          {"site", "houpu"},
          {"layer", layer},
          {"ts", kTs},
          {"grid", "geohash"},
          {"precision", 7},
          {"crs", "wgs84"},
          {"fields", std::move(fields)},
          {"merge", std::move(merge)},
          {"window", std::move(window)},
          {"cells", std::move(cells)}};
}

HeatmapResult Parsed(const json& doc) {
  auto r = ParseHeatmapResult(doc);
  EXPECT_TRUE(r.ok()) << r.status().message();
  return r.ok() ? r.value() : HeatmapResult{};
}

std::string Neighbour(const std::string& id, int dlat, int dlon) {
  auto cell = heatmap::Parse(id);
  auto n = heatmap::Neighbour(*cell, static_cast<int>(id.size()), dlat, dlon);
  return heatmap::ToString(*n, static_cast<int>(id.size()));
}

// A bin_fill state: a block of rows x cols precision-7 cells with its south-west corner at
// kXiamen7; the cell (hot_row, hot_col) (row 0 = south) is the fullest.
json BinFillBlock(int rows, int cols, int hot_row, int hot_col) {
  json cells = json::object();
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c) {
      double fill = (r == hot_row && c == hot_col) ? 97.5 : 10.0 + (r * cols + c) % 7;  // ≤ 16
      cells[Neighbour(kXiamen7, r, c)] = {2, 2 * fill, fill, fill, kStart, kEnd};
    }
  return HeatDoc("bin_fill", cells);
}

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

class HeatmapRenderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    setenv("TZ", "UTC", 1);
    tzset();
  }
};

// ---- GeoJSON ----

TEST_F(HeatmapRenderTest, GeoJsonPolygonsAreTheHandComputedGeohashRectangles) {
  HeatmapResult r = Parsed(HeatDoc("vehicle_coverage", {{"wsk52", {4, 120.0, 10.0, 45.0, kStart, kEnd}},
                                                        {kXiamen7, {1, 0.0, 0.0, 0.0, kStart, kStart}}}));
  ordered_json g = ToGeoJson(r);
  ASSERT_EQ(g["type"], "FeatureCollection");
  ASSERT_EQ(g["features"].size(), 2u);

  auto expect_rect = [](const ordered_json& f, const std::string& id, double lat0, double lat1, double lon0,
                        double lon1) {
    EXPECT_EQ(f["type"], "Feature");
    EXPECT_EQ(f["id"], id);
    EXPECT_EQ(f["properties"]["cell"], id);
    ASSERT_EQ(f["geometry"]["type"], "Polygon");
    const auto& rings = f["geometry"]["coordinates"];
    ASSERT_EQ(rings.size(), 1u);
    const auto& ring = rings[0];
    ASSERT_EQ(ring.size(), 5u);
    // [lon, lat], counterclockwise from the south-west corner, closed.
    const double expected[5][2] = {{lon0, lat0}, {lon1, lat0}, {lon1, lat1}, {lon0, lat1}, {lon0, lat0}};
    for (size_t i = 0; i < 5; ++i) {
      EXPECT_DOUBLE_EQ(ring[i][0].get<double>(), expected[i][0]) << id << " position " << i;
      EXPECT_DOUBLE_EQ(ring[i][1].get<double>(), expected[i][1]) << id << " position " << i;
    }
  };
  // Features come sorted by cell id: "ws7gr2m" < "wsk52".
  expect_rect(g["features"][0], kXiamen7, kX7LatMin, kX7LatMax, kX7LonMin, kX7LonMax);
  expect_rect(g["features"][1], "wsk52", kWsk52LatMin, kWsk52LatMax, kWsk52LonMin, kWsk52LonMax);

  // bbox = [west, south, east, north] over both cells.
  ASSERT_EQ(g["bbox"].size(), 4u);
  EXPECT_DOUBLE_EQ(g["bbox"][0].get<double>(), kX7LonMin);
  EXPECT_DOUBLE_EQ(g["bbox"][1].get<double>(), kWsk52LatMin);
  EXPECT_DOUBLE_EQ(g["bbox"][2].get<double>(), kWsk52LonMax);
  EXPECT_DOUBLE_EQ(g["bbox"][3].get<double>(), kWsk52LatMax);
}

TEST_F(HeatmapRenderTest, GeoJsonPropertiesCarryEveryFieldByNameAndTheWindow) {
  json fields = {"n", "sum", "min", "max", "first", "last", "passes", "dwell_s"};
  json merge = {"add", "add", "min", "max", "min", "max", "add", "add"};
  json window = {{"size_s", 3600}, {"start", kStart}, {"end", kEnd}};
  HeatmapResult r = Parsed(
      HeatDoc("vehicle_coverage", {{"wsk52", {4, 120.5, 10.0, 45.0, kStart, kEnd, 2, 310}}}, fields, merge, window));
  ordered_json g = ToGeoJson(r);
  const auto& p = g["features"][0]["properties"];
  EXPECT_EQ(p["n"], 4);
  EXPECT_EQ(p["sum"], 120.5);
  EXPECT_EQ(p["min"], 10.0);
  EXPECT_EQ(p["max"], 45.0);
  EXPECT_EQ(p["first"], kStart);
  EXPECT_EQ(p["last"], kEnd);
  EXPECT_EQ(p["passes"], 2);
  EXPECT_EQ(p["dwell_s"], 310);
  EXPECT_DOUBLE_EQ(p["mean"].get<double>(), 120.5 / 4);
  EXPECT_EQ(p["layer"], "vehicle_coverage");
  EXPECT_EQ(p["site"], "houpu");
  EXPECT_EQ(p["crs"], "wgs84");
  EXPECT_EQ(p["window_size_s"], 3600);
  EXPECT_EQ(p["window_start"], kStart);
  EXPECT_EQ(p["window_end"], kEnd);
  EXPECT_EQ(g["sanigate"]["coordinates"], "WGS-84");
  EXPECT_EQ(g["sanigate"]["window"]["size_s"], 3600);
  EXPECT_EQ(g["sanigate"]["fields"], fields);
  EXPECT_FALSE(g.contains("crs"));

  // The state has no window: null start and end.
  ordered_json s = ToGeoJson(Parsed(HeatDoc("vehicle_coverage", {{"wsk52", {1, 3.0, 3.0, 3.0, kStart, kStart}}})));
  EXPECT_TRUE(s["features"][0]["properties"]["window_start"].is_null());
  EXPECT_TRUE(s["sanigate"]["window"].is_null());
}

TEST_F(HeatmapRenderTest, Gcj02IsSaidInThePropertiesAndAForeignMemberNotInACrsMember) {
  json doc = HeatDoc("bin_fill", {{"wsk52", {1, 50.0, 50.0, 50.0, kStart, kStart}}});
  doc["crs"] = "gcj02";
  ordered_json g = ToGeoJson(Parsed(doc));
  EXPECT_FALSE(g.contains("crs"));
  EXPECT_EQ(g["sanigate"]["crs"], "gcj02");
  EXPECT_EQ(g["sanigate"]["coordinates"], "GCJ-02");
  EXPECT_EQ(g["features"][0]["properties"]["crs"], "gcj02");
}

// Runs the repository's RFC 7946 validator on `text`; returns its exit status.
int RunValidator(const std::string& text, std::string* output) {
  std::string dir = ::testing::TempDir();
  std::string file = dir + "/sanictl_heatmap_" + std::to_string(::getpid()) + ".geojson";
  std::string out_file = file + ".out";
  {
    std::ofstream f(file);
    f << text;
  }
  std::string cmd =
      "python3 " SANIGATE_SOURCE_DIR "/tests/schema/validate_geojson.py '" + file + "' > '" + out_file + "' 2>&1";
  int status = std::system(cmd.c_str());
  std::ifstream o(out_file);
  std::stringstream ss;
  ss << o.rdbuf();
  if (output) *output = ss.str();
  std::remove(file.c_str());
  std::remove(out_file.c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST_F(HeatmapRenderTest, ExportedGeoJsonPassesTheRfc7946Validator) {
  json fields = {"n", "sum", "min", "max", "first", "last", "sos", "fire", "odour"};
  json merge = {"add", "add", "min", "max", "min", "max", "add", "add", "add"};
  json cells = json::object();
  cells["wsk52"] = {3, 3, 1, 1, kStart, kEnd, 1, 2, 0};
  cells[kXiamen7] = {1, 1, 1, 1, kStart, kStart, 0, 0, 1};
  cells["ws7gr2"] = {0, 0, nullptr, nullptr, nullptr, nullptr, 0, 0, 0};
  std::string text = ToGeoJson(Parsed(HeatDoc("alarms", cells, fields, merge))).dump();
  std::string out;
  EXPECT_EQ(RunValidator(text, &out), 0) << out;

  // And the validator does reject a clockwise ring: the exported one reversed.
  json bad = json::parse(text);
  auto& ring = bad["features"][0]["geometry"]["coordinates"][0];
  std::reverse(ring.begin(), ring.end());
  EXPECT_NE(RunValidator(bad.dump(), &out), 0);
  EXPECT_NE(out.find("clockwise"), std::string::npos) << out;
}

// ---- CSV ----

TEST_F(HeatmapRenderTest, CsvHasAHeaderAndOneRowPerCellWithBoundsCentreFieldsAndMean) {
  json fields = {"n", "sum", "min", "max", "first", "last", "cleared"};
  json merge = {"add", "add", "min", "max", "min", "max", "add"};
  HeatmapResult r = Parsed(HeatDoc("overflow",
                                   {{"wsk52", {4, 4, 1, 1, kStart, kEnd, 3}},  // mean 1
                                    {kXiamen7, {0, 0, nullptr, nullptr, nullptr, nullptr, 0}}},
                                   fields, merge));
  auto lines = Lines(ToCsv(r));
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[0], "cell,lat_min,lat_max,lon_min,lon_max,lat,lon,n,sum,min,max,first,last,cleared,mean");
  EXPECT_EQ(lines[1],
            "ws7gr2m,24.478912353515625,24.48028564453125,118.09890747070312,118.10028076171875,"
            "24.479598999023438,118.09959411621094,0,0,,,,,0,");
  EXPECT_EQ(lines[2],
            "wsk52,24.4775390625,24.521484375,118.125,118.1689453125,24.49951171875,118.14697265625,"
            "4,4,1,1,1763708400000,1763712000000,3,1");
}

TEST_F(HeatmapRenderTest, CsvQuotesFieldNamesThatNeedIt) {
  json fields = {"n", "sum", "a,b"};
  json merge = {"add", "add", "add"};
  auto lines = Lines(ToCsv(Parsed(HeatDoc("alarms", {{"wsk52", {1, 1, 2}}}, fields, merge))));
  EXPECT_EQ(lines[0], "cell,lat_min,lat_max,lon_min,lon_max,lat,lon,n,sum,\"a,b\",mean");
}

// ---- show: table and terminal map ----

TEST_F(HeatmapRenderTest, TheTableRanksByTheLayersIntensityAndFindsFieldsByName) {
  // Fields in an unusual order: everything must be found by name.
  json fields = {"last", "dwell_s", "max", "sum", "passes", "min", "n", "first"};
  json merge = {"max", "add", "max", "add", "add", "min", "add", "min"};
  json cells = {{"wsk52", {kEnd, 600, 40.0, 100.0, 3, 5.0, 4, kStart}},  // n 4, mean 25
                {"wsk53", {kEnd, 60, 30.0, 270.0, 1, 20.0, 9, kStart}},  // n 9, mean 30
                {"wsk51", {kEnd, 30, 90.0, 90.0, 1, 90.0, 1, kStart}}};  // n 1, mean 90
  HeatmapResult r = Parsed(HeatDoc("vehicle_coverage", cells, fields, merge));
  Table t = TopCellsTable(r, DefaultMetric("vehicle_coverage"), 10);
  EXPECT_EQ(t.headers, (std::vector<std::string>{"CELL", "CENTER", "N", "MEAN", "MAX", "DWELL_S", "PASSES", "LAST"}));
  ASSERT_EQ(t.rows.size(), 3u);
  EXPECT_EQ(t.rows[0][0].text, "wsk53");  // the most samples first
  EXPECT_EQ(t.rows[1][0].text, "wsk52");
  EXPECT_EQ(t.rows[2][0].text, "wsk51");
  EXPECT_EQ(t.rows[1][2].text, "4");
  EXPECT_EQ(t.rows[1][3].text, "25");
  EXPECT_EQ(t.rows[1][4].text, "40");
  EXPECT_EQ(t.rows[1][5].text, "10m 00s");  // dwell_s as a duration
  EXPECT_EQ(t.rows[1][6].text, "3");
  EXPECT_EQ(t.rows[1][7].text, "2025-11-21 08:00:00");

  // By mean (bin_fill's default) the order turns around; --top cuts it.
  Table by_mean = TopCellsTable(r, "mean", 2);
  ASSERT_EQ(by_mean.rows.size(), 2u);
  EXPECT_EQ(by_mean.rows[0][0].text, "wsk51");
  EXPECT_EQ(by_mean.rows[1][0].text, "wsk53");
}

TEST_F(HeatmapRenderTest, DefaultIntensityPerLayer) {
  EXPECT_EQ(DefaultMetric("bin_fill"), "mean");
  EXPECT_EQ(DefaultMetric("unattended"), "sum");
  for (const char* counter : {"vehicle_coverage", "workers", "overflow", "alarms"})
    EXPECT_EQ(DefaultMetric(counter), "n");

  // unattended: value = seconds waiting; the table adds a SUM column and shows durations.
  json fields = {"n", "sum", "min", "max", "first", "last", "last_pass"};
  json merge = {"add", "add", "min", "max", "min", "max", "max"};
  HeatmapResult r = Parsed(HeatDoc("unattended",
                                   {{"wsk52", {1, 9000, 9000, 9000, kStart, kStart, nullptr}},
                                    {"wsk53", {2, 16000, 7200, 8800, kStart, kStart, kStart}}},
                                   fields, merge));
  Table t = TopCellsTable(r, "sum", 10);
  EXPECT_EQ(t.headers, (std::vector<std::string>{"CELL", "CENTER", "N", "MEAN", "MAX", "SUM", "LAST_PASS", "LAST"}));
  EXPECT_EQ(t.rows[0][0].text, "wsk53");
  EXPECT_EQ(t.rows[0][5].text, "4h 26m");
  EXPECT_EQ(t.rows[1][6].text, "-");
}

TEST_F(HeatmapRenderTest, TerminalMapFitsTheBoxAndTheHottestCellIsTheDarkest) {
  // 2 rows x 3 columns of precision-7 cells: at 24.5 N a cell wants 2 columns per row.
  HeatmapResult r = Parsed(BinFillBlock(2, 3, /*hot_row=*/1, /*hot_col=*/2));
  TermMapOptions o;
  TermMap m = RenderTermMap(r, o);
  ASSERT_EQ(m.rows, 2);
  ASSERT_EQ(m.cols, 6);
  ASSERT_EQ(m.grid.size(), 2u);
  for (const auto& row : m.grid) EXPECT_EQ(row.size(), 6u);
  // North up: the hot cell (northern row, eastern column) is the top right pair, '@'.
  EXPECT_EQ(m.grid[0].substr(4, 2), "@@");
  EXPECT_EQ(std::count(m.grid[0].begin(), m.grid[0].end(), '@') + std::count(m.grid[1].begin(), m.grid[1].end(), '@'),
            2);
  EXPECT_EQ(m.grid[1].find(' '), std::string::npos);  // every character is over a cell

  auto text = Lines(m.Text());
  ASSERT_EQ(text.size(), 2u + 2 + 1 + 1);  // frame top, 2 rows, frame bottom, longitudes, legend
  EXPECT_NE(text[0].find("+------+"), std::string::npos);
  EXPECT_NE(text[1].find("|" + m.grid[0] + "|"), std::string::npos);
  EXPECT_NE(text.back().find("97.5"), std::string::npos) << text.back();  // the legend's top value
  EXPECT_NE(text.back().find("mean per cell"), std::string::npos) << text.back();
}

TEST_F(HeatmapRenderTest, ALargeBoxIsMergedToAbout60By20) {
  // 50 rows x 120 columns of cells; the hottest somewhere in the middle.
  HeatmapResult r = Parsed(BinFillBlock(50, 120, 31, 77));
  TermMap m = RenderTermMap(r, TermMapOptions{});
  EXPECT_LE(m.cols, 60);
  EXPECT_LE(m.rows, 20);
  EXPECT_GE(m.cols, 30);
  EXPECT_GE(m.rows, 10);
  ASSERT_EQ(m.grid.size(), static_cast<size_t>(m.rows));
  int darkest = 0;
  for (const auto& row : m.grid) {
    EXPECT_EQ(row.size(), static_cast<size_t>(m.cols));
    darkest += static_cast<int>(std::count(row.begin(), row.end(), '@'));
  }
  EXPECT_EQ(darkest, 1);  // only the character holding the hot cell
  EXPECT_NE(m.legend.find("hottest cell"), std::string::npos) << m.legend;

  // Unicode shades: the same grid, each character one of " ·░▒▓█", the hottest "█".
  TermMapOptions u;
  u.unicode = true;
  TermMap mu = RenderTermMap(r, u);
  EXPECT_EQ(mu.rows, m.rows);
  EXPECT_EQ(mu.cols, m.cols);
  int full = 0;
  for (const auto& row : mu.grid) {
    EXPECT_EQ(DisplayWidth(row), static_cast<size_t>(mu.cols));
    for (size_t at = 0; (at = row.find("█", at)) != std::string::npos; at += 3) ++full;
  }
  EXPECT_EQ(full, 1);
}

TEST_F(HeatmapRenderTest, NarrowTallBoxesStayWithinTheLimits) {
  HeatmapResult r = Parsed(BinFillBlock(80, 1, 40, 0));
  TermMap m = RenderTermMap(r, TermMapOptions{});
  EXPECT_LE(m.rows, 20);
  EXPECT_GE(m.cols, 1);
  EXPECT_LE(m.cols, 60);
}

// ---- missing and empty cells ----

TEST_F(HeatmapRenderTest, MissingOrEmptyCellsRenderAsNothingNotAnError) {
  json no_cells = HeatDoc("overflow", json::object());
  json absent = no_cells;
  absent.erase("cells");
  json null_cells = no_cells;
  null_cells["cells"] = nullptr;
  for (const json& doc : {no_cells, absent, null_cells}) {
    HeatmapResult r = Parsed(doc);
    EXPECT_TRUE(r.cells.empty());
    ordered_json g = ToGeoJson(r);
    EXPECT_TRUE(g["features"].is_array());
    EXPECT_TRUE(g["features"].empty());
    EXPECT_FALSE(g.contains("bbox"));
    EXPECT_EQ(Lines(ToCsv(r)).size(), 1u);
    TermMap m = RenderTermMap(r, TermMapOptions{});
    EXPECT_EQ(m.rows, 0);
    EXPECT_EQ(m.Text(), "(no cells)\n");
    EXPECT_TRUE(TopCellsTable(r, "n", 10).rows.empty());
    auto pic = RenderHeatPicture(r, PictureOptions{});
    ASSERT_TRUE(pic.ok()) << pic.status().message();
    EXPECT_EQ(pic->image.width(), 800);
  }
  std::string out;
  EXPECT_EQ(RunValidator(ToGeoJson(Parsed(no_cells)).dump(), &out), 0) << out;
}

TEST_F(HeatmapRenderTest, CellsWithNoSamplesHaveNoMean) {
  HeatmapResult r = Parsed(HeatDoc("bin_fill", {{"wsk52", {0, 0, nullptr, nullptr, nullptr, nullptr}},
                                                {"wsk53", {1, 40.0, 40.0, 40.0, kStart, kStart}}}));
  EXPECT_FALSE(r.Mean(r.cells[0]).has_value());
  auto order = RankCells(r, "mean");
  EXPECT_EQ(r.cells[order[0]].id, "wsk53");  // cells without a value last
  EXPECT_TRUE(ToGeoJson(r)["features"][0]["properties"]["mean"].is_null());
  TermMap m = RenderTermMap(r, TermMapOptions{});
  EXPECT_EQ(m.rows, 1);
}

// ---- bad input ----

void ExpectInvalid(const json& doc, const std::string& words) {
  auto r = ParseHeatmapResult(doc);
  ASSERT_FALSE(r.ok()) << doc.dump();
  EXPECT_EQ(r.status().code(), Code::kInvalid);
  EXPECT_NE(r.status().message().find(words), std::string::npos) << r.status().message();
}

TEST_F(HeatmapRenderTest, BadResultsAreRefusedWithAClearMessage) {
  ExpectInvalid(json::array(), "not a JSON object");
  ExpectInvalid(json("ok"), "not a JSON object");
  json no_layer = HeatDoc("bin_fill", json::object());
  no_layer.erase("layer");
  ExpectInvalid(no_layer, "\"layer\"");
  json no_fields = HeatDoc("bin_fill", json::object());
  no_fields.erase("fields");
  ExpectInvalid(no_fields, "no \"fields\"");
  ExpectInvalid(HeatDoc("bin_fill", json::object(), json("n,sum")), "\"fields\" is not an array");
  ExpectInvalid(HeatDoc("bin_fill", json::object(), json{"n", 2}), "non-string");
  ExpectInvalid(HeatDoc("bin_fill", json::object(), json{"count", "total"}, json{"add", "add"}), "lacks \"n\"");
  ExpectInvalid(HeatDoc("bin_fill", json::object(), json{"n", "sum", "n"}, json{"add", "add", "add"}), "twice");
  ExpectInvalid(HeatDoc("bin_fill", json::object(), kFields, json{"add"}), "\"merge\" has 1 entries");
  ExpectInvalid(HeatDoc("bin_fill", json::array()), "\"cells\" is not an object");
  ExpectInvalid(HeatDoc("bin_fill", {{"wsk5a", {1, 1, 1, 1, 1, 1}}}), "\"wsk5a\" is not a geohash");
  ExpectInvalid(HeatDoc("bin_fill", {{"", {1, 1, 1, 1, 1, 1}}}), "is not a geohash");
  ExpectInvalid(HeatDoc("bin_fill", {{"wsk52gh0123456", {1, 1, 1, 1, 1, 1}}}), "is not a geohash");
  ExpectInvalid(HeatDoc("bin_fill", {{"wsk52", 5}}), "not an array");
  ExpectInvalid(HeatDoc("bin_fill", {{"wsk52", {{"n", 1}}}}), "not an array");
  ExpectInvalid(HeatDoc("bin_fill", {{"wsk52", {1, 2, 3}}}), "has 3 values, \"fields\" names 6");
  ExpectInvalid(HeatDoc("bin_fill", {{"wsk52", {1, "2", 3, 4, 5, 6}}}), "\"sum\" is not a number");
  ExpectInvalid(HeatDoc("bin_fill", {{"wsk52", {1, 1, 1, 1, 1, 1}}, {"WSK52", {1, 1, 1, 1, 1, 1}}}), "twice");
  ExpectInvalid(HeatDoc("bin_fill", json::object(), kFields, kMerge, json{{"size_s", 900}}), "\"window\" needs");
  json grid = HeatDoc("bin_fill", json::object());
  grid["grid"] = "h3";
  ExpectInvalid(grid, "only geohash");
}

TEST_F(HeatmapRenderTest, AnUnknownFieldNameAsIntensityIsAnErrorNotACrash) {
  HeatmapResult r = Parsed(HeatDoc("bin_fill", {{"wsk52", {1, 40.0, 40.0, 40.0, kStart, kStart}}}));
  Status s = CheckMetric(r, "fill_pct");
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("unknown field \"fill_pct\""), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("n, sum, min, max, first, last"), std::string::npos) << s.message();
  EXPECT_TRUE(CheckMetric(r, "max").ok());
  EXPECT_TRUE(CheckMetric(r, "mean").ok());
  PictureOptions o;
  o.metric = "fill_pct";
  EXPECT_FALSE(RenderHeatPicture(r, o).ok());
  // Unknown field names in a result are extras, found and shown by name.
  json fields = {"n", "sum", "min", "max", "first", "last", "brand_new"};
  json merge = {"add", "add", "min", "max", "min", "max", "add"};
  HeatmapResult x = Parsed(HeatDoc("alarms", {{"wsk52", {1, 1, 1, 1, kStart, kStart, 7}}}, fields, merge));
  EXPECT_EQ(x.Extras(), std::vector<std::string>{"brand_new"});
  EXPECT_EQ(ToGeoJson(x)["features"][0]["properties"]["brand_new"], 7);
}

// ---- render: PNG ----

struct Decoded {
  int width = 0, height = 0;
  std::vector<uint8_t> rgba;
  Rgba At(int x, int y) const {
    const uint8_t* p = &rgba[(static_cast<size_t>(y) * static_cast<size_t>(width) + static_cast<size_t>(x)) * 4];
    return {p[0], p[1], p[2], p[3]};
  }
};

// Reads a PNG with libpng (independently of the writer's code path).
bool DecodePng(const std::vector<uint8_t>& bytes, Decoded& out, std::string& error) {
  png_image img;
  std::memset(&img, 0, sizeof img);
  img.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_memory(&img, bytes.data(), bytes.size())) {
    error = img.message;
    return false;
  }
  img.format = PNG_FORMAT_RGBA;
  out.width = static_cast<int>(img.width);
  out.height = static_cast<int>(img.height);
  out.rgba.resize(PNG_IMAGE_SIZE(img));
  if (!png_image_finish_read(&img, nullptr, out.rgba.data(), 0, nullptr)) {
    error = img.message;
    png_image_free(&img);
    return false;
  }
  return true;
}

TEST_F(HeatmapRenderTest, PngStartsWithTheSignatureAndDecodesToTheRequestedWidthWithALegend) {
  HeatmapResult r = Parsed(BinFillBlock(4, 5, 2, 3));
  PictureOptions o;
  o.width = 640;
  o.title = HeatmapTitle(r);
  auto pic = RenderHeatPicture(r, o);
  ASSERT_TRUE(pic.ok()) << pic.status().message();
  auto png = EncodePng(pic->image);
  ASSERT_TRUE(png.ok()) << png.status().message();
  const std::vector<uint8_t>& bytes = png.value();
  const uint8_t kSignature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  ASSERT_GE(bytes.size(), 8u);
  EXPECT_EQ(std::memcmp(bytes.data(), kSignature, 8), 0);

  Decoded d;
  std::string error;
  ASSERT_TRUE(DecodePng(bytes, d, error)) << error;
  EXPECT_EQ(d.width, 640);
  EXPECT_EQ(d.height, pic->image.height());
  EXPECT_EQ(d.rgba, pic->image.rgba());  // lossless

  // Legend: the colour bar runs from the ramp's first to its last colour.
  const PixelRect& bar = pic->bar;
  ASSERT_GT(bar.x1 - bar.x0, 10);
  EXPECT_EQ(d.At(bar.x0, (bar.y0 + bar.y1) / 2), RampColor(0));
  EXPECT_EQ(d.At(bar.x1 - 1, (bar.y0 + bar.y1) / 2), RampColor(1));
  // Its label and values are text: dark ink between the map and the bar, and under the bar.
  auto ink_in = [&](int y0, int y1) {
    int n = 0;
    for (int y = y0; y < y1; ++y)
      for (int x = 0; x < d.width; ++x)
        if (d.At(x, y) == Rgba{40, 40, 40, 255}) ++n;
    return n;
  };
  EXPECT_GT(ink_in(pic->map.y1 + 2, bar.y0 - 1), 20);
  EXPECT_GT(ink_in(bar.y1 + 1, d.height), 10);
  EXPECT_GT(ink_in(0, pic->map.y0 - 1), 20);  // the title

  // The hottest cell (row 2, column 3 from the south-west) is filled with the darkest colour.
  auto hot = heatmap::Bounds(*heatmap::Parse(Neighbour(kXiamen7, 2, 3)), 7);
  const double lat_min = heatmap::Bounds(*heatmap::Parse(kXiamen7), 7).lat_min;
  const double lat_max = lat_min + 4 * (hot.lat_max - hot.lat_min);
  const double lon_min = heatmap::Bounds(*heatmap::Parse(kXiamen7), 7).lon_min;
  const double lon_max = lon_min + 5 * (hot.lon_max - hot.lon_min);
  const PixelRect& map = pic->map;
  int hx = map.x0 + static_cast<int>((hot.lon_center() - lon_min) / (lon_max - lon_min) * (map.x1 - map.x0));
  int hy = map.y0 + static_cast<int>((lat_max - hot.lat_center()) / (lat_max - lat_min) * (map.y1 - map.y0));
  EXPECT_EQ(d.At(hx, hy), RampColor(1));
  // Cells keep their shape: 5 x 4 cells of equal degrees, longitudes shrunk by cos(24.48°).
  double aspect = static_cast<double>(map.x1 - map.x0) / (map.y1 - map.y0);
  EXPECT_NEAR(aspect, 5.0 / 4.0 * std::cos(24.48 * 3.14159265358979 / 180), 0.02);
  EXPECT_EQ(map.x1 - map.x0, 640 - 2 * 16);  // as wide as the margins allow

  // Deterministic: the same input gives the same bytes.
  auto again = RenderHeatPicture(r, o);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(EncodePng(again->image).value(), bytes);
}

TEST_F(HeatmapRenderTest, PictureWidthIsChecked) {
  HeatmapResult r = Parsed(BinFillBlock(1, 1, 0, 0));
  for (int w : {0, 100, 159, 4001}) {
    PictureOptions o;
    o.width = w;
    EXPECT_FALSE(RenderHeatPicture(r, o).ok()) << w;
  }
  PictureOptions small;
  small.width = 160;
  auto pic = RenderHeatPicture(r, small);
  ASSERT_TRUE(pic.ok());
  EXPECT_EQ(pic->image.width(), 160);
  EXPECT_FALSE(EncodePng(Image()).ok());
}

TEST_F(HeatmapRenderTest, TheFontCoversWhatTitlesAndLegendsUse) {
  for (char c : std::string("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ .%-_:/,()+="))
    EXPECT_TRUE(HasGlyph(c)) << c;
  EXPECT_FALSE(HasGlyph('~'));
  Image img(40, 10, {255, 255, 255, 255});
  EXPECT_EQ(DrawText(img, 0, 0, "1", {0, 0, 0, 255}, 1), 5);
  EXPECT_EQ(img.At(2, 0), (Rgba{0, 0, 0, 255}));  // the top of the "1"
  EXPECT_EQ(img.At(0, 0), (Rgba{255, 255, 255, 255}));
  EXPECT_EQ(TextWidth("ab", 2), (2 * kGlyphAdvance - 1) * 2);
}

// ---- command-line values ----

TEST_F(HeatmapRenderTest, WindowArguments) {
  EXPECT_EQ(ParseWindowArg("state").value(), 0);
  EXPECT_EQ(ParseWindowArg("15m").value(), 900);
  EXPECT_EQ(ParseWindowArg("1h").value(), 3600);
  EXPECT_EQ(ParseWindowArg("24h").value(), 86400);
  EXPECT_EQ(ParseWindowArg("1d").value(), 86400);
  EXPECT_EQ(ParseWindowArg("900").value(), 900);
  EXPECT_EQ(ParseWindowArg("90s").value(), 90);
  for (const char* bad : {"", "h", "0", "-5", "1.5h", "15 m", "week", "9999999999"})
    EXPECT_FALSE(ParseWindowArg(bad).ok()) << bad;
}

TEST_F(HeatmapRenderTest, TimeArguments) {
  EXPECT_EQ(ParseTimeArg("1763712000000").value(), kEnd);
  EXPECT_EQ(ParseTimeArg("2025-11-21T08:00:00Z").value(), kEnd);
  EXPECT_EQ(ParseTimeArg("2025-11-21T16:00:00+08:00").value(), kEnd);
  EXPECT_EQ(ParseTimeArg("2025-11-21T16:00+0800").value(), kEnd);
  EXPECT_EQ(ParseTimeArg("2025-11-21T03:00-05").value(), kEnd);
  EXPECT_EQ(ParseTimeArg("2025-11-21T08:00:00.250Z").value(), kEnd + 250);
  EXPECT_EQ(ParseTimeArg("2025-11-21 08:00").value(), kEnd);  // local time: TZ=UTC here
  EXPECT_EQ(ParseTimeArg("2025-11-21").value(), kEnd - 8 * 3600 * 1000);
  setenv("TZ", "Asia/Shanghai", 1);
  tzset();
  if (ParseTimeArg("2025-11-21 16:00").value() == kEnd) {  // zone data present
    EXPECT_EQ(ParseTimeArg("2025-11-21T16:00:00").value(), kEnd);
  }
  for (const char* bad :
       {"", "now", "yesterday", "2025-13-01", "2025-02-29T00:00Z", "2025-11-21T25:00", "2025-11-21T08",
        "2025-11-21T08:00:00.Z", "2025-11-21T08:00+25:00", "2025/11/21", "12345678901234567890"})
    EXPECT_FALSE(ParseTimeArg(bad).ok()) << bad;
}

TEST_F(HeatmapRenderTest, LayersAndHeadline) {
  EXPECT_TRUE(IsHeatmapLayer("bin_fill"));
  EXPECT_TRUE(IsHeatmapLayer("unattended"));
  EXPECT_FALSE(IsHeatmapLayer("bins"));
  json window = {{"size_s", 3600}, {"start", kStart}, {"end", kEnd}};
  HeatmapResult r =
      Parsed(HeatDoc("bin_fill", {{"wsk52", {1, 40.0, 40.0, 40.0, kStart, kStart}}}, kFields, kMerge, window));
  EXPECT_EQ(HeatmapHeadline(r),
            "bin_fill at houpu, 1h window 2025-11-21 07:00:00 .. 2025-11-21 08:00:00, precision 7, wgs84: 1 cell");
  EXPECT_EQ(HeatmapTitle(r), "bin_fill  houpu  1h 2025-11-21 07:00 - 08:00  p7");
  HeatmapResult g = r;
  g.crs = "gcj02";
  g.window.reset();
  EXPECT_EQ(HeatmapTitle(g), "bin_fill  houpu  state 2025-11-21 08:00  p7  gcj02");
}

}  // namespace
}  // namespace sanigate::ctl
