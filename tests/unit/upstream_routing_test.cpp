// Upstream destinations: MQTT topic filters, the kind of a local topic, which destinations a
// record goes to, the topic prefix mapping, and the [[upstream]] config with its errors.
#include <gtest/gtest.h>

#include "app/config_loader.h"
#include "core/topic_filter.h"
#include "test_support.h"
#include "upstream/batch.h"
#include "upstream/routing.h"

#include <nlohmann/json.hpp>

namespace sanigate {
namespace {

using unit::Lines;

TEST(TopicFilterTest, ValidFilters) {
  for (const char* f : {"a", "a/b", "+", "#", "a/+/c", "a/#", "+/+", "/a", "a//b", "sanigate/v1/+/devices/+/event"})
    EXPECT_TRUE(IsValidTopicFilter(f)) << f;
  for (const char* f : {"", "a+", "a/b#", "#/a", "a/#/b", "+a/b"}) EXPECT_FALSE(IsValidTopicFilter(f)) << f;
}

TEST(TopicFilterTest, Matching) {
  EXPECT_TRUE(TopicMatchesFilter("a/b", "a/b"));
  EXPECT_FALSE(TopicMatchesFilter("a/b", "a/b/c"));
  EXPECT_FALSE(TopicMatchesFilter("a/b/c", "a/b"));
  EXPECT_TRUE(TopicMatchesFilter("a/+/c", "a/x/c"));
  EXPECT_FALSE(TopicMatchesFilter("a/+/c", "a/x/y/c"));
  EXPECT_TRUE(TopicMatchesFilter("a/+", "a/"));  // an empty level is a level
  EXPECT_TRUE(TopicMatchesFilter("a/#", "a"));   // '#' includes the parent
  EXPECT_TRUE(TopicMatchesFilter("a/#", "a/b/c"));
  EXPECT_TRUE(TopicMatchesFilter("#", "a/b"));
  EXPECT_FALSE(TopicMatchesFilter("#", "$SYS/broker"));
  EXPECT_FALSE(TopicMatchesFilter("+/broker", "$SYS/broker"));
  EXPECT_TRUE(TopicMatchesFilter("$SYS/#", "$SYS/broker"));
}

TEST(RoutingTest, KindOfALocalTopic) {
  using upstream::Routing;
  const char* p = "sanigate/v1";
  EXPECT_EQ(Routing::KindOf(p, "sanigate/v1/s/devices/room-1/telemetry"), "telemetry");
  EXPECT_EQ(Routing::KindOf(p, "sanigate/v1/s/devices/room-1/event"), "event");
  EXPECT_EQ(Routing::KindOf(p, "sanigate/v1/s/devices/room-1/status"), "status");
  EXPECT_EQ(Routing::KindOf(p, "sanigate/v1/s/devices/room-1/cmd/open"), "");
  EXPECT_EQ(Routing::KindOf(p, "sanigate/v1/s/fleet/health/room-1"), "fleet");
  EXPECT_EQ(Routing::KindOf(p, "sanigate/v1/s/fleet/events"), "fleet");
  EXPECT_EQ(Routing::KindOf(p, "sanigate/v1/s/fleet/admin/status"), "");
  EXPECT_EQ(Routing::KindOf(p, "sanigate/v1/s/heatmap/vehicle_coverage"), "heatmap");
  EXPECT_EQ(Routing::KindOf(p, "sanigate/v1/s/gateway/gw-1/status"), "gateway");
  EXPECT_EQ(Routing::KindOf(p, "sanigate/v1/s/gateway/gw-1/admin/ping"), "");
  EXPECT_EQ(Routing::KindOf(p, "sanigate/v1/s/admin/reply/x"), "");
  EXPECT_EQ(Routing::KindOf(p, "other/v1/s/devices/room-1/telemetry"), "");
  EXPECT_EQ(Routing::KindOf(p, "sanigate/v1x/s/devices/room-1/telemetry"), "");
}

settings::UpstreamSection Up(std::string name, std::vector<std::string> kinds, std::vector<std::string> include = {},
                             std::vector<std::string> exclude = {}, std::string prefix = "sanigate/v1") {
  settings::UpstreamSection u;
  u.name = std::move(name);
  u.kinds = std::move(kinds);
  u.include = std::move(include);
  u.exclude = std::move(exclude);
  u.topic_prefix = std::move(prefix);
  return u;
}

TEST(RoutingTest, RecordsGoLocallyAndToEveryUpstreamThatTakesThem) {
  upstream::Routing r("sanigate/v1", {Up("city", {"telemetry", "event"}, {}, {"sanigate/v1/+/devices/test-+/#"}),
                                      Up("district", {"event", "fleet"}, {"sanigate/v1/s/#"})});
  EXPECT_EQ(r.ForRecord("sanigate/v1/s/devices/room-1/telemetry"), 0b011u);
  EXPECT_EQ(r.ForRecord("sanigate/v1/s/devices/room-1/event"), 0b111u);
  EXPECT_EQ(r.ForRecord("sanigate/v1/t/devices/room-1/event"), 0b011u);  // district: site s only
  EXPECT_EQ(r.ForRecord("sanigate/v1/s/devices/room-1/status"), 0b001u);
  EXPECT_EQ(r.Upstreams("sanigate/v1/s/fleet/health/room-1"), 0b100u);
  EXPECT_EQ(r.Upstreams("sanigate/v1/s/fleet/admin/x"), 0u);
  EXPECT_TRUE(r.AnyWants("fleet"));
  EXPECT_FALSE(r.AnyWants("heatmap"));
}

TEST(RoutingTest, TopicsAreMappedToTheUpstreamsPrefix) {
  upstream::Routing r("sanigate/v1", {Up("city", {"telemetry"}, {}, {}, "city/xm/huli"), Up("same", {"telemetry"})});
  EXPECT_EQ(r.MapTopic(1, "sanigate/v1/s/devices/d/telemetry"), "city/xm/huli/s/devices/d/telemetry");
  EXPECT_EQ(r.MapTopic(2, "sanigate/v1/s/devices/d/telemetry"), "sanigate/v1/s/devices/d/telemetry");
  EXPECT_EQ(r.MapTopic(0, "sanigate/v1/s/devices/d/telemetry"), "sanigate/v1/s/devices/d/telemetry");
}

const char kGateway[] = "[gateway]\nid = \"gw-1\"\nsite = \"site-1\"\n";

TEST(UpstreamConfigTest, AnUpstreamWithDefaults) {
  auto r = app::LoadGatewayConfigString(std::string(kGateway) + "[[upstream]]\nname = \"city\"\nurl = \"mqtt://127.0.0.1:1884\"\n",
                                        "test.toml");
  ASSERT_TRUE(r.ok()) << r.status().message();
  ASSERT_EQ(r->upstreams.size(), 1u);
  const auto& u = r->upstreams[0];
  EXPECT_EQ(u.name, "city");
  EXPECT_EQ(u.topic_prefix, "sanigate/v1");
  EXPECT_EQ(u.kinds, settings::UpstreamKinds());
  EXPECT_EQ(u.mqtt.client_id, "sanigate-gw-1");
  EXPECT_EQ(u.mqtt.reconnect_max_ms, 60000);
}

TEST(UpstreamConfigTest, EveryProblemIsReportedAtItsKey) {
  auto r = app::LoadGatewayConfigString(std::string(kGateway) +
                                            "[[upstream]]\n"             // 4
                                            "name = \"local\"\n"         // 5
                                            "kinds = [\"telemetry\", \"gossip\"]\n"  // 6
                                            "include = [\"a/#/b\"]\n"    // 7
                                            "[[upstream]]\n"             // 8
                                            "name = \"city\"\n"          // 9
                                            "url = \"http://x\"\n"       // 10
                                            "[[upstream]]\n"             // 11
                                            "name = \"city\"\n"          // 12
                                            "url = \"mqtt://x:1\"\n",    // 13
                                        "test.toml");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(Lines(r.status().message()),
            (std::vector<std::string>{
                "test.toml:4:1: upstream[0].url: is required (e.g. \"mqtts://city.example:8883\")",
                "test.toml:5:8: upstream[0].name: \"local\" is the local broker's name; choose another",
                "test.toml:6:9: upstream[0].kinds: unknown kind \"gossip\" (telemetry, event, status, fleet, heatmap, gateway)",
                "test.toml:7:11: upstream[0].include: \"a/#/b\" is not an MQTT topic filter",
                "test.toml:10:7: upstream[1].url: \"http://x\" must start with tcp://, mqtt://, ssl:// or mqtts://",
                "test.toml:12:8: upstream[2].name: \"city\" is used by another [[upstream]]",
            }));
}

store::Envelope Env(uint64_t seq, std::string topic, std::string payload, bool retain = false) {
  store::Envelope e;
  e.seq = seq;
  e.msg.topic = std::move(topic);
  e.msg.payload = std::move(payload);
  e.msg.retain = retain;
  return e;
}

TEST(BatchTest, RecordsAreEmbeddedWithTheirMappedTopicsAndAForeignPayloadIsAString) {
  std::vector<store::Envelope> records = {Env(1, "sanigate/v1/s/devices/a/telemetry", R"({"id":"gw:1","metrics":{"x":1}})"),
                                          Env(2, "sanigate/v1/s/fleet/events", "not json \xff")};
  upstream::Routing r("sanigate/v1", {Up("city", {"telemetry", "fleet"}, {}, {}, "city/xm")});
  std::string doc = upstream::BuildBatch(records, [&](const std::string& t) { return r.MapTopic(1, t); }, "gw-1");
  auto j = nlohmann::json::parse(doc);
  EXPECT_EQ(j["gateway"], "gw-1");
  EXPECT_EQ(j["count"], 2);
  ASSERT_EQ(j["records"].size(), 2u);
  EXPECT_EQ(j["records"][0]["topic"], "city/xm/s/devices/a/telemetry");
  EXPECT_EQ(j["records"][0]["retain"], false);
  EXPECT_EQ(j["records"][0]["payload"]["id"], "gw:1");
  EXPECT_TRUE(j["records"][1]["payload"].is_string());
}

TEST(BatchTest, EachCompressionRoundTripsAndADecompressionBombIsRefused) {
  std::string doc;
  for (int i = 0; i < 200; ++i) doc += R"({"id":"gw:)" + std::to_string(i) + R"(","metrics":{"fill_level_pct":81.5}})";
  for (auto c : {upstream::Compression::kNone, upstream::Compression::kDeflate, upstream::Compression::kZstd}) {
    auto packed = upstream::Compress(doc, c);
    ASSERT_TRUE(packed.ok()) << packed.status().ToString();
    if (c != upstream::Compression::kNone) EXPECT_LT(packed->size(), doc.size() / 4);
    auto back = upstream::Decompress(*packed, c, 1 << 20);
    ASSERT_TRUE(back.ok()) << back.status().ToString();
    EXPECT_EQ(*back, doc);
    if (c != upstream::Compression::kNone) {
      EXPECT_FALSE(upstream::Decompress(*packed, c, 100).ok());                  // over the limit
      EXPECT_FALSE(upstream::Decompress(packed->substr(0, packed->size() / 2), c, 1 << 20).ok());  // cut short
    }
  }
  EXPECT_EQ(upstream::ParseCompression("zstd"), upstream::Compression::kZstd);
  EXPECT_FALSE(upstream::ParseCompression("lz4"));
}

}  // namespace
}  // namespace sanigate
