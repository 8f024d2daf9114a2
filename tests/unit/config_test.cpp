// Config loading through app::LoadGatewayConfig(String): every problem is reported at once, as
// "FILE:LINE:COL: key.path: problem", sorted by position; and every sample config in config/
// loads cleanly.
#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "app/config_loader.h"
#include "modbus/modbus_config.h"
#include "registry/registry.h"
#include "test_support.h"

namespace sanigate {
namespace {

namespace fs = std::filesystem;
using unit::Lines;
using unit::ScratchDir;
using unit::WriteFile;

const char kGateway[] =
    "[gateway]\n"          // 1
    "id = \"gw-1\"\n"      // 2
    "site = \"site-1\"\n"; // 3

// The error lines for `text` loaded as "test.toml"; empty when the config is valid.
std::vector<std::string> Errors(const std::string& text) {
  auto r = app::LoadGatewayConfigString(text, "test.toml");
  if (r.ok()) return {};
  EXPECT_EQ(r.status().code(), Code::kInvalid);
  return Lines(r.status().message());
}

settings::Config MustLoad(const std::string& text) {
  auto r = app::LoadGatewayConfigString(text, "test.toml");
  EXPECT_TRUE(r.ok()) << r.status().message();
  return r.ok() ? r.value() : settings::Config{};
}

const dev::modbus::ModbusConfig* ModbusOf(const settings::Config& cfg) {
  for (const auto& a : cfg.adapters)
    if (a.protocol == "modbus") return std::any_cast<dev::modbus::ModbusConfig>(&a.config);
  return nullptr;
}

TEST(ConfigTest, MinimalGatewaySectionIsValidWithDefaults) {
  settings::Config cfg = MustLoad(kGateway);
  EXPECT_EQ(cfg.gateway.id, "gw-1");
  EXPECT_EQ(cfg.gateway.site, "site-1");
  EXPECT_EQ(cfg.gateway.topic_prefix, "sanigate/v1");
  EXPECT_EQ(cfg.mqtt.url, "tcp://127.0.0.1:1883");
  EXPECT_EQ(cfg.mqtt.client_id, "sanigate-gw-1");
  EXPECT_FALSE(cfg.mqtt.tls.enabled);
  EXPECT_EQ(cfg.mqtt.ack_timeout_s, 20);
  EXPECT_EQ(cfg.OutboxPath(), "/var/lib/sanigate/outbox.db");
  EXPECT_TRUE(cfg.adapters.empty());
}

TEST(ConfigTest, AckTimeoutIsOffAtZeroAndRefusedBelow) {
  EXPECT_EQ(MustLoad(std::string(kGateway) + "\n[mqtt]\nack_timeout_s = 0\n").mqtt.ack_timeout_s, 0);
  std::vector<std::string> errors = Errors(std::string(kGateway) + "\n[mqtt]\nack_timeout_s = -1\n");
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_NE(errors[0].find("mqtt.ack_timeout_s: -1 is outside 0..3600"), std::string::npos) << errors[0];
}

TEST(ConfigTest, UnknownKeyIsReportedWithDidYouMeanSuggestion) {
  EXPECT_EQ(Errors(std::string(kGateway) + "data_dri = \"/tmp\"\n"),
            (std::vector<std::string>{
                "test.toml:4:1: gateway.data_dri: unknown key (did you mean \"data_dir\"?)"}));
}

TEST(ConfigTest, UnknownKeyFarFromEveryKnownKeyHasNoSuggestion) {
  EXPECT_EQ(Errors(std::string(kGateway) + "colour = \"red\"\n"),
            (std::vector<std::string>{"test.toml:4:1: gateway.colour: unknown key"}));
}

TEST(ConfigTest, MisspeltOptionalEnumKeyGetsDidYouMeanSuggestion) {
  EXPECT_EQ(Errors(std::string(kGateway) + "log_levl = \"debug\"\n"),
            (std::vector<std::string>{
                "test.toml:4:1: gateway.log_levl: unknown key (did you mean \"log_level\"?)"}));
}

TEST(ConfigTest, MisspeltSectionNameGetsDidYouMeanSuggestion) {
  // A table header's key is located at its name, just after the '['.
  EXPECT_EQ(Errors(std::string(kGateway) + "[modbuss]\nworkers = 2\n"),
            (std::vector<std::string>{
                "test.toml:4:2: modbuss: unknown key (did you mean \"modbus\"?)"}));
}

TEST(ConfigTest, WrongTypeNamesExpectedAndActualType) {
  EXPECT_EQ(Errors(std::string(kGateway) +
                   "\n"
                   "[mqtt]\n"                  // 5
                   "keepalive_s = \"30\"\n"),  // 6
            (std::vector<std::string>{
                "test.toml:6:15: mqtt.keepalive_s: expected an integer, got a string"}));
}

TEST(ConfigTest, OutOfRangeRegisterAddressNamesTheAllowedRange) {
  EXPECT_EQ(Errors(std::string(kGateway) +
                   "\n"
                   "[[modbus.devices]]\n"           // 5
                   "id = \"room-1\"\n"              // 6
                   "host = \"127.0.0.1\"\n"         // 7
                   "\n"                             // 8
                   "[[modbus.devices.points]]\n"    // 9
                   "metric = \"fill_level_pct\"\n"  // 10
                   "address = 70000\n"),            // 11
            (std::vector<std::string>{"test.toml:11:11: modbus.devices[0].points[0].address: "
                                      "70000 is outside 0..65535"}));
}

TEST(ConfigTest, MissingRequiredKeyIsReportedAtItsTable) {
  EXPECT_EQ(Errors("[gateway]\n"
                   "site = \"site-1\"\n"),
            (std::vector<std::string>{"test.toml:1:1: gateway.id: required key is missing"}));
}

TEST(ConfigTest, MissingRequiredKeyInArrayOfTablesIsReportedAtThatEntry) {
  EXPECT_EQ(Errors(std::string(kGateway) +
                   "\n"
                   "[[modbus.devices]]\n"           // 5
                   "id = \"room-1\"\n"              // 6
                   "\n"                             // 7
                   "[[modbus.devices.points]]\n"    // 8
                   "metric = \"fill_level_pct\"\n"  // 9
                   "address = 0\n"),                // 10
            (std::vector<std::string>{
                "test.toml:5:1: modbus.devices[0].host: required key is missing"}));
}

TEST(ConfigTest, MissingGatewaySectionIsReported) {
  EXPECT_EQ(Errors("[mqtt]\nurl = \"tcp://127.0.0.1:1883\"\n"),
            (std::vector<std::string>{"test.toml:1:1: gateway: required section is missing"}));
}

TEST(ConfigTest, InvalidIdIsRefusedWithTheAllowedCharacters) {
  EXPECT_EQ(Errors("[gateway]\n"
                   "id = \"GW_1\"\n"
                   "site = \"site-1\"\n"),
            (std::vector<std::string>{
                "test.toml:2:6: gateway.id: \"GW_1\" is not a valid id (use 1-128 of a-z 0-9 . _ -)"}));
}

TEST(ConfigTest, DuplicateDeviceIdNamesTheFirstUse) {
  EXPECT_EQ(Errors(std::string(kGateway) +
                   "\n"
                   "[[modbus.devices]]\n"           // 5
                   "id = \"room-1\"\n"              // 6
                   "host = \"127.0.0.1\"\n"         // 7
                   "[[modbus.devices.points]]\n"    // 8
                   "metric = \"fill_level_pct\"\n"  // 9
                   "address = 0\n"                  // 10
                   "\n"                             // 11
                   "[[modbus.devices]]\n"           // 12
                   "id = \"room-1\"\n"              // 13
                   "host = \"127.0.0.2\"\n"         // 14
                   "[[modbus.devices.points]]\n"    // 15
                   "metric = \"fill_level_pct\"\n"  // 16
                   "address = 0\n"),                // 17
            (std::vector<std::string>{"test.toml:13:6: modbus.devices[1].id: \"room-1\" is "
                                      "already used by modbus.devices[0]"}));
}

TEST(ConfigTest, BadEnumValueListsTheAllowedValues) {
  EXPECT_EQ(Errors(std::string(kGateway) + "log_level = \"verbose\"\n"),
            (std::vector<std::string>{"test.toml:4:13: gateway.log_level: \"verbose\" is not one "
                                      "of \"trace\", \"debug\", \"info\", \"warn\", \"error\""}));
}

TEST(ConfigTest, TomlSyntaxErrorIsTheOnlyErrorWithSyntaxPath) {
  std::vector<std::string> errors = Errors(std::string(kGateway) +
                                           "\n"
                                           "[mqtt]\n"            // 5
                                           "url = = \"x\"\n");   // 6
  ASSERT_EQ(errors.size(), 1u);
  const std::string prefix = "test.toml:6:7: (syntax): ";
  ASSERT_EQ(errors[0].substr(0, prefix.size()), prefix) << errors[0];
  EXPECT_GT(errors[0].size(), prefix.size()) << "the parser's description is missing";
}

TEST(ConfigTest, AllErrorsAreReportedAtOnceSortedByLine) {
  // [mqtt] comes before [gateway] in the file but is parsed after it: the report must still
  // read top to bottom.
  EXPECT_EQ(Errors("[mqtt]\n"                          // 1
                   "url = \"http://broker:1883\"\n"    // 2
                   "keepalive_s = 1\n"                 // 3
                   "\n"                                // 4
                   "[gateway]\n"                       // 5
                   "id = \"GW\"\n"                     // 6
                   "site = \"site-1\"\n"               // 7
                   "log_level = \"loud\"\n"            // 8
                   "\n"                                // 9
                   "[outbox]\n"                        // 10
                   "max_rows = 5\n"                    // 11
                   "commit_max_row = 10\n"),           // 12
            (std::vector<std::string>{
                "test.toml:2:7: mqtt.url: \"http://broker:1883\" must start with tcp://, mqtt://, "
                "ssl:// or mqtts://",
                "test.toml:3:15: mqtt.keepalive_s: 1 is outside 5..3600",
                "test.toml:6:6: gateway.id: \"GW\" is not a valid id (use 1-128 of a-z 0-9 . _ -)",
                "test.toml:8:13: gateway.log_level: \"loud\" is not one of \"trace\", \"debug\", "
                "\"info\", \"warn\", \"error\"",
                "test.toml:11:12: outbox.max_rows: 5 is outside 1000..1000000000",
                "test.toml:12:1: outbox.commit_max_row: unknown key (did you mean "
                "\"commit_max_rows\"?)",
            }));
}

class PasswordFileTest : public ::testing::Test {
 protected:
  std::string ConfigWithPasswordFile(const std::string& path) {
    return std::string(kGateway) +
           "\n"
           "[mqtt]\n"                                   // 5
           "username = \"gw\"\n"                        // 6
           "password_file = \"" + path + "\"\n";        // 7
  }
  std::string SecretFile(mode_t mode) {
    std::string path = dir_.File("mqtt.password");
    WriteFile(path, "s3cret pass\nsecond line\n");
    EXPECT_EQ(::chmod(path.c_str(), mode), 0);
    return path;
  }
  ScratchDir dir_;
};

TEST_F(PasswordFileTest, GroupReadablePasswordFileIsRefused) {
  std::string secret = SecretFile(0644);
  std::string cfg_path = dir_.File("gw.toml");
  WriteFile(cfg_path, ConfigWithPasswordFile(secret));
  auto r = app::LoadGatewayConfig(cfg_path);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kInvalid);
  EXPECT_EQ(Lines(r.status().message()),
            (std::vector<std::string>{cfg_path + ":7:17: mqtt.password_file: \"" + secret +
                                      "\" must not be readable by group or others (chmod 600)"}));
}

// A newer systemd hands a credential over as 0440 with an ACL for the service user: inside
// $CREDENTIALS_DIRECTORY only others' bits are refused.
TEST_F(PasswordFileTest, ASystemdCredentialWithAnAclIsAcceptedButNotOneOthersCanRead) {
  std::string secret = SecretFile(0640);
  std::string dir = secret.substr(0, secret.rfind('/'));
  std::string cfg_path = dir_.File("gw.toml");
  WriteFile(cfg_path, ConfigWithPasswordFile(secret));
  EXPECT_FALSE(app::LoadGatewayConfig(cfg_path).ok());  // outside a credentials directory
  ::setenv("CREDENTIALS_DIRECTORY", dir.c_str(), 1);
  auto ok = app::LoadGatewayConfig(cfg_path);
  EXPECT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_EQ(::chmod(secret.c_str(), 0644), 0);
  auto refused = app::LoadGatewayConfig(cfg_path);
  ::unsetenv("CREDENTIALS_DIRECTORY");
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("must not be readable by others"), std::string::npos)
      << refused.status().message();
}

