// The LoRaWAN edge network server: a Semtech UDP (GWMP) endpoint for the box's concentrators
// and the network server for its own ABP and OTAA devices. Uplinks are MIC-checked, counted
// against replays, de-duplicated across concentrators (best RSSI/SNR kept), decrypted, decoded
// by the device's payload profile and emitted as readings with radio metadata. Joins are
// answered through PULL_RESP (RX1, RX2 on a TX_ACK error); confirmed uplinks get their ACK after
// the reading is stored. Sessions and counters persist in a 0600 JSON file in the data dir.
// Sites running ChirpStack feed the same profiles from its MQTT integration instead.
// Thread-safety: Start/Stop from the owner; Health/Rules from any thread. One io thread inside.
#pragma once

#include <memory>

#include "api/adapter.h"
#include "lorawan/lorawan_config.h"

namespace sanigate::dev::lorawan {

class LorawanAdapter : public Adapter {
 public:
  // `mqtt_input` serves [lorawan.chirpstack]; without one such a config refuses to start.
  explicit LorawanAdapter(LorawanConfig config, MqttInputFactory mqtt_input = {});
  ~LorawanAdapter() override;
  std::string_view protocol() const override { return "lorawan"; }
  Status Start(RecordSink& sink) override;
  void Stop() override;
  AdapterHealth Health() const override;
  RulesByDevice Rules() const override;
  // Downlink commands (class A): `downlink` (raw) or a command of the device's payload profile,
  // queued per device and sent in the RX1/RX2 window after its next uplink; the reply comes
  // with the TX_ACK (or, confirmed, with the device's ACK). Grammar: devices/lorawan/README.md.
  void Execute(CommandRequest request, ReplyFn reply) override;
  uint16_t port() const;  // the bound UDP port (useful with port 0)

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace sanigate::dev::lorawan
