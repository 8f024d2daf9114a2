// jt808_sim: a scalable JT/T 808 terminal simulator for the demo and the benchmarks
// (bench/jt808_bench.sh). Thousands of sanitation trucks, each with its own TCP connection,
// register (0x0100) / authenticate (0x0102), report 0x0200 or 0x0704 batches along their own
// route around Xiamen's Huli district, send heartbeats, optionally answer platform commands,
// and measure the ack latency of every report (send -> matching 0x8001).
//
// Threading: everything runs on one Boost.Asio io_context thread with plain callbacks; there is
// no locking. A terminal's socket and timer handlers carry a generation number so a callback of
// a connection (or timer arm) that was replaced in the meantime is ignored.
//
// Bounded by design: --duration-s is required and a stop always follows it (after a short
// drain of the acks still in flight). Errors retry after an exponential backoff, never at once.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <array>
#include <bit>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <deque>
#include <fstream>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "jt808/frame.h"
#include "jt808/messages.h"
#include "runtime/asio.h"

namespace {

using namespace sanigate::dev::jt808;
namespace asio = sanigate::asio;
using tcp = asio::ip::tcp;
using SteadyClock = std::chrono::steady_clock;
using TimePoint = SteadyClock::time_point;
using Ms = std::chrono::milliseconds;

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

struct Options {
  std::string host = "127.0.0.1";
  uint16_t port = 6808;
  int terminals = 1;
  uint64_t phone_base = 13800000000ull;
  bool v2019 = false;
  std::string source_ips;
  int interval_ms = 1000;
  int heartbeat_s = 30;
  double duration_s = 0;
  int reports = 0;
  double connect_rate = 0;
  int batch = 0;
  int sos_every = 0;
  std::string codes_file;
  double storm_at_s = 0;
  bool answer_commands = false;
  std::string stats_json;
  int pipeline = 1;
  int max_connecting = 1000;
  int drain_ms = 3000;
  int handshake_timeout_s = 10;
  double progress_s = 0;
};

// Ack latencies in microseconds: log-linear buckets, 32 per power of two (about 3% wide), so
// percentiles cost a fixed 16 KB however many reports a run has.
class Histogram {
 public:
  void Add(uint64_t us) {
    counts_[Index(us)]++;
    count_++;
    max_ = std::max(max_, us);
  }
  uint64_t count() const { return count_; }
  double MaxMs() const { return static_cast<double>(max_) / 1000.0; }
  double PercentileMs(double p) const {
    if (count_ == 0) return 0;
    uint64_t want = static_cast<uint64_t>(std::ceil(p * static_cast<double>(count_)));
    if (want == 0) want = 1;
    uint64_t seen = 0;
    for (size_t i = 0; i < counts_.size(); ++i) {
      seen += counts_[i];
      if (seen >= want) return std::min(Mid(i), static_cast<double>(max_)) / 1000.0;
    }
    return MaxMs();
  }

 private:
  static constexpr int kSub = 32;
  static size_t Index(uint64_t v) {
    if (v < kSub) return v;
    int e = 63 - std::countl_zero(v);  // >= 5
    uint64_t m = v >> (e - 5);         // 32..63
    return static_cast<size_t>((e - 4) * kSub) + static_cast<size_t>(m - kSub);
  }
  static double Mid(size_t i) {
    if (i < kSub) return static_cast<double>(i);
    int e = static_cast<int>(i / kSub) + 4;
    uint64_t m = i % kSub + kSub;
    double lo = static_cast<double>(m << (e - 5)), width = static_cast<double>(1ull << (e - 5));
    return lo + width / 2;
  }
  std::array<uint64_t, 64 * kSub> counts_{};
  uint64_t count_ = 0, max_ = 0;
};

// SplitMix64: 8 bytes of state per truck instead of mt19937_64's 2.5 KB (20k trucks per process).
struct SplitMix64 {
  using result_type = uint64_t;
  uint64_t s;
  static constexpr uint64_t min() { return 0; }
  static constexpr uint64_t max() { return ~0ull; }
  uint64_t operator()() {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
};

// A truck driving a street grid over Huli district (about 7 x 4.5 km), rotated like the
// district's main roads. It turns at intersections, keeps 5..40 km/h, burns fuel and counts
// kilometres, so the gateway sees plausible, distinct tracks.
class Truck {
 public:
  explicit Truck(uint64_t seed) : rng_{seed} {
    std::uniform_int_distribution<int> ix(0, kCols - 1), iy(0, kRows - 1), dir(0, 3);
    x_ = ix(rng_) * kBlock;
    y_ = iy(rng_) * kBlock;
    dir_ = dir(rng_);
    to_next_ = kBlock;
    speed_ = target_ = Uniform(8, 30);
    odometer_km_ = Uniform(2000, 60000);
    fuel_l_ = Uniform(30, 120);
  }

  // Moves the truck forward by `dt_s` seconds of driving.
  void Advance(double dt_s) {
    dt_s = std::clamp(dt_s, 0.0, 120.0);
    while (dt_s > 0) {
      double step = std::min(dt_s, 1.0);
      dt_s -= step;
      if (Uniform(0, 1) < 0.1) target_ = Uniform(5, 40);  // traffic, a bin stop, a clear road
      speed_ += std::clamp(target_ - speed_, -6.0 * step, 4.0 * step);
      speed_ = std::clamp(speed_, 5.0, 40.0);
      double m = speed_ / 3.6 * step;
      odometer_km_ += m / 1000.0;
      fuel_l_ -= m / 1000.0 * 0.35;  // a compactor uses about 35 L/100 km in town
      if (fuel_l_ < 15) fuel_l_ = 120;
      while (m > 0) {
        double d = std::min(m, to_next_);
        x_ += kDx[dir_] * d;
        y_ += kDy[dir_] * d;
        to_next_ -= d;
        m -= d;
        if (to_next_ <= 1e-9) Turn();
      }
    }
  }

