#include "settings/gateway_config.h"

#include <arpa/inet.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/topic_filter.h"

namespace sanigate::settings {
namespace {

void ParseGateway(Node& n, GatewaySection& g) {
  if (auto id = n.RequiredId("id")) g.id = *id;
  if (auto site = n.RequiredId("site")) g.site = *site;
  g.data_dir = n.String("data_dir", g.data_dir);
  if (g.data_dir.empty()) n.Problem("data_dir", "must not be empty");
  g.topic_prefix = ReadTopicPrefix(n, g.topic_prefix);
  g.log_level = n.OneOf("log_level", g.log_level, {"trace", "debug", "info", "warn", "error"});
  g.status_interval_s = n.Int("status_interval_s", g.status_interval_s, 1, 3600);
  g.shutdown_drain_ms = n.Int("shutdown_drain_ms", g.shutdown_drain_ms, 0, 60000);
  n.Finish();
}

}  // namespace

std::string ReadTopicPrefix(Node& n, const std::string& def) {
  std::string p = n.String("topic_prefix", def);
  if (p.empty() || p.find_first_of("+#") != std::string::npos || p.front() == '/' || p.back() == '/')
    n.Problem("topic_prefix", "\"" + p + "\" is not a valid topic prefix (no wildcards, no leading or trailing /)");
  return p;
}

std::string ReadSecretFile(Node& n, std::string_view key, const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    n.Problem(key, "cannot read \"" + path + "\": " + std::strerror(errno));
    return {};
  }
  // systemd's credentials (LoadCredential=) are the unit's alone; newer systemd grants the
  // service user read access with an ACL, which shows as group bits (0440): only others count.
  const char* credentials = std::getenv("CREDENTIALS_DIRECTORY");
  bool from_systemd = credentials && *credentials && path.rfind(std::string(credentials) + "/", 0) == 0;
  if (st.st_mode & (from_systemd ? mode_t{S_IRWXO} : mode_t{S_IRWXG | S_IRWXO})) {
    n.Problem(key, "\"" + path + "\" must not be readable by " + (from_systemd ? "others (chmod o-rwx)" : "group or others (chmod 600)"));
    return {};
  }
  std::ifstream in(path);
  std::string secret;
  std::getline(in, secret);  // first line; a trailing newline is not part of the secret
  return secret;
}

bool SplitListenAddress(std::string_view listen, std::string& host, uint16_t& port) {
  size_t colon = listen.rfind(':');
  if (colon == std::string_view::npos || colon == 0) return false;
  std::string_view h = listen.substr(0, colon), p = listen.substr(colon + 1);
  bool v6 = h.front() == '[';
  if (v6) {
    if (h.size() < 3 || h.back() != ']') return false;
    h = h.substr(1, h.size() - 2);
  }
  std::string hs(h);
  unsigned char buf[16];
  if (::inet_pton(v6 ? AF_INET6 : AF_INET, hs.c_str(), buf) != 1) return false;
  if (p.empty() || p.size() > 5) return false;
  uint32_t v = 0;
  for (char c : p) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + static_cast<uint32_t>(c - '0');
  }
  if (v == 0 || v > 65535) return false;
  host = hs;
  port = static_cast<uint16_t>(v);
  return true;
}

bool IsLoopbackAddress(const std::string& host) {
  unsigned char b[16];
  if (::inet_pton(AF_INET, host.c_str(), b) == 1) return b[0] == 127;
  if (::inet_pton(AF_INET6, host.c_str(), b) == 1) {
    for (int i = 0; i < 15; ++i)
      if (b[i]) return false;
    return b[15] == 1;
  }
  return false;
}

void ParseMetricsSection(Node& n, MetricsSection& m, bool with_per_device) {
  m.listen = n.String("listen", "");
  m.allow_remote = n.Bool("allow_remote", m.allow_remote);
  if (with_per_device) m.per_device = n.Bool("per_device", m.per_device);
  if (!m.listen.empty()) {
    if (!SplitListenAddress(m.listen, m.host, m.port))
      n.Problem("listen", "\"" + m.listen + "\" is not an address like \"127.0.0.1:9187\" or \"[::1]:9187\" (IP literal, port 1-65535)");
    else if (!m.allow_remote && !IsLoopbackAddress(m.host))
      n.Problem("listen", "\"" + m.listen + "\" is not a loopback address: the endpoint has no authentication; "
                          "set allow_remote = true to expose it anyway");
    else if (!IsLoopbackAddress(m.host))
      n.Warn("listen", "\"" + m.listen + "\" exposes the metrics beyond this box (no authentication, no TLS)");
  }
  n.Finish();
}

