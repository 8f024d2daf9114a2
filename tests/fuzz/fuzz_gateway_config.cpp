// The sanigate config (TOML): LoadGatewayConfigString with every compiled-in protocol's section
// parser, as `sanigate --check-config` reads a file. The text is named as if it were
// config/fuzz.toml in the source tree, so relative profile and key paths resolve against the
// shipped config/ directory (profiles are read from there; nothing is written).
#include <cstdint>

#include "app/config_loader.h"
#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto cfg = sanigate::app::LoadGatewayConfigString(fuzz::Text(data, size), SANIGATE_SOURCE_DIR "/config/fuzz.toml");
  if (!cfg.ok()) {
    FUZZ_CHECK(cfg.status().code() == sanigate::Code::kInvalid, "a config error that is not Invalid: " + cfg.status().ToString());
    FUZZ_CHECK(!cfg.status().message().empty(), "a config error without a message");
    return 0;
  }
  (void)cfg.value().OutboxPath();
  (void)cfg.value().FirmwareDir();
  return 0;
}
