// Upstream destinations over a bad WAN (issue 21), short version for the default suite. The
// "city broker" is a real Mosquitto inside a network namespace the test creates, reached over a
// veth pair; the real sanigate, the local Mosquitto, the libmodbus simulator and the captures
// stay in the root namespace. Faults: silent partitions (packets vanish, nothing closes the
// connection; only MQTT keep-alive can notice), a refused outage (the city broker stopped), a
// kill -9 of sanigate during a silent partition, a tc tbf bandwidth cap, and latency, stalls and
// resets from a user-space TCP proxy (the kernel has no netem). Every reading the local broker
// got must reach the city (by record id; duplicates allowed, losses not, first occurrences in
// the same order), while the local broker never waits for the city.
// Needs root for `ip netns`; skipped (with the reason) where the namespace cannot be made.
// Figures (detection time, catch-up, duplicates, rates) are printed as "[netns] ..." lines.
// The storm puts all of it together for SANIGATE_STORM_S seconds (opt-in: 60 for the short one;
// the long run of issue 21 is SANIGATE_STORM_S=1800, about 35 minutes).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <iostream>
#include <mutex>
#include <optional>
#include <sstream>
#include <string_view>
#include <thread>
#include <unordered_set>

#include "gateway_fixture.h"
#include "harness/netns.h"
#include "harness/tcp_proxy.h"

namespace sanigate::test {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

size_t Occurrences(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t pos = text.find(needle); pos != std::string::npos; pos = text.find(needle, pos + 1))
    n++;
  return n;
}

// Polls `cond` every 50 ms until it holds or the timeout expires.
template <typename F>
bool WaitUntil(F cond, std::chrono::milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  while (!cond()) {
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(50ms);
  }
  return true;
}

struct Arrival {
  std::string id;
  Clock::time_point at;
};

// First occurrence of each telemetry record of `device` under `prefix`, in arrival order.
std::vector<Arrival> FirstArrivals(const std::vector<Captured>& msgs, const std::string& prefix,
                                   const std::string& device) {
  std::vector<Arrival> out;
  std::set<std::string> seen;
  const std::string suffix = "/devices/" + device + "/telemetry";
  for (const auto& m : msgs) {
    if (m.topic.rfind(prefix + "/", 0) != 0 || m.topic.size() < suffix.size() ||
        m.topic.compare(m.topic.size() - suffix.size(), suffix.size(), suffix) != 0)
      continue;
    json j = json::parse(m.payload, nullptr, false);
    if (!j.is_object() || !j.contains("id") || !j["id"].is_string()) continue;
    std::string id = j["id"].get<std::string>();
    if (seen.insert(id).second) out.push_back({id, m.at});
  }
  return out;
}

std::vector<std::string> IdsOf(const std::vector<Arrival>& a) {
  std::vector<std::string> ids;
  for (const auto& x : a) ids.push_back(x.id);
  return ids;
}

constexpr const char* kLocal = "sanigate/v1/houpu";
constexpr const char* kCity = "city/xm/huli/houpu";
constexpr const char* kLinkLost = "upstream city: link lost";
constexpr const char* kConnectFailed = "upstream city: connect to";

class UpstreamNetnsTest : public GatewayTest {
 protected:
  // Declared in this order so they are destroyed capture first, namespace last.
  std::unique_ptr<NetNs> ns;
  std::unique_ptr<NetNsMosquitto> city;
  std::unique_ptr<MqttCapture> city_capture;

  void SetUp() override {
    try {
      ns = std::make_unique<NetNs>();
    } catch (const NetNsUnavailable& e) {
      GTEST_SKIP() << "no network namespace for the city broker: " << e.what();
    }
  }

  void TearDown() override {
    // A test that failed mid-partition must not leave the captures waiting on a dead link.
    if (ns && ns->partitioned()) ns->Heal();
    GatewayTest::TearDown();
    if (::testing::Test::HasFailure() && city) {
      // Without the per-packet debug lines.
      std::istringstream in(city->log());
      std::cerr << "---- city broker log ----\n";
      for (std::string line; std::getline(in, line);)
        if (line.find("PUBLISH") == std::string::npos && line.find("PUBACK") == std::string::npos &&
            line.find("PING") == std::string::npos)
          std::cerr << line << "\n";
    }
  }

  void StartCity(bool persistence = true, const std::string& extra_config = "") {
    city = std::make_unique<NetNsMosquitto>(
        *ns, NetNsMosquitto::Options{
                 .persistence = persistence, .extra_config = extra_config, .log_publishes = true});
    city->Start();
    city_capture =
        std::make_unique<MqttCapture>(city->url(), "city-capture", /*clean_session=*/false);
    city_capture->Connect();
    city_capture->Subscribe("#", 1);
  }

  // keepalive_s = 5: the city broker drops the box 7.5 s into a silent partition; the gateway
  // (Paho C 1.3.12) noticed it itself after about 15 s in every run so far.
  // connect_timeout_s = 3: a connect into the silence gives up and is retried soon after.
  std::string Upstream(const std::string& extra = "") const {
    return "[[upstream]]\nname = \"city\"\nurl = \"" + city->url() +
           "\"\ntopic_prefix = \"city/xm/huli\"\nkeepalive_s = 5\nconnect_timeout_s = 3\n"
           "reconnect_min_ms = 100\nreconnect_max_ms = 1000\n" +
           extra + "\n";
  }

  std::vector<Arrival> Local() const {
    return FirstArrivals(capture->Messages(), kLocal, "room-07");
  }
  std::vector<Arrival> City() const {
    return FirstArrivals(city_capture->Messages(), kCity, "room-07");
  }