TEST_F(PasswordFileTest, OwnerOnlyPasswordFileIsAcceptedAndOnlyItsFirstLineIsThePassword) {
  std::string secret = SecretFile(0600);
  std::string cfg_path = dir_.File("gw.toml");
  WriteFile(cfg_path, ConfigWithPasswordFile(secret));
  auto r = app::LoadGatewayConfig(cfg_path);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->mqtt.username, "gw");
  EXPECT_EQ(r->mqtt.password, "s3cret pass");
  EXPECT_EQ(r->file, cfg_path);
}

TEST_F(PasswordFileTest, PasswordAndPasswordFileTogetherAreRefused) {
  std::string secret = SecretFile(0600);
  EXPECT_EQ(Errors(std::string(kGateway) +
                   "\n"
                   "[mqtt]\n"                                  // 5
                   "password = \"inline\"\n"                   // 6
                   "password_file = \"" + secret + "\"\n"),    // 7
            (std::vector<std::string>{
                "test.toml:7:17: mqtt.password_file: give password or password_file, not both"}));
}

TEST(ConfigTest, MqttUrlWithUnknownSchemeIsRefused) {
  EXPECT_EQ(Errors(std::string(kGateway) +
                   "[mqtt]\n"                            // 4
                   "url = \"ftp://broker:1883\"\n"),     // 5
            (std::vector<std::string>{"test.toml:5:7: mqtt.url: \"ftp://broker:1883\" must start "
                                      "with tcp://, mqtt://, ssl:// or mqtts://"}));
}

