// Outbox benchmark: durable records/s appended with group commit (and the commit wait each
// record saw, p50/p99), then drained (lease + settle after "PUBACK") to empty. Prints figures;
// asserts nothing. Usage: outbox_bench [records=200000] [producers=4] [full|normal]
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "store/outbox.h"

using namespace sanigate;
using Clock = std::chrono::steady_clock;

int main(int argc, char** argv) {
  size_t records = argc > 1 ? std::stoul(argv[1]) : 200000;
  int producers = argc > 2 ? std::stoi(argv[2]) : 4;
  bool full = !(argc > 3 && std::string(argv[3]) == "normal");
  char tmpl[] = "/tmp/sanigate-bench-XXXXXX";
  std::string dir = mkdtemp(tmpl);
  store::OutboxOptions o;
  o.path = dir + "/outbox.db";
  o.sync_full = full;
  o.max_rows = records * 2;
  o.max_bytes = 4ull << 30;
  auto opened = store::Outbox::Open(o);
  if (!opened.ok()) {
    std::fprintf(stderr, "%s\n", opened.status().ToString().c_str());
    return 1;
  }
  auto& outbox = *opened.value();
  std::string payload(200, 'x');  // a typical normalized reading is ~200 bytes
  const int64_t now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                             std::chrono::system_clock::now().time_since_epoch()).count();

  // Paced: 20,000 records/s (the S4 scenario) for 5 s in batches of 10, one producer; the
  // commit wait is what a device acknowledgement (e.g. a JT/T 808 0x8001) would wait.
  std::mutex mu;
  const int rate = 20000, seconds = 5;
  std::vector<double> paced;
  paced.reserve(static_cast<size_t>(rate * seconds / 10));
  auto start = Clock::now();
  for (int i = 0; i < rate * seconds / 10; ++i) {
    std::this_thread::sleep_until(start + std::chrono::microseconds(static_cast<int64_t>(i) * 10 * 1000000 / rate));
    auto t = Clock::now();
    outbox.Append(10, [&](size_t, uint64_t) {
      return store::OutMessage{Priority::kTelemetry, now_ms, "bench/t", payload, false};
    }, [&, t](const Status&) {
      std::lock_guard lk(mu);
      paced.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t).count());
    });
  }
  (void)outbox.Flush(std::chrono::minutes(1));
  {
    std::lock_guard lk(mu);
    std::sort(paced.begin(), paced.end());
  }
  auto ppct = [&](double q) { return paced.empty() ? 0 : paced[static_cast<size_t>(q * (paced.size() - 1))]; };
  std::printf("outbox_bench synchronous=%s\n", full ? "FULL" : "NORMAL");
  std::printf("  paced %d records/s for %d s: commit wait p50 %.2f ms, p99 %.2f ms, max %.2f ms\n",
              rate, seconds, ppct(0.5), ppct(0.99), ppct(1.0));
  // Append from several producers in batches of 10 (an adapter's poll cycle), timing each
  // batch from Append to its durable callback.
  auto before = outbox.Stats();
  std::vector<double> waits_ms;
  waits_ms.reserve(records / 10 + 16);
  std::atomic<size_t> done{0};
  auto t0 = Clock::now();
  std::vector<std::thread> threads;
  for (int p = 0; p < producers; ++p) {
    threads.emplace_back([&, p] {
      size_t mine = records / static_cast<size_t>(producers);
      for (size_t i = 0; i < mine; i += 10) {
        auto start = Clock::now();
        outbox.Append(10, [&](size_t, uint64_t) {
          return store::OutMessage{Priority::kTelemetry, now_ms, "bench/t", payload, false};
        }, [&, start](const Status&) {
          double ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
          std::lock_guard lk(mu);
          waits_ms.push_back(ms);
          done += 10;
        });
        // Producers are not infinitely fast in real life; yield so commits interleave.
        if ((i / 10) % 50 == 0) std::this_thread::yield();
      }
      (void)p;
    });
  }
  for (auto& t : threads) t.join();
  (void)outbox.Flush(std::chrono::minutes(5));
  double append_s = std::chrono::duration<double>(Clock::now() - t0).count();
  auto stats = outbox.Stats();
  std::sort(waits_ms.begin(), waits_ms.end());
  auto pct = [&](double q) { return waits_ms.empty() ? 0 : waits_ms[static_cast<size_t>(q * (waits_ms.size() - 1))]; };

  // Drain: lease windows of 64 and settle them, like the forwarder on PUBACKs.
  auto t1 = Clock::now();
  size_t drained = 0;
  while (true) {
    auto batch = outbox.Lease(64);
    if (!batch.ok() || batch->empty()) break;
    for (auto& e : *batch) outbox.Settle(e.seq);
    drained += batch->size();
  }
  (void)outbox.Flush(std::chrono::minutes(5));
  // Wait for the deletes to commit.
  while (outbox.Stats().pending_rows > 0) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  double drain_s = std::chrono::duration<double>(Clock::now() - t1).count();

  std::printf("  saturation: %zu records from %d producers\n", records, producers);
  std::printf("  append: %.0f durable records/s in %llu commits (%.0f records/commit)\n",
              static_cast<double>(stats.committed - before.committed) / append_s,
              static_cast<unsigned long long>(stats.commits - before.commits),
              static_cast<double>(stats.committed - before.committed) /
                  static_cast<double>(std::max<uint64_t>(stats.commits - before.commits, 1)));
  std::printf("  commit wait at saturation (queueing included): p50 %.2f ms, p99 %.2f ms, max %.2f ms\n", pct(0.5), pct(0.99),
              pct(1.0));
  std::printf("  drain (lease 64 + settle): %.0f records/s (%zu records)\n",
              static_cast<double>(drained) / drain_s, drained);

  opened.value().reset();
  std::filesystem::remove_all(dir);
  return 0;
}
