// JT/T 808 end to end: terminals (our blocking client over real TCP on loopback) -> sanigate ->
// a real Mosquitto -> an MQTT subscriber. Register, authenticate, reports, SOS and its
// clearing, back-fill batches, subpackages, commands through mosquitto_rr, refusals, garbage,
// timeouts, and a kill -9 of the gateway with nothing acknowledged lost.
#include <future>
#include <thread>

#include "gateway_fixture.h"
#include "jt808_terminal.h"

namespace sanigate::test {
namespace {

using namespace dev::jt808;

int64_t NowMsForTest() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

constexpr const char* kPhone1 = "13912345678";
constexpr const char* kPhone2 = "13912345679";

class Jt808Test : public GatewayTest {
 protected:
  uint16_t port = 0;

  std::string Jt808Section(const std::string& extra) const {
    return "[jt808]\nlisten = \"127.0.0.1:" + std::to_string(port) + "\"\n" + extra +
           "\n[[jt808.terminals]]\nphone = \"" + kPhone1 + "\"\ndevice = \"truck-01\"\nplate = \"闽D·H1234\"\n" +
           "\n[[jt808.terminals]]\nphone = \"0" + kPhone2 + "\"\ndevice = \"truck-02\"\n";
  }

  void StartAll(const std::string& extra = "") {
    StartBroker();
    Capture();
    port = FreeTcpPort();
    WriteConfig(BaseConfig() + Jt808Section(extra));
    StartGateway();
    ASSERT_TRUE(WaitForTcpPort(port, 10s)) << GatewayLog();
    WaitGatewayOnline();
  }


  void Login(Jt808Terminal& t, std::string* code_out = nullptr) {
    ASSERT_TRUE(t.Connect(port).ok());
    auto code = t.Register();
    ASSERT_TRUE(code.ok()) << code.status().ToString();
    ASSERT_TRUE(t.Authenticate(*code).ok());
    if (code_out) *code_out = *code;
  }

