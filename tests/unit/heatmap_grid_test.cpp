// The heat map's grid (fleet/heatmap: geohash.h, gcj02.h): geohash cells, their rectangles,
// parents, neighbours and text form, and the WGS-84 → GCJ-02 transform with its inverse.
//
// Where the expected values come from:
//  * Geohash strings and rectangles: a separate python3 implementation of the textbook bisection
//    (Niemeyer's algorithm: bits alternate longitude, latitude, starting with longitude; at each
//    step v >= mid gives a 1 and keeps the upper half, so a point on a border goes north/east),
//    run with exact fractions.Fraction arithmetic, written for this test and run by hand; its
//    output is pasted below as literals. The two published examples (u4pruydqqvj, ezs42) are
//    from the geohash literature. Rectangles are dyadic, so they are compared exactly.
//  * Cell sizes: the rectangles above times π/180 · 6 371 008.8 m (· cos(lat) east-west).
//  * GCJ-02: the worked examples of /work/shared/protocols.md §6 (Xiamen and the JT/T 808 frame A
//    point; Shanghai, Shenzhen, Beijing are eviltransform's check values), which the same python3
//    session reproduced from the §6 formula.
// Besides the literals, TextbookEncode below is a small C++ bisection used as a reference on
// random points and on every border of a coarse grid.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <numbers>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "heatmap/gcj02.h"
#include "heatmap/geohash.h"

