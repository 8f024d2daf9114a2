// Firmware rollouts over JT/T 808 terminals and Modbus garbage rooms at once, end to end: a real
// Mosquitto, the real sanigate (a [modbus] section for the rooms of our Modbus simulator and a
// [jt808] listener for our test terminals) and the real sanifleet. Images are signed here with
// an operator key, uploaded to sanifleet (firmware_put) and rolled out with a canary and waves.
// Each truck runs on its own thread: it reports its position once a second, serves the upgrade
// (0x8108 packets acknowledged, 0x0108, reboot = reconnect + authenticate, 0x0107 with the new
// version) when its job starts, and reports again afterwards. Also: a truck that comes back
// with the old version fails its job and pauses the campaign, and sanigate restarted in the
// middle of a transfer resumes the download and retries the device.
#include <algorithm>
#include <atomic>
#include <filesystem>
#include <thread>

#include "fleet_fixture.h"
#include "firmware/artifact.h"
#include "firmware/base64.h"
#include "jt808_terminal.h"

namespace sanigate::test {
namespace {

using Steady = std::chrono::steady_clock;

constexpr const char* kFirmwareWindow =
    "[modbus.devices.firmware]\ncontrol = 4096\nstatus = 4097\nerror = 4098\nsize = 4100\noffset = 4102\n"
    "chunk_length = 4104\ndata = 4105\nmax_chunk = 120\nchecksum = 4230\nversion = 4240\nversion_length = 8\n"
    "reboot_time_s = 1\n";

constexpr const char* kRoomVersion = "2.1.0";   // rooms run 2.0.3 (simulator flag)
constexpr const char* kTruckVersion = "1.3.0";  // terminals run SIM-1.2.0 (the test terminal's default)
constexpr const char* kTruckModel = "SIM-808";  // what the test terminal registers as

int64_t WallMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}
double Seconds(Steady::duration d) { return std::chrono::duration<double>(d).count(); }

// One simulated truck: its terminal (used only by its own thread once that runs), how it
// behaves when it gets firmware, and what happened.
struct Truck {
  std::string phone, device;
  std::unique_ptr<Jt808Terminal> term;
  UpgradeBehavior behavior;
  std::atomic<bool> serve_stop{false};  // ends ServeUpgrade (set by the monitor when the job ended)
  std::atomic<int> phase{0};            // 0 reporting, 1 serving the upgrade, 2 reporting again, 3 ended
  std::atomic<int> reports{0}, unacked{0};
  UpgradeLog log;                        // written by the truck's thread, read after it ended
};

class RolloutJt808Test : public FleetFixture {
 protected:
  std::unique_ptr<firmware::PrivateKey> key;
  uint16_t jt808_port = 0;
  std::vector<std::unique_ptr<Truck>> trucks;
  std::vector<std::thread> threads;
  std::atomic<bool> stop_all{false};
  std::string truck_campaign;  // the campaign whose job reports the truck threads watch

  void TearDown() override {
    StopThreads();
    if (::testing::Test::HasFailure() && capture) {
      // What the devices' status/event topics and the job reports said, in arrival order.
      auto m = capture->Messages();
      for (const auto& c : m)
        if ((c.topic.find("/devices/") != std::string::npos && c.topic.find("/telemetry") == std::string::npos) ||
            c.topic.find("/firmware/") != std::string::npos)
          std::cerr << "+" << Seconds(c.at - m.front().at) << " s " << c.topic << " " << c.payload.substr(0, 300) << "\n";
    }
    if (::testing::Test::HasFailure())
      for (auto& t : trucks)
        std::cerr << t->device << ": phase " << t->phase << ", " << t->reports << " reports (" << t->unacked
                  << " unacknowledged), upgrade frames " << t->log.frames << ", reboots " << t->log.reboots
                  << ", 0x8107 answered " << t->log.attribute_queries << ", error \"" << t->log.error << "\"\n";
    FleetFixture::TearDown();
  }

