// Shared set-up of the gateway integration tests: a real Mosquitto on a free loopback port, the
// libmodbus simulator, a generated sanigate config and the real daemon, plus helpers to read
// what arrived. The fixture owns and reaps every process it starts.
#pragma once

#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "harness/broker.h"
#include "harness/mqtt_capture.h"
#include "harness/ports.h"
#include "harness/process.h"
#include "harness/temp_dir.h"

namespace sanigate::test {

using namespace std::chrono_literals;
using json = nlohmann::json;

inline std::string SourceDir() { return SANIGATE_SOURCE_DIR; }

struct Parsed {
  std::string topic;
  json payload;
};

// Telemetry/event/status messages of the capture, parsed, duplicates (same id) dropped.
inline std::vector<Parsed> Unique(const std::vector<Captured>& msgs, const std::string& suffix) {
  std::vector<Parsed> out;
  std::set<std::string> seen;
  for (const auto& m : msgs) {
    if (m.topic.size() < suffix.size() ||
        m.topic.compare(m.topic.size() - suffix.size(), suffix.size(), suffix) != 0)
      continue;
    if (m.payload.empty()) continue;
    json j = json::parse(m.payload, nullptr, false);
    if (j.is_discarded() || !j.is_object()) continue;  // every message of the model is an object
    std::string id = j.contains("id") && j["id"].is_string() ? j["id"].get<std::string>() : std::string();
    if (!id.empty() && !seen.insert(id).second) continue;
    out.push_back({m.topic, std::move(j)});
  }
  return out;
}

class GatewayTest : public ::testing::Test {
 protected:
  std::unique_ptr<MosquittoBroker> broker;
  std::unique_ptr<MqttCapture> capture;
  Process sim;
  Process gateway;
  TempDir dir;
  std::vector<uint16_t> sim_ports;
  int gateway_starts = 0;

  std::string path(const std::string& name) const { return (dir.path() / name).string(); }

  void StartBroker(MosquittoBroker::Options o = {}) {
    broker = std::make_unique<MosquittoBroker>(o);
    broker->Start();
  }

  void StartSim(int devices, std::vector<std::string> extra = {}) {
    std::vector<std::string> argv = {MODBUS_SIM_BIN, "--devices", std::to_string(devices),
                                     "--port-file", path("sim.ports")};
    argv.insert(argv.end(), extra.begin(), extra.end());
    sim = Process::Start(argv, {.stdout_path = path("sim.out"), .stderr_path = path("sim.err")});
    sim_ports = ReadPortFile(path("sim.ports"), static_cast<size_t>(devices), 10s);
  }

  // A garbage room on sim device `index`: fill level, temperature, NH3, a u32 read counter at
  // hr4 (so every reading is distinguishable) and the door switch.
  std::string RoomConfig(const std::string& id, size_t index, int interval_ms,
                         const std::string& extra = "") const {
    return "[[modbus.devices]]\nid = \"" + id + "\"\nhost = \"127.0.0.1\"\nport = " +
           std::to_string(sim_ports.at(index)) + "\ninterval_ms = " + std::to_string(interval_ms) +
           "\ntimeout_ms = " + std::to_string(std::min(interval_ms - 10, 300)) +
           "\noffline_after = 2\nlocation = { lat = 24.5123, lon = 118.1342 }\n" + extra +
           R"(
[[modbus.devices.points]]
metric = "fill_level_pct"
address = 0
scale = 0.1
decimals = 1
[[modbus.devices.points]]
metric = "temperature_c"
address = 1
type = "i16"
scale = 0.1
[[modbus.devices.points]]
metric = "nh3_ppm"
address = 2
type = "f32"
decimals = 2
[[modbus.devices.points]]
metric = "reads"
address = 4
type = "u32"
[[modbus.devices.points]]
metric = "water_level_pct"
table = "input"
address = 0
[[modbus.devices.points]]
metric = "uv_lamp_on"
table = "coil"
address = 0
[[modbus.devices.points]]
metric = "door_open"
table = "discrete"
address = 0
)";
  }

  std::string BaseConfig(const std::string& mqtt_extra = "", const std::string& url = "") const {
    return "[gateway]\nid = \"gw-test\"\nsite = \"houpu\"\ndata_dir = \"" + path("data") +
           "\"\nstatus_interval_s = 5\nshutdown_drain_ms = 3000\nlog_level = \"debug\"\n\n[mqtt]\nurl = \"" +
           (url.empty() ? broker->url() : url) +
           "\"\nreconnect_min_ms = 100\nreconnect_max_ms = 1000\n" + mqtt_extra + "\n";
  }

  void WriteConfig(const std::string& text) {
    std::ofstream(path("sanigate.toml")) << text;
  }

