// MqttLink: the only place that includes an MQTT client library (Eclipse Mosquitto's
// libmosquitto). One MQTT 5 connection to the broker: connect (the caller decides when, so it
// owns backoff), publish completing on PUBACK, the will, TLS and credentials. Each link has one
// network thread of its own; its callbacks only copy what they get and call the handlers, which
// must not block (they queue work for the forwarder's thread).
// Thread-safety: all methods may be called from any thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "core/status.h"

namespace sanigate::mqtt {

struct TlsOptions {
  bool enabled = false;
  std::string ca_file, cert_file, key_file;
  bool verify_peer = true;
};

struct LinkOptions {
  std::string url;  // tcp://host:port or ssl://host:port (mqtt:// and mqtts:// accepted)
  std::string client_id;
  std::string username, password;
  int keepalive_s = 30;
  int connect_timeout_s = 10;
  // > 0: when publishes have waited this long for their PUBACK and nothing at all came from the
  // broker meanwhile, the connection is given up as lost. A silent link (packets dropped,
  // nothing closed) is then noticed after this long instead of one to two keep-alive intervals.
  // 0: only the keep-alive.
  int ack_timeout_s = 0;
  int max_inflight = 64;
  TlsOptions tls;
  std::string will_topic, will_payload;  // retained, QoS 1
  // > 0: a persistent MQTT 5 session (clean start off) that the broker keeps this long after a
  // disconnect, queueing QoS 1 messages of the subscriptions meanwhile. 0: a clean session.
  int64_t session_expiry_s = 0;
};

struct InboundMessage {
  std::string topic, payload, response_topic, correlation_data;
  bool retain = false;  // as published only for subscriptions with retain_as_published
};

struct LinkHandlers {
  std::function<void()> on_connected;
  // `refused`: the broker answered the CONNECT with a refusal (credentials, not authorized,
  // banned): trying again at once cannot help. `why`: "connect to URL failed: ..." on one
  // printable line under 200 characters, naming the cause ("connection refused", "TLS:
  // certificate verify failed", "TLS: hostname mismatch", the client certificate the broker
  // refused, "the broker refused the connection: not authorized (reason code 135)"). When the
  // library cannot tell the cause, the link looks (a TCP connect and a TLS handshake of its own, see
  // connect_diagnosis.h) and calls this from a thread of its own, a moment later.
  std::function<void(const std::string& why, bool refused)> on_connect_failed;
  std::function<void(const std::string& why)> on_connection_lost;
  // token as given to Publish; ok on PUBACK. `refused` means the broker answered with an error
  // reason code (e.g. not authorized): retrying cannot help.
  std::function<void(uint64_t token, bool ok, bool refused, const std::string& why)> on_published;
  std::function<void(InboundMessage)> on_message;
};

class MqttLink {
 public:
  MqttLink(LinkOptions options, LinkHandlers handlers);
  ~MqttLink();
  MqttLink(const MqttLink&) = delete;
  MqttLink& operator=(const MqttLink&) = delete;

  // Starts one connection attempt; the outcome arrives at on_connected / on_connect_failed.
  Status Connect();
  // Queues a QoS 1 publish; the outcome arrives at on_published. Fails at once when the link is
  // down or the library refuses it (the caller keeps the message).
  Status Publish(const std::string& topic, const std::string& payload, bool retain,
                 uint64_t token);
  // A command response: QoS 1, not retained, with the request's correlation data.
  Status PublishResponse(const std::string& topic, const std::string& payload,
                         const std::string& correlation_data, uint64_t token);
  // Publishes (QoS 1) and waits for the PUBACK, for the goodbye status before disconnecting.
  Status PublishAndWait(const std::string& topic, const std::string& payload, bool retain,
                        std::chrono::milliseconds timeout);
  // A request for an MQTT 5 request/response peer: QoS 1, with response topic and correlation.
  Status PublishRequest(const std::string& topic, const std::string& payload,
                        const std::string& response_topic, const std::string& correlation_data,
                        uint64_t token);
  // QoS 1. `relay`: live messages keep the retain flag they were published with, and retained
  // messages are sent only when the subscription is new, not again at every reconnect of a
  // persistent session (MQTT 5 subscription options), so a relay can pass retained state on
  // as retained without repeating it.
  Status Subscribe(const std::string& filter, bool relay = false);
  // Subscribes and waits for the SUBACK (a reply must not arrive before its subscription).
  Status SubscribeAndWait(const std::string& filter, std::chrono::milliseconds timeout);
  // Clean disconnect (no will): waits up to `timeout`.
  void Disconnect(std::chrono::milliseconds timeout);
  bool connected() const;
  // The broker's Receive Maximum from the last CONNACK (65535 when it sets none).
  int receive_maximum() const;
  const std::string& url() const;

 private:
  Status PublishWithProperties(const std::string& topic, const std::string& payload,
                               const std::string& response_topic, const std::string& correlation_data,
                               uint64_t token);
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace sanigate::mqtt
