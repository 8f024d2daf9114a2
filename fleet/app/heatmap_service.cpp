#include "app/heatmap_service.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "app/json_fields.h"
#include "core/atomic_file.h"
#include "heatmap/feed.h"
#include "mqtt/topics.h"

namespace sanigate::fleet {

using json = nlohmann::json;
using SteadyClock = std::chrono::steady_clock;

std::optional<HeatmapService::Input> HeatmapService::InputOf(const std::string& site, const std::string& device,
                                                             const ModelMessage& m, const DeviceEntry& e, int64_t now,
                                                             bool* unlocated) {
  const Observation& obs = m.obs;
  if (obs.type == Observation::Type::kStatus || obs.ts_ms <= 0) return std::nullopt;
  const json empty = json::object();
  auto mit = m.doc.find("metrics");
  const json& metrics = mit != m.doc.end() && mit->is_object() ? *mit : empty;
  Input in;
  in.site = site;
  in.device = device;
  in.ts = obs.ts_ms;
  in.now = now;
  in.backfill = obs.backfill;
  if (obs.type == Observation::Type::kEvent) {
    if (obs.event != "overflow" && obs.event != "sos" && obs.event != "fire" && obs.event != "odour") return std::nullopt;
    in.type = Input::Type::kEvent;
    in.event = obs.event;
    in.active = obs.event_active;
  } else if (e.kind == "vehicle" || e.kind == "worker") {
    // A reading without a fix of its own says nothing about where the vehicle went.
    if (!m.location) return std::nullopt;
    in.type = Input::Type::kPosition;
    in.worker = e.kind == "worker";
    in.value = Num(metrics, "speed_kmh");
  } else {
    // Fill: the bin's own value, or the fullest compartment of a sorted-waste room.
    std::optional<double> fill = Num(metrics, "fill_level_pct");
    if (!fill)
      for (auto it = metrics.begin(); it != metrics.end(); ++it)
        if (it.key().size() > 15 && it.key().ends_with("_fill_level_pct"))
          if (auto v = Num(metrics, it.key().c_str())) fill = std::max(fill.value_or(*v), *v);
    if (!fill) return std::nullopt;
    in.type = Input::Type::kFill;
    in.value = fill;
  }
  // The record's own location, else where the device was last seen (fixed bins and rooms).
  auto at = m.location ? m.location : e.location;
  if (!at) {
    if (unlocated) *unlocated = true;
    return std::nullopt;
  }
  in.lat = at->first;
  in.lon = at->second;
  return in;
}

HeatmapService::HeatmapService(HeatmapSettings settings, PublishFn publish, ClockFn clock)
    : cfg_(std::move(settings)), publish_(std::move(publish)), clock_(std::move(clock)) {}

HeatmapService::~HeatmapService() { StopSnapshots(); }

void HeatmapService::LoadSaved() {
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(std::filesystem::path(cfg_.data_dir) / "heatmap", ec))
    if (entry.path().extension() == ".bin") EngineOf(entry.path().stem().string());
}

void HeatmapService::Start() {
  if (writer_.joinable()) return;
  next_snapshot_ = clock_() + cfg_.map.snapshot_interval_s * 1000;
  writer_ = std::thread([this] { WriterLoop(); });
}

std::string HeatmapService::FileOf(const std::string& site) const {
  return (std::filesystem::path(cfg_.data_dir) / "heatmap" / (site + ".bin")).string();
}

heatmap::HeatmapEngine* HeatmapService::EngineOf(const std::string& site) {
  if (!cfg_.map.enabled) return nullptr;
  auto& engine = engines_[site];
  if (!engine) {
    engine = std::make_unique<heatmap::HeatmapEngine>(cfg_.map);
    // The map saved at the last stop, so a restart (or an upgrade of sanifleet) keeps the day.
    std::ifstream in(FileOf(site), std::ios::binary);
    if (in) {
      std::string snapshot((std::istreambuf_iterator<char>(in)), {});
      if (Status st = engine->Restore(snapshot); st.ok())
        spdlog::info("heatmap: {} restored ({} stored cells)", site, engine->stats().cells);
      else
        spdlog::warn("heatmap: {}: the saved map is not used: {}", site, st.message());
    }
  }
  return engine.get();
}

void HeatmapService::Observe(const std::string& site, const std::string& device, const ModelMessage& m,
                             const DeviceEntry& e) {
  if (m.obs.type == Observation::Type::kStatus) return;
  // A followed site gets its engine (and its feeds) with its first device message.
  if (!EngineOf(site)) return;
  bool unlocated = false;
  auto in = InputOf(site, device, m, e, clock_(), &unlocated);
  if (unlocated) ++unlocated_;
  if (!in) return;
  if (frozen_) return deferred_.push_back(std::move(*in));
  Apply(*in);
}

