// The small text codecs of the LoRaWAN code: hex keys, EUIs and DevAddrs (config and ChirpStack),
// base64 (GWMP "data", ChirpStack "data"), LoRa data rates ("SF7BW125"), MHz -> Hz, RFC 3339
// times, band-plan names. Each decoder is checked against its encoder where there is one. The
// first byte picks the decoder; the rest is the text.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>

#include "fuzz_common.h"
#include "lorawan/band_plan.h"
#include "lorawan/chirpstack_uplink.h"
#include "lorawan/lorawan_crypto.h"
#include "lorawan/semtech_udp.h"

using namespace sanigate::dev::lorawan;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::Knobs k(data, size);
  const uint8_t sel = k.U8();
  std::string_view text = k.RestText();
  switch (sel % 8) {
    case 0: {
      auto b = ParseHex(text);
      if (b.ok()) {
        FUZZ_CHECK(b.value().size() * 2 == text.size(), "hex length");
        auto again = ParseHex(ToHex(b.value()));
        FUZZ_CHECK(again.ok() && again.value() == b.value(), "hex round trip");
      }
      break;
    }
    case 1: {
      if (auto key = ParseKey(text); key.ok()) {
        auto again = ParseKey(ToHex(key.value()));
        FUZZ_CHECK(again.ok() && again.value() == key.value(), "key round trip");
      }
      if (auto eui = ParseEui(text); eui.ok()) {
        auto again = ParseEui(EuiToHex(eui.value()));
        FUZZ_CHECK(again.ok() && again.value() == eui.value(), "EUI round trip");
      }
      (void)ParseDevAddr(text);
      break;
    }
    case 2: {
      auto b = Base64Decode(text);
      if (b.ok()) {
        std::string enc = Base64Encode(b.value());
        auto again = Base64Decode(enc);
        FUZZ_CHECK(again.ok() && again.value() == b.value(), "base64 round trip");
      }
      // And the other way: any bytes encode to base64 that decodes to them.
      std::span<const uint8_t> raw = k.Rest();
      auto back = Base64Decode(Base64Encode(raw));
      FUZZ_CHECK(back.ok() && back.value() == sanigate::dev::lorawan::Bytes(raw.begin(), raw.end()), "base64 of bytes");
      break;
    }
    case 3: {
      auto r = ParseLoraDatr(text);
      if (r.ok()) {
        auto again = ParseLoraDatr(FormatLoraDatr(r.value()));
        FUZZ_CHECK(again.ok() && again.value() == r.value(), "datr round trip");
      }
      break;
    }
    case 4: {
      // A double from the input's bytes, as a forwarder's "freq" might be.
      double mhz = 0;
      std::span<const uint8_t> raw = k.Rest();
      if (raw.size() >= sizeof mhz) std::memcpy(&mhz, raw.data(), sizeof mhz);
      auto hz = MhzToHz(mhz);
      if (hz.ok())
        FUZZ_CHECK(std::fabs(static_cast<double>(hz.value()) - mhz * 1e6) <= 1.0,
                   "MhzToHz(" + std::to_string(mhz) + ") = " + std::to_string(hz.value()) + " Hz");
      break;
    }
    case 5:
      (void)ParseRfc3339Ms(text);
      break;
    case 6:
      if (auto plan = FindBandPlan(text); plan.ok()) (void)plan.value()->name();
      (void)ParseTxAckError(text);
      break;
    case 7: {
      auto a = ParseDevAddr(text);
      if (a.ok()) {
        char buf[16];
        std::snprintf(buf, sizeof buf, "%08X", a.value());
        auto again = ParseDevAddr(buf);
        FUZZ_CHECK(again.ok() && again.value() == a.value(), "DevAddr round trip");
      }
      break;
    }
  }
  return 0;
}
