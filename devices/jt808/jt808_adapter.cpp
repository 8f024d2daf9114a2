#include "jt808/jt808_adapter.h"
#include "core/thread_name.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <list>
#include <map>
#include <mutex>
#include <optional>
#include <sstream>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "core/atomic_file.h"
#include "core/clock.h"
#include "jt808/auth_codes.h"
#include "jt808/frame.h"
#include "jt808/messages.h"
#include "runtime/asio.h"

namespace sanigate::dev::jt808 {
namespace {

using tcp = boost::asio::ip::tcp;
using SteadyClock = std::chrono::steady_clock;

// The alarm bits the fleet acts on, and the events they become. Bits 5 and 6 (antenna open or
// short) are one event: either way the truck has no usable position.
struct AlarmEventDef {
  uint32_t mask;
  const char* event;
  Severity severity;
};
constexpr uint32_t Bit(int b) { return 1u << b; }
const AlarmEventDef kAlarmEvents[] = {
    {Bit(alarm_bit::kSos), "sos", Severity::kCritical},
    {Bit(alarm_bit::kOverspeed), "overspeed", Severity::kWarning},
    {Bit(alarm_bit::kFatigue), "fatigue_driving", Severity::kWarning},
    {Bit(alarm_bit::kGnssFault), "gnss_fault", Severity::kWarning},
    {Bit(alarm_bit::kGnssAntennaOpen) | Bit(alarm_bit::kGnssAntennaShort), "gnss_antenna_fault", Severity::kWarning},
    {Bit(alarm_bit::kPowerLow), "power_low", Severity::kWarning},
    {Bit(alarm_bit::kPowerLost), "power_cut", Severity::kCritical},
    {Bit(alarm_bit::kFuelAbnormal), "fuel_abnormal", Severity::kWarning},
    {Bit(alarm_bit::kCollision), "collision", Severity::kCritical},
    {Bit(alarm_bit::kRollover), "rollover", Severity::kCritical},
};

const char* ResultName(uint8_t r) {
  switch (r) {
    case 0: return "ok";
    case 1: return "fail";
    case 2: return "message error";
    case 3: return "unsupported";
    case 4: return "alarm confirmed";
    default: return "unknown result";
  }
}

struct Terminal {
  std::string phone, device, kind = "vehicle", plate, fixed_code;
  bool configured = false;
};

struct DeviceStats {
  bool online = false;
  uint64_t messages = 0, errors = 0;
  double last_ack_ms = 0, max_ack_ms = 0;
};

struct AlarmState {
  uint32_t alarm = 0;
  int64_t ts_ms = 0;
};

class Session;

// One firmware installation (0x8108 → 0x0108 → 0x8107/0x0107) on the adapter's io thread. The
// sessions feed it what the terminal answers and wake it; RunUpgrade waits on `wake`.
struct UpgradeJob {
  UpgradeJob(asio::io_context& io, FirmwareJob j, FirmwareProgressFn p, FirmwareDoneFn d)
      : job(std::move(j)), progress(std::move(p)), done(std::move(d)), wake(io) {}

  FirmwareJob job;
  FirmwareProgressFn progress;
  FirmwareDoneFn done;
  asio::steady_timer wake;
  bool finished = false;  // `done` was called
  bool stopping = false;  // the adapter stops: RunUpgrade returns at its next wake
  std::map<uint16_t, uint8_t> acks;      // 0x0001 results for our 0x8108 packets, by serial
  std::optional<UpgradeResult> result;   // 0x0108
  std::optional<TerminalAttributes> attrs;  // 0x0107
  std::string attrs_error;                  // a 0x0107 that could not be read

  void Wake() { wake.cancel(); }
  void Finish(FirmwareResult r) {
    if (finished) return;
    finished = true;
    auto d = std::move(done);
    if (d) d(std::move(r));
  }
  void Progress(uint64_t done_bytes, uint64_t total) {
    if (progress) progress(done_bytes, total);
  }
  // Waits until `pred` holds (true), or the deadline passes or the adapter stops (false). Events
  // change the job's state and then Wake() it; `pred` is checked again after every wake.
  asio::awaitable<bool> WaitUntil(SteadyClock::time_point deadline, std::function<bool()> pred) {
    for (;;) {
      if (stopping) co_return false;
      if (pred()) co_return true;
      if (SteadyClock::now() >= deadline) co_return false;
      wake.expires_at(deadline);
      asio::error_code ec;
      co_await wake.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }
  }
};

}  // namespace

struct Jt808Adapter::Impl : std::enable_shared_from_this<Jt808Adapter::Impl> {
  explicit Impl(Jt808Config c) : cfg(std::move(c)) {
    for (const auto& t : cfg.terminals) {
      Terminal term{t.phone, t.device, t.kind, t.plate, t.auth_code, true};
      phone_by_device[t.device] = t.phone;
      by_phone.emplace(t.phone, std::move(term));
    }
  }

  // Which vehicle a phone number is, under the configured policy; nullopt = refused.
  std::optional<Terminal> Lookup(const std::string& phone) const {
    auto it = by_phone.find(phone);
    if (it != by_phone.end()) return it->second;
    if (cfg.unknown != UnknownPolicy::kRegister) return std::nullopt;
    Terminal t;
    t.phone = phone;
    t.device = cfg.device_prefix + phone;
    return t;
  }
  std::string CodeFor(const Terminal& t) const {
    return t.fixed_code.empty() ? codes->CodeFor(t.phone) : t.fixed_code;
  }

  // The stats entry of a device; map nodes are stable, so sessions keep the pointer and the hot
  // path does no lookup.
  DeviceStats* StatsFor(const std::string& device) {
    std::lock_guard lk(stats_mu);
    return &stats[device];
  }
  void Count(DeviceStats* s, bool error, bool message) {
    std::lock_guard lk(stats_mu);
    if (message) messages++;
    if (error) malformed++;
    if (s) {
      if (message) s->messages++;
      if (error) s->errors++;
    }
  }
  void SetOnline(DeviceStats* s, bool online) {
    std::lock_guard lk(stats_mu);
    s->online = online;
  }
  void AckLatency(DeviceStats* s, double ms) {
    std::lock_guard lk(stats_mu);
    s->last_ack_ms = ms;
    s->max_ack_ms = std::max(s->max_ack_ms, ms);
  }
  void Refused(const std::string& why) {
    std::lock_guard lk(stats_mu);
    refused++;
    last_error = why;
  }
  // A message other than register/authenticate on a connection that has not authenticated:
  // counted on its own (not with garbage or refused terminals) and logged once a minute.
  void Unauthenticated(const std::string& why) {
    std::lock_guard lk(stats_mu);
    unauthenticated++;
    last_error = why;
    int64_t now = NowMs();
    if (now - unauthenticated_logged_ms >= 60000) {
      unauthenticated_logged_ms = now;
      spdlog::warn("jt808: refused {} ({} so far)", why, unauthenticated);
    }
  }

  void Emit(std::vector<Record> records) {
    if (sink && !records.empty()) sink->EmitBatch(std::move(records));
  }

  // The alarm bits whose events were last announced active (durable across restarts).
  uint32_t AnnouncedAlarms(const std::string& device) const {
    uint32_t mask = 0;
    for (const auto& def : kAlarmEvents)
      if (sink && sink->LastAnnounced(device, def.event).value_or(false)) mask |= def.mask;
    return mask;
  }

  // The `offline` event of a terminal that disconnected, unless it is back (authenticated)
  // within offline_after_s (io thread).
  void AnnounceOfflineLater(const Terminal& term, const std::string& reason) {
    auto announce = [this, term, reason] {
      offline_pending.erase(term.device);
      if (by_device.count(term.device) || !offline_announced.insert(term.device).second) return;
      Record ev = MakeEvent(term.device, term.kind, "jt808", NowMs(), "offline", EventState::kActive, Severity::kWarning);
      ev.source_extra.push_back({"phone", term.phone});
      if (!term.plate.empty()) ev.source_extra.push_back({"plate", term.plate});
      ev.message = reason;
      Emit({std::move(ev)});
    };
    if (cfg.offline_after_s == 0) return announce();
    auto timer = std::make_unique<asio::steady_timer>(io, std::chrono::seconds(cfg.offline_after_s));
    timer->async_wait([announce](const asio::error_code& ec) {
      if (ec) return;  // cancelled: the terminal came back, or the gateway is stopping
      announce();
    });
    offline_pending[term.device] = std::move(timer);
  }

