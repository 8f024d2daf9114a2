// The pipeline from adapter Records to the outbox: report-by-exception (deadband, max silence),
// the overflow event with hysteresis, and pass-through of status and events. A real Outbox in a
// temp dir; what the pipeline appended is read back with Lease after a Flush.
#include <chrono>
#include <cstdint>
#include <future>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "core/clock.h"
#include "core/record_json.h"
#include "pipeline/pipeline.h"
#include "store/outbox.h"
#include "test_support.h"

namespace sanigate::pipeline {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;

struct Out {
  uint64_t seq;
  std::string topic;
  std::string payload;
  json body;
  Priority priority;
  bool retain;
};

class PipelineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store::OutboxOptions o;
    o.path = dir_.File("outbox.db");
    auto r = store::Outbox::Open(o);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    outbox_ = std::move(r).value();
    EncodeContext ctx;
    ctx.gateway = "gw";
    ctx.site = "houpu";
    pipeline_ = std::make_unique<Pipeline>(*outbox_, ctx);
    t0_ = NowMs();  // recent, so the outbox's age limit never sheds these rows
  }

  // Everything the pipeline appended since the last call, in lease order (priority, then seq).
  std::vector<Out> Drain() {
    Status st = outbox_->Flush(30s);
    EXPECT_TRUE(st.ok()) << st.ToString();
    auto r = outbox_->Lease(1000);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    std::vector<Out> out;
    if (!r.ok()) return out;
    for (auto& e : r.value()) {
      json body = json::parse(e.msg.payload, nullptr, false);
      EXPECT_FALSE(body.is_discarded()) << e.msg.payload;
      out.push_back({e.seq, e.msg.topic, e.msg.payload, body, e.msg.priority, e.msg.retain});
    }
    return out;
  }

  Record Reading(int64_t dt, std::vector<Metric> metrics, const std::string& device = "room-1") {
    Record r = MakeReading(device, "garbage_room", "modbus", t0_ + dt);
    r.metrics = std::move(metrics);
    return r;
  }

  // Emits one reading and returns the values of `metric` in what was published (one entry per
  // published telemetry message; an empty vector when it was suppressed).
  std::vector<json> Publish(int64_t dt, std::vector<Metric> metrics,
                            const std::string& metric = "fill_level_pct") {
    pipeline_->Emit(Reading(dt, std::move(metrics)));
    std::vector<json> values;
    for (const auto& o : Drain()) {
      EXPECT_EQ(o.topic, "sanigate/v1/houpu/devices/room-1/telemetry");
      values.push_back(o.body["metrics"].value(metric, json()));
    }
    return values;
  }

  void SetRules(DeviceRules rules, const std::string& device = "room-1") {
    std::unordered_map<std::string, DeviceRules> all;
    all[device] = std::move(rules);
    pipeline_->SetRules(std::move(all));
  }

  static DeviceRules Deadband(const std::string& metric, double deadband,
                              int64_t max_silence_ms = 300'000) {
    DeviceRules r;
    MetricRule m;
    m.deadband = deadband;
    m.max_silence_ms = max_silence_ms;
    r.metrics[metric] = m;
    return r;
  }

  unit::ScratchDir dir_;
  std::unique_ptr<store::Outbox> outbox_;
  std::unique_ptr<Pipeline> pipeline_;
  int64_t t0_ = 0;
};

TEST_F(PipelineTest, WithoutRulesEveryReadingIsPublished) {
  for (int i = 0; i < 3; ++i)
    EXPECT_EQ(Publish(i * 1000, {{"fill_level_pct", 50.0}}), (std::vector<json>{50.0})) << i;
  PipelineStats s = pipeline_->Stats();
  EXPECT_EQ(s.records_in, 3u);
  EXPECT_EQ(s.readings_out, 3u);
  EXPECT_EQ(s.suppressed, 0u);
}

