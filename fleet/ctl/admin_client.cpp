#include "ctl/admin_client.h"

#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <random>

#include "ctl/answers.h"
#include "mqtt/topics.h"

namespace sanigate::ctl {
namespace {

using Clock = std::chrono::steady_clock;
using json = nlohmann::json;

// host and port of tcp://, mqtt://, ssl://, mqtts:// URLs ("[::1]:1883" accepted).
bool SplitUrl(const std::string& url, std::string& host, std::string& port) {
  auto scheme_end = url.find("://");
  if (scheme_end == std::string::npos) return false;
  std::string scheme = url.substr(0, scheme_end);
  std::string rest = url.substr(scheme_end + 3);
  if (auto slash = rest.find('/'); slash != std::string::npos) rest.resize(slash);
  port = (scheme == "ssl" || scheme == "mqtts") ? "8883" : "1883";
  if (!rest.empty() && rest.front() == '[') {
    auto close = rest.find(']');
    if (close == std::string::npos) return false;
    host = rest.substr(1, close - 1);
    if (close + 1 < rest.size() && rest[close + 1] == ':') port = rest.substr(close + 2);
  } else if (auto colon = rest.rfind(':'); colon != std::string::npos) {
    host = rest.substr(0, colon);
    port = rest.substr(colon + 1);
  } else {
    host = rest;
  }
  return !host.empty();
}

// Why the broker cannot be reached, in words, when the TCP connection itself fails
// ("connection refused", "host not found"); empty when TCP gets through (then the MQTT layer,
// e.g. credentials or TLS, is the problem).
std::string TcpProblem(const std::string& url, std::chrono::milliseconds timeout) {
  std::string host, port;
  if (!SplitUrl(url, host, port)) return "malformed broker URL";
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &res); rc != 0)
    return "cannot resolve " + host + ": " + gai_strerror(rc);
  std::string problem = "no answer";
  for (addrinfo* a = res; a != nullptr; a = a->ai_next) {
    int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    int rc = ::connect(fd, a->ai_addr, a->ai_addrlen);
    int err = rc == 0 ? 0 : errno;
    if (err == EINPROGRESS) {
      pollfd p{fd, POLLOUT, 0};
      if (::poll(&p, 1, static_cast<int>(timeout.count())) == 1) {
        socklen_t len = sizeof err;
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
      } else {
        err = ETIMEDOUT;
      }
    }
    ::close(fd);
    if (err == 0) {
      problem.clear();
      break;
    }
    problem = std::strerror(err);
    if (!problem.empty()) problem[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(problem[0])));
  }
  freeaddrinfo(res);
  return problem;
}

// The link's connect failure text, made readable: MQTT 5 CONNACK reason codes in words.
std::string MqttProblem(const std::string& last_error) {
  if (auto code = ReasonCodeIn(last_error)) return MqttReasonName(*code);
  if (last_error.empty()) return "no connection within the timeout";
  return last_error;
}

// How long to wait for a retained fleet status when Sync cannot tell whether it is in: the
// broker sends retained messages right after the SUBACK, so this is ample on any link that
// answers a request within the timeout.
constexpr auto kRetainedSettle = std::chrono::milliseconds(250);

int64_t NowEpochMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

}  // namespace

std::string RandomHex(size_t bytes) {
  static const char* kDigits = "0123456789abcdef";
  std::random_device rd;
  std::string out;
  for (size_t i = 0; i < bytes; ++i) {
    auto b = static_cast<unsigned>(rd()) & 0xFF;
    out += kDigits[b >> 4];
    out += kDigits[b & 0xF];
  }
  return out;
}

AdminClient::AdminClient(AdminOptions options) : opt_(std::move(options)) {}

AdminClient::~AdminClient() { Close(); }

