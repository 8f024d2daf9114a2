// FirmwareInstaller: one firmware job on one Modbus device, through the bootloader register
// window its profile declares ([firmware], see README.md in this folder). The job runs in small
// steps (one chunk and its status read, one status poll while the device verifies, one version
// read after the reboot) which the device's transport interleaves with the polls of the other
// devices on the same serial line or TCP worker; after each step the installer says when it
// wants to run again (at once while transferring, later while the device is busy, verifying or
// rebooting), so one rollout never holds a line for longer than one step.
// Not thread-safe: one worker runs a job's steps at a time. `done` is called exactly once: by
// Run when the job ends, by Cancel, or by the destructor ("gateway stopping").
#pragma once

#include <chrono>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "api/adapter.h"
#include "modbus/modbus_config.h"

typedef struct _modbus modbus_t;

namespace sanigate::dev::modbus {

// CRC-32 (IEEE 802.3, reflected 0xEDB88320, init and final xor 0xFFFFFFFF: zlib's crc32()).
// Continue a running CRC by passing the previous result.
uint32_t Crc32(std::span<const uint8_t> bytes, uint32_t crc = 0);

// The text for a bootloader error code: the profile's own, else the protocol's, else "error N".
std::string FirmwareErrorText(const FirmwareConfig& fw, int code);

class FirmwareInstaller {
 public:
  using Clock = std::chrono::steady_clock;

  // Bootloader protocol values (README.md): written to `control`, read from `status`.
  enum Command : uint16_t { kBegin = 1, kCommit = 2, kReboot = 3, kAbort = 4 };
  enum Status : uint16_t { kIdle = 0, kReceiving = 1, kVerifying = 2, kReady = 3, kError = 4 };

  struct Step {
    bool finished = false;
    Clock::time_point next{};  // when to run the next step
    bool link_failed = false;  // no answer: reconnect (TCP) or flush the line (RTU) before more
    int error = 0;             // errno of the request that failed (a lost serial port shows here)
  };

  // `device` must have a firmware window.
  FirmwareInstaller(const DeviceConfig& device, FirmwareJob job, FirmwareProgressFn progress,
                    FirmwareDoneFn done);
  ~FirmwareInstaller();
  FirmwareInstaller(const FirmwareInstaller&) = delete;
  FirmwareInstaller& operator=(const FirmwareInstaller&) = delete;

  // Runs one step on `ctx` (connected; the response timeout is the caller's). ctx == nullptr:
  // the device cannot be reached now (`unreachable` says why); counts as no answer.
  Step Run(modbus_t* ctx, const std::string& unreachable = {});
  // Ends an unfinished job with `why` (done is called now).
  void Cancel(const std::string& why);

  bool finished() const { return finished_; }
  const std::string& device() const { return device_.id; }
  uint64_t bytes_done() const { return done_bytes_; }

  // Called around every request; a serial line uses them to keep the 3.5-character silence.
  std::function<void()> before_request, after_request;

 private:
  enum class Stage { kLoad, kPrepare, kBegin, kBeginWait, kChunk, kChunkStatus, kCommit, kVerify, kReboot, kVersion };
  struct Answer {
    bool ok = false;
    bool busy = false;       // exception "busy" / "acknowledge": ask again later
    bool exception = false;  // any other exception: the device said no
    int err = 0;
    std::string text;        // why it failed
  };

  bool Load(std::string& why);
  Answer Read(modbus_t* ctx, uint16_t address, uint16_t count, uint16_t* out);
  Answer Write(modbus_t* ctx, uint16_t address, const std::vector<uint16_t>& regs);
  Answer WriteRuns(modbus_t* ctx, std::vector<std::pair<uint16_t, std::vector<uint16_t>>> writes);
  std::vector<uint16_t> U32(uint32_t v) const;
  std::vector<std::pair<uint16_t, std::vector<uint16_t>>> ChunkWrites() const;
  // Reads status (and the error code when it is "error"). `code` is -1 without an error register.
  Answer ReadStatus(modbus_t* ctx, uint16_t& status, int& code);
  std::string Refusal(int code) const;

  Step Again(Clock::time_point next, bool link_failed = false, int err = 0);
  Step Fail(std::string why, modbus_t* abort_on = nullptr);
  Step Succeed(std::string version);
  // A request that got no answer (or a connection that failed): another try after `delay`, or
  // the job fails with `what` once the tries are used up.
  Step NoAnswer(const Answer& a, const std::string& what, std::chrono::milliseconds delay);
  // The device answered "busy" or is not in the wanted state yet: ask again soon, within limits.
  Step NotYet(const std::string& what);
  void Finish(FirmwareResult result);
  std::string Elapsed(Clock::time_point since) const;

  DeviceConfig device_;
  const FirmwareConfig& fw_;
  FirmwareJob job_;
  FirmwareProgressFn progress_;
  FirmwareDoneFn done_;
  bool finished_ = false;

  Stage stage_ = Stage::kLoad;
  Clock::time_point started_, deadline_;
  std::vector<uint8_t> image_;
  uint32_t crc_ = 0;
  uint64_t done_bytes_ = 0;   // acknowledged by the device
  size_t chunk_bytes_ = 0;    // bytes of the chunk in flight
  int tries_ = 0;             // failed tries of the current request
  Clock::time_point waiting_since_{};  // busy / not-yet-ready since
  bool waiting_ = false;
  Clock::time_point reboot_sent_{};
  std::string last_error_;
};

}  // namespace sanigate::dev::modbus
