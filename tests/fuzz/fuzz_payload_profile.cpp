// LoRaWAN payload profiles (TOML, config/profiles/*.toml with codec = "byte-layout"):
// ParsePayloadProfileText on any text. A profile that loads must decode payloads that fit each of
// its layouts (all zeros, all ones, a counting pattern; at min_size and at 255 bytes) and refuse
// one byte less than min_size.
#include <cmath>
#include <cstdint>
#include <vector>

#include "fuzz_common.h"
#include "lorawan/payload_codec.h"

using namespace sanigate::dev::lorawan;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto profile = ParsePayloadProfileText(fuzz::Text(data, size), "fuzz-profile.toml");
  if (!profile.ok()) {
    FUZZ_CHECK(!profile.status().message().empty(), "an error without a message");
    return 0;
  }
  const PayloadProfile& p = profile.value();
  for (const PayloadLayout& l : p.layouts) {
    FUZZ_CHECK(!l.fields.empty(), "a layout without fields loaded");
    FUZZ_CHECK(l.min_size <= 255, "a layout longer than a LoRa frame loaded");
    const uint8_t port = l.fport.value_or(0);
    if (!l.fport && p.LayoutFor(0) != &l) continue;  // another any-port layout took precedence
    for (size_t n : {l.min_size, size_t{255}}) {
      for (int pattern = 0; pattern < 3; ++pattern) {
        std::vector<uint8_t> payload(n);
        for (size_t i = 0; i < n; ++i)
          payload[i] = pattern == 0 ? 0x00 : pattern == 1 ? 0xFF : static_cast<uint8_t>(i * 37 + 11);
        auto d = DecodePayload(p, port, payload);
        FUZZ_CHECK(d.ok(), "a fitting payload was refused: " + d.status().message());
        FUZZ_CHECK(d.value().metrics.size() + d.value().quality.size() == l.fields.size(), "field count");
        for (const auto& m : d.value().metrics)
          if (auto* v = std::get_if<double>(&m.value)) FUZZ_CHECK(std::isfinite(*v), "non-finite " + m.name);
      }
    }
    if (l.min_size > 0) {
      std::vector<uint8_t> short_payload(l.min_size - 1, 0x5A);
      FUZZ_CHECK(!DecodePayload(p, port, short_payload).ok(), "a payload shorter than the layout was decoded");
    }
  }
  return 0;
}
