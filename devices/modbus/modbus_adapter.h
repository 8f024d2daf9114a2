// The "modbus" adapter: Modbus TCP devices (a worker pool) and RTU buses (a worker per serial
// line) behind one Adapter, with one health summary and the pipeline rules of all devices.
// Thread-safety: Start/Stop from the owner; Health/Rules from any thread.
#pragma once

#include <memory>
#include <vector>

#include "api/adapter.h"
#include "modbus/modbus_config.h"
#include "modbus/modbus_rtu_bus.h"
#include "modbus/modbus_tcp_adapter.h"

namespace sanigate::dev::modbus {

class ModbusAdapter : public Adapter {
 public:
  explicit ModbusAdapter(ModbusConfig config);
  ~ModbusAdapter() override;

  std::string_view protocol() const override { return "modbus"; }
  Status Start(RecordSink& sink) override;
  void Stop() override;
  AdapterHealth Health() const override;
  RulesByDevice Rules() const override;
  void Execute(CommandRequest request, ReplyFn reply) override;
  // Through the device's bootloader window ([firmware] in its profile); see README.md.
  void InstallFirmware(FirmwareJob job, FirmwareProgressFn progress, FirmwareDoneFn done) override;

 private:
  ModbusConfig config_;
  std::unique_ptr<ModbusTcpAdapter> tcp_;
  std::vector<std::unique_ptr<ModbusRtuBus>> buses_;
};

}  // namespace sanigate::dev::modbus