TEST_F(PipelineTest, PublishedReadingIsTheContractPayloadWithTheOutboxSeqAsId) {
  Record r = Reading(0, {{"fill_level_pct", 50.5}, {"door_open", true}});
  r.location = Location{24.5, 118.1};
  pipeline_->Emit(r);
  std::vector<Out> out = Drain();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].priority, Priority::kTelemetry);
  EXPECT_FALSE(out[0].retain);
  EXPECT_EQ(out[0].body, (json{{"id", "gw:" + std::to_string(out[0].seq)},
                               {"ts", t0_},
                               {"device", "room-1"},
                               {"kind", "garbage_room"},
                               {"source", {{"protocol", "modbus"}, {"gateway", "gw"}}},
                               {"metrics", {{"fill_level_pct", 50.5}, {"door_open", true}}},
                               {"location", {{"lat", 24.5}, {"lon", 118.1}}}}));
}

TEST_F(PipelineTest, DeadbandSuppressesSmallChangeAndPublishesLargeChange) {
  SetRules(Deadband("fill_level_pct", 0.5));
  EXPECT_EQ(Publish(0, {{"fill_level_pct", 50.0}}), (std::vector<json>{50.0}));
  EXPECT_EQ(Publish(1000, {{"fill_level_pct", 50.2}}), (std::vector<json>{}));
  // 0.4 from the last reading, but 0.6 from the last published value: published.
  EXPECT_EQ(Publish(2000, {{"fill_level_pct", 50.6}}), (std::vector<json>{50.6}));
  EXPECT_EQ(Publish(3000, {{"fill_level_pct", 50.0}}), (std::vector<json>{50.0}))
      << "a fall by the deadband counts too";
  EXPECT_EQ(pipeline_->Stats().suppressed, 1u);
}

TEST_F(PipelineTest, DeadbandAppliesToIntegerMetrics) {
  SetRules(Deadband("count", 2));
  EXPECT_EQ(Publish(0, {{"count", int64_t{10}}}, "count"), (std::vector<json>{10}));
  EXPECT_EQ(Publish(1, {{"count", int64_t{11}}}, "count"), (std::vector<json>{}));
  EXPECT_EQ(Publish(2, {{"count", int64_t{12}}}, "count"), (std::vector<json>{12}));
}

TEST_F(PipelineTest, SuppressedMetricIsDroppedButTheOtherMetricsArePublished) {
  SetRules(Deadband("fill_level_pct", 0.5));
  pipeline_->Emit(Reading(0, {{"fill_level_pct", 50.0}, {"temperature_c", 20.0}}));
  ASSERT_EQ(Drain().size(), 1u);
  pipeline_->Emit(Reading(1000, {{"fill_level_pct", 50.1}, {"temperature_c", 20.0}}));
  std::vector<Out> out = Drain();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].body["metrics"], (json{{"temperature_c", 20.0}}));
}