void HeatmapService::Apply(const Input& in) {
  heatmap::HeatmapEngine* engine = EngineOf(in.site);
  if (!engine) return;
  auto id = engine->Device(in.device);
  switch (in.type) {
    case Input::Type::kEvent:
      engine->Event(id, in.ts, in.lat, in.lon, in.event, in.active, in.backfill, in.now);
      break;
    case Input::Type::kPosition:
      engine->Position(id, in.worker, in.ts, in.lat, in.lon, in.value, in.backfill, in.now);
      break;
    case Input::Type::kFill:
      engine->Fill(id, in.ts, in.lat, in.lon, in.value.value_or(0), in.now);
      break;
  }
}

void HeatmapService::Tick() {
  int64_t now = clock_();
  ThawIfFree();
  // While a snapshot reads the engines, closing windows (TakeClosed) waits with the feed.
  if (now >= next_feed_ && !frozen_) {
    PublishFeeds(now, std::exchange(force_, false));
    next_feed_ = now + cfg_.map.feed_interval_ms;
  }
  if (cfg_.map.snapshot_interval_s > 0 && writer_.joinable() && now >= next_snapshot_) {
    Snapshot(now);
    next_snapshot_ = now + cfg_.map.snapshot_interval_s * 1000;
  }
}

void HeatmapService::SetSnapshotInterval(int64_t seconds) {
  if (seconds == cfg_.map.snapshot_interval_s) return;
  cfg_.map.snapshot_interval_s = seconds;
  next_snapshot_ = clock_() + seconds * 1000;
}

void HeatmapService::PublishFeeds(int64_t now, bool force) {
  if (force) published_.clear();
  for (auto& [site, engine] : engines_) {
    for (heatmap::Layer layer : cfg_.map.layers) {
      json doc = heatmap::FeedJson(*engine, site, layer, now);
      doc.erase("ts");
      std::string body = doc.dump();
      std::string topic = mqtt::topics::Heatmap(cfg_.topic_prefix, site, heatmap::LayerName(layer));
      auto& last = published_[topic];
      if (last == body) continue;  // unchanged: the retained copy is still right
      last = std::move(body);
      doc["ts"] = now;
      publish_(topic, doc.dump(), true);
    }
    for (const auto& closed : engine->TakeClosed(now)) {
      if (!cfg_.map.Has(closed.layer)) continue;
      publish_(mqtt::topics::Heatmap(cfg_.topic_prefix, site, heatmap::LayerName(closed.layer)) + "/closed",
               heatmap::ClosedWindowJson(*engine, site, closed, now).dump(), false);
    }
  }
}

AdminAnswer HeatmapService::Query(const json& args) const {
  int64_t now = clock_();
  auto bad = [](const char* code, std::string why) { return AdminAnswer::Fail(code, std::move(why)); };
  if (!cfg_.map.enabled) return bad("invalid", "the heat map is disabled in this sanifleet's config");
  std::string layer_name = Str(args, "layer");
  auto layer = heatmap::ParseLayer(layer_name);
  if (!layer) return bad("invalid", "argument \"layer\" must be one of vehicle_coverage, bin_fill, overflow, alarms, workers, unattended");
  if (!cfg_.map.Has(*layer)) return bad("invalid", "layer " + layer_name + " is not enabled");
  std::string site = FieldString(args, "site").value_or(cfg_.site);
  const auto& sites = cfg_.sites;
  bool followed = std::find(sites.begin(), sites.end(), site) != sites.end() || std::find(sites.begin(), sites.end(), "+") != sites.end();
  if (!followed) return bad("not_found", "site " + site + " is not followed by this sanifleet");
  int precision = cfg_.map.feed_precision;
  if (args.contains("precision")) {
    const json& p = args["precision"];
    if (!p.is_number_integer() || p.get<int64_t>() < heatmap::kCoarsestPrecision || p.get<int64_t>() > heatmap::kStoragePrecision)
      return bad("invalid", "precision must be 6, 7 or 8");
    precision = p.get<int>();
  }
  int64_t window_s = 0;
  if (args.contains("window") && !(args["window"].is_string() && args["window"] == "state")) {
    const json& w = args["window"];
    const auto& sizes = cfg_.map.windows_s;
    if (!w.is_number_integer() || std::find(sizes.begin(), sizes.end(), w.get<int64_t>()) == sizes.end()) {
      std::string list;
      for (int64_t s : sizes) list += (list.empty() ? "" : ", ") + std::to_string(s);
      return bad("invalid", "window must be \"state\" or one of the window sizes in seconds: " + list);
    }
    window_s = w.get<int64_t>();
    if (*layer == heatmap::Layer::kUnattended) return bad("invalid", "the unattended layer has a state only");
  }
  int64_t at = args.contains("at") && args["at"].is_number_integer() ? args["at"].get<int64_t>() : now;
  if (auto it = engines_.find(site); it != engines_.end())
    return AdminAnswer::Ok(heatmap::QueryJson(*it->second, site, *layer, window_s, at, precision, now));
  heatmap::HeatmapEngine empty(cfg_.map);  // a followed site with nothing yet: empty cells
  return AdminAnswer::Ok(heatmap::QueryJson(empty, site, *layer, window_s, at, precision, now));
}

