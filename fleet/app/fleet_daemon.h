// FleetDaemon: sanifleet's wiring. One MQTT client in (the model of the followed sites, the
// admin requests) and out (health, health events, the fleet status); one worker thread owns
// the registry, the health evaluator and the SQLite store, so none of them needs a lock.
// Paho's callbacks only queue messages for that thread. A snapshot thread reads the heat-map
// engines (const) while the worker keeps its hands off them, and writes their files.
// Thread-safety: Start/Stop/Reload from the owner (main) thread.
#pragma once


#include <atomic>

#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <unordered_set>
#include <utility>
#include <vector>

#include "app/fleet_config.h"
#include "app/rollout_service.h"
#include "health/health.h"
#include "heatmap/heatmap.h"
#include "mqtt/mqtt_client.h"
#include "registry/registry.h"

namespace sanigate::fleet {

class FleetDaemon {
 public:
  static Result<std::unique_ptr<FleetDaemon>> Create(FleetConfig config);
  ~FleetDaemon();
  void Start();
  // Flushes the registry, publishes the offline status and disconnects.
  void Stop();
  // Applies a new config's thresholds and log level; identity, sites and broker need a restart.
  void Reload(FleetConfig config);

 private:
  explicit FleetDaemon(FleetConfig config);
  void Enqueue(mqtt::InboundMessage m);
  void WorkerLoop();
  void Handle(const mqtt::InboundMessage& m, int64_t now);
  // Handles and empties `batch`; a malformed message costs itself only.
  void HandleBatch(std::deque<mqtt::InboundMessage>& batch, int64_t now);
  // At stop: the messages received but not handled yet (already acknowledged to the broker).
  void HandleQueued();
  void HandleDeviceMessage(const std::string& site, const std::string& device, const std::string& leaf,
                           const std::string& payload, int64_t now);
  void HandleGatewayStatus(const std::string& site, const std::string& gateway, const std::string& payload, int64_t now);
  void HandleAdmin(const mqtt::InboundMessage& m, const std::string& verb, int64_t now);
  // The heat map: one engine per followed site, fed from the model, published every feed interval.
  heatmap::HeatmapEngine* HeatmapOf(const std::string& site);
  // One input of an engine, resolved from a model message (location, value) when it arrived.
  struct HeatmapInput {
    enum class Type : uint8_t { kEvent, kPosition, kFill } type = Type::kFill;
    std::string site, device, event;
    int64_t ts = 0, now = 0;
    double lat = 0, lon = 0;
    std::optional<double> value;  // speed_kmh of a position, fill of a reading
    bool worker = false, active = false, backfill = false;
  };
  void ApplyHeatmap(const HeatmapInput& in);
  void FeedHeatmap(const std::string& site, const std::string& device, const std::string& leaf, const nlohmann::json& j,
                   const DeviceEntry& e, bool backfill, int64_t now);
  void PublishHeatmaps(int64_t now, bool force);
  // data_dir/heatmap/{site}.bin: written every snapshot interval and at stop, read when the
  // site's engine is created.
  std::string HeatmapFile(const std::string& site) const;
  void SaveHeatmaps();
  // The periodic snapshot. The snapshot thread serializes the engines (const) and writes and
  // fsyncs the files; meanwhile the worker goes on handling messages and only defers what would
  // change an engine (inputs, closing windows), applying it in order once the engines are free.
  void SnapshotHeatmaps(int64_t now);
  void ThawHeatmapsIfFree();
  void ThawHeatmaps();
  void SnapshotWriterLoop();
  void StopSnapshotWriter();
  // Writes the changed registry entries (or only those of `only`) with each device's health memory.
  void FlushRegistry(const char* when, const std::vector<std::string>* only = nullptr);
  nlohmann::json HeatmapQuery(const nlohmann::json& args, int64_t now, std::string* code, std::string* error);
  void PublishHealth(const HealthChange& change, int64_t now);
  bool PublishDeviceVerdict(const HealthVerdict& v, int64_t now);  // false: link down
  void EvaluateGateways(int64_t now);
  void PublishStatus(bool online, int64_t now);
  void RepublishAll(int64_t now);
  std::string StatusPayload(bool online, int64_t now) const;
  // Outgoing messages wait here, not inside Paho (whose queue gets slow when long); a device's
  // verdict is published once per drain however often it changed (the latest wins).
  void Send(std::string topic, std::string payload, bool retain);
  void Drain(int64_t now);

  FleetConfig cfg_;
  std::unique_ptr<mqtt::MqttClient> client_;
  std::unique_ptr<RegistryStore> store_;
  Registry registry_;
  HealthEvaluator health_;
  std::map<std::string, HealthVerdict> gateway_verdicts_;  // by registry key
  std::map<std::string, std::unique_ptr<heatmap::HeatmapEngine>> heatmaps_;  // by site
  std::unique_ptr<RolloutService> rollouts_;
  std::string reply_topic_;  // answers to this daemon's own requests (install jobs)
  std::map<std::string, std::string> heatmap_published_;  // topic → last payload without "ts"
  int64_t next_heatmap_ = 0;
  bool heatmap_force_ = false;  // republish every feed at the next PublishHeatmaps (after a reconnect)
  uint64_t unlocated_ = 0;
  struct Outgoing {
    std::string topic, payload;
    bool retain = false;
  };
  std::deque<Outgoing> outgoing_;
  std::deque<std::string> health_due_;  // registry keys whose verdict is to be published
  std::unordered_set<std::string> health_due_set_;

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<mqtt::InboundMessage> queue_;
  bool stop_ = false, reconnected_ = false;
  std::unique_ptr<FleetConfig> pending_reload_;
  std::thread worker_;

  int64_t started_ms_ = 0;
  uint64_t messages_ = 0, malformed_ = 0, event_seq_ = 0;
  // Publishes the broker refused (PUBACK reason code >= 0x80), and their topics (first 1000).
  std::atomic<uint64_t> refused_publishes_{0};
  // Since when sanifleet could not hear the fleet: its MQTT link was lost, or (at start) the
  // newest last_seen of the previous run; 0 while it hears. Silence in that time gets a grace.
  std::atomic<int64_t> link_down_ms_{0};
  // Devices whose health condition changed in this round: written before their verdicts go out.
  std::vector<std::string> persist_now_;
  // Heat-map snapshots: one round at a time. The job lists each engine with its file; the
  // engines are `in use` from the job's posting until the snapshot thread has serialized them.
  std::mutex snapshot_mu_;
  std::condition_variable snapshot_cv_;
  std::vector<std::pair<std::string, const heatmap::HeatmapEngine*>> snapshot_job_;  // file, engine
  bool snapshot_in_use_ = false, snapshot_writing_ = false, snapshot_stop_ = false;
  std::thread snapshot_writer_;
  bool heatmaps_frozen_ = false;               // worker only: engines are being serialized
  std::vector<HeatmapInput> heatmap_deferred_;  // worker only: inputs that arrived meanwhile
  mutable std::mutex refused_mu_;
  std::set<std::string> refused_topics_;
};

}  // namespace sanigate::fleet
