// MqttInput: lets an adapter consume messages from an MQTT broker (e.g. ChirpStack's MQTT
// integration) without including Paho or knowing the gateway's link; the gateway app provides
// the implementation through AdapterServices. The input reconnects by itself.
// Thread-safety: Start/Stop from the adapter's owner thread; the handler runs on a client thread
// and must not block (post the work to the adapter's own thread).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/status.h"

namespace sanigate::dev {

struct MqttInputOptions {
  std::string url;  // empty: the gateway's own broker, with the [mqtt] credentials and TLS
  std::string client_id;
  std::string username, password;  // used only with an explicit url
  std::string ca_file;             // ssl:// or mqtts:// url: trust store (empty = system CAs)
  std::vector<std::string> filters;
};

class MqttInput {
 public:
  using Handler = std::function<void(const std::string& topic, const std::string& payload)>;
  virtual ~MqttInput() = default;
  virtual void Start(Handler handler) = 0;
  virtual void Stop() = 0;
  virtual bool connected() const = 0;
  virtual std::string last_error() const = 0;
};

using MqttInputFactory = std::function<std::unique_ptr<MqttInput>(MqttInputOptions)>;

// What the gateway lends an adapter at creation.
struct AdapterServices {
  MqttInputFactory mqtt_input;  // may be empty in tests: then an adapter needing it refuses to start
};

}  // namespace sanigate::dev
