// Modbus under transient faults (issue 14): 20 garbage rooms on the TCP simulator, which drops
// 2 % of read requests (no answer) and refuses 2 % with exception 02, polled by the TCP adapter
// every 100 ms. The simulator bumps a u32 counter at hr:4 on every read it answers that covers
// it, so a gap in the published counter values is a read the gateway threw away. Prints the
// readings lost (target 0), metric coverage and requests per poll; asserts nothing.
// Usage: modbus_fault_bench [seconds=20] [timeout_pct=2] [exception_pct=2]
#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdio>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include "harness/ports.h"
#include "harness/process.h"
#include "harness/temp_dir.h"
#include "modbus/modbus_tcp_adapter.h"

using namespace sanigate;
using namespace std::chrono_literals;

namespace {

constexpr int kRooms = 20;
const char* kMetrics[] = {"fill_level_pct", "temperature_c", "reads", "door_open"};

struct CollectingSink : RecordSink {
  std::mutex mu;
  std::map<std::string, std::set<int64_t>> reads;  // per device: counter values published
  std::map<std::string, uint64_t> readings;
  std::map<std::string, uint64_t> with_metric;  // metric -> readings carrying it
  uint64_t duplicates = 0, offline = 0;
  void Emit(Record r) override {
    std::lock_guard lk(mu);
    if (r.type == RecordType::kEvent && r.event == "offline" && r.state == EventState::kActive) offline++;
    if (r.type != RecordType::kReading) return;
    readings[r.device]++;
    for (const auto& m : r.metrics) {
      with_metric[m.name]++;
      if (m.name == "reads" && !reads[r.device].insert(std::get<int64_t>(m.value)).second) duplicates++;
    }
  }
};

}  // namespace

int main(int argc, char** argv) {
  int seconds = argc > 1 ? std::stoi(argv[1]) : 20;
  std::string timeout_pct = argc > 2 ? argv[2] : "2", exception_pct = argc > 3 ? argv[3] : "2";
  spdlog::set_level(spdlog::level::warn);
  test::TempDir dir;
  std::string ports = (dir.path() / "ports").string();
  auto sim = test::Process::Start(
      {MODBUS_SIM_BIN, "--devices", std::to_string(kRooms), "--port-file", ports, "--counter", "hr:4",
       "--fault-timeout-pct", timeout_pct, "--fault-exception-pct", exception_pct, "--seed", "11"},
      {.stderr_path = (dir.path() / "sim.err").string()});
  auto port_list = test::ReadPortFile(ports, kRooms, 10s);

  dev::modbus::ModbusConfig cfg;
  for (int i = 0; i < kRooms; ++i) {
    dev::modbus::DeviceConfig d;
    d.id = "room-" + std::to_string(i);
    d.host = "127.0.0.1";
    d.port = port_list.at(static_cast<size_t>(i));
    d.interval_ms = 100;
    d.timeout_ms = 80;
    auto point = [](const char* metric, uint16_t address, dev::modbus::ValueType type,
                    dev::modbus::Table table = dev::modbus::Table::kHolding) {
      dev::modbus::PointConfig p;
      p.metric = metric;
      p.address = address;
      p.type = type;
      p.table = table;
      return p;
    };
    d.points = {point("fill_level_pct", 0, dev::modbus::ValueType::kU16),
                point("temperature_c", 1, dev::modbus::ValueType::kI16),
                point("reads", 4, dev::modbus::ValueType::kU32),
                point("door_open", 0, dev::modbus::ValueType::kBool, dev::modbus::Table::kDiscrete)};
    cfg.devices.push_back(d);
  }
  CollectingSink sink;
  dev::modbus::ModbusTcpAdapter adapter(cfg);
  (void)adapter.Start(sink);
  std::this_thread::sleep_for(std::chrono::seconds(seconds));
  auto health = adapter.Health();
  adapter.Stop();
  sim.Stop(5s);

  uint64_t lost = 0, answered = 0, readings = 0, polls = 0, partial = 0, requests = 0, timeouts = 0,
           exceptions = 0;
  for (const auto& [device, values] : sink.reads) {
    if (values.empty()) continue;
    int64_t highest = *values.rbegin();  // the simulator answered reads 1..highest covering hr:4
    answered += static_cast<uint64_t>(highest);
    lost += static_cast<uint64_t>(highest) - values.size();
  }
  for (const auto& d : health.per_device) {
    polls += d.polls;
    partial += d.partial_polls;
    requests += d.requests;
    timeouts += d.timeouts;
    exceptions += d.exceptions;
    readings += sink.readings[d.id];
  }
  std::printf("modbus_fault_bench: %d rooms every 100 ms for %d s, %s %% timeouts and %s %% exception 02\n",
              kRooms, seconds, timeout_pct.c_str(), exception_pct.c_str());
  std::printf("  polls %llu (partial %llu), requests %llu = %.2f per poll (2 without faults), timeouts %llu, "
              "exceptions %llu\n",
              static_cast<unsigned long long>(polls), static_cast<unsigned long long>(partial),
              static_cast<unsigned long long>(requests), polls ? static_cast<double>(requests) / polls : 0.0,
              static_cast<unsigned long long>(timeouts), static_cast<unsigned long long>(exceptions));
  std::printf("  counter reads answered by the simulator %llu, published %llu, lost %llu, duplicates %llu\n",
              static_cast<unsigned long long>(answered), static_cast<unsigned long long>(answered - lost),
              static_cast<unsigned long long>(lost), static_cast<unsigned long long>(sink.duplicates));
  std::printf("  metric coverage (readings carrying it / polls):");
  for (const char* m : kMetrics)
    std::printf(" %s %.1f%%", m, polls ? 100.0 * static_cast<double>(sink.with_metric[m]) / polls : 0.0);
  std::printf("\n  offline events %llu\n", static_cast<unsigned long long>(sink.offline));
  return 0;
}
