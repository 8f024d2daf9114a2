// sanifleet's side of firmware rollouts: the image store (data_dir/firmware), the chunk server
// the gateways pull from, the campaigns (saved to data_dir/rollouts/{id}.json on every change,
// reloaded on start) and their admin verbs, and the dispatch of install jobs to the gateways.
// Owned and called by the daemon's worker thread only; it talks to MQTT through the two
// functions it is given.
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "app/admin_verbs.h"
#include "core/status.h"
#include "firmware/keys.h"
#include "registry/registry.h"
#include "rollout/campaign.h"

namespace sanigate::fleet {

struct RolloutSettings {
  std::string data_dir;           // images in data_dir/firmware, campaigns in data_dir/rollouts
  std::string topic_prefix, site;  // the fleet's site: where gateways pull chunks
  std::vector<std::string> trusted_key_files;
  int64_t max_chunk_bytes = 256 * 1024;
};

class RolloutService {
 public:
  // topic, payload, retain
  using SendFn = std::function<void(const std::string&, const std::string&, bool)>;
  // topic, payload, correlation data: a request whose answer comes back through OnInstallAnswer
  using RequestFn = std::function<void(const std::string&, const std::string&, const std::string&)>;

  static Result<std::unique_ptr<RolloutService>> Create(RolloutSettings settings, SendFn send, RequestFn request);

  // The admin verbs it answers, in the order the daemon lists them.
  static const std::vector<std::string>& Verbs();
  bool HandlesVerb(const std::string& verb) const;
  AdminAnswer Admin(const std::string& verb, const nlohmann::json& args, const Registry& registry, int64_t now_ms);
  // {"sha256","offset","length"} → the answer payload for the requesting gateway.
  std::string ServeChunk(const std::string& payload) const;
  // A gateway's retained job status ({prefix}/{site}/gateway/{gw}/firmware/{device}).
  // Returns the version a device now runs when the report says it was installed (the registry
  // keeps it: Modbus controllers do not announce their firmware in the model).
  std::optional<std::string> OnJobStatus(const std::string& site, const std::string& device, const std::string& payload,
                                         int64_t now_ms);
  // A gateway's answer to an install request: a refusal fails that attempt at once.
  void OnInstallAnswer(const std::string& correlation, const std::string& payload, int64_t now_ms);
  // What the registry and the health evaluator learn about a device.
  void OnDevice(const std::string& key, const DeviceEntry& e, bool healthy, int64_t observed_ms, int64_t now_ms);
  // Campaign ticks: timeouts, waves, and install jobs sent to the gateways.
  void Tick(int64_t now_ms);
  // Retained statuses again (after a reconnect).
  void RepublishAll(int64_t now_ms);

 private:
  RolloutService(RolloutSettings settings, SendFn send, RequestFn request);
  Status LoadCampaigns();
  Status SaveCampaign(const rollout::Campaign& c);
  void Publish(const rollout::Campaign& c, int64_t now_ms);
  std::string ImagePath(const std::string& sha256) const;
  AdminAnswer PutChunk(const nlohmann::json& args);
  AdminAnswer Create(const nlohmann::json& args, const Registry& registry, int64_t now_ms);

  RolloutSettings cfg_;
  SendFn send_;
  RequestFn request_;
  std::vector<firmware::PublicKey> trusted_;
  std::map<std::string, std::string> manifests_;  // sha256 → signed manifest text (stored images)
  std::map<std::string, std::string> uploads_;    // sha256 → signed manifest text (being uploaded)
  std::map<std::string, rollout::Campaign> campaigns_;
  std::map<std::string, uint64_t> published_rev_;  // campaign id -> revision last saved and published
  std::map<std::string, std::string> saved_;      // id → last saved document, to save on change only
};

}  // namespace sanigate::fleet
