// The Modbus firmware installer (Adapter::InstallFirmware) against the real libmodbus simulator
// and its bootloader: the garbage-room-v1 profile's [firmware] window, over TCP and over a paced
// pty pair standing in for an RS-485 line. A 20 KiB random image goes over in 240-byte chunks;
// the device verifies its CRC-32, reboots and reports the new version. Failure modes come from
// the simulator (--fw-fail crc | old-version | silent), and every job ends with exactly one
// `done`, including when the adapter stops mid-transfer.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <fstream>
#include <mutex>
#include <optional>
#include <random>
#include <thread>

#include "core/clock.h"
#include "harness/ports.h"
#include "harness/process.h"
#include "harness/pty_bridge.h"
#include "harness/temp_dir.h"
#include "modbus/firmware_installer.h"
#include "modbus/modbus_adapter.h"
#include "modbus/modbus_config.h"
#include "settings/reader.h"

namespace sanigate::dev::modbus {
namespace {

using namespace std::chrono_literals;
using test::Process;

const std::string kProfiles = std::string(SANIGATE_SOURCE_DIR) + "/config/profiles";

class CapturingSink : public RecordSink {
 public:
  void Emit(Record record) override {
    std::lock_guard lk(mu_);
    records_.push_back(std::move(record));
  }
  // Readings of `device` taken within [from_ms, to_ms] (wall clock).
  size_t Readings(const std::string& device, int64_t from_ms, int64_t to_ms) const {
    std::lock_guard lk(mu_);
    return static_cast<size_t>(std::count_if(records_.begin(), records_.end(), [&](const Record& r) {
      return r.type == RecordType::kReading && r.device == device && r.ts_ms >= from_ms && r.ts_ms <= to_ms;
    }));
  }
  size_t Events(const std::string& device, const std::string& event) const {
    std::lock_guard lk(mu_);
    return static_cast<size_t>(std::count_if(records_.begin(), records_.end(), [&](const Record& r) {
      return r.type == RecordType::kEvent && r.device == device && r.event == event;
    }));
  }
  bool WaitReading(const std::string& device, int64_t after_ms, std::chrono::milliseconds timeout) const {
    auto until = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < until) {
      if (Readings(device, after_ms, INT64_MAX) > 0) return true;
      std::this_thread::sleep_for(20ms);
    }
    return false;
  }

 private:
  mutable std::mutex mu_;
  std::vector<Record> records_;
};

// What a job reported: every progress call and every `done` call.
struct JobWatch {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::pair<uint64_t, uint64_t>> progress;
  std::vector<FirmwareResult> results;
  int64_t done_ms = 0;

  FirmwareProgressFn Progress() {
    return [this](uint64_t done, uint64_t total) {
      std::lock_guard lk(mu);
      progress.emplace_back(done, total);
    };
  }
  FirmwareDoneFn Done() {
    return [this](FirmwareResult r) {
      std::lock_guard lk(mu);
      results.push_back(std::move(r));
      done_ms = NowMs();
      cv.notify_all();
    };
  }
  // The result, once `done` was called (nullopt on timeout).
  std::optional<FirmwareResult> Wait(std::chrono::milliseconds timeout) {
    std::unique_lock lk(mu);
    if (!cv.wait_for(lk, timeout, [&] { return !results.empty(); })) return std::nullopt;
    return results.front();
  }
  uint64_t BytesDone() {
    std::lock_guard lk(mu);
    return progress.empty() ? 0 : progress.back().first;
  }
  size_t DoneCalls() {
    std::lock_guard lk(mu);
    return results.size();
  }
};

class FirmwareTest : public ::testing::Test {
 protected:
  test::TempDir dir;
  Process sim;
  std::unique_ptr<test::PtyBridge> line;
  CapturingSink sink;
  std::unique_ptr<ModbusAdapter> adapter;
  std::vector<uint8_t> image;
  std::string image_path;

  void TearDown() override {
    if (adapter) adapter->Stop();
    adapter.reset();
    if (HasFailure()) std::cerr << "--- simulator log ---\n" << test::ReadFile(dir.File("sim.err"));
  }

  // A random image whose first bytes name its version ("SGFW" V NUL), as the simulator reads it.
  void MakeImage(const std::string& version, size_t size = 20 * 1024, uint32_t seed = 7) {
    std::mt19937 rng(seed);
    image.resize(size);
    for (auto& b : image) b = static_cast<uint8_t>(rng());
    std::string header = "SGFW" + version;
    std::copy(header.begin(), header.end(), image.begin());
    image[header.size()] = 0;
    image_path = dir.File("image.bin");
    std::ofstream(image_path, std::ios::binary).write(reinterpret_cast<const char*>(image.data()),
                                                       static_cast<std::streamsize>(image.size()));
  }

