// Firmware rollouts end to end: a real Mosquitto, the real sanigate with simulated garbage-room
// controllers (our Modbus simulator with its bootloader), and the real sanifleet. An image is
// signed with an operator key made here, uploaded to sanifleet, pulled in chunks by the gateway,
// checked against the signed manifest and flashed through the register window; the campaign
// runs a canary and two waves. Also: tampered and untrusted images are refused, a wave whose
// devices refuse the image pauses the campaign, and sanifleet restarted mid-campaign continues.
#include <filesystem>
#include <thread>

#include "fleet_fixture.h"
#include "firmware/artifact.h"
#include "firmware/base64.h"

namespace sanigate::test {
namespace {

constexpr const char* kFirmwareWindow =
    "[modbus.devices.firmware]\ncontrol = 4096\nstatus = 4097\nerror = 4098\nsize = 4100\noffset = 4102\n"
    "chunk_length = 4104\ndata = 4105\nmax_chunk = 120\nchecksum = 4230\nversion = 4240\nversion_length = 8\n"
    "reboot_time_s = 1\n";

class RolloutTest : public FleetFixture {
 protected:
  std::unique_ptr<firmware::PrivateKey> key;
  std::string image;

  // An image as the simulated controller expects: "SGFW", the version, NUL, then the body.
  static std::string Image(const std::string& version, size_t body) {
    std::string img = "SGFW" + version + std::string(1, '\0');
    uint32_t x = 12345;
    for (size_t i = 0; i < body; ++i) img.push_back(static_cast<char>((x = x * 1103515245u + 12345u) >> 24));
    return img;
  }

  std::string Sign(const std::string& img, const firmware::PrivateKey& k, const std::string& version = "2.1.0") {
    firmware::ArtifactInfo info;
    info.model = "GR-200";
    info.version = version;
    info.target = firmware::Target::kModbus;
    info.created_ms = 1763712000000;
    auto m = firmware::SignImage({reinterpret_cast<const uint8_t*>(img.data()), img.size()}, info, k);
    EXPECT_TRUE(m.ok()) << m.status().message();
    return m.ok() ? *m : "";
  }

  void StartAll(int rooms, std::vector<std::string> sim_flags = {}) {
    auto k = firmware::PrivateKey::Generate();
    ASSERT_TRUE(k.ok());
    key = std::make_unique<firmware::PrivateKey>(std::move(*k));
    ASSERT_TRUE(firmware::WritePublicKey(key->public_key(), path("operator.pub")).ok());
    StartBroker();
    Capture();
    sim_flags.insert(sim_flags.end(), {"--fw-version", "2.0.3", "--fw-reboot-ms", "500"});
    StartSim(rooms, sim_flags);
    std::string devices;
    for (int i = 0; i < rooms; ++i) devices += RoomConfig("room-" + std::to_string(i + 1), static_cast<size_t>(i), 500, kFirmwareWindow);
    WriteConfig(BaseConfig() + "[firmware]\ntrusted_keys = [\"" + path("operator.pub") + "\"]\nchunk_kib = 8\n\n[modbus]\n" + devices);
    StartGateway();
    WaitGatewayOnline();
    WriteFleetConfigText(FleetBaseConfig() + "[firmware]\ntrusted_keys = [\"" + path("operator.pub") + "\"]\n");
    StartFleet();
    // The registry knows the rooms (and that they are Modbus devices) before a campaign is planned.
    for (int i = 0; i < 100; ++i) {
      json d = Admin("devices");
      if (d["result"]["total"] == rooms) return;
      std::this_thread::sleep_for(100ms);
    }
    FAIL() << "sanifleet did not see the rooms\n" << FleetLog();
  }

  json Upload(const std::string& img, const std::string& manifest) {
    std::string sha = json::parse(manifest)["sha256"];
    return Admin("firmware_put", {{"sha256", sha}, {"offset", 0}, {"data", firmware::Base64Encode(img)},
                                  {"manifest", json::parse(manifest)}, {"last", true}});
  }

