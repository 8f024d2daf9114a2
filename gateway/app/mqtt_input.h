// The gateway's MqttInput for adapters (e.g. ChirpStack's MQTT integration): a reconnecting
// MqttClient per input, on the gateway's own broker with its [mqtt] credentials and TLS unless
// the adapter names another broker.
#pragma once

#include "api/mqtt_input.h"
#include "settings/gateway_config.h"

namespace sanigate::app {

dev::MqttInputFactory MakeMqttInputFactory(const settings::MqttSection& gateway_mqtt);

}  // namespace sanigate::app