  FirmwareJob Job(const std::string& device, const std::string& version,
                  std::chrono::milliseconds timeout = 60s) {
    FirmwareJob job;
    job.device = device;
    job.image_path = image_path;
    job.model = "garbage-room";
    job.version = version;
    job.size = image.size();
    job.timeout = timeout;
    return job;
  }

  // Two TCP devices from one simulator, polled by one worker: the TCP counterpart of one line.
  std::vector<uint16_t> StartTcpSim(std::vector<std::string> extra) {
    std::string ports = dir.File("ports");
    std::vector<std::string> argv = {MODBUS_SIM_BIN, "--devices", "2", "--port-file", ports,
                                     "--fw-reboot-ms", "1500"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    sim = Process::Start(argv, {.stderr_path = dir.File("sim.err")});
    return test::ReadPortFile(ports, 2, 10s);
  }

  static ModbusConfig Parse(const std::string& text, std::string* errors_out = nullptr) {
    settings::ConfigErrors errors("test.toml");
    auto parsed = settings::ParseString(text, "test.toml", errors);
    EXPECT_TRUE(parsed.table) << errors.Joined();
    if (!parsed.table) return {};
    settings::Node root(*parsed.table, "", errors);
    auto node = root.Table("modbus");
    EXPECT_TRUE(node.has_value());
    std::any cfg = ParseModbusSection(*node, settings::GatewaySection{});
    if (errors_out) *errors_out = errors.Joined();
    else EXPECT_TRUE(errors.empty()) << errors.Joined();
    return std::any_cast<ModbusConfig>(cfg);
  }

  static std::string TcpDevice(const std::string& id, uint16_t port, const std::string& profile,
                               int interval_ms) {
    return "[[modbus.devices]]\nid = \"" + id + "\"\nhost = \"127.0.0.1\"\nport = " + std::to_string(port) +
           "\nprofile = \"" + profile + "\"\ninterval_ms = " + std::to_string(interval_ms) + "\ntimeout_ms = 250\n";
  }

  ModbusConfig TcpConfig(const std::vector<uint16_t>& ports, const std::string& profile_b = "garbage-room-v1") {
    ModbusConfig cfg = Parse("[modbus]\nworkers = 1\nprofiles_dir = \"" + kProfiles + "\"\n" +
                             TcpDevice("room-1", ports.at(0), "garbage-room-v1", 300) +
                             TcpDevice("room-2", ports.at(1), profile_b, 300));
    // The profile's reboot time is a real controller's; the simulator is back after 1.5 s, so
    // the first version read (after 1 s) finds it still away and the installer tries again.
    for (auto& d : cfg.devices)
      if (d.firmware) d.firmware->reboot_time_ms = 1000;
    return cfg;
  }

  void StartAdapter(ModbusConfig cfg) {
    adapter = std::make_unique<ModbusAdapter>(std::move(cfg));
    ASSERT_TRUE(adapter->Start(sink).ok());
  }

  // Runs a job to its end; checks `done` came exactly once.
  FirmwareResult Install(FirmwareJob job, JobWatch& watch, std::chrono::milliseconds wait = 90s) {
    adapter->InstallFirmware(std::move(job), watch.Progress(), watch.Done());
    auto r = watch.Wait(wait);
    EXPECT_TRUE(r.has_value()) << "the job never ended";
    std::this_thread::sleep_for(200ms);
    EXPECT_EQ(watch.DoneCalls(), 1u) << "done is called exactly once";
    return r.value_or(FirmwareResult{false, "no result", {}});
  }
};

TEST(FirmwareCrcTest, MatchesTheStandardCheckValue) {
  const std::string check = "123456789";
  EXPECT_EQ(Crc32({reinterpret_cast<const uint8_t*>(check.data()), check.size()}), 0xCBF43926u);
  // Running: the CRC of a whole equals the CRC continued over its parts.
  uint32_t part = Crc32({reinterpret_cast<const uint8_t*>(check.data()), 4});
  EXPECT_EQ(Crc32({reinterpret_cast<const uint8_t*>(check.data()) + 4, 5}, part), 0xCBF43926u);
}

TEST_F(FirmwareTest, TcpInstallsTheImageReadsBackTheVersionAndKeepsPollingTheOtherDevice) {
  // The device is "writing flash" for 15 ms after every chunk: its status reads answer busy.
  auto ports = StartTcpSim({"--fw-busy-ms", "15"});
  MakeImage("2.1.0");
  StartAdapter(TcpConfig(ports));
  ASSERT_TRUE(sink.WaitReading("room-1", 0, 5s));
  ASSERT_TRUE(sink.WaitReading("room-2", 0, 5s));

  JobWatch watch;
  int64_t start_ms = NowMs();
  FirmwareResult r = Install(Job("room-1", "2.1.0"), watch);
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.version, "2.1.0");
  int64_t end_ms = watch.done_ms;