  static json Rollout(const std::vector<Captured>& m, const std::string& id) {
    json last;
    for (const auto& c : m)
      if (c.topic == "sanigate/v1/houpu/fleet/rollouts/" + id) last = json::parse(c.payload, nullptr, false);
    return last;
  }
  json WaitRollout(const std::string& id, const std::string& state, std::chrono::milliseconds t = 60s) {
    json found;
    capture->WaitFor([&](const std::vector<Captured>& m) {
      json r = Rollout(m, id);
      if (r.is_object() && r["state"] == state) found = r;
      return !found.is_null();
    }, t);
    return found;
  }
  static json Job(const std::vector<Captured>& m, const std::string& device) {
    json last;
    for (const auto& c : m)
      if (c.topic == "sanigate/v1/houpu/gateway/gw-test/firmware/" + device) last = json::parse(c.payload, nullptr, false);
    return last;
  }
  // Every job report the capture saw, in order: what a failed wait needs to be understood.
  static std::string JobReports(const std::vector<Captured>& m) {
    std::string out = "\n---- job reports ----\n";
    for (const auto& c : m)
      if (c.topic.find("/firmware/") != std::string::npos) out += c.topic + " " + c.payload + "\n";
    return out;
  }
};

TEST_F(RolloutTest, CanaryAndTwoWavesFlashEveryRoomAndBadImagesAreRefused) {
  StartAll(4);
  std::string img = Image("2.1.0", 30'000);
  std::string manifest = Sign(img, *key);
  // A tampered image (one byte changed after signing) and an image signed by an unknown key.
  std::string tampered = img;
  tampered[1000] ^= 0x01;
  json refused = Upload(tampered, manifest);
  EXPECT_EQ(refused["ok"], false) << refused.dump();
  EXPECT_NE(refused.value("error", "").find("sha256 mismatch"), std::string::npos) << refused.dump();
  auto stranger = firmware::PrivateKey::Generate();
  ASSERT_TRUE(stranger.ok());
  refused = Upload(img, Sign(img, *stranger));
  EXPECT_NE(refused.value("error", "").find("unknown signing key"), std::string::npos) << refused.dump();

  json stored = Upload(img, manifest);
  ASSERT_EQ(stored["ok"], true) << stored.dump() << FleetLog();
  EXPECT_EQ(stored["result"]["version"], "2.1.0");
  std::string sha = stored["result"]["sha256"];
  json list = Admin("firmware_list");
  ASSERT_EQ(list["result"]["artifacts"].size(), 1u);

  json created = Admin("rollout_create", {{"id", "rooms-2-1-0"}, {"artifact_sha256", sha}, {"canary_count", 1},
                                          {"waves_pct", {50, 100}}, {"health_gate_s", 1}, {"max_parallel_per_gateway", 2},
                                          {"device_timeout_s", 120}, {"retries", 0}, {"blackout", json::array()}});
  ASSERT_EQ(created["ok"], true) << created.dump();
  EXPECT_EQ(created["result"]["total"], 4);
  EXPECT_EQ(created["result"]["groups"], json({1, 1, 2}));
  json started = Admin("rollout_start", {{"id", "rooms-2-1-0"}});
  ASSERT_EQ(started["ok"], true) << started.dump();

  json done = WaitRollout("rooms-2-1-0", "completed", 120s);
  ASSERT_TRUE(done.is_object()) << Rollout(capture->Messages(), "rooms-2-1-0").dump() << FleetLog() << GatewayLog();
  EXPECT_EQ(done["counts"]["succeeded"], 4);
  EXPECT_EQ(done["counts"]["failed"], 0);
  for (int i = 1; i <= 4; ++i) {
    json job = Job(capture->Messages(), "room-" + std::to_string(i));
    EXPECT_EQ(job["state"], "succeeded") << job.dump();
    EXPECT_EQ(job["version"], "2.1.0") << job.dump();
  }
  // The canary finished before the first wave started, and that one before the last wave.
  json status = Admin("rollout_status", {{"id", "rooms-2-1-0"}, {"devices", true}});
  ASSERT_EQ(status["ok"], true);
  EXPECT_EQ(status["result"]["groups"][0]["name"], "canary");
  // Another campaign for the same image has nothing left to do.
  json again = Admin("rollout_create", {{"id", "rooms-again"}, {"artifact_sha256", sha}});
  ASSERT_EQ(again["ok"], true) << again.dump();
  EXPECT_EQ(again["result"]["total"], 0) << again.dump();
  ExpectPayloadsMatchSchemas();  // rollout statuses and job reports included
}

TEST_F(RolloutTest, CanaryThatTheDevicesRefusePausesTheCampaign) {
  StartAll(3, {"--fw-fail", "crc"});
  std::string img = Image("2.1.0", 6'000);
  json stored = Upload(img, Sign(img, *key));
  ASSERT_EQ(stored["ok"], true) << stored.dump();
  json created = Admin("rollout_create", {{"id", "bad-crc"}, {"artifact_sha256", stored["result"]["sha256"]},
                                          {"canary_count", 1}, {"waves_pct", {100}}, {"retries", 0}, {"health_gate_s", 1},
                                          {"blackout", json::array()}});
  ASSERT_EQ(created["ok"], true) << created.dump();
  ASSERT_EQ(Admin("rollout_start", {{"id", "bad-crc"}})["ok"], true);
  json paused = WaitRollout("bad-crc", "paused", 60s);
  ASSERT_TRUE(paused.is_object()) << Rollout(capture->Messages(), "bad-crc").dump() << FleetLog() << GatewayLog();
  EXPECT_EQ(paused["reason"], "canary: 0% succeeded, below the 95% threshold");
  EXPECT_EQ(paused["counts"]["failed"], 1);
  EXPECT_EQ(paused["counts"]["pending"], 2);  // the others were never touched
  json status = Admin("rollout_status", {{"id", "bad-crc"}, {"devices", true}});
  bool reason_seen = false;
  for (const auto& d : status["result"]["devices"])
    if (d["state"] == "failed") reason_seen = d["reason"].get<std::string>().find("checksum") != std::string::npos;
  EXPECT_TRUE(reason_seen) << status.dump();
  ExpectPayloadsMatchSchemas();
}

TEST_F(RolloutTest, SanifleetRestartedMidCampaignContinuesWithoutReflashing) {
  StartAll(3);
  std::string img = Image("2.1.0", 20'000);
  json stored = Upload(img, Sign(img, *key));
  ASSERT_EQ(stored["ok"], true) << stored.dump();
  ASSERT_EQ(Admin("rollout_create", {{"id", "restart"}, {"artifact_sha256", stored["result"]["sha256"]}, {"canary_count", 1},
                                     {"waves_pct", {100}}, {"health_gate_s", 1}, {"retries", 0}, {"blackout", json::array()}})["ok"],
            true);
  ASSERT_EQ(Admin("rollout_start", {{"id", "restart"}})["ok"], true);
  // Once the canary is done, stop sanifleet and start it again.
  ASSERT_TRUE(capture->WaitFor([&](const std::vector<Captured>& m) {
    json r = Rollout(m, "restart");
    return r.is_object() && r["counts"]["succeeded"] >= 1;
  }, 60s)) << FleetLog() << GatewayLog();
  fleet.Stop(10s);
  StartFleet();
  json done = WaitRollout("restart", "completed", 90s);
  ASSERT_TRUE(done.is_object()) << Rollout(capture->Messages(), "restart").dump() << FleetLog() << GatewayLog();
  EXPECT_EQ(done["counts"]["succeeded"], 3);
  // Each room was flashed exactly once (attempt 1).
  for (int i = 1; i <= 3; ++i) EXPECT_EQ(Job(capture->Messages(), "room-" + std::to_string(i))["attempt"], 1);
  std::string log = GatewayLog();
  size_t installs = 0;
  for (size_t at = log.find("modbus: installing firmware"); at != std::string::npos; at = log.find("modbus: installing firmware", at + 1)) ++installs;
  EXPECT_EQ(installs, 3u) << log;
}

// The box updates itself: the install command puts the image in place and sets the version
// file, sanigate restarts into it (same PID: it re-executes), checks its health and reports; a
// new version that fails its health check is rolled back and the campaign stops there.
class SelfUpdateTest : public RolloutTest {
 protected:
  void StartBox() {
    auto k = firmware::PrivateKey::Generate();
    ASSERT_TRUE(k.ok());
    key = std::make_unique<firmware::PrivateKey>(std::move(*k));
    ASSERT_TRUE(firmware::WritePublicKey(key->public_key(), path("operator.pub")).ok());
    std::filesystem::create_directories(path("box"));
    std::ofstream(path("box/VERSION")) << "2.0.3\n";
    std::string box = path("box");
    std::ofstream(path("install.sh")) << "cp \"$SANIGATE_IMAGE\" " << box << "/installed.img && cp " << box << "/VERSION " << box
                                      << "/VERSION.prev && printf '%s\\n' \"$SANIGATE_VERSION\" > " << box << "/VERSION\n";
    std::ofstream(path("check.sh")) << "! grep -q BROKEN " << box << "/installed.img\n";
    std::ofstream(path("rollback.sh")) << "cp " << box << "/VERSION.prev " << box << "/VERSION && rm -f " << box << "/installed.img\n";
    StartBroker();
    Capture();
    WriteConfig(BaseConfig() + "[firmware]\ntrusted_keys = [\"" + path("operator.pub") + "\"]\nversion_file = \"" + path("box/VERSION") +
                "\"\nself_install_command = \"sh " + path("install.sh") + "\"\nself_rollback_command = \"sh " + path("rollback.sh") +
                "\"\nself_check_command = \"sh " + path("check.sh") + "\"\nself_health_s = 10\n");
    StartGateway();
    WaitGatewayOnline();
    WriteFleetConfigText(FleetBaseConfig() + "[firmware]\ntrusted_keys = [\"" + path("operator.pub") + "\"]\n");
    StartFleet();
    for (int i = 0; i < 100 && Admin("status")["result"]["gateways"].empty(); ++i) std::this_thread::sleep_for(100ms);
  }

  std::string StoreBoxImage(const std::string& body) {
    std::string img = "box image 2.1.0\n" + body;
    firmware::ArtifactInfo info;
    info.model = "edge-box";
    info.version = "2.1.0";
    info.target = firmware::Target::kGateway;
    auto m = firmware::SignImage({reinterpret_cast<const uint8_t*>(img.data()), img.size()}, info, *key);
    EXPECT_TRUE(m.ok());
    json stored = Upload(img, *m);
    EXPECT_EQ(stored["ok"], true) << stored.dump();
    return stored["result"].value("sha256", "");
  }

  void RunCampaign(const std::string& id, const std::string& sha) {
    json created = Admin("rollout_create", {{"id", id}, {"artifact_sha256", sha}, {"canary_count", 1}, {"waves_pct", {100}},
                                            {"health_gate_s", 1}, {"retries", 0}, {"device_timeout_s", 120}, {"blackout", json::array()}});
    ASSERT_EQ(created["ok"], true) << created.dump();
    ASSERT_EQ(created["result"]["total"], 1) << created.dump();
    ASSERT_EQ(Admin("rollout_start", {{"id", id}})["ok"], true);
  }
};

TEST_F(SelfUpdateTest, GoodVersionIsInstalledAndReportedAfterTheRestart) {
  StartBox();
  RunCampaign("box-good", StoreBoxImage("all fine\n"));
  json done = WaitRollout("box-good", "completed", 60s);
  ASSERT_TRUE(done.is_object()) << Rollout(capture->Messages(), "box-good").dump() << GatewayLog() << FleetLog();
  EXPECT_EQ(done["counts"]["succeeded"], 1);
  json job = Job(capture->Messages(), "gw-test");
  EXPECT_EQ(job["state"], "succeeded") << job.dump();
  EXPECT_EQ(job["version"], "2.1.0");
  EXPECT_EQ(ReadFile(path("box/VERSION")), "2.1.0\n");
  EXPECT_TRUE(gateway.Running()) << "the same process re-executed itself";
  std::string log = GatewayLog();
  EXPECT_NE(log.find("restarting into the installed image"), std::string::npos) << log;
  EXPECT_NE(log.find("this gateway now runs 2.1.0 and is healthy"), std::string::npos) << log;
  EXPECT_FALSE(std::filesystem::exists(path("data/firmware/self-update.json")));
  // Issue 16: the gateway status (and so sanifleet's registry, which a second campaign selects
  // by) says the box now runs 2.1.0.
  ASSERT_TRUE(capture->WaitFor([](const std::vector<Captured>& m) {
    for (const auto& c : m)
      if (c.topic.find("/gateway/gw-test/status") != std::string::npos &&
          c.payload.find("\"version\":\"2.1.0\"") != std::string::npos)
        return true;
    return false;
  }, 15s)) << "the status still shows the old version";
  json gw;
  for (int i = 0; i < 50; ++i) {
    gw = Admin("status")["result"]["gateways"];
    if (gw.dump().find("\"2.1.0\"") != std::string::npos) break;
    std::this_thread::sleep_for(200ms);
  }
  EXPECT_NE(gw.dump().find("\"2.1.0\""), std::string::npos) << gw.dump();
}

TEST_F(SelfUpdateTest, VersionThatFailsItsHealthCheckIsRolledBack) {
  StartBox();
  RunCampaign("box-bad", StoreBoxImage("BROKEN build\n"));
  json paused = WaitRollout("box-bad", "paused", 60s);
  ASSERT_TRUE(paused.is_object()) << Rollout(capture->Messages(), "box-bad").dump() << JobReports(capture->Messages())
                                  << GatewayLog() << FleetLog();
  json job = Job(capture->Messages(), "gw-test");
  EXPECT_EQ(job["state"], "failed") << job.dump();
  EXPECT_EQ(job["error"], "rolled back to 2.0.3: self_check_command failed (exit 1)") << job.dump();
  EXPECT_EQ(ReadFile(path("box/VERSION")), "2.0.3\n");
  EXPECT_FALSE(std::filesystem::exists(path("box/installed.img")));
  EXPECT_TRUE(gateway.Running());
  // It runs on, on the old version: after the rollback report its status says online again.
  ASSERT_TRUE(capture->WaitFor([](const std::vector<Captured>& m) {
    size_t failed_at = m.size();
    for (size_t i = 0; i < m.size(); ++i)
      if (m[i].topic.ends_with("/gateway/gw-test/firmware/gw-test") && m[i].payload.find("\"failed\"") != std::string::npos) failed_at = i;
    for (size_t i = failed_at; i < m.size(); ++i)
      if (m[i].topic.ends_with("/gateway/gw-test/status") && m[i].payload.find("\"online\":true") != std::string::npos) return true;
    return false;
  }, 15s)) << GatewayLog();
}

}  // namespace
}  // namespace sanigate::test
