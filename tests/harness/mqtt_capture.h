// Paho MQTT v5 subscriber recording what the gateway publishes, across reconnects and restarts.
// Ownership: owns its Paho client and the captured messages; the destructor disconnects.
// Thread-safety: Connect/Subscribe/Disconnect/setters from one thread; queries/Wait* from any.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace mqtt {
class async_client;
}  // namespace mqtt

namespace sanigate::test {

struct Captured {
  std::string topic;
  std::string payload;
  // Subscriptions use retain-as-published, so this is the publisher's retain flag for live
  // messages and true for messages replayed from the broker's retained store.
  bool retained = false;
  std::chrono::steady_clock::time_point at;  // when the capture received it
};

class MqttCapture {
 public:
  // url: tcp://127.0.0.1:PORT or ssl://127.0.0.1:PORT. clean_session=false asks the broker to keep
  // the session (subscriptions + queued QoS 1/2 messages) for an hour after a disconnect.
  MqttCapture(std::string url, std::string client_id, bool clean_session = true);
  ~MqttCapture();
  MqttCapture(const MqttCapture&) = delete;
  MqttCapture& operator=(const MqttCapture&) = delete;

  // Must be called before Connect() to take effect.
  void SetCredentials(std::string username, std::string password);
  void SetTrustStore(std::string ca_file);  // required for ssl:// URLs
  void SetClientCertificate(std::string cert_file, std::string key_file);

  // Connects (automatic reconnect enabled). Throws std::runtime_error on failure or timeout; the
  // message includes Paho's reason.
  void Connect(std::chrono::milliseconds timeout = std::chrono::seconds(10));
  // Blocks until SUBACK; throws on timeout or a refused subscription. The subscription is
  // remembered and renewed after every reconnect (a no-op when the broker kept the session).
  void Subscribe(std::string filter, int qos = 1,
                 std::chrono::milliseconds timeout = std::chrono::seconds(10));
  // Publishes `payload` (any bytes) at QoS 1 and waits for the PUBACK; with a response topic it
  // is an MQTT 5 request (response topic + correlation data). Throws on failure or timeout.
  void Publish(const std::string& topic, const std::string& payload, const std::string& response_topic = "",
               std::chrono::milliseconds timeout = std::chrono::seconds(10));
  // Clean MQTT disconnect; a persistent session stays on the broker. Never throws.
  void Disconnect(std::chrono::milliseconds timeout = std::chrono::seconds(5));

  bool IsConnected() const;
  // Waits until the client is connected (e.g. after the broker was restarted).
  bool WaitConnected(std::chrono::milliseconds timeout);
  // Whether the broker reported an existing session on the last Connect().
  bool session_present() const;
  // Number of successful connections, including automatic reconnects.
  std::size_t connect_count() const;
  // Last connection-lost cause or re-subscribe error, for diagnostics.
  std::string last_error() const;

  std::vector<Captured> Messages() const;
  // Messages whose topic ends with `topic_suffix`; all messages if it is empty.
  std::size_t Count(const std::string& topic_suffix) const;
  // Evaluates `pred` now, on every new message and at least every 100 ms until it returns true
  // or the timeout expires. `pred` runs under the capture's lock: keep it cheap and do not call
  // back into this MqttCapture from it.
  bool WaitFor(const std::function<bool(const std::vector<Captured>&)>& pred,
               std::chrono::milliseconds timeout) const;
  // Waits until at least `n` captured messages match the MQTT topic filter.
  bool WaitForCount(const std::string& topic_filter, std::size_t n,
                    std::chrono::milliseconds timeout) const;
  void Clear();

 private:
  struct Subscription {
    std::string filter;
    int qos;
  };

  void OnConnected();
  void OnConnectionLost(const std::string& cause);
  void OnMessage(std::string topic, std::string payload, bool retained);

  const std::string url_;
  const std::string client_id_;
  const bool clean_session_;
  std::string username_;
  std::string password_;
  std::string ca_file_;
  std::string cert_file_;
  std::string key_file_;

  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  std::vector<Captured> messages_;  // guarded by mu_
  std::uint64_t generation_ = 0;    // guarded by mu_; bumped on every message/state change
  std::vector<Subscription> subscriptions_;  // guarded by mu_
  bool connected_ = false;                   // guarded by mu_
  bool session_present_ = false;             // guarded by mu_
  std::size_t connect_count_ = 0;            // guarded by mu_
  std::string last_error_;                   // guarded by mu_

  // Declared last so it is destroyed first: its callbacks touch the members above.
  std::unique_ptr<mqtt::async_client> client_;
};

// MQTT filter matching: '+' is exactly one level, a trailing '#' is the parent and any number
// of levels below; wildcards at the first level do not match topics starting with '$'.
bool TopicMatches(const std::string& filter, const std::string& topic);

// Writes one "TOPIC PAYLOAD\n" line per message, the format of `mosquitto_sub -v`, so the schema
// validator script can consume captures. Throws std::runtime_error if the file cannot be written.
void WriteMosquittoSubFormat(const std::vector<Captured>& messages, const std::string& path);

}  // namespace sanigate::test