  // Progress: from 0 to the whole image, never backwards, one call per 240-byte chunk.
  {
    std::lock_guard lk(watch.mu);
    ASSERT_FALSE(watch.progress.empty());
    EXPECT_EQ(watch.progress.back().first, 20480u);
    EXPECT_EQ(watch.progress.back().second, 20480u);
    EXPECT_EQ(watch.progress.size(), 1u + (20480 + 239) / 240);
    for (size_t i = 1; i < watch.progress.size(); ++i)
      EXPECT_GT(watch.progress[i].first, watch.progress[i - 1].first);
  }
  // The other device sharing the worker kept its pace; the updated one was not polled.
  double seconds = static_cast<double>(end_ms - start_ms) / 1000.0;
  EXPECT_GT(seconds, 1.0) << "the reboot alone takes 1.5 s";
  EXPECT_GE(sink.Readings("room-2", start_ms, end_ms), static_cast<size_t>(seconds / 0.3 * 0.6))
      << "room-2 polled every 300 ms during " << seconds << " s";
  EXPECT_EQ(sink.Readings("room-1", start_ms + 400, end_ms - 100), 0u) << "room-1's polls pause";
  EXPECT_TRUE(sink.WaitReading("room-1", end_ms, 3s)) << "polls resume after the job";
  EXPECT_EQ(sink.Events("room-1", "offline"), 0u);
  std::string log = test::ReadFile(dir.File("sim.err"));
  EXPECT_NE(log.find("device 0 (port " + std::to_string(ports[0]) + "): firmware: up again, running 2.1.0"),
            std::string::npos);
  EXPECT_EQ(log.find("device 1 (port " + std::to_string(ports[1]) + "): firmware"), std::string::npos);

  // A second install of the same version on the updated device works too (idle bootloader).
  JobWatch again;
  FirmwareResult r2 = Install(Job("room-1", "2.1.0"), again);
  EXPECT_TRUE(r2.ok) << r2.error;
}

TEST_F(FirmwareTest, ADeviceThatFindsAChecksumMismatchRefusesTheImage) {
  auto ports = StartTcpSim({"--fw-fail", "crc"});
  MakeImage("2.1.0");
  StartAdapter(TcpConfig(ports));
  JobWatch watch;
  FirmwareResult r = Install(Job("room-1", "2.1.0"), watch);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.error, "the device refused the image: checksum mismatch");
  EXPECT_EQ(watch.BytesDone(), 20480u) << "the whole image went over before the commit";
  std::string log = test::ReadFile(dir.File("sim.err"));
  EXPECT_NE(log.find("firmware: abort"), std::string::npos) << "the bootloader is left idle";
  EXPECT_EQ(log.find("rebooting"), std::string::npos) << "a refused image is never booted";
  EXPECT_TRUE(sink.WaitReading("room-1", NowMs(), 3s)) << "polls resume";
}

TEST_F(FirmwareTest, ADeviceThatRebootsIntoTheOldVersionFails) {
  auto ports = StartTcpSim({"--fw-fail", "old-version", "--fw-version", "2.0.3"});
  MakeImage("2.1.0");
  StartAdapter(TcpConfig(ports));
  JobWatch watch;
  FirmwareResult r = Install(Job("room-1", "2.1.0"), watch);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.error, "rebooted into 2.0.3, not 2.1.0");
  EXPECT_EQ(r.version, "2.0.3") << "what the device runs";
}

TEST_F(FirmwareTest, ADeviceThatFallsSilentMidTransferFailsWithTheChunkOffset) {
  auto ports = StartTcpSim({"--fw-fail", "silent", "--fw-fail-after", "5"});
  MakeImage("2.1.0");
  StartAdapter(TcpConfig(ports));
  JobWatch watch;
  auto t0 = std::chrono::steady_clock::now();
  FirmwareResult r = Install(Job("room-1", "2.1.0"), watch);
  EXPECT_FALSE(r.ok);
  // Five chunks of 240 bytes were taken; the sixth (at 1200) is tried 1 + 3 times.
  EXPECT_EQ(r.error.rfind("no answer at chunk offset 1200 after 4 tries: ", 0), 0u) << r.error;
  EXPECT_EQ(watch.BytesDone(), 1200u);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 15s) << "retries are bounded, not the job timeout";
  EXPECT_TRUE(sink.WaitReading("room-2", NowMs(), 3s)) << "the other device is still polled";
}

