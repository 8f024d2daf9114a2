// MqttLink (gateway/mqtt/mqtt_link.h) against a real Mosquitto, with a Paho client (the test
// harness's MqttCapture) as the independent peer: PUBACKs by token and refusals with their reason
// code, a broker killed with publishes in flight (reported once, nothing the old connection held
// sent again), connect failures named, a broker that never answers, MQTT 5 request/response
// properties, and the relay's persistent session with retain-as-published.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "harness/broker.h"
#include "harness/mqtt_capture.h"
#include "harness/ports.h"
#include "harness/temp_dir.h"
#include "mqtt/mqtt_link.h"

using namespace sanigate;
using namespace sanigate::test;
using namespace std::chrono_literals;
namespace sm = sanigate::mqtt;  // ::mqtt is Paho's, used by the harness

namespace {

// What a link reported, for the test thread to wait on.
struct Events {
  std::mutex mu;
  std::condition_variable cv;
  int connected = 0, lost = 0;
  std::vector<std::pair<std::string, bool>> failures;  // why, refused
  std::vector<std::string> lost_why;
  struct Ack {
    uint64_t token;
    bool ok, refused;
    std::string why;
  };
  std::vector<Ack> acks;
  std::vector<sm::InboundMessage> messages;

  sm::LinkHandlers Handlers() {
    sm::LinkHandlers h;
    h.on_connected = [this] { Note([&] { ++connected; }); };
    h.on_connect_failed = [this](const std::string& why, bool refused) {
      Note([&] { failures.emplace_back(why, refused); });
    };
    h.on_connection_lost = [this](const std::string& why) {
      Note([&] {
        ++lost;
        lost_why.push_back(why);
      });
    };
    h.on_published = [this](uint64_t token, bool ok, bool refused, const std::string& why) {
      Note([&] { acks.push_back({token, ok, refused, why}); });
    };
    h.on_message = [this](sm::InboundMessage m) { Note([&] { messages.push_back(std::move(m)); }); };
    return h;
  }
  template <class F>
  void Note(F f) {
    {
      std::lock_guard lk(mu);
      f();
    }
    cv.notify_all();
  }
  template <class P>
  bool WaitUntil(P pred, std::chrono::milliseconds timeout) {
    std::unique_lock lk(mu);
    return cv.wait_for(lk, timeout, pred);
  }
};

sm::LinkOptions Options(const std::string& url, const std::string& client_id, const std::string& username = "",
                        const std::string& password = "") {
  sm::LinkOptions o;
  o.url = url;
  o.client_id = client_id;
  o.username = username;
  o.password = password;
  o.keepalive_s = 5;
  o.connect_timeout_s = 5;
  o.max_inflight = 20;
  return o;
}

}  // namespace

TEST(MqttLinkTest, PublishesAreAcknowledgedByTokenAndAnAclRefusalCarriesItsReasonCode) {
  TempDir dir;
  std::string acl = (dir.path() / "acl").string();
  std::ofstream(acl) << "user gw\ntopic readwrite ok/#\n\nuser cap\ntopic read #\n";
  MosquittoBroker broker({.require_password = true, .username = "gw", .password = "gw-pw",
                          .more_users = {{"cap", "cap-pw"}}, .acl_file = acl});
  broker.Start();
  MqttCapture cap(broker.url(), "cap");
  cap.SetCredentials("cap", "cap-pw");
  cap.Connect();
  cap.Subscribe("#");

  Events ev;
  sm::MqttLink link(Options(broker.url(), "gw-link", "gw", "gw-pw"), ev.Handlers());
  ASSERT_TRUE(link.Connect().ok());
  ASSERT_TRUE(ev.WaitUntil([&] { return ev.connected == 1; }, 10s)) << broker.log();
  EXPECT_EQ(link.receive_maximum(), 20) << "Mosquitto's default max_inflight_messages";

  ASSERT_TRUE(link.Publish("ok/1", "allowed", false, 1001).ok());
  ASSERT_TRUE(link.Publish("denied/1", "not allowed", false, 1002).ok());
  ASSERT_TRUE(link.Publish("ok/2", "allowed too", true, 1003).ok());
  ASSERT_TRUE(ev.WaitUntil([&] { return ev.acks.size() == 3; }, 10s));
  std::lock_guard lk(ev.mu);
  for (const auto& a : ev.acks) {
    if (a.token == 1002) {
      EXPECT_FALSE(a.ok);
      EXPECT_TRUE(a.refused) << "an ACL refusal cannot be helped by retrying";
      EXPECT_NE(a.why.find("reason code 135"), std::string::npos) << a.why;
    } else {
      EXPECT_TRUE(a.ok) << a.token << ": " << a.why;
    }
  }
  EXPECT_TRUE(cap.WaitForCount("ok/#", 2, 5s));
  EXPECT_EQ(cap.Count("denied/1"), 0u);
}

