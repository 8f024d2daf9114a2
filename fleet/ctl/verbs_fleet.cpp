// status, devices list|show, health: reads of the gateways' retained statuses and of sanifleet's
// admin API (fleet/README.md), rendered as tables or passed through as JSON.
#include <algorithm>
#include <iostream>
#include <optional>

#include "ctl/answers.h"
#include "ctl/format.h"
#include "ctl/verbs.h"
#include "mqtt/topics.h"
#include "settings/reader.h"

namespace sanigate::ctl {
namespace {

using namespace std::chrono_literals;

constexpr auto kRetainedQuiet = 300ms;  // no new retained message for this long: we have them all

std::string Str(const json& obj, const char* key, const std::string& def = "-") {
  if (!obj.is_object() || !obj.contains(key) || obj[key].is_null()) return def;
  std::string s = ValueText(obj[key]);
  return s.empty() ? def : s;
}

int64_t Ms(const json& obj, const char* key) {
  return obj.is_object() && obj.contains(key) && obj[key].is_number_integer() ? obj[key].get<int64_t>() : 0;
}

std::string YesNo(const json& obj, const char* key) {
  if (!obj.is_object() || !obj.contains(key) || !obj[key].is_boolean()) return "-";
  return obj[key].get<bool>() ? "yes" : "no";
}

Color OnlineColor(const std::string& yes_no) {
  return yes_no == "yes" ? Color::kGreen : yes_no == "no" ? Color::kRed : Color::kNone;
}

// "ok 10, degraded 1, offline 1": known states in order of severity, then any others.
std::string ByState(const json& by_state, bool color) {
  std::string out;
  auto add = [&](const std::string& state, const json& n) {
    if (!out.empty()) out += ", ";
    out += Paint(state, HealthColor(state), color) + " " + ValueText(n);
  };
  if (!by_state.is_object()) return out;
  static const char* kOrder[] = {"ok", "degraded", "critical", "offline", "unknown"};
  for (const char* s : kOrder)
    if (by_state.contains(s)) add(s, by_state[s]);
  for (const auto& [s, n] : by_state.items())
    if (std::find(std::begin(kOrder), std::end(kOrder), s) == std::end(kOrder)) add(s, n);
  return out;
}

std::string Adapters(const json& status) {
  if (!status.contains("adapters") || !status["adapters"].is_object() || status["adapters"].empty()) return "-";
  std::string out;
  for (const auto& [name, a] : status["adapters"].items()) {
    if (!out.empty()) out += ' ';
    out += name + ":" + (a.is_object() ? Str(a, "state", "?") : ValueText(a));
  }
  return out;
}

// The verdict's reasons as they read now (a silence counted up to now_ms).
std::string Reasons(const json& verdict, int64_t now_ms) {
  std::string out;
  if (!verdict.contains("reasons") || !verdict["reasons"].is_array()) return out;
  for (const auto& r : verdict["reasons"]) {
    if (!out.empty()) out += "; ";
    out += ReasonText(r, Ms(verdict, "last_seen"), now_ms);
  }
  return out;
}

// A --state filter names a health state; anything else is bad usage before anything is sent.
bool ValidStateFilter(const std::string& state) {
  if (state.empty() || IsHealthState(state)) return true;
  std::cerr << "sanictl: --state \"" << state << "\" is not " << HealthStatesText() << "\n";
  return false;
}

// --kind and --gateway name ids ([a-z0-9._-]+): another value could match nothing but a typo.
bool ValidIdFilter(const char* option, const std::string& value) {
  if (value.empty() || settings::IsValidId(value)) return true;
  std::cerr << "sanictl: " << option << " \"" << value << "\" is not a valid id ([a-z0-9._-]+)\n";
  return false;
}

void PrintJson(const json& doc) { std::cout << doc.dump() << "\n"; }

}  // namespace

int RunStatus(const Context& ctx) {
  if (!RequireSite(ctx)) return kExitUsage;
  int connect_exit = kExitOk;
  auto client = ConnectOrExplain(ctx, connect_exit);
  if (!client) return connect_exit;
  const auto& p = ctx.admin.prefix;
  const auto& site = ctx.admin.site;

  // Ask sanifleet first (unless its retained status says it is offline), gather the retained
  // gateway statuses while it answers.
  std::string fleet_topic = mqtt::topics::FleetAdmin(p, site, "status");
  int rc = FleetReady(ctx, *client);
  auto deadline = std::chrono::steady_clock::now() + ctx.timeout;
  std::optional<Result<std::string>> sent;
  if (rc == kExitOk) sent = client->Send(fleet_topic, "{}", /*to_fleet=*/true);
  std::string filter = mqtt::topics::GatewayStatus(p, site, "+");
  auto retained = client->CollectRetained(filter, kRetainedQuiet, ctx.timeout);
  if (!retained.ok()) return Explain(retained.status());
  json fleet;
  if (sent)
    rc = FleetAnswer(ctx, fleet_topic, sent->ok() ? client->Await(sent->value(), deadline) : Result<json>(sent->status()), fleet);
  client->Close();

  int64_t now = NowMs();
  json gateways = json::array();
  Table t{{"GATEWAY", "ONLINE", "VERSION", "UPTIME", "ADAPTERS", "OUTBOX", "LAST STATUS"}, {}};
  for (const auto& m : retained.value()) {
    auto topic = mqtt::topics::ParseModelTopic(p, m.topic);
    std::string id = topic ? topic->id : m.topic;
    json s = json::parse(m.payload, nullptr, false);
    if (!s.is_object()) s = json::object();
    gateways.push_back({{"gateway", id}, {"status", s}});
    std::string online = YesNo(s, "online");
    int64_t started = Ms(s, "started");
    std::string pending = s.contains("outbox") && s["outbox"].is_object() ? Str(s["outbox"], "pending") : "-";
    t.rows.push_back({id, Cell(online, OnlineColor(online)), Str(s, "version"),
                      online == "yes" && started > 0 ? Duration(now - started) : "-", Adapters(s), pending,
                      RelativeTime(Ms(s, "ts"), now)});
  }

  if (ctx.json) {
    PrintJson({{"site", site}, {"gateways", gateways}, {"fleet", rc == kExitOk ? fleet : json(nullptr)}});
    return rc;
  }
  if (t.rows.empty()) std::cout << "no gateway has published a status on " << filter << "\n";
  else std::cout << RenderTable(t, ctx.color);
  if (rc == kExitOk && fleet.is_object()) {
    std::string line = "fleet " + Str(fleet, "fleet", "?") + " " + Str(fleet, "version", "?");
    if (int64_t started = Ms(fleet, "started"); started > 0) line += ", up " + Duration(now - started);
    line += ": " + Str(fleet, "devices", "0") + " devices";
    std::string states = ByState(fleet.value("by_state", json::object()), ctx.color);
    if (!states.empty()) line += " (" + states + ")";
    if (fleet.contains("gateways") && fleet["gateways"].is_array())
      line += ", " + std::to_string(fleet["gateways"].size()) + " gateways";
    std::cout << "\n" << line << "\n";
  }
  return rc;
}

int RunDevicesList(const Context& ctx, const DevicesListArgs& a) {
  if (!RequireSite(ctx) || !ValidStateFilter(a.state) || !ValidIdFilter("--kind", a.kind) ||
      !ValidIdFilter("--gateway", a.gateway))
    return kExitUsage;
  json args = json::object();
  if (!a.kind.empty()) args["kind"] = a.kind;
  if (!a.state.empty()) args["state"] = a.state;
  if (!a.gateway.empty()) args["gateway"] = a.gateway;
  if (a.limit) args["limit"] = *a.limit;
  int connect_exit = kExitOk;
  auto client = ConnectOrExplain(ctx, connect_exit);
  if (!client) return connect_exit;
  json result;
  if (int rc = FleetCall(ctx, *client, "devices", args, result); rc != kExitOk) return rc;
  if (ctx.json) {
    PrintJson(result);
    return kExitOk;
  }
  int64_t now = NowMs();
  Table t{{"DEVICE", "KIND", "PROTOCOL", "GATEWAY", "STATE", "LAST SEEN", "FIRMWARE"}, {}};
  const json& devices = result.contains("devices") && result["devices"].is_array() ? result["devices"] : json::array();
  for (const auto& d : devices) {
    std::string state = Str(d, "state");
    t.rows.push_back({Str(d, "device"), Str(d, "kind"), Str(d, "protocol"), Str(d, "gateway"),
                      Cell(state, HealthColor(state)), RelativeTime(Ms(d, "last_seen"), now), Str(d, "firmware")});
  }
  if (t.rows.empty()) {
    std::cout << "no devices\n";
    return kExitOk;
  }
  std::cout << RenderTable(t, ctx.color);
  size_t total = result.value("total", devices.size());
  if (total > devices.size())
    std::cout << "(" << devices.size() << " of " << total << " devices; raise --limit to see more)\n";
  return kExitOk;
}

int RunDevicesShow(const Context& ctx, const std::string& device) {
  if (!RequireSite(ctx)) return kExitUsage;
  if (!settings::IsValidId(device)) {
    std::cerr << "sanictl: \"" << device << "\" is not a valid device id ([a-z0-9._-]+)\n";
    return kExitUsage;
  }
  int connect_exit = kExitOk;
  auto client = ConnectOrExplain(ctx, connect_exit);
  if (!client) return connect_exit;
  json d;
  if (int rc = FleetCall(ctx, *client, "device", {{"device", device}}, d); rc != kExitOk) return rc;
  if (ctx.json) {
    PrintJson(d);
    return kExitOk;
  }
  int64_t now = NowMs();
  auto when = [&](int64_t ms) { return ms > 0 ? LocalDateTime(ms) + " (" + RelativeTime(ms, now) + ")" : "-"; };
  std::string state = Str(d, "state");
  const json& health = d.contains("health") && d["health"].is_object() ? d["health"] : json::object();
  std::vector<std::pair<std::string, std::string>> kv = {
      {"device", Str(d, "device")},
      {"site", Str(d, "site")},
      {"kind", Str(d, "kind")},
      {"protocol", Str(d, "protocol")},
      {"gateway", Str(d, "gateway")},
      {"profile", Str(d, "profile")},
      {"model", Str(d, "model")},
      {"firmware", Str(d, "firmware")},
      {"online", YesNo(d, "online")},
      {"state", Paint(state, HealthColor(state), ctx.color) +
                    (Ms(health, "since") > 0 ? " since " + when(Ms(health, "since")) : "")},
      {"first seen", when(Ms(d, "first_seen"))},
      {"last seen", when(Ms(d, "last_seen"))},
  };
  if (Ms(health, "expected_interval_ms") > 0) kv.emplace_back("expected every", Duration(Ms(health, "expected_interval_ms")));
  if (d.contains("location") && d["location"].is_object())
    kv.emplace_back("location", Str(d["location"], "lat") + ", " + Str(d["location"], "lon"));
  std::cout << RenderKeyValues(kv);

  if (d.contains("metrics") && d["metrics"].is_object() && !d["metrics"].empty()) {
    std::cout << "metrics";
    if (int64_t ts = Ms(d, "metrics_ts"); ts > 0)
      std::cout << " (as of " << LocalDateTime(ts) << ", " << RelativeTime(ts, now) << ")";
    std::cout << ":\n";
    Table m;
    for (const auto& [k, v] : d["metrics"].items()) m.rows.push_back({"  " + k, ValueText(v)});
    std::cout << RenderTable(m, ctx.color);
  }
  if (health.contains("reasons") && health["reasons"].is_array() && !health["reasons"].empty()) {
    std::cout << "health reasons:\n";
    Table r;
    for (const auto& reason : health["reasons"]) {
      std::string level = Str(reason, "level");
      r.rows.push_back({"  " + Str(reason, "code"), Cell(level, HealthColor(level)), ReasonText(reason, Ms(health, "last_seen"), now)});
    }
    std::cout << RenderTable(r, ctx.color);
  }
  return kExitOk;
}

int RunHealth(const Context& ctx, const HealthArgs& a) {
  if (!RequireSite(ctx) || !ValidStateFilter(a.state) || !ValidIdFilter("--kind", a.kind)) return kExitUsage;
  json args = json::object();
  if (a.problems) args["problems"] = true;
  if (!a.kind.empty()) args["kind"] = a.kind;
  if (!a.state.empty()) args["state"] = a.state;
  int connect_exit = kExitOk;
  auto client = ConnectOrExplain(ctx, connect_exit);
  if (!client) return connect_exit;
  json result;
  if (int rc = FleetCall(ctx, *client, "health", args, result); rc != kExitOk) return rc;
  if (ctx.json) {
    PrintJson(result);
    return kExitOk;
  }
  int64_t now = NowMs();
  Table t{{"DEVICE", "KIND", "STATE", "SINCE", "REASONS"}, {}};
  auto add = [&](const json& v, const std::string& id, const std::string& kind) {
    std::string state = Str(v, "state");
    t.rows.push_back({id, kind, Cell(state, HealthColor(state)), RelativeTime(Ms(v, "since"), now), Reasons(v, now)});
  };
  if (result.contains("devices") && result["devices"].is_array())
    for (const auto& v : result["devices"]) add(v, Str(v, "device"), Str(v, "kind"));
  // Gateways come after the devices. sanifleet filters them by site and problems only: a kind
  // filter other than "gateway" leaves them out, a state filter applies here.
  if ((a.kind.empty() || a.kind == "gateway") && result.contains("gateways") && result["gateways"].is_array())
    for (const auto& v : result["gateways"])
      if (a.state.empty() || Str(v, "state") == a.state) add(v, Str(v, "gateway"), "gateway");
  if (t.rows.empty()) {
    std::cout << (a.problems ? "no problems: every device and gateway is ok\n" : "no health verdicts yet\n");
    return kExitOk;
  }
  std::cout << RenderTable(t, ctx.color);
  return kExitOk;
}

}  // namespace sanigate::ctl
