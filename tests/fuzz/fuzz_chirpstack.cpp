// ChirpStack v4 JSON uplink events (application/+/device/+/event/up): ParseChirpstackUplink on any
// text, with and without the DevEUI of the topic, and ParseRfc3339Ms on the text itself.
#include <cstdint>

#include "fuzz_common.h"
#include "lorawan/chirpstack_uplink.h"
#include "lorawan/lorawan_crypto.h"

using namespace sanigate::dev::lorawan;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text = fuzz::Text(data, size);
  for (std::string_view topic_eui : {std::string_view{}, std::string_view{"0102030405060708"}}) {
    auto up = ParseChirpstackUplink(text, topic_eui);
    if (!up.ok()) continue;
    const ChirpstackUplink& u = up.value();
    FUZZ_CHECK(u.concentrators >= 0, "concentrators");
    FUZZ_CHECK(u.concentrators > 0 || u.gateway_id.empty(), "a best copy without concentrators");
    auto eui = ParseEui(EuiToHex(u.dev_eui));
    FUZZ_CHECK(eui.ok() && eui.value() == u.dev_eui, "EUI round trip");
  }
  (void)ParseRfc3339Ms(text);
  return 0;
}