static void ParseTls(Node& n, TlsSection& t) {
  t.enabled = n.Bool("enabled", t.enabled);
  t.ca_file = n.String("ca_file", t.ca_file);
  t.cert_file = n.String("cert_file", t.cert_file);
  t.key_file = n.String("key_file", t.key_file);
  t.verify_peer = n.Bool("verify_peer", t.verify_peer);
  for (auto [key, file] : {std::pair{"ca_file", &t.ca_file}, std::pair{"cert_file", &t.cert_file},
                           std::pair{"key_file", &t.key_file}}) {
    if (!file->empty() && !std::filesystem::exists(*file))
      n.Problem(key, "\"" + *file + "\" does not exist");
  }
  if (t.cert_file.empty() != t.key_file.empty())
    n.Problem(t.cert_file.empty() ? "key_file" : "cert_file",
              "cert_file and key_file must be given together");
  n.Finish();
}

void ParseMqttSection(Node& n, MqttSection& m, const std::string& default_client_id) {
  m.url = n.String("url", m.url);
  bool tls_scheme = m.url.rfind("ssl://", 0) == 0 || m.url.rfind("mqtts://", 0) == 0;
  if (m.url.empty())
    n.Problem("url", "is required (e.g. \"mqtts://city.example:8883\")");
  else if (m.url.rfind("tcp://", 0) != 0 && m.url.rfind("mqtt://", 0) != 0 && !tls_scheme)
    n.Problem("url", "\"" + m.url + "\" must start with tcp://, mqtt://, ssl:// or mqtts://");
  m.client_id = n.String("client_id", default_client_id);
  m.username = n.String("username", m.username);
  bool has_pw = n.Has("password"), has_pw_file = n.Has("password_file");
  m.password = n.String("password", "");
  std::string pw_file = n.String("password_file", "");
  if (has_pw && has_pw_file) n.Problem("password_file", "give password or password_file, not both");
  else if (has_pw_file && !pw_file.empty()) m.password = ReadSecretFile(n, "password_file", pw_file);
  m.keepalive_s = n.Int("keepalive_s", m.keepalive_s, 5, 3600);
  m.connect_timeout_s = n.Int("connect_timeout_s", m.connect_timeout_s, 1, 300);
  m.ack_timeout_s = n.Int("ack_timeout_s", m.ack_timeout_s, 0, 3600);
  m.inflight_window = n.Int("inflight_window", m.inflight_window, 1, 65535);
  m.reconnect_min_ms = n.Int("reconnect_min_ms", m.reconnect_min_ms, 10, 600000);
  m.reconnect_max_ms = n.Int("reconnect_max_ms", m.reconnect_max_ms, 10, 3600000);
  if (m.reconnect_max_ms < m.reconnect_min_ms)
    n.Problem("reconnect_max_ms", std::to_string(m.reconnect_max_ms) +
                                      " is below reconnect_min_ms (" +
                                      std::to_string(m.reconnect_min_ms) + ")");
  if (auto tls = n.Table("tls")) ParseTls(*tls, m.tls);
  if (tls_scheme) m.tls.enabled = true;
  if (m.tls.enabled && !tls_scheme)
    n.Problem("url", "tls.enabled needs an ssl:// or mqtts:// url, got \"" + m.url + "\"");
  n.Finish();
}

