// ModbusRtuBus: one RS-485 line. One worker thread owns the serial port and polls every device
// on the line in due-time order with exactly one request in flight, keeping the 3.5-character
// silence between frames. A dead device costs the line at most one timeout per cycle; a port
// that disappears (USB adapter unplugged) is reopened every second until it returns.
// Thread-safety: Start/Stop from the owner; Health from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "api/adapter.h"
#include "modbus/device_poller.h"
#include "modbus/firmware_installer.h"
#include "modbus/modbus_config.h"

namespace sanigate::dev::modbus {

struct BusHealth {
  bool port_open = false;
  uint64_t reopens = 0;
  uint32_t devices = 0, online = 0;
  uint64_t requests = 0, timeouts = 0, exceptions = 0, errors = 0;
  uint64_t polls = 0, wrong_answers = 0, stale_bytes = 0;  // stale: drained after a timeout
  std::string last_error;
  std::vector<DeviceCounters> per_device;
};

class ModbusRtuBus {
 public:
  ModbusRtuBus(BusConfig config, PlanLimits limits);
  ~ModbusRtuBus();
  void Start(RecordSink& sink);
  void Stop();
  BusHealth Health() const;
  // Queues a write; it goes out before the next poll on this line.
  void Execute(CommandRequest request, ReplyFn reply);
  bool Owns(const std::string& device) const;
  // Queues a firmware job for a device on this line. Its steps take turns with the polls of the
  // other devices (the device itself is not polled meanwhile); the device must have a window.
  void InstallFirmware(FirmwareJob job, FirmwareProgressFn progress, FirmwareDoneFn done);
  const BusConfig& config() const { return cfg_; }

 private:
  struct Device;
  struct PendingCommand {
    CommandRequest request;
    ReplyFn reply;
    std::chrono::steady_clock::time_point deadline;
  };
  void Run();
  void RunCommands();
  // Moves jobs queued by InstallFirmware to their devices (worker thread).
  void AdoptJobs();
  // One step of d's firmware job on the line.
  void RunJobStep(Device& d);
  void CancelJobs(const std::string& why);
  bool OpenPort();
  void ClosePort();
  // Reads and drops whatever arrives until the line has been quiet for t3.5 + guard_ms (at most
  // one longest frame more): after a timeout or a wrong answer, a late reply must not be taken
  // for the next slave's.
  void SettleLine();

  BusConfig cfg_;
  std::vector<std::unique_ptr<Device>> devices_;
  RecordSink* sink_ = nullptr;
  modbus_t* ctx_ = nullptr;  // worker thread only
  std::chrono::steady_clock::time_point line_quiet_since_{};

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::deque<PendingCommand> commands_;
  std::deque<std::unique_ptr<FirmwareInstaller>> new_jobs_;
  BusHealth health_;
  std::thread worker_;
};

}  // namespace sanigate::dev::modbus
