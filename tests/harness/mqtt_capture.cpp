#include "harness/mqtt_capture.h"

#include <mqtt/async_client.h>

#include <algorithm>
#include <fstream>
#include <stdexcept>
#include <utility>

namespace sanigate::test {
namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

// Long enough to outlive any test, short enough that a leaked session does not linger for days.
constexpr int kPersistentSessionExpirySeconds = 3600;

bool IsTlsUrl(const std::string& url) {
  return url.rfind("ssl://", 0) == 0 || url.rfind("mqtts://", 0) == 0;
}

std::vector<std::string> SplitLevels(const std::string& s) {
  std::vector<std::string> levels;
  std::size_t start = 0;
  for (;;) {
    const std::size_t slash = s.find('/', start);
    if (slash == std::string::npos) {
      levels.push_back(s.substr(start));
      return levels;
    }
    levels.push_back(s.substr(start, slash - start));
    start = slash + 1;
  }
}

}  // namespace

MqttCapture::MqttCapture(std::string url, std::string client_id, bool clean_session)
    : url_(std::move(url)), client_id_(std::move(client_id)), clean_session_(clean_session) {
  // No client-side persistence: a test capture must not leave files behind or replay old state.
  client_ = std::make_unique<mqtt::async_client>(url_, client_id_,
                                                 mqtt::create_options(MQTTVERSION_5), nullptr);
  client_->set_message_callback([this](mqtt::const_message_ptr msg) {
    OnMessage(msg->get_topic(), msg->get_payload_str(), msg->is_retained());
  });
  client_->set_connected_handler([this](const std::string&) { OnConnected(); });
  client_->set_connection_lost_handler([this](const std::string& cause) { OnConnectionLost(cause); });
}

MqttCapture::~MqttCapture() {
  Disconnect(2s);
  client_.reset();
}

void MqttCapture::SetCredentials(std::string username, std::string password) {
  username_ = std::move(username);
  password_ = std::move(password);
}

void MqttCapture::SetTrustStore(std::string ca_file) { ca_file_ = std::move(ca_file); }

void MqttCapture::SetClientCertificate(std::string cert_file, std::string key_file) {
  cert_file_ = std::move(cert_file);
  key_file_ = std::move(key_file);
}

void MqttCapture::Connect(std::chrono::milliseconds timeout) {
  mqtt::connect_options opts;
  opts.set_mqtt_version(MQTTVERSION_5);
  // Paho C rejects v5 connects with the v3 clean-session flag set; v5 uses clean start instead.
  opts.set_clean_session(false);
  opts.set_clean_start(clean_session_);
  opts.set_properties(mqtt::properties{
      {mqtt::property::SESSION_EXPIRY_INTERVAL,
       clean_session_ ? 0 : kPersistentSessionExpirySeconds}});
  opts.set_keep_alive_interval(std::chrono::seconds(10));
  opts.set_connect_timeout(std::max<std::chrono::milliseconds>(
      std::chrono::duration_cast<std::chrono::seconds>(timeout), 1s));
  // Paho C counts retry intervals in whole seconds, so 1 s is the fastest reconnect cadence.
  opts.set_automatic_reconnect(1s, 1s);
  if (!username_.empty()) {
    opts.set_user_name(username_);
    opts.set_password(password_);
  }
  if (IsTlsUrl(url_)) {
    mqtt::ssl_options ssl;
    ssl.set_trust_store(ca_file_);
    ssl.set_enable_server_cert_auth(true);
    ssl.set_verify(true);  // also check that the certificate names 127.0.0.1
    if (!cert_file_.empty()) {
      ssl.set_key_store(cert_file_);
      ssl.set_private_key(key_file_);
    }
    // No ssl error handler on purpose: Paho C++ 1.2 keeps a pointer to the ssl_options it was
    // given, which dangles once the options are copied into the client (crash seen in OpenSSL's
    // error callback). Paho's connect failure message is enough to diagnose TLS problems.
    opts.set_ssl(std::move(ssl));
  }

  const auto deadline = Clock::now() + timeout;
  std::size_t connects_before = 0;
  {
    std::lock_guard lock(mu_);
    connects_before = connect_count_;
  }
  std::string failure;
  try {
    mqtt::token_ptr tok = client_->connect(opts);
    if (tok->wait_for(timeout)) {
      const bool present = tok->get_connect_response().is_session_present();
      std::unique_lock lock(mu_);
      session_present_ = present;
      // Paho runs the connected handler after completing the token. Waiting for it means it has
      // already taken its copy of the subscriptions before the caller can Subscribe() again, so
      // a new subscription is never sent twice (which would replay retained messages twice).
      if (!cv_.wait_until(lock, deadline, [&] { return connect_count_ > connects_before; })) {
        connected_ = true;
      }
      return;
    }
    failure = "timed out after " + std::to_string(timeout.count()) + " ms";
  } catch (const mqtt::exception& e) {
    failure = e.what();
  }
  // Stop Paho from retrying a connection the caller already considers failed.
  try {
    client_->disconnect(0)->wait_for(1s);
  } catch (const mqtt::exception&) {
  }
  throw std::runtime_error("MqttCapture(" + client_id_ + "): connect to " + url_ + " failed: " +
                           failure + (last_error().empty() ? "" : " (" + last_error() + ")"));
}

