// The pure side of `sanictl heatmap show|export|render`: sanifleet's admin `heatmap` result
// (fleet/README.md, "Admin verb heatmap") checked and decoded, then rendered as a top-cells
// table, a character map for the terminal, a GeoJSON FeatureCollection (RFC 7946), CSV, or an
// RGBA picture. Cell rectangles come from the geohash library (heatmap/geohash.h); values are
// found by their name in the result's `fields`, never by position.
//
// Intensity (what "hot" means) is a metric of a cell: "n", "mean" (sum / n) or any field name.
// Default per layer (DefaultMetric): bin_fill → mean (how full the bins are), unattended → sum
// (total seconds the bins have waited), every other layer (vehicle_coverage, workers, overflow,
// alarms: counters) → n. The shade and colour scales run from min(0, lowest) to the highest
// intensity, so a count of 1 is pale and the hottest cell is the darkest.
//
// Times shown to humans (table, headline, picture title) are local time (TZ). Everything else is
// a pure function of its arguments: no I/O, no shared state, thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/status.h"
#include "ctl/format.h"
#include "ctl/raster.h"
#include "heatmap/geohash.h"

namespace sanigate::ctl {

// ---- command-line values ----

// The layers sanifleet publishes, in its order.
const std::vector<std::string>& HeatmapLayers();
bool IsHeatmapLayer(std::string_view layer);

// --window: "state" → 0; "15m", "1h", "24h" (any N with s, m, h or d) or plain seconds → seconds.
// kInvalid when malformed, zero or negative.
Result<int64_t> ParseWindowArg(std::string_view text);
// --at: epoch milliseconds (digits only), or ISO-8601 "2025-11-21", "2025-11-21T16:00",
// "2025-11-21 16:00:05.250", followed by "Z", "+08:00", "+0800" or "+08" for an explicit offset;
// without one it is local time (TZ). kInvalid when malformed or out of range.
Result<int64_t> ParseTimeArg(std::string_view text);

// ---- the result ----

struct HeatCell {
  std::string id;                             // the geohash, lower case
  heatmap::CellBounds bounds;                 // from the geohash, at the id's own length
  std::vector<nlohmann::json> raw;            // values in `fields` order, as received
  std::vector<std::optional<double>> values;  // the same as numbers; nullopt for null
};

struct HeatWindow {
  int64_t size_s = 0, start = 0, end = 0;
};

struct HeatmapResult {
  int v = 1;
  std::string site, layer, grid = "geohash", crs = "wgs84";
  int64_t ts = 0;
  int precision = 0;  // 0 when the result does not say
  std::vector<std::string> fields, merge;
  std::optional<HeatWindow> window;  // nullopt: the current state
  std::vector<HeatCell> cells;       // sorted by id

