// The sanifleet config (TOML): LoadFleetConfigString, as `sanifleet --check-config` reads a file,
// named as if it were config/fuzz.toml in the source tree. Also ParseDurationS on the text.
#include <cstdint>

#include "app/fleet_config.h"
#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text = fuzz::Text(data, size);
  auto cfg = sanigate::fleet::LoadFleetConfigString(text, SANIGATE_SOURCE_DIR "/config/fuzz.toml");
  if (!cfg.ok()) {
    FUZZ_CHECK(cfg.status().code() == sanigate::Code::kInvalid, "a config error that is not Invalid: " + cfg.status().ToString());
    FUZZ_CHECK(!cfg.status().message().empty(), "a config error without a message");
  } else {
    (void)cfg.value().RegistryPath();
  }
  if (text.size() < 64) {
    auto d = sanigate::fleet::ParseDurationS(text);
    if (d) FUZZ_CHECK(*d > 0, "a duration that is not positive");
  }
  return 0;
}
