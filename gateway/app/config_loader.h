// Loads the sanigate config with every compiled-in protocol's section parser. Wiring only.
#pragma once

#include <string>

#include "settings/gateway_config.h"

namespace sanigate::app {

Result<settings::Config> LoadGatewayConfig(const std::string& path);
Result<settings::Config> LoadGatewayConfigString(std::string_view text, const std::string& name);

}  // namespace sanigate::app
