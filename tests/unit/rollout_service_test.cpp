// sanifleet's rollout service in memory: what it saves and publishes after job reports that
// arrive between its ticks.
#include "app/rollout_service.h"

#include <gtest/gtest.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "firmware/artifact.h"
#include "firmware/digest.h"
#include "firmware/keys.h"

namespace sanigate::fleet {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

constexpr const char kKeyPem[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MC4CAQAwBQYDK2VwBCIEIGroz96H79jp0B8tPdI8nI0oJvrv1I5HB3BdgwkYZR7J\n"
    "-----END PRIVATE KEY-----\n";
constexpr int64_t kT0 = 1'767'225'600'000;

class RolloutServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "rollout-service-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    auto key = firmware::PrivateKey::FromPem(kKeyPem);
    ASSERT_TRUE(key.ok());
    std::string pub = (dir_ / "trusted.pub").string();
    ASSERT_TRUE(firmware::WritePublicKey(key.value().public_key(), pub).ok());
    std::string image(2000, 'x');
    auto span = std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(image.data()), image.size());
    auto manifest = firmware::SignImage(span, {"GR-200", "2.1.0", firmware::Target::kModbus, "test", kT0}, key.value());
    ASSERT_TRUE(manifest.ok());
    sha_ = firmware::DigestBytes(span).value().sha256;
    fs::create_directories(dir_ / "firmware");
    std::ofstream(dir_ / "firmware" / (sha_ + ".img"), std::ios::binary) << image;
    std::ofstream(dir_ / "firmware" / (sha_ + ".json")) << manifest.value();
    DeviceEntry& e = registry_.Device("houpu", "room-1", kT0);
    e.kind = "room";
    e.protocol = "modbus-rtu";
    e.gateway = "gw-a";
    e.model = "GR-200";
    e.firmware = "1.0.0";
    e.online = true;
    registry_.Gateway("houpu", "gw-a", kT0).online = true;
    auto s = RolloutService::Create(
        {dir_.string(), "sanigate/v1", "houpu", {pub}, 1024},
        [this](const std::string& topic, const std::string& payload, bool) { published_.emplace_back(topic, payload); },
        [this](const std::string& topic, const std::string&, const std::string&) { requests_.push_back(topic); });
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    service_ = std::move(s).value();
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  // The last rollouts/{id} view published.
  json LastView(const std::string& id) const {
    json last;
    for (const auto& [topic, payload] : published_)
      if (topic == "sanigate/v1/houpu/fleet/rollouts/" + id) last = json::parse(payload);
    return last;
  }

  fs::path dir_;
  std::string sha_;
  Registry registry_;
  std::vector<std::pair<std::string, std::string>> published_;
  std::vector<std::string> requests_;
  std::unique_ptr<RolloutService> service_;
};

// A device's failure report and the tick that pauses the campaign for it can fall in the same
// millisecond: the pause must still be saved and published (seen in CI: the campaign was shown
// running, one device updating, for good).
TEST_F(RolloutServiceTest, FailureReportedInTheTicksMillisecondIsPublishedAndSaved) {
  AdminAnswer created = service_->Admin("rollout_create",
                                        {{"id", "r1"}, {"artifact_sha256", sha_}, {"canary_count", 1}, {"waves_pct", {100}},
                                         {"retries", 0}, {"health_gate_s", 1}},
                                        registry_, kT0);
  ASSERT_TRUE(created.code.empty()) << created.error;
  ASSERT_TRUE(service_->Admin("rollout_start", {{"id", "r1"}}, registry_, kT0).code.empty());
  service_->Tick(kT0 + 1000);
  ASSERT_EQ(requests_.size(), 1u) << "the install job was sent";
  ASSERT_EQ(LastView("r1")["counts"]["updating"], 1);

  const int64_t t = kT0 + 5000;
  json report = {{"campaign", "r1"}, {"device", "room-1"}, {"attempt", 1}, {"state", "failed"}, {"error", "bad flash"}};
  service_->OnJobStatus("houpu", "room-1", report.dump(), t);
  service_->Tick(t);
  json view = LastView("r1");
  EXPECT_EQ(view["state"], "paused") << view.dump();
  EXPECT_EQ(view["counts"]["failed"], 1) << view.dump();

  std::ifstream saved(dir_ / "rollouts" / "r1.json");
  json doc = json::parse(saved, nullptr, false);
  EXPECT_NE(doc.dump().find("paused"), std::string::npos) << "the pause is saved too: " << doc.dump();

  // Nothing changed: the next tick publishes nothing new.
  size_t before = published_.size();
  service_->Tick(t + 1000);
  EXPECT_EQ(published_.size(), before);
}

}  // namespace
}  // namespace sanigate::fleet
