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

// A downlink command of the profile ([[downlinks]]): the FRMPayload is `prefix` (fixed bytes,
// e.g. a command code) followed by each argument in order, encoded as its type and byte order.
struct DownlinkArg {
  std::string name;  // snake_case; `name=value` in a request
  FieldType type = FieldType::kU8;
  bool little_endian = false;
  std::optional<double> min, max;  // the accepted values (integer types: also the type's range)
};

struct DownlinkCommand {
  std::string name;  // ^[a-z][a-z0-9_]*$, not "downlink" (the raw command)
  std::string description;
  uint8_t fport = 1;
  std::vector<uint8_t> prefix;
  bool confirmed = false;  // the default; a request may say confirmed / confirmed=false
  std::vector<DownlinkArg> args;
};

struct PayloadProfile {
  std::string description;
  std::string kind = "bin";
  std::vector<PayloadLayout> layouts;
  std::vector<DownlinkCommand> downlinks;
  // The layout of `fport`, else the any-port one, else null.
  const PayloadLayout* LayoutFor(uint8_t fport) const;
  const DownlinkCommand* CommandFor(std::string_view name) const;  // null: no such command
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

// A downlink ready to queue: port, plain FRMPayload, confirmed or not.
struct EncodedDownlink {
  uint8_t fport = 1;
  std::vector<uint8_t> payload;
  bool confirmed = false;
};

// Turns a command request into a downlink (the argument grammar, devices/lorawan/README.md):
//  - name "downlink" (raw): `port=N` (1..223) and `hex=HEX` or `base64=B64`, or positionally
//    `N HEX`;
//  - a command of the profile: its arguments positionally in order, or as `name=value`;
//  - either may add `confirmed` (= `confirmed=true`) or `confirmed=false`.
// `max_payload` bounds the FRMPayload (the band plan's smallest). Errors name the bad argument
// and quote at most a short prefix of it. `profile` may be null (raw downlinks only).
Result<EncodedDownlink> EncodeDownlinkCommand(const PayloadProfile* profile, std::string_view name,
                                              const std::vector<std::string>& args,
                                              size_t max_payload);

}  // namespace sanigate::dev::lorawan
