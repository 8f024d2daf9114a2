// sanifleet benchmarks (S7 in research/perf.md); prints figures, asserts nothing.
//  (a) consume: N telemetry messages over D devices are published (QoS 1) to a local Mosquitto
//      while sanifleet and a bare `mosquitto_sub` are both subscribed; the ratio of their
//      completion times is sanifleet's consume rate relative to mosquitto_sub (target >= 0.95).
//      sanifleet's progress is read from its admin API (`status` -> messages).
//  (b) offline: D devices report once, expected every 1 s; the time from each device's third
//      missed report (last_seen + 3 s) to its retained `offline` verdict arriving at a
//      subscriber: p50/p99/max, and when the last of the D was marked.
// Usage: fleet_bench SANIFLEET_BIN [messages=200000] [devices=50000]
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <mqtt/async_client.h>

#include "harness/broker.h"
#include "harness/process.h"
#include "harness/temp_dir.h"

using namespace sanigate;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;
using json = nlohmann::json;

namespace {

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string Telemetry(size_t device, size_t i, const char* kind) {
  char buf[320];
  std::snprintf(buf, sizeof buf,
                R"({"id":"gw-bench:%zu","ts":%lld,"device":"dev-%zu","kind":"%s","source":{"protocol":"lorawan","gateway":"gw-bench","rssi_dbm":-97.0,"snr_db":4.5,"fcnt":%zu},"metrics":{"fill_level_pct":%zu,"temperature_c":26.1,"battery_v":3.6}})",
                i, static_cast<long long>(NowMs()), device, kind, i / 1000 + 1, i % 100);
  return buf;
}

// Publishes `n` messages round-robin over `devices` devices at QoS 0 (a QoS 1 Paho publisher
// stalled after a few thousand messages here), in windows of 80 sends.
void Publish(uint16_t port, size_t n, size_t devices, const char* kind) {
  mqtt::async_client c("tcp://127.0.0.1:" + std::to_string(port), "bench-pub-" + std::to_string(NowMs()),
                       mqtt::create_options(MQTTVERSION_5), nullptr);
  auto opts = mqtt::connect_options_builder().mqtt_version(MQTTVERSION_5).clean_start(true).max_inflight(20).finalize();
  c.connect(opts)->wait();
  std::vector<mqtt::delivery_token_ptr> window;
  for (size_t i = 0; i < n; ++i) {
    size_t d = i % devices;
    auto tok = c.publish("sanigate/v1/bench/devices/dev-" + std::to_string(d) + "/telemetry", Telemetry(d, i, kind), 0, false);
    window.push_back(tok);
    if (window.size() >= 80) {  // Paho buffers at most 100 commands by default
      for (auto& t : window) t->wait();
      window.clear();
    }
  }
  for (auto& t : window) t->wait();
  c.disconnect()->wait();
}

int64_t FleetMessages(uint16_t port, const std::string& dir) {
  int rc = test::Process::Run({"mosquitto_rr", "-h", "127.0.0.1", "-p", std::to_string(port), "-t", "sanigate/v1/bench/fleet/admin/status",
                               "-e", "bench/reply", "-m", "{}", "-W", "5"},
                              10s, {.stdout_path = dir + "/rr.out", .stderr_path = "/dev/null"});
  if (!test::ExitedWith(rc, 0)) return -1;
  std::ifstream in(dir + "/rr.out");
  std::stringstream ss;
  ss << in.rdbuf();
  json j = json::parse(ss.str(), nullptr, false);
  if (!j.is_object() || !j.contains("result")) return -1;
  return j["result"].value("messages", int64_t{-1});
}

struct ProcStats {
  double cpu_s = 0;
  long rss_kib = 0;
};
ProcStats Stats(pid_t pid) {
  ProcStats s;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string tok;
  for (int i = 1; i <= 15 && stat >> tok; ++i)
    if (i == 14 || i == 15) s.cpu_s += std::stod(tok) / sysconf(_SC_CLK_TCK);
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line))
    if (line.rfind("VmRSS:", 0) == 0) s.rss_kib = std::stol(line.substr(6));
  return s;
}

test::Process StartFleet(const std::string& bin, const test::MosquittoBroker& broker, const std::string& dir, const std::string& extra) {
  std::ofstream(dir + "/sanifleet.toml") << "[fleet]\nid = \"fleet-bench\"\nsite = \"bench\"\nsites = [\"+\"]\ndata_dir = \"" + dir +
                                                "/fleet\"\nlog_level = \"warn\"\n[mqtt]\nurl = \"" + broker.url() + "\"\n" + extra;
  auto p = test::Process::Start({bin, "--config", dir + "/sanifleet.toml"}, {.stderr_path = dir + "/fleet.log"});
  for (int i = 0; i < 20 && FleetMessages(broker.port(), dir) < 0; ++i) std::this_thread::sleep_for(100ms);
  std::fprintf(stderr, "sanifleet up\n");
  return p;
}

