// Adapter: one running protocol instance (a set of Modbus TCP devices, a serial bus, a UDP port,
// a TCP listener). It only emits Records into a RecordSink; it never touches MQTT or SQLite.
// AdapterSpec describes a compiled-in protocol: its config section parser and its factory.
// Thread-safety: Start/Stop from the owner's thread; Health/Rules from any thread.
#pragma once

#include <any>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/device_rules.h"
#include "core/record_sink.h"
#include "core/status.h"
#include "api/mqtt_input.h"
#include "settings/gateway_config.h"
#include "settings/reader.h"

namespace sanigate::dev {

// Per-device request counters, for the gateway status (where field technicians look first).
struct DeviceCounters {
  std::string id;
  bool online = false;
  uint64_t requests = 0, timeouts = 0, exceptions = 0, errors = 0;
  double last_latency_ms = 0, max_latency_ms = 0;
  // Polled protocols (Modbus): cycles, those cut short after some answers (what was read is
  // published) and answers from the wrong slave (retried, not counted as errors). 0 elsewhere.
  uint64_t polls = 0, partial_polls = 0, wrong_answers = 0;
};

struct AdapterHealth {
  std::string state = "starting";  // starting, running, degraded (some devices offline), stopped, failed
  uint32_t devices = 0;
  uint32_t online = 0;
  uint64_t errors = 0;   // failed requests since start
  uint64_t polls = 0;    // poll cycles (Modbus) or messages received (event-driven protocols)
  uint64_t requests = 0; // requests on the wire (Modbus; 0 = not a request/response protocol)
  std::string last_error;
  std::vector<DeviceCounters> per_device;
  // Protocol-specific figures as a JSON object, shown under adapters.{name}.details in the
  // gateway status (e.g. LoRa concentrators: rx/ok counts, last seen). Empty = none.
  std::string details_json;
};

// A command from `.../devices/{device}/cmd/{name}` (e.g. uv_lamp on). The adapter answers
// exactly once through the reply function, from any thread, never blocking the caller.
struct CommandRequest {
  std::string device;
  std::string name;
  std::vector<std::string> args;
  std::chrono::milliseconds timeout{0};  // 0: the command's own configured timeout
};

struct CommandReply {
  bool ok = false;
  std::string error;        // why it failed: unknown command, bad value, timeout, exception
  std::string result_json;  // a JSON value, e.g. {"written":1,"verified":true}; empty = null
};

using ReplyFn = std::function<void(CommandReply)>;

// A firmware image for one of the adapter's devices (issue 7). The gateway has already checked
// the image's signature, size and SHA-256 against its signed manifest; the adapter transfers it
// over its own protocol, has the device install it, and reads back the version it runs.
struct FirmwareJob {
  std::string device;
  std::string image_path;  // the verified image, a regular file the adapter may read
  std::string model, version, sha256;
  uint64_t size = 0;
  std::chrono::milliseconds timeout{30 * 60 * 1000};  // for the whole job
};

struct FirmwareResult {
  bool ok = false;
  std::string error;    // why it failed, for the operator: "device refused the checksum",
                        // "rebooted into 2.0.3, not 2.1.0", "no answer for 60 s"…
  std::string version;  // the version the device reports afterwards (when it answered)
};

using FirmwareProgressFn = std::function<void(uint64_t bytes_done, uint64_t bytes_total)>;
using FirmwareDoneFn = std::function<void(FirmwareResult)>;

class Adapter {
 public:
  virtual ~Adapter() = default;
  virtual std::string_view protocol() const = 0;
  // Starts the adapter's own threads or sessions; records go to `sink` until Stop().
  virtual Status Start(RecordSink& sink) = 0;
  // Returns when every thread of the adapter has finished.
  virtual void Stop() = 0;
  virtual AdapterHealth Health() const = 0;
  // The pipeline rules (report-by-exception, overflow) of this adapter's devices; its keys are
  // the devices this adapter owns.
  virtual RulesByDevice Rules() const = 0;
  // Devices that appear at run time (e.g. JT/T 808 terminals registered on first contact) are
  // not in Rules(); commands for an id nobody lists are offered to adapters that own it.
  virtual bool OwnsDevice(const std::string& device) const {
    (void)device;
    return false;
  }
  // Queues a command for one of this adapter's devices; the reply comes later.
  virtual void Execute(CommandRequest request, ReplyFn reply) {
    (void)request;
    reply({false, "this protocol takes no commands", {}});
  }
  // Starts installing a firmware image on one of this adapter's devices. Progress may be
  // reported from any thread; `done` is called exactly once (also when the adapter stops:
  // "gateway stopping"). Never blocks the caller.
  virtual void InstallFirmware(FirmwareJob job, FirmwareProgressFn progress, FirmwareDoneFn done) {
    (void)job;
    (void)progress;
    done({false, std::string(protocol()) + " devices have no firmware installer", {}});
  }
};

struct AdapterSpec {
  std::string name;           // config section and folder name
  std::string sample_config;  // path of the sample, relative to the repository's config/
  std::function<std::any(settings::Node&, const settings::GatewaySection&)> parse;
  std::function<std::unique_ptr<Adapter>(const std::any& config,
                                         const settings::GatewaySection& gateway,
                                         const AdapterServices& services)>
      create;
};

}  // namespace sanigate::dev
