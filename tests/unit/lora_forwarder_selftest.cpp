// Self-test of the LoRaWAN test side (tests/sim/lora_forwarder.h), not of the gateway: the
// simulated device must reproduce the dossier's verified vectors (protocols.md §3.1 V1, V2, V4-V6)
// and the profiles' example payloads, and the simulated packet forwarder must speak GWMP to a tiny
// in-test UDP server on loopback (acks matched by token, unrelated datagrams kept, TX_ACK sent).
// Every wait has a deadline; the server thread lives at most a few seconds.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "lora_forwarder.h"
#include "lorawan/payload_codec.h"

namespace sanigate::test {
namespace {

using namespace dev::lorawan;
using namespace std::chrono_literals;

Bytes H(std::string_view hex) {
  auto b = ParseHex(hex);
  EXPECT_TRUE(b.ok()) << b.status().ToString();
  return b.ok() ? *b : Bytes{};
}
Key K(std::string_view hex) {
  auto k = ParseKey(hex);
  EXPECT_TRUE(k.ok()) << k.status().ToString();
  return k.ok() ? *k : Key{};
}

// protocols.md §3.1.
constexpr uint32_t kDevAddr = 0x260B1234;
const Key kNwk = K("2B7E151628AED2A6ABF7158809CF4F3C");
const Key kApp = K("000102030405060708090A0B0C0D0E0F");
const Key kAppKey = K("00112233445566778899AABBCCDDEEFF");
constexpr uint64_t kAppEui = 0x0102030405060708;
constexpr uint64_t kDevEui = 0xA1B2C3D4E5F60718;
const char* const kV1 = "4034120B26802A000A00985DF8849DE74273";
const char* const kV2 = "8034120B2600050002F66FF58589B16EAC167B26E04B8EFE7CE65CF7B6F48E352A";
const char* const kV4 = "0008070605040302011807F6E5D4C3B2A12B1A3F417441";
const char* const kV5Wire = "205EB1A8395EED777A8AE8E077FE7FEE17";
const char* const kV6 = "4034120B2600000001A624F68004A2";

// ---- the device side against the vectors
// ---------------------------------------------------------

TEST(LoraDeviceSelfTest, AbpDeviceReproducesV1AndV2) {
  LoraDevice d = LoraDevice::Abp(kDevAddr, kNwk, kApp, 42);
  d.set_adr(true);  // V1 has FCtrl 0x80
  EXPECT_EQ(ToHex(d.Uplink(10, H("014B00E60C"))), kV1);
  EXPECT_EQ(d.fcnt_up(), 43u);
  EXPECT_EQ(ToHex(d.Replay()), kV1);
  // V2: confirmed, FCnt32 0x00010005 (only 05 00 on air), no ADR.
  d.set_adr(false);
  d.set_fcnt_up(0x00010005);
  EXPECT_EQ(ToHex(d.Uplink(2, H("00112233445566778899AABBCCDDEEFF01020304"), true)), kV2);
  EXPECT_EQ(d.fcnt_up(), 0x00010006u);
}

TEST(LoraDeviceSelfTest, CounterWrapKeepsTheUpperHalfInTheMic) {
  LoraDevice d = LoraDevice::Abp(kDevAddr, kNwk, kApp, 0xFFFF);
  Bytes a = d.Uplink(2, H("01"));
  Bytes b = d.Uplink(2, H("02"));
  auto fa = ParseDataFrame(a);
  auto fb = ParseDataFrame(b);
  ASSERT_TRUE(fa.ok() && fb.ok());
  EXPECT_EQ(fa->fcnt16, 0xFFFF);
  EXPECT_EQ(fb->fcnt16, 0x0000);
  EXPECT_TRUE(VerifyDataMic(*fa, kNwk, 0xFFFF).value());
  EXPECT_TRUE(VerifyDataMic(*fb, kNwk, 0x10000).value());
  EXPECT_FALSE(VerifyDataMic(*fb, kNwk, 0).value());
}

TEST(LoraDeviceSelfTest, OtaaDeviceReproducesV4AcceptsV5AndSendsV6) {
  LoraDevice d = LoraDevice::Otaa(kDevEui, kAppEui, kAppKey);
  EXPECT_FALSE(d.joined());
  EXPECT_TRUE(d.Uplink(1, H("4869")).empty());  // no session yet
  EXPECT_EQ(d.last_error().code(), Code::kFailedPrecondition);
  EXPECT_EQ(d.AcceptJoin(H(kV5Wire)).code(), Code::kFailedPrecondition);  // no JoinRequest yet
  EXPECT_EQ(ToHex(d.JoinRequest(0x1A2B)), kV4);
  // A corrupted accept (one bit) fails its MIC and changes nothing.
  Bytes bad = H(kV5Wire);
  bad[5] ^= 0x01;
  EXPECT_FALSE(d.AcceptJoin(bad).ok());
  EXPECT_FALSE(d.joined());
  ASSERT_TRUE(d.AcceptJoin(H(kV5Wire)).ok());
  EXPECT_TRUE(d.joined());
  EXPECT_EQ(d.dev_addr(), kDevAddr);
  EXPECT_EQ(ToHex(d.nwk_s_key()), "398096E8BCB01B903C55F05422A14904");
  EXPECT_EQ(ToHex(d.app_s_key()), "8B4C5CF380C115ADE95F740F3DECC4F2");
  ASSERT_TRUE(d.join_accept().has_value());
  EXPECT_EQ(d.join_accept()->app_nonce, 0x123456u);
  EXPECT_EQ(d.join_accept()->net_id, 0x13u);
  EXPECT_EQ(d.join_accept()->dl_settings, 0x03);
  EXPECT_EQ(d.join_accept()->rx_delay, 1);
  EXPECT_EQ(ToHex(d.Uplink(1, H("4869"))), kV6);  // "Hi", FCnt 0
  // The wrong AppKey cannot open it.
  LoraDevice other = LoraDevice::Otaa(kDevEui, kAppEui, kApp);
  other.JoinRequest(0x1A2B);
  EXPECT_FALSE(other.AcceptJoin(H(kV5Wire)).ok());
  // ABP devices do not join.
  LoraDevice abp = LoraDevice::Abp(kDevAddr, kNwk, kApp);
  EXPECT_TRUE(abp.JoinRequest(1).empty());
}

TEST(LoraDeviceSelfTest, OpenDownlinkChecksAddressCounterAndMic) {
  const SessionKeys keys{kNwk, kApp};
  LoraDevice d = LoraDevice::Abp(kDevAddr, kNwk, kApp);
  d.set_fcnt_down(0x00010001);
  // The ACK of a confirmed uplink: no FPort, FCntDown 0x00010002 (02 00 on air).
  Bytes ack =
      BuildDataFrame(
          {MType::kUnconfirmedDown, kDevAddr, 0x00010002, kFCtrlAck, {}, std::nullopt, {}}, keys)
          .value();
  auto info = d.OpenDownlink(ack);
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  EXPECT_TRUE(info->ack);
  EXPECT_FALSE(info->repeat);
  EXPECT_EQ(info->fcnt, 0x00010002u);
  EXPECT_FALSE(info->fport.has_value());
  EXPECT_EQ(d.last_fcnt_down(), 0x00010002u);
  // The same frame again is a repeat, an older one a replay.
  auto again = d.OpenDownlink(ack);
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(again->repeat);
  Bytes old =
      BuildDataFrame({MType::kUnconfirmedDown, kDevAddr, 0x00010000, 0, {}, 3, H("AA")}, keys)
          .value();
  EXPECT_NE(d.OpenDownlink(old).status().message().find("replay"), std::string::npos);
  // An application payload is decrypted with the AppSKey.
  Bytes app =
      BuildDataFrame(
          {MType::kConfirmedDown, kDevAddr, 0x00010003, kFCtrlFPending, {}, 5, H("0102A0")}, keys)
          .value();
  auto a = d.OpenDownlink(app);
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_EQ(a->mtype, MType::kConfirmedDown);
  EXPECT_EQ(a->fport, 5);
  EXPECT_TRUE(a->f_pending);
  EXPECT_EQ(ToHex(a->payload), "0102A0");
  // A forged MIC, another DevAddr and an uplink are errors; none moves the counter.
  Bytes next =
      BuildDataFrame({MType::kUnconfirmedDown, kDevAddr, 0x00010004, 0, {}, 5, H("01")}, keys)
          .value();
  Bytes forged = next;
  forged.back() ^= 0x40;
  EXPECT_NE(d.OpenDownlink(forged).status().message().find("MIC"), std::string::npos);
  Bytes foreign =
      BuildDataFrame({MType::kUnconfirmedDown, 0x260B9999, 0x00010004, 0, {}, 5, H("01")}, keys)
          .value();
  EXPECT_EQ(d.OpenDownlink(foreign).status().message(),
            "DevAddr 260B9999 is not this device's 260B1234");
  EXPECT_FALSE(d.OpenDownlink(H(kV1)).ok());
  EXPECT_EQ(d.last_fcnt_down(), 0x00010003u);
  EXPECT_TRUE(d.OpenDownlink(next).ok());
}

TEST(LoraDeviceSelfTest, UplinkFlagsAndFOptsApplyOnce) {
  LoraDevice d = LoraDevice::Abp(kDevAddr, kNwk, kApp, 7);
  d.set_ack_next(true);
  d.set_fopts_next(H("02"));  // LinkCheckReq
  auto f1 = ParseDataFrame(d.Uplink(2, H("00")));
  auto f2 = ParseDataFrame(d.Uplink(2, H("00")));
  ASSERT_TRUE(f1.ok() && f2.ok());
  EXPECT_TRUE(f1->fctrl.ack());
  EXPECT_EQ(ToHex(f1->fopts), "02");
  EXPECT_FALSE(f2->fctrl.ack());
  EXPECT_TRUE(f2->fopts.empty());
  EXPECT_TRUE(d.Uplink(2, Bytes(250, 0)).empty());  // longer than a PHYPayload can be
  EXPECT_FALSE(d.last_error().ok());
  EXPECT_EQ(d.fcnt_up(), 9u);  // a failed build does not consume a counter
}

// ---- payload builders against the profiles' examples
// ---------------------------------------------

PayloadProfile Profile(const std::string& name) {
  auto p =
      LoadPayloadProfile(std::string(SANIGATE_SOURCE_DIR) + "/config/profiles/" + name + ".toml");
  EXPECT_TRUE(p.ok()) << p.status().ToString();
  return p.ok() ? std::move(p).value() : PayloadProfile{};
}

TEST(PayloadBuilderSelfTest, UltrasonicMatchesTheProfileExamples) {
  // The header comment of bin-monitor-ultrasonic-v1.toml.
  EXPECT_EQ(ToHex(UltrasonicPayload(412, 78, 23.5, 3.612, false, true)), "019C4E00EB0E1C02");
  EXPECT_EQ(ToHex(UltrasonicPayload(48, 101, -5.2, 3.0, true, false)), "003065FFCC0BB801");
  auto d = DecodePayload(Profile("bin-monitor-ultrasonic-v1"), kUltrasonicFPort,
                         UltrasonicPayload(1034, 55, -12.3, 3.3, true, true));
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  ASSERT_EQ(d->metrics.size(), 6u);
  EXPECT_EQ(d->metrics[0].value, MetricValue(int64_t{1034}));
  EXPECT_EQ(d->metrics[1].value, MetricValue(int64_t{55}));
  EXPECT_EQ(d->metrics[2].value, MetricValue(-12.3));
  EXPECT_EQ(d->metrics[3].value, MetricValue(3.3));
  EXPECT_EQ(d->metrics[4].value, MetricValue(true));
  EXPECT_EQ(d->metrics[5].value, MetricValue(true));
}

TEST(PayloadBuilderSelfTest, CompactMatchesTheProfileExample) {
  Bytes b = CompactMeasurementPayload(true, true, 87, 1034, 21.25f);
  EXPECT_EQ(ToHex(b), "05570A040000AA41");
  auto d = DecodePayload(Profile("bin-monitor-compact-le-v1"), kCompactMeasurementFPort, b);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->metrics.size(), 5u);
  EXPECT_TRUE(d->quality.empty());
}

// ---- the concentrator against a tiny GWMP server
// -------------------------------------------------

// A UDP "network server" on 127.0.0.1 in its own thread: PUSH_ACK/PULL_ACK for everything, one
// PULL_RESP after the first PULL_DATA (the dossier's V5 join accept), and, when asked, one more
// PULL_RESP and a stray PUSH_ACK sent *before* the right PUSH_ACK of the next PUSH_DATA.
class TinyServer {
 public:
  explicit TinyServer(bool interleave) : interleave_(interleave) {
    fd_ = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    socklen_t len = sizeof a;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] { Run(); });
  }
  ~TinyServer() {
    stop_ = true;
    thread_.join();
    ::close(fd_);
  }
  uint16_t port() const { return port_; }

  struct Seen {
    std::vector<Datagram> datagrams;
    std::vector<Token> pull_resp_tokens;
    int undecodable = 0;
  };
  Seen seen() {
    std::lock_guard lock(mu_);
    return seen_;
  }
  // Waits (bounded) until the server has seen `n` datagrams of kind `id`.
  bool WaitFor(GwmpId id, size_t n, std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      {
        std::lock_guard lock(mu_);
        size_t c = 0;
        for (const auto& d : seen_.datagrams) c += d.id == id ? 1 : 0;
        if (c >= n) return true;
      }
      std::this_thread::sleep_for(5ms);
    }
    return false;
  }

  static Txpk JoinAcceptTxpk() {
    Txpk t;
    t.tmst = 3517348611u;
    t.freq_hz = 506'700'000;
    t.powe = 17;
    t.rate = {7, 125};
    t.data = H(kV5Wire);
    return t;
  }

 private:
  void SendTo(const Bytes& b, const sockaddr_in& to) {
    ::sendto(fd_, b.data(), b.size(), 0, reinterpret_cast<const sockaddr*>(&to), sizeof to);
  }
  void SendPullResp(const sockaddr_in& to) {
    Token t{0x5E, static_cast<uint8_t>(0x21 + seen_.pull_resp_tokens.size())};
    auto b = BuildPullResp(t, JoinAcceptTxpk());
    ASSERT_TRUE(b.ok());
    seen_.pull_resp_tokens.push_back(t);
    SendTo(*b, to);
  }
  void Run() {
    // Bounded even if the test forgets to stop it.
    auto deadline = std::chrono::steady_clock::now() + 10s;
    while (!stop_ && std::chrono::steady_clock::now() < deadline) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 20) <= 0) continue;
      uint8_t buf[65536];
      sockaddr_in from{};
      socklen_t len = sizeof from;
      ssize_t n = ::recvfrom(fd_, buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(&from), &len);
      if (n < 0) continue;
      std::lock_guard lock(mu_);
      auto d = ParseDatagram(std::span<const uint8_t>(buf, static_cast<size_t>(n)));
      if (!d.ok()) {
        ++seen_.undecodable;
        continue;
      }
      seen_.datagrams.push_back(*d);
      if (d->id == GwmpId::kPullData) {
        SendTo(BuildPullAck(d->token), from);
        if (seen_.pull_resp_tokens.empty()) SendPullResp(from);
      } else if (d->id == GwmpId::kPushData) {
        if (interleave_) {
          SendPullResp(from);
          Token stray{static_cast<uint8_t>(~d->token[0]), d->token[1]};
          SendTo(BuildPushAck(stray), from);
          interleave_ = false;
        }
        SendTo(BuildPushAck(d->token), from);
      }
    }
  }

  int fd_ = -1;
  uint16_t port_ = 0;
  bool interleave_;
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  Seen seen_;
  std::thread thread_;
};

