// tail: the live normalized stream of a site, one line (or one JSON line) per message.
// cmd: a device command as an MQTT 5 request to the device's gateway, waiting for its answer.
// downlinks: the LoRaWAN command queues the gateways' retained statuses show.
#include <signal.h>

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
using Clock = std::chrono::steady_clock;

constexpr auto kRetainedQuiet = 300ms;

volatile sig_atomic_t g_stop_requested = 0;

void OnStopSignal(int) { g_stop_requested = 1; }

// Ctrl-C and SIGTERM end `tail` normally (exit 0) at its next check, within 100 ms.
void CatchStopSignals() {
  struct sigaction sa {};
  sa.sa_handler = OnStopSignal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}

bool ValidFilter(const std::string& f) {
  for (char c : f)
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-' || c == '*'))
      return false;
  return true;
}

// A command name is one topic level: no wildcards, no separators.
bool ValidCommandName(const std::string& n) {
  return !n.empty() && n.find_first_of("/+#") == std::string::npos;
}

bool IsUnknownDevice(const json& answer) {
  return answer.contains("error") && answer["error"].is_string() &&
         answer["error"].get<std::string>().rfind("unknown device", 0) == 0;
}

// Every gateway of the site takes a device's command topic, and those that do not own the
// device answer "unknown device" at once. So the answer that counts is the first other one;
// "unknown device" is final only when every gateway that is online said so (or at the deadline).
Result<json> AwaitCommandAnswer(const Context& ctx, AdminClient& client, const std::string& topic,
                                const json& request, std::chrono::milliseconds wait) {
  auto deadline = Clock::now() + wait;
  auto sent = client.Send(topic, request.dump());
  if (!sent.ok()) return sent.status();
  size_t online = 0;
  auto statuses = client.CollectRetained(mqtt::topics::GatewayStatus(ctx.admin.prefix, ctx.admin.site, "+"),
                                         kRetainedQuiet, wait);
  if (statuses.ok())
    for (const auto& m : statuses.value()) {
      json s = json::parse(m.payload, nullptr, false);
      if (s.is_object() && s.value("online", false)) online++;
    }
  std::optional<json> unknown;
  size_t unknown_answers = 0;
  while (true) {
    auto answer = client.Await(sent.value(), deadline);
    if (!answer.ok()) {
      if (answer.status().code() == Code::kDeadline && unknown) return *unknown;
      return answer;
    }
    if (!IsUnknownDevice(answer.value())) return answer;
    unknown = answer.value();
    if (++unknown_answers >= std::max<size_t>(online, 1)) return *unknown;
  }
}

}  // namespace

int RunTail(const Context& ctx, const TailArgs& a) {
  if (!RequireSite(ctx)) return kExitUsage;
  if (!ValidFilter(a.filter)) {
    std::cerr << "sanictl: tail filter \"" << a.filter << "\" must be a device id or a glob of [a-z0-9._-] and '*'\n";
    return kExitUsage;
  }
  const auto& p = ctx.admin.prefix;
  const auto& site = ctx.admin.site;
  bool glob = a.filter.find('*') != std::string::npos;
  std::string device_level = a.filter.empty() || glob ? "+" : a.filter;

  int connect_exit = kExitOk;
  auto client = ConnectOrExplain(ctx, connect_exit);
  if (!client) return connect_exit;
  CatchStopSignals();
  for (const std::string& filter :
       {mqtt::topics::Device(p, site, device_level, "+"), mqtt::topics::GatewayStatus(p, site, "+")}) {
    if (Status st = client->Subscribe(filter); !st.ok()) return Explain(st);
  }

  auto end = a.seconds ? Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(*a.seconds))
                       : Clock::time_point::max();
  int64_t shown = 0;
  while (!g_stop_requested && Clock::now() < end) {
    auto m = client->Next(std::min(end, Clock::now() + 100ms));
    if (!m || m->payload.empty()) continue;  // timeout tick, or a cleared retained status
    auto t = mqtt::topics::ParseModelTopic(p, m->topic);
    if (!t) continue;
    bool device_msg = t->group == "devices" && (t->leaf == "telemetry" || t->leaf == "event" || t->leaf == "status");
    bool gateway_msg = t->group == "gateway" && t->leaf == "status";
    if (!device_msg && !gateway_msg) continue;
    if (!a.filter.empty() && !GlobMatch(a.filter, t->id)) continue;
    json payload = json::parse(m->payload, nullptr, false);
    if (ctx.json) {
      std::cout << json{{"topic", m->topic}, {"payload", payload.is_discarded() ? json(m->payload) : payload}}.dump()
                << std::endl;
    } else {
      std::cout << TailLine({t->group, t->id, t->leaf, payload}, ctx.color) << std::endl;
    }
    if (!std::cout) break;  // the reader went away (`sanictl tail | head`)
    if (a.count && ++shown >= *a.count) break;
  }
  return kExitOk;
}

