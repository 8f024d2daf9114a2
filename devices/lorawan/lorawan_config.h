// Configuration of the LoRaWAN edge network server ([lorawan]): the UDP port the concentrators'
// packet forwarders send to, the band plan, and the end devices with their activation (ABP or
// OTAA), keys, payload profile and events. Keys may live in a separate 0600 file and are never
// logged. Plain values; parsed once at load (not thread-safe while parsing).
#pragma once

#include <any>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/device_rules.h"
#include "core/record.h"
#include "lorawan/lorawan_crypto.h"
#include "lorawan/payload_codec.h"
#include "settings/gateway_config.h"
#include "settings/reader.h"

namespace sanigate::dev::lorawan {

struct LoraDeviceConfig {
  std::string id;
  std::string kind;  // default: the profile's kind
  uint64_t dev_eui = 0;
  bool otaa = true;
  bool via_chirpstack = false;     // activation = "chirpstack": uplinks arrive decrypted over MQTT
  Key app_key{};                   // OTAA
  std::optional<uint64_t> join_eui;  // OTAA: empty = accept any JoinEUI/AppEUI
  uint32_t dev_addr = 0;           // ABP
  Key nwk_s_key{}, app_s_key{};    // ABP
  // Uplink counter rules (issue 15). The gap limit defaults by version: LoRaWAN 1.0.0-1.0.3
  // drop a frame more than MAX_FCNT_GAP (16384) ahead, 1.0.4 removed the limit (0 = none).
  std::string lorawan_version = "1.0.3";
  uint32_t max_fcnt_gap = 16384;
  // ABP: the device's uplink counter is at least this (a migration, a replaced gateway): the
  // search for its 16-bit epoch starts here and older frames are replays. Empty: 0.
  std::optional<uint32_t> fcnt_up_start;
  std::string profile_name;
  std::shared_ptr<const PayloadProfile> profile;
  int64_t expected_interval_s = 3600;  // offline after offline_after_missed reports
  int offline_after_missed = 3;
  std::optional<Location> location;
  DeviceRules rules;
};

// Sites that already run ChirpStack: its MQTT integration feeds the same payload profiles.
struct ChirpstackInput {
  std::string url;  // empty: the gateway's own broker
  std::string client_id, username, password, ca_file;
  std::string topic = "application/+/device/+/event/up";
};

struct LorawanConfig {
  bool udp_enabled = true;  // listen = "off": no packet forwarder talks to us (ChirpStack only)
  std::string host = "0.0.0.0";
  uint16_t port = 1700;
  std::string region = "CN470";
  uint32_t net_id = 0;
  int64_t dedup_window_ms = 200;  // copies of one uplink from several concentrators
  int tx_power_dbm = 14;
  std::string state_file;         // sessions, counters and used DevNonces (JSON, 0600)
  // A session with no accepted uplink yet (ABP after a fresh install or a lost state file) may
  // be past 65535: this many 16-bit epochs of its counter are tried (one AES-CMAC each).
  uint32_t fcnt_search_epochs = 64;
  // Downlink commands (class A): at most this many queued per device; a command with no
  // timeout of its own expires after downlink_timeout_s without a window; a confirmed one is
  // sent at most downlink_max_attempts times without the device's ACK before it fails.
  uint32_t downlink_queue_max = 8;
  int64_t downlink_timeout_s = 3600;
  uint32_t downlink_max_attempts = 3;
  std::vector<LoraDeviceConfig> devices;
  std::optional<ChirpstackInput> chirpstack;
};

std::any ParseLorawanSection(settings::Node& node, const settings::GatewaySection& gateway);

}  // namespace sanigate::dev::lorawan