TEST_F(FirmwareTest, AProfileWithoutAFirmwareWindowIsRefusedAtOnce) {
  auto ports = StartTcpSim({});
  MakeImage("2.1.0");
  StartAdapter(TcpConfig(ports, "bin-level-v1"));
  JobWatch watch;
  FirmwareResult r = Install(Job("room-2", "2.1.0"), watch, 1s);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.error, "profile bin-level-v1 has no firmware window (no [firmware] table)");
  JobWatch unknown;
  FirmwareResult u = Install(Job("room-9", "2.1.0"), unknown, 1s);
  EXPECT_EQ(u.error, "unknown device room-9");
  EXPECT_EQ(test::ReadFile(dir.File("sim.err")).find("firmware:"), std::string::npos) << "nothing was sent";
}

TEST_F(FirmwareTest, AJobStillRunningWhenTheAdapterStopsEndsWithGatewayStopping) {
  // Slow flash (60 ms busy after each chunk): the transfer takes seconds.
  auto ports = StartTcpSim({"--fw-busy-ms", "60"});
  MakeImage("2.1.0");
  StartAdapter(TcpConfig(ports));
  JobWatch watch;
  adapter->InstallFirmware(Job("room-1", "2.1.0"), watch.Progress(), watch.Done());
  auto until = std::chrono::steady_clock::now() + 10s;
  while (watch.BytesDone() < 2400 && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(10ms);
  ASSERT_GE(watch.BytesDone(), 2400u);
  adapter->Stop();
  ASSERT_EQ(watch.DoneCalls(), 1u) << "done before Stop returns";
  EXPECT_EQ(watch.results[0].error, "gateway stopping");
  // A job offered to a stopped adapter is answered at once.
  JobWatch late;
  adapter->InstallFirmware(Job("room-2", "2.1.0"), late.Progress(), late.Done());
  ASSERT_EQ(late.DoneCalls(), 1u);
  EXPECT_EQ(late.results[0].error, "gateway stopping");
  adapter.reset();
  EXPECT_EQ(watch.DoneCalls(), 1u);
}

TEST_F(FirmwareTest, WordAndByteOrdersOfTheWindowComeFromTheDeviceConfig) {
  // A device whose bootloader keeps u32 values low word first and bytes swapped in each
  // register; its own [firmware] replaces the profile's (here: smaller chunks, no error register).
  auto ports = StartTcpSim({"--fw-word-order", "low", "--fw-byte-order", "little", "--fw-reboot-ms", "200"});
  MakeImage("3.0.0-rc1", 5001);  // odd: the last chunk ends in half a register
  ModbusConfig cfg = Parse(
      "[modbus]\nworkers = 1\nprofiles_dir = \"" + kProfiles + "\"\n" +
      TcpDevice("room-1", ports.at(0), "garbage-room-v1", 300) +
      "[modbus.devices.firmware]\ncontrol = 4096\nstatus = 4097\nsize = 4100\noffset = 4102\n"
      "chunk_length = 4104\ndata = 4105\nmax_chunk = 100\nchecksum = 4230\nversion = 4240\n"
      "word_order = \"low_first\"\nbyte_order = \"little\"\nreboot_time_s = 0\n");
  ASSERT_TRUE(cfg.devices.at(0).firmware);
  EXPECT_FALSE(cfg.devices[0].firmware->error) << "no error register: refusals have no code";
  StartAdapter(std::move(cfg));
  JobWatch watch;
  FirmwareResult r = Install(Job("room-1", "3.0.0-rc1"), watch);
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.version, "3.0.0-rc1");
  std::lock_guard lk(watch.mu);
  EXPECT_EQ(watch.progress.size(), 1u + (5001 + 199) / 200);
}