Result<std::unique_ptr<AdminClient>> AdminClient::Connect(AdminOptions options) {
  std::unique_ptr<AdminClient> c(new AdminClient(std::move(options)));
  const auto& m = c->opt_.mqtt;
  // The reply topic is per run: a unique suffix keeps two sanictl runs (even with one client
  // id from a shared config) from seeing each other's answers.
  c->reply_topic_ = mqtt::topics::AdminReply(c->opt_.prefix, c->opt_.site.empty() ? "-" : c->opt_.site,
                                             "sanictl-" + std::to_string(::getpid()) + "-" + RandomHex(4));

  mqtt::ClientOptions co;
  co.link.url = m.url;
  co.link.client_id = m.client_id;
  co.link.username = m.username;
  co.link.password = m.password;
  co.link.keepalive_s = static_cast<int>(m.keepalive_s);
  // Never let the link's own connect attempt outlive our deadline by much.
  auto timeout_s = static_cast<int>((c->opt_.timeout.count() + 999) / 1000);
  co.link.connect_timeout_s = std::max(1, std::min(static_cast<int>(m.connect_timeout_s), timeout_s));
  co.link.tls = {m.tls.enabled, m.tls.ca_file, m.tls.cert_file, m.tls.key_file, m.tls.verify_peer};
  co.reconnect_min = std::chrono::milliseconds(std::min<int64_t>(m.reconnect_min_ms, 200));
  co.reconnect_max = std::chrono::milliseconds(std::min<int64_t>(m.reconnect_max_ms, 1000));
  mqtt::ClientHandlers h;
  AdminClient* raw = c.get();
  h.on_message = [raw](mqtt::InboundMessage in) { raw->OnMessage(std::move(in)); };
  h.on_refused = [raw](const std::string& topic, const std::string& why) { raw->OnRefused(topic, why); };
  try {
    c->client_ = std::make_unique<mqtt::MqttClient>(std::move(co), std::move(h));
  } catch (const std::exception& e) {
    return Unavailable(e.what());
  }
  c->client_->Start();
  // The client retries a refused CONNECT with backoff; a refusal is final for sanictl, so stop
  // waiting as soon as the broker has given one.
  auto deadline = Clock::now() + c->opt_.timeout;
  std::optional<int> refused;
  while (!c->client_->WaitConnected(std::min(std::chrono::milliseconds(50),
                                             std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now())))) {
    refused = ReasonCodeIn(c->client_->last_error());
    if (refused || Clock::now() >= deadline) break;
  }
  if (!c->client_->connected()) {
    std::string last = c->client_->last_error();
    c->Close();
    if (refused && IsAccessRefusal(*refused)) {
      std::string who = m.username.empty() ? "without a user name" : "of user " + m.username;
      std::string hint = *refused == 0x87 ? (m.username.empty() ? " (give [mqtt] username and password in sanictl's config)"
                                                                : " (a wrong password, or the user may not connect)")
                                          : "";
      return Status(Code::kFailedPrecondition, "the broker at " + m.url + " refused the connection " + who + ": " +
                                                   MqttReasonName(*refused) + hint);
    }
    std::string why = TcpProblem(m.url, std::min(c->opt_.timeout, std::chrono::milliseconds(1000)));
    if (why.empty()) why = MqttProblem(last);
    return Unavailable("cannot reach the broker at " + m.url + ": " + why);
  }
  if (Status st = c->Subscribe(c->reply_topic_); !st.ok()) {
    c->Close();
    return st.code() == Code::kFailedPrecondition || st.code() == Code::kInvalid
               ? st
               : Unavailable("cannot subscribe to the reply topic " + c->reply_topic_ + ": " + st.message());
  }
  return c;
}

std::string AdminClient::Who() const {
  return opt_.mqtt.username.empty() ? "anonymous clients" : "user " + opt_.mqtt.username;
}

void AdminClient::OnRefused(const std::string& topic, const std::string& why) {
  int code = ReasonCodeIn(why).value_or(0x80);
  std::lock_guard lk(mu_);
  if (!topic.empty()) {
    // Only the Sync probe goes out with Publish (it has a topic); requests have none.
    if (topic == reply_topic_) probe_refused_ = true;
  } else {
    for (auto& [correlation, p] : pending_)
      if (!p.answered && p.refused == 0) p.refused = code;
  }
  cv_.notify_all();
}

