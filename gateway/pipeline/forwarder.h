// Forwarder: moves committed records from the outbox to the broker. Owns the MQTT link's life:
// connects with exponential backoff and jitter, keeps a window of QoS 1 publishes in flight,
// settles each row on its PUBACK, re-leases everything in flight when the link drops, and keeps
// the retained gateway status (with its will) up to date.
// Thread-safety: one internal thread; Start/Stop/Stats from any thread.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <unordered_map>
#include <random>
#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

#include "mqtt/mqtt_link.h"
#include "store/outbox.h"

namespace sanigate::pipeline {

struct ForwarderOptions {
  // The outbox destination this forwarder serves: 0 the local broker, 1.. the upstreams.
  size_t destination = 0;
  std::string name = "mqtt";  // in log lines
  // Maps a stored record's topic to this broker's topic scheme (an upstream's prefix); empty:
  // published as stored.
  std::function<std::string(const std::string&)> map_topic;
  size_t window = 20;
  // Caps for a link that costs money (0 = none): records per second and payload+topic bytes per
  // second, as token buckets holding one second's worth.
  double max_msgs_per_s = 0;
  double max_bytes_per_s = 0;
  // Batching (off when batch_records <= 1): up to batch_records consecutive non-retained records,
  // at most batch_bytes of them, go as one publish on batch_topic with the payload build_batch
  // makes (upstream/batch.h). One PUBACK settles the whole batch; a rate cap counts publishes.
  size_t batch_records = 0;
  size_t batch_bytes = 64 * 1024;
  std::string batch_topic;
  std::function<std::string(std::span<const store::Envelope>)> build_batch;
  std::chrono::milliseconds reconnect_min{500};
  std::chrono::milliseconds reconnect_max{5000};
  std::chrono::milliseconds status_interval{30000};
  std::string status_topic;
  // Builds the gateway status payload; online=false for the will and the goodbye.
  std::function<std::string(bool online)> status_payload;
  // Subscribed on every connect: commands (…/devices/+/cmd/+) and the admin API.
  std::vector<std::string> subscriptions;
  std::function<void(mqtt::InboundMessage)> on_message;  // runs on the link's thread: must not block
};

struct ForwarderStats {
  bool connected = false;
  uint64_t published = 0, acked = 0, refused = 0, reconnects = 0, connect_failures = 0;
  uint64_t bytes_published = 0;  // topic + payload of the records published
  size_t inflight = 0;
  std::string last_error;
  int64_t last_connected_ms = 0;
};

class Forwarder {
 public:
  Forwarder(store::Outbox& outbox, mqtt::LinkOptions link, ForwarderOptions options);
  ~Forwarder();
  void Start();
  // Publishes what is committed (up to `drain`), then the offline status, then disconnects.
  void Stop(std::chrono::milliseconds drain);
  ForwarderStats Stats() const;
  void PublishStatusSoon();  // e.g. after a device or adapter state change
  // Publishes a command response directly (not through the outbox: it is only useful now).
  Status PublishResponse(const std::string& topic, const std::string& payload,
                         const std::string& correlation_data);

 private:
  enum class Ev { kConnected, kConnectFailed, kLost, kAcked, kFailed, kRefused, kWake };
  struct Event {
    Ev kind;
    uint64_t token = 0;
    std::string why;
  };

  void Post(Event e);
  void Loop();
  void Handle(Event& e);
  void Fill();
  void ScheduleReconnect(bool after_failure);
  void PublishStatus(bool online);

  store::Outbox& outbox_;
  ForwarderOptions opt_;
  std::unique_ptr<mqtt::MqttLink> link_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Event> events_;
  bool stop_now_ = false;
  ForwarderStats stats_;

  // Loop-thread state.
  enum class State { kDisconnected, kConnecting, kConnected } state_ = State::kDisconnected;
  std::unordered_set<uint64_t> inflight_;
  size_t window_ = 64;  // opt_.window capped by the broker's Receive Maximum
  std::chrono::milliseconds backoff_{0};
  std::chrono::steady_clock::time_point next_connect_{};
  std::chrono::steady_clock::time_point next_status_{};
  // Rate caps: tokens left and when they were last refilled; publishing waits until then.
  double msg_tokens_ = 0, byte_tokens_ = 0;
  std::chrono::steady_clock::time_point tokens_at_{};
  std::chrono::steady_clock::time_point throttled_until_{};
  bool Admit(size_t bytes);
  // Leased and not yet published (waiting for tokens), in order; dropped on a re-lease.
  std::vector<store::Envelope> held_;
  std::unordered_map<uint64_t, std::vector<uint64_t>> batches_;  // token (first seq) -> its records
  bool SendHeld();
  void ReleaseInFlight();  // the link dropped: everything in flight or held is leased again
  bool status_due_ = false;
  bool outbox_error_logged_ = false;
  std::mt19937_64 rng_{std::random_device{}()};
  std::thread thread_;
};

}  // namespace sanigate::pipeline