  // Waits until every reading the local broker has so far is at the city too; says which are
  // missing if not.
  bool CityCatchesUp(const std::string& after, std::chrono::seconds timeout,
                     std::vector<std::string> local = {}) {
    if (local.empty()) local = IdsOf(Local());
    auto t0 = Clock::now();
    bool ok = city_capture->WaitFor(
        [&](const std::vector<Captured>& msgs) {
          auto got = IdsOf(FirstArrivals(msgs, kCity, "room-07"));
          std::set<std::string> have(got.begin(), got.end());
          return std::all_of(local.begin(), local.end(),
                             [&](const auto& id) { return have.count(id) > 0; });
        },
        timeout);
    if (!ok) {
      auto got = IdsOf(City());
      std::set<std::string> have(got.begin(), got.end());
      std::string missing;
      size_t n = 0;
      for (const auto& id : local)
        if (!have.count(id) && n++ < 10) missing += id + " ";
      ADD_FAILURE() << "after " << after << " the city still lacks " << n << " of " << local.size()
                    << " readings the local broker got, e.g. " << missing;
    } else {
      std::cout << "[netns] " << after << ": city caught up with " << local.size()
                << " readings in " << Seconds(Clock::now() - t0) << " s\n";
    }
    return ok;
  }
};

// The scenario of issue 21 in short, with a Modbus room read every 100 ms: a silent partition of
// at least 10 s (held until the gateway notices it by itself), a refused outage of 5 s, and a
// silent partition of 10 s with a kill -9 of sanigate 3 s into it.
TEST_F(UpstreamNetnsTest,
       SilentPartitionsARefusedOutageAndAKill9LoseNothingAndTheLocalBrokerNeverWaits) {
  StartBroker();
  StartCity();
  StartSim(1, {"--counter", "hr:4"});
  Capture(/*persistent=*/true);
  WriteConfig(BaseConfig() + Upstream() + "[modbus]\n" + RoomConfig("room-07", 0, 100));
  StartGateway();
  ASSERT_TRUE(city_capture->WaitFor(
      [](const auto& msgs) { return FirstArrivals(msgs, kCity, "room-07").size() >= 5; }, 15s))
      << GatewayLog();

  struct Window {
    std::string what;
    Clock::time_point from, to;
  };
  std::vector<Window> windows;  // when the local pace is measured

  // 1. A silent partition. Nothing closes the connection: the gateway must notice by itself.
  {
    size_t lost_before = Occurrences(GatewayLog(), kLinkLost);
    auto t0 = Clock::now();
    ns->PartitionSilently();
    std::this_thread::sleep_for(10s);  // the fault's duration, not a synchronisation
    // If keep-alive has not fired yet, hold the partition until it does (at most 10 s more), so
    // the test always covers a detected silent partition with publishes lost in flight.
    bool noticed =
        WaitUntil([&] { return Occurrences(GatewayLog(), kLinkLost) > lost_before; }, 10s);
    auto t1 = Clock::now();
    ns->Heal();
    windows.push_back({"silent partition 1", t0, t1});
    std::cout << "[netns] silent partition 1 lasted " << Seconds(t1 - t0)
              << " s (until the gateway noticed it)\n";
    EXPECT_TRUE(noticed) << "the gateway did not notice a silent partition in " << Seconds(t1 - t0)
                         << " s\n"
                         << GatewayLog();
    ASSERT_TRUE(CityCatchesUp("silent partition 1", 30s)) << GatewayLog();
  }

  // 2. A refused outage: the city broker is stopped (connections close, connects are refused).
  {
    auto t0 = Clock::now();
    city->Stop();
    std::this_thread::sleep_for(5s);
    auto t1 = Clock::now();
    city->Start();
    windows.push_back({"refused outage", t0, t1});
    ASSERT_TRUE(CityCatchesUp("refused outage", 30s)) << GatewayLog();
  }

  // 3. A silent partition with a kill -9 of sanigate 3 s into it: the new process starts into
  // the silence (its connects time out) and must still deliver what the old one owed.
  {
    auto t0 = Clock::now();
    ns->PartitionSilently();
    std::this_thread::sleep_for(3s);
    gateway.Kill();
    StartGateway();
    auto restarted = Clock::now();
    // The new process tries the city and gives up after connect_timeout_s (3 s): its SYNs
    // vanish, nothing refuses them.
    bool tried = WaitUntil(
        [&] {
          return ReadFile(path("gateway." + std::to_string(gateway_starts) + ".log"))
                     .find("upstream city: connect to") != std::string::npos;
        },
        6s);
    auto first_failure = Clock::now();
    std::this_thread::sleep_until(t0 + 10s);
    auto t1 = Clock::now();
    ns->Heal();
    // The local pace is measured once the new process is up (it needs a moment to start).
    windows.push_back({"silent partition 2 after the kill -9", restarted + 1500ms, t1});
    EXPECT_TRUE(tried)
        << "the restarted gateway never reported a failed connect to the partitioned city\n"
        << GatewayLog();
    EXPECT_GE(first_failure - restarted, 2500ms)
        << "a connect into a silent partition failed at once: something answered it";
    std::cout << "[netns] the restarted gateway's first connect into the silence failed after "
              << Seconds(first_failure - restarted) << " s\n";
    ASSERT_TRUE(CityCatchesUp("silent partition 2 with a kill -9", 30s)) << GatewayLog();
  }

  // Everything the local broker got, by id, at the city; first occurrences in the same order.
  auto local = Local();
  std::vector<std::string> local_ids = IdsOf(local);
  ASSERT_GE(local.size(), 200u) << "too few readings to judge";
  ASSERT_TRUE(CityCatchesUp("the end", 30s, local_ids)) << GatewayLog();
  std::vector<std::string> city_ids = IdsOf(City());
  ASSERT_GE(city_ids.size(), local_ids.size());
  std::vector<std::string> city_prefix(city_ids.begin(),
                                       city_ids.begin() + static_cast<long>(local_ids.size()));
  EXPECT_EQ(city_prefix, local_ids) << "the city got the readings in another order";
  // Duplicates: those the gateway sent (PUBLISHes the city broker received beyond one per
  // record) and those the broker itself delivered twice to the capture's persistent session.
  const std::string topic = std::string(kCity) + "/devices/room-07/telemetry";
  size_t city_copies = 0;
  for (const auto& m : city_capture->Messages())
    if (m.topic == topic) city_copies++;
  size_t sent = city->ReceivedPublishes("sanigate-gw-test", topic);
  long resent = static_cast<long>(sent) - static_cast<long>(city_ids.size());
  std::cout << "[netns] " << local_ids.size() << " readings; the city broker got " << sent
            << " publishes of " << city_ids.size() << " records (" << resent
            << " resent by the gateway); the capture got " << city_copies - city_ids.size()
            << " duplicates; link lost " << Occurrences(GatewayLog(), kLinkLost) << " times\n";
  RecordProperty("readings", static_cast<int>(local_ids.size()));
  RecordProperty("gateway_resent", static_cast<int>(resent));
  for (const auto& m : city_capture->Messages())
    EXPECT_NE(m.topic.rfind("sanigate/", 0), 0u) << m.topic;

  // The local broker got readings at full pace (one per 100 ms) through every fault.
  for (const auto& w : windows) {
    size_t n = std::count_if(local.begin(), local.end(),
                             [&](const Arrival& a) { return a.at >= w.from && a.at <= w.to; });
    double rate = static_cast<double>(n) / Seconds(w.to - w.from);
    std::cout << "[netns] local broker during " << w.what << ": " << n << " readings, " << rate
              << "/s\n";
    EXPECT_GE(rate, 7.0) << "the local broker was held back during " << w.what;
  }
}

