#include "mqtt/mqtt_client.h"

#include <algorithm>
#include <random>

namespace sanigate::mqtt {

MqttClient::MqttClient(ClientOptions options, ClientHandlers handlers)
    : opt_(std::move(options)), handlers_(std::move(handlers)) {
  LinkHandlers h;
  h.on_connected = [this] {
    std::lock_guard lk(mu_);
    attempt_done_ = true;
    cv_.notify_all();
  };
  h.on_connect_failed = [this](const std::string& why, bool) {
    std::lock_guard lk(mu_);
    attempt_done_ = true;
    last_error_ = why;
    cv_.notify_all();
  };
  h.on_connection_lost = [this](const std::string& why) {
    std::lock_guard lk(mu_);
    lost_ = true;
    last_error_ = why;
    cv_.notify_all();
  };
  h.on_published = [this](uint64_t token, bool, bool refused, const std::string& why) {
    if (unsettled_ > 0) --unsettled_;
    std::string topic;
    {
      std::lock_guard lk(inflight_mu_);
      if (auto it = inflight_topics_.find(token); it != inflight_topics_.end()) {
        topic = std::move(it->second);
        inflight_topics_.erase(it);
      }
    }
    if (refused && handlers_.on_refused) handlers_.on_refused(topic, why);
  };
  h.on_message = [this](InboundMessage m) {
    if (handlers_.on_message) handlers_.on_message(std::move(m));
  };
  link_ = std::make_unique<MqttLink>(opt_.link, std::move(h));
}

MqttClient::~MqttClient() { Stop(); }

void MqttClient::Start() {
  if (thread_.joinable()) return;
  thread_ = std::thread([this] { Loop(); });
}

void MqttClient::Stop(std::chrono::milliseconds timeout) {
  {
    std::lock_guard lk(mu_);
    if (stop_ && !thread_.joinable()) return;
    stop_ = true;
    cv_.notify_all();
  }
  if (thread_.joinable()) thread_.join();
  link_->Disconnect(timeout);
}

void MqttClient::Loop() {
  std::mt19937 rng(std::random_device{}());
  auto backoff = opt_.reconnect_min;
  std::unique_lock lk(mu_);
  while (!stop_) {
    attempt_done_ = false;
    lost_ = false;
    lk.unlock();
    Status st = link_->Connect();
    lk.lock();
    if (!st.ok()) {
      attempt_done_ = true;
      last_error_ = st.message();
    }
    cv_.wait(lk, [&] { return stop_ || attempt_done_; });
    if (stop_) break;
    if (link_->connected()) {
      backoff = opt_.reconnect_min;
      unsettled_ = 0;  // whatever the old connection left unsettled is gone with it
      {
        std::lock_guard lk2(inflight_mu_);
        inflight_topics_.clear();
      }
      auto filters = opt_.filters;
      lk.unlock();
      for (const auto& f : filters) (void)link_->Subscribe(f, opt_.relay);
      if (handlers_.on_state) handlers_.on_state(true, {});
      lk.lock();
      cv_.wait(lk, [&] { return stop_ || lost_; });
      if (stop_) break;
      std::string why = last_error_;
      lk.unlock();
      if (handlers_.on_state) handlers_.on_state(false, why);
      lk.lock();
      continue;  // reconnect at once after a loss; backoff applies to failed attempts
    }
    // Full jitter keeps many clients from reconnecting in lockstep after a broker restart.
    std::uniform_int_distribution<int64_t> jitter(backoff.count() / 2, backoff.count());
    cv_.wait_for(lk, std::chrono::milliseconds(jitter(rng)), [&] { return stop_; });
    backoff = std::min(backoff * 2, opt_.reconnect_max);
  }
}

bool MqttClient::WaitConnected(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  std::unique_lock lk(mu_);
  while (!link_->connected()) {
    if (cv_.wait_until(lk, std::min(deadline, std::chrono::steady_clock::now() + std::chrono::milliseconds(20))) ==
            std::cv_status::timeout &&
        std::chrono::steady_clock::now() >= deadline)
      return link_->connected();
  }
  return true;
}

bool MqttClient::connected() const { return link_->connected(); }

std::string MqttClient::last_error() const {
  std::lock_guard lk(mu_);
  return last_error_;
}

Status MqttClient::Publish(const std::string& topic, const std::string& payload, bool retain) {
  uint64_t token;
  {
    std::lock_guard lk(inflight_mu_);
    token = ++next_token_;
    inflight_topics_[token] = topic;
  }
  Status st = link_->Publish(topic, payload, retain, token);
  if (st.ok()) {
    ++unsettled_;
  } else {
    std::lock_guard lk(inflight_mu_);
    inflight_topics_.erase(token);
  }
  return st;
}

Status MqttClient::PublishAndWait(const std::string& topic, const std::string& payload, bool retain,
                                  std::chrono::milliseconds timeout) {
  return link_->PublishAndWait(topic, payload, retain, timeout);
}

Status MqttClient::PublishResponse(const std::string& topic, const std::string& payload,
                                   const std::string& correlation_data) {
  Status st = link_->PublishResponse(topic, payload, correlation_data, 0);
  if (st.ok()) ++unsettled_;
  return st;
}

Status MqttClient::PublishRequest(const std::string& topic, const std::string& payload,
                                  const std::string& response_topic, const std::string& correlation_data) {
  Status st = link_->PublishRequest(topic, payload, response_topic, correlation_data, 0);
  if (st.ok()) ++unsettled_;
  return st;
}

Status MqttClient::SubscribeAndWait(const std::string& filter, std::chrono::milliseconds timeout) {
  {
    std::lock_guard lk(mu_);
    if (std::find(opt_.filters.begin(), opt_.filters.end(), filter) == opt_.filters.end())
      opt_.filters.push_back(filter);
  }
  return link_->SubscribeAndWait(filter, timeout);
}

}  // namespace sanigate::mqtt
