// The gateway's side of a firmware rollout: accepts install jobs from sanifleet (admin verb
// `install`), pulls the image in chunks over its own MQTT connection (so a rollout's traffic
// never queues behind telemetry, and at most `window` chunks and `max_kib_s` at a time), checks
// it against the signed manifest with the configured trusted keys, and hands it to the adapter
// that owns the device. Each job's state is retained on
// {prefix}/{site}/gateway/{gw}/firmware/{device}. An interrupted download resumes from the
// chunks already on disk. One worker thread owns all state; Accept may be called from any thread.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "api/adapter.h"
#include "core/status.h"
#include "firmware/artifact.h"
#include "mqtt/mqtt_client.h"
#include "settings/gateway_config.h"

namespace sanigate {

// The two payloads the agent takes from outside, decoded without I/O (fuzzed: tests/fuzz).
// An install job: {"campaign","device","attempt","manifest":{…},"chunks":topic}. Refused
// (kInvalid, with the reason for the admin answer) when a field is missing or of another type;
// "attempt" defaults to 1. The manifest is only checked to be an object here: the agent verifies
// its signature.
struct FirmwareJobRequest {
  std::string campaign, device, chunks_topic;
  int attempt = 1;
  nlohmann::json manifest;
};
Result<FirmwareJobRequest> DecodeFirmwareJob(const nlohmann::json& job);

// sanifleet's answer to one chunk request ({"ok":true,"result":{"offset","data"(base64)}} or
// {"ok":false,"error"}) for chunks of at most `max_chunk_bytes`. kInvalid: a refusal or an
// unreadable answer (the download fails, the message says why); kUnavailable: an answer that
// says ok but carries no usable offset and data (the chunk is asked again).
struct ChunkAnswer {
  uint64_t offset = 0;
  std::string data;  // decoded
};
Result<ChunkAnswer> DecodeChunkAnswer(std::string_view payload, uint64_t max_chunk_bytes);

class FirmwareAgent {
 public:
  // Runs `fn` on the adapter that owns `device` while the gateway holds its adapters' lock (a
  // reload cannot destroy it meanwhile); false when no adapter owns the device.
  using WithAdapter = std::function<bool(const std::string& device, const std::function<void(dev::Adapter&)>& fn)>;
  // Whether the box is healthy now (broker connected, no adapter failed): the self-update check.
  using Healthy = std::function<bool()>;
  // Asks the daemon to restart into the installed image (it stops cleanly, then re-executes).
  using Restart = std::function<void()>;
  static Result<std::unique_ptr<FirmwareAgent>> Create(const settings::Config& cfg, WithAdapter with, Healthy healthy,
                                                        Restart restart);
  ~FirmwareAgent();
  void Start();
  void Stop();
  // {"campaign","device","attempt","manifest":{…},"chunks":topic} → the admin answer
  // ({"ok":true,"result":{"accepted":true}} or a refusal with the reason).
  nlohmann::json Accept(const nlohmann::json& job);

  // The version the box runs: [firmware] version_file, or this binary's own version.
  std::string RunningVersion() const;

 private:
  struct Job {
    std::string campaign, device, manifest_text, chunks_topic;
    int attempt = 0;
    firmware::Manifest manifest;
    std::string state;  // downloading, verifying, installing, succeeded, failed
    uint64_t bytes = 0;
    std::string error, refusal, version;
    int64_t reported_ms = 0;
  };
  struct Download {
    std::string sha256, chunks_topic;
    uint64_t size = 0, chunk = 0;
    std::vector<bool> have;
    std::map<size_t, int64_t> asked;  // chunk index → when it was requested
    int64_t saved_ms = 0;
    bool done = false;
  };

  // A self-update across the restart, kept in FirmwareDir()/self-update.json.
  struct SelfUpdate {
    std::string campaign, device, expected, previous, state, reason;  // state: restarting, rolled_back
    int attempt = 0, boots = 0;
    int64_t deadline_ms = 0;
  };

  FirmwareAgent(const settings::Config& cfg, WithAdapter with);
  void InstallSelf(Job& job, int64_t now);
  void CheckSelf(int64_t now);
  void RollBack(const std::string& why, int64_t now);
  void SaveSelf();
  void Post(std::function<void()> task);
  void Loop();
  void Pump(int64_t now);
  void OnChunk(const std::string& correlation, const std::string& payload, int64_t now);
  void Finished(Download& d, int64_t now);
  void Install(Job& job, int64_t now);
  void Report(Job& job, int64_t now);
  void Fail(Job& job, std::string error, std::string refusal, int64_t now);
  void SaveProgress(const Download& d);
  std::string PartPath(const std::string& sha) const;
  std::string ImagePath(const std::string& sha) const;

  settings::Config cfg_;
  WithAdapter with_adapter_;
  Healthy healthy_;
  Restart restart_;
  std::optional<SelfUpdate> self_;  // worker thread only (loaded before it starts)
  bool restarting_ = false;         // asked the daemon to restart: nothing more to decide here
  std::vector<firmware::PublicKey> trusted_;
  std::unique_ptr<mqtt::MqttClient> client_;
  std::string reply_topic_;

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> tasks_;
  bool stop_ = false;
  std::thread worker_;

  // Worker thread only.
  std::map<std::string, Job> jobs_;            // by device
  std::map<std::string, Download> downloads_;  // by sha256
  double budget_bytes_ = 0;                    // rate limit: bytes that may be asked for now
  int64_t budget_ms_ = 0;
  uint64_t corr_seq_ = 0;
};

}  // namespace sanigate
