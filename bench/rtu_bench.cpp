// RS-485 bus efficiency (research/perf.md S1): 10 slaves, FC03 reading 10 registers each,
// back-to-back on one line at 9600 8E1 and 19200 8E1. The line is a pty pair that paces every
// byte at the baud rate (tests/harness PtyBridge) and the simulator answers 5 ms after each
// request. The physical ceiling (RtuCeiling): request (8 bytes) + turnaround + response (25
// bytes) + one 3.5-character silence before the next request, 11 bits a character: 21.4 and
// 38.6 transactions/s. (The silence after the request is inside the 5 ms turnaround; counting it
// twice gave 19.7 and 35.8, which sanigate exceeded.) Sanigate's
// bus worker (ModbusRtuBus) is measured against that ceiling and against mbpoll polling the
// same slaves on the same line, when mbpoll is installed. Then the same line with one slave
// answering 90 ms after its timeout (issue 14): the nine healthy slaves' polls per second against
// their share (9/10) of the all-healthy run, and what the late answers did. Prints figures;
// asserts nothing.
// Usage: rtu_bench [seconds=10]
#include <spdlog/spdlog.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>

#include "harness/process.h"
#include "harness/pty_bridge.h"
#include "harness/temp_dir.h"
#include "modbus/modbus_rtu_bus.h"

using namespace sanigate;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

constexpr int kTimeoutMs = 200;
constexpr int kLateUnit = 5;

struct CountingSink : RecordSink {
  std::atomic<uint64_t> readings{0}, offline{0};
  void Emit(Record r) override {
    if (r.type == RecordType::kReading) readings++;
    // Offline announcements of the healthy slaves (the late one is expected to go offline).
    if (r.type == RecordType::kEvent && r.event == "offline" && r.state == EventState::kActive &&
        r.device != "slave-" + std::to_string(kLateUnit))
      offline++;
  }
};

test::Process StartSim(const std::string& tty, int baud, const std::string& dir, bool late = false) {
  std::vector<std::string> argv = {MODBUS_SIM_BIN, "--rtu", tty, "--baud", std::to_string(baud),
                                   "--slaves", "1-10", "--turnaround-ms", "5"};
  if (late) {
    argv.insert(argv.end(), {"--late-slaves", std::to_string(kLateUnit), "--late-ms",
                             std::to_string(kTimeoutMs + 90)});
  }
  auto sim = test::Process::Start(argv, {.stderr_path = dir + "/sim.err"});
  auto until = Clock::now() + 10s;
  while (test::ReadFile(dir + "/sim.err").find("serving") == std::string::npos && Clock::now() < until)
    std::this_thread::sleep_for(20ms);
  return sim;
}

struct Run {
  double tx_per_s = 0;       // all requests on the line
  double healthy_per_s = 0;  // requests to the slaves other than kLateUnit
  dev::modbus::BusHealth health;
  uint64_t healthy_offline = 0, lost = 0;
};

Run RunSanigate(int baud, int seconds, const std::string& dir, bool late = false) {
  test::PtyBridge line(test::PtyBridgeOptions{.baud = baud, .bits_per_char = 11});
  auto sim = StartSim(line.link_b(), baud, dir, late);
  dev::modbus::BusConfig bus;
  bus.name = "bench";
  bus.port = line.link_a();
  bus.baud = baud;
  for (int unit = 1; unit <= 10; ++unit) {
    dev::modbus::DeviceConfig d;
    d.id = "slave-" + std::to_string(unit);
    d.unit_id = unit;
    d.interval_ms = 50;  // always overdue: the line runs back to back
    d.timeout_ms = kTimeoutMs;
    for (uint16_t r = 0; r < 10; ++r) {
      dev::modbus::PointConfig p;
      p.metric = "r" + std::to_string(r);
      p.address = r;
      d.points.push_back(p);
    }
    bus.devices.push_back(d);
  }
  CountingSink sink;
  dev::modbus::ModbusRtuBus worker(bus, dev::modbus::PlanLimits{});
  worker.Start(sink);
  auto healthy_requests = [&](const dev::modbus::BusHealth& h) {
    uint64_t n = 0;
    for (const auto& d : h.per_device)
      if (d.id != "slave-" + std::to_string(kLateUnit)) n += d.requests - d.timeouts;
    return n;
  };
  std::this_thread::sleep_for(2s);  // warm-up (the late slave goes offline meanwhile)
  auto h0 = worker.Health();
  auto t0 = Clock::now();
  std::this_thread::sleep_for(std::chrono::seconds(seconds));
  auto h1 = worker.Health();
  double s = std::chrono::duration<double>(Clock::now() - t0).count();
  worker.Stop();
  Run run;
  run.tx_per_s = static_cast<double>(h1.requests - h0.requests) / s;
  run.healthy_per_s = static_cast<double>(healthy_requests(h1) - healthy_requests(h0)) / s;
  run.health = h1;
  run.healthy_offline = sink.offline;
  // Healthy slaves that timed out: each is a reading the slave may have answered and lost.
  for (const auto& d : h1.per_device)
    if (d.id != "slave-" + std::to_string(kLateUnit)) run.lost += d.timeouts;
  if (!late && h1.timeouts + h1.errors > 0)
    std::printf("  (sanigate saw %llu timeouts, %llu errors)\n",
                static_cast<unsigned long long>(h1.timeouts), static_cast<unsigned long long>(h1.errors));
  return run;
}

