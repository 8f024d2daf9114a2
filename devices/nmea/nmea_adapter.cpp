#include "nmea/nmea_adapter.h"
#include "core/thread_name.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <exception>
#include <list>
#include <mutex>
#include <optional>
#include <thread>

#include "core/clock.h"
#include "nmea/nmea_epoch.h"
#include "nmea/nmea_parser.h"
#include "runtime/asio.h"

namespace sanigate::dev::nmea {
namespace {

using tcp = asio::ip::tcp;
using namespace std::chrono_literals;

// A pending epoch is completed when its source has been quiet this long: the receiver stopped
// (power, antenna cable, connection), so the next epoch that would complete it may never come.
constexpr auto kEpochIdle = 1500ms;
constexpr auto kReopenDelay = 1s;  // serial: between attempts to (re)open the port
constexpr size_t kReadChunk = 1024;

// The 1st, 10th, 100th ... occurrence: a stream of bad input must not flood the log.
bool LogWorthy(uint64_t n) {
  while (n >= 10 && n % 10 == 0) n /= 10;
  return n == 1;
}

// A line as it may appear in a log: bounded, control bytes shown as '?'.
std::string Excerpt(std::string_view line) {
  std::string s(line.substr(0, 48));
  for (char& c : s)
    if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) > 0x7E) c = '?';
  return line.size() > 48 ? s + "..." : s;
}

struct Connection {
  explicit Connection(tcp::socket s) : socket(std::move(s)) {}
  tcp::socket socket;
  std::string peer;
  SteadyClock::time_point last_activity = SteadyClock::now();
};

// Counters Health() reads from any thread; guarded by Impl::mu.
struct Counters {
  bool online = false;
  bool port_open = false;  // listening, or the serial port is open
  uint64_t sentences = 0;  // candidate sentences, valid or not
  uint64_t errors = 0;     // bad checksum, malformed, overlong, cut short
  std::string last_error;
};

// One configured source: its transport, its epoch state and its device's online state.
struct Source {
  Source(SourceConfig c, asio::io_context& io)
      : cfg(std::move(c)),
        assembler(NowMs),
        throttle(cfg.min_interval_ms),
        watchdog(io),
        reopen(io) {}

  const SourceConfig cfg;
  // io thread only
  EpochAssembler assembler;
  Throttle throttle;
  asio::steady_timer watchdog;  // the idle-epoch flush and the offline deadline
  asio::steady_timer reopen;    // serial: the wait before the next open attempt
  std::optional<tcp::acceptor> acceptor;
  std::optional<asio::serial_port> serial;
  std::list<std::shared_ptr<Connection>> connections;
  bool online = false;
  bool announced = false;  // a status was published (so going online again clears `offline`)
  SteadyClock::time_point last_valid = SteadyClock::now();
  std::optional<int64_t> last_seen_ms;  // wall time of the last valid sentence
  // any thread, under Impl::mu
  Counters counters;
};

}  // namespace

struct NmeaAdapter::Impl {
  explicit Impl(NmeaConfig c) : cfg(std::move(c)) {}

  asio::awaitable<void> Accept(Source& s);
  asio::awaitable<void> Read(Source& s, std::shared_ptr<Connection> c);
  asio::awaitable<void> Serial(Source& s);
  asio::awaitable<void> Watchdog(Source& s);
  void Spawn(asio::awaitable<void> task, std::string what);

  void OnBytes(Source& s, LineSplitter& splitter, std::string_view bytes);
  void Alive(Source& s, std::vector<Record>& out);
  void Offline(Source& s, std::vector<Record>& out);
  void FlushEpoch(Source& s, std::vector<Record>& out);
  SteadyClock::time_point NextDeadline(const Source& s) const;
  void Rearm(Source& s);
  void Emit(std::vector<Record>& out);
  void PortState(Source& s, bool open, const std::string& error);
  void CloseAll();

  NmeaConfig cfg;
  // Declared before the sources: their timers, acceptors and ports must go first.
  asio::io_context io{1};
  std::vector<std::unique_ptr<Source>> sources;
  std::thread thread;
  RecordSink* sink = nullptr;
  bool stopping = false;  // io thread only

