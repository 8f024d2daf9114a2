#include "mqtt/mqtt_link.h"

#include <mosquitto.h>
#include <mqtt_protocol.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>

#include "core/thread_name.h"
#include "mqtt/connect_diagnosis.h"

namespace sanigate::mqtt {
namespace {

// How long one pass of the network thread may sleep when nothing happens: it wakes at once for
// socket traffic and for publishes from other threads (libmosquitto's socket pair), so this only
// bounds how late a stop, a disconnect or the connect timeout is noticed.
constexpr int kLoopSliceMs = 100;

void InitLibraryOnce() {
  static std::once_flag once;
  std::call_once(once, [] { mosquitto_lib_init(); });
}

std::string MosquittoError(int rc) {
  if (rc == MOSQ_ERR_ERRNO) return std::strerror(errno);
  return mosquitto_strerror(rc);
}

bool HasScheme(const std::string& url, const char* scheme) { return url.rfind(scheme, 0) == 0; }

// A property list freed on every path.
struct Properties {
  mosquitto_property* list = nullptr;
  ~Properties() { mosquitto_property_free_all(&list); }
};

}  // namespace

// One network thread per link runs every connection: it makes a fresh libmosquitto client for
// each attempt (so nothing a lost connection left queued inside the library is sent again: the
// caller re-sends from its own store), drives it with mosquitto_loop() until the connection
// ends, and then waits for the next Connect(). Publishes from other threads are queued by the
// library, which wakes this thread through its socket pair.
struct MqttLink::Impl {
  enum class Waiter { kPublish, kSubscribe };
  struct Wait {
    bool done = false, ok = false;
    int code = 0;
  };

  LinkOptions opts;
  LinkHandlers handlers;
  BrokerAddress address;
  int port = 1883;
  bool scheme_ok = false;

  // mu guards the client pointer (the network thread destroys it at the end of a connection,
  // other threads publish through it), the mid -> token maps and the session flags.
  std::mutex mu;
  std::condition_variable cv;
  mosquitto* client = nullptr;
  bool connect_requested = false, in_session = false;
  bool stopping = false;              // the link is being destroyed: the network thread ends
  bool abort_session = false;         // end the current connection now, whatever its state
  bool disconnect_requested = false;  // a clean disconnect: its end is not a lost connection
  std::unordered_map<int, uint64_t> tokens;   // mid -> caller's token
  std::unordered_map<int, Wait*> waits;       // mid -> a caller blocked in ...AndWait
  std::thread io;

  std::atomic<bool> is_connected{false};
  std::atomic<int> receive_maximum{65535};
  // Per connection, on the network thread only.
  bool connack_seen = false;
  int connack_refusal = 0;
  std::chrono::steady_clock::time_point last_heard;  // the last packet that reached a callback
  // Since when publishes wait for their PUBACK without a break (guarded by mu).
  std::chrono::steady_clock::time_point pending_since;

  // The diagnosis thread, started at the first failure the library cannot explain.
  std::mutex diag_mu;
  std::condition_variable diag_cv;
  std::optional<std::string> diag_request;  // the library's words for the failure to look into
  std::atomic<bool> diag_stop{false};       // set with diag_mu held
  std::thread diag_thread;

  // --- libmosquitto callbacks (network thread) ---

  static Impl& Of(void* obj) {
    auto& d = *static_cast<Impl*>(obj);
    d.last_heard = std::chrono::steady_clock::now();
    return d;
  }

  static void OnConnect(mosquitto*, void* obj, int rc, int, const mosquitto_property* props) {
    Impl& d = Of(obj);
    if (rc != 0) {
      d.connack_refusal = rc;
      return;  // the broker closes the connection; the loop ends and reports it
    }
    d.connack_seen = true;
    // The broker's Receive Maximum caps how many QoS 1 publishes it accepts unacknowledged
    // (Mosquitto: max_inflight_messages, 20 by default); more would only queue in the library.
    uint16_t receive_max = 65535;
    mosquitto_property_read_int16(props, MQTT_PROP_RECEIVE_MAXIMUM, &receive_max, false);
    d.receive_maximum = receive_max;
    d.is_connected = true;
    if (d.handlers.on_connected) d.handlers.on_connected();
  }

