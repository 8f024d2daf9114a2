// The Prometheus text builder (format, escaping, value forms), the two daemons' mapping of their
// status payloads to metrics, and the [metrics] config section of both daemons.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "app/fleet_config.h"
#include "app/fleet_daemon.h"
#include "app/gateway.h"
#include "service/prometheus_text.h"
#include "settings/gateway_config.h"

namespace sanigate {
namespace {

using service::MetricType;
using service::PrometheusText;

TEST(PrometheusText, FamiliesWithHelpTypeAndGroupedSamples) {
  PrometheusText t;
  t.Family("a_total", MetricType::kCounter, "Things a");
  t.Family("b", MetricType::kGauge, "Line one\nback\\slash");
  t.Sample("a_total", 1, {{"x", "1"}});
  t.Sample("b", 2.5);
  t.Sample("a_total", 3, {{"x", "2"}, {"y", "z"}});  // lands with its family, not after b
  EXPECT_EQ(t.Text(),
            "# HELP a_total Things a\n# TYPE a_total counter\n"
            "a_total{x=\"1\"} 1\na_total{x=\"2\",y=\"z\"} 3\n"
            "# HELP b Line one\\nback\\\\slash\n# TYPE b gauge\nb 2.5\n");
}

TEST(PrometheusText, DeclaredTwiceKeepsTheFirstAndEmptyFamiliesStayDeclared) {
  PrometheusText t;
  t.Family("m", MetricType::kGauge, "first");
  t.Family("m", MetricType::kCounter, "second");
  EXPECT_EQ(t.Text(), "# HELP m first\n# TYPE m gauge\n");
}

TEST(PrometheusText, EscapesLabelValues) {
  EXPECT_EQ(service::EscapeLabelValue("plain-id_1.x"), "plain-id_1.x");
  EXPECT_EQ(service::EscapeLabelValue("a\"b"), "a\\\"b");
  EXPECT_EQ(service::EscapeLabelValue("a\\b"), "a\\\\b");
  EXPECT_EQ(service::EscapeLabelValue("a\nb"), "a\\nb");
  EXPECT_EQ(service::EscapeLabelValue("\xE5\x8E\xA6\xE9\x97\xA8"), "\xE5\x8E\xA6\xE9\x97\xA8");  // UTF-8 kept
  EXPECT_EQ(service::EscapeLabelValue("a\xFF" "b"), "a\xEF\xBF\xBD" "b");                        // invalid byte
  EXPECT_EQ(service::EscapeLabelValue("\xE5\x8E"), "\xEF\xBF\xBD\xEF\xBF\xBD");                   // truncated
  EXPECT_EQ(service::EscapeLabelValue("\xC0\xAF"), "\xEF\xBF\xBD\xEF\xBF\xBD");                   // overlong
  PrometheusText t;
  t.Sample("m", 1, {{"device", "x\"}\n"}});
  EXPECT_EQ(t.Text(), "# TYPE m gauge\nm{device=\"x\\\"}\\n\"} 1\n");
}

TEST(PrometheusText, FormatsValues) {
  EXPECT_EQ(service::FormatValue(0), "0");
  EXPECT_EQ(service::FormatValue(-3), "-3");
  EXPECT_EQ(service::FormatValue(18446744073709551615.0), "18446744073709551616");
  EXPECT_EQ(service::FormatValue(9007199254740992.0), "9007199254740992");
  EXPECT_EQ(service::FormatValue(0.1), "0.1");
  EXPECT_EQ(service::FormatValue(1796613546.034), "1796613546.034");
  EXPECT_EQ(service::FormatValue(std::nan("")), "NaN");
  EXPECT_EQ(service::FormatValue(std::numeric_limits<double>::infinity()), "+Inf");
  EXPECT_EQ(service::FormatValue(-std::numeric_limits<double>::infinity()), "-Inf");
}

const char* kGatewayStatus = R"({"online":true,"gateway":"gw","site":"s","ts":1000000,"version":"1.2.3","started":900000,
 "adapters":{"modbus":{"state":"degraded","devices":2,"online":1,"errors":7,"polls":40,"requests":80,
   "per_device":{"room\"1":{"online":true,"requests":50,"timeouts":1,"exceptions":0,"errors":1,"latency_ms":12.5,
                            "max_latency_ms":40,"polls":20,"partial_polls":1,"wrong_answers":0},
                 "room2":{"online":false,"requests":30,"timeouts":6,"exceptions":0,"errors":6,"latency_ms":0,"max_latency_ms":0}}}},
 "outbox":{"pending":12,"oldest_ts":990000,"bytes":3456,"shed":{"telemetry":5}},
 "upstreams":[{"name":"city","connected":true,"pending":3,"oldest_ts":999000,"shed":{},"delivered":100,
   "reconnects":2,"connect_failures":1,"bytes_sent":999,"downlink":{"accepted":4,"dropped":1}}]})";

