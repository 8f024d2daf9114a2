// The JT/T 808 server: one TCP listener, one session per terminal, all on one io_context thread
// owned by the adapter (no locks in the sessions; counters for Health() behind one mutex).
// Positions become vehicle readings and alarm events; a report is acknowledged (0x8001) only
// after its records are committed to the outbox. Commands (locate, set_params, text,
// confirm_alarm) go to the terminal and are answered with its response or a timeout. Firmware
// installs (0x8108/0x0108/0x8107) run as one coroutine per terminal on the same thread.
// Thread-safety: Start/Stop from the owner; Health/Rules/Execute/InstallFirmware/OwnsDevice from
// any thread.
#pragma once

#include <memory>

#include "api/adapter.h"
#include "jt808/jt808_config.h"

namespace sanigate::dev::jt808 {

class Jt808Adapter : public Adapter {
 public:
  explicit Jt808Adapter(Jt808Config config);
  ~Jt808Adapter() override;
  std::string_view protocol() const override { return "jt808"; }
  Status Start(RecordSink& sink) override;
  void Stop() override;
  AdapterHealth Health() const override;
  RulesByDevice Rules() const override;
  void Execute(CommandRequest request, ReplyFn reply) override;
  bool OwnsDevice(const std::string& device) const override;
  // 0x8108 upgrade package (subpackaged, one packet at a time, each acknowledged), the terminal's
  // 0x0108 result, then 0x8107 after it reconnects: done when 0x0107 shows job.version.
  void InstallFirmware(FirmwareJob job, FirmwareProgressFn progress, FirmwareDoneFn done) override;
  // The bound port (the configured one, or the one the OS chose for port 0). 0 before Start.
  uint16_t port() const;

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace sanigate::dev::jt808
