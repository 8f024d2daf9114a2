#include "nmea/spec.h"

#include "nmea/nmea_adapter.h"
#include "nmea/nmea_config.h"

namespace sanigate::dev::nmea {

AdapterSpec Spec() {
  AdapterSpec s;
  s.name = "nmea";
  s.sample_config = "nmea.toml";
  s.parse = ParseNmeaSection;
  s.create = [](const std::any& cfg, const settings::GatewaySection&, const AdapterServices&) -> std::unique_ptr<Adapter> {
    return std::make_unique<NmeaAdapter>(std::any_cast<const NmeaConfig&>(cfg));
  };
  return s;
}

}  // namespace sanigate::dev::nmea
