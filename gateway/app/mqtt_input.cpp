#include "app/mqtt_input.h"

#include <spdlog/spdlog.h>

#include "mqtt/mqtt_client.h"

namespace sanigate::app {
namespace {

class ClientInput : public dev::MqttInput {
 public:
  explicit ClientInput(mqtt::ClientOptions options) : options_(std::move(options)) {}
  ~ClientInput() override { Stop(); }

  void Start(Handler handler) override {
    mqtt::ClientHandlers h;
    h.on_message = [handler = std::move(handler)](mqtt::InboundMessage m) { handler(m.topic, m.payload); };
    std::string url = options_.link.url;
    h.on_state = [url](bool connected, const std::string& why) {
      if (connected) spdlog::info("mqtt input: connected to {}", url);
      else spdlog::warn("mqtt input: lost {}: {}", url, why);
    };
    client_ = std::make_unique<mqtt::MqttClient>(options_, std::move(h));
    client_->Start();
  }
  void Stop() override {
    if (client_) client_->Stop();
  }
  bool connected() const override { return client_ && client_->connected(); }
  std::string last_error() const override { return client_ ? client_->last_error() : std::string(); }

 private:
  mqtt::ClientOptions options_;
  std::unique_ptr<mqtt::MqttClient> client_;
};

}  // namespace

dev::MqttInputFactory MakeMqttInputFactory(const settings::MqttSection& gateway_mqtt) {
  return [gateway_mqtt](dev::MqttInputOptions in) -> std::unique_ptr<dev::MqttInput> {
    mqtt::ClientOptions o;
    auto& l = o.link;
    if (in.url.empty()) {
      l.url = gateway_mqtt.url;
      l.username = gateway_mqtt.username;
      l.password = gateway_mqtt.password;
      l.tls = {gateway_mqtt.tls.enabled, gateway_mqtt.tls.ca_file, gateway_mqtt.tls.cert_file,
               gateway_mqtt.tls.key_file, gateway_mqtt.tls.verify_peer};
    } else {
      l.url = in.url;
      l.username = in.username;
      l.password = in.password;
      bool tls = in.url.rfind("ssl://", 0) == 0 || in.url.rfind("mqtts://", 0) == 0;
      l.tls.enabled = tls;
      l.tls.ca_file = in.ca_file;
    }
    l.client_id = in.client_id;
    l.keepalive_s = static_cast<int>(gateway_mqtt.keepalive_s);
    l.connect_timeout_s = static_cast<int>(gateway_mqtt.connect_timeout_s);
    l.ack_timeout_s = static_cast<int>(gateway_mqtt.ack_timeout_s);
    o.filters = std::move(in.filters);
    o.reconnect_min = std::chrono::milliseconds(gateway_mqtt.reconnect_min_ms);
    o.reconnect_max = std::chrono::milliseconds(gateway_mqtt.reconnect_max_ms);
    return std::make_unique<ClientInput>(std::move(o));
  };
}

}  // namespace sanigate::app