  static void OnPublish(mosquitto*, void* obj, int mid, int reason, const mosquitto_property*) {
    Impl& d = Of(obj);
    std::optional<uint64_t> token;
    {
      std::lock_guard lk(d.mu);
      if (auto w = d.waits.find(mid); w != d.waits.end()) {
        w->second->done = true;
        w->second->ok = reason < 0x80;
        w->second->code = reason;
        d.waits.erase(w);
        d.cv.notify_all();
        return;
      }
      if (auto t = d.tokens.find(mid); t != d.tokens.end()) {
        token = t->second;
        d.tokens.erase(t);
      }
    }
    if (!token || !d.handlers.on_published) return;
    // A reason code >= 0x80 in the PUBACK is the broker refusing this message.
    if (reason >= 0x80)
      d.handlers.on_published(*token, false, true,
                              "broker refused the message (reason code " + std::to_string(reason) + ")");
    else
      d.handlers.on_published(*token, true, false, {});
  }

  static void OnSubscribe(mosquitto*, void* obj, int mid, int count, const int* granted,
                          const mosquitto_property*) {
    Impl& d = Of(obj);
    std::lock_guard lk(d.mu);
    auto w = d.waits.find(mid);
    if (w == d.waits.end()) return;
    w->second->done = true;
    w->second->code = count > 0 ? granted[0] : 0x80;
    w->second->ok = w->second->code < 0x80;
    d.waits.erase(w);
    d.cv.notify_all();
  }

  static void OnMessage(mosquitto*, void* obj, const mosquitto_message* m,
                        const mosquitto_property* props) {
    Impl& d = Of(obj);
    if (!d.handlers.on_message) return;
    InboundMessage in;
    in.topic = m->topic ? m->topic : "";
    if (m->payloadlen > 0) in.payload.assign(static_cast<const char*>(m->payload), m->payloadlen);
    in.retain = m->retain;
    char* response_topic = nullptr;
    if (mosquitto_property_read_string(props, MQTT_PROP_RESPONSE_TOPIC, &response_topic, false)) {
      in.response_topic = response_topic;
      std::free(response_topic);
    }
    void* correlation = nullptr;
    uint16_t correlation_len = 0;
    if (mosquitto_property_read_binary(props, MQTT_PROP_CORRELATION_DATA, &correlation,
                                       &correlation_len, false)) {
      in.correlation_data.assign(static_cast<const char*>(correlation), correlation_len);
      std::free(correlation);
    }
    d.handlers.on_message(std::move(in));
  }

  static void OnDisconnect(mosquitto*, void* obj, int rc, const mosquitto_property*) {
    Impl& d = Of(obj);
    bool was_connected = d.is_connected.exchange(false);
    if (!was_connected) return;  // a failed connect: the loop reports it
    bool clean;
    {
      std::lock_guard lk(d.mu);
      clean = d.disconnect_requested;
    }
    if (clean || !d.handlers.on_connection_lost) return;
    // rc: a reason code the broker sent with its DISCONNECT, else a library error.
    if (rc >= 0x80)
      d.handlers.on_connection_lost("broker disconnected us (reason code " + std::to_string(rc) + ")");
    else
      d.handlers.on_connection_lost(rc == MOSQ_ERR_KEEPALIVE ? "no answer from the broker within the keep-alive"
                                                             : "connection lost: " + MosquittoError(rc));
  }

  // --- the network thread ---

