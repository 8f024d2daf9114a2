// The real NMEA adapter against real transports: a loopback TCP connection to its listener on a
// free port, and a pty pair (PtyBridge) standing in for the serial port of a GNSS module. The
// test sink captures records; waits are on its condition variable with deadlines (Health(),
// which has no event to wait on, is polled until a deadline). No sleep is a synchronization.
#include "nmea/nmea_adapter.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "harness/ports.h"
#include "harness/pty_bridge.h"

namespace sanigate::dev::nmea {
namespace {

using namespace std::chrono_literals;

// Thread-safe capture of everything the adapter emits.
class CaptureSink : public RecordSink {
 public:
  void Emit(Record record) override {
    std::lock_guard lk(mu_);
    records_.push_back(std::move(record));
    cv_.notify_all();
  }
  // Waits until `pred` holds for the records so far; false after `timeout`.
  bool WaitFor(const std::function<bool(const std::vector<Record>&)>& pred,
               std::chrono::milliseconds timeout = 10s) {
    std::unique_lock lk(mu_);
    return cv_.wait_for(lk, timeout, [&] { return pred(records_); });
  }
  std::vector<Record> Records() {
    std::lock_guard lk(mu_);
    return records_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Record> records_;
};

std::vector<Record> OfType(const std::vector<Record>& all, RecordType type) {
  std::vector<Record> out;
  for (const auto& r : all)
    if (r.type == type) out.push_back(r);
  return out;
}

size_t Count(const std::vector<Record>& all, RecordType type) { return OfType(all, type).size(); }

// For state without a record to wait on (Health()): checks until true or the deadline.
bool Eventually(const std::function<bool()>& pred, std::chrono::milliseconds timeout = 10s) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(20ms);
  }
  return true;
}

const MetricValue* Find(const Record& r, const std::string& name) {
  const Metric* m = r.FindMetric(name);
  return m ? &m->value : nullptr;
}

// --- sentences with a given UTC time (21 Nov 2025, Xiamen), checksums computed ------------

// 2025-11-21 00:00:00 UTC: calendar.timegm((2025, 11, 21, 0, 0, 0)) = 1763683200
constexpr int64_t kDayStart = 1'763'683'200'000;

std::string WithChecksum(const std::string& body) {
  unsigned sum = 0;
  for (char c : body) sum ^= static_cast<unsigned char>(c);
  char hex[3];
  std::snprintf(hex, sizeof hex, "%02X", sum & 0xFF);
  return "$" + body + "*" + hex + "\r\n";
}

std::string Hms(int64_t tod_ms) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%02d%02d%02d.%02d", static_cast<int>(tod_ms / 3'600'000),
                static_cast<int>(tod_ms / 60'000 % 60), static_cast<int>(tod_ms / 1000 % 60),
                static_cast<int>(tod_ms % 1000 / 10));
  return buf;
}

// An RMC + GGA pair (one epoch) at `tod_ms` after the start of the day: 24.5123 N, 118.1342 E,
// 12.5 kn (= 23.15 km/h), course 45.0, 12.0 m, 21 satellites.
std::string Epoch(int64_t tod_ms, const std::string& talker = "GN") {
  std::string t = Hms(tod_ms);
  return WithChecksum(talker + "RMC," + t + ",A,2430.7380,N,11808.0520,E,12.5,45.0,211125,,,A") +
         WithChecksum(talker + "GGA," + t + ",2430.7380,N,11808.0520,E,1,21,0.6,12.0,M,-5.1,M,,");
}

// --- a plain loopback TCP client (the tracker) --------------------------------------------