namespace {

void ParseOutbox(Node& n, OutboxSection& o) {
  o.path = n.String("path", o.path);
  if (o.path.empty()) n.Problem("path", "must not be empty");
  o.max_rows = n.Int("max_rows", o.max_rows, 1000, 1'000'000'000);
  o.max_mb = n.Int("max_mb", o.max_mb, 1, 1'000'000);
  o.max_age_h = n.Int("max_age_h", o.max_age_h, 1, 24 * 365);
  o.commit_max_rows = n.Int("commit_max_rows", o.commit_max_rows, 1, 100000);
  o.commit_linger_ms = n.Int("commit_linger_ms", o.commit_linger_ms, 0, 1000);
  o.synchronous = n.OneOf("synchronous", o.synchronous, {"full", "normal"});
  n.Finish();
}

void ParseUpstream(Node& n, const GatewaySection& g, UpstreamSection& u) {
  u.name = n.RequiredId("name").value_or("");
  if (u.name == "local") n.Problem("name", "\"local\" is the local broker's name; choose another");
  // A far broker over a WAN: give up slower than on the local one, never hammer it.
  u.mqtt.url.clear();
  u.mqtt.reconnect_min_ms = 1000;
  u.mqtt.reconnect_max_ms = 60000;
  u.topic_prefix = ReadTopicPrefix(n, g.topic_prefix);
  u.kinds = n.Has("kinds") ? n.StringArray("kinds") : UpstreamKinds();
  for (const auto& k : u.kinds)
    if (std::find(UpstreamKinds().begin(), UpstreamKinds().end(), k) == UpstreamKinds().end())
      n.Problem("kinds", "unknown kind \"" + k + "\" (telemetry, event, status, fleet, heatmap, gateway)");
  u.include = n.StringArray("include");
  u.exclude = n.StringArray("exclude");
  for (const auto* list : {&u.include, &u.exclude})
    for (const auto& f : *list)
      if (!IsValidTopicFilter(f))
        n.Problem(list == &u.include ? "include" : "exclude", "\"" + f + "\" is not an MQTT topic filter");
  u.max_backlog_rows = n.Int("max_backlog_rows", 0, 0, 1'000'000'000);
  u.max_msgs_per_s = n.Double("max_msgs_per_s", 0, 0, 1e6);
  u.max_kib_s = n.Int("max_kib_s", 0, 0, 10'000'000);
  u.batch_max_records = n.Int("batch_max_records", 0, 0, 10000);
  u.batch_max_kib = n.Int("batch_max_kib", u.batch_max_kib, 1, 16384);
  u.compression = n.OneOf("compression", u.compression, {"none", "deflate", "zstd"});
  if (u.compression != "none" && u.batch_max_records <= 1)
    n.Problem("compression", "compresses batches: set batch_max_records above 1 too");
  u.downlink = n.StringArray("downlink");
  for (const auto& f : u.downlink) {
    // Only what the gateway answers: device commands and its own admin verbs.
    std::string cmd = g.topic_prefix + "/" + g.site + "/devices/";
    std::string admin = g.topic_prefix + "/" + g.site + "/gateway/" + g.id + "/admin/";
    bool is_cmd = f.rfind(cmd, 0) == 0 && f.find("/cmd/", cmd.size()) != std::string::npos;
    if (!IsValidTopicFilter(f) || (!is_cmd && f.rfind(admin, 0) != 0))
      n.Problem("downlink", "\"" + f + "\" is not a filter of this gateway's commands (" + cmd +
                                "{device}/cmd/{name}) or admin verbs (" + admin + "{verb})");
  }
  u.max_age_h = n.Int("max_age_h", 0, 0, 24 * 365);
  // The rest is an [mqtt] table: url, client id, credentials, TLS, keep-alive, window, backoff.
  ParseMqttSection(n, u.mqtt, "sanigate-" + g.id);
}

void ParseFirmware(Node& n, FirmwareSection& f) {
  if (n.Has("trusted_keys")) f.trusted_keys = n.StringArray("trusted_keys");
  for (const auto& k : f.trusted_keys)
    if (!std::filesystem::exists(k)) n.Problem("trusted_keys", "no such file " + k);
  f.cache_dir = n.String("cache_dir", f.cache_dir);
  f.chunk_kib = n.Int("chunk_kib", f.chunk_kib, 1, 256);
  f.window = n.Int("window", f.window, 1, 64);
  f.max_kib_s = n.Int("max_kib_s", f.max_kib_s, 1, 1'000'000);
  f.request_timeout_ms = n.Int("request_timeout_ms", f.request_timeout_ms, 100, 600'000);
  f.job_timeout_s = n.Int("job_timeout_s", f.job_timeout_s, 10, 7 * 86400);
  f.self_install_command = n.String("self_install_command", "");
  f.self_rollback_command = n.String("self_rollback_command", "");
  f.self_check_command = n.String("self_check_command", "");
  f.version_file = n.String("version_file", "");
  f.self_health_s = n.Int("self_health_s", f.self_health_s, 1, 3600);
  if (!f.self_install_command.empty() && f.self_rollback_command.empty())
    n.Problem("self_rollback_command", "is required with self_install_command: a box that does not come up healthy must go back");
  n.Finish();
}

Result<Config> Walk(ParsedFile parsed, ConfigErrors& errors, const std::string& name,
                    const std::vector<SectionParser>& sections) {
  Config cfg;
  cfg.file = name;
  if (parsed.table) {
    Node root(*parsed.table, "", errors);
    if (auto g = root.Table("gateway")) ParseGateway(*g, cfg.gateway);
    else errors.Add(1, 1, "gateway", "required section is missing");
    if (auto m = root.Table("mqtt")) ParseMqttSection(*m, cfg.mqtt, "sanigate-" + cfg.gateway.id);
    else cfg.mqtt.client_id = "sanigate-" + cfg.gateway.id;
    if (auto o = root.Table("outbox")) ParseOutbox(*o, cfg.outbox);
    if (auto f = root.Table("firmware")) ParseFirmware(*f, cfg.firmware);
    if (auto m = root.Table("metrics")) ParseMetricsSection(*m, cfg.metrics, true);
    auto ups = root.TableArray("upstream");
    if (ups.size() > 15) root.Problem("upstream", "at most 15 upstream destinations");
    for (auto& u : ups) {
      UpstreamSection up;
      ParseUpstream(u, cfg.gateway, up);
      for (const auto& other : cfg.upstreams)
        if (other.name == up.name) u.Problem("name", "\"" + up.name + "\" is used by another [[upstream]]");
      cfg.upstreams.push_back(std::move(up));
    }
    for (const auto& section : sections) {
      if (auto t = root.Table(section.name)) {
        std::any parsed_section = section.parse(*t, cfg.gateway);
        if (parsed_section.has_value()) cfg.adapters.push_back({section.name, std::move(parsed_section)});
      }
    }
    root.Finish();
  }
  if (!errors.empty()) return Invalid(errors.Joined());
  cfg.warnings = errors.Warnings();
  return cfg;
}

}  // namespace

std::vector<std::string> ProfileDirs(Node& section) {
  if (section.Has("profiles_dir")) return {section.String("profiles_dir", "")};
  std::filesystem::path beside = std::filesystem::path(section.errors().file()).parent_path() / "profiles";
  return {beside.string(), kPackagedProfilesDir};
}

std::string FindProfile(const std::vector<std::string>& dirs, const std::string& name) {
  std::error_code ec;
  for (const auto& d : dirs) {
    std::filesystem::path f = std::filesystem::path(d) / (name + ".toml");
    if (std::filesystem::exists(f, ec)) return f.string();
  }
  return {};
}

std::string ProfilePlaces(const std::vector<std::string>& dirs, const std::string& name) {
  std::string out;
  for (const auto& d : dirs) {
    if (!out.empty()) out += " or ";
    out += (std::filesystem::path(d) / (name + ".toml")).string();
  }
  return out;
}

std::string Config::OutboxPath() const {
  std::filesystem::path p(outbox.path);
  if (p.is_absolute()) return p.string();
  return (std::filesystem::path(gateway.data_dir) / p).string();
}

std::string Config::FirmwareDir() const {
  std::filesystem::path p(firmware.cache_dir);
  if (p.is_absolute()) return p.string();
  return (std::filesystem::path(gateway.data_dir) / p).string();
}

Result<Config> LoadConfig(const std::string& path, const std::vector<SectionParser>& sections) {
  ConfigErrors errors(path);
  return Walk(ParseFile(path, errors), errors, path, sections);
}

Result<Config> LoadConfigString(std::string_view text, const std::string& name,
                                const std::vector<SectionParser>& sections) {
  ConfigErrors errors(name);
  return Walk(ParseString(text, name, errors), errors, name, sections);
}

}  // namespace sanigate::settings
