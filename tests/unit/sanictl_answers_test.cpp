// sanictl's reading of what the broker and the daemons answered (fleet/ctl/answers.h, issue 16
// item 9): the broker's refusals by reason code, sanifleet's retained "offline" status, the exit
// code of a refused device command, the --state values, and health reasons as they read when
// shown (the silence grows, stale alarms say so).
#include <stdlib.h>
#include <time.h>

#include <gtest/gtest.h>

#include <string>

#include "ctl/answers.h"
#include "ctl/exit_codes.h"

namespace sanigate::ctl {
namespace {

constexpr int64_t kTs = 1763712000000;  // 2025-11-21 08:00:00 UTC

class AnswersTest : public ::testing::Test {
 protected:
  void SetUp() override {
    setenv("TZ", "UTC", 1);
    tzset();
  }
};

TEST_F(AnswersTest, ReasonCodesOfRefusals) {
  EXPECT_EQ(MqttReasonName(0x87), "not authorized");
  EXPECT_EQ(MqttReasonName(0x86), "bad user name or password");
  EXPECT_EQ(MqttReasonName(0x97), "quota exceeded");
  EXPECT_EQ(MqttReasonName(0xF0), "reason code 240");
  for (int code : {0x86, 0x87, 0x8A, 0x8C}) EXPECT_TRUE(IsAccessRefusal(code)) << code;
  for (int code : {0x80, 0x88, 0x95, 0x97}) EXPECT_FALSE(IsAccessRefusal(code)) << code;

  // As MqttLink words a refused CONNECT (Paho's return code is the CONNACK reason code), PUBACK
  // and SUBACK.
  EXPECT_EQ(ReasonCodeIn("connect to tcp://127.0.0.1:1883 failed (rc 135)"), 135);
  EXPECT_EQ(ReasonCodeIn("connect to tcp://127.0.0.1:1883 failed (rc -1, reason code 134)"), 134);
  EXPECT_EQ(ReasonCodeIn("broker refused the message (reason code 135)"), 135);
  EXPECT_EQ(ReasonCodeIn("the broker refused the subscription to a/b (reason code 143)"), 143);
  // Not a refusal: a Paho error, an MQTT 3 code, nothing.
  EXPECT_EQ(ReasonCodeIn("connect to tcp://127.0.0.1:1883 failed (rc -1)"), std::nullopt);
  EXPECT_EQ(ReasonCodeIn("failed (rc 5)"), std::nullopt);
  EXPECT_EQ(ReasonCodeIn(""), std::nullopt);
  EXPECT_EQ(ReasonCodeIn("reason code 99999999999"), std::nullopt);
}

TEST_F(AnswersTest, SanifleetOfflineFromItsRetainedStatus) {
  const std::string topic = "sanigate/v1/houpu/fleet/status";
  json goodbye = {{"online", false}, {"fleet", "fleet-1"}, {"site", "houpu"}, {"ts", kTs}};
  EXPECT_TRUE(FleetSaysOffline(goodbye));
  EXPECT_EQ(FleetOfflineText(goodbye, topic, kTs + 4 * 60'000),
            "sanifleet fleet-1 is offline since 2025-11-21 08:00:00 (4m ago), says " + topic);
  // The will is made when sanifleet connects: no time in it.
  json will = {{"online", false}, {"fleet", "fleet-1"}, {"site", "houpu"}, {"ts", 0}};
  EXPECT_EQ(FleetOfflineText(will, topic, kTs),
            "sanifleet fleet-1 is offline: its connection to the broker was lost (its MQTT will), says " + topic);
  EXPECT_EQ(FleetOfflineText(json{{"online", false}}, topic, kTs),
            "sanifleet is offline: its connection to the broker was lost (its MQTT will), says " + topic);
  // Online, no status, or a status that does not say: not known to be offline.
  EXPECT_FALSE(FleetSaysOffline(json{{"online", true}, {"fleet", "fleet-1"}}));
  EXPECT_FALSE(FleetSaysOffline(json(nullptr)));
  EXPECT_FALSE(FleetSaysOffline(json{{"online", "false"}}));
  EXPECT_FALSE(FleetSaysOffline(json::array({false})));
}

TEST_F(AnswersTest, CommandRefusalsHaveTheExitCodesOfEveryVerb) {
  auto failed = [](const std::string& error) { return json{{"ok", false}, {"error", error}, {"result", nullptr}}; };
  // Not found: the device or the command.
  EXPECT_EQ(CommandFailureExit(failed("unknown device ghost-1")), kExitNotFound);
  EXPECT_EQ(CommandFailureExit(failed("unknown command frobnicate for room-07 (known: uv_lamp)")), kExitNotFound);
  EXPECT_EQ(CommandFailureExit(failed("unknown command \"x\" (locate, set_params, set_report_interval, text, confirm_alarm)")),
            kExitNotFound);
  // A value the command does not take: usage, as a bad value of any verb.
  for (const char* e : {"\"dim\" is not a value of uv_lamp", "120 is outside 0..100", "uv_lamp takes exactly one value",
                        "usage: set_report_interval SECONDS", "\"x\" is not NAME=VALUE with NAME one of a, b",
                        "setpoint: \"warm\" is not a number", "unknown argument \"q=1\" (port=N, hex=HEX or base64=B64, confirmed)",
                        "payload must be {\"args\":[...]}, {\"value\":...}, {\"timeout_ms\":N} or plain text"})
    EXPECT_EQ(CommandFailureExit(failed(e)), kExitUsage) << e;
  // The device or the line failed: the operation failed.
  for (const char* e : {"room-07 is not connected", "timed out after 2000 ms", "write verify failed", ""})
    EXPECT_EQ(CommandFailureExit(failed(e)), kExitFailed) << e;
  // A code in the answer wins.
  EXPECT_EQ(CommandFailureExit(json{{"ok", false}, {"code", "not_found"}, {"error", "gone"}}), kExitNotFound);
  EXPECT_EQ(CommandFailureExit(json{{"ok", false}, {"code", "invalid"}, {"error", "odd"}}), kExitUsage);
  EXPECT_EQ(CommandFailureExit(json{{"ok", false}, {"error", 42}}), kExitFailed);
}

TEST_F(AnswersTest, HealthStates) {
  for (const char* s : {"ok", "degraded", "critical", "offline", "unknown"}) EXPECT_TRUE(IsHealthState(s)) << s;
  for (const char* s : {"", "OK", "bogus", "sideways", "ok "}) EXPECT_FALSE(IsHealthState(s)) << s;
  EXPECT_EQ(HealthStatesText(), "ok, degraded, critical, offline or unknown");
}

TEST_F(AnswersTest, ReasonsReadAsOfNow) {
  json silent = {{"code", "silent"}, {"level", "offline"},
                 {"detail", "no traffic for 600ms (offline after 3 x expected interval 200ms)"}};
  // The silence counts from the last traffic up to now, however long ago it was judged.
  EXPECT_EQ(ReasonText(silent, kTs, kTs + 65'000), "no traffic for 1m 05s (offline after 3 x expected interval 200ms)");
  EXPECT_EQ(ReasonText(silent, kTs, kTs + 4 * 60'000), "no traffic for 4m 00s (offline after 3 x expected interval 200ms)");
  // Without a last-seen time, or a detail of another form, it stays as sanifleet said.
  EXPECT_EQ(ReasonText(silent, 0, kTs), silent["detail"]);
  EXPECT_EQ(ReasonText(json{{"code", "silent"}, {"detail", "quiet"}}, kTs, kTs + 5000), "quiet");
  EXPECT_EQ(ReasonText(json{{"code", "silent"}, {"detail", "no traffic for 2s"}}, kTs, kTs + 5000), "no traffic for 5s");
  // Other reasons as they are; the code when there is no detail.
  EXPECT_EQ(ReasonText(json{{"code", "alarm"}, {"detail", "odour: nh3_ppm 12.4 >= 10"}}, kTs, kTs + 5000),
            "odour: nh3_ppm 12.4 >= 10");
  EXPECT_EQ(ReasonText(json{{"code", "sos"}}, kTs, kTs), "sos");
  // A stale alarm says so once, whether or not its detail already does.
  EXPECT_EQ(ReasonText(json{{"code", "sos"}, {"detail", "sos"}, {"stale", true}}, kTs, kTs), "sos (stale: device offline)");
  EXPECT_EQ(ReasonText(json{{"code", "sos"}, {"detail", "sos (stale: device offline)"}, {"stale", true}}, kTs, kTs),
            "sos (stale: device offline)");
  EXPECT_EQ(ReasonText(json("odd"), kTs, kTs), "odd");
}

}  // namespace
}  // namespace sanigate::ctl
