// AdminClient: sanictl's one connection to the broker, over the project's MqttClient. It
// connects within a deadline (and says why not), sends MQTT 5 requests with a response topic
// and random correlation data and waits for the matching answer, collects retained messages
// of a filter, and queues live messages for `tail`.
// Errors are typed: kUnavailable = the broker cannot be reached; kDeadline = nobody answered
// in time; kInvalid = the answer is not a JSON object.
// Ownership: owns its MqttClient; Close() (or the destructor) disconnects.
// Thread-safety: call the methods from one thread; the MQTT callback thread only fills the
// internal queues under a mutex.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/status.h"
#include "mqtt/mqtt_client.h"
#include "settings/gateway_config.h"

namespace sanigate::ctl {

struct AdminOptions {
  settings::MqttSection mqtt;  // url (after --broker), credentials, TLS, client id
  std::string prefix = "sanigate/v1";
  std::string site;
  std::chrono::milliseconds timeout{3000};  // for the connection; requests take their own
};

struct Message {
  std::string topic, payload;
};

class AdminClient {
 public:
  // Connects within options.timeout and subscribes the client's reply topic. kUnavailable
  // with a human reason ("connection refused", "not authorized", ...) when it cannot.
  static Result<std::unique_ptr<AdminClient>> Connect(AdminOptions options);
  ~AdminClient();
  AdminClient(const AdminClient&) = delete;
  AdminClient& operator=(const AdminClient&) = delete;

  // {prefix}/{site}/admin/reply/{unique client part}
  const std::string& reply_topic() const { return reply_topic_; }

  // Publishes a request (QoS 1, response topic, fresh random correlation data) and returns the
  // correlation data to wait for with Await.
  Result<std::string> Send(const std::string& topic, const std::string& payload);
  // The next parsed answer with this correlation data (call again for further answers);
  // kDeadline when none arrives by `deadline`, kInvalid when it is not a JSON object.
  Result<nlohmann::json> Await(const std::string& correlation,
                               std::chrono::steady_clock::time_point deadline);
  // Send + Await.
  Result<nlohmann::json> Request(const std::string& topic, const nlohmann::json& args,
                                 std::chrono::milliseconds timeout);

  // Subscribes `filter` (waiting for the SUBACK); its messages go to the live queue.
  Status Subscribe(const std::string& filter);
  // Subscribes `filter` and gathers what arrives until `quiet` passes with nothing new (the
  // retained messages come right after the SUBACK) or `max_wait` is over. Last one per topic,
  // sorted by topic; empty payloads (cleared retained messages) are left out.
  Result<std::vector<Message>> CollectRetained(const std::string& filter, std::chrono::milliseconds quiet,
                                               std::chrono::milliseconds max_wait);
  // The next live message, or nullopt at `deadline`.
  std::optional<Message> Next(std::chrono::steady_clock::time_point deadline);

  // Disconnects (idempotent).
  void Close();

 private:
  explicit AdminClient(AdminOptions options);
  void OnMessage(mqtt::InboundMessage m);

  AdminOptions opt_;
  std::string reply_topic_;
  std::unique_ptr<mqtt::MqttClient> client_;

  std::mutex mu_;
  std::condition_variable cv_;
  // correlation data -> answers in arrival order (a request to a site's devices reaches every
  // gateway of the site, and each may answer)
  std::map<std::string, std::deque<std::string>> replies_;
  std::deque<Message> live_;
};

// A fresh random hex string of `bytes` random bytes (correlation data, reply topic suffixes).
std::string RandomHex(size_t bytes);

}  // namespace sanigate::ctl
