#include "upstream/relay.h"

#include <spdlog/spdlog.h>

#include <string_view>

#include "core/clock.h"
#include "core/untrusted.h"

namespace sanigate::upstream {

Relay::Relay(store::Outbox& outbox, const Routing& routing, mqtt::LinkOptions link, std::vector<std::string> filters,
             std::chrono::milliseconds reconnect_min, std::chrono::milliseconds reconnect_max)
    : outbox_(outbox), routing_(routing) {
  mqtt::ClientOptions o;
  o.link = std::move(link);
  o.filters = std::move(filters);
  o.relay = true;
  o.reconnect_min = reconnect_min;
  o.reconnect_max = reconnect_max;
  mqtt::ClientHandlers h;
  h.on_message = [this](mqtt::InboundMessage m) { OnMessage(std::move(m)); };
  h.on_state = [](bool connected, const std::string& why) {
    if (connected) spdlog::info("relay: connected to the local broker; sanifleet's outputs go upstream");
    else spdlog::warn("relay: {}", why);
  };
  client_ = std::make_unique<mqtt::MqttClient>(std::move(o), std::move(h));
}

Relay::~Relay() { Stop(); }

void Relay::Start() { client_->Start(); }

void Relay::Stop() {
  if (client_) client_->Stop();
}

void Relay::OnMessage(mqtt::InboundMessage m) {
  uint32_t targets = routing_.Upstreams(m.topic);
  if (targets == 0) return;
  if (m.payload.size() > kMaxPayload) {
    if (too_large_++ == 0)
      spdlog::warn("relay: {} is {} bytes, over the {} byte limit: not sent upstream (counted)",
                   QuotePrefix(m.topic, 96), m.payload.size(), kMaxPayload);
    return;
  }
  // Fleet events (health changes) rank as events; retained state as status; the rest (closed
  // heat-map windows) as telemetry, shed first.
  Priority p = m.retain ? Priority::kStatus : Priority::kTelemetry;
  if (std::string_view(m.topic).ends_with("/fleet/events")) p = Priority::kEvent;
  store::OutMessage out;
  out.priority = p;
  out.ts_ms = NowMs();
  out.topic = std::move(m.topic);
  out.payload = std::move(m.payload);
  out.retain = m.retain;
  out.targets = targets;
  outbox_.Append(1, [&](size_t, uint64_t) { return std::move(out); });
  relayed_++;
}

RelayStats Relay::Stats() const {
  RelayStats s;
  s.connected = client_->connected();
  s.last_error = client_->last_error();
  s.relayed = relayed_;
  s.too_large = too_large_;
  return s;
}

}  // namespace sanigate::upstream