class Tracker {
 public:
  explicit Tracker(uint16_t port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      ::close(fd_);
      fd_ = -1;
    }
  }
  ~Tracker() {
    if (fd_ >= 0) ::close(fd_);
  }
  bool connected() const { return fd_ >= 0; }
  bool Send(const std::string& bytes) {
    size_t done = 0;
    while (done < bytes.size()) {
      ssize_t n = ::send(fd_, bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL);
      if (n <= 0) return false;
      done += static_cast<size_t>(n);
    }
    return true;
  }
  // True when the gateway closed the connection within `timeout` (the adapter never writes).
  bool ClosedByPeer(std::chrono::seconds timeout) {
    timeval tv{static_cast<time_t>(timeout.count()), 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char c;
    return ::recv(fd_, &c, 1, 0) == 0;
  }

 private:
  int fd_ = -1;
};

class NmeaAdapterTest : public ::testing::Test {
 protected:
  void TearDown() override {
    if (adapter) adapter->Stop();
  }

  // Starts the adapter with one TCP source on a free loopback port (retrying if another
  // process took the port between the lookup and the bind).
  void StartTcp(SourceConfig s) {
    for (int attempt = 0; attempt < 5; ++attempt) {
      port = test::FreeTcpPort();
      s.listen_host = "127.0.0.1";
      s.listen_port = port;
      NmeaConfig cfg;
      cfg.sources.push_back(s);
      adapter = std::make_unique<NmeaAdapter>(cfg);
      Status st = adapter->Start(sink);
      if (st.ok()) return;
      adapter.reset();
    }
    FAIL() << "could not start the adapter on a free port";
  }

  static SourceConfig Source(std::string device) {
    SourceConfig s;
    s.device = std::move(device);
    return s;
  }

  CaptureSink sink;
  std::unique_ptr<NmeaAdapter> adapter;
  uint16_t port = 0;
};

TEST_F(NmeaAdapterTest, TcpReadingCarriesTheReceiverTimeLocationAndSpeed) {
  StartTcp(Source("truck-12"));
  Tracker t(port);
  ASSERT_TRUE(t.connected());
  // 02:30:00.00 UTC; the VTG between them joins the epoch.
  int64_t tod = (2 * 3600 + 30 * 60) * 1000;
  ASSERT_TRUE(t.Send(Epoch(tod)));
  ASSERT_TRUE(sink.WaitFor([](const auto& r) { return Count(r, RecordType::kReading) >= 1; }));

  auto all = sink.Records();
  // Online first (the status as the gateway sees the device), then the reading.
  ASSERT_GE(all.size(), 2u);
  EXPECT_EQ(all[0].type, RecordType::kStatus);
  EXPECT_TRUE(all[0].online);
  EXPECT_EQ(all[0].device, "truck-12");
  Record r = OfType(all, RecordType::kReading).at(0);
  EXPECT_EQ(r.device, "truck-12");
  EXPECT_EQ(r.kind, "vehicle");
  EXPECT_EQ(r.protocol, "nmea");
  EXPECT_EQ(r.ts_ms, kDayStart + tod);  // the receiver's time, not the arrival time
  ASSERT_TRUE(r.location);
  EXPECT_DOUBLE_EQ(r.location->lat, 24.5123);
  EXPECT_DOUBLE_EQ(r.location->lon, 118.1342);
  EXPECT_DOUBLE_EQ(std::get<double>(*Find(r, "speed_kmh")), 23.15);  // 12.5 kn * 1.852
  EXPECT_DOUBLE_EQ(std::get<double>(*Find(r, "heading_deg")), 45.0);
  EXPECT_DOUBLE_EQ(std::get<double>(*Find(r, "altitude_m")), 12.0);
  EXPECT_EQ(std::get<int64_t>(*Find(r, "satellites")), 21);
  EXPECT_TRUE(std::get<bool>(*Find(r, "gnss_fix")));

  AdapterHealth h = adapter->Health();
  EXPECT_EQ(h.state, "running");
  EXPECT_EQ(h.devices, 1u);
  EXPECT_EQ(h.online, 1u);
  ASSERT_EQ(h.per_device.size(), 1u);
  EXPECT_EQ(h.per_device[0].requests, 2u);
  EXPECT_EQ(h.per_device[0].errors, 0u);
  EXPECT_TRUE(adapter->OwnsDevice("truck-12"));
  EXPECT_EQ(adapter->Rules().count("truck-12"), 1u);
}

