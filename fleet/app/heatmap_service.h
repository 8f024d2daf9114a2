// sanifleet's heat map as a service of its own (fleet/README.md "The heat map"): one engine per
// followed site, fed from decoded model messages; the retained feed of every layer each
// feed_interval_ms when it changed; each closed (or amended) window once; the admin verb
// `heatmap`; and the snapshots (data_dir/heatmap/{site}.bin) every snapshot_interval_s and at
// stop. It reaches MQTT only through the publish function it is given and reads the time only
// from its clock, so it is tested without a broker and with a fake clock.
// Threads: every method from one owner thread (sanifleet's worker). A snapshot thread of its own
// (after Start) serializes the engines (const) and writes the files; meanwhile the owner goes on,
// and what would change an engine (inputs, the closing of windows, the feed) waits until the
// engines are free again.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "app/admin_verbs.h"
#include "app/model_message.h"
#include "heatmap/heatmap.h"
#include "registry/registry.h"

namespace sanigate::fleet {

struct HeatmapSettings {
  heatmap::HeatmapConfig map;       // enabled, layers, feed_interval_ms, snapshot_interval_s, …
  std::string topic_prefix;
  std::string site;                 // the fleet's own site: the admin query's default
  std::vector<std::string> sites;   // the followed sites ("+" = every site)
  std::string data_dir;             // snapshots in data_dir/heatmap
};

class HeatmapService {
 public:
  // topic, payload, retain
  using PublishFn = std::function<void(const std::string&, const std::string&, bool)>;
  using ClockFn = std::function<int64_t()>;  // wall clock, ms since the epoch

  // One input of an engine, resolved from a model message (location, value) when it arrived.
  struct Input {
    enum class Type : uint8_t { kEvent, kPosition, kFill } type = Type::kFill;
    std::string site, device, event;
    int64_t ts = 0, now = 0;
    double lat = 0, lon = 0;
    std::optional<double> value;  // speed_kmh of a position, fill of a reading
    bool worker = false, active = false, backfill = false;
  };
  // What a device message means for the heat map, if anything: `e` is the device's registry
  // entry after the message was applied (its kind, and its last location for a message that
  // carries none). `unlocated` is set for an input that has no location at all.
  static std::optional<Input> InputOf(const std::string& site, const std::string& device, const ModelMessage& m,
                                      const DeviceEntry& e, int64_t now, bool* unlocated);

  HeatmapService(HeatmapSettings settings, PublishFn publish, ClockFn clock);
  ~HeatmapService();  // stops the snapshot thread; saving is Save()'s job
  HeatmapService(const HeatmapService&) = delete;
  HeatmapService& operator=(const HeatmapService&) = delete;

  // Creates the engine of every site saved by the previous run (data_dir/heatmap/*.bin).
  void LoadSaved();
  // Starts the snapshot thread; the first periodic snapshot falls due snapshot_interval_s from now.
  void Start();

  // A device message (status messages are ignored).
  void Observe(const std::string& site, const std::string& device, const ModelMessage& m, const DeviceEntry& e);
  // Whatever is due now: inputs deferred during a snapshot, the feeds (changed layers only) and
  // the closed windows every feed_interval_ms, the periodic snapshot. Call often.
  void Tick();
  // Every layer's feed again at the next feed round, changed or not (after a reconnect).
  void RepublishAll() { force_ = true; }
  // [heatmap] snapshot_interval_s on reload: the next snapshot is due an interval from now.
  void SetSnapshotInterval(int64_t seconds);

  // The admin verb `heatmap`.
  AdminAnswer Query(const nlohmann::json& args) const;
  // For the fleet status: totals over the sites; null when the heat map is disabled.
  nlohmann::json StatusJson() const;

  // At stop: waits for the snapshot thread (a snapshot in progress is abandoned: Save replaces it)
  // and applies the inputs it held back. Observe afterwards applies directly.
  void StopSnapshots();
  // Writes every site's map (at a clean stop, after StopSnapshots).
  void Save();

  std::string FileOf(const std::string& site) const;  // data_dir/heatmap/{site}.bin
  bool frozen() const { return frozen_; }              // a snapshot is reading the engines

 private:
  heatmap::HeatmapEngine* EngineOf(const std::string& site);
  void Apply(const Input& in);
  void PublishFeeds(int64_t now, bool force);
  void Snapshot(int64_t now);
  void ThawIfFree();
  void Thaw();
  void WriterLoop();

  HeatmapSettings cfg_;
  PublishFn publish_;
  ClockFn clock_;
  std::map<std::string, std::unique_ptr<heatmap::HeatmapEngine>> engines_;  // by site
  std::map<std::string, std::string> published_;  // feed topic → last payload without "ts"
  int64_t next_feed_ = 0, next_snapshot_ = 0;
  bool force_ = false;  // every feed at the next round
  uint64_t unlocated_ = 0;
  bool frozen_ = false;         // owner only: the engines are being serialized
  std::vector<Input> deferred_;  // owner only: inputs that arrived meanwhile, in order

  // The snapshot thread: one round at a time. The job lists each engine with its file; the
  // engines are in use from the job's posting until the thread has serialized them.
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::pair<std::string, const heatmap::HeatmapEngine*>> job_;  // file, engine
  bool in_use_ = false, writing_ = false, stop_ = false;
  std::thread writer_;
};

}  // namespace sanigate::fleet