  asio::awaitable<void> AcceptLoop();
  asio::awaitable<void> SweepLoop();
  void CloseAll(const std::string& reason);

  // Firmware jobs (io thread). The sessions report what concerns a job of their device.
  std::shared_ptr<Session> CurrentSession(const std::string& device);
  void StartUpgrade(FirmwareJob job, FirmwareProgressFn progress, FirmwareDoneFn done);
  void EndUpgrade(const std::shared_ptr<UpgradeJob>& j, FirmwareResult r) {
    if (!j->finished) {
      if (r.ok) {
        spdlog::info("jt808: {}: firmware {} installed", j->job.device, r.version);
      } else {
        spdlog::warn("jt808: {}: firmware {} not installed: {}", j->job.device, j->job.version, r.error);
      }
    }
    // Erased first: `done` may start the next job of this device (InstallFirmware posts it).
    if (auto it = upgrades.find(j->job.device); it != upgrades.end() && it->second == j) upgrades.erase(it);
    j->Finish(std::move(r));
  }
  UpgradeJob* UpgradeOf(const std::string& device) {
    auto it = upgrades.find(device);
    return it == upgrades.end() ? nullptr : it->second.get();
  }
  void WakeUpgrade(const std::string& device) {
    if (auto* j = UpgradeOf(device)) j->Wake();
  }

  Jt808Config cfg;
  std::optional<AuthCodes> codes;
  std::unordered_map<std::string, Terminal> by_phone;            // configured terminals
  std::unordered_map<std::string, std::string> phone_by_device;  // configured terminals
  asio::io_context io{1};
  std::optional<tcp::acceptor> acceptor;
  std::optional<asio::steady_timer> sweep_timer;
  std::thread thread;
  RecordSink* sink = nullptr;
  std::atomic<uint16_t> bound_port{0};
  std::atomic<bool> running{false};

  // io thread only
  std::unordered_set<std::shared_ptr<Session>> sessions;
  std::unordered_map<std::string, std::weak_ptr<Session>> by_device;  // authenticated sessions
  std::unordered_map<std::string, uint32_t> per_ip;
  std::unordered_map<std::string, AlarmState> alarms;       // by device, from live reports
  std::unordered_set<std::string> offline_announced;        // devices with an active `offline`
  // Devices that disconnected and are not yet announced offline (offline_after_s).
  std::unordered_map<std::string, std::unique_ptr<asio::steady_timer>> offline_pending;
  uint64_t reconnects_debounced = 0;  // came back before being announced offline (stats_mu)
  std::unordered_map<std::string, int64_t> refused_logged;  // phone -> last log (ms)
  std::unordered_map<std::string, std::shared_ptr<UpgradeJob>> upgrades;  // by device
  std::unordered_map<std::string, std::string> maker_by_phone;  // from 0x0100, kept across reconnects
  std::unordered_map<std::string, std::pair<std::string, uint8_t>> plate_by_phone;  // 0x0100: plate, colour
  // Phones that obtained their auth code by registering, with the address they last registered
  // from (registration policies, impersonation checks). Saved beside the secret, at most once a
  // second (a crash loses at most the last second's registrations).
  std::map<std::string, std::string> registered_from;
  bool registrations_dirty = false;
  std::string RegistrationsFile() const {
    return (std::filesystem::path(cfg.secret_file).parent_path() / "jt808-registrations.json").string();
  }
  void LoadRegistrations() {
    std::ifstream in(RegistrationsFile());
    if (!in) return;
    std::stringstream text;
    text << in.rdbuf();
    auto j = nlohmann::json::parse(text.str(), nullptr, false);
    if (!j.is_object()) {
      spdlog::error("jt808: {} is not a JSON object; registrations start empty", RegistrationsFile());
      return;
    }
    for (const auto& [phone, ip] : j.items())
      if (ip.is_string()) registered_from[phone] = ip.get<std::string>();
  }
  void SaveRegistrations() {
    if (!registrations_dirty) return;
    registrations_dirty = false;
    nlohmann::json j(registered_from);
    if (Status st = WriteFileAtomically(RegistrationsFile(), j.dump(1), 0600); !st.ok())
      spdlog::error("jt808: cannot save the registrations: {}", st.message());
  }
  // A one-off warning event on the vehicle: somebody else may be speaking for it.
  void SuspectImpersonation(const Terminal& term, const std::string& why) {
    spdlog::warn("jt808: {} ({}): impersonation suspected: {}", term.device, term.phone, why);
    Record ev = MakeEvent(term.device, term.kind, "jt808", NowMs(), "impersonation_suspected", EventState::kActive,
                          Severity::kCritical);
    ev.source_extra.push_back({"phone", term.phone});
    ev.message = why;
    Emit({std::move(ev)});
    std::lock_guard lk(stats_mu);
    impersonations++;
  }

  // InstallFirmware posts only while this is true (Stop clears it before posting CloseAll, so
  // every posted job is seen by CloseAll and answered "gateway stopping").
  std::mutex post_mu;
  bool accepting = false;

  // any thread
  mutable std::mutex stats_mu;
  std::map<std::string, DeviceStats> stats;
  uint64_t messages = 0, malformed = 0, refused = 0, unauthenticated = 0, connections = 0, impersonations = 0;
  int64_t unauthenticated_logged_ms = 0;
  std::string last_error;
};

namespace {

// One TCP connection. Lives on the adapter's io thread; owned by Impl::sessions and by its own
// read coroutine; everything else holds weak pointers.
class Session : public std::enable_shared_from_this<Session> {
 public:
  using Impl = Jt808Adapter::Impl;
  Session(Impl& a, tcp::socket s, std::string ip)
      : a_(a), sock_(std::move(s)), ip_(std::move(ip)),
        splitter_(static_cast<size_t>(a.cfg.max_frame_bytes)) {}

  void Start() {
    created_ = last_activity_ = SteadyClock::now();
    asio::co_spawn(a_.io, ReadLoop(shared_from_this()), asio::detached);
  }

  // Closes the connection once; the terminal goes offline if this was its current session.
  void Close(const std::string& reason) {
    if (closed_) return;
    closed_ = true;
    asio::error_code ec;
    sock_.shutdown(tcp::socket::shutdown_both, ec);
    sock_.close(ec);
    if (auto it = a_.per_ip.find(ip_); it != a_.per_ip.end() && --it->second == 0) a_.per_ip.erase(it);
    for (auto& [serial, p] : pending_) {
      p.timer->cancel();
      p.reply({false, "connection to the terminal closed before it answered (" + reason + ")", {}});
    }
    pending_.clear();
    if (authenticated_) {
      auto it = a_.by_device.find(term_.device);
      bool current = it != a_.by_device.end() && it->second.lock().get() == this;
      if (current) {
        a_.by_device.erase(it);
        a_.SetOnline(stats_, false);
        GoOffline(reason);
      }
      spdlog::info("jt808: {} ({}) disconnected: {}", term_.device, term_.phone, reason);
    }
    if (!term_.device.empty()) a_.WakeUpgrade(term_.device);  // a firmware job may wait on this session
    a_.sessions.erase(shared_from_this());
  }

