// The JT/T 808 firmware installer (Jt808Adapter::InstallFirmware) against our test terminal over
// real TCP on loopback: a 50 KiB random image in 1000-byte 0x8108 packets, each acknowledged,
// then 0x0108, the terminal's reboot and reconnection, and 0x8107/0x0107 to read the version
// back. Failures: the terminal reports failure or cancellation, comes back with the old version,
// stops acknowledging, drops the connection, never reports; not connected; the gateway stops.
// Waits are on the job's own completion (condition variable, deadlines); no sleep synchronizes.
#include "jt808/jt808_adapter.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <fstream>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "harness/temp_dir.h"
#include "jt808_terminal.h"

namespace sanigate::test {
namespace {

using namespace std::chrono_literals;
using namespace dev::jt808;
using dev::FirmwareJob;
using dev::FirmwareResult;

constexpr const char* kPhone = "13912345678";
constexpr const char* kDevice = "truck-01";
constexpr size_t kImageBytes = 50 * 1024;
// The 0x8108 head for maker "SANI1" and version "2.1.0" is 16 bytes in 2013 (22 in 2019):
// 51216 (51222) bytes of body in 1000-byte packets.
constexpr int kPackets = 52;

class NullSink : public RecordSink {
 public:
  void Emit(Record) override {}
};

// Everything one InstallFirmware reports, and a wait for its end.
class JobWatch {
 public:
  dev::FirmwareProgressFn Progress() {
    return [this](uint64_t done, uint64_t total) {
      std::lock_guard lk(mu_);
      progress_.emplace_back(done, total);
      cv_.notify_all();
    };
  }
  dev::FirmwareDoneFn Done() {
    return [this](FirmwareResult r) {
      std::lock_guard lk(mu_);
      calls_++;
      result_ = std::move(r);
      cv_.notify_all();
    };
  }
  bool Wait(std::chrono::milliseconds timeout = 30s) {
    std::unique_lock lk(mu_);
    return cv_.wait_for(lk, timeout, [&] { return calls_ > 0; });
  }
  bool WaitProgress(uint64_t bytes, std::chrono::milliseconds timeout = 30s) {
    std::unique_lock lk(mu_);
    return cv_.wait_for(lk, timeout, [&] { return !progress_.empty() && progress_.back().first >= bytes; });
  }
  int calls() {
    std::lock_guard lk(mu_);
    return calls_;
  }
  FirmwareResult result() {
    std::lock_guard lk(mu_);
    return result_;
  }
  std::vector<std::pair<uint64_t, uint64_t>> progress() {
    std::lock_guard lk(mu_);
    return progress_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int calls_ = 0;
  FirmwareResult result_;
  std::vector<std::pair<uint64_t, uint64_t>> progress_;
};

class Jt808FirmwareTest : public ::testing::Test {
 protected:
  TempDir dir;
  NullSink sink;
  std::unique_ptr<Jt808Adapter> adapter;
  Bytes image;
  std::string image_path;

  void SetUp() override {
    std::mt19937 rng(808);
    image.resize(kImageBytes);
    for (auto& b : image) b = static_cast<uint8_t>(rng());
    image_path = dir.File("image.bin");
    std::ofstream(image_path, std::ios::binary).write(reinterpret_cast<const char*>(image.data()),
                                                      static_cast<std::streamsize>(image.size()));
  }
  void TearDown() override {
    if (adapter) adapter->Stop();
  }

  void StartAdapter(int64_t ack_timeout_ms = 300, int64_t retries = 3) {
    Jt808Config cfg;
    cfg.host = "127.0.0.1";
    cfg.port = 0;
    cfg.secret_file = dir.File("jt808.secret");
    cfg.terminals.push_back({kPhone, kDevice, "vehicle", "", ""});
    cfg.upgrade_ack_timeout_ms = ack_timeout_ms;
    cfg.upgrade_retries = retries;
    cfg.command_timeout_ms = 2000;
    adapter = std::make_unique<Jt808Adapter>(cfg);
    ASSERT_TRUE(adapter->Start(sink).ok());
    ASSERT_NE(adapter->port(), 0);
  }

  void Login(Jt808Terminal& t) {
    ASSERT_TRUE(t.Connect(adapter->port()).ok());
    auto code = t.Register();
    ASSERT_TRUE(code.ok()) << code.status().ToString();
    ASSERT_TRUE(t.Authenticate(*code).ok());
  }

  FirmwareJob Job(const std::string& version = "2.1.0", std::chrono::milliseconds timeout = 30s) {
    FirmwareJob j;
    j.device = kDevice;
    j.image_path = image_path;
    j.model = "SIM-808";
    j.version = version;
    j.size = image.size();
    j.timeout = timeout;
    return j;
  }

