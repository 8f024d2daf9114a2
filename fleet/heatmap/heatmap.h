// The heat-map engine of sanifleet: bins positions, fill readings and alarm events from the
// normalized model into geohash cells (stored at precision 8, rolled up to 7 or 6 on demand)
// and tumbling windows, and keeps the current state (where each truck, bin and alarm is now).
// Pure logic, no I/O; one engine per site; not thread-safe (sanifleet's worker owns it).
//
// Layers and the meaning of a cell's aggregate (n, sum, min, max, first, last) and extras:
//   vehicle_coverage, workers  one sample per position, value speed_kmh (0 when absent);
//                              extras passes (entries into the cell at the output precision;
//                              a return after pass_gap_s is a new pass) and dwell_s (time
//                              since the vehicle's previous point, credited to the cell it
//                              arrived in, to 0.1 s; gaps over max_gap_s ignored). State: vehicles seen there within
//                              state_max_age_s.
//                              "Previous" is in the vehicle's one track, ordered by the terminal's
//                              time: a late point (older than the vehicle's latest, back-filled or
//                              not) is merged in at its time, and the point after it loses its old
//                              entry and dwell and gets them anew, so passes and dwell are what
//                              the points in time order would give. A point at the same time as
//                              one already in the track is a duplicate and ignored.
//                              Bound: per vehicle the track keeps its newest points (12 bytes
//                              each), at most kTrackPoints (4096: ~48 KiB, 11 h of 10 s reports)
//                              and none older than retention_s + max(pass_gap_s, max_gap_s). A
//                              point older than all kept ones (when some were let go, less than
//                              that margin after the newest let go) is a sample without passes
//                              or dwell (late_untracked).
//   bin_fill                   one sample per reading, value fill_level_pct. State: each bin's
//                              latest fill.
//   overflow                   one sample (value 1) per activation; extra cleared. State: the
//                              overflows active now.
//   alarms                     one sample (value 1) per activation of sos, fire or odour;
//                              extras sos, fire, odour. State: the alarms active now.
//   unattended                 state only: overflowing bins with no vehicle in their cell or
//                              the 8 around it (at unattended_precision) since the overflow began
//                              or the last pass, for unattended_after_s. Value = seconds waiting;
//                              first/last = overflow start times; extra last_pass (max).
// Times are the measurement's own, so backfilled points land in the window of their timestamp.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/status.h"
#include "heatmap/aggregate.h"

namespace sanigate::heatmap {

enum class Layer { kVehicleCoverage, kBinFill, kOverflow, kAlarms, kWorkers, kUnattended };
constexpr int kLayerCount = 6;
const char* LayerName(Layer layer);
std::optional<Layer> ParseLayer(std::string_view name);
// The extras' names and merge operations of a layer, in the order they are exported.
struct ExtraField {
  const char* name;
  MergeOp merge;
};
std::vector<ExtraField> ExtraFields(Layer layer);

constexpr int kStoragePrecision = 8;
constexpr int kCoarsestPrecision = 6;

enum class Crs { kWgs84, kGcj02 };
const char* CrsName(Crs crs);

struct HeatmapConfig {
  bool enabled = true;
  std::vector<Layer> layers = {Layer::kVehicleCoverage, Layer::kBinFill, Layer::kOverflow,
                               Layer::kAlarms,          Layer::kWorkers, Layer::kUnattended};
  int feed_precision = 7;                              // 6, 7 or 8
  std::vector<int64_t> windows_s = {900, 3600, 86400};  // tumbling window sizes
  int64_t retention_s = 86400;     // windows ending longer ago are dropped; older points are "late"
  int64_t utc_offset_s = 8 * 3600; // windows align to local midnight (China: UTC+8)
  Crs crs = Crs::kWgs84;           // of the cells: GCJ-02 bins the converted coordinates
  int64_t feed_interval_ms = 10'000;
  int64_t unattended_after_s = 7200;
  int unattended_precision = 7;
  int64_t state_max_age_s = 300;
  int64_t max_gap_s = 300;
  int64_t pass_gap_s = 600;
  int64_t max_future_s = 300;      // points further ahead of the clock are refused
  // For the owner, not the engine: sanifleet saves the map this often (0 = only at a clean stop),
  // so a crash loses at most this much of it.
  int64_t snapshot_interval_s = 60;
  bool Has(Layer layer) const;
};

struct CellOut {
  uint64_t cell = 0;  // geohash at the requested precision
  CellAgg value;      // extras already mapped to ExtraFields(layer)
  bool operator==(const CellOut&) const = default;
};

struct WindowOut {
  int64_t size_s = 0, start_ms = 0, end_ms = 0;
  std::vector<CellOut> cells;  // sorted by cell
};

struct HeatmapStats {
  uint64_t points = 0, readings = 0, events = 0;
  uint64_t late_dropped = 0, future_dropped = 0;
  uint64_t cells = 0, windows = 0;  // stored (precision 8) cells over all windows and layers
  // Positions: merged into a track before its latest point; older than a track's kept points
  // (a sample without passes or dwell); duplicates ignored (not in `points`).
  uint64_t late_merged = 0, late_untracked = 0, duplicates = 0;
};

// The most points a vehicle's track keeps for merging late points (see the top of this file).
constexpr size_t kTrackPoints = 4096;

class HeatmapEngine {
 public:
  using DeviceId = uint32_t;
  explicit HeatmapEngine(HeatmapConfig config);
  ~HeatmapEngine();
  const HeatmapConfig& config() const { return cfg_; }