double RunMbpoll(int baud, int seconds, const std::string& dir) {
  test::PtyBridge line(test::PtyBridgeOptions{.baud = baud, .bits_per_char = 11});
  auto sim = StartSim(line.link_b(), baud, dir);
  std::string out = dir + "/mbpoll.out";
  auto mb = test::Process::Start({"mbpoll", "-m", "rtu", "-b", std::to_string(baud), "-P", "even",
                                  "-a", "1:10", "-r", "1", "-c", "10", "-t", "4", "-l", "10", "-o",
                                  "0.2", line.link_a()},
                                 {.stdout_path = out, .stderr_path = dir + "/mbpoll.err"});
  std::this_thread::sleep_for(2s);
  auto count = [&] {
    std::ifstream in(out);
    std::string l;
    uint64_t n = 0;
    while (std::getline(in, l))
      if (l.rfind("[1]:", 0) == 0) n++;  // one answered request prints its first register
    return n;
  };
  uint64_t c0 = count();
  auto t0 = Clock::now();
  std::this_thread::sleep_for(std::chrono::seconds(seconds));
  uint64_t c1 = count();
  double s = std::chrono::duration<double>(Clock::now() - t0).count();
  mb.Stop(2s);
  return static_cast<double>(c1 - c0) / s;
}

// Transactions per second a perfect master reaches: see the top of this file.
double RtuCeiling(int baud) {
  constexpr double kBitsPerChar = 11, kRequestChars = 8, kResponseChars = 25, kTurnaroundS = 0.005;
  double char_s = kBitsPerChar / baud;
  double silence_s = baud > 19200 ? 0.00175 : 3.5 * char_s;  // Modbus over serial line, 2.5.1.1
  return 1.0 / ((kRequestChars + kResponseChars) * char_s + kTurnaroundS + silence_s);
}

}  // namespace

int main(int argc, char** argv) {
  int seconds = argc > 1 ? std::stoi(argv[1]) : 10;
  spdlog::set_level(spdlog::level::warn);
  test::TempDir dir;
  bool have_mbpoll = std::system("command -v mbpoll > /dev/null") == 0;
  std::printf("rtu_bench: 10 slaves x FC03 10 registers, 5 ms slave turnaround, %d s per run\n", seconds);
  for (int baud : {9600, 19200}) {
    double ceiling = RtuCeiling(baud);
    Run base = RunSanigate(baud, seconds, dir.path().string());
    double ours = base.tx_per_s;
    std::printf("  %5d 8E1: sanigate %.1f tx/s = %.0f%% of the %.1f tx/s ceiling", baud, ours,
                100 * ours / ceiling, ceiling);
    if (have_mbpoll) {
      double ref = RunMbpoll(baud, seconds, dir.path().string());
      std::printf("; mbpoll %.1f tx/s; ratio %.2f", ref, ours / ref);
    }
    std::printf("\n");
    Run late = RunSanigate(baud, seconds, dir.path().string(), /*late=*/true);
    double share = base.tx_per_s * 9 / 10;
    std::printf("  %5d 8E1, slave %d answering %d ms late: healthy slaves %.1f tx/s = %.0f%% of their "
                "share (%.1f); wrong answers %llu, stale bytes drained %llu, healthy timeouts %llu, healthy offline events %llu\n",
                baud, kLateUnit, kTimeoutMs + 90, late.healthy_per_s, 100 * late.healthy_per_s / share, share,
                static_cast<unsigned long long>(late.health.wrong_answers),
                static_cast<unsigned long long>(late.health.stale_bytes),
                static_cast<unsigned long long>(late.lost),
                static_cast<unsigned long long>(late.healthy_offline));
  }
  if (!have_mbpoll) std::printf("  (apt-get install mbpoll for the reference run)\n");
  return 0;
}