TEST_F(FirmwareTest, RtuInstallsOnOneSlaveWhileTheOtherSlaveOnTheLineIsPolledBetweenChunks) {
  line = std::make_unique<test::PtyBridge>(test::PtyBridgeOptions{.baud = 115200, .bits_per_char = 11});
  sim = Process::Start({MODBUS_SIM_BIN, "--rtu", line->link_b(), "--baud", "115200", "--slaves", "1-2",
                        "--turnaround-ms", "2", "--fw-reboot-ms", "1500", "--fw-busy-ms", "5"},
                       {.stderr_path = dir.File("sim.err")});
  auto until = std::chrono::steady_clock::now() + 10s;
  while (test::ReadFile(dir.File("sim.err")).find("serving") == std::string::npos &&
         std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(20ms);
  MakeImage("2.1.0");
  std::string bus = "[[modbus.buses]]\nname = \"room-bus\"\nport = \"" + line->link_a() +
                    "\"\nbaud = 115200\nparity = \"E\"\n";
  for (int unit : {1, 2})
    bus += "[[modbus.buses.devices]]\nid = \"room-" + std::to_string(unit) + "\"\nunit_id = " +
           std::to_string(unit) + "\nprofile = \"garbage-room-v1\"\ninterval_ms = 300\ntimeout_ms = 200\n";
  ModbusConfig cfg = Parse("[modbus]\nprofiles_dir = \"" + kProfiles + "\"\n" + bus);
  for (auto& d : cfg.buses.at(0).devices) d.firmware->reboot_time_ms = 1000;
  StartAdapter(std::move(cfg));
  ASSERT_TRUE(sink.WaitReading("room-1", 0, 5s));
  ASSERT_TRUE(sink.WaitReading("room-2", 0, 5s));

  JobWatch watch;
  int64_t start_ms = NowMs();
  FirmwareResult r = Install(Job("room-1", "2.1.0"), watch);
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.version, "2.1.0");
  int64_t end_ms = watch.done_ms;
  double seconds = static_cast<double>(end_ms - start_ms) / 1000.0;
  EXPECT_GE(sink.Readings("room-2", start_ms, end_ms), static_cast<size_t>(seconds / 0.3 * 0.6))
      << "room-2 polled every 300 ms during " << seconds << " s on the same line";
  EXPECT_EQ(sink.Readings("room-1", start_ms + 400, end_ms - 100), 0u);
  EXPECT_TRUE(sink.WaitReading("room-1", end_ms, 3s));
  EXPECT_EQ(sink.Events("room-2", "offline"), 0u);
  EXPECT_NE(test::ReadFile(dir.File("sim.err")).find("unit 1: firmware: up again, running 2.1.0"),
            std::string::npos);
}

// [firmware] mistakes are reported like any other profile error: file, line, key.
TEST_F(FirmwareTest, FirmwareWindowMistakesAreConfigErrorsAtTheirLine) {
  std::string profiles = dir.File("profiles");
  std::filesystem::create_directories(profiles);
  std::string profile = profiles + "/bad-room.toml";
  std::ofstream(profile) << "kind = \"garbage_room\"\n"   // 1
                            "[[points]]\n"                // 2
                            "metric = \"fill_level_pct\"\n"  // 3
                            "address = 0\n"               // 4
                            "[firmware]\n"                // 5
                            "control = 4096\n"            // 6
                            "status = 4097\n"             // 7
                            "size = 4097\n"               // 8
                            "offset = 4102\n"             // 9
                            "chunk_length = 4104\n"       // 10
                            "data = 4105\n"               // 11
                            "max_chunk = 121\n"           // 12
                            "checksum = 4200\n"           // 13
                            "version = 65530\n"           // 14
                            "byte_order = \"middle\"\n"   // 15
                            "errors = { x = \"what\" }\n"  // 16
                            "reboot = 3\n";               // 17
  std::string errors;
  Parse("[modbus]\nprofiles_dir = \"" + profiles + "\"\n[[modbus.devices]]\nid = \"r\"\nhost = \"h\"\n"
        "profile = \"bad-room\"\n",
        &errors);
  for (const char* want :
       {":8:8: firmware.size: registers 4097..4098 overlap status (4097)",
        ":12:13: firmware.max_chunk: 121 is outside 1..120",
        ":13:12: firmware.checksum: registers 4200..4201 overlap data (4105..4224)",
        ":14:11: firmware.version: 65530..65537 runs past 65535",
        ":15:14: firmware.byte_order: \"middle\" is not one of \"big\", \"little\"",
        "firmware.errors.x: \"x\" is not an error code (1..65535)", "firmware.reboot: unknown key"})
    EXPECT_NE(errors.find(want), std::string::npos) << want << "\nin:\n" << errors;
  EXPECT_NE(errors.find(profile + ":"), std::string::npos) << "errors point into the profile file";
}

}  // namespace
}  // namespace sanigate::dev::modbus