  std::optional<size_t> Field(std::string_view name) const;
  // The value of the field `name`; nullopt when the field is absent or null.
  std::optional<double> Value(const HeatCell& cell, std::string_view name) const;
  // sum / n; nullopt when n is 0 or null.
  std::optional<double> Mean(const HeatCell& cell) const;
  // The fields other than n, sum, min, max, first and last, in `fields` order.
  std::vector<std::string> Extras() const;
};

// Checks and decodes a result. kInvalid, naming the problem, when: it is not an object; `layer`
// is missing; `fields` is missing, not an array of distinct strings, or lacks "n" or "sum";
// `merge` does not match `fields`; `window` is not null or {size_s, start, end}; `cells` is not
// an object; a cell key is not a geohash; a cell is not an array of exactly one number-or-null
// per field. Missing or null `cells` is an empty map.
Result<HeatmapResult> ParseHeatmapResult(const nlohmann::json& result);

// ---- intensity ----

std::string DefaultMetric(std::string_view layer);
// "mean", or a name listed in `fields`; otherwise kInvalid naming the fields there are.
Status CheckMetric(const HeatmapResult& r, std::string_view metric);
std::optional<double> Intensity(const HeatmapResult& r, const HeatCell& cell, std::string_view metric);

struct IntensityScale {
  double lo = 0, hi = 0;  // lo = min(0, lowest intensity), hi = the highest
  bool any = false;       // some cell has an intensity
  // Position of v on the scale, 0..1 (1 when lo == hi).
  double Normalize(double v) const;
};
IntensityScale ScaleOf(const HeatmapResult& r, std::string_view metric);

// Cell indices, hottest first; cells without an intensity last; ties by cell id.
std::vector<size_t> RankCells(const HeatmapResult& r, std::string_view metric);

// ---- show ----

// "bin_fill at houpu, 1h window 2025-11-21 15:00:00 .. 16:00:00, precision 7, wgs84: 42 cells"
std::string HeatmapHeadline(const HeatmapResult& r);
// The `top` hottest cells: CELL, CENTER (lat,lon), N, MEAN, MAX, the metric's own column when it
// is none of these, the extras by name, LAST (local time). Durations (fields ending in _s, the
// values of the unattended layer) are shown as durations, times (first, last, last_pass) as
// local date and time.
Table TopCellsTable(const HeatmapResult& r, std::string_view metric, size_t top);

struct TermMapOptions {
  int max_cols = 60, max_rows = 20;
  bool unicode = false;  // shades " ·░▒▓█" instead of " .:-=+*#%@"
  std::string metric;    // empty: DefaultMetric(layer)
};

// The cells' bounding box as characters, north up. Cells are merged (a character shows the
// hottest cell whose centre lies in it) to fit max_cols x max_rows; a small box is drawn at about
// one character row per cell and as many columns as keep the cells' shape (terminal characters
// are about twice as tall as wide). ' ' = no cell; the darkest shade = the hottest.
struct TermMap {
  int cols = 0, rows = 0;           // 0 x 0 when there are no cells
  std::vector<std::string> grid;    // `rows` rows of `cols` shade characters (UTF-8)
  std::vector<std::string> shades;  // [0] = no cell, then pale to dark
  bool unicode = false;             // box-drawing frame too
  double lat_min = 0, lat_max = 0, lon_min = 0, lon_max = 0;
  std::string legend;  // one line, no "\n"
  // The grid in a frame with the box's latitudes and longitudes, then the legend.
  std::string Text() const;
};
TermMap RenderTermMap(const HeatmapResult& r, const TermMapOptions& options);

// ---- export ----

// RFC 7946 FeatureCollection: one Feature per cell ("id" = the cell), geometry the cell's
// rectangle as a Polygon ([lon, lat], counterclockwise, closed: 5 positions), properties = cell,
// every field by name, mean, layer, site, crs, ts, window_size_s, window_start, window_end (null
// for the state). Top level: "bbox" (when there are cells) and a foreign member "sanigate" with
// the result's header and "coordinates": "WGS-84" or "GCJ-02" (RFC 7946 has no "crs" member;
// GCJ-02 positions are only correct on GCJ-02 base maps such as AMap or Tencent).
nlohmann::ordered_json ToGeoJson(const HeatmapResult& r);
// Header row, then one row per cell (by id): cell, lat_min, lat_max, lon_min, lon_max, lat, lon
// (centre), every field by name, mean. Numbers in their shortest exact form, null as an empty
// field, "\n" line ends, RFC 4180 quoting where needed.
std::string ToCsv(const HeatmapResult& r);

// ---- render ----

inline constexpr int kMinPictureWidth = 160, kMaxPictureWidth = 4000;  // at most ~64 MB of RGBA

struct PictureOptions {
  int width = 800;     // pixels, kMinPictureWidth..kMaxPictureWidth
  std::string metric;  // empty: DefaultMetric(layer)
  std::string title;   // drawn at the top when not empty (see HeatmapTitle); smaller, then cut, when long
};

struct PixelRect {
  int x0 = 0, y0 = 0, x1 = 0, y1 = 0;  // [x0, x1) x [y0, y1)
};

struct HeatPicture {
  Image image;
  PixelRect map;  // the cells' bounding box (a placeholder box when there are no cells)
  PixelRect bar;  // the legend's colour bar: RampColor(0) at x0, RampColor(1) at x1 - 1
};

// The colour ramp: light yellow (0) through orange and red to dark red (1).
Rgba RampColor(double t);
// A short title for the picture: "bin_fill  houpu  1h 2025-11-21 15:00 - 16:00  p7", plus the
// crs when it is not wgs84 ("  gcj02").
std::string HeatmapTitle(const HeatmapResult& r);
// Each cell a rectangle filled by intensity on the ramp (cells without one grey), equirectangular
// with longitudes scaled by cos(latitude of the box's centre), grid lines on the cell borders when
// cells are at least 4 px apart, a frame, then the legend: "<layer>: <metric> per cell", the
// colour bar, its low and high values. kInvalid for a width out of range or an unknown metric.
Result<HeatPicture> RenderHeatPicture(const HeatmapResult& r, const PictureOptions& options);

}  // namespace sanigate::ctl