  bool closed() const { return closed_; }
  bool v2019() const { return v2019_; }
  // The manufacturer id the terminal registered with (this connection or an earlier one).
  std::string maker() const {
    if (registration_) return registration_->maker;
    auto it = a_.maker_by_phone.find(phone_);
    return it == a_.maker_by_phone.end() ? std::string() : it->second;
  }
  // Reserves `n` consecutive serials (the packets of one subpackaged message); returns the first.
  uint16_t ReserveSerials(uint16_t n) {
    uint16_t first = next_serial_;
    next_serial_ = static_cast<uint16_t>(next_serial_ + n);
    return first;
  }
  // Frames one packet of a platform message; `total` 0 = not subpackaged.
  Bytes FramePacket(uint16_t id, uint16_t serial, uint16_t total, uint16_t index, std::span<const uint8_t> body) const {
    Header h;
    h.msg_id = id;
    h.v2019 = v2019_;
    h.proto_version = proto_version_;
    h.phone_bcd = phone_bcd_;
    h.phone = phone_;
    h.serial = serial;
    if (total > 0) {
      h.subpackage = true;
      h.packet_total = total;
      h.packet_index = index;
    }
    return EncodeFrame(h, body);
  }
  void WriteFrame(Bytes frame) { Write(std::move(frame)); }
  uint16_t SendMessage(uint16_t id, const Bytes& body) { return Send(id, body); }
  bool authenticated() const { return authenticated_; }
  SteadyClock::time_point last_activity() const { return last_activity_; }
  const std::string& ip() const { return ip_; }
  const Terminal& terminal() const { return term_; }

  // Called every second by the adapter's sweeper.
  void Sweep(SteadyClock::time_point now) {
    if (!authenticated_ && now - created_ > std::chrono::seconds(a_.cfg.auth_timeout_s))
      return Close("not authenticated within " + std::to_string(a_.cfg.auth_timeout_s) + " s");
    if (now - last_activity_ > std::chrono::seconds(a_.cfg.idle_timeout_s))
      return Close("idle for " + std::to_string(a_.cfg.idle_timeout_s) + " s");
    for (auto it = parts_.begin(); it != parts_.end();) {
      if (now - it->second.started > std::chrono::seconds(a_.cfg.subpackage_timeout_s)) {
        spdlog::warn("jt808: {}: message {:04X} incomplete after {} s ({} of {} packets), dropped",
                     Name(), it->first, a_.cfg.subpackage_timeout_s, it->second.parts.size(), it->second.total);
        a_.Count(stats_, true, false);
        it = parts_.erase(it);
      } else {
        ++it;
      }
    }
  }

  // A command from cmd/{name}. Answers through `reply` exactly once.
  void Command(const CommandRequest& req, ReplyFn reply) {
    uint16_t id = 0;
    Bytes body;
    uint16_t expect = msg::kTerminalResponse;
    if (req.name == "locate" || req.name == "position_query") {
      id = msg::kPositionQuery;
      expect = msg::kPositionReply;
    } else if (req.name == "set_params" || req.name == "set_report_interval") {
      std::vector<std::pair<uint32_t, uint32_t>> params;
      std::vector<std::string> args = req.args;
      if (req.name == "set_report_interval") {
        if (args.size() != 1) return reply({false, "usage: set_report_interval SECONDS", {}});
        args[0] = "report_interval_s=" + args[0];
      }
      if (args.empty()) return reply({false, "usage: set_params NAME=VALUE...; names: " + Joined(ParamNames()), {}});
      for (const auto& arg : args) {
        auto eq = arg.find('=');
        auto pid = eq == std::string::npos ? std::nullopt : ParamId(arg.substr(0, eq));
        if (!pid) return reply({false, "\"" + arg + "\" is not NAME=VALUE with NAME one of " + Joined(ParamNames()), {}});
        std::string v = arg.substr(eq + 1);
        char* end = nullptr;
        unsigned long long n = v.empty() ? 0 : std::strtoull(v.c_str(), &end, 10);
        if (v.empty() || *end != '\0' || v[0] == '-' || n > 0xFFFFFFFFull)
          return reply({false, "\"" + v + "\" is not a whole number 0..4294967295", {}});
        params.emplace_back(*pid, static_cast<uint32_t>(n));
      }
      id = msg::kSetParams;
      body = BuildSetParams(params);
    } else if (req.name == "text") {
      std::string text;
      for (const auto& s : req.args) text += (text.empty() ? "" : " ") + s;
      if (text.empty()) return reply({false, "usage: text MESSAGE", {}});
      auto b = BuildTextMessage(text, v2019_);
      if (!b.ok()) return reply({false, b.status().message(), {}});
      id = msg::kTextMessage;
      body = std::move(*b);
    } else if (req.name == "confirm_alarm") {
      uint32_t mask = 0;
      std::string which = req.args.empty() ? "sos" : req.args[0];
      for (const auto& def : kAlarmEvents)
        if (which == def.event) mask = def.mask;
      // 0x8203 can confirm only the alarms the standard clears on confirmation.
      if (mask != Bit(alarm_bit::kSos))
        return reply({false, "confirm_alarm takes \"sos\" (the only confirmable alarm the gateway reports)", {}});
      id = msg::kAlarmConfirm;
      body = BuildAlarmConfirm(0, mask);
    } else {
      return reply({false, "unknown command \"" + req.name + "\" (locate, set_params, set_report_interval, text, confirm_alarm)", {}});
    }
    uint16_t serial = Send(id, body);
    auto timeout = req.timeout.count() > 0 ? req.timeout : std::chrono::milliseconds(a_.cfg.command_timeout_ms);
    Pending p{id, expect, std::move(reply), std::make_unique<asio::steady_timer>(a_.io, timeout)};
    p.timer->async_wait([w = weak_from_this(), serial, timeout](asio::error_code ec) {
      auto self = w.lock();
      if (ec || !self) return;
      auto it = self->pending_.find(serial);
      if (it == self->pending_.end()) return;
      auto r = std::move(it->second.reply);
      self->pending_.erase(it);
      r({false, "no answer from the terminal within " + std::to_string(timeout.count()) + " ms", {}});
    });
    pending_.emplace(serial, std::move(p));
  }

 private:
  struct Pending {
    uint16_t sent_id;
    uint16_t expect_id;
    ReplyFn reply;
    std::unique_ptr<asio::steady_timer> timer;
  };
  struct Reassembly {
    uint16_t total = 0;
    Header first;
    std::map<uint16_t, Bytes> parts;
    SteadyClock::time_point started;
  };

  static std::string Joined(const std::vector<std::string>& v) {
    std::string s;
    for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
    return s;
  }
  std::string Name() const { return term_.device.empty() ? ip_ + (phone_.empty() ? "" : " phone " + phone_) : term_.device; }

  static asio::awaitable<void> ReadLoop(std::shared_ptr<Session> self) {
    // Small on purpose: it lives as long as the connection (100k idle trucks), and a frame may
    // span several reads anyway.
    std::array<uint8_t, 512> buf;
    while (!self->closed_) {
      asio::error_code ec;
      size_t n = co_await self->sock_.async_read_some(asio::buffer(buf), asio::redirect_error(asio::use_awaitable, ec));
      if (self->closed_) break;
      if (ec) {
        self->Close(ec == asio::error::eof ? "closed by the terminal" : ec.message());
        break;
      }
      self->last_activity_ = SteadyClock::now();
      self->splitter_.Feed(std::span<const uint8_t>(buf.data(), n));
      FrameSplitter::Chunk c;
      while (!self->closed_ && self->splitter_.Next(c)) self->OnChunk(c);
    }
  }