  Location Sample(int64_t ts_ms, uint32_t alarm) {
    Location l;
    l.alarm = alarm;
    l.status = (1u << status_bit::kAcc) | (1u << status_bit::kPositioned) | (1u << 18) | (1u << 19);
    // Grid (x east, y north along the rotated streets) -> metres east/north -> degrees.
    double e = x_ * std::cos(kRot) - y_ * std::sin(kRot),
           n = x_ * std::sin(kRot) + y_ * std::cos(kRot);
    l.lat = kLat0 + n / 110574.0;
    l.lon = kLon0 + e / (111320.0 * std::cos(kLat0 * M_PI / 180.0));
    l.altitude_m = static_cast<uint16_t>(8 + static_cast<int>(y_ / 400) % 20);
    l.speed_kmh = std::round(speed_ * 10) / 10;
    // Compass heading: the grid's north is turned anticlockwise by kRot.
    double heading = std::fmod(kHeadingDeg[dir_] - kRot * 180.0 / M_PI + 360.0, 360.0);
    l.heading_deg = static_cast<uint16_t>(std::lround(heading) % 360);
    l.ts_ms = ts_ms - ts_ms % 1000;  // the wire carries whole seconds
    l.odometer_km = std::round(odometer_km_ * 10) / 10;
    l.fuel_l = std::round(fuel_l_ * 10) / 10;
    l.satellites = static_cast<uint8_t>(8 + rng_() % 7);
    l.signal_strength = static_cast<uint8_t>(18 + rng_() % 14);
    return l;
  }

 private:
  static constexpr double kLat0 = 24.478, kLon0 = 118.085;  // south-west corner of the grid
  static constexpr double kBlock = 300;                     // metres between intersections
  static constexpr int kCols = 22, kRows = 15;
  static constexpr double kRot = 0.26;  // radians (~15 degrees) anticlockwise
  static constexpr double kDx[4] = {0, 1, 0, -1}, kDy[4] = {1, 0, -1, 0};  // N E S W
  static constexpr double kHeadingDeg[4] = {0, 90, 180, 270};

  double Uniform(double a, double b) { return std::uniform_real_distribution<double>(a, b)(rng_); }
  void Turn() {
    to_next_ = kBlock;
    double r = Uniform(0, 1);
    int d = r < 0.5 ? dir_ : (r < 0.75 ? (dir_ + 1) % 4 : (dir_ + 3) % 4);
    // Stay inside the district: never drive off the grid.
    auto inside = [&](int dd) {
      double nx = x_ + kDx[dd] * kBlock, ny = y_ + kDy[dd] * kBlock;
      return nx >= -1 && ny >= -1 && nx <= (kCols - 1) * kBlock + 1 &&
             ny <= (kRows - 1) * kBlock + 1;
    };
    for (int k = 0; k < 4 && !inside(d); ++k) d = (d + 1) % 4;
    dir_ = d;
  }

  SplitMix64 rng_;
  double x_ = 0, y_ = 0, to_next_ = 0, speed_ = 0, target_ = 0, odometer_km_ = 0, fuel_l_ = 0;
  int dir_ = 0;
};

// One report (0x0200 or 0x0704) until the platform acknowledged it. It survives reconnects: a
// terminal keeps unacknowledged points and sends them again on its next connection.
struct Report {
  uint16_t msg_id = 0;
  Bytes body;
  int points = 1;
  bool inflight = false;
  bool resend = false;  // sent on an earlier connection that was lost before the ack
  uint16_t serial = 0;  // of the last packet sent (the one the platform acknowledges)
  TimePoint sent;
};

enum class State {
  kIdle,
  kWaitConnect,
  kConnecting,
  kRegistering,
  kAuthenticating,
  kOnline,
  kDone
};

struct Term {
  int index = 0;
  std::string phone;
  Bytes phone_bcd;
  std::optional<tcp::socket> sock;
  std::optional<asio::steady_timer> timer;
  State state = State::kIdle;
  uint32_t gen = 0;   // connection generation: callbacks of an older connection are ignored
  uint32_t tseq = 0;  // timer arm sequence: a stale expiry is ignored
  TimePoint timer_at = TimePoint::max();
  FrameSplitter splitter{1 << 16};
  std::array<uint8_t, 1024> rbuf{};
  Bytes out, wbuf;  // queued bytes and the bytes being written
  bool writing = false;
  uint16_t serial = 0;
  uint16_t handshake_serial = 0;
  std::string code;
  bool code_from_file = false;
  std::deque<Report> reports;
  int inflight = 0;
  int reports_made = 0, reports_acked = 0;
  TimePoint next_report, last_tx, last_advance;
  int backoff_ms = 0;
  bool ever_authenticated = false, in_storm = false;
  std::optional<Truck> truck;
};

class Sim {
 public:
  explicit Sim(Options o)
      : opt_(std::move(o)),
        signals_(io_, SIGINT, SIGTERM),
        stop_timer_(io_),
        storm_timer_(io_),
        rate_timer_(io_),
        progress_timer_(io_) {}