TEST(ConfigTest, MqttUrlSchemesTcpAndMqttArePlainAndSslAndMqttsEnableTls) {
  for (const char* url : {"tcp://b:1883", "mqtt://b:1883"}) {
    SCOPED_TRACE(url);
    settings::Config cfg = MustLoad(std::string(kGateway) + "[mqtt]\nurl = \"" + url + "\"\n");
    EXPECT_EQ(cfg.mqtt.url, url);
    EXPECT_FALSE(cfg.mqtt.tls.enabled);
  }
  for (const char* url : {"ssl://b:8883", "mqtts://b:8883"}) {
    SCOPED_TRACE(url);
    settings::Config cfg = MustLoad(std::string(kGateway) + "[mqtt]\nurl = \"" + url + "\"\n");
    EXPECT_EQ(cfg.mqtt.url, url);
    EXPECT_TRUE(cfg.mqtt.tls.enabled);
  }
}

TEST(ConfigTest, TlsEnabledWithPlainUrlIsRefused) {
  EXPECT_EQ(Errors(std::string(kGateway) +
                   "[mqtt]\n"                          // 4
                   "url = \"tcp://b:1883\"\n"          // 5
                   "[mqtt.tls]\n"                      // 6
                   "enabled = true\n"),                // 7
            (std::vector<std::string>{"test.toml:5:7: mqtt.url: tls.enabled needs an ssl:// or "
                                      "mqtts:// url, got \"tcp://b:1883\""}));
}

