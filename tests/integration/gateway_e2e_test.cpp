// End to end: a real Modbus TCP simulator -> the real sanigate daemon -> a real Mosquitto ->
// a subscriber. Broker outages, kill -9, dead devices, TLS, credentials and signals.
#include <sqlite3.h>

#include <algorithm>
#include <cstdlib>
#include <set>

#include "gateway_fixture.h"

namespace sanigate::test {
namespace {

// Every counter value between the first and the last seen must be there, in increasing order;
// `allowed_gaps` readings may be missing (taken by a process killed before it could store them,
// or polls that timed out: see FailedPolls).
void ExpectContiguous(const std::vector<int64_t>& reads, int64_t allowed_gaps) {
  ASSERT_FALSE(reads.empty());
  int gaps = 0;
  for (size_t i = 1; i < reads.size(); ++i) {
    ASSERT_GT(reads[i], reads[i - 1]) << "out of order at position " << i;
    gaps += static_cast<int>(reads[i] - reads[i - 1] - 1);
  }
  EXPECT_LE(gaps, allowed_gaps) << "readings missing between " << reads.front() << " and "
                                << reads.back();
}

// Ids of the records still waiting in the outbox file (read while the gateway is dead).
std::vector<std::string> PendingIds(const std::string& db_path) {
  std::vector<std::string> ids;
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(db_path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) return ids;
  sqlite3_stmt* st = nullptr;
  if (sqlite3_prepare_v2(db, "SELECT payload FROM outbox", -1, &st, nullptr) == SQLITE_OK) {
    while (sqlite3_step(st) == SQLITE_ROW) {
      std::string payload(static_cast<const char*>(sqlite3_column_blob(st, 0)),
                          static_cast<size_t>(sqlite3_column_bytes(st, 0)));
      auto j = json::parse(payload, nullptr, false);
      if (!j.is_discarded() && j.contains("id")) ids.push_back(j["id"]);
    }
  }
  sqlite3_finalize(st);
  sqlite3_close(db);
  return ids;
}

std::set<std::string> AllIds(const std::vector<Captured>& msgs) {
  std::set<std::string> ids;
  for (const auto& m : msgs) {
    auto j = json::parse(m.payload, nullptr, false);
    if (!j.is_discarded() && j.is_object() && j.contains("id")) ids.insert(j["id"].get<std::string>());
  }
  return ids;
}

TEST_F(GatewayTest, ReadingsArriveWithTheDeviceValuesAndUnitsAndMatchTheSchemas) {
  StartBroker();
  StartSim(1, {"--set", "hr:0=815", "--set", "hr:1=-55", "--set-f32", "hr:2=3.2", "--set",
               "ir:0=64", "--set", "di:0=1", "--counter", "hr:4"});
  Capture();
  WriteConfig(BaseConfig() + "[modbus]\n" +
              RoomConfig("room-07", 0, 200,
                         "overflow = { metric = \"fill_level_pct\", active_at = 80.0, clear_below = 70.0 }\n"));
  StartGateway();
  ASSERT_TRUE(WaitReads("room-07", 3, 10s)) << "no telemetry arrived";
  ASSERT_TRUE(capture->WaitForCount("sanigate/v1/houpu/gateway/gw-test/status", 1, 10s));

  auto telemetry = Unique(capture->Messages(), "/devices/room-07/telemetry");
  const json& t = telemetry.front().payload;
  EXPECT_EQ(telemetry.front().topic, "sanigate/v1/houpu/devices/room-07/telemetry");
  EXPECT_EQ(t["device"], "room-07");
  EXPECT_EQ(t["kind"], "garbage_room");
  EXPECT_EQ(t["source"]["protocol"], "modbus");
  EXPECT_EQ(t["source"]["gateway"], "gw-test");
  EXPECT_DOUBLE_EQ(t["metrics"]["fill_level_pct"].get<double>(), 81.5);
  EXPECT_DOUBLE_EQ(t["metrics"]["temperature_c"].get<double>(), -5.5);
  EXPECT_DOUBLE_EQ(t["metrics"]["nh3_ppm"].get<double>(), 3.2);
  EXPECT_EQ(t["metrics"]["water_level_pct"], 64);
  EXPECT_EQ(t["metrics"]["uv_lamp_on"], true);
  EXPECT_EQ(t["metrics"]["door_open"], true);
  EXPECT_DOUBLE_EQ(t["location"]["lat"].get<double>(), 24.5123);
  EXPECT_TRUE(t["id"].get<std::string>().starts_with("gw-test:"));
  int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(
                    std::chrono::system_clock::now().time_since_epoch()).count();
  EXPECT_NEAR(static_cast<double>(t["ts"].get<int64_t>()), static_cast<double>(now), 60000.0);

  // Fill 81.5 >= 80: one overflow event, active; the device's retained status says online.
  auto events = Unique(capture->Messages(), "/devices/room-07/event");
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].payload["event"], "overflow");
  EXPECT_EQ(events[0].payload["state"], "active");
  auto status = Unique(capture->Messages(), "/devices/room-07/status");
  ASSERT_FALSE(status.empty());
  EXPECT_EQ(status[0].payload["online"], true);

