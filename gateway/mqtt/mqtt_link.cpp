#include "mqtt/mqtt_link.h"

#include <mqtt/async_client.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <thread>

#include "mqtt/connect_diagnosis.h"

namespace sanigate::mqtt {
namespace {

// Paho refuses a publish once this many are queued inside it (default 100): a burst of retained
// health verdicts from sanifleet must not be refused. The forwarder stays far below it (window).
constexpr int kMaxQueuedCommands = 200000;

void* TokenToContext(uint64_t token) { return reinterpret_cast<void*>(static_cast<uintptr_t>(token)); }
uint64_t ContextToToken(void* ctx) { return static_cast<uint64_t>(reinterpret_cast<uintptr_t>(ctx)); }

// The reason code of a refused CONNECT: Paho C++ 1.2 gives it as the reason code or, for a
// CONNACK it answers with a failure, as the return code.
int ConnackRefusal(const ::mqtt::token& tok) {
  int reason = static_cast<int>(tok.get_reason_code());
  if (reason >= 0x80 && reason <= 0xFF) return reason;
  int rc = tok.get_return_code();
  return rc >= 0x80 && rc <= 0xFF ? rc : 0;
}

// Paho's own text for a failed connect ("TCP/TLS connect failure", "TCP connect timeout").
std::string PahoText(const ::mqtt::token& tok) {
  try {
    (void)tok.get_connect_response();  // complete and failed: throws with the text
  } catch (const ::mqtt::exception& e) {
    return e.get_message();
  } catch (const std::exception&) {
  }
  return {};
}

}  // namespace

std::string PahoUrl(const std::string& url) {
  if (url.rfind("mqtt://", 0) == 0) return "tcp://" + url.substr(7);
  if (url.rfind("mqtts://", 0) == 0) return "ssl://" + url.substr(8);
  return url;
}

struct MqttLink::Impl {
  // Paho calls these from its own threads; they forward and return at once.
  struct PublishListener : ::mqtt::iaction_listener {
    Impl* owner = nullptr;
    void on_success(const ::mqtt::token& tok) override {
      if (owner->handlers.on_published)
        owner->handlers.on_published(ContextToToken(tok.get_user_context()), true, false, {});
    }
    void on_failure(const ::mqtt::token& tok) override {
      // A reason code >= 0x80 in the PUBACK is the broker refusing this message.
      int reason = static_cast<int>(tok.get_reason_code());
      bool refused = reason >= 0x80;
      std::string why = refused ? "broker refused the message (reason code " + std::to_string(reason) + ")"
                                : "publish failed (rc " + std::to_string(tok.get_return_code()) + ")";
      if (owner->handlers.on_published)
        owner->handlers.on_published(ContextToToken(tok.get_user_context()), false, refused, why);
    }
  };
  struct ConnectListener : ::mqtt::iaction_listener {
    Impl* owner = nullptr;
    void on_success(const ::mqtt::token& tok) override {
      // The broker's Receive Maximum caps how many QoS 1 publishes it accepts unacknowledged
      // (Mosquitto: max_inflight_messages, 20 by default); more would only queue inside Paho.
      int receive_max = 65535;
      try {
        const auto& props = tok.get_connect_response().get_properties();
        if (props.contains(::mqtt::property::RECEIVE_MAXIMUM))
          receive_max = ::mqtt::get<uint16_t>(props, ::mqtt::property::RECEIVE_MAXIMUM);
      } catch (const std::exception&) {
      }
      owner->receive_maximum = receive_max;
      owner->is_connected = true;
      if (owner->handlers.on_connected) owner->handlers.on_connected();
    }
    void on_failure(const ::mqtt::token& tok) override {
      owner->is_connected = false;
      owner->ConnectFailed(tok);
    }
  };