const char kDeviceHead[] =
    "\n"
    "[[modbus.devices]]\n"     // 5
    "id = \"room-1\"\n"        // 6
    "host = \"127.0.0.1\"\n";  // 7
const char kFillPoint[] =
    "[[modbus.devices.points]]\n"
    "metric = \"fill_level_pct\"\n"
    "address = 0\n";

TEST(ConfigTest, OverflowClearBelowAboveActiveAtIsRefused) {
  const std::string overflow =
      "overflow = { metric = \"fill_level_pct\", active_at = 80.0, clear_below = 90.0 }";
  ASSERT_EQ(overflow.find("90.0"), 72u);  // so the value starts at column 73
  EXPECT_EQ(Errors(std::string(kGateway) + kDeviceHead + overflow + "\n" + kFillPoint),
            (std::vector<std::string>{"test.toml:8:73: modbus.devices[0].overflow.clear_below: "
                                      "must not be above active_at (80)"}));
}

TEST(ConfigTest, OverflowRuleWithClearBelowUnderActiveAtIsLoaded) {
  settings::Config cfg = MustLoad(
      std::string(kGateway) + kDeviceHead +
      "overflow = { metric = \"fill_level_pct\", active_at = 95, clear_below = 85.5 }\n" +
      kFillPoint);
  const auto* modbus = ModbusOf(cfg);
  ASSERT_NE(modbus, nullptr);
  ASSERT_EQ(modbus->devices.size(), 1u);
  ASSERT_TRUE(modbus->devices[0].overflow.has_value());
  EXPECT_EQ(modbus->devices[0].overflow->metric, "fill_level_pct");
  EXPECT_EQ(modbus->devices[0].overflow->active_at, 95.0);
  EXPECT_EQ(modbus->devices[0].overflow->clear_below, 85.5);
}

TEST(ConfigTest, TlsCertFileWithoutKeyFileIsRefused) {
  ScratchDir dir;
  std::string cert = dir.File("client.pem");
  WriteFile(cert, "not really a certificate\n");
  EXPECT_EQ(Errors(std::string(kGateway) +
                   "[mqtt]\n"                                   // 4
                   "url = \"ssl://b:8883\"\n"                   // 5
                   "[mqtt.tls]\n"                               // 6
                   "cert_file = \"" + cert + "\"\n"),           // 7
            (std::vector<std::string>{"test.toml:7:13: mqtt.tls.cert_file: cert_file and "
                                      "key_file must be given together"}));
}

TEST(ConfigTest, TlsCertFileWithKeyFileIsAccepted) {
  ScratchDir dir;
  std::string cert = dir.File("client.pem"), key = dir.File("client.key");
  WriteFile(cert, "cert\n");
  WriteFile(key, "key\n");
  settings::Config cfg = MustLoad(std::string(kGateway) +
                                  "[mqtt]\n"
                                  "url = \"ssl://b:8883\"\n"
                                  "[mqtt.tls]\n"
                                  "cert_file = \"" + cert + "\"\n"
                                  "key_file = \"" + key + "\"\n");
  EXPECT_TRUE(cfg.mqtt.tls.enabled);
  EXPECT_EQ(cfg.mqtt.tls.cert_file, cert);
  EXPECT_EQ(cfg.mqtt.tls.key_file, key);
}

TEST(ConfigTest, ModbusPointsAreParsedWithTheirTypesAndRules) {
  settings::Config cfg = MustLoad(std::string(kGateway) + kDeviceHead +
                                  "[[modbus.devices.points]]\n"
                                  "metric = \"nh3_ppm\"\n"
                                  "address = 2\n"
                                  "type = \"f32\"\n"
                                  "word_order = \"low_first\"\n"
                                  "deadband = 0.5\n"
                                  "max_silence_s = 60\n"
                                  "[[modbus.devices.points]]\n"
                                  "metric = \"door_open\"\n"
                                  "table = \"discrete\"\n"
                                  "address = 3\n");
  const auto* modbus = ModbusOf(cfg);
  ASSERT_NE(modbus, nullptr);
  ASSERT_EQ(modbus->devices.size(), 1u);
  const auto& points = modbus->devices[0].points;
  ASSERT_EQ(points.size(), 2u);
  EXPECT_EQ(points[0].type, dev::modbus::ValueType::kF32);
  EXPECT_EQ(points[0].word_order, dev::modbus::WordOrder::kLowFirst);
  EXPECT_EQ(points[0].rule.deadband, std::optional<double>(0.5));
  EXPECT_EQ(points[0].rule.max_silence_ms, 60000);
  EXPECT_EQ(points[1].table, dev::modbus::Table::kDiscrete);
  EXPECT_EQ(points[1].type, dev::modbus::ValueType::kBool);
  EXPECT_FALSE(points[1].rule.deadband.has_value());
}

