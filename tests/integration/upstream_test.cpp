// Upstream destinations end to end: a real local Mosquitto, a second real Mosquitto as the "city
// broker", the libmodbus simulator and the real sanigate. The city broker is stopped while the
// gateway keeps polling, sanigate is killed with SIGKILL during that outage, and every reading
// the local broker got must reach the city (by id), in order, under the city's topic prefix,
// while the local broker never waits for the city. sanifleet's outputs published on the local
// broker are relayed up, retained where they were retained, also across a sanigate restart.
#include <thread>

#include "gateway_fixture.h"

namespace sanigate::test {
namespace {

class UpstreamTest : public GatewayTest {
 protected:
  std::unique_ptr<MosquittoBroker> city;
  std::unique_ptr<MqttCapture> city_capture;

  void StartCity() {
    city = std::make_unique<MosquittoBroker>(MosquittoBroker::Options{.persistence = true});
    city->Start();
    city_capture = std::make_unique<MqttCapture>(city->url(), "city-capture", /*clean_session=*/false);
    city_capture->Connect();
    city_capture->Subscribe("#", 1);
  }

  std::string Upstream(const std::string& extra = "") const {
    return "[[upstream]]\nname = \"city\"\nurl = \"" + city->url() +
           "\"\ntopic_prefix = \"city/xm/huli\"\nreconnect_min_ms = 100\nreconnect_max_ms = 1000\n" + extra + "\n";
  }

  // Record ids of a device's telemetry in `msgs` under `prefix`, first occurrences, in order.
  static std::vector<std::string> Ids(const std::vector<Captured>& msgs, const std::string& prefix,
                                      const std::string& device) {
    std::vector<std::string> ids;
    for (const auto& p : Unique(msgs, "/devices/" + device + "/telemetry"))
      if (p.topic.rfind(prefix + "/", 0) == 0) ids.push_back(p.payload["id"].get<std::string>());
    return ids;
  }

