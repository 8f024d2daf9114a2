// sanictl end to end: the real binary against a real Mosquitto, the real sanigate daemon with a
// simulated Modbus garbage room, and (in one test) the real sanifleet. Checks what a user and a
// script see: tables, --json documents, messages on stderr and the exit codes of CONTRACT §4
// (0 ok, 1 failed, 2 bad usage or input, 3 cannot reach the broker or daemon, 4 not found).
#include <regex>
#include <sstream>
#include <thread>

#include "gateway_fixture.h"

namespace sanigate::test {
namespace {

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

class SanictlTest : public GatewayTest {
 protected:
  struct Result {
    int status = -1;  // raw wait status
    std::string out, err;
  };

  Process fleet;
  int runs = 0;

  // sanictl's own config: the test broker and the site, as an operator would set them up.
  void WriteCtlConfig() {
    std::ofstream(path("sanictl.toml")) << "[mqtt]\nurl = \"" << broker->url()
                                        << "\"\nreconnect_min_ms = 100\n\n[ctl]\nsite = \"houpu\"\n";
  }

  // Runs sanictl with --config (so a machine's /etc/sanigate/sanictl.toml never leaks in).
  Result Ctl(const std::vector<std::string>& args, std::chrono::seconds limit = 30s) {
    runs++;
    std::string out = path("ctl." + std::to_string(runs) + ".out"), err = path("ctl." + std::to_string(runs) + ".err");
    std::vector<std::string> argv = {SANICTL_BIN, "--config", path("sanictl.toml")};
    argv.insert(argv.end(), args.begin(), args.end());
    Result r;
    r.status = Process::Run(argv, limit, {.stdout_path = out, .stderr_path = err});
    r.out = ReadFile(out);
    r.err = ReadFile(err);
    return r;
  }

  static std::string Describe(const Result& r) {
    return DescribeWaitStatus(r.status) + "\n--- stdout ---\n" + r.out + "--- stderr ---\n" + r.err;
  }

  // Broker, one simulated room (uv lamp on coil 0, writable), the gateway, online.
  void StartGatewayWithOneRoom(int interval_ms = 200) {
    StartBroker();
    WriteCtlConfig();
    StartSim(1, {"--set", "coil:0=1", "--set", "hr:0=815"});
    Capture();
    WriteConfig(BaseConfig() + "[modbus]\n" + RoomConfig("room-07", 0, interval_ms) + R"(
[[modbus.devices.commands]]
name = "uv_lamp"
table = "coil"
address = 0
verify = true
)");
    StartGateway();
    WaitGatewayOnline();
  }

  void StartFleet() {
    std::ofstream(path("sanifleet.toml")) << "[fleet]\nid = \"fleet-test\"\nsite = \"houpu\"\ndata_dir = \""
                                          << path("fleet") << "\"\nregistry_flush_ms = 100\n\n[mqtt]\nurl = \""
                                          << broker->url() << "\"\nreconnect_min_ms = 100\n";
    fleet = Process::Start({SANIFLEET_BIN, "--config", path("sanifleet.toml")}, {.stderr_path = path("fleet.log")});
    ASSERT_TRUE(capture->WaitFor([](const std::vector<Captured>& m) {
      for (const auto& c : m)
        if (c.topic == "sanigate/v1/houpu/fleet/status" && json::parse(c.payload, nullptr, false).value("online", false))
          return true;
      return false;
    }, 15s)) << ReadFile(path("fleet.log"));
  }

