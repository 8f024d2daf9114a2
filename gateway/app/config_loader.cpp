#include "app/config_loader.h"

#include "registry/registry.h"

namespace sanigate::app {
namespace {

std::vector<settings::SectionParser> Parsers() {
  std::vector<settings::SectionParser> out;
  for (const auto& spec : dev::AllProtocols()) out.push_back({spec.name, spec.parse});
  return out;
}

}  // namespace

Result<settings::Config> LoadGatewayConfig(const std::string& path) {
  return settings::LoadConfig(path, Parsers());
}

Result<settings::Config> LoadGatewayConfigString(std::string_view text, const std::string& name) {
  return settings::LoadConfigString(text, name, Parsers());
}

}  // namespace sanigate::app
