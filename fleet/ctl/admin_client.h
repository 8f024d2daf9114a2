// AdminClient: sanictl's one connection to the broker, over the project's MqttClient. It
// connects within a deadline (and says why not), sends MQTT 5 requests with a response topic
// and random correlation data and waits for the matching answer, collects retained messages
// of a filter, queues live messages for `tail`, and follows sanifleet's retained status.
// Errors are typed: kUnavailable = the broker cannot be reached (or sanifleet says it is
// offline); kDeadline = nobody answered in time; kFailedPrecondition = the broker refused this
// user (credentials at connect, its ACL in a PUBACK or SUBACK, or a reply topic it does not
// deliver to the user); kInvalid = the answer is not a JSON object, or the broker refused a
// message for another reason (quota, size). Messages are complete sentences for stderr.
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
  // Connects within options.timeout and subscribes the client's reply topic. kUnavailable with
  // the reason ("connection refused", "host not found", ...) when the broker cannot be reached;
  // kFailedPrecondition when it refuses the user (wrong password, not authorized), at once.
  static Result<std::unique_ptr<AdminClient>> Connect(AdminOptions options);
  ~AdminClient();
  AdminClient(const AdminClient&) = delete;
  AdminClient& operator=(const AdminClient&) = delete;

  // {prefix}/{site}/admin/reply/{unique client part}
  const std::string& reply_topic() const { return reply_topic_; }

  // Publishes a request (QoS 1, response topic, fresh random correlation data) and returns the
  // correlation data to wait for with Await. `to_fleet`: a request for sanifleet, which is not
  // sent while its followed status (FollowFleetStatus) says it is offline (kUnavailable): its
  // persistent session would otherwise keep the request and run it when it comes back.
  Result<std::string> Send(const std::string& topic, const std::string& payload, bool to_fleet = false);
  // The next parsed answer with this correlation data (call again for further answers);
  // kDeadline when none arrives by `deadline`, kInvalid when it is not a JSON object. Ends
  // early when the broker refuses the request (its PUBACK: kFailedPrecondition for "not
  // authorized", else kInvalid) or, for a request to sanifleet, when sanifleet's status turns
  // offline (kUnavailable). PUBACKs of requests do not say which request they settle, so a
  // refusal ends every request still waiting for its first answer (sanictl has one at a time).
  Result<nlohmann::json> Await(const std::string& correlation,
                               std::chrono::steady_clock::time_point deadline);
  // Send + Await.
  Result<nlohmann::json> Request(const std::string& topic, const nlohmann::json& args,
                                 std::chrono::milliseconds timeout, bool to_fleet = false);

  // Makes sure what the broker queued for this client before now has arrived: publishes a probe
  // on the reply topic and waits for it to come back (a broker delivers to one client in order,
  // so the retained messages of earlier subscriptions are in by then). true when it came back;
  // false when the broker refused the probe itself (the user may not write there: nothing is
  // known); kFailedPrecondition when it did not come back by `deadline`: the broker does not
  // deliver the reply topic to this user, so no answer could arrive either. Once it came back,
  // later calls return true at once.
  Result<bool> Sync(std::chrono::steady_clock::time_point deadline);
  // Subscribes sanifleet's retained status `topic` ({prefix}/{site}/fleet/status; once) and
  // waits until its retained message, if any, is in (Sync, or a short wait when Sync cannot
  // tell). Its messages update FleetStatus() and never reach the live queue.
  Status FollowFleetStatus(const std::string& topic, std::chrono::steady_clock::time_point deadline);
  // The latest followed fleet status (null when there is none) and the text saying sanifleet is
  // offline, or "" while it is not known to be.
  nlohmann::json FleetStatus();
  std::string FleetOffline();

  // Subscribes `filter` (waiting for the SUBACK); its messages go to the live queue. A SUBACK
  // reason code >= 0x80 is kFailedPrecondition ("not authorized") or kInvalid (other).
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
  struct Pending {
    std::string topic;
    bool to_fleet = false;
    bool answered = false;  // its first answer arrived
    int refused = 0;        // the PUBACK's reason code when the broker refused it
  };

  explicit AdminClient(AdminOptions options);
  void OnMessage(mqtt::InboundMessage m);
  void OnRefused(const std::string& topic, const std::string& why);
  // "user NAME" or "anonymous clients", for the refusal messages.
  std::string Who() const;
  std::string FleetOfflineLocked() const;  // FleetOffline() with mu_ held

  AdminOptions opt_;
  std::string reply_topic_;
  std::unique_ptr<mqtt::MqttClient> client_;

  std::mutex mu_;
  std::condition_variable cv_;
  // correlation data -> answers in arrival order (a request to a site's devices reaches every
  // gateway of the site, and each may answer)
  std::map<std::string, std::deque<std::string>> replies_;
  std::map<std::string, Pending> pending_;  // correlation data -> the request sent with it
  std::deque<Message> live_;
  std::string probe_;  // payload of the Sync probe in flight
  bool probe_back_ = false, probe_refused_ = false, synced_ = false;
  std::string fleet_topic_;   // followed sanifleet status ("" = not followed)
  nlohmann::json fleet_status_;  // its latest payload, parsed (null = none)
  bool fleet_seen_ = false;      // a message arrived on fleet_topic_
};

// A fresh random hex string of `bytes` random bytes (correlation data, reply topic suffixes).
std::string RandomHex(size_t bytes);

}  // namespace sanigate::ctl
