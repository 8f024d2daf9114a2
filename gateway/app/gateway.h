// Gateway: wires the outbox, the pipeline, the forwarder and the adapters of one config, and
// swaps adapters and MQTT settings on reload. Wiring only: the logic lives in the layers below.
// Thread-safety: Start/Reload/Stop from the daemon's main thread.
#pragma once

#include <atomic>
#include <memory>
#include <unordered_map>
#include <string>
#include <vector>

#include "api/adapter.h"
#include "app/firmware_agent.h"
#include "app/status_devices.h"
#include "pipeline/forwarder.h"
#include "pipeline/pipeline.h"
#include "service/metrics_http.h"
#include "settings/gateway_config.h"
#include "store/outbox.h"
#include "upstream/batch.h"
#include "upstream/relay.h"
#include "upstream/routing.h"

namespace sanigate::app {

class Gateway {
 public:
  static Result<std::unique_ptr<Gateway>> Create(settings::Config config);
  ~Gateway();
  Status Start();
  // Applies a new, already validated config. Identity and storage changes need a restart.
  Status Reload(settings::Config config);
  // Flushes and publishes what it can within gateway.shutdown_drain_ms, then disconnects.
  void Stop();
  // kRetained: the status published every interval (a summary of the devices, see
  // status_devices.h); kQuery: the same for the admin verb `status`; kFull: every device (the
  // metrics endpoint).
  enum class StatusView { kRetained, kQuery, kFull };
  std::string StatusPayload(bool online, StatusView view = StatusView::kQuery) const;
  // [metrics]: the Prometheus text of what the status knows, plus the local MQTT link.
  std::string MetricsText() const;

 private:
  explicit Gateway(settings::Config config);
  Status StartAdapters();
  void StopAdapters();
  void StartForwarder();
  // One forwarder per [[upstream]] (outbox destinations 1..), and the relay of sanifleet's
  // outputs when some upstream takes them.
  void StartUpstreams();
  void StopUpstreams();
  void OnShed(const store::ShedReport& r);
  // From the link's network thread: parses, routes to the owning adapter (which only queues) and returns.
  // `via`: the destination whose link the request came on and the reply goes back on (0 the
  // local broker, i the i-th upstream's down-link).
  void OnCommand(mqtt::InboundMessage msg, size_t via = 0);
  void OnAdmin(mqtt::InboundMessage msg, std::string verb, size_t via = 0);
  nlohmann::json DevicesAnswer(const std::string& payload) const;
  // A command or admin request from an upstream's down-link: mapped back to the local scheme,
  // taken only when it matches that upstream's allow-list, otherwise dropped and counted.
  void OnDownlink(size_t dest, mqtt::InboundMessage msg);
  Status Reply(size_t via, const std::string& topic, const std::string& payload, const std::string& corr);
  // The [metrics] endpoint: started last, stopped first (also around a reload, so a scrape never
  // sees the config or the forwarder being replaced). A bind failure is logged, not fatal.
  void StartMetrics();
  void StopMetrics();

  settings::Config cfg_;
  int64_t started_ms_ = 0;
  bool stopped_ = false;
  std::unique_ptr<store::Outbox> outbox_;
  std::unique_ptr<pipeline::Pipeline> pipeline_;
  std::unique_ptr<pipeline::Forwarder> forwarder_;
  std::unique_ptr<upstream::Routing> routing_;
  std::vector<std::unique_ptr<pipeline::Forwarder>> upstreams_;  // [i] serves destination i + 1
  std::unique_ptr<upstream::Relay> relay_;
  struct DownlinkCounters {
    std::atomic<uint64_t> accepted{0}, dropped{0};
  };
  std::vector<std::unique_ptr<DownlinkCounters>> downlink_;  // [i] for upstream i
  std::vector<std::unique_ptr<dev::Adapter>> adapters_;
  std::unordered_map<std::string, dev::Adapter*> owner_;  // device id -> its adapter
  std::unique_ptr<FirmwareAgent> firmware_;
  mutable std::mutex adapters_mu_;  // the status payload reads adapters from the forwarder thread
  mutable StatusDeviceRanking device_ranking_;
  std::unique_ptr<service::MetricsHttpServer> metrics_;
};

// The sanigate_* metrics (README "Metrics") from a status payload (StatusPayload(true)), the
// local broker link and the time of the scrape; per-device series only with `per_device`.
std::string GatewayMetricsText(std::string_view status_json, bool mqtt_connected, bool per_device, int64_t now_ms);

}  // namespace sanigate::app