TEST(GatewayMetrics, MapsTheStatus) {
  std::string t = app::GatewayMetricsText(kGatewayStatus, true, true, 1'000'000);
  for (const char* line : {"sanigate_up 1\n", "sanigate_build_info{version=\"1.2.3\"} 1\n", "sanigate_start_time_seconds 900\n",
                           "sanigate_mqtt_connected 1\n", "sanigate_outbox_pending_records 12\n",
                           "sanigate_outbox_oldest_age_seconds 10\n", "sanigate_outbox_bytes 3456\n",
                           "sanigate_outbox_shed_records_total{priority=\"telemetry\"} 5\n",
                           "sanigate_outbox_shed_records_total{priority=\"alarm\"} 0\n",
                           "sanigate_adapter_state{adapter=\"modbus\",state=\"degraded\"} 1\n",
                           "sanigate_adapter_devices{adapter=\"modbus\"} 2\n", "sanigate_adapter_devices_online{adapter=\"modbus\"} 1\n",
                           "sanigate_adapter_errors_total{adapter=\"modbus\"} 7\n",
                           "sanigate_device_online{adapter=\"modbus\",device=\"room\\\"1\"} 1\n",
                           "sanigate_device_timeouts_total{adapter=\"modbus\",device=\"room2\"} 6\n",
                           "sanigate_device_latency_seconds{adapter=\"modbus\",device=\"room\\\"1\"} 0.0125\n",
                           "sanigate_device_polls_total{adapter=\"modbus\",device=\"room\\\"1\"} 20\n",
                           "sanigate_upstream_connected{upstream=\"city\"} 1\n", "sanigate_upstream_pending_records{upstream=\"city\"} 3\n",
                           "sanigate_upstream_oldest_age_seconds{upstream=\"city\"} 1\n",
                           "sanigate_upstream_delivered_records_total{upstream=\"city\"} 100\n",
                           "sanigate_upstream_downlink_dropped_total{upstream=\"city\"} 1\n",
                           "# TYPE sanigate_device_requests_total counter\n", "# TYPE sanigate_outbox_bytes gauge\n"})
    EXPECT_NE(t.find(line), std::string::npos) << line << "\nin:\n" << t;
  EXPECT_EQ(t.find("device=\"room2\"} 0\n# TYPE sanigate_device_polls"), std::string::npos);  // no polls: not listed
  EXPECT_EQ(t.find("sanigate_relay"), std::string::npos);
}

TEST(GatewayMetrics, PerDeviceSeriesCanBeTurnedOff) {
  std::string t = app::GatewayMetricsText(kGatewayStatus, false, false, 1'000'000);
  EXPECT_EQ(t.find("sanigate_device_"), std::string::npos);
  EXPECT_NE(t.find("sanigate_adapter_devices{adapter=\"modbus\"} 2\n"), std::string::npos);
  EXPECT_NE(t.find("sanigate_mqtt_connected 0\n"), std::string::npos);
}

TEST(FleetMetrics, MapsTheStatus) {
  std::string t = fleet::FleetMetricsText(
      R"({"online":true,"version":"1.2.3","started":5000,"devices":9,"gateways":2,"by_state":{"ok":5,"offline":1},
          "messages":77,"malformed":3,"refused_publishes":0,"heatmap":{"sites":1,"points":10,"cells":4}})",
      true);
  for (const char* line : {"sanifleet_up 1\n", "sanifleet_mqtt_connected 1\n", "sanifleet_registered_devices 9\n",
                           "sanifleet_registered_gateways 2\n", "sanifleet_devices{state=\"ok\"} 5\n",
                           "sanifleet_devices{state=\"offline\"} 1\n", "sanifleet_devices{state=\"degraded\"} 0\n",
                           "sanifleet_devices{state=\"unknown\"} 0\n", "sanifleet_messages_total 77\n",
                           "sanifleet_malformed_messages_total 3\n", "sanifleet_heatmap_points_total 10\n",
                           "sanifleet_heatmap_cells 4\n", "sanifleet_start_time_seconds 5\n"})
    EXPECT_NE(t.find(line), std::string::npos) << line << "\nin:\n" << t;
}

