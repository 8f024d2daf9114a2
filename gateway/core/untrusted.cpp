#include "core/untrusted.h"

#include <cmath>
#include <cstdint>
#include <cstdio>

namespace sanigate {

std::string QuotePrefix(std::string_view bytes, size_t max_chars) {
  std::string out = "\"";
  size_t n = std::min(bytes.size(), max_chars);
  for (size_t i = 0; i < n; ++i) {
    auto c = static_cast<unsigned char>(bytes[i]);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      char buf[5];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    }
  }
  out += '"';
  if (bytes.size() > n) out += "... (" + std::to_string(bytes.size()) + " bytes)";
  return out;
}

size_t FirstInvalidUtf8(std::string_view text) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  size_t n = text.size(), i = 0;
  while (i < n) {
    unsigned char c = s[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    uint32_t cp;
    if (c >= 0xC2 && c <= 0xDF) len = 2, cp = c & 0x1F;
    else if (c >= 0xE0 && c <= 0xEF) len = 3, cp = c & 0x0F;
    else if (c >= 0xF0 && c <= 0xF4) len = 4, cp = c & 0x07;
    else return i;  // a continuation byte on its own, an overlong lead (C0, C1) or F5..FF
    if (i + len > n) return i;
    for (size_t k = 1; k < len; ++k) {
      if ((s[i + k] & 0xC0) != 0x80) return i;
      cp = (cp << 6) | (s[i + k] & 0x3F);
    }
    bool overlong = (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000);
    if (overlong || (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF) return i;
    i += len;
  }
  return std::string_view::npos;
}

size_t JsonNestingDepth(std::string_view text, size_t stop_above) {
  size_t depth = 0, deepest = 0;
  bool in_string = false, escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      deepest = std::max(deepest, ++depth);
      if (deepest > stop_above) return deepest;
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return deepest;
}

Result<nlohmann::json> ParseUntrustedJson(std::string_view text, const JsonLimits& limits) {
  if (text.size() > limits.max_bytes)
    return Invalid("payload of " + std::to_string(text.size()) + " bytes is over the limit of " +
                   std::to_string(limits.max_bytes));
  if (size_t bad = FirstInvalidUtf8(text); bad != std::string_view::npos)
    return Invalid("invalid UTF-8 at byte " + std::to_string(bad));
  if (JsonNestingDepth(text, limits.max_depth) > limits.max_depth)
    return Invalid("JSON nested deeper than " + std::to_string(limits.max_depth));
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Invalid("invalid JSON: " + QuotePrefix(text));
  return j;
}

std::string SafeDump(const nlohmann::json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::optional<int64_t> AsInt64(const nlohmann::json& v) {
  if (v.is_number_unsigned()) {
    auto u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(INT64_MAX)) return std::nullopt;
    return static_cast<int64_t>(u);
  }
  if (v.is_number_integer()) return v.get<int64_t>();
  if (!v.is_number_float()) return std::nullopt;
  // -2^63 is exact as a double, 2^63 is the first value above the range.
  double d = v.get<double>();
  if (!(d >= -9223372036854775808.0 && d < 9223372036854775808.0) || d != std::floor(d)) return std::nullopt;
  return static_cast<int64_t>(d);
}

std::optional<uint64_t> AsUint64(const nlohmann::json& v) {
  if (v.is_number_unsigned()) return v.get<uint64_t>();
  if (v.is_number_integer()) {
    auto i = v.get<int64_t>();
    if (i < 0) return std::nullopt;
    return static_cast<uint64_t>(i);
  }
  if (!v.is_number_float()) return std::nullopt;
  double d = v.get<double>();
  if (!(d >= 0 && d < 18446744073709551616.0) || d != std::floor(d)) return std::nullopt;
  return static_cast<uint64_t>(d);
}

namespace {
const nlohmann::json* Field(const nlohmann::json& obj, const char* key) {
  if (!obj.is_object()) return nullptr;
  auto it = obj.find(key);
  return it == obj.end() ? nullptr : &*it;
}
}  // namespace

std::optional<std::string> FieldString(const nlohmann::json& obj, const char* key) {
  const nlohmann::json* v = Field(obj, key);
  if (v == nullptr || !v->is_string()) return std::nullopt;
  return v->get<std::string>();
}

std::optional<bool> FieldBool(const nlohmann::json& obj, const char* key) {
  const nlohmann::json* v = Field(obj, key);
  if (v == nullptr || !v->is_boolean()) return std::nullopt;
  return v->get<bool>();
}

std::optional<int64_t> FieldInt64(const nlohmann::json& obj, const char* key) {
  const nlohmann::json* v = Field(obj, key);
  return v == nullptr ? std::nullopt : AsInt64(*v);
}

std::optional<uint64_t> FieldUint64(const nlohmann::json& obj, const char* key) {
  const nlohmann::json* v = Field(obj, key);
  return v == nullptr ? std::nullopt : AsUint64(*v);
}

}  // namespace sanigate
