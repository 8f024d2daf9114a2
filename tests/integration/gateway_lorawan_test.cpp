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

  // `section` adds [lorawan] settings, `devices` more [[lorawan.devices]] entries.
  void StartAll(const std::string& section = "", const std::string& devices = "") {
    StartBroker();
    Capture();
    port = FreeTcpPort();  // a free TCP port number is very likely free for UDP too
    WriteConfig(BaseConfig() + "[lorawan]\nlisten = \"127.0.0.1:" + std::to_string(port) +
                "\"\ndedup_window_ms = 150\nprofiles_dir = \"" + SourceDir() + "/config/profiles\"\n" + section + R"(
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
)" + devices);
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
  // Waits until a gateway status shows LoRaWAN details for which `ok` holds; returns them.
  json WaitDetails(const std::function<bool(const json&)>& ok, std::chrono::milliseconds t = 15s) {
    json found;
    capture->WaitFor([&](const std::vector<Captured>& m) {
      for (const auto& c : m) {
        if (c.topic.find("/gateway/gw-test/status") == std::string::npos) continue;
        json j = json::parse(c.payload, nullptr, false);
        if (j.is_discarded() || !j.contains("adapters") || !j["adapters"].contains("lorawan")) continue;
        json d = j["adapters"]["lorawan"]["details"];
        if (d.is_object() && ok(d)) {
          found = d;
          return true;
        }
      }
      return false;
    }, t);
    return found;
  }
  // The source.fcnt of every telemetry message of `device`, in arrival order (same id once).
  std::vector<int64_t> Fcnts(const std::string& device) const {
    std::vector<int64_t> out;
    for (const auto& p : Of(device, "telemetry")) out.push_back(p.payload["source"]["fcnt"].get<int64_t>());
    return out;
  }
  // The gateway after a restart: the UDP port answers again.
  void Repull(Concentrator& c) {
    bool pulled = false;
    for (int i = 0; i < 20 && !pulled; ++i) pulled = c.Pull(500ms).ok();
    ASSERT_TRUE(pulled) << GatewayLog();
  }
  // A command for `device` as an MQTT 5 request; its answer goes to sanigate/v1/houpu/replies/{reply}.
  void Command(const std::string& device, const std::string& name, const std::string& payload, const std::string& reply) {
    capture->Publish("sanigate/v1/houpu/devices/" + device + "/cmd/" + name, payload, "sanigate/v1/houpu/replies/" + reply);
  }
  // The answer on replies/{reply}, or null after `t`.
  json WaitReply(const std::string& reply, std::chrono::milliseconds t = 10s) {
    json found;
    capture->WaitFor([&](const std::vector<Captured>& m) {
      for (const auto& c : m)
        if (c.topic == "sanigate/v1/houpu/replies/" + reply) {
          found = json::parse(c.payload, nullptr, false);
          return true;
        }
      return false;
    }, t);
    return found;
  }
  // An unconfirmed uplink of `dev` heard by gw1 at `tmst`, with the ACK bit when `ack`.
  void UplinkVia1(LoraDevice& dev, uint32_t tmst, bool ack = false) {
    dev.set_ack_next(ack);
    ASSERT_TRUE(gw1->Push({MakeRxpk(dev.Uplink(kUltrasonicFPort, UltrasonicPayload(500, 60, 20.0, 3.6, false, false)), tmst)}).ok());
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

  // Issue 15 item 7: the frame of 0xFFFF played again after the wrap is a genuine replay: its
  // MIC verifies under its own counter, and the log must not call it a forgery.
  dev.set_fcnt_up(0xFFFF);
  Bytes before_wrap = dev.Uplink(kUltrasonicFPort, UltrasonicPayload(501, 30, 20.0, 3.6, false, false));
  dev.set_fcnt_up(0x10001);
  HearTwice(dev.Uplink(kUltrasonicFPort, UltrasonicPayload(503, 30, 20.0, 3.6, false, false)));
  ASSERT_TRUE(WaitN("bin-abp", "telemetry", 4));
  ASSERT_TRUE(gw1->Push({MakeRxpk(before_wrap, gw1->Tmst())}).ok());
  auto d = WaitDetails([](const json& d) { return d.value("replays", -1) == 1; });
  EXPECT_EQ(d["replays"], 1) << d.dump();
  EXPECT_EQ(d["bad_mic"], 0) << d.dump();
  std::string log = GatewayLog();
  EXPECT_NE(log.find("replayed frame (counter 65535 is behind"), std::string::npos) << log;
  EXPECT_EQ(log.find("MIC is wrong"), std::string::npos) << log;
  EXPECT_EQ(Fcnts("bin-abp"), (std::vector<int64_t>{0xFFFE, 0xFFFF, 0x10000, 0x10001}));
}

// Issue 15 item 1: the FCntDown of an ACK and the FCntUp of the uplink it acknowledges are on
// disk before the ACK leaves. kill -9 right after the ACK: the device's retransmission (it
// missed the ACK) is acknowledged again with a fresh FCntDown and is not published again under
// a new id; an older uplink played again is a replay.
TEST_F(LorawanTest, Kill9RightAfterAnAckNeitherReusesFCntDownNorRepublishes) {
  StartAll();
  auto dev = LoraDevice::Abp(kAbpAddr, kNwkSKey, kAppSKey, 5);
  Bytes unconfirmed = dev.Uplink(kUltrasonicFPort, UltrasonicPayload(400, 40, 20.0, 3.6, false, false));
  ASSERT_TRUE(gw1->Push({MakeRxpk(unconfirmed, gw1->Tmst())}).ok());
  ASSERT_TRUE(WaitN("bin-abp", "telemetry", 1));
  uint32_t tmst = gw1->Tmst();
  Bytes confirmed = dev.Uplink(kUltrasonicFPort, UltrasonicPayload(390, 41, 20.0, 3.6, false, false), true);
  ASSERT_TRUE(gw1->Push({MakeRxpk(confirmed, tmst)}).ok());
  auto ack = gw1->WaitDownlink(5s);
  ASSERT_TRUE(ack.has_value()) << GatewayLog();
  gateway.Kill();  // SIGKILL the moment the ACK is out
  auto first = dev.OpenDownlink(ack->data);
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  EXPECT_TRUE(first->ack);

  StartGateway();
  Repull(*gw1);
  // The device missed that ACK over the air: it sends the same frame again.
  ASSERT_TRUE(gw1->Push({MakeRxpk(confirmed, gw1->Tmst())}).ok());
  auto again = gw1->WaitDownlink(5s);
  ASSERT_TRUE(again.has_value()) << GatewayLog();
  auto second = dev.OpenDownlink(again->data);
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  EXPECT_TRUE(second->ack);
  EXPECT_FALSE(second->repeat) << "FCntDown " << second->fcnt << " reused after kill -9";
  EXPECT_GT(second->fcnt, first->fcnt);
  // The older unconfirmed uplink played again, then the next confirmed one.
  ASSERT_TRUE(gw1->Push({MakeRxpk(unconfirmed, gw1->Tmst())}).ok());
  ASSERT_TRUE(gw1->Push({MakeRxpk(dev.Uplink(kUltrasonicFPort, UltrasonicPayload(380, 42, 20.0, 3.6, false, false), true), gw1->Tmst())}).ok());
  auto third_dl = gw1->WaitDownlink(5s);
  ASSERT_TRUE(third_dl.has_value()) << GatewayLog();
  auto third = dev.OpenDownlink(third_dl->data);
  ASSERT_TRUE(third.ok()) << third.status().ToString();
  EXPECT_GT(third->fcnt, second->fcnt);
  ASSERT_TRUE(capture->WaitFor([&](const std::vector<Captured>& m) {
    for (const auto& p : Unique(m, "/devices/bin-abp/telemetry"))
      if (p.payload["source"]["fcnt"] == 7) return true;
    return false;
  }, 10s)) << GatewayLog();
  // Every reading once: a re-accepted uplink would show up again under a new id.
  EXPECT_EQ(Fcnts("bin-abp"), (std::vector<int64_t>{5, 6, 7}));
}

// Issue 15 item 1, the last part: an unconfirmed uplink is committed with its reading at once,
// but the session file catches up only within a second. A kill -9 in that second used to make the
// uplink's next copy (a repetition, a late concentrator) a new uplink, published again under a new
// id. Its counter is now committed with the reading. Each round checks the session file to know
// the kill fell in that second; rounds that missed it are tried again (bounded).
TEST_F(LorawanTest, Kill9BeforeTheSessionFileIsWrittenDoesNotRepublishAStoredUplink) {
  StartAll();
  auto dev = LoraDevice::Abp(kAbpAddr, kNwkSKey, kAppSKey, 20);
  const std::string sessions = path("data/lorawan-sessions.json");
  auto file_fcnt = [&]() -> int64_t {
    json j = json::parse(ReadFile(sessions), nullptr, false);
    if (j.is_discarded()) return -1;
    json v = j["devices"]["0102030405060709"]["fcnt_up"];
    return v.is_number() ? v.get<int64_t>() : -1;
  };
  int hits = 0;
  std::vector<int64_t> sent;
  for (int round = 0; round < 8 && hits < 2; ++round) {
    Bytes up = dev.Uplink(kUltrasonicFPort, UltrasonicPayload(400 - round, 40 + round, 20.0, 3.6, false, false));
    int64_t fcnt = 20 + round;
    sent.push_back(fcnt);
    ASSERT_TRUE(gw1->Push({MakeRxpk(up, gw1->Tmst())}).ok());
    ASSERT_TRUE(capture->WaitFor([&](const std::vector<Captured>& m) {
      for (const auto& p : Unique(m, "/devices/bin-abp/telemetry"))
        if (p.payload["source"]["fcnt"] == fcnt) return true;
      return false;
    }, 10s)) << GatewayLog();
    gateway.Kill();  // published, so committed; the session file may still hold the last counter
    bool in_window = file_fcnt() < fcnt;
    hits += in_window;
    StartGateway();
    Repull(*gw1);
    // The same frame again, as a repetition or a late copy would bring it.
    ASSERT_TRUE(gw1->Push({MakeRxpk(up, gw1->Tmst())}).ok());
    std::this_thread::sleep_for(600ms);  // four de-duplication windows: a re-accepted copy is out by now
  }
  ASSERT_GE(hits, 1) << "no kill fell before the session file was written; nothing was tested";
  // The next uplink goes through, and every reading was published once.
  ASSERT_TRUE(gw1->Push({MakeRxpk(dev.Uplink(kUltrasonicFPort, UltrasonicPayload(300, 50, 20.0, 3.6, false, false)), gw1->Tmst())}).ok());
  int64_t last = sent.back() + 1;
  sent.push_back(last);
  ASSERT_TRUE(capture->WaitFor([&](const std::vector<Captured>& m) {
    for (const auto& p : Unique(m, "/devices/bin-abp/telemetry"))
      if (p.payload["source"]["fcnt"] == last) return true;
    return false;
  }, 10s)) << GatewayLog();
  EXPECT_EQ(Fcnts("bin-abp"), sent) << "a stored uplink came back under a new id after kill -9 (" << hits << " kills in the window)";
}

// Issue 15 item 2: a copy with the same DevAddr and FCnt but another payload and a wrong MIC,
// heard louder by a second concentrator inside the window, is a forgery: counted as bad_mic,
// never merged, never the "best copy", and the ACK does not go through it.
TEST_F(LorawanTest, AForgedCopyNeverWinsDeduplication) {
  StartAll();
  auto dev = LoraDevice::Abp(kAbpAddr, kNwkSKey, kAppSKey, 20);
  Bytes real = dev.Uplink(kUltrasonicFPort, UltrasonicPayload(800, 33, 20.0, 3.6, false, false), true);
  Bytes forged = dev.ForgedCopy(UltrasonicPayload(10, 99, 20.0, 3.6, false, false));
  ASSERT_FALSE(forged.empty());
  ASSERT_EQ(forged.size(), real.size());
  ASSERT_TRUE(gw1->Push({MakeRxpk(real, gw1->Tmst(), 486'300'000, -110, -5.0)}).ok());
  ASSERT_TRUE(gw2->Push({MakeRxpk(forged, gw2->Tmst(), 486'300'000, -40, 12.0)}).ok());
  auto ack = gw1->WaitDownlink(5s);
  ASSERT_TRUE(ack.has_value()) << "the ACK went elsewhere\n" << GatewayLog();
  EXPECT_TRUE(dev.OpenDownlink(ack->data).ok());
  EXPECT_FALSE(gw2->WaitDownlink(300ms).has_value());
  ASSERT_TRUE(WaitN("bin-abp", "telemetry", 1));
  auto r = Of("bin-abp", "telemetry")[0].payload;
  EXPECT_EQ(r["metrics"]["fill_level_pct"], 33);
  EXPECT_EQ(r["source"]["concentrator"], "AA555A0000000001");
  EXPECT_EQ(r["source"]["concentrators"], 1);
  EXPECT_DOUBLE_EQ(r["source"]["rssi_dbm"].get<double>(), -110);
  auto d = WaitDetails([](const json& d) { return d.value("uplinks", -1) == 1 && d.value("bad_mic", -1) == 1; });
  EXPECT_EQ(d["bad_mic"], 1) << d.dump();
  EXPECT_EQ(d["duplicates"], 0) << d.dump();
  // A byte-identical copy is still a copy.
  Bytes next = dev.Uplink(kUltrasonicFPort, UltrasonicPayload(700, 35, 20.0, 3.6, false, false));
  HearTwice(next);
  ASSERT_TRUE(WaitN("bin-abp", "telemetry", 2));
  EXPECT_EQ(Of("bin-abp", "telemetry")[1].payload["source"]["concentrators"], 2);
}

// Issue 15 item 3: a PUSH_DATA whose rxpk array holds one bad entry between two good uplinks
// is acknowledged, both uplinks are published, and the bad entry is counted as malformed.
TEST_F(LorawanTest, OneBadRxpkKeepsTheDatagramsGoodUplinksAndItsPushAck) {
  StartAll();
  auto dev = LoraDevice::Abp(kAbpAddr, kNwkSKey, kAppSKey, 30);
  Bytes a = dev.Uplink(kUltrasonicFPort, UltrasonicPayload(600, 50, 20.0, 3.6, false, false));
  Bytes b = dev.Uplink(kUltrasonicFPort, UltrasonicPayload(590, 51, 20.0, 3.6, false, false));
  auto acked = gw1->PushEntries({RxpkJson(MakeRxpk(a, gw1->Tmst())), R"({"tmst":"soon","data":"\u0000"})",
                                 RxpkJson(MakeRxpk(b, gw1->Tmst()))});
  ASSERT_TRUE(acked.ok()) << acked.status().ToString();
  ASSERT_TRUE(WaitN("bin-abp", "telemetry", 2)) << GatewayLog();
  EXPECT_EQ(Fcnts("bin-abp"), (std::vector<int64_t>{30, 31}));
  auto d = WaitDetails([](const json& d) { return d.value("malformed", -1) == 1 && d.value("uplinks", -1) == 2; });
  EXPECT_EQ(d["malformed"], 1) << d.dump();
  EXPECT_NE(GatewayLog().find("rxpk[1].tmst"), std::string::npos);
}

// Issue 15 item 4: neighbours' traffic (a DevAddr no device here has) is counted as
// unknown_devices, apart from bad_mic, which keeps meaning "forged or wrong keys".
TEST_F(LorawanTest, UnknownDevAddrIsCountedApartFromBadMic) {
  StartAll();
  auto stranger = LoraDevice::Abp(0x01020304, kNwkSKey, kAppSKey, 1);
  for (int i = 0; i < 3; ++i)
    ASSERT_TRUE(gw1->Push({MakeRxpk(stranger.Uplink(kUltrasonicFPort, UltrasonicPayload(1, 1, 1, 3.6, false, false)), gw1->Tmst())}).ok());
  auto forged = LoraDevice::Abp(kAbpAddr, kAppSKey, kAppSKey, 1);  // our DevAddr, a wrong key
  ASSERT_TRUE(gw1->Push({MakeRxpk(forged.Uplink(kUltrasonicFPort, UltrasonicPayload(1, 1, 1, 3.6, false, false)), gw1->Tmst())}).ok());
  auto d = WaitDetails([](const json& d) { return d.value("unknown_devices", 0) + d.value("bad_mic", 0) >= 4; });
  EXPECT_EQ(d["unknown_devices"], 3) << d.dump();
  EXPECT_EQ(d["bad_mic"], 1) << d.dump();
}

// Issue 15 item 5: an ABP device past 65,535 with no stored session (fresh install, lost state
// file) is found in the next 16-bit epochs.
TEST_F(LorawanTest, AbpCounterPastTheFirstEpochIsFoundWithoutAStoredSession) {
  StartAll();
  auto dev = LoraDevice::Abp(kAbpAddr, kNwkSKey, kAppSKey, 70000);
  ASSERT_TRUE(gw1->Push({MakeRxpk(dev.Uplink(kUltrasonicFPort, UltrasonicPayload(500, 20, 20.0, 3.6, false, false)), gw1->Tmst())}).ok());
  ASSERT_TRUE(WaitN("bin-abp", "telemetry", 1)) << GatewayLog();
  // From there on the counter runs as usual.
  ASSERT_TRUE(gw1->Push({MakeRxpk(dev.Uplink(kUltrasonicFPort, UltrasonicPayload(500, 22, 20.0, 3.6, false, false)), gw1->Tmst())}).ok());
  ASSERT_TRUE(WaitN("bin-abp", "telemetry", 2)) << GatewayLog();
  EXPECT_EQ(Fcnts("bin-abp"), (std::vector<int64_t>{70000, 70001}));
}

// Issue 15 item 5: ... and one far beyond the search by its counter seeded in the config.
TEST_F(LorawanTest, AbpCounterSeededInTheConfigIsFoundFarBeyondTheSearch) {
  StartAll("", R"(
[[lorawan.devices]]
id = "bin-seeded"
dev_eui = "010203040506070B"
activation = "abp"
dev_addr = "260B5555"
nwk_s_key = "2B7E151628AED2A6ABF7158809CF4F3C"
app_s_key = "000102030405060708090A0B0C0D0E0F"
profile = "bin-monitor-ultrasonic-v1"
fcnt_up_start = 5242880
)");
  auto seeded = LoraDevice::Abp(0x260B5555, kNwkSKey, kAppSKey, 0x500010);
  ASSERT_TRUE(gw1->Push({MakeRxpk(seeded.Uplink(kUltrasonicFPort, UltrasonicPayload(500, 21, 20.0, 3.6, false, false)), gw1->Tmst())}).ok());
  ASSERT_TRUE(WaitN("bin-seeded", "telemetry", 1)) << GatewayLog();
  EXPECT_EQ(Fcnts("bin-seeded"), (std::vector<int64_t>{0x500010}));
  // A frame from below the seed is an old one.
  seeded.set_fcnt_up(0x4FFFF0);
  ASSERT_TRUE(gw1->Push({MakeRxpk(seeded.Uplink(kUltrasonicFPort, UltrasonicPayload(500, 22, 20.0, 3.6, false, false)), gw1->Tmst())}).ok());
  auto d = WaitDetails([](const json& d) { return d.value("replays", -1) == 1; });
  EXPECT_EQ(d["replays"], 1) << d.dump();
  EXPECT_EQ(Fcnts("bin-seeded"), (std::vector<int64_t>{0x500010}));
}

// Issue 15 item 6: a jump past the 1.0.3 MAX_FCNT_GAP (the default) is dropped, counted and
// logged with the setting that changes it.
TEST_F(LorawanTest, CounterGapDropsAreCountedAndLogged) {
  StartAll();
  auto dev = LoraDevice::Abp(kAbpAddr, kNwkSKey, kAppSKey, 10);
  ASSERT_TRUE(gw1->Push({MakeRxpk(dev.Uplink(kUltrasonicFPort, UltrasonicPayload(500, 10, 20.0, 3.6, false, false)), gw1->Tmst())}).ok());
  dev.set_fcnt_up(20010);
  ASSERT_TRUE(gw1->Push({MakeRxpk(dev.Uplink(kUltrasonicFPort, UltrasonicPayload(500, 11, 20.0, 3.6, false, false)), gw1->Tmst())}).ok());
  auto d = WaitDetails([](const json& d) { return d.value("fcnt_gap_drops", -1) == 1; });
  EXPECT_EQ(d["fcnt_gap_drops"], 1) << d.dump();
  EXPECT_EQ(d["bad_mic"], 0) << d.dump();
  EXPECT_EQ(Fcnts("bin-abp"), (std::vector<int64_t>{10}));
  std::string log = GatewayLog();
  EXPECT_NE(log.find("bin-abp: frame counter 20010 is 20000 ahead of 10"), std::string::npos) << log;
  EXPECT_NE(log.find("max_fcnt_gap"), std::string::npos) << log;
}

// Issue 15 item 6: the counter gap limit follows the device's LoRaWAN version (16,384 up to
// 1.0.3, none in 1.0.4) or its own max_fcnt_gap.
TEST_F(LorawanTest, CounterGapLimitFollowsTheVersionOrTheSetting) {
  StartAll("", R"(
[[lorawan.devices]]
id = "bin-104"
dev_eui = "010203040506070C"
activation = "abp"
dev_addr = "260B7777"
nwk_s_key = "2B7E151628AED2A6ABF7158809CF4F3C"
app_s_key = "000102030405060708090A0B0C0D0E0F"
profile = "bin-monitor-ultrasonic-v1"
lorawan_version = "1.0.4"

[[lorawan.devices]]
id = "bin-wide"
dev_eui = "010203040506070D"
activation = "abp"
dev_addr = "260B8888"
nwk_s_key = "2B7E151628AED2A6ABF7158809CF4F3C"
app_s_key = "000102030405060708090A0B0C0D0E0F"
profile = "bin-monitor-ultrasonic-v1"
max_fcnt_gap = 30000
)");
  auto p = [](int fill) { return UltrasonicPayload(500, fill, 20.0, 3.6, false, false); };
  auto v104 = LoraDevice::Abp(0x260B7777, kNwkSKey, kAppSKey, 10);
  auto wide = LoraDevice::Abp(0x260B8888, kNwkSKey, kAppSKey, 10);
  for (auto* d : {&v104, &wide}) {
    ASSERT_TRUE(gw1->Push({MakeRxpk(d->Uplink(kUltrasonicFPort, p(10)), gw1->Tmst())}).ok());
    d->set_fcnt_up(20010);  // 19,999 frames lost
    ASSERT_TRUE(gw1->Push({MakeRxpk(d->Uplink(kUltrasonicFPort, p(11)), gw1->Tmst())}).ok());
  }
  ASSERT_TRUE(WaitN("bin-104", "telemetry", 2)) << GatewayLog();
  ASSERT_TRUE(WaitN("bin-wide", "telemetry", 2)) << GatewayLog();
  EXPECT_EQ(Fcnts("bin-104"), (std::vector<int64_t>{10, 20010}));
  EXPECT_EQ(Of("bin-104", "telemetry")[1].payload["source"]["frames_lost"], 19999);
  EXPECT_EQ(Fcnts("bin-wide"), (std::vector<int64_t>{10, 20010}));
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

// Downlink commands (issue 15): a profile command queued over MQTT 5 goes out in the RX1 window
// after the device's next uplink, with a fresh FCntDown and a MIC the device verifies; the
// simulated monitor applies it and the reply comes back when the TX_ACK does.
TEST_F(LorawanTest, QueuedSetIntervalReachesTheDeviceInRx1AndTheReplyComesBack) {
  StartAll();
  auto dev = LoraDevice::Abp(kAbpAddr, kNwkSKey, kAppSKey, 10);
  // A confirmed uplink first: its ACK uses FCntDown 0, so the command must take a fresh one.
  uint32_t t0 = gw1->Tmst();
  ASSERT_TRUE(gw1->Push({MakeRxpk(dev.Uplink(kUltrasonicFPort, UltrasonicPayload(400, 50, 20.0, 3.6, false, false), true), t0)}).ok());
  auto ack = gw1->WaitDownlink(5s);
  ASSERT_TRUE(ack.has_value()) << GatewayLog();
  auto ack_info = dev.OpenDownlink(ack->data);
  ASSERT_TRUE(ack_info.ok()) << ack_info.status().ToString();
  EXPECT_FALSE(ack_info->fport.has_value());

  Command("bin-abp", "set_interval", R"({"args":["600"]})", "r1");
  // Queued, visible in the gateway status, nothing sent before the device speaks.
  json d = WaitDetails([](const json& d) { return d.contains("downlink_queue") && d["downlink_queue"].contains("bin-abp"); });
  ASSERT_FALSE(d.is_null()) << GatewayLog();
  EXPECT_EQ(d["downlink_queue"]["bin-abp"][0]["command"], "set_interval");
  EXPECT_EQ(d["downlink_queue"]["bin-abp"][0]["state"], "queued");
  EXPECT_FALSE(gw1->WaitDownlink(300ms).has_value());
  EXPECT_TRUE(WaitReply("r1", 100ms).is_null());

  uint32_t t1 = gw1->Tmst();
  UplinkVia1(dev, t1);
  auto down = gw1->WaitDownlink(5s);
  ASSERT_TRUE(down.has_value()) << GatewayLog();
  EXPECT_EQ(down->tmst, t1 + 1'000'000u);  // RX1
  EXPECT_EQ(down->freq_hz, 506'700'000u);
  EXPECT_TRUE(down->ipol);
  auto info = dev.OpenDownlink(down->data);  // MIC checked with the NwkSKey, FCntDown rebuilt
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  EXPECT_EQ(info->mtype, MType::kUnconfirmedDown);
  EXPECT_EQ(info->fcnt, ack_info->fcnt + 1);
  EXPECT_FALSE(info->repeat);
  // The MIC again, by hand: B0 with Dir = 1 and the 32-bit FCntDown.
  auto f = ParseDataFrame(down->data);
  ASSERT_TRUE(f.ok());
  auto mic = ComputeDataMic(kNwkSKey, Direction::kDown, kAbpAddr, info->fcnt, f->mic_input);
  ASSERT_TRUE(mic.ok());
  EXPECT_EQ(*mic, f->mic);
  ASSERT_EQ(info->fport, kUltrasonicCommandFPort);
  EXPECT_EQ(ToHex(info->payload), "0100000258");
  BinMonitorSettings settings;
  auto applied = ApplyBinMonitorCommand(BinMonitorModel::kUltrasonic, *info->fport, info->payload, settings);
  ASSERT_TRUE(applied.ok()) << applied.status().ToString();
  EXPECT_EQ(settings.interval_s, 600u);

  json reply = WaitReply("r1");
  ASSERT_FALSE(reply.is_null()) << GatewayLog();
  EXPECT_EQ(reply["ok"], true) << reply.dump();
  EXPECT_EQ(reply["result"]["fcnt_down"], info->fcnt);
  EXPECT_EQ(reply["result"]["window"], "rx1");
  EXPECT_EQ(reply["result"]["fport"], 3);
  EXPECT_EQ(reply["result"]["concentrator"], "AA555A0000000001");
  // Done: the next uplink carries nothing back.
  UplinkVia1(dev, gw1->Tmst());
  EXPECT_FALSE(gw1->WaitDownlink(1500ms).has_value());
  ASSERT_FALSE(WaitDetails([](const json& d) { return d["commands"]["ok"] == 1 && d["downlink_queue"].empty(); }).is_null());
}

TEST_F(LorawanTest, UnacknowledgedConfirmedDownlinkIsRetriedThenFailsAndAnAckedOneSucceeds) {
  StartAll("downlink_max_attempts = 2\n");
  auto dev = LoraDevice::Abp(kAbpAddr, kNwkSKey, kAppSKey, 100);
  Command("bin-abp", "downlink", R"({"args":["port=10","hex=0102","confirmed"]})", "c1");
  ASSERT_FALSE(WaitDetails([](const json& d) { return d["downlink_queue"].contains("bin-abp"); }).is_null());
  std::optional<uint32_t> last_fcnt;
  for (int attempt = 1; attempt <= 2; ++attempt) {
    uint32_t t = gw1->Tmst();
    UplinkVia1(dev, t);  // never the ACK bit
    auto down = gw1->WaitDownlink(5s);
    ASSERT_TRUE(down.has_value()) << "attempt " << attempt << "\n" << GatewayLog();
    EXPECT_EQ(down->tmst, t + 1'000'000u);
    auto info = dev.OpenDownlink(down->data);
    ASSERT_TRUE(info.ok()) << info.status().ToString();
    EXPECT_EQ(info->mtype, MType::kConfirmedDown);
    EXPECT_EQ(info->fport, 10);
    EXPECT_EQ(ToHex(info->payload), "0102");
    if (last_fcnt) {
      EXPECT_GT(info->fcnt, *last_fcnt);  // each attempt a fresh FCntDown
    }
    last_fcnt = info->fcnt;
    EXPECT_TRUE(WaitReply("c1", 200ms).is_null());
  }
  UplinkVia1(dev, gw1->Tmst());  // still no ACK: given up
  json reply = WaitReply("c1");
  ASSERT_FALSE(reply.is_null()) << GatewayLog();
  EXPECT_EQ(reply["ok"], false);
  EXPECT_NE(reply["error"].get<std::string>().find("not acknowledged by the device after 2 transmissions"), std::string::npos)
      << reply.dump();
  EXPECT_FALSE(gw1->WaitDownlink(1500ms).has_value());

  // The profile's reboot is confirmed by default: the device's ACK bit completes it.
  Command("bin-abp", "reboot", "", "c2");
  ASSERT_FALSE(WaitDetails([](const json& d) { return d["downlink_queue"].contains("bin-abp"); }).is_null());
  UplinkVia1(dev, gw1->Tmst());
  auto down = gw1->WaitDownlink(5s);
  ASSERT_TRUE(down.has_value()) << GatewayLog();
  auto info = dev.OpenDownlink(down->data);
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->mtype, MType::kConfirmedDown);
  EXPECT_GT(info->fcnt, *last_fcnt);
  BinMonitorSettings settings;
  ASSERT_TRUE(ApplyBinMonitorCommand(BinMonitorModel::kUltrasonic, *info->fport, info->payload, settings).ok());
  EXPECT_EQ(settings.reboots, 1u);
  EXPECT_TRUE(WaitReply("c2", 300ms).is_null());  // sent, not yet acknowledged
  UplinkVia1(dev, gw1->Tmst(), true);
  reply = WaitReply("c2");
  ASSERT_FALSE(reply.is_null()) << GatewayLog();
  EXPECT_EQ(reply["ok"], true) << reply.dump();
  EXPECT_EQ(reply["result"]["acked"], true);
  EXPECT_EQ(reply["result"]["attempts"], 1);
}

TEST_F(LorawanTest, DownlinkCommandsExpireFailOnTxErrorsAndAreRefusedWhenBad) {
  StartAll();
  auto dev = LoraDevice::Abp(kAbpAddr, kNwkSKey, kAppSKey, 200);
  // Bad requests are answered at once, with what is wrong.
  Command("bin-abp", "set_interval", R"({"args":["5"]})", "b1");
  json r = WaitReply("b1");
  ASSERT_FALSE(r.is_null());
  EXPECT_EQ(r["ok"], false);
  EXPECT_NE(r["error"].get<std::string>().find("outside 10..86400"), std::string::npos) << r.dump();
  Command("bin-abp", "open_lid", "", "b2");
  r = WaitReply("b2");
  EXPECT_NE(r["error"].get<std::string>().find("set_interval"), std::string::npos) << r.dump();
  Command("bin-abp", "downlink", R"({"args":["port=0","hex=01"]})", "b3");
  EXPECT_EQ(WaitReply("b3")["ok"], false);
  Command("bin-abp", "downlink", R"({"args":["10","zz"]})", "b4");
  EXPECT_EQ(WaitReply("b4")["ok"], false);

  // No uplink before the request's timeout: expired, with a clear error.
  Command("bin-abp", "set_overflow_threshold", R"({"args":["85"],"timeout_ms":1500})", "e1");
  r = WaitReply("e1", 6s);
  ASSERT_FALSE(r.is_null()) << GatewayLog();
  EXPECT_EQ(r["ok"], false);
  EXPECT_NE(r["error"].get<std::string>().find("expired: no downlink window"), std::string::npos) << r.dump();

  // The concentrator refuses RX1 and RX2: failed.
  Command("bin-abp", "downlink", R"({"args":["10","0A0B"]})", "t1");
  ASSERT_FALSE(WaitDetails([](const json& d) { return d["downlink_queue"].contains("bin-abp"); }).is_null());
  gw1->set_tx_ack(TxAckError::kTooLate);
  uint32_t t = gw1->Tmst();
  UplinkVia1(dev, t);
  auto rx1 = gw1->WaitDownlink(5s);
  auto rx2 = gw1->WaitDownlink(5s);
  ASSERT_TRUE(rx1.has_value() && rx2.has_value()) << GatewayLog();
  EXPECT_EQ(rx2->tmst, t + 2'000'000u);  // RX2
  EXPECT_EQ(rx2->data, rx1->data);
  r = WaitReply("t1");
  ASSERT_FALSE(r.is_null()) << GatewayLog();
  EXPECT_EQ(r["ok"], false);
  EXPECT_NE(r["error"].get<std::string>().find("refused the downlink"), std::string::npos) << r.dump();
}

TEST_F(LorawanTest, QueuedDownlinkSurvivesARestart) {
  StartAll();
  auto dev = LoraDevice::Abp(kAbpAddr, kNwkSKey, kAppSKey, 300);
  Command("bin-abp", "set_interval", R"({"args":["seconds=900"]})", "p1");
  ASSERT_FALSE(WaitDetails([](const json& d) { return d["downlink_queue"].contains("bin-abp"); }).is_null());
  gateway.Stop(5s);
  json r = WaitReply("p1", 2s);
  ASSERT_FALSE(r.is_null());
  EXPECT_NE(r["error"].get<std::string>().find("stays queued"), std::string::npos) << r.dump();
  StartGateway();
  Repull(*gw1);
  uint32_t t = gw1->Tmst();
  UplinkVia1(dev, t);
  auto down = gw1->WaitDownlink(5s);
  ASSERT_TRUE(down.has_value()) << GatewayLog();
  auto info = dev.OpenDownlink(down->data);
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  EXPECT_EQ(ToHex(info->payload), "0100000384");
  EXPECT_NE(GatewayLog().find("1 queued downlink(s) restored"), std::string::npos);
}

// Issue 15: the queue is visible in sanictl (from the gateway's retained status, so a technician
// sees it without sanifleet), as a table and as JSON; `downlinks DEVICE` filters.
TEST_F(LorawanTest, SanictlShowsTheQueuedCommands) {
  StartAll();
  std::ofstream(path("sanictl.toml")) << "[mqtt]\nurl = \"" << broker->url() << "\"\n\n[ctl]\nsite = \"houpu\"\n";
  auto ctl = [&](std::vector<std::string> args) {
    std::vector<std::string> argv = {SANICTL_BIN, "--config", path("sanictl.toml")};
    argv.insert(argv.end(), args.begin(), args.end());
    int rc = Process::Run(argv, 30s, {.stdout_path = path("ctl.out"), .stderr_path = path("ctl.err")});
    EXPECT_TRUE(ExitedWith(rc, 0)) << DescribeWaitStatus(rc) << ReadFile(path("ctl.err"));
    return ReadFile(path("ctl.out"));
  };
  EXPECT_NE(ctl({"downlinks"}).find("no LoRaWAN commands are waiting"), std::string::npos);
  Command("bin-abp", "set_interval", R"({"args":["seconds=900"]})", "q1");
  Command("bin-abp", "downlink", R"({"args":["port=5","hex=0102","confirmed"]})", "q2");
  ASSERT_FALSE(WaitDetails([](const json& d) {
                 return d["downlink_queue"].contains("bin-abp") && d["downlink_queue"]["bin-abp"].size() == 2;
               }).is_null()) << GatewayLog();
  std::string table = ctl({"downlinks"});
  EXPECT_NE(table.find("GATEWAY"), std::string::npos) << table;
  EXPECT_NE(table.find("set_interval"), std::string::npos) << table;
  EXPECT_NE(table.find("bin-abp"), std::string::npos) << table;
  EXPECT_NE(table.find("queued"), std::string::npos) << table;
  json j = json::parse(ctl({"--json", "downlinks", "bin-abp"}), nullptr, false);
  ASSERT_TRUE(j.is_object()) << j;
  ASSERT_EQ(j["downlinks"].size(), 2u) << j.dump();
  EXPECT_EQ(j["downlinks"][0]["gateway"], "gw-test");
  EXPECT_EQ(j["downlinks"][0]["command"], "set_interval");
  EXPECT_EQ(j["downlinks"][1]["fport"], 5);
  EXPECT_EQ(j["downlinks"][1]["confirmed"], true);
  EXPECT_EQ(json::parse(ctl({"--json", "downlinks", "bin-otaa"}))["downlinks"].size(), 0u);
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

// The counter settings of issue 15 are checked like every other key: each mistake is named
// with its place and the allowed values.
TEST_F(GatewayTest, CounterSettingsAreValidated) {
  std::ofstream(path("bad.toml")) << "[gateway]\nid = \"gw\"\nsite = \"s\"\ndata_dir = \"" << path("data")
                                  << "\"\n[lorawan]\nprofiles_dir = \"" << SourceDir() << "/config/profiles\"\n" << R"(fcnt_search_epochs = 0
lorawan_version = "1.1"

[[lorawan.devices]]
id = "bin-otaa"
dev_eui = "0102030405060708"
app_key = "2B7E151628AED2A6ABF7158809CF4F3C"
profile = "bin-monitor-ultrasonic-v1"
fcnt_up_start = 100

[[lorawan.devices]]
id = "bin-abp"
dev_eui = "0102030405060709"
activation = "abp"
dev_addr = "260B1234"
nwk_s_key = "2B7E151628AED2A6ABF7158809CF4F3C"
app_s_key = "000102030405060708090A0B0C0D0E0F"
profile = "bin-monitor-ultrasonic-v1"
max_fcnt_gap = 70000
fcnt_up_start = -1
)";
  int rc = Process::Run({SANIGATE_BIN, "--check-config", path("bad.toml")}, 10s, {.stderr_path = path("check.err")});
  EXPECT_TRUE(ExitedWith(rc, 2)) << DescribeWaitStatus(rc);
  std::string err = ReadFile(path("check.err"));
  for (const char* want : {"lorawan.fcnt_search_epochs: ", "lorawan.lorawan_version: ",
                           "lorawan.devices[0].fcnt_up_start: only ABP devices take a starting counter",
                           "lorawan.devices[1].max_fcnt_gap: ", "lorawan.devices[1].fcnt_up_start: "})
    EXPECT_NE(err.find(want), std::string::npos) << want << "\n" << err;
  rc = Process::Run({SANIGATE_BIN, "--check-config", SourceDir() + "/config/lorawan.toml"}, 10s,
                    {.stderr_path = path("sample.err")});
  EXPECT_TRUE(ExitedWith(rc, 0)) << ReadFile(path("sample.err"));
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
