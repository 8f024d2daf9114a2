#include "app/gateway.h"

#include <signal.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "app/command_payload.h"
#include "app/mqtt_input.h"
#include "mqtt/topics.h"
#include "core/clock.h"
#include "core/topic_filter.h"
#include "core/untrusted.h"
#include "settings/reader.h"
#include "registry/registry.h"
#include "service/prometheus_text.h"

namespace sanigate::app {
namespace {

const dev::AdapterSpec* FindSpec(const std::string& name) {
  for (const auto& s : dev::AllProtocols())
    if (s.name == name) return &s;
  return nullptr;
}

std::string StatusTopic(const settings::Config& c) {
  return c.gateway.topic_prefix + "/" + c.gateway.site + "/gateway/" + c.gateway.id + "/status";
}

mqtt::LinkOptions LinkFor(const settings::MqttSection& m) {
  mqtt::LinkOptions l;
  l.url = m.url;
  l.client_id = m.client_id;
  l.username = m.username;
  l.password = m.password;
  l.keepalive_s = static_cast<int>(m.keepalive_s);
  l.connect_timeout_s = static_cast<int>(m.connect_timeout_s);
  l.ack_timeout_s = static_cast<int>(m.ack_timeout_s);
  l.tls = {m.tls.enabled, m.tls.ca_file, m.tls.cert_file, m.tls.key_file, m.tls.verify_peer};
  return l;
}

// The broker keeps the relay's session (and queues sanifleet's outputs) this long while
// sanigate is away.
constexpr int64_t kRelaySessionExpiryS = 7 * 86400;

}  // namespace

Gateway::Gateway(settings::Config config) : cfg_(std::move(config)), started_ms_(NowMs()) {}

Gateway::~Gateway() {
  Stop();
  // The outbox outlives the pipeline: it must not report into it while closing.
  if (outbox_) outbox_->SetShedListener({});
}

Result<std::unique_ptr<Gateway>> Gateway::Create(settings::Config config) {
  std::unique_ptr<Gateway> g(new Gateway(std::move(config)));
  std::error_code ec;
  std::filesystem::create_directories(g->cfg_.gateway.data_dir, ec);
  if (ec)
    return Status(Code::kUnavailable,
                  "cannot create data_dir " + g->cfg_.gateway.data_dir + ": " + ec.message());
  store::OutboxOptions o;
  o.path = g->cfg_.OutboxPath();
  o.max_rows = static_cast<uint64_t>(g->cfg_.outbox.max_rows);
  o.max_bytes = static_cast<uint64_t>(g->cfg_.outbox.max_mb) << 20;
  o.max_age_ms = g->cfg_.outbox.max_age_h * 3600 * 1000;
  o.commit_max_rows = static_cast<size_t>(g->cfg_.outbox.commit_max_rows);
  o.commit_linger = std::chrono::milliseconds(g->cfg_.outbox.commit_linger_ms);
  o.sync_full = g->cfg_.outbox.synchronous == "full";
  g->routing_ = std::make_unique<upstream::Routing>(g->cfg_.gateway.topic_prefix, g->cfg_.upstreams);
  for (const auto& u : g->cfg_.upstreams)
    o.upstreams.push_back({u.name, static_cast<uint64_t>(u.max_backlog_rows), u.max_age_h * 3600 * 1000});
  if (!g->cfg_.upstreams.empty())
    o.route = [routing = g->routing_.get()](const store::OutMessage& m) { return routing->ForRecord(m.topic); };
  auto outbox = store::Outbox::Open(o);
  if (!outbox.ok()) return outbox.status();
  g->outbox_ = std::move(outbox.value());
  EncodeContext ctx{g->cfg_.gateway.id, g->cfg_.gateway.site, g->cfg_.gateway.topic_prefix};
  g->pipeline_ = std::make_unique<pipeline::Pipeline>(*g->outbox_, ctx);
  Gateway* raw = g.get();
  g->outbox_->SetShedListener([raw](const store::ShedReport& r) { raw->OnShed(r); });
  auto st = g->outbox_->Stats();
  if (st.pending_rows)
    spdlog::info("outbox: {} records from before the restart will be published first",
                 st.pending_rows);
  return g;
}

Status Gateway::Reply(size_t via, const std::string& topic, const std::string& payload, const std::string& corr) {
  pipeline::Forwarder* f = via == 0 ? forwarder_.get() : via <= upstreams_.size() ? upstreams_[via - 1].get() : nullptr;
  if (!f) return Unavailable("no link to reply on");
  return f->PublishResponse(topic, payload, corr);
}

void Gateway::OnDownlink(size_t dest, mqtt::InboundMessage msg) {
  const auto& u = cfg_.upstreams[dest - 1];
  auto& count = *downlink_[dest - 1];
  std::string local;
  if (msg.topic.rfind(u.topic_prefix + "/", 0) == 0)
    local = cfg_.gateway.topic_prefix + msg.topic.substr(u.topic_prefix.size());
  bool allowed = !local.empty() && std::any_of(u.downlink.begin(), u.downlink.end(),
                                                [&](const std::string& f) { return TopicMatchesFilter(f, local); });
  if (!allowed) {
    if (count.dropped++ == 0)
      spdlog::warn("upstream {}: dropped {} from the city: not in its downlink allow-list (counted)", u.name,
                   QuotePrefix(msg.topic, 96));
    return;
  }
  count.accepted++;
  msg.topic = local;
  std::string admin = mqtt::topics::GatewayAdmin(cfg_.gateway.topic_prefix, cfg_.gateway.site, cfg_.gateway.id, "");
  if (msg.topic.rfind(admin, 0) == 0) {
    std::string verb = msg.topic.substr(admin.size());
    return OnAdmin(std::move(msg), std::move(verb), dest);
  }
  OnCommand(std::move(msg), dest);
}

void Gateway::OnCommand(mqtt::InboundMessage msg, size_t via) {
  using json = nlohmann::json;
  // Topic: {prefix}/{site}/devices/{device}/cmd/{name}
  std::string base = cfg_.gateway.topic_prefix + "/" + cfg_.gateway.site + "/devices/";
  dev::CommandRequest req;
  if (msg.topic.rfind(base, 0) == 0) {
    std::string rest = msg.topic.substr(base.size());
    auto slash = rest.find("/cmd/");
    if (slash != std::string::npos) {
      req.device = rest.substr(0, slash);
      req.name = rest.substr(slash + 5);
    }
  }
  // Whatever an adapter puts in its answer (it may quote an argument), the reply and the log
  // line stay valid and short: SafeDump never throws on bad UTF-8.
  auto respond = [this, via, topic = msg.response_topic, corr = msg.correlation_data,
                  device = QuotePrefix(req.device, 64), name = QuotePrefix(req.name, 32)](const dev::CommandReply& r) {
    spdlog::log(r.ok ? spdlog::level::info : spdlog::level::warn, "cmd {} {}: {}", device, name,
                r.ok ? "ok" : QuotePrefix(r.error, 160));
    if (topic.empty()) return;  // fire-and-forget request: nobody to answer
    json j;
    j["ok"] = r.ok;
    j["error"] = r.ok ? json(nullptr) : json(r.error.substr(0, 512));
    j["result"] = r.result_json.empty() ? json(nullptr) : json::parse(r.result_json, nullptr, false);
    (void)Reply(via, topic, SafeDump(j), corr);
  };
  if (req.device.empty() || req.name.empty())
    return respond({false, "bad command topic " + QuotePrefix(msg.topic, 96), {}});
  auto payload = ParseCommandPayload(msg.payload);
  if (!payload.ok()) return respond({false, payload.status().message(), {}});
  req.args = std::move(payload->args);
  req.timeout = payload->timeout;
  std::lock_guard lk(adapters_mu_);
  auto it = owner_.find(req.device);
  if (it != owner_.end()) return it->second->Execute(std::move(req), respond);
  for (auto& a : adapters_)
    if (a->OwnsDevice(req.device)) return a->Execute(std::move(req), respond);
  // A well-formed id as it is (sanictl maps "unknown device" to "not found"), anything else quoted.
  respond({false, "unknown device " + (settings::IsValidId(req.device) ? req.device : QuotePrefix(req.device, 64)), {}});
}

// The gateway's half of the admin API (fleet/README.md): answers from the link's network thread, so only
// cheap snapshots (the status payload takes the adapters' Health(), which never blocks).
void Gateway::OnAdmin(mqtt::InboundMessage msg, std::string verb, size_t via) {
  using json = nlohmann::json;
  if (msg.response_topic.empty()) return;
  json answer;
  if (verb == "status") {
    answer = {{"ok", true}, {"result", json::parse(StatusPayload(true))}};
  } else if (verb == "install") {
    auto job = ParseUntrustedJson(msg.payload, {.max_bytes = 256 * 1024, .max_depth = 16});
    if (!job.ok()) answer = {{"ok", false}, {"code", "invalid"}, {"error", job.status().message()}};
    else answer = firmware_ ? firmware_->Accept(*job) : json{{"ok", false}, {"code", "invalid"}, {"error", "firmware agent not running"}};
  } else if (verb == "devices") {
    answer = DevicesAnswer(msg.payload);
  } else if (verb == "ping") {
    answer = {{"ok", true}, {"result", {{"gateway", cfg_.gateway.id}, {"version", SANIGATE_VERSION}, {"ts", NowMs()}}}};
  } else {
    answer = {{"ok", false}, {"error", "unknown verb " + QuotePrefix(verb, 32) + " (status, devices, ping, install)"}, {"code", "invalid"}};
  }
  (void)Reply(via, msg.response_topic, SafeDump(answer), msg.correlation_data);
}

// Admin verb `devices`: one adapter's per-device counters, a page at a time (the retained status
// lists only the devices that need looking at on a large box).
nlohmann::json Gateway::DevicesAnswer(const std::string& payload) const {
  using json = nlohmann::json;
  auto invalid = [](std::string why) { return json{{"ok", false}, {"code", "invalid"}, {"error", std::move(why)}}; };
  auto req = ParseUntrustedJson(payload.empty() ? std::string("{}") : payload, {.max_bytes = 4096, .max_depth = 4});
  if (!req.ok()) return invalid(req.status().message());
  if (!req->is_object()) return invalid("the request must be a JSON object {\"adapter\", \"offset\", \"limit\"}");
  DevicesPageRequest page;
  auto count = [&](const char* key, size_t& into) {
    auto it = req->find(key);
    if (it == req->end()) return true;
    if (!it->is_number_unsigned()) return false;
    into = it->get<size_t>();
    return true;
  };
  if (!count("offset", page.offset)) return invalid("offset must be a whole number >= 0");
  if (!count("limit", page.limit) || page.limit == 0 || page.limit > kMaxDevicesPage)
    return invalid("limit must be 1.." + std::to_string(kMaxDevicesPage));
  std::lock_guard lk(adapters_mu_);
  std::string names;
  for (const auto& a : adapters_) names += (names.empty() ? "" : ", ") + std::string(a->protocol());
  auto it = req->find("adapter");
  if (it == req->end() && adapters_.size() == 1) page.adapter = adapters_[0]->protocol();
  else if (it != req->end() && it->is_string()) page.adapter = it->get<std::string>();
  else return invalid("name the adapter: " + (names.empty() ? std::string("none running") : names));
  for (const auto& a : adapters_)
    if (a->protocol() == page.adapter)
      return json{{"ok", true}, {"result", json::parse(DevicesPage(page, a->Health().per_device).dump())}};
  return json{{"ok", false}, {"code", "not_found"},
              {"error", "no adapter " + QuotePrefix(page.adapter, 32) + " (running: " + names + ")"}};
}

void Gateway::OnShed(const store::ShedReport& r) {
  bool alarms = r.priority == Priority::kAlarm;
  std::string for_whom = r.destination.empty() ? "" : " for upstream " + r.destination;
  spdlog::log(alarms ? spdlog::level::err : spdlog::level::warn,
              "outbox: shed {} {} records{} ({} limit; measured {}..{})", r.rows,
              PriorityName(r.priority), for_whom, r.reason, r.oldest_ts, r.newest_ts);
  Record e = MakeEvent(cfg_.gateway.id, "gateway", "sanigate", NowMs(), "outbox_shed",
                       EventState::kActive, alarms ? Severity::kCritical : Severity::kWarning);
  e.metrics.push_back({"shed_records", static_cast<int64_t>(r.rows)});
  e.metrics.push_back({"oldest_shed_ts", r.oldest_ts});
  e.metrics.push_back({"newest_shed_ts", r.newest_ts});
  e.message = "outbox " + r.reason + " limit: dropped " + std::to_string(r.rows) + " " +
              PriorityName(r.priority) + " records" + for_whom;
  pipeline_->Emit(std::move(e));
}

std::string Gateway::StatusPayload(bool online, StatusView view) const {
  using json = nlohmann::ordered_json;
  json j;
  j["online"] = online;
  j["gateway"] = cfg_.gateway.id;
  j["site"] = cfg_.gateway.site;
  j["ts"] = NowMs();
  if (!online) return j.dump();
  // The box's installed version ([firmware] version_file after a self-update), which rollouts
  // compare with; the daemon's own build beside it when they differ.
  std::string installed = firmware_ ? firmware_->RunningVersion() : std::string();
  j["version"] = installed.empty() ? std::string(SANIGATE_VERSION) : installed;
  if (j["version"] != SANIGATE_VERSION) j["sanigate_version"] = SANIGATE_VERSION;
  j["started"] = started_ms_;
  json adapters = json::object();
  {
    std::lock_guard lk(adapters_mu_);
    for (const auto& a : adapters_) {
      auto h = a->Health();
      std::string name(a->protocol());
      json per_device = json::object();
      DeviceSelection sel;
      if (view == StatusView::kFull) {
        for (const auto& d : h.per_device) sel.listed.push_back(&d);
      } else {
        sel = device_ranking_.Select(name, h.per_device, view == StatusView::kRetained);
      }
      for (const auto* d : sel.listed) per_device[d->id] = DeviceCountersJson(*d);
      json& out = adapters[name];
      out = {{"state", h.state},   {"devices", h.devices}, {"online", h.online},
             {"errors", h.errors}, {"polls", h.polls},     {"per_device", per_device}};
      if (sel.omitted) {
        out["per_device_omitted"] = sel.omitted;
        out["per_device_omitted_failing"] = sel.omitted_failing;
      }
      if (h.requests) out["requests"] = h.requests;
      if (!h.last_error.empty()) out["last_error"] = h.last_error;
      if (!h.details_json.empty()) {
        json details = json::parse(h.details_json, nullptr, false);
        if (!details.is_discarded()) out["details"] = std::move(details);
      }
    }
  }
  j["adapters"] = adapters;
  auto s = outbox_->Stats();
  json shed = json::object();
  for (int p = 0; p < kPriorityCount; ++p)
    if (s.shed[p]) shed[PriorityName(static_cast<Priority>(p))] = s.shed[p];
  j["outbox"] = {{"pending", s.pending_rows + s.queued},
                 {"oldest_ts", s.oldest_ts ? json(*s.oldest_ts) : json(nullptr)},
                 {"bytes", s.pending_bytes},
                 {"sqlite_memory_bytes", s.sqlite_memory_bytes},
                 {"shed", shed}};
  if (!s.last_error.empty()) j["outbox"]["error"] = s.last_error;
  if (!upstreams_.empty()) {
    // Per destination: what it is owed, since when, what was shed for it, and its link.
    json ups = json::array();
    for (size_t i = 0; i < upstreams_.size(); ++i) {
      size_t dest = i + 1;
      auto f = upstreams_[i]->Stats();
      json u;
      u["name"] = cfg_.upstreams[i].name;
      u["connected"] = f.connected;
      if (dest < s.destinations.size()) {
        const auto& d = s.destinations[dest];
        u["pending"] = d.pending_rows;
        auto oldest = d.pending_rows ? outbox_->OldestPending(dest) : Result<std::optional<int64_t>>(std::nullopt);
        u["oldest_ts"] = oldest.ok() && oldest->has_value() ? json(**oldest) : json(nullptr);
        json shed_d = json::object();
        for (int p = 0; p < kPriorityCount; ++p)
          if (d.shed[p]) shed_d[PriorityName(static_cast<Priority>(p))] = d.shed[p];
        u["shed"] = shed_d;
        u["delivered"] = d.settled;
        if (d.poisoned) u["refused"] = d.poisoned;
      }
      u["reconnects"] = f.reconnects;
      u["connect_failures"] = f.connect_failures;
      u["bytes_sent"] = f.bytes_published;
      if (!cfg_.upstreams[i].downlink.empty())
        u["downlink"] = {{"accepted", downlink_[i]->accepted.load()}, {"dropped", downlink_[i]->dropped.load()}};
      if (f.last_connected_ms) u["last_connected_ms"] = f.last_connected_ms;
      if (!f.last_error.empty()) u["last_error"] = f.last_error;
      ups.push_back(std::move(u));
    }
    j["upstreams"] = std::move(ups);
    if (relay_) {
      auto r = relay_->Stats();
      j["relay"] = {{"connected", r.connected}, {"relayed", r.relayed}, {"too_large", r.too_large}};
    }
  }
  return j.dump();
}

void Gateway::StartForwarder() {
  const auto& m = cfg_.mqtt;
  mqtt::LinkOptions l = LinkFor(m);
  pipeline::ForwarderOptions f;
  f.window = static_cast<size_t>(m.inflight_window);
  f.reconnect_min = std::chrono::milliseconds(m.reconnect_min_ms);
  f.reconnect_max = std::chrono::milliseconds(m.reconnect_max_ms);
  f.status_interval = std::chrono::seconds(cfg_.gateway.status_interval_s);
  f.status_topic = StatusTopic(cfg_);
  f.status_payload = [this](bool online) { return StatusPayload(online, StatusView::kRetained); };
  const auto& g = cfg_.gateway;
  f.subscriptions = {mqtt::topics::Device(g.topic_prefix, g.site, "+", "cmd/+"),
                     mqtt::topics::GatewayAdmin(g.topic_prefix, g.site, g.id, "+")};
  f.on_message = [this](mqtt::InboundMessage m) {
    std::string admin = mqtt::topics::GatewayAdmin(cfg_.gateway.topic_prefix, cfg_.gateway.site, cfg_.gateway.id, "");
    if (m.topic.rfind(admin, 0) == 0) {
      std::string verb = m.topic.substr(admin.size());
      return OnAdmin(std::move(m), std::move(verb));
    }
    OnCommand(std::move(m));
  };
  forwarder_ = std::make_unique<pipeline::Forwarder>(*outbox_, std::move(l), std::move(f));
  forwarder_->Start();
}

void Gateway::StartUpstreams() {
  // All built before any starts: a down-link request may arrive on the first one at once.
  for (size_t i = 0; i < cfg_.upstreams.size(); ++i) downlink_.push_back(std::make_unique<DownlinkCounters>());
  for (size_t i = 0; i < cfg_.upstreams.size(); ++i) {
    const auto& u = cfg_.upstreams[i];
    size_t dest = i + 1;
    pipeline::ForwarderOptions f;
    f.destination = dest;
    f.name = "upstream " + u.name;
    f.map_topic = [routing = routing_.get(), dest](const std::string& t) { return routing->MapTopic(dest, t); };
    f.window = static_cast<size_t>(u.mqtt.inflight_window);
    f.max_msgs_per_s = u.max_msgs_per_s;
    f.max_bytes_per_s = static_cast<double>(u.max_kib_s) * 1024;
    if (u.batch_max_records > 1) {
      auto compression = upstream::ParseCompression(u.compression).value_or(upstream::Compression::kNone);
      f.batch_records = static_cast<size_t>(u.batch_max_records);
      f.batch_bytes = static_cast<size_t>(u.batch_max_kib) * 1024;
      f.batch_topic = routing_->MapTopic(dest, cfg_.gateway.topic_prefix + "/" + cfg_.gateway.site + "/gateway/" +
                                                   cfg_.gateway.id + "/batch") +
                      upstream::CompressionSuffix(compression);
      f.build_batch = [routing = routing_.get(), dest, compression, gw = cfg_.gateway.id](std::span<const store::Envelope> records) {
        std::string doc = upstream::BuildBatch(records, [&](const std::string& t) { return routing->MapTopic(dest, t); }, gw);
        auto packed = upstream::Compress(doc, compression);
        if (!packed.ok()) spdlog::error("upstream batch: {}", packed.status().message());
        return packed.ok() ? std::move(*packed) : doc;
      };
    }
    for (const auto& filter : u.downlink) f.subscriptions.push_back(routing_->MapTopic(dest, filter));
    f.on_message = [this, dest](mqtt::InboundMessage m) { OnDownlink(dest, std::move(m)); };
    f.reconnect_min = std::chrono::milliseconds(u.mqtt.reconnect_min_ms);
    f.reconnect_max = std::chrono::milliseconds(u.mqtt.reconnect_max_ms);
    f.status_interval = std::chrono::seconds(cfg_.gateway.status_interval_s);
    // The city sees the box's own status (and its will) when it takes gateway records.
    if (std::find(u.kinds.begin(), u.kinds.end(), "gateway") != u.kinds.end()) {
      f.status_topic = routing_->MapTopic(dest, StatusTopic(cfg_));
      f.status_payload = [this](bool online) { return StatusPayload(online, StatusView::kQuery); };
    }
    upstreams_.push_back(std::make_unique<pipeline::Forwarder>(*outbox_, LinkFor(u.mqtt), std::move(f)));
  }
  for (auto& f : upstreams_) f->Start();
  std::vector<std::string> filters;
  const auto& g = cfg_.gateway;
  // sanifleet's outputs only (not its admin API or the firmware chunk requests).
  std::string base = g.topic_prefix + "/" + g.site;
  if (routing_->AnyWants("fleet"))
    for (const char* leaf : {"/fleet/health/#", "/fleet/events", "/fleet/status", "/fleet/rollouts/#"})
      filters.push_back(base + leaf);
  if (routing_->AnyWants("heatmap")) filters.push_back(base + "/heatmap/#");
  if (filters.empty()) return;
  mqtt::LinkOptions l = LinkFor(cfg_.mqtt);
  l.client_id += "-relay";
  l.session_expiry_s = kRelaySessionExpiryS;
  relay_ = std::make_unique<upstream::Relay>(*outbox_, *routing_, std::move(l), std::move(filters),
                                             std::chrono::milliseconds(cfg_.mqtt.reconnect_min_ms),
                                             std::chrono::milliseconds(cfg_.mqtt.reconnect_max_ms));
  relay_->Start();
}

void Gateway::StopUpstreams() {
  // Their backlog stays in the outbox for the next start: nothing to drain here.
  for (auto& f : upstreams_) f->Stop(std::chrono::milliseconds(0));
  upstreams_.clear();
}

Status Gateway::StartAdapters() {
  RulesByDevice rules;
  std::unordered_map<std::string, dev::Adapter*> owner;
  std::vector<std::unique_ptr<dev::Adapter>> created;
  for (const auto& section : cfg_.adapters) {
    const dev::AdapterSpec* spec = FindSpec(section.protocol);
    if (!spec) return Internal("no compiled-in protocol " + section.protocol);
    dev::AdapterServices services{MakeMqttInputFactory(cfg_.mqtt)};
    auto a = spec->create(section.config, cfg_.gateway, services);
    for (auto& [dev, r] : a->Rules()) {
      rules[dev] = r;
      owner[dev] = a.get();
    }
    created.push_back(std::move(a));
  }
  pipeline_->SetRules(std::move(rules));
  for (auto& a : created) {
    if (Status st = a->Start(*pipeline_); !st.ok()) {
      spdlog::error("{}: cannot start: {}", a->protocol(), st.ToString());
      for (auto& b : created) b->Stop();
      return st;
    }
    spdlog::info("{}: started with {} devices", a->protocol(), a->Health().devices);
  }
  std::lock_guard lk(adapters_mu_);
  adapters_ = std::move(created);
  owner_ = std::move(owner);
  return Status::Ok();
}

void Gateway::StopAdapters() {
  std::vector<std::unique_ptr<dev::Adapter>> old;
  {
    std::lock_guard lk(adapters_mu_);
    old.swap(adapters_);
    owner_.clear();
  }
  for (auto& a : old) a->Stop();
}

// ---- [metrics] ----

std::string GatewayMetricsText(std::string_view status_json, bool mqtt_connected, bool per_device, int64_t now_ms) {
  using json = nlohmann::json;
  using service::MetricType;
  const auto kGauge = MetricType::kGauge, kCounter = MetricType::kCounter;
  json st = json::parse(status_json, nullptr, false);
  if (st.is_discarded() || !st.is_object()) st = json::object();
  auto num = [](const json& j, const char* key) -> double {
    auto it = j.find(key);
    return it != j.end() && it->is_number() ? it->get<double>() : 0.0;
  };
  auto age_s = [now_ms](const json& j, const char* key) -> double {
    auto it = j.find(key);
    if (it == j.end() || !it->is_number()) return 0.0;
    return std::max<double>(0.0, static_cast<double>(now_ms - it->get<int64_t>()) / 1000.0);
  };
  const json empty = json::object();
  auto obj = [&](const json& j, const char* key) -> const json& {
    auto it = j.find(key);
    return it != j.end() && it->is_object() ? *it : empty;
  };
  service::PrometheusText t;
  t.Family("sanigate_up", kGauge, "1 while sanigate runs and answers scrapes");
  t.Sample("sanigate_up", 1);
  t.Family("sanigate_build_info", kGauge, "Always 1; the installed version in the version label");
  t.Sample("sanigate_build_info", 1, {{"version", st.value("version", std::string())}});
  t.Family("sanigate_start_time_seconds", kGauge, "When this sanigate process started (Unix time)");
  t.Sample("sanigate_start_time_seconds", num(st, "started") / 1000.0);
  t.Family("sanigate_mqtt_connected", kGauge, "1 while the link to the local broker is up");
  t.Sample("sanigate_mqtt_connected", mqtt_connected ? 1 : 0);

  const json& ob = obj(st, "outbox");
  t.Family("sanigate_outbox_pending_records", kGauge, "Records in the outbox not yet delivered to the local broker");
  t.Sample("sanigate_outbox_pending_records", num(ob, "pending"));
  t.Family("sanigate_outbox_oldest_age_seconds", kGauge, "Age of the oldest pending record (0 when none)");
  t.Sample("sanigate_outbox_oldest_age_seconds", age_s(ob, "oldest_ts"));
  t.Family("sanigate_outbox_bytes", kGauge, "Bytes of the pending records");
  t.Sample("sanigate_outbox_bytes", num(ob, "bytes"));
  t.Family("sanigate_outbox_shed_records_total", kCounter, "Records dropped by the outbox limits since start, by priority");
  for (int p = 0; p < kPriorityCount; ++p) {
    const char* name = PriorityName(static_cast<Priority>(p));
    t.Sample("sanigate_outbox_shed_records_total", num(obj(ob, "shed"), name), {{"priority", name}});
  }

  t.Family("sanigate_adapter_state", kGauge, "1 for the adapter's current state (starting, running, degraded, stopped, failed)");
  t.Family("sanigate_adapter_devices", kGauge, "Devices configured on the adapter");
  t.Family("sanigate_adapter_devices_online", kGauge, "Devices of the adapter currently online");
  t.Family("sanigate_adapter_errors_total", kCounter, "Failed requests since start");
  t.Family("sanigate_adapter_polls_total", kCounter, "Poll cycles (Modbus) or messages received (event-driven protocols)");
  t.Family("sanigate_adapter_requests_total", kCounter, "Requests on the wire (request/response protocols)");
  if (per_device) {
    t.Family("sanigate_device_online", kGauge, "1 while the device is online");
    t.Family("sanigate_device_requests_total", kCounter, "Requests sent to the device");
    t.Family("sanigate_device_timeouts_total", kCounter, "Requests the device did not answer in time");
    t.Family("sanigate_device_exceptions_total", kCounter, "Protocol exceptions the device answered");
    t.Family("sanigate_device_errors_total", kCounter, "Failed requests to the device");
    t.Family("sanigate_device_latency_seconds", kGauge, "Latency of the device's last answer");
    t.Family("sanigate_device_max_latency_seconds", kGauge, "Highest answer latency of the device since start");
    t.Family("sanigate_device_polls_total", kCounter, "Poll cycles of the device (polled protocols only)");
    t.Family("sanigate_device_partial_polls_total", kCounter, "Poll cycles cut short after some answers (polled protocols only)");
    t.Family("sanigate_device_wrong_answers_total", kCounter, "Answers from the wrong slave (polled protocols only)");
  }
  for (const auto& [name, a] : obj(st, "adapters").items()) {
    std::vector<service::Label> l = {{"adapter", name}};
    t.Sample("sanigate_adapter_state", 1, {{"adapter", name}, {"state", a.value("state", std::string())}});
    t.Sample("sanigate_adapter_devices", num(a, "devices"), l);
    t.Sample("sanigate_adapter_devices_online", num(a, "online"), l);
    t.Sample("sanigate_adapter_errors_total", num(a, "errors"), l);
    t.Sample("sanigate_adapter_polls_total", num(a, "polls"), l);
    t.Sample("sanigate_adapter_requests_total", num(a, "requests"), l);
    if (!per_device) continue;
    for (const auto& [dev, d] : obj(a, "per_device").items()) {
      std::vector<service::Label> dl = {{"adapter", name}, {"device", dev}};
      t.Sample("sanigate_device_online", d.value("online", false) ? 1 : 0, dl);
      t.Sample("sanigate_device_requests_total", num(d, "requests"), dl);
      t.Sample("sanigate_device_timeouts_total", num(d, "timeouts"), dl);
      t.Sample("sanigate_device_exceptions_total", num(d, "exceptions"), dl);
      t.Sample("sanigate_device_errors_total", num(d, "errors"), dl);
      t.Sample("sanigate_device_latency_seconds", num(d, "latency_ms") / 1000.0, dl);
      t.Sample("sanigate_device_max_latency_seconds", num(d, "max_latency_ms") / 1000.0, dl);
      if (d.contains("polls")) {
        t.Sample("sanigate_device_polls_total", num(d, "polls"), dl);
        t.Sample("sanigate_device_partial_polls_total", num(d, "partial_polls"), dl);
        t.Sample("sanigate_device_wrong_answers_total", num(d, "wrong_answers"), dl);
      }
    }
  }

  auto ups = st.find("upstreams");
  if (ups != st.end() && ups->is_array() && !ups->empty()) {
    t.Family("sanigate_upstream_connected", kGauge, "1 while the link to the upstream broker is up");
    t.Family("sanigate_upstream_pending_records", kGauge, "Records the upstream is still owed");
    t.Family("sanigate_upstream_oldest_age_seconds", kGauge, "Age of the oldest record the upstream is owed (0 when none)");
    t.Family("sanigate_upstream_delivered_records_total", kCounter, "Records the upstream acknowledged");
    t.Family("sanigate_upstream_refused_records_total", kCounter, "Records the upstream broker refused");
    t.Family("sanigate_upstream_shed_records_total", kCounter, "Records dropped for the upstream by its limits, by priority");
    t.Family("sanigate_upstream_reconnects_total", kCounter, "Reconnections of the upstream link");
    t.Family("sanigate_upstream_connect_failures_total", kCounter, "Failed connection attempts to the upstream");
    t.Family("sanigate_upstream_sent_bytes_total", kCounter, "Bytes published to the upstream (topics and payloads)");
    t.Family("sanigate_upstream_downlink_accepted_total", kCounter, "Commands and admin requests taken from the upstream's down-link");
    t.Family("sanigate_upstream_downlink_dropped_total", kCounter, "Down-link messages dropped (not in the allow-list)");
    for (const auto& u : *ups) {
      std::string name = u.value("name", std::string());
      std::vector<service::Label> l = {{"upstream", name}};
      t.Sample("sanigate_upstream_connected", u.value("connected", false) ? 1 : 0, l);
      t.Sample("sanigate_upstream_pending_records", num(u, "pending"), l);
      t.Sample("sanigate_upstream_oldest_age_seconds", age_s(u, "oldest_ts"), l);
      t.Sample("sanigate_upstream_delivered_records_total", num(u, "delivered"), l);
      t.Sample("sanigate_upstream_refused_records_total", num(u, "refused"), l);
      for (int p = 0; p < kPriorityCount; ++p) {
        const char* prio = PriorityName(static_cast<Priority>(p));
        t.Sample("sanigate_upstream_shed_records_total", num(obj(u, "shed"), prio), {{"upstream", name}, {"priority", prio}});
      }
      t.Sample("sanigate_upstream_reconnects_total", num(u, "reconnects"), l);
      t.Sample("sanigate_upstream_connect_failures_total", num(u, "connect_failures"), l);
      t.Sample("sanigate_upstream_sent_bytes_total", num(u, "bytes_sent"), l);
      if (u.contains("downlink")) {
        t.Sample("sanigate_upstream_downlink_accepted_total", num(u["downlink"], "accepted"), l);
        t.Sample("sanigate_upstream_downlink_dropped_total", num(u["downlink"], "dropped"), l);
      }
    }
  }
  if (st.contains("relay") && st["relay"].is_object()) {
    const json& r = st["relay"];
    t.Family("sanigate_relay_connected", kGauge, "1 while the relay of sanifleet's outputs is connected to the local broker");
    t.Sample("sanigate_relay_connected", r.value("connected", false) ? 1 : 0);
    t.Family("sanigate_relay_relayed_total", kCounter, "sanifleet outputs taken into the outbox for the upstreams");
    t.Sample("sanigate_relay_relayed_total", num(r, "relayed"));
    t.Family("sanigate_relay_too_large_total", kCounter, "sanifleet outputs too large to relay");
    t.Sample("sanigate_relay_too_large_total", num(r, "too_large"));
  }
  return t.Text();
}

std::string Gateway::MetricsText() const {
  bool connected = forwarder_ && forwarder_->Stats().connected;
  return GatewayMetricsText(StatusPayload(true, StatusView::kFull), connected, cfg_.metrics.per_device, NowMs());
}

void Gateway::StartMetrics() {
  const auto& m = cfg_.metrics;
  if (m.listen.empty() || metrics_) return;
  service::MetricsHttpOptions o;
  o.host = m.host;
  o.port = m.port;
  o.allow_remote = m.allow_remote;
  auto server = service::MetricsHttpServer::Start(o, [this] { return MetricsText(); });
  if (!server.ok()) {
    spdlog::error("{}; running without the metrics endpoint", server.status().message());
    return;
  }
  metrics_ = std::move(*server);
  spdlog::info("metrics: serving http://{}/metrics", m.listen);
}

void Gateway::StopMetrics() {
  if (metrics_) metrics_->Stop();
  metrics_.reset();
}

Status Gateway::Start() {
  auto agent = FirmwareAgent::Create(cfg_, [this](const std::string& device, const std::function<void(dev::Adapter&)>& fn) {
    std::lock_guard lk(adapters_mu_);
    auto it = owner_.find(device);
    dev::Adapter* owner = it != owner_.end() ? it->second : nullptr;
    for (auto& a : adapters_)
      if (!owner && a->OwnsDevice(device)) owner = a.get();
    if (owner) fn(*owner);
    return owner != nullptr;
  },
  [this] {
    if (!forwarder_ || !forwarder_->Stats().connected) return false;
    std::lock_guard lk(adapters_mu_);
    for (const auto& a : adapters_)
      if (a->Health().state == "failed") return false;
    return true;
  },
  [] { ::kill(::getpid(), SIGUSR1); });  // main() stops cleanly, then re-executes the installed binary
  if (!agent.ok()) return agent.status();
  firmware_ = std::move(*agent);
  StartForwarder();
  StartUpstreams();
  Status st = StartAdapters();
  firmware_->Start();
  StartMetrics();
  return st;
}

Status Gateway::Reload(settings::Config next) {
  const auto &a = cfg_.gateway, &b = next.gateway;
  if (a.id != b.id || a.site != b.site || a.data_dir != b.data_dir || a.topic_prefix != b.topic_prefix ||
      cfg_.OutboxPath() != next.OutboxPath()) {
    spdlog::warn("reload: gateway identity, topic prefix and outbox location change only on "
                 "restart; keeping the running ones");
    next.gateway.id = a.id;
    next.gateway.site = a.site;
    next.gateway.data_dir = a.data_dir;
    next.gateway.topic_prefix = a.topic_prefix;
    next.outbox = cfg_.outbox;
  }
  auto same_upstreams = [](const settings::Config& x, const settings::Config& y) {
    if (x.upstreams.size() != y.upstreams.size()) return false;
    for (size_t i = 0; i < x.upstreams.size(); ++i) {
      const auto &u = x.upstreams[i], &v = y.upstreams[i];
      if (u.name != v.name || u.mqtt.url != v.mqtt.url || u.topic_prefix != v.topic_prefix || u.kinds != v.kinds ||
          u.include != v.include || u.exclude != v.exclude || u.mqtt.username != v.mqtt.username ||
          u.mqtt.password != v.mqtt.password || u.mqtt.client_id != v.mqtt.client_id ||
          u.max_backlog_rows != v.max_backlog_rows || u.max_age_h != v.max_age_h)
        return false;
    }
    return true;
  };
  if (!same_upstreams(cfg_, next)) {
    spdlog::warn("reload: [[upstream]] changes take effect on restart (each destination's backlog is "
                 "bound to the outbox); keeping the running ones");
    next.upstreams = cfg_.upstreams;
  }
  bool mqtt_changed = next.mqtt.url != cfg_.mqtt.url || next.mqtt.client_id != cfg_.mqtt.client_id ||
                      next.mqtt.username != cfg_.mqtt.username ||
                      next.mqtt.password != cfg_.mqtt.password ||
                      next.mqtt.keepalive_s != cfg_.mqtt.keepalive_s ||
                      next.mqtt.ack_timeout_s != cfg_.mqtt.ack_timeout_s ||
                      next.mqtt.inflight_window != cfg_.mqtt.inflight_window ||
                      next.mqtt.tls.enabled != cfg_.mqtt.tls.enabled ||
                      next.mqtt.tls.ca_file != cfg_.mqtt.tls.ca_file ||
                      next.mqtt.tls.cert_file != cfg_.mqtt.tls.cert_file ||
                      next.mqtt.tls.key_file != cfg_.mqtt.tls.key_file ||
                      next.mqtt.tls.verify_peer != cfg_.mqtt.tls.verify_peer ||
                      next.gateway.status_interval_s != cfg_.gateway.status_interval_s;
  StopMetrics();
  StopAdapters();
  cfg_ = std::move(next);
  spdlog::set_level(spdlog::level::from_str(cfg_.gateway.log_level));
  if (mqtt_changed) {
    spdlog::info("reload: MQTT settings changed, reconnecting");
    forwarder_->Stop(std::chrono::milliseconds(0));
    forwarder_.reset();
    StartForwarder();
  }
  Status st = StartAdapters();
  if (forwarder_) forwarder_->PublishStatusSoon();
  StartMetrics();
  return st;
}

void Gateway::Stop() {
  if (stopped_) return;
  stopped_ = true;
  StopMetrics();
  auto t0 = std::chrono::steady_clock::now();
  auto ms = [&] {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
  };
  if (firmware_) firmware_->Stop();
  StopAdapters();
  if (relay_) relay_->Stop();
  spdlog::debug("stop: adapters stopped after {} ms", ms());
  if (outbox_) {
    Status st = outbox_->Flush(std::chrono::milliseconds(5000));
    if (!st.ok()) spdlog::error("outbox: flush on stop: {}", st.ToString());
    spdlog::debug("stop: outbox flushed after {} ms", ms());
  }
  if (forwarder_) {
    forwarder_->Stop(std::chrono::milliseconds(cfg_.gateway.shutdown_drain_ms));
    forwarder_.reset();
    auto left = outbox_ ? outbox_->Stats().pending_rows : 0;
    spdlog::info("stop: link closed after {} ms; {} records stay in the outbox for the next start",
                 ms(), left);
  }
  StopUpstreams();
}

}  // namespace sanigate::app
