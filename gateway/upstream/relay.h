// Relay: what sanifleet publishes on the local broker (health verdicts, fleet events and status,
// rollout states, the heat-map feed) taken into the outbox for the upstream destinations that
// want it, retained where it was published retained. This replaces a Mosquitto bridge: the
// outbox, not the broker's memory, holds the backlog.
// Its own MQTT 5 connection with a persistent session, so what sanifleet publishes while
// sanigate is down waits in the broker. Retained messages come at the first subscription only,
// not again at every reconnect (so a reconnect does not resend every verdict upstream).
// Limit: the client library (libmosquitto 2.0.11) acknowledges a message before handing it
// over, so before the outbox commit (a few ms later);
// a kill -9 in between loses that message for the upstreams (the local broker still has it).
// Thread-safety: Start/Stop from one thread; Stats from any.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "mqtt/mqtt_client.h"
#include "store/outbox.h"
#include "upstream/routing.h"

namespace sanigate::upstream {

struct RelayStats {
  bool connected = false;
  uint64_t relayed = 0, too_large = 0;
  std::string last_error;
};

class Relay {
 public:
  // `filters`: the local topics to take up (QoS 1, relay subscription options).
  Relay(store::Outbox& outbox, const Routing& routing, mqtt::LinkOptions link, std::vector<std::string> filters,
        std::chrono::milliseconds reconnect_min, std::chrono::milliseconds reconnect_max);
  ~Relay();
  void Start();
  void Stop();
  RelayStats Stats() const;

  // Larger messages are counted and not relayed (a city-wide heat-map layer is a few MiB).
  static constexpr size_t kMaxPayload = 16u << 20;

 private:
  void OnMessage(mqtt::InboundMessage m);

  store::Outbox& outbox_;
  const Routing& routing_;
  std::unique_ptr<mqtt::MqttClient> client_;
  std::atomic<uint64_t> relayed_{0}, too_large_{0};
};

}  // namespace sanigate::upstream