int RunCmd(const Context& ctx, const std::string& device, const std::string& name, const std::vector<std::string>& args) {
  if (!RequireSite(ctx)) return kExitUsage;
  if (!settings::IsValidId(device)) {
    std::cerr << "sanictl: \"" << device << "\" is not a valid device id ([a-z0-9._-]+)\n";
    return kExitUsage;
  }
  if (!ValidCommandName(name)) {
    std::cerr << "sanictl: \"" << name << "\" is not a valid command name\n";
    return kExitUsage;
  }
  json request = {{"args", args}};
  auto wait = ctx.timeout;
  if (ctx.timeout_given) {
    // The gateway gives up on the device after timeout_ms and says so: leave its answer time to
    // arrive, so a slow device reads as "timed out" (exit 1), not as "no answer" (exit 3).
    request["timeout_ms"] = ctx.timeout.count();
    wait += 500ms;
  }
  int connect_exit = kExitOk;
  auto client = ConnectOrExplain(ctx, connect_exit);
  if (!client) return connect_exit;
  std::string topic = mqtt::topics::Device(ctx.admin.prefix, ctx.admin.site, device, "cmd/" + name);
  // A reply topic the broker does not deliver to this user would look like a missing gateway.
  if (auto synced = client->Sync(Clock::now() + ctx.timeout); !synced.ok()) return Explain(synced.status());
  auto answer = AwaitCommandAnswer(ctx, *client, topic, request, wait);
  client->Close();
  if (!answer.ok()) {
    if (answer.status().code() == Code::kDeadline) {
      std::cerr << "no answer on " << topic << " within " << ctx.timeout.count()
                << " ms: no gateway took the command (is the device's gateway online?)\n";
      return kExitUnreachable;
    }
    return Explain(answer.status());
  }
  const json& a = answer.value();
  bool ok = a.contains("ok") && a["ok"].is_boolean() && a["ok"].get<bool>();
  std::string error = a.contains("error") && a["error"].is_string() ? a["error"].get<std::string>() : "";
  if (ctx.json) {
    std::cout << a.dump() << "\n";
  } else if (ok) {
    const json result = a.contains("result") ? a["result"] : json(nullptr);
    if (result.is_object() && !result.empty()) {
      std::vector<std::pair<std::string, std::string>> kv;
      for (const auto& [k, v] : result.items()) kv.emplace_back(k, ValueText(v));
      std::cout << device << " " << name << ": ok\n" << RenderKeyValues(kv);
    } else {
      std::cout << device << " " << name << ": ok" << (result.is_null() ? "" : " " + ValueText(result)) << "\n";
    }
  }
  if (ok) return kExitOk;
  std::cerr << "sanictl: " << device << " " << name << " failed: " << (error.empty() ? a.dump() : error) << "\n";
  return CommandFailureExit(a);
}

int RunDownlinks(const Context& ctx, const std::string& device) {
  if (!RequireSite(ctx)) return kExitUsage;
  if (!ValidFilter(device) || device.find('*') != std::string::npos) {
    std::cerr << "sanictl: \"" << device << "\" is not a device id\n";
    return kExitUsage;
  }
  int connect_exit = kExitOk;
  auto client = ConnectOrExplain(ctx, connect_exit);
  if (!client) return connect_exit;
  auto statuses = client->CollectRetained(mqtt::topics::GatewayStatus(ctx.admin.prefix, ctx.admin.site, "+"),
                                          kRetainedQuiet, ctx.timeout);
  if (!statuses.ok()) return Explain(statuses.status());
  // One row per queued command: the gateway, the device and the command as the status lists it.
  json rows = json::array();
  for (const auto& m : statuses.value()) {
    json s = json::parse(m.payload, nullptr, false);
    if (!s.is_object()) continue;
    const json queues = s.value("/adapters/lorawan/details/downlink_queue"_json_pointer, json::object());
    if (!queues.is_object()) continue;
    for (const auto& [dev, list] : queues.items()) {
      if ((!device.empty() && dev != device) || !list.is_array()) continue;
      for (const auto& q : list) {
        if (!q.is_object()) continue;
        json row = q;
        row["gateway"] = s.value("gateway", m.topic);
        row["device"] = dev;
        rows.push_back(std::move(row));
      }
    }
  }
  if (ctx.json) {
    std::cout << json{{"downlinks", rows}}.dump() << "\n";
    return kExitOk;
  }
  if (rows.empty()) {
    std::cout << (device.empty() ? std::string("no LoRaWAN commands are waiting") : "no LoRaWAN commands wait for " + device) << "\n";
    return kExitOk;
  }
  int64_t now = NowMs();
  auto ms = [](const json& row, const char* key) {
    return row.contains(key) && row[key].is_number_integer() ? row[key].get<int64_t>() : int64_t{0};
  };
  Table t;
  t.headers = {"GATEWAY", "DEVICE", "ID", "COMMAND", "PORT", "CONFIRMED", "STATE", "SENT", "QUEUED", "EXPIRES"};
  for (const auto& row : rows) {
    std::string expires = ms(row, "expires") > 0 ? RelativeTime(ms(row, "expires"), now) : "-";
    t.rows.push_back({ValueText(row["gateway"]), ValueText(row["device"]), ValueText(row.value("id", json())),
                      ValueText(row.value("command", json())), ValueText(row.value("fport", json())),
                      row.value("confirmed", json()).is_boolean() && row["confirmed"].get<bool>() ? "yes" : "no",
                      ValueText(row.value("state", json())), ValueText(row.value("attempts", json())) + "x",
                      RelativeTime(ms(row, "queued"), now), expires});
  }
  std::cout << RenderTable(t, ctx.color);
  return kExitOk;
}

}  // namespace sanigate::ctl
