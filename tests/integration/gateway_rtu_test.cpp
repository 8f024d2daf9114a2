// Modbus RTU end to end: the real daemon on one end of a pty pair (a virtual RS-485 line paced
// at 19200 8E1), the libmodbus simulator with three slaves on the other, a real Mosquitto.
// A silent slave among healthy ones, a USB adapter pulled and plugged back, and a write.
#include <signal.h>

#include <sstream>

#include "gateway_fixture.h"
#include "harness/pty_bridge.h"

namespace sanigate::test {
namespace {

class GatewayRtuTest : public GatewayTest {
 protected:
  std::unique_ptr<PtyBridge> line;

  void StartLine(const std::string& extra_sim_args = "") {
    line = std::make_unique<PtyBridge>(PtyBridgeOptions{.baud = 19200, .bits_per_char = 11});
    std::vector<std::string> argv = {MODBUS_SIM_BIN, "--rtu", line->link_b(), "--baud", "19200",
                                     "--slaves", "1-3", "--counter", "hr:4", "--turnaround-ms", "2"};
    std::istringstream words(extra_sim_args);
    for (std::string w; words >> w;) argv.push_back(w);
    sim = Process::Start(argv, {.stderr_path = path("sim.err")});
    // The simulator says when it serves the line.
    auto until = std::chrono::steady_clock::now() + 10s;
    while (ReadFile(path("sim.err")).find("serving") == std::string::npos &&
           std::chrono::steady_clock::now() < until)
      std::this_thread::sleep_for(20ms);
  }

  std::string BusConfig(const std::string& device_extra = "") const {
    std::string cfg = "[[modbus.buses]]\nname = \"room-bus\"\nport = \"" + line->link_a() +
                      "\"\nbaud = 19200\nparity = \"E\"\n";
    for (int unit = 1; unit <= 3; ++unit) {
      cfg += "[[modbus.buses.devices]]\nid = \"bin-" + std::to_string(unit) + "\"\nkind = \"bin\"\n" +
             "unit_id = " + std::to_string(unit) +
             "\ninterval_ms = 300\ntimeout_ms = 100\noffline_after = 2\n" + device_extra +
             "[[modbus.buses.devices.points]]\nmetric = \"fill_level_pct\"\naddress = 0\nscale = 0.1\n"
             "decimals = 1\n[[modbus.buses.devices.points]]\nmetric = \"reads\"\naddress = 4\n"
             "type = \"u32\"\n[[modbus.buses.devices.points]]\nmetric = \"lid_open\"\ntable = \"coil\"\n"
             "address = 1\n";
    }
    return cfg;
  }