  // Every payload of this run against the JSON Schemas, with an independent validator.
  ExpectPayloadsMatchSchemas();
}

TEST_F(GatewayTest, BrokerOutageLosesNoReadingAndKeepsTheirOrder) {
  StartBroker({.persistence = true});
  StartSim(1, {"--counter", "hr:4"});
  Capture(/*persistent=*/true);
  WriteConfig(BaseConfig() + "[modbus]\n" + RoomConfig("room-07", 0, 100));
  StartGateway();
  ASSERT_TRUE(WaitReads("room-07", 5, 10s));

  int64_t last_before_outage = Reads("room-07").back();
  broker->Stop();
  // Polling goes on while the broker is down (~25 readings at 100 ms).
  auto down_at = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() - down_at < 2500ms) std::this_thread::sleep_for(100ms);
  broker->Restart();
  ASSERT_TRUE(capture->WaitConnected(15s)) << capture->last_error();

  // Readings taken during the outage and after it arrive, none missing, in order.
  bool caught_up = capture->WaitFor(
      [&](const std::vector<Captured>& msgs) {
        for (const auto& p : Unique(msgs, "/devices/room-07/telemetry"))
          if (p.payload["metrics"]["reads"].get<int64_t>() >= last_before_outage + 40) return true;
        return false;
      },
      20s);
  ASSERT_TRUE(caught_up) << "latest read " << Reads("room-07").back();
  ExpectContiguous(Reads("room-07"), FailedPolls("room-07"));
}

TEST_F(GatewayTest, WithDefaultBackoffARestartedBrokerIsFoundWithinSeconds) {
  // The shipped reconnect settings (no reconnect_* keys): after a 15 s outage the gateway must
  // not sit out a long backoff once the broker is back.
  StartBroker({.persistence = true});
  StartSim(1, {"--counter", "hr:4"});
  Capture(/*persistent=*/true);
  std::string config = BaseConfig();
  const std::string tuned = "reconnect_min_ms = 100\nreconnect_max_ms = 1000\n";
  ASSERT_NE(config.find(tuned), std::string::npos);
  config.erase(config.find(tuned), tuned.size());
  WriteConfig(config + "[modbus]\n" + RoomConfig("room-07", 0, 200));
  StartGateway();
  ASSERT_TRUE(WaitReads("room-07", 3, 10s));
  broker->Stop();
  std::this_thread::sleep_for(15s);  // the outage
  broker->Restart();
  auto back = std::chrono::steady_clock::now();
  ASSERT_TRUE(capture->WaitConnected(15s)) << capture->last_error();
  size_t before = Reads("room-07").size();
  ASSERT_TRUE(WaitReads("room-07", before + 1, 20s));
  double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - back).count();
  // reconnect_max_ms defaults to 5000: at most one capped backoff after the broker is back.
  EXPECT_LT(waited, 8.0) << "the gateway took " << waited << " s to find the broker again";
  ExpectContiguous(Reads("room-07"), FailedPolls("room-07"));
}

TEST_F(GatewayTest, StartsWithoutABrokerAndDeliversEverythingOnceItAppears) {
  StartBroker({.persistence = true});
  StartSim(1, {"--counter", "hr:4"});
  Capture(/*persistent=*/true);  // the subscription survives the broker's restart
  broker->Stop();
  WriteConfig(BaseConfig() + "[modbus]\n" + RoomConfig("room-07", 0, 100));
  StartGateway();
  auto started = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() - started < 2s) std::this_thread::sleep_for(100ms);
  ASSERT_TRUE(gateway.Running()) << "a missing broker must not stop the gateway";
  broker->Restart();
  ASSERT_TRUE(capture->WaitConnected(15s)) << capture->last_error();
  // The first reading (counter 1) was taken while the broker was down; all of them arrive.
  ASSERT_TRUE(WaitReads("room-07", 30, 20s)) << Reads("room-07").size();
  auto reads = Reads("room-07");
  EXPECT_EQ(reads.front(), 1);
  ExpectContiguous(reads, FailedPolls("room-07"));
}