TEST_F(PasswordFileTest, MissingPasswordFileIsRefused) {
  std::string missing = dir_.File("nope.password");
  EXPECT_EQ(Errors(ConfigWithPasswordFile(missing)),
            (std::vector<std::string>{"test.toml:7:17: mqtt.password_file: cannot read \"" +
                                      missing + "\": No such file or directory"}));
}

TEST(ConfigTest, TopicPrefixWithWildcardIsRefused) {
  EXPECT_EQ(Errors(std::string(kGateway) + "topic_prefix = \"city/+\"\n"),
            (std::vector<std::string>{"test.toml:4:16: gateway.topic_prefix: \"city/+\" is not a "
                                      "valid topic prefix (no wildcards, no leading or trailing /)"}));
}

// Each compiled-in protocol names a sample config in config/; it must exist and load cleanly.
TEST(ConfigTest, ChirpstackDevicesNeedTheChirpstackSectionAndListenOffNeedsAnInput) {
  auto errors = Errors(std::string(kGateway) +
                       "[lorawan]\n"                             // 4
                       "listen = \"off\"\n"                       // 5
                       "profiles_dir = \"" SANIGATE_SOURCE_DIR "/config/profiles\"\n"
                       "[[lorawan.devices]]\n"
                       "id = \"bin-cs\"\n"
                       "dev_eui = \"0102030405060720\"\n"
                       "activation = \"chirpstack\"\n"
                       "profile = \"bin-monitor-ultrasonic-v1\"\n");
  ASSERT_FALSE(errors.empty());
  std::string all;
  for (const auto& e : errors) all += e + "\n";
  EXPECT_NE(all.find("lorawan.listen: \"off\" leaves no input"), std::string::npos) << all;
  EXPECT_NE(all.find("activation: \"chirpstack\" needs a [lorawan.chirpstack] section"), std::string::npos) << all;
  // With the section, the same device needs no keys.
  auto ok = Errors(std::string(kGateway) +
                   "[lorawan]\nlisten = \"off\"\nprofiles_dir = \"" SANIGATE_SOURCE_DIR "/config/profiles\"\n"
                   "[lorawan.chirpstack]\nbroker = \"tcp://127.0.0.1:1883\"\nusername = \"edge\"\n"
                   "[[lorawan.devices]]\nid = \"bin-cs\"\ndev_eui = \"0102030405060720\"\n"
                   "activation = \"chirpstack\"\nprofile = \"bin-monitor-ultrasonic-v1\"\n");
  EXPECT_TRUE(ok.empty()) << ok[0];
}

TEST(ConfigTest, EveryRegisteredProtocolHasALoadableSampleConfig) {
  ASSERT_FALSE(dev::AllProtocols().empty());
  for (const auto& spec : dev::AllProtocols()) {
    SCOPED_TRACE(spec.name);
    fs::path sample = fs::path(SANIGATE_SOURCE_DIR) / "config" / spec.sample_config;
    ASSERT_TRUE(fs::exists(sample)) << sample;
    auto r = app::LoadGatewayConfig(sample.string());
    ASSERT_TRUE(r.ok()) << r.status().message();
    bool has_section = false;
    for (const auto& a : r->adapters) has_section |= a.protocol == spec.name;
    EXPECT_TRUE(has_section) << "the sample has no [" << spec.name << "] section";
  }
}

// Adding a protocol = a folder under devices/ plus its registration: a folder that is not in
// the generated registry would be dead code, silently never built into the daemon.
TEST(ConfigTest, EveryProtocolFolderUnderDevicesIsRegistered) {
  std::set<std::string> registered;
  for (const auto& spec : dev::AllProtocols()) registered.insert(spec.name);
  size_t folders = 0;
  for (const auto& entry : fs::directory_iterator(fs::path(SANIGATE_SOURCE_DIR) / "devices")) {
    std::string name = entry.path().filename().string();
    if (!entry.is_directory() || name == "api" || name == "registry") continue;
    folders++;
    EXPECT_TRUE(registered.count(name)) << "devices/" << name << " is not in SANIGATE_DEVICE_PROTOCOLS";
  }
  EXPECT_EQ(folders, registered.size());
}

// Every sample config shipped in config/ (and the demo site, with its port placeholders filled
// in) must load without a single error, so a newly added sample is checked automatically.
TEST(ConfigTest, EverySampleConfigLoadsWithoutErrors) {
  const fs::path config_dir = fs::path(SANIGATE_SOURCE_DIR) / "config";
  ScratchDir scratch;
  const std::regex port_placeholder("@PORT[0-9]+@");
  size_t checked = 0;
  for (const fs::path& dir : {config_dir, config_dir / "demo"}) {
    ASSERT_TRUE(fs::is_directory(dir)) << dir;
    std::vector<fs::path> files;
    for (const auto& entry : fs::directory_iterator(dir))
      // sanifleet's sample has its own test (fleet_config_test).
      if (entry.is_regular_file() && entry.path().extension() == ".toml" && entry.path().filename() != "sanifleet.toml")
        files.push_back(entry.path());
    std::sort(files.begin(), files.end());
    for (const fs::path& file : files) {
      SCOPED_TRACE(file.string());
      std::string text = unit::ReadFile(file.string());
      std::string to_load = file.string();
      if (std::regex_search(text, port_placeholder)) {
        to_load = scratch.File(file.filename().string());
        std::string filled = std::regex_replace(text, port_placeholder, "15020");
        filled = std::regex_replace(filled, std::regex("@PROFILES@"), (config_dir / "profiles").string());
        WriteFile(to_load, filled);
      }
      auto r = app::LoadGatewayConfig(to_load);
      EXPECT_TRUE(r.ok()) << r.status().message();
      if (r.ok()) {
        EXPECT_TRUE(settings::IsValidId(r->gateway.id));
        EXPECT_TRUE(settings::IsValidId(r->gateway.site));
      }
      ++checked;
    }
  }
  EXPECT_GE(checked, 2u);
}

}  // namespace
}  // namespace sanigate