  int Run() {
    asio::error_code ec;
    server_ = tcp::endpoint(asio::ip::make_address_v4(opt_.host, ec), opt_.port);
    if (ec) return Usage("--host \"" + opt_.host + "\" is not an IPv4 address");
    if (auto st = ParseSourceIps(); !st.empty()) return Usage(st);
    LoadCodes();
    terms_.reserve(static_cast<size_t>(opt_.terminals));
    for (int i = 0; i < opt_.terminals; ++i) {
      auto t = std::make_unique<Term>();
      t->index = i;
      t->phone = std::to_string(opt_.phone_base + static_cast<uint64_t>(i));
      t->phone_bcd = BcdFromDigits(t->phone, opt_.v2019 ? 10 : 6);
      t->timer.emplace(io_);
      t->truck.emplace(opt_.phone_base + static_cast<uint64_t>(i) * 7919u);
      if (auto it = codes_.find(t->phone); it != codes_.end()) {
        t->code = it->second;
        t->code_from_file = true;
      }
      terms_.push_back(std::move(t));
      initial_q_.push_back(i);
    }
    started_ = SteadyClock::now();
    signals_.async_wait([this](asio::error_code e, int sig) {
      if (e) return;
      std::fprintf(stderr, "jt808_sim: signal %d, stopping\n", sig);
      Finish();
    });
    stop_timer_.expires_after(ToDuration(opt_.duration_s));
    stop_timer_.async_wait([this](asio::error_code e) {
      if (!e) BeginStop();
    });
    if (opt_.storm_at_s > 0) {
      storm_timer_.expires_after(ToDuration(opt_.storm_at_s));
      storm_timer_.async_wait([this](asio::error_code e) {
        if (!e) Storm();
      });
    }
    if (opt_.progress_s > 0) Progress();
    RateTick();
    io_.run();
    return 0;
  }

 private:
  static SteadyClock::duration ToDuration(double s) {
    return std::chrono::duration_cast<SteadyClock::duration>(std::chrono::duration<double>(s));
  }
  static int Usage(const std::string& why) {
    std::fprintf(stderr, "jt808_sim: %s\n", why.c_str());
    return 2;
  }

  // "127.0.0.2-127.0.0.9" or "127.0.0.2,127.0.0.3" (or a mix).
  std::string ParseSourceIps() {
    std::string s = opt_.source_ips;
    size_t pos = 0;
    while (pos < s.size()) {
      size_t comma = s.find(',', pos);
      std::string item =
          s.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
      pos = comma == std::string::npos ? s.size() : comma + 1;
      if (item.empty()) continue;
      size_t dash = item.find('-');
      asio::error_code e1, e2;
      auto a = asio::ip::make_address_v4(item.substr(0, dash), e1);
      auto b = dash == std::string::npos ? a : asio::ip::make_address_v4(item.substr(dash + 1), e2);
      if (e1 || e2 || b.to_uint() < a.to_uint() || b.to_uint() - a.to_uint() > 65535)
        return "--source-ips: \"" + item + "\" is not an IPv4 address or range A-B";
      for (uint32_t v = a.to_uint(); v <= b.to_uint(); ++v)
        sources_.push_back(asio::ip::address_v4(v));
    }
    return {};
  }

  // ---- connection management -------------------------------------------------------------

  // Initial connections obey --connect-rate; retries and the storm go through retry_q_, limited
  // only by --max-connecting (the number of TCP handshakes in progress at once).
  void RateTick() {
    if (stopping_) return;
    auto now = SteadyClock::now();
    if (opt_.connect_rate > 0) {
      double dt = std::chrono::duration<double>(now - last_rate_tick_).count();
      if (last_rate_tick_ == TimePoint{}) dt = 0.01;
      tokens_ = std::min(tokens_ + dt * opt_.connect_rate, std::max(1.0, opt_.connect_rate * 0.05));
    }
    last_rate_tick_ = now;
    ServeConnectQueues();
    if (initial_q_.empty()) return;
    rate_timer_.expires_after(Ms(10));
    rate_timer_.async_wait([this](asio::error_code e) {
      if (!e) RateTick();
    });
  }

  void ServeConnectQueues() {
    while (!stopping_ && connecting_ < opt_.max_connecting && !retry_q_.empty()) {
      int i = retry_q_.front();
      retry_q_.pop_front();
      Connect(*terms_[static_cast<size_t>(i)]);
    }
    while (!stopping_ && connecting_ < opt_.max_connecting && !initial_q_.empty()) {
      if (opt_.connect_rate > 0) {
        if (tokens_ < 1) break;
        tokens_ -= 1;
      }
      int i = initial_q_.front();
      initial_q_.pop_front();
      Connect(*terms_[static_cast<size_t>(i)]);
    }
  }