  mutable std::mutex mu;
  enum class State { kCreated, kRunning, kStopped, kFailed } state = State::kCreated;  // under mu
};

void NmeaAdapter::Impl::Spawn(asio::awaitable<void> task, std::string what) {
  asio::co_spawn(io, std::move(task), [what = std::move(what)](std::exception_ptr e) {
    if (!e) return;
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& ex) {
      spdlog::error("nmea: {} ended with an exception: {}", what, ex.what());
    } catch (...) {
      spdlog::error("nmea: {} ended with an unknown exception", what);
    }
  });
}

void NmeaAdapter::Impl::Emit(std::vector<Record>& out) {
  if (out.empty()) return;
  sink->EmitBatch(std::move(out));
  out.clear();
}

void NmeaAdapter::Impl::PortState(Source& s, bool open, const std::string& error) {
  std::lock_guard lk(mu);
  s.counters.port_open = open;
  if (!error.empty()) s.counters.last_error = error;
}

void NmeaAdapter::Impl::OnBytes(Source& s, LineSplitter& splitter, std::string_view bytes) {
  const SplitterStats before = splitter.stats();
  std::vector<std::string> lines;
  splitter.Feed(bytes, lines);
  const SplitterStats& after = splitter.stats();

  uint64_t sentences = lines.size(), errors = 0;
  std::string last_error;
  if (uint64_t n = after.overlong - before.overlong) {
    sentences += n, errors += n;
    last_error = "sentence longer than " + std::to_string(kMaxSentence) + " characters discarded";
  }
  if (uint64_t n = after.truncated - before.truncated) {
    sentences += n, errors += n;
    last_error = "sentence cut short by the next '$' discarded";
  }
  std::vector<Record> out;
  std::vector<Fix> fixes;
  for (const auto& line : lines) {
    ParseResult r = ParseSentence(line);
    if (r.ok()) {
      Alive(s, out);
      s.assembler.Add(r.sentence, fixes);
    } else if (r.status != ParseStatus::kUnsupported) {
      errors++;
      last_error = r.error + " in " + Excerpt(line);
    }
  }
  for (const auto& f : fixes)
    if (s.throttle.Admit(f)) out.push_back(ToReading(f, s.cfg.device, s.cfg.kind));

  uint64_t total_errors = 0;
  {
    std::lock_guard lk(mu);
    s.counters.sentences += sentences;
    s.counters.errors += errors;
    if (errors) s.counters.last_error = last_error;
    total_errors = s.counters.errors;
  }
  // Log when the running count crosses 1, 10, 100 ... (a chunk may add several at once).
  for (uint64_t n = total_errors - errors + 1; errors && n <= total_errors; ++n) {
    if (!LogWorthy(n)) continue;
    spdlog::warn("nmea: {}: {} ({} bad sentences so far)", s.cfg.device, last_error, total_errors);
    break;
  }
  Emit(out);
  Rearm(s);
}

void NmeaAdapter::Impl::Alive(Source& s, std::vector<Record>& out) {
  s.last_valid = SteadyClock::now();
  int64_t now_ms = NowMs();
  s.last_seen_ms = now_ms;
  if (s.online) return;
  out.push_back(MakeStatus(s.cfg.device, s.cfg.kind, "nmea", now_ms, true, now_ms));
  if (s.announced) {
    out.push_back(MakeEvent(s.cfg.device, s.cfg.kind, "nmea", now_ms, "offline",
                            EventState::kCleared, Severity::kWarning));
    spdlog::info("nmea: {} is back online ({})", s.cfg.device, s.cfg.Endpoint());
  }
  s.online = s.announced = true;
  std::lock_guard lk(mu);
  s.counters.online = true;
}

void NmeaAdapter::Impl::Offline(Source& s, std::vector<Record>& out) {
  FlushEpoch(s, out);  // what the receiver said last is still a valid measurement
  int64_t now_ms = NowMs();
  std::string reason = "no valid NMEA sentence for " + std::to_string(s.cfg.offline_after_s) +
                       " s on " + s.cfg.Endpoint();
  out.push_back(
      MakeStatus(s.cfg.device, s.cfg.kind, "nmea", now_ms, false, s.last_seen_ms, reason));
  Record ev = MakeEvent(s.cfg.device, s.cfg.kind, "nmea", now_ms, "offline", EventState::kActive,
                        Severity::kWarning);
  ev.message = reason;
  out.push_back(std::move(ev));
  spdlog::warn("nmea: {} is offline: {}", s.cfg.device, reason);
  s.online = false;
  s.announced = true;
  std::lock_guard lk(mu);
  s.counters.online = false;
}