  bool WaitEvent(const std::string& device, const std::string& state, std::chrono::milliseconds t) {
    return capture->WaitFor(
        [&](const std::vector<Captured>& msgs) {
          for (const auto& p : Unique(msgs, "/devices/" + device + "/event"))
            if (p.payload["event"] == "offline" && p.payload["state"] == state) return true;
          return false;
        },
        t);
  }
};

TEST_F(GatewayRtuTest, ASilentSlaveGoesOfflineWhileTheOthersOnTheLineKeepTheirPace) {
  StartBroker();
  StartLine("--mute-slaves 2");
  Capture();
  WriteConfig(BaseConfig() + "[modbus]\n" + BusConfig());
  StartGateway();
  ASSERT_TRUE(WaitReads("bin-1", 3, 10s)) << ReadFile(path("sim.err"));
  ASSERT_TRUE(WaitReads("bin-3", 3, 10s));
  ASSERT_TRUE(WaitEvent("bin-2", "active", 10s)) << "the silent slave never went offline";
  EXPECT_TRUE(Reads("bin-2").empty());

  // Over 3 s the healthy slaves deliver close to their 300 ms pace (10 each), although the
  // silent one costs a 100 ms timeout whenever it is asked.
  size_t b1 = Reads("bin-1").size(), b3 = Reads("bin-3").size();
  std::this_thread::sleep_for(3s);  // measuring a rate over a fixed window
  EXPECT_GE(Reads("bin-1").size() - b1, 8u);
  EXPECT_GE(Reads("bin-3").size() - b3, 8u);
  ExpectContiguousReads("bin-1");
}

TEST_F(GatewayRtuTest, ALateSlaveNeverTakesTheLineDownAndTheOthersLoseNothing) {
  // Slave 2 answers 190 ms after each request, past its 100 ms timeout: its late answer lands
  // while the gateway asks the next slave. That slave's own answer follows right behind.
  StartBroker();
  StartLine("--late-slaves 2 --late-ms 190");
  Capture();
  WriteConfig(BaseConfig() + "[modbus]\n" + BusConfig());
  StartGateway();
  ASSERT_TRUE(WaitReads("bin-1", 3, 10s)) << ReadFile(path("sim.err"));
  ASSERT_TRUE(WaitEvent("bin-2", "active", 10s)) << "the late slave never went offline";
  // Long enough for the late slave to be asked several times (its retries back off).
  std::this_thread::sleep_for(6s);
  ASSERT_TRUE(WaitReads("bin-3", 15, 10s));

  for (const char* healthy : {"bin-1", "bin-3"}) {
    EXPECT_FALSE(WaitEvent(healthy, "active", 0ms)) << healthy << " was announced offline";
    auto reads = Reads(healthy);
    for (size_t i = 1; i < reads.size(); ++i)
      EXPECT_EQ(reads[i], reads[i - 1] + 1) << healthy << ": a read answered by the slave was lost at " << i;
  }
  // The late answers were seen and set aside, not held against the slave being asked.
  json status;
  auto line_figure = [&](const char* name) -> int64_t {
    if (!status.is_object() || !status.contains("adapters")) return 0;
    json bus = status["adapters"].value("modbus", json::object()).value("details", json::object())
                   .value("buses", json::object()).value("room-bus", json::object());
    return bus.value(name, int64_t{0});
  };
  ASSERT_TRUE(capture->WaitFor([&](const std::vector<Captured>& msgs) {
    for (const auto& p : Unique(msgs, "/gateway/gw-test/status"))
      if (p.payload.contains("adapters")) status = p.payload;
    return line_figure("wrong_answers") + line_figure("stale_bytes") > 0;
  }, 10s)) << status.dump();
  EXPECT_EQ(status["adapters"]["modbus"]["per_device"]["bin-1"]["timeouts"], 0) << status.dump();
  EXPECT_EQ(status["adapters"]["modbus"]["per_device"]["bin-3"]["timeouts"], 0) << status.dump();
}

TEST_F(GatewayRtuTest, AnUnpluggedAdapterTakesTheLineOfflineAndItRecoversWhenPluggedBack) {
  StartBroker();
  StartLine();
  Capture();
  WriteConfig(BaseConfig() + "[modbus]\n" + BusConfig());
  StartGateway();
  ASSERT_TRUE(WaitReads("bin-1", 3, 10s)) << ReadFile(path("sim.err"));

  line->Unplug();
  ASSERT_TRUE(WaitEvent("bin-1", "active", 10s)) << "devices stayed online without a port";
  ASSERT_TRUE(WaitEvent("bin-3", "active", 10s));
  EXPECT_TRUE(gateway.Running());

  line->Plug();
  ASSERT_TRUE(WaitEvent("bin-1", "cleared", 15s)) << GatewayLog();
  size_t before = Reads("bin-1").size();
  EXPECT_TRUE(WaitReads("bin-1", before + 3, 10s));
}

TEST_F(GatewayRtuTest, AWriteOnTheLineGoesThroughAndIsVerified) {
  StartBroker();
  StartLine();
  Capture();
  WriteConfig(BaseConfig() + "[modbus]\n" +
              BusConfig("[[modbus.buses.devices.commands]]\nname = \"lid\"\ntable = \"coil\"\n"
                        "address = 1\nverify = true\nvalues = { open = 1, close = 0 }\n"));
  StartGateway();
  ASSERT_TRUE(WaitReads("bin-3", 1, 10s));
  json answer = Command("bin-3", "lid", "open");
  EXPECT_EQ(answer["ok"], true) << answer.dump();
  EXPECT_EQ(answer["result"]["verified"], true) << answer.dump();
  EXPECT_TRUE(capture->WaitFor(
      [](const std::vector<Captured>& msgs) {
        auto t = Unique(msgs, "/devices/bin-3/telemetry");
        return !t.empty() && t.back().payload["metrics"]["lid_open"] == true;
      },
      5s));
  // Only slave 3 was written.
  auto t1 = Unique(capture->Messages(), "/devices/bin-1/telemetry");
  ASSERT_FALSE(t1.empty());
  EXPECT_EQ(t1.back().payload["metrics"]["lid_open"], false);
}

}  // namespace
}  // namespace sanigate::test