  void StopThreads() {
    stop_all = true;
    for (auto& t : trucks) t->serve_stop = true;
    for (auto& th : threads)
      if (th.joinable()) th.join();
    threads.clear();
  }

  // An image as the simulated controller expects: "SGFW", the version, NUL, then the body.
  static std::string Image(const std::string& version, size_t body, uint32_t seed = 12345) {
    std::string img = "SGFW" + version + std::string(1, '\0');
    uint32_t x = seed;
    for (size_t i = 0; i < body; ++i) img.push_back(static_cast<char>((x = x * 1103515245u + 12345u) >> 24));
    return img;
  }

  std::string Sign(const std::string& img, firmware::Target target, const std::string& model, const std::string& version) {
    firmware::ArtifactInfo info;
    info.model = model;
    info.version = version;
    info.target = target;
    info.created_ms = 1763712000000;
    auto m = firmware::SignImage({reinterpret_cast<const uint8_t*>(img.data()), img.size()}, info, *key);
    EXPECT_TRUE(m.ok()) << m.status().message();
    return m.ok() ? *m : "";
  }

  // Uploads in pieces of 64 KiB (one mosquitto_rr argument stays below the kernel's 128 KiB) and
  // returns the stored image's sha256 ("" after a failed assertion).
  std::string Upload(const std::string& img, const std::string& manifest) {
    std::string sha = json::parse(manifest)["sha256"];
    constexpr size_t kPiece = 64 * 1024;
    json r;
    for (size_t offset = 0; offset < img.size(); offset += kPiece) {
      json args = {{"sha256", sha}, {"offset", offset}, {"data", firmware::Base64Encode(img.substr(offset, kPiece))},
                   {"last", offset + kPiece >= img.size()}};
      if (offset == 0) args["manifest"] = json::parse(manifest);
      r = Admin("firmware_put", args);
      if (r["ok"] != true) break;
    }
    EXPECT_EQ(r["ok"], true) << r.dump() << FleetLog();
    return r["ok"] == true ? r["result"]["sha256"].get<std::string>() : "";
  }

  // Broker, capture, the Modbus simulator with `rooms` rooms, sanigate with those rooms and
  // `truck_count` terminals, every terminal logged in, and sanifleet knowing all devices.
  void StartAll(int rooms, int truck_count, const std::string& firmware_extra = "", std::vector<std::string> sim_flags = {}) {
    auto k = firmware::PrivateKey::Generate();
    ASSERT_TRUE(k.ok());
    key = std::make_unique<firmware::PrivateKey>(std::move(*k));
    ASSERT_TRUE(firmware::WritePublicKey(key->public_key(), path("operator.pub")).ok());
    StartBroker();
    Capture();
    std::string cfg = BaseConfig() + "[firmware]\ntrusted_keys = [\"" + path("operator.pub") + "\"]\nchunk_kib = 8\n" + firmware_extra + "\n";
    if (rooms > 0) {
      sim_flags.insert(sim_flags.end(), {"--fw-version", "2.0.3", "--fw-reboot-ms", "500"});
      StartSim(rooms, sim_flags);
      cfg += "[modbus]\n";
      for (int i = 0; i < rooms; ++i) cfg += RoomConfig("room-" + std::to_string(i + 1), static_cast<size_t>(i), 500, kFirmwareWindow);
    }
    if (truck_count > 0) {
      jt808_port = FreeTcpPort();
      cfg += "\n[jt808]\nlisten = \"127.0.0.1:" + std::to_string(jt808_port) + "\"\n";
      for (int i = 0; i < truck_count; ++i) {
        auto t = std::make_unique<Truck>();
        t->phone = "1391234567" + std::to_string(i);
        t->device = "truck-0" + std::to_string(i + 1);
        t->behavior.new_version = kTruckVersion;
        cfg += "\n[[jt808.terminals]]\nphone = \"" + t->phone + "\"\ndevice = \"" + t->device + "\"\n";
        trucks.push_back(std::move(t));
      }
    }
    WriteConfig(cfg);
    StartGateway();
    WaitGatewayOnline();
    if (truck_count > 0) {
      ASSERT_TRUE(WaitForTcpPort(jt808_port, 10s)) << GatewayLog();
      for (auto& t : trucks) {
        t->term = std::make_unique<Jt808Terminal>(t->phone);
        ASSERT_TRUE(t->term->Connect(jt808_port).ok());
        auto code = t->term->Register();
        ASSERT_TRUE(code.ok()) << code.status().ToString();
        ASSERT_TRUE(t->term->Authenticate(*code).ok());
        ASSERT_EQ(t->term->Report(SampleLocation(WallMs(), 0)).value_or(99), 0);
      }
    }
    WriteFleetConfigText(FleetBaseConfig() + "[firmware]\ntrusted_keys = [\"" + path("operator.pub") + "\"]\n");
    StartFleet();
    // The registry knows every device, and the trucks' protocol and firmware, before planning.
    for (int i = 0; i < 100; ++i) {
      json d = Admin("devices");
      if (d["result"]["total"] == rooms + truck_count) return;
      std::this_thread::sleep_for(100ms);
    }
    FAIL() << "sanifleet did not see every device: " << Admin("devices").dump() << FleetLog();
  }