  // On Paho's thread. A CONNACK refusal and a timeout are clear; for the rest Paho says "TCP/TLS
  // connect failure" alike, so the link looks from outside (connect_diagnosis.h), off Paho's
  // threads, and reports what it found a moment later.
  void ConnectFailed(const ::mqtt::token& tok) {
    std::string paho = PahoText(tok);
    if (int code = ConnackRefusal(tok)) {
      // 0x86 bad user name or password, 0x87 not authorized, 0x8A banned: retrying at once
      // cannot help.
      Report(ConnackRefusalText(code), code == 0x86 || code == 0x87 || code == 0x8A);
    } else if (int rc = tok.get_return_code(); rc != MQTTASYNC_FAILURE) {
      Report((paho.empty() ? std::string("Paho error") : paho) + " (rc " + std::to_string(rc) + ")",
             false);
    } else if (paho == "TCP connect timeout") {
      Report("timed out: no answer within " + std::to_string(opts.connect_timeout_s) + " s", false);
    } else {
      std::lock_guard lk(diag_mu);
      if (diag_stop) return;
      diag_request = std::move(paho);
      if (!diag_thread.joinable()) diag_thread = std::thread([this] { DiagnosisLoop(); });
      diag_cv.notify_all();
    }
  }

  void Report(const std::string& why, bool refused) {
    if (handlers.on_connect_failed)
      handlers.on_connect_failed(PrintableLine("connect to " + opts.url + " failed: " + why),
                                 refused);
  }

  // The outcome is reported with diag_mu held: the destructor, which takes it to stop this
  // thread, then knows no report is running.
  void DiagnosisLoop() {
    std::unique_lock lk(diag_mu);
    for (;;) {
      diag_cv.wait(lk, [&] { return diag_stop || diag_request.has_value(); });
      if (diag_stop) return;
      std::string paho = std::move(*diag_request);
      diag_request.reset();
      lk.unlock();
      std::string why = DiagnoseConnectFailure(
          ParseBrokerAddress(PahoUrl(opts.url), opts.tls.enabled), opts.tls,
          std::chrono::seconds(std::clamp(opts.connect_timeout_s, 1, 3)),
          [this] { return diag_stop.load(); }, paho);
      lk.lock();
      if (diag_stop) return;
      Report(why, false);
    }
  }

