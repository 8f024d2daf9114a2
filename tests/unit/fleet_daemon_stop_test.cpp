// sanifleet's stop (commit dc60af7): a message Paho has handed over has been acknowledged to the
// broker (PUBACK), so the persistent session will not bring it again. Messages still waiting
// in the daemon's queue when the stop comes must be handled before the registry and the heat
// map are saved, or they are lost (1 of 2,000 truck points was, across a restart). The race is
// made certain here: the messages are queued together with the stop request, so the worker
// never takes them. No broker: the daemon's link points at a closed port.
#include <gtest/gtest.h>

#include <mutex>

#include "app/fleet_daemon.h"
#include "core/clock.h"
#include "test_support.h"

namespace sanigate::fleet {

// Befriended by FleetDaemon: reaches its queue.
class FleetDaemonTest : public ::testing::Test {
 protected:
  // Queues `messages` as Paho's callback would, in the same breath as the stop request, then
  // stops the daemon the way main() does.
  static void StopWithQueued(FleetDaemon& d, const std::vector<mqtt::InboundMessage>& messages) {
    {
      std::lock_guard lk(d.mu_);
      for (const auto& m : messages) d.queue_.push_back(m);
      d.stop_ = true;
      d.cv_.notify_all();
    }
    d.Stop();
  }
  static size_t Queued(FleetDaemon& d) {
    std::lock_guard lk(d.mu_);
    return d.queue_.size();
  }

  FleetConfig Config() {
    auto cfg = LoadFleetConfigString(R"([fleet]
id = "fleet-test"
site = "houpu"
data_dir = ")" + dir_.path().string() + R"("
shutdown_drain_ms = 200
[mqtt]
url = "tcp://127.0.0.1:1"
)",
                                     "stop_test.toml");
    EXPECT_TRUE(cfg.ok()) << cfg.status().message();
    return cfg.ok() ? *cfg : FleetConfig{};
  }

  unit::ScratchDir dir_;
};

namespace {

mqtt::InboundMessage TruckPoint(int i, int64_t ts) {
  nlohmann::json p = {{"ts", ts},
                      {"kind", "vehicle"},
                      {"source", {{"protocol", "jt808"}, {"gateway", "gw-1"}}},
                      {"metrics", {{"speed_kmh", 20}}},
                      {"location", {{"lat", 24.48 + i * 0.001}, {"lon", 118.10}}}};
  return {"sanigate/v1/houpu/devices/truck-" + std::to_string(i) + "/telemetry", p.dump(), "", ""};
}

TEST_F(FleetDaemonTest, MessagesQueuedAtTheStopReachTheRegistryAndTheHeatMap) {
  FleetConfig cfg = Config();
  const std::string registry_path = cfg.RegistryPath();
  HeatmapSettings hs;
  hs.map = cfg.heatmap;
  hs.site = "houpu";
  hs.sites = cfg.fleet.sites;
  hs.data_dir = cfg.fleet.data_dir;
  {
    auto daemon = FleetDaemon::Create(cfg);
    ASSERT_TRUE(daemon.ok()) << daemon.status().message();
    (*daemon)->Start();
    int64_t now = NowMs();
    std::vector<mqtt::InboundMessage> points;
    for (int i = 0; i < 5; ++i) points.push_back(TruckPoint(i, now - 1000 + i));
    StopWithQueued(**daemon, points);
    EXPECT_EQ(Queued(**daemon), 0u);
  }

  // What was saved at the stop: every truck in the registry...
  auto store = RegistryStore::Open(registry_path);
  ASSERT_TRUE(store.ok()) << store.status().message();
  Registry registry;
  ASSERT_TRUE((*store)->Load(registry).ok());
  for (int i = 0; i < 5; ++i) {
    const DeviceEntry* e = registry.FindDevice(RegistryKey("houpu", "truck-" + std::to_string(i)));
    ASSERT_NE(e, nullptr) << "truck-" << i << " was acknowledged to the broker but never handled";
    EXPECT_EQ(e->kind, "vehicle");
    EXPECT_EQ(e->gateway, "gw-1");
  }
  // ... and every point in the saved heat map.
  HeatmapService map(hs, [](const std::string&, const std::string&, bool) {}, [] { return NowMs(); });
  map.LoadSaved();
  EXPECT_EQ(map.StatusJson()["points"], 5) << map.StatusJson().dump();
}

}  // namespace
}  // namespace sanigate::fleet