void MqttCapture::Subscribe(std::string filter, int qos, std::chrono::milliseconds timeout) {
  {
    // Remember it first, so a reconnect racing with this call still renews it.
    std::lock_guard lock(mu_);
    auto it = std::find_if(subscriptions_.begin(), subscriptions_.end(),
                           [&](const Subscription& s) { return s.filter == filter; });
    if (it == subscriptions_.end()) {
      subscriptions_.push_back({filter, qos});
    } else {
      it->qos = qos;
    }
  }
  auto forget = [&] {
    std::lock_guard lock(mu_);
    std::erase_if(subscriptions_, [&](const Subscription& s) { return s.filter == filter; });
  };
  std::string failure;
  try {
    // Retain-as-published lets tests see whether the gateway itself set the retain flag.
    mqtt::token_ptr tok = client_->subscribe(
        filter, qos,
        mqtt::subscribe_options(false, true, mqtt::subscribe_options::SEND_RETAINED_ON_SUBSCRIBE));
    if (tok->wait_for(timeout)) {
      // A refused SUBACK may surface as a failure (wait_for throws) or as a success carrying a
      // reason code >= 0x80; both are handled. get_subscribe_response() is not used: in Paho C++
      // 1.2 it returned garbage reason codes for a single-topic v5 subscribe.
      const int rc = static_cast<int>(tok->get_reason_code());
      if (rc < 0x80) return;
      failure = "refused by broker, reason code " + std::to_string(rc);
    } else {
      failure = "no SUBACK within " + std::to_string(timeout.count()) + " ms";
    }
  } catch (const mqtt::exception& e) {
    failure = e.what();
  }
  forget();
  throw std::runtime_error("MqttCapture(" + client_id_ + "): subscribe to '" + filter +
                           "' failed: " + failure);
}

void MqttCapture::Publish(const std::string& topic, const std::string& payload,
                          const std::string& response_topic, std::chrono::milliseconds timeout) {
  auto msg = mqtt::make_message(topic, payload, 1, false);
  if (!response_topic.empty())
    msg->set_properties(mqtt::properties{{mqtt::property::RESPONSE_TOPIC, response_topic},
                                         {mqtt::property::CORRELATION_DATA, std::string("req-1")}});
  if (!client_->publish(msg)->wait_for(timeout))
    throw std::runtime_error("MqttCapture(" + client_id_ + "): publish to '" + topic + "' timed out");
}

void MqttCapture::Disconnect(std::chrono::milliseconds timeout) {
  try {
    // Also cancels automatic reconnect when the broker is currently down.
    client_->disconnect()->wait_for(timeout);
  } catch (const mqtt::exception&) {
    // Already disconnected; nothing to do.
  }
  std::lock_guard lock(mu_);
  connected_ = false;
  ++generation_;
  cv_.notify_all();
}

bool MqttCapture::IsConnected() const {
  std::lock_guard lock(mu_);
  return connected_;
}

bool MqttCapture::WaitConnected(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mu_);
  return cv_.wait_for(lock, timeout, [this] { return connected_; });
}

bool MqttCapture::session_present() const {
  std::lock_guard lock(mu_);
  return session_present_;
}

std::size_t MqttCapture::connect_count() const {
  std::lock_guard lock(mu_);
  return connect_count_;
}

