// Handling input that arrives from outside (MQTT payloads, frames, files): size and depth limits
// checked before anything is built from it, UTF-8 validation, and a short escaped prefix for
// quoting it in logs and replies. No I/O; thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "core/status.h"

namespace sanigate {

struct JsonLimits {
  size_t max_bytes = 64 * 1024;  // refused above this, before parsing
  size_t max_depth = 16;         // nesting of arrays and objects
};

// Printable ASCII as is, everything else as \xNN (and \" \\), at most `max_chars` input bytes,
// then "... (N bytes)": safe for a log line or a JSON string whatever the input was.
std::string QuotePrefix(std::string_view bytes, size_t max_chars = 48);

// Offset of the first byte that is not part of valid UTF-8 (no overlongs, no surrogates, at
// most U+10FFFF), or npos when all of `text` is valid.
size_t FirstInvalidUtf8(std::string_view text);

// The deepest nesting of [ and { outside strings, scanning no further than needed to see it
// exceed `stop_above`. Iterative: safe on any input.
size_t JsonNestingDepth(std::string_view text, size_t stop_above);

// Parses untrusted JSON within `limits`. Errors (kInvalid) say what is wrong without echoing
// more than a short prefix: "payload of 1048576 bytes is over the limit of 4096",
// "invalid UTF-8 at byte 3", "JSON nested deeper than 16", "invalid JSON at byte 7".
Result<nlohmann::json> ParseUntrustedJson(std::string_view text, const JsonLimits& limits);

// nlohmann's dump() that never throws: invalid UTF-8 inside strings is replaced (U+FFFD).
std::string SafeDump(const nlohmann::json& j);

// Typed reads of untrusted JSON. nlohmann's value() and get() throw type_error when a field has
// another type, and get<int64_t>() of a float outside the integer's range is undefined behaviour;
// these never throw and give nullopt for a wrong type or a number that does not fit. Integers
// accept whole floats inside the range (1.0 is 1; 1.5 and 1e30 are not integers).
std::optional<int64_t> AsInt64(const nlohmann::json& v);
std::optional<uint64_t> AsUint64(const nlohmann::json& v);
// The field `key` of `obj`: nullopt when `obj` is not an object, the key is missing or its value
// has another type.
std::optional<std::string> FieldString(const nlohmann::json& obj, const char* key);
std::optional<bool> FieldBool(const nlohmann::json& obj, const char* key);
std::optional<int64_t> FieldInt64(const nlohmann::json& obj, const char* key);
std::optional<uint64_t> FieldUint64(const nlohmann::json& obj, const char* key);

}  // namespace sanigate