TEST(MqttLinkTest, ABrokerKilledWithPublishesInFlightIsReportedOnceAndNothingTheOldConnectionHeldIsSentAgain) {
  MosquittoBroker broker;
  broker.Start();
  Events ev;
  sm::MqttLink link(Options(broker.url(), "crash-link"), ev.Handlers());
  ASSERT_TRUE(link.Connect().ok());
  ASSERT_TRUE(ev.WaitUntil([&] { return ev.connected == 1; }, 10s));

  // More than the broker's window of 20: most wait inside the client library when it dies.
  std::string payload(2000, 'x');
  int accepted = 0;
  for (int i = 0; i < 2000; ++i)
    if (link.Publish("old/" + std::to_string(i), payload, false, 10000 + i).ok()) ++accepted;
  broker.Kill();
  ASSERT_TRUE(ev.WaitUntil([&] { return ev.lost == 1; }, 20s));
  EXPECT_FALSE(link.connected());
  EXPECT_FALSE(link.Publish("old/late", "x", false, 1).ok()) << "a link that is down refuses at once";
  size_t acked_before;
  {
    std::lock_guard lk(ev.mu);
    acked_before = ev.acks.size();
    EXPECT_LT(acked_before, static_cast<size_t>(accepted)) << "the kill should catch publishes in flight";
    EXPECT_NE(ev.lost_why[0].find("connection lost"), std::string::npos) << ev.lost_why[0];
  }

  broker.Restart();  // no persistence: whatever "old/" arrives now was sent again by the client
  MqttCapture cap(broker.url(), "watcher");
  cap.Connect();
  cap.Subscribe("#");
  ASSERT_TRUE(link.Connect().ok());
  ASSERT_TRUE(ev.WaitUntil([&] { return ev.connected == 2; }, 10s));
  ASSERT_TRUE(link.Publish("new/1", "after the restart", false, 99).ok());
  ASSERT_TRUE(cap.WaitForCount("new/1", 1, 10s));
  std::this_thread::sleep_for(500ms);
  EXPECT_EQ(cap.Count(""), 1u) << "only the new publish reaches the restarted broker";
  std::lock_guard lk(ev.mu);
  EXPECT_EQ(ev.lost, 1) << "one loss, one report";
  EXPECT_EQ(ev.acks.size(), acked_before + 1) << "no acknowledgement arrives for the old connection's publishes";
}

TEST(MqttLinkTest, ConnectFailuresAreNamedAndRefusedCredentialsAreMarkedRefused) {
  MosquittoBroker broker({.require_password = true, .username = "gw", .password = "right"});
  broker.Start();
  {
    Events ev;
    sm::MqttLink link(Options(broker.url(), "wrong-pw", "gw", "wrong"), ev.Handlers());
    ASSERT_TRUE(link.Connect().ok());
    ASSERT_TRUE(ev.WaitUntil([&] { return !ev.failures.empty(); }, 10s));
    std::lock_guard lk(ev.mu);
    EXPECT_TRUE(ev.failures[0].second) << ev.failures[0].first;
    EXPECT_NE(ev.failures[0].first.find("the broker refused the connection"), std::string::npos)
        << ev.failures[0].first;
    EXPECT_EQ(ev.connected, 0);
  }
  {
    Events ev;
    broker.Stop();  // nothing listens on the port now
    sm::MqttLink link(Options(broker.url(), "nobody-home"), ev.Handlers());
    ASSERT_TRUE(link.Connect().ok());
    ASSERT_TRUE(ev.WaitUntil([&] { return !ev.failures.empty(); }, 10s));
    std::lock_guard lk(ev.mu);
    EXPECT_FALSE(ev.failures[0].second);
    EXPECT_NE(ev.failures[0].first.find("connection refused"), std::string::npos) << ev.failures[0].first;
  }
  {
    Events ev;
    sm::MqttLink link(Options("ws://127.0.0.1:1", "bad-scheme"), ev.Handlers());
    Status st = link.Connect();
    EXPECT_EQ(st.code(), Code::kInvalid) << st.message();
  }
}