TEST(ConcentratorSelfTest, PullPushDownlinkAndTxAckOverLoopback) {
  TinyServer server(/*interleave=*/true);
  Concentrator c(0xAA555A0000000101);
  ASSERT_TRUE(c.Open(server.port()).ok());
  EXPECT_NE(c.local_port(), 0);

  // PULL_DATA -> PULL_ACK, then the server's PULL_RESP, answered with a JSON-less TX_ACK.
  ASSERT_TRUE(c.Pull(2s).ok());
  auto down = c.WaitPullResp(2s);
  ASSERT_TRUE(down.has_value());
  EXPECT_EQ(down->token, (Token{0x5E, 0x21}));
  EXPECT_EQ(down->txpk.tmst, 3517348611u);
  EXPECT_EQ(down->txpk.freq_hz, 506'700'000u);
  EXPECT_TRUE(down->txpk.ipol);
  EXPECT_EQ(ToHex(down->txpk.data), kV5Wire);
  ASSERT_TRUE(server.WaitFor(GwmpId::kTxAck, 1, 2s));

  // PUSH_DATA: the server first sends a PULL_RESP and a stray PUSH_ACK; Push() must still match
  // its own ack, and the PULL_RESP must wait in the queue (answered with TOO_LATE as configured).
  c.set_tx_ack(TxAckError::kTooLate);
  auto ack = c.Push({MakeRxpk(H(kV4), 3512348611u, 486'300'000, -57, 9.8)}, 2s);
  ASSERT_TRUE(ack.ok()) << ack.status().ToString();
  EXPECT_GT(ack->latency.count(), 0);
  EXPECT_LT(ack->latency, std::chrono::microseconds(2s));
  EXPECT_EQ(c.stats().stray_acks, 1u);
  auto queued = c.WaitDownlink(2s);
  ASSERT_TRUE(queued.has_value());
  EXPECT_EQ(ToHex(queued->data), kV5Wire);
  ASSERT_TRUE(server.WaitFor(GwmpId::kTxAck, 2, 2s));

  // A malformed datagram reaches the server as is.
  ASSERT_TRUE(c.SendRaw(H("02AABB")).ok());
  auto deadline = std::chrono::steady_clock::now() + 2s;
  while (server.seen().undecodable == 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(5ms);

  TinyServer::Seen seen = server.seen();
  EXPECT_EQ(seen.undecodable, 1);
  std::vector<const Datagram*> tx_acks;
  const Datagram* push = nullptr;
  for (const auto& d : seen.datagrams) {
    EXPECT_EQ(d.gateway_eui, 0xAA555A0000000101u);
    if (d.id == GwmpId::kTxAck) tx_acks.push_back(&d);
    if (d.id == GwmpId::kPushData) push = &d;
  }
  ASSERT_EQ(tx_acks.size(), 2u);
  EXPECT_EQ(tx_acks[0]->token, seen.pull_resp_tokens[0]);
  ASSERT_TRUE(tx_acks[0]->tx_ack.has_value());
  EXPECT_EQ(tx_acks[0]->tx_ack->error, TxAckError::kNone);
  EXPECT_EQ(tx_acks[0]->tx_ack->text, "");  // no JSON on success, like the reference forwarder
  EXPECT_EQ(tx_acks[1]->token, seen.pull_resp_tokens[1]);
  EXPECT_EQ(tx_acks[1]->tx_ack->error, TxAckError::kTooLate);
  ASSERT_NE(push, nullptr);
  ASSERT_EQ(push->rxpk.size(), 1u);
  const Rxpk& r = push->rxpk[0];
  EXPECT_EQ(ToHex(r.data), kV4);
  EXPECT_EQ(r.tmst, 3512348611u);
  EXPECT_EQ(r.freq_hz, 486'300'000u);
  EXPECT_EQ(r.stat, 1);
  EXPECT_EQ(r.modu, "LORA");
  EXPECT_EQ(r.lora, (LoraRate{7, 125}));
  EXPECT_EQ(r.rssi, -57);
  EXPECT_DOUBLE_EQ(r.lsnr.value_or(0), 9.8);

  const ConcentratorStats& s = c.stats();
  EXPECT_EQ(s.pull_sent, 1u);
  EXPECT_EQ(s.pull_acks, 1u);
  EXPECT_EQ(s.push_sent, 1u);
  EXPECT_EQ(s.push_acks, 1u);
  EXPECT_EQ(s.downlinks, 2u);
  EXPECT_EQ(s.tx_acks_sent, 2u);
  EXPECT_EQ(s.undecodable, 0u);
}

TEST(ConcentratorSelfTest, SilentServerGivesDeadlinesOnTime) {
  // A bound socket that never answers.
  int silent = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(silent, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  socklen_t len = sizeof a;
  ::getsockname(silent, reinterpret_cast<sockaddr*>(&a), &len);

  Concentrator c(0xAA555A0000000102);
  ASSERT_TRUE(c.Open(ntohs(a.sin_port)).ok());
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(c.Pull(150ms).code(), Code::kDeadline);
  auto push = c.Push({MakeRxpk(H(kV1), 1)}, 150ms);
  EXPECT_EQ(push.status().code(), Code::kDeadline);
  EXPECT_FALSE(c.WaitDownlink(100ms).has_value());
  auto elapsed = std::chrono::steady_clock::now() - t0;
  EXPECT_GE(elapsed, 390ms);
  EXPECT_LT(elapsed, 2s);
  // Pushes sent without waiting are expired by age.
  ASSERT_TRUE(c.SendPush({MakeRxpk(H(kV1), 2)}).ok());
  EXPECT_EQ(c.ExpirePushes(1h), 0u);
  EXPECT_EQ(c.ExpirePushes(0ms), 1u);
  ::close(silent);

  Concentrator closed(1);
  EXPECT_EQ(closed.SendRaw(H("00")).code(), Code::kFailedPrecondition);
  EXPECT_FALSE(closed.Open(1700, "localhost").ok());  // IPv4 literals only
}

}  // namespace
}  // namespace sanigate::test
