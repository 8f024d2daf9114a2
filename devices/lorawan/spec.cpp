#include "lorawan/spec.h"

#include "lorawan/lorawan_adapter.h"
#include "lorawan/lorawan_config.h"

namespace sanigate::dev::lorawan {

AdapterSpec Spec() {
  AdapterSpec s;
  s.name = "lorawan";
  s.sample_config = "lorawan.toml";
  s.parse = ParseLorawanSection;
  s.create = [](const std::any& cfg, const settings::GatewaySection&, const AdapterServices& services) -> std::unique_ptr<Adapter> {
    return std::make_unique<LorawanAdapter>(std::any_cast<const LorawanConfig&>(cfg), services.mqtt_input);
  };
  return s;
}

}  // namespace sanigate::dev::lorawan
