// FleetDaemon: sanifleet's wiring. One MQTT client in (the model of the followed sites, the
// admin requests) and out (health, health events, the fleet status); one worker thread owns
// the registry, the health evaluator, the SQLite store and the services, so none of them needs
// a lock. The MQTT link's callbacks only queue messages for that thread. The pieces with rules of their
// own are apart and tested without a broker: the model's decoder (model_message.h), the heat
// map (heatmap_service.h), rollouts (rollout_service.h) and the admin verbs' table
// (admin_verbs.h); the daemon routes messages to them and carries their output to MQTT.
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

#include "app/admin_verbs.h"
#include "app/fleet_config.h"
#include "app/heatmap_service.h"
#include "app/rollout_service.h"
#include "health/health.h"
#include "mqtt/mqtt_client.h"
#include "registry/registry.h"
#include "service/metrics_http.h"

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
  // [metrics]: the Prometheus text of the status the worker last snapshotted (at most 1 s old).
  std::string MetricsText() const;

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
  // The admin API: the table of verbs (built once in Create) and the daemon's own verbs.
  void AddAdminVerbs();
  void HandleAdmin(const mqtt::InboundMessage& m, const std::string& verb, int64_t now);
  AdminAnswer AdminStatus(int64_t now) const;
  AdminAnswer AdminDevices(const nlohmann::json& args) const;
  AdminAnswer AdminDevice(const nlohmann::json& args) const;
  AdminAnswer AdminHealth(const nlohmann::json& args) const;
  // Writes the changed registry entries (or only those of `only`) with each device's health memory.
  void FlushRegistry(const char* when, const std::vector<std::string>* only = nullptr);
  void PublishHealth(const HealthChange& change, int64_t now);
  bool PublishDeviceVerdict(const HealthVerdict& v, int64_t now);  // false: link down
  void EvaluateGateways(int64_t now);
  void PublishStatus(bool online, int64_t now);
  void RepublishAll(int64_t now);
  std::string StatusPayload(bool online, int64_t now) const;
  // Outgoing messages wait here, not inside the MQTT client (lost with a connection); a device's
  // verdict is published once per drain however often it changed (the latest wins).
  void Send(std::string topic, std::string payload, bool retain);
  void Drain(int64_t now);

  FleetConfig cfg_;
  std::unique_ptr<mqtt::MqttClient> client_;
  std::unique_ptr<RegistryStore> store_;
  Registry registry_;
  HealthEvaluator health_;
  std::map<std::string, HealthVerdict> gateway_verdicts_;  // by registry key
  std::unique_ptr<HeatmapService> heatmap_;
  std::unique_ptr<RolloutService> rollouts_;
  AdminVerbs admin_;
  std::string reply_topic_;  // answers to this daemon's own requests (install jobs)
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
  mutable std::mutex refused_mu_;
  std::set<std::string> refused_topics_;

  // [metrics]: the server (started with the worker, stopped before it) and the worker's status
  // snapshot it serves, refreshed every second while the endpoint is configured.
  std::unique_ptr<service::MetricsHttpServer> metrics_;
  mutable std::mutex metrics_mu_;
  std::string metrics_status_;

  friend class FleetDaemonTest;  // tests/unit/fleet_daemon_stop_test.cpp: stops with messages still queued
};

// The sanifleet_* metrics (README "Metrics") from a status payload (StatusPayload(true)) and the
// MQTT link state.
std::string FleetMetricsText(std::string_view status_json, bool mqtt_connected);

}  // namespace sanigate::fleet
