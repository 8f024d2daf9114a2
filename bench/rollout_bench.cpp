// Rollout planning figures (never run by ctest): target selection and the wave plan for a
// district's devices (target ≤ 100 ms for 50k), then a whole campaign ticked through, and the
// size of its saved state. Usage: rollout_bench [DEVICES=50000] [GATEWAYS=300]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "rollout/campaign.h"

using namespace sanigate::fleet::rollout;
using Clock = std::chrono::steady_clock;

int main(int argc, char** argv) {
  size_t n = argc > 1 ? std::stoul(argv[1]) : 50'000;
  size_t gateways = argc > 2 ? std::stoul(argv[2]) : 300;
  std::vector<Candidate> devices;
  devices.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    Candidate c;
    c.site = "site-" + std::to_string(i % 40);
    c.device = "room-" + std::to_string(i);
    c.key = c.site + "/" + c.device;
    c.kind = i % 10 == 0 ? "vehicle" : "garbage_room";
    c.model = "gr-ctrl-v2";
    c.gateway = "gw-" + std::to_string(i % gateways);
    c.bus = "rs485-" + std::to_string(i / gateways % 4);
    c.firmware = i % 50 == 0 ? "2.1.0" : "2.0.3";
    devices.push_back(std::move(c));
  }
  nlohmann::json j = {{"id", "bench"},       {"target_type", "modbus"},
                      {"model", "gr-ctrl-v2"}, {"version", "2.1.0"},
                      {"artifact_sha256", std::string(64, 'a')},
                      {"target", {{"kinds", {"garbage_room"}}}},
                      {"canary_count", 20},  {"waves_pct", {1, 10, 50, 100}},
                      {"health_gate_s", 0}};
  auto spec = ParseSpec(j);
  if (!spec.ok()) return std::fprintf(stderr, "%s\n", spec.status().message().c_str()), 1;
  auto t0 = Clock::now();
  Plan plan = MakePlan(*spec, devices, nullptr);
  auto t1 = Clock::now();
  Campaign c(*spec, plan, 0);
  for (const auto& d : devices) c.SetPlacement(d.key, d.gateway, d.bus);
  auto t2 = Clock::now();
  std::printf("plan: %zu devices behind %zu gateways -> %zu targets in %zu groups: %.1f ms (target <= 100 ms); campaign set up in %.1f ms\n",
              n, gateways, plan.total(), plan.groups.size(), std::chrono::duration<double, std::milli>(t1 - t0).count(),
              std::chrono::duration<double, std::milli>(t2 - t1).count());
  (void)c.Start(0);
  int64_t now = 0;
  size_t ticks = 0;
  double worst_tick_ms = 0;
  auto t3 = Clock::now();
  while (c.state() == CampaignState::kRunning && ticks < 100'000) {
    auto a = Clock::now();
    auto started = c.Tick(now);
    worst_tick_ms = std::max(worst_tick_ms, std::chrono::duration<double, std::milli>(Clock::now() - a).count());
    for (const auto& s : started) c.OnVersion(s.key, "2.1.0", now);
    now += 1000;
    ++ticks;
  }
  auto t4 = Clock::now();
  std::string saved = c.ToJson().dump();
  std::printf("campaign: %s after %zu ticks in %.2f s (slowest tick %.1f ms); saved state %.1f MiB\n", CampaignStateName(c.state()), ticks,
              std::chrono::duration<double>(t4 - t3).count(), worst_tick_ms, saved.size() / 1048576.0);
}
