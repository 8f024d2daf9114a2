// sanifleet's config: the shipped sample loads, defaults apply, overrides start from [health]'s
// values, and every problem is reported as FILE:LINE:COL: key.path: problem.
#include <gtest/gtest.h>

#include "app/fleet_config.h"

namespace sanigate::fleet {
namespace {

TEST(FleetConfigTest, ShippedSampleLoads) {
  auto cfg = LoadFleetConfig(SANIGATE_SOURCE_DIR "/config/sanifleet.toml");
  ASSERT_TRUE(cfg.ok()) << cfg.status().message();
  EXPECT_EQ(cfg->fleet.id, "fleet-houpu");
  EXPECT_EQ(cfg->fleet.sites, std::vector<std::string>{"houpu"});
  EXPECT_EQ(cfg->mqtt.client_id, "sanifleet-fleet-houpu");
  ASSERT_TRUE(cfg->health.by_kind.count("vehicle"));
  EXPECT_EQ(cfg->health.by_kind.at("vehicle").missed_reports_offline, 0);
  ASSERT_TRUE(cfg->health.by_profile.count("bin-monitor-ultrasonic-v1"));
  EXPECT_EQ(cfg->health.by_profile.at("bin-monitor-ultrasonic-v1").expected_interval_ms, 1'800'000);
}

TEST(FleetConfigTest, OverridesStartFromTheHealthDefaults) {
  auto cfg = LoadFleetConfigString(R"([fleet]
id = "f"
site = "s"
sites = ["+"]
[health]
low_battery_pct = 30
[[health.overrides]]
kind = "bin"
weak_rssi_dbm = -110
)", "t.toml");
  ASSERT_TRUE(cfg.ok()) << cfg.status().message();
  EXPECT_EQ(cfg->fleet.sites, std::vector<std::string>{"+"});
  const auto& bin = cfg->health.by_kind.at("bin");
  EXPECT_EQ(bin.low_battery_pct, 30);
  EXPECT_EQ(bin.weak_rssi_dbm, -110);
  EXPECT_EQ(cfg->health.defaults.weak_rssi_dbm, -120);
}

TEST(FleetConfigTest, EveryProblemIsReportedWithItsPlace) {
  auto cfg = LoadFleetConfigString(R"([fleet]
id = "Bad Id"
site = "s"
sites = ["ok", "Not/Ok"]
colour = "blue"
[health]
missed_reports_degraded = 3
missed_reports_offline = 3
critical_battery_pct = 50
[[health.overrides]]
kind = "bin"
profile = "p"
)", "t.toml");
  ASSERT_FALSE(cfg.ok());
  const std::string m = cfg.status().message();
  for (const char* want : {"t.toml:2:", "fleet.id", "fleet.sites: \"Not/Ok\" is not a site id", "fleet.colour",
                           "health.missed_reports_degraded: must be below missed_reports_offline",
                           "health.critical_battery_pct: is above low_battery_pct",
                           "give exactly one of kind or profile"})
    EXPECT_NE(m.find(want), std::string::npos) << want << "\n" << m;
  auto missing = LoadFleetConfigString("[mqtt]\nurl = \"tcp://127.0.0.1:1\"\n", "t.toml");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("fleet: required section is missing"), std::string::npos);
}

TEST(FleetConfigTest, HeatmapSettingsAndTheirProblems) {
  auto cfg = LoadFleetConfigString(R"([fleet]
id = "f"
site = "s"
[heatmap]
layers = ["bin_fill", "unattended"]
feed_precision = 8
windows = ["1h", "5m", "1d"]
utc_offset = "-03:30"
crs = "gcj02"
unattended_after_s = 1800
)", "t.toml");
  ASSERT_TRUE(cfg.ok()) << cfg.status().message();
  const auto& h = cfg->heatmap;
  EXPECT_EQ(h.layers, (std::vector<heatmap::Layer>{heatmap::Layer::kBinFill, heatmap::Layer::kUnattended}));
  EXPECT_EQ(h.feed_precision, 8);
  EXPECT_EQ(h.windows_s, (std::vector<int64_t>{300, 3600, 86400}));
  EXPECT_EQ(h.utc_offset_s, -(3 * 3600 + 30 * 60));
  EXPECT_EQ(h.crs, heatmap::Crs::kGcj02);
  EXPECT_EQ(h.unattended_after_s, 1800);

  auto bad = LoadFleetConfigString(R"([fleet]
id = "f"
site = "s"
[heatmap]
layers = ["bins"]
feed_precision = 9
windows = ["7m", "15x"]
utc_offset = "UTC+8"
crs = "bd09"
)", "t.toml");
  ASSERT_FALSE(bad.ok());
  const std::string m = bad.status().message();
  for (const char* want : {"heatmap.layers: \"bins\" is not a layer", "t.toml:6:", "heatmap.feed_precision",
                           "heatmap.windows: \"7m\" does not divide a day", "heatmap.windows: \"15x\" is not a duration",
                           "heatmap.utc_offset: \"UTC+8\" is not an offset", "heatmap.crs"})
    EXPECT_NE(m.find(want), std::string::npos) << want << "\n" << m;
  auto nested = LoadFleetConfigString("[fleet]\nid = \"f\"\nsite = \"s\"\n[heatmap]\nwindows = [\"10m\", \"15m\"]\n", "t.toml");
  ASSERT_FALSE(nested.ok());
  EXPECT_NE(nested.status().message().find("heatmap.windows: 900 s is not a multiple of the smallest window (600 s)"), std::string::npos)
      << nested.status().message();
  EXPECT_EQ(ParseDurationS("15m"), 900);
  EXPECT_EQ(ParseDurationS("24h"), 86400);
  EXPECT_FALSE(ParseDurationS("0s").has_value());
  EXPECT_FALSE(ParseDurationS("m").has_value());
}

}  // namespace
}  // namespace sanigate::fleet