TEST_F(GatewayTest, KillNineInTheMiddleOfAStreamLosesNothingStored) {
  StartBroker();
  StartSim(1, {"--counter", "hr:4"});
  Capture();
  WriteConfig(BaseConfig() + "[modbus]\n" + RoomConfig("room-07", 0, 50));
  std::set<std::string> must_arrive;
  const int kKills = 3;
  for (int round = 0; round < kKills; ++round) {
    StartGateway();
    size_t seen = Reads("room-07").size();
    ASSERT_TRUE(WaitReads("room-07", seen + 10 + static_cast<size_t>(round) * 3, 15s));
    gateway.Kill();
    for (const auto& id : PendingIds(path("data/outbox.db"))) must_arrive.insert(id);
  }
  StartGateway();
  size_t seen = Reads("room-07").size();
  ASSERT_TRUE(WaitReads("room-07", seen + 10, 15s));
  // Every record that was stored when the gateway died was published after the restart.
  bool all = capture->WaitFor(
      [&](const std::vector<Captured>& msgs) {
        auto ids = AllIds(msgs);
        return std::all_of(must_arrive.begin(), must_arrive.end(),
                           [&](const std::string& id) { return ids.count(id) > 0; });
      },
      15s);
  EXPECT_TRUE(all) << must_arrive.size() << " stored records expected";
  // At most the one reading in progress at each kill may be missing.
  ExpectContiguous(Reads("room-07"), kKills + FailedPolls("room-07"));
}

TEST_F(GatewayTest, ADeadDeviceGoesOfflineWithoutDelayingOthersAndRecovers) {
  StartBroker();
  StartSim(1, {"--counter", "hr:4"});
  Process healthy_sim = Process::Start({MODBUS_SIM_BIN, "--port-file", path("sim2.ports"),
                                        "--counter", "hr:4"},
                                       {.stderr_path = path("sim2.err")});
  uint16_t healthy_port = ReadPortFile(path("sim2.ports"), 1, 10s).at(0);
  Capture();
  std::string healthy = RoomConfig("room-08", 0, 200);
  healthy.replace(healthy.find(std::to_string(sim_ports[0])), std::to_string(sim_ports[0]).size(),
                  std::to_string(healthy_port));
  WriteConfig(BaseConfig() + "[modbus]\n" + RoomConfig("room-07", 0, 200) + healthy);
  StartGateway();
  ASSERT_TRUE(WaitReads("room-07", 3, 10s));
  ASSERT_TRUE(WaitReads("room-08", 3, 10s));

  sim.Signal(SIGUSR1);  // room-07's controller stops answering
  auto muted_at = std::chrono::steady_clock::now();
  ASSERT_TRUE(capture->WaitFor(
      [](const std::vector<Captured>& msgs) {
        for (const auto& p : Unique(msgs, "/devices/room-07/event"))
          if (p.payload["event"] == "offline" && p.payload["state"] == "active") return true;
        return false;
      },
      10s));
  auto offline_after = std::chrono::steady_clock::now() - muted_at;
  EXPECT_LT(offline_after, 3s) << "2 failed polls at 200 ms with a 190 ms timeout";
  // The event has a higher priority than the status, so it may arrive first: wait for both.
  auto last_status_is = [](bool online) {
    return [online](const std::vector<Captured>& msgs) {
      auto st = Unique(msgs, "/devices/room-07/status");
      return !st.empty() && st.back().payload["online"] == online;
    };
  };
  ASSERT_TRUE(capture->WaitFor(last_status_is(false), 5s));
  auto status = Unique(capture->Messages(), "/devices/room-07/status");
  EXPECT_EQ(status.back().payload["online"], false);
  EXPECT_TRUE(status.back().payload["last_seen"].is_number());

  // The healthy device keeps its pace while the other times out: ~5 readings per second.
  size_t before = Reads("room-08").size();
  std::this_thread::sleep_for(2s);  // measuring a rate over a fixed window, not synchronizing
  size_t during = Reads("room-08").size() - before;
  EXPECT_GE(during, 8u) << "healthy device slowed down by the dead one";

  // The gateway status counts the timeouts per device (refreshed every 5 s in this config).
  EXPECT_TRUE(capture->WaitFor(
      [](const std::vector<Captured>& msgs) {
        for (auto it = msgs.rbegin(); it != msgs.rend(); ++it) {
          if (it->topic != "sanigate/v1/houpu/gateway/gw-test/status") continue;
          auto j = json::parse(it->payload, nullptr, false);
          auto dev = j["adapters"]["modbus"]["per_device"]["room-07"];
          return dev.is_object() && dev["timeouts"].get<int>() >= 2 && dev["online"] == false &&
                 j["adapters"]["modbus"]["per_device"]["room-08"]["timeouts"] == 0;
        }
        return false;
      },
      8s));

  sim.Signal(SIGUSR2);  // answers again
  ASSERT_TRUE(capture->WaitFor(
      [](const std::vector<Captured>& msgs) {
        for (const auto& p : Unique(msgs, "/devices/room-07/event"))
          if (p.payload["event"] == "offline" && p.payload["state"] == "cleared") return true;
        return false;
      },
      15s));
  EXPECT_TRUE(capture->WaitFor(last_status_is(true), 5s));
  size_t after = Reads("room-07").size();
  EXPECT_TRUE(WaitReads("room-07", after + 3, 5s));
}