  void TearDown() override {
    if (fleet.Running()) fleet.Stop(5s);
    if (::testing::Test::HasFailure()) std::cerr << "---- fleet log ----\n" << ReadFile(path("fleet.log"));
    GatewayTest::TearDown();
  }
};

TEST_F(SanictlTest, StatusShowsTheGatewayAndExitsThreeWhenSanifleetDoesNotAnswer) {
  StartGatewayWithOneRoom();

  Result r = Ctl({"--timeout", "1500", "status"});
  EXPECT_TRUE(ExitedWith(r.status, 3)) << Describe(r);
  EXPECT_EQ(r.err, "sanifleet did not answer on sanigate/v1/houpu/fleet/admin/status within 1500 ms\n");
  auto lines = Lines(r.out);
  ASSERT_GE(lines.size(), 2u) << Describe(r);
  EXPECT_TRUE(std::regex_match(lines[0], std::regex("GATEWAY +ONLINE +VERSION +UPTIME +ADAPTERS +OUTBOX +LAST STATUS")))
      << lines[0];
  EXPECT_TRUE(std::regex_match(lines[1], std::regex("gw-test +yes +" SANIGATE_VERSION " +\\S+ +modbus:\\w+ +\\d+ +\\d+s ago")))
      << lines[1];
  // The columns line up: every value starts where its header starts.
  EXPECT_EQ(lines[0].find("ONLINE"), lines[1].find("yes"));
  EXPECT_EQ(lines[0].find("ADAPTERS"), lines[1].find("modbus:"));

  // --json: one document, the gateway's retained status inside, no fleet; still exit 3.
  r = Ctl({"status", "--json", "--timeout", "1500"});
  EXPECT_TRUE(ExitedWith(r.status, 3)) << Describe(r);
  EXPECT_EQ(r.err, "sanifleet did not answer on sanigate/v1/houpu/fleet/admin/status within 1500 ms\n");
  json doc = json::parse(r.out, nullptr, false);
  ASSERT_TRUE(doc.is_object()) << r.out;
  EXPECT_EQ(doc["site"], "houpu");
  EXPECT_TRUE(doc["fleet"].is_null());
  ASSERT_EQ(doc["gateways"].size(), 1u) << r.out;
  EXPECT_EQ(doc["gateways"][0]["gateway"], "gw-test");
  EXPECT_EQ(doc["gateways"][0]["status"]["online"], true);
  EXPECT_EQ(doc["gateways"][0]["status"]["version"], SANIGATE_VERSION);
  EXPECT_TRUE(doc["gateways"][0]["status"]["adapters"].contains("modbus"));
}

TEST_F(SanictlTest, TailPrintsTheLiveStreamAndStops) {
  StartGatewayWithOneRoom();
  ASSERT_TRUE(WaitReads("room-07", 1, 10s));

  // --json: one {"topic","payload"} document per line. The retained statuses come first (the
  // current state), so three messages hold at least one live reading.
  Result r = Ctl({"tail", "--count", "3", "--json"});
  EXPECT_TRUE(ExitedWith(r.status, 0)) << Describe(r);
  auto lines = Lines(r.out);
  ASSERT_EQ(lines.size(), 3u) << Describe(r);
  int telemetry = 0;
  for (const auto& line : lines) {
    json j = json::parse(line, nullptr, false);
    ASSERT_TRUE(j.is_object()) << line;
    ASSERT_TRUE(j["payload"].is_object()) << line;
    std::string topic = j["topic"];
    EXPECT_TRUE(topic.starts_with("sanigate/v1/houpu/")) << topic;
    if (topic == "sanigate/v1/houpu/devices/room-07/telemetry") {
      telemetry++;
      EXPECT_EQ(j["payload"]["device"], "room-07");
      EXPECT_DOUBLE_EQ(j["payload"]["metrics"]["fill_level_pct"].get<double>(), 81.5);
    }
  }
  EXPECT_GE(telemetry, 1) << r.out;

  // Text, with a glob filter: one line per message, clock of the payload, device, type, metrics.
  r = Ctl({"tail", "room-*", "--count", "4"});
  EXPECT_TRUE(ExitedWith(r.status, 0)) << Describe(r);
  lines = Lines(r.out);
  ASSERT_EQ(lines.size(), 4u) << Describe(r);
  bool saw_reading = false;
  for (const auto& line : lines) {
    EXPECT_TRUE(std::regex_search(line, std::regex("^\\d\\d:\\d\\d:\\d\\d\\.\\d{3}  room-07 "))) << line;
    EXPECT_EQ(line.find("gw-test"), std::string::npos) << "the filter applies to gateways too: " << line;
    if (line.find(" telemetry ") != std::string::npos) {
      saw_reading = true;
      EXPECT_NE(line.find("fill_level_pct=81.5"), std::string::npos) << line;
    }
  }
  EXPECT_TRUE(saw_reading) << r.out;

  // A filter that matches nothing and --seconds: ends on time, exit 0, nothing printed.
  auto started = std::chrono::steady_clock::now();
  r = Ctl({"tail", "bin-*", "--seconds", "1"});
  EXPECT_TRUE(ExitedWith(r.status, 0)) << Describe(r);
  EXPECT_EQ(r.out, "");
  EXPECT_LT(std::chrono::steady_clock::now() - started, 8s);

  // Without --count/--seconds it runs until SIGTERM, then exits 0.
  Process live = Process::Start({SANICTL_BIN, "--config", path("sanictl.toml"), "tail", "room-07"},
                                {.stdout_path = path("live.out"), .stderr_path = path("live.err")});
  std::this_thread::sleep_for(1500ms);
  int st = live.Stop(5s);
  EXPECT_TRUE(ExitedWith(st, 0)) << DescribeWaitStatus(st) << ReadFile(path("live.err"));
  EXPECT_NE(ReadFile(path("live.out")).find("room-07"), std::string::npos);
}

TEST_F(SanictlTest, CommandsReachTheDeviceAndFailuresHaveTheirExitCodes) {
  StartGatewayWithOneRoom();

  // The lamp goes off, verified by reading back; the answer's result is printed.
  Result r = Ctl({"cmd", "room-07", "uv_lamp", "off"});
  EXPECT_TRUE(ExitedWith(r.status, 0)) << Describe(r);
  EXPECT_NE(r.out.find("room-07 uv_lamp: ok"), std::string::npos) << r.out;
  EXPECT_TRUE(std::regex_search(r.out, std::regex("verified: +true"))) << r.out;
  EXPECT_TRUE(capture->WaitFor([](const std::vector<Captured>& msgs) {
    auto t = Unique(msgs, "/devices/room-07/telemetry");
    return !t.empty() && t.back().payload["metrics"]["uv_lamp_on"] == false;
  }, 5s));

  // --json: the gateway's answer as it is; --timeout also goes to the gateway as timeout_ms.
  r = Ctl({"--json", "--timeout", "2000", "cmd", "room-07", "uv_lamp", "on"});
  EXPECT_TRUE(ExitedWith(r.status, 0)) << Describe(r);
  json answer = json::parse(r.out, nullptr, false);
  EXPECT_EQ(answer["ok"], true) << r.out;
  EXPECT_EQ(answer["result"]["verified"], true) << r.out;

  // A value the command does not take: ok:false → exit 1 with the gateway's error.
  r = Ctl({"cmd", "room-07", "uv_lamp", "dim"});
  EXPECT_TRUE(ExitedWith(r.status, 1)) << Describe(r);
  EXPECT_NE(r.err.find("\"dim\" is not a value of uv_lamp"), std::string::npos) << r.err;

  // A device nobody has: exit 4.
  r = Ctl({"cmd", "ghost-1", "uv_lamp", "on"});
  EXPECT_TRUE(ExitedWith(r.status, 4)) << Describe(r);
  EXPECT_NE(r.err.find("unknown device ghost-1"), std::string::npos) << r.err;

  // A site without a gateway: nobody answers → exit 3.
  r = Ctl({"--site", "elsewhere", "--timeout", "800", "cmd", "room-07", "uv_lamp", "on"});
  EXPECT_TRUE(ExitedWith(r.status, 3)) << Describe(r);
  EXPECT_NE(r.err.find("no answer on sanigate/v1/elsewhere/devices/room-07/cmd/uv_lamp within 800 ms"),
            std::string::npos) << r.err;
}

TEST_F(SanictlTest, WithSanifleetStatusDevicesAndHealthAnswer) {
  StartGatewayWithOneRoom();
  StartFleet();
  ASSERT_TRUE(capture->WaitFor([](const std::vector<Captured>& m) {
    for (const auto& c : m)
      if (c.topic == "sanigate/v1/houpu/fleet/health/room-07") return true;
    return false;
  }, 15s)) << ReadFile(path("fleet.log"));

  Result r = Ctl({"status"});
  EXPECT_TRUE(ExitedWith(r.status, 0)) << Describe(r);
  EXPECT_TRUE(std::regex_search(r.out, std::regex("\nfleet fleet-test " SANIGATE_VERSION ".*: 1 devices \\(ok 1\\), 1 gateways\n")))
      << r.out;

  r = Ctl({"devices", "list"});
  EXPECT_TRUE(ExitedWith(r.status, 0)) << Describe(r);
  auto lines = Lines(r.out);
  ASSERT_EQ(lines.size(), 2u) << r.out;
  EXPECT_TRUE(std::regex_match(lines[0], std::regex("DEVICE +KIND +PROTOCOL +GATEWAY +STATE +LAST SEEN +FIRMWARE"))) << lines[0];
  EXPECT_TRUE(std::regex_match(lines[1], std::regex("room-07 +garbage_room +modbus +gw-test +ok +\\d+s ago +-"))) << lines[1];

  r = Ctl({"devices", "list", "--json", "--kind", "bin"});
  EXPECT_TRUE(ExitedWith(r.status, 0)) << Describe(r);
  EXPECT_EQ(json::parse(r.out, nullptr, false), json({{"total", 0}, {"devices", json::array()}})) << r.out;

  r = Ctl({"devices", "show", "room-07"});
  EXPECT_TRUE(ExitedWith(r.status, 0)) << Describe(r);
  EXPECT_TRUE(std::regex_search(r.out, std::regex("(^|\n)kind: +garbage_room\n"))) << r.out;
  EXPECT_TRUE(std::regex_search(r.out, std::regex("\n  fill_level_pct +81.5\n"))) << r.out;

  r = Ctl({"devices", "show", "ghost-1"});
  EXPECT_TRUE(ExitedWith(r.status, 4)) << Describe(r);
  EXPECT_EQ(r.err, "sanictl: unknown device ghost-1\n");

  r = Ctl({"devices", "list", "--state", "sideways"});
  EXPECT_TRUE(ExitedWith(r.status, 2)) << Describe(r);

  r = Ctl({"health"});
  EXPECT_TRUE(ExitedWith(r.status, 0)) << Describe(r);
  lines = Lines(r.out);
  ASSERT_GE(lines.size(), 2u) << r.out;
  EXPECT_TRUE(std::regex_match(lines[0], std::regex("DEVICE +KIND +STATE +SINCE +REASONS"))) << lines[0];
  EXPECT_TRUE(std::regex_match(lines[1], std::regex("room-07 +garbage_room +ok +\\d+s ago"))) << lines[1];
  EXPECT_EQ(lines.back().rfind("gw-test ", 0), 0u) << "gateways come after the devices:\n" << r.out;

  r = Ctl({"health", "--problems", "--json"});
  EXPECT_TRUE(ExitedWith(r.status, 0)) << Describe(r);
  EXPECT_EQ(json::parse(r.out, nullptr, false)["devices"], json::array()) << r.out;
}

TEST_F(SanictlTest, ConfigCheckTellsValidFromInvalidFiles) {
  // The shipped sample: valid.
  std::string sample = SourceDir() + "/config/sanigate.toml";
  Result r = Ctl({"config", "check", sample});
  EXPECT_TRUE(ExitedWith(r.status, 0)) << Describe(r);
  EXPECT_EQ(r.out, sample + ": ok (sanigate config)\n");

  // A broken gateway config: every error as FILE:LINE:COL: key.path: problem, exit 2.
  std::ofstream(path("bad.toml")) << "[gateway]\nid = \"gw\"\nsite = \"s\"\ncolour = 3\n\n[mqtt]\nurl = \"http://x\"\n";
  r = Ctl({"config", "check", path("bad.toml")});
  EXPECT_TRUE(ExitedWith(r.status, 2)) << Describe(r);
  auto lines = Lines(r.err);
  ASSERT_EQ(lines.size(), 2u) << r.err;
  EXPECT_EQ(lines[0], path("bad.toml") + ":4:1: gateway.colour: unknown key");
  EXPECT_TRUE(std::regex_match(lines[1], std::regex(std::regex_replace(path("bad.toml"), std::regex("[.]"), "\\.") +
                                                    ":7:\\d+: mqtt\\.url: .*")))
      << lines[1];
  EXPECT_EQ(r.out, "");

  // A file with a [fleet] table is a sanifleet config.
  std::ofstream(path("fleet.toml")) << "[fleet]\nid = \"fleet-1\"\nsite = \"houpu\"\n";
  r = Ctl({"config", "check", path("fleet.toml")});
  EXPECT_TRUE(ExitedWith(r.status, 0)) << Describe(r);
  EXPECT_EQ(r.out, path("fleet.toml") + ": ok (sanifleet config)\n");
  std::ofstream(path("fleet-bad.toml")) << "[fleet]\nid = \"fleet-1\"\nsite = \"houpu\"\nsitez = [\"a\"]\n";
  r = Ctl({"config", "check", path("fleet-bad.toml")});
  EXPECT_TRUE(ExitedWith(r.status, 2)) << Describe(r);
  EXPECT_TRUE(r.err.starts_with(path("fleet-bad.toml") + ":4:1: fleet.sitez: ")) << r.err;

  // A syntax error is reported with its position too.
  std::ofstream(path("syntax.toml")) << "[gateway]\nid = \"gw\n";
  r = Ctl({"config", "check", path("syntax.toml")});
  EXPECT_TRUE(ExitedWith(r.status, 2)) << Describe(r);
  EXPECT_TRUE(r.err.starts_with(path("syntax.toml") + ":2:")) << r.err;

  // A file that cannot be read: exit 2 with the reason.
  r = Ctl({"config", "check", path("missing.toml")});
  EXPECT_TRUE(ExitedWith(r.status, 2)) << Describe(r);
  EXPECT_EQ(r.err, "sanictl: cannot read " + path("missing.toml") + ": No such file or directory\n");
}

TEST_F(SanictlTest, BrokerDownExitsThreeWithAClearMessage) {
  std::ofstream(path("sanictl.toml")) << "[ctl]\nsite = \"houpu\"\n";
  std::string url = "tcp://127.0.0.1:" + std::to_string(FreeTcpPort());
  for (const std::vector<std::string>& verb : std::vector<std::vector<std::string>>{
           {"status"}, {"devices", "list"}, {"tail"}, {"cmd", "room-07", "uv_lamp", "on"}}) {
    std::vector<std::string> args = {"--broker", url, "--timeout", "1000"};
    args.insert(args.end(), verb.begin(), verb.end());
    auto started = std::chrono::steady_clock::now();
    Result r = Ctl(args);
    EXPECT_TRUE(ExitedWith(r.status, 3)) << verb[0] << ": " << Describe(r);
    EXPECT_EQ(r.err, "cannot reach the broker at " + url + ": connection refused\n") << verb[0];
    EXPECT_EQ(r.out, "") << verb[0];
    EXPECT_LT(std::chrono::steady_clock::now() - started, 6s) << verb[0];
  }
}

TEST_F(SanictlTest, BadUsageExitsTwo) {
  std::ofstream(path("sanictl.toml")) << "";
  Result r = Ctl({"frobnicate"});
  EXPECT_TRUE(ExitedWith(r.status, 2)) << Describe(r);
  EXPECT_NE(r.err.find("unknown verb \"frobnicate\""), std::string::npos) << r.err;

  r = Ctl({"status", "--no-such-option"});
  EXPECT_TRUE(ExitedWith(r.status, 2)) << Describe(r);
  EXPECT_NE(r.err.find("--no-such-option"), std::string::npos) << r.err;

  r = Ctl({"cmd", "room-07"});  // NAME missing
  EXPECT_TRUE(ExitedWith(r.status, 2)) << Describe(r);

  r = Ctl({"tail", "--count", "zero"});
  EXPECT_TRUE(ExitedWith(r.status, 2)) << Describe(r);

  // No site anywhere: the verbs that need one say so.
  r = Ctl({"status"});
  EXPECT_TRUE(ExitedWith(r.status, 2)) << Describe(r);
  EXPECT_NE(r.err.find("no site given"), std::string::npos) << r.err;

  r = Ctl({"--broker", "http://127.0.0.1:1883", "--site", "houpu", "status"});
  EXPECT_TRUE(ExitedWith(r.status, 2)) << Describe(r);

  // A bad sanictl config is refused with its errors, like the daemons' configs.
  std::ofstream(path("sanictl.toml")) << "[ctl]\nsite = \"Not An Id\"\n";
  r = Ctl({"status"});
  EXPECT_TRUE(ExitedWith(r.status, 2)) << Describe(r);
  EXPECT_TRUE(r.err.starts_with(path("sanictl.toml") + ":2:")) << r.err;

  r = Ctl({"--help"});
  EXPECT_TRUE(ExitedWith(r.status, 0)) << Describe(r);
  EXPECT_NE(r.out.find("tail"), std::string::npos);
}

// The heat map through sanictl against the real sanifleet: the room's fill level shows in its
// 150 m cell, exports as valid GeoJSON and CSV, and renders as a PNG.
TEST_F(SanictlTest, HeatmapShowExportAndRenderTheFleetsCells) {
  StartGatewayWithOneRoom();
  StartFleet();
  ASSERT_TRUE(capture->WaitFor([](const std::vector<Captured>& m) {
    for (const auto& c : m)
      if (c.topic == "sanigate/v1/houpu/fleet/health/room-07") return true;
    return false;
  }, 15s)) << ReadFile(path("fleet.log"));
  const std::string cell = "wsk52nq";  // geohash 7 of the room at 24.5123N 118.1342E (textbook bisection)
  ASSERT_TRUE(WaitReads("room-07", 2, 10s));
  Result r;
  for (int i = 0; i < 40; ++i) {  // sanifleet may not have read the room's first reading yet
    r = Ctl({"heatmap", "show", "--layer", "bin_fill"});
    if (r.out.find(cell) != std::string::npos) break;
    std::this_thread::sleep_for(250ms);
  }
  EXPECT_TRUE(ExitedWith(r.status, 0)) << Describe(r);
  EXPECT_NE(r.out.find(cell), std::string::npos) << r.out;

  r = Ctl({"heatmap", "export", "--layer", "bin_fill", "--format", "geojson", "--output", path("room.geojson")});
  ASSERT_TRUE(ExitedWith(r.status, 0)) << Describe(r);
  json geo = json::parse(ReadFile(path("room.geojson")), nullptr, false);
  ASSERT_EQ(geo["type"], "FeatureCollection") << ReadFile(path("room.geojson"));
  ASSERT_EQ(geo["features"].size(), 1u);
  EXPECT_EQ(geo["features"][0]["geometry"]["type"], "Polygon");
  int rc = Process::Run({"/usr/bin/python3", SourceDir() + "/tests/schema/validate_geojson.py", path("room.geojson")}, 30s,
                        {.stdout_path = path("geo.out"), .stderr_path = path("geo.err")});
  EXPECT_TRUE(ExitedWith(rc, 0)) << ReadFile(path("geo.out")) << ReadFile(path("geo.err"));

  r = Ctl({"heatmap", "export", "--layer", "bin_fill", "--format", "csv", "--precision", "8"});
  ASSERT_TRUE(ExitedWith(r.status, 0)) << Describe(r);
  auto lines = Lines(r.out);
  ASSERT_EQ(lines.size(), 2u) << r.out;
  EXPECT_EQ(lines[1].rfind(cell, 0), 0u) << r.out;  // the precision-8 cell starts with the 7 one

  r = Ctl({"heatmap", "render", "--layer", "bin_fill", "--png", path("room.png")});
  ASSERT_TRUE(ExitedWith(r.status, 0)) << Describe(r);
  EXPECT_EQ(ReadFile(path("room.png")).substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));

