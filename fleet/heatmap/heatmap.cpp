#include "heatmap/heatmap.h"

#include <algorithm>
#include <cstring>
#include <deque>
#include <limits>
#include <type_traits>
#include <utility>

#include <absl/container/flat_hash_map.h>

#include "heatmap/gcj02.h"
#include "heatmap/geohash.h"

namespace sanigate::heatmap {
namespace {

constexpr int kLayers = kLayerCount;
int Index(Layer l) { return static_cast<int>(l); }

// Stored extras (at precision 8, all added on roll-up). Vehicles keep a pass counter per
// precision, because entering a 150 m cell is not the same as entering one of its 40 m cells.
constexpr int kPasses6 = 0, kDwell = 3;
constexpr int kCleared = 0;
const char* const kAlarmNames[] = {"sos", "fire", "odour"};
constexpr int kAlarmTypes = 3;

int AlarmType(std::string_view event) {
  for (int i = 0; i < kAlarmTypes; ++i)
    if (event == kAlarmNames[i]) return i;
  return -1;
}

// A point of a vehicle's track in 12 bytes (a truck keeps up to kTrackPoints of them): the
// precision-8 cell (40 bits), the time in ms biased by 2^54 (55 bits) and whether it was
// binned as a worker (which layer holds its passes and dwell).
class TrackPoint {
 public:
  static constexpr int64_t kBias = int64_t{1} << 54;
  static bool Fits(int64_t ts) { return ts > -kBias && ts < kBias; }
  TrackPoint() = default;
  TrackPoint(int64_t ts, uint64_t cell, bool worker) {
    auto t = static_cast<uint64_t>(ts + kBias);
    cell_lo_ = static_cast<uint32_t>(cell);
    ts_lo_ = static_cast<uint32_t>(t);
    rest_ = static_cast<uint32_t>((t >> 32) << 9 | (worker ? 1u << 8 : 0u) | ((cell >> 32) & 0xff));
  }
  int64_t ts() const { return static_cast<int64_t>((uint64_t{rest_ >> 9} << 32) | ts_lo_) - kBias; }
  uint64_t cell() const { return (uint64_t{rest_ & 0xff} << 32) | cell_lo_; }
  bool worker() const { return (rest_ >> 8) & 1; }

 private:
  uint32_t cell_lo_, ts_lo_, rest_;
};
static_assert(sizeof(TrackPoint) == 12 && std::is_trivially_copyable_v<TrackPoint>);

// A vehicle's one track, in time order. `gone` is the newest time of a point of it that is not
// kept (let go for the bounds, or untracked); a point older than the oldest kept one is only
// merged when it is more than max(pass_gap_s, max_gap_s) after `gone`, where what came before
// cannot change its entry or dwell.
struct Track {
  std::deque<TrackPoint> points;
  int64_t gone = std::numeric_limits<int64_t>::min();
};

// A point's contribution to its cell besides the sample: an entry per precision 6..8, and
// dwell in tenths of a second.
struct Credit {
  std::array<uint32_t, 3> passes{};
  uint32_t dwell = 0;
  bool operator==(const Credit&) const = default;
};

struct ActiveAlarm {
  int type;
  int64_t since;
  uint64_t cell;
};

struct DeviceState {
  std::unique_ptr<Track> track;  // vehicles and workers only
  bool has_position = false, worker = false;
  int64_t position_ts = 0;
  uint64_t position_cell = 0;
  double speed = 0;
  bool has_fill = false;
  int64_t fill_ts = 0;
  uint64_t fill_cell = 0;
  double fill = 0;
  bool overflow = false;
  int64_t overflow_since = 0;
  uint64_t overflow_cell = 0;
  std::vector<ActiveAlarm> alarms;
};

// What a window keeps per precision-8 cell: 56 bytes in a flat table (a city day holds tens of
// millions). Times are offsets from the window start; counters are whole numbers (dwell in
// tenths of a second), so partials stay exact however they are added up.
struct StoredCell {
  double sum = 0, min = 0, max = 0;
  uint32_t n = 0, first = 0, last = 0;
  std::array<uint32_t, kExtras> extra{};