TEST(MqttLinkTest, ABrokerThatNeverAnswersTimesOutAndStoppingTheLinkDoesNotHang) {
  // The kernel completes the TCP handshake, then the CONNECT is never answered.
  uint16_t port = 0;
  int fd = ListenOnLoopback(&port);
  std::string url = "tcp://127.0.0.1:" + std::to_string(port);

  Events ev;
  auto o = Options(url, "silent");
  o.connect_timeout_s = 1;
  auto link = std::make_unique<sm::MqttLink>(o, ev.Handlers());
  ASSERT_TRUE(link->Connect().ok());
  ASSERT_TRUE(ev.WaitUntil([&] { return !ev.failures.empty(); }, 10s));
  {
    std::lock_guard lk(ev.mu);
    EXPECT_NE(ev.failures[0].first.find("timed out: no answer within 1 s"), std::string::npos)
        << ev.failures[0].first;
  }
  // A second attempt is under way when the link goes: the destructor must not wait for it to
  // time out (a liveness bound, far above the ~0.1 s it takes).
  ASSERT_TRUE(link->Connect().ok());
  std::this_thread::sleep_for(200ms);
  auto t0 = std::chrono::steady_clock::now();
  link.reset();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 3s);
  ::close(fd);
}

TEST(MqttLinkTest, ABrokerThatHangsIsGivenUpAfterTheAckTimeoutNotTheKeepAlive) {
  MosquittoBroker broker;
  broker.Start();
  Events ev;
  auto o = Options(broker.url(), "acker");
  o.keepalive_s = 60;  // the keep-alive alone would take one to two minutes
  o.ack_timeout_s = 2;
  sm::MqttLink link(o, ev.Handlers());
  ASSERT_TRUE(link.Connect().ok());
  ASSERT_TRUE(ev.WaitUntil([&] { return ev.connected == 1; }, 10s));

  ASSERT_EQ(::kill(broker.pid(), SIGSTOP), 0);  // hangs: nothing closes, nothing answers
  std::this_thread::sleep_for(3s);
  {
    std::lock_guard lk(ev.mu);
    EXPECT_EQ(ev.lost, 0) << "a quiet broker with nothing waiting for it is not a dead one";
  }
  auto sent = std::chrono::steady_clock::now();
  ASSERT_TRUE(link.Publish("t/1", "waits", false, 1).ok());
  bool lost = ev.WaitUntil([&] { return ev.lost == 1; }, 15s);
  auto after = std::chrono::steady_clock::now() - sent;
  ::kill(broker.pid(), SIGCONT);
  ASSERT_TRUE(lost);
  EXPECT_GE(after, 2s) << "not before the PUBACK had its ack_timeout_s";
  {
    std::lock_guard lk(ev.mu);
    EXPECT_NE(ev.lost_why[0].find("ack_timeout_s"), std::string::npos) << ev.lost_why[0];
    EXPECT_TRUE(ev.acks.empty()) << "the publish was never acknowledged: the caller sends it again";
  }
  EXPECT_FALSE(link.connected());
  ASSERT_TRUE(link.Connect().ok());
  ASSERT_TRUE(ev.WaitUntil([&] { return ev.connected == 2; }, 10s)) << "the woken broker takes the link back";
}

