// sanictl's rendering helpers (fleet/ctl/format.h): table alignment with and without colour and
// with wide (CJK) characters, relative times and durations, colour switching, and the tail line
// of a telemetry, event and status payload.
#include <stdlib.h>
#include <time.h>

#include <gtest/gtest.h>

#include <sstream>
#include <string>
#include <vector>

#include "ctl/format.h"

namespace sanigate::ctl {
namespace {

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

// The tail lines and clocks are local time: pin the zone so the expectations hold anywhere.
class FormatTest : public ::testing::Test {
 protected:
  void SetUp() override {
    setenv("TZ", "UTC", 1);
    tzset();
  }
};

constexpr int64_t kTs = 1763712000123;  // 2025-11-21 08:00:00.123 UTC

TEST_F(FormatTest, TableColumnsAreAlignedAndTheLastOneIsNotPadded) {
  Table t{{"DEVICE", "KIND", "STATE"}, {}};
  t.rows.push_back({"room-07", "garbage_room", "ok"});
  t.rows.push_back({"bin-0412", "bin", "degraded"});
  t.rows.push_back({"x", "", ""});
  EXPECT_EQ(RenderTable(t, false),
            "DEVICE    KIND          STATE\n"
            "room-07   garbage_room  ok\n"
            "bin-0412  bin           degraded\n"
            "x\n");
}

TEST_F(FormatTest, ShortRowsArePaddedWithEmptyCells) {
  Table t{{"A", "B", "C"}, {}};
  t.rows.push_back({"1"});
  t.rows.push_back({"22", "x", "y"});
  EXPECT_EQ(RenderTable(t, false), "A   B  C\n1\n22  x  y\n");
}

TEST_F(FormatTest, ColourWrapsTheTextOnlySoTheColumnsStayAligned) {
  Table t{{"DEVICE", "STATE", "SINCE"}, {}};
  t.rows.push_back({"room-07", Cell("ok", HealthColor("ok")), "5m ago"});
  t.rows.push_back({"bin-1", Cell("offline", HealthColor("offline")), "2h ago"});
  std::string plain = RenderTable(t, false);
  std::string coloured = RenderTable(t, true);
  EXPECT_EQ(plain.find('\033'), std::string::npos);
  auto lines = Lines(coloured);
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[0], "\033[1mDEVICE\033[0m   \033[1mSTATE\033[0m    \033[1mSINCE\033[0m");
  EXPECT_EQ(lines[1], "room-07  \033[32mok\033[0m       5m ago");
  EXPECT_EQ(lines[2], "bin-1    \033[1;31moffline\033[0m  2h ago");
  // Without the escape sequences the coloured table is the plain one.
  std::string stripped;
  for (size_t i = 0; i < coloured.size(); ++i) {
    if (coloured[i] == '\033') {
      i = coloured.find('m', i);
      continue;
    }
    stripped += coloured[i];
  }
  EXPECT_EQ(stripped, plain);
}

TEST_F(FormatTest, WideCharactersCountTwoColumns) {
  EXPECT_EQ(DisplayWidth("room-07"), 7u);
  EXPECT_EQ(DisplayWidth("垃圾房"), 6u);          // three CJK ideographs
  EXPECT_EQ(DisplayWidth("e\xCC\x81"), 1u);        // e + combining acute accent
  EXPECT_EQ(DisplayWidth("Ａ1"), 3u);              // fullwidth A
  Table t{{"NAME", "STATE"}, {}};
  t.rows.push_back({"垃圾房", "ok"});
  t.rows.push_back({"room-07", "degraded"});
  EXPECT_EQ(RenderTable(t, false),
            "NAME     STATE\n"
            "垃圾房   ok\n"
            "room-07  degraded\n");
}

TEST_F(FormatTest, KeyValuesAlignTheValues) {
  EXPECT_EQ(RenderKeyValues({{"device", "room-07"}, {"last seen", "12s ago"}, {"model", ""}}),
            "device:    room-07\n"
            "last seen: 12s ago\n"
            "model:\n");
}

TEST_F(FormatTest, RelativeTimes) {
  const int64_t now = kTs;
  EXPECT_EQ(RelativeTime(now, now), "0s ago");
  EXPECT_EQ(RelativeTime(now - 12'400, now), "12s ago");
  EXPECT_EQ(RelativeTime(now - 59'999, now), "59s ago");
  EXPECT_EQ(RelativeTime(now - 60'000, now), "1m ago");
  EXPECT_EQ(RelativeTime(now - 5 * 60'000 - 10'000, now), "5m ago");
  EXPECT_EQ(RelativeTime(now - 3 * 3'600'000, now), "3h ago");
  EXPECT_EQ(RelativeTime(now - 2 * 86'400'000 - 5, now), "2d ago");
  EXPECT_EQ(RelativeTime(now + 5'000, now), "in 5s");
  EXPECT_EQ(RelativeTime(0, now), "-");
}

TEST_F(FormatTest, Durations) {
  EXPECT_EQ(Duration(45'000), "45s");
  EXPECT_EQ(Duration(5 * 60'000 + 10'000), "5m 10s");
  EXPECT_EQ(Duration(2 * 3'600'000 + 5 * 60'000), "2h 05m");
  EXPECT_EQ(Duration(3 * 86'400'000 + 4 * 3'600'000 + 59'000), "3d 4h");
  EXPECT_EQ(Duration(-5), "0s");
}

TEST_F(FormatTest, LocalClockAndDate) {
  EXPECT_EQ(LocalClock(kTs), "08:00:00.123");
  EXPECT_EQ(LocalDateTime(kTs), "2025-11-21 08:00:00");
  setenv("TZ", "CST-8", 1);  // POSIX form of UTC+8 (China), needs no tzdata
  tzset();
  EXPECT_EQ(LocalClock(kTs), "16:00:00.123");
}

TEST_F(FormatTest, ColoursSwitchOffCompletely) {
  EXPECT_EQ(Paint("ok", Color::kGreen, false), "ok");
  EXPECT_EQ(Paint("ok", Color::kGreen, true), "\033[32mok\033[0m");
  EXPECT_EQ(Paint("x", Color::kNone, true), "x");
  EXPECT_EQ(HealthColor("ok"), Color::kGreen);
  EXPECT_EQ(HealthColor("degraded"), Color::kYellow);
  EXPECT_EQ(HealthColor("critical"), Color::kRed);
  EXPECT_EQ(HealthColor("offline"), Color::kRedBold);
  EXPECT_EQ(HealthColor("unknown"), Color::kDim);
  EXPECT_EQ(EventColor("critical", "active"), Color::kRedBold);
  EXPECT_EQ(EventColor("warning", "active"), Color::kYellow);
  EXPECT_EQ(EventColor("info", "active"), Color::kNone);
  EXPECT_EQ(EventColor("critical", "cleared"), Color::kGreen);
}

TEST_F(FormatTest, TailLineOfATelemetryReading) {
  json p = json::parse(R"({"id":"gw-houpu-01:184467","ts":1763712000123,"device":"room-07","kind":"garbage_room",
    "source":{"protocol":"modbus","gateway":"gw-houpu-01"},
    "metrics":{"fill_level_pct":81.5,"temperature_c":26.1,"nh3_ppm":3.2,"door_open":false},
    "location":{"lat":24.5123,"lon":118.1342}})");
  EXPECT_EQ(TailLine({"devices", "room-07", "telemetry", p}, false),
            "08:00:00.123  room-07           telemetry  door_open=false fill_level_pct=81.5 nh3_ppm=3.2 "
            "temperature_c=26.1 @24.5123,118.1342");
}

TEST_F(FormatTest, TailLineOfAnEventIsColouredBySeverity) {
  json p = json::parse(R"({"id":"gw-houpu-01:184470","ts":1763712001000,"device":"bin-0412","kind":"bin",
    "event":"overflow","state":"active","severity":"warning","metrics":{"fill_level_pct":96}})");
  EXPECT_EQ(TailLine({"devices", "bin-0412", "event", p}, false),
            "08:00:01.000  bin-0412          event      overflow active warning fill_level_pct=96");
  EXPECT_EQ(TailLine({"devices", "bin-0412", "event", p}, true),
            "08:00:01.000  bin-0412          event      \033[33moverflow active warning\033[0m fill_level_pct=96");
  p["severity"] = "critical";
  p["event"] = "fire";
  EXPECT_NE(TailLine({"devices", "bin-0412", "event", p}, true).find("\033[1;31mfire active critical\033[0m"),
            std::string::npos);
}

TEST_F(FormatTest, TailLineOfDeviceAndGatewayStatus) {
  json dev = {{"online", false}, {"last_seen", kTs - 60'000}, {"ts", kTs}};
  EXPECT_EQ(TailLine({"devices", "room-07", "status", dev}, false),
            "08:00:00.123  room-07           status     offline last seen 07:59:00.123");
  EXPECT_EQ(TailLine({"devices", "room-07", "status", dev}, true),
            "08:00:00.123  room-07           status     \033[31moffline\033[0m last seen 07:59:00.123");
  json gw = json::parse(R"({"online":true,"version":"0.1.0","started":1763711000000,"ts":1763712000123,
    "adapters":{"modbus":{"state":"running","devices":2,"errors":0}},"outbox":{"pending":3,"oldest_ts":null}})");
  EXPECT_EQ(TailLine({"gateway", "gw-houpu-01", "status", gw}, false),
            "08:00:00.123  gw-houpu-01       gateway    online v0.1.0 modbus:running outbox=3");
  // A payload without ts (or not JSON at all) still gets a line.
  EXPECT_EQ(TailLine({"devices", "x", "telemetry", json::parse("nope", nullptr, false)}, false),
            "--:--:--.---  x                 telemetry  (not JSON)");
}

TEST_F(FormatTest, GlobMatching) {
  EXPECT_TRUE(GlobMatch("room-*", "room-07"));
  EXPECT_TRUE(GlobMatch("*", "anything"));
  EXPECT_TRUE(GlobMatch("*-07", "room-07"));
  EXPECT_TRUE(GlobMatch("r*m-*7", "room-07"));
  EXPECT_TRUE(GlobMatch("room-07", "room-07"));
  EXPECT_FALSE(GlobMatch("room-07", "room-071"));
  EXPECT_FALSE(GlobMatch("bin-*", "room-07"));
  EXPECT_FALSE(GlobMatch("*-08", "room-07"));
}

TEST_F(FormatTest, ValuesForHumans) {
  EXPECT_EQ(ValueText(json("text")), "text");
  EXPECT_EQ(ValueText(json(nullptr)), "-");
  EXPECT_EQ(ValueText(json(26.1)), "26.1");
  EXPECT_EQ(ValueText(json(true)), "true");
  EXPECT_EQ(MetricsText(json{{"b", 1}, {"a", 2.5}}), "a=2.5 b=1");
}

}  // namespace
}  // namespace sanigate::ctl
