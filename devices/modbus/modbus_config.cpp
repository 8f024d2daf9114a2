#include "modbus/modbus_config.h"

#include "api/rules_config.h"

#include <any>
#include <cstdlib>
#include <iterator>
#include <map>
#include <filesystem>
#include <memory>
#include <regex>
#include <sstream>

namespace sanigate::dev::modbus {
namespace {

void ParsePoint(settings::Node& n, PointConfig& p, const DeviceConfig& dev) {
  if (auto m = n.RequiredString("metric")) {
    p.metric = *m;
    if (!IsMetricName(p.metric))
      n.Problem("metric", "\"" + p.metric + "\" is not a metric name (snake_case: ^[a-z][a-z0-9_]*$)");
  }
  std::string table = n.OneOf("table", "holding", {"holding", "input", "coil", "discrete"});
  p.table = *ParseTable(table);
  if (auto a = n.RequiredInt("address", 0, 65535)) p.address = static_cast<uint16_t>(*a);
  std::string type = n.OneOf("type", IsBitTable(p.table) ? "bool" : "u16",
                             {"u16", "i16", "u32", "i32", "u64", "i64", "f32", "f64", "string",
                              "bool", "bit"});
  p.type = *ParseValueType(type);
  if (IsBitTable(p.table) && p.type != ValueType::kBool)
    n.Problem("type", "\"" + type + "\" cannot be read from a " + table + " (bits are bool)");
  if (p.type == ValueType::kString) {
    if (auto len = n.RequiredInt("length", 1, 125)) p.length = static_cast<uint16_t>(*len);
  } else if (n.Has("length")) {
    n.Problem("length", "only a string has a length");
  }
  if (p.type == ValueType::kBit) {
    if (auto bit = n.RequiredInt("bit", 0, 15)) p.bit = static_cast<uint8_t>(*bit);
  } else if (n.Has("bit")) {
    n.Problem("bit", "only type \"bit\" picks a bit (use type = \"bit\")");
  }
  if (p.address + p.registers() - 1 > 65535)
    n.Problem("address", std::to_string(p.address) + " + " + std::to_string(p.registers()) +
                             " registers runs past 65535");
  std::string order = n.OneOf("word_order", "high_first", {"high_first", "low_first"});
  p.word_order = order == "high_first" ? WordOrder::kHighFirst : WordOrder::kLowFirst;
  std::string bytes = n.OneOf("byte_order", "big", {"big", "little"});
  p.byte_order = bytes == "big" ? ByteOrder::kBig : ByteOrder::kLittle;
  p.scale = n.Double("scale", 1.0, -1e9, 1e9);
  if (p.scale == 0) n.Problem("scale", "must not be 0");
  p.offset = n.Double("offset", 0.0, -1e12, 1e12);
  p.min = n.OptionalDouble("min", -1e15, 1e15);
  p.max = n.OptionalDouble("max", -1e15, 1e15);
  if (p.min && p.max && *p.min > *p.max)
    n.Problem("max", "is below min");
  if (n.Has("decimals")) p.decimals = static_cast<int>(n.Int("decimals", 6, 0, 12));
  p.rule.deadband = n.OptionalDouble("deadband", 0, 1e12);
  p.rule.max_silence_ms = n.Int("max_silence_s", 300, 1, 86400 * 7) * 1000;
  bool numeric = p.type != ValueType::kBool && p.type != ValueType::kBit && p.type != ValueType::kString;
  if (!numeric && (p.scale != 1.0 || p.offset != 0.0))
    n.Problem(n.Has("scale") ? "scale" : "offset", "a " + type + " point cannot be scaled");
  if (!numeric && (p.min || p.max)) n.Problem(p.min ? "min" : "max", "a " + type + " point has no range");
  (void)dev;
  n.Finish();
}

void ParseCommand(settings::Node& n, CommandConfig& c) {
  if (auto name = n.RequiredString("name")) {
    c.name = *name;
    if (!IsMetricName(c.name)) n.Problem("name", "\"" + c.name + "\" is not a command name (^[a-z][a-z0-9_]*$)");
  }
  std::string table = n.OneOf("table", "coil", {"coil", "holding"});
  c.table = *ParseTable(table);
  if (auto a = n.RequiredInt("address", 0, 65535)) c.address = static_cast<uint16_t>(*a);
  std::string type = n.OneOf("type", c.table == Table::kCoil ? "bool" : "u16",
                             {"bool", "u16", "i16", "u32", "i32", "f32"});
  c.type = *ParseValueType(type);
  if ((c.table == Table::kCoil) != (c.type == ValueType::kBool))
    n.Problem("type", "\"" + type + "\" does not fit a " + table + " (coils are bool, registers are numbers)");
  c.word_order = n.OneOf("word_order", "high_first", {"high_first", "low_first"}) == "high_first"
                     ? WordOrder::kHighFirst
                     : WordOrder::kLowFirst;
  c.byte_order = n.OneOf("byte_order", "big", {"big", "little"}) == "big" ? ByteOrder::kBig : ByteOrder::kLittle;
  c.scale = n.Double("scale", 1.0, -1e9, 1e9);
  if (c.scale == 0) n.Problem("scale", "must not be 0");
  c.offset = n.Double("offset", 0.0, -1e12, 1e12);
  c.min = n.OptionalDouble("min", -1e15, 1e15);
  c.max = n.OptionalDouble("max", -1e15, 1e15);
  if (auto values = n.Table("values")) {
    // Named arguments, e.g. values = { on = 1, off = 0 }.
    std::vector<std::string> keys;
    for (const auto& [k, v] : *values->raw()) keys.emplace_back(k.str());
    for (const auto& k : keys) {
      auto v = values->OptionalDouble(k, -1e15, 1e15);
      if (v) c.values.emplace_back(k, *v);
    }
    values->Finish();
  }
  c.verify = n.Bool("verify", c.verify);
  c.timeout_ms = n.Int("timeout_ms", c.timeout_ms, 10, 60000);
  n.Finish();
}

// [firmware]: the bootloader's register window. Every register range must fit below 65536
// and no two may overlap (a write to one would clobber another).
void ParseFirmware(settings::Node& n, FirmwareConfig& f) {
  struct Field {
    const char* key;
    uint16_t* at;
    int registers;
  };
  auto address = [&](const char* key) -> std::optional<uint16_t> {
    if (auto a = n.RequiredInt(key, 0, 65535)) return static_cast<uint16_t>(*a);
    return std::nullopt;
  };
  std::map<std::string, bool> present;
  auto take = [&](const char* key, uint16_t& into) {
    auto a = address(key);
    if (a) into = *a;
    present[key] = a.has_value();
  };
  take("control", f.control);
  take("status", f.status);
  if (n.Has("error")) {
    uint16_t e = 0;
    take("error", e);
    if (present["error"]) f.error = e;
  }
  take("size", f.size);
  take("offset", f.offset);
  take("chunk_length", f.chunk_length);
  take("data", f.data);
  f.max_chunk = static_cast<uint16_t>(n.Int("max_chunk", f.max_chunk, 1, 120));
  take("checksum", f.checksum);
  take("version", f.version);
  f.version_length = static_cast<uint16_t>(n.Int("version_length", f.version_length, 1, 32));
  f.word_order = n.OneOf("word_order", "high_first", {"high_first", "low_first"}) == "high_first"
                     ? WordOrder::kHighFirst
                     : WordOrder::kLowFirst;
  f.byte_order = n.OneOf("byte_order", "big", {"big", "little"}) == "big" ? ByteOrder::kBig : ByteOrder::kLittle;
  f.model = n.String("model", "");
  f.reboot_time_ms = n.Int("reboot_time_s", f.reboot_time_ms / 1000, 0, 3600) * 1000;
  f.verify_timeout_ms = n.Int("verify_timeout_s", f.verify_timeout_ms / 1000, 1, 3600) * 1000;
  f.chunk_retries = static_cast<int>(n.Int("chunk_retries", f.chunk_retries, 0, 20));
  if (auto errors = n.Table("errors")) {
    // Device-specific texts for its error codes, e.g. errors = { 7 = "battery too low" }.
    std::vector<std::string> keys;
    for (const auto& [k, v] : *errors->raw()) keys.emplace_back(k.str());
    for (const auto& k : keys) {
      char* end = nullptr;
      long code = std::strtol(k.c_str(), &end, 10);
      std::string text = errors->String(k, "");
      if (k.empty() || *end != '\0' || code < 1 || code > 65535)
        errors->Problem(k, "\"" + k + "\" is not an error code (1..65535)");
      else if (text.empty())
        errors->Problem(k, "needs a text");
      else
        f.errors.emplace_back(static_cast<int>(code), text);
    }
    errors->Finish();
  }
  const Field fields[] = {{"control", &f.control, 1},
                          {"status", &f.status, 1},
                          {"error", f.error ? &*f.error : nullptr, 1},
                          {"size", &f.size, 2},
                          {"offset", &f.offset, 2},
                          {"chunk_length", &f.chunk_length, 1},
                          {"data", &f.data, f.max_chunk},
                          {"checksum", &f.checksum, 2},
                          {"version", &f.version, f.version_length}};
  auto range = [](const Field& x) {
    return std::to_string(*x.at) + (x.registers > 1 ? ".." + std::to_string(*x.at + x.registers - 1) : "");
  };
  for (size_t i = 0; i < std::size(fields); ++i) {
    const Field& a = fields[i];
    if (!a.at || !present[a.key]) continue;
    if (*a.at + a.registers - 1 > 65535) {
      n.Problem(a.key, range(a) + " runs past 65535");
      continue;
    }
    for (size_t j = 0; j < i; ++j) {
      const Field& b = fields[j];
      if (!b.at || !present[b.key]) continue;
      if (*a.at < *b.at + b.registers && *b.at < *a.at + a.registers) {
        n.Problem(a.key, "registers " + range(a) + " overlap " + b.key + " (" + range(b) + ")");
        break;
      }
    }
  }
  n.Finish();
}

// Identity and place: id, address on the line or host, location.
void ParseIdentity(settings::Node& n, DeviceConfig& d, bool serial, bool unit_from_range) {
  if (!unit_from_range) {
    if (auto id = n.RequiredId("id")) d.id = *id;
  } else if (auto id = n.RequiredString("id")) {
    // A template: "bin-{unit}" must become a valid id once the unit id is put in.
    std::string sample = *id;
    auto at = sample.find("{unit}");
    if (at != std::string::npos) sample.replace(at, 6, "1");
    if (at == std::string::npos)
      n.Problem("id", "with unit_ids the id must contain {unit}, e.g. \"bin-{unit}\"");
    else if (!settings::IsValidId(sample))
      n.Problem("id", "\"" + *id + "\" is not a valid id template (a-z 0-9 . _ - and {unit})");
    else
      d.id = *id;
  }
  if (!serial) {
    // TCP: a host, and with unit_ids several units behind it (a Modbus TCP-to-RTU gateway).
    if (auto h = n.RequiredString("host")) {
      d.host = *h;
      if (d.host.empty()) n.Problem("host", "must not be empty");
    }
    d.port = static_cast<uint16_t>(n.Int("port", 502, 1, 65535));
  }
  if (unit_from_range) {
    // unit_ids = "1-20" declares one device per id; each gets its own unit_id.
    if (n.Has("unit_id")) n.Problem("unit_id", "give either unit_id or unit_ids, not both");
  } else if (serial) {
    // On a shared line the unit id is the device's address: 1..247, no default.
    auto u = n.RequiredInt("unit_id", 1, 247);
    d.unit_id = u ? static_cast<int>(*u) : 0;  // 0: missing or invalid, already reported
  } else {
    d.unit_id = static_cast<int>(n.Int("unit_id", 1, 0, 255));
  }
  if (auto loc = n.Table("location")) {
    double lat = loc->Double("lat", 0, -90, 90), lon = loc->Double("lon", 0, -180, 180);
    if (!loc->Has("lat") || !loc->Has("lon")) loc->Problem("lat", "location needs lat and lon");
    d.location = Location{lat, lon};
    loc->Finish();
  }
}

// What a device is: kind, timing, points, derived values, events, commands. A profile file
// holds exactly these keys; a device may add to its profile's and override single values.
void ParseBody(settings::Node& n, DeviceConfig& d, std::map<std::string, std::string>& seen,
               bool need_points) {
  d.kind = n.String("kind", d.kind);
  if (!settings::IsValidId(d.kind) || d.kind.find_first_of(".-") != std::string::npos)
    n.Problem("kind", "\"" + d.kind + "\" is not a valid kind (^[a-z0-9_]+$)");
  d.interval_ms = n.Int("interval_ms", d.interval_ms, 50, 86'400'000);
  // Default: 500 ms, but always below the interval so one poll never overlaps the next.
  d.timeout_ms = n.Int("timeout_ms", std::min<int64_t>(d.timeout_ms, d.interval_ms * 4 / 5), 10, 60'000);
  if (d.timeout_ms >= d.interval_ms)
    n.Problem("timeout_ms", std::to_string(d.timeout_ms) + " must be below interval_ms (" +
                                std::to_string(d.interval_ms) + ")");
  d.offline_after = static_cast<int>(n.Int("offline_after", d.offline_after, 1, 100));
  if (auto ov = n.Table("overflow")) d.overflow = ParseOverflowRule(*ov);
  auto points = n.TableArray("points");
  if (points.empty() && need_points) n.Problem("points", "a device needs at least one [[...points]] entry (or a profile)");
  for (auto& pn : points) {
    PointConfig p;
    ParsePoint(pn, p, d);
    if (!p.metric.empty()) {
      auto [it, fresh] = seen.emplace(p.metric, pn.path());
      if (!fresh) pn.Problem("metric", "\"" + p.metric + "\" is already read by " + it->second);
    }
    d.points.push_back(std::move(p));
  }
  if (auto fn = n.Table("fill")) {
    FillRule f;
    f.from_metric = fn->String("from", f.from_metric);
    f.empty_distance = fn->Double("empty", f.empty_distance, 0, 1e9);
    f.full_distance = fn->Double("full", f.full_distance, 0, 1e9);
    f.metric = fn->String("metric", f.metric);
    if (f.full_distance >= f.empty_distance)
      fn->Problem("full", "must be below empty (the sensor looks down: a full bin is closer)");
    if (!seen.count(f.from_metric))
      fn->Problem("from", "metric \"" + f.from_metric + "\" is not one of this device's points");
    fn->Finish();
    seen.emplace(f.metric, fn->path());
    d.fill = f;
  }
  for (auto& en : n.TableArray("events")) {
    EventRule e = ParseEventRule(en);
    if (!e.metric.empty() && !seen.count(e.metric))
      en.Problem("metric", "\"" + e.metric + "\" is not one of this device's metrics");
    d.events.push_back(std::move(e));
  }
  std::map<std::string, std::string> commands;
  for (auto& cn : n.TableArray("commands")) {
    CommandConfig c;
    ParseCommand(cn, c);
    if (!c.name.empty()) {
      auto [it, fresh] = commands.emplace(c.name, cn.path());
      if (!fresh) cn.Problem("name", "\"" + c.name + "\" is already defined by " + it->second);
    }
    d.commands.push_back(std::move(c));
  }
  if (auto fw = n.Table("firmware")) {
    // A device's own [firmware] replaces its profile's as a whole.
    FirmwareConfig f;
    ParseFirmware(*fw, f);
    d.firmware = std::move(f);
  }
  if (d.overflow && !seen.count(d.overflow->metric))
    n.Problem("overflow", "metric \"" + d.overflow->metric + "\" is not one of this device's points");
  n.Finish();
}

// Profiles: `{dir}/{name}.toml` in the first of settings::ProfileDirs that has it, each parsed
// once; its errors point into its own file.
class Profiles {
 public:
  Profiles(std::vector<std::string> dirs, settings::ConfigErrors& errors) : dirs_(std::move(dirs)), errors_(errors) {}

  // The profile's device body, or null (after reporting at the device's `profile` key).
  const DeviceConfig* Get(const std::string& name, settings::Node& at) {
    auto it = cache_.find(name);
    if (it != cache_.end()) return it->second ? &it->second->config : nullptr;
    auto& slot = cache_[name];
    std::string file = settings::IsValidId(name) ? settings::FindProfile(dirs_, name) : std::string();
    if (file.empty()) {
      at.Problem("profile", "no profile \"" + name + "\" (looked for " + settings::ProfilePlaces(dirs_, name) + ")");
      return nullptr;
    }
    auto parsed = settings::ParseFile(file, errors_);
    if (!parsed.table) return nullptr;
    auto loaded = std::make_unique<Loaded>();
    loaded->table = std::move(parsed.table);
    settings::Node root(*loaded->table, "", errors_);
    root.String("description", "");
    ParseBody(root, loaded->config, loaded->metrics, /*need_points=*/true);
    slot = std::move(loaded);
    return &slot->config;
  }
  const std::map<std::string, std::string>* Metrics(const std::string& name) const {
    auto it = cache_.find(name);
    return it != cache_.end() && it->second ? &it->second->metrics : nullptr;
  }

 private:
  struct Loaded {
    std::unique_ptr<toml::table> table;
    DeviceConfig config;
    std::map<std::string, std::string> metrics;
  };
  std::vector<std::string> dirs_;
  settings::ConfigErrors& errors_;
  std::map<std::string, std::unique_ptr<Loaded>> cache_;
};

// Two points reading the same register (a u32 at 9 and a u16 at 10) are usually a typo, but
// some devices overlay registers on purpose: a warning, not an error.
void WarnOverlaps(settings::Node& n, const DeviceConfig& d) {
  for (size_t i = 0; i < d.points.size(); ++i) {
    const PointConfig& a = d.points[i];
    for (size_t j = 0; j < i; ++j) {
      const PointConfig& b = d.points[j];
      if (a.table != b.table || a.metric.empty() || b.metric.empty()) continue;
      if (a.type == ValueType::kBit && b.type == ValueType::kBit) continue;  // bits share a register
      size_t a_end = a.address + a.registers(), b_end = b.address + b.registers();
      if (a.address < b_end && b.address < a_end)
        n.Warn("points", "\"" + a.metric + "\" (" + std::to_string(a.address) + ".." +
                             std::to_string(a_end - 1) + ") overlaps \"" + b.metric + "\" (" +
                             std::to_string(b.address) + ".." + std::to_string(b_end - 1) +
                             ") in the same table");
    }
  }
}

// "1-10,17" -> {1..10, 17}; problems reported at `key`.
std::vector<int> ParseUnitList(settings::Node& n, const std::string& key, int lo, int hi) {
  std::vector<int> out;
  std::string text = n.String(key, "");
  std::stringstream ss(text);
  std::string part;
  while (std::getline(ss, part, ',')) {
    int a = 0, b = 0;
    char dash = 0;
    std::stringstream ps(part);
    if (!(ps >> a)) return n.Problem(key, "\"" + text + "\" is not a list like \"1-10,17\""), std::vector<int>{};
    b = a;
    if (ps >> dash) {
      if (dash != '-' || !(ps >> b)) return n.Problem(key, "\"" + text + "\" is not a list like \"1-10,17\""), std::vector<int>{};
    }
    if (a < lo || b > hi || a > b)
      return n.Problem(key, part + " is outside " + std::to_string(lo) + ".." + std::to_string(hi)), std::vector<int>{};
    for (int u = a; u <= b; ++u) out.push_back(u);
  }
  if (out.empty()) n.Problem(key, "must list at least one unit id");
  return out;
}

// A device entry; with `unit_ids` it declares one device per id (`{unit}` in its id).
std::vector<DeviceConfig> ParseDevices(settings::Node& n, bool serial, Profiles& profiles) {
  DeviceConfig d;
  std::vector<int> units;
  bool range = n.Has("unit_ids");
  if (range) units = ParseUnitList(n, "unit_ids", serial ? 1 : 0, serial ? 247 : 255);
  ParseIdentity(n, d, serial, range);
  std::map<std::string, std::string> seen;
  const DeviceConfig* profile = nullptr;
  // A device may run firmware that orders words or bytes unlike its profile says.
  std::optional<std::string> word_order, byte_order;
  if (n.Has("word_order")) word_order = n.OneOf("word_order", "high_first", {"high_first", "low_first"});
  if (n.Has("byte_order")) byte_order = n.OneOf("byte_order", "big", {"big", "little"});
  if ((word_order || byte_order) && !n.Has("profile"))
    n.Problem(word_order ? "word_order" : "byte_order",
              "overrides the order of a profile's points; without a profile set it on each point");
  if (n.Has("profile")) {
    std::string name = n.String("profile", "");
    profile = profiles.Get(name, n);
    if (profile) {
      // Start from the profile; the device's own keys add or override.
      DeviceConfig merged = *profile;
      merged.id = d.id;
      merged.host = d.host;
      merged.port = d.port;
      merged.unit_id = d.unit_id;
      merged.location = d.location;
      merged.profile = name;
      if (word_order || byte_order) {
        for (auto& p : merged.points) {
          if (word_order) p.word_order = *word_order == "high_first" ? WordOrder::kHighFirst : WordOrder::kLowFirst;
          if (byte_order) p.byte_order = *byte_order == "big" ? ByteOrder::kBig : ByteOrder::kLittle;
        }
        for (auto& c : merged.commands) {
          if (word_order) c.word_order = *word_order == "high_first" ? WordOrder::kHighFirst : WordOrder::kLowFirst;
          if (byte_order) c.byte_order = *byte_order == "big" ? ByteOrder::kBig : ByteOrder::kLittle;
        }
      }
      d = std::move(merged);
      for (const auto& [metric, where] : *profiles.Metrics(name)) seen.emplace(metric, "profile " + name + " " + where);
    }
  }
  ParseBody(n, d, seen, /*need_points=*/profile == nullptr && !n.Has("profile"));
  WarnOverlaps(n, d);
  if (!range) return {d};
  if (d.id.find("{unit}") == std::string::npos) return {};  // already reported
  std::vector<DeviceConfig> out;
  for (int u : units) {
    DeviceConfig c = d;
    c.unit_id = u;
    c.id.replace(c.id.find("{unit}"), 6, std::to_string(u));
    out.push_back(std::move(c));
  }
  return out;
}

}  // namespace

std::any ParseModbusSection(settings::Node& node, const settings::GatewaySection&) {
  ModbusConfig cfg;
  cfg.workers = static_cast<int>(node.Int("workers", cfg.workers, 1, 64));
  cfg.max_gap = node.Int("max_gap", cfg.max_gap, 0, 100);
  cfg.max_registers = node.Int("max_registers", cfg.max_registers, 1, 125);
  cfg.max_bits = node.Int("max_bits", cfg.max_bits, 1, 2000);
  Profiles profiles(settings::ProfileDirs(node), node.errors());
  std::map<std::string, std::string> ids;  // device ids are unique across TCP and every bus
  auto add = [&](settings::Node& dn, bool serial) {
    std::vector<DeviceConfig> ds = ParseDevices(dn, serial, profiles);
    for (const auto& d : ds) {
      if (d.id.empty()) continue;
      auto [it, fresh] = ids.emplace(d.id, dn.path());
      if (!fresh) dn.Problem("id", "\"" + d.id + "\" is already used by " + it->second);
    }
    return ds;
  };
  for (auto& dn : node.TableArray("devices"))
    for (auto& d : add(dn, false)) cfg.devices.push_back(std::move(d));

  std::map<std::string, std::string> bus_names, bus_ports;
  for (auto& bn : node.TableArray("buses")) {
    BusConfig b;
    if (auto name = bn.RequiredId("name")) {
      b.name = *name;
      auto [it, fresh] = bus_names.emplace(b.name, bn.path());
      if (!fresh) bn.Problem("name", "\"" + b.name + "\" is already used by " + it->second);
    }
    if (auto port = bn.RequiredString("port")) {
      b.port = *port;
      auto [it, fresh] = bus_ports.emplace(b.port, bn.path());
      if (!fresh) bn.Problem("port", "\"" + b.port + "\" is already used by " + it->second);
    }
    b.baud = static_cast<int>(bn.Int("baud", b.baud, 300, 1'000'000));
    b.parity = bn.OneOf("parity", "E", {"N", "E", "O"})[0];
    b.data_bits = static_cast<int>(bn.Int("data_bits", b.data_bits, 7, 8));
    b.stop_bits = static_cast<int>(bn.Int("stop_bits", b.stop_bits, 1, 2));
    b.rs485 = bn.Bool("rs485", b.rs485);
    b.guard_ms = bn.Int("guard_ms", b.guard_ms, 0, 10'000);
    std::map<int, std::string> units;
    for (auto& dn : bn.TableArray("devices")) {
      for (auto& d : add(dn, true)) {
        if (d.unit_id) {
          auto [it, fresh] = units.emplace(d.unit_id, dn.path());
          if (!fresh)
            dn.Problem(dn.Has("unit_ids") ? "unit_ids" : "unit_id",
                       std::to_string(d.unit_id) + " is already used on this bus by " + it->second);
        }
        b.devices.push_back(std::move(d));
      }
    }
    if (b.devices.empty()) bn.Problem("devices", "a bus needs at least one [[...devices]] entry");
    bn.Finish();
    cfg.buses.push_back(std::move(b));
  }
  node.Finish();
  return cfg;
}

std::chrono::microseconds BusConfig::FrameGap() const {
  if (baud > 19200) return std::chrono::microseconds(1750);
  int bits_per_char = 1 + data_bits + (parity == 'N' ? 0 : 1) + stop_bits;
  return std::chrono::microseconds(static_cast<int64_t>(3.5 * bits_per_char * 1e6 / baud + 0.5));
}

}  // namespace sanigate::dev::modbus
