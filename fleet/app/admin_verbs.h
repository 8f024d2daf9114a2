// sanifleet's admin API (fleet/README.md "Admin API"): a table from verb name to handler. The
// table parses a request's payload within the verb's limits and turns the handler's answer into
// the reply document, so adding a verb is one entry and every verb gets the same limits and the
// same error replies. No MQTT here: the daemon publishes the reply to the response topic.
// Not thread-safe: built once, then used by the daemon's worker only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace sanigate::fleet {

// An admin answer: a result, or an error with its code (invalid, not_found, internal).
struct AdminAnswer {
  nlohmann::json result;
  std::string code, error;
  static AdminAnswer Ok(nlohmann::json r) { return {std::move(r), {}, {}}; }
  static AdminAnswer Fail(std::string code, std::string error) { return {nullptr, std::move(code), std::move(error)}; }
};

class AdminVerbs {
 public:
  // args: the request's JSON object ({} for an empty payload).
  using Handler = std::function<AdminAnswer(const nlohmann::json& args, int64_t now_ms)>;
  static constexpr size_t kDefaultMaxBytes = 64 * 1024;  // every verb but the firmware chunks
  static constexpr int kMaxDepth = 16;

  // A verb whose payload may be up to max_bytes. Adding a name twice replaces the handler.
  void Add(std::string verb, Handler handler, size_t max_bytes = kDefaultMaxBytes);
  // The reply: {"ok":true,"result":…} or {"ok":false,"error":text,"code":…}. A payload over the
  // verb's limits or not a JSON object is "invalid" before the verb is looked up (as it always
  // was); an unknown verb is "invalid" and its error lists the known ones. A handler's exception
  // passes through (the daemon counts it as a malformed message).
  nlohmann::json Answer(const std::string& verb, const std::string& payload, int64_t now_ms) const;
  // In the order they were added.
  std::vector<std::string> Names() const;

 private:
  struct Entry {
    std::string verb;
    size_t max_bytes = kDefaultMaxBytes;
    Handler handler;
  };
  const Entry* Find(const std::string& verb) const;
  std::vector<Entry> entries_;  // a handful: a linear search, and the order of the list in errors
};

}  // namespace sanigate::fleet
