// FleetDaemon: sanifleet's wiring. One MQTT client in (the model of the followed sites, the
// admin requests) and out (health, health events, the fleet status); one worker thread owns
// the registry, the health evaluator and the SQLite store, so none of them needs a lock.
// Paho's callbacks only queue messages for that thread.
// Thread-safety: Start/Stop/Reload from the owner (main) thread.
#pragma once


#include <atomic>

#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <unordered_set>

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
  void HandleDeviceMessage(const std::string& site, const std::string& device, const std::string& leaf,
                           const std::string& payload, int64_t now);
  void HandleGatewayStatus(const std::string& site, const std::string& gateway, const std::string& payload, int64_t now);
  void HandleAdmin(const mqtt::InboundMessage& m, const std::string& verb, int64_t now);
  // The heat map: one engine per followed site, fed from the model, published every feed interval.
  heatmap::HeatmapEngine* HeatmapOf(const std::string& site);
  void FeedHeatmap(const std::string& site, const std::string& device, const std::string& leaf, const nlohmann::json& j,
                   const DeviceEntry& e, bool backfill, int64_t now);
  void PublishHeatmaps(int64_t now, bool force);
  // data_dir/heatmap/{site}.bin: written at stop, read when the site's engine is created.
  std::string HeatmapFile(const std::string& site) const;
  void SaveHeatmaps();
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
  std::atomic<int64_t> link_down_ms_{0};  // when our own MQTT link was lost; 0 while up
  mutable std::mutex refused_mu_;
  std::set<std::string> refused_topics_;
};

}  // namespace sanigate::fleet