json HeatmapService::StatusJson() const {
  if (!cfg_.map.enabled) return nullptr;
  heatmap::HeatmapStats total;
  for (const auto& [site, engine] : engines_) {
    auto s = engine->stats();
    total.points += s.points;
    total.readings += s.readings;
    total.events += s.events;
    total.late_dropped += s.late_dropped;
    total.future_dropped += s.future_dropped;
    total.late_merged += s.late_merged;
    total.late_untracked += s.late_untracked;
    total.duplicates += s.duplicates;
    total.cells += s.cells;
    total.windows += s.windows;
  }
  return {{"sites", engines_.size()},          {"points", total.points},
          {"readings", total.readings},         {"events", total.events},
          {"late_dropped", total.late_dropped}, {"future_dropped", total.future_dropped},
          {"late_merged", total.late_merged},   {"late_untracked", total.late_untracked},
          {"duplicates", total.duplicates},     {"unlocated", unlocated_},
          {"cells", total.cells},               {"windows", total.windows}};
}

// ---- snapshots ----

void HeatmapService::Save() {
  std::error_code ec;
  if (!engines_.empty()) std::filesystem::create_directories(std::filesystem::path(cfg_.data_dir) / "heatmap", ec);
  for (const auto& [site, engine] : engines_)
    if (Status st = WriteFileAtomically(FileOf(site), engine->Snapshot()); !st.ok())
      spdlog::error("heatmap: cannot save {}: {}", site, st.ToString());
}

void HeatmapService::Snapshot(int64_t now) {
  if (frozen_ || engines_.empty()) return;
  std::lock_guard lk(mu_);
  if (writing_) {
    // The disk is slower than the interval: skip a round rather than queue copies in memory.
    spdlog::warn("heatmap: the previous snapshot is still being written; the one due at {} is skipped", now);
    return;
  }
  job_.clear();
  for (const auto& [site, engine] : engines_) job_.emplace_back(FileOf(site), engine.get());
  in_use_ = true;
  frozen_ = true;
  cv_.notify_all();
}

void HeatmapService::ThawIfFree() {
  if (!frozen_) return;
  {
    std::lock_guard lk(mu_);
    if (in_use_) return;
  }
  Thaw();
}

void HeatmapService::Thaw() {
  frozen_ = false;
  for (const auto& in : deferred_) Apply(in);
  deferred_.clear();
}

void HeatmapService::WriterLoop() {
  std::unique_lock lk(mu_);
  while (true) {
    cv_.wait(lk, [&] { return stop_ || !job_.empty(); });
    if (stop_) break;
    auto job = std::move(job_);
    job_.clear();
    lk.unlock();
    // Only const calls on the engines: the owner changes none of them until in_use is off.
    auto started = SteadyClock::now();
    std::vector<std::pair<std::string, std::string>> files;
    size_t bytes = 0;
    for (const auto& [file, engine] : job) {
      files.emplace_back(file, engine->Snapshot());
      bytes += files.back().second.size();
    }
    auto took = std::chrono::duration_cast<std::chrono::milliseconds>(SteadyClock::now() - started).count();
    lk.lock();
    in_use_ = false;
    if (stop_) break;  // the final save at stop replaces it
    writing_ = true;
    lk.unlock();
    std::error_code ec;
    for (const auto& [file, content] : files) {
      std::filesystem::create_directories(std::filesystem::path(file).parent_path(), ec);
      if (Status st = WriteFileAtomically(file, content); !st.ok())
        spdlog::error("heatmap: snapshot not saved (the previous one stays): {}", st.ToString());
    }
    spdlog::debug("heatmap: snapshot of {} site(s), {} bytes, serialized in {} ms, written in {} ms", files.size(), bytes,
                  took, std::chrono::duration_cast<std::chrono::milliseconds>(SteadyClock::now() - started).count() - took);
    lk.lock();
    writing_ = false;
  }
  job_.clear();
  in_use_ = false;
}

void HeatmapService::StopSnapshots() {
  if (writer_.joinable()) {
    {
      std::lock_guard lk(mu_);
      stop_ = true;
      cv_.notify_all();
    }
    writer_.join();  // after a serialization or write in progress: the final save must not race it
  }
  if (frozen_) Thaw();
}

}  // namespace sanigate::fleet