TEST_F(GatewayTest, PublishesOverTlsWithATestCertificateAndRefusesAnUnknownCa) {
  StartBroker({.tls = true});
  StartSim(1, {"--counter", "hr:4"});
  Capture();
  WriteConfig(BaseConfig("[mqtt.tls]\nca_file = \"" + broker->ca_file() + "\"\n", broker->tls_url()) +
              "[modbus]\n" + RoomConfig("room-07", 0, 200));
  StartGateway();
  EXPECT_TRUE(WaitReads("room-07", 3, 15s)) << "nothing arrived over TLS";
  gateway.Stop(5s);
  capture->Clear();

  // Same broker, a CA that did not sign its certificate: the gateway must not connect.
  WriteConfig(BaseConfig("[mqtt.tls]\nca_file = \"" + broker->wrong_ca_file() + "\"\n",
                         broker->tls_url()) +
              "[modbus]\n" + RoomConfig("room-07", 0, 200));
  StartGateway();
  ASSERT_TRUE(gateway.Running());
  bool arrived = WaitReads("room-07", 1, 3s);
  EXPECT_FALSE(arrived) << "published through a broker whose certificate it cannot verify";
  EXPECT_NE(GatewayLog().find("failed"), std::string::npos);
}

TEST_F(GatewayTest, UsesUsernameAndPasswordFromAPrivateFile) {
  StartBroker({.require_password = true, .username = "gateway", .password = "s3cret-pw"});
  StartSim(1, {"--counter", "hr:4"});
  capture = std::make_unique<MqttCapture>(broker->url(), "test-capture", true);
  capture->SetCredentials("gateway", "s3cret-pw");
  capture->Connect();
  capture->Subscribe("sanigate/v1/#", 1);
  std::ofstream(path("mqtt.password")) << "s3cret-pw\n";
  ASSERT_EQ(::chmod(path("mqtt.password").c_str(), 0600), 0);
  WriteConfig(BaseConfig("username = \"gateway\"\npassword_file = \"" + path("mqtt.password") + "\"\n") +
              "[modbus]\n" + RoomConfig("room-07", 0, 200));
  StartGateway();
  EXPECT_TRUE(WaitReads("room-07", 2, 10s));
  gateway.Stop(5s);
  EXPECT_EQ(GatewayLog().find("s3cret-pw"), std::string::npos) << "the password was logged";
}

TEST_F(GatewayTest, SighupAppliesAGoodConfigAndRefusesABadOne) {
  StartBroker();
  StartSim(2, {"--counter", "hr:4"});
  Capture();
  WriteConfig(BaseConfig() + "[modbus]\n" + RoomConfig("room-07", 0, 200));
  StartGateway();
  ASSERT_TRUE(WaitReads("room-07", 2, 10s));

  WriteConfig(BaseConfig() + "[modbus]\n" + RoomConfig("room-07", 0, 200) + "bogus_key = 1\n");
  gateway.Signal(SIGHUP);
  size_t before = Reads("room-07").size();
  EXPECT_TRUE(WaitReads("room-07", before + 5, 10s)) << "a bad config stopped the running one";
  EXPECT_TRUE(gateway.Running());
  EXPECT_NE(GatewayLog().find("reload refused"), std::string::npos);
  EXPECT_NE(GatewayLog().find("bogus_key: unknown key"), std::string::npos);

  WriteConfig(BaseConfig() + "[modbus]\n" + RoomConfig("room-07", 0, 200) + RoomConfig("room-09", 1, 200));
  gateway.Signal(SIGHUP);
  EXPECT_TRUE(WaitReads("room-09", 2, 10s)) << "the device added by the reload never reported";
}