namespace sanigate {
namespace {

// RTU buses: the unit id is the device's address on the shared line, so it is required and
// unique per bus; TCP-only keys are refused; bus names and ports are unique.
TEST(ModbusBusConfigTest, ReportsMissingAndDuplicateUnitIdsAndTcpKeysOnABus) {
  std::string text = std::string(kGateway) +
                     "[modbus]\n"                        // 4
                     "[[modbus.buses]]\n"                // 5
                     "name = \"b1\"\n"                   // 6
                     "port = \"/dev/ttyS0\"\n"           // 7
                     "parity = \"X\"\n"                  // 8
                     "[[modbus.buses.devices]]\n"        // 9
                     "id = \"d1\"\n"                     // 10
                     "[[modbus.buses.devices.points]]\n" // 11
                     "metric = \"a_pct\"\n"              // 12
                     "address = 0\n"                     // 13
                     "[[modbus.buses.devices]]\n"        // 14
                     "id = \"d2\"\n"                     // 15
                     "unit_id = 7\n"                     // 16
                     "host = \"10.0.0.1\"\n"             // 17
                     "[[modbus.buses.devices.points]]\n" // 18
                     "metric = \"a_pct\"\n"              // 19
                     "address = 0\n"                     // 20
                     "[[modbus.buses.devices]]\n"        // 21
                     "id = \"d3\"\n"                     // 22
                     "unit_id = 7\n"                     // 23
                     "[[modbus.buses.devices.points]]\n" // 24
                     "metric = \"model\"\n"              // 25
                     "address = 0\n"                     // 26
                     "type = \"string\"\n";              // 27
  EXPECT_EQ(Errors(text),
            (std::vector<std::string>{
                "test.toml:8:10: modbus.buses[0].parity: \"X\" is not one of \"N\", \"E\", \"O\"",
                "test.toml:9:1: modbus.buses[0].devices[0].unit_id: required key is missing",
                "test.toml:17:1: modbus.buses[0].devices[1].host: unknown key",
                "test.toml:23:11: modbus.buses[0].devices[2].unit_id: 7 is already used on this "
                "bus by modbus.buses[0].devices[1]",
                "test.toml:24:1: modbus.buses[0].devices[2].points[0].length: required key is "
                "missing"}));
}

TEST(ModbusBusConfigTest, ParsesALineAndItsFrameGap) {
  auto cfg = MustLoad(std::string(kGateway) +
                      "[modbus]\n[[modbus.buses]]\nname = \"b1\"\nport = \"/dev/ttyS0\"\n"
                      "baud = 19200\nparity = \"N\"\n[[modbus.buses.devices]]\nid = \"d1\"\n"
                      "unit_id = 3\n[[modbus.buses.devices.points]]\nmetric = \"lid_open\"\n"
                      "address = 10\ntype = \"bit\"\nbit = 2\n");
  const auto* m = ModbusOf(cfg);
  ASSERT_NE(m, nullptr);
  ASSERT_EQ(m->buses.size(), 1u);
  const auto& bus = m->buses[0];
  EXPECT_EQ(bus.parity, 'N');
  EXPECT_EQ(bus.devices.at(0).unit_id, 3);
  EXPECT_EQ(bus.devices.at(0).points.at(0).bit, 2);
  // 19200 8N1: 10 bits a character, t3.5 = 3.5 * 10 / 19200 s = 1823 us (protocols.md §5).
  EXPECT_EQ(bus.FrameGap().count(), 1823);
  auto fast = bus;
  fast.baud = 115200;  // above 19200 the spec fixes t3.5 at 1.75 ms
  EXPECT_EQ(fast.FrameGap().count(), 1750);
}

}  // namespace
}  // namespace sanigate