void AdminClient::Close() {
  if (client_) client_->Stop(std::chrono::milliseconds(500));
}

void AdminClient::OnMessage(mqtt::InboundMessage m) {
  std::lock_guard lk(mu_);
  if (m.topic == reply_topic_) {
    if (!m.correlation_data.empty()) {
      if (auto p = pending_.find(m.correlation_data); p != pending_.end()) p->second.answered = true;
      replies_[m.correlation_data].push_back(std::move(m.payload));
    } else if (!probe_.empty() && m.payload == probe_) {
      probe_back_ = true;
    }
  } else if (!fleet_topic_.empty() && m.topic == fleet_topic_) {
    fleet_seen_ = true;
    fleet_status_ = m.payload.empty() ? json(nullptr) : json::parse(m.payload, nullptr, false);
    if (fleet_status_.is_discarded()) fleet_status_ = nullptr;
  } else {
    live_.push_back({std::move(m.topic), std::move(m.payload)});
  }
  cv_.notify_all();
}

std::string AdminClient::FleetOfflineLocked() const {
  return FleetSaysOffline(fleet_status_) ? FleetOfflineText(fleet_status_, fleet_topic_, NowEpochMs()) : std::string();
}

json AdminClient::FleetStatus() {
  std::lock_guard lk(mu_);
  return fleet_status_;
}

std::string AdminClient::FleetOffline() {
  std::lock_guard lk(mu_);
  return FleetOfflineLocked();
}

Result<std::string> AdminClient::Send(const std::string& topic, const std::string& payload, bool to_fleet) {
  std::string correlation = RandomHex(16);
  {
    std::lock_guard lk(mu_);
    if (to_fleet) {
      if (std::string offline = FleetOfflineLocked(); !offline.empty()) return Unavailable(offline);
    }
    pending_[correlation] = Pending{topic, to_fleet};
  }
  if (Status st = client_->PublishRequest(topic, payload, reply_topic_, correlation); !st.ok()) {
    std::lock_guard lk(mu_);
    pending_.erase(correlation);
    return Unavailable("cannot publish to " + topic + ": " + st.message());
  }
  return correlation;
}

Result<json> AdminClient::Await(const std::string& correlation, Clock::time_point deadline) {
  std::unique_lock lk(mu_);
  const Pending* p = nullptr;
  if (auto it = pending_.find(correlation); it != pending_.end()) p = &it->second;
  auto has_answer = [&] {
    auto it = replies_.find(correlation);
    return it != replies_.end() && !it->second.empty();
  };
  auto ends_early = [&] { return p && (p->refused != 0 || (p->to_fleet && FleetSaysOffline(fleet_status_))); };
  if (!cv_.wait_until(lk, deadline, [&] { return has_answer() || ends_early(); }))
    return Status(Code::kDeadline, "no answer in time");
  if (!has_answer()) {
    if (p->refused != 0) {
      if (p->refused == 0x87)
        return Status(Code::kFailedPrecondition, "the broker refused the request on " + p->topic + " for " + Who() +
                                                     ": not authorized (check its ACL)");
      return Invalid("the broker refused the request on " + p->topic + ": " + MqttReasonName(p->refused));
    }
    return Unavailable(FleetOfflineLocked());
  }
  auto& queue = replies_[correlation];
  std::string payload = std::move(queue.front());
  queue.pop_front();
  lk.unlock();
  json answer = json::parse(payload, nullptr, false);
  if (!answer.is_object()) return Invalid("the answer is not a JSON object: " + payload.substr(0, 200));
  return answer;
}

Result<json> AdminClient::Request(const std::string& topic, const json& args, std::chrono::milliseconds timeout,
                                  bool to_fleet) {
  auto deadline = Clock::now() + timeout;
  auto sent = Send(topic, args.dump(), to_fleet);
  if (!sent.ok()) return sent.status();
  return Await(sent.value(), deadline);
}