TEST_F(GatewayTest, SigtermFlushesStopsWithinSecondsAndLeavesAnOfflineStatus) {
  StartBroker();
  StartSim(1, {"--counter", "hr:4"});
  Capture();
  WriteConfig(BaseConfig() + "[modbus]\n" + RoomConfig("room-07", 0, 100));
  StartGateway();
  ASSERT_TRUE(WaitReads("room-07", 3, 10s));
  auto t0 = std::chrono::steady_clock::now();
  gateway.Signal(SIGTERM);
  auto st = gateway.Wait(8s);
  ASSERT_TRUE(st.has_value()) << "still running 8 s after SIGTERM";
  EXPECT_TRUE(ExitedWith(*st, 0)) << DescribeWaitStatus(*st);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
  ASSERT_TRUE(capture->WaitFor(
      [](const std::vector<Captured>& msgs) {
        for (auto it = msgs.rbegin(); it != msgs.rend(); ++it)
          if (it->topic == "sanigate/v1/houpu/gateway/gw-test/status")
            return json::parse(it->payload)["online"] == false;
        return false;
      },
      5s));
  // Nothing stored is left behind: the outbox was drained before exiting.
  EXPECT_TRUE(PendingIds(path("data/outbox.db")).empty());
}

TEST_F(GatewayTest, TheWillMarksTheGatewayOfflineWhenItDies) {
  StartBroker();
  StartSim(1);
  Capture();
  WriteConfig(BaseConfig("keepalive_s = 5\n") + "[modbus]\n" + RoomConfig("room-07", 0, 200));
  StartGateway();
  ASSERT_TRUE(capture->WaitForCount("sanigate/v1/houpu/gateway/gw-test/status", 1, 10s));
  gateway.Kill();
  EXPECT_TRUE(capture->WaitFor(
      [](const std::vector<Captured>& msgs) {
        for (const auto& m : msgs)
          if (m.topic == "sanigate/v1/houpu/gateway/gw-test/status" &&
              json::parse(m.payload)["online"] == false)
            return true;
        return false;
      },
      15s));
}

TEST_F(GatewayTest, ACommandOverMqtt5RequestResponseWritesTheCoilAndAnswers) {
  StartBroker();
  StartSim(1, {"--set", "coil:0=1"});
  Capture();
  WriteConfig(BaseConfig() + "[modbus]\n" + RoomConfig("room-07", 0, 200) + R"(
[[modbus.devices.commands]]
name = "uv_lamp"
table = "coil"
address = 0
verify = true
[[modbus.devices.commands]]
name = "fan_speed"
table = "holding"
address = 8
min = 0.0
max = 3.0
)");
  StartGateway();
  ASSERT_TRUE(WaitReads("room-07", 1, 10s));
  auto telemetry = Unique(capture->Messages(), "/devices/room-07/telemetry");
  ASSERT_EQ(telemetry.back().payload["metrics"]["uv_lamp_on"], true);

  auto rr = [&](const std::string& name, const std::string& payload) {
    return Command("room-07", name, payload);
  };
  json off = rr("uv_lamp", "off");
  EXPECT_EQ(off["ok"], true) << off.dump();
  EXPECT_EQ(off["result"]["verified"], true) << off.dump();
  // The next poll sees the lamp off.
  EXPECT_TRUE(capture->WaitFor(
      [](const std::vector<Captured>& msgs) {
        auto t = Unique(msgs, "/devices/room-07/telemetry");
        return !t.empty() && t.back().payload["metrics"]["uv_lamp_on"] == false;
      },
      5s));

  json bad = rr("uv_lamp", "{\"value\":\"dim\"}");
  EXPECT_EQ(bad["ok"], false);
  EXPECT_EQ(bad["error"], "\"dim\" is not a value of uv_lamp");
  json range = rr("fan_speed", "{\"args\":[7]}");
  EXPECT_EQ(range["ok"], false);
  EXPECT_EQ(range["error"], "7 is outside 0..3");
  json unknown = rr("self_destruct", "now");
  EXPECT_EQ(unknown["ok"], false);
  EXPECT_EQ(unknown["error"], "unknown command self_destruct for room-07 (known: uv_lamp, fan_speed)");
}