  void OnChunk(const FrameSplitter::Chunk& c) {
    if (c.kind == FrameSplitter::Kind::kOversize) {
      a_.Count(stats_, true, false);
      return Close("more than " + std::to_string(a_.cfg.max_frame_bytes) + " bytes without a frame delimiter");
    }
    auto f = DecodeFrame(c.escaped);
    if (!f.ok()) {
      a_.Count(stats_, true, false);
      LogBad(f.status().message());
      if (++bad_in_row_ >= a_.cfg.max_bad_frames)
        Close(std::to_string(bad_in_row_) + " malformed frames in a row");
      return;
    }
    bad_in_row_ = 0;
    Header& h = f->header;
    if (!phone_.empty() && h.phone != phone_) {
      a_.Count(stats_, true, false);
      LogBad("frame from phone " + h.phone + " on the connection of " + phone_);
      return;
    }
    if (phone_.empty()) phone_ = h.phone;
    phone_bcd_ = h.phone_bcd;
    v2019_ = h.v2019;
    proto_version_ = h.proto_version;
    if (h.encryption != 0) {
      a_.Count(stats_, true, true);
      return Respond(h, ResponseResult::kUnsupported);
    }
    if (!h.subpackage) return Dispatch(h, f->body);
    // Subpackages: keep the parts until all arrived, then handle the whole body once.
    auto& r = parts_[h.msg_id];
    if (r.parts.empty() || r.total != h.packet_total) {
      r = Reassembly{h.packet_total, h, {}, SteadyClock::now()};
    }
    if (h.packet_index == 1) r.first = h;
    r.parts[h.packet_index] = std::move(f->body);
    if (r.parts.size() < r.total) {
      Respond(h, ResponseResult::kOk);  // each packet is acknowledged on receipt
      return;
    }
    Bytes whole;
    for (auto& [i, p] : r.parts) whole.insert(whole.end(), p.begin(), p.end());
    Header first = r.first;
    first.serial = h.serial;  // the last packet is the one acknowledged after the whole message
    parts_.erase(h.msg_id);
    Dispatch(first, whole);
  }

  void LogBad(const std::string& why) {
    int64_t now = NowMs();
    if (now - last_bad_log_ms_ < 60000) return;  // once a minute per connection
    last_bad_log_ms_ = now;
    spdlog::warn("jt808: {}: malformed frame skipped: {}", Name(), why);
  }

  void Dispatch(const Header& h, const Bytes& body) {
    a_.Count(stats_, false, true);
    switch (h.msg_id) {
      case msg::kRegister: return OnRegister(h, body);
      case msg::kAuthenticate: return OnAuthenticate(h, body);
      default: break;
    }
    if (!authenticated_) {
      // Everything else needs an authenticated terminal; "fail" makes it register or re-auth.
      a_.Unauthenticated("message " + std::to_string(h.msg_id) + " before authentication from " + Name());
      return Respond(h, ResponseResult::kFail);
    }
    switch (h.msg_id) {
      case msg::kHeartbeat: return Respond(h, ResponseResult::kOk);
      case msg::kLogout:
        Respond(h, ResponseResult::kOk);
        return Close("logout");
      case msg::kLocation: {
        auto loc = ParseLocation(body);
        if (!loc.ok()) return BadBody(h, loc.status());
        return Store(h, {*loc}, false, true);
      }
      case msg::kBatchLocation: {
        auto batch = ParseBatchLocation(body);
        if (!batch.ok()) return BadBody(h, batch.status());
        for (const auto& why : batch->bad_points) {
          a_.Count(stats_, true, false);
          LogBad("batch " + why);
        }
        return Store(h, std::move(batch->points), batch->backfill, !batch->backfill);
      }
      case msg::kPositionReply: {
        auto pr = ParsePositionReply(body);
        if (!pr.ok()) return BadBody(h, pr.status());
        OnAnswer(pr->reply_serial, msg::kPositionReply, 0, &pr->location);
        return Store(h, {pr->location}, false, true, /*acknowledge=*/false);
      }
      case msg::kTerminalResponse: {
        auto tr = ParseTerminalResponse(body);
        if (!tr.ok()) return BadBody(h, tr.status());
        if (tr->reply_id == msg::kUpgradePackage) {
          if (auto* j = a_.UpgradeOf(term_.device)) {
            j->acks[tr->reply_serial] = tr->result;
            j->Wake();
          }
          return;
        }
        return OnAnswer(tr->reply_serial, msg::kTerminalResponse, tr->result, nullptr, tr->reply_id);
      }
      case msg::kUpgradeResult: {
        auto ur = ParseUpgradeResult(body);
        if (!ur.ok()) return BadBody(h, ur.status());
        Respond(h, ResponseResult::kOk);
        auto* j = a_.UpgradeOf(term_.device);
        spdlog::info("jt808: {}: upgrade result {} (type {:02X}){}", term_.device,
                     ur->result == 0 ? "success" : ur->result == 1 ? "failed" : ur->result == 2 ? "cancelled" : std::to_string(ur->result),
                     ur->type, j ? "" : " with no upgrade running");
        if (j) {
          j->result = *ur;
          j->Wake();
        }
        return;
      }
      case msg::kTerminalAttributes: {
        auto attrs = ParseTerminalAttributes(body, h.v2019);
        if (!attrs.ok()) {
          if (auto* j = a_.UpgradeOf(term_.device)) {
            j->attrs_error = attrs.status().message();
            j->Wake();
          }
          return BadBody(h, attrs.status());
        }
        if (!attrs->fw_version.empty()) software_ = attrs->fw_version;
        if (auto* j = a_.UpgradeOf(term_.device)) {
          j->attrs = std::move(*attrs);
          j->Wake();
        }
        return;
      }
      default:
        return Respond(h, ResponseResult::kUnsupported);
    }
  }

  void BadBody(const Header& h, const Status& st) {
    a_.Count(stats_, true, false);
    LogBad("message " + std::to_string(h.msg_id) + ": " + st.message());
    Respond(h, ResponseResult::kMessageError);
  }

  void OnRegister(const Header& h, const Bytes& body) {
    auto reg = ParseRegistration(body, h.v2019);
    if (!reg.ok()) return BadBody(h, reg.status());
    auto term = a_.Lookup(h.phone);
    if (!term) {
      RefuseUnknown(h.phone, "registration");
      return Send(msg::kRegisterResponse, BuildRegisterResponse(h.serial, RegisterResult::kTerminalUnknown, {})), void();
    }
    // Who may obtain this phone's code again (JT/T 808's only credential).
    if (auto known = a_.registered_from.find(h.phone); known != a_.registered_from.end()) {
      auto live = a_.by_device.find(term->device);
      bool online = live != a_.by_device.end() && live->second.lock() != nullptr;
      bool new_address = known->second != ip_;
      const char* refusal = nullptr;
      if (a_.cfg.registration == RegistrationPolicy::kLocked) refusal = "registration is locked (release it with the release_registration command)";
      else if (a_.cfg.registration == RegistrationPolicy::kKnown && online) refusal = "the terminal is online";
      if (new_address)
        a_.SuspectImpersonation(*term, "registration from " + ip_ + ", last registered from " + known->second +
                                                            (refusal ? std::string("; refused: ") + refusal : std::string()));
      if (refusal) {
        a_.Refused("registration of " + term->device + " refused: " + refusal);
        return Send(msg::kRegisterResponse, BuildRegisterResponse(h.serial, RegisterResult::kTerminalRegistered, {})), void();
      }
    }
    a_.registered_from[h.phone] = ip_;
    a_.registrations_dirty = true;
    registration_ = *reg;
    a_.maker_by_phone[h.phone] = reg->maker;
    if (!reg->plate.empty()) a_.plate_by_phone[h.phone] = {reg->plate, reg->plate_color};
    spdlog::info("jt808: {} ({}) registered: maker {} model {} terminal {} plate {}", term->device, h.phone,
                 reg->maker, reg->model, reg->terminal_id, reg->plate);
    Send(msg::kRegisterResponse, BuildRegisterResponse(h.serial, RegisterResult::kOk, a_.CodeFor(*term)));
  }

  void RefuseUnknown(const std::string& phone, const char* what) {
    a_.Refused("unknown terminal " + phone);
    int64_t now = NowMs();
    auto& last = a_.refused_logged[phone];
    if (now - last >= 60000) {
      last = now;
      spdlog::warn("jt808: {} from unknown terminal {} ({}) refused (unknown_terminals = \"refuse\")", what, phone, ip_);
    }
  }

