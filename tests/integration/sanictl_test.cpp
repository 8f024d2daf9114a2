// sanictl end to end: the real binary against a real Mosquitto, the real sanigate daemon with a
// simulated Modbus garbage room, and (in some tests) the real sanifleet. Checks what a user and a
// script see: tables, --json documents, messages on stderr and the exit codes of CONTRACT §4
// (0 ok, 1 failed, 2 bad usage or input, 3 cannot reach the broker or daemon, 4 not found) and
// sanictl's 5 (the broker refused the user), some under the shipped ACL and its users.
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
  std::string ctl_config = "sanictl.toml";  // the config file Ctl() passes
  bool acl = false;                          // the broker runs the shipped ACL with its users

  // sanictl's own config: the test broker and the site, as an operator would set them up; under
  // the shipped ACL as the operator user unless another one is named.
  void WriteCtlConfig(const std::string& user = "", const std::string& password = "",
                      const std::string& file = "sanictl.toml") {
    std::string u = user.empty() && acl ? "admin" : user, pw = user.empty() && acl ? "admin-secret" : password;
    std::ofstream(path(file)) << "[mqtt]\nurl = \"" << broker->url() << "\"\nreconnect_min_ms = 100\n"
                              << (u.empty() ? "" : "username = \"" + u + "\"\npassword = \"" + pw + "\"\n")
                              << "\n[ctl]\nsite = \"houpu\"\n";
  }

  // The shipped ACL (packaging/sanigate.acl) and its users: each daemon under its own.
  void StartAclBroker() {
    acl = true;
    MosquittoBroker::Options o;
    o.require_password = true;
    o.username = "gateway";
    o.password = "gw-secret";
    o.more_users = {{"fleet", "fleet-secret"}, {"admin", "admin-secret"}, {"upstream", "up-secret"}};
    o.acl_file = SourceDir() + "/packaging/sanigate.acl";
    StartBroker(o);
  }

  void Capture() {
    capture = std::make_unique<MqttCapture>(broker->url(), "test-capture");
    if (acl) capture->SetCredentials("admin", "admin-secret");
    capture->Connect();
    capture->Subscribe("sanigate/v1/#", 1);
  }

  // Runs sanictl with --config (so a machine's /etc/sanigate/sanictl.toml never leaks in).
  Result Ctl(const std::vector<std::string>& args, std::chrono::seconds limit = 30s) {
    runs++;
    std::string out = path("ctl." + std::to_string(runs) + ".out"), err = path("ctl." + std::to_string(runs) + ".err");
    std::vector<std::string> argv = {SANICTL_BIN, "--config", path(ctl_config)};
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
  // `with_acl`: the shipped ACL and users; `sim_extra`: more simulator flags; `room_extra`: more
  // of the room's config (after its points and commands).
  void StartGatewayWithOneRoom(int interval_ms = 200, bool with_acl = false, std::vector<std::string> sim_extra = {},
                               const std::string& room_extra = "") {
    if (with_acl) StartAclBroker();
    else StartBroker();
    WriteCtlConfig();
    std::vector<std::string> sim_args = {"--set", "coil:0=1", "--set", "hr:0=815"};
    sim_args.insert(sim_args.end(), sim_extra.begin(), sim_extra.end());
    StartSim(1, sim_args);
    Capture();
    WriteConfig(BaseConfig(acl ? "username = \"gateway\"\npassword = \"gw-secret\"\n" : "") + "[modbus]\n" +
                RoomConfig("room-07", 0, interval_ms) + R"(
[[modbus.devices.commands]]
name = "uv_lamp"
table = "coil"
address = 0
verify = true
)" + room_extra);
    StartGateway();
    WaitGatewayOnline();
  }

  void StartFleet() {
    std::ofstream(path("sanifleet.toml")) << "[fleet]\nid = \"fleet-test\"\nsite = \"houpu\"\ndata_dir = \""
                                          << path("fleet") << "\"\nregistry_flush_ms = 100\n\n[mqtt]\nurl = \""
                                          << broker->url() << "\"\nreconnect_min_ms = 100\n"
                                          << (acl ? "username = \"fleet\"\npassword = \"fleet-secret\"\n" : "");
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

  // A value the command does not take: bad input, exit 2 with the gateway's error (as every
  // verb's bad value).
  r = Ctl({"cmd", "room-07", "uv_lamp", "dim"});
  EXPECT_TRUE(ExitedWith(r.status, 2)) << Describe(r);
  EXPECT_NE(r.err.find("\"dim\" is not a value of uv_lamp"), std::string::npos) << r.err;

  // A command the device does not have: not found, exit 4, like an unknown device.
  r = Ctl({"cmd", "room-07", "frobnicate", "on"});
  EXPECT_TRUE(ExitedWith(r.status, 4)) << Describe(r);
  EXPECT_NE(r.err.find("unknown command frobnicate for room-07"), std::string::npos) << r.err;

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
  // The same bad value is the same usage error in health (it used to list nothing, exit 0).
  r = Ctl({"health", "--state", "sideways"});
  EXPECT_TRUE(ExitedWith(r.status, 2)) << Describe(r);
  EXPECT_EQ(r.err, "sanictl: --state \"sideways\" is not ok, degraded, critical, offline or unknown\n");
  r = Ctl({"health", "--state", "degraded"});
  EXPECT_TRUE(ExitedWith(r.status, 0)) << Describe(r);

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

  // A bad value is usage (2) in every verb, found before anything is sent: no broker listens
  // here, so a check left to the daemons would end in 3.
  std::string nobody = "tcp://127.0.0.1:" + std::to_string(FreeTcpPort());
  for (const std::vector<std::string>& verb : std::vector<std::vector<std::string>>{
           {"health", "--state", "bogus"}, {"devices", "list", "--state", "bogus"}, {"devices", "show", "Not An Id"},
           {"cmd", "Not An Id", "uv_lamp", "on"}, {"rollout", "status", "Not/An/Id"}, {"rollout", "pause", "UPPER"},
           {"downlinks", "Not An Id"}, {"tail", "Room*"}, {"heatmap", "show", "--layer", "potholes"},
           {"heatmap", "show", "--layer", "bin_fill", "--site", "Not/A/Site"}, {"health", "--kind", "Garbage Room"},
           {"devices", "list", "--gateway", "gw 1"}}) {
    std::vector<std::string> args = {"--broker", nobody, "--site", "houpu", "--timeout", "1000"};
    args.insert(args.end(), verb.begin(), verb.end());
    r = Ctl(args);
    EXPECT_TRUE(ExitedWith(r.status, 2)) << verb[0] << " " << verb[1] << ": " << Describe(r);
    EXPECT_EQ(r.err.find("cannot reach"), std::string::npos) << Describe(r);
  }

  // A bad sanictl config is refused with its errors, like the daemons' configs.
  std::ofstream(path("sanictl.toml")) << "[ctl]\nsite = \"Not An Id\"\n";
  r = Ctl({"status"});
  EXPECT_TRUE(ExitedWith(r.status, 2)) << Describe(r);
  EXPECT_TRUE(r.err.starts_with(path("sanictl.toml") + ":2:")) << r.err;

  r = Ctl({"--help"});
  EXPECT_TRUE(ExitedWith(r.status, 0)) << Describe(r);
  EXPECT_NE(r.out.find("tail"), std::string::npos);
}

// Partial access under the shipped ACL (issue 16 item 9): what the broker refuses is said as a
// refusal, with its own exit code 5, at once, never as "sanifleet did not answer".
TEST_F(SanictlTest, UnderTheShippedAclARefusalIsToldAsSuchWithExitFive) {
  StartGatewayWithOneRoom(200, /*with_acl=*/true);
  StartFleet();
  ASSERT_TRUE(capture->WaitFor([](const std::vector<Captured>& m) {
    for (const auto& c : m)
      if (c.topic == "sanigate/v1/houpu/fleet/health/room-07") return true;
    return false;
  }, 15s)) << ReadFile(path("fleet.log"));

  // The operator user reaches everything.
  Result r = Ctl({"devices", "list"});
  EXPECT_TRUE(ExitedWith(r.status, 0)) << Describe(r);
  EXPECT_NE(r.out.find("room-07"), std::string::npos) << Describe(r);
  r = Ctl({"cmd", "room-07", "uv_lamp", "on"});
  EXPECT_TRUE(ExitedWith(r.status, 0)) << Describe(r);

  // An upstream platform's user may not publish admin requests or commands: the broker says so
  // in its PUBACK, and sanictl says it at once.
  WriteCtlConfig("upstream", "up-secret", "upstream.toml");
  ctl_config = "upstream.toml";
  for (const std::vector<std::string>& verb : std::vector<std::vector<std::string>>{
           {"devices", "list"}, {"health"}, {"heatmap", "show", "--layer", "bin_fill"}, {"firmware", "list"}, {"rollout", "list"}}) {
    auto started = std::chrono::steady_clock::now();
    r = Ctl(verb);
    EXPECT_TRUE(ExitedWith(r.status, 5)) << verb[0] << ": " << Describe(r);
    EXPECT_NE(r.err.find("the broker refused the request on sanigate/v1/houpu/fleet/admin/"), std::string::npos) << Describe(r);
    EXPECT_NE(r.err.find(" for user upstream: not authorized (check its ACL)"), std::string::npos) << Describe(r);
    EXPECT_EQ(r.err.find("did not answer"), std::string::npos) << Describe(r);
    EXPECT_LT(std::chrono::steady_clock::now() - started, 2500ms) << verb[0];
  }
  r = Ctl({"cmd", "room-07", "uv_lamp", "on"});
  EXPECT_TRUE(ExitedWith(r.status, 5)) << Describe(r);
  EXPECT_NE(r.err.find("the broker refused the request on sanigate/v1/houpu/devices/room-07/cmd/uv_lamp for user upstream: "
                       "not authorized (check its ACL)"),
            std::string::npos) << Describe(r);
  // status still shows the gateways the user may read; sanifleet's part is refused.
  r = Ctl({"status"});
  EXPECT_TRUE(ExitedWith(r.status, 5)) << Describe(r);
  EXPECT_NE(r.out.find("gw-test"), std::string::npos) << Describe(r);
  EXPECT_NE(r.err.find("not authorized (check its ACL)"), std::string::npos) << Describe(r);

  // sanifleet's own user may publish on fleet/# but cannot read sanictl's reply topic: the answer
  // could never arrive, and sanictl knows it (its own probe did not come back either).
  WriteCtlConfig("fleet", "fleet-secret", "fleetuser.toml");
  ctl_config = "fleetuser.toml";
  r = Ctl({"--timeout", "1500", "devices", "list"});
  EXPECT_TRUE(ExitedWith(r.status, 5)) << Describe(r);
  EXPECT_NE(r.err.find("for user fleet: not authorized to read it (check its ACL)"), std::string::npos) << Describe(r);

  // A wrong password says so (Mosquitto answers it with CONNACK "not authorized").
  WriteCtlConfig("admin", "wrong-password", "wrongpw.toml");
  ctl_config = "wrongpw.toml";
  r = Ctl({"devices", "list"});
  EXPECT_TRUE(ExitedWith(r.status, 5)) << Describe(r);
  EXPECT_NE(r.err.find("the broker at " + broker->url() + " refused the connection of user admin: not authorized"),
            std::string::npos) << Describe(r);
  EXPECT_NE(r.err.find("password"), std::string::npos) << Describe(r);
  // ... as does a missing one.
  WriteCtlConfig("", "", "anonymous.toml");
  std::ofstream(path("anonymous.toml")) << "[mqtt]\nurl = \"" << broker->url() << "\"\n\n[ctl]\nsite = \"houpu\"\n";
  ctl_config = "anonymous.toml";
  r = Ctl({"tail", "--count", "1"});
  EXPECT_TRUE(ExitedWith(r.status, 5)) << Describe(r);
  EXPECT_NE(r.err.find("refused the connection without a user name: not authorized"), std::string::npos) << Describe(r);
}

// sanifleet stopped: its retained fleet/status says so, and every verb that needs it says that at
// once (exit 3) instead of waiting for the timeout; nothing is sent for it to find later.
TEST_F(SanictlTest, AStoppedSanifleetIsToldAtOnceFromItsRetainedStatus) {
  StartGatewayWithOneRoom(200, /*with_acl=*/true);
  StartFleet();
  Result r = Ctl({"health"});
  ASSERT_TRUE(ExitedWith(r.status, 0)) << Describe(r);
  ASSERT_TRUE(ExitedWith(fleet.Stop(10s), 0)) << ReadFile(path("fleet.log"));
  ASSERT_TRUE(capture->WaitFor([](const std::vector<Captured>& m) {
    for (const auto& c : m)
      if (c.topic == "sanigate/v1/houpu/fleet/status" && c.payload.find("\"online\":false") != std::string::npos) return true;
    return false;
  }, 10s));
  capture->Clear();
  for (const std::vector<std::string>& verb : std::vector<std::vector<std::string>>{
           {"devices", "list"}, {"devices", "show", "room-07"}, {"health"}, {"heatmap", "show", "--layer", "bin_fill"},
           {"firmware", "list"}, {"rollout", "list"}, {"rollout", "start", "some-campaign"}}) {
    auto started = std::chrono::steady_clock::now();
    r = Ctl(verb);  // the default timeout: 3000 ms
    EXPECT_TRUE(ExitedWith(r.status, 3)) << verb[0] << ": " << Describe(r);
    EXPECT_TRUE(std::regex_match(r.err, std::regex("sanifleet fleet-test is offline since \\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d:\\d\\d "
                                                   "\\(\\d+s ago\\), says sanigate/v1/houpu/fleet/status\n")))
        << Describe(r);
    EXPECT_LT(std::chrono::steady_clock::now() - started, 2000ms) << verb[0];
  }
  // No request was left for sanifleet's persistent session to run when it comes back.
  for (const auto& m : capture->Messages()) EXPECT_EQ(m.topic.find("/fleet/admin/"), std::string::npos) << m.topic;
  // status: the gateways as usual, then sanifleet's state.
  r = Ctl({"status"});
  EXPECT_TRUE(ExitedWith(r.status, 3)) << Describe(r);
  EXPECT_NE(r.out.find("gw-test"), std::string::npos) << Describe(r);
  EXPECT_NE(r.err.find("sanifleet fleet-test is offline since "), std::string::npos) << Describe(r);

  // Back again: answers as before.
  StartFleet();
  r = Ctl({"devices", "list"});
  EXPECT_TRUE(ExitedWith(r.status, 0)) << Describe(r);
}

// Health reasons as an operator reads them (issue 16 item 9): the silence of a device that stopped
// grows from one look to the next, and an alarm it raised before it went silent is marked stale.
TEST_F(SanictlTest, HealthShowsTheGrowingSilenceAndStaleAlarmsOfAnOfflineDevice) {
  StartGatewayWithOneRoom(200, false, {}, R"(
[[modbus.devices.commands]]
name = "set_nh3"
table = "holding"
type = "f32"
address = 2
[[modbus.devices.events]]
event = "odour"
metric = "nh3_ppm"
active_at = 10.0
clear_at = 5.0
)");
  StartFleet();
  // The smell rises once sanifleet listens (events are not retained).
  Result set = Ctl({"cmd", "room-07", "set_nh3", "12.4"});
  ASSERT_TRUE(ExitedWith(set.status, 0)) << Describe(set);
  auto room_health = [](const std::vector<Captured>& m) {
    json last;
    for (const auto& c : m)
      if (c.topic == "sanigate/v1/houpu/fleet/health/room-07") last = json::parse(c.payload, nullptr, false);
    return last;
  };
  ASSERT_TRUE(capture->WaitFor([&](const std::vector<Captured>& m) {
    json h = room_health(m);
    return h.is_object() && h["state"] == "degraded";
  }, 15s)) << ReadFile(path("fleet.log"));
  json h = room_health(capture->Messages());
  ASSERT_EQ(h["reasons"].size(), 1u) << h.dump();
  EXPECT_EQ(h["reasons"][0]["code"], "alarm") << h.dump();
  EXPECT_EQ(h["reasons"][0]["detail"].get<std::string>().rfind("odour", 0), 0u) << h.dump();

  // sanifleet learns the room's interval from a few seconds of traffic (gaps of 1 s and more).
  bool learned = false;
  for (int i = 0; i < 40 && !learned; ++i) {
    Result d = Ctl({"--json", "devices", "show", "room-07"});
    json doc = json::parse(d.out, nullptr, false);
    learned = doc.is_object() && doc["health"].is_object() && doc["health"].value("expected_interval_ms", 0) > 0;
    if (!learned) std::this_thread::sleep_for(250ms);
  }
  ASSERT_TRUE(learned);
  // The room's controller goes away: the gateway and then sanifleet's silence timer say offline.
  sim.Stop(5s);
  ASSERT_TRUE(capture->WaitFor([&](const std::vector<Captured>& m) {
    json v = room_health(m);
    if (!v.is_object() || v["state"] != "offline") return false;
    for (const auto& r : v["reasons"])
      if (r["code"] == "silent") return true;
    return false;
  }, 15s)) << ReadFile(path("fleet.log"));
  h = room_health(capture->Messages());
  std::string alarm;
  for (const auto& r : h["reasons"])
    if (r["code"] == "alarm") alarm = r["detail"];
  EXPECT_EQ(alarm.rfind("odour", 0), 0u) << h.dump();
  EXPECT_NE(alarm.find("(stale: device offline)"), std::string::npos) << h.dump();

  auto silence_s = [&](const std::string& text) {
    std::smatch m;
    return std::regex_search(text, m, std::regex("no traffic for (\\d+)s")) ? std::stoi(m[1]) : -1;
  };
  Result first = Ctl({"health"});
  ASSERT_TRUE(ExitedWith(first.status, 0)) << Describe(first);
  std::this_thread::sleep_for(2200ms);
  Result second = Ctl({"health"});
  ASSERT_TRUE(ExitedWith(second.status, 0)) << Describe(second);
  int before = silence_s(first.out), after = silence_s(second.out);
  ASSERT_GE(before, 0) << first.out;
  EXPECT_GE(after, before + 2) << first.out << second.out;
  EXPECT_NE(second.out.find("(stale: device offline)"), std::string::npos) << second.out;
  Result show = Ctl({"devices", "show", "room-07"});
  ASSERT_TRUE(ExitedWith(show.status, 0)) << Describe(show);
  EXPECT_GE(silence_s(show.out), after) << show.out;
  EXPECT_NE(show.out.find("(stale: device offline)"), std::string::npos) << show.out;
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