TEST_F(GatewayTest, HostileCommandPayloadsAreRefusedAndTheGatewayKeepsDelivering) {
  // Issue 17: invalid UTF-8 in a value aborted the gateway, 100,000 levels of nesting crashed
  // it, and a big payload was echoed back in full. Anyone allowed to publish on cmd/ can send them.
  StartBroker();
  StartSim(1, {"--counter", "hr:4"});
  Capture();
  capture->Subscribe("test/hostile/#", 1);
  WriteConfig(BaseConfig() + "[modbus]\n" + RoomConfig("room-07", 0, 100) + R"(
[[modbus.devices.commands]]
name = "uv_lamp"
table = "coil"
address = 0
)");
  StartGateway();
  ASSERT_TRUE(WaitReads("room-07", 3, 10s));
  WaitGatewayOnline();
  const std::string cmd = "sanigate/v1/houpu/devices/room-07/cmd/uv_lamp";
  struct Case {
    std::string name, payload, error;
  };
  std::vector<Case> cases = {
      {"utf8", "{\"value\":\"\xff\xfe\"}", "invalid UTF-8 at byte 10"},
      {"deep", "{\"args\":" + std::string(100000, '[') + std::string(100000, ']') + "}",
       "payload of 200009 bytes is over the limit of 4096"},
      {"deep-small", "{\"args\":" + std::string(1000, '[') + std::string(1000, ']') + "}",
       "JSON nested deeper than 4"},
      {"mib", std::string(1 << 20, 'x'), "payload of 1048576 bytes is over the limit of 4096"},
      {"tenmib", std::string(10 << 20, '{'), "payload of 10485760 bytes is over the limit of 4096"},
      {"text-utf8", "on\xc0\xaf", "invalid UTF-8 at byte 2"},
  };
  for (const auto& c : cases) {
    capture->Publish(cmd, c.payload, "test/hostile/" + c.name);
    ASSERT_TRUE(capture->WaitForCount("test/hostile/" + c.name, 1, 10s)) << c.name << "\n" << GatewayLog();
    ASSERT_TRUE(gateway.Running()) << c.name << " killed the gateway";
  }
  for (const auto& c : cases) {
    auto answers = Unique(capture->Messages(), "test/hostile/" + c.name);
    ASSERT_EQ(answers.size(), 1u) << c.name;
    EXPECT_EQ(answers[0].payload["ok"], false) << c.name;
    EXPECT_EQ(answers[0].payload["error"], c.error) << c.name;
  }
  // The log quotes at most a short prefix: nothing near the 10 MiB payload in it.
  EXPECT_LT(GatewayLog().size(), 1u << 20) << "the payload was echoed into the log";
  // Still polling and publishing, still taking good commands.
  size_t before = Reads("room-07").size();
  EXPECT_TRUE(WaitReads("room-07", before + 3, 10s));
  json ok = Command("room-07", "uv_lamp", "{\"timeout_ms\": 2000, \"value\": \"on\"}");
  EXPECT_EQ(ok["ok"], true) << ok.dump();
  ExpectContiguous(Reads("room-07"), FailedPolls("room-07"));
}

TEST_F(GatewayTest, StateEventsAnnouncedBeforeAKillAreClearedAfterTheRestart) {
  // Issue 19 for Modbus: a room announced offline and overflowing, the gateway killed, and both
  // conditions over when it comes back: each is cleared exactly once.
  StartBroker();
  StartSim(1, {"--set", "hr:0=950"});  // fill 95.0 %
  Capture();
  WriteConfig(BaseConfig() + "[modbus]\n" +
              RoomConfig("room-07", 0, 100,
                         "overflow = { metric = \"fill_level_pct\", active_at = 90.0, clear_below = 80.0 }\n"));
  StartGateway();
  // Inside WaitFor the messages come as its argument (the capture is locked there).
  auto events = [&](const std::string& name, const std::vector<Captured>& msgs) {
    std::vector<std::string> states;
    for (const auto& e : Unique(msgs, "/devices/room-07/event"))
      if (e.payload["event"] == name) states.push_back(e.payload["state"]);
    return states;
  };
  ASSERT_TRUE(capture->WaitFor([&](const auto& m) { return events("overflow", m).size() == 1; }, 10s));
  sim.Signal(SIGUSR1);  // the room stops answering
  ASSERT_TRUE(capture->WaitFor([&](const auto& m) { return events("offline", m).size() == 1; }, 10s));
  gateway.Kill();
  (void)gateway.Wait(5s);
  sim.Stop(5s);
  // The room is back and has been emptied while the gateway was down.
  StartSim(1, {"--set", "hr:0=100", "--port", std::to_string(sim_ports.at(0))});
  StartGateway();
  ASSERT_TRUE(capture->WaitFor([&](const auto& m) {
    return events("offline", m).size() >= 2 && events("overflow", m).size() >= 2;
  }, 10s)) << GatewayLog();
  size_t before = Reads("room-07").size();
  ASSERT_TRUE(WaitReads("room-07", before + 5, 10s));
  EXPECT_EQ(events("offline", capture->Messages()), (std::vector<std::string>{"active", "cleared"}));
  EXPECT_EQ(events("overflow", capture->Messages()), (std::vector<std::string>{"active", "cleared"}));
}