  // ---- what the capture shows ----

  static std::string JobTopic(const std::string& device) { return "sanigate/v1/houpu/gateway/gw-test/firmware/" + device; }

  // Job reports of `device` for `campaign`, with their arrival times.
  static std::vector<std::pair<json, Steady::time_point>> Jobs(const std::vector<Captured>& m, const std::string& device,
                                                               const std::string& campaign) {
    std::vector<std::pair<json, Steady::time_point>> out;
    std::string topic = JobTopic(device);
    for (const auto& c : m) {
      if (c.topic != topic || c.payload.empty()) continue;
      json j = json::parse(c.payload, nullptr, false);
      if (j.is_object() && j.value("campaign", "") == campaign) out.emplace_back(std::move(j), c.at);
    }
    return out;
  }
  static json LastJob(const std::vector<Captured>& m, const std::string& device, const std::string& campaign) {
    auto all = Jobs(m, device, campaign);
    return all.empty() ? json() : all.back().first;
  }
  static json Rollout(const std::vector<Captured>& m, const std::string& id) {
    json last;
    for (const auto& c : m)
      if (c.topic == "sanigate/v1/houpu/fleet/rollouts/" + id) last = json::parse(c.payload, nullptr, false);
    return last;
  }
  // The campaign's status once it completed, paused or was aborted (null on timeout).
  json WaitRolloutSettled(const std::string& id, std::chrono::milliseconds t) {
    json found;
    capture->WaitFor([&](const std::vector<Captured>& m) {
      json r = Rollout(m, id);
      if (r.is_object() && (r["state"] == "completed" || r["state"] == "paused" || r["state"] == "aborted")) found = r;
      return !found.is_null();
    }, t);
    return found;
  }
  // Arrival times of the telemetry of `device`.
  std::vector<Steady::time_point> TelemetryTimes(const std::vector<Captured>& m, const std::string& device) const {
    std::vector<Steady::time_point> out;
    std::string topic = "sanigate/v1/houpu/devices/" + device + "/telemetry";
    for (const auto& c : m)
      if (c.topic == topic) out.push_back(c.at);
    return out;
  }

  // When `device`'s job of `campaign` started (first report) and ended (succeeded/failed).
  struct Window {
    Steady::time_point from, to;
    bool ended = false;
  };
  static Window JobWindow(const std::vector<Captured>& m, const std::string& device, const std::string& campaign) {
    Window w;
    auto jobs = Jobs(m, device, campaign);
    if (jobs.empty()) return w;
    w.from = jobs.front().second;
    for (const auto& [j, at] : jobs)
      if (j["state"] == "succeeded" || j["state"] == "failed") {
        w.to = at;
        w.ended = true;
        break;
      }
    return w;
  }