  void StartGateway() {
    gateway_starts++;
    gateway = Process::Start({SANIGATE_BIN, "--config", path("sanigate.toml")},
                             {.stderr_path = path("gateway." + std::to_string(gateway_starts) + ".log")});
  }

  std::string GatewayLog() const {
    std::string all;
    for (int i = 1; i <= gateway_starts; ++i) all += ReadFile(path("gateway." + std::to_string(i) + ".log"));
    return all;
  }

  void Capture(bool persistent = false) {
    capture = std::make_unique<MqttCapture>(broker->url(), "test-capture", !persistent);
    capture->Connect();
    capture->Subscribe("sanigate/v1/#", 1);
  }

  // The u32 read counters seen in telemetry of `device`, in arrival order, duplicates dropped.
  std::vector<int64_t> Reads(const std::string& device) const {
    std::vector<int64_t> out;
    for (const auto& p : Unique(capture->Messages(), "/devices/" + device + "/telemetry"))
      if (p.payload["metrics"].contains("reads")) out.push_back(p.payload["metrics"]["reads"].get<int64_t>());
    return out;
  }

  bool WaitReads(const std::string& device, size_t n, std::chrono::milliseconds timeout) {
    return capture->WaitFor(
        [&](const std::vector<Captured>& msgs) {
          return Unique(msgs, "/devices/" + device + "/telemetry").size() >= n;
        },
        timeout);
  }

  // Sends a command with mosquitto_rr (a real MQTT 5 peer: response topic, waits for the answer)
  // and returns the parsed answer.
  json Command(const std::string& device, const std::string& name, const std::string& payload) {
    int rc = Process::Run({"mosquitto_rr", "-h", "127.0.0.1", "-p", std::to_string(broker->port()),
                           "-t", "sanigate/v1/houpu/devices/" + device + "/cmd/" + name, "-e",
                           "test/answers/" + name, "-m", payload, "-W", "10"},
                          std::chrono::seconds(15),
                          {.stdout_path = path("rr.out"), .stderr_path = path("rr.err")});
    EXPECT_TRUE(ExitedWith(rc, 0)) << DescribeWaitStatus(rc) << ReadFile(path("rr.err"));
    return json::parse(ReadFile(path("rr.out")), nullptr, false);
  }

  // The gateway subscribes to commands before it publishes its retained online status, so this
  // is also "ready for commands". (After a restart the old retained status is still captured.)
  void WaitGatewayOnline() {
    ASSERT_TRUE(capture->WaitFor([](const std::vector<Captured>& m) {
      for (const auto& c : m)
        if (c.topic.find("/gateway/gw-test/status") != std::string::npos &&
            c.payload.find("\"online\":true") != std::string::npos)
          return true;
      return false;
    }, 10s)) << GatewayLog();
  }

  // Every payload captured so far against the JSON Schemas, with an independent validator.
  void ExpectPayloadsMatchSchemas() {
    std::string dump = path("captured.txt");
    {
      std::ofstream out(dump);
      for (const auto& m : capture->Messages()) out << m.topic << " " << m.payload << "\n";
    }
    std::string cmd = "/usr/bin/python3 " + SourceDir() + "/tests/schema/validate_payloads.py " +
                      SourceDir() + "/config/schema " + dump + " > " + path("schema.out") + " 2>&1";
    int rc = std::system(cmd.c_str());
    EXPECT_EQ(rc, 0) << ReadFile(path("schema.out"));
  }

  // Polls of `device` the gateway logged as failed (debug level) in all its runs so far.
  int64_t FailedPolls(const std::string& device) const {
    std::string log = GatewayLog(), needle = "modbus: " + device + " poll failed";
    int64_t failed = 0;
    for (size_t pos = log.find(needle); pos != std::string::npos; pos = log.find(needle, pos + 1)) failed++;
    return failed;
  }

  // Counter values of one device arrive in order, and every value the device gave out is there,
  // except those of polls the gateway logged as failed (the simulator counted a read whose
  // answer came too late: on a loaded machine a short poll timeout can expire). Nothing the
  // gateway did read may be missing.
  void ExpectContiguousReads(const std::string& device) const {
    auto reads = Reads(device);
    int64_t gaps = 0;
    for (size_t i = 1; i < reads.size(); ++i) {
      EXPECT_GT(reads[i], reads[i - 1]) << device << " out of order at " << i;
      gaps += reads[i] - reads[i - 1] - 1;
    }
    int64_t failed = FailedPolls(device);
    EXPECT_LE(gaps, failed) << device << ": " << gaps << " readings missing, only " << failed << " polls failed";
  }

  void TearDown() override {
    if (gateway.Running()) gateway.Stop(5s);
    if (::testing::Test::HasFailure()) std::cerr << "---- gateway log ----\n" << GatewayLog();
  }
};

}  // namespace sanigate::test