std::string MqttCapture::last_error() const {
  std::lock_guard lock(mu_);
  return last_error_;
}

std::vector<Captured> MqttCapture::Messages() const {
  std::lock_guard lock(mu_);
  return messages_;
}

std::size_t MqttCapture::Count(const std::string& topic_suffix) const {
  std::lock_guard lock(mu_);
  return static_cast<std::size_t>(
      std::count_if(messages_.begin(), messages_.end(),
                    [&](const Captured& c) { return c.topic.ends_with(topic_suffix); }));
}

bool MqttCapture::WaitFor(const std::function<bool(const std::vector<Captured>&)>& pred,
                          std::chrono::milliseconds timeout) const {
  const auto deadline = Clock::now() + timeout;
  std::unique_lock lock(mu_);
  for (;;) {
    if (pred(messages_)) return true;
    const auto now = Clock::now();
    if (now >= deadline) return false;
    const std::uint64_t seen = generation_;
    // Bounded wake-ups keep predicates that depend on wall time (e.g. "no message for 2 s")
    // working even when nothing arrives.
    cv_.wait_until(lock, std::min<Clock::time_point>(now + 100ms, deadline),
                   [&] { return generation_ != seen; });
  }
}

bool MqttCapture::WaitForCount(const std::string& topic_filter, std::size_t n,
                               std::chrono::milliseconds timeout) const {
  return WaitFor(
      [&](const std::vector<Captured>& msgs) {
        return static_cast<std::size_t>(std::count_if(msgs.begin(), msgs.end(), [&](const Captured& c) {
                 return TopicMatches(topic_filter, c.topic);
               })) >= n;
      },
      timeout);
}

void MqttCapture::Clear() {
  std::lock_guard lock(mu_);
  messages_.clear();
  ++generation_;
}

void MqttCapture::OnMessage(std::string topic, std::string payload, bool retained) {
  Captured c{std::move(topic), std::move(payload), retained, Clock::now()};
  {
    std::lock_guard lock(mu_);
    messages_.push_back(std::move(c));
    ++generation_;
  }
  cv_.notify_all();
}

void MqttCapture::OnConnected() {
  std::vector<Subscription> subs;
  {
    std::lock_guard lock(mu_);
    connected_ = true;
    ++connect_count_;
    ++generation_;
    subs = subscriptions_;
  }
  cv_.notify_all();
  // Runs on Paho's callback thread, so fire-and-forget: waiting for SUBACK here would deadlock.
  // SEND_RETAINED_ON_NEW avoids a duplicate retained replay when the broker kept the session.
  for (const auto& s : subs) {
    try {
      client_->subscribe(
          s.filter, s.qos,
          mqtt::subscribe_options(false, true, mqtt::subscribe_options::SEND_RETAINED_ON_NEW));
    } catch (const mqtt::exception& e) {
      std::lock_guard lock(mu_);
      last_error_ = "re-subscribe to '" + s.filter + "' failed: " + e.what();
    }
  }
}

void MqttCapture::OnConnectionLost(const std::string& cause) {
  {
    std::lock_guard lock(mu_);
    connected_ = false;
    ++generation_;
    last_error_ = "connection lost: " + (cause.empty() ? std::string("(no cause)") : cause);
  }
  cv_.notify_all();
}

bool TopicMatches(const std::string& filter, const std::string& topic) {
  if (filter.empty() || topic.empty()) return false;
  if (topic.front() == '$' && (filter.front() == '+' || filter.front() == '#')) return false;
  const std::vector<std::string> f = SplitLevels(filter);
  const std::vector<std::string> t = SplitLevels(topic);
  for (std::size_t i = 0; i < f.size(); ++i) {
    if (f[i] == "#") return i + 1 == f.size();  // '#' is only valid as the last level
    if (i >= t.size()) return false;
    if (f[i] != "+" && f[i] != t[i]) return false;
  }
  return f.size() == t.size();
}

void WriteMosquittoSubFormat(const std::vector<Captured>& messages, const std::string& path) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  for (const auto& m : messages) out << m.topic << ' ' << m.payload << '\n';
  out.close();
  if (!out) throw std::runtime_error("WriteMosquittoSubFormat: cannot write " + path);
}

}  // namespace sanigate::test
