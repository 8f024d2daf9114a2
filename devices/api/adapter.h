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
};

struct AdapterHealth {
  std::string state = "starting";  // starting, running, degraded (some devices offline), stopped, failed
  uint32_t devices = 0;
  uint32_t online = 0;
  uint64_t errors = 0;   // failed requests since start
  uint64_t polls = 0;    // requests since start
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