  mosquitto* NewClient() {
    bool persistent = opts.session_expiry_s > 0;
    mosquitto* m = mosquitto_new(opts.client_id.empty() ? nullptr : opts.client_id.c_str(),
                                 !persistent, this);
    if (!m) return nullptr;
    mosquitto_int_option(m, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
    mosquitto_int_option(m, MOSQ_OPT_SEND_MAXIMUM, std::clamp(opts.max_inflight, 1, 65535));
    // Small messages in a window of acknowledgements: no Nagle delay on our side.
    mosquitto_int_option(m, MOSQ_OPT_TCP_NODELAY, 1);
    mosquitto_threaded_set(m, true);  // publishes from other threads queue and wake this one
    mosquitto_connect_v5_callback_set(m, &Impl::OnConnect);
    mosquitto_publish_v5_callback_set(m, &Impl::OnPublish);
    mosquitto_subscribe_v5_callback_set(m, &Impl::OnSubscribe);
    mosquitto_message_v5_callback_set(m, &Impl::OnMessage);
    mosquitto_disconnect_v5_callback_set(m, &Impl::OnDisconnect);
    if (!opts.username.empty() || !opts.password.empty())
      mosquitto_username_pw_set(m, opts.username.empty() ? nullptr : opts.username.c_str(),
                                opts.password.empty() ? nullptr : opts.password.c_str());
    if (!opts.will_topic.empty())
      mosquitto_will_set_v5(m, opts.will_topic.c_str(), static_cast<int>(opts.will_payload.size()),
                            opts.will_payload.data(), 1, true, nullptr);
    if (opts.tls.enabled) {
      const auto& t = opts.tls;
      // Without a CA file, the system's trust store. With verification on, the library checks
      // the chain and that the certificate names the URL's host (DNS or IP address).
      const char* ca = t.ca_file.empty() ? nullptr : t.ca_file.c_str();
      const char* capath = ca ? nullptr : "/etc/ssl/certs";
      const char* cert = t.cert_file.empty() ? nullptr : t.cert_file.c_str();
      const char* key = t.key_file.empty() ? cert : t.key_file.c_str();
      mosquitto_tls_set(m, ca, capath, cert, cert ? key : nullptr, nullptr);
      if (!t.verify_peer) {
        mosquitto_tls_opts_set(m, 0 /* SSL_VERIFY_NONE */, nullptr, nullptr);
        mosquitto_tls_insecure_set(m, true);
      }
    }
    return m;
  }

  // Starts the connect. A persistent session needs its expiry in the CONNECT, which libmosquitto
  // 2.0 sends only from its blocking connect (the TCP connect blocks this thread; such links go
  // to the box's own broker). Everything else connects without blocking.
  int StartConnect(mosquitto* m) {
    int keepalive = std::clamp(opts.keepalive_s, 5, 65535);
    if (opts.session_expiry_s <= 0)
      return mosquitto_connect_bind_async(m, address.host.c_str(), port, keepalive, nullptr);
    Properties props;
    mosquitto_property_add_int32(&props.list, MQTT_PROP_SESSION_EXPIRY_INTERVAL,
                                 static_cast<uint32_t>(std::min<int64_t>(opts.session_expiry_s, UINT32_MAX)));
    return mosquitto_connect_bind_v5(m, address.host.c_str(), port, keepalive, nullptr, props.list);
  }

  void RunConnection() {
    mosquitto* m = NewClient();
    if (!m) {
      Report("cannot create an MQTT client (out of memory)", false);
      return;
    }
    {
      std::lock_guard lk(mu);
      client = m;
    }
    connack_seen = false;
    connack_refusal = 0;
    last_heard = std::chrono::steady_clock::now();
    receive_maximum = 65535;
    int rc = StartConnect(m);
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(std::max(1, opts.connect_timeout_s));
    bool timed_out = false;
    while (rc == MOSQ_ERR_SUCCESS) {
      {
        std::lock_guard lk(mu);
        if (abort_session) break;
      }
      rc = mosquitto_loop(m, kLoopSliceMs, 1);
      if (!connack_seen && connack_refusal == 0 && std::chrono::steady_clock::now() > deadline) {
        timed_out = true;
        break;
      }
      if (rc == MOSQ_ERR_SUCCESS && connack_seen && GaveUpOnSilence()) break;
    }
    int err = errno;
    bool was_connected = is_connected.exchange(false);
    {
      std::lock_guard lk(mu);
      client = nullptr;
      tokens.clear();
      for (auto& [mid, w] : waits) w->done = true;  // ok stays false
      waits.clear();
      cv.notify_all();
    }
    mosquitto_destroy(m);
    if (connack_seen) {
      // Lost after the CONNACK: OnDisconnect reported it unless the loop ended otherwise.
      bool clean;
      {
        std::lock_guard lk(mu);
        clean = disconnect_requested || stopping;
      }
      if (was_connected && !clean && handlers.on_connection_lost)
        handlers.on_connection_lost("connection lost: " + (rc == MOSQ_ERR_ERRNO ? std::string(std::strerror(err)) : MosquittoError(rc)));
      return;
    }
    {
      std::lock_guard lk(mu);
      if (stopping) return;
    }
    if (connack_refusal != 0) {
      // 0x86 bad user name or password, 0x87 not authorized, 0x8A banned: retrying at once
      // cannot help.
      int code = connack_refusal;
      Report(ConnackRefusalText(code), code == 0x86 || code == 0x87 || code == 0x8A);
    } else if (timed_out) {
      Report("timed out: no answer within " + std::to_string(opts.connect_timeout_s) + " s", false);
    } else {
      // The library says "Connection refused", "A TLS error occurred." alike for causes an
      // operator must tell apart: look from outside (connect_diagnosis.h), off this thread.
      std::string said = rc == MOSQ_ERR_ERRNO ? std::string(std::strerror(err)) : MosquittoError(rc);
      std::lock_guard lk(diag_mu);
      if (diag_stop) return;
      diag_request = std::move(said);
      if (!diag_thread.joinable()) diag_thread = std::thread([this] { DiagnosisLoop(); });
      diag_cv.notify_all();
    }
  }

  // True when publishes have waited ack_timeout_s with nothing heard from the broker: the link
  // is reported lost here, and the caller ends the connection.
  bool GaveUpOnSilence() {
    if (opts.ack_timeout_s <= 0 || !is_connected) return false;
    auto now = std::chrono::steady_clock::now();
    auto limit = std::chrono::seconds(opts.ack_timeout_s);
    size_t waiting;
    {
      std::lock_guard lk(mu);
      waiting = tokens.size() + waits.size();
      if (waiting == 0 || now - pending_since < limit) return false;
    }
    if (now - last_heard < limit) return false;
    if (!is_connected.exchange(false)) return false;
    if (handlers.on_connection_lost)
      handlers.on_connection_lost("no answer from the broker for " + std::to_string(opts.ack_timeout_s) + " s with " +
                                  std::to_string(waiting) + " publishes waiting for their PUBACK (ack_timeout_s)");
    return true;
  }

  void IoLoop() {
    NameThisThread("mqtt-io");
    std::unique_lock lk(mu);
    for (;;) {
      cv.wait(lk, [&] { return stopping || connect_requested; });
      if (stopping) return;
      connect_requested = false;
      disconnect_requested = false;
      abort_session = false;
      in_session = true;
      lk.unlock();
      RunConnection();
      lk.lock();
      in_session = false;
      cv.notify_all();
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
      std::string said = std::move(*diag_request);
      diag_request.reset();
      lk.unlock();
      std::string why = DiagnoseConnectFailure(
          address, opts.tls, std::chrono::seconds(std::clamp(opts.connect_timeout_s, 1, 3)),
          [this] { return diag_stop.load(); }, said);
      lk.lock();
      if (diag_stop) return;
      Report(why, false);
    }
  }

  // Queues a publish; `wait` (may be null) is settled by its PUBACK, else `token` is reported.
  Status Publish(const std::string& topic, const std::string& payload, bool retain,
                 const mosquitto_property* props, uint64_t token, Wait* wait) {
    if (!is_connected) return Unavailable("not connected");
    std::lock_guard lk(mu);
    if (!client) return Unavailable("not connected");
    int mid = 0;
    int rc = mosquitto_publish_v5(client, &mid, topic.c_str(), static_cast<int>(payload.size()),
                                  payload.data(), 1, retain, props);
    if (rc != MOSQ_ERR_SUCCESS) return Unavailable("publish to " + PrintableLine(topic, 80) + ": " + MosquittoError(rc));
    if (tokens.empty() && waits.empty()) pending_since = std::chrono::steady_clock::now();
    if (wait)
      waits[mid] = wait;
    else
      tokens[mid] = token;
    return Status::Ok();
  }

  Status WaitFor(Wait& w, std::chrono::milliseconds timeout) {
    std::unique_lock lk(mu);
    if (!cv.wait_for(lk, timeout, [&] { return w.done; })) {
      // Forget the waiter: a late acknowledgement must not touch a stack object.
      for (auto it = waits.begin(); it != waits.end(); ++it)
        if (it->second == &w) {
          waits.erase(it);
          break;
        }
      return Status(Code::kDeadline, "no acknowledgement in time");
    }
    return Status::Ok();
  }
};

MqttLink::MqttLink(LinkOptions options, LinkHandlers handlers) : impl_(std::make_unique<Impl>()) {
  InitLibraryOnce();
  auto& d = *impl_;
  d.opts = std::move(options);
  d.handlers = std::move(handlers);
  // ssl:// and mqtts:// mean TLS even when the caller gave no TLS settings (system CAs).
  d.scheme_ok = HasScheme(d.opts.url, "tcp://") || HasScheme(d.opts.url, "mqtt://") ||
                HasScheme(d.opts.url, "ssl://") || HasScheme(d.opts.url, "mqtts://");
  if (HasScheme(d.opts.url, "ssl://") || HasScheme(d.opts.url, "mqtts://")) d.opts.tls.enabled = true;
  d.address = ParseBrokerAddress(d.opts.url, d.opts.tls.enabled);
  d.port = std::atoi(d.address.port.c_str());
  d.io = std::thread([&d] { d.IoLoop(); });
}

MqttLink::~MqttLink() {
  Disconnect(std::chrono::milliseconds(1000));
  {
    std::lock_guard lk(impl_->diag_mu);
    impl_->diag_stop = true;
  }
  impl_->diag_cv.notify_all();
  if (impl_->diag_thread.joinable()) impl_->diag_thread.join();
  {
    std::lock_guard lk(impl_->mu);
    impl_->stopping = true;
    impl_->abort_session = true;
  }
  impl_->cv.notify_all();
  if (impl_->io.joinable()) impl_->io.join();
}

Status MqttLink::Connect() {
  if (!impl_->scheme_ok || impl_->port <= 0 || impl_->port > 65535 || impl_->address.host.empty())
    return Invalid("connect to " + impl_->opts.url + ": not a broker URL (tcp://host:port, ssl://host:port)");
  {
    std::lock_guard lk(impl_->mu);
    impl_->connect_requested = true;
  }
  impl_->cv.notify_all();
  return Status::Ok();
}

Status MqttLink::Publish(const std::string& topic, const std::string& payload, bool retain,
                         uint64_t token) {
  return impl_->Publish(topic, payload, retain, nullptr, token, nullptr);
}

// Responses and requests: QoS 1, not retained, with MQTT 5 request/response properties.
Status MqttLink::PublishWithProperties(const std::string& topic, const std::string& payload,
                                       const std::string& response_topic, const std::string& correlation_data,
                                       uint64_t token) {
  Properties props;
  if (!response_topic.empty())
    mosquitto_property_add_string(&props.list, MQTT_PROP_RESPONSE_TOPIC, response_topic.c_str());
  if (!correlation_data.empty())
    mosquitto_property_add_binary(&props.list, MQTT_PROP_CORRELATION_DATA, correlation_data.data(),
                                  static_cast<uint16_t>(std::min<size_t>(correlation_data.size(), 65535)));
  return impl_->Publish(topic, payload, false, props.list, token, nullptr);
}

Status MqttLink::PublishResponse(const std::string& topic, const std::string& payload,
                                 const std::string& correlation_data, uint64_t token) {
  return PublishWithProperties(topic, payload, {}, correlation_data, token);
}

Status MqttLink::PublishAndWait(const std::string& topic, const std::string& payload, bool retain,
                                std::chrono::milliseconds timeout) {
  Impl::Wait w;
  if (Status st = impl_->Publish(topic, payload, retain, nullptr, 0, &w); !st.ok()) return st;
  if (Status st = impl_->WaitFor(w, timeout); !st.ok()) return Status(Code::kDeadline, "no PUBACK in time");
  if (!w.ok)
    return w.code >= 0x80 ? Status(Code::kFailedPrecondition, "broker refused the message (reason code " +
                                                                  std::to_string(w.code) + ")")
                          : Unavailable("connection lost before the PUBACK");
  return Status::Ok();
}

Status MqttLink::PublishRequest(const std::string& topic, const std::string& payload,
                                const std::string& response_topic, const std::string& correlation_data,
                                uint64_t token) {
  return PublishWithProperties(topic, payload, response_topic, correlation_data, token);
}

Status MqttLink::SubscribeAndWait(const std::string& filter, std::chrono::milliseconds timeout) {
  Impl::Wait w;
  {
    std::lock_guard lk(impl_->mu);
    if (!impl_->client || !impl_->is_connected) return Unavailable("subscribe: not connected");
    int mid = 0;
    int rc = mosquitto_subscribe_v5(impl_->client, &mid, filter.c_str(), 1, 0, nullptr);
    if (rc != MOSQ_ERR_SUCCESS) return Unavailable("subscribe to " + filter + ": " + MosquittoError(rc));
    if (impl_->tokens.empty() && impl_->waits.empty()) impl_->pending_since = std::chrono::steady_clock::now();
    impl_->waits[mid] = &w;
  }
  if (!impl_->WaitFor(w, timeout).ok()) return Status(Code::kDeadline, "no SUBACK for " + filter + " in time");
  if (!w.ok && w.code < 0x80) return Unavailable("subscribe to " + filter + ": connection lost");
  if (!w.ok)
    return Status(Code::kFailedPrecondition, "the broker refused the subscription to " + filter +
                                                 " (reason code " + std::to_string(w.code) + ")");
  return Status::Ok();
}

Status MqttLink::Subscribe(const std::string& filter, bool relay) {
  std::lock_guard lk(impl_->mu);
  if (!impl_->client || !impl_->is_connected) return Unavailable("subscribe: not connected");
  int options = relay ? (MQTT_SUB_OPT_RETAIN_AS_PUBLISHED | MQTT_SUB_OPT_SEND_RETAIN_NEW) : 0;
  int rc = mosquitto_subscribe_v5(impl_->client, nullptr, filter.c_str(), 1, options, nullptr);
  if (rc != MOSQ_ERR_SUCCESS) return Unavailable("subscribe to " + filter + ": " + MosquittoError(rc));
  return Status::Ok();
}

void MqttLink::Disconnect(std::chrono::milliseconds timeout) {
  auto& d = *impl_;
  std::unique_lock lk(d.mu);
  d.connect_requested = false;
  if (!d.in_session) return;
  d.disconnect_requested = true;
  if (d.client) mosquitto_disconnect_v5(d.client, 0, nullptr);  // no will
  if (!d.cv.wait_for(lk, timeout, [&] { return !d.in_session; })) {
    // The DISCONNECT did not get out in time (broker gone silent): end the connection anyway.
    d.abort_session = true;
    d.cv.wait_for(lk, timeout + std::chrono::milliseconds(2 * kLoopSliceMs), [&] { return !d.in_session; });
  }
  d.is_connected = false;
}

bool MqttLink::connected() const { return impl_->is_connected; }
int MqttLink::receive_maximum() const { return impl_->receive_maximum; }
const std::string& MqttLink::url() const { return impl_->opts.url; }

}  // namespace sanigate::mqtt