  void OnAuthenticate(const Header& h, const Bytes& body) {
    auto auth = ParseAuthentication(body, h.v2019);
    if (!auth.ok()) return BadBody(h, auth.status());
    auto term = a_.Lookup(h.phone);
    if (!term) {
      RefuseUnknown(h.phone, "authentication");
      Respond(h, ResponseResult::kFail);
      return Close("unknown terminal");
    }
    if (auth->code != a_.CodeFor(*term)) {
      a_.Refused("wrong auth code from " + term->device);
      spdlog::warn("jt808: {} ({}) sent a wrong auth code", term->device, h.phone);
      Respond(h, ResponseResult::kFail);
      if (++auth_failures_ >= 3) Close("3 failed authentications");
      return;
    }
    // A second session for a truck that is online and talking is refused: it may be someone
    // who knows the phone number and the code. A silent old session (half-open after a cell
    // change) is replaced.
    if (auto old = a_.by_device[term->device].lock(); old && old.get() != this && a_.cfg.takeover_after_s > 0 &&
        SteadyClock::now() - old->last_activity() < std::chrono::seconds(a_.cfg.takeover_after_s)) {
      a_.SuspectImpersonation(*term, "second session from " + ip_ + " refused while the terminal is online from " +
                                         old->ip() + " (active " +
                                         std::to_string(std::chrono::duration_cast<std::chrono::seconds>(
                                                            SteadyClock::now() - old->last_activity()).count()) +
                                         " s ago)");
      a_.Refused("second session for " + term->device + " from " + ip_);
      Respond(h, ResponseResult::kFail);
      return Close("a second session for an online terminal");
    }
    term_ = *term;
    authenticated_ = true;
    software_ = auth->software;
    // A terminal that reconnects replaces its old connection (which is often half-open).
    if (auto old = a_.by_device[term_.device].lock(); old && old.get() != this) {
      old->authenticated_ = false;  // do not announce offline for the replaced connection
      old->Close("replaced by a new connection");
    }
    a_.by_device[term_.device] = weak_from_this();
    stats_ = a_.StatsFor(term_.device);
    a_.SetOnline(stats_, true);
    a_.WakeUpgrade(term_.device);  // a firmware job may wait for the terminal to come back
    Respond(h, ResponseResult::kOk);
    spdlog::info("jt808: {} ({}) authenticated from {}", term_.device, term_.phone, ip_);
    std::vector<Record> out;
    int64_t now = NowMs();
    Record st = MakeStatus(term_.device, term_.kind, "jt808", now, true, now);
    AddSource(st);
    if (registration_) {
      st.source_extra.push_back({"model", registration_->model});
      st.source_extra.push_back({"maker", registration_->maker});
      st.source_extra.push_back({"terminal_id", registration_->terminal_id});
    }
    if (!software_.empty()) st.source_extra.push_back({"firmware", software_});
    out.push_back(std::move(st));
    if (auto pending = a_.offline_pending.find(term_.device); pending != a_.offline_pending.end()) {
      pending->second->cancel();  // back within offline_after_s: no offline event at all
      a_.offline_pending.erase(pending);
      std::lock_guard lk(a_.stats_mu);
      a_.reconnects_debounced++;
    }
    // Announced offline by this process, or before a restart (the durable announced state).
    bool was_offline = a_.offline_announced.erase(term_.device) > 0 ||
                       a_.sink->LastAnnounced(term_.device, "offline").value_or(false);
    if (was_offline) {
      Record ev = MakeEvent(term_.device, term_.kind, "jt808", now, "offline", EventState::kCleared, Severity::kWarning);
      ev.message = "terminal reconnected";
      out.push_back(std::move(ev));
    }
    a_.Emit(std::move(out));
  }

  void GoOffline(const std::string& reason) {
    int64_t now = NowMs();
    std::vector<Record> out;
    Record st = MakeStatus(term_.device, term_.kind, "jt808", now, false, last_report_ms_ ? std::optional(last_report_ms_) : std::nullopt, reason);
    AddSource(st);
    out.push_back(std::move(st));
    a_.Emit(std::move(out));
    // A logout is not a fault, and a stopping gateway is not the truck going away.
    if (reason == "logout" || !a_.running) return;
    a_.AnnounceOfflineLater(term_, reason);
  }

  // The plate: the configured one wins, else what the terminal registered with (0x0100).
  void AddSource(Record& r) const {
    r.source_extra.push_back({"phone", term_.phone});
    if (!term_.plate.empty()) {
      r.source_extra.push_back({"plate", term_.plate});
    } else if (auto it = a_.plate_by_phone.find(term_.phone); it != a_.plate_by_phone.end()) {
      r.source_extra.push_back({"plate", it->second.first});
      // Plate colour (JT/T 415): 1 blue, 2 yellow, 3 black, 4 white, 9 other; 0 = the plate field is a VIN.
      r.source_extra.push_back({"plate_color", static_cast<int64_t>(it->second.second)});
    }
  }

  Record Reading(const Location& p, bool backfill) const {
    Record r = MakeReading(term_.device, term_.kind, "jt808", p.ts_ms);
    r.metrics.push_back({"speed_kmh", p.speed_kmh});
    r.metrics.push_back({"heading_deg", static_cast<double>(p.heading_deg)});
    r.metrics.push_back({"altitude_m", static_cast<double>(p.altitude_m)});
    r.metrics.push_back({"acc_on", p.acc_on()});
    r.metrics.push_back({"gnss_fix", p.positioned()});
    if (p.odometer_km) r.metrics.push_back({"odometer_km", *p.odometer_km});
    if (p.fuel_l) r.metrics.push_back({"fuel_l", *p.fuel_l});
    if (p.satellites) r.metrics.push_back({"satellites", static_cast<int64_t>(*p.satellites)});
    if (p.signal_strength) r.metrics.push_back({"signal_strength", static_cast<int64_t>(*p.signal_strength)});
    if (p.positioned()) r.location = sanigate::Location{p.lat, p.lon};
    AddSource(r);
    r.source_extra.push_back({"alarm_flags", static_cast<int64_t>(p.alarm)});
    r.source_extra.push_back({"status_flags", static_cast<int64_t>(p.status)});
    if (backfill) r.source_extra.push_back({"backfill", true});
    return r;
  }

  // Events for the alarm bits that changed between `before` and the point `p`.
  void AlarmEvents(uint32_t before, const Location& p, bool backfill, std::vector<Record>& out) const {
    for (const auto& def : kAlarmEvents) {
      bool was = before & def.mask, now = p.alarm & def.mask;
      if (was == now) continue;
      Record ev = MakeEvent(term_.device, term_.kind, "jt808", p.ts_ms, def.event,
                            now ? EventState::kActive : EventState::kCleared, def.severity);
      if (p.positioned()) ev.location = sanigate::Location{p.lat, p.lon};
      ev.metrics.push_back({"speed_kmh", p.speed_kmh});
      AddSource(ev);
      if (backfill) {
        ev.source_extra.push_back({"backfill", true});
        ev.message = "reported late: happened while the truck was out of coverage";
      }
      out.push_back(std::move(ev));
    }
  }

  // Turns points into records, stores them and acknowledges the message once they are durable.
  void Store(const Header& h, std::vector<Location> points, bool backfill, bool live, bool acknowledge = true) {
    std::vector<Record> out;
    out.reserve(points.size() + 2);
    std::sort(points.begin(), points.end(), [](const auto& x, const auto& y) { return x.ts_ms < y.ts_ms; });
    uint32_t backfill_state = 0;  // a back-fill batch is its own history, starting alarm-free
    for (const auto& p : points) {
      out.push_back(Reading(p, backfill));
      if (live) {
        auto [it, fresh] = a_.alarms.try_emplace(term_.device);
        if (fresh || p.ts_ms >= it->second.ts_ms) {  // an older point never rewinds the alarm state
          // First report since the gateway started: compare with what consumers were last told,
          // so an SOS that ended while the gateway was down is cleared.
          AlarmEvents(fresh ? a_.AnnouncedAlarms(term_.device) : it->second.alarm, p, false, out);
          it->second = {p.alarm, p.ts_ms};
        }
      } else {
        AlarmEvents(backfill_state, p, true, out);
        backfill_state = p.alarm;
      }
      last_report_ms_ = std::max(last_report_ms_, p.ts_ms);
    }
    if (!acknowledge) return a_.Emit(std::move(out));
    auto received = SteadyClock::now();
    std::weak_ptr<Impl> wa = a_.weak_from_this();
    std::weak_ptr<Session> ws = weak_from_this();
    uint16_t serial = h.serial, id = h.msg_id;
    DeviceStats* stats = stats_;  // lives as long as the adapter, which the callback holds
    a_.sink->EmitDurable(std::move(out), [wa, ws, serial, id, stats, received](bool durable) {
      auto a = wa.lock();
      if (!a) return;
      asio::post(a->io, [a, ws, serial, id, stats, received, durable] {
        auto s = ws.lock();
        if (!s || s->closed_) return;  // the terminal keeps the point and sends it again
        a->AckLatency(stats, std::chrono::duration<double, std::milli>(SteadyClock::now() - received).count());
        s->RespondTo(serial, id, durable ? ResponseResult::kOk : ResponseResult::kFail);
      });
    });
  }