namespace sanigate {
namespace {

// Profiles: one register map for many devices; errors inside a profile point into its file.
class ProfileConfigTest : public ::testing::Test {
 protected:
  unit::ScratchDir dir;
  std::string Profile(const std::string& name, const std::string& text) {
    fs::create_directories(fs::path(dir.path()) / "profiles");
    std::string p = (fs::path(dir.path()) / "profiles" / (name + ".toml")).string();
    unit::WriteFile(p, text);
    return p;
  }
  Result<settings::Config> Load(const std::string& text) {
    std::string p = (fs::path(dir.path()) / "gw.toml").string();
    unit::WriteFile(p, text);
    return app::LoadGatewayConfig(p);
  }
};

TEST_F(ProfileConfigTest, UnitIdsDeclareManyDevicesFromOneProfileAndADeviceCanAddAPoint) {
  Profile("bin", "kind = \"bin\"\ninterval_ms = 5000\n[[points]]\nmetric = \"distance_mm\"\naddress = 0\n"
                 "[[commands]]\nname = \"reset\"\ntable = \"coil\"\naddress = 5\n");
  auto cfg = Load(std::string(kGateway) +
                  "[modbus]\n[[modbus.buses]]\nname = \"b\"\nport = \"/dev/ttyS0\"\n"
                  "[[modbus.buses.devices]]\nid = \"bin-{unit}\"\nunit_ids = \"3-5,9\"\nprofile = \"bin\"\n"
                  "interval_ms = 10000\n[[modbus.buses.devices.points]]\nmetric = \"battery_pct\"\n"
                  "address = 11\n");
  ASSERT_TRUE(cfg.ok()) << cfg.status().message();
  const auto* m = ModbusOf(*cfg);
  ASSERT_NE(m, nullptr);
  const auto& devices = m->buses.at(0).devices;
  ASSERT_EQ(devices.size(), 4u);
  EXPECT_EQ(devices[0].id, "bin-3");
  EXPECT_EQ(devices[0].unit_id, 3);
  EXPECT_EQ(devices[3].id, "bin-9");
  EXPECT_EQ(devices[3].unit_id, 9);
  EXPECT_EQ(devices[2].kind, "bin") << "from the profile";
  EXPECT_EQ(devices[2].interval_ms, 10000) << "overridden by the device";
  ASSERT_EQ(devices[1].points.size(), 2u) << "the profile's point plus the device's own";
  EXPECT_EQ(devices[1].points[0].metric, "distance_mm");
  EXPECT_EQ(devices[1].points[1].metric, "battery_pct");
  EXPECT_EQ(devices[1].commands.at(0).name, "reset");
}

TEST_F(ProfileConfigTest, UnitIdsOnATcpEntryDeclareOneDevicePerUnitBehindOneHost) {
  // A Modbus TCP-to-RTU gateway: one host, several unit ids behind it.
  Profile("bin", "kind = \"bin\"\n[[points]]\nmetric = \"distance_mm\"\naddress = 0\n");
  auto cfg = Load(std::string(kGateway) +
                  "[modbus]\n[[modbus.devices]]\nid = \"bin-{unit}\"\nhost = \"10.1.2.3\"\nport = 5020\n"
                  "unit_ids = \"1-3\"\nprofile = \"bin\"\n");
  ASSERT_TRUE(cfg.ok()) << cfg.status().message();
  const auto& devices = ModbusOf(*cfg)->devices;
  ASSERT_EQ(devices.size(), 3u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(devices[i].id, "bin-" + std::to_string(i + 1));
    EXPECT_EQ(devices[i].unit_id, i + 1);
    EXPECT_EQ(devices[i].host, "10.1.2.3");
    EXPECT_EQ(devices[i].port, 5020);
  }
  // Without a host the entry is refused, not polled at an empty host.
  auto nohost = Load(std::string(kGateway) +
                     "[modbus]\n[[modbus.devices]]\nid = \"bin-{unit}\"\nunit_ids = \"1-3\"\nprofile = \"bin\"\n");
  ASSERT_FALSE(nohost.ok());
  EXPECT_NE(nohost.status().message().find("modbus.devices[0].host: required key is missing"), std::string::npos)
      << nohost.status().message();
}

TEST_F(ProfileConfigTest, ADeviceOverridesItsProfilesWordOrderAndFloatsDefaultToTheirOwnPrecision) {
  Profile("room", "kind = \"garbage_room\"\n[[points]]\nmetric = \"nh3_ppm\"\naddress = 2\ntype = \"f32\"\n"
                  "[[points]]\nmetric = \"fill_level_pct\"\naddress = 0\nscale = 0.1\ndecimals = 1\n");
  auto cfg = Load(std::string(kGateway) +
                  "[modbus]\n[[modbus.devices]]\nid = \"r1\"\nhost = \"127.0.0.1\"\nprofile = \"room\"\n"
                  "[[modbus.devices]]\nid = \"r2\"\nhost = \"127.0.0.1\"\nprofile = \"room\"\n"
                  "word_order = \"low_first\"\nbyte_order = \"little\"\n");
  ASSERT_TRUE(cfg.ok()) << cfg.status().message();
  const auto& devices = ModbusOf(*cfg)->devices;
  EXPECT_EQ(devices.at(0).points.at(0).word_order, dev::modbus::WordOrder::kHighFirst);
  EXPECT_EQ(devices.at(1).points.at(0).word_order, dev::modbus::WordOrder::kLowFirst);
  EXPECT_EQ(devices.at(1).points.at(0).byte_order, dev::modbus::ByteOrder::kLittle);
  EXPECT_FALSE(devices.at(0).points.at(0).decimals.has_value()) << "unset: the type's own precision";
  EXPECT_EQ(devices.at(0).points.at(1).decimals, 1);
  // Without a profile there is nothing to override.
  auto bad = Load(std::string(kGateway) +
                  "[modbus]\n[[modbus.devices]]\nid = \"r1\"\nhost = \"127.0.0.1\"\nword_order = \"low_first\"\n"
                  "[[modbus.devices.points]]\nmetric = \"a_pct\"\naddress = 0\n");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("word_order: overrides the order of a profile's points"), std::string::npos)
      << bad.status().message();
}

TEST(ConfigTest, OverlappingPointsAreAWarningNotAnError) {
  auto cfg = MustLoad(std::string(kGateway) +
                      "[modbus]\n[[modbus.devices]]\nid = \"r1\"\nhost = \"127.0.0.1\"\n"   // 4-7
                      "[[modbus.devices.points]]\nmetric = \"energy\"\naddress = 9\ntype = \"u32\"\n"  // 8-11
                      "[[modbus.devices.points]]\nmetric = \"flags\"\naddress = 10\n"          // 12-14
                      "[[modbus.devices.points]]\nmetric = \"door_open\"\ntable = \"coil\"\naddress = 10\n");
  ASSERT_EQ(cfg.warnings.size(), 1u);
  EXPECT_EQ(cfg.warnings[0], "test.toml:8:1: modbus.devices[0].points: warning: \"flags\" (10..10) overlaps "
                             "\"energy\" (9..10) in the same table");
}

TEST_F(ProfileConfigTest, AProblemInAProfilePointsAtTheProfileFileAndLine) {
  std::string profile = Profile("room", "kind = \"garbage_room\"\n[[points]]\nmetric = \"fill_level_pct\"\n"
                                        "address = 70000\n");
  auto cfg = Load(std::string(kGateway) +
                  "[modbus]\n[[modbus.devices]]\nid = \"r1\"\nhost = \"127.0.0.1\"\nprofile = \"room\"\n"
                  "[[modbus.devices]]\nid = \"r2\"\nhost = \"127.0.0.1\"\nprofile = \"nope\"\n"
                  "[[modbus.devices]]\nid = \"r3\"\nhost = \"127.0.0.1\"\nprofile = \"room\"\n"
                  "[[modbus.devices.points]]\nmetric = \"fill_level_pct\"\naddress = 1\n");
  ASSERT_FALSE(cfg.ok());
  std::string gw = (fs::path(dir.path()) / "gw.toml").string();
  std::string missing = (fs::path(dir.path()) / "profiles" / "nope.toml").string();
  EXPECT_EQ(Lines(cfg.status().message()),
            (std::vector<std::string>{
                gw + ":12:11: modbus.devices[1].profile: no profile \"nope\" (looked for " + missing + " or " +
                    settings::kPackagedProfilesDir + "/nope.toml)",
                gw + ":18:10: modbus.devices[2].points[0].metric: \"fill_level_pct\" is already read "
                     "by profile room points[0]",
                profile + ":4:11: points[0].address: 70000 is outside 0..65535"}));
}

// The operator's profiles (beside the config, /etc/sanigate/profiles) override the packaged ones
// (/usr/share/sanigate/profiles), which are found when the operator has none of that name.
TEST(ProfileDirsTest, TheFirstDirectoryThatHasTheProfileWins) {
  ScratchDir etc, share;
  fs::create_directories(etc.path());
  fs::create_directories(share.path());
  WriteFile((fs::path(share.path()) / "room.toml").string(), "");
  WriteFile((fs::path(share.path()) / "bin.toml").string(), "");
  WriteFile((fs::path(etc.path()) / "bin.toml").string(), "");
  std::vector<std::string> dirs = {etc.path(), share.path()};
  EXPECT_EQ(settings::FindProfile(dirs, "room"), (fs::path(share.path()) / "room.toml").string());
  EXPECT_EQ(settings::FindProfile(dirs, "bin"), (fs::path(etc.path()) / "bin.toml").string());
  EXPECT_EQ(settings::FindProfile(dirs, "truck"), "");
}

}  // namespace
}  // namespace sanigate

namespace sanigate {
namespace {

// [firmware]: defaults, a key file that does not exist, and self-update without a way back.
TEST(FirmwareConfigTest, DefaultsAndProblems) {
  settings::Config cfg = MustLoad(kGateway);
  EXPECT_TRUE(cfg.firmware.trusted_keys.empty());
  EXPECT_EQ(cfg.firmware.chunk_kib, 64);
  EXPECT_EQ(cfg.FirmwareDir(), "/var/lib/sanigate/firmware");
  EXPECT_EQ(Errors(std::string(kGateway) +
                   "[firmware]\n"                                    // 4
                   "trusted_keys = [\"/nonexistent/operator.pub\"]\n"  // 5
                   "self_install_command = \"install-image\"\n"       // 6
                   "window = 0\n"),                                    // 7
            (std::vector<std::string>{
                "test.toml:4:1: firmware.self_rollback_command: is required with self_install_command: a box that does not come "
                "up healthy must go back",
                "test.toml:5:16: firmware.trusted_keys: no such file /nonexistent/operator.pub",
                "test.toml:7:10: firmware.window: 0 is outside 1..64"}));
}

}  // namespace
}  // namespace sanigate