  // Runs one job against a terminal serving with `b` on its own thread; returns what it saw.
  UpgradeLog Run(Jt808Terminal& t, const UpgradeBehavior& b, JobWatch& w, FirmwareJob job) {
    std::atomic<bool> stop{false};
    UpgradeLog log;
    std::thread serve([&] { log = t.ServeUpgrade(b, stop, 60s); });
    adapter->InstallFirmware(std::move(job), w.Progress(), w.Done());
    EXPECT_TRUE(w.Wait(40s)) << "the job never finished";
    stop = true;
    serve.join();
    return log;
  }
};

TEST_F(Jt808FirmwareTest, InstallsRebootsAndReadsTheVersionBack) {
  StartAdapter();
  Jt808Terminal t(kPhone);
  t.set_firmware_version("2.0.3");
  Login(t);
  JobWatch w;
  UpgradeBehavior b;
  b.new_version = "2.1.0";
  b.reboot = true;
  UpgradeLog log = Run(t, b, w, Job());

  FirmwareResult r = w.result();
  EXPECT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.version, "2.1.0");
  EXPECT_EQ(w.calls(), 1);
  // The terminal got the image byte for byte, with the version and its own maker id.
  ASSERT_TRUE(log.package.has_value()) << log.error;
  EXPECT_EQ(log.package->type, upgrade_type::kTerminal);
  EXPECT_EQ(log.package->maker, "SANI1");
  EXPECT_EQ(log.package->version, "2.1.0");
  EXPECT_TRUE(log.package->package == image);
  EXPECT_EQ(log.packet_total, kPackets);
  EXPECT_EQ(log.frames, kPackets);  // flow control: nothing was sent twice
  for (size_t i = 1; i < log.serials.size(); ++i) EXPECT_EQ(log.serials[i], static_cast<uint16_t>(log.serials[0] + i));
  EXPECT_EQ(log.reboots, 1);
  EXPECT_GE(log.attribute_queries, 1);
  // Progress in image bytes, never backwards, ending at the whole image.
  auto p = w.progress();
  ASSERT_FALSE(p.empty());
  for (size_t i = 1; i < p.size(); ++i) EXPECT_GE(p[i].first, p[i - 1].first);
  EXPECT_EQ(p.back(), std::make_pair(uint64_t{kImageBytes}, uint64_t{kImageBytes}));
  EXPECT_GE(p.size(), static_cast<size_t>(kPackets));
}

TEST_F(Jt808FirmwareTest, Edition2019ReportingAfterTheReconnect) {
  StartAdapter();
  Jt808Terminal t(kPhone, /*v2019=*/true);
  t.set_firmware_version("2.0.3");
  Login(t);
  JobWatch w;
  UpgradeBehavior b;
  b.new_version = "2.1.0";
  b.report_after_reconnect = true;  // JT/T 808: the result comes once the terminal is back
  UpgradeLog log = Run(t, b, w, Job());
  FirmwareResult r = w.result();
  EXPECT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.version, "2.1.0");
  ASSERT_TRUE(log.package.has_value()) << log.error;
  EXPECT_EQ(log.package->maker, "SANI1");  // BYTE[11] in 2019
  EXPECT_TRUE(log.package->package == image);
  EXPECT_EQ(log.packet_total, kPackets);
  EXPECT_TRUE(log.result_acked);  // the platform answered the 0x0108 with 0x8001
}

TEST_F(Jt808FirmwareTest, TerminalReportsFailure) {
  StartAdapter();
  Jt808Terminal t(kPhone);
  Login(t);
  JobWatch w;
  UpgradeBehavior b;
  b.new_version = "2.1.0";
  b.result = upgrade_result::kFailed;
  UpgradeLog log = Run(t, b, w, Job());
  FirmwareResult r = w.result();
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.error, "terminal reports the upgrade failed");
  EXPECT_EQ(w.calls(), 1);
  EXPECT_TRUE(log.result_acked);
  EXPECT_EQ(log.reboots, 0);
}

TEST_F(Jt808FirmwareTest, TerminalCancels) {
  StartAdapter();
  Jt808Terminal t(kPhone);
  Login(t);
  JobWatch w;
  UpgradeBehavior b;
  b.result = upgrade_result::kCancelled;
  Run(t, b, w, Job());
  EXPECT_FALSE(w.result().ok);
  EXPECT_EQ(w.result().error, "terminal cancelled the upgrade");
}

TEST_F(Jt808FirmwareTest, TerminalComesBackWithTheOldVersion) {
  StartAdapter();
  Jt808Terminal t(kPhone);
  t.set_firmware_version("2.0.3");
  Login(t);
  JobWatch w;
  UpgradeBehavior b;
  b.new_version = "";  // reports success, reboots, still runs 2.0.3
  UpgradeLog log = Run(t, b, w, Job());
  FirmwareResult r = w.result();
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.error, "rebooted into 2.0.3, not 2.1.0");
  EXPECT_EQ(r.version, "2.0.3");
  EXPECT_EQ(log.reboots, 1);
}