  void Connect(Term& t) {
    t.gen++;
    t.state = State::kIdle;
    t.sock.emplace(io_);
    asio::error_code ec;
    t.sock->open(tcp::v4(), ec);
    if (!ec && !sources_.empty()) {
      // Let connect() pick the port for the whole 4-tuple, or each source address runs out of
      // ports at ~28k no matter how many servers it talks to.
      int one = 1;
      ::setsockopt(t.sock->native_handle(), IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
      t.sock->bind(tcp::endpoint(sources_[static_cast<size_t>(t.index) % sources_.size()], 0), ec);
    }
    if (ec) return Fail(t, "socket", ec);  // EMFILE and the like: back off, like any failure
    t.state = State::kConnecting;
    connecting_++;
    ArmTimer(t, SteadyClock::now() + std::chrono::seconds(opt_.handshake_timeout_s));
    uint32_t gen = t.gen;
    t.sock->async_connect(server_, [this, &t, gen](asio::error_code e) {
      if (gen != t.gen || t.state != State::kConnecting) return;
      connecting_--;
      if (e) return Fail(t, "connect", e);
      asio::error_code ignore;
      t.sock->set_option(tcp::no_delay(true), ignore);
      connects_++;
      connected_now_++;
      t.splitter = FrameSplitter(1 << 16);
      t.out.clear();
      t.wbuf.clear();
      t.writing = false;
      Read(t);
      if (t.code.empty()) {
        Register(t);
      } else {
        Authenticate(t);
      }
      ServeConnectQueues();
    });
  }

  // Drops the connection (keeping unacknowledged reports for the next one).
  void Disconnect(Term& t) {
    if (t.state == State::kConnecting) connecting_--;
    if (t.state >= State::kRegistering && t.state <= State::kOnline) connected_now_--;
    if (t.state == State::kOnline) authenticated_now_--;
    t.gen++;
    if (t.sock) {
      asio::error_code ignore;
      t.sock->close(ignore);
    }
    t.writing = false;
    t.out.clear();
    for (auto& r : t.reports) {
      r.resend = r.resend || r.inflight;
      r.inflight = false;
    }
    total_inflight_ -= t.inflight;
    t.inflight = 0;
    t.state = State::kIdle;
    ++t.tseq;  // whatever the timer was armed for no longer applies
    t.timer_at = TimePoint::max();
    t.timer->cancel();
  }

  // An error on the way to (or on) a connection: close it and retry after a growing backoff,
  // so a refused or full server is not hammered.
  void Fail(Term& t, const char* what, const asio::error_code& ec) { Fail(t, what, ec.message()); }
  void Fail(Term& t, const char* what, const std::string& why) {
    bool was_online = t.state == State::kOnline;
    Disconnect(t);
    errors_++;
    if (errors_logged_ < 10) {
      errors_logged_++;
      std::fprintf(stderr, "jt808_sim: %s: %s: %s%s\n", t.phone.c_str(), what, why.c_str(),
                   errors_logged_ == 10 ? " (further errors are only counted)" : "");
    }
    if (stopping_) return;
    t.backoff_ms = was_online ? 500 : std::clamp(t.backoff_ms * 2, 500, 30000);
    std::uniform_real_distribution<double> jitter(0.5, 1.5);
    auto wait = Ms(static_cast<int64_t>(t.backoff_ms * jitter(rng_)));
    t.state = State::kWaitConnect;
    ArmTimer(t, SteadyClock::now() + wait);
  }

  void Reconnect(Term& t) {
    reconnects_++;
    t.state = State::kWaitConnect;
    retry_q_.push_back(t.index);
    ServeConnectQueues();
  }

  // ---- I/O ---------------------------------------------------------------------------------

  void Read(Term& t) {
    uint32_t gen = t.gen;
    t.sock->async_read_some(asio::buffer(t.rbuf), [this, &t, gen](asio::error_code e, size_t n) {
      if (gen != t.gen) return;
      if (e) return Fail(t, "read", e == asio::error::eof ? "closed by the server" : e.message());
      t.splitter.Feed(std::span<const uint8_t>(t.rbuf.data(), n));
      FrameSplitter::Chunk c;
      while (gen == t.gen && t.splitter.Next(c)) {
        if (c.kind == FrameSplitter::Kind::kOversize) return Fail(t, "read", "oversize frame");
        auto f = DecodeFrame(c.escaped);
        if (!f.ok()) {
          errors_++;
          continue;
        }
        OnFrame(t, *f);
      }
      if (gen == t.gen) Read(t);
    });
  }

  uint16_t Send(Term& t, uint16_t msg_id, std::span<const uint8_t> body,
                std::optional<std::pair<uint16_t, uint16_t>> packet = std::nullopt) {
    Header h;
    h.msg_id = msg_id;
    h.v2019 = opt_.v2019;
    h.phone_bcd = t.phone_bcd;
    h.phone = t.phone;
    h.serial = t.serial++;
    if (packet) {
      h.subpackage = true;
      h.packet_total = packet->first;
      h.packet_index = packet->second;
    }
    Bytes f = EncodeFrame(h, body);
    t.out.insert(t.out.end(), f.begin(), f.end());
    t.last_tx = SteadyClock::now();
    messages_sent_++;
    if (!t.writing) Flush(t);
    return h.serial;
  }

  // Everything queued goes out in one write; what is queued meanwhile waits for the next.
  void Flush(Term& t) {
    if (t.out.empty()) {
      t.writing = false;
      return;
    }
    t.writing = true;
    std::swap(t.out, t.wbuf);
    t.out.clear();
    uint32_t gen = t.gen;
    asio::async_write(*t.sock, asio::buffer(t.wbuf), [this, &t, gen](asio::error_code e, size_t) {
      if (gen != t.gen) return;
      if (e) return Fail(t, "write", e);
      t.wbuf.clear();
      Flush(t);
    });
  }

  // ---- protocol ----------------------------------------------------------------------------

  void Register(Term& t) {
    Registration reg;
    reg.province = 35;
    reg.city = 206;  // Xiamen
    reg.maker = "SANI1";
    reg.model = "SIM-808";
    reg.terminal_id = "T" + t.phone.substr(t.phone.size() - 6);
    reg.plate_color = 2;
    reg.plate = "闽D·" + t.phone.substr(t.phone.size() - 5);
    t.state = State::kRegistering;
    t.handshake_serial = Send(t, msg::kRegister, BuildRegistration(reg, opt_.v2019));
  }

  void Authenticate(Term& t) {
    Authentication a;
    a.code = t.code;
    a.imei =
        "86" + std::string(13 - std::min<size_t>(13, t.phone.size()), '0') + t.phone.substr(0, 13);
    a.software = "SIM-1.3.0";
    t.state = State::kAuthenticating;
    t.handshake_serial = Send(t, msg::kAuthenticate, BuildAuthentication(a, opt_.v2019));
  }

  void OnFrame(Term& t, const Frame& f) {
    const Bytes& b = f.body;
    auto u16 = [&](size_t at) { return static_cast<uint16_t>((b[at] << 8) | b[at + 1]); };
    switch (f.header.msg_id) {
      case msg::kRegisterResponse: {
        if (t.state != State::kRegistering || b.size() < 3 || u16(0) != t.handshake_serial) return;
        if (b[2] != 0) return Fail(t, "register", "0x8100 result " + std::to_string(b[2]));
        registered_++;
        t.code.assign(b.begin() + 3, b.end());
        t.code_from_file = false;
        codes_[t.phone] = t.code;
        return Authenticate(t);
      }
      case msg::kPlatformResponse: {
        if (b.size() < 5) return;
        uint16_t serial = u16(0), id = u16(2);
        uint8_t result = b[4];
        if (id == msg::kAuthenticate && t.state == State::kAuthenticating &&
            serial == t.handshake_serial) {
          if (result == 0) return Online(t);
          errors_++;
          // A remembered code the server no longer accepts (new secret): register again.
          if (t.code_from_file) {
            t.code.clear();
            t.code_from_file = false;
            return Register(t);
          }
          return Fail(t, "authenticate", "0x8001 result " + std::to_string(result));
        }
        if (id == msg::kLocation || id == msg::kBatchLocation)
          return OnReportAck(t, serial, result);
        return;  // heartbeats, intermediate subpackages, command answers
      }
      case msg::kPositionQuery:
        if (!opt_.answer_commands || t.state != State::kOnline) return;
        {
          Bytes body{static_cast<uint8_t>(f.header.serial >> 8),
                     static_cast<uint8_t>(f.header.serial)};
          Bytes loc = BuildLocation(CurrentLocation(t, SteadyClock::now(), 0));
          body.insert(body.end(), loc.begin(), loc.end());
          Send(t, msg::kPositionReply, body);
          commands_answered_++;
        }
        return;
      case msg::kSetParams:
      case msg::kTextMessage:
      case msg::kAlarmConfirm:
        if (!opt_.answer_commands || t.state != State::kOnline) return;
        Send(t, msg::kTerminalResponse,
             BuildTerminalResponse({f.header.serial, f.header.msg_id, 0}));
        commands_answered_++;
        return;
      default:
        return;
    }
  }

  void Online(Term& t) {
    auto now = SteadyClock::now();
    t.state = State::kOnline;
    t.backoff_ms = 0;
    authenticated_now_++;
    auths_++;
    peak_authenticated_ = std::max(peak_authenticated_, authenticated_now_);
    if (t.in_storm) {
      t.in_storm = false;
      if (++storm_back_ == storm_count_)
        storm_reconnect_s_ = std::chrono::duration<double>(now - storm_started_).count();
    }
    if (!t.ever_authenticated) {
      t.ever_authenticated = true;
      t.last_advance = now;
      // Spread the first reports over one interval so 1 Hz terminals do not report in lockstep.
      std::uniform_int_distribution<int> phase(0, std::max(0, opt_.interval_ms - 1));
      t.next_report = now + Ms(phase(rng_));
    } else if (t.next_report < now) {
      t.next_report = now;
    }
    Pump(t);
  }

  Location CurrentLocation(Term& t, TimePoint now, uint32_t alarm) {
    t.truck->Advance(std::chrono::duration<double>(now - t.last_advance).count());
    t.last_advance = now;
    return t.truck->Sample(WallMs(), alarm);
  }
  static int64_t WallMs() {
    return std::chrono::duration_cast<Ms>(std::chrono::system_clock::now().time_since_epoch())
        .count();
  }

  uint32_t NextAlarm(Term& t) {
    // Every K-th report raises SOS; the one after clears it (the gateway sees active, cleared).
    if (opt_.sos_every > 0 && t.reports_made % opt_.sos_every == 0) return 1u << alarm_bit::kSos;
    return 0;
  }

  void MakeReport(Term& t, TimePoint now) {
    t.reports_made++;
    uint32_t alarm = NextAlarm(t);
    Report r;
    if (opt_.batch > 0) {
      // A blind-area back-fill: N points the truck stored while out of coverage, spaced evenly
      // over the last interval, oldest first.
      double span_s = std::max(1.0, opt_.interval_ms / 1000.0);
      double dt = span_s / opt_.batch;
      int64_t wall = WallMs();
      std::vector<Location> pts;
      pts.reserve(static_cast<size_t>(opt_.batch));
      for (int k = 0; k < opt_.batch; ++k) {
        t.truck->Advance(dt);
        int64_t ts = wall - static_cast<int64_t>((opt_.batch - 1 - k) * dt * 1000);
        pts.push_back(t.truck->Sample(ts, alarm));
      }
      t.last_advance = now;
      r.msg_id = msg::kBatchLocation;
      r.body = BuildBatchLocation(pts, /*backfill=*/true);
      r.points = opt_.batch;
    } else {
      r.msg_id = msg::kLocation;
      r.body = BuildLocation(CurrentLocation(t, now, alarm));
    }
    t.reports.push_back(std::move(r));
  }

  void SendReport(Term& t, Report& r, TimePoint now) {
    constexpr size_t kMaxBody = 1023;
    if (r.body.size() <= kMaxBody) {
      r.serial = Send(t, r.msg_id, r.body);
    } else {
      size_t n = (r.body.size() + kMaxBody - 1) / kMaxBody;
      size_t per = (r.body.size() + n - 1) / n;
      for (size_t k = 0; k < n; ++k) {
        size_t from = k * per, len = std::min(per, r.body.size() - from);
        r.serial = Send(t, r.msg_id, std::span<const uint8_t>(r.body).subspan(from, len),
                        std::pair(static_cast<uint16_t>(n), static_cast<uint16_t>(k + 1)));
      }
    }
    r.inflight = true;
    r.sent = now;
    t.inflight++;
    total_inflight_++;
    if (r.resend) {
      resent_++;
    } else {
      reports_sent_++;
      points_sent_ += static_cast<uint64_t>(r.points);
    }
    if (first_report_ == TimePoint{}) first_report_ = now;
  }

  // Sends what is due (resends first, then new reports while fewer than --pipeline are
  // unacknowledged), a heartbeat if the line was quiet, and arms the timer for what is next.
  void Pump(Term& t) {
    if (t.state != State::kOnline) return;
    auto now = SteadyClock::now();
    bool reporting =
        opt_.interval_ms > 0 && !stopping_ && (opt_.reports == 0 || t.reports_made < opt_.reports);
    for (auto& r : t.reports) {  // unsent ones (after a reconnect) follow the in-flight prefix
      if (t.inflight >= opt_.pipeline) break;
      if (!r.inflight && !stopping_) SendReport(t, r, now);
    }
    while (reporting && t.inflight < opt_.pipeline && t.next_report <= now) {
      MakeReport(t, now);
      SendReport(t, t.reports.back(), now);
      t.next_report += Ms(opt_.interval_ms);
      // Behind by more than a second (acks slower than the rate): do not build up a burst.
      if (t.next_report < now - std::chrono::seconds(1))
        t.next_report = now - std::chrono::seconds(1);
      reporting = opt_.reports == 0 || t.reports_made < opt_.reports;
    }
    if (opt_.reports > 0 && t.reports_made >= opt_.reports && t.reports.empty()) return Done(t);
    auto hb_due = t.last_tx + std::chrono::seconds(opt_.heartbeat_s);
    if (opt_.heartbeat_s > 0 && hb_due <= now) {
      Send(t, msg::kHeartbeat, {});
      heartbeats_++;
      hb_due = t.last_tx + std::chrono::seconds(opt_.heartbeat_s);
    }
    TimePoint next = opt_.heartbeat_s > 0 ? hb_due : TimePoint::max();
    if (reporting && t.inflight < opt_.pipeline) next = std::min(next, t.next_report);
    // Only re-arm for an earlier time: an early expiry just calls Pump, which re-arms.
    if (next < t.timer_at || t.timer_at <= now) ArmTimer(t, next);
  }

  void OnReportAck(Term& t, uint16_t serial, uint8_t result) {
    if (t.state != State::kOnline) return;
    auto it = std::find_if(t.reports.begin(), t.reports.end(),
                           [&](const Report& r) { return r.inflight && r.serial == serial; });
    if (it == t.reports.end()) return;  // an intermediate subpackage, or a duplicate
    auto now = SteadyClock::now();
    if (result == 0) {
      acks_ok_++;
      points_acked_ += static_cast<uint64_t>(it->points);
      hist_.Add(static_cast<uint64_t>(
          std::chrono::duration_cast<std::chrono::microseconds>(now - it->sent).count()));
    } else {
      acks_fail_++;  // the gateway could not store it; a real terminal would retry later
    }
    last_ack_ = now;
    t.reports_acked++;
    t.inflight--;
    total_inflight_--;
    t.reports.erase(it);
    Pump(t);
    if (stopping_) MaybeFinishDrain();
  }

  void Done(Term& t) {
    Disconnect(t);
    t.state = State::kDone;
    if (++done_ == opt_.terminals) {
      std::fprintf(stderr, "jt808_sim: every terminal sent its %d reports\n", opt_.reports);
      Finish();
    }
  }

  // ---- timers ------------------------------------------------------------------------------

  void ArmTimer(Term& t, TimePoint at) {
    uint32_t seq = ++t.tseq;
    t.timer_at = at;
    if (at == TimePoint::max()) {
      t.timer->cancel();
      return;
    }
    t.timer->expires_at(at);
    t.timer->async_wait([this, &t, seq](asio::error_code e) {
      if (e || seq != t.tseq) return;
      t.timer_at = TimePoint::max();
      switch (t.state) {
        case State::kConnecting:
        case State::kRegistering:
        case State::kAuthenticating:
          return Fail(t, "handshake",
                      "no answer within " + std::to_string(opt_.handshake_timeout_s) + " s");
        case State::kWaitConnect:
          return Reconnect(t);
        case State::kOnline:
          return Pump(t);
        default:
          return;
      }
    });
  }

  void Storm() {
    if (stopping_) return;
    storm_started_ = SteadyClock::now();
    storm_count_ = storm_back_ = 0;
    for (auto& tp : terms_) {
      Term& t = *tp;
      if (t.state != State::kOnline) continue;
      Disconnect(t);
      t.in_storm = true;
      storm_count_++;
      t.state = State::kWaitConnect;
      retry_q_.push_back(t.index);
      reconnects_++;
    }
    std::fprintf(stderr, "jt808_sim: storm: closed %d connections, reconnecting all\n",
                 storm_count_);
    ServeConnectQueues();
  }

  void Progress() {
    progress_timer_.expires_after(ToDuration(opt_.progress_s));
    progress_timer_.async_wait([this](asio::error_code e) {
      if (e || finished_) return;
      std::fprintf(
          stderr,
          "jt808_sim: t=%.0fs connected %d authenticated %d reports %llu acks %llu errors %llu\n",
          Elapsed(), connected_now_, authenticated_now_, (unsigned long long)reports_sent_,
          (unsigned long long)acks_ok_, (unsigned long long)errors_);
      Progress();
    });
  }
  double Elapsed() const {
    return std::chrono::duration<double>(SteadyClock::now() - started_).count();
  }

  // ---- stopping ----------------------------------------------------------------------------

  // The duration is over: no new reports; give the acks in flight --drain-ms to arrive.
  void BeginStop() {
    if (stopping_ || finished_) return;
    stopping_ = true;
    stop_requested_ = SteadyClock::now();
    rate_timer_.cancel();
    storm_timer_.cancel();
    MaybeFinishDrain();
    if (finished_) return;
    stop_timer_.expires_after(Ms(opt_.drain_ms));
    stop_timer_.async_wait([this](asio::error_code e) {
      if (!e) Finish();
    });
  }

  void MaybeFinishDrain() {
    if (total_inflight_ == 0) Finish();
  }

  void Finish() {
    if (finished_) return;
    finished_ = true;
    stopping_ = true;
    auto end = SteadyClock::now();
    int connected = connected_now_, authenticated = authenticated_now_;
    uint64_t unacked = 0;
    for (auto& tp : terms_) {
      unacked += tp->reports.size();  // sent and unanswered, or waiting to be sent again
      Disconnect(*tp);
      tp->timer->cancel();
    }
    signals_.cancel();
    stop_timer_.cancel();
    storm_timer_.cancel();
    rate_timer_.cancel();
    progress_timer_.cancel();
    SaveCodes();
    double run_s = std::chrono::duration<double>(
                       (stop_requested_ == TimePoint{} ? end : stop_requested_) - started_)
                       .count();
    double window = first_report_ == TimePoint{} || last_ack_ <= first_report_
                        ? 0
                        : std::chrono::duration<double>(last_ack_ - first_report_).count();
    double rate = window > 0 ? static_cast<double>(acks_ok_) / window : 0;
    double prate = window > 0 ? static_cast<double>(points_acked_) / window : 0;
    // The figures, in this order, for stdout and --stats-json.
    std::vector<std::pair<std::string, std::string>> kv;
    auto num = [](double v, int decimals) {
      char b[64];
      std::snprintf(b, sizeof b, "%.*f", decimals, v);
      return std::string(b);
    };
    auto add = [&](const char* k, uint64_t v) { kv.emplace_back(k, std::to_string(v)); };
    add("terminals", static_cast<uint64_t>(opt_.terminals));
    kv.emplace_back("run_s", num(run_s, 3));
    add("connected", static_cast<uint64_t>(connected));
    add("authenticated", static_cast<uint64_t>(authenticated));
    add("peak_authenticated", static_cast<uint64_t>(peak_authenticated_));
    add("connects", connects_);
    add("registered", registered_);
    add("authentications", auths_);
    add("reports_sent", reports_sent_);
    add("points_sent", points_sent_);
    add("acks_ok", acks_ok_);
    add("acks_fail", acks_fail_);
    add("unacked", unacked);
    add("resent", resent_);
    add("heartbeats", heartbeats_);
    add("reconnects", reconnects_);
    add("errors", errors_);
    add("commands_answered", commands_answered_);
    kv.emplace_back("ack_p50_ms", num(hist_.PercentileMs(0.50), 3));
    kv.emplace_back("ack_p99_ms", num(hist_.PercentileMs(0.99), 3));
    kv.emplace_back("ack_max_ms", num(hist_.MaxMs(), 3));
    kv.emplace_back("msgs_per_s", num(rate, 1));
    kv.emplace_back("points_per_s", num(prate, 1));
    if (opt_.storm_at_s > 0) {
      add("storm_terminals", static_cast<uint64_t>(storm_count_));
      add("storm_reconnected", static_cast<uint64_t>(storm_back_));
      // -1: not every terminal of the storm came back before the end.
      kv.emplace_back("storm_reconnect_s",
                      num(storm_back_ == storm_count_ ? storm_reconnect_s_ : -1.0, 3));
    }
    std::string json = "{", line = "jt808_sim:";
    for (const auto& [k, v] : kv) {
      json += (json.size() > 1 ? ",\"" : "\"") + k + "\":" + v;
      line += " " + k + "=" + v;
    }
    json += "}";
    std::printf("%s\n", line.c_str());
    std::fflush(stdout);
    if (!opt_.stats_json.empty()) {
      std::string tmp = opt_.stats_json + ".tmp";
      if (FILE* f = std::fopen(tmp.c_str(), "w")) {
        std::fprintf(f, "%s\n", json.c_str());
        std::fclose(f);
        std::rename(tmp.c_str(), opt_.stats_json.c_str());
      }
    }
    io_.stop();
  }

  // ---- auth codes across runs --------------------------------------------------------------

  void LoadCodes() {
    if (opt_.codes_file.empty()) return;
    std::ifstream in(opt_.codes_file);
    std::string phone, code;
    while (in >> phone >> code) codes_[phone] = code;
  }
  void SaveCodes() {
    if (opt_.codes_file.empty()) return;
    std::string tmp = opt_.codes_file + ".tmp";
    {
      std::ofstream out(tmp, std::ios::trunc);
      for (const auto& [phone, code] : codes_) out << phone << ' ' << code << '\n';
      if (!out) return;
    }
    std::rename(tmp.c_str(), opt_.codes_file.c_str());
  }

  Options opt_;
  asio::io_context io_{1};  // declared before sockets and timers: it outlives them
  asio::signal_set signals_;
  asio::steady_timer stop_timer_, storm_timer_, rate_timer_, progress_timer_;
  tcp::endpoint server_;
  std::vector<asio::ip::address_v4> sources_;
  std::vector<std::unique_ptr<Term>> terms_;
  std::unordered_map<std::string, std::string> codes_;
  std::deque<int> initial_q_, retry_q_;
  std::mt19937_64 rng_{12345};
  double tokens_ = 0;
  TimePoint last_rate_tick_{}, started_{}, first_report_{}, last_ack_{}, stop_requested_{};
  TimePoint storm_started_{};
  int64_t total_inflight_ = 0;
  int connecting_ = 0, connected_now_ = 0, authenticated_now_ = 0, peak_authenticated_ = 0,
      done_ = 0;
  int storm_count_ = 0, storm_back_ = 0, errors_logged_ = 0;
  double storm_reconnect_s_ = 0;
  bool stopping_ = false, finished_ = false;
  uint64_t connects_ = 0, registered_ = 0, auths_ = 0, reports_sent_ = 0, points_sent_ = 0,
           acks_ok_ = 0, acks_fail_ = 0, points_acked_ = 0, heartbeats_ = 0, reconnects_ = 0,
           errors_ = 0, messages_sent_ = 0, commands_answered_ = 0, resent_ = 0;
  Histogram hist_;
};

// Each terminal holds a socket; the hard limit is the ceiling (20000 here: run several
// simulators for more).
void RaiseFileLimit() {
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) != 0) return;
  if (lim.rlim_cur < lim.rlim_max) {
    lim.rlim_cur = lim.rlim_max;
    (void)setrlimit(RLIMIT_NOFILE, &lim);
  }
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App cli{"jt808_sim: many JT/T 808 terminals (sanitation trucks) on one thread"};
  cli.add_option("--host", o.host, "server IPv4 address")->capture_default_str();
  cli.add_option("--port", o.port, "server port")->capture_default_str();
  cli.add_option("--terminals", o.terminals, "number of terminals")->check(CLI::Range(1, 1000000));
  cli.add_option("--phone-base", o.phone_base, "phone of terminal i = base + i")
      ->capture_default_str();
  cli.add_flag("--v2019", o.v2019, "2019 headers (protocol version, BCD[10] phone)");
  cli.add_option("--source-ips", o.source_ips,
                 "bind round-robin to these, e.g. 127.0.0.2-127.0.0.9");
  cli.add_option("--interval-ms", o.interval_ms, "0x0200 period per terminal (0 = heartbeats only)")
      ->check(CLI::Range(0, 86400000))
      ->capture_default_str();
  cli.add_option("--heartbeat-s", o.heartbeat_s,
                 "heartbeat after this long without sending (0 = none)")
      ->check(CLI::Range(0, 86400))
      ->capture_default_str();
  cli.add_option("--duration-s", o.duration_s, "stop after this many seconds")
      ->required()
      ->check(CLI::Range(0.1, 86400.0));
  cli.add_option("--reports", o.reports,
                 "stop each terminal after K acknowledged reports (0 = until duration)")
      ->check(CLI::NonNegativeNumber);
  cli.add_option("--connect-rate", o.connect_rate,
                 "new connections per second (0 = as fast as possible)")
      ->check(CLI::NonNegativeNumber);
  cli.add_option("--batch", o.batch,
                 "every report is a 0x0704 back-fill of N points (subpackaged when > 1023 B)")
      ->check(CLI::Range(0, 1000));
  cli.add_option("--sos-every", o.sos_every,
                 "every K-th report has the SOS alarm bit, the next clears it")
      ->check(CLI::NonNegativeNumber);
  cli.add_option("--codes-file", o.codes_file, "auth codes kept across runs (phone code per line)");
  cli.add_option("--storm-at-s", o.storm_at_s,
                 "close every connection at S s and reconnect all at once")
      ->check(CLI::NonNegativeNumber);
  cli.add_flag("--answer-commands", o.answer_commands,
               "answer 0x8201 with 0x0201, 0x8103/0x8300/0x8203 with 0x0001");
  cli.add_option("--stats-json", o.stats_json, "write the final figures here");
  cli.add_option("--pipeline", o.pipeline, "unacknowledged reports per terminal at most")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  cli.add_option("--max-connecting", o.max_connecting, "TCP handshakes in progress at once")
      ->check(CLI::Range(1, 100000))
      ->capture_default_str();
  cli.add_option("--drain-ms", o.drain_ms, "after the duration, wait this long for acks in flight")
      ->check(CLI::Range(0, 60000))
      ->capture_default_str();
  cli.add_option("--handshake-timeout-s", o.handshake_timeout_s,
                 "connect/register/authenticate answer timeout")
      ->check(CLI::Range(1, 600))
      ->capture_default_str();
  cli.add_option("--progress-s", o.progress_s,
                 "print a progress line on stderr every S s (0 = never)")
      ->check(CLI::NonNegativeNumber);
  CLI11_PARSE(cli, argc, argv);
  RaiseFileLimit();
  std::signal(SIGPIPE, SIG_IGN);
  Sim sim(o);
  return sim.Run();
}