  std::vector<Parsed> Of(const std::string& device, const std::string& what) const {
    return Unique(capture->Messages(), "/devices/" + device + "/" + what);
  }
  bool WaitN(const std::string& device, const std::string& what, size_t n, std::chrono::milliseconds t = 10s) {
    return capture->WaitFor([&](const std::vector<Captured>& m) { return Unique(m, "/devices/" + device + "/" + what).size() >= n; }, t);
  }
  // Inside WaitFor predicates pass the messages it gives (the capture is locked there).
  std::vector<Parsed> EventsNamed(const std::string& device, const std::string& name,
                                  const std::vector<Captured>* msgs = nullptr) const {
    std::vector<Parsed> out;
    for (auto& p : Unique(msgs ? *msgs : capture->Messages(), "/devices/" + device + "/event"))
      if (p.payload["event"] == name) out.push_back(p);
    return out;
  }
};

TEST_F(Jt808Test, RegisterAuthReportSosAndClearToMqtt) {
  StartAll();
  Jt808Terminal t(kPhone1);
  std::string code;
  Login(t, &code);
  EXPECT_EQ(code.size(), 16u);
  // The device status goes online with what the terminal told about itself.
  ASSERT_TRUE(WaitN("truck-01", "status", 1));
  auto st = Of("truck-01", "status").back().payload;
  EXPECT_TRUE(st["online"].get<bool>());

  int64_t t0 = NowMsForTest() - 60000;
  ASSERT_EQ(t.Report(SampleLocation(t0, 0)).value_or(99), 0);
  ASSERT_EQ(t.Report(SampleLocation(t0 + 5000, 1, 1u << alarm_bit::kSos)).value_or(99), 0);
  ASSERT_EQ(t.Report(SampleLocation(t0 + 10000, 2)).value_or(99), 0);
  uint16_t hb = t.Send(msg::kHeartbeat, {});
  EXPECT_EQ(t.WaitAck(hb, 5s).value_or(99), 0);

  ASSERT_TRUE(WaitN("truck-01", "telemetry", 3));
  auto tel = Of("truck-01", "telemetry");
  ASSERT_EQ(tel.size(), 3u);
  auto& r0 = tel[0].payload;
  EXPECT_EQ(r0["ts"], SampleLocation(t0, 0).ts_ms);  // the terminal's time (GMT+8 on the wire), in UTC
  EXPECT_EQ(r0["kind"], "vehicle");
  EXPECT_EQ(r0["source"]["protocol"], "jt808");
  EXPECT_EQ(r0["source"]["phone"], kPhone1);
  EXPECT_DOUBLE_EQ(r0["location"]["lat"].get<double>(), 24.479833);
  EXPECT_DOUBLE_EQ(r0["location"]["lon"].get<double>(), 118.089425);
  EXPECT_DOUBLE_EQ(r0["metrics"]["speed_kmh"].get<double>(), 18.5);
  EXPECT_DOUBLE_EQ(r0["metrics"]["heading_deg"].get<double>(), 90);
  EXPECT_DOUBLE_EQ(r0["metrics"]["odometer_km"].get<double>(), 9791.7);
  EXPECT_DOUBLE_EQ(r0["metrics"]["fuel_l"].get<double>(), 80.5);
  EXPECT_TRUE(r0["metrics"]["acc_on"].get<bool>());
  EXPECT_TRUE(r0["metrics"]["gnss_fix"].get<bool>());

  ASSERT_TRUE(capture->WaitFor([&](const auto& m) { return EventsNamed("truck-01", "sos", &m).size() >= 2; }, 10s));
  auto sos = EventsNamed("truck-01", "sos");
  ASSERT_EQ(sos.size(), 2u);
  EXPECT_EQ(sos[0].payload["state"], "active");
  EXPECT_EQ(sos[0].payload["severity"], "critical");
  EXPECT_EQ(sos[0].payload["ts"], SampleLocation(t0 + 5000).ts_ms);
  EXPECT_TRUE(sos[0].payload.contains("location"));
  EXPECT_EQ(sos[1].payload["state"], "cleared");
  ExpectPayloadsMatchSchemas();
}

TEST_F(Jt808Test, BackfillBatchKeepsOriginalTimesAndIsMarked) {
  StartAll();
  Jt808Terminal t(kPhone1);
  Login(t);
  int64_t t0 = NowMsForTest() - 3600000;
  std::vector<Location> pts;
  for (int i = 0; i < 40; ++i) pts.push_back(SampleLocation(t0 + i * 10000, i, i == 5 ? 1u : 0u));
  // 40 points do not fit one packet (1023 bytes): send them as 3 subpackages.
  Bytes body = BuildBatchLocation(pts, true);
  ASSERT_GT(body.size(), 1023u);
  uint16_t last = t.SendSubpackaged(msg::kBatchLocation, body, 3);
  EXPECT_EQ(t.WaitAck(last, 10s).value_or(99), 0);
  ASSERT_TRUE(WaitN("truck-01", "telemetry", 40));
  auto tel = Of("truck-01", "telemetry");
  ASSERT_EQ(tel.size(), 40u);
  for (size_t i = 0; i < tel.size(); ++i) {
    EXPECT_EQ(tel[i].payload["ts"], pts[i].ts_ms) << i;
    EXPECT_TRUE(tel[i].payload["source"]["backfill"].get<bool>()) << i;
  }
  // The SOS pressed out of coverage still reaches dispatch, marked as late, then its clearing.
  ASSERT_TRUE(capture->WaitFor([&](const auto& m) { return EventsNamed("truck-01", "sos", &m).size() >= 2; }, 10s));
  auto sos = EventsNamed("truck-01", "sos");
  EXPECT_EQ(sos[0].payload["state"], "active");
  EXPECT_EQ(sos[0].payload["ts"], pts[5].ts_ms);
  EXPECT_TRUE(sos[0].payload["source"]["backfill"].get<bool>());
  EXPECT_EQ(sos[1].payload["state"], "cleared");
}

TEST_F(Jt808Test, Edition2019AndNormalBatch) {
  StartAll();
  Jt808Terminal t(kPhone2, /*v2019=*/true);
  Login(t);
  int64_t t0 = NowMsForTest() - 30000;
  uint16_t s = t.Send(msg::kBatchLocation, BuildBatchLocation({SampleLocation(t0, 0), SampleLocation(t0 + 1000, 1)}, false));
  EXPECT_EQ(t.WaitAck(s, 5s).value_or(99), 0);
  ASSERT_TRUE(WaitN("truck-02", "telemetry", 2));
  auto tel = Of("truck-02", "telemetry");
  EXPECT_FALSE(tel[0].payload["source"].contains("backfill"));
}

TEST_F(Jt808Test, UnknownTerminalsWrongCodesAndUnauthenticatedMessagesAreRefused) {
  StartAll();
  Jt808Terminal stranger("13000000001");
  ASSERT_TRUE(stranger.Connect(port).ok());
  auto code = stranger.Register();
  ASSERT_FALSE(code.ok());
  EXPECT_EQ(code.status().message(), "register result 4");  // terminal unknown

  Jt808Terminal t(kPhone1);
  ASSERT_TRUE(t.Connect(port).ok());
  // Reports before authentication are answered "fail" and never published.
  EXPECT_EQ(t.Report(SampleLocation(NowMsForTest())).value_or(99), 1);
  EXPECT_FALSE(t.Authenticate("WRONGCODE").ok());
  EXPECT_EQ(t.Report(SampleLocation(NowMsForTest())).value_or(99), 1);
  auto good = t.Register();
  ASSERT_TRUE(good.ok());
  ASSERT_TRUE(t.Authenticate(*good).ok());
  ASSERT_EQ(t.Report(SampleLocation(NowMsForTest())).value_or(99), 0);
  ASSERT_TRUE(WaitN("truck-01", "telemetry", 1));
  EXPECT_EQ(Of("truck-01", "telemetry").size(), 1u);
  EXPECT_TRUE(Unique(capture->Messages(), "13000000001/telemetry").empty());
  EXPECT_NE(GatewayLog().find("unknown terminal 13000000001"), std::string::npos);
}

TEST_F(Jt808Test, UnknownTerminalsRegisterUnderThePolicy) {
  StartAll("unknown_terminals = \"register\"\ndevice_prefix = \"truck-\"\n");
  Jt808Terminal t("13700000042");
  Login(t);
  ASSERT_EQ(t.Report(SampleLocation(NowMsForTest())).value_or(99), 0);
  ASSERT_TRUE(WaitN("truck-13700000042", "telemetry", 1));
}

TEST_F(Jt808Test, MalformedFramesAreSkippedAndGarbageClosesTheConnection) {
  StartAll("max_frame_bytes = 512\n");
  Jt808Terminal t(kPhone1);
  Login(t);
  // Garbage between frames, a frame with a bad check code, a bad escape, a short frame.
  ASSERT_TRUE(t.SendRaw({0x01, 0x02, 0x03}).ok());
  Header h;
  h.msg_id = msg::kLocation;
  h.phone = kPhone1;
  h.serial = 900;
  Bytes bad = EncodeFrame(h, BuildLocation(SampleLocation(NowMsForTest())));
  bad[bad.size() - 2] ^= 0x55;  // check code
  ASSERT_TRUE(t.SendRaw(bad).ok());
  ASSERT_TRUE(t.SendRaw({0x7E, 0x00, 0x02, 0x7D, 0x05, 0x7E, 0x7E, 0x01, 0x7E}).ok());
  // A well-formed frame whose location body is cut short is answered "message error".
  uint16_t s = t.Send(msg::kLocation, Bytes(20, 0));
  EXPECT_EQ(t.WaitAck(s, 5s).value_or(99), 2);
  // The connection still works.
  EXPECT_EQ(t.Report(SampleLocation(NowMsForTest())).value_or(99), 0);
  ASSERT_TRUE(WaitN("truck-01", "telemetry", 1));
  EXPECT_EQ(Of("truck-01", "telemetry").size(), 1u);
  // Endless bytes without a delimiter are not JT/T 808: the connection is closed.
  ASSERT_TRUE(t.SendRaw(Bytes(2000, 0x41)).ok());
  EXPECT_TRUE(t.WaitClosedByPeer(5s));
  // Others are unaffected, and the terminal may come back.
  Jt808Terminal t2(kPhone2);
  Login(t2);
  Login(t);
  EXPECT_EQ(t.Report(SampleLocation(NowMsForTest())).value_or(99), 0);
}

TEST_F(Jt808Test, ConnectionLimitsPerAddressAndInTotal) {
  StartAll("max_per_ip = 2\nmax_connections = 3\n");
  Jt808Terminal a(kPhone1), b(kPhone2), c("13900000003"), d("13900000004");
  ASSERT_TRUE(a.Connect(port, "127.0.0.2").ok());
  ASSERT_TRUE(b.Connect(port, "127.0.0.2").ok());
  // A third connection from 127.0.0.2 is closed at once; another address is still welcome.
  ASSERT_TRUE(c.Connect(port, "127.0.0.2").ok());
  EXPECT_TRUE(c.WaitClosedByPeer(5s));
  ASSERT_TRUE(d.Connect(port, "127.0.0.3").ok());
  auto code = d.Register();  // d is unknown (refused), but its connection was accepted and answered
  EXPECT_FALSE(code.ok());
  EXPECT_EQ(code.status().message(), "register result 4");
  // Three open: the total limit closes a fourth from any address.
  Jt808Terminal e("13900000005");
  ASSERT_TRUE(e.Connect(port, "127.0.0.4").ok());
  EXPECT_TRUE(e.WaitClosedByPeer(5s));
  // The ones inside the limits work.
  auto code_a = a.Register();
  ASSERT_TRUE(code_a.ok());
  ASSERT_TRUE(a.Authenticate(*code_a).ok());
  EXPECT_NE(GatewayLog().find("max_per_ip (2) reached for 127.0.0.2"), std::string::npos);
}

TEST_F(Jt808Test, SilentConnectionsTimeOutAndTheTruckGoesOffline) {
  StartAll("auth_timeout_s = 1\nidle_timeout_s = 5\noffline_after_s = 1\n");
  Jt808Terminal lurker(kPhone2);
  ASSERT_TRUE(lurker.Connect(port).ok());
  EXPECT_TRUE(lurker.WaitClosedByPeer(5s));  // never authenticated

  Jt808Terminal t(kPhone1);
  Login(t);
  ASSERT_TRUE(WaitN("truck-01", "status", 1));
  EXPECT_TRUE(t.WaitClosedByPeer(10s));  // idle for 5 s
  ASSERT_TRUE(WaitN("truck-01", "status", 2));
  auto st = Of("truck-01", "status");
  EXPECT_FALSE(st.back().payload["online"].get<bool>());
  ASSERT_TRUE(capture->WaitFor([&](const auto& m) { return EventsNamed("truck-01", "offline", &m).size() >= 1; }, 5s));
  // Back online: the offline event clears.
  Login(t);
  ASSERT_TRUE(capture->WaitFor([&](const auto& m) { return EventsNamed("truck-01", "offline", &m).size() >= 2; }, 5s));
  EXPECT_EQ(EventsNamed("truck-01", "offline").back().payload["state"], "cleared");
  ExpectPayloadsMatchSchemas();
}

// The terminal side of a command: waits for the platform message and answers it.
void AnswerCommand(Jt808Terminal& t, uint16_t expect_id, bool with_location) {
  auto f = t.WaitFor(expect_id, 10s);
  ASSERT_TRUE(f.has_value()) << "no " << std::hex << expect_id;
  if (with_location) {
    Bytes body = {static_cast<uint8_t>(f->header.serial >> 8), static_cast<uint8_t>(f->header.serial)};
    Bytes loc = BuildLocation(SampleLocation(NowMsForTest(), 7));
    body.insert(body.end(), loc.begin(), loc.end());
    t.Send(msg::kPositionReply, body);
  } else {
    t.Send(msg::kTerminalResponse, BuildTerminalResponse({f->header.serial, expect_id, 0}));
  }
}

TEST_F(Jt808Test, CommandsReachTheTerminalAndReturnItsAnswer) {
  StartAll("command_timeout_ms = 1500\n");
  Jt808Terminal t(kPhone1);
  Login(t);

  auto locate = std::async(std::launch::async, [&] { return Command("truck-01", "locate", ""); });
  AnswerCommand(t, msg::kPositionQuery, true);
  json r = locate.get();
  EXPECT_TRUE(r["ok"].get<bool>()) << r.dump();
  EXPECT_DOUBLE_EQ(r["result"]["lat"].get<double>(), 24.479833);

  auto interval = std::async(std::launch::async, [&] { return Command("truck-01", "set_report_interval", "30"); });
  {
    auto f = t.WaitFor(msg::kSetParams, 10s);
    ASSERT_TRUE(f.has_value());
    EXPECT_EQ(f->body, BuildSetParams({{0x0029, 30}}));
    t.Send(msg::kTerminalResponse, BuildTerminalResponse({f->header.serial, msg::kSetParams, 0}));
  }
  EXPECT_TRUE(interval.get()["ok"].get<bool>());

  auto text = std::async(std::launch::async, [&] { return Command("truck-01", "text", "{\"args\":[\"请到3号垃圾屋\"]}"); });
  {
    auto f = t.WaitFor(msg::kTextMessage, 10s);
    ASSERT_TRUE(f.has_value());
    auto utf8 = GbkToUtf8(std::span(f->body).subspan(1));
    ASSERT_TRUE(utf8.ok());
    EXPECT_EQ(*utf8, "请到3号垃圾屋");
    t.Send(msg::kTerminalResponse, BuildTerminalResponse({f->header.serial, msg::kTextMessage, 1}));
  }
  json tr = text.get();
  EXPECT_FALSE(tr["ok"].get<bool>());
  EXPECT_EQ(tr["error"], "terminal answered: fail");

  // No answer: a timeout, not a hang.
  json silent = Command("truck-01", "confirm_alarm", "sos");
  EXPECT_FALSE(silent["ok"].get<bool>());
  EXPECT_EQ(silent["error"], "no answer from the terminal within 1500 ms");
  // Bad arguments and disconnected trucks get clear errors.
  json bad = Command("truck-01", "set_params", "speedlimit=abc");
  EXPECT_NE(bad["error"].get<std::string>().find("is not NAME=VALUE"), std::string::npos) << bad.dump();
  json away = Command("truck-02", "locate", "");
  EXPECT_EQ(away["error"], "truck-02 is not connected");
}

TEST_F(Jt808Test, KillNineLosesNothingAcknowledgedAndCodesSurviveRestart) {
  StartAll();
  Jt808Terminal t(kPhone1);
  std::string code;
  Login(t, &code);
  broker->Stop();  // acks must not depend on the broker: the outbox holds the points
  int64_t t0 = NowMsForTest() - 600000;
  int acked = 0;
  for (int i = 0; i < 30; ++i)
    if (t.Report(SampleLocation(t0 + i * 1000, i)).value_or(99) == 0) acked++;
  ASSERT_EQ(acked, 30);
  gateway.Kill();  // SIGKILL right after the last ack
  (void)gateway.Wait(5s);
  broker->Start();
  Capture();
  StartGateway();
  ASSERT_TRUE(WaitForTcpPort(port, 10s));
  // The terminal reconnects and authenticates with the code it already has: no re-register.
  ASSERT_TRUE(t.Connect(port).ok());
  ASSERT_TRUE(t.Authenticate(code).ok());
  EXPECT_EQ(t.Report(SampleLocation(t0 + 30000, 30)).value_or(99), 0);
  ASSERT_TRUE(WaitN("truck-01", "telemetry", 31, 20s));
  std::set<int64_t> ts;
  for (auto& p : Of("truck-01", "telemetry")) ts.insert(p.payload["ts"].get<int64_t>());
  for (int i = 0; i <= 30; ++i) EXPECT_TRUE(ts.count(SampleLocation(t0 + i * 1000).ts_ms)) << "point " << i << " lost";
}

TEST_F(Jt808Test, ManyTerminalsAtOnceAndAReconnectStorm) {
  StartAll("unknown_terminals = \"register\"\n");
  constexpr int kTerminals = 200;
  std::vector<std::unique_ptr<Jt808Terminal>> ts;
  std::vector<std::string> codes(kTerminals);
  for (int i = 0; i < kTerminals; ++i) {
    ts.push_back(std::make_unique<Jt808Terminal>("1380000" + std::to_string(1000 + i)));
    ASSERT_TRUE(ts.back()->Connect(port, "127.0.0." + std::to_string(2 + i % 8)).ok());
  }
  // A slow terminal that never reads must not hold the others up.
  Jt808Terminal slow("13899999999");
  ASSERT_TRUE(slow.Connect(port).ok());
  for (int i = 0; i < kTerminals; ++i) {
    auto c = ts[i]->Register();
    ASSERT_TRUE(c.ok()) << i;
    codes[i] = *c;
    ASSERT_TRUE(ts[i]->Authenticate(codes[i]).ok()) << i;
  }
  // Everyone drops and comes back at once.
  for (auto& t : ts) t->Close();
  for (int i = 0; i < kTerminals; ++i) ASSERT_TRUE(ts[i]->Connect(port, "127.0.0." + std::to_string(2 + i % 8)).ok());
  int64_t now = NowMsForTest();
  for (int i = 0; i < kTerminals; ++i) {
    ASSERT_TRUE(ts[i]->Authenticate(codes[i]).ok()) << i;
    ASSERT_EQ(ts[i]->Report(SampleLocation(now, i)).value_or(99), 0) << i;
  }
  ASSERT_TRUE(capture->WaitFor([&](const auto& m) { return Unique(m, "/telemetry").size() >= kTerminals; }, 20s));
}

TEST_F(Jt808Test, ThePlateComesFromTheRegistrationUnlessConfigured) {
  StartAll();
  // truck-02 has no plate in the config: the one it registers with (闽D·45679, yellow) is used.
  Jt808Terminal t2(kPhone2);
  Login(t2);
  int64_t t0 = NowMsForTest() - 10000;
  ASSERT_EQ(t2.Report(SampleLocation(t0, 0)).value_or(99), 0);
  // truck-01's configured plate wins over what its terminal says.
  Jt808Terminal t1(kPhone1);
  Login(t1);
  ASSERT_EQ(t1.Report(SampleLocation(t0, 0)).value_or(99), 0);
  ASSERT_TRUE(WaitN("truck-02", "telemetry", 1));
  ASSERT_TRUE(WaitN("truck-01", "telemetry", 1));
  auto src2 = Of("truck-02", "telemetry").back().payload["source"];
  EXPECT_EQ(src2["plate"], "闽D·45679") << src2.dump();
  EXPECT_EQ(src2["plate_color"], 2);
  auto src1 = Of("truck-01", "telemetry").back().payload["source"];
  EXPECT_EQ(src1["plate"], "闽D·H1234") << src1.dump();
  EXPECT_FALSE(src1.contains("plate_color"));
}

// Issue 19 item 4: the phone number must not be enough to speak for a truck.
TEST_F(Jt808Test, AnImpersonatorOfALockedOnlinePhoneIsRefusedAndRaisesTheEvent) {
  StartAll("registration = \"locked\"\n");
  Jt808Terminal truck(kPhone1);
  std::string code;
  Login(truck, &code);  // registers from 127.0.0.1
  int64_t t0 = NowMsForTest() - 10000;
  ASSERT_EQ(truck.Report(SampleLocation(t0, 0)).value_or(99), 0);

  // Someone who knows the phone number asks for the code from elsewhere: refused, and reported.
  Jt808Terminal thief(kPhone1);
  ASSERT_TRUE(thief.Connect(port, "127.0.0.5").ok());
  auto stolen = thief.Register();
  EXPECT_FALSE(stolen.ok());
  EXPECT_EQ(stolen.status().message(), "register result 3");
  // Even with the code (sniffed on the 4G link), no second session while the truck is talking.
  thief.Close();
  ASSERT_TRUE(thief.Connect(port, "127.0.0.5").ok());
  EXPECT_FALSE(thief.Authenticate(code).ok());
  ASSERT_TRUE(capture->WaitFor([&](const auto& m) { return EventsNamed("truck-01", "impersonation_suspected", &m).size() >= 2; }, 10s))
      << GatewayLog();
  auto ev = EventsNamed("truck-01", "impersonation_suspected");
  EXPECT_EQ(ev[0].payload["severity"], "critical");
  EXPECT_NE(ev[0].payload["message"].get<std::string>().find("127.0.0.5"), std::string::npos) << ev[0].payload.dump();
  // The real truck was not kicked off.
  ASSERT_EQ(truck.Report(SampleLocation(t0 + 1000, 1)).value_or(99), 0);
  ASSERT_TRUE(WaitN("truck-01", "telemetry", 2));

  // The operator releases the phone (e.g. a new terminal was fitted): it may register again.
  json released = Command("truck-01", "release_registration", "");
  EXPECT_EQ(released["ok"], true) << released.dump();
  EXPECT_EQ(released["result"]["released"], true);
  truck.Close();
  Jt808Terminal fitted(kPhone1);
  ASSERT_TRUE(fitted.Connect(port).ok());
  auto again = fitted.Register();
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  ASSERT_TRUE(fitted.Authenticate(*again).ok());
}

TEST_F(Jt808Test, UnderTheDefaultPolicyAnOnlinePhoneCannotBeRegisteredAgain) {
  StartAll();  // registration = "known"
  Jt808Terminal truck(kPhone1);
  std::string code;
  Login(truck, &code);
  Jt808Terminal other(kPhone1);
  ASSERT_TRUE(other.Connect(port, "127.0.0.6").ok());
  EXPECT_FALSE(other.Register().ok());
  ASSERT_TRUE(capture->WaitFor([&](const auto& m) { return EventsNamed("truck-01", "impersonation_suspected", &m).size() >= 1; }, 10s));
  // Offline, the same terminal may register again (a reset terminal forgets its code).
  truck.Close();
  std::this_thread::sleep_for(300ms);
  Jt808Terminal reset(kPhone1);
  ASSERT_TRUE(reset.Connect(port).ok());
  auto code2 = reset.Register();
  ASSERT_TRUE(code2.ok()) << code2.status().ToString();
  EXPECT_EQ(*code2, code);
}

// Issue 19: alarm and offline states outlive the process. An SOS set before a restart and
// cleared after it is published as cleared exactly once, whatever ended the old process.
enum class Restart { kKill, kTerm, kHup };

class Jt808RestartTest : public Jt808Test, public ::testing::WithParamInterface<Restart> {};

TEST_P(Jt808RestartTest, AnSosSetBeforeARestartIsClearedExactlyOnceAfterIt) {
  StartAll();
  Jt808Terminal t(kPhone1);
  std::string code;
  Login(t, &code);
  int64_t t0 = NowMsForTest() - 30000;
  ASSERT_EQ(t.Report(SampleLocation(t0, 0, 1u << alarm_bit::kSos)).value_or(99), 0);
  ASSERT_TRUE(capture->WaitFor([&](const auto& m) { return EventsNamed("truck-01", "sos", &m).size() >= 1; }, 10s));

  switch (GetParam()) {
    case Restart::kKill:
      gateway.Kill();
      (void)gateway.Wait(5s);
      StartGateway();
      break;
    case Restart::kTerm:
      (void)gateway.Stop(10s);  // SIGTERM: flush and stop
      StartGateway();
      break;
    case Restart::kHup:
      gateway.Signal(SIGHUP);
      ASSERT_TRUE(capture->WaitFor([&](const auto&) { return GatewayLog().find("reloaded") != std::string::npos; }, 10s));
      break;
  }
  ASSERT_TRUE(WaitForTcpPort(port, 10s)) << GatewayLog();
  // The crew is fine now: the truck comes back and reports without the SOS bit.
  if (!t.Connect(port).ok() || !t.Authenticate(code).ok()) {
    t.Close();
    ASSERT_TRUE(t.Connect(port).ok());
    ASSERT_TRUE(t.Authenticate(code).ok());
  }
  ASSERT_EQ(t.Report(SampleLocation(t0 + 20000, 1)).value_or(99), 0);
  ASSERT_TRUE(capture->WaitFor([&](const auto& m) { return EventsNamed("truck-01", "sos", &m).size() >= 2; }, 10s))
      << GatewayLog();
  ASSERT_EQ(t.Report(SampleLocation(t0 + 25000, 2)).value_or(99), 0);
  ASSERT_TRUE(WaitN("truck-01", "telemetry", 3));
  auto sos = EventsNamed("truck-01", "sos");
  ASSERT_EQ(sos.size(), 2u);
  EXPECT_EQ(sos[0].payload["state"], "active");
  EXPECT_EQ(sos[1].payload["state"], "cleared");
  // No `offline` left standing: a stopping gateway is not the truck going away, and whatever was
  // announced is cleared once the truck is back.
  int active = 0, cleared = 0;
  for (const auto& e : EventsNamed("truck-01", "offline")) (e.payload["state"] == "active" ? active : cleared)++;
  EXPECT_EQ(active, cleared) << "an offline event was never cleared";
}

INSTANTIATE_TEST_SUITE_P(Jt808, Jt808RestartTest, ::testing::Values(Restart::kKill, Restart::kTerm, Restart::kHup),
                         [](const auto& info) {
                           return std::string(info.param == Restart::kKill ? "Kill9"
                                              : info.param == Restart::kTerm ? "Sigterm"
                                                                             : "Sighup");
                         });

TEST_F(Jt808Test, AReconnectStormBelowTheDebounceAnnouncesNoOneOffline) {
  StartAll("unknown_terminals = \"register\"\n");
  constexpr int kTrucks = 30;
  std::vector<std::unique_ptr<Jt808Terminal>> ts;
  std::vector<std::string> codes(kTrucks);
  for (int i = 0; i < kTrucks; ++i) {
    ts.push_back(std::make_unique<Jt808Terminal>("1381000" + std::to_string(1000 + i)));
    ASSERT_TRUE(ts.back()->Connect(port).ok());
    auto c = ts.back()->Register();
    ASSERT_TRUE(c.ok()) << i;
    codes[i] = *c;
    ASSERT_TRUE(ts.back()->Authenticate(codes[i]).ok()) << i;
  }
  // Flaky 4G: every truck drops and is back within a second, three times over.
  for (int round = 0; round < 3; ++round) {
    for (auto& t : ts) t->Close();
    std::this_thread::sleep_for(200ms);
    for (int i = 0; i < kTrucks; ++i) {
      ASSERT_TRUE(ts[i]->Connect(port).ok());
      ASSERT_TRUE(ts[i]->Authenticate(codes[i]).ok()) << i;
    }
  }
  std::this_thread::sleep_for(6s);  // past offline_after_s (5): a late announcement would be out
  int offline = 0;
  for (const auto& e : Unique(capture->Messages(), "/event"))
    if (e.payload["event"] == "offline") offline++;
  EXPECT_EQ(offline, 0) << "a reconnect storm became an event storm";
  // The storm is one figure in the gateway status.
  ASSERT_TRUE(capture->WaitFor([&](const std::vector<Captured>& m) {
    for (const auto& p : Unique(m, "/gateway/gw-test/status"))
      if (auto n = p.payload.value("/adapters/jt808/details/reconnects_debounced"_json_pointer, json());
          n.is_number_integer() && n.get<int64_t>() >= 3 * kTrucks)
        return true;
    return false;
  }, 10s));
}

}  // namespace
}  // namespace sanigate::test