void NmeaAdapter::Impl::FlushEpoch(Source& s, std::vector<Record>& out) {
  std::vector<Fix> fixes;
  s.assembler.Flush(fixes);
  for (const auto& f : fixes)
    if (s.throttle.Admit(f)) out.push_back(ToReading(f, s.cfg.device, s.cfg.kind));
}

SteadyClock::time_point NmeaAdapter::Impl::NextDeadline(const Source& s) const {
  auto next = SteadyClock::time_point::max();
  if (s.assembler.pending()) next = std::min(next, s.last_valid + kEpochIdle);
  // Offline is announced once; a source never heard from is announced offline too.
  if (s.online || !s.announced)
    next = std::min(next, s.last_valid + std::chrono::seconds(s.cfg.offline_after_s));
  return next;
}

void NmeaAdapter::Impl::Rearm(Source& s) {
  // Deadlines only move later while the watchdog sleeps, except when an epoch starts pending or
  // the device comes back: then wake it to sleep until the earlier deadline.
  if (NextDeadline(s) < s.watchdog.expiry()) s.watchdog.cancel();
}

asio::awaitable<void> NmeaAdapter::Impl::Watchdog(Source& s) {
  while (!stopping) {
    auto now = SteadyClock::now();
    std::vector<Record> out;
    if (s.assembler.pending() && now >= s.last_valid + kEpochIdle) FlushEpoch(s, out);
    if ((s.online || !s.announced) &&
        now >= s.last_valid + std::chrono::seconds(s.cfg.offline_after_s))
      Offline(s, out);
    Emit(out);
    s.watchdog.expires_at(NextDeadline(s));
    asio::error_code ec;
    co_await s.watchdog.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
}

asio::awaitable<void> NmeaAdapter::Impl::Accept(Source& s) {
  while (!stopping) {
    asio::error_code ec;
    tcp::socket sock =
        co_await s.acceptor->async_accept(asio::redirect_error(asio::use_awaitable, ec));
    if (stopping) break;
    if (ec) {
      // Out of file descriptors and the like: wait a little instead of spinning.
      PortState(s, true, "accept failed: " + ec.message());
      spdlog::warn("nmea: {}: accept on {} failed: {}", s.cfg.device, s.cfg.Endpoint(),
                   ec.message());
      s.reopen.expires_after(100ms);
      co_await s.reopen.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      continue;
    }
    auto c = std::make_shared<Connection>(std::move(sock));
    auto ep = c->socket.remote_endpoint(ec);
    c->peer = ec ? "?" : ep.address().to_string() + ":" + std::to_string(ep.port());
    // Dead connections of mobile trackers linger (no FIN through a carrier NAT); keepalive
    // finds them eventually, and at the limit a new connection replaces the quietest one, so a
    // tracker that reconnects is never locked out by its own ghost.
    c->socket.set_option(asio::socket_base::keep_alive(true), ec);
    if (static_cast<int>(s.connections.size()) >= s.cfg.max_connections) {
      auto quietest = std::min_element(
          s.connections.begin(), s.connections.end(),
          [](const auto& a, const auto& b) { return a->last_activity < b->last_activity; });
      spdlog::warn("nmea: {}: max_connections ({}) reached; closing the quietest, from {}",
                   s.cfg.device, s.cfg.max_connections, (*quietest)->peer);
      (*quietest)->socket.close(ec);  // its reader ends and forgets it
      s.connections.erase(quietest);
    }
    spdlog::info("nmea: {}: connection from {} on {}", s.cfg.device, c->peer, s.cfg.Endpoint());
    s.connections.push_back(c);
    Spawn(Read(s, c), s.cfg.device + " connection from " + c->peer);
  }
}

asio::awaitable<void> NmeaAdapter::Impl::Read(Source& s, std::shared_ptr<Connection> c) {
  std::string why;
  try {
    LineSplitter splitter;
    std::array<char, kReadChunk> buf{};
    for (;;) {
      asio::error_code ec;
      size_t n = co_await c->socket.async_read_some(asio::buffer(buf),
                                                    asio::redirect_error(asio::use_awaitable, ec));
      if (stopping) break;
      if (ec) {
        why = ec == asio::error::eof ? "closed by the peer" : ec.message();
        break;
      }
      c->last_activity = SteadyClock::now();
      OnBytes(s, splitter, std::string_view(buf.data(), n));
    }
  } catch (const std::exception& e) {
    why = e.what();
  }
  if (stopping) co_return;
  s.connections.remove(c);
  asio::error_code ignored;
  c->socket.close(ignored);
  spdlog::info("nmea: {}: connection from {} ended: {}", s.cfg.device, c->peer, why);
}

asio::awaitable<void> NmeaAdapter::Impl::Serial(Source& s) {
  // The last open error logged: an absent port is logged once, not every second.
  std::string logged;
  while (!stopping) {
    asio::error_code ec;
    s.serial.emplace(io);
    s.serial->open(s.cfg.serial, ec);
    using base = asio::serial_port_base;
    if (!ec) s.serial->set_option(base::baud_rate(static_cast<unsigned>(s.cfg.baud)), ec);
    if (!ec) s.serial->set_option(base::character_size(8), ec);
    if (!ec) s.serial->set_option(base::parity(base::parity::none), ec);
    if (!ec) s.serial->set_option(base::stop_bits(base::stop_bits::one), ec);
    if (!ec) s.serial->set_option(base::flow_control(base::flow_control::none), ec);
    if (ec) {
      std::string error = "cannot open " + s.cfg.serial + ": " + ec.message();
      PortState(s, false, error);
      if (error != logged) spdlog::warn("nmea: {}: {}; retrying every second", s.cfg.device, error);
      logged = error;
    } else {
      spdlog::info("nmea: {}: reading {} at {} baud", s.cfg.device, s.cfg.serial, s.cfg.baud);
      logged.clear();
      PortState(s, true, "");
      LineSplitter splitter;
      std::array<char, kReadChunk> buf{};
      for (;;) {
        size_t n = co_await s.serial->async_read_some(
            asio::buffer(buf), asio::redirect_error(asio::use_awaitable, ec));
        if (stopping || ec) break;
        OnBytes(s, splitter, std::string_view(buf.data(), n));
      }
      if (stopping) break;
      std::string error = s.cfg.serial + " failed: " + ec.message();
      PortState(s, false, error);
      spdlog::warn("nmea: {}: {}; reopening every second", s.cfg.device, error);
    }
    asio::error_code ignored;
    s.serial->close(ignored);
    if (stopping) break;
    s.reopen.expires_after(kReopenDelay);
    co_await s.reopen.async_wait(asio::redirect_error(asio::use_awaitable, ignored));
  }
}

void NmeaAdapter::Impl::CloseAll() {
  stopping = true;
  std::vector<Record> out;
  for (auto& sp : sources) {
    Source& s = *sp;
    FlushEpoch(s, out);
    asio::error_code ignored;
    if (s.acceptor) s.acceptor->close(ignored);
    if (s.serial) s.serial->close(ignored);
    for (auto& c : s.connections) c->socket.close(ignored);
    s.connections.clear();
    s.watchdog.cancel();
    s.reopen.cancel();
  }
  Emit(out);
}

NmeaAdapter::NmeaAdapter(NmeaConfig config) : impl_(std::make_unique<Impl>(std::move(config))) {}

NmeaAdapter::~NmeaAdapter() { Stop(); }

Status NmeaAdapter::Start(RecordSink& sink) {
  Impl& a = *impl_;
  {
    std::lock_guard lk(a.mu);
    if (a.state != Impl::State::kCreated)
      return Status(Code::kFailedPrecondition, "nmea: the adapter was already started");
  }
  a.sink = &sink;
  std::vector<std::unique_ptr<Source>> sources;
  for (size_t i = 0; i < a.cfg.sources.size(); ++i) {
    auto s = std::make_unique<Source>(a.cfg.sources[i], a.io);
    if (!s->cfg.is_serial()) {
      asio::error_code ec;
      auto address = asio::ip::make_address(s->cfg.listen_host, ec);
      tcp::endpoint ep(address, s->cfg.listen_port);
      if (!ec) s->acceptor.emplace(a.io);
      if (!ec) s->acceptor->open(ep.protocol(), ec);
      if (!ec) s->acceptor->set_option(tcp::acceptor::reuse_address(true), ec);
      if (!ec) s->acceptor->bind(ep, ec);
      if (!ec) s->acceptor->listen(asio::socket_base::max_listen_connections, ec);
      if (ec)
        return Unavailable("nmea.sources[" + std::to_string(i) + "] (" + s->cfg.device +
                           "): cannot listen on " + s->cfg.Endpoint() + ": " + ec.message());
      s->counters.port_open = true;
    }
    sources.push_back(std::move(s));
  }
  {
    std::lock_guard lk(a.mu);  // Health() reads the sources' counters
    a.sources = std::move(sources);
  }
  for (auto& sp : a.sources) {
    Source& s = *sp;
    a.Spawn(a.Watchdog(s), s.cfg.device + " watchdog");
    if (s.cfg.is_serial()) {
      a.Spawn(a.Serial(s), s.cfg.device + " serial reader");
    } else {
      a.Spawn(a.Accept(s), s.cfg.device + " listener");
      spdlog::info("nmea: {}: listening on {}", s.cfg.device, s.cfg.Endpoint());
    }
  }
  {
    std::lock_guard lk(a.mu);
    a.state = Impl::State::kRunning;
  }
  a.thread = std::thread([&a] {
    NameThisThread("nmea");
    try {
      a.io.run();
    } catch (const std::exception& e) {
      spdlog::critical("nmea: io loop failed: {}", e.what());
      std::lock_guard lk(a.mu);
      a.state = Impl::State::kFailed;
    }
  });
  return Status::Ok();
}

void NmeaAdapter::Stop() {
  Impl& a = *impl_;
  if (!a.thread.joinable()) return;
  asio::post(a.io, [&a] { a.CloseAll(); });
  a.thread.join();
  std::lock_guard lk(a.mu);
  if (a.state == Impl::State::kRunning) a.state = Impl::State::kStopped;
}

AdapterHealth NmeaAdapter::Health() const {
  const Impl& a = *impl_;
  AdapterHealth h;
  std::lock_guard lk(a.mu);
  h.devices = static_cast<uint32_t>(a.cfg.sources.size());
  bool ports_ok = true;
  for (size_t i = 0; i < a.cfg.sources.size(); ++i) {
    DeviceCounters d;
    d.id = a.cfg.sources[i].device;
    if (i < a.sources.size()) {
      const Counters& c = a.sources[i]->counters;
      d.online = c.online;
      d.requests = c.sentences;
      d.errors = c.errors;
      ports_ok &= c.port_open;
      h.polls += c.sentences;
      h.errors += c.errors;
      if (!c.last_error.empty()) h.last_error = d.id + ": " + c.last_error;
    }
    h.online += d.online;
    h.per_device.push_back(std::move(d));
  }
  switch (a.state) {
    case Impl::State::kCreated:
      h.state = "starting";
      break;
    case Impl::State::kStopped:
      h.state = "stopped";
      break;
    case Impl::State::kFailed:
      h.state = "failed";
      break;
    case Impl::State::kRunning:
      h.state = ports_ok && h.online == h.devices ? "running" : "degraded";
      break;
  }
  return h;
}

RulesByDevice NmeaAdapter::Rules() const {
  // No deadbands or derived events: every (throttled) fix is a reading worth publishing.
  RulesByDevice rules;
  for (const auto& s : impl_->cfg.sources) rules[s.device] = DeviceRules{};
  return rules;
}

bool NmeaAdapter::OwnsDevice(const std::string& device) const {
  const auto& srcs = impl_->cfg.sources;
  return std::any_of(srcs.begin(), srcs.end(), [&](const auto& s) { return s.device == device; });
}

}  // namespace sanigate::dev::nmea
