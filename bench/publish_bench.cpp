// Publish benchmark: records/s from the outbox to a local Mosquitto at QoS 1 through the real
// Forwarder (window of PUBACKs in flight), against `mosquitto_pub -l -q 1` sending the same
// payloads, in the same run, alternating A/B. Both are timed until a `mosquitto_sub -C N`
// counting subscriber has received all N. A bare Paho publisher (no outbox) runs in the same
// rounds to show the client library's own ceiling. Prints figures and ratios; asserts nothing.
// Usage: publish_bench [records=50000] [pairs=3] [window=64]
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <mqtt/async_client.h>

#include <condition_variable>
#include <mutex>

#include "harness/broker.h"
#include "harness/process.h"
#include "pipeline/forwarder.h"
#include "store/outbox.h"

using namespace sanigate;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

namespace {

std::string Payload(size_t i) {
  // ~200 bytes, shaped like a reading.
  char buf[256];
  std::snprintf(buf, sizeof buf,
                R"({"id":"gw-bench:%zu","ts":1763712000123,"device":"room-07","kind":"garbage_room","source":{"protocol":"modbus","gateway":"gw-bench"},"metrics":{"fill_level_pct":81.5,"temperature_c":26.1,"nh3_ppm":3.2,"door_open":false}})",
                i);
  return buf;
}

test::Process StartCounter(uint16_t port, size_t n, const std::string& topic) {
  auto p = test::Process::Start({"mosquitto_sub", "-h", "127.0.0.1", "-p", std::to_string(port), "-q",
                                 "1", "-t", topic, "-C", std::to_string(n)},
                                {.stdout_path = "/dev/null"});
  std::this_thread::sleep_for(300ms);  // let it subscribe (benchmark set-up, not a test)
  return p;
}

double RunOurs(test::MosquittoBroker& broker, size_t n, size_t window, const std::string& dir, int run) {
  store::OutboxOptions o;
  o.path = dir + "/ours-" + std::to_string(run) + ".db";
  o.sync_full = true;
  o.max_rows = n * 2;
  auto outbox = store::Outbox::Open(o);
  if (!outbox.ok()) throw std::runtime_error(outbox.status().ToString());
  const int64_t now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                             std::chrono::system_clock::now().time_since_epoch()).count();
  (*outbox)->Append(n, [&](size_t i, uint64_t) {
    return store::OutMessage{Priority::kTelemetry, now_ms, "bench/ours", Payload(i), false};
  });
  (void)(*outbox)->Flush(60s);
  auto counter = StartCounter(broker.port(), n, "bench/ours");
  sanigate::mqtt::LinkOptions l;
  l.url = broker.url();
  l.client_id = "bench-ours";
  pipeline::ForwarderOptions f;
  f.window = window;
  f.status_interval = 3600s;
  auto t0 = Clock::now();
  pipeline::Forwarder fwd(**outbox, l, f);
  fwd.Start();
  auto st = counter.Wait(120s);
  double s = std::chrono::duration<double>(Clock::now() - t0).count();
  fwd.Stop(0ms);
  if (!st) throw std::runtime_error("subscriber did not get all messages (ours)");
  return static_cast<double>(n) / s;
}

double RunPeer(test::MosquittoBroker& broker, size_t n, const std::string& file) {
  auto counter = StartCounter(broker.port(), n, "bench/peer");
  auto t0 = Clock::now();
  std::string cmd = "mosquitto_pub -h 127.0.0.1 -p " + std::to_string(broker.port()) +
                    " -q 1 -t bench/peer -l < " + file;
  int rc = std::system(cmd.c_str());
  auto st = counter.Wait(120s);
  double s = std::chrono::duration<double>(Clock::now() - t0).count();
  if (rc != 0 || !st) throw std::runtime_error("mosquitto_pub run failed");
  return static_cast<double>(n) / s;
}

// The ceiling of the MQTT client library itself: Paho MQTT C++ publishing the same payloads
// with the same window and nothing else (no outbox, no leases, no settles).
double RunBarePaho(test::MosquittoBroker& broker, size_t n, size_t window) {
  struct Acks : ::mqtt::iaction_listener {
    std::mutex mu;
    std::condition_variable cv;
    size_t acked = 0;
    void on_success(const ::mqtt::token&) override {
      std::lock_guard lk(mu);
      acked++;
      cv.notify_one();
    }
    void on_failure(const ::mqtt::token&) override {
      std::lock_guard lk(mu);
      acked++;  // counted so the window moves; the counting subscriber then reports the loss
      cv.notify_one();
    }
  } acks;
  auto counter = StartCounter(broker.port(), n, "bench/paho");
  ::mqtt::async_client client(broker.url(), "bench-paho", ::mqtt::create_options(MQTTVERSION_5), nullptr);
  ::mqtt::connect_options o;
  o.set_mqtt_version(MQTTVERSION_5);
  o.set_max_inflight(static_cast<int>(window) + 8);
  auto t0 = Clock::now();
  client.connect(o)->wait();
  for (size_t i = 0; i < n; ++i) {
    {
      std::unique_lock lk(acks.mu);
      acks.cv.wait(lk, [&] { return i - acks.acked < window; });
    }
    client.publish(::mqtt::make_message("bench/paho", Payload(i), 1, false), nullptr, acks);
  }
  auto st = counter.Wait(120s);
  double s = std::chrono::duration<double>(Clock::now() - t0).count();
  client.disconnect()->wait();
  if (!st) throw std::runtime_error("subscriber did not get all messages (bare Paho)");
  return static_cast<double>(n) / s;
}

}  // namespace

int main(int argc, char** argv) {
  size_t n = argc > 1 ? std::stoul(argv[1]) : 50000;
  int pairs = argc > 2 ? std::stoi(argv[2]) : 3;
  size_t window = argc > 3 ? std::stoul(argv[3]) : 64;
  spdlog::set_level(spdlog::level::info);
  test::MosquittoBroker broker;
  broker.Start();
  char tmpl[] = "/tmp/sanigate-pubbench-XXXXXX";
  std::string dir = mkdtemp(tmpl);
  std::string file = dir + "/payloads.txt";
  {
    std::ofstream out(file);
    for (size_t i = 0; i < n; ++i) out << Payload(i) << "\n";
  }
  std::vector<double> ours, peer, ratio, paho;
  for (int i = 0; i < pairs; ++i) {
    double a = RunOurs(broker, n, window, dir, i);
    double b = RunPeer(broker, n, file);
    double c = RunBarePaho(broker, n, window);
    ours.push_back(a);
    peer.push_back(b);
    paho.push_back(c);
    ratio.push_back(a / b);
    std::printf("  round %d: sanigate %.0f msg/s, mosquitto_pub -l %.0f msg/s, bare Paho %.0f msg/s, "
                "ratio %.2f\n", i + 1, a, b, c, a / b);
  }
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  std::printf("publish_bench QoS 1, %zu records of ~200 B, window %zu, %d pairs\n", n, window, pairs);
  std::printf("  median: sanigate outbox->broker %.0f msg/s (outbox committed, FULL sync), "
              "mosquitto_pub -l %.0f msg/s, ratio %.2f (target >= 0.8)\n",
              median(ours), median(peer), median(ratio));
  std::printf("  median bare Paho MQTT C++ (same window, no outbox): %.0f msg/s; sanigate / Paho %.2f\n",
              median(paho), median(ours) / median(paho));
  std::filesystem::remove_all(dir);
  return 0;
}