  DeviceId Device(std::string_view key);

  // Inputs, in WGS-84. `now` is the wall clock, for lateness and future checks.
  // A position's `backfill` changes nothing: late or not, it is merged into the one track.
  void Position(DeviceId d, bool worker, int64_t ts, double lat, double lon, std::optional<double> speed_kmh,
                bool backfill, int64_t now);
  void Fill(DeviceId d, int64_t ts, double lat, double lon, double fill_pct, int64_t now);
  // Events the heat map does not use (tilt, door_open…) are ignored.
  // A back-filled event (reported late) enters the windows of its own time but never changes
  // what is active now; a cleared alarm creates no cell.
  void Event(DeviceId d, int64_t ts, double lat, double lon, std::string_view event, bool active, bool backfill,
             int64_t now);

  std::vector<CellOut> State(Layer layer, int precision, int64_t now) const;
  // The window of `size_s` containing `at_ms` (empty cells when nothing landed in it).
  WindowOut Window(Layer layer, int64_t size_s, int64_t at_ms, int precision) const;
  int64_t WindowStart(int64_t ts_ms, int64_t size_s) const;

  // Closed windows (end <= now) that received points since they were last taken: for the
  // feed's closed-window messages. Also drops windows beyond retention.
  struct ClosedWindow {
    Layer layer;
    int64_t size_s, start_ms;
    bool amended;  // it had been taken before and late points changed it
  };
  std::vector<ClosedWindow> TakeClosed(int64_t now);

  HeatmapStats stats() const;

  // Everything the engine holds (windows, devices' state), so a restart of sanifleet keeps the
  // day's map. A compact binary form for this machine (native byte order), not an exchange
  // format; Load refuses a snapshot made with other crs, windows or UTC offset. Versioned: the
  // format before the one track per vehicle is still read (each track resumes from the last point).
  std::string Snapshot() const;
  Status Restore(std::string_view snapshot);

 private:
  // The precision-8 cell of a point in the configured crs, or nullopt (counted) when it is too
  // late for retention or too far in the future.
  std::optional<uint64_t> Admit(int64_t ts, double lat, double lon, int64_t now);
  struct Impl;
  HeatmapConfig cfg_;
  std::unique_ptr<Impl> impl_;
};

// Adds b's cells into a (both sorted by cell, same layer and precision): how feeds merge.
std::vector<CellOut> MergeCells(const std::vector<CellOut>& a, const std::vector<CellOut>& b, Layer layer);

}  // namespace sanigate::heatmap