TEST(MqttLinkTest, RequestsAndResponsesCarryTheirMqtt5Properties) {
  MosquittoBroker broker;
  broker.Start();
  Events asker_ev, answerer_ev;
  sm::MqttLink asker(Options(broker.url(), "asker"), asker_ev.Handlers());
  sm::MqttLink answerer(Options(broker.url(), "answerer"), answerer_ev.Handlers());
  ASSERT_TRUE(asker.Connect().ok());
  ASSERT_TRUE(answerer.Connect().ok());
  ASSERT_TRUE(asker_ev.WaitUntil([&] { return asker_ev.connected == 1; }, 10s));
  ASSERT_TRUE(answerer_ev.WaitUntil([&] { return answerer_ev.connected == 1; }, 10s));
  ASSERT_TRUE(answerer.SubscribeAndWait("req/#", 5s).ok());
  ASSERT_TRUE(asker.SubscribeAndWait("reply/asker", 5s).ok());

  std::string correlation("\x00\x01\xff binary", 10);
  ASSERT_TRUE(asker.PublishRequest("req/status", "{}", "reply/asker", correlation, 5).ok());
  ASSERT_TRUE(answerer_ev.WaitUntil([&] { return answerer_ev.messages.size() == 1; }, 10s));
  sm::InboundMessage req;
  {
    std::lock_guard lk(answerer_ev.mu);
    req = answerer_ev.messages[0];
  }
  EXPECT_EQ(req.topic, "req/status");
  EXPECT_EQ(req.payload, "{}");
  EXPECT_EQ(req.response_topic, "reply/asker");
  EXPECT_EQ(req.correlation_data, correlation);
  ASSERT_TRUE(answerer.PublishResponse(req.response_topic, R"({"ok":true})", req.correlation_data, 6).ok());
  ASSERT_TRUE(asker_ev.WaitUntil([&] { return asker_ev.messages.size() == 1; }, 10s));
  std::lock_guard lk(asker_ev.mu);
  EXPECT_EQ(asker_ev.messages[0].payload, R"({"ok":true})");
  EXPECT_EQ(asker_ev.messages[0].correlation_data, correlation);
  EXPECT_TRUE(asker_ev.messages[0].response_topic.empty());
  // A refused subscription is an error, not a silent nothing.
  EXPECT_FALSE(asker.SubscribeAndWait("bad/#/filter", 5s).ok());
}

TEST(MqttLinkTest, ARelaySessionKeepsWhatArrivesWhileAwayAndRetainedStateComesOnlyOnce) {
  MosquittoBroker broker;
  broker.Start();
  MqttCapture pub(broker.url(), "fleet");
  pub.Connect();
  // Retained before the relay ever subscribed: it comes once, flagged retained.
  Process::Run({"mosquitto_pub", "-p", std::to_string(broker.port()), "-t", "fleet/health/bin-1", "-m",
                "degraded", "-r", "-q", "1"},
               10s);
  auto o = Options(broker.url(), "relay");
  o.session_expiry_s = 600;
  {
    Events ev;
    sm::MqttLink link(o, ev.Handlers());
    ASSERT_TRUE(link.Connect().ok());
    ASSERT_TRUE(ev.WaitUntil([&] { return ev.connected == 1; }, 10s));
    ASSERT_TRUE(link.Subscribe("fleet/#", /*relay=*/true).ok());
    ASSERT_TRUE(ev.WaitUntil([&] { return ev.messages.size() == 1; }, 10s));
    pub.Publish("fleet/events", "live");
    ASSERT_TRUE(ev.WaitUntil([&] { return ev.messages.size() == 2; }, 10s));
    std::lock_guard lk(ev.mu);
    EXPECT_EQ(ev.messages[0].topic, "fleet/health/bin-1");
    EXPECT_TRUE(ev.messages[0].retain);
    EXPECT_EQ(ev.messages[1].payload, "live");
    EXPECT_FALSE(ev.messages[1].retain);
    link.Disconnect(2s);
  }
  pub.Publish("fleet/events", "while away");
  Events ev;
  sm::MqttLink link(o, ev.Handlers());
  ASSERT_TRUE(link.Connect().ok());
  ASSERT_TRUE(ev.WaitUntil([&] { return ev.connected == 1; }, 10s));
  ASSERT_TRUE(link.Subscribe("fleet/#", /*relay=*/true).ok());  // as the relay does after every connect
  ASSERT_TRUE(ev.WaitUntil([&] { return !ev.messages.empty(); }, 10s)) << "the session kept it";
  std::this_thread::sleep_for(500ms);
  std::lock_guard lk(ev.mu);
  ASSERT_EQ(ev.messages.size(), 1u) << "the retained verdict is not sent again at a reconnect";
  EXPECT_EQ(ev.messages[0].payload, "while away");
}
