// LoRaWAN application payloads through the declarative byte-layout codec: DecodePayload with a
// fixed profile (the shipped config/profiles/*.toml payload profiles and one that uses every field
// type, both byte orders, flags, scales and ranges). Input: FPort, profile index, FRMPayload.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <vector>

#include "fuzz_common.h"
#include "lorawan/payload_codec.h"

using namespace sanigate::dev::lorawan;

namespace {

constexpr const char kEveryType[] = R"(
description = "every field type"
kind = "bin"
codec = "byte-layout"
[[uplinks]]
fport = 7
[[uplinks.fields]]
metric = "a_u8"
offset = 0
[[uplinks.fields]]
metric = "b_i8"
offset = 1
type = "i8"
scale = -0.5
offset_add = 3.25
decimals = 2
[[uplinks.fields]]
metric = "c_u16le"
offset = 2
type = "u16"
endian = "little"
min = 10.0
max = 60000.0
[[uplinks.fields]]
metric = "d_i16"
offset = 3
type = "i16"
scale = 0.1
decimals = 1
[[uplinks.fields]]
metric = "e_u32"
offset = 5
type = "u32"
scale = 1000000000.0
decimals = 12
[[uplinks.fields]]
metric = "f_i32le"
offset = 9
type = "i32"
endian = "little"
[[uplinks.fields]]
metric = "g_f32"
offset = 13
type = "f32"
min = -1000.0
max = 1000.0
[[uplinks.fields]]
metric = "h_f32le"
offset = 17
type = "f32"
endian = "little"
scale = 1e-9
offset_add = -1e12
decimals = 0
[[uplinks.fields]]
metric = "flag31"
offset = 21
type = "u32"
bit = 31
[[uplinks.fields]]
metric = "flag0"
offset = 254
bit = 0
[[uplinks]]
[[uplinks.fields]]
metric = "any_port"
offset = 0
type = "i32"
)";

std::vector<PayloadProfile>& Profiles() {
  static std::vector<PayloadProfile> profiles;
  return profiles;
}

void Load(sanigate::Result<PayloadProfile> p, const char* what) {
  if (!p.ok()) {
    std::fprintf(stderr, "fuzz_lorawan_payload: %s: %s\n", what, p.status().message().c_str());
    std::abort();
  }
  Profiles().push_back(std::move(p.value()));
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  const std::string dir = SANIGATE_SOURCE_DIR "/config/profiles/";
  for (const char* name : {"bin-monitor-ultrasonic-v1.toml", "bin-monitor-compact-le-v1.toml"})
    Load(LoadPayloadProfile(dir + name), name);
  Load(ParsePayloadProfileText(kEveryType, "every-type.toml"), "every-type.toml");
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (Profiles().empty()) LLVMFuzzerInitialize(nullptr, nullptr);
  fuzz::Knobs k(data, size);
  const uint8_t fport = k.U8();
  const PayloadProfile& profile = Profiles()[k.U8() % Profiles().size()];
  auto payload = k.Rest();
  auto decoded = DecodePayload(profile, fport, payload);
  const PayloadLayout* layout = profile.LayoutFor(fport);
  if (!decoded.ok()) {
    FUZZ_CHECK(!layout || payload.size() < layout->min_size, "refused a payload that fits its layout: " +
                                                                 decoded.status().message());
    return 0;
  }
  FUZZ_CHECK(layout && payload.size() >= layout->min_size, "decoded without a layout or too short");
  const DecodedPayload& d = decoded.value();
  FUZZ_CHECK(d.metrics.size() + d.quality.size() == layout->fields.size(), "every field is a metric or a quality flag");
  std::set<std::string> names;
  for (const auto& m : d.metrics) {
    FUZZ_CHECK(names.insert(m.name).second, "metric " + m.name + " twice");
    if (auto* v = std::get_if<double>(&m.value)) FUZZ_CHECK(std::isfinite(*v), "non-finite value of " + m.name);
  }
  return 0;
}
