#include "modbus/spec.h"

#include "modbus/modbus_config.h"
#include "modbus/modbus_adapter.h"

namespace sanigate::dev::modbus {

AdapterSpec Spec() {
  AdapterSpec s;
  s.name = "modbus";
  s.sample_config = "modbus.toml";
  s.parse = ParseModbusSection;
  s.create = [](const std::any& cfg, const settings::GatewaySection&, const AdapterServices&) -> std::unique_ptr<Adapter> {
    return std::make_unique<ModbusAdapter>(std::any_cast<const ModbusConfig&>(cfg));
  };
  return s;
}

}  // namespace sanigate::dev::modbus