  // The last gateway status seen on the local broker, parsed.
  json LastStatus() const {
    json last;
    for (const auto& m : capture->Messages())
      if (m.topic == "sanigate/v1/houpu/gateway/gw-test/status") {
        json j = json::parse(m.payload, nullptr, false);
        if (j.is_object()) last = j;
      }
    return last;
  }
};

TEST_F(UpstreamTest, EveryReadingReachesTheCityAcrossItsOutageAndAKill9AndTheLocalBrokerNeverWaits) {
  StartBroker();
  StartCity();
  StartSim(1, {"--counter", "hr:4"});
  Capture(/*persistent=*/true);
  WriteConfig(BaseConfig() + Upstream() + "[modbus]\n" + RoomConfig("room-07", 0, 100));
  StartGateway();
  ASSERT_TRUE(city_capture->WaitFor(
      [](const auto& msgs) { return Ids(msgs, "city/xm/huli/houpu", "room-07").size() >= 5; }, 15s))
      << GatewayLog();

  // The city goes away. The local broker keeps getting readings at full pace.
  city->Stop();
  size_t local_before = Reads("room-07").size();
  ASSERT_TRUE(WaitReads("room-07", local_before + 20, 10s)) << GatewayLog();
  // The status says the city is owed a growing backlog and its link is down.
  ASSERT_TRUE(capture->WaitFor(
      [&](const std::vector<Captured>& msgs) {
        for (const auto& m : msgs) {
          if (m.topic != "sanigate/v1/houpu/gateway/gw-test/status") continue;
          json j = json::parse(m.payload, nullptr, false);
          if (!j.is_object() || !j.contains("upstreams")) continue;
          const json& u = j["upstreams"][0];
          if (u["name"] == "city" && u["connected"] == false && u["pending"].get<int64_t>() > 0 &&
              u["oldest_ts"].is_number())
            return true;
        }
        return false;
      },
      15s))
      << LastStatus().dump();

  // sanigate dies in the middle of the outage; it comes back and goes on polling.
  gateway.Kill();
  StartGateway();
  size_t local_after_restart = Reads("room-07").size();
  ASSERT_TRUE(WaitReads("room-07", local_after_restart + 10, 15s)) << GatewayLog();

  // At least 40 distinct readings made during the outage (a kill -9 resends some, so the local
  // count of arrivals is not the count of readings; a busy machine polls a little late).
  ASSERT_TRUE(capture->WaitFor(
      [&](const auto& msgs) {
        auto ids = Ids(msgs, "sanigate/v1/houpu", "room-07");
        return std::set<std::string>(ids.begin(), ids.end()).size() >= 40;
      },
      20s))
      << GatewayLog();
  city->Restart();
  std::vector<std::string> local_ids = Ids(capture->Messages(), "sanigate/v1/houpu", "room-07");
  ASSERT_TRUE(city_capture->WaitFor(
      [&](const auto& msgs) {
        auto got = Ids(msgs, "city/xm/huli/houpu", "room-07");
        std::set<std::string> have(got.begin(), got.end());
        for (const auto& id : local_ids)
          if (!have.count(id)) return false;
        return true;
      },
      30s))
      << GatewayLog();

  // Same records, same order (first occurrences; duplicates are allowed, losses are not).
  auto city_ids = Ids(city_capture->Messages(), "city/xm/huli/houpu", "room-07");
  std::vector<std::string> city_prefix(city_ids.begin(), city_ids.begin() + static_cast<long>(local_ids.size()));
  EXPECT_EQ(city_prefix, local_ids);
  // Nothing of the local scheme leaked to the city under the local prefix.
  for (const auto& m : city_capture->Messages()) EXPECT_NE(m.topic.rfind("sanigate/", 0), 0u) << m.topic;
  // The city sees the box's status under its own prefix.
  EXPECT_TRUE(city_capture->WaitFor(
      [](const auto& msgs) {
        for (const auto& m : msgs)
          if (m.topic == "city/xm/huli/houpu/gateway/gw-test/status" && m.payload.find("\"online\":true") != std::string::npos)
            return true;
        return false;
      },
      10s));
  ExpectPayloadsMatchSchemas();  // the local status with its upstreams section among them
}

// A city broker whose certificate the box cannot verify gets nothing, the status says why, and
// the records are kept: with the right CA they all arrive, those of the refused time first.
TEST_F(UpstreamTest, ACityBrokerWithAnUnverifiableCertificateGetsNothingUntilTheRightCaAndThenEverything) {
  StartBroker();
  city = std::make_unique<MosquittoBroker>(MosquittoBroker::Options{.tls = true, .persistence = true});
  city->Start();
  city_capture = std::make_unique<MqttCapture>(city->url(), "city-capture", /*clean_session=*/false);
  city_capture->Connect();
  city_capture->Subscribe("#", 1);
  StartSim(1, {"--counter", "hr:4"});
  Capture();
  auto config = [&](const std::string& ca) {
    return BaseConfig() + "[[upstream]]\nname = \"city\"\nurl = \"" + city->tls_url() +
           "\"\nreconnect_min_ms = 100\nreconnect_max_ms = 500\nkinds = [\"telemetry\"]\n[upstream.tls]\nca_file = \"" +
           ca + "\"\n[modbus]\n" + RoomConfig("room-07", 0, 100);
  };
  WriteConfig(config(city->wrong_ca_file()));
  StartGateway();
  ASSERT_TRUE(WaitReads("room-07", 20, 10s)) << GatewayLog();  // the local broker is not held back
  ASSERT_TRUE(capture->WaitFor(
      [&](const std::vector<Captured>& msgs) {
        for (const auto& m : msgs) {
          json j = json::parse(m.payload, nullptr, false);
          if (j.is_object() && j.contains("upstreams") && j["upstreams"][0]["connected"] == false &&
              j["upstreams"][0].contains("last_error") && j["upstreams"][0]["pending"].get<int64_t>() > 0)
            return true;
        }
        return false;
      },
      15s))
      << LastStatus().dump();
  EXPECT_TRUE(Ids(city_capture->Messages(), "sanigate/v1/houpu", "room-07").empty());
  EXPECT_NE(GatewayLog().find("upstream city: connect to"), std::string::npos) << GatewayLog();

  ASSERT_TRUE(ExitedWith(gateway.Stop(), 0)) << GatewayLog();
  std::vector<std::string> local_ids = Ids(capture->Messages(), "sanigate/v1/houpu", "room-07");
  WriteConfig(config(city->ca_file()));
  StartGateway();
  ASSERT_TRUE(city_capture->WaitFor(
      [&](const auto& msgs) {
        auto got = Ids(msgs, "sanigate/v1/houpu", "room-07");
        std::set<std::string> have(got.begin(), got.end());
        for (const auto& id : local_ids)
          if (!have.count(id)) return false;
        return true;
      },
      20s))
      << GatewayLog();
}

// The down-link is off unless listed: a city dispatcher may send the commands in the allow-list
// (the answer comes back on the city's broker), and nothing else reaches the gateway.
TEST_F(UpstreamTest, TheCityMaySendOnlyTheCommandsInItsAllowList) {
  StartBroker();
  StartCity();
  StartSim(1, {"--set", "coil:0=1"});
  Capture();
  WriteConfig(BaseConfig() + Upstream("downlink = [\"sanigate/v1/houpu/devices/+/cmd/uv_lamp\"]") + "[modbus]\n" +
              RoomConfig("room-07", 0, 200) + "[[modbus.devices.commands]]\nname = \"uv_lamp\"\ntable = \"coil\"\naddress = 0\n" +
              "[[modbus.devices.commands]]\nname = \"fan_speed\"\ntable = \"holding\"\naddress = 8\n");
  StartGateway();
  ASSERT_TRUE(WaitReads("room-07", 1, 10s)) << GatewayLog();
  ASSERT_TRUE(city_capture->WaitFor(
      [](const auto& msgs) { return Ids(msgs, "city/xm/huli/houpu", "room-07").size() >= 1; }, 10s));
  auto rr = [&](const std::string& topic, const std::string& payload, int wait_s) {
    int rc = Process::Run({"mosquitto_rr", "-h", "127.0.0.1", "-p", std::to_string(city->port()), "-t", topic, "-e",
                           "city/answers/dispatcher-1", "-m", payload, "-W", std::to_string(wait_s)},
                          std::chrono::seconds(wait_s + 5), {.stdout_path = path("rr.out"), .stderr_path = path("rr.err")});
    return std::make_pair(rc, ReadFile(path("rr.out")));
  };
  auto [rc, out] = rr("city/xm/huli/houpu/devices/room-07/cmd/uv_lamp", "off", 10);
  ASSERT_TRUE(ExitedWith(rc, 0)) << ReadFile(path("rr.err")) << GatewayLog();
  json answer = json::parse(out, nullptr, false);
  EXPECT_EQ(answer["ok"], true) << out;
  // Not in the list: a command and the gateway's admin API get no answer.
  auto [rc2, out2] = rr("city/xm/huli/houpu/devices/room-07/cmd/fan_speed", "{\"args\":[1]}", 2);
  EXPECT_FALSE(ExitedWith(rc2, 0)) << out2;
  auto [rc3, out3] = rr("city/xm/huli/houpu/gateway/gw-test/admin/status", "{}", 2);
  EXPECT_FALSE(ExitedWith(rc3, 0)) << out3;
  EXPECT_NE(GatewayLog().find("cmd \"room-07\" \"uv_lamp\": ok"), std::string::npos) << GatewayLog();
  EXPECT_EQ(GatewayLog().find("fan_speed"), std::string::npos) << GatewayLog();
}

// A link that costs money: a backlog is sent no faster than the destination's cap, while the
// local broker gets it at once.
TEST_F(UpstreamTest, ABacklogDrainsNoFasterThanTheDestinationsRateCap) {
  StartBroker();
  StartCity();
  StartSim(1, {"--counter", "hr:4"});
  Capture();
  // 10 readings a second, a cap of 20 records a second: the backlog drains at about 10 a second.
  WriteConfig(BaseConfig() + Upstream("max_msgs_per_s = 20\nkinds = [\"telemetry\"]") + "[modbus]\n" +
              RoomConfig("room-07", 0, 100));
  city->Stop();
  StartGateway();
  ASSERT_TRUE(WaitReads("room-07", 60, 15s)) << GatewayLog();
  size_t backlog = Ids(capture->Messages(), "sanigate/v1/houpu", "room-07").size();
  city->Restart();
  // A live observer that connects at once (the persistent capture reconnects on its own backoff
  // and would then receive in a burst what the broker kept for it): the rate is read off its
  // arrival times. Completeness is checked on the persistent capture.
  MqttCapture live(city->url(), "city-live");
  live.Connect();
  live.Subscribe("city/xm/huli/houpu/devices/room-07/telemetry", 1);
  ASSERT_TRUE(city_capture->WaitFor(
      [&](const auto& msgs) { return Ids(msgs, "city/xm/huli/houpu", "room-07").size() >= backlog + 10; }, 60s))
      << GatewayLog();
  std::vector<std::chrono::steady_clock::time_point> arrivals;
  for (const auto& m : live.Messages()) arrivals.push_back(m.at);
  // The bucket holds one second's worth: skip what it may release at once.
  ASSERT_GE(arrivals.size(), 45u) << "too few arrivals to judge the rate";
  arrivals.erase(arrivals.begin(), arrivals.begin() + 25);
  double span = std::chrono::duration<double>(arrivals.back() - arrivals.front()).count();
  double rate = static_cast<double>(arrivals.size() - 1) / span;
  EXPECT_LE(rate, 20 * 1.15) << arrivals.size() << " records in " << span << " s";
}

// Over a metered line a backlog goes up in compressed batches; retained records still go alone.
// The batches are decoded by Python's zlib, an independent implementation.
TEST_F(UpstreamTest, ABacklogGoesUpInDeflatedBatchesThatAnIndependentDecoderReads) {
  StartBroker();
  StartCity();
  StartSim(1, {"--counter", "hr:4"});
  Capture();
  WriteConfig(BaseConfig() +
              Upstream("batch_max_records = 25\ncompression = \"deflate\"\nkinds = [\"telemetry\", \"status\"]") +
              "[modbus]\n" + RoomConfig("room-07", 0, 100));
  city->Stop();
  StartGateway();
  ASSERT_TRUE(WaitReads("room-07", 50, 15s)) << GatewayLog();
  std::vector<std::string> local_ids = Ids(capture->Messages(), "sanigate/v1/houpu", "room-07");
  city->Restart();
  const std::string batch_topic = "city/xm/huli/houpu/gateway/gw-test/batch/deflate";
  std::set<std::string> got;
  int batches = 0, decoded = 0;
  auto decode = [&](const std::vector<Captured>& msgs) {
    for (size_t k = static_cast<size_t>(decoded); k < msgs.size(); ++k, ++decoded) {
      const auto& m = msgs[k];
      if (m.topic != batch_topic) {
        if (m.topic.find("/devices/room-07/telemetry") != std::string::npos) {
          json j = json::parse(m.payload, nullptr, false);
          if (j.is_object()) got.insert(j["id"].get<std::string>());
        }
        continue;
      }
      batches++;
      std::ofstream(path("batch.bin"), std::ios::binary) << m.payload;
      int rc = Process::Run({"/usr/bin/python3", "-c",
                             "import sys,zlib; sys.stdout.write(zlib.decompress(open(sys.argv[1],'rb').read()).decode())",
                             path("batch.bin")},
                            10s, {.stdout_path = path("batch.json"), .stderr_path = path("batch.err")});
      EXPECT_TRUE(ExitedWith(rc, 0)) << ReadFile(path("batch.err"));
      json doc = json::parse(ReadFile(path("batch.json")), nullptr, false);
      EXPECT_EQ(doc["gateway"], "gw-test");
      for (const auto& r : doc["records"]) {
        EXPECT_EQ(r["retain"], false);
        if (r["topic"] == "city/xm/huli/houpu/devices/room-07/telemetry") got.insert(r["payload"]["id"].get<std::string>());
      }
    }
  };
  // Decoded outside the capture's lock: the predicate only looks for the last id.
  ASSERT_TRUE(city_capture->WaitFor(
      [&](const auto& msgs) {
        for (const auto& m : msgs)
          if (m.topic == batch_topic || m.topic.find("/devices/room-07/telemetry") != std::string::npos) return true;
        return false;
      },
      20s))
      << GatewayLog();
  for (int round = 0; round < 100; ++round) {
    decode(city_capture->Messages());
    bool all = true;
    for (const auto& id : local_ids) all = all && got.count(id);
    if (all) break;
    std::this_thread::sleep_for(200ms);
  }
  for (const auto& id : local_ids) EXPECT_TRUE(got.count(id)) << id << " never reached the city";
  EXPECT_GE(batches, 2);
  // The device status (retained) went alone, retained.
  bool status_alone = false;
  for (const auto& m : city_capture->Messages())
    if (m.topic == "city/xm/huli/houpu/devices/room-07/status" && m.retained) status_alone = true;
  EXPECT_TRUE(status_alone);
}

TEST_F(UpstreamTest, SanifleetsOutputsAreRelayedUpRetainedWhereTheyWereRetainedAndAcrossARestart) {
  StartBroker();
  StartCity();
  Capture();
  WriteConfig(BaseConfig() + Upstream("kinds = [\"fleet\", \"heatmap\"]"));
  StartGateway();
  WaitGatewayOnline();
  auto pub = [&](const std::string& topic, const std::string& payload, bool retain) {
    std::vector<std::string> argv = {"mosquitto_pub", "-h", "127.0.0.1", "-p", std::to_string(broker->port()),
                                     "-q", "1", "-t", topic, "-m", payload};
    if (retain) argv.push_back("-r");
    ASSERT_TRUE(ExitedWith(Process::Run(argv, 10s), 0));
  };
  // The relay subscribes once the gateway is up; give its subscription a moment via a probe.
  ASSERT_TRUE(city_capture->WaitFor(
      [&](const auto& msgs) {
        pub("sanigate/v1/houpu/fleet/status", "{\"probe\":true}", true);
        for (const auto& m : msgs)
          if (m.topic == "city/xm/huli/houpu/fleet/status") return true;
        return false;
      },
      15s))
      << GatewayLog();

  pub("sanigate/v1/houpu/fleet/health/room-1", "{\"device\":\"room-1\",\"verdict\":\"ok\"}", true);
  pub("sanigate/v1/houpu/fleet/events", "{\"device\":\"room-1\",\"change\":\"degraded\"}", false);
  pub("sanigate/v1/houpu/heatmap/bin_fill", "{\"layer\":\"bin_fill\"}", true);
  pub("sanigate/v1/houpu/fleet/admin/status", "{}", false);                   // admin: never up
  pub("sanigate/v1/houpu/devices/room-1/telemetry", "{\"id\":\"x:1\"}", false); // not this gateway's record

  auto find = [](const std::vector<Captured>& msgs, const std::string& topic) -> std::optional<Captured> {
    for (const auto& m : msgs)
      if (m.topic == topic) return m;
    return std::nullopt;
  };
  ASSERT_TRUE(city_capture->WaitFor(
      [&](const auto& msgs) {
        return find(msgs, "city/xm/huli/houpu/fleet/health/room-1") && find(msgs, "city/xm/huli/houpu/fleet/events") &&
               find(msgs, "city/xm/huli/houpu/heatmap/bin_fill");
      },
      15s))
      << GatewayLog();
  auto got = city_capture->Messages();
  EXPECT_TRUE(find(got, "city/xm/huli/houpu/fleet/health/room-1")->retained);
  EXPECT_TRUE(find(got, "city/xm/huli/houpu/heatmap/bin_fill")->retained);
  EXPECT_FALSE(find(got, "city/xm/huli/houpu/fleet/events")->retained);
  EXPECT_FALSE(find(got, "city/xm/huli/houpu/fleet/admin/status"));
  EXPECT_FALSE(find(got, "city/xm/huli/houpu/devices/room-1/telemetry"));

  // While sanigate is stopped the broker keeps the relay's session: what sanifleet says then
  // goes up after the start, once (retained state is not sent again at the reconnect).
  ASSERT_TRUE(ExitedWith(gateway.Stop(), 0)) << GatewayLog();
  pub("sanigate/v1/houpu/fleet/events", "{\"device\":\"room-1\",\"change\":\"while-down\"}", false);
  StartGateway();
  ASSERT_TRUE(city_capture->WaitFor(
      [&](const auto& msgs) {
        for (const auto& m : msgs)
          if (m.payload.find("while-down") != std::string::npos) return true;
        return false;
      },
      15s))
      << GatewayLog();
  std::this_thread::sleep_for(1s);
  int health_copies = 0;
  for (const auto& m : city_capture->Messages())
    if (m.topic == "city/xm/huli/houpu/fleet/health/room-1") health_copies++;
  EXPECT_EQ(health_copies, 1);
}

}  // namespace
}  // namespace sanigate::test
