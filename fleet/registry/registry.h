// The fleet's registry of devices and gateways, built from the MQTT model: who exists, where,
// what it is, what it last said. Kept in memory and written behind to SQLite (RegistryStore) so
// a restart of sanifleet starts from what it knew. Keys are "site/device" (ids are unique per
// site only). Not thread-safe: owned by the daemon's worker thread.
#pragma once

#include <cstdint>
#include <map>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/status.h"

namespace sanigate::fleet {

struct DeviceEntry {
  std::string site, device, kind, protocol, gateway, profile, firmware, model;
  int64_t first_seen_ms = 0, last_seen_ms = 0;  // arrival of its first / latest live message
  std::optional<bool> online;                   // from the gateway's retained device status
  nlohmann::json metrics = nlohmann::json::object();  // latest value of each metric
  int64_t metrics_ts_ms = 0;
  std::optional<std::pair<double, double>> location;  // lat, lon
  int64_t expected_interval_ms = 0;  // learned by the health evaluator; restored after a restart
  // The health evaluator's memory of the device (verdict, active conditions, trackers) as its
  // owner encoded it; filled by Load, written by Flush through its `health_of` argument.
  std::string health;
};

struct GatewayEntry {
  std::string site, gateway, version;
  bool online = false;
  int64_t first_seen_ms = 0, last_status_ms = 0, started_ms = 0;
  nlohmann::json status = nlohmann::json::object();  // the latest retained status, as published
  std::vector<int64_t> transitions_ms;                // online/offline changes, for flapping
};

inline std::string RegistryKey(const std::string& site, const std::string& id) { return site + "/" + id; }

class Registry {
 public:
  // The entry for site/device, created (first_seen = now) when new; `created` says which.
  DeviceEntry& Device(const std::string& site, const std::string& device, int64_t now_ms, bool* created = nullptr);
  GatewayEntry& Gateway(const std::string& site, const std::string& gateway, int64_t now_ms, bool* created = nullptr);
  const DeviceEntry* FindDevice(const std::string& key) const;
  const GatewayEntry* FindGateway(const std::string& key) const;
  const std::unordered_map<std::string, DeviceEntry>& devices() const { return devices_; }
  const std::unordered_map<std::string, GatewayEntry>& gateways() const { return gateways_; }

  // Changed entries since the last TakeDirty (keys), for the write-behind store.
  void MarkDirty(const std::string& key) { dirty_devices_.insert(key); }
  void MarkGatewayDirty(const std::string& key) { dirty_gateways_.insert(key); }
  std::vector<std::string> TakeDirtyDevices();
  std::vector<std::string> TakeDirtyDevices(const std::vector<std::string>& among);
  std::vector<std::string> TakeDirtyGateways();

  // Used by the store when loading.
  void Put(DeviceEntry e);
  void Put(GatewayEntry e);

 private:
  std::unordered_map<std::string, DeviceEntry> devices_;
  std::unordered_map<std::string, GatewayEntry> gateways_;
  std::unordered_set<std::string> dirty_devices_, dirty_gateways_;
};

// SQLite persistence of the registry (WAL, one writer: the daemon's worker thread).
class RegistryStore {
 public:
  ~RegistryStore();
  static Result<std::unique_ptr<RegistryStore>> Open(const std::string& path);
  Status Load(Registry& registry);
  // Writes every dirty entry in one transaction, or with `only` just those of these devices
  // (the others stay dirty). `health_of(key)`, when given, supplies the device's current health
  // memory (else the entry's `health` is written). A committed flush survives a crash of the
  // process (WAL); synchronous=NORMAL may lose the last ones to a power cut.
  Status Flush(Registry& registry, const std::function<std::string(const std::string& key)>& health_of = {},
               const std::vector<std::string>* only = nullptr);

 private:
  RegistryStore();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace sanigate::fleet