TEST_F(GatewayTest, WritesRacingFastPollsAllSucceedAndNoPollIsLost) {
  StartBroker();
  StartSim(1, {"--counter", "hr:4"});
  Capture();
  WriteConfig(BaseConfig() + "[modbus]\n" + RoomConfig("room-07", 0, 50) + R"(
[[modbus.devices.commands]]
name = "deodorizer"
table = "coil"
address = 1
verify = true
)");
  StartGateway();
  ASSERT_TRUE(WaitReads("room-07", 5, 10s));
  // Ten writes while the device is polled every 50 ms: each must be answered, verified, and
  // the readings must stay contiguous (a write never steals or corrupts a poll's answer).
  for (int i = 0; i < 10; ++i) {
    json answer = Command("room-07", "deodorizer", i % 2 ? "off" : "on");
    EXPECT_EQ(answer["ok"], true) << i << ": " << answer.dump();
    EXPECT_EQ(answer["result"]["verified"], true) << i << ": " << answer.dump();
  }
  size_t seen = Reads("room-07").size();
  ASSERT_TRUE(WaitReads("room-07", seen + 5, 10s));
  ExpectContiguousReads("room-07");
}

// A large box (more than 64 devices on an adapter): the retained status lists only the devices
// to look at (here the one that never answers) and counts the rest, so it stays small; every
// device's counters are on request, a page at a time, through the admin verb `devices`.
TEST_F(GatewayTest, ALargeBoxStatusListsOnlyTheDevicesToLookAtAndPagesTheRest) {
  StartBroker();
  Capture();
  constexpr int kRooms = 69;
  StartSim(kRooms);
  std::string rooms;
  for (int i = 0; i < kRooms; ++i) rooms += RoomConfig("room-" + std::to_string(100 + i), static_cast<size_t>(i), 1000);
  uint16_t dead = FreeTcpPort();  // nothing listens: the room never answers
  std::string dead_room = RoomConfig("room-dead", 0, 1000);
  dead_room.replace(dead_room.find(std::to_string(sim_ports[0])), std::to_string(sim_ports[0]).size(), std::to_string(dead));
  WriteConfig(BaseConfig() + "[modbus]\n" + rooms + dead_room);
  StartGateway();
  WaitGatewayOnline();
  ASSERT_TRUE(WaitReads("room-168", 2, 20s)) << GatewayLog();
  size_t status_bytes = 0;
  ASSERT_TRUE(capture->WaitFor(
      [&](const std::vector<Captured>& msgs) {
        for (const auto& m : msgs) {
          if (m.topic != "sanigate/v1/houpu/gateway/gw-test/status") continue;
          json j = json::parse(m.payload, nullptr, false);
          // A status from before the adapter started has no "modbus" yet.
          if (!j.is_object() || !j["adapters"].is_object() || !j["adapters"]["modbus"].is_object()) continue;
          const json& mb = j["adapters"]["modbus"];
          if (mb.value("devices", 0) == kRooms + 1 && mb.contains("per_device") && mb["per_device"].size() == 1 && mb["per_device"].contains("room-dead") &&
              mb["per_device"]["room-dead"]["online"] == false && mb.value("per_device_omitted", 0) == kRooms) {
            status_bytes = m.payload.size();
            return true;
          }
        }
        return false;
      },
      30s))
      << GatewayLog();
  EXPECT_LT(status_bytes, 4096u);

  auto devices = [&](const std::string& request) {
    int rc = Process::Run({"mosquitto_rr", "-h", "127.0.0.1", "-p", std::to_string(broker->port()), "-t",
                           "sanigate/v1/houpu/gateway/gw-test/admin/devices", "-e", "sanigate/v1/houpu/admin/reply/d", "-m",
                           request, "-W", "10"},
                          15s, {.stdout_path = path("rr.out"), .stderr_path = path("rr.err")});
    EXPECT_TRUE(ExitedWith(rc, 0)) << DescribeWaitStatus(rc) << ReadFile(path("rr.err"));
    return json::parse(ReadFile(path("rr.out")), nullptr, false);
  };
  std::set<std::string> seen;
  json page = devices(R"({"adapter":"modbus","limit":50})");
  ASSERT_EQ(page["ok"], true) << page.dump();
  EXPECT_EQ(page["result"]["total"], kRooms + 1);
  EXPECT_EQ(page["result"]["count"], 50);
  ASSERT_EQ(page["result"]["next_offset"], 50);
  for (const auto& [id, c] : page["result"]["per_device"].items()) seen.insert(id);
  page = devices(R"({"adapter":"modbus","offset":50,"limit":50})");
  ASSERT_EQ(page["ok"], true) << page.dump();
  EXPECT_FALSE(page["result"].contains("next_offset"));
  for (const auto& [id, c] : page["result"]["per_device"].items()) {
    seen.insert(id);
    if (id != "room-dead") {
      EXPECT_GE(c["requests"].get<int64_t>(), 1) << id;
    }
  }
  EXPECT_EQ(seen.size(), static_cast<size_t>(kRooms + 1));
  json bad = devices(R"({"adapter":"modbus","limit":100000})");
  EXPECT_EQ(bad["ok"], false);
  EXPECT_EQ(bad["code"], "invalid");
  json unknown = devices(R"({"adapter":"can-bus"})");
  EXPECT_EQ(unknown["code"], "not_found") << unknown.dump();
}

