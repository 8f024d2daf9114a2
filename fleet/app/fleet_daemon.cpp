#include "app/fleet_daemon.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <filesystem>

#include "app/json_fields.h"
#include "app/model_message.h"
#include "core/clock.h"
#include "core/untrusted.h"
#include "health/memory_json.h"
#include "mqtt/topics.h"
#include "service/prometheus_text.h"

namespace sanigate::fleet {
namespace {

using json = nlohmann::json;
namespace topics = mqtt::topics;

constexpr auto kTick = std::chrono::milliseconds(200);
// Limits on what arrives over MQTT (anyone with publish rights may send anything).
constexpr size_t kMaxFirmwarePutBytes = 2 * 1024 * 1024;  // base64 of a 1 MiB chunk and its JSON
constexpr size_t kMaxGatewayStatusBytes = 32 * 1024 * 1024;  // lists every device of a big site
using Clock = std::chrono::steady_clock;

int Severity(HealthState s) {
  switch (s) {
    case HealthState::kOffline: return 4;
    case HealthState::kCritical: return 3;
    case HealthState::kDegraded: return 2;
    case HealthState::kOk: return 1;
    case HealthState::kUnknown: return 0;
  }
  return 0;
}

std::string Codes(const HealthVerdict& v) {
  std::string s = HealthStateName(v.state);
  for (const auto& r : v.reasons) s += "|" + r.code + ":" + HealthStateName(r.level);
  return s;
}

}  // namespace

FleetDaemon::FleetDaemon(FleetConfig config) : cfg_(std::move(config)), health_(cfg_.health) {}

FleetDaemon::~FleetDaemon() { Stop(); }

Result<std::unique_ptr<FleetDaemon>> FleetDaemon::Create(FleetConfig config) {
  std::unique_ptr<FleetDaemon> d(new FleetDaemon(std::move(config)));
  std::error_code ec;
  std::filesystem::create_directories(d->cfg_.fleet.data_dir, ec);
  if (ec) return Unavailable("cannot create data_dir " + d->cfg_.fleet.data_dir + ": " + ec.message());
  auto store = RegistryStore::Open(d->cfg_.RegistryPath());
  if (!store.ok()) return store.status();
  d->store_ = std::move(*store);
  if (Status st = d->store_->Load(d->registry_); !st.ok()) return st;
  d->started_ms_ = NowMs();
  // Known devices resume from what was stored: a device that stayed silent across the restart
  // is judged from its stored last_seen, not from the restart; its verdict, active conditions
  // (overflow, alarms, low battery, ...) and trackers resume from its health memory.
  int64_t last_heard = 0;
  size_t remembered = 0;
  std::vector<std::pair<std::string, std::string>> with_memory;  // site, device
  for (const auto& [key, e] : d->registry_.devices()) {
    if (auto memory = DecodeHealthMemory(e.health)) {
      d->health_.Restore(key, e.kind, e.profile, e.last_seen_ms, e.expected_interval_ms, d->started_ms_, *memory);
      ++remembered;
    } else {
      d->health_.Restore(key, e.kind, e.profile, e.last_seen_ms, e.expected_interval_ms, d->started_ms_);
    }
    if (!e.health.empty()) with_memory.emplace_back(e.site, e.device);
    last_heard = std::max(last_heard, e.last_seen_ms);
  }
  // The text is used once; from now on the evaluator is the memory (flushes ask it).
  for (const auto& [site, device] : with_memory) d->registry_.Device(site, device, 0).health.clear();
  // The previous run heard the fleet until about its newest last_seen: silence from then until
  // sanifleet is connected again (loading a big heat map may take a while) is judged only after
  // a grace of each device's interval from that moment (its messages may still be queued).
  d->link_down_ms_ = last_heard > 0 ? last_heard : d->started_ms_;
  if (remembered < d->registry_.devices().size())
    spdlog::info("health: {} of {} devices resume without a saved verdict (new, or stored by an older sanifleet)",
                 d->registry_.devices().size() - remembered, d->registry_.devices().size());
  spdlog::info("registry: {} devices and {} gateways loaded from {}", d->registry_.devices().size(),
               d->registry_.gateways().size(), d->cfg_.RegistryPath());
  const auto& f = d->cfg_.fleet;
  FleetDaemon* self = d.get();
  HeatmapSettings hs;
  hs.map = d->cfg_.heatmap;
  hs.topic_prefix = f.topic_prefix;
  hs.site = f.site;
  hs.sites = f.sites;
  hs.data_dir = f.data_dir;
  d->heatmap_ = std::make_unique<HeatmapService>(
      std::move(hs), [self](const std::string& t, const std::string& p, bool retain) { self->Send(t, p, retain); },
      [] { return NowMs(); });
  d->heatmap_->LoadSaved();

  mqtt::ClientOptions o;
  auto& l = o.link;
  l.url = d->cfg_.mqtt.url;
  l.client_id = d->cfg_.mqtt.client_id;
  l.username = d->cfg_.mqtt.username;
  l.password = d->cfg_.mqtt.password;
  l.keepalive_s = static_cast<int>(d->cfg_.mqtt.keepalive_s);
  l.connect_timeout_s = static_cast<int>(d->cfg_.mqtt.connect_timeout_s);
  l.ack_timeout_s = static_cast<int>(d->cfg_.mqtt.ack_timeout_s);
  l.max_inflight = static_cast<int>(d->cfg_.mqtt.inflight_window);
  l.session_expiry_s = d->cfg_.fleet.session_expiry_s;  // the broker queues for us while we are away
  const auto& t = d->cfg_.mqtt.tls;
  l.tls = {t.enabled, t.ca_file, t.cert_file, t.key_file, t.verify_peer};
  l.will_topic = topics::FleetStatus(f.topic_prefix, f.site);
  l.will_payload = d->StatusPayload(false, 0);
  for (const auto& site : f.sites) {
    for (const char* leaf : {"telemetry", "event", "status"})
      o.filters.push_back(topics::Device(f.topic_prefix, site, "+", leaf));
    o.filters.push_back(topics::GatewayStatus(f.topic_prefix, site, "+"));
  }
  o.filters.push_back(topics::FleetAdmin(f.topic_prefix, f.site, "+"));
  // Rollouts: the gateways' chunk requests and job reports, and the answers to install requests.
  d->reply_topic_ = f.topic_prefix + "/" + f.site + "/admin/reply/" + d->cfg_.mqtt.client_id;
  o.filters.push_back(f.topic_prefix + "/" + f.site + "/fleet/firmware/get");
  o.filters.push_back(d->reply_topic_);
  for (const auto& site : f.sites) o.filters.push_back(f.topic_prefix + "/" + site + "/gateway/+/firmware/+");
  o.reconnect_min = std::chrono::milliseconds(d->cfg_.mqtt.reconnect_min_ms);
  o.reconnect_max = std::chrono::milliseconds(d->cfg_.mqtt.reconnect_max_ms);
  mqtt::ClientHandlers h;
  h.on_message = [self](mqtt::InboundMessage m) { self->Enqueue(std::move(m)); };
  h.on_refused = [self](const std::string& topic, const std::string& why) {
    // The broker's ACL (or a quota) refused it: say so once per topic, count every one.
    self->refused_publishes_++;
    std::lock_guard lk(self->refused_mu_);
    if (self->refused_topics_.size() < 1000 && self->refused_topics_.insert(topic).second)
      spdlog::error("mqtt: the broker refused a publish to {}: {} (check its ACL for user {}); further refusals "
                    "of this topic are only counted", topic, why,
                    self->cfg_.mqtt.username.empty() ? "(none)" : self->cfg_.mqtt.username);
  };
  h.on_state = [self](bool connected, const std::string& why) {
    if (connected) {
      spdlog::info("mqtt: connected to {}", self->cfg_.mqtt.url);
      std::lock_guard lk(self->mu_);
      self->reconnected_ = true;
      self->cv_.notify_all();
    } else {
      spdlog::warn("mqtt: connection lost: {}", why);
      int64_t expected = 0;
      self->link_down_ms_.compare_exchange_strong(expected, NowMs());
    }
  };
  d->client_ = std::make_unique<mqtt::MqttClient>(std::move(o), std::move(h));
  RolloutSettings rs;
  rs.data_dir = f.data_dir;
  rs.topic_prefix = f.topic_prefix;
  rs.site = f.site;
  rs.trusted_key_files = d->cfg_.firmware.trusted_keys;
  rs.max_chunk_bytes = d->cfg_.firmware.max_chunk_kib * 1024;
  auto rollouts = RolloutService::Create(
      std::move(rs), [self](const std::string& t, const std::string& p, bool retain) { self->Send(t, p, retain); },
      [self](const std::string& t, const std::string& p, const std::string& correlation) {
        if (Status st = self->client_->PublishRequest(t, p, self->reply_topic_, correlation); !st.ok())
          spdlog::warn("rollout: install request to {} not sent: {} (the attempt times out and is retried)", t, st.ToString());
      });
  if (!rollouts.ok()) return rollouts.status();
  d->rollouts_ = std::move(*rollouts);
  d->AddAdminVerbs();
  return d;
}

void FleetDaemon::Start() {
  heatmap_->Start();
  if (!cfg_.metrics.listen.empty()) metrics_status_ = StatusPayload(true, NowMs());  // before the worker owns the state
  worker_ = std::thread([this] { WorkerLoop(); });
  client_->Start();
  if (!cfg_.metrics.listen.empty()) {
    service::MetricsHttpOptions o;
    o.host = cfg_.metrics.host;
    o.port = cfg_.metrics.port;
    o.allow_remote = cfg_.metrics.allow_remote;
    auto server = service::MetricsHttpServer::Start(o, [this] { return MetricsText(); });
    if (!server.ok()) {
      spdlog::error("{}; running without the metrics endpoint", server.status().message());
    } else {
      metrics_ = std::move(*server);
      spdlog::info("metrics: serving http://{}/metrics", cfg_.metrics.listen);
    }
  }
}

std::string FleetDaemon::MetricsText() const {
  std::string status;
  {
    std::lock_guard lk(metrics_mu_);
    status = metrics_status_;
  }
  return FleetMetricsText(status, client_->connected());
}

std::string FleetMetricsText(std::string_view status_json, bool mqtt_connected) {
  using service::MetricType;
  const auto kGauge = MetricType::kGauge, kCounter = MetricType::kCounter;
  json st = json::parse(status_json, nullptr, false);
  if (st.is_discarded() || !st.is_object()) st = json::object();
  auto num = [](const json& j, const char* key) -> double {
    auto it = j.find(key);
    return it != j.end() && it->is_number() ? it->get<double>() : 0.0;
  };
  service::PrometheusText t;
  t.Family("sanifleet_up", kGauge, "1 while sanifleet runs and answers scrapes");
  t.Sample("sanifleet_up", 1);
  t.Family("sanifleet_build_info", kGauge, "Always 1; the version in the version label");
  t.Sample("sanifleet_build_info", 1, {{"version", st.value("version", std::string())}});
  t.Family("sanifleet_start_time_seconds", kGauge, "When this sanifleet process started (Unix time)");
  t.Sample("sanifleet_start_time_seconds", num(st, "started") / 1000.0);
  t.Family("sanifleet_mqtt_connected", kGauge, "1 while the link to the broker is up");
  t.Sample("sanifleet_mqtt_connected", mqtt_connected ? 1 : 0);
  t.Family("sanifleet_registered_devices", kGauge, "Devices in the registry");
  t.Sample("sanifleet_registered_devices", num(st, "devices"));
  t.Family("sanifleet_registered_gateways", kGauge, "Gateways in the registry");
  t.Sample("sanifleet_registered_gateways", num(st, "gateways"));
  t.Family("sanifleet_devices", kGauge, "Devices with a health verdict, by state");
  const json by_state = st.contains("by_state") && st["by_state"].is_object() ? st["by_state"] : json::object();
  for (auto s : {HealthState::kOk, HealthState::kDegraded, HealthState::kCritical, HealthState::kOffline, HealthState::kUnknown})
    t.Sample("sanifleet_devices", num(by_state, HealthStateName(s)), {{"state", HealthStateName(s)}});
  t.Family("sanifleet_messages_total", kCounter, "Messages received from the followed sites");
  t.Sample("sanifleet_messages_total", num(st, "messages"));
  t.Family("sanifleet_malformed_messages_total", kCounter, "Messages ignored as malformed");
  t.Sample("sanifleet_malformed_messages_total", num(st, "malformed"));
  t.Family("sanifleet_refused_publishes_total", kCounter, "Publishes the broker refused (PUBACK reason code >= 0x80)");
  t.Sample("sanifleet_refused_publishes_total", num(st, "refused_publishes"));
  if (st.contains("heatmap") && st["heatmap"].is_object()) {
    const json& h = st["heatmap"];
    t.Family("sanifleet_heatmap_sites", kGauge, "Sites with a heat map");
    t.Sample("sanifleet_heatmap_sites", num(h, "sites"));
    t.Family("sanifleet_heatmap_cells", kGauge, "Cells held in the heat maps");
    t.Sample("sanifleet_heatmap_cells", num(h, "cells"));
    t.Family("sanifleet_heatmap_windows", kGauge, "Time windows held in the heat maps");
    t.Sample("sanifleet_heatmap_windows", num(h, "windows"));
    for (const char* c : {"points", "readings", "events", "late_dropped", "future_dropped", "late_merged", "late_untracked",
                          "duplicates", "unlocated"}) {
      std::string name = std::string("sanifleet_heatmap_") + c + "_total";
      t.Family(name, kCounter, std::string("Heat map input: ") + c);
      t.Sample(name, num(h, c));
    }
  }
  return t.Text();
}

void FleetDaemon::Stop() {
  if (metrics_) metrics_->Stop();
  metrics_.reset();
  if (!worker_.joinable()) return;
  {
    std::lock_guard lk(mu_);
    stop_ = true;
    cv_.notify_all();
  }
  worker_.join();
  heatmap_->StopSnapshots();  // the final save below replaces whatever it was still writing
  // Messages the worker had not taken yet were already acknowledged to the broker (PUBACK), so
  // the persistent session will not bring them again: handle them now (no races: the worker
  // has stopped).
  HandleQueued();
  // What is still waiting goes out within the drain time.
  auto deadline = Clock::now() + std::chrono::milliseconds(cfg_.fleet.shutdown_drain_ms);
  while ((!outgoing_.empty() || !health_due_.empty()) && client_->connected() && Clock::now() < deadline) {
    Drain(NowMs());
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  if (client_->connected())
    (void)client_->PublishAndWait(topics::FleetStatus(cfg_.fleet.topic_prefix, cfg_.fleet.site), StatusPayload(false, NowMs()),
                                  true, std::chrono::milliseconds(cfg_.fleet.shutdown_drain_ms));
  client_->Stop(std::chrono::milliseconds(cfg_.fleet.shutdown_drain_ms));
  // What arrived while draining is acknowledged too: into the registry and the heat map before
  // they are saved (its verdict changes are published after the next start).
  HandleQueued();
  FlushRegistry("final");
  heatmap_->Save();
}

void FleetDaemon::HandleQueued() {
  std::deque<mqtt::InboundMessage> batch;
  {
    std::lock_guard lk(mu_);
    batch.swap(queue_);
  }
  if (!batch.empty()) spdlog::debug("stop: {} messages received before the stop handled", batch.size());
  HandleBatch(batch, NowMs());
}

void FleetDaemon::HandleBatch(std::deque<mqtt::InboundMessage>& batch, int64_t now) {
  for (auto& m : batch) {
    // A field of an unexpected type (e.g. "ts":"yesterday") must cost one message, not the
    // daemon: nlohmann's value()/get() throw on a type mismatch.
    try {
      Handle(m, now);
    } catch (const nlohmann::json::exception& e) {
      ++malformed_;
      spdlog::debug("ignored a malformed message on {}: {}", QuotePrefix(m.topic, 96), e.what());
    }
  }
  batch.clear();
}

void FleetDaemon::Reload(FleetConfig config) {
  std::lock_guard lk(mu_);
  pending_reload_ = std::make_unique<FleetConfig>(std::move(config));
  cv_.notify_all();
}

void FleetDaemon::Enqueue(mqtt::InboundMessage m) {
  std::lock_guard lk(mu_);
  queue_.push_back(std::move(m));
  if (queue_.size() == 1) cv_.notify_all();
}

void FleetDaemon::WorkerLoop() {
  std::deque<mqtt::InboundMessage> batch;
  int64_t next_flush = 0, next_status = 0, next_gateways = 0, next_rollout_tick = 0, next_metrics = 0;
  while (true) {
    bool republish = false;
    std::unique_ptr<FleetConfig> reload;
    {
      std::unique_lock lk(mu_);
      // While verdicts wait for the link to settle earlier ones, come back soon to send more.
      auto wait = outgoing_.empty() && health_due_.empty() ? kTick : std::chrono::milliseconds(5);
      cv_.wait_for(lk, wait, [&] { return stop_ || !queue_.empty() || reconnected_ || pending_reload_; });
      if (stop_) break;
      batch.swap(queue_);
      republish = std::exchange(reconnected_, false);
      reload = std::move(pending_reload_);
    }
    int64_t now = NowMs();
    if (reload) {
      cfg_.health = reload->health;
      cfg_.gateways = reload->gateways;
      cfg_.heatmap.snapshot_interval_s = reload->heatmap.snapshot_interval_s;
      heatmap_->SetSnapshotInterval(cfg_.heatmap.snapshot_interval_s);
      health_.SetConfig(cfg_.health);
      spdlog::set_level(spdlog::level::from_str(reload->fleet.log_level));
      if (reload->fleet.id != cfg_.fleet.id || reload->fleet.site != cfg_.fleet.site || reload->fleet.sites != cfg_.fleet.sites ||
          reload->mqtt.url != cfg_.mqtt.url || reload->fleet.data_dir != cfg_.fleet.data_dir)
        spdlog::warn("reload: identity, sites, data_dir and broker changes take effect after a restart");
      if (reload->heatmap.crs != cfg_.heatmap.crs || reload->heatmap.windows_s != cfg_.heatmap.windows_s ||
          reload->heatmap.layers != cfg_.heatmap.layers || reload->heatmap.enabled != cfg_.heatmap.enabled ||
          reload->heatmap.utc_offset_s != cfg_.heatmap.utc_offset_s || reload->heatmap.feed_precision != cfg_.heatmap.feed_precision)
        spdlog::warn("reload: [heatmap] changes take effect after a restart (the cells binned so far follow the old settings)");
      if (reload->metrics.listen != cfg_.metrics.listen || reload->metrics.allow_remote != cfg_.metrics.allow_remote)
        spdlog::warn("reload: [metrics] changes take effect after a restart");
      spdlog::info("reload: thresholds applied");
    }
    HandleBatch(batch, now);
    if (republish) {
      // Back after an outage of our own link: what the fleet said meanwhile may still be on its
      // way, so silence in that window is judged only after a grace.
      if (int64_t down = link_down_ms_.exchange(0); down > 0) {
        health_.PauseSilence(down, now);
        spdlog::info("mqtt: sanifleet could not hear the fleet for {} ms (its link was down or it was not running); "
                     "silence in that time is not held against devices", now - down);
      }
      RepublishAll(now);
    }
    // Silence is judged only while sanifleet itself can hear the fleet, and not before the
    // grace of a (re)connect was given (the link may be up before its callback was handled).
    if (client_->connected() && link_down_ms_.load() == 0 && now >= health_.NextDeadline())
      for (const auto& change : health_.Tick(now)) PublishHealth(change, now);
    if (now >= next_gateways) {
      EvaluateGateways(now);
      next_gateways = now + 1000;
    }
    // A changed condition is stored before its verdict is published, so a crash cannot forget
    // it; the other changes wait for the periodic flush.
    if (now >= next_flush) {
      FlushRegistry("periodic");
      next_flush = now + cfg_.fleet.registry_flush_ms;
    } else if (!persist_now_.empty()) {
      FlushRegistry("condition", &persist_now_);
    }
    persist_now_.clear();
    if (now >= next_rollout_tick) {
      rollouts_->Tick(now);
      next_rollout_tick = now + 1000;
    }
    if (republish) heatmap_->RepublishAll();  // the retained feeds may be gone with the broker
    heatmap_->Tick();
    if (now >= next_status) {
      PublishStatus(true, now);
      next_status = now + cfg_.fleet.status_interval_s * 1000;
    }
    if (!cfg_.metrics.listen.empty() && now >= next_metrics) {
      std::string snapshot = StatusPayload(true, now);
      std::lock_guard lk(metrics_mu_);
      metrics_status_ = std::move(snapshot);
      next_metrics = now + 1000;
    }
    Drain(now);
  }
}

void FleetDaemon::Handle(const mqtt::InboundMessage& m, int64_t now) {
  if (m.topic == reply_topic_) return rollouts_->OnInstallAnswer(m.correlation_data, m.payload, now);
  auto t = topics::ParseModelTopic(cfg_.fleet.topic_prefix, m.topic);
  if (!t) return;
  if (t->group == "gateway" && t->leaf.rfind("firmware/", 0) == 0) {
    std::string device = t->leaf.substr(9);
    if (auto version = rollouts_->OnJobStatus(t->site, device, m.payload, now)) {
      if (const DeviceEntry* known = registry_.FindDevice(RegistryKey(t->site, device)); known && known->firmware != *version) {
        registry_.Device(t->site, device, now).firmware = *version;
        registry_.MarkDirty(RegistryKey(t->site, device));
      }
    }
    return;
  }
  if (t->group == "fleet" && t->site == cfg_.fleet.site && t->leaf == "firmware/get") {
    if (!m.response_topic.empty()) (void)client_->PublishResponse(m.response_topic, rollouts_->ServeChunk(m.payload), m.correlation_data);
    return;
  }
  if (t->group == "devices") {
    ++messages_;
    return HandleDeviceMessage(t->site, t->id, t->leaf, m.payload, now);
  }
  if (t->group == "gateway" && t->leaf == "status") {
    ++messages_;
    return HandleGatewayStatus(t->site, t->id, m.payload, now);
  }
  if (t->group == "fleet" && t->site == cfg_.fleet.site && t->leaf.rfind("admin/", 0) == 0)
    return HandleAdmin(m, t->leaf.substr(6), now);
}

void FleetDaemon::HandleDeviceMessage(const std::string& site, const std::string& device, const std::string& leaf,
                                      const std::string& payload, int64_t now) {
  if (leaf != "telemetry" && leaf != "event" && leaf != "status") return;
  std::string error;
  auto decoded = DecodeModelMessage(leaf, payload, &error);
  if (!decoded) {
    ++malformed_;
    spdlog::debug("ignored a malformed {} of {}/{}: {}", leaf, site, device, error);
    return;
  }
  Observation& obs = decoded->obs;
  obs.device = RegistryKey(site, device);
  bool created = false;
  DeviceEntry& e = registry_.Device(site, device, now, &created);
  if (created) spdlog::info("registry: new device {}/{}", site, device);
  ApplyToEntry(*decoded, e, now);
  registry_.MarkDirty(obs.device);
  heatmap_->Observe(site, device, *decoded, e);
  auto change = health_.Observe(obs, now);
  const HealthVerdict* verdict = health_.Find(obs.device);
  if (verdict) e.expected_interval_ms = verdict->expected_interval_ms;
  rollouts_->OnDevice(obs.device, e, !verdict || (verdict->state != HealthState::kCritical && verdict->state != HealthState::kOffline),
                      obs.ts_ms, now);
  if (change) PublishHealth(*change, now);
}

void FleetDaemon::HandleGatewayStatus(const std::string& site, const std::string& gateway, const std::string& payload,
                                      int64_t now) {
  auto parsed = ParseUntrustedJson(payload, {.max_bytes = kMaxGatewayStatusBytes, .max_depth = 16});
  if (!parsed.ok() || !parsed->is_object()) {
    ++malformed_;
    return;
  }
  json j = std::move(*parsed);
  bool created = false;
  GatewayEntry& g = registry_.Gateway(site, gateway, now, &created);
  if (created) spdlog::info("registry: new gateway {}/{}", site, gateway);
  bool online = FieldBool(j, "online").value_or(false);
  if (online != g.online || created) {
    g.transitions_ms.push_back(now);
    if (g.transitions_ms.size() > 64) g.transitions_ms.erase(g.transitions_ms.begin());
    spdlog::log(online ? spdlog::level::info : spdlog::level::warn, "gateway {}/{} is {}", site, gateway,
                online ? "online" : "offline");
  }
  g.online = online;
  g.last_status_ms = now;
  if (auto v = Str(j, "version"); !v.empty()) g.version = v;
  if (auto s = j.find("started"); s != j.end() && s->is_number_integer()) g.started_ms = s->get<int64_t>();
  // The will and the goodbye carry no adapters: keep the last full status for the admin API.
  if (online) g.status = j;
  else g.status["online"] = false;
  registry_.MarkGatewayDirty(RegistryKey(site, gateway));
  // Modbus request counters feed each device's error rate.
  if (auto ad = j.find("adapters"); ad != j.end() && ad->is_object()) {
    for (auto it = ad->begin(); it != ad->end(); ++it) {
      if (it.key() != "modbus" && it.key() != "modbus_rtu") continue;
      auto pd = it->find("per_device");
      if (pd == it->end() || !pd->is_object()) continue;
      for (auto d = pd->begin(); d != pd->end(); ++d) {
        uint64_t req = d->value("requests", uint64_t{0});
        uint64_t failed = d->value("timeouts", uint64_t{0}) + d->value("exceptions", uint64_t{0}) + d->value("errors", uint64_t{0});
        std::string key = RegistryKey(site, d.key());
        if (!registry_.FindDevice(key)) continue;  // counters alone do not make a device
        registry_.MarkDirty(key);  // the counters are part of the device's health memory
        if (auto change = health_.ObserveRequestCounters(key, req, failed, now)) PublishHealth(*change, now);
      }
    }
  }
  EvaluateGateways(now);
}

void FleetDaemon::EvaluateGateways(int64_t now) {
  const auto& t = cfg_.gateways;
  for (const auto& [key, g] : registry_.gateways()) {
    HealthVerdict v;
    v.device = g.gateway;
    v.kind = "gateway";
    v.last_seen_ms = g.last_status_ms;
    auto add = [&v](const char* code, HealthState level, std::string detail) {
      HealthReason r;
      r.code = code;
      r.level = level;
      r.detail = std::move(detail);
      v.reasons.push_back(std::move(r));
    };
    if (!g.online) {
      add("offline", HealthState::kOffline, "the gateway said goodbye or its MQTT will fired");
    } else if (g.last_status_ms && now - g.last_status_ms > t.status_silence_s * 1000) {
      add("silent", HealthState::kOffline, "no status for " + std::to_string((now - g.last_status_ms) / 1000) + " s");
    } else if (g.last_status_ms) {
      const json& st = g.status;
      if (auto ob = st.find("outbox"); ob != st.end() && ob->is_object()) {
        int64_t pending = ob->value("pending", int64_t{0});
        if (pending > t.outbox_pending_degraded)
          add("outbox_backlog", HealthState::kDegraded, std::to_string(pending) + " records waiting > " + std::to_string(t.outbox_pending_degraded));
        if (auto old = ob->find("oldest_ts"); old != ob->end() && old->is_number_integer()) {
          int64_t age_s = (now - old->get<int64_t>()) / 1000;
          if (age_s > t.outbox_oldest_critical_s)
            add("outbox_backlog", HealthState::kCritical, "oldest waiting record is " + std::to_string(age_s) + " s old");
          else if (age_s > t.outbox_oldest_degraded_s)
            add("outbox_backlog", HealthState::kDegraded, "oldest waiting record is " + std::to_string(age_s) + " s old");
        }
      }
      if (auto ad = st.find("adapters"); ad != st.end() && ad->is_object())
        for (auto it = ad->begin(); it != ad->end(); ++it) {
          std::string state = it->is_object() ? Str(*it, "state") : "";
          if (state == "failed" || state == "stopped") add("adapter_down", HealthState::kCritical, it.key() + " is " + state);
        }
    }
    int flaps = 0;
    for (int64_t ts : g.transitions_ms)
      if (now - ts <= t.flap_window_s * 1000) ++flaps;
    if (flaps >= t.flaps_degraded)
      add("link_flapping", HealthState::kDegraded, std::to_string(flaps) + " online/offline changes in " + std::to_string(t.flap_window_s) + " s");
    std::sort(v.reasons.begin(), v.reasons.end(), [](const HealthReason& a, const HealthReason& b) {
      return Severity(a.level) != Severity(b.level) ? Severity(a.level) > Severity(b.level) : a.code < b.code;
    });
    v.state = HealthState::kOk;
    for (const auto& r : v.reasons)
      if (Severity(r.level) > Severity(v.state)) v.state = r.level;
    auto it = gateway_verdicts_.find(key);
    HealthState previous = it == gateway_verdicts_.end() ? HealthState::kUnknown : it->second.state;
    if (it != gateway_verdicts_.end() && Codes(it->second) == Codes(v)) continue;
    v.since_ms = previous == v.state && it != gateway_verdicts_.end() ? it->second.since_ms : now;
    json p = {{"gateway", g.gateway}, {"site", g.site},  {"kind", "gateway"}, {"state", HealthStateName(v.state)},
              {"since", v.since_ms},  {"ts", now},        {"last_seen", g.last_status_ms}, {"reasons", ReasonsToJson(v.reasons)}};
    Send(topics::GatewayHealth(cfg_.fleet.topic_prefix, g.site, g.gateway), p.dump(), true);
    if (previous != v.state) {
      json ev = {{"id", cfg_.fleet.id + ":" + std::to_string(started_ms_) + "-" + std::to_string(++event_seq_)},
                 {"ts", now},
                 {"gateway", g.gateway},
                 {"kind", "gateway"},
                 {"event", "health_changed"},
                 {"health", HealthStateName(v.state)},
                 {"previous", HealthStateName(previous)},
                 {"reasons", ReasonsToJson(v.reasons)}};
      Send(topics::FleetEvents(cfg_.fleet.topic_prefix, g.site), ev.dump(), false);
    }
    gateway_verdicts_[key] = std::move(v);
  }
}

bool FleetDaemon::PublishDeviceVerdict(const HealthVerdict& v, int64_t now) {
  const DeviceEntry* e = registry_.FindDevice(v.device);
  if (!e) return true;
  json p = {{"device", e->device},
            {"site", e->site},
            {"kind", e->kind},
            {"state", HealthStateName(v.state)},
            {"since", v.since_ms},
            {"ts", now},
            {"last_seen", e->last_seen_ms},
            {"expected_interval_ms", v.expected_interval_ms},
            {"reasons", ReasonsToJson(v.reasons)}};
  return client_->Publish(topics::DeviceHealth(cfg_.fleet.topic_prefix, e->site, e->device), p.dump(), true).ok();
}

void FleetDaemon::PublishHealth(const HealthChange& change, int64_t now) {
  const HealthVerdict& v = change.verdict;
  if (health_due_set_.insert(v.device).second) health_due_.push_back(v.device);
  registry_.MarkDirty(v.device);
  persist_now_.push_back(v.device);
  if (!change.state_changed) return;
  const DeviceEntry* e = registry_.FindDevice(v.device);
  if (!e) return;
  spdlog::log(Severity(v.state) >= Severity(HealthState::kCritical) ? spdlog::level::warn : spdlog::level::info,
              "health: {}/{} {} -> {}{}", e->site, e->device, HealthStateName(change.previous), HealthStateName(v.state),
              v.reasons.empty() ? std::string() : " (" + v.reasons.front().detail + ")");
  json ev = {{"id", cfg_.fleet.id + ":" + std::to_string(started_ms_) + "-" + std::to_string(++event_seq_)},
             {"ts", now},
             {"device", e->device},
             {"kind", e->kind},
             {"event", "health_changed"},
             {"health", HealthStateName(v.state)},
             {"previous", HealthStateName(change.previous)},
             {"reasons", ReasonsToJson(v.reasons)}};
  Send(topics::FleetEvents(cfg_.fleet.topic_prefix, e->site), ev.dump(), false);
}

void FleetDaemon::RepublishAll(int64_t now) {
  // After a (re)connect the retained verdicts must match what this daemon believes now.
  PublishStatus(true, now);
  for (const HealthVerdict* v : health_.All())
    if (v->state != HealthState::kUnknown && health_due_set_.insert(v->device).second) health_due_.push_back(v->device);
  gateway_verdicts_.clear();
  EvaluateGateways(now);
  rollouts_->RepublishAll(now);
}

std::string FleetDaemon::StatusPayload(bool online, int64_t now) const {
  json j = {{"online", online}, {"fleet", cfg_.fleet.id}, {"site", cfg_.fleet.site}, {"ts", now}};
  if (!online) return j.dump();
  j["version"] = SANIGATE_VERSION;
  j["started"] = started_ms_;
  j["devices"] = registry_.devices().size();
  j["gateways"] = registry_.gateways().size();
  json by_state = json::object();
  for (const HealthVerdict* v : health_.All()) {
    auto& n = by_state[HealthStateName(v->state)];
    n = n.is_null() ? 1 : n.get<int64_t>() + 1;
  }
  j["by_state"] = by_state;
  j["messages"] = messages_;
  j["malformed"] = malformed_;
  j["refused_publishes"] = refused_publishes_.load();
  {
    std::lock_guard lk(refused_mu_);
    if (!refused_topics_.empty()) j["refused_topics"] = refused_topics_;
  }
  if (heatmap_ && cfg_.heatmap.enabled) j["heatmap"] = heatmap_->StatusJson();
  return j.dump();
}

void FleetDaemon::PublishStatus(bool online, int64_t now) {
  Send(topics::FleetStatus(cfg_.fleet.topic_prefix, cfg_.fleet.site), StatusPayload(online, now), true);
}

void FleetDaemon::Send(std::string topic, std::string payload, bool retain) {
  // Bounded while the broker is away: the oldest events go first (verdicts are kept apart).
  constexpr size_t kMaxOutgoing = 100'000;
  if (outgoing_.size() >= kMaxOutgoing) outgoing_.pop_front();
  outgoing_.push_back({std::move(topic), std::move(payload), retain});
}

void FleetDaemon::Drain(int64_t now) {
  constexpr size_t kMaxUnsettled = 200;
  while (client_->unsettled() < kMaxUnsettled && (!outgoing_.empty() || !health_due_.empty())) {
    if (!outgoing_.empty()) {
      const auto& o = outgoing_.front();
      if (!client_->Publish(o.topic, o.payload, o.retain).ok()) return;  // link down: kept
      outgoing_.pop_front();
      continue;
    }
    const std::string key = health_due_.front();
    if (const HealthVerdict* v = health_.Find(key)) {
      if (!PublishDeviceVerdict(*v, now)) return;
    }
    health_due_.pop_front();
    health_due_set_.erase(key);
  }
}

// ---- admin API ----

namespace {

json Summary(const DeviceEntry& e, const HealthVerdict* v) {
  return {{"device", e.device},
          {"site", e.site},
          {"kind", e.kind},
          {"protocol", e.protocol},
          {"gateway", e.gateway},
          {"profile", e.profile},
          {"firmware", e.firmware},
          {"model", e.model},
          {"first_seen", e.first_seen_ms},
          {"last_seen", e.last_seen_ms},
          {"online", e.online ? json(*e.online) : json(nullptr)},
          {"state", HealthStateName(v ? v->state : HealthState::kUnknown)}};
}

json VerdictJson(const HealthVerdict& v, const std::string& site, const std::string& id, const std::string& kind) {
  return {{"device", id},
          {"site", site},
          {"kind", kind},
          {"state", HealthStateName(v.state)},
          {"since", v.since_ms},
          {"last_seen", v.last_seen_ms},
          {"expected_interval_ms", v.expected_interval_ms},
          {"reasons", ReasonsToJson(v.reasons)}};
}

}  // namespace

void FleetDaemon::AddAdminVerbs() {
  // One entry per verb; an unknown verb's reply lists them in this order.
  admin_.Add("status", [this](const json&, int64_t now) { return AdminStatus(now); });
  admin_.Add("devices", [this](const json& args, int64_t) { return AdminDevices(args); });
  admin_.Add("device", [this](const json& args, int64_t) { return AdminDevice(args); });
  admin_.Add("health", [this](const json& args, int64_t) { return AdminHealth(args); });
  admin_.Add("heatmap", [this](const json& args, int64_t) { return heatmap_->Query(args); });
  for (const std::string& verb : RolloutService::Verbs())
    admin_.Add(
        verb, [this, verb](const json& args, int64_t now) { return rollouts_->Admin(verb, args, registry_, now); },
        // Firmware chunks are the only large requests (base64 of max_chunk_kib); the rest are small.
        verb == "firmware_put" ? kMaxFirmwarePutBytes : AdminVerbs::kDefaultMaxBytes);
}

void FleetDaemon::HandleAdmin(const mqtt::InboundMessage& m, const std::string& verb, int64_t now) {
  // Answered (and acted on) even without a response topic: nobody hears the reply then.
  json answer = admin_.Answer(verb, m.payload, now);
  if (m.response_topic.empty()) return;
  (void)client_->PublishResponse(m.response_topic, SafeDump(answer), m.correlation_data);
}

AdminAnswer FleetDaemon::AdminStatus(int64_t now) const {
  json r = json::parse(StatusPayload(true, now));
  r["connected"] = client_->connected();
  json gws = json::array();
  for (const auto& [key, g] : registry_.gateways()) {
    auto vit = gateway_verdicts_.find(key);
    gws.push_back({{"gateway", g.gateway},
                   {"site", g.site},
                   {"online", g.online},
                   {"version", g.version},
                   {"last_seen", g.last_status_ms},
                   {"state", HealthStateName(vit == gateway_verdicts_.end() ? HealthState::kUnknown : vit->second.state)}});
  }
  std::sort(gws.begin(), gws.end(), [](const json& a, const json& b) { return a["gateway"] < b["gateway"]; });
  r["gateways"] = gws;
  return AdminAnswer::Ok(std::move(r));
}

AdminAnswer FleetDaemon::AdminDevices(const json& args) const {
  std::string site = Str(args, "site"), kind = Str(args, "kind"), state = Str(args, "state"), gateway = Str(args, "gateway");
  if (!state.empty() && !ParseHealthState(state))
    return AdminAnswer::Fail("invalid", "state \"" + state + "\" is not ok, degraded, critical, offline or unknown");
  size_t limit = args.contains("limit") && args["limit"].is_number_unsigned() ? args["limit"].get<size_t>() : 1000;
  std::vector<const DeviceEntry*> hits;
  for (const auto& [key, e] : registry_.devices()) {
    const HealthVerdict* v = health_.Find(key);
    std::string st = HealthStateName(v ? v->state : HealthState::kUnknown);
    if ((site.empty() || e.site == site) && (kind.empty() || e.kind == kind) && (gateway.empty() || e.gateway == gateway) &&
        (state.empty() || st == state))
      hits.push_back(&e);
  }
  std::sort(hits.begin(), hits.end(), [](auto* a, auto* b) { return std::tie(a->device, a->site) < std::tie(b->device, b->site); });
  json list = json::array();
  for (size_t i = 0; i < hits.size() && i < limit; ++i)
    list.push_back(Summary(*hits[i], health_.Find(RegistryKey(hits[i]->site, hits[i]->device))));
  return AdminAnswer::Ok({{"total", hits.size()}, {"devices", list}});
}

AdminAnswer FleetDaemon::AdminDevice(const json& args) const {
  std::string id = Str(args, "device"), site = Str(args, "site");
  if (id.empty()) return AdminAnswer::Fail("invalid", "argument \"device\" is required");
  const DeviceEntry* e = nullptr;
  for (const auto& s : site.empty() ? cfg_.fleet.sites : std::vector<std::string>{site}) {
    if (s == "+") {
      for (const auto& [key, d] : registry_.devices())
        if (d.device == id) e = &d;
    } else if ((e = registry_.FindDevice(RegistryKey(s, id)))) {
      break;
    }
    if (e) break;
  }
  if (!e) return AdminAnswer::Fail("not_found", "unknown device " + id);
  const HealthVerdict* v = health_.Find(RegistryKey(e->site, e->device));
  json r = Summary(*e, v);
  r["metrics"] = e->metrics;
  r["metrics_ts"] = e->metrics_ts_ms;
  r["location"] = e->location ? json{{"lat", e->location->first}, {"lon", e->location->second}} : json(nullptr);
  r["health"] = v ? VerdictJson(*v, e->site, e->device, e->kind) : json(nullptr);
  return AdminAnswer::Ok(std::move(r));
}

AdminAnswer FleetDaemon::AdminHealth(const json& args) const {
  bool problems = FieldBool(args, "problems").value_or(false);
  std::string site = Str(args, "site"), kind = Str(args, "kind"), state = Str(args, "state");
  json devices = json::array();
  std::vector<std::pair<const HealthVerdict*, const DeviceEntry*>> hits;
  for (const HealthVerdict* v : health_.All()) {
    const DeviceEntry* e = registry_.FindDevice(v->device);
    if (!e) continue;
    if (problems && (v->state == HealthState::kOk)) continue;
    if ((!site.empty() && e->site != site) || (!kind.empty() && e->kind != kind) ||
        (!state.empty() && HealthStateName(v->state) != state))
      continue;
    hits.emplace_back(v, e);
  }
  std::sort(hits.begin(), hits.end(), [](const auto& a, const auto& b) {
    int sa = Severity(a.first->state), sb = Severity(b.first->state);
    return sa != sb ? sa > sb : a.second->device < b.second->device;
  });
  for (const auto& [v, e] : hits) devices.push_back(VerdictJson(*v, e->site, e->device, e->kind));
  json gws = json::array();
  for (const auto& [key, v] : gateway_verdicts_) {
    const GatewayEntry* g = registry_.FindGateway(key);
    if (!g || (problems && v.state == HealthState::kOk) || (!site.empty() && g->site != site)) continue;
    json gj = VerdictJson(v, g->site, g->gateway, "gateway");
    gj.erase("device");
    gj["gateway"] = g->gateway;
    gws.push_back(std::move(gj));
  }
  return AdminAnswer::Ok({{"devices", devices}, {"gateways", gws}});
}

void FleetDaemon::FlushRegistry(const char* when, const std::vector<std::string>* only) {
  auto health_of = [this](const std::string& key) {
    auto memory = health_.Memory(key);
    return memory ? EncodeHealthMemory(*memory) : std::string();
  };
  if (Status st = store_->Flush(registry_, health_of, only); !st.ok())
    spdlog::error("registry: {} flush failed (kept for the next try): {}", when, st.ToString());
}

}  // namespace sanigate::fleet
