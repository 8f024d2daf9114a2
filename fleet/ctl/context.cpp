#include "ctl/context.h"

#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>

#include "mqtt/topics.h"
#include "settings/reader.h"

namespace sanigate::ctl {
namespace {

using json = nlohmann::json;

bool ValidPrefix(const std::string& p) {
  return !p.empty() && p.find_first_of("+#") == std::string::npos && p.front() != '/' && p.back() != '/';
}

bool ValidBrokerUrl(const std::string& url) {
  for (const char* scheme : {"tcp://", "mqtt://", "ssl://", "mqtts://"})
    if (url.rfind(scheme, 0) == 0 && url.size() > std::strlen(scheme)) return true;
  return false;
}

bool ColorWanted() {
  const char* no_color = std::getenv("NO_COLOR");
  if (no_color != nullptr && *no_color != '\0') return false;
  const char* term = std::getenv("TERM");
  if (term != nullptr && std::string(term) == "dumb") return false;
  return ::isatty(STDOUT_FILENO) == 1;
}

// The sanictl config file: [mqtt] and [ctl]; unknown keys and sections are errors, as in the
// daemons' configs. Fills ctx and returns true, or prints every problem and returns false.
bool LoadCtlConfig(const std::string& path, Context& ctx, std::string& site, std::string& prefix) {
  settings::ConfigErrors errors(path);
  settings::ParsedFile parsed = settings::ParseFile(path, errors);
  if (parsed.table) {
    settings::Node root(*parsed.table, "", errors);
    if (auto m = root.Table("mqtt")) settings::ParseMqttSection(*m, ctx.admin.mqtt, ctx.admin.mqtt.client_id);
    if (auto c = root.Table("ctl")) {
      site = c->String("site", "");
      if (!site.empty() && !settings::IsValidId(site))
        c->Problem("site", "\"" + site + "\" is not a valid id ([a-z0-9._-]+)");
      prefix = c->String("topic_prefix", "sanigate/v1");
      if (!ValidPrefix(prefix))
        c->Problem("topic_prefix", "\"" + prefix + "\" is not a valid topic prefix (no wildcards, no leading or trailing /)");
      c->Finish();
    }
    root.Finish();
  }
  if (errors.empty()) return true;
  std::cerr << errors.Joined();
  if (!errors.Joined().empty() && errors.Joined().back() != '\n') std::cerr << "\n";
  return false;
}

}  // namespace

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::optional<Context> ResolveContext(const GlobalFlags& flags) {
  Context ctx;
  ctx.admin.mqtt.client_id = "sanictl-" + std::to_string(::getpid());
  std::string site, prefix = "sanigate/v1";
  std::string path = flags.config;
  if (path.empty() && std::filesystem::exists(kDefaultConfig)) path = kDefaultConfig;
  if (!path.empty()) {
    if (!LoadCtlConfig(path, ctx, site, prefix)) return std::nullopt;
    ctx.config_file = path;
  }
  if (!flags.broker.empty()) {
    if (!ValidBrokerUrl(flags.broker)) {
      std::cerr << "sanictl: --broker \"" << flags.broker
                << "\" must start with tcp://, mqtt://, ssl:// or mqtts://\n";
      return std::nullopt;
    }
    ctx.admin.mqtt.url = flags.broker;
    if (flags.broker.rfind("ssl://", 0) == 0 || flags.broker.rfind("mqtts://", 0) == 0) ctx.admin.mqtt.tls.enabled = true;
  }
  if (!flags.site.empty()) site = flags.site;
  if (!site.empty() && !settings::IsValidId(site)) {
    std::cerr << "sanictl: --site \"" << site << "\" is not a valid id ([a-z0-9._-]+)\n";
    return std::nullopt;
  }
  if (!flags.prefix.empty()) prefix = flags.prefix;
  if (!ValidPrefix(prefix)) {
    std::cerr << "sanictl: --prefix \"" << prefix << "\" is not a valid topic prefix\n";
    return std::nullopt;
  }
  if (flags.timeout_ms <= 0) {
    std::cerr << "sanictl: --timeout must be a positive number of milliseconds\n";
    return std::nullopt;
  }
  ctx.admin.site = site;
  ctx.admin.prefix = prefix;
  ctx.admin.timeout = std::chrono::milliseconds(flags.timeout_ms);
  ctx.timeout = ctx.admin.timeout;
  ctx.timeout_given = flags.timeout_given;
  ctx.json = flags.json;
  ctx.color = !flags.json && ColorWanted();
  return ctx;
}

bool RequireSite(const Context& ctx) {
  if (!ctx.admin.site.empty()) return true;
  std::cerr << "sanictl: no site given: use --site ID or set site in the [ctl] section of "
            << (ctx.config_file.empty() ? std::string(kDefaultConfig) : ctx.config_file) << "\n";
  return false;
}

std::unique_ptr<AdminClient> ConnectOrExplain(const Context& ctx, int& exit_code) {
  auto client = AdminClient::Connect(ctx.admin);
  if (!client.ok()) {
    exit_code = Explain(client.status());
    return nullptr;
  }
  exit_code = kExitOk;
  return std::move(client.value());
}

int Explain(const Status& status) {
  switch (status.code()) {
    case Code::kFailedPrecondition:  // the broker refused the user: its words are the message
      std::cerr << status.message() << "\n";
      return kExitNotAuthorized;
    case Code::kUnavailable:
    case Code::kDeadline:
      std::cerr << status.message() << "\n";
      return kExitUnreachable;
    case Code::kNotFound:
      std::cerr << "sanictl: " << status.message() << "\n";
      return kExitNotFound;
    default:
      std::cerr << "sanictl: " << status.message() << "\n";
      return kExitFailed;
  }
}

int FleetReady(const Context& ctx, AdminClient& client) {
  auto deadline = std::chrono::steady_clock::now() + ctx.timeout;
  if (Status st = client.FollowFleetStatus(mqtt::topics::FleetStatus(ctx.admin.prefix, ctx.admin.site), deadline); !st.ok())
    return Explain(st);
  if (std::string offline = client.FleetOffline(); !offline.empty()) {
    std::cerr << offline << "\n";
    return kExitUnreachable;
  }
  return kExitOk;
}

int FleetAnswer(const Context& ctx, const std::string& topic, Result<json> answer, json& result, int invalid_exit) {
  if (!answer.ok()) {
    if (answer.status().code() == Code::kDeadline) {
      std::cerr << "sanifleet did not answer on " << topic << " within " << ctx.timeout.count()
                << " ms\n";
      return kExitUnreachable;
    }
    return Explain(answer.status());
  }
  const json& a = answer.value();
  if (a.value("ok", false)) {
    result = a.contains("result") ? a["result"] : json(nullptr);
    return kExitOk;
  }
  std::string code = a.contains("code") && a["code"].is_string() ? a["code"].get<std::string>() : "";
  std::string error = a.contains("error") && a["error"].is_string() ? a["error"].get<std::string>() : a.dump();
  std::cerr << "sanictl: " << error << "\n";
  if (code == "not_found") return kExitNotFound;
  if (code == "invalid") return invalid_exit;
  return kExitFailed;
}

int FleetCall(const Context& ctx, AdminClient& client, const std::string& verb, const json& args, json& result,
              int invalid_exit) {
  if (int rc = FleetReady(ctx, client); rc != kExitOk) return rc;
  std::string topic = mqtt::topics::FleetAdmin(ctx.admin.prefix, ctx.admin.site, verb);
  return FleetAnswer(ctx, topic, client.Request(topic, args, ctx.timeout, /*to_fleet=*/true), result, invalid_exit);
}

}  // namespace sanigate::ctl
