// sanifleet's decoding of the normalized model (fleet/app/model_message.h) on golden payloads
// shaped as CONTRACT §3 shows them, and the registry rules it applies.
#include "app/model_message.h"

#include <gtest/gtest.h>

namespace sanigate::fleet {
namespace {

using nlohmann::json;

ModelMessage Decode(const std::string& leaf, const std::string& payload) {
  std::string error;
  auto m = DecodeModelMessage(leaf, payload, &error);
  EXPECT_TRUE(m.has_value()) << error;
  return m ? std::move(*m) : ModelMessage{};
}

TEST(ModelMessage, ReadingOfTheContractBecomesAnObservationAndARegistryUpdate) {
  ModelMessage m = Decode("telemetry", R"({"id":"gw-houpu-01:184467","ts":1763712000123,"device":"room-07","kind":"garbage_room",
    "source":{"protocol":"modbus","gateway":"gw-houpu-01","profile":"garbage-room-v1"},
    "metrics":{"fill_level_pct":81.5,"temperature_c":26.1,"nh3_ppm":3.2,"door_open":false,"mode":"auto"},
    "quality":{"nh3_ppm":"timeout"},"location":{"lat":24.5123,"lon":118.1342}})");
  EXPECT_EQ(m.obs.type, Observation::Type::kReading);
  EXPECT_EQ(m.obs.ts_ms, 1763712000123);
  EXPECT_EQ(m.obs.kind, "garbage_room");
  EXPECT_EQ(m.obs.profile, "garbage-room-v1");
  EXPECT_FALSE(m.obs.backfill);
  // Numbers and booleans are observed; text is kept by the registry only.
  EXPECT_EQ(m.obs.metrics, (std::vector<std::pair<std::string, double>>{
                               {"door_open", 0.0}, {"fill_level_pct", 81.5}, {"nh3_ppm", 3.2}, {"temperature_c", 26.1}}));
  EXPECT_EQ(m.obs.quality, (std::vector<std::pair<std::string, std::string>>{{"nh3_ppm", "timeout"}}));

  DeviceEntry e;
  ApplyToEntry(m, e, 5000);
  EXPECT_EQ(e.kind, "garbage_room");
  EXPECT_EQ(e.protocol, "modbus");
  EXPECT_EQ(e.gateway, "gw-houpu-01");
  EXPECT_EQ(e.profile, "garbage-room-v1");
  EXPECT_EQ(e.metrics["mode"], "auto");
  EXPECT_EQ(e.metrics["fill_level_pct"], 81.5);
  EXPECT_EQ(e.metrics_ts_ms, 1763712000123);
  ASSERT_TRUE(e.location.has_value());
  EXPECT_DOUBLE_EQ(e.location->first, 24.5123);
  EXPECT_EQ(e.last_seen_ms, 5000);
}

TEST(ModelMessage, RadioMetadataAndCountersOfALorawanUplink) {
  ModelMessage m = Decode("telemetry", R"({"ts":1,"kind":"bin","source":{"protocol":"lorawan","rssi_dbm":-97,"snr_db":7.5,
    "fcnt":4242,"frames_lost":3},"metrics":{"fill_level_pct":40}})");
  EXPECT_EQ(m.obs.rssi_dbm, -97.0);
  EXPECT_EQ(m.obs.snr_db, 7.5);
  EXPECT_EQ(m.obs.fcnt, 4242);
  EXPECT_EQ(m.obs.frames_lost, 3);
  // A counter that is not a whole number in range is absent, never a wrapped cast.
  ModelMessage odd = Decode("telemetry", R"({"ts":1,"source":{"fcnt":1e300,"frames_lost":2.5,"rssi_dbm":"loud"}})");
  EXPECT_FALSE(odd.obs.fcnt.has_value());
  EXPECT_FALSE(odd.obs.frames_lost.has_value());
  EXPECT_FALSE(odd.obs.rssi_dbm.has_value());
}