TEST(MetricsConfig, GatewaySection) {
  auto load = [](const std::string& metrics) {
    return settings::LoadConfigString("[gateway]\nid = \"gw\"\nsite = \"s\"\n" + metrics, "m.toml", {});
  };
  auto off = load("");
  ASSERT_TRUE(off.ok()) << off.status().message();
  EXPECT_TRUE(off->metrics.listen.empty());
  EXPECT_TRUE(off->metrics.per_device);
  auto on = load("[metrics]\nlisten = \"127.0.0.1:9187\"\nper_device = false\n");
  ASSERT_TRUE(on.ok()) << on.status().message();
  EXPECT_EQ(on->metrics.host, "127.0.0.1");
  EXPECT_EQ(on->metrics.port, 9187);
  EXPECT_FALSE(on->metrics.per_device);
  auto v6 = load("[metrics]\nlisten = \"[::1]:9187\"\n");
  ASSERT_TRUE(v6.ok()) << v6.status().message();
  EXPECT_EQ(v6->metrics.host, "::1");
  auto remote = load("[metrics]\nlisten = \"0.0.0.0:9187\"\n");
  ASSERT_FALSE(remote.ok());
  EXPECT_NE(remote.status().message().find("metrics.listen: \"0.0.0.0:9187\" is not a loopback address"),
            std::string::npos)
      << remote.status().message();
  auto allowed = load("[metrics]\nlisten = \"0.0.0.0:9187\"\nallow_remote = true\n");
  ASSERT_TRUE(allowed.ok()) << allowed.status().message();
  EXPECT_EQ(allowed->warnings.size(), 1u);
  for (const char* bad : {"localhost:9187", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:65536", "::1:9187", "127.0.0.1:x"}) {
    auto r = load(std::string("[metrics]\nlisten = \"") + bad + "\"\n");
    EXPECT_FALSE(r.ok()) << bad;
  }
  EXPECT_FALSE(load("[metrics]\nlisten = \"127.0.0.1:9187\"\nport = 3\n").ok());  // unknown key
}

TEST(MetricsConfig, FleetSection) {
  std::string base = "[fleet]\nid = \"f\"\nsite = \"s\"\nsites = [\"s\"]\n";
  auto on = fleet::LoadFleetConfigString(base + "[metrics]\nlisten = \"127.0.0.1:9188\"\n", "f.toml");
  ASSERT_TRUE(on.ok()) << on.status().message();
  EXPECT_EQ(on->metrics.port, 9188);
  EXPECT_FALSE(fleet::LoadFleetConfigString(base + "[metrics]\nlisten = \"10.0.0.1:9188\"\n", "f.toml").ok());
  // sanifleet has no per-device series: the key is unknown there.
  EXPECT_FALSE(fleet::LoadFleetConfigString(base + "[metrics]\nlisten = \"127.0.0.1:9188\"\nper_device = true\n", "f.toml").ok());
}

TEST(MetricsConfig, LoopbackAddresses) {
  EXPECT_TRUE(settings::IsLoopbackAddress("127.0.0.1"));
  EXPECT_TRUE(settings::IsLoopbackAddress("127.1.2.3"));
  EXPECT_TRUE(settings::IsLoopbackAddress("::1"));
  EXPECT_FALSE(settings::IsLoopbackAddress("::"));
  EXPECT_FALSE(settings::IsLoopbackAddress("::ffff:127.0.0.1"));
  EXPECT_FALSE(settings::IsLoopbackAddress("192.168.1.1"));
  EXPECT_FALSE(settings::IsLoopbackAddress("localhost"));
}

}  // namespace
}  // namespace sanigate