  void OnAnswer(uint16_t reply_serial, uint16_t answer_id, uint8_t result, const Location* loc, uint16_t reply_id = 0) {
    auto it = pending_.find(reply_serial);
    if (it == pending_.end()) return;  // an answer to a platform message we did not track (e.g. 0x8100)
    if (it->second.expect_id != answer_id) return;
    if (answer_id == msg::kTerminalResponse && reply_id != it->second.sent_id) return;
    Pending p = std::move(it->second);
    pending_.erase(it);
    p.timer->cancel();
    if (loc) {
      nlohmann::json j = {{"ts", loc->ts_ms}, {"lat", loc->lat}, {"lon", loc->lon},
                          {"speed_kmh", loc->speed_kmh}, {"heading_deg", loc->heading_deg},
                          {"gnss_fix", loc->positioned()}};
      return p.reply({true, {}, j.dump()});
    }
    if (result == 0) return p.reply({true, {}, nlohmann::json({{"terminal_result", "ok"}}).dump()});
    p.reply({false, std::string("terminal answered: ") + ResultName(result), {}});
  }

  void Respond(const Header& h, ResponseResult r) { RespondTo(h.serial, h.msg_id, r); }
  void RespondTo(uint16_t serial, uint16_t id, ResponseResult r) {
    Send(msg::kPlatformResponse, BuildPlatformResponse(serial, id, r));
  }

  // Frames a platform message for this terminal (same edition and phone encoding it uses).
  uint16_t Send(uint16_t id, const Bytes& body) {
    Header h;
    h.msg_id = id;
    h.v2019 = v2019_;
    h.proto_version = proto_version_;
    h.phone_bcd = phone_bcd_;
    h.phone = phone_;
    h.serial = next_serial_++;
    Write(EncodeFrame(h, body));
    return h.serial;
  }

  void Write(Bytes frame) {
    if (closed_) return;
    out_bytes_ += frame.size();
    if (out_bytes_ > static_cast<size_t>(a_.cfg.max_send_queue_kb) * 1024)
      return Close("terminal does not read its replies (" + std::to_string(out_bytes_ / 1024) + " KB queued)");
    outq_.push_back(std::move(frame));
    if (!writing_) WriteNext();
  }
  void WriteNext() {
    if (outq_.empty() || closed_) {
      writing_ = false;
      return;
    }
    writing_ = true;
    asio::async_write(sock_, asio::buffer(outq_.front()), [self = shared_from_this()](asio::error_code ec, size_t) {
      if (self->closed_) return;
      self->out_bytes_ -= self->outq_.front().size();
      self->outq_.pop_front();
      if (ec) return self->Close("write failed: " + ec.message());
      self->WriteNext();
    });
  }

