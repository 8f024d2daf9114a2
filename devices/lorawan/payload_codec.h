// Declarative byte-layout codec for LoRaWAN application payloads: a device profile lists, per
// FPort (or for any port), the fields of the decrypted FRMPayload (offset, integer/float type,
// endianness, scale and offset, rounding, single-bit flags, plausible range) and the metric each
// becomes. Parsed once from TOML with exact key paths in errors; decoding is pure and never
// throws. A parsed profile is immutable: share it between threads freely.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/record.h"
#include "core/status.h"
#include "settings/reader.h"

namespace sanigate::dev::lorawan {

enum class FieldType { kU8, kI8, kU16, kI16, kU32, kI32, kF32 };
size_t FieldSize(FieldType t);

struct PayloadField {
  std::string metric;   // snake_case with unit: distance_mm, battery_v; a flag: tilted
  uint32_t offset = 0;  // byte offset in the FRMPayload
  FieldType type = FieldType::kU8;
  bool little_endian = false;
  double scale = 1.0;  // value = raw * scale + offset_add
  double offset_add = 0.0;
  int decimals = 6;            // rounding of a scaled or float value
  std::optional<uint8_t> bit;  // a flag: bit n (0 = least significant) of the raw integer -> bool
  std::optional<double> min, max;  // outside: flagged "out_of_range", not published
};

struct PayloadLayout {
  std::optional<uint8_t> fport;  // empty: any port without a layout of its own
  std::vector<PayloadField> fields;
  size_t min_size = 0;  // the end of the last field
};

struct PayloadProfile {
  std::string description;
  std::string kind = "bin";
  std::vector<PayloadLayout> layouts;
  // The layout of `fport`, else the any-port one, else null.
  const PayloadLayout* LayoutFor(uint8_t fport) const;
};

struct DecodedPayload {
  std::vector<Metric> metrics;
  std::vector<std::pair<std::string, std::string>> quality;  // {"fill_level_pct", "out_of_range"}
};

// Reads a profile table (the root of a profile file): description, kind, codec = "byte-layout"
// and [[uplinks]] with [[uplinks.fields]]. Problems go to node.errors(); the result is only
// usable when none were added.
PayloadProfile ParsePayloadProfile(settings::Node& node);
// Whole-file helpers: every problem joined into one Invalid status, one "FILE:LINE:COL: path:
// problem" per line.
Result<PayloadProfile> LoadPayloadProfile(const std::string& path);
Result<PayloadProfile> ParsePayloadProfileText(std::string_view toml, const std::string& name);

// Decodes a decrypted FRMPayload. Errors: no layout for the port, payload shorter than the layout.
// Integers with scale 1 and offset 0 stay integers; flags are bools; the rest are doubles.
Result<DecodedPayload> DecodePayload(const PayloadProfile& profile, uint8_t fport,
                                     std::span<const uint8_t> payload);

}  // namespace sanigate::dev::lorawan