  // Campaign `id`'s devices by group (from rollout_status), device names without the site.
  std::vector<std::vector<std::string>> Groups(const std::string& id) {
    json status = Admin("rollout_status", {{"id", id}, {"devices", true}});
    std::vector<std::vector<std::string>> groups;
    for (const auto& d : status["result"]["devices"]) {
      size_t g = d["group"].get<size_t>();
      if (groups.size() <= g) groups.resize(g + 1);
      std::string key = d["device"];
      groups[g].push_back(key.substr(key.find('/') + 1));
    }
    return groups;
  }

  // ---- the trucks' threads ----

  // Reports once a second until the gateway starts a job of `truck_campaign` for this truck,
  // then serves the upgrade until the monitor says the job ended, then reports again.
  void RunTruck(Truck& t) {
    const auto deadline = Steady::now() + 120s;
    int i = 1;
    auto report = [&] {
      auto r = t.term->Report(SampleLocation(WallMs(), i++), 3s);
      t.reports++;
      if (r.value_or(99) != 0) t.unacked++;
    };
    auto next = Steady::now();
    while (!stop_all && Steady::now() < deadline) {
      if (!Jobs(capture->Messages(), t.device, truck_campaign).empty()) break;
      if (Steady::now() >= next) {
        report();
        next += 1s;
      }
      std::this_thread::sleep_for(50ms);
    }
    if (stop_all) return void(t.phase = 3);
    t.phase = 1;
    t.log = t.term->ServeUpgrade(t.behavior, t.serve_stop, 60s);
    t.phase = 2;
    next = Steady::now();
    while (!stop_all && Steady::now() < deadline && t.term->connected()) {
      if (Steady::now() >= next) {
        report();
        next += 1s;
      }
      std::this_thread::sleep_for(50ms);
    }
    t.phase = 3;
  }

  // Starts every truck's thread, and a monitor that ends a truck's ServeUpgrade once its job
  // report says succeeded or failed.
  void StartTrucks(const std::string& campaign) {
    truck_campaign = campaign;
    for (auto& t : trucks) threads.emplace_back([this, tp = t.get()] { RunTruck(*tp); });
    threads.emplace_back([this] {
      while (!stop_all) {
        auto m = capture->Messages();
        for (auto& t : trucks) {
          if (t->phase != 1 || t->serve_stop) continue;
          json j = LastJob(m, t->device, truck_campaign);
          if (j.is_object() && (j["state"] == "succeeded" || j["state"] == "failed")) t->serve_stop = true;
        }
        std::this_thread::sleep_for(100ms);
      }
    });
  }

  Truck& TruckNamed(const std::string& device) {
    for (auto& t : trucks)
      if (t->device == device) return *t;
    ADD_FAILURE() << "no truck " << device;
    return *trucks.front();
  }

