// LoRaWAN end to end: simulated concentrators (Semtech UDP over real loopback sockets) and end
// devices -> sanigate as the edge network server -> a real Mosquitto -> an MQTT subscriber.
// ABP and OTAA (the join accept goes out in a PULL_RESP and the device side decrypts it),
// de-duplication across concentrators, FCnt wrap, replayed and forged frames, confirmed uplinks
// and their ACK, malformed datagrams, and a restart that keeps the sessions.
#include "gateway_fixture.h"
#include "lora_forwarder.h"

namespace sanigate::test {
namespace {

using namespace dev::lorawan;

const Key kAppKey = ParseKey("2B7E151628AED2A6ABF7158809CF4F3C").value();
const Key kNwkSKey = ParseKey("2B7E151628AED2A6ABF7158809CF4F3C").value();
const Key kAppSKey = ParseKey("000102030405060708090A0B0C0D0E0F").value();
constexpr uint32_t kAbpAddr = 0x260B1234;
constexpr uint64_t kOtaaEui = 0x0102030405060708ull;

class LorawanTest : public GatewayTest {
 protected:
  uint16_t port = 0;
  std::unique_ptr<Concentrator> gw1, gw2;

  void StartAll() {
    StartBroker();
    Capture();
    port = FreeTcpPort();  // a free TCP port number is very likely free for UDP too
    WriteConfig(BaseConfig() + "[lorawan]\nlisten = \"127.0.0.1:" + std::to_string(port) +
                "\"\ndedup_window_ms = 150\nprofiles_dir = \"" + SourceDir() + "/config/profiles\"\n" + R"(
[[lorawan.devices]]
id = "bin-abp"
dev_eui = "0102030405060709"
activation = "abp"
dev_addr = "260B1234"
nwk_s_key = "2B7E151628AED2A6ABF7158809CF4F3C"
app_s_key = "000102030405060708090A0B0C0D0E0F"
profile = "bin-monitor-ultrasonic-v1"
location = { lat = 24.5123, lon = 118.1342 }
overflow = { metric = "fill_level_pct", active_at = 85.0, clear_below = 70.0 }

[[lorawan.devices]]
id = "bin-otaa"
dev_eui = "0102030405060708"
activation = "otaa"
app_key = "2B7E151628AED2A6ABF7158809CF4F3C"
profile = "bin-monitor-ultrasonic-v1"

[[lorawan.devices]]
id = "bin-quiet"
dev_eui = "010203040506070A"
activation = "abp"
dev_addr = "260B9999"
nwk_s_key = "2B7E151628AED2A6ABF7158809CF4F3C"
app_s_key = "000102030405060708090A0B0C0D0E0F"
profile = "bin-monitor-ultrasonic-v1"
expected_interval_s = 1
offline_after_missed = 2
)");
    StartGateway();
    WaitGatewayOnline();
    gw1 = std::make_unique<Concentrator>(0xAA555A0000000001ull);
    gw2 = std::make_unique<Concentrator>(0xAA555A0000000002ull);
    ASSERT_TRUE(gw1->Open(port).ok());
    ASSERT_TRUE(gw2->Open(port).ok());
    ASSERT_TRUE(gw1->Pull().ok());
    ASSERT_TRUE(gw2->Pull().ok());
  }