void Consume(const std::string& bin, size_t n, size_t devices) {
  test::TempDir dir;
  test::MosquittoBroker broker;
  broker.Start();
  auto fleet = StartFleet(bin, broker, dir.path().string(), "");
  auto sub = test::Process::Start({"mosquitto_sub", "-h", "127.0.0.1", "-p", std::to_string(broker.port()), "-q", "1", "-t",
                                   "sanigate/v1/+/devices/+/telemetry", "-C", std::to_string(n)},
                                  {.stdout_path = "/dev/null"});
  std::this_thread::sleep_for(500ms);  // let it subscribe (set-up, not a measurement)
  auto before = Stats(fleet.pid());
  auto t0 = Clock::now();
  std::thread pub([&] { Publish(broker.port(), n, devices, "bin"); });
  Clock::time_point t_sub{}, t_fleet{};
  while (t_sub == Clock::time_point{} || t_fleet == Clock::time_point{}) {
    if (t_sub == Clock::time_point{} && !sub.Running()) t_sub = Clock::now();
    if (t_fleet == Clock::time_point{} && FleetMessages(broker.port(), dir.path().string()) >= static_cast<int64_t>(n))
      t_fleet = Clock::now();
    if (Clock::now() - t0 > 120s) {
      std::fprintf(stderr, "gave up: sanifleet counted %lld of %zu\n", static_cast<long long>(FleetMessages(broker.port(), dir.path().string())), n);
      break;
    }
    std::this_thread::sleep_for(20ms);
  }
  pub.join();
  auto after = Stats(fleet.pid());
  double s_sub = std::chrono::duration<double>(t_sub - t0).count();
  double s_fleet = std::chrono::duration<double>(t_fleet - t0).count();
  std::printf("(a) consume %zu messages over %zu devices: mosquitto_sub %.2f s (%.0f msg/s), sanifleet %.2f s (%.0f msg/s), ratio %.2f\n",
              n, devices, s_sub, n / s_sub, s_fleet, n / s_fleet, s_sub / s_fleet);
  std::printf("    sanifleet CPU %.2f s (%.0f msg per CPU-second), RSS %ld KiB after (%ld before)\n", after.cpu_s - before.cpu_s,
              n / std::max(0.001, after.cpu_s - before.cpu_s), after.rss_kib, before.rss_kib);
  fleet.Stop(10s);
}

void Offline(const std::string& bin, size_t devices) {
  test::TempDir dir;
  test::MosquittoBroker broker;
  broker.Start();
  auto fleet = StartFleet(bin, broker, dir.path().string(),
                          "[[health.overrides]]\nkind = \"bench\"\nexpected_interval_s = 1\n");
  std::mutex mu;
  std::vector<int64_t> lag_ms;
  int64_t last_marked = 0;
  mqtt::async_client c("tcp://127.0.0.1:" + std::to_string(broker.port()), "bench-health", mqtt::create_options(MQTTVERSION_5), nullptr);
  c.set_message_callback([&](mqtt::const_message_ptr m) {
    json j = json::parse(m->to_string(), nullptr, false);
    if (!j.is_object() || j.value("state", "") != "offline") return;
    int64_t now = NowMs();
    std::lock_guard lk(mu);
    lag_ms.push_back(now - (j.value("last_seen", int64_t{0}) + 3000));
    last_marked = now;
  });
  c.connect(mqtt::connect_options_builder().mqtt_version(MQTTVERSION_5).clean_start(true).finalize())->wait();
  c.subscribe("sanigate/v1/bench/fleet/health/+", 1)->wait();
  auto before = Stats(fleet.pid());
  int64_t t0 = NowMs();
  Publish(broker.port(), devices, devices, "bench");
  int64_t published = NowMs();
  for (int i = 0; i < 600; ++i) {
    {
      std::lock_guard lk(mu);
      if (lag_ms.size() >= devices) break;
    }
    std::this_thread::sleep_for(100ms);
  }
  auto after = Stats(fleet.pid());
  std::lock_guard lk(mu);
  std::sort(lag_ms.begin(), lag_ms.end());
  auto pct = [&](double p) { return lag_ms.empty() ? -1 : lag_ms[std::min(lag_ms.size() - 1, static_cast<size_t>(p * lag_ms.size()))]; };
  std::printf("(b) %zu devices reported once in %.2f s (expected every 1 s); offline verdicts received: %zu\n", devices,
              (published - t0) / 1000.0, lag_ms.size());
  std::printf("    lag after the third missed report: p50 %lld ms, p99 %lld ms, max %lld ms; last marked %.2f s after the last report\n",
              static_cast<long long>(pct(0.5)), static_cast<long long>(pct(0.99)), static_cast<long long>(lag_ms.empty() ? -1 : lag_ms.back()),
              (last_marked - published) / 1000.0);
  std::printf("    sanifleet CPU %.2f s, RSS %ld KiB (%.2f KiB per device)\n", after.cpu_s - before.cpu_s, after.rss_kib,
              static_cast<double>(after.rss_kib - before.rss_kib) / devices);
  c.disconnect()->wait();
  fleet.Stop(10s);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: fleet_bench SANIFLEET_BIN [messages=200000] [devices=50000]\n");
    return 2;
  }
  spdlog::set_level(spdlog::level::warn);
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  size_t n = argc > 2 ? std::stoul(argv[2]) : 200000;
  size_t devices = argc > 3 ? std::stoul(argv[3]) : 50000;
  Consume(argv[1], n, devices);
  Offline(argv[1], devices);
  return 0;
}