// A WAN that costs money: with a tc tbf cap on the box's uplink, a backlog drains at the link's
// pace and nothing is lost. What the city broker receives is measured beside it, by a
// mosquitto_sub inside the namespace (a capture in the root namespace would have its own
// PUBACKs queued behind the backlog in the shaped link, and receive in bursts).
TEST_F(UpstreamNetnsTest, ABacklogOverA64KbitLinkStaysUnderTheCapAndLosesNothing) {
  constexpr int kKbit = 64, kBurst = 4096;
  constexpr double kCapBytesPerS = kKbit * 1000.0 / 8;
  // How late the meter may see a message that crossed the link (the broker and the meter share
  // two loaded cores with everything else): a window's bytes may have crossed in a window this
  // much longer.
  constexpr double kJitterS = 0.25;
  StartBroker();
  StartCity(/*persistence=*/false);  // never restarted here; no store writes in the way of timing
  Process meter = ns->Start({"mosquitto_sub", "-h", ns->ns_ip(), "-p", std::to_string(city->port()),
                             "-i", "city-meter", "-q", "1", "-t", "city/#", "-F", "%U %l %t"},
                            {.stdout_path = path("meter.txt"), .stderr_path = path("meter.err")});
  // The meter is subscribed once it sees a probe.
  ASSERT_TRUE(WaitUntil(
      [&] {
        city_capture->Publish("city/probe", "p");
        return ReadFile(path("meter.txt")).find("city/probe") != std::string::npos;
      },
      10s))
      << ReadFile(path("meter.err"));
  StartSim(1, {"--counter", "hr:4"});
  Capture();
  WriteConfig(BaseConfig() + Upstream("kinds = [\"telemetry\"]") + "[modbus]\n" +
              RoomConfig("room-07", 0, 100));
  StartGateway();
  ASSERT_TRUE(city_capture->WaitFor(
      [](const auto& msgs) { return FirstArrivals(msgs, kCity, "room-07").size() >= 5; }, 15s))
      << GatewayLog();
  try {
    ns->LimitBandwidth(kKbit, kBurst);
  } catch (const std::exception& e) {
    GTEST_SKIP() << "no tc tbf here: " << e.what();
  }

  // A backlog: the link goes silent for 150 readings (15 s, long enough for keep-alive to give
  // up; the city broker drops the box's session after 7.5 s either way).
  ns->PartitionSilently();
  size_t before = Local().size();
  ASSERT_TRUE(WaitReads("room-07", before + 150, 30s)) << GatewayLog();
  auto backlog = IdsOf(Local());
  ns->Heal();
  auto healed = Clock::now();
  ASSERT_TRUE(CityCatchesUp("a silent partition, over a 64 kbit/s link", 90s, backlog))
      << GatewayLog();
  double drain_s = Seconds(Clock::now() - healed);

  // Nothing lost, same order.
  auto local_ids = IdsOf(Local());
  ASSERT_TRUE(CityCatchesUp("the drain", 60s, local_ids)) << GatewayLog();
  auto city_ids = IdsOf(City());
  ASSERT_GE(city_ids.size(), local_ids.size());
  EXPECT_EQ(std::vector<std::string>(city_ids.begin(),
                                     city_ids.begin() + static_cast<long>(local_ids.size())),
            local_ids);

  // What reached the city broker, per message: its arrival (unix time in ns) and topic+payload
  // bytes, which are fewer than what crossed the wire (MQTT, TCP, IP and Ethernet headers): in
  // every window of a second or more they must fit under the cap plus the bucket (allowing the
  // meter kJitterS of lateness).
  meter.Stop();
  std::vector<std::pair<double, size_t>> got;
  {
    std::istringstream in(ReadFile(path("meter.txt")));
    double ts;
    size_t len;
    std::string topic;
    while (in >> ts >> len >> topic)
      if (topic != "city/probe") got.emplace_back(ts, len + topic.size());
  }
  ASSERT_GE(got.size(), backlog.size());
  double worst = 0,
         best5 = 0;  // highest rate beyond the bucket in any window >= 1 s; best 5 s window
  std::string first_breach;
  for (size_t i = 0; i < got.size(); ++i) {
    size_t bytes = 0;
    for (size_t j = i; j < got.size(); ++j) {
      bytes += got[j].second;
      double len = got[j].first - got[i].first;
      if (len < 1.0) continue;
      worst = std::max(worst, (static_cast<double>(bytes) - kBurst) / len);
      if (len >= 5.0) best5 = std::max(best5, static_cast<double>(bytes) / len);
      if (first_breach.empty() &&
          static_cast<double>(bytes) > kCapBytesPerS * (len + kJitterS) + kBurst)
        first_breach = std::to_string(bytes) + " bytes in " + std::to_string(len) + " s";
    }
  }
  std::cout << "[netns] over " << kKbit << " kbit/s (" << kCapBytesPerS
            << " B/s on the wire): " << backlog.size() << " readings of backlog caught up in "
            << drain_s << " s; best 5 s window " << best5
            << " B/s of topic+payload; worst window of >= 1 s " << worst << " B/s beyond the "
            << kBurst << " byte bucket\n";
  EXPECT_TRUE(first_breach.empty()) << "over the cap: " << first_breach;
  // The harness's own check: during the drain the link, not the gateway, set the pace (else the
  // cap proved nothing).
  EXPECT_GE(best5, 0.5 * kCapBytesPerS)
      << "the backlog never filled the link: the tbf limit did not bite";
}