Status AdminClient::Subscribe(const std::string& filter) {
  Status st = client_->SubscribeAndWait(filter, opt_.timeout);
  if (st.ok()) return st;
  if (st.code() == Code::kFailedPrecondition) {  // MqttLink: a SUBACK reason code >= 0x80
    int code = ReasonCodeIn(st.message()).value_or(0x80);
    if (IsAccessRefusal(code))
      return Status(Code::kFailedPrecondition, "the broker refused the subscription to " + filter + " for " + Who() + ": " +
                                                   MqttReasonName(code) + " (check its ACL)");
    return Invalid("the broker refused the subscription to " + filter + ": " + MqttReasonName(code));
  }
  return {st.code(), "cannot subscribe to " + filter + ": " + st.message()};
}

Result<bool> AdminClient::Sync(Clock::time_point deadline) {
  {
    std::lock_guard lk(mu_);
    if (synced_) return true;
    probe_ = json{{"sanictl_probe", RandomHex(8)}}.dump();  // JSON, like everything on reply topics
    probe_back_ = probe_refused_ = false;
  }
  auto started = Clock::now();
  if (Status st = client_->Publish(reply_topic_, probe_, false); !st.ok())
    return Unavailable("cannot publish to " + reply_topic_ + ": " + st.message());
  std::unique_lock lk(mu_);
  cv_.wait_until(lk, deadline, [&] { return probe_back_ || probe_refused_; });
  if (probe_back_) return synced_ = true;
  if (probe_refused_) return false;
  auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started).count();
  return Status(Code::kFailedPrecondition,
                "the broker does not deliver sanictl's reply topic " + reply_topic_ + " for " + Who() +
                    ": not authorized to read it (check its ACL); not even sanictl's own test message came back within " +
                    std::to_string(waited) + " ms, so no answer could");
}

Status AdminClient::FollowFleetStatus(const std::string& topic, Clock::time_point deadline) {
  {
    std::lock_guard lk(mu_);
    if (fleet_topic_ == topic) return Status::Ok();
    fleet_topic_ = topic;
    fleet_status_ = nullptr;
    fleet_seen_ = false;
  }
  if (Status st = Subscribe(topic); !st.ok()) {
    std::lock_guard lk(mu_);
    fleet_topic_.clear();
    // A user who may not read sanifleet's status still may call it: go on without.
    return st.code() == Code::kFailedPrecondition ? Status::Ok() : st;
  }
  auto synced = Sync(deadline);
  if (!synced.ok()) return synced.status();
  if (!*synced) {
    std::unique_lock lk(mu_);
    cv_.wait_until(lk, std::min(deadline, Clock::now() + kRetainedSettle), [&] { return fleet_seen_; });
  }
  return Status::Ok();
}

Result<std::vector<Message>> AdminClient::CollectRetained(const std::string& filter, std::chrono::milliseconds quiet,
                                                          std::chrono::milliseconds max_wait) {
  auto end = Clock::now() + max_wait;
  if (Status st = Subscribe(filter); !st.ok()) return st;
  std::map<std::string, std::string> last;  // by topic: the newest wins
  while (true) {
    auto wait_until = std::min(end, Clock::now() + quiet);
    auto m = Next(wait_until);
    if (!m) break;  // quiet for `quiet`, or out of time
    if (m->payload.empty()) last.erase(m->topic);
    else last[m->topic] = std::move(m->payload);
    if (Clock::now() >= end) break;
  }
  std::vector<Message> out;
  for (auto& [topic, payload] : last) out.push_back({topic, std::move(payload)});
  return out;
}

std::optional<Message> AdminClient::Next(Clock::time_point deadline) {
  std::unique_lock lk(mu_);
  if (!cv_.wait_until(lk, deadline, [&] { return !live_.empty(); })) return std::nullopt;
  Message m = std::move(live_.front());
  live_.pop_front();
  return m;
}

}  // namespace sanigate::ctl
