#include "modbus/modbus_adapter.h"

#include <nlohmann/json.hpp>

namespace sanigate::dev::modbus {

ModbusAdapter::ModbusAdapter(ModbusConfig config) : config_(std::move(config)) {
  PlanLimits limits{static_cast<size_t>(config_.max_gap), static_cast<size_t>(config_.max_registers),
                    static_cast<size_t>(config_.max_bits)};
  if (!config_.devices.empty()) tcp_ = std::make_unique<ModbusTcpAdapter>(config_);
  for (const auto& b : config_.buses) buses_.push_back(std::make_unique<ModbusRtuBus>(b, limits));
}

ModbusAdapter::~ModbusAdapter() { Stop(); }

Status ModbusAdapter::Start(RecordSink& sink) {
  if (tcp_) {
    if (Status st = tcp_->Start(sink); !st.ok()) return st;
  }
  for (auto& b : buses_) b->Start(sink);
  return Status::Ok();
}

void ModbusAdapter::Stop() {
  if (tcp_) tcp_->Stop();
  for (auto& b : buses_) b->Stop();
}

AdapterHealth ModbusAdapter::Health() const {
  AdapterHealth h;
  h.state = "running";
  bool degraded = false;
  if (tcp_) {
    h = tcp_->Health();
    degraded = h.state == "degraded";
  }
  nlohmann::json buses = nlohmann::json::object();
  for (const auto& b : buses_) {
    BusHealth bh = b->Health();
    h.devices += bh.devices;
    h.online += bh.online;
    h.errors += bh.timeouts + bh.exceptions + bh.errors;
    h.polls += bh.polls;
    h.requests += bh.requests;
    buses[b->config().name] = {{"port_open", bh.port_open},       {"reopens", bh.reopens},
                               {"wrong_answers", bh.wrong_answers}, {"stale_bytes", bh.stale_bytes}};
    degraded |= !bh.port_open || bh.online < bh.devices;
    if (!bh.last_error.empty()) h.last_error = b->config().name + ": " + bh.last_error;
    h.per_device.insert(h.per_device.end(), bh.per_device.begin(), bh.per_device.end());
  }
  if (h.state == "running" && degraded) h.state = "degraded";
  if (!buses.empty()) h.details_json = nlohmann::json{{"buses", buses}}.dump();
  return h;
}

void ModbusAdapter::Execute(CommandRequest request, ReplyFn reply) {
  if (tcp_ && tcp_->Owns(request.device)) return tcp_->Execute(std::move(request), std::move(reply));
  for (auto& b : buses_)
    if (b->Owns(request.device)) return b->Execute(std::move(request), std::move(reply));
  reply({false, "unknown device " + request.device, {}});
}

void ModbusAdapter::InstallFirmware(FirmwareJob job, FirmwareProgressFn progress, FirmwareDoneFn done) {
  const DeviceConfig* device = nullptr;
  for (const auto& d : config_.devices)
    if (d.id == job.device) device = &d;
  for (const auto& b : config_.buses)
    for (const auto& d : b.devices)
      if (d.id == job.device) device = &d;
  if (!device) return done({false, "unknown device " + job.device, {}});
  if (!device->firmware) {
    std::string why = device->profile.empty()
                          ? "device " + device->id + " has no firmware window (no [firmware] table in its config)"
                          : "profile " + device->profile + " has no firmware window (no [firmware] table)";
    return done({false, why, {}});
  }
  if (tcp_ && tcp_->Owns(job.device))
    return tcp_->InstallFirmware(std::move(job), std::move(progress), std::move(done));
  for (auto& b : buses_)
    if (b->Owns(job.device)) return b->InstallFirmware(std::move(job), std::move(progress), std::move(done));
  done({false, "unknown device " + job.device, {}});
}

RulesByDevice ModbusAdapter::Rules() const {
  RulesByDevice rules;
  auto add = [&](const DeviceConfig& d) {
    DeviceRules r;
    r.overflow = d.overflow;
    r.fill = d.fill;
    r.events = d.events;
    for (const auto& p : d.points)
      if (p.rule.deadband) r.metrics[p.metric] = p.rule;
    rules[d.id] = std::move(r);
  };
  for (const auto& d : config_.devices) add(d);
  for (const auto& b : config_.buses)
    for (const auto& d : b.devices) add(d);
  return rules;
}

}  // namespace sanigate::dev::modbus