namespace sanigate::heatmap {
namespace {

constexpr double kEarthRadiusM = 6371008.8;  // mean radius (IUGG)
constexpr double kDegToM = std::numbers::pi / 180.0 * kEarthRadiusM;

std::string Hash(double lat, double lon, int precision) {
  return ToString(Encode(lat, lon, precision), precision);
}

uint64_t Cell(const std::string& text) {
  auto cell = Parse(text);
  EXPECT_TRUE(cell.has_value()) << text;
  return cell.value_or(0);
}

// The textbook algorithm, independent of the library's bit interleaving. Midpoints of [-90, 90]
// and [-180, 180] are dyadic and exact in a double, so the comparisons are exact.
std::string TextbookEncode(double lat, double lon, int precision) {
  static const char kAlphabet[] = "0123456789bcdefghjkmnpqrstuvwxyz";
  double lat_lo = -90, lat_hi = 90, lon_lo = -180, lon_hi = 180;
  std::string out;
  bool even = true;  // longitude first
  int value = 0;
  for (int bit = 0; bit < 5 * precision; ++bit) {
    double& lo = even ? lon_lo : lat_lo;
    double& hi = even ? lon_hi : lat_hi;
    double v = even ? lon : lat;
    double mid = (lo + hi) / 2;
    value <<= 1;
    if (v >= mid) {
      value |= 1;
      lo = mid;
    } else {
      hi = mid;
    }
    even = !even;
    if (bit % 5 == 4) {
      out += kAlphabet[value];
      value = 0;
    }
  }
  return out;
}

// Distance in metres between two nearby points (local flat approximation, fine below 1 km).
double MetresBetween(LatLon a, LatLon b) {
  double dy = (a.lat - b.lat) * kDegToM;
  double dx = (a.lon - b.lon) * kDegToM * std::cos(a.lat * std::numbers::pi / 180.0);
  return std::hypot(dx, dy);
}

// ---------------------------------------------------------------------------------------------
// Encode

TEST(GeohashEncode, PublishedExamples) {
  EXPECT_EQ(Hash(57.64911, 10.40744, 11), "u4pruydqqvj");
  EXPECT_EQ(Hash(42.6, -5.6, 5), "ezs42");
  // A coarser precision is the prefix of a finer one.
  EXPECT_EQ(Hash(57.64911, 10.40744, 6), "u4pruy");
  EXPECT_EQ(Hash(57.64911, 10.40744, 1), "u");
}

TEST(GeohashEncode, ChineseCities) {
  struct Case {
    const char* name;
    double lat, lon;
    const char* p6;
    const char* p7;
    const char* p8;
  };
  // From the python3 bisection (see the top of the file).
  const Case cases[] = {
      {"Xiamen", 24.48, 118.10, "ws7gr2", "ws7gr2m", "ws7gr2my"},
      {"Beijing", 39.9042, 116.4074, "wx4g0b", "wx4g0bm", "wx4g0bm6"},
      {"Urumqi", 43.8, 87.6, "tzy31m", "tzy31ms", "tzy31ms3"},
      {"Harbin", 45.75, 126.65, "yb4h3b", "yb4h3bx", "yb4h3bx9"},
      {"Harbin (centre)", 45.8038, 126.5350, "yb1ux6", "yb1ux67", "yb1ux67f"},
      {"Sanya", 18.25, 109.5, "w7jzgd", "w7jzgdr", "w7jzgdr3"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    EXPECT_EQ(Hash(c.lat, c.lon, 6), c.p6);
    EXPECT_EQ(Hash(c.lat, c.lon, 7), c.p7);
    EXPECT_EQ(Hash(c.lat, c.lon, 8), c.p8);
    EXPECT_EQ(Encode(c.lat, c.lon, 8), Cell(c.p8));
    EXPECT_EQ(Hash(c.lat, c.lon, 8), TextbookEncode(c.lat, c.lon, 8));
  }
}

TEST(GeohashEncode, XiamenInGcj02LandsInAnotherCell) {
  // The README's crs = "gcj02": convert first, then bin. GCJ-02 Xiamen (below) in python3.
  LatLon g = WgsToGcj(24.48, 118.10);
  EXPECT_EQ(Hash(g.lat, g.lon, 8), "ws7gpxcq");
  EXPECT_EQ(Hash(24.48, 118.10, 8), "ws7gr2my");
}

TEST(GeohashEncode, PointOnABorderBelongsToTheCellNorthAndEast) {
  // ws7gr2m = [24.478912353515625, 24.48028564453125] x [118.09890747070312, 118.10028076171875]
  const double lat_min = 24.478912353515625, lat_max = 24.48028564453125;
  const double lon_min = 118.09890747070312, lon_max = 118.10028076171875;
  const double clat = (lat_min + lat_max) / 2, clon = (lon_min + lon_max) / 2;
  EXPECT_EQ(Hash(lat_min, clon, 7), "ws7gr2m");          // on its south border: inside
  EXPECT_EQ(Hash(lat_min - 1e-9, clon, 7), "ws7gr2j");   // just south: the south neighbour
  EXPECT_EQ(Hash(lat_max, clon, 7), "ws7gr2t");          // on its north border: the north one
  EXPECT_EQ(Hash(clat, lon_min, 7), "ws7gr2m");          // on its west border: inside
  EXPECT_EQ(Hash(clat, lon_min - 1e-9, 7), "ws7gr2k");   // just west: the west neighbour
  EXPECT_EQ(Hash(clat, lon_max, 7), "ws7gr2q");          // on its east border: the east one
  EXPECT_EQ(Hash(lat_min, lon_min, 7), "ws7gr2m");       // south-west corner: inside
  // Equator and prime meridian.
  EXPECT_EQ(Hash(0, 0, 1), "s");
  EXPECT_EQ(Hash(0, -1e-9, 1), "e");
  EXPECT_EQ(Hash(-1e-9, 0, 1), "k");
  EXPECT_EQ(Hash(-1e-9, -1e-9, 1), "7");
  // A negative border: lat -45 is the south edge of k0 = [-45, -39.375] x [0, 11.25].
  EXPECT_EQ(Hash(-45, 10, 2), "k0");
  EXPECT_EQ(Hash(-45 - 1e-9, 10, 2), "hp");
}

TEST(GeohashEncode, EveryBorderOfACoarseGridAgreesWithTheBisection) {
  // All latitude and longitude borders at precision 4 (64 x 128 cells), each crossed with a few
  // positions on the other axis, checked at precisions 4 and 8.
  const double lat_step = 180.0 / 64, lon_step = 360.0 / 128;
  for (int i = 0; i <= 64; ++i) {
    double lat = -90 + i * lat_step;
    for (double lon : {-180.0, -97.3, 0.0, 13.37, 118.10, 180.0}) {
      for (int p : {4, 8}) {
        ASSERT_EQ(Hash(lat, lon, p), TextbookEncode(lat, lon, p)) << lat << "," << lon << " p" << p;
      }
    }
  }
  for (int i = 0; i <= 128; ++i) {
    double lon = -180 + i * lon_step;
    for (double lat : {-90.0, -33.3, 0.0, 24.48, 45.0, 90.0}) {
      for (int p : {4, 8}) {
        ASSERT_EQ(Hash(lat, lon, p), TextbookEncode(lat, lon, p)) << lat << "," << lon << " p" << p;
      }
    }
  }
}

TEST(GeohashEncode, RandomPointsAgreeWithTheBisection) {
  std::mt19937_64 rng(20251121);
  std::uniform_real_distribution<double> lat_d(-90, 90), lon_d(-180, 180);
  std::uniform_real_distribution<double> cn_lat(18, 54), cn_lon(73, 135);
  for (int i = 0; i < 20000; ++i) {
    bool china = i % 2 == 0;
    double lat = china ? cn_lat(rng) : lat_d(rng), lon = china ? cn_lon(rng) : lon_d(rng);
    for (int p : {1, 6, 7, 8, 12}) {
      ASSERT_EQ(Hash(lat, lon, p), TextbookEncode(lat, lon, p)) << lat << "," << lon << " p" << p;
    }
  }
}

TEST(GeohashEncode, ClampsOutOfRangeCoordinates) {
  EXPECT_EQ(Hash(90, 180, 12), "zzzzzzzzzzzz");    // the bisection puts 90 / 180 in the top cell
  EXPECT_EQ(Hash(-90, -180, 12), "000000000000");
  EXPECT_EQ(Hash(90, 0, 6), "upbpbp");
  EXPECT_EQ(Hash(0, 180, 8), "xbpbpbpb");
  EXPECT_EQ(Hash(0, -180, 8), "80000000");
  EXPECT_EQ(Hash(91, 0, 6), "upbpbp");
  EXPECT_EQ(Hash(1e9, 0, 6), "upbpbp");
  EXPECT_EQ(Hash(0, 181, 8), "xbpbpbpb");
  EXPECT_EQ(Hash(0, 540, 8), "xbpbpbpb");  // clamped, not wrapped
  EXPECT_EQ(Hash(-91, -181, 12), "000000000000");
  EXPECT_EQ(Hash(-1e9, -1e9, 12), "000000000000");
}

// Found while writing this test: Encode scales (v - lo) in floating point, and that subtraction
// rounds, so a point less than one ulp of |v - lo| below a border (≤ 1.5e-14° in latitude,
// ≤ 3e-14° in longitude, a few nanometres) is put in the cell north/east of the border instead of
// the one it lies in. Harmless for GNSS data, but not "as in the reference bisection" as
// geohash.h claims. Disabled until geohash.cpp decides; reported, not fixed here.
TEST(GeohashEncode, JustBelowABorderIsSouthOfIt) {
  double below_lat = std::nextafter(24.478912353515625, -1000.0);  // 24.47891235351562
  EXPECT_EQ(Hash(below_lat, 118.09959411621094, 7), "ws7gr2j");
  double below_lon = std::nextafter(118.09890747070312, -1000.0);  // 118.09890747070311
  EXPECT_EQ(Hash(24.479598999023438, below_lon, 7), "ws7gr2k");
  EXPECT_EQ(Hash(-1e-15, 10, 1), "k");  // -1e-15 + 90 rounds to 90
}

// ---------------------------------------------------------------------------------------------
// Bounds

TEST(GeohashBounds, MatchHandComputedRectangles) {
  struct Case {
    const char* hash;
    double lat_min, lat_max, lon_min, lon_max;
  };
  const Case cases[] = {
      {"ws7gr2", 24.4775390625, 24.4830322265625, 118.092041015625, 118.10302734375},
      {"ws7gr2m", 24.478912353515625, 24.48028564453125, 118.09890747070312, 118.10028076171875},
      {"ws7gr2my", 24.479942321777344, 24.480113983154297, 118.09993743896484, 118.10028076171875},
      {"wx4g0bm6", 39.90406036376953, 39.904232025146484, 116.40735626220703, 116.40769958496094},
      {"tzy31ms", 43.79974365234375, 43.801116943359375, 87.5994873046875, 87.60086059570312},
      {"yb4h3b", 45.7470703125, 45.7525634765625, 126.639404296875, 126.650390625},
      {"w7jzgdr3", 18.249835968017578, 18.25000762939453, 109.49970245361328, 109.50004577636719},
      {"k0", -45.0, -39.375, 0.0, 11.25},
      {"8000840", 0.098876953125, 0.100250244140625, -180.0, -179.99862670898438},
      {"upzpgx", 89.9945068359375, 90.0, 9.99755859375, 10.008544921875},
      {"s", 0.0, 45.0, 0.0, 45.0},
      {"0", -90.0, -45.0, -180.0, -135.0},
      {"z", 45.0, 90.0, 135.0, 180.0},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.hash);
    int p = static_cast<int>(std::string(c.hash).size());
    CellBounds b = Bounds(Cell(c.hash), p);
    // Dyadic values: exact.
    EXPECT_EQ(b.lat_min, c.lat_min);
    EXPECT_EQ(b.lat_max, c.lat_max);
    EXPECT_EQ(b.lon_min, c.lon_min);
    EXPECT_EQ(b.lon_max, c.lon_max);
    // The centre and the south-west corner are in the cell; the other borders are not.
    EXPECT_GT(b.lat_center(), b.lat_min);
    EXPECT_LT(b.lat_center(), b.lat_max);
    EXPECT_GT(b.lon_center(), b.lon_min);
    EXPECT_LT(b.lon_center(), b.lon_max);
    EXPECT_EQ(Hash(b.lat_center(), b.lon_center(), p), c.hash);
    EXPECT_EQ(Hash(b.lat_min, b.lon_min, p), c.hash);
  }
}

TEST(GeohashBounds, ContainTheEncodedPoint) {
  std::mt19937_64 rng(7);
  std::uniform_real_distribution<double> lat_d(-89.9, 89.9), lon_d(-179.9, 179.9);
  for (int i = 0; i < 5000; ++i) {
    double lat = lat_d(rng), lon = lon_d(rng);
    for (int p = 1; p <= kMaxPrecision; ++p) {
      CellBounds b = Bounds(Encode(lat, lon, p), p);
      ASSERT_LE(b.lat_min, lat);
      ASSERT_LT(lat, b.lat_max);
      ASSERT_LE(b.lon_min, lon);
      ASSERT_LT(lon, b.lon_max);
    }
  }
}

TEST(GeohashBounds, CellSizesAround24North) {
  // Hand-computed from the rectangles of ws7gr2 / ws7gr2m / ws7gr2my (width at the cell's
  // latitude; at the equator the widths are 1221.6, 152.7 and 38.2 m).
  struct Case {
    int precision;
    double width_m, height_m;
  };
  const Case cases[] = {{6, 1111.81, 610.81}, {7, 138.98, 152.70}, {8, 34.74, 19.09}};
  for (const Case& c : cases) {
    SCOPED_TRACE(c.precision);
    CellBounds b = Bounds(Encode(24.48, 118.10, c.precision), c.precision);
    double height = (b.lat_max - b.lat_min) * kDegToM;
    double width = (b.lon_max - b.lon_min) * kDegToM * std::cos(b.lat_center() * std::numbers::pi / 180);
    EXPECT_NEAR(width, c.width_m, 0.01);
    EXPECT_NEAR(height, c.height_m, 0.01);
  }
  // The README's round figures: 6 ≈ 1.2 km × 0.6 km, 7 ≈ 153 m, 8 ≈ 38 m × 19 m (equator widths).
  CellBounds b6 = Bounds(Encode(0.01, 0.01, 6), 6);
  EXPECT_NEAR((b6.lon_max - b6.lon_min) * kDegToM, 1200, 30);
  EXPECT_NEAR((b6.lat_max - b6.lat_min) * kDegToM, 600, 15);
  CellBounds b8 = Bounds(Encode(0.01, 0.01, 8), 8);
  EXPECT_NEAR((b8.lon_max - b8.lon_min) * kDegToM, 38, 1);
  EXPECT_NEAR((b8.lat_max - b8.lat_min) * kDegToM, 19, 1);
}

// ---------------------------------------------------------------------------------------------
// Parent, text form

TEST(GeohashParent, IsTheStringPrefix) {
  const char* fine[] = {"ws7gr2my", "wx4g0bm6", "tzy31ms3", "yb4h3bx9", "w7jzgdr3", "zzzzzzzz",
                        "00000000", "u4pruydqqvj", "s0000000000z"};
  for (const char* text : fine) {
    std::string s(text);
    int from = static_cast<int>(s.size());
    for (int to = 1; to <= from; ++to) {
      EXPECT_EQ(ToString(Parent(Cell(s), from, to), to), s.substr(0, static_cast<size_t>(to)))
          << s << " -> " << to;
    }
  }
  // And a parent is what Encode gives at the coarser precision.
  for (int to : {6, 7}) {
    EXPECT_EQ(Parent(Encode(24.48, 118.10, 8), 8, to), Encode(24.48, 118.10, to));
  }
}

TEST(GeohashText, ParseAndToStringRoundTrip) {
  for (const char* text : {"0", "z", "s", "ezs42", "ws7gr2", "ws7gr2m", "ws7gr2my", "u4pruydqqvj",
                           "zzzzzzzzzzzz", "000000000000", "0123456789bc", "defghjkmnpqr",
                           "stuvwxyz"}) {
    std::string s(text);
    auto cell = Parse(s);
    ASSERT_TRUE(cell.has_value()) << s;
    EXPECT_EQ(ToString(*cell, static_cast<int>(s.size())), s);
  }
  EXPECT_EQ(Parse("0"), uint64_t{0});
  EXPECT_EQ(Parse("s"), uint64_t{24});
  EXPECT_EQ(Parse("z"), uint64_t{31});
  EXPECT_EQ(Parse("10"), uint64_t{32});
  EXPECT_EQ(Parse("zzzzzzzzzzzz"), (uint64_t{1} << 60) - 1);
  EXPECT_EQ(Parse("ws7gr2my"), Encode(24.48, 118.10, 8));
  // Leading zeros matter to the text, not to the value: the precision travels separately.
  EXPECT_EQ(ToString(0, 3), "000");
  EXPECT_EQ(ToString(24, 2), "0s");
}

TEST(GeohashText, UppercaseIsAccepted) {
  EXPECT_EQ(Parse("WS7GR2MY"), Parse("ws7gr2my"));
  EXPECT_EQ(Parse("U4PruYDQQVJ"), Parse("u4pruydqqvj"));
  EXPECT_EQ(ToString(*Parse("EZS42"), 5), "ezs42");
}

TEST(GeohashText, RejectsWhatIsNotAGeohash) {
  EXPECT_EQ(Parse(""), std::nullopt);
  EXPECT_EQ(Parse("u4pruydqqvjqq"), std::nullopt);  // 13 characters
  EXPECT_EQ(Parse("0000000000000"), std::nullopt);  // 13 characters
  EXPECT_TRUE(Parse("u4pruydqqvjq").has_value());   // 12 is the maximum
  for (const char* bad : {"a", "i", "l", "o", "A", "I", "L", "O", "ws7gra", "wi", "lw", "ws7o",
                          "ws7 gr", " ws7", "ws7-", "ws7gr2\n", "-", "!", "é"}) {
    EXPECT_EQ(Parse(bad), std::nullopt) << '"' << bad << '"';
  }
  EXPECT_EQ(Parse(std::string("ws\0gr", 5)), std::nullopt);
}

// ---------------------------------------------------------------------------------------------
// Neighbours

TEST(GeohashNeighbour, FourDirections) {
  const uint64_t c = Cell("ws7gr2m");
  auto n = [&](int dlat, int dlon) {
    auto r = Neighbour(c, 7, dlat, dlon);
    return r ? ToString(*r, 7) : std::string("none");
  };
  EXPECT_EQ(n(1, 0), "ws7gr2t");
  EXPECT_EQ(n(-1, 0), "ws7gr2j");
  EXPECT_EQ(n(0, 1), "ws7gr2q");
  EXPECT_EQ(n(0, -1), "ws7gr2k");
  EXPECT_EQ(n(0, 0), "ws7gr2m");
  EXPECT_EQ(n(2, 3), "ws7gr8b");
  EXPECT_EQ(n(-3, -2), "ws7gpre");
  // The neighbour's rectangle shares the border.
  CellBounds b = Bounds(c, 7);
  EXPECT_EQ(Bounds(*Neighbour(c, 7, 1, 0), 7).lat_min, b.lat_max);
  EXPECT_EQ(Bounds(*Neighbour(c, 7, 0, -1), 7).lon_max, b.lon_min);
  // And stepping back returns to the cell.
  for (int dlat = -2; dlat <= 2; ++dlat) {
    for (int dlon = -2; dlon <= 2; ++dlon) {
      EXPECT_EQ(Neighbour(*Neighbour(c, 7, dlat, dlon), 7, -dlat, -dlon), c);
    }
  }
}

TEST(GeohashNeighbour, AgreesWithEncodeOneCellAway) {
  std::mt19937_64 rng(3);
  std::uniform_real_distribution<double> lat_d(-80, 80), lon_d(-170, 170);
  for (int i = 0; i < 2000; ++i) {
    double lat = lat_d(rng), lon = lon_d(rng);
    for (int p : {6, 7, 8}) {
      uint64_t cell = Encode(lat, lon, p);
      CellBounds b = Bounds(cell, p);
      double h = b.lat_max - b.lat_min, w = b.lon_max - b.lon_min;
      for (int dlat = -1; dlat <= 1; ++dlat) {
        for (int dlon = -1; dlon <= 1; ++dlon) {
          ASSERT_EQ(Neighbour(cell, p, dlat, dlon),
                    Encode(b.lat_center() + dlat * h, b.lon_center() + dlon * w, p))
              << ToString(cell, p) << " " << dlat << "," << dlon;
        }
      }
    }
  }
}

TEST(GeohashNeighbour, LongitudeWrapsAt180) {
  // 8000840 touches -180, xbpbxfp touches +180 in the same row.
  EXPECT_EQ(Neighbour(Cell("8000840"), 7, 0, -1), Cell("xbpbxfp"));
  EXPECT_EQ(Neighbour(Cell("xbpbxfp"), 7, 0, 1), Cell("8000840"));
  EXPECT_EQ(Neighbour(Cell("8000840"), 7, 0, 1), Cell("8000841"));
  EXPECT_EQ(Neighbour(Cell("xbpbxfp"), 7, 0, 2), Neighbour(Cell("8000840"), 7, 0, 1));
  EXPECT_EQ(Neighbour(Cell("zzzzzz"), 6, 0, 1), Cell("bpbpbp"));
  // A full turn (2^18 columns at precision 7) comes back.
  EXPECT_EQ(Neighbour(Cell("ws7gr2m"), 7, 0, 1 << 18), Cell("ws7gr2m"));
  EXPECT_EQ(Neighbour(Cell("ws7gr2m"), 7, 0, -(1 << 18)), Cell("ws7gr2m"));
}

TEST(GeohashNeighbour, NothingBeyondThePoles) {
  // upzpgx is in the top row ([89.99, 90]), h0p058 in the bottom one.
  EXPECT_EQ(Neighbour(Cell("upzpgx"), 6, 1, 0), std::nullopt);
  EXPECT_EQ(Neighbour(Cell("upzpgx"), 6, 1, 1), std::nullopt);
  EXPECT_EQ(Neighbour(Cell("upzpgx"), 6, -1, 0), Cell("upzpgw"));
  EXPECT_EQ(Neighbour(Cell("h0p058"), 6, -1, 0), std::nullopt);
  EXPECT_EQ(Neighbour(Cell("h0p058"), 6, 1, 0), Cell("h0p059"));
  EXPECT_EQ(Neighbour(Cell("zzzzzz"), 6, 1, 0), std::nullopt);
  EXPECT_EQ(Neighbour(Cell("000000"), 6, -1, 0), std::nullopt);
  EXPECT_EQ(Neighbour(Cell("ws7gr2m"), 7, 1 << 17, 0), std::nullopt);  // more rows than exist
}

// ---------------------------------------------------------------------------------------------
// WGS-84 → GCJ-02

struct GcjCase {
  const char* name;
  LatLon wgs, gcj;
};
// protocols.md §6.
const GcjCase kGcjCases[] = {
    {"Xiamen", {24.48, 118.10}, {24.477354826, 118.104973866}},
    {"frame A point", {24.479833, 118.089425}, {24.477186236, 118.094402085}},
    {"Shanghai", {31.1774276, 121.5272106}, {31.17530398364597, 121.531541859215}},
    {"Shenzhen", {22.543847, 113.912316}, {22.540796131694766, 113.9171764808363}},
    {"Beijing", {39.911954, 116.377817}, {39.91334545536069, 116.38404722455657}},
};

TEST(Gcj02, WorkedExamples) {
  for (const GcjCase& c : kGcjCases) {
    SCOPED_TRACE(c.name);
    EXPECT_FALSE(OutsideChina(c.wgs.lat, c.wgs.lon));
    LatLon g = WgsToGcj(c.wgs.lat, c.wgs.lon);
    // The first two are given to 9 decimals, hence the 1e-9 (the full-precision python3 values
    // are 24.477354826129 / 118.104973865871 and 24.4771862364224 / 118.094402084769).
    EXPECT_NEAR(g.lat, c.gcj.lat, 1e-9);
    EXPECT_NEAR(g.lon, c.gcj.lon, 1e-9);
  }
  // Xiamen's offset: (−0.002645174°, +0.004973866°), about 583 m.
  LatLon g = WgsToGcj(24.48, 118.10);
  EXPECT_NEAR(MetresBetween({24.48, 118.10}, g), 583, 2);
}

TEST(Gcj02, OutsideTheBoxNothingMoves) {
  const LatLon outside[] = {
      {51.5074, -0.1278},    // London
      {40.7128, -74.0060},   // New York
      {-33.8688, 151.2093},  // Sydney
      {35.6762, 139.6503},   // Tokyo (east of 137.8347)
      {55.7558, 37.6173},    // Moscow (west of 72.004)
      {-6.2, 106.8},         // Jakarta (south of the box)
      {60.0, 105.0},         // north of the box
      {30.0, 72.0039},       // just west of the box
      {30.0, 137.8348},      // just east
      {0.8292, 105.0},       // just south
      {55.8272, 105.0},      // just north
  };
  for (LatLon p : outside) {
    SCOPED_TRACE(std::to_string(p.lat) + "," + std::to_string(p.lon));
    EXPECT_TRUE(OutsideChina(p.lat, p.lon));
    LatLon g = WgsToGcj(p.lat, p.lon);
    EXPECT_EQ(g.lat, p.lat);
    EXPECT_EQ(g.lon, p.lon);
    LatLon w = GcjToWgs(p.lat, p.lon);
    EXPECT_EQ(w.lat, p.lat);
    EXPECT_EQ(w.lon, p.lon);
  }
  // The box's own edges are inside.
  EXPECT_FALSE(OutsideChina(30.0, 72.004));
  EXPECT_FALSE(OutsideChina(30.0, 137.8347));
  EXPECT_FALSE(OutsideChina(0.8293, 105.0));
  EXPECT_FALSE(OutsideChina(55.8271, 105.0));
  EXPECT_NE(WgsToGcj(30.0, 72.005).lon, 72.005);
}

TEST(Gcj02, InverseWithinAMillimetreOnTheExamples) {
  for (const GcjCase& c : kGcjCases) {
    SCOPED_TRACE(c.name);
    LatLon back = GcjToWgs(WgsToGcj(c.wgs.lat, c.wgs.lon).lat, WgsToGcj(c.wgs.lat, c.wgs.lon).lon);
    EXPECT_LT(MetresBetween(back, c.wgs), 0.001);
    // From the published GCJ-02 values, too (only as precise as they are printed).
    LatLon from_published = GcjToWgs(c.gcj.lat, c.gcj.lon);
    EXPECT_LT(MetresBetween(from_published, c.wgs), 0.001);
  }
}

TEST(Gcj02, InverseWithinAMillimetreOnAHalfDegreeGridAcrossChina) {
  // lat 1.0 … 55.5, lon 72.5 … 137.5: every point inside the box, and (checked in python3) every
  // converted point too. The python3 run of the same 3-step inverse gave at most 0.27 mm.
  double worst = 0;
  LatLon worst_at{0, 0};
  int points = 0;
  for (int i = 0; i <= 109; ++i) {
    double lat = 1.0 + 0.5 * i;
    for (int j = 0; j <= 130; ++j) {
      double lon = 72.5 + 0.5 * j;
      LatLon g = WgsToGcj(lat, lon);
      ASSERT_FALSE(OutsideChina(g.lat, g.lon)) << lat << "," << lon;
      LatLon back = GcjToWgs(g.lat, g.lon);
      double err = MetresBetween(back, {lat, lon});
      if (err > worst) {
        worst = err;
        worst_at = {lat, lon};
      }
      ++points;
    }
  }
  EXPECT_EQ(points, 110 * 131);
  EXPECT_LT(worst, 0.001) << "at " << worst_at.lat << "," << worst_at.lon;
}

}  // namespace
}  // namespace sanigate::heatmap