TEST(ModelMessage, EventAndStatusOfTheContract) {
  ModelMessage ev = Decode("event", R"({"id":"gw-houpu-01:184470","ts":1763712001000,"device":"bin-0412","kind":"bin",
    "event":"overflow","state":"active","severity":"warning","metrics":{"fill_level_pct":96}})");
  EXPECT_EQ(ev.obs.type, Observation::Type::kEvent);
  EXPECT_EQ(ev.obs.event, "overflow");
  EXPECT_TRUE(ev.obs.event_active);
  EXPECT_EQ(ev.obs.severity, "warning");
  // The value that raised it is observed (health quotes it), and the rule's level when given.
  EXPECT_EQ(ev.obs.metrics, (std::vector<std::pair<std::string, double>>{{"fill_level_pct", 96.0}}));
  EXPECT_FALSE(ev.obs.threshold.has_value());
  EXPECT_EQ(Decode("event", R"({"ts":3,"event":"odour","state":"active","metrics":{"nh3_ppm":12.4},"threshold":10})").obs.threshold,
            std::optional<double>(10.0));
  ModelMessage cleared = Decode("event", R"({"ts":2,"event":"sos","state":"cleared","severity":"critical"})");
  EXPECT_FALSE(cleared.obs.event_active);

  ModelMessage st = Decode("status", R"({"online":false,"last_seen":1763712000000,"ts":1763712009000})");
  EXPECT_EQ(st.obs.type, Observation::Type::kStatus);
  EXPECT_FALSE(st.obs.online);
  DeviceEntry e;
  ApplyToEntry(st, e, 9000);
  EXPECT_EQ(e.online, std::optional<bool>(false));
  EXPECT_EQ(e.last_seen_ms, 1763712000000) << "the gateway's last_seen when nothing was seen yet";
  e.last_seen_ms = 7;
  ApplyToEntry(st, e, 9000);
  EXPECT_EQ(e.last_seen_ms, 7) << "a status does not move what was seen";
}

TEST(ModelMessage, BackfillIsHistoryForTheRegistry) {
  DeviceEntry e;
  ApplyToEntry(Decode("telemetry", R"({"ts":2000,"kind":"vehicle","metrics":{"speed_kmh":30},"location":{"lat":24.5,"lon":118.1}})"), e,
               10'000);
  ModelMessage old = Decode("telemetry", R"({"ts":1000,"source":{"backfill":true},"metrics":{"speed_kmh":5},
    "location":{"lat":24.0,"lon":118.0}})");
  EXPECT_TRUE(old.obs.backfill);
  ApplyToEntry(old, e, 20'000);
  EXPECT_EQ(e.metrics["speed_kmh"], 30) << "an older back-filled value does not replace the latest";
  EXPECT_DOUBLE_EQ(e.location->first, 24.5);
  EXPECT_EQ(e.metrics_ts_ms, 2000);
  EXPECT_EQ(e.last_seen_ms, 10'000) << "back-fill is not seen now";
  // A back-filled point newer than what is kept (the live ones were lost) does update it.
  ApplyToEntry(Decode("telemetry", R"({"ts":3000,"source":{"backfill":true},"metrics":{"speed_kmh":12}})"), e, 30'000);
  EXPECT_EQ(e.metrics["speed_kmh"], 12);
  EXPECT_EQ(e.metrics_ts_ms, 3000);
  EXPECT_EQ(e.last_seen_ms, 10'000);
}

TEST(ModelMessage, WrongTypesCountAsAbsentAndNonModelInputIsRefused) {
  ModelMessage m = Decode("telemetry", R"({"ts":"yesterday","kind":7,"source":{"protocol":["x"],"backfill":"yes"},
    "metrics":[1,2],"quality":"bad","location":{"lat":"north","lon":118}})");
  EXPECT_EQ(m.obs.ts_ms, 0);
  EXPECT_EQ(m.obs.kind, "");
  EXPECT_FALSE(m.obs.backfill);
  EXPECT_TRUE(m.obs.metrics.empty());
  EXPECT_FALSE(m.delta.location.has_value());
  DeviceEntry e;
  e.kind = "bin";
  ApplyToEntry(m, e, 1);
  EXPECT_EQ(e.kind, "bin") << "what is not said is kept";
  ModelMessage far = Decode("telemetry", R"({"ts":1,"location":{"lat":95,"lon":118}})");
  EXPECT_FALSE(far.delta.location.has_value()) << "latitude beyond 90";

  std::string error;
  EXPECT_FALSE(DecodeModelMessage("telemetry", "[1,2]", &error).has_value());
  EXPECT_EQ(error, "not a JSON object");
  EXPECT_FALSE(DecodeModelMessage("telemetry", "{\"ts\":", &error).has_value());
  EXPECT_FALSE(DecodeModelMessage("cmd/uv", "{}", &error).has_value());
  EXPECT_FALSE(DecodeModelMessage("event", std::string(kMaxDeviceMessageBytes + 1, ' '), &error).has_value());
  EXPECT_FALSE(DecodeModelMessage("event", std::string(100, '[') + std::string(100, ']'), &error).has_value());
}

}  // namespace
}  // namespace sanigate::fleet