TEST_F(Jt808FirmwareTest, TerminalStopsAcknowledging) {
  StartAdapter(/*ack_timeout_ms=*/300, /*retries=*/3);
  Jt808Terminal t(kPhone);
  Login(t);
  JobWatch w;
  UpgradeBehavior b;
  b.ack_packets = 5;
  UpgradeLog log = Run(t, b, w, Job());
  FirmwareResult r = w.result();
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.error, "terminal stopped acknowledging packet 6/" + std::to_string(kPackets));
  // Packet 6 went out once and was sent again three times, with the same serial; nothing after.
  EXPECT_EQ(log.received_per_index[6], 4);
  EXPECT_EQ(log.received_per_index.count(7), 0u);
  ASSERT_EQ(log.serials.size(), 9u);
  EXPECT_EQ(log.serials[5], log.serials[8]);
  // Progress stopped at the fifth packet: 5000 body bytes minus the 16-byte head.
  EXPECT_EQ(w.progress().back().first, 5000u - 16u);
}

TEST_F(Jt808FirmwareTest, ConnectionLostMidTransfer) {
  StartAdapter();
  Jt808Terminal t(kPhone);
  Login(t);
  JobWatch w;
  UpgradeBehavior b;
  b.close_after_packets = 10;
  Run(t, b, w, Job());
  FirmwareResult r = w.result();
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.error, "connection lost at packet 11/" + std::to_string(kPackets));
}

TEST_F(Jt808FirmwareTest, TerminalNeverReportsTheResult) {
  StartAdapter();
  Jt808Terminal t(kPhone);
  Login(t);
  JobWatch w;
  UpgradeBehavior b;
  b.report = false;
  UpgradeLog log = Run(t, b, w, Job("2.1.0", 3s));
  FirmwareResult r = w.result();
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.error, "no upgrade result (0x0108) from the terminal within the job's 3 s");
  EXPECT_TRUE(log.package.has_value());
}

TEST_F(Jt808FirmwareTest, TerminalNotConnected) {
  StartAdapter();
  JobWatch w;
  adapter->InstallFirmware(Job(), w.Progress(), w.Done());
  ASSERT_TRUE(w.Wait(5s));
  EXPECT_FALSE(w.result().ok);
  EXPECT_EQ(w.result().error, "terminal truck-01 is not connected");
  EXPECT_EQ(w.calls(), 1);
}

TEST_F(Jt808FirmwareTest, RefusedWhenNotRunningOrAlreadyRunning) {
  {
    Jt808Config cfg;
    cfg.secret_file = dir.File("unused.secret");
    Jt808Adapter idle(cfg);
    JobWatch w;
    idle.InstallFirmware(Job(), w.Progress(), w.Done());
    ASSERT_TRUE(w.Wait(1s));
    EXPECT_EQ(w.result().error, "jt808 is not running");
  }
  StartAdapter(/*ack_timeout_ms=*/10000);
  Jt808Terminal t(kPhone);
  Login(t);
  std::atomic<bool> stop{false};
  UpgradeBehavior b;
  b.ack_packets = 2;  // keeps the first job busy
  std::thread serve([&] { t.ServeUpgrade(b, stop, 60s); });
  JobWatch first, second;
  adapter->InstallFirmware(Job(), first.Progress(), first.Done());
  ASSERT_TRUE(first.WaitProgress(2000 - 16));
  adapter->InstallFirmware(Job(), second.Progress(), second.Done());
  ASSERT_TRUE(second.Wait(5s));
  EXPECT_EQ(second.result().error, "a firmware installation is already running on truck-01");
  // Stopping the gateway ends the running job exactly once.
  adapter->Stop();
  ASSERT_TRUE(first.Wait(5s));
  EXPECT_EQ(first.result().error, "gateway stopping");
  stop = true;
  serve.join();
  EXPECT_EQ(first.calls(), 1);
  EXPECT_EQ(second.calls(), 1);
}

TEST_F(Jt808FirmwareTest, BadImageIsRefusedBeforeSending) {
  StartAdapter();
  Jt808Terminal t(kPhone);
  Login(t);
  JobWatch w;
  FirmwareJob job = Job();
  job.size = kImageBytes + 1;  // the file is not what the job describes
  std::atomic<bool> stop{false};
  UpgradeLog log;
  std::thread serve([&] { log = t.ServeUpgrade({}, stop, 10s); });
  adapter->InstallFirmware(job, w.Progress(), w.Done());
  ASSERT_TRUE(w.Wait(5s));
  stop = true;
  serve.join();
  EXPECT_EQ(w.result().error, "the image file has 51200 bytes, the job says 51201");
  EXPECT_EQ(log.frames, 0);

  JobWatch missing;
  job = Job();
  job.image_path = dir.File("nope.bin");
  adapter->InstallFirmware(job, missing.Progress(), missing.Done());
  ASSERT_TRUE(missing.Wait(5s));
  EXPECT_EQ(missing.result().error.rfind("cannot open the image ", 0), 0u) << missing.result().error;
}

}  // namespace
}  // namespace sanigate::test
