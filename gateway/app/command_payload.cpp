#include "app/command_payload.h"

#include <algorithm>

#include "core/untrusted.h"

namespace sanigate::app {
namespace {

using json = nlohmann::json;

// A scalar argument as text; arrays and objects are not arguments.
Result<std::string> ArgText(const json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_number() || v.is_boolean()) return v.dump();
  return Invalid("arguments must be strings, numbers or booleans");
}

Status AddArg(CommandPayload& out, std::string arg) {
  if (out.args.size() >= kMaxCommandArgs)
    return Invalid("more than " + std::to_string(kMaxCommandArgs) + " arguments");
  if (arg.size() > kMaxCommandArgBytes)
    return Invalid("argument " + QuotePrefix(arg, 24) + " is longer than " + std::to_string(kMaxCommandArgBytes) + " bytes");
  out.args.push_back(std::move(arg));
  return Status::Ok();
}

Status SplitText(CommandPayload& out, std::string_view text) {
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find(' ', pos);
    if (end == std::string_view::npos) end = text.size();
    if (end > pos)
      if (Status st = AddArg(out, std::string(text.substr(pos, end - pos))); !st.ok()) return st;
    pos = end + 1;
  }
  return Status::Ok();
}

}  // namespace

Result<CommandPayload> ParseCommandPayload(std::string_view payload) {
  CommandPayload out;
  if (payload.size() > kMaxCommandPayloadBytes)
    return Invalid("payload of " + std::to_string(payload.size()) + " bytes is over the limit of " +
                   std::to_string(kMaxCommandPayloadBytes));
  if (size_t bad = FirstInvalidUtf8(payload); bad != std::string_view::npos)
    return Invalid("invalid UTF-8 at byte " + std::to_string(bad));
  size_t first = payload.find_first_not_of(" \t\r\n");
  if (first == std::string_view::npos) return out;  // empty: no arguments
  bool looks_structured = payload[first] == '{' || payload[first] == '[';
  auto parsed = ParseUntrustedJson(payload, {.max_bytes = kMaxCommandPayloadBytes, .max_depth = 4});
  if (!parsed.ok()) {
    // Plain text is fine; text that starts like JSON but is not is an error.
    if (looks_structured || parsed.status().message().rfind("JSON nested", 0) == 0)
      return parsed.status();
    if (Status st = SplitText(out, payload); !st.ok()) return st;
    return out;
  }
  const json& p = *parsed;
  if (p.is_string() || p.is_number() || p.is_boolean()) {
    if (Status st = SplitText(out, p.is_string() ? p.get<std::string>() : p.dump()); !st.ok()) return st;
    return out;
  }
  if (!p.is_object())
    return Invalid("payload must be {\"args\":[...]}, {\"value\":...}, {\"timeout_ms\":N} or plain text");
  for (const auto& [key, v] : p.items())
    if (key != "args" && key != "value" && key != "timeout_ms")
      return Invalid("unknown key " + QuotePrefix(key, 32) + " (args, value, timeout_ms)");
  if (p.contains("args") && p.contains("value")) return Invalid("give either args or value, not both");
  if (auto a = p.find("args"); a != p.end()) {
    if (!a->is_array()) return Invalid("args must be an array");
    for (const auto& v : *a) {
      auto text = ArgText(v);
      if (!text.ok()) return text.status();
      if (Status st = AddArg(out, std::move(*text)); !st.ok()) return st;
    }
  }
  if (auto v = p.find("value"); v != p.end()) {
    auto text = ArgText(*v);
    if (!text.ok()) return text.status();
    if (Status st = AddArg(out, std::move(*text)); !st.ok()) return st;
  }
  if (auto t = p.find("timeout_ms"); t != p.end()) {
    if (!t->is_number_integer() || t->get<int64_t>() < 10 || t->get<int64_t>() > 60000)
      return Invalid("timeout_ms must be an integer from 10 to 60000");
    out.timeout = std::chrono::milliseconds(t->get<int64_t>());
  }
  return out;
}

}  // namespace sanigate::app