// The proxy itself (no namespace needed): bytes arrive in order, no earlier than the latency,
// and a drop resets the client's connection.
TEST(TcpProxyTest, DelaysBytesInOrderAndResetsOnADrop) {
  int srv = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  ASSERT_EQ(::bind(srv, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(::listen(srv, 4), 0);
  ASSERT_EQ(::getsockname(srv, reinterpret_cast<sockaddr*>(&a), &len), 0);
  std::thread echo([srv] {  // echoes one connection, then ends
    int c = ::accept(srv, nullptr, nullptr);
    char buf[4096];
    for (ssize_t n; (n = ::read(c, buf, sizeof buf)) > 0;)
      if (::write(c, buf, static_cast<size_t>(n)) != n) break;
    ::close(c);
  });
  TcpProxy proxy({.target_port = ntohs(a.sin_port), .latency = 100ms});
  int c = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in p{};
  p.sin_family = AF_INET;
  p.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  p.sin_port = htons(proxy.port());
  ASSERT_EQ(::connect(c, reinterpret_cast<sockaddr*>(&p), sizeof p), 0);
  timeval tv{5, 0};
  ::setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  auto t0 = Clock::now();
  std::string sent;
  for (int i = 0; i < 50; ++i) {
    std::string s = std::to_string(i) + ",";
    sent += s;
    ASSERT_EQ(::write(c, s.data(), s.size()), static_cast<ssize_t>(s.size()));
  }
  std::string got;
  char buf[4096];
  while (got.size() < sent.size()) {
    ssize_t n = ::read(c, buf, sizeof buf);
    ASSERT_GT(n, 0) << "after " << got;
    if (got.empty()) {
      EXPECT_GE(Clock::now() - t0, 195ms) << "less than the round trip of 2 x 100 ms";
    }
    got.append(buf, static_cast<size_t>(n));
  }
  EXPECT_EQ(got, sent);
  proxy.DropAll(/*silent=*/false);
  ssize_t n = ::read(c, buf, sizeof buf);
  EXPECT_TRUE(n == 0 || (n < 0 && errno == ECONNRESET)) << n << " " << std::strerror(errno);
  EXPECT_EQ(proxy.stats().dropped, 1u);
  ::close(c);
  echo.join();
  ::close(srv);
}

// Latency and loss where the kernel has no netem: the gateway reaches the city through a
// user-space proxy adding 150 ms each way (300 ms round trip), holding 5 % of the chunks back
// 300 ms more (a lost segment's retransmission) and resetting the connection on 1 % of them.
TEST_F(UpstreamNetnsTest, ThroughA300msLossyLinkEveryReadingReachesTheCityInOrder) {
  StartBroker();
  StartCity();
  TcpProxy proxy({.target_host = ns->ns_ip(),
                  .target_port = city->port(),
                  .latency = 150ms,
                  .stall_pct = 5,
                  .stall = 300ms,
                  .drop_pct = 1,
                  .seed = 21});
  StartSim(1, {"--counter", "hr:4"});
  Capture();
  // The gateway is pointed at the proxy; the city capture talks to the city broker directly.
  WriteConfig(BaseConfig() + "[[upstream]]\nname = \"city\"\nurl = \"" + proxy.url() +
              "\"\ntopic_prefix = \"city/xm/huli\"\nkeepalive_s = 5\nconnect_timeout_s = 3\n"
              "reconnect_min_ms = 100\nreconnect_max_ms = 1000\n[modbus]\n" +
              RoomConfig("room-07", 0, 100));
  StartGateway();
  ASSERT_TRUE(city_capture->WaitFor(
      [](const auto& msgs) { return FirstArrivals(msgs, kCity, "room-07").size() >= 5; }, 15s))
      << GatewayLog();
  auto t0 = Clock::now();
  std::this_thread::sleep_for(20s);  // the lossy link's duration
  auto t1 = Clock::now();
  proxy.SetDrops(0, false);
  auto local = Local();
  auto local_ids = IdsOf(local);
  ASSERT_TRUE(CityCatchesUp("20 s of a lossy link", 30s, local_ids)) << GatewayLog();
  auto city_ids = IdsOf(City());
  ASSERT_GE(city_ids.size(), local_ids.size());
  EXPECT_EQ(std::vector<std::string>(city_ids.begin(),
                                     city_ids.begin() + static_cast<long>(local_ids.size())),
            local_ids);
  auto st = proxy.stats();
  size_t n = std::count_if(local.begin(), local.end(),
                           [&](const Arrival& a) { return a.at >= t0 && a.at <= t1; });
  const std::string topic = std::string(kCity) + "/devices/room-07/telemetry";
  size_t sent = city->ReceivedPublishes("sanigate-gw-test", topic);
  std::cout << "[netns] lossy link: " << st.accepted << " connections, " << st.dropped << " reset, "
            << st.stalls << " stalls; " << local_ids.size() << " readings; the city broker got "
            << sent << " publishes of " << city_ids.size() << " records; local broker "
            << static_cast<double>(n) / Seconds(t1 - t0) << "/s\n";
  EXPECT_GE(st.dropped, 1u)
      << "the proxy never dropped a connection: the test proved nothing about drops";
  EXPECT_GE(static_cast<double>(n) / Seconds(t1 - t0), 7.0)
      << "the local broker was held back by the lossy link";
}

// ---- The storm: all of the above at once -------------------------------------------------------

// What one capture got, indexed as it arrives (a long storm captures 10^5 messages: too many to
// parse again at every check): the first arrival of each reading, per device with its outbox
// seq and simulator counter, the copies, and the ids of sanifleet's messages.
struct Tally {
  explicit Tally(std::string p) : prefix(std::move(p)) {}
  std::string prefix;
  size_t done = 0;  // messages consumed
  std::unordered_set<std::string> readings;
  std::vector<std::string> order;                     // reading ids, first arrivals in order
  std::vector<Clock::time_point> first_at;            // and when they arrived
  std::map<std::string, std::vector<uint64_t>> seqs;  // per device: outbox seqs, first arrivals
  std::map<std::string, std::vector<int64_t>> reads;  // per device: simulator read counters
  size_t reading_copies = 0;
  std::unordered_set<std::string> fleet;
  size_t fleet_copies = 0;

  void Feed(const std::vector<Captured>& msgs) {
    for (; done < msgs.size(); ++done) {
      const Captured& m = msgs[done];
      if (m.topic.compare(0, prefix.size(), prefix) != 0) continue;
      std::string_view rest(m.topic);
      rest.remove_prefix(prefix.size());
      const bool relayed = rest.starts_with("/fleet/") || rest.starts_with("/heatmap/");
      const bool reading = rest.starts_with("/devices/") && rest.ends_with("/telemetry");
      if (!relayed && !reading) continue;
      json j = json::parse(m.payload, nullptr, false);
      if (!j.is_object() || !j.contains("id") || !j["id"].is_string()) continue;
      std::string id = j["id"].get<std::string>();
      if (relayed) {
        fleet_copies++;
        fleet.insert(id);
        continue;
      }
      reading_copies++;
      if (!readings.insert(id).second) continue;
      std::string device(rest.substr(9, rest.size() - 9 - 10));  // "/devices/" … "/telemetry"
      seqs[device].push_back(std::strtoull(id.c_str() + id.rfind(':') + 1, nullptr, 10));
      if (j.contains("metrics") && j["metrics"].is_object() && j["metrics"].contains("reads"))
        reads[device].push_back(j["metrics"]["reads"].get<int64_t>());
      order.push_back(std::move(id));
      first_at.push_back(m.at);
    }
  }
  // Indexes what `c` got since the last call (under the capture's lock, without copying it).
  void Peek(const MqttCapture& c) {
    c.WaitFor(
        [this](const std::vector<Captured>& msgs) {
          Feed(msgs);
          return true;
        },
        0ms);
  }
  size_t ReadingsBetween(Clock::time_point from, Clock::time_point to) const {
    return static_cast<size_t>(std::upper_bound(first_at.begin(), first_at.end(), to) -
                               std::lower_bound(first_at.begin(), first_at.end(), from));
  }
};

// sanifleet's side of the box: fleet events, health verdicts (retained) and heat-map windows
// (retained) published on the local broker with mosquitto_pub, one every 500 ms, each with a
// unique id. One the broker did not acknowledge (it is being restarted) is sent again, same id.
class FleetPublisher {
 public:
  struct Acked {
    std::string id;
    Clock::time_point at;
  };
  FleetPublisher(uint16_t port, int rooms, std::string log)
      : port_(port), rooms_(rooms), log_(std::move(log)) {
    thread_ = std::thread([this] { Run(); });
  }
  ~FleetPublisher() { Stop(); }
  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  std::vector<Acked> acked() const {
    std::lock_guard lk(mu_);
    return acked_;
  }
  size_t retries() const { return retries_; }

 private:
  void Run() {
    auto next = Clock::now();
    for (int n = 0; n < 100000 && !stop_; ++n) {
      const std::string id = "storm-f" + std::to_string(n);
      const std::string room =
          "room-" + std::string(n / 3 % rooms_ < 10 ? "0" : "") + std::to_string(n / 3 % rooms_);
      std::string topic = std::string(kLocal), payload;
      bool retain = true;
      switch (n % 3) {
        case 0:
          topic += "/fleet/events";
          payload = R"({"id":")" + id + R"(","device":")" + room + R"(","change":"degraded"})";
          retain = false;
          break;
        case 1:
          topic += "/fleet/health/" + room;
          payload = R"({"id":")" + id + R"(","device":")" + room + R"(","verdict":"ok"})";
          break;
        default:
          topic += "/heatmap/bin_fill";
          payload = R"({"id":")" + id + R"(","layer":"bin_fill"})";
      }
      std::vector<std::string> argv = {
          "mosquitto_pub", "-h", "127.0.0.1", "-p", std::to_string(port_), "-q", "1", "-t",
          topic,           "-m", payload};
      if (retain) argv.push_back("-r");
      for (int attempt = 0; attempt < 200 && !stop_; ++attempt) {
        int rc = -1;
        try {
          rc = Process::Run(argv, 10s, {.stdout_path = log_, .stderr_path = log_});
        } catch (const std::exception&) {  // timed out: tried again, same id
        }
        if (ExitedWith(rc, 0)) {
          std::lock_guard lk(mu_);
          acked_.push_back({id, Clock::now()});
          break;
        }
        retries_++;
        std::this_thread::sleep_for(250ms);
      }
      next = std::max(next + 500ms, Clock::now());
      std::this_thread::sleep_until(next);
    }
  }

  const uint16_t port_;
  const int rooms_;
  const std::string log_;
  std::atomic<bool> stop_{false};
  std::atomic<size_t> retries_{0};
  mutable std::mutex mu_;
  std::vector<Acked> acked_;  // guarded by mu_
  std::thread thread_;        // last: started once the rest is ready
};

struct Fault {
  bool silent;  // else refused: the city broker stopped
  double start_s, len_s;
  bool kill_gateway = false, kill_local_broker = false;  // at its middle
  Clock::time_point from{}, to{};
  size_t links_lost = 0;              // "link lost" lines the gateway logged during it
  size_t connects_failed = 0;         // and failed connects
  size_t backlog = 0;                 // readings of the local broker the city lacked when it ended
  std::optional<double> caught_up_s;  // from then until the city had them all
};

// The storm's faults over `d` seconds: for 1800 s ten partitions of 10 s to 5 min, for 60 s three
// of 8-10 s; silent and refused in turn, evenly spaced, the link up (and draining) in between.
// sanigate is killed in a silent one past the middle (it restarts into the silence), the local
// broker in a refused one.
std::vector<Fault> StormSchedule(double d) {
  // Where each partition lies between the shortest and the longest.
  static constexpr double kShape[10] = {0.03, 1.0, 0.0, 0.28, 0.07, 0.59, 0.02, 0.17, 0.12, 0.38};
  const int n = std::clamp(static_cast<int>(std::lround(d / 180)), 3, 10);
  const double shortest = std::clamp(d / 180, 8.0, 10.0), longest = std::clamp(d / 6, 10.0, 300.0);
  std::vector<Fault> faults;
  double total = 0;
  for (int i = 0; i < n; ++i) {
    Fault f{};
    f.silent = i % 2 == 0;
    f.len_s = shortest + kShape[i] * (longest - shortest);
    total += f.len_s;
    faults.push_back(f);
  }
  const double gap = (d - total) / (n + 1);
  double t = 0;
  for (auto& f : faults) {
    t += gap;
    f.start_s = t;
    t += f.len_s;
  }
  int kill_gw = (n / 2) % 2 == 0 ? n / 2 : n / 2 + 1;  // the first silent one from the middle on
  int kill_local = (n - 2) % 2 == 1 ? n - 2 : n - 3;   // the last refused one before the end
  faults[static_cast<size_t>(kill_gw)].kill_gateway = true;
  faults[static_cast<size_t>(kill_local)].kill_local_broker = true;
  return faults;
}

// Issue 21's scenario in one: a community's rooms read every 500 ms, sanifleet publishing beside
// them, the city reached through 150 ms of latency each way with 5 % of the chunks stalled, and
// for SANIGATE_STORM_S seconds (60 or, the long run, 1800) silent and refused partitions,
// a kill -9 of sanigate and one of the local Mosquitto. Everything the local broker got and
// everything sanifleet published must reach the city (by id; duplicates counted, never a
// failure), readings in order per device, and the local broker must never wait for the city.
TEST_F(UpstreamNetnsTest, AStormOfPartitionsOutagesLossAndKillsLosesNothing) {
  // Opt-in until a fresh-clone CI run has carried it (then the 60 s version joins the default
  // run): SANIGATE_STORM_S=60 for the short storm, 1800 for issue 21's long run.
  const char* e = std::getenv("SANIGATE_STORM_S");
  if (!e) GTEST_SKIP() << "set SANIGATE_STORM_S (60: short, 1800: issue 21's long run) to run the storm";
  double storm_s = std::clamp(std::atof(e), 30.0, 7200.0);
  constexpr int kRooms = 20;
  constexpr double kNominal = kRooms * 2.0;  // readings per second
  // A SIGKILL restarts the local broker from its store (saved every second).
  StartBroker(MosquittoBroker::Options{.persistence = true});
  // 100 in flight: 20 (Mosquitto's Receive Maximum by default) over round trips of 300-450 ms
  // carry about 45 records/s, barely the 40/s the rooms make, and a backlog would never drain.
  StartCity(/*persistence=*/true, "max_inflight_messages 100\n");
  TcpProxy proxy({.target_host = ns->ns_ip(),
                  .target_port = city->port(),
                  .latency = 150ms,
                  .stall_pct = 5,
                  .stall = 300ms,
                  .seed = 21});
  StartSim(kRooms, {"--counter", "hr:4"});
  Capture(/*persistent=*/true);
  std::string rooms;
  for (int i = 0; i < kRooms; ++i)
    rooms += RoomConfig("room-" + std::string(i < 10 ? "0" : "") + std::to_string(i),
                        static_cast<size_t>(i), 500);
  // ack_timeout_s = 5: a silent partition is noticed 5 s after the first unacknowledged publish,
  // even the short ones.
  WriteConfig(BaseConfig() + "[[upstream]]\nname = \"city\"\nurl = \"" + proxy.url() +
              "\"\ntopic_prefix = \"city/xm/huli\"\nkeepalive_s = 5\nconnect_timeout_s = 3\n"
              "ack_timeout_s = 5\ninflight_window = 100\nreconnect_min_ms = 100\n"
              "reconnect_max_ms = 1000\n[modbus]\n" +
              rooms);
  StartGateway();
  ASSERT_TRUE(city_capture->WaitFor(
      [](const auto& msgs) { return FirstArrivals(msgs, kCity, "room-00").size() >= 5; }, 20s))
      << GatewayLog();
  // sanifleet starts once the relay has subscribed (before that the broker keeps nothing for it).
  bool relaying = false;
  for (int i = 0; i < 20 && !relaying; ++i) {
    Process::Run({"mosquitto_pub", "-h", "127.0.0.1", "-p", std::to_string(broker->port()), "-q",
                  "1", "-t", std::string(kLocal) + "/fleet/events", "-m", R"({"id":"probe"})"},
                 10s);
    relaying = city_capture->WaitFor(
        [](const auto& msgs) {
          return std::any_of(msgs.begin(), msgs.end(), [](const Captured& m) {
            return m.topic == std::string(kCity) + "/fleet/events";
          });
        },
        1s);
  }
  ASSERT_TRUE(relaying) << "sanifleet's messages never reached the city\n" << GatewayLog();

  std::vector<Fault> faults = StormSchedule(storm_s);
  Tally at_local(kLocal), at_city(kCity);
  size_t have_upto = 0;           // the city has every reading of at_local.order before this index
  std::optional<size_t> pending;  // the backlog of the last partition: at_local.order's size
  Clock::time_point healed{};
  Fault* last = nullptr;
  // Indexes both captures every second until `until`, noting when the city has caught up with
  // the backlog of the last partition.
  auto pass_time = [&](Clock::time_point until) {
    for (int i = 0; i < 100000 && Clock::now() < until; ++i) {
      std::this_thread::sleep_for(std::min<Clock::duration>(1s, until - Clock::now()));
      at_local.Peek(*capture);
      at_city.Peek(*city_capture);
      while (have_upto < at_local.order.size() && at_city.readings.count(at_local.order[have_upto]))
        have_upto++;
      if (pending && have_upto >= *pending) {
        last->caught_up_s = Seconds(Clock::now() - healed);
        pending.reset();
      }
    }
  };

  const auto t0 = Clock::now();
  auto at = [&](double s) { return t0 + std::chrono::milliseconds(std::llround(s * 1000)); };
  FleetPublisher fleet(broker->port(), kRooms, path("fleet-pub.log"));
  std::optional<Clock::time_point> gateway_killed, broker_killed;
  for (auto& f : faults) {
    pass_time(at(f.start_s));
    std::string log = GatewayLog();
    size_t lost_before = Occurrences(log, kLinkLost),
           failed_before = Occurrences(log, kConnectFailed);
    f.from = Clock::now();
    if (f.silent)
      ns->PartitionSilently();  // packets vanish, nothing closes
    else
      city->Stop();  // connections close, connects are refused
    if (f.kill_gateway || f.kill_local_broker) {
      pass_time(at(f.start_s + f.len_s / 2));
      if (f.kill_gateway) {
        gateway_killed = Clock::now();
        gateway.Kill();
        StartGateway();  // same config, same outbox
      } else {
        broker_killed = Clock::now();
        broker->Kill();
        // Down for a moment, as when systemd restarts it: sanifleet's publishes fail meanwhile.
        std::this_thread::sleep_for(2s);
        broker->Start();  // same port, its store
      }
    }
    pass_time(at(f.start_s + f.len_s));
    f.to = Clock::now();
    log = GatewayLog();
    f.links_lost = Occurrences(log, kLinkLost) - lost_before;
    f.connects_failed = Occurrences(log, kConnectFailed) - failed_before;
    if (f.silent)
      ns->Heal();
    else
      city->Start();  // same port, its store
    healed = Clock::now();
    at_local.Peek(*capture);
    at_city.Peek(*city_capture);
    while (have_upto < at_local.order.size() && at_city.readings.count(at_local.order[have_upto]))
      have_upto++;
    pending = at_local.order.size();
    f.backlog = *pending - have_upto;
    last = &f;
    ASSERT_TRUE(gateway.Running()) << "sanigate died in the storm\n" << GatewayLog();
  }
  pass_time(at(storm_s));
  fleet.Stop();
  const auto storm_end = Clock::now();

  // Everything healed: the city must catch up with the local broker and with sanifleet.
  auto acked = fleet.acked();
  at_local.Peek(*capture);
  const size_t local_n = at_local.order.size();
  at_city.Peek(*city_capture);
  while (have_upto < local_n && at_city.readings.count(at_local.order[have_upto])) have_upto++;
  const size_t final_backlog = local_n - have_upto;
  auto fleet_missing = [&] {
    std::vector<FleetPublisher::Acked> out;
    for (const auto& a : acked)
      if (!at_city.fleet.count(a.id)) out.push_back(a);
    return out;
  };
  const auto final_timeout = std::chrono::seconds(90 + static_cast<int>(storm_s / 6));
  for (int i = 0; i < 100000 && Clock::now() < storm_end + final_timeout; ++i) {
    at_city.Peek(*city_capture);
    while (have_upto < local_n && at_city.readings.count(at_local.order[have_upto])) have_upto++;
    if (pending && have_upto >= *pending) {
      last->caught_up_s = Seconds(Clock::now() - healed);
      pending.reset();
    }
    if (have_upto >= local_n && fleet_missing().empty()) break;
    std::this_thread::sleep_for(1s);
  }
  const double final_catch_up_s = Seconds(Clock::now() - storm_end);
  at_local.Peek(*capture);

  // Enough happened to judge: readings and fleet messages flowed, the link was really cut.
  ASSERT_GE(local_n, static_cast<size_t>(kNominal * storm_s * 0.5)) << "too few readings to judge";
  ASSERT_GE(acked.size(), static_cast<size_t>(storm_s)) << "too few fleet messages to judge";
  auto st = proxy.stats();
  EXPECT_GE(st.accepted, faults.size() + 1)
      << "the gateway did not reconnect after every partition";
  for (const auto& f : faults)
    EXPECT_GE(f.links_lost + f.connects_failed, 1u)
        << "the gateway neither lost its link nor failed a connect in the "
        << (f.silent ? "silent" : "refused") << " partition at " << f.start_s << " s";

  // No reading lost: every one the local broker got is at the city.
  std::vector<std::string> missing;
  std::string examples;  // with when the local broker got them, to match with the faults
  for (size_t i = 0; i < local_n; ++i) {
    if (at_city.readings.count(at_local.order[i])) continue;
    if (missing.size() < 10)
      examples +=
          at_local.order[i] + " (" + std::to_string(Seconds(at_local.first_at[i] - t0)) + " s) ";
    missing.push_back(at_local.order[i]);
  }
  EXPECT_TRUE(missing.empty()) << "the city lacks " << missing.size() << " of " << local_n
                               << " readings the local broker got, e.g. " << examples;

  // No fleet message lost, except what the relay's client library acknowledged in the last
  // milliseconds before the kill -9 of sanigate (README, "Honest limits"): at most one, then.
  size_t in_kill_window = 0;
  std::string fleet_examples;
  auto fm = fleet_missing();
  for (const auto& a : fm) {
    if (gateway_killed && a.at <= *gateway_killed && *gateway_killed - a.at < 1s) {
      in_kill_window++;
      std::cout << "[netns] storm: " << a.id << " acknowledged " << Seconds(*gateway_killed - a.at)
                << " s before the kill -9 of sanigate, lost "
                << "for the city (the relay's documented window)\n";
    } else if (fleet_examples.size() < 200) {
      fleet_examples += a.id + " (acknowledged at " + std::to_string(Seconds(a.at - t0)) + " s) ";
    }
  }
  EXPECT_LE(in_kill_window, 1u);
  EXPECT_EQ(fm.size(), in_kill_window)
      << "the city lacks " << fm.size() - in_kill_window << " of " << acked.size()
      << " fleet messages the local broker acknowledged, e.g. " << fleet_examples;

  // Per device, first arrivals at the city in the order they were made (outbox seq), and no
  // reading missing that the simulator counted, but for failed polls and the one a kill -9
  // may catch between the read and the outbox commit.
  size_t order_breaks = 0, count_gaps = 0;
  for (const auto& [device, seqs] : at_city.seqs) {
    for (size_t i = 1; i < seqs.size(); ++i)
      if (seqs[i] <= seqs[i - 1] && order_breaks++ < 5)
        ADD_FAILURE() << device << ": seq " << seqs[i] << " reached the city after " << seqs[i - 1];
    const auto& r = at_city.reads[device];
    int64_t gaps = 0;
    for (size_t i = 1; i < r.size(); ++i) gaps += std::max<int64_t>(0, r[i] - r[i - 1] - 1);
    count_gaps += static_cast<size_t>(gaps);
    EXPECT_LE(gaps, FailedPolls(device) + 1)
        << device << ": " << gaps << " readings never reached the city";
  }
  EXPECT_EQ(order_breaks, 0u);
  EXPECT_EQ(at_city.seqs.size(), static_cast<size_t>(kRooms));
  for (const auto& m : city_capture->Messages())
    if (m.topic.rfind("sanigate/", 0) == 0) {
      ADD_FAILURE() << "the local scheme leaked to the city: " << m.topic;
      break;
    }

  // The local broker kept getting readings through every partition (but for 10 s after a kill).
  double worst_rate = 1e9;
  for (const auto& f : faults) {
    std::vector<std::pair<Clock::time_point, Clock::time_point>> spans = {{f.from, f.to}};
    for (auto k : {gateway_killed, broker_killed}) {
      if (!k) continue;
      std::vector<std::pair<Clock::time_point, Clock::time_point>> cut;
      for (auto [a, b] : spans) {
        if (*k - 500ms > a) cut.push_back({a, std::min(b, *k - 500ms)});
        if (*k + 10s < b) cut.push_back({std::max(a, *k + 10s), b});
      }
      spans = cut;
    }
    for (auto [a, b] : spans) {
      if (b - a < 3s) continue;
      double rate = static_cast<double>(at_local.ReadingsBetween(a, b)) / Seconds(b - a);
      worst_rate = std::min(worst_rate, rate);
      EXPECT_GE(rate, 0.7 * kNominal)
          << "the local broker was held back in the " << (f.silent ? "silent" : "refused")
          << " partition at " << f.start_s << " s: " << rate << "/s";
    }
  }

  // The figures.
  size_t silent = 0;
  double cut_s = 0;
  for (const auto& f : faults) {
    silent += f.silent;
    cut_s += Seconds(f.to - f.from);
    std::cout << "[netns] storm partition at " << Seconds(f.from - t0)
              << " s: " << (f.silent ? "silent" : "refused") << " " << Seconds(f.to - f.from)
              << " s" << (f.kill_gateway ? ", kill -9 of sanigate" : "")
              << (f.kill_local_broker ? ", kill -9 of the local broker" : "") << "; link lost "
              << f.links_lost << "x, connects failed " << f.connects_failed << "x; the city lacked "
              << f.backlog << " readings, had them "
              << (f.caught_up_s ? std::to_string(*f.caught_up_s) + " s later"
                                : "not before the next fault")
              << "\n";
  }
  size_t sent = 0;
  for (const auto& [device, seqs] : at_city.seqs)
    sent += city->ReceivedPublishes("sanigate-gw-test",
                                    std::string(kCity) + "/devices/" + device + "/telemetry");
  std::cout << "[netns] storm: " << storm_s << " s, " << faults.size() << " partitions (" << silent
            << " silent, " << faults.size() - silent << " refused, " << cut_s
            << " s in all), kill -9 of sanigate and of the local broker; " << local_n
            << " readings of " << kRooms << " rooms at the local broker, " << missing.size()
            << " missing at the city, " << at_city.reading_copies - at_city.readings.size()
            << " duplicates (by the end, the city broker got " << sent << " publishes of "
            << at_city.readings.size() << " readings); " << acked.size() << " fleet messages, "
            << fm.size() << " missing, " << at_city.fleet_copies - at_city.fleet.size()
            << " duplicates, " << fleet.retries() << " publishes retried; proxy: " << st.accepted
            << " connections, " << st.stalls << " stalls, " << st.dropped << " drops; link lost "
            << Occurrences(GatewayLog(), kLinkLost)
            << "x; local broker during partitions >= " << worst_rate << "/s (nominal " << kNominal
            << "); simulator counts missing " << count_gaps << "; final catch-up of "
            << final_backlog << " readings " << final_catch_up_s << " s\n";
  RecordProperty("readings", static_cast<int>(local_n));
  RecordProperty("fleet_messages", static_cast<int>(acked.size()));
  RecordProperty("duplicates", static_cast<int>(at_city.reading_copies - at_city.readings.size()));
  EXPECT_TRUE(gateway.Running()) << "sanigate died after the storm";
}

}  // namespace
}  // namespace sanigate::test
