#include "lorawan/payload_codec.h"

#include <bit>
#include <cmath>
#include <map>
#include <regex>

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
  node.Finish();
  return p;
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
