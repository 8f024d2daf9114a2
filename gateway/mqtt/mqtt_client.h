// MqttClient: an MqttLink that keeps itself connected (backoff with jitter), re-subscribes its
// filters after every connect and hands each inbound message to one handler. For consumers of
// the model: sanifleet, sanictl, the ChirpStack input. (The gateway's forwarder drives its own
// link: it paces publishing against the outbox.)
// Thread-safety: all methods from any thread; handlers run on the link's network thread or the
// client's thread and must not block.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "mqtt/mqtt_link.h"

namespace sanigate::mqtt {

struct ClientOptions {
  LinkOptions link;
  std::vector<std::string> filters;  // subscribed (QoS 1) after every connect
  bool relay = false;                // MqttLink::Subscribe's relay options for every filter
  std::chrono::milliseconds reconnect_min{500};
  std::chrono::milliseconds reconnect_max{5000};
};

struct ClientHandlers {
  std::function<void(InboundMessage)> on_message;
  // Connected (after the subscriptions were sent) or lost, with the reason.
  std::function<void(bool connected, const std::string& why)> on_state;
  // A Publish() the broker refused (MQTT 5 PUBACK reason code >= 0x80, e.g. not authorized by
  // its ACL): retrying cannot help, somebody must be told.
  std::function<void(const std::string& topic, const std::string& why)> on_refused;
};

class MqttClient {
 public:
  MqttClient(ClientOptions options, ClientHandlers handlers);
  ~MqttClient();
  MqttClient(const MqttClient&) = delete;
  MqttClient& operator=(const MqttClient&) = delete;

  void Start();
  // Disconnects cleanly (no will) and joins the reconnect thread.
  void Stop(std::chrono::milliseconds timeout = std::chrono::milliseconds(1000));
  // Waits until connected or `timeout`; true when connected.
  bool WaitConnected(std::chrono::milliseconds timeout);
  bool connected() const;
  std::string last_error() const;
  // Publishes handed to the link and not yet settled (PUBACK or failure): callers that publish
  // in bursts keep this small, so a lost connection leaves little to send again.
  size_t unsettled() const { return unsettled_; }

  // QoS 1; fails at once when the link is down (the caller decides whether to keep the message).
  Status Publish(const std::string& topic, const std::string& payload, bool retain);
  Status PublishAndWait(const std::string& topic, const std::string& payload, bool retain,
                        std::chrono::milliseconds timeout);
  Status PublishResponse(const std::string& topic, const std::string& payload,
                         const std::string& correlation_data);
  Status PublishRequest(const std::string& topic, const std::string& payload,
                        const std::string& response_topic, const std::string& correlation_data);
  // Adds a filter for every later connect and subscribes now, waiting for the SUBACK.
  Status SubscribeAndWait(const std::string& filter, std::chrono::milliseconds timeout);

 private:
  void Loop();

  ClientOptions opt_;
  ClientHandlers handlers_;
  std::unique_ptr<MqttLink> link_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false, attempt_done_ = true, lost_ = false;
  std::string last_error_;
  std::thread thread_;
  std::atomic<size_t> unsettled_{0};
  // Topics of publishes awaiting their PUBACK, by token, to name a refused one.
  std::mutex inflight_mu_;
  uint64_t next_token_ = 0;
  std::unordered_map<uint64_t, std::string> inflight_topics_;
};

}  // namespace sanigate::mqtt