  void Add(double v, int64_t offset_ms) {
    auto off = static_cast<uint32_t>(offset_ms);
    if (n == 0) {
      min = max = v;
      first = last = off;
    } else {
      min = std::min(min, v);
      max = std::max(max, v);
      first = std::min(first, off);
      last = std::max(last, off);
    }
    ++n;
    sum += v;
  }
  // Adds a partial of a window starting `shift_ms` later (a 15-minute window into its hour).
  void Merge(const StoredCell& o, int64_t shift_ms) {
    if (o.n > 0) {
      auto shift = static_cast<uint32_t>(shift_ms);
      if (n == 0) {
        min = o.min;
        max = o.max;
        first = o.first + shift;
        last = o.last + shift;
      } else {
        min = std::min(min, o.min);
        max = std::max(max, o.max);
        first = std::min(first, o.first + shift);
        last = std::max(last, o.last + shift);
      }
      n += o.n;
      sum += o.sum;
    }
    for (size_t i = 0; i < kExtras; ++i) extra[i] += o.extra[i];
  }
};

struct WindowData {
  absl::flat_hash_map<uint64_t, StoredCell> cells;
  bool dirty = false;  // got points since it was last taken as closed
  bool taken = false;
  bool folded = false;  // (smallest size) merged into the larger windows; later points go to both
};

// The windows of one size. Points land in the smallest size only; when one of its windows
// closes it is folded into the larger ones (a few hundred thousand cells once per 15 minutes
// instead of two more table updates per point). The larger windows' open part is added on read.
struct Series {
  int64_t size_ms;
  std::map<int64_t, WindowData> windows;  // by start
  int64_t cached_start = 0;
  WindowData* cached = nullptr;