TEST_F(PipelineTest, MaxSilencePublishesAnUnchangedValue) {
  SetRules(Deadband("fill_level_pct", 0.5, 60'000));
  EXPECT_EQ(Publish(0, {{"fill_level_pct", 50.0}}), (std::vector<json>{50.0}));
  EXPECT_EQ(Publish(30'000, {{"fill_level_pct", 50.0}}), (std::vector<json>{}));
  EXPECT_EQ(Publish(59'999, {{"fill_level_pct", 50.0}}), (std::vector<json>{}));
  EXPECT_EQ(Publish(60'000, {{"fill_level_pct", 50.0}}), (std::vector<json>{50.0}));
  EXPECT_EQ(Publish(60'001, {{"fill_level_pct", 50.0}}), (std::vector<json>{}))
      << "the silence restarts at the last published reading";
}

TEST_F(PipelineTest, BooleanWithRulePublishesOnlyOnChange) {
  SetRules(Deadband("door_open", 0));
  EXPECT_EQ(Publish(0, {{"door_open", true}}, "door_open"), (std::vector<json>{true}));
  EXPECT_EQ(Publish(1, {{"door_open", true}}, "door_open"), (std::vector<json>{}));
  EXPECT_EQ(Publish(2, {{"door_open", false}}, "door_open"), (std::vector<json>{false}));
  EXPECT_EQ(Publish(3, {{"door_open", false}}, "door_open"), (std::vector<json>{}));
}

TEST_F(PipelineTest, BooleanWithoutRuleIsAlwaysPublished) {
  EXPECT_EQ(Publish(0, {{"door_open", true}}, "door_open"), (std::vector<json>{true}));
  EXPECT_EQ(Publish(1, {{"door_open", true}}, "door_open"), (std::vector<json>{true}));
}

TEST_F(PipelineTest, RulesOfOneDeviceDoNotFilterAnother) {
  SetRules(Deadband("fill_level_pct", 0.5), "room-2");
  EXPECT_EQ(Publish(0, {{"fill_level_pct", 50.0}}), (std::vector<json>{50.0}));
  EXPECT_EQ(Publish(1, {{"fill_level_pct", 50.0}}), (std::vector<json>{50.0}));
}

TEST_F(PipelineTest, SetRulesKeepsTheReportByExceptionState) {
  SetRules(Deadband("fill_level_pct", 0.5));
  EXPECT_EQ(Publish(0, {{"fill_level_pct", 50.0}}), (std::vector<json>{50.0}));
  SetRules(Deadband("fill_level_pct", 0.5));  // e.g. SIGHUP with the same rules
  EXPECT_EQ(Publish(1, {{"fill_level_pct", 50.2}}), (std::vector<json>{}));
}

class OverflowTest : public PipelineTest {
 protected:
  void SetUp() override {
    PipelineTest::SetUp();
    DeviceRules rules;
    rules.overflow = OverflowRule{"fill_level_pct", 90, 80};
    SetRules(rules);
  }
  // Emits a fill level; returns the overflow states raised ("active"/"cleared") and checks the
  // reading itself was published.
  std::vector<std::string> Step(int64_t dt, double fill) {
    Record r = Reading(dt, {{"fill_level_pct", fill}});
    r.location = Location{24.5123, 118.1342};
    pipeline_->Emit(r);
    std::vector<std::string> states;
    bool reading = false;
    for (const auto& o : Drain()) {
      if (o.topic == "sanigate/v1/houpu/devices/room-1/event") {
        states.push_back(o.body.value("state", ""));
        last_event_ = o;
      } else {
        EXPECT_EQ(o.topic, "sanigate/v1/houpu/devices/room-1/telemetry");
        EXPECT_EQ(o.body["metrics"]["fill_level_pct"], fill);
        reading = true;
      }
    }
    EXPECT_TRUE(reading) << "the reading at " << fill << " was not published";
    return states;
  }
  Out last_event_{};
};

using States = std::vector<std::string>;

TEST_F(OverflowTest, HysteresisRaisesOnceAndClearsBelowTheLowerLevel) {
  EXPECT_EQ(Step(0, 85), States{});
  EXPECT_EQ(Step(1000, 91), States{"active"});
  EXPECT_EQ(Step(2000, 95), States{});
  EXPECT_EQ(Step(3000, 85), States{}) << "between the levels: still active";
  EXPECT_EQ(Step(4000, 79), States{"cleared"});
  EXPECT_EQ(Step(5000, 85), States{});
  EXPECT_EQ(Step(6000, 92), States{"active"}) << "can be raised again after clearing";
  EXPECT_EQ(pipeline_->Stats().events_out, 3u);
}

// Issue 19: the last announced state survives a restart (a new pipeline on the same outbox file),
// so an overflow that ended while the gateway was down is cleared exactly once.
TEST_F(OverflowTest, AnOverflowAnnouncedBeforeARestartIsClearedAfterIt) {
  EXPECT_EQ(Step(0, 95), States{"active"});
  // Restart: the outbox is closed (its writer flushed) and opened again, with a fresh pipeline.
  pipeline_.reset();
  outbox_.reset();
  store::OutboxOptions o;
  o.path = dir_.File("outbox.db");
  outbox_ = std::move(store::Outbox::Open(o)).value();
  (void)Drain();  // the records left from before the restart
  pipeline_ = std::make_unique<Pipeline>(*outbox_, EncodeContext{.gateway = "gw", .site = "houpu"});
  DeviceRules rules;
  rules.overflow = OverflowRule{"fill_level_pct", 90, 80};
  SetRules(rules);
  EXPECT_EQ(pipeline_->LastAnnounced("room-1", "overflow"), std::optional<bool>(true));
  EXPECT_EQ(Step(1000, 96), States{}) << "still overflowing: not announced again";
  EXPECT_EQ(Step(2000, 40), States{"cleared"});
  EXPECT_EQ(Step(3000, 30), States{});
  EXPECT_EQ(pipeline_->LastAnnounced("room-1", "overflow"), std::optional<bool>(false));
}

TEST_F(PipelineTest, AdapterStateEventsAreRememberedAndAClearOfNothingIsDropped) {
  Record clear = MakeEvent("truck-1", "vehicle", "jt808", t0_, "sos", EventState::kCleared, Severity::kCritical);
  pipeline_->Emit(clear);
  EXPECT_TRUE(Drain().empty()) << "sos was never announced active";
  EXPECT_EQ(pipeline_->Stats().repeated_events, 1u);
  Record sos = MakeEvent("truck-1", "vehicle", "jt808", t0_ + 1, "sos", EventState::kActive, Severity::kCritical);
  pipeline_->Emit(sos);
  EXPECT_EQ(Drain().size(), 1u);
  EXPECT_EQ(pipeline_->LastAnnounced("truck-1", "sos"), std::optional<bool>(true));
  // A back-filled event is history: it is published but is not the state now.
  Record old = MakeEvent("truck-1", "vehicle", "jt808", t0_ - 60000, "sos", EventState::kCleared, Severity::kCritical);
  old.source_extra.push_back({"backfill", true});
  pipeline_->Emit(old);
  EXPECT_EQ(Drain().size(), 1u);
  EXPECT_EQ(pipeline_->LastAnnounced("truck-1", "sos"), std::optional<bool>(true));
  pipeline_->Emit(clear);
  EXPECT_EQ(Drain().size(), 1u);
  EXPECT_EQ(pipeline_->LastAnnounced("truck-1", "sos"), std::optional<bool>(false));
  EXPECT_EQ(pipeline_->LastAnnounced("truck-2", "sos"), std::nullopt);
}

// Issue 15: an adapter's mark (the LoRaWAN uplink counter) is committed with the record it came
// with and read back after a restart; it is never part of the published payload.
TEST_F(PipelineTest, AdapterMarksAreCommittedWithTheirRecordAndReadBackAfterARestart) {
  Record r = Reading(0, {{"fill_level_pct", 40.0}});
  r.mark = Record::Mark{"lorawan.fcnt_up", "260B1234 41"};
  std::promise<bool> durable;
  pipeline_->EmitDurable({r}, [&](bool ok) { durable.set_value(ok); });
  auto out = Drain();
  ASSERT_EQ(out.size(), 1u);
  auto committed = durable.get_future();
  ASSERT_EQ(committed.wait_for(30s), std::future_status::ready);
  EXPECT_TRUE(committed.get());
  EXPECT_EQ(out[0].payload.find("lorawan.fcnt_up"), std::string::npos) << out[0].payload;
  EXPECT_EQ(out[0].payload.find("260B1234"), std::string::npos) << out[0].payload;
  // A reading the deadband suppresses still carries its mark on a record of the same batch.
  SetRules(Deadband("fill_level_pct", 5));
  Record same = Reading(1000, {{"fill_level_pct", 40.5}});
  same.mark = Record::Mark{"lorawan.fcnt_up", "260B1234 42"};
  Record status = MakeStatus("room-1", "garbage_room", "modbus", t0_ + 1000, true, t0_ + 1000);
  pipeline_->EmitDurable({status, same}, [](bool) {});
  EXPECT_EQ(Drain().size(), 1u) << "the status only";

  pipeline_.reset();
  outbox_.reset();
  store::OutboxOptions o;
  o.path = dir_.File("outbox.db");
  outbox_ = std::move(store::Outbox::Open(o)).value();
  pipeline_ = std::make_unique<Pipeline>(*outbox_, EncodeContext{.gateway = "gw", .site = "houpu"});
  EXPECT_EQ(pipeline_->LastMark("room-1", "lorawan.fcnt_up"), std::optional<std::string>("260B1234 42"));
  EXPECT_EQ(pipeline_->LastMark("room-1", "other"), std::nullopt);
  EXPECT_EQ(pipeline_->LastMark("room-2", "lorawan.fcnt_up"), std::nullopt);
}

TEST_F(OverflowTest, ActiveAtIsInclusiveAndClearBelowIsExclusive) {
  EXPECT_EQ(Step(0, 90), States{"active"});
  EXPECT_EQ(Step(1000, 80), States{});
  EXPECT_EQ(Step(2000, 79.9), States{"cleared"});
}

TEST_F(OverflowTest, EventCarriesFillLevelSeverityWarningAndTheReadingsLocation) {
  ASSERT_EQ(Step(0, 91.5), States{"active"});
  const Out& e = last_event_;
  EXPECT_EQ(e.priority, Priority::kEvent);
  EXPECT_FALSE(e.retain);
  EXPECT_EQ(e.body, (json{{"id", "gw:" + std::to_string(e.seq)},
                          {"ts", t0_},
                          {"device", "room-1"},
                          {"kind", "garbage_room"},
                          {"source", {{"protocol", "modbus"}, {"gateway", "gw"}}},
                          {"event", "overflow"},
                          {"state", "active"},
                          {"severity", "warning"},
                          {"metrics", {{"fill_level_pct", 91.5}}},
                          {"threshold", 90.0},
                          {"location", {{"lat", 24.5123}, {"lon", 118.1342}}}}));
}

TEST_F(PipelineTest, OverflowIsRaisedEvenWhenTheReadingIsSuppressedByTheDeadband) {
  DeviceRules rules = Deadband("fill_level_pct", 5);
  rules.overflow = OverflowRule{"fill_level_pct", 90, 80};
  SetRules(rules);
  pipeline_->Emit(Reading(0, {{"fill_level_pct", 88.0}}));
  ASSERT_EQ(Drain().size(), 1u);
  pipeline_->Emit(Reading(1000, {{"fill_level_pct", 91.0}}));
  std::vector<Out> out = Drain();
  ASSERT_EQ(out.size(), 1u) << "only the event: 91 is within the deadband of 88";
  EXPECT_EQ(out[0].topic, "sanigate/v1/houpu/devices/room-1/event");
  EXPECT_EQ(out[0].body["state"], "active");
  EXPECT_EQ(out[0].body["metrics"], (json{{"fill_level_pct", 91.0}}));
}

TEST_F(PipelineTest, StatusAndEventsPassThroughUntouched) {
  // Rules that would filter or derive something from a reading must not touch these.
  DeviceRules rules = Deadband("fill_level_pct", 50);
  rules.overflow = OverflowRule{"fill_level_pct", 90, 80};
  SetRules(rules);
  Record status = MakeStatus("room-1", "garbage_room", "modbus", t0_, false, t0_ - 5000, "timeout");
  Record fire = MakeEvent("room-1", "garbage_room", "modbus", t0_ + 1, "fire", EventState::kActive,
                          Severity::kCritical);
  fire.metrics = {{"fill_level_pct", 99.0}, {"temperature_c", 80.5}};
  fire.message = "smoke";
  pipeline_->EmitBatch({status, fire, fire});

  std::vector<Out> out = Drain();
  ASSERT_EQ(out.size(), 3u) << "an identical event is not deduplicated";
  EncodeContext ctx = pipeline_->context();
  // Lease order: the two alarms, then the status.
  EXPECT_EQ(out[0].priority, Priority::kAlarm);
  EXPECT_EQ(out[0].topic, RecordTopic(fire, ctx));
  EXPECT_EQ(out[0].payload, EncodeRecord(fire, ctx, out[0].seq));
  EXPECT_FALSE(out[0].retain);
  EXPECT_EQ(out[1].payload, EncodeRecord(fire, ctx, out[1].seq));
  EXPECT_EQ(out[2].priority, Priority::kStatus);
  EXPECT_EQ(out[2].topic, RecordTopic(status, ctx));
  EXPECT_EQ(out[2].payload, EncodeRecord(status, ctx, out[2].seq));
  EXPECT_TRUE(out[2].retain);

  PipelineStats s = pipeline_->Stats();
  EXPECT_EQ(s.records_in, 3u);
  EXPECT_EQ(s.events_out, 2u);
  EXPECT_EQ(s.status_out, 1u);
  EXPECT_EQ(s.readings_out, 0u);
  EXPECT_EQ(s.suppressed, 0u);
}

}  // namespace
}  // namespace sanigate::pipeline

namespace sanigate::pipeline {
namespace {

// Derived fill level and state events (fire, door_open, low_battery) from the device rules.
class DerivedTest : public PipelineTest {
 protected:
  // Emits one reading and returns "event:state" for every event raised, plus the published
  // reading's metrics.
  std::pair<std::vector<std::string>, nlohmann::json> Step(int64_t dt, std::vector<Metric> metrics) {
    pipeline_->Emit(Reading(dt, std::move(metrics)));
    std::vector<std::string> events;
    nlohmann::json reading;
    for (const auto& o : Drain()) {
      if (o.topic.ends_with("/event")) {
        events.push_back(o.body.value("event", "") + ":" + o.body.value("state", "") + ":" +
                         o.body.value("severity", ""));
        last_threshold_ = o.body.contains("threshold") ? o.body["threshold"] : nlohmann::json();
      } else if (o.topic.ends_with("/telemetry")) {
        reading = o.body["metrics"];
      }
    }
    return {events, reading};
  }
  nlohmann::json last_threshold_;  // of the last event published
};

TEST_F(DerivedTest, FillLevelComesFromTheDistanceAndTheBinDepth) {
  DeviceRules rules;
  rules.fill = FillRule{"distance_mm", 1000, 100, "fill_level_pct"};
  rules.overflow = OverflowRule{"fill_level_pct", 90, 80};
  SetRules(rules);
  auto [e1, r1] = Step(0, {{"distance_mm", int64_t{1000}}});
  EXPECT_EQ(r1["fill_level_pct"], 0.0);
  auto [e2, r2] = Step(1000, {{"distance_mm", int64_t{550}}});
  EXPECT_EQ(r2["fill_level_pct"], 50.0);
  EXPECT_TRUE(e2.empty());
  auto [e3, r3] = Step(2000, {{"distance_mm", int64_t{150}}});  // 94.4 %: overflow
  EXPECT_EQ(r3["fill_level_pct"], 94.4);
  EXPECT_EQ(e3, (std::vector<std::string>{"overflow:active:warning"}));
  auto [e4, r4] = Step(3000, {{"distance_mm", int64_t{50}}});  // inside the blind zone
  EXPECT_EQ(r4["fill_level_pct"], 100.0) << "clamped";
  auto [e5, r5] = Step(4000, {{"distance_mm", int64_t{2000}}});  // beyond the bottom
  EXPECT_EQ(r5["fill_level_pct"], 0.0) << "clamped";
  EXPECT_EQ(e5, (std::vector<std::string>{"overflow:cleared:warning"}));
}

TEST_F(DerivedTest, FireFromTemperatureHasHysteresisAndIsCritical) {
  DeviceRules rules;
  rules.events.push_back(EventRule{"fire", "temperature_c", 60.0, 50.0, false, Severity::kCritical});
  SetRules(rules);
  EXPECT_TRUE(Step(0, {{"temperature_c", 45.0}}).first.empty());
  EXPECT_EQ(Step(1000, {{"temperature_c", 61.0}}).first,
            (std::vector<std::string>{"fire:active:critical"}));
  EXPECT_EQ(last_threshold_, 60.0) << "the rule's level goes with the event";
  EXPECT_TRUE(Step(2000, {{"temperature_c", 55.0}}).first.empty()) << "between the levels";
  EXPECT_EQ(Step(3000, {{"temperature_c", 49.0}}).first,
            (std::vector<std::string>{"fire:cleared:critical"}));
}

TEST_F(DerivedTest, DoorOpenFollowsABoolAndLowBatteryFiresBelowItsLevel) {
  DeviceRules rules;
  rules.events.push_back(EventRule{"door_open", "door_open", std::nullopt, std::nullopt, false, Severity::kInfo});
  rules.events.push_back(EventRule{"low_battery", "battery_pct", 15.0, 20.0, true, Severity::kWarning});
  SetRules(rules);
  EXPECT_TRUE(Step(0, {{"door_open", false}, {"battery_pct", 50.0}}).first.empty());
  EXPECT_EQ(Step(1000, {{"door_open", true}, {"battery_pct", 15.0}}).first,
            (std::vector<std::string>{"door_open:active:info", "low_battery:active:warning"}));
  EXPECT_EQ(Step(2000, {{"door_open", false}, {"battery_pct", 18.0}}).first,
            (std::vector<std::string>{"door_open:cleared:info"}));
  EXPECT_EQ(Step(3000, {{"door_open", false}, {"battery_pct", 21.0}}).first,
            (std::vector<std::string>{"low_battery:cleared:warning"}));
}

}  // namespace
}  // namespace sanigate::pipeline