  Impl& a_;
  tcp::socket sock_;
  std::string ip_;
  FrameSplitter splitter_;
  SteadyClock::time_point created_, last_activity_;
  bool closed_ = false, authenticated_ = false, v2019_ = false, writing_ = false;
  uint8_t proto_version_ = 1;
  std::string phone_;
  Bytes phone_bcd_;
  Terminal term_;
  std::optional<Registration> registration_;
  std::string software_;
  uint16_t next_serial_ = 0;
  int bad_in_row_ = 0, auth_failures_ = 0;
  int64_t last_bad_log_ms_ = -60000, last_report_ms_ = 0;
  std::map<uint16_t, Reassembly> parts_;
  std::map<uint16_t, Pending> pending_;
  std::list<Bytes> outq_;  // not a deque: an empty deque already allocates 512 bytes
  DeviceStats* stats_ = nullptr;  // set once authenticated
  size_t out_bytes_ = 0;
};

}  // namespace

namespace {

std::string Seconds(std::chrono::milliseconds ms) {
  if (ms.count() % 1000 == 0) return std::to_string(ms.count() / 1000) + " s";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f s", static_cast<double>(ms.count()) / 1000.0);
  return buf;
}

struct FdGuard {
  int fd = -1;
  ~FdGuard() {
    if (fd >= 0) ::close(fd);
  }
};

// Reads exactly `len` bytes at `off`; false on an error or a file that got shorter.
bool ReadAt(int fd, uint64_t off, size_t len, Bytes& out, std::string& error) {
  size_t start = out.size();
  out.resize(start + len);
  size_t got = 0;
  while (got < len) {
    ssize_t n = ::pread(fd, out.data() + start + got, len - got, static_cast<off_t>(off + got));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      error = std::string("cannot read the image: ") + std::strerror(errno);
      return false;
    }
    if (n == 0) {
      error = "the image file got shorter while it was being sent";
      return false;
    }
    got += static_cast<size_t>(n);
  }
  return true;
}

// Installs one image on one terminal: the 0x8108 packets one at a time (each waits for its
// 0x0001, sent again up to `upgrade_retries` times), then the terminal's 0x0108, then (after the
// reboot and reconnection it usually does) 0x8107 until 0x0107 shows the running version.
asio::awaitable<void> RunUpgrade(std::shared_ptr<Jt808Adapter::Impl> a, std::shared_ptr<UpgradeJob> j) {
  const FirmwareJob& job = j->job;
  const std::string& dev = job.device;
  const auto timeout = job.timeout.count() > 0 ? job.timeout : std::chrono::milliseconds(30 * 60 * 1000);
  const auto overall = SteadyClock::now() + timeout;
  auto fail = [&](std::string why, std::string version = {}) { a->EndUpgrade(j, {false, std::move(why), std::move(version)}); };

  auto s = a->CurrentSession(dev);
  if (!s) co_return fail("terminal " + dev + " is not connected");

  FdGuard image{::open(job.image_path.c_str(), O_RDONLY | O_CLOEXEC)};
  if (image.fd < 0) co_return fail("cannot open the image " + job.image_path + ": " + std::strerror(errno));
  struct stat st {};
  if (::fstat(image.fd, &st) != 0 || !S_ISREG(st.st_mode)) co_return fail("the image " + job.image_path + " is not a regular file");
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (job.size != 0 && job.size != size)
    co_return fail("the image file has " + std::to_string(size) + " bytes, the job says " + std::to_string(job.size));
  if (size > 0xFFFFFFFFull) co_return fail("an upgrade package holds at most 4 GiB");

  auto head = BuildUpgradePackageHead(upgrade_type::kTerminal, s->maker(), job.version, static_cast<uint32_t>(size), s->v2019());
  if (!head.ok()) co_return fail("cannot build the upgrade package: " + head.status().message());
  const uint64_t per = static_cast<uint64_t>(a->cfg.upgrade_packet_bytes);
  const uint64_t body_len = head->size() + size;
  const uint64_t packets = PacketCount(body_len, per);
  if (packets > 0xFFFF)
    co_return fail("the image needs " + std::to_string(packets) + " packets of " + std::to_string(per) +
                   " bytes; a message has at most 65535");
  const auto n = static_cast<uint16_t>(packets);
  const auto ack_timeout = std::chrono::milliseconds(a->cfg.upgrade_ack_timeout_ms);
  const int retries = static_cast<int>(a->cfg.upgrade_retries);
  spdlog::info("jt808: {}: sending firmware {} (model {}, {} bytes) in {} packets", dev, job.version,
               job.model.empty() ? "-" : job.model, size, n);
  j->Progress(0, size);

  auto refused = [&] { return j->result && j->result->result != upgrade_result::kSuccess; };
  auto result_error = [&](uint8_t r) -> std::string {
    if (r == upgrade_result::kFailed) return "terminal reports the upgrade failed";
    if (r == upgrade_result::kCancelled) return "terminal cancelled the upgrade";
    return "terminal reports upgrade result " + std::to_string(r);
  };

  const uint16_t first_serial = s->ReserveSerials(n);
  Bytes chunk;
  for (uint16_t i = 1; i <= n; ++i) {
    const uint64_t off = (i - 1) * per;
    const uint64_t len = std::min(per, body_len - off);
    chunk.clear();
    if (off < head->size()) {
      size_t from_head = static_cast<size_t>(std::min<uint64_t>(len, head->size() - off));
      chunk.insert(chunk.end(), head->begin() + static_cast<long>(off), head->begin() + static_cast<long>(off + from_head));
    }
    if (chunk.size() < len) {
      std::string error;
      uint64_t image_off = off + chunk.size() - head->size();
      if (!ReadAt(image.fd, image_off, static_cast<size_t>(len - chunk.size()), chunk, error)) co_return fail(error);
    }
    const auto serial = static_cast<uint16_t>(first_serial + i - 1);
    const Bytes frame = s->FramePacket(msg::kUpgradePackage, serial, n > 1 ? n : 0, i, chunk);
    const std::string at = std::to_string(i) + "/" + std::to_string(n);
    bool acked = false;
    j->acks.clear();  // late answers to earlier packets
    for (int attempt = 0; attempt <= retries && !acked; ++attempt) {
      if (s->closed()) co_return fail("connection lost at packet " + at);
      if (attempt > 0)
        spdlog::warn("jt808: {}: no answer to upgrade packet {} within {}, sending it again ({} of {})", dev, at,
                     Seconds(ack_timeout), attempt, retries);
      s->WriteFrame(frame);
      auto deadline = std::min(SteadyClock::now() + ack_timeout, overall);
      co_await j->WaitUntil(deadline, [&] { return j->acks.count(serial) > 0 || s->closed() || refused(); });
      if (j->stopping) co_return;
      if (auto it = j->acks.find(serial); it != j->acks.end()) {
        uint8_t r = it->second;
        j->acks.erase(it);
        if (r != 0) co_return fail("terminal refused packet " + at + ": " + ResultName(r));
        acked = true;
      } else if (refused()) {
        co_return fail(result_error(j->result->result));
      } else if (s->closed()) {
        co_return fail("connection lost at packet " + at);
      } else if (SteadyClock::now() >= overall) {
        co_return fail("the job's time limit of " + Seconds(timeout) + " ran out at packet " + at);
      }
    }
    if (!acked) co_return fail("terminal stopped acknowledging packet " + at);
    uint64_t sent = off + len;
    j->Progress(sent <= head->size() ? 0 : std::min(size, sent - head->size()), size);
  }
  spdlog::info("jt808: {}: all {} packets of firmware {} acknowledged, waiting for the upgrade result", dev, n, job.version);

  if (!co_await j->WaitUntil(overall, [&] { return j->result.has_value(); })) {
    if (j->stopping) co_return;
    co_return fail("no upgrade result (0x0108) from the terminal within the job's " + Seconds(timeout));
  }
  if (j->result->result != upgrade_result::kSuccess) co_return fail(result_error(j->result->result));

  // The terminal usually reboots and reconnects; ask the one that is (or comes back) online.
  int unanswered = 0;
  for (;;) {
    std::shared_ptr<Session> cur;
    if (!co_await j->WaitUntil(overall, [&] { return (cur = a->CurrentSession(dev)) != nullptr; })) {
      if (j->stopping) co_return;
      co_return fail("terminal reported a successful upgrade but did not come back within the job's " + Seconds(timeout));
    }
    j->attrs.reset();
    j->attrs_error.clear();
    cur->SendMessage(msg::kQueryAttributes, BuildQueryAttributes());
    auto deadline = std::min(SteadyClock::now() + std::chrono::milliseconds(a->cfg.command_timeout_ms), overall);
    co_await j->WaitUntil(deadline, [&] { return j->attrs.has_value() || !j->attrs_error.empty() || cur->closed(); });
    if (j->stopping) co_return;
    if (!j->attrs_error.empty()) co_return fail("the terminal's attributes (0x0107) cannot be read: " + j->attrs_error);
    if (j->attrs) {
      const std::string& running = j->attrs->fw_version;
      if (running == job.version) co_return a->EndUpgrade(j, {true, {}, running});
      co_return fail("rebooted into " + (running.empty() ? std::string("an empty version") : running) + ", not " + job.version, running);
    }
    if (cur->closed()) continue;  // rebooting now: wait for it to come back
    if (SteadyClock::now() >= overall)
      co_return fail("no answer to the attribute query (0x8107) within the job's " + Seconds(timeout));
    if (++unanswered >= 3) co_return fail("terminal does not answer the attribute query (0x8107)");
  }
}

}  // namespace

std::shared_ptr<Session> Jt808Adapter::Impl::CurrentSession(const std::string& device) {
  auto it = by_device.find(device);
  auto s = it == by_device.end() ? nullptr : it->second.lock();
  return s && !s->closed() && s->authenticated() ? s : nullptr;
}

void Jt808Adapter::Impl::StartUpgrade(FirmwareJob job, FirmwareProgressFn progress, FirmwareDoneFn done) {
  if (!CurrentSession(job.device)) return done({false, "terminal " + job.device + " is not connected", {}});
  if (upgrades.count(job.device)) return done({false, "a firmware installation is already running on " + job.device, {}});
  auto j = std::make_shared<UpgradeJob>(io, std::move(job), std::move(progress), std::move(done));
  upgrades[j->job.device] = j;
  asio::co_spawn(io, RunUpgrade(shared_from_this(), j), [w = weak_from_this(), j](std::exception_ptr e) {
    if (!e) return;
    std::string what = "internal error";
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& x) {
      what += std::string(": ") + x.what();
    } catch (...) {
    }
    if (auto a = w.lock()) {
      a->EndUpgrade(j, {false, what, {}});
    } else {
      j->Finish({false, what, {}});
    }
  });
}

asio::awaitable<void> Jt808Adapter::Impl::AcceptLoop() {
  auto self = shared_from_this();
  int64_t last_refusal_log = 0;
  while (running) {
    asio::error_code ec;
    tcp::socket s = co_await acceptor->async_accept(asio::redirect_error(asio::use_awaitable, ec));
    if (!running || ec == asio::error::operation_aborted) break;
    if (ec) {
      // Out of file descriptors and the like: wait a little instead of spinning.
      spdlog::warn("jt808: accept failed: {}", ec.message());
      asio::steady_timer t(io, std::chrono::milliseconds(100));
      co_await t.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      continue;
    }
    auto ep = s.remote_endpoint(ec);
    std::string ip = ec ? "?" : ep.address().to_string();
    std::string refusal;
    if (static_cast<int64_t>(sessions.size()) >= cfg.max_connections)
      refusal = "max_connections (" + std::to_string(cfg.max_connections) + ") reached";
    else if (cfg.max_per_ip > 0 && per_ip[ip] >= cfg.max_per_ip)
      refusal = "max_per_ip (" + std::to_string(cfg.max_per_ip) + ") reached for " + ip;
    if (!refusal.empty()) {
      Refused(refusal);
      if (NowMs() - last_refusal_log > 10000) {
        last_refusal_log = NowMs();
        spdlog::warn("jt808: connection from {} refused: {}", ip, refusal);
      }
      s.close(ec);
      continue;
    }
    s.set_option(tcp::no_delay(true), ec);
    per_ip[ip]++;
    {
      std::lock_guard lk(stats_mu);
      connections++;
    }
    auto session = std::make_shared<Session>(*this, std::move(s), ip);
    sessions.insert(session);
    session->Start();
  }
}

