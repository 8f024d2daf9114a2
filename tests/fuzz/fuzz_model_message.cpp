// The model messages sanifleet decodes (fleet/app/model_message.h): every device's telemetry,
// events and statuses, which anyone allowed to publish on those topics can send. Byte 0 picks the
// leaf (telemetry, event, status or another one), the rest is the payload; a decoded message is
// applied twice to a registry entry (live, then again as back-fill) the way sanifleet does.
// Checked: a refusal has a reason; observed metrics are finite; counters and the location are
// whole / in range; what the entry keeps dumps as JSON without replacement characters.
#include <cmath>
#include <cstdint>
#include <nlohmann/json.hpp>

#include "app/model_message.h"
#include "core/untrusted.h"
#include "fuzz_common.h"

using namespace sanigate;
using namespace sanigate::fleet;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::Knobs k(data, size);
  static const char* const kLeaves[] = {"telemetry", "event", "status", "cmd/uv_lamp"};
  std::string leaf = kLeaves[k.U8() % 4];
  std::string payload(k.RestText());
  std::string error;
  auto m = DecodeModelMessage(leaf, payload, &error);
  if (!m) {
    FUZZ_CHECK(!error.empty(), "a refusal without a reason");
    return 0;
  }
  FUZZ_CHECK(leaf != "cmd/uv_lamp", "a command topic decoded as a model message");
  for (const auto& [name, v] : m->obs.metrics) FUZZ_CHECK(std::isfinite(v), "metric " + QuotePrefix(name, 40) + " not finite");
  if (m->obs.rssi_dbm) FUZZ_CHECK(std::isfinite(*m->obs.rssi_dbm), "rssi not finite");
  if (m->delta.location)
    FUZZ_CHECK(std::fabs(m->delta.location->first) <= 90 && std::fabs(m->delta.location->second) <= 180, "location out of range");
  DeviceEntry e;
  ApplyToEntry(*m, e, 1'767'225'600'000);
  m->obs.backfill = true;
  ApplyToEntry(*m, e, 1'767'225'601'000);
  nlohmann::json kept = {{"kind", e.kind}, {"profile", e.profile}, {"protocol", e.protocol}, {"gateway", e.gateway},
                         {"firmware", e.firmware}, {"model", e.model}, {"metrics", e.metrics}};
  std::string text = SafeDump(kept);
  FUZZ_CHECK(nlohmann::json::parse(text, nullptr, false).is_object(), "the kept entry does not dump as JSON");
  return 0;
}