  LinkOptions opts;
  LinkHandlers handlers;
  std::unique_ptr<::mqtt::async_client> client;
  ::mqtt::connect_options conn_opts;
  PublishListener publish_listener;
  ConnectListener connect_listener;
  std::atomic<bool> is_connected{false};
  std::atomic<int> receive_maximum{65535};
  // The diagnosis thread, started at the first failure Paho cannot explain.
  std::mutex diag_mu;
  std::condition_variable diag_cv;
  std::optional<std::string> diag_request;  // Paho's text of the failure to look into
  std::atomic<bool> diag_stop{false};       // set with diag_mu held
  std::thread diag_thread;
};

MqttLink::MqttLink(LinkOptions options, LinkHandlers handlers) : impl_(std::make_unique<Impl>()) {
  auto& d = *impl_;
  d.opts = std::move(options);
  d.handlers = std::move(handlers);
  d.publish_listener.owner = &d;
  d.connect_listener.owner = &d;
  // No Paho persistence: the outbox is the durable store, in-flight messages are re-leased.
  d.client = std::make_unique<::mqtt::async_client>(PahoUrl(d.opts.url), d.opts.client_id,
                                                    ::mqtt::create_options(MQTTVERSION_5, kMaxQueuedCommands), nullptr);
  d.client->set_connection_lost_handler([&d](const std::string& cause) {
    d.is_connected = false;
    if (d.handlers.on_connection_lost) d.handlers.on_connection_lost(cause.empty() ? "connection lost" : cause);
  });
  d.client->set_disconnected_handler([&d](const ::mqtt::properties&, ::mqtt::ReasonCode reason) {
    d.is_connected = false;
    if (d.handlers.on_connection_lost)
      d.handlers.on_connection_lost("broker disconnected us (reason code " +
                                    std::to_string(static_cast<int>(reason)) + ")");
  });
  d.client->set_message_callback([&d](::mqtt::const_message_ptr m) {
    if (!d.handlers.on_message) return;
    InboundMessage in;
    in.topic = m->get_topic();
    in.payload = m->to_string();
    in.retain = m->is_retained();
    const auto& props = m->get_properties();
    if (props.contains(::mqtt::property::RESPONSE_TOPIC))
      in.response_topic = ::mqtt::get<std::string>(props, ::mqtt::property::RESPONSE_TOPIC);
    if (props.contains(::mqtt::property::CORRELATION_DATA))
      in.correlation_data = ::mqtt::get<std::string>(props, ::mqtt::property::CORRELATION_DATA);
    d.handlers.on_message(std::move(in));
  });

  auto& c = d.conn_opts;
  c.set_mqtt_version(MQTTVERSION_5);
  if (d.opts.session_expiry_s > 0) {
    // Paho refuses a v5 connect that also carries the v3 clean-session flag.
    c.set_clean_session(false);
    c.set_clean_start(false);
    c.set_properties(::mqtt::properties{
        {::mqtt::property::SESSION_EXPIRY_INTERVAL, static_cast<uint32_t>(d.opts.session_expiry_s)}});
  } else {
    c.set_clean_start(true);
  }
  c.set_keep_alive_interval(d.opts.keepalive_s);
  c.set_connect_timeout(d.opts.connect_timeout_s);
  c.set_max_inflight(d.opts.max_inflight);
  c.set_automatic_reconnect(false);  // the forwarder owns reconnects (backoff with jitter)
  if (!d.opts.username.empty()) c.set_user_name(d.opts.username);
  if (!d.opts.password.empty()) c.set_password(d.opts.password);
  if (!d.opts.will_topic.empty())
    c.set_will(::mqtt::will_options(d.opts.will_topic, d.opts.will_payload, 1, true));
  if (d.opts.tls.enabled) {
    ::mqtt::ssl_options ssl;
    if (!d.opts.tls.ca_file.empty()) ssl.set_trust_store(d.opts.tls.ca_file);
    if (!d.opts.tls.cert_file.empty()) ssl.set_key_store(d.opts.tls.cert_file);
    if (!d.opts.tls.key_file.empty()) ssl.set_private_key(d.opts.tls.key_file);
    // verify: Paho checks that the certificate names the URL's host (X509_check_host, then
    // X509_check_ip_asc), after the chain check of enable_server_cert_auth.
    ssl.set_enable_server_cert_auth(d.opts.tls.verify_peer);
    ssl.set_verify(d.opts.tls.verify_peer);
    c.set_ssl(std::move(ssl));
  }
}

MqttLink::~MqttLink() {
  {
    std::lock_guard lk(impl_->diag_mu);
    impl_->diag_stop = true;
  }
  impl_->diag_cv.notify_all();
  if (impl_->diag_thread.joinable()) impl_->diag_thread.join();
  try {
    if (impl_->client->is_connected()) impl_->client->disconnect(0)->wait_for(std::chrono::seconds(1));
  } catch (const std::exception&) {
  }
}

Status MqttLink::Connect() {
  try {
    impl_->client->connect(impl_->conn_opts, nullptr, impl_->connect_listener);
    return Status::Ok();
  } catch (const ::mqtt::exception& e) {
    return Unavailable("connect to " + impl_->opts.url + ": " + e.what());
  }
}

Status MqttLink::Publish(const std::string& topic, const std::string& payload, bool retain,
                         uint64_t token) {
  if (!impl_->is_connected) return Unavailable("not connected");
  try {
    auto msg = ::mqtt::make_message(topic, payload, 1, retain);
    impl_->client->publish(msg, TokenToContext(token), impl_->publish_listener);
    return Status::Ok();
  } catch (const ::mqtt::exception& e) {
    return Unavailable(std::string("publish: ") + e.what());
  }
}

// Responses and requests: QoS 1, not retained, with MQTT 5 request/response properties.
Status MqttLink::PublishWithProperties(const std::string& topic, const std::string& payload,
                                       const std::string& response_topic, const std::string& correlation_data,
                                       uint64_t token) {
  if (!impl_->is_connected) return Unavailable("not connected");
  try {
    ::mqtt::properties props;
    if (!response_topic.empty()) props.add(::mqtt::property(::mqtt::property::RESPONSE_TOPIC, response_topic));
    if (!correlation_data.empty())
      props.add(::mqtt::property(::mqtt::property::CORRELATION_DATA, correlation_data));
    auto msg = ::mqtt::make_message(topic, payload, 1, false);
    std::const_pointer_cast<::mqtt::message>(msg)->set_properties(props);
    impl_->client->publish(msg, TokenToContext(token), impl_->publish_listener);
    return Status::Ok();
  } catch (const ::mqtt::exception& e) {
    return Unavailable(std::string("publish to ") + topic + ": " + e.what());
  }
}

Status MqttLink::PublishResponse(const std::string& topic, const std::string& payload,
                                 const std::string& correlation_data, uint64_t token) {
  return PublishWithProperties(topic, payload, {}, correlation_data, token);
}

Status MqttLink::PublishAndWait(const std::string& topic, const std::string& payload, bool retain,
                                std::chrono::milliseconds timeout) {
  if (!impl_->is_connected) return Unavailable("not connected");
  try {
    auto tok = impl_->client->publish(::mqtt::make_message(topic, payload, 1, retain));
    if (!tok->wait_for(timeout)) return Status(Code::kDeadline, "no PUBACK in time");
    return Status::Ok();
  } catch (const ::mqtt::exception& e) {
    return Unavailable(std::string("publish: ") + e.what());
  }
}

Status MqttLink::PublishRequest(const std::string& topic, const std::string& payload,
                                const std::string& response_topic, const std::string& correlation_data,
                                uint64_t token) {
  return PublishWithProperties(topic, payload, response_topic, correlation_data, token);
}

Status MqttLink::SubscribeAndWait(const std::string& filter, std::chrono::milliseconds timeout) {
  try {
    auto tok = impl_->client->subscribe(filter, 1);
    if (!tok->wait_for(timeout)) return Status(Code::kDeadline, "no SUBACK for " + filter + " in time");
    // Paho C++ 1.2's get_subscribe_response() returns garbage for a single v5 subscription;
    // the token's own reason code is reliable.
    if (int rc = static_cast<int>(tok->get_reason_code()); rc >= 0x80)
      return Status(Code::kFailedPrecondition, "the broker refused the subscription to " + filter +
                                                   " (reason code " + std::to_string(rc) + ")");
    return Status::Ok();
  } catch (const ::mqtt::exception& e) {
    return Unavailable(std::string("subscribe: ") + e.what());
  }
}

Status MqttLink::Subscribe(const std::string& filter, bool relay) {
  try {
    ::mqtt::subscribe_options so;
    if (relay) {
      so.set_retain_as_published(true);
      so.set_retain_handling(::mqtt::subscribe_options::SEND_RETAINED_ON_NEW);
    }
    impl_->client->subscribe(filter, 1, so);
    return Status::Ok();
  } catch (const ::mqtt::exception& e) {
    return Unavailable(std::string("subscribe: ") + e.what());
  }
}

void MqttLink::Disconnect(std::chrono::milliseconds timeout) {
  try {
    if (impl_->client->is_connected())
      impl_->client->disconnect(static_cast<int>(timeout.count()))->wait_for(timeout + std::chrono::milliseconds(500));
  } catch (const ::mqtt::exception&) {
  }
  impl_->is_connected = false;
}

bool MqttLink::connected() const { return impl_->is_connected; }
int MqttLink::receive_maximum() const { return impl_->receive_maximum; }
const std::string& MqttLink::url() const { return impl_->opts.url; }

}  // namespace sanigate::mqtt
