#include "app/admin_verbs.h"

#include <spdlog/spdlog.h>

#include "core/untrusted.h"

namespace sanigate::fleet {

using json = nlohmann::json;

void AdminVerbs::Add(std::string verb, Handler handler, size_t max_bytes) {
  for (auto& e : entries_)
    if (e.verb == verb) {
      e.handler = std::move(handler);
      e.max_bytes = max_bytes;
      return;
    }
  entries_.push_back({std::move(verb), max_bytes, std::move(handler)});
}

const AdminVerbs::Entry* AdminVerbs::Find(const std::string& verb) const {
  for (const auto& e : entries_)
    if (e.verb == verb) return &e;
  return nullptr;
}

std::vector<std::string> AdminVerbs::Names() const {
  std::vector<std::string> names;
  for (const auto& e : entries_) names.push_back(e.verb);
  return names;
}

json AdminVerbs::Answer(const std::string& verb, const std::string& payload, int64_t now_ms) const {
  auto fail = [](const std::string& code, const std::string& error) {
    return json{{"ok", false}, {"error", error}, {"code", code}};
  };
  const Entry* entry = Find(verb);
  // Anyone allowed to publish here may send anything: parse within the verb's limits first.
  JsonLimits limits{.max_bytes = entry ? entry->max_bytes : kDefaultMaxBytes, .max_depth = kMaxDepth};
  auto parsed = payload.empty() ? Result<json>(json::object()) : ParseUntrustedJson(payload, limits);
  if (!parsed.ok()) {
    spdlog::warn("admin {}: refused: {}", QuotePrefix(verb, 32), parsed.status().message());
    return fail("invalid", parsed.status().message());
  }
  if (!parsed->is_object()) return fail("invalid", "the request payload must be a JSON object of arguments");
  if (!entry) {
    std::string known;
    for (const auto& e : entries_) known += (known.empty() ? "" : ", ") + e.verb;
    return fail("invalid", "unknown verb \"" + verb + "\" (" + known + ")");
  }
  AdminAnswer a = entry->handler(*parsed, now_ms);
  if (!a.code.empty()) return fail(a.code, a.error);
  return {{"ok", true}, {"result", std::move(a.result)}};
}

}  // namespace sanigate::fleet
