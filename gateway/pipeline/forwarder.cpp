#include "pipeline/forwarder.h"
#include "core/thread_name.h"

#include <spdlog/spdlog.h>

#include "core/clock.h"

namespace sanigate::pipeline {

using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

// Token 0 marks the gateway status publish: outbox seqs start far above it.
constexpr uint64_t kStatusToken = 0;

Forwarder::Forwarder(store::Outbox& outbox, mqtt::LinkOptions link, ForwarderOptions options)
    : outbox_(outbox), opt_(std::move(options)) {
  link.will_topic = opt_.status_topic;
  link.will_payload = opt_.status_payload ? opt_.status_payload(false) : R"({"online":false})";
  link.max_inflight = static_cast<int>(opt_.window) + 8;  // room for status publishes
  mqtt::LinkHandlers h;
  h.on_connected = [this] { Post({Ev::kConnected, 0, {}}); };
  h.on_connect_failed = [this](const std::string& why, bool refused) {
    Post({Ev::kConnectFailed, refused ? 1u : 0u, why});
  };
  h.on_connection_lost = [this](const std::string& why) { Post({Ev::kLost, 0, why}); };
  h.on_published = [this](uint64_t token, bool ok, bool refused, const std::string& why) {
    Post({ok ? Ev::kAcked : refused ? Ev::kRefused : Ev::kFailed, token, why});
  };
  h.on_message = opt_.on_message;
  link_ = std::make_unique<mqtt::MqttLink>(std::move(link), std::move(h));
  outbox_.SetCommitListener([this] { Post({Ev::kWake, 0, {}}); }, opt_.destination);
}

Forwarder::~Forwarder() {
  {
    std::lock_guard lk(mu_);
    stop_now_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  outbox_.SetCommitListener({}, opt_.destination);
  link_.reset();  // before our mutex goes: the link may still call back while disconnecting
}

void Forwarder::Start() {
  next_connect_ = Clock::now();
  thread_ = std::thread([this] {
    NameThisThread(opt_.destination == 0 ? std::string("forwarder") : "fwd-" + opt_.name.substr(opt_.name.rfind(' ') + 1));
    Loop();
  });
}

void Forwarder::Post(Event e) {
  bool was_empty;
  {
    std::lock_guard lk(mu_);
    // Coalesce wake-ups: one pending is enough.
    if (e.kind == Ev::kWake && !events_.empty() && events_.back().kind == Ev::kWake) return;
    was_empty = events_.empty();
    events_.push_back(std::move(e));
  }
  // The loop drains every queued event at once, so only the first one needs to wake it.
  if (was_empty) cv_.notify_one();
}

void Forwarder::PublishStatusSoon() { Post({Ev::kWake, 1, "status"}); }

Status Forwarder::PublishResponse(const std::string& topic, const std::string& payload,
                                  const std::string& correlation_data) {
  // Token 1 is never an outbox seq, so its PUBACK is ignored by the settle logic.
  return link_->PublishResponse(topic, payload, correlation_data, 1);
}

void Forwarder::ScheduleReconnect(bool after_failure) {
  if (!after_failure) {
    // The link was up until now: try again at once (a broker restart is usually over by the
    // time the socket notices); the backoff starts with the first failed attempt.
    backoff_ = milliseconds(0);
    next_connect_ = Clock::now();
    return;
  } else {
    backoff_ = backoff_.count() == 0 ? opt_.reconnect_min
                                     : std::min(backoff_ * 2, opt_.reconnect_max);
  }
  // Full jitter in [backoff/2, backoff] so a fleet of gateways does not reconnect in lockstep.
  std::uniform_int_distribution<int64_t> jitter(backoff_.count() / 2, backoff_.count());
  next_connect_ = Clock::now() + milliseconds(jitter(rng_));
}

void Forwarder::PublishStatus(bool online) {
  next_status_ = Clock::now() + opt_.status_interval;
  status_due_ = false;
  if (!opt_.status_payload || opt_.status_topic.empty()) return;
  (void)link_->Publish(opt_.status_topic, opt_.status_payload(online), true, kStatusToken);
}

void Forwarder::Handle(Event& e) {
  switch (e.kind) {
    case Ev::kConnected: {
      state_ = State::kConnected;
      {
        std::lock_guard lk(mu_);
        stats_.last_connected_ms = NowMs();
      }
      window_ = std::min<size_t>(opt_.window, static_cast<size_t>(std::max(1, link_->receive_maximum())));
      if (window_ < opt_.window)
        spdlog::info("{}: broker accepts {} unacknowledged messages; window {} -> {}", opt_.name,
                     link_->receive_maximum(), opt_.window, window_);
      backoff_ = milliseconds(0);
      ReleaseInFlight();
      spdlog::info("{}: connected to {}", opt_.name, link_->url());
      for (const auto& filter : opt_.subscriptions)
        if (Status st = link_->Subscribe(filter); !st.ok())
          spdlog::error("{}: cannot subscribe to {}: {}", opt_.name, filter, st.message());
      std::lock_guard lk(mu_);
      stats_.connected = true;
      stats_.last_error.clear();
      status_due_ = true;
      break;
    }
    case Ev::kConnectFailed: {
      state_ = State::kDisconnected;
      // Refused credentials are retried slowly (at the backoff's ceiling), not hammered.
      if (e.token == 1) backoff_ = opt_.reconnect_max;
      ScheduleReconnect(true);
      std::lock_guard lk(mu_);
      // Log the first failure and then once per backoff ceiling, not every attempt.
      if (stats_.connect_failures == 0 || backoff_ == opt_.reconnect_max)
        spdlog::warn("{}: {}; retrying in up to {} ms", opt_.name, e.why, backoff_.count());
      stats_.connect_failures++;
      stats_.last_error = e.why;
      break;
    }
    case Ev::kLost: {
      if (state_ != State::kConnected) break;
      state_ = State::kDisconnected;
      spdlog::warn("{}: link lost: {}; what was not acknowledged will be resent", opt_.name, e.why);
      ReleaseInFlight();
      ScheduleReconnect(false);
      std::lock_guard lk(mu_);
      stats_.connected = false;
      stats_.reconnects++;
      stats_.last_error = e.why;
      break;
    }
    case Ev::kAcked:
      if (e.token != kStatusToken && inflight_.erase(e.token)) {
        size_t n = 1;
        if (auto b = batches_.find(e.token); b != batches_.end()) {
          for (uint64_t seq : b->second) outbox_.Settle(seq, opt_.destination);
          n = b->second.size();
          batches_.erase(b);
        } else {
          outbox_.Settle(e.token, opt_.destination);
        }
        std::lock_guard lk(mu_);
        stats_.acked += n;
      }
      break;
    case Ev::kRefused:
      if (e.token != kStatusToken && inflight_.erase(e.token)) {
        spdlog::error("{}: record {} moved to the dead-letter table: {}", opt_.name, e.token, e.why);
        if (auto b = batches_.find(e.token); b != batches_.end()) {
          for (uint64_t seq : b->second) outbox_.Poison(seq, e.why, opt_.destination);
          batches_.erase(b);
        } else {
          outbox_.Poison(e.token, e.why, opt_.destination);
        }
        std::lock_guard lk(mu_);
        stats_.refused++;
      }
      break;
    case Ev::kFailed:
      // Not refused by the broker: the link is going down. Resend everything in flight.
      if (e.token != kStatusToken && inflight_.count(e.token)) {
        ReleaseInFlight();
      }
      break;
    case Ev::kWake:
      if (e.token == 1) status_due_ = true;
      break;
  }
}

// Token buckets for the rate caps. Takes one record of `bytes` when both buckets have room;
// otherwise notes when they will and returns false.
bool Forwarder::Admit(size_t bytes) {
  if (opt_.max_msgs_per_s <= 0 && opt_.max_bytes_per_s <= 0) return true;
  auto now = Clock::now();
  double elapsed = std::chrono::duration<double>(now - tokens_at_).count();
  tokens_at_ = now;
  if (opt_.max_msgs_per_s > 0)
    msg_tokens_ = std::min(std::max(1.0, opt_.max_msgs_per_s), msg_tokens_ + elapsed * opt_.max_msgs_per_s);
  // A record larger than a second's budget still goes, once the bucket is full.
  double byte_cap = std::max(opt_.max_bytes_per_s, static_cast<double>(bytes));
  if (opt_.max_bytes_per_s > 0) byte_tokens_ = std::min(byte_cap, byte_tokens_ + elapsed * opt_.max_bytes_per_s);
  double wait_s = 0;
  if (opt_.max_msgs_per_s > 0 && msg_tokens_ < 1) wait_s = (1 - msg_tokens_) / opt_.max_msgs_per_s;
  if (opt_.max_bytes_per_s > 0 && byte_tokens_ < static_cast<double>(bytes))
    wait_s = std::max(wait_s, (static_cast<double>(bytes) - byte_tokens_) / opt_.max_bytes_per_s);
  if (wait_s > 0) {
    throttled_until_ = now + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(wait_s));
    return false;
  }
  if (opt_.max_msgs_per_s > 0) msg_tokens_ -= 1;
  if (opt_.max_bytes_per_s > 0) byte_tokens_ -= static_cast<double>(bytes);
  return true;
}

void Forwarder::ReleaseInFlight() {
  outbox_.ReleaseAll(opt_.destination);
  inflight_.clear();
  batches_.clear();
  held_.clear();
}

// Publishes what is held, in order, while the window has room: a batch of consecutive
// non-retained records when batching, else one record per publish. What does not fit stays held
// for the next PUBACK. False when a rate cap says wait (the rest stays held) or the link refused
// locally (everything is leased again).
bool Forwarder::SendHeld() {
  bool batching = opt_.batch_records > 1 && opt_.build_batch;
  bool capped = opt_.max_msgs_per_s > 0 || opt_.max_bytes_per_s > 0;
  auto size_of = [](const store::Envelope& e) { return e.msg.topic.size() + e.msg.payload.size(); };
  size_t i = 0;
  while (i < held_.size() && inflight_.size() < window_) {
    size_t j = i + 1, records_bytes = size_of(held_[i]);
    if (batching && !held_[i].msg.retain) {
      while (j < held_.size() && j - i < opt_.batch_records && !held_[j].msg.retain &&
             records_bytes + size_of(held_[j]) <= opt_.batch_bytes)
        records_bytes += size_of(held_[j++]);
    }
    const store::Envelope& head = held_[i];
    std::string batch_payload;
    if (j - i > 1) batch_payload = opt_.build_batch(std::span<const store::Envelope>(held_.data() + i, j - i));
    const std::string topic = j - i > 1 ? opt_.batch_topic : opt_.map_topic ? opt_.map_topic(head.msg.topic) : head.msg.topic;
    const std::string& payload = j - i > 1 ? batch_payload : head.msg.payload;
    size_t wire = topic.size() + payload.size();
    if (capped && !Admit(wire)) {
      held_.erase(held_.begin(), held_.begin() + static_cast<long>(i));
      return false;
    }
    uint64_t token = head.seq;
    inflight_.insert(token);
    if (j - i > 1) {
      auto& members = batches_[token];
      for (size_t k = i; k < j; ++k) members.push_back(held_[k].seq);
    }
    Status st = link_->Publish(topic, payload, j - i > 1 ? false : head.msg.retain, token);
    if (!st.ok()) {
      spdlog::warn("{}: publish refused locally: {}", opt_.name, st.message());
      ReleaseInFlight();  // the lost event follows
      return false;
    }
    {
      std::lock_guard lk(mu_);
      stats_.published += j - i;
      stats_.bytes_published += wire;
    }
    i = j;
  }
  held_.erase(held_.begin(), held_.begin() + static_cast<long>(i));
  return true;
}

void Forwarder::Fill() {
  // Each PUBACK frees a slot that is filled at once from what is held: a broker that holds its
  // PUBACKs back (Nagle) until our next segment ACKs them gets that segment now, not after our
  // delayed ACK (~40 ms). Leases come in chunks (at least a quarter window), so one lease query
  // still serves several PUBACKs.
  size_t chunk = std::max<size_t>(1, window_ / 4);
  bool capped = opt_.max_msgs_per_s > 0 || opt_.max_bytes_per_s > 0;
  bool batching = opt_.batch_records > 1 && opt_.build_batch;
  if (capped && Clock::now() < throttled_until_) return;
  while (state_ == State::kConnected && inflight_.size() < window_) {
    if (held_.empty()) {
      // Under a cap without batching, lease one at a time: a record waiting for tokens is held
      // here, not in flight. With batching, a batch's worth.
      size_t want = batching ? opt_.batch_records : capped ? 1 : std::max(chunk, window_ - inflight_.size());
      auto leased = outbox_.Lease(want, opt_.destination);
      if (!leased.ok()) {
        if (!outbox_error_logged_) spdlog::error("outbox: lease failed: {}", leased.status().ToString());
        outbox_error_logged_ = true;
        return;
      }
      outbox_error_logged_ = false;
      if (leased->empty()) return;
      spdlog::trace("forwarder: leased {}", leased->size());
      held_ = std::move(*leased);
    }
    if (!SendHeld()) return;
  }
}

void Forwarder::Loop() {
  std::unique_lock lk(mu_);
  while (true) {
    if (stop_now_) break;
    auto now = Clock::now();
    auto wake = Clock::time_point::max();
    if (state_ == State::kDisconnected) wake = std::min(wake, next_connect_);
    if (state_ == State::kConnected) wake = std::min(wake, next_status_);
    if (state_ == State::kConnected && throttled_until_ > now) wake = std::min(wake, throttled_until_);
    if (events_.empty() && !status_due_ && now < wake)
      cv_.wait_until(lk, std::min(wake, now + std::chrono::seconds(1)));
    std::deque<Event> evs;
    evs.swap(events_);
    lk.unlock();

    for (auto& e : evs) Handle(e);
    now = Clock::now();
    if (state_ == State::kDisconnected && now >= next_connect_) {
      state_ = State::kConnecting;
      if (Status st = link_->Connect(); !st.ok()) {
        Event e{Ev::kConnectFailed, 0, st.message()};
        Handle(e);
      }
    }
    if (state_ == State::kConnected) {
      if (status_due_ || now >= next_status_) PublishStatus(true);
      Fill();
    }
    lk.lock();
    stats_.inflight = inflight_.size();
  }
}

void Forwarder::Stop(milliseconds drain) {
  // Let the loop publish what is committed until the outbox is empty or the time is up.
  auto deadline = Clock::now() + drain;
  while (Clock::now() < deadline) {
    auto s = outbox_.Stats();
    bool connected;
    {
      std::lock_guard lk(mu_);
      connected = stats_.connected;
    }
    uint64_t owed = opt_.destination < s.destinations.size() ? s.destinations[opt_.destination].pending_rows : 0;
    if (!connected || (owed == 0 && s.queued == 0)) break;
    std::this_thread::sleep_for(milliseconds(20));
  }
  {
    std::lock_guard lk(mu_);
    stop_now_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  if (link_->connected()) {
    // A clean disconnect sends no will, so say goodbye ourselves and wait for its PUBACK.
    if (opt_.status_payload && !opt_.status_topic.empty())
      (void)link_->PublishAndWait(opt_.status_topic, opt_.status_payload(false), true, milliseconds(1000));
    link_->Disconnect(milliseconds(100));
  }
}

ForwarderStats Forwarder::Stats() const {
  std::lock_guard lk(mu_);
  ForwarderStats s = stats_;
  return s;
}

}  // namespace sanigate::pipeline
