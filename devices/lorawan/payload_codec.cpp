#include "lorawan/payload_codec.h"

#include <bit>
#include <cmath>
#include <map>
#include <regex>

#include "core/untrusted.h"
#include "lorawan/lorawan_crypto.h"
#include "lorawan/semtech_udp.h"

namespace sanigate::dev::lorawan {
namespace {

constexpr size_t kMaxPayload = 255;  // a LoRa frame; no FRMPayload is longer

struct TypeName {
  const char* name;
  FieldType type;
};
constexpr TypeName kTypes[] = {{"u8", FieldType::kU8},   {"i8", FieldType::kI8},
                               {"u16", FieldType::kU16}, {"i16", FieldType::kI16},
                               {"u32", FieldType::kU32}, {"i32", FieldType::kI32},
                               {"f32", FieldType::kF32}};

bool IsMetricName(const std::string& s) {
  static const std::regex re("^[a-z][a-z0-9_]*$");
  return std::regex_match(s, re);
}

double Round(double v, int decimals) {
  double f = std::pow(10.0, decimals);
  double r = std::round(v * f) / f;
  return std::isfinite(r) ? r : v;
}

// The field's bytes as one unsigned integer, in the field's byte order.
uint32_t RawBits(const PayloadField& f, std::span<const uint8_t> p) {
  const size_t n = FieldSize(f.type);
  uint32_t v = 0;
  for (size_t i = 0; i < n; ++i) {
    uint8_t b = p[f.offset + (f.little_endian ? n - 1 - i : i)];
    v = v << 8 | b;
  }
  return v;
}

// The raw value: an integer (sign-extended where signed) or a float.
std::variant<int64_t, double> RawValue(const PayloadField& f, std::span<const uint8_t> p) {
  uint32_t bits = RawBits(f, p);
  switch (f.type) {
    case FieldType::kU8:
    case FieldType::kU16:
    case FieldType::kU32:
      return int64_t{bits};
    case FieldType::kI8:
      return int64_t{static_cast<int8_t>(bits)};
    case FieldType::kI16:
      return int64_t{static_cast<int16_t>(bits)};
    case FieldType::kI32:
      return int64_t{static_cast<int32_t>(bits)};
    case FieldType::kF32:
      return static_cast<double>(std::bit_cast<float>(bits));
  }
  return 0.0;
}

void ParseField(settings::Node& n, PayloadField& f) {
  if (auto m = n.RequiredString("metric")) {
    f.metric = *m;
    if (!IsMetricName(f.metric))
      n.Problem("metric",
                "\"" + f.metric + "\" is not a metric name (snake_case: ^[a-z][a-z0-9_]*$)");
  }
  std::string type = n.OneOf("type", "u8", {"u8", "i8", "u16", "i16", "u32", "i32", "f32"});
  for (const auto& t : kTypes)
    if (type == t.name) f.type = t.type;
  const size_t size = FieldSize(f.type);
  if (auto o = n.RequiredInt("offset", 0, kMaxPayload - 1)) {
    f.offset = static_cast<uint32_t>(*o);
    if (f.offset + size > kMaxPayload)
      n.Problem("offset", std::to_string(f.offset) + " + " + std::to_string(size) +
                              " bytes runs past " + std::to_string(kMaxPayload));
  }
  f.little_endian = n.OneOf("endian", "big", {"big", "little"}) == "little";
  if (n.Has("bit")) {
    int64_t b = n.Int("bit", -1, 0, static_cast<int64_t>(size * 8 - 1));
    if (f.type == FieldType::kF32)
      n.Problem("bit", "a f32 field has no bits (flags are integer fields)");
    else if (b >= 0)
      f.bit = static_cast<uint8_t>(b);
  }
  f.scale = n.Double("scale", 1.0, -1e9, 1e9);
  if (f.scale == 0) n.Problem("scale", "must not be 0");
  f.offset_add = n.Double("offset_add", 0.0, -1e12, 1e12);
  f.decimals = static_cast<int>(n.Int("decimals", 6, 0, 12));
  f.min = n.OptionalDouble("min", -1e15, 1e15);
  f.max = n.OptionalDouble("max", -1e15, 1e15);
  if (f.min && f.max && *f.min > *f.max) n.Problem("max", "is below min");
  if (f.bit) {
    // A flag is a bool: nothing to scale, round or range-check.
    for (const char* k : {"scale", "offset_add", "decimals", "min", "max"})
      if (n.Has(k)) n.Problem(k, "a flag (bit) is a bool and takes no " + std::string(k));
  }
  n.Finish();
}

PayloadLayout ParseLayout(settings::Node& n) {
  PayloadLayout l;
  if (n.Has("fport")) {
    // 1..223 are application ports (LoRaWAN 1.0.3 §4.3.2); 0 carries MAC commands only.
    int64_t p = n.Int("fport", 0, 1, 223);
    if (p > 0) l.fport = static_cast<uint8_t>(p);
  }
  auto fields = n.TableArray("fields");
  if (fields.empty()) n.Problem("fields", "a layout needs at least one [[uplinks.fields]] entry");
  std::map<std::string, std::string> seen;
  for (auto& fn : fields) {
    PayloadField f;
    ParseField(fn, f);
    if (!f.metric.empty()) {
      auto [it, fresh] = seen.emplace(f.metric, fn.path());
      if (!fresh) fn.Problem("metric", "\"" + f.metric + "\" is already decoded by " + it->second);
    }
    l.min_size = std::max(l.min_size, f.offset + FieldSize(f.type));
    l.fields.push_back(std::move(f));
  }
  n.Finish();
  return l;
}

// The integer range of a type, for arguments.
std::pair<double, double> TypeRange(FieldType t) {
  switch (t) {
    case FieldType::kU8: return {0, 255};
    case FieldType::kI8: return {-128, 127};
    case FieldType::kU16: return {0, 65535};
    case FieldType::kI16: return {-32768, 32767};
    case FieldType::kU32: return {0, 4294967295.0};
    case FieldType::kI32: return {-2147483648.0, 2147483647.0};
    case FieldType::kF32: return {-3.4e38, 3.4e38};
  }
  return {0, 0};
}

DownlinkArg ParseArg(settings::Node& n) {
  DownlinkArg a;
  if (auto m = n.RequiredString("name")) {
    a.name = *m;
    if (!IsMetricName(a.name) || a.name == "confirmed" || a.name == "port" || a.name == "hex" || a.name == "base64")
      n.Problem("name", "\"" + a.name + "\" is not an argument name (snake_case; not confirmed, port, hex, base64)");
  }
  std::string type = n.OneOf("type", "u8", {"u8", "i8", "u16", "i16", "u32", "i32", "f32"});
  for (const auto& t : kTypes)
    if (type == t.name) a.type = t.type;
  a.little_endian = n.OneOf("endian", "big", {"big", "little"}) == "little";
  a.min = n.OptionalDouble("min", -1e15, 1e15);
  a.max = n.OptionalDouble("max", -1e15, 1e15);
  if (a.min && a.max && *a.min > *a.max) n.Problem("max", "is below min");
  n.Finish();
  return a;
}

DownlinkCommand ParseCommand(settings::Node& n) {
  DownlinkCommand c;
  if (auto m = n.RequiredString("name")) {
    c.name = *m;
    if (!IsMetricName(c.name) || c.name == "downlink")
      n.Problem("name", "\"" + c.name + "\" is not a command name (snake_case, not \"downlink\")");
  }
  c.description = n.String("description", "");
  if (auto p = n.RequiredInt("fport", 1, 223)) c.fport = static_cast<uint8_t>(*p);
  std::string prefix = n.String("prefix", "");
  if (!prefix.empty()) {
    auto b = ParseHex(prefix, "prefix");
    if (b.ok()) c.prefix = std::move(*b);
    else n.Problem("prefix", b.status().message());
  }
  c.confirmed = n.Bool("confirmed", false);
  std::map<std::string, std::string> seen;
  for (auto& an : n.TableArray("args")) {
    DownlinkArg a = ParseArg(an);
    if (!a.name.empty()) {
      auto [it, fresh] = seen.emplace(a.name, an.path());
      if (!fresh) an.Problem("name", "\"" + a.name + "\" is already an argument in " + it->second);
    }
    c.args.push_back(std::move(a));
  }
  size_t size = c.prefix.size();
  for (const auto& a : c.args) size += FieldSize(a.type);
  if (size == 0) n.Problem("args", "a command needs a prefix or at least one [[downlinks.args]] entry");
  if (size > kMaxPayload) n.Problem("args", "the payload would be " + std::to_string(size) + " bytes");
  n.Finish();
  return c;
}

// `text` as a number of `a`'s type, within its range. Decimal integers only for integer types.
Result<double> ArgNumber(const DownlinkArg& a, std::string_view text) {
  std::string t(text);
  auto bad = [&] { return Invalid(a.name + ": " + QuotePrefix(text, 24) + " is not a number"); };
  if (t.empty() || t.size() > 32) return bad();
  double v = 0;
  size_t used = 0;
  try {
    if (a.type == FieldType::kF32) {
      v = std::stod(t, &used);
    } else {
      if (t.find_first_not_of("+-0123456789") != std::string::npos) return bad();
      v = static_cast<double>(std::stoll(t, &used, 10));
    }
  } catch (const std::exception&) {
    return bad();
  }
  if (used != t.size() || !std::isfinite(v)) return bad();
  auto [lo, hi] = TypeRange(a.type);
  if (a.min) lo = std::max(lo, *a.min);
  if (a.max) hi = std::min(hi, *a.max);
  if (v < lo || v > hi) {
    auto fmt = [](double d) {
      std::string s = std::to_string(d);
      s.erase(s.find_last_not_of('0') + 1);
      if (!s.empty() && s.back() == '.') s.pop_back();
      return s;
    };
    return Invalid(a.name + ": " + QuotePrefix(text, 24) + " is outside " + fmt(lo) + ".." + fmt(hi));
  }
  return v;
}

void PutArg(const DownlinkArg& a, double v, std::vector<uint8_t>& out) {
  uint32_t bits = 0;
  if (a.type == FieldType::kF32) bits = std::bit_cast<uint32_t>(static_cast<float>(v));
  else bits = static_cast<uint32_t>(static_cast<int64_t>(v));
  const size_t n = FieldSize(a.type);
  for (size_t i = 0; i < n; ++i) {
    size_t shift = 8 * (a.little_endian ? i : n - 1 - i);
    out.push_back(static_cast<uint8_t>(bits >> shift));
  }
}

// `confirmed`, `confirmed=true|false`: true/false; anything else: nullopt.
std::optional<bool> ConfirmedToken(std::string_view t) {
  if (t == "confirmed" || t == "confirmed=true" || t == "confirmed=1") return true;
  if (t == "confirmed=false" || t == "confirmed=0") return false;
  return std::nullopt;
}

Result<PayloadProfile> Collect(settings::ParsedFile parsed, settings::ConfigErrors& errors) {
  PayloadProfile p;
  if (parsed.table) {
    settings::Node root(*parsed.table, "", errors);
    p = ParsePayloadProfile(root);
  }
  if (!errors.empty()) {
    std::string joined = errors.Joined();
    if (!joined.empty() && joined.back() == '\n') joined.pop_back();
    return Invalid(joined);
  }
  return p;
}

}  // namespace

size_t FieldSize(FieldType t) {
  switch (t) {
    case FieldType::kU8:
    case FieldType::kI8:
      return 1;
    case FieldType::kU16:
    case FieldType::kI16:
      return 2;
    case FieldType::kU32:
    case FieldType::kI32:
    case FieldType::kF32:
      return 4;
  }
  return 1;
}

const PayloadLayout* PayloadProfile::LayoutFor(uint8_t fport) const {
  const PayloadLayout* any = nullptr;
  for (const auto& l : layouts) {
    if (l.fport == fport) return &l;
    if (!l.fport) any = &l;
  }
  return any;
}

PayloadProfile ParsePayloadProfile(settings::Node& node) {
  PayloadProfile p;
  p.description = node.String("description", "");
  p.kind = node.String("kind", p.kind);
  if (!settings::IsValidId(p.kind) || p.kind.find_first_of(".-") != std::string::npos)
    node.Problem("kind", "\"" + p.kind + "\" is not a valid kind (^[a-z0-9_]+$)");
  // The key that tells a LoRaWAN payload profile from a Modbus one; room for other codecs later.
  if (auto codec = node.RequiredString("codec"); codec && *codec != "byte-layout")
    node.Problem("codec", "\"" + *codec + "\" is not one of \"byte-layout\"");
  auto layouts = node.TableArray("uplinks");
  if (layouts.empty() && !node.Has("uplinks"))
    node.Problem("uplinks", "a payload profile needs at least one [[uplinks]] entry");
  std::map<std::string, std::string> ports;
  for (auto& ln : layouts) {
    PayloadLayout l = ParseLayout(ln);
    std::string port = l.fport ? std::to_string(*l.fport) : "any";
    if (l.fport || !ln.Has("fport")) {
      auto [it, fresh] = ports.emplace(port, ln.path());
      if (!fresh)
        ln.Problem(l.fport ? "fport" : "fields",
                   "fport " + port + " already has a layout in " + it->second);
    }
    p.layouts.push_back(std::move(l));
  }
  std::map<std::string, std::string> names;
  for (auto& cn : node.TableArray("downlinks")) {
    DownlinkCommand c = ParseCommand(cn);
    if (!c.name.empty()) {
      auto [it, fresh] = names.emplace(c.name, cn.path());
      if (!fresh) cn.Problem("name", "command \"" + c.name + "\" is already in " + it->second);
    }
    p.downlinks.push_back(std::move(c));
  }
  node.Finish();
  return p;
}

const DownlinkCommand* PayloadProfile::CommandFor(std::string_view name) const {
  for (const auto& c : downlinks)
    if (c.name == name) return &c;
  return nullptr;
}

Result<EncodedDownlink> EncodeDownlinkCommand(const PayloadProfile* profile, std::string_view name,
                                              const std::vector<std::string>& args,
                                              size_t max_payload) {
  EncodedDownlink out;
  std::optional<bool> confirmed;
  std::vector<std::string_view> rest;
  for (const auto& a : args) {
    if (auto c = ConfirmedToken(a)) confirmed = c;
    else rest.push_back(a);
  }
  if (name == "downlink") {
    std::optional<std::string_view> port, hex, b64;
    std::vector<std::string_view> positional;
    for (auto t : rest) {
      auto eq = t.find('=');
      std::string_view key = eq == std::string_view::npos ? std::string_view() : t.substr(0, eq);
      std::string_view val = eq == std::string_view::npos ? t : t.substr(eq + 1);
      if (key == "port") port = val;
      else if (key == "hex") hex = val;
      else if (key == "base64") b64 = val;
      else if (eq != std::string_view::npos)
        return Invalid("unknown argument " + QuotePrefix(t, 24) + " (port=N, hex=HEX or base64=B64, confirmed)");
      else positional.push_back(t);
    }
    if (!positional.empty() && !port) port = positional[0], positional.erase(positional.begin());
    if (!positional.empty() && !hex && !b64) hex = positional[0], positional.erase(positional.begin());
    if (!positional.empty()) return Invalid("too many arguments: " + QuotePrefix(positional[0], 24) + " (downlink PORT HEX [confirmed])");
    if (!port) return Invalid("downlink needs a port: port=N (1..223)");
    if (hex && b64) return Invalid("give either hex= or base64=, not both");
    if (!hex && !b64) return Invalid("downlink needs data: hex=HEX or base64=B64");
    DownlinkArg p{"port", FieldType::kU8, false, 1.0, 223.0};
    auto pv = ArgNumber(p, *port);
    if (!pv.ok()) return pv.status();
    out.fport = static_cast<uint8_t>(*pv);
    auto data = hex ? ParseHex(*hex, "hex") : Base64Decode(*b64);
    if (!data.ok()) return Invalid((hex ? "hex: " : "base64: ") + QuotePrefix(hex ? *hex : *b64, 24) + " is not valid");
    if (data->empty()) return Invalid("downlink data is empty");
    out.payload = std::move(*data);
    out.confirmed = confirmed.value_or(false);
  } else {
    const DownlinkCommand* c = profile ? profile->CommandFor(name) : nullptr;
    if (!c) {
      std::string known = "downlink";
      if (profile)
        for (const auto& k : profile->downlinks) known += ", " + k.name;
      return Invalid("unknown command " + QuotePrefix(name, 32) + " (this device takes: " + known + ")");
    }
    std::vector<std::optional<std::string_view>> values(c->args.size());
    size_t next = 0;
    for (auto t : rest) {
      auto eq = t.find('=');
      if (eq != std::string_view::npos) {
        std::string_view key = t.substr(0, eq);
        size_t i = 0;
        while (i < c->args.size() && c->args[i].name != key) ++i;
        if (i == c->args.size()) return Invalid(c->name + " has no argument " + QuotePrefix(key, 24));
        if (values[i]) return Invalid(c->name + ": " + c->args[i].name + " given twice");
        values[i] = t.substr(eq + 1);
        continue;
      }
      while (next < values.size() && values[next]) ++next;
      if (next == values.size())
        return Invalid(c->name + " takes " + std::to_string(c->args.size()) + " argument" + (c->args.size() == 1 ? "" : "s") +
                       "; " + QuotePrefix(t, 24) + " is one too many");
      values[next] = t;
    }
    out.fport = c->fport;
    out.payload = c->prefix;
    for (size_t i = 0; i < c->args.size(); ++i) {
      if (!values[i]) return Invalid(c->name + " needs " + c->args[i].name);
      auto v = ArgNumber(c->args[i], *values[i]);
      if (!v.ok()) return v.status();
      PutArg(c->args[i], *v, out.payload);
    }
    out.confirmed = confirmed.value_or(c->confirmed);
  }
  if (out.payload.size() > max_payload)
    return Invalid("payload of " + std::to_string(out.payload.size()) + " bytes is over the " + std::to_string(max_payload) +
                   " a downlink can carry at the slowest data rate");
  return out;
}

Result<PayloadProfile> LoadPayloadProfile(const std::string& path) {
  settings::ConfigErrors errors(path);
  auto parsed = settings::ParseFile(path, errors);
  return Collect(std::move(parsed), errors);
}

Result<PayloadProfile> ParsePayloadProfileText(std::string_view toml, const std::string& name) {
  settings::ConfigErrors errors(name);
  auto parsed = settings::ParseString(toml, name, errors);
  return Collect(std::move(parsed), errors);
}

Result<DecodedPayload> DecodePayload(const PayloadProfile& profile, uint8_t fport,
                                     std::span<const uint8_t> payload) {
  const PayloadLayout* l = profile.LayoutFor(fport);
  if (!l) return Invalid("fport " + std::to_string(fport) + " has no layout in this profile");
  if (payload.size() < l->min_size)
    return Invalid("fport " + std::to_string(fport) + ": payload of " +
                   std::to_string(payload.size()) + " bytes is shorter than the layout's " +
                   std::to_string(l->min_size));
  DecodedPayload out;
  for (const PayloadField& f : l->fields) {
    if (f.bit) {
      out.metrics.push_back({f.metric, ((RawBits(f, payload) >> *f.bit) & 1u) != 0});
      continue;
    }
    auto raw = RawValue(f, payload);
    const bool plain_integer =
        std::holds_alternative<int64_t>(raw) && f.scale == 1.0 && f.offset_add == 0.0;
    double value = std::holds_alternative<int64_t>(raw)
                       ? static_cast<double>(std::get<int64_t>(raw))
                       : std::get<double>(raw);
    if (!plain_integer) value = Round(value * f.scale + f.offset_add, f.decimals);
    if (!std::isfinite(value) || (f.min && value < *f.min) || (f.max && value > *f.max)) {
      // A value outside the sensor's range is a fault, not a reading: flagged, not published
      // (the same rule as Modbus points).
      out.quality.emplace_back(f.metric, "out_of_range");
      continue;
    }
    if (plain_integer)
      out.metrics.push_back({f.metric, std::get<int64_t>(raw)});
    else
      out.metrics.push_back({f.metric, value});
  }
  return out;
}

}  // namespace sanigate::dev::lorawan