  r = Ctl({"heatmap", "show", "--layer", "potholes"});
  EXPECT_TRUE(ExitedWith(r.status, 2)) << Describe(r);
  r = Ctl({"heatmap", "show", "--layer", "bin_fill", "--site", "elsewhere"});
  EXPECT_TRUE(ExitedWith(r.status, 4)) << Describe(r);
}

// Firmware and rollouts through sanictl against the real sanifleet: a key pair, an image signed
// and uploaded (a tampered one refused), the list, a campaign planned, started, watched, and the
// exit codes of refused operations.
TEST_F(SanictlTest, FirmwareAndRolloutVerbs) {
  StartBroker();
  WriteCtlConfig();
  Capture();
  Result r = Ctl({"firmware", "keygen", "--out", path("operator")});
  ASSERT_TRUE(ExitedWith(r.status, 0)) << Describe(r);
  std::ofstream(path("sanifleet.toml")) << "[fleet]\nid = \"fleet-test\"\nsite = \"houpu\"\ndata_dir = \"" << path("fleet")
                                        << "\"\n\n[mqtt]\nurl = \"" << broker->url() << "\"\nreconnect_min_ms = 100\n\n[firmware]\ntrusted_keys = [\""
                                        << path("operator.pub") << "\"]\n";
  fleet = Process::Start({SANIFLEET_BIN, "--config", path("sanifleet.toml")}, {.stderr_path = path("fleet.log")});
  ASSERT_TRUE(capture->WaitFor([](const std::vector<Captured>& m) {
    for (const auto& c : m)
      if (c.topic == "sanigate/v1/houpu/fleet/status" && c.payload.find("\"online\":true") != std::string::npos) return true;
    return false;
  }, 15s)) << ReadFile(path("fleet.log"));
  {
    std::ofstream img(path("room.img"), std::ios::binary);
    for (int i = 0; i < 300'000; ++i) img.put(static_cast<char>(i * 7));
  }
  r = Ctl({"firmware", "sign", path("room.img"), "--key", path("operator.key"), "--model", "GR-200", "--version", "2.1.0",
           "--target", "modbus"});
  ASSERT_TRUE(ExitedWith(r.status, 0)) << Describe(r);
  r = Ctl({"firmware", "sign", path("room.img"), "--key", path("operator.key"), "--model", "GR-200", "--version", "2.1.0",
           "--target", "lorawan", "--out", path("x.json")});
  EXPECT_TRUE(ExitedWith(r.status, 2)) << Describe(r);
  EXPECT_NE(r.err.find("LoRaWAN FUOTA is not supported"), std::string::npos) << r.err;
  // The image changed after signing: refused before anything is uploaded.
  std::string tampered = ReadFile(path("room.img"));
  tampered[12345] ^= 1;
  std::ofstream(path("tampered.img"), std::ios::binary) << tampered;
  r = Ctl({"firmware", "add", path("tampered.img"), "--manifest", path("room.img.manifest.json")});
  EXPECT_TRUE(ExitedWith(r.status, 1)) << Describe(r);
  EXPECT_NE((r.out + r.err).find("sha256 mismatch"), std::string::npos) << Describe(r);
  r = Ctl({"firmware", "add", path("room.img"), "--manifest", path("room.img.manifest.json")});
  ASSERT_TRUE(ExitedWith(r.status, 0)) << Describe(r) << ReadFile(path("fleet.log"));
  r = Ctl({"--json", "firmware", "list"});
  ASSERT_TRUE(ExitedWith(r.status, 0)) << Describe(r);
  json list = json::parse(r.out, nullptr, false);
  ASSERT_TRUE(list.contains("artifacts")) << r.out;
  ASSERT_EQ(list["artifacts"].size(), 1u) << r.out;
  std::string sha = list["artifacts"][0]["sha256"];
  EXPECT_EQ(list["artifacts"][0]["version"], "2.1.0");

  r = Ctl({"rollout", "create", "--id", "rooms-210", "--artifact", sha.substr(0, 12), "--canary", "0", "--waves", "100"});
  ASSERT_TRUE(ExitedWith(r.status, 0)) << Describe(r);
  r = Ctl({"rollout", "start", "rooms-210"});
  EXPECT_TRUE(ExitedWith(r.status, 0)) << Describe(r);
  r = Ctl({"rollout", "start", "rooms-210"});
  EXPECT_TRUE(ExitedWith(r.status, 1)) << Describe(r);  // already started (and completed: nothing to update)
  r = Ctl({"--json", "rollout", "status", "rooms-210"});
  ASSERT_TRUE(ExitedWith(r.status, 0)) << Describe(r);
  EXPECT_EQ(json::parse(r.out, nullptr, false)["state"], "completed") << r.out;
  r = Ctl({"rollout", "status", "rooms-210", "--watch", "--interval", "1"}, 20s);
  EXPECT_TRUE(ExitedWith(r.status, 0)) << Describe(r);  // ends by itself: the campaign is done
  r = Ctl({"rollout", "list"});
  EXPECT_TRUE(ExitedWith(r.status, 0)) << Describe(r);
  EXPECT_NE(r.out.find("rooms-210"), std::string::npos) << r.out;
  r = Ctl({"rollout", "status", "no-such-rollout"});
  EXPECT_TRUE(ExitedWith(r.status, 4)) << Describe(r);
  r = Ctl({"rollout", "create", "--id", "x", "--artifact", "ffffffffffff"});
  EXPECT_TRUE(ExitedWith(r.status, 4)) << Describe(r);
}

}  // namespace
}  // namespace sanigate::test
