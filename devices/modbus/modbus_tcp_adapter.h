// Modbus TCP part of the modbus adapter: polls configured devices with libmodbus on their intervals from a small
// pool of worker threads (libmodbus blocks), so a device that stops answering costs only its own
// timeout and never delays the others. Each device's cycle is a DevicePoller.
// Thread-safety: Start/Stop from the owner; Health/Rules from any thread.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <queue>
#include <string>
#include <thread>
#include <vector>

#include "api/adapter.h"
#include "modbus/device_poller.h"
#include "modbus/firmware_installer.h"
#include "modbus/modbus_config.h"

namespace sanigate::dev::modbus {

class ModbusTcpAdapter {
 public:
  explicit ModbusTcpAdapter(ModbusConfig config);
  ~ModbusTcpAdapter();

  Status Start(RecordSink& sink);
  void Stop();
  AdapterHealth Health() const;
  // Queues a write for one of its devices; writes go ahead of that device's next poll.
  void Execute(CommandRequest request, ReplyFn reply);
  bool Owns(const std::string& device) const;
  // Queues a firmware job; its steps take the device's poll slots (the device is not polled
  // meanwhile), interleaved with the other devices' polls. The device must have a window.
  void InstallFirmware(FirmwareJob job, FirmwareProgressFn progress, FirmwareDoneFn done);

 private:
  struct Device;
  using Due = std::pair<std::chrono::steady_clock::time_point, size_t>;

  struct PendingCommand {
    CommandRequest request;
    ReplyFn reply;
    std::chrono::steady_clock::time_point deadline;
  };

  void WorkerLoop();
  // Connects if needed, runs the queued writes, then (if `poll`) one poll cycle.
  void Visit(Device& d, std::deque<PendingCommand> commands, bool poll);
  // Connects if needed and runs one step of the device's firmware job (commands are refused).
  FirmwareInstaller::Step VisitJob(Device& d, FirmwareInstaller& job, std::deque<PendingCommand> commands);
  // Connects d.ctx if needed; returns why it cannot, or "".
  std::string Connect(Device& d);

  ModbusConfig config_;
  std::vector<std::unique_ptr<Device>> devices_;
  RecordSink* sink_ = nullptr;

  // Leader/follower: one free worker waits for the next due poll (timer_cv_), the others sleep
  // untimed (idle_cv_) until handed the timer or urgent work, so a due poll wakes one thread,
  // not every worker.
  void Idle(std::unique_lock<std::mutex>& lk);
  void WakeForUrgent();               // mu_ held
  void WakeFor(std::chrono::steady_clock::time_point due);  // mu_ held: a slot was queued
  mutable std::mutex mu_;
  std::condition_variable idle_cv_;
  std::condition_variable timer_cv_;
  int idle_workers_ = 0;
  bool timer_taken_ = false;
  std::chrono::steady_clock::time_point timer_until_{};
  std::priority_queue<Due, std::vector<Due>, std::greater<Due>> ready_;
  std::deque<size_t> urgent_;  // devices with writes waiting: served before any poll
  bool stop_ = false;
  std::vector<std::thread> workers_;
  AdapterHealth health_;
};

}  // namespace sanigate::dev::modbus
