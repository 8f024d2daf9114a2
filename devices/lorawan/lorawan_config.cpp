#include "lorawan/lorawan_config.h"

#include <sys/stat.h>

#include <filesystem>
#include <map>
#include <set>

#include "api/host_port.h"
#include "api/rules_config.h"
#include "lorawan/band_plan.h"

namespace sanigate::dev::lorawan {
namespace {

constexpr std::initializer_list<const char*> kLorawanVersions = {"1.0.0", "1.0.1", "1.0.2", "1.0.3",
                                                                 "1.0.4"};

// Keys from `keys_file`: [DEVEUI] tables with app_key / nwk_s_key / app_s_key.
struct KeyFile {
  std::unique_ptr<toml::table> table;
  std::string path;
};

// A key from the device entry, else from the keys file; errors name where it was looked for.
std::optional<Key> ReadKey(settings::Node& dn, const char* name, const KeyFile& keys, const std::string& eui_hex) {
  std::optional<std::string> text;
  if (dn.Has(name)) {
    text = dn.String(name, "");
  } else if (keys.table) {
    if (auto* t = keys.table->get_as<toml::table>(eui_hex))
      if (auto v = t->get_as<std::string>(name)) text = v->get();
  }
  if (!text) {
    dn.Problem(name, std::string("missing (in the device entry or under [") + eui_hex + "] of keys_file)");
    return std::nullopt;
  }
  auto k = ParseKey(*text, name);
  if (!k.ok()) {
    dn.Problem(name, k.status().message());  // the message never repeats the key itself
    return std::nullopt;
  }
  return *k;
}

void AddDefaultRules(LoraDeviceConfig& d, bool has_overflow, const std::set<std::string>& explicit_events) {
  std::set<std::string> metrics;
  for (const auto& l : d.profile->layouts)
    for (const auto& f : l.fields) metrics.insert(f.metric);
  if (!has_overflow && metrics.count("fill_level_pct")) d.rules.overflow = OverflowRule{"fill_level_pct", 90, 80};
  auto add = [&](const char* event, const char* metric, std::optional<double> at, std::optional<double> clear,
                 bool below, Severity sev) {
    if (explicit_events.count(event) || !metrics.count(metric)) return;
    EventRule e;
    e.event = event;
    e.metric = metric;
    e.active_at = at;
    e.clear_at = clear;
    e.below = below;
    e.severity = sev;
    d.rules.events.push_back(e);
  };
  add("tilt", "tilted", {}, {}, false, Severity::kWarning);
  add("fire", "fire_alarm", {}, {}, false, Severity::kCritical);
  add("fire", "temperature_c", 60.0, 50.0, false, Severity::kCritical);
  add("low_battery", "battery_pct", 20.0, 25.0, true, Severity::kWarning);
  add("low_battery", "battery_v", 3.3, 3.4, true, Severity::kWarning);
}

}  // namespace

std::any ParseLorawanSection(settings::Node& node, const settings::GatewaySection& gateway) {
  LorawanConfig cfg;
  std::string listen = node.String("listen", "0.0.0.0:1700");
  if (listen == "off") {
    cfg.udp_enabled = false;
  } else if (auto hp = ParseHostPort(listen)) {
    cfg.host = hp->host;
    cfg.port = hp->port;
  } else {
    node.Problem("listen", "\"" + listen + "\" is not HOST:PORT (port 1..65535), e.g. \"127.0.0.1:1700\", or \"off\"");
  }
  cfg.region = node.OneOf("region", "CN470", {"CN470", "EU868"});
  cfg.net_id = static_cast<uint32_t>(node.Int("net_id", 0, 0, 0xFFFFFF));
  cfg.dedup_window_ms = node.Int("dedup_window_ms", cfg.dedup_window_ms, 0, 2000);
  cfg.tx_power_dbm = static_cast<int>(node.Int("tx_power_dbm", cfg.tx_power_dbm, 0, 30));
  cfg.fcnt_search_epochs =
      static_cast<uint32_t>(node.Int("fcnt_search_epochs", cfg.fcnt_search_epochs, 1, 65536));
  cfg.downlink_queue_max = static_cast<uint32_t>(node.Int("downlink_queue_max", cfg.downlink_queue_max, 1, 64));
  cfg.downlink_timeout_s = node.Int("downlink_timeout_s", cfg.downlink_timeout_s, 10, 7 * 86400);
  cfg.downlink_max_attempts =
      static_cast<uint32_t>(node.Int("downlink_max_attempts", cfg.downlink_max_attempts, 1, 8));
  // The default LoRaWAN version of the devices; each entry may say its own.
  const std::string default_version = node.OneOf("lorawan_version", "1.0.3", kLorawanVersions);
  std::filesystem::path state = node.String("state_file", "lorawan-sessions.json");
  if (state.is_relative()) state = std::filesystem::path(gateway.data_dir) / state;
  cfg.state_file = state.string();

  if (auto cs = node.Table("chirpstack")) {
    ChirpstackInput in;
    in.url = cs->String("broker", "");
    if (!in.url.empty() && in.url.rfind("tcp://", 0) != 0 && in.url.rfind("mqtt://", 0) != 0 &&
        in.url.rfind("ssl://", 0) != 0 && in.url.rfind("mqtts://", 0) != 0)
      cs->Problem("broker", "\"" + in.url + "\" must start with tcp://, mqtt://, ssl:// or mqtts://");
    in.client_id = cs->String("client_id", "sanigate-" + gateway.id + "-chirpstack");
    in.topic = cs->String("topic", in.topic);
    if (in.topic.empty()) cs->Problem("topic", "must not be empty");
    in.username = cs->String("username", "");
    if (cs->Has("password") && cs->Has("password_file")) cs->Problem("password_file", "give password or password_file, not both");
    in.password = cs->String("password", "");
    if (cs->Has("password_file")) in.password = settings::ReadSecretFile(*cs, "password_file", cs->String("password_file", ""));
    in.ca_file = cs->String("ca_file", "");
    if (in.url.empty() && (!in.username.empty() || !in.password.empty()))
      cs->Problem("username", "credentials need an explicit broker (the gateway's own broker uses [mqtt]'s)");
    cs->Finish();
    cfg.chirpstack = std::move(in);
  }
  if (!cfg.udp_enabled && !cfg.chirpstack)
    node.Problem("listen", "\"off\" leaves no input: add [lorawan.chirpstack] or listen on a UDP port");

  std::filesystem::path config_dir = std::filesystem::path(node.errors().file()).parent_path();
  std::vector<std::string> profile_dirs = settings::ProfileDirs(node);
  KeyFile keys;
  if (node.Has("keys_file")) {
    std::filesystem::path kp = node.String("keys_file", "");
    if (kp.is_relative()) kp = config_dir / kp;
    keys.path = kp.string();
    struct stat st {};
    if (::stat(keys.path.c_str(), &st) != 0) {
      node.Problem("keys_file", keys.path + " cannot be read");
    } else if (st.st_mode & 077) {
      node.Problem("keys_file", keys.path + " must not be readable by others (chmod 600)");
    } else {
      settings::ConfigErrors key_errors(keys.path);
      auto parsed = settings::ParseFile(keys.path, key_errors);
      if (!key_errors.empty()) node.Problem("keys_file", key_errors.Joined());
      keys.table = std::move(parsed.table);
    }
  }

  std::map<std::string, std::shared_ptr<const PayloadProfile>> profiles;
  std::map<std::string, std::string> ids, euis, addrs;
  for (auto& dn : node.TableArray("devices")) {
    LoraDeviceConfig d;
    if (auto id = dn.RequiredId("id")) {
      d.id = *id;
      auto [it, fresh] = ids.emplace(d.id, dn.path());
      if (!fresh) dn.Problem("id", "\"" + d.id + "\" is already used by " + it->second);
    }
    std::string eui_hex;
    if (auto e = dn.RequiredString("dev_eui")) {
      auto eui = ParseEui(*e, "dev_eui");
      if (!eui.ok()) {
        dn.Problem("dev_eui", eui.status().message());
      } else {
        d.dev_eui = *eui;
        eui_hex = EuiToHex(d.dev_eui);
        auto [it, fresh] = euis.emplace(eui_hex, dn.path());
        if (!fresh) dn.Problem("dev_eui", eui_hex + " is already used by " + it->second);
      }
    }
    std::string activation = dn.OneOf("activation", "otaa", {"otaa", "abp", "chirpstack"});
    d.otaa = activation == "otaa";
    d.via_chirpstack = activation == "chirpstack";
    if (d.via_chirpstack) {
      // ChirpStack holds the keys and the session; this entry only maps the DevEUI to a profile.
      if (!cfg.chirpstack) dn.Problem("activation", "\"chirpstack\" needs a [lorawan.chirpstack] section");
    } else if (d.otaa) {
      if (auto k = ReadKey(dn, "app_key", keys, eui_hex)) d.app_key = *k;
      if (dn.Has("join_eui")) {
        auto j = ParseEui(dn.String("join_eui", ""), "join_eui");
        if (j.ok()) d.join_eui = *j;
        else dn.Problem("join_eui", j.status().message());
      }
    } else {
      if (auto a = dn.RequiredString("dev_addr")) {
        auto bytes = ParseHex(*a, "dev_addr");
        if (!bytes.ok() || bytes->size() != 4) {
          dn.Problem("dev_addr", "\"" + *a + "\" is not 8 hex digits (e.g. \"260B1234\")");
        } else {
          d.dev_addr = (uint32_t{(*bytes)[0]} << 24) | (uint32_t{(*bytes)[1]} << 16) | (uint32_t{(*bytes)[2]} << 8) | (*bytes)[3];
          auto [it, fresh] = addrs.emplace(*a, dn.path());
          if (!fresh) dn.Problem("dev_addr", *a + " is already used by " + it->second);
        }
      }
      if (auto k = ReadKey(dn, "nwk_s_key", keys, eui_hex)) d.nwk_s_key = *k;
      if (auto k = ReadKey(dn, "app_s_key", keys, eui_hex)) d.app_s_key = *k;
    }
    d.lorawan_version = dn.OneOf("lorawan_version", default_version, kLorawanVersions);
    // 1.0.4 dropped MAX_FCNT_GAP; a 16-bit counter cannot tell a gap of 65536 or more anyway.
    d.max_fcnt_gap = static_cast<uint32_t>(
        dn.Int("max_fcnt_gap", d.lorawan_version == "1.0.4" ? 0 : 16384, 0, 65535));
    if (dn.Has("fcnt_up_start")) {
      d.fcnt_up_start = static_cast<uint32_t>(dn.Int("fcnt_up_start", 0, 0, 0xFFFFFFFFll));
      if (d.otaa || d.via_chirpstack)
        dn.Problem(
            "fcnt_up_start",
            "only ABP devices take a starting counter (an OTAA session starts at 0 with its join)");
    }
    if (auto p = dn.RequiredString("profile")) {
      d.profile_name = *p;
      auto it = profiles.find(*p);
      if (it == profiles.end()) {
        std::string path = settings::IsValidId(*p) ? settings::FindProfile(profile_dirs, *p) : std::string();
        auto loaded = path.empty() ? Result<PayloadProfile>(Status(Code::kNotFound, "no such profile (looked for " +
                                                                                   settings::ProfilePlaces(profile_dirs, *p) + ")"))
                                   : LoadPayloadProfile(path);
        std::shared_ptr<const PayloadProfile> prof;
        if (loaded.ok()) prof = std::make_shared<PayloadProfile>(std::move(*loaded));
        else dn.Problem("profile", "\"" + *p + "\": " + loaded.status().message());
        it = profiles.emplace(*p, prof).first;
      }
      d.profile = it->second;
    }
    d.kind = dn.String("kind", d.profile ? d.profile->kind : "bin");
    if (!settings::IsValidId(d.kind)) dn.Problem("kind", "\"" + d.kind + "\" is not a kind ([a-z0-9._-]+)");
    d.expected_interval_s = dn.Int("expected_interval_s", d.expected_interval_s, 1, 7 * 86400);
    d.offline_after_missed = static_cast<int>(dn.Int("offline_after_missed", d.offline_after_missed, 1, 100));
    if (auto loc = dn.Table("location")) {
      Location l;
      l.lat = loc->Double("lat", 0, -90, 90);
      l.lon = loc->Double("lon", 0, -180, 180);
      loc->Finish();
      d.location = l;
    }
    bool has_overflow = false;
    if (auto ov = dn.Table("overflow")) {
      d.rules.overflow = ParseOverflowRule(*ov);
      has_overflow = true;
    }
    std::set<std::string> explicit_events;
    for (auto& en : dn.TableArray("events")) {
      EventRule e = ParseEventRule(en);
      explicit_events.insert(e.event);
      d.rules.events.push_back(std::move(e));
    }
    if (d.profile) AddDefaultRules(d, has_overflow, explicit_events);
    dn.Finish();
    cfg.devices.push_back(std::move(d));
  }
  node.Finish();
  return cfg;
}

}  // namespace sanigate::dev::lorawan