TEST_F(NmeaAdapterTest, TenHertzIsThrottledToMinInterval) {
  StartTcp(Source("truck-12"));  // min_interval_ms = 1000
  Tracker t(port);
  ASSERT_TRUE(t.connected());
  int64_t t0 = 8 * 3600 * 1000;
  std::string burst;
  for (int i = 0; i < 30; ++i) burst += Epoch(t0 + i * 100);  // 3 s at 10 Hz
  ASSERT_TRUE(t.Send(burst));
  // A later epoch marks the end: once its reading is out, the burst has been processed.
  ASSERT_TRUE(t.Send(Epoch(t0 + 10'000)));
  ASSERT_TRUE(sink.WaitFor([&](const auto& r) {
    auto readings = OfType(r, RecordType::kReading);
    return !readings.empty() && readings.back().ts_ms == kDayStart + t0 + 10'000;
  }));
  std::vector<int64_t> ts;
  for (const auto& r : OfType(sink.Records(), RecordType::kReading))
    ts.push_back(r.ts_ms - kDayStart - t0);
  EXPECT_EQ(ts, (std::vector<int64_t>{0, 1000, 2000, 10'000}));
}

TEST_F(NmeaAdapterTest, GarbageAndBadSentencesDoNotHarmTheConnection) {
  StartTcp(Source("truck-12"));
  Tracker t(port);
  ASSERT_TRUE(t.connected());
  int64_t t0 = 9 * 3600 * 1000;
  std::string bad_checksum = Epoch(t0).substr(0, 40) + "*00\r\n";  // cut, wrong checksum
  const char raw_noise[] = "\x00\xff\xfe binary noise \x01\x02\r\n";
  std::string noise(raw_noise, sizeof raw_noise - 1);  // with the NUL at the start
  std::string overlong = "$GPTXT," + std::string(300, 'X') + "*00\r\n";
  std::string no_checksum = "$GPRMC,090000.00,A,2430.7380,N,11808.0520,E,12.5,45.0,211125,,,A\r\n";
  ASSERT_TRUE(t.Send(noise + bad_checksum + overlong + no_checksum + Epoch(t0)));
  ASSERT_TRUE(sink.WaitFor([](const auto& r) { return Count(r, RecordType::kReading) >= 1; }));
  // The same connection keeps working.
  ASSERT_TRUE(t.Send(noise + Epoch(t0 + 5000)));
  ASSERT_TRUE(sink.WaitFor([](const auto& r) { return Count(r, RecordType::kReading) >= 2; }));
  auto readings = OfType(sink.Records(), RecordType::kReading);
  EXPECT_EQ(readings[0].ts_ms, kDayStart + t0);
  EXPECT_EQ(readings[1].ts_ms, kDayStart + t0 + 5000);

  AdapterHealth h = adapter->Health();
  ASSERT_EQ(h.per_device.size(), 1u);
  EXPECT_EQ(h.per_device[0].errors, 3u);    // bad checksum, overlong, no checksum
  EXPECT_EQ(h.per_device[0].requests, 7u);  // those 3 + 2 epochs of 2 sentences
  EXPECT_EQ(h.errors, 3u);
  EXPECT_NE(h.last_error.find("truck-12: "), std::string::npos) << h.last_error;
}

TEST_F(NmeaAdapterTest, NoFixIsAReadingWithoutLocation) {
  StartTcp(Source("truck-12"));
  Tracker t(port);
  ASSERT_TRUE(t.connected());
  std::string t1 = Hms(10 * 3600 * 1000);
  ASSERT_TRUE(t.Send(WithChecksum("GNRMC," + t1 + ",V,,,,,,,211125,,,N") +
                     WithChecksum("GNGGA," + t1 + ",,,,,0,03,,,,,,,")));
  ASSERT_TRUE(sink.WaitFor([](const auto& r) { return Count(r, RecordType::kReading) >= 1; }));
  Record r = OfType(sink.Records(), RecordType::kReading).at(0);
  EXPECT_EQ(r.ts_ms, kDayStart + 10 * 3600 * 1000);
  EXPECT_FALSE(r.location);
  EXPECT_FALSE(std::get<bool>(*Find(r, "gnss_fix")));
  EXPECT_EQ(std::get<int64_t>(*Find(r, "satellites")), 3);
  EXPECT_EQ(Find(r, "speed_kmh"), nullptr);
}

TEST_F(NmeaAdapterTest, SilentSourceGoesOfflineAndComesBack) {
  SourceConfig s = Source("truck-12");
  s.offline_after_s = 1;
  StartTcp(s);
  Tracker t(port);
  ASSERT_TRUE(t.connected());
  int64_t t0 = 11 * 3600 * 1000;
  ASSERT_TRUE(t.Send(Epoch(t0)));
  auto offline_event = [](const std::vector<Record>& all, EventState state) {
    for (const auto& r : all)
      if (r.type == RecordType::kEvent && r.event == "offline" && r.state == state) return true;
    return false;
  };
  ASSERT_TRUE(sink.WaitFor([&](const auto& r) { return offline_event(r, EventState::kActive); }));
  auto statuses = OfType(sink.Records(), RecordType::kStatus);
  ASSERT_EQ(statuses.size(), 2u);
  EXPECT_TRUE(statuses[0].online);
  EXPECT_FALSE(statuses[1].online);
  // Last seen: the last valid sentence, at least offline_after_s before the offline status.
  ASSERT_TRUE(statuses[1].last_seen_ms);
  EXPECT_GE(*statuses[1].last_seen_ms, *statuses[0].last_seen_ms);
  EXPECT_LE(*statuses[1].last_seen_ms, statuses[1].ts_ms - 1000);
  EXPECT_EQ(adapter->Health().online, 0u);
  EXPECT_EQ(adapter->Health().state, "degraded");

  // The next valid sentence brings it back, on the same connection.
  ASSERT_TRUE(t.Send(Epoch(t0 + 60'000)));
  ASSERT_TRUE(sink.WaitFor([&](const auto& r) { return offline_event(r, EventState::kCleared); }));
  statuses = OfType(sink.Records(), RecordType::kStatus);
  ASSERT_EQ(statuses.size(), 3u);
  EXPECT_TRUE(statuses[2].online);
  EXPECT_TRUE(sink.WaitFor([](const auto& r) { return Count(r, RecordType::kReading) >= 2; }));
  EXPECT_EQ(adapter->Health().online, 1u);
}

TEST_F(NmeaAdapterTest, AtMaxConnectionsANewConnectionReplacesTheQuietestOne) {
  SourceConfig s = Source("truck-12");
  s.max_connections = 1;
  StartTcp(s);
  Tracker old_conn(port);
  ASSERT_TRUE(old_conn.connected());
  ASSERT_TRUE(old_conn.Send(Epoch(12 * 3600 * 1000)));
  ASSERT_TRUE(sink.WaitFor([](const auto& r) { return Count(r, RecordType::kReading) >= 1; }));
  Tracker fresh(port);  // the tracker reconnected; its old session is a ghost
  ASSERT_TRUE(fresh.connected());
  EXPECT_TRUE(old_conn.ClosedByPeer(5s));
  ASSERT_TRUE(fresh.Send(Epoch(12 * 3600 * 1000 + 5000)));
  ASSERT_TRUE(sink.WaitFor([](const auto& r) { return Count(r, RecordType::kReading) >= 2; }));
}

TEST_F(NmeaAdapterTest, PortInUseFailsStartWithTheSourceNamed) {
  uint16_t taken = 0;
  int fd = test::ListenOnLoopback(&taken, 1);
  NmeaConfig cfg;
  SourceConfig s = Source("truck-12");
  s.listen_host = "127.0.0.1";
  s.listen_port = taken;
  cfg.sources.push_back(s);
  NmeaAdapter busy(cfg);
  Status st = busy.Start(sink);
  ::close(fd);
  EXPECT_EQ(st.code(), Code::kUnavailable);
  EXPECT_EQ(st.message().rfind("nmea.sources[0] (truck-12): cannot listen on tcp 127.0.0.1:", 0),
            0u)
      << st.message();
}

// --- serial: the adapter opens side A of a pty pair, the "GNSS module" writes to side B -----

class NmeaSerialTest : public NmeaAdapterTest {
 protected:
  void SetUp() override {
    SourceConfig s = Source("gw-gnss");
    s.kind = "gateway";
    s.serial = bridge.link_a();  // a stable link, like /dev/serial/by-id/...
    s.baud = 9600;
    NmeaConfig cfg;
    cfg.sources.push_back(s);
    adapter = std::make_unique<NmeaAdapter>(cfg);
    ASSERT_TRUE(adapter->Start(sink).ok());
    OpenModule();
  }
  void TearDown() override {
    NmeaAdapterTest::TearDown();
    if (module >= 0) ::close(module);
  }
  void OpenModule() {
    if (module >= 0) ::close(module);
    module = ::open(bridge.path_b().c_str(), O_RDWR | O_NOCTTY | O_CLOEXEC);
    ASSERT_GE(module, 0);
  }
  bool Write(const std::string& bytes) {
    return ::write(module, bytes.data(), bytes.size()) == static_cast<ssize_t>(bytes.size());
  }

  test::PtyBridge bridge;
  int module = -1;
};

TEST_F(NmeaSerialTest, ReadingsFromTheSerialPort) {
  int64_t t0 = 13 * 3600 * 1000;
  // Split in the middle of a sentence across two writes, BeiDou talker.
  std::string e = Epoch(t0, "BD");
  ASSERT_TRUE(Write(e.substr(0, 30)));
  ASSERT_TRUE(Write(e.substr(30)));
  ASSERT_TRUE(sink.WaitFor([](const auto& r) { return Count(r, RecordType::kReading) >= 1; }));
  Record r = OfType(sink.Records(), RecordType::kReading).at(0);
  EXPECT_EQ(r.device, "gw-gnss");
  EXPECT_EQ(r.kind, "gateway");
  EXPECT_EQ(r.ts_ms, kDayStart + t0);
  EXPECT_DOUBLE_EQ(r.location->lat, 24.5123);
  EXPECT_EQ(adapter->Health().state, "running");
}

TEST_F(NmeaSerialTest, ReopensThePortAfterAnUnplug) {
  int64_t t0 = 14 * 3600 * 1000;
  ASSERT_TRUE(Write(Epoch(t0)));
  ASSERT_TRUE(sink.WaitFor([](const auto& r) { return Count(r, RecordType::kReading) >= 1; }));
  bridge.Unplug(test::PtyBridge::Side::A);
  // The adapter sees the hangup; the port stays closed while the link is gone.
  ASSERT_TRUE(Eventually([&] { return adapter->Health().state == "degraded"; }));
  bridge.Plug(test::PtyBridge::Side::A);
  // The module keeps sending once a second (receiver pacing, not synchronization) until a
  // reading from after the replug arrives; the adapter retries the port every second.
  bool back = false;
  for (int i = 1; i <= 20 && !back; ++i) {
    ASSERT_TRUE(Write(Epoch(t0 + i * 1000)));
    back = sink.WaitFor([](const auto& r) { return Count(r, RecordType::kReading) >= 2; }, 500ms);
  }
  EXPECT_TRUE(back);
  EXPECT_EQ(adapter->Health().state, "running");
}

}  // namespace
}  // namespace sanigate::dev::nmea