  std::vector<Parsed> Of(const std::string& device, const std::string& what) const {
    return Unique(capture->Messages(), "/devices/" + device + "/" + what);
  }
  bool WaitN(const std::string& device, const std::string& what, size_t n, std::chrono::milliseconds t = 10s) {
    return capture->WaitFor([&](const std::vector<Captured>& m) { return Unique(m, "/devices/" + device + "/" + what).size() >= n; }, t);
  }
  // The latest retained status of `device` says `online`.
  bool WaitStatus(const std::string& device, bool online) {
    return capture->WaitFor([&](const std::vector<Captured>& m) {
      auto st = Unique(m, "/devices/" + device + "/status");
      return !st.empty() && st.back().payload["online"].get<bool>() == online;
    }, 10s);
  }
  // Both concentrators hear the frame; gw2 better.
  void HearTwice(const Bytes& phy) {
    ASSERT_TRUE(gw1->Push({MakeRxpk(phy, gw1->Tmst(), 486'300'000, -110, -5.0)}).ok());
    ASSERT_TRUE(gw2->Push({MakeRxpk(phy, gw2->Tmst(), 486'300'000, -70, 9.5)}).ok());
  }
};

TEST_F(LorawanTest, AbpUplinkHeardTwiceIsPublishedOnceWithTheBestRadio) {
  StartAll();
  auto dev = LoraDevice::Abp(kAbpAddr, kNwkSKey, kAppSKey, 10);
  Bytes first = dev.Uplink(kUltrasonicFPort, UltrasonicPayload(412, 88, 23.5, 3.612, true, false));
  HearTwice(first);
  ASSERT_TRUE(WaitN("bin-abp", "telemetry", 1));
  auto r = Of("bin-abp", "telemetry")[0].payload;
  EXPECT_EQ(r["kind"], "bin");
  EXPECT_EQ(r["metrics"]["distance_mm"], 412);
  EXPECT_EQ(r["metrics"]["fill_level_pct"], 88);
  EXPECT_DOUBLE_EQ(r["metrics"]["temperature_c"].get<double>(), 23.5);
  EXPECT_DOUBLE_EQ(r["metrics"]["battery_v"].get<double>(), 3.612);
  EXPECT_TRUE(r["metrics"]["tilted"].get<bool>());
  EXPECT_EQ(r["source"]["protocol"], "lorawan");
  EXPECT_EQ(r["source"]["concentrator"], "AA555A0000000002");
  EXPECT_DOUBLE_EQ(r["source"]["rssi_dbm"].get<double>(), -70);
  EXPECT_DOUBLE_EQ(r["source"]["snr_db"].get<double>(), 9.5);
  EXPECT_EQ(r["source"]["frequency_hz"], 486300000);
  EXPECT_EQ(r["source"]["data_rate"], "SF7BW125");
  EXPECT_EQ(r["source"]["concentrators"], 2);
  EXPECT_EQ(r["source"]["fcnt"], 10);
  EXPECT_DOUBLE_EQ(r["location"]["lat"].get<double>(), 24.5123);
  // Events from the decoded fields: overflow (88 >= 85) and tilt.
  ASSERT_TRUE(WaitN("bin-abp", "event", 2));
  std::set<std::string> events;
  for (auto& e : Of("bin-abp", "event")) events.insert(e.payload["event"].get<std::string>() + ":" + e.payload["state"].get<std::string>());
  EXPECT_TRUE(events.count("overflow:active"));
  EXPECT_TRUE(events.count("tilt:active"));

  // A late copy of that frame is a retransmission (dropped as a duplicate); a forged frame is
  // dropped; the next genuine one gets through; then the old frame played again is a replay.
  ASSERT_TRUE(gw1->Push({MakeRxpk(dev.Replay(), gw1->Tmst())}).ok());
  Bytes forged = dev.Uplink(kUltrasonicFPort, UltrasonicPayload(100, 10, 20.0, 3.6, false, false));
  forged[forged.size() - 1] ^= 0x01;  // MIC
  ASSERT_TRUE(gw1->Push({MakeRxpk(forged, gw1->Tmst())}).ok());
  HearTwice(dev.Uplink(kUltrasonicFPort, UltrasonicPayload(900, 60, 22.0, 3.6, false, false)));
  ASSERT_TRUE(WaitN("bin-abp", "telemetry", 2));
  auto tel = Of("bin-abp", "telemetry");
  ASSERT_EQ(tel.size(), 2u);
  EXPECT_EQ(tel[1].payload["metrics"]["fill_level_pct"], 60);
  EXPECT_EQ(tel[1].payload["source"]["fcnt"], 12);  // 11 was the forged one
  ASSERT_TRUE(gw1->Push({MakeRxpk(first, gw1->Tmst())}).ok());
  // Overflow cleared (60 < 70) and tilt cleared.
  ASSERT_TRUE(WaitN("bin-abp", "event", 4));
  ExpectPayloadsMatchSchemas();
  std::string log = GatewayLog();
  EXPECT_NE(log.find("replayed frame"), std::string::npos) << log;
  EXPECT_NE(log.find("wrong MIC"), std::string::npos) << log;
}

TEST_F(LorawanTest, FrameCounterWrapsPast16Bits) {
  StartAll();
  auto dev = LoraDevice::Abp(kAbpAddr, kNwkSKey, kAppSKey, 0xFFFE);
  for (int i = 0; i < 3; ++i) {
    HearTwice(dev.Uplink(kUltrasonicFPort, UltrasonicPayload(500 + i, 30, 20.0, 3.6, false, false)));
    ASSERT_TRUE(WaitN("bin-abp", "telemetry", static_cast<size_t>(i + 1))) << i;
  }
  auto tel = Of("bin-abp", "telemetry");
  EXPECT_EQ(tel[0].payload["source"]["fcnt"], 0xFFFE);
  EXPECT_EQ(tel[1].payload["source"]["fcnt"], 0xFFFF);
  EXPECT_EQ(tel[2].payload["source"]["fcnt"], 0x10000);
}

TEST_F(LorawanTest, OtaaJoinConfirmedUplinkAckAndSessionSurvivesRestart) {
  StartAll();
  auto dev = LoraDevice::Otaa(kOtaaEui, 0x0102030405060708ull, kAppKey);
  uint32_t tmst = gw2->Tmst();
  ASSERT_TRUE(gw1->Push({MakeRxpk(dev.JoinRequest(0x1234), gw1->Tmst(), 486'300'000, -100, 1.0)}).ok());
  Bytes jr = dev.JoinRequest(0x1234);
  ASSERT_TRUE(gw2->Push({MakeRxpk(jr, tmst, 486'300'000, -60, 10.0)}).ok());
  // The join accept goes to the concentrator that heard it best, for RX1 = tmst + 5 s.
  auto down = gw2->WaitDownlink(5s);
  ASSERT_TRUE(down.has_value()) << GatewayLog();
  EXPECT_EQ(down->tmst, tmst + 5'000'000u);
  EXPECT_EQ(down->freq_hz, 506'700'000u);  // CN470 RX1 of uplink channel 80
  EXPECT_TRUE(down->ipol);
  ASSERT_TRUE(dev.AcceptJoin(down->data).ok()) << dev.last_error().ToString();
  EXPECT_FALSE(gw1->WaitDownlink(300ms).has_value());

  // A confirmed uplink: published, then acknowledged in RX1 (tmst + 1 s).
  uint32_t up_tmst = gw1->Tmst();
  ASSERT_TRUE(gw1->Push({MakeRxpk(dev.Uplink(kUltrasonicFPort, UltrasonicPayload(300, 70, 21.0, 3.5, false, false), true), up_tmst)}).ok());
  auto ack = gw1->WaitDownlink(5s);
  ASSERT_TRUE(ack.has_value()) << GatewayLog();
  EXPECT_EQ(ack->tmst, up_tmst + 1'000'000u);
  auto info = dev.OpenDownlink(ack->data);
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  EXPECT_TRUE(info->ack);
  ASSERT_TRUE(WaitN("bin-otaa", "telemetry", 1));

  // The same DevNonce again is a replay: no join accept.
  ASSERT_TRUE(gw1->Push({MakeRxpk(jr, gw1->Tmst())}).ok());
  EXPECT_FALSE(gw1->WaitDownlink(700ms).has_value());

  // Restart: the session and counters come back from the state file; no re-join needed.
  gateway.Stop(5s);
  StartGateway();
  bool pulled = false;  // UDP: the new process answers once it is listening
  for (int i = 0; i < 20 && !pulled; ++i) pulled = gw1->Pull(500ms).ok();
  ASSERT_TRUE(pulled) << GatewayLog();
  ASSERT_TRUE(gw1->Push({MakeRxpk(dev.Uplink(kUltrasonicFPort, UltrasonicPayload(310, 71, 21.0, 3.5, false, false)), gw1->Tmst())}).ok());
  ASSERT_TRUE(WaitN("bin-otaa", "telemetry", 2, 10s)) << GatewayLog();
  EXPECT_NE(GatewayLog().find("restored 3 sessions"), std::string::npos);
}

TEST_F(LorawanTest, RefusedRx1FallsBackToRx2AndConcentratorsShowInTheStatus) {
  StartAll();
  auto dev = LoraDevice::Otaa(kOtaaEui, 0x0102030405060708ull, kAppKey);
  gw1->refuse_next(TxAckError::kTooLate);
  uint32_t tmst = gw1->Tmst();
  ASSERT_TRUE(gw1->Push({MakeRxpk(dev.JoinRequest(0x0042), tmst)}).ok());
  auto rx1 = gw1->WaitDownlink(5s);
  ASSERT_TRUE(rx1.has_value());
  EXPECT_EQ(rx1->tmst, tmst + 5'000'000u);
  // The concentrator said TOO_LATE: the same join accept again, in RX2 (505.3 MHz, SF12) 1 s later.
  auto rx2 = gw1->WaitDownlink(5s);
  ASSERT_TRUE(rx2.has_value()) << GatewayLog();
  EXPECT_EQ(rx2->tmst, tmst + 6'000'000u);
  EXPECT_EQ(rx2->freq_hz, 505'300'000u);
  EXPECT_EQ(rx2->rate.sf, 12);
  EXPECT_EQ(rx2->data, rx1->data);
  ASSERT_TRUE(dev.AcceptJoin(rx2->data).ok());
  // The gateway status lists both concentrators with their counters.
  ASSERT_TRUE(capture->WaitFor([](const std::vector<Captured>& m) {
    for (const auto& c : m) {
      if (c.topic.find("/gateway/gw-test/status") == std::string::npos) continue;
      json j = json::parse(c.payload, nullptr, false);
      if (j.is_discarded()) continue;
      auto d = j["adapters"]["lorawan"]["details"];
      if (d.is_object() && d["concentrators"].contains("AA555A0000000001") && d["joins"] == 1 && d["tx_errors"] == 1)
        return true;
    }
    return false;
  }, 15s)) << GatewayLog();
}

TEST_F(LorawanTest, AMonitorThatMissesItsReportsGoesOfflineAndComesBack) {
  StartAll();
  auto dev = LoraDevice::Abp(0x260B9999, kNwkSKey, kAppSKey, 1);
  ASSERT_TRUE(gw1->Push({MakeRxpk(dev.Uplink(kUltrasonicFPort, UltrasonicPayload(400, 40, 20.0, 3.6, false, false)), gw1->Tmst())}).ok());
  ASSERT_TRUE(WaitN("bin-quiet", "telemetry", 1));
  // Two missed 1 s reports: offline (retained status and an event), with the reason.
  ASSERT_TRUE(WaitN("bin-quiet", "event", 1, 10s));
  auto ev = Of("bin-quiet", "event")[0].payload;
  EXPECT_EQ(ev["event"], "offline");
  EXPECT_EQ(ev["state"], "active");
  // Events go out before device status (priority), so wait for the status itself.
  ASSERT_TRUE(WaitStatus("bin-quiet", false));
  ASSERT_TRUE(gw1->Push({MakeRxpk(dev.Uplink(kUltrasonicFPort, UltrasonicPayload(400, 41, 20.0, 3.6, false, false)), gw1->Tmst())}).ok());
  ASSERT_TRUE(WaitN("bin-quiet", "event", 2, 5s));
  EXPECT_EQ(Of("bin-quiet", "event")[1].payload["state"], "cleared");
  ASSERT_TRUE(WaitStatus("bin-quiet", true));
}

TEST_F(LorawanTest, MalformedDatagramsAreIgnoredWithoutHarm) {
  StartAll();
  std::vector<Bytes> junk = {
      {},
      {0x02},
      {0x02, 0x00, 0x01, 0x00},                                      // PUSH_DATA without EUI
      {0x07, 0x00, 0x01, 0x00, 1, 2, 3, 4, 5, 6, 7, 8, '{', '}'},  // unknown version
      {0x02, 0x00, 0x01, 0x09, 1, 2, 3, 4, 5, 6, 7, 8},              // unknown identifier
  };
  Bytes bad_json = {0x02, 0x00, 0x01, 0x00, 1, 2, 3, 4, 5, 6, 7, 8};
  for (char c : std::string("{\"rxpk\":[{\"tmst\":\"x\"}")) bad_json.push_back(static_cast<uint8_t>(c));
  junk.push_back(bad_json);
  Bytes bad_b64 = {0x02, 0x00, 0x02, 0x00, 1, 2, 3, 4, 5, 6, 7, 8};
  for (char c : std::string(R"({"rxpk":[{"tmst":1,"freq":486.3,"stat":1,"modu":"LORA","datr":"SF7BW125","codr":"4/5","size":3,"data":"!!!"}]})"))
    bad_b64.push_back(static_cast<uint8_t>(c));
  junk.push_back(bad_b64);
  for (const auto& j : junk) ASSERT_TRUE(gw1->SendRaw(j).ok());
  // Still serving: a valid uplink is acknowledged and published.
  auto dev = LoraDevice::Abp(kAbpAddr, kNwkSKey, kAppSKey, 1);
  ASSERT_TRUE(gw1->Push({MakeRxpk(dev.Uplink(kUltrasonicFPort, UltrasonicPayload(400, 50, 20.0, 3.6, false, false)), gw1->Tmst())}).ok());
  ASSERT_TRUE(WaitN("bin-abp", "telemetry", 1));
  EXPECT_TRUE(gateway.Running());
}

// Sites with ChirpStack: its MQTT integration (v4 JSON, `application/+/device/+/event/up`) is
// read through the same profile and events. The uplinks are published by mosquitto_pub, a real
// peer; the first one is repeated until the gateway is subscribed (its deduplicationId makes
// the repeats duplicates, which must be published once).
class ChirpstackTest : public GatewayTest {
 protected:
  void Publish(const std::string& topic, const std::string& payload) {
    int rc = Process::Run({"mosquitto_pub", "-h", "127.0.0.1", "-p", std::to_string(broker->port()), "-q", "1",
                           "-t", topic, "-m", payload},
                          std::chrono::seconds(10), {.stderr_path = path("pub.err")});
    ASSERT_TRUE(ExitedWith(rc, 0)) << ReadFile(path("pub.err"));
  }
  static std::string Uplink(const std::string& dedup, uint32_t fcnt, const Bytes& data, const std::string& eui = "0102030405060720") {
    json j = {{"deduplicationId", dedup},
              {"time", "2026-12-03T10:00:00.250+00:00"},
              {"deviceInfo", {{"tenantName", "city"}, {"applicationName", "bins"}, {"deviceName", "b"}, {"devEui", eui}}},
              {"devAddr", "01abcdef"},
              {"dr", 5},
              {"fCnt", fcnt},
              {"fPort", kUltrasonicFPort},
              {"data", Base64Encode(data)},
              {"rxInfo", json::array({{{"gatewayId", "0016c001f153a14c"}, {"rssi", -101}, {"snr", -3.5}},
                                      {{"gatewayId", "0016c001f153a14d"}, {"rssi", -87}, {"snr", 6.25}}})},
              {"txInfo", {{"frequency", 486500000}, {"modulation", {{"lora", {{"bandwidth", 125000}, {"spreadingFactor", 9}, {"codeRate", "CR_4_5"}}}}}}}};
    return j.dump();
  }
  static std::vector<Parsed> Telemetry(const std::vector<Captured>& m) { return Unique(m, "/devices/bin-cs/telemetry"); }
  std::vector<Parsed> Telemetry() const { return Telemetry(capture->Messages()); }
};

TEST_F(ChirpstackTest, UplinksFromChirpstackMqttAreDecodedByTheDeviceProfile) {
  StartBroker();
  Capture();
  WriteConfig(BaseConfig() + "[lorawan]\nlisten = \"off\"\nprofiles_dir = \"" + SourceDir() + "/config/profiles\"\n" + R"(
[lorawan.chirpstack]
topic = "application/+/device/+/event/up"

[[lorawan.devices]]
id = "bin-cs"
dev_eui = "0102030405060720"
activation = "chirpstack"
profile = "bin-monitor-ultrasonic-v1"
overflow = { metric = "fill_level_pct", active_at = 85.0, clear_below = 70.0 }
)");
  StartGateway();
  WaitGatewayOnline();
  const std::string topic = "application/7f0c/device/0102030405060720/event/up";
  const std::string first = Uplink("6f5c1c2e-0001", 41, UltrasonicPayload(300, 91, 21.5, 3.55, false, false));
  for (int i = 0; i < 50 && Telemetry().empty(); ++i) {
    Publish(topic, first);
    capture->WaitFor([&](const std::vector<Captured>& m) { return !Telemetry(m).empty(); }, 200ms);
  }
  ASSERT_EQ(Telemetry().size(), 1u) << GatewayLog();
  // Garbage, an unknown DevEUI, a repeat of the first, then the next uplink.
  Publish(topic, "{not json");
  Publish(topic, R"({"deduplicationId":"x","fCnt":1,"fPort":2,"data":"!!"})");
  Publish("application/7f0c/device/0102030405069999/event/up",
          Uplink("6f5c1c2e-0002", 1, UltrasonicPayload(300, 10, 21.5, 3.55, false, false), "0102030405069999"));
  Publish(topic, first);
  Publish(topic, Uplink("6f5c1c2e-0003", 43, UltrasonicPayload(1500, 40, 22.0, 3.54, false, false)));
  ASSERT_TRUE(capture->WaitFor([&](const std::vector<Captured>& m) { return Telemetry(m).size() >= 2; }, 10s)) << GatewayLog();
  auto t = Telemetry();
  ASSERT_EQ(t.size(), 2u);
  auto r = t[0].payload;
  EXPECT_EQ(r["ts"], 1796292000250);  // ChirpStack's receive time
  EXPECT_EQ(r["kind"], "bin");
  EXPECT_EQ(r["metrics"]["fill_level_pct"], 91);
  EXPECT_DOUBLE_EQ(r["metrics"]["temperature_c"].get<double>(), 21.5);
  EXPECT_EQ(r["source"]["protocol"], "lorawan");
  EXPECT_EQ(r["source"]["network_server"], "chirpstack");
  EXPECT_EQ(r["source"]["concentrator"], "0016c001f153a14d");
  EXPECT_DOUBLE_EQ(r["source"]["rssi_dbm"].get<double>(), -87);
  EXPECT_DOUBLE_EQ(r["source"]["snr_db"].get<double>(), 6.25);
  EXPECT_EQ(r["source"]["frequency_hz"], 486500000);
  EXPECT_EQ(r["source"]["data_rate"], "SF9BW125");
  EXPECT_EQ(r["source"]["concentrators"], 2);
  EXPECT_EQ(r["source"]["fcnt"], 41);
  auto second = t[1].payload;
  EXPECT_EQ(second["metrics"]["fill_level_pct"], 40);
  EXPECT_EQ(second["source"]["frames_lost"], 1);  // fCnt 42 never arrived
  // The overflow rule of the device entry applies: active at 91, cleared at 40.
  ASSERT_TRUE(capture->WaitFor([&](const std::vector<Captured>& m) { return Unique(m, "/devices/bin-cs/event").size() >= 2; }, 10s));
  auto ev = Unique(capture->Messages(), "/devices/bin-cs/event");
  EXPECT_EQ(ev[0].payload["event"], "overflow");
  EXPECT_EQ(ev[0].payload["state"], "active");
  EXPECT_EQ(ev[1].payload["state"], "cleared");
  EXPECT_TRUE(gateway.Running());
  ExpectPayloadsMatchSchemas();
}

}  // namespace
}  // namespace sanigate::test