// The gateway's admin API (fleet/README.md), with mosquitto_rr as the MQTT 5 peer.
TEST_F(GatewayTest, AdminApiAnswersStatusAndPingOnItsOwnTopic) {
  StartBroker();
  Capture();
  StartSim(1);
  WriteConfig(BaseConfig() + "[modbus]\n" + RoomConfig("room-01", 0, 200));
  StartGateway();
  WaitGatewayOnline();
  ASSERT_TRUE(WaitReads("room-01", 1, 10s));
  auto admin = [&](const std::string& verb) {
    int rc = Process::Run({"mosquitto_rr", "-h", "127.0.0.1", "-p", std::to_string(broker->port()), "-t",
                           "sanigate/v1/houpu/gateway/gw-test/admin/" + verb, "-e", "sanigate/v1/houpu/admin/reply/t", "-m", "{}",
                           "-W", "10"},
                          15s, {.stdout_path = path("rr.out"), .stderr_path = path("rr.err")});
    EXPECT_TRUE(ExitedWith(rc, 0)) << DescribeWaitStatus(rc) << ReadFile(path("rr.err"));
    return json::parse(ReadFile(path("rr.out")), nullptr, false);
  };
  json status = admin("status");
  ASSERT_EQ(status["ok"], true) << status.dump();
  EXPECT_EQ(status["result"]["gateway"], "gw-test");
  EXPECT_EQ(status["result"]["online"], true);
  EXPECT_GE(status["result"]["adapters"]["modbus"]["per_device"]["room-01"]["requests"].get<int64_t>(), 1);
  // Polls are poll cycles; requests are what went on the wire (4 tables: 4 requests a poll).
  const json& modbus = status["result"]["adapters"]["modbus"];
  int64_t polls = modbus["polls"].get<int64_t>(), requests = modbus["requests"].get<int64_t>();
  EXPECT_GE(polls, 1);
  EXPECT_GE(requests, 4 * polls - 4) << modbus.dump();
  EXPECT_LE(requests, 4 * polls) << modbus.dump();
  EXPECT_EQ(modbus["per_device"]["room-01"]["polls"], polls);
  json ping = admin("ping");
  EXPECT_EQ(ping["result"]["gateway"], "gw-test");
  json bad = admin("reboot-everything");
  EXPECT_EQ(bad["ok"], false);
  EXPECT_EQ(bad["code"], "invalid");
}

TEST_F(GatewayTest, CheckConfigExitsTwoOnAnInvalidFileAndZeroOnAValidOne) {
  std::ofstream(path("bad.toml")) << "[gateway]\nid = \"gw\"\nsite = \"s\"\ncolour = 3\n";
  int rc = Process::Run({SANIGATE_BIN, "--check-config", path("bad.toml")}, 10s,
                        {.stderr_path = path("check.err")});
  EXPECT_TRUE(ExitedWith(rc, 2)) << DescribeWaitStatus(rc);
  EXPECT_EQ(ReadFile(path("check.err")), path("bad.toml") + ":4:1: gateway.colour: unknown key\n");
  rc = Process::Run({SANIGATE_BIN, "--check-config", SourceDir() + "/config/sanigate.toml"}, 10s,
                    {.stdout_path = path("check.out")});
  EXPECT_TRUE(ExitedWith(rc, 0)) << DescribeWaitStatus(rc);
  // --config with a bad file refuses to start, with the same message.
  rc = Process::Run({SANIGATE_BIN, "--config", path("bad.toml")}, 10s,
                    {.stderr_path = path("run.err")});
  EXPECT_TRUE(ExitedWith(rc, 2)) << DescribeWaitStatus(rc);
}

TEST_F(GatewayTest, RefusesAForeignDatabaseAsOutboxAndLeavesItUntouched) {
  StartBroker();
  std::filesystem::create_directories(path("data"));
  std::ofstream(path("data/outbox.db")) << "this is somebody's notes, not a database\n";
  WriteConfig(BaseConfig() + "[modbus]\n");
  StartGateway();
  auto st = gateway.Wait(10s);
  ASSERT_TRUE(st.has_value());
  EXPECT_TRUE(ExitedWith(*st, 1)) << DescribeWaitStatus(*st);
  EXPECT_NE(GatewayLog().find("not an SQLite database"), std::string::npos) << GatewayLog();
  EXPECT_EQ(ReadFile(path("data/outbox.db")), "this is somebody's notes, not a database\n");
}

}  // namespace
}  // namespace sanigate::test
