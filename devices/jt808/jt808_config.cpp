#include "jt808/jt808_config.h"

#include <filesystem>
#include <map>

#include "api/host_port.h"
#include "jt808/frame.h"

namespace sanigate::dev::jt808 {
namespace {

bool AllDigits(const std::string& s) {
  if (s.empty() || s.size() > 20) return false;
  for (char c : s)
    if (c < '0' || c > '9') return false;
  return true;
}

}  // namespace

std::any ParseJt808Section(settings::Node& node, const settings::GatewaySection& gateway) {
  Jt808Config cfg;
  std::string listen = node.String("listen", "0.0.0.0:6808");
  if (auto hp = ParseHostPort(listen)) {
    cfg.host = hp->host;
    cfg.port = hp->port;
  } else {
    node.Problem("listen", "\"" + listen + "\" is not HOST:PORT (port 1..65535), e.g. \"0.0.0.0:6808\"");
  }

  std::string policy = node.OneOf("unknown_terminals", "refuse", {"refuse", "register"});
  cfg.unknown = policy == "register" ? UnknownPolicy::kRegister : UnknownPolicy::kRefuse;
  std::string registration = node.OneOf("registration", "known", {"open", "known", "locked"});
  cfg.registration = registration == "open"    ? RegistrationPolicy::kOpen
                     : registration == "known" ? RegistrationPolicy::kKnown
                                               : RegistrationPolicy::kLocked;
  cfg.takeover_after_s = node.Int("takeover_after_s", cfg.takeover_after_s, 0, 86400);
  cfg.device_prefix = node.String("device_prefix", cfg.device_prefix);
  if (!settings::IsValidId(cfg.device_prefix + "0"))
    node.Problem("device_prefix", "\"" + cfg.device_prefix + "\" cannot start a device id ([a-z0-9._-]+)");
  std::filesystem::path secret = node.String("secret_file", "jt808.secret");
  if (secret.is_relative()) secret = std::filesystem::path(gateway.data_dir) / secret;
  cfg.secret_file = secret.string();
  cfg.auth_timeout_s = node.Int("auth_timeout_s", cfg.auth_timeout_s, 1, 3600);
  cfg.idle_timeout_s = node.Int("idle_timeout_s", cfg.idle_timeout_s, 5, 86400);
  cfg.offline_after_s = node.Int("offline_after_s", cfg.offline_after_s, 0, 3600);
  cfg.max_connections = node.Int("max_connections", cfg.max_connections, 1, 1000000);
  cfg.max_per_ip = node.Int("max_per_ip", cfg.max_per_ip, 0, 1000000);
  cfg.max_frame_bytes = node.Int("max_frame_bytes", cfg.max_frame_bytes, 64, 65536);
  cfg.max_bad_frames = node.Int("max_bad_frames", cfg.max_bad_frames, 1, 1000000);
  cfg.subpackage_timeout_s = node.Int("subpackage_timeout_s", cfg.subpackage_timeout_s, 1, 3600);
  cfg.command_timeout_ms = node.Int("command_timeout_ms", cfg.command_timeout_ms, 100, 600000);
  cfg.max_send_queue_kb = node.Int("max_send_queue_kb", cfg.max_send_queue_kb, 4, 65536);
  cfg.upgrade_packet_bytes = node.Int("upgrade_packet_bytes", cfg.upgrade_packet_bytes, 64, 1023);
  cfg.upgrade_ack_timeout_ms = node.Int("upgrade_ack_timeout_ms", cfg.upgrade_ack_timeout_ms, 100, 600000);
  cfg.upgrade_retries = node.Int("upgrade_retries", cfg.upgrade_retries, 0, 100);

  std::map<std::string, std::string> phones, devices;
  for (auto& tn : node.TableArray("terminals")) {
    TerminalConfig t;
    if (auto phone = tn.RequiredString("phone")) {
      if (!AllDigits(*phone)) {
        tn.Problem("phone", "\"" + *phone + "\" is not a terminal phone number (1..20 digits)");
      } else {
        t.phone = NormalizePhone(*phone);
        auto [it, fresh] = phones.emplace(t.phone, tn.path());
        if (!fresh) tn.Problem("phone", "\"" + *phone + "\" is already used by " + it->second);
      }
    }
    if (auto id = tn.RequiredId("device")) {
      t.device = *id;
      auto [it, fresh] = devices.emplace(t.device, tn.path());
      if (!fresh) tn.Problem("device", "\"" + t.device + "\" is already used by " + it->second);
    }
    t.kind = tn.String("kind", t.kind);
    if (!settings::IsValidId(t.kind)) tn.Problem("kind", "\"" + t.kind + "\" is not a kind ([a-z0-9._-]+)");
    t.plate = tn.String("plate", "");
    t.auth_code = tn.String("auth_code", "");
    if (t.auth_code.size() > 64) tn.Problem("auth_code", "longer than 64 characters");
    tn.Finish();
    cfg.terminals.push_back(std::move(t));
  }
  if (cfg.terminals.empty() && cfg.unknown == UnknownPolicy::kRefuse)
    node.Problem("terminals", "no [[jt808.terminals]] and unknown_terminals = \"refuse\": no truck could ever connect");
  node.Finish();
  return cfg;
}

}  // namespace sanigate::dev::jt808