  // The groups ran one after the other: every device of group g had finished (its job report
  // said succeeded) before any device of group g+1 got its first job report.
  void ExpectGroupsInOrder(const std::string& campaign, const std::vector<std::vector<std::string>>& groups) {
    auto m = capture->Messages();
    for (size_t g = 0; g + 1 < groups.size(); ++g)
      for (const auto& done : groups[g])
        for (const auto& next : groups[g + 1]) {
          Window a = JobWindow(m, done, campaign), b = JobWindow(m, next, campaign);
          ASSERT_TRUE(a.ended) << done;
          EXPECT_LT(a.to, b.from) << campaign << ": " << next << " (group " << g + 1 << ") started "
                                  << Seconds(a.to - b.from) << " s before " << done << " (group " << g << ") finished";
        }
  }
};

TEST_F(RolloutJt808Test, MixedCampaignOverRoomsAndTrucks) {
  // 8 KiB/s: the canaries' downloads (20 KB + 80 KB, after a 32 KiB burst) take several seconds.
  StartAll(3, 3, "max_kib_s = 8\n");
  std::string room_img = Image(kRoomVersion, 20'000);
  std::string room_sha = Upload(room_img, Sign(room_img, firmware::Target::kModbus, "GR-200", kRoomVersion));
  std::string truck_img = Image(kTruckVersion, 80'000, 777);
  std::string truck_sha = Upload(truck_img, Sign(truck_img, firmware::Target::kJt808, kTruckModel, kTruckVersion));
  ASSERT_FALSE(room_sha.empty());
  ASSERT_FALSE(truck_sha.empty());
  json spec = {{"canary_count", 1}, {"waves_pct", {50, 100}}, {"health_gate_s", 1}, {"device_timeout_s", 60},
               {"retries", 0}, {"blackout", json::array()}};
  json rooms_spec = spec, trucks_spec = spec;
  rooms_spec["id"] = "rooms";
  rooms_spec["artifact_sha256"] = room_sha;
  trucks_spec["id"] = "trucks";
  trucks_spec["artifact_sha256"] = truck_sha;
  json created = Admin("rollout_create", rooms_spec);
  ASSERT_EQ(created["ok"], true) << created.dump();
  EXPECT_EQ(created["result"]["total"], 3);
  EXPECT_EQ(created["result"]["groups"], json({1, 1, 1}));
  created = Admin("rollout_create", trucks_spec);
  ASSERT_EQ(created["ok"], true) << created.dump();
  EXPECT_EQ(created["result"]["total"], 3) << "only the terminals are jt808 targets";
  EXPECT_EQ(created["result"]["groups"], json({1, 1, 1}));
  auto room_groups = Groups("rooms"), truck_groups = Groups("trucks");
  ASSERT_EQ(truck_groups.size(), 3u);
  for (const auto& g : truck_groups)
    for (const auto& d : g) EXPECT_EQ(d.rfind("truck-", 0), 0u) << d;

  StartTrucks("trucks");
  auto t0 = Steady::now();
  ASSERT_EQ(Admin("rollout_start", {{"id", "rooms"}})["ok"], true);
  ASSERT_EQ(Admin("rollout_start", {{"id", "trucks"}})["ok"], true);

  json trucks_done = WaitRolloutSettled("trucks", 45s);
  json rooms_done = WaitRolloutSettled("rooms", 30s);
  std::cerr << "campaigns settled after " << Seconds(Steady::now() - t0) << " s\n";
  ASSERT_EQ(trucks_done["state"], "completed") << Rollout(capture->Messages(), "trucks").dump()
                                               << Admin("rollout_status", {{"id", "trucks"}, {"devices", true}}).dump();
  ASSERT_EQ(rooms_done["state"], "completed") << Rollout(capture->Messages(), "rooms").dump()
                                              << Admin("rollout_status", {{"id", "rooms"}, {"devices", true}}).dump();
  EXPECT_EQ(trucks_done["counts"]["succeeded"], 3) << trucks_done.dump();
  EXPECT_EQ(trucks_done["counts"]["failed"], 0);
  EXPECT_EQ(rooms_done["counts"]["succeeded"], 3) << rooms_done.dump();
  EXPECT_EQ(rooms_done["counts"]["failed"], 0);

  // Let the trucks report a little more after their upgrades, then stop them.
  std::this_thread::sleep_for(1500ms);
  StopThreads();
  auto m = capture->Messages();

  for (int i = 1; i <= 3; ++i) {
    json job = LastJob(m, "room-" + std::to_string(i), "rooms");
    EXPECT_EQ(job["state"], "succeeded") << job.dump();
    EXPECT_EQ(job["version"], kRoomVersion) << job.dump();
    EXPECT_EQ(job["attempt"], 1) << job.dump();
  }
  for (auto& t : trucks) {
    json job = LastJob(m, t->device, "trucks");
    EXPECT_EQ(job["state"], "succeeded") << job.dump();
    EXPECT_EQ(job["version"], kTruckVersion) << job.dump();
    EXPECT_EQ(job["attempt"], 1) << job.dump();
    // The terminal got the whole image in 0x8108 packets, each once, rebooted and answered 0x8107.
    ASSERT_TRUE(t->log.package.has_value()) << t->device << ": " << t->log.error;
    EXPECT_EQ(t->log.package->version, kTruckVersion);
    EXPECT_EQ(std::string(t->log.package->package.begin(), t->log.package->package.end()), truck_img) << t->device;
    // 2013 head: type, maker BYTE[5], version length and version, package length; 1000 bytes a packet.
    size_t body = 1 + 5 + 1 + std::string(kTruckVersion).size() + 4 + truck_img.size();
    EXPECT_EQ(t->log.packet_total, (body + 999) / 1000) << t->device;
    for (const auto& [index, times] : t->log.received_per_index) EXPECT_EQ(times, 1) << t->device << " packet " << index;
    EXPECT_EQ(t->log.reboots, 1) << t->device;
    EXPECT_GE(t->log.attribute_queries, 1) << t->device;
    EXPECT_TRUE(t->log.error.empty()) << t->device << ": " << t->log.error;
    EXPECT_EQ(t->term->firmware_version(), kTruckVersion);
    EXPECT_EQ(t->unacked, 0) << t->device << ": position reports the gateway did not acknowledge";
    EXPECT_GE(t->phase.load(), 2) << t->device;
  }

  // Canary, then wave 1, then wave 2, in both campaigns.
  ExpectGroupsInOrder("trucks", truck_groups);
  ExpectGroupsInOrder("rooms", room_groups);

  // Telemetry kept flowing during every truck's transfer (download from sanifleet, 0x8108
  // packets, reboot): the trucks not being upgraded reported once a second and each report
  // reached MQTT, with no gap above 2.5 s while the job ran.
  for (auto& t : trucks) {
    Window w = JobWindow(m, t->device, "trucks");
    ASSERT_TRUE(w.ended) << t->device;
    std::vector<Steady::time_point> others;
    for (auto& o : trucks)
      if (o.get() != t.get())
        for (auto at : TelemetryTimes(m, o->device))
          if (at >= w.from && at <= w.to) others.push_back(at);
    std::sort(others.begin(), others.end());
    double longest = 0;
    Steady::time_point prev = w.from;
    for (auto at : others) longest = std::max(longest, Seconds(at - prev)), prev = at;
    longest = std::max(longest, Seconds(w.to - prev));
    std::cerr << t->device << ": job ran " << Seconds(w.to - w.from) << " s, " << others.size()
              << " position reports of the other trucks meanwhile, longest gap " << longest << " s\n";
    EXPECT_LE(longest, 2.5) << t->device << "'s transfer held back the other trucks' telemetry";
  }
  // Every position report a truck sent (and that the gateway acknowledged) reached MQTT.
  for (auto& t : trucks) {
    size_t published = Unique(m, "/devices/" + t->device + "/telemetry").size();
    EXPECT_EQ(published, static_cast<size_t>(t->reports + 1)) << t->device;  // +1: the one at login
  }
  // The trucks' transfer and the rooms' ran at the same time over the same gateway.
  Window truck_canary = JobWindow(m, truck_groups[0][0], "trucks"), room_canary = JobWindow(m, room_groups[0][0], "rooms");
  EXPECT_LT(room_canary.from, truck_canary.to);
  EXPECT_LT(truck_canary.from, room_canary.to);
  // The registry knows the new versions.
  json devices = Admin("devices");
  for (const auto& d : devices["result"]["devices"]) {
    std::string id = d.value("device", "");
    EXPECT_EQ(d["firmware"], id.rfind("truck-", 0) == 0 ? kTruckVersion : kRoomVersion) << d.dump();
  }
}

TEST_F(RolloutJt808Test, TruckThatComesBackWithTheOldVersionFails) {
  StartAll(0, 3);
  std::string img = Image(kTruckVersion, 6'000, 99);
  std::string sha = Upload(img, Sign(img, firmware::Target::kJt808, kTruckModel, kTruckVersion));
  ASSERT_FALSE(sha.empty());
  json created = Admin("rollout_create", {{"id", "old-version"}, {"artifact_sha256", sha}, {"canary_count", 1},
                                          {"waves_pct", {100}}, {"retries", 0}, {"health_gate_s", 1},
                                          {"device_timeout_s", 60}, {"blackout", json::array()}});
  ASSERT_EQ(created["ok"], true) << created.dump();
  auto groups = Groups("old-version");
  ASSERT_EQ(groups.size(), 2u);
  ASSERT_EQ(groups[0].size(), 1u);
  // The canary installs, reports success, reboots, and comes back still running SIM-1.2.0.
  Truck& canary = TruckNamed(groups[0][0]);
  canary.behavior.new_version = "";
  StartTrucks("old-version");
  ASSERT_EQ(Admin("rollout_start", {{"id", "old-version"}})["ok"], true);

  json paused = WaitRolloutSettled("old-version", 45s);
  ASSERT_EQ(paused["state"], "paused") << Rollout(capture->Messages(), "old-version").dump();
  EXPECT_EQ(paused["reason"], "canary: 0% succeeded, below the 95% threshold") << paused.dump();
  EXPECT_EQ(paused["counts"]["failed"], 1);
  EXPECT_EQ(paused["counts"]["pending"], 2);  // the others were never touched
  json job = LastJob(capture->Messages(), canary.device, "old-version");
  EXPECT_EQ(job["state"], "failed") << job.dump();
  EXPECT_EQ(job["error"], std::string("rebooted into SIM-1.2.0, not ") + kTruckVersion) << job.dump();
  json status = Admin("rollout_status", {{"id", "old-version"}, {"devices", true}});
  bool reason_seen = false;
  for (const auto& d : status["result"]["devices"]) {
    if (d["state"] == "failed") {
      EXPECT_EQ(d["device"], "houpu/" + canary.device);
      reason_seen = d["reason"].get<std::string>().find("SIM-1.2.0") != std::string::npos;
    }
  }
  EXPECT_TRUE(reason_seen) << status.dump();
  // The other trucks got nothing, and kept reporting.
  StopThreads();
  EXPECT_TRUE(canary.log.package.has_value()) << canary.log.error;
  EXPECT_EQ(canary.log.reboots, 1);
  EXPECT_EQ(canary.term->firmware_version(), "SIM-1.2.0");
  for (auto& t : trucks) {
    if (t.get() == &canary) continue;
    EXPECT_EQ(t->log.frames, 0) << t->device;
    EXPECT_TRUE(LastJob(capture->Messages(), t->device, "old-version").is_null()) << t->device;
    EXPECT_GT(t->reports, 0) << t->device;
    EXPECT_EQ(t->unacked, 0) << t->device;
  }
}

TEST_F(RolloutJt808Test, GatewayRestartedMidTransferRetriesTheDevice) {
  // 200 KiB in 8 KiB chunks at 32 KiB/s: after a 32 KiB burst the download takes ~5 s.
  StartAll(3, 0, "max_kib_s = 32\n");
  std::string img = Image(kRoomVersion, 200 * 1024);
  std::string sha = Upload(img, Sign(img, firmware::Target::kModbus, "GR-200", kRoomVersion));
  ASSERT_FALSE(sha.empty());
  ASSERT_EQ(Admin("rollout_create", {{"id", "restart-gw"}, {"artifact_sha256", sha}, {"canary_count", 1}, {"waves_pct", {100}},
                                     {"max_parallel_per_gateway", 2}, {"health_gate_s", 1}, {"device_timeout_s", 20},
                                     {"retries", 1}, {"blackout", json::array()}})["ok"],
            true);
  auto groups = Groups("restart-gw");
  ASSERT_EQ(groups.size(), 2u);
  ASSERT_EQ(groups[0].size(), 1u);
  const std::string canary = groups[0][0];
  auto t0 = Steady::now();
  ASSERT_EQ(Admin("rollout_start", {{"id", "restart-gw"}})["ok"], true);

  // Stop sanigate once part of the image is here (or, on a slow machine, while installing).
  std::string interrupted_in;
  ASSERT_TRUE(capture->WaitFor([&](const std::vector<Captured>& m) {
    json j = LastJob(m, canary, "restart-gw");
    if (!j.is_object()) return false;
    if ((j["state"] == "downloading" && j["bytes"] > 0) || j["state"] == "installing") interrupted_in = j["state"];
    return !interrupted_in.empty();
  }, 20s)) << GatewayLog();
  json at_stop = LastJob(capture->Messages(), canary, "restart-gw");
  ASSERT_NE(at_stop["state"], "succeeded");
  int rc = gateway.Stop(10s);
  EXPECT_TRUE(ExitedWith(rc, 0)) << DescribeWaitStatus(rc);
  std::cerr << "sanigate stopped " << Seconds(Steady::now() - t0) << " s after the start, while " << interrupted_in << " ("
            << at_stop.dump() << ")\n";
  if (interrupted_in == "downloading") {
    EXPECT_TRUE(std::filesystem::exists(path("data/firmware/" + sha + ".part"))) << "the partial download is kept";
    EXPECT_TRUE(std::filesystem::exists(path("data/firmware/" + sha + ".part.chunks"))) << "with the chunks it holds";
  }
  size_t before = capture->Messages().size();
  StartGateway();
  ASSERT_TRUE(capture->WaitFor([&](const std::vector<Captured>& m) {
    for (size_t i = before; i < m.size(); ++i)
      if (m[i].topic == "sanigate/v1/houpu/gateway/gw-test/status" && m[i].payload.find("\"online\":true") != std::string::npos)
        return true;
    return false;
  }, 10s)) << GatewayLog();

  // The first attempt times out (20 s after it started) and the canary is tried again.
  json done = WaitRolloutSettled("restart-gw", 55s);
  std::cerr << "campaign settled after " << Seconds(Steady::now() - t0) << " s\n";
  ASSERT_EQ(done["state"], "completed") << Rollout(capture->Messages(), "restart-gw").dump()
                                << Admin("rollout_status", {{"id", "restart-gw"}, {"devices", true}}).dump();
  EXPECT_EQ(done["counts"]["succeeded"], 3) << done.dump();
  EXPECT_EQ(done["counts"]["failed"], 0);
  auto m = capture->Messages();
  for (int i = 1; i <= 3; ++i) {
    std::string device = "room-" + std::to_string(i);
    json job = LastJob(m, device, "restart-gw");
    EXPECT_EQ(job["state"], "succeeded") << job.dump();
    EXPECT_EQ(job["version"], kRoomVersion) << job.dump();
    EXPECT_EQ(job["attempt"], device == canary ? 2 : 1) << job.dump();
  }
  json status = Admin("rollout_status", {{"id", "restart-gw"}, {"devices", true}});
  for (const auto& d : status["result"]["devices"]) {
    EXPECT_EQ(d["attempts"], d["device"] == "houpu/" + canary ? 2 : 1) << d.dump();
    if (d["device"] == "houpu/" + canary) {
      EXPECT_NE(d["reason"].get<std::string>().find("no result within 20 s"), std::string::npos) << d.dump();
    }
  }
  // The second run took the download up where the first left it.
  std::string log = ReadFile(path("gateway.2.log"));
  if (interrupted_in == "downloading") {
    EXPECT_NE(log.find("firmware: resuming " + sha.substr(0, 12)), std::string::npos) << log;
    // Everything the first run had reported was kept: "resuming <sha> with N of M chunks already here".
    size_t at = log.find("firmware: resuming " + sha.substr(0, 12) + " with ");
    if (at != std::string::npos) {
      uint64_t kept = std::strtoull(log.c_str() + at + std::string("firmware: resuming  with ").size() + 12, nullptr, 10);
      EXPECT_GE(kept * 8192, at_stop["bytes"].get<uint64_t>()) << log.substr(at, 100);
      EXPECT_LT(kept * 8192, img.size()) << log.substr(at, 100);
    }
  }
  // After the restart each room was flashed once (the canary by its attempt 2).
  size_t installs = 0;
  for (size_t at = log.find("modbus: installing firmware"); at != std::string::npos; at = log.find("modbus: installing firmware", at + 1)) ++installs;
  EXPECT_EQ(installs, 3u) << log;
}

}  // namespace
}  // namespace sanigate::test