  WindowData& At(int64_t start) {
    if (!cached || cached_start != start) {
      auto [it, created] = windows.try_emplace(start);
      // A new window will likely hold about as many cells as the latest one: size it once
      // instead of growing it through a dozen rehashes.
      if (created && it != windows.begin()) it->second.cells.reserve(std::prev(it)->second.cells.size());
      cached = &it->second;
      cached_start = start;
    }
    return *cached;
  }
};

constexpr double kDwellUnit = 0.1;  // s

// A stored cell as the public aggregate of `layer` at `precision`, times back to epoch ms.
CellAgg Export(Layer layer, const StoredCell& c, int64_t window_start, int precision) {
  CellAgg out;
  if (c.n > 0) {
    out.agg.n = c.n;
    out.agg.sum = c.sum;
    out.agg.min = c.min;
    out.agg.max = c.max;
    out.agg.first = window_start + c.first;
    out.agg.last = window_start + c.last;
  }
  if (layer == Layer::kVehicleCoverage || layer == Layer::kWorkers) {
    out.extra[0] = c.extra[static_cast<size_t>(kPasses6 + (precision - kCoarsestPrecision))];
    out.extra[1] = c.extra[kDwell] * kDwellUnit;
  } else {
    for (size_t i = 0; i < kExtras; ++i) out.extra[i] = c.extra[i];
  }
  return out;
}

void AddExtras(CellAgg& into, const CellAgg& from, const std::vector<ExtraField>* ops) {
  for (int i = 0; i < kExtras; ++i) {
    if (ops && i < static_cast<int>(ops->size()) && (*ops)[static_cast<size_t>(i)].merge == MergeOp::kMax)
      into.extra[static_cast<size_t>(i)] = std::max(into.extra[static_cast<size_t>(i)], from.extra[static_cast<size_t>(i)]);
    else
      into.extra[static_cast<size_t>(i)] += from.extra[static_cast<size_t>(i)];
  }
}

std::vector<CellOut> Sorted(std::unordered_map<uint64_t, CellAgg>&& cells) {
  std::vector<CellOut> out;
  out.reserve(cells.size());
  for (auto& [cell, v] : cells) out.push_back({cell, v});
  std::sort(out.begin(), out.end(), [](const CellOut& a, const CellOut& b) { return a.cell < b.cell; });
  return out;
}

}  // namespace

const char* LayerName(Layer layer) {
  switch (layer) {
    case Layer::kVehicleCoverage: return "vehicle_coverage";
    case Layer::kBinFill: return "bin_fill";
    case Layer::kOverflow: return "overflow";
    case Layer::kAlarms: return "alarms";
    case Layer::kWorkers: return "workers";
    case Layer::kUnattended: return "unattended";
  }
  return "?";
}

std::optional<Layer> ParseLayer(std::string_view name) {
  for (int i = 0; i < kLayers; ++i)
    if (name == LayerName(static_cast<Layer>(i))) return static_cast<Layer>(i);
  return std::nullopt;
}

std::vector<ExtraField> ExtraFields(Layer layer) {
  switch (layer) {
    case Layer::kVehicleCoverage:
    case Layer::kWorkers: return {{"passes", MergeOp::kAdd}, {"dwell_s", MergeOp::kAdd}};
    case Layer::kBinFill: return {};
    case Layer::kOverflow: return {{"cleared", MergeOp::kAdd}};
    case Layer::kAlarms: return {{"sos", MergeOp::kAdd}, {"fire", MergeOp::kAdd}, {"odour", MergeOp::kAdd}};
    case Layer::kUnattended: return {{"last_pass", MergeOp::kMax}};
  }
  return {};
}

const char* CrsName(Crs crs) { return crs == Crs::kGcj02 ? "gcj02" : "wgs84"; }

bool HeatmapConfig::Has(Layer layer) const { return std::find(layers.begin(), layers.end(), layer) != layers.end(); }

struct HeatmapEngine::Impl {
  absl::flat_hash_map<std::string, DeviceId> ids;
  std::vector<DeviceState> devices;
  std::array<std::vector<Series>, kLayers> series;
  absl::flat_hash_map<uint64_t, int64_t> last_vehicle;  // unattended-precision cell → last vehicle point
  HeatmapStats stats;
};

HeatmapEngine::HeatmapEngine(HeatmapConfig config) : cfg_(std::move(config)), impl_(std::make_unique<Impl>()) {
  for (int l = 0; l < kLayers; ++l) {
    if (static_cast<Layer>(l) == Layer::kUnattended || !cfg_.Has(static_cast<Layer>(l))) continue;
    for (int64_t s : cfg_.windows_s) impl_->series[static_cast<size_t>(l)].push_back(Series{s * 1000, {}, 0, nullptr});
  }
}

HeatmapEngine::~HeatmapEngine() = default;

HeatmapEngine::DeviceId HeatmapEngine::Device(std::string_view key) {
  auto [it, inserted] = impl_->ids.try_emplace(std::string(key), static_cast<DeviceId>(impl_->devices.size()));
  if (inserted) impl_->devices.emplace_back();
  return it->second;
}

int64_t HeatmapEngine::WindowStart(int64_t ts_ms, int64_t size_s) const {
  int64_t size = size_s * 1000, local = ts_ms + cfg_.utc_offset_s * 1000;
  int64_t q = local / size;
  if (local % size < 0) --q;  // floor for times before the epoch
  return q * size - cfg_.utc_offset_s * 1000;
}

namespace {

// Applies `fn` to the stored cell of a sample at ts: in the smallest window, and also in the
// larger ones when that window was already folded into them (a late point).
template <typename Fn>
void ForEachWindowCell(std::vector<Series>& all, const HeatmapEngine& e, int64_t ts, uint64_t cell, Fn&& fn) {
  if (all.empty()) return;
  int64_t start = e.WindowStart(ts, all[0].size_ms / 1000);
  WindowData& base = all[0].At(start);
  base.dirty = true;
  fn(base.cells[cell], ts - start);
  if (!base.folded) return;
  for (size_t i = 1; i < all.size(); ++i) {
    int64_t larger = e.WindowStart(ts, all[i].size_ms / 1000);
    WindowData& w = all[i].At(larger);
    w.dirty = true;
    fn(w.cells[cell], ts - larger);
  }
}

// The entry and dwell of `p` after `prev` (none: the first point of a track).
Credit CreditOf(const HeatmapConfig& cfg, const TrackPoint* prev, const TrackPoint& p) {
  Credit c;
  int64_t dt = prev ? p.ts() - prev->ts() : 0;
  bool fresh = !prev || dt > cfg.pass_gap_s * 1000;
  for (int q = kCoarsestPrecision; q <= kStoragePrecision; ++q)
    c.passes[static_cast<size_t>(q - kCoarsestPrecision)] =
        fresh || Parent(p.cell(), kStoragePrecision, q) != Parent(prev->cell(), kStoragePrecision, q) ? 1 : 0;
  if (prev && dt > 0 && dt <= cfg.max_gap_s * 1000) c.dwell = static_cast<uint32_t>((dt + 50) / 100);
  return c;
}

// Beyond this gap a point's predecessor changes neither its entry (always one) nor its dwell.
int64_t Slack(const HeatmapConfig& cfg) { return std::max(cfg.pass_gap_s, cfg.max_gap_s) * 1000; }

// Lets go of the points no longer needed: a point admitted from now on is within retention, so
// it is more than Slack after them and they could not change its entry or dwell.
void Prune(Track& t, const HeatmapConfig& cfg, int64_t now) {
  int64_t horizon = now - cfg.retention_s * 1000 - Slack(cfg);
  while (!t.points.empty() && t.points.front().ts() < horizon) {
    t.gone = std::max(t.gone, t.points.front().ts());
    t.points.pop_front();
  }
}

uint32_t Replace(uint32_t value, uint32_t before, uint32_t after) {
  return value >= before ? value - before + after : after;  // never below zero, come what may
}

// Replaces a stored point's credit in the windows that hold it: the smallest window and, once
// that was folded, the larger ones. Unlike ForEachWindowCell it creates nothing: a window
// already dropped stays dropped.
void AmendCredit(std::vector<Series>& all, const HeatmapEngine& e, const TrackPoint& p, const Credit& before,
                 const Credit& after) {
  if (all.empty()) return;
  auto amend = [&](Series& s) -> WindowData* {
    auto w = s.windows.find(e.WindowStart(p.ts(), s.size_ms / 1000));
    if (w == s.windows.end()) return nullptr;
    auto c = w->second.cells.find(p.cell());
    if (c != w->second.cells.end()) {
      for (size_t i = 0; i < after.passes.size(); ++i)
        c->second.extra[i] = Replace(c->second.extra[i], before.passes[i], after.passes[i]);
      c->second.extra[kDwell] = Replace(c->second.extra[kDwell], before.dwell, after.dwell);
      w->second.dirty = true;
    }
    return &w->second;
  };
  WindowData* base = amend(all[0]);
  if (base && !base->folded) return;  // the larger windows add it on read
  for (size_t i = 1; i < all.size(); ++i) amend(all[i]);
}

}  // namespace

std::optional<uint64_t> HeatmapEngine::Admit(int64_t ts, double lat, double lon, int64_t now) {
  if (ts < now - cfg_.retention_s * 1000) {
    ++impl_->stats.late_dropped;
    return std::nullopt;
  }
  if (ts > now + cfg_.max_future_s * 1000) {
    ++impl_->stats.future_dropped;
    return std::nullopt;
  }
  if (cfg_.crs == Crs::kGcj02) {
    LatLon g = WgsToGcj(lat, lon);
    lat = g.lat;
    lon = g.lon;
  }
  return Encode(lat, lon, kStoragePrecision);
}

void HeatmapEngine::Position(DeviceId d, bool worker, int64_t ts, double lat, double lon,
                             std::optional<double> speed_kmh, bool /*backfill*/, int64_t now) {
  Impl& m = *impl_;
  auto admitted = Admit(ts, lat, lon, now);
  if (!admitted) return;
  uint64_t cell = *admitted;
  DeviceState& dev = m.devices[d];
  Layer layer = worker ? Layer::kWorkers : Layer::kVehicleCoverage;
  bool binned = cfg_.Has(layer);
  std::deque<TrackPoint>::iterator at;  // where it goes in the track
  if (binned) {
    if (!dev.track) dev.track = std::make_unique<Track>();
    Prune(*dev.track, cfg_, now);
    auto& points = dev.track->points;
    // Live points come in order: only a late one needs the search.
    at = points.empty() || points.back().ts() < ts
             ? points.end()
             : std::lower_bound(points.begin(), points.end(), ts, [](const TrackPoint& p, int64_t v) { return p.ts() < v; });
    if (at != points.end() && at->ts() == ts) {  // delivered again (a batch resent, a redelivery)
      ++m.stats.duplicates;
      return;
    }
  }
  ++m.stats.points;
  double speed = speed_kmh.value_or(0.0);
  if (!worker) {
    uint64_t near = Parent(cell, kStoragePrecision, cfg_.unattended_precision);
    int64_t& last = m.last_vehicle[near];
    last = std::max(last, ts);
  }
  if (!dev.has_position || ts >= dev.position_ts) {
    dev.has_position = true;
    dev.worker = worker;
    dev.position_ts = ts;
    dev.position_cell = cell;
    dev.speed = speed;
  }
  if (!binned) return;
  auto& series = m.series[static_cast<size_t>(Index(layer))];

  // One track per vehicle in the terminal's time order; see heatmap.h.
  Credit credit;  // none for an untracked point
  Track& t = *dev.track;
  bool untracked = !TrackPoint::Fits(ts) || (at == t.points.begin() && ts <= t.gone + Slack(cfg_));
  if (untracked) {
    ++m.stats.late_untracked;
    t.gone = std::max(t.gone, ts);
  } else {
    TrackPoint p(ts, cell, worker);
    const TrackPoint* prev = at == t.points.begin() ? nullptr : &*std::prev(at);
    credit = CreditOf(cfg_, prev, p);
    if (at != t.points.end()) {
      // Late: the next point's entry and dwell were counted from `prev`; now they follow p.
      ++m.stats.late_merged;
      Credit before = CreditOf(cfg_, prev, *at), after = CreditOf(cfg_, &p, *at);
      if (before != after)
        AmendCredit(m.series[static_cast<size_t>(Index(at->worker() ? Layer::kWorkers : Layer::kVehicleCoverage))],
                    *this, *at, before, after);
    }
    t.points.insert(at, p);
    while (t.points.size() > kTrackPoints) {
      t.gone = std::max(t.gone, t.points.front().ts());
      t.points.pop_front();
    }
  }
  ForEachWindowCell(series, *this, ts, cell, [&](StoredCell& c, int64_t offset) {
    c.Add(speed, offset);
    for (size_t i = 0; i < credit.passes.size(); ++i) c.extra[i] += credit.passes[i];
    c.extra[kDwell] += credit.dwell;
  });
}

void HeatmapEngine::Fill(DeviceId d, int64_t ts, double lat, double lon, double fill_pct, int64_t now) {
  Impl& m = *impl_;
  auto admitted = Admit(ts, lat, lon, now);
  if (!admitted) return;
  ++m.stats.readings;
  uint64_t cell = *admitted;
  DeviceState& dev = m.devices[d];
  if (!dev.has_fill || ts >= dev.fill_ts) {
    dev.has_fill = true;
    dev.fill_ts = ts;
    dev.fill_cell = cell;
    dev.fill = fill_pct;
  }
  if (!cfg_.Has(Layer::kBinFill)) return;
  ForEachWindowCell(m.series[static_cast<size_t>(Index(Layer::kBinFill))], *this, ts, cell,
                    [&](StoredCell& c, int64_t offset) { c.Add(fill_pct, offset); });
}

void HeatmapEngine::Event(DeviceId d, int64_t ts, double lat, double lon, std::string_view event, bool active,
                          bool backfill, int64_t now) {
  Impl& m = *impl_;
  int alarm = AlarmType(event);
  bool overflow = event == "overflow";
  if (!overflow && alarm < 0) return;
  auto admitted = Admit(ts, lat, lon, now);
  if (!admitted) return;
  ++m.stats.events;
  uint64_t cell = *admitted;
  DeviceState& dev = m.devices[d];
  Layer layer = overflow ? Layer::kOverflow : Layer::kAlarms;
  if (backfill) {
    // History: counted in its windows below, never "active now".
  } else if (overflow) {
    if (active && !dev.overflow) dev.overflow_since = ts;
    if (active) dev.overflow_cell = cell;
    dev.overflow = active;
  } else {
    auto it = std::find_if(dev.alarms.begin(), dev.alarms.end(), [&](const ActiveAlarm& a) { return a.type == alarm; });
    if (active && it == dev.alarms.end()) dev.alarms.push_back({alarm, ts, cell});
    else if (active) it->cell = cell;
    else if (it != dev.alarms.end()) dev.alarms.erase(it);
  }
  if (!cfg_.Has(layer)) return;
  if (!overflow && !active) return;  // the alarms layer counts raised alarms: a clear adds no cell
  ForEachWindowCell(m.series[static_cast<size_t>(Index(layer))], *this, ts, cell, [&](StoredCell& c, int64_t offset) {
    if (overflow) {
      if (active) c.Add(1.0, offset);
      else c.extra[kCleared] += 1;
    } else if (active) {
      c.Add(1.0, offset);
      c.extra[static_cast<size_t>(alarm)] += 1;
    }
  });
}

std::vector<CellOut> HeatmapEngine::State(Layer layer, int precision, int64_t now) const {
  const Impl& m = *impl_;
  std::unordered_map<uint64_t, CellAgg> out;
  auto at = [&](uint64_t cell8) -> CellAgg& { return out[Parent(cell8, kStoragePrecision, precision)]; };
  for (const DeviceState& dev : m.devices) {
    switch (layer) {
      case Layer::kVehicleCoverage:
      case Layer::kWorkers:
        if (dev.has_position && dev.worker == (layer == Layer::kWorkers) && now - dev.position_ts <= cfg_.state_max_age_s * 1000)
          at(dev.position_cell).agg.Add(dev.speed, dev.position_ts);
        break;
      case Layer::kBinFill:
        if (dev.has_fill) at(dev.fill_cell).agg.Add(dev.fill, dev.fill_ts);
        break;
      case Layer::kOverflow:
        if (dev.overflow) at(dev.overflow_cell).agg.Add(1.0, dev.overflow_since);
        break;
      case Layer::kAlarms:
        for (const ActiveAlarm& a : dev.alarms) {
          CellAgg& c = at(a.cell);
          c.agg.Add(1.0, a.since);
          c.extra[static_cast<size_t>(a.type)] += 1;
        }
        break;
      case Layer::kUnattended: {
        if (!dev.overflow) break;
        uint64_t near = Parent(dev.overflow_cell, kStoragePrecision, cfg_.unattended_precision);
        int64_t last_pass = 0;
        for (int dlat = -1; dlat <= 1; ++dlat)
          for (int dlon = -1; dlon <= 1; ++dlon)
            if (auto n = Neighbour(near, cfg_.unattended_precision, dlat, dlon))
              if (auto it = m.last_vehicle.find(*n); it != m.last_vehicle.end()) last_pass = std::max(last_pass, it->second);
        int64_t since = std::max(dev.overflow_since, last_pass);
        if (now - since < cfg_.unattended_after_s * 1000) break;
        CellAgg& c = at(dev.overflow_cell);
        c.agg.Add(static_cast<double>(now - since) / 1000.0, dev.overflow_since);
        c.extra[0] = std::max(c.extra[0], static_cast<double>(last_pass));
        break;
      }
    }
  }
  return Sorted(std::move(out));
}

WindowOut HeatmapEngine::Window(Layer layer, int64_t size_s, int64_t at_ms, int precision) const {
  WindowOut w;
  w.size_s = size_s;
  w.start_ms = WindowStart(at_ms, size_s);
  w.end_ms = w.start_ms + size_s * 1000;
  for (const Series& s : impl_->series[static_cast<size_t>(Index(layer))]) {
    if (s.size_ms != size_s * 1000) continue;
    // Rolled up as stored (whole-number counters), converted once: exact however it is split.
    absl::flat_hash_map<uint64_t, StoredCell> rolled;
    auto add = [&](const WindowData& data, int64_t data_start) {
      for (const auto& [cell, v] : data.cells) rolled[Parent(cell, kStoragePrecision, precision)].Merge(v, data_start - w.start_ms);
    };
    if (auto it = s.windows.find(w.start_ms); it != s.windows.end()) add(it->second, w.start_ms);
    // A larger window's part not folded yet: the smallest windows inside it.
    const Series& base = impl_->series[static_cast<size_t>(Index(layer))].front();
    if (&s != &base)
      for (auto it = base.windows.lower_bound(w.start_ms); it != base.windows.end() && it->first < w.end_ms; ++it)
        if (!it->second.folded) add(it->second, it->first);
    w.cells.reserve(rolled.size());
    for (const auto& [cell, v] : rolled) w.cells.push_back({cell, Export(layer, v, w.start_ms, precision)});
    std::sort(w.cells.begin(), w.cells.end(), [](const CellOut& a, const CellOut& b) { return a.cell < b.cell; });
  }
  return w;
}

std::vector<HeatmapEngine::ClosedWindow> HeatmapEngine::TakeClosed(int64_t now) {
  std::vector<ClosedWindow> out;
  // A vehicle gone quiet would keep its track forever otherwise.
  for (DeviceState& dev : impl_->devices) {
    if (!dev.track) continue;
    Prune(*dev.track, cfg_, now);
    if (dev.track->points.empty()) dev.track.reset();  // what it let go is too old to matter
  }
  for (int l = 0; l < kLayers; ++l) {
    auto& all = impl_->series[static_cast<size_t>(l)];
    if (all.empty()) continue;
    // Fold the closed smallest windows into the larger ones first, so those are complete
    // when they close themselves.
    for (auto& [start, base] : all[0].windows) {
      if (start + all[0].size_ms > now) break;
      if (base.folded) continue;
      for (size_t i = 1; i < all.size(); ++i) {
        int64_t larger = WindowStart(start, all[i].size_ms / 1000);
        WindowData& w = all[i].At(larger);
        w.cells.reserve(w.cells.size() + base.cells.size() / 2);
        for (const auto& [cell, c] : base.cells) w.cells[cell].Merge(c, start - larger);
        if (!base.cells.empty()) w.dirty = true;
      }
      base.folded = true;
    }
    for (Series& s : all) {
      for (auto it = s.windows.begin(); it != s.windows.end();) {
        int64_t end = it->first + s.size_ms;
        if (end > now) break;  // ordered by start: the rest are open
        if (it->second.dirty) {
          out.push_back({static_cast<Layer>(l), s.size_ms / 1000, it->first, it->second.taken});
          it->second.dirty = false;
          it->second.taken = true;
        }
        if (end <= now - cfg_.retention_s * 1000) {
          if (s.cached == &it->second) s.cached = nullptr;
          it = s.windows.erase(it);
        } else {
          ++it;
        }
      }
    }
  }
  return out;
}

HeatmapStats HeatmapEngine::stats() const {
  HeatmapStats s = impl_->stats;
  for (const auto& layer : impl_->series)
    for (const Series& series : layer)
      for (const auto& [start, w] : series.windows) {
        ++s.windows;
        s.cells += w.cells.size();
      }
  return s;
}

// ---- snapshot ----

namespace {

// The format's version is in the magic. 2: one track per vehicle. 1 (still read): a live and a
// back-fill stream per vehicle, each only its last point, and fewer stats.
constexpr char kMagic[] = "SGHM2";
constexpr char kMagicV1[] = "SGHM1";
static_assert(sizeof kMagic == sizeof kMagicV1);

struct V1Track {
  int64_t ts;
  uint64_t cell;
  bool valid;
};

struct V1Stats {
  uint64_t points, readings, events, late_dropped, future_dropped, cells, windows;
};

struct Writer {
  std::string out;
  template <typename T>
  void Put(const T& v) {
    static_assert(std::is_trivially_copyable_v<T>);
    out.append(reinterpret_cast<const char*>(&v), sizeof v);
  }
  void Str(const std::string& s) {
    Put(static_cast<uint32_t>(s.size()));
    out += s;
  }
};

struct Reader {
  std::string_view in;
  bool ok = true;
  template <typename T>
  T Get() {
    T v{};
    if (in.size() < sizeof v) return ok = false, v;
    std::memcpy(&v, in.data(), sizeof v);
    in.remove_prefix(sizeof v);
    return v;
  }
  std::string Str() {
    auto n = Get<uint32_t>();
    if (!ok || in.size() < n) return ok = false, std::string();
    std::string s(in.substr(0, n));
    in.remove_prefix(n);
    return s;
  }
};

}  // namespace

std::string HeatmapEngine::Snapshot() const {
  const Impl& m = *impl_;
  Writer w;
  w.out.append(kMagic, sizeof kMagic);
  w.Put(static_cast<int32_t>(cfg_.crs));
  w.Put(cfg_.utc_offset_s);
  w.Put(static_cast<uint32_t>(cfg_.windows_s.size()));
  for (int64_t s : cfg_.windows_s) w.Put(s);
  std::vector<const std::string*> names(m.devices.size());
  for (const auto& [key, id] : m.ids) names[id] = &key;
  w.Put(static_cast<uint32_t>(m.devices.size()));
  for (size_t i = 0; i < m.devices.size(); ++i) {
    const DeviceState& d = m.devices[i];
    w.Str(*names[i]);
    w.Put(static_cast<uint8_t>(d.track != nullptr));
    if (d.track) {
      w.Put(d.track->gone);
      w.Put(static_cast<uint32_t>(d.track->points.size()));
      for (const TrackPoint& p : d.track->points) w.Put(p);
    }
    w.Put(d.has_position), w.Put(d.worker), w.Put(d.position_ts), w.Put(d.position_cell), w.Put(d.speed);
    w.Put(d.has_fill), w.Put(d.fill_ts), w.Put(d.fill_cell), w.Put(d.fill);
    w.Put(d.overflow), w.Put(d.overflow_since), w.Put(d.overflow_cell);
    w.Put(static_cast<uint32_t>(d.alarms.size()));
    for (const ActiveAlarm& a : d.alarms) w.Put(a);
  }
  for (const auto& layer : m.series) {
    w.Put(static_cast<uint32_t>(layer.size()));
    for (const Series& s : layer) {
      w.Put(s.size_ms);
      w.Put(static_cast<uint32_t>(s.windows.size()));
      for (const auto& [start, data] : s.windows) {
        w.Put(start), w.Put(data.dirty), w.Put(data.taken), w.Put(data.folded);
        w.Put(static_cast<uint64_t>(data.cells.size()));
        for (const auto& [cell, c] : data.cells) w.Put(cell), w.Put(c);
      }
    }
  }
  w.Put(static_cast<uint64_t>(m.last_vehicle.size()));
  for (const auto& [cell, ts] : m.last_vehicle) w.Put(cell), w.Put(ts);
  w.Put(m.stats);
  return std::move(w.out);
}

Status HeatmapEngine::Restore(std::string_view snapshot) {
  Reader r{snapshot};
  std::string_view magic = snapshot.substr(0, std::min(snapshot.size(), sizeof kMagic));
  int version = magic == std::string_view(kMagic, sizeof kMagic) ? 2 : magic == std::string_view(kMagicV1, sizeof kMagicV1) ? 1 : 0;
  if (version == 0) return Invalid("not a heat-map snapshot");
  r.in.remove_prefix(sizeof kMagic);
  auto crs = r.Get<int32_t>();
  auto offset = r.Get<int64_t>();
  std::vector<int64_t> windows(r.Get<uint32_t>());
  for (auto& s : windows) s = r.Get<int64_t>();
  if (!r.ok) return Invalid("truncated heat-map snapshot");
  if (crs != static_cast<int32_t>(cfg_.crs) || offset != cfg_.utc_offset_s || windows != cfg_.windows_s)
    return Invalid("the heat-map settings changed (crs, windows or utc_offset): the saved map does not fit them");
  auto fresh = std::make_unique<Impl>();
  Impl& m = *fresh;
  uint32_t devices = r.Get<uint32_t>();
  for (uint32_t i = 0; i < devices && r.ok; ++i) {
    m.ids[r.Str()] = i;
    DeviceState& d = m.devices.emplace_back();
    V1Track v1{};
    if (version == 1) {
      auto live = r.Get<V1Track>(), backfill = r.Get<V1Track>();
      v1 = live.valid && (!backfill.valid || live.ts >= backfill.ts) ? live : backfill;
    } else if (r.Get<uint8_t>() != 0) {
      auto& t = d.track = std::make_unique<Track>();
      t->gone = r.Get<int64_t>();
      auto points = r.Get<uint32_t>();
      if (!r.ok || points > r.in.size() / sizeof(TrackPoint)) return Invalid("truncated heat-map snapshot");
      for (uint32_t k = 0; k < points; ++k) {
        auto p = r.Get<TrackPoint>();
        if (!t->points.empty() && p.ts() <= t->points.back().ts()) return Invalid("corrupt heat-map snapshot");
        t->points.push_back(p);
      }
    }
    d.has_position = r.Get<bool>(), d.worker = r.Get<bool>(), d.position_ts = r.Get<int64_t>();
    d.position_cell = r.Get<uint64_t>(), d.speed = r.Get<double>();
    d.has_fill = r.Get<bool>(), d.fill_ts = r.Get<int64_t>(), d.fill_cell = r.Get<uint64_t>(), d.fill = r.Get<double>();
    d.overflow = r.Get<bool>(), d.overflow_since = r.Get<int64_t>(), d.overflow_cell = r.Get<uint64_t>();
    uint32_t alarms = r.Get<uint32_t>();
    for (uint32_t a = 0; a < alarms && r.ok; ++a) d.alarms.push_back(r.Get<ActiveAlarm>());
    if (v1.valid && TrackPoint::Fits(v1.ts)) {
      // Only the newest point is known: the track goes on from it; anything older is untracked.
      d.track = std::make_unique<Track>();
      d.track->points.emplace_back(v1.ts, v1.cell, d.worker);
      d.track->gone = v1.ts;
    }
  }
  for (auto& layer : m.series) {
    uint32_t count = r.Get<uint32_t>();
    for (uint32_t i = 0; i < count && r.ok; ++i) {
      Series& s = layer.emplace_back(Series{r.Get<int64_t>(), {}, 0, nullptr});
      uint32_t windows_n = r.Get<uint32_t>();
      for (uint32_t k = 0; k < windows_n && r.ok; ++k) {
        WindowData& data = s.windows[r.Get<int64_t>()];
        data.dirty = r.Get<bool>(), data.taken = r.Get<bool>(), data.folded = r.Get<bool>();
        auto cells = r.Get<uint64_t>();
        if (!r.ok || cells > r.in.size() / (sizeof(uint64_t) + sizeof(StoredCell))) return Invalid("truncated heat-map snapshot");
        data.cells.reserve(cells);
        for (uint64_t c = 0; c < cells; ++c) {
          auto cell = r.Get<uint64_t>();
          data.cells[cell] = r.Get<StoredCell>();
        }
      }
    }
  }
  auto vehicles = r.Get<uint64_t>();
  for (uint64_t i = 0; i < vehicles && r.ok; ++i) {
    auto cell = r.Get<uint64_t>();
    m.last_vehicle[cell] = r.Get<int64_t>();
  }
  if (version == 1) {
    auto old = r.Get<V1Stats>();
    m.stats.points = old.points, m.stats.readings = old.readings, m.stats.events = old.events;
    m.stats.late_dropped = old.late_dropped, m.stats.future_dropped = old.future_dropped;
  } else {
    m.stats = r.Get<HeatmapStats>();
  }
  if (!r.ok || !r.in.empty()) return Invalid("truncated or corrupt heat-map snapshot");
  // Layers configured now but not then (or the reverse) start empty / are dropped.
  for (int l = 0; l < kLayers; ++l)
    if (m.series[static_cast<size_t>(l)].size() != impl_->series[static_cast<size_t>(l)].size())
      m.series[static_cast<size_t>(l)] = std::move(impl_->series[static_cast<size_t>(l)]);
  impl_ = std::move(fresh);
  return Status::Ok();
}

std::vector<CellOut> MergeCells(const std::vector<CellOut>& a, const std::vector<CellOut>& b, Layer layer) {
  auto ops = ExtraFields(layer);
  std::vector<CellOut> out;
  out.reserve(a.size() + b.size());
  size_t i = 0, j = 0;
  while (i < a.size() || j < b.size()) {
    if (j == b.size() || (i < a.size() && a[i].cell < b[j].cell)) {
      out.push_back(a[i++]);
    } else if (i == a.size() || b[j].cell < a[i].cell) {
      out.push_back(b[j++]);
    } else {
      CellOut c = a[i++];
      c.value.agg.Merge(b[j].value.agg);
      AddExtras(c.value, b[j++].value, &ops);
      out.push_back(c);
    }
  }
  return out;
}

}  // namespace sanigate::heatmap
