// The payload of a device command as anyone allowed to publish on a `cmd` topic sends it
// (gateway/app/command_payload.h ParseCommandPayload), and the error reply the gateway builds from
// a refusal (gateway/app/gateway.cpp: {"ok":false,"error":…,"result":null} through SafeDump).
// Checked: a refusal is kInvalid with a short message that is valid UTF-8 (the reply needs no
// replacement characters); what parses stays within the argument limits, and its arguments
// written back as {"args":[…],"timeout_ms":N} parse to the same arguments and timeout.
#include <cstdint>
#include <nlohmann/json.hpp>

#include "app/command_payload.h"
#include "core/untrusted.h"
#include "fuzz_common.h"

using nlohmann::json;
using namespace sanigate;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view payload = fuzz::Text(data, size);
  auto parsed = app::ParseCommandPayload(payload);
  if (!parsed.ok()) {
    const Status& st = parsed.status();
    FUZZ_CHECK(st.code() == Code::kInvalid, "a refusal that is not Invalid: " + st.ToString());
    const std::string& why = st.message();
    FUZZ_CHECK(!why.empty() && why.size() <= 320, "refusal of " + std::to_string(why.size()) + " bytes: " + QuotePrefix(why, 400));
    FUZZ_CHECK(FirstInvalidUtf8(why) == std::string_view::npos, "refusal with invalid UTF-8: " + QuotePrefix(why, 400));
    json reply;
    reply["ok"] = false;
    reply["error"] = why.substr(0, 512);
    reply["result"] = nullptr;
    std::string text = SafeDump(reply);
    FUZZ_CHECK(text == reply.dump(), "the error reply needed replacement characters");
    json back = json::parse(text, nullptr, false);
    FUZZ_CHECK(back.is_object() && back["error"] == why.substr(0, 512), "error reply round trip");
    return 0;
  }
  const app::CommandPayload& p = parsed.value();
  FUZZ_CHECK(p.args.size() <= app::kMaxCommandArgs, "too many arguments accepted");
  for (const std::string& a : p.args) FUZZ_CHECK(a.size() <= app::kMaxCommandArgBytes, "an argument over the limit");
  auto ms = p.timeout.count();
  FUZZ_CHECK(ms == 0 || (ms >= 10 && ms <= 60000), "timeout " + std::to_string(ms));

  json again = {{"args", p.args}};
  if (ms != 0) again["timeout_ms"] = ms;
  std::string text = again.dump();
  if (text.size() > app::kMaxCommandPayloadBytes) return 0;  // escaping made it longer than a payload may be
  auto re = app::ParseCommandPayload(text);
  FUZZ_CHECK(re.ok(), "the arguments written back are refused: " + re.status().message() + " for " + text);
  FUZZ_CHECK(re.value().args == p.args && re.value().timeout == p.timeout, "argument round trip: " + text);
  return 0;
}