asio::awaitable<void> Jt808Adapter::Impl::SweepLoop() {
  auto self = shared_from_this();
  while (running) {
    sweep_timer->expires_after(std::chrono::seconds(1));
    asio::error_code ec;
    co_await sweep_timer->async_wait(asio::redirect_error(asio::use_awaitable, ec));
    if (!running) break;
    auto now = SteadyClock::now();
    std::vector<std::shared_ptr<Session>> all(sessions.begin(), sessions.end());
    for (auto& s : all) s->Sweep(now);
    SaveRegistrations();
  }
}

void Jt808Adapter::Impl::CloseAll(const std::string& reason) {
  asio::error_code ec;
  if (acceptor) acceptor->close(ec);
  if (sweep_timer) sweep_timer->cancel();
  for (auto& [device, timer] : offline_pending) timer->cancel();
  offline_pending.clear();
  SaveRegistrations();
  std::vector<std::shared_ptr<Session>> all(sessions.begin(), sessions.end());
  for (auto& s : all) s->Close(reason);
  auto jobs = std::move(upgrades);
  upgrades.clear();
  for (auto& [device, j] : jobs) {
    j->stopping = true;
    j->Finish({false, reason, {}});
    j->Wake();
  }
}

Jt808Adapter::Jt808Adapter(Jt808Config config) : impl_(std::make_shared<Impl>(std::move(config))) {}

Jt808Adapter::~Jt808Adapter() { Stop(); }

Status Jt808Adapter::Start(RecordSink& sink) {
  auto& a = *impl_;
  auto codes = AuthCodes::Load(a.cfg.secret_file);
  if (!codes.ok()) return codes.status();
  a.codes = *codes;
  a.sink = &sink;
  a.LoadRegistrations();
  asio::error_code ec;
  auto addr = asio::ip::make_address(a.cfg.host, ec);
  if (ec) return Invalid("jt808.listen: \"" + a.cfg.host + "\" is not an IP address");
  tcp::endpoint ep(addr, a.cfg.port);
  a.acceptor.emplace(a.io);
  a.acceptor->open(ep.protocol(), ec);
  if (!ec) a.acceptor->set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) a.acceptor->bind(ep, ec);
  if (!ec) a.acceptor->listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    a.acceptor.reset();
    return Unavailable("jt808: cannot listen on " + a.cfg.host + ":" + std::to_string(a.cfg.port) + ": " + ec.message());
  }
  a.bound_port = a.acceptor->local_endpoint().port();
  a.sweep_timer.emplace(a.io);
  a.running = true;
  {
    std::lock_guard lk(a.post_mu);
    a.accepting = true;
  }
  asio::co_spawn(a.io, a.AcceptLoop(), asio::detached);
  asio::co_spawn(a.io, a.SweepLoop(), asio::detached);
  a.thread = std::thread([impl = impl_] {
    NameThisThread("jt808");
    try {
      impl->io.run();
    } catch (const std::exception& e) {
      spdlog::critical("jt808: io loop failed: {}", e.what());
    }
  });
  spdlog::info("jt808: listening on {}:{} ({} configured terminals, unknown terminals {})", a.cfg.host,
               a.bound_port.load(), a.cfg.terminals.size(),
               a.cfg.unknown == UnknownPolicy::kRegister ? "register" : "refused");
  return Status::Ok();
}

void Jt808Adapter::Stop() {
  auto& a = *impl_;
  if (!a.thread.joinable()) return;
  a.running = false;
  {
    std::lock_guard lk(a.post_mu);
    a.accepting = false;
  }
  asio::post(a.io, [impl = impl_] { impl->CloseAll("gateway stopping"); });
  a.thread.join();
  a.acceptor.reset();
}

uint16_t Jt808Adapter::port() const { return impl_->bound_port; }

AdapterHealth Jt808Adapter::Health() const {
  auto& a = *impl_;
  AdapterHealth h;
  std::lock_guard lk(a.stats_mu);
  h.state = a.running ? "running" : (a.thread.joinable() ? "stopping" : "stopped");
  std::set<std::string> devices;
  for (const auto& t : a.cfg.terminals) devices.insert(t.device);
  for (const auto& [d, s] : a.stats) devices.insert(d);
  h.devices = static_cast<uint32_t>(devices.size());
  h.polls = a.messages;
  h.errors = a.malformed + a.refused + a.unauthenticated;
  h.last_error = a.last_error;
  // Kept apart: garbage on the wire, terminals refused, and reconnects too quick to announce.
  h.details_json = "{\"malformed\":" + std::to_string(a.malformed) + ",\"refused\":" + std::to_string(a.refused) +
                   ",\"unauthenticated\":" + std::to_string(a.unauthenticated) +
                   ",\"impersonations_suspected\":" + std::to_string(a.impersonations) +
                   ",\"reconnects_debounced\":" + std::to_string(a.reconnects_debounced) + "}";
  for (const auto& d : devices) {
    DeviceCounters c;
    c.id = d;
    if (auto it = a.stats.find(d); it != a.stats.end()) {
      c.online = it->second.online;
      c.requests = it->second.messages;
      c.errors = it->second.errors;
      c.last_latency_ms = it->second.last_ack_ms;
      c.max_latency_ms = it->second.max_ack_ms;
    }
    h.online += c.online;
    h.per_device.push_back(std::move(c));
  }
  return h;
}

RulesByDevice Jt808Adapter::Rules() const {
  RulesByDevice r;
  for (const auto& t : impl_->cfg.terminals) r[t.device] = DeviceRules{};
  return r;
}

void Jt808Adapter::InstallFirmware(FirmwareJob job, FirmwareProgressFn progress, FirmwareDoneFn done) {
  auto& a = *impl_;
  {
    std::lock_guard lk(a.post_mu);
    if (a.accepting) {
      asio::post(a.io, [impl = impl_, job = std::move(job), progress = std::move(progress), done = std::move(done)]() mutable {
        impl->StartUpgrade(std::move(job), std::move(progress), std::move(done));
      });
      return;
    }
  }
  done({false, "jt808 is not running", {}});
}

bool Jt808Adapter::OwnsDevice(const std::string& device) const {
  auto& a = *impl_;
  if (a.phone_by_device.count(device)) return true;
  if (a.cfg.unknown != UnknownPolicy::kRegister) return false;
  const auto& p = a.cfg.device_prefix;
  return device.size() > p.size() && device.compare(0, p.size(), p) == 0;
}

void Jt808Adapter::Execute(CommandRequest request, ReplyFn reply) {
  auto& a = *impl_;
  if (!a.running) return reply({false, "jt808 is not running", {}});
  asio::post(a.io, [impl = impl_, req = std::move(request), reply = std::move(reply)]() mutable {
    if (req.name == "release_registration") {
      // The operator lets the terminal register (and obtain its code) once more.
      std::string phone;
      if (auto p = impl->phone_by_device.find(req.device); p != impl->phone_by_device.end()) phone = p->second;
      else if (req.device.rfind(impl->cfg.device_prefix, 0) == 0) phone = req.device.substr(impl->cfg.device_prefix.size());
      bool had = impl->registered_from.erase(phone) > 0;
      impl->registrations_dirty = true;
      impl->SaveRegistrations();
      spdlog::info("jt808: registration of {} released by an operator", req.device);
      return reply({true, {}, nlohmann::json({{"released", had}, {"phone", phone}}).dump()});
    }
    auto it = impl->by_device.find(req.device);
    auto s = it == impl->by_device.end() ? nullptr : it->second.lock();
    if (!s || s->closed()) return reply({false, req.device + " is not connected", {}});
    s->Command(req, std::move(reply));
  });
}

}  // namespace sanigate::dev::jt808
