// Runs the real sanifleet next to the GatewayTest's broker and gateway: start with a config
// text, wait until its retained status says online, read its log, call its admin API with
// mosquitto_rr (a real MQTT 5 peer).
#pragma once

#include "gateway_fixture.h"

namespace sanigate::test {

class FleetFixture : public GatewayTest {
 protected:
  Process fleet;
  int fleet_starts = 0;

  void WriteFleetConfigText(const std::string& text) { std::ofstream(path("sanifleet.toml")) << text; }

  // [fleet] for site houpu with a fast registry flush, and [mqtt] for the test broker.
  std::string FleetBaseConfig(const std::string& mqtt_extra = "") const {
    return "[fleet]\nid = \"fleet-test\"\nsite = \"houpu\"\ndata_dir = \"" + path("fleet") +
           "\"\nregistry_flush_ms = 100\nlog_level = \"debug\"\n\n[mqtt]\nurl = \"" + broker->url() +
           "\"\nreconnect_min_ms = 100\nreconnect_max_ms = 1000\n" + mqtt_extra + "\n";
  }

  void StartFleet() {
    fleet_starts++;
    size_t before = capture->Messages().size();
    fleet = Process::Start({SANIFLEET_BIN, "--config", path("sanifleet.toml")},
                           {.stderr_path = path("fleet." + std::to_string(fleet_starts) + ".log")});
    // Ready when its retained status says online (published after it subscribed).
    ASSERT_TRUE(capture->WaitFor([&](const std::vector<Captured>& m) {
      for (size_t i = before; i < m.size(); ++i)
        if (m[i].topic == "sanigate/v1/houpu/fleet/status" && json::parse(m[i].payload, nullptr, false).value("online", false))
          return true;
      return false;
    }, 15s)) << FleetLog();
  }

  std::string FleetLog() const {
    std::string all;
    for (int i = 1; i <= fleet_starts; ++i) all += ReadFile(path("fleet." + std::to_string(i) + ".log"));
    return all;
  }

  // An admin request through mosquitto_rr; returns the parsed answer.
  json Admin(const std::string& verb, const json& args = json::object()) {
    int rc = Process::Run({"mosquitto_rr", "-h", "127.0.0.1", "-p", std::to_string(broker->port()), "-t",
                           "sanigate/v1/houpu/fleet/admin/" + verb, "-e", "sanigate/v1/houpu/admin/reply/test", "-m", args.dump(),
                           "-W", "10"},
                          15s, {.stdout_path = path("rr.out"), .stderr_path = path("rr.err")});
    EXPECT_TRUE(ExitedWith(rc, 0)) << DescribeWaitStatus(rc) << ReadFile(path("rr.err"));
    return json::parse(ReadFile(path("rr.out")), nullptr, false);
  }

  void TearDown() override {
    if (fleet.Running()) fleet.Stop(5s);
    if (::testing::Test::HasFailure()) std::cerr << "---- fleet log ----\n" << FleetLog();
    GatewayTest::TearDown();
  }
};

}  // namespace sanigate::test
