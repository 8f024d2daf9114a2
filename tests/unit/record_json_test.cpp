// The JSON encoding of records (CONTRACT §3), their topics and outbox priorities, and a check of
// encoded payloads against the JSON Schemas in config/schema with the independent Python
// validator.
#include <sys/wait.h>

#include <cmath>
#include <cstdio>
#include <limits>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "core/record.h"
#include "core/record_json.h"
#include "test_support.h"

namespace sanigate {
namespace {

using json = nlohmann::json;

constexpr int64_t kTs = 1763712000123;

EncodeContext Ctx() {
  EncodeContext ctx;
  ctx.gateway = "gw";
  ctx.site = "houpu";
  return ctx;
}

Record Reading() {
  Record r = MakeReading("room-07", "garbage_room", "modbus", kTs);
  r.metrics = {{"fill_level_pct", 81.5},
               {"door_count", int64_t{42}},
               {"door_open", false},
               {"temperature_c", -3.25}};
  r.location = Location{24.5123, 118.1342};
  return r;
}

json Parse(const std::string& payload) {
  json j = json::parse(payload, nullptr, /*allow_exceptions=*/false);
  EXPECT_FALSE(j.is_discarded()) << payload;
  return j;
}

TEST(RecordIdTest, IsGatewayColonSeq) {
  EXPECT_EQ(RecordId("gw-houpu-01", 184467), "gw-houpu-01:184467");
}

TEST(EncodeRecordTest, ReadingMatchesContract) {
  json got = Parse(EncodeRecord(Reading(), Ctx(), 123));
  json want = {
      {"id", "gw:123"},
      {"ts", kTs},
      {"device", "room-07"},
      {"kind", "garbage_room"},
      {"source", {{"protocol", "modbus"}, {"gateway", "gw"}}},
      {"metrics",
       {{"fill_level_pct", 81.5}, {"door_count", 42}, {"door_open", false}, {"temperature_c", -3.25}}},
      {"location", {{"lat", 24.5123}, {"lon", 118.1342}}},
  };
  EXPECT_EQ(got, want) << got.dump();
}

TEST(EncodeRecordTest, ReadingKeepsIntegerDoubleAndBoolMetricTypes) {
  json got = Parse(EncodeRecord(Reading(), Ctx(), 123));
  // json equality treats 42 and 42.0 alike, so check the JSON types themselves.
  EXPECT_TRUE(got["ts"].is_number_integer());
  EXPECT_TRUE(got["metrics"]["door_count"].is_number_integer());
  EXPECT_TRUE(got["metrics"]["fill_level_pct"].is_number_float());
  EXPECT_TRUE(got["metrics"]["door_open"].is_boolean());
}

TEST(EncodeRecordTest, ReadingWithoutLocationHasNoLocationKey) {
  Record r = Reading();
  r.location.reset();
  json got = Parse(EncodeRecord(r, Ctx(), 7));
  EXPECT_FALSE(got.contains("location")) << got.dump();
  EXPECT_EQ(got["id"], "gw:7");
}

TEST(EncodeRecordTest, SourceExtrasAreAddedToSource) {
  Record r = Reading();
  r.source_extra = {{"unit_id", int64_t{3}}, {"backfill", true}};
  json got = Parse(EncodeRecord(r, Ctx(), 1));
  EXPECT_EQ(got["source"],
            (json{{"protocol", "modbus"}, {"gateway", "gw"}, {"unit_id", 3}, {"backfill", true}}));
}

TEST(EncodeRecordTest, NonFiniteMetricIsEncodedAsNull) {
  Record r = MakeReading("room-07", "garbage_room", "modbus", kTs);
  r.metrics = {{"nh3_ppm", std::numeric_limits<double>::quiet_NaN()},
               {"h2s_ppm", std::numeric_limits<double>::infinity()}};
  std::string payload = EncodeRecord(r, Ctx(), 1);
  json got = Parse(payload);
  EXPECT_TRUE(got["metrics"]["nh3_ppm"].is_null()) << payload;
  EXPECT_TRUE(got["metrics"]["h2s_ppm"].is_null()) << payload;
}

TEST(EncodeRecordTest, InvalidUtf8InAStringMetricIsReplacedNotThrown) {
  Record r = MakeReading("room-07", "garbage_room", "modbus", kTs);
  r.metrics = {{"label", std::string("ab\xff")}};
  std::string payload;
  ASSERT_NO_THROW(payload = EncodeRecord(r, Ctx(), 1));
  EXPECT_EQ(Parse(payload)["metrics"]["label"], "ab\xEF\xBF\xBD");  // U+FFFD
}

TEST(EncodeRecordTest, EventMatchesContract) {
  Record e = MakeEvent("bin-0412", "bin", "lorawan", 1763712001000, "overflow",
                       EventState::kActive, Severity::kWarning);
  e.metrics = {{"fill_level_pct", int64_t{96}}};
  json got = Parse(EncodeRecord(e, Ctx(), 184470));
  json want = {
      {"id", "gw:184470"},
      {"ts", 1763712001000},
      {"device", "bin-0412"},
      {"kind", "bin"},
      {"source", {{"protocol", "lorawan"}, {"gateway", "gw"}}},
      {"event", "overflow"},
      {"state", "active"},
      {"severity", "warning"},
      {"metrics", {{"fill_level_pct", 96}}},
  };
  EXPECT_EQ(got, want) << got.dump();
}

TEST(EncodeRecordTest, ClearedCriticalEventWithMessageAndLocation) {
  Record e = MakeEvent("room-07", "garbage_room", "modbus", kTs, "fire", EventState::kCleared,
                       Severity::kCritical);
  e.message = "smoke gone";
  e.location = Location{24.5, 118.25};
  json got = Parse(EncodeRecord(e, Ctx(), 9));
  json want = {
      {"id", "gw:9"},
      {"ts", kTs},
      {"device", "room-07"},
      {"kind", "garbage_room"},
      {"source", {{"protocol", "modbus"}, {"gateway", "gw"}}},
      {"event", "fire"},
      {"state", "cleared"},
      {"severity", "critical"},
      {"message", "smoke gone"},
      {"location", {{"lat", 24.5}, {"lon", 118.25}}},
  };
  EXPECT_EQ(got, want) << got.dump();
}

TEST(EncodeRecordTest, OnlineStatusHasLastSeenNumber) {
  Record s = MakeStatus("room-07", "garbage_room", "modbus", kTs, true, kTs - 500);
  json got = Parse(EncodeRecord(s, Ctx(), 55));
  json want = {
      {"online", true},
      {"last_seen", kTs - 500},
      {"ts", kTs},
      {"id", "gw:55"},
      {"device", "room-07"},
      {"kind", "garbage_room"},
      {"source", {{"protocol", "modbus"}, {"gateway", "gw"}}},
  };
  EXPECT_EQ(got, want) << got.dump();
  EXPECT_TRUE(got["last_seen"].is_number_integer());
}

TEST(EncodeRecordTest, NeverSeenOfflineStatusHasLastSeenNullAndReason) {
  Record s = MakeStatus("room-07", "garbage_room", "modbus", kTs, false, std::nullopt, "timeout");
  json got = Parse(EncodeRecord(s, Ctx(), 56));
  json want = {
      {"online", false},
      {"last_seen", nullptr},
      {"ts", kTs},
      {"id", "gw:56"},
      {"device", "room-07"},
      {"kind", "garbage_room"},
      {"source", {{"protocol", "modbus"}, {"gateway", "gw"}}},
      {"reason", "timeout"},
  };
  EXPECT_EQ(got, want) << got.dump();
  ASSERT_TRUE(got.contains("last_seen"));
  EXPECT_TRUE(got["last_seen"].is_null());
}

TEST(EncodeRecordTest, StatusNeverCarriesLocation) {
  // The device-status schema has no location (additionalProperties: false).
  Record s = MakeStatus("room-07", "garbage_room", "modbus", kTs, true, kTs);
  s.location = Location{24.5, 118.1};
  json got = Parse(EncodeRecord(s, Ctx(), 57));
  EXPECT_FALSE(got.contains("location")) << got.dump();
}

TEST(RecordTopicTest, ReadingEventAndStatusTopics) {
  EncodeContext ctx = Ctx();
  EXPECT_EQ(RecordTopic(MakeReading("room-07", "garbage_room", "modbus", kTs), ctx),
            "sanigate/v1/houpu/devices/room-07/telemetry");
  EXPECT_EQ(RecordTopic(MakeEvent("room-07", "garbage_room", "modbus", kTs, "fire",
                                  EventState::kActive, Severity::kCritical),
                        ctx),
            "sanigate/v1/houpu/devices/room-07/event");
  EXPECT_EQ(RecordTopic(MakeStatus("room-07", "garbage_room", "modbus", kTs, true, kTs), ctx),
            "sanigate/v1/houpu/devices/room-07/status");
}

TEST(RecordTopicTest, UsesConfiguredPrefix) {
  EncodeContext ctx = Ctx();
  ctx.topic_prefix = "city/x";
  EXPECT_EQ(RecordTopic(MakeReading("bin-1", "bin", "lorawan", kTs), ctx),
            "city/x/houpu/devices/bin-1/telemetry");
}

TEST(RecordPriorityTest, CriticalEventIsAlarm) {
  EXPECT_EQ(MakeEvent("d", "bin", "p", kTs, "fire", EventState::kActive, Severity::kCritical)
                .priority(),
            Priority::kAlarm);
}

TEST(RecordPriorityTest, WarningAndInfoEventsAreEvents) {
  EXPECT_EQ(MakeEvent("d", "bin", "p", kTs, "overflow", EventState::kActive, Severity::kWarning)
                .priority(),
            Priority::kEvent);
  EXPECT_EQ(
      MakeEvent("d", "bin", "p", kTs, "door_open", EventState::kActive, Severity::kInfo).priority(),
      Priority::kEvent);
}

TEST(RecordPriorityTest, StatusIsStatusAndReadingIsTelemetry) {
  EXPECT_EQ(MakeStatus("d", "bin", "p", kTs, true, kTs).priority(), Priority::kStatus);
  EXPECT_EQ(MakeReading("d", "bin", "p", kTs).priority(), Priority::kTelemetry);
}

TEST(RecordPriorityTest, OverrideWins) {
  Record r = MakeReading("d", "bin", "p", kTs);
  r.priority_override = Priority::kAlarm;
  EXPECT_EQ(r.priority(), Priority::kAlarm);
}

// --- Schema check with the project's independent validator -----------------------------------

struct Validation {
  int exit_code = -1;
  std::string output;
};

Validation RunValidator(const std::string& file) {
  std::string cmd = std::string("/usr/bin/python3 '") + SANIGATE_SOURCE_DIR +
                    "/tests/schema/validate_payloads.py' '" + SANIGATE_SOURCE_DIR +
                    "/config/schema' '" + file + "' 2>&1";
  Validation v;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return v;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) v.output.append(buf, n);
  int status = ::pclose(p);
  v.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return v;
}

std::vector<Record> VariedRecords() {
  std::vector<Record> out;
  out.push_back(Reading());
  {
    Record r = MakeReading("bin-0412", "bin", "lorawan", kTs + 1);
    r.metrics = {{"fill_level_pct", int64_t{96}}, {"battery_v", 3.61}, {"lid_open", true},
                 {"rssi_dbm", int64_t{-113}}};
    r.source_extra = {{"rssi_dbm", -113.0}, {"snr_db", 7.5}, {"data_rate", std::string("SF9BW125")}};
    out.push_back(r);
  }
  {
    Record r = MakeReading("truck-3", "vehicle", "jt808", kTs + 2);
    r.metrics = {{"speed_kmh", 42.5}, {"heading_deg", int64_t{270}}, {"acc_on", true},
                 {"odometer_km", 12345.6}, {"alarm_code", std::string("none")}};
    r.location = Location{-33.9, -151.2};
    out.push_back(r);
  }
  {
    Record r = MakeReading("room-08", "sorting_kiosk", "modbus", kTs + 3);
    r.metrics = {{"temperature_c", -12.5}, {"smoke", false}};
    r.source_extra = {{"unit_id", int64_t{17}}, {"backfill", true}};
    out.push_back(r);
  }
  {
    Record e = MakeEvent("bin-0412", "bin", "lorawan", kTs + 4, "overflow", EventState::kActive,
                         Severity::kWarning);
    e.metrics = {{"fill_level_pct", int64_t{96}}};
    out.push_back(e);
  }
  {
    Record e = MakeEvent("room-07", "garbage_room", "modbus", kTs + 5, "fire", EventState::kActive,
                         Severity::kCritical);
    e.metrics = {{"temperature_c", 71.5}, {"smoke", true}};
    e.location = Location{24.5123, 118.1342};
    e.message = "smoke and heat";
    out.push_back(e);
  }
  out.push_back(MakeEvent("room-07", "garbage_room", "modbus", kTs + 6, "offline",
                          EventState::kCleared, Severity::kInfo));
  out.push_back(MakeStatus("room-07", "garbage_room", "modbus", kTs + 7, true, kTs + 7));
  out.push_back(
      MakeStatus("room-09", "garbage_room", "modbus", kTs + 8, false, std::nullopt, "timeout"));
  out.push_back(MakeStatus("truck-3", "vehicle", "jt808", kTs + 9, false, kTs - 60000));
  return out;
}

std::string PayloadLines(const std::vector<Record>& records) {
  EncodeContext ctx = Ctx();
  std::string lines;
  uint64_t seq = 1763712000000000;
  for (const auto& r : records) lines += RecordTopic(r, ctx) + " " + EncodeRecord(r, ctx, ++seq) + "\n";
  return lines;
}

TEST(RecordSchemaTest, EncodedRecordsValidateAgainstTheMqttModelSchemas) {
  unit::ScratchDir dir;
  std::vector<Record> records = VariedRecords();
  ASSERT_EQ(records.size(), 10u);
  std::string file = dir.File("payloads.txt");
  unit::WriteFile(file, PayloadLines(records));
  Validation v = RunValidator(file);
  EXPECT_EQ(v.exit_code, 0) << v.output;
  EXPECT_NE(v.output.find("schema: 10 valid, 0 invalid, 0 skipped"), std::string::npos)
      << v.output;
}

TEST(RecordSchemaTest, ValidatorRejectsABrokenPayload) {
  // Proves the check above can fail: one reading whose _pct metric is a string.
  unit::ScratchDir dir;
  std::string lines = PayloadLines(VariedRecords());
  Record broken = MakeReading("room-07", "garbage_room", "modbus", kTs);
  broken.metrics = {{"fill_level_pct", std::string("full")}};
  lines += RecordTopic(broken, Ctx()) + " " + EncodeRecord(broken, Ctx(), 99) + "\n";
  std::string file = dir.File("payloads.txt");
  unit::WriteFile(file, lines);
  Validation v = RunValidator(file);
  EXPECT_EQ(v.exit_code, 1) << v.output;
  EXPECT_NE(v.output.find("schema: 10 valid, 1 invalid, 0 skipped"), std::string::npos)
      << v.output;
  EXPECT_NE(v.output.find("payloads.txt:11: sanigate/v1/houpu/devices/room-07/telemetry: "
                          "$.metrics.fill_level_pct:"),
            std::string::npos)
      << v.output;
}

}  // namespace
}  // namespace sanigate
