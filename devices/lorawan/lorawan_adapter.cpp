#include "lorawan/lorawan_adapter.h"
#include "core/thread_name.h"

#include <fcntl.h>
#include <openssl/rand.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "core/clock.h"
#include "core/untrusted.h"
#include "lorawan/band_plan.h"
#include "lorawan/chirpstack_uplink.h"
#include "lorawan/lorawan_frame.h"
#include "lorawan/semtech_udp.h"
#include "runtime/asio.h"

namespace sanigate::dev::lorawan {
namespace {

using udp = boost::asio::ip::udp;
using json = nlohmann::json;

constexpr uint32_t kJoinAcceptDelayUs = 5'000'000;  // JOIN_ACCEPT_DELAY1
constexpr uint32_t kRxDelayUs = 1'000'000;          // RECEIVE_DELAY1 (RxDelay 1 in the join accept)
constexpr size_t kDevNoncesKept = 256;              // DevNonces remembered per device
constexpr size_t kStatusDownlinkQueues = 16;        // devices whose downlink queue the status shows
// Session-file writes an ACK or a join accept waits for are grouped: at most one every this many
// ms (RX1 is a second away). Everything else is written by the once-a-second sweep.
constexpr auto kStateWriteGap = std::chrono::milliseconds(10);
// On stop, how long to wait for the outbox to confirm the last uplinks, whose counters are then
// saved (a restart must not take their retransmissions for new uplinks).
constexpr auto kStopDurableWait = std::chrono::seconds(2);

struct Session {
  bool active = false;  // OTAA: joined; ABP: always
  uint32_t dev_addr = 0;
  SessionKeys keys;
  std::optional<uint32_t> fcnt_up;  // last accepted uplink counter
  uint32_t fcnt_down = 0;           // next downlink counter
  std::deque<uint16_t> dev_nonces;  // OTAA: used DevNonces, newest last
};

// A downlink command waiting for (or in) one of its device's class A windows.
enum class DlState { kQueued, kTx, kAwaitAck };  // kTx: PULL_RESP out, TX_ACK awaited
const char* DlStateName(DlState s) {
  switch (s) {
    case DlState::kQueued: return "queued";
    case DlState::kTx: return "tx";
    case DlState::kAwaitAck: return "await_ack";
  }
  return "queued";
}

struct QueuedDownlink {
  uint64_t id = 0;
  std::string command;  // "downlink" or the profile's command name
  uint8_t fport = 1;
  Bytes payload;  // plain FRMPayload
  bool confirmed = false;
  int64_t queued_ms = 0, expires_ms = 0, tx_ms = 0;
  uint32_t attempts = 0;  // transmissions so far
  DlState state = DlState::kQueued;
  uint32_t fcnt_down = 0;  // of the last transmission
  std::string window, concentrator;
  ReplyFn reply;  // empty for a command restored after a restart (its requester is gone)
};

struct DeviceState {
  const LoraDeviceConfig* cfg = nullptr;
  Session s;
  // Guarded by Impl::state_mu (the outbox's commit callback writes it from its own thread):
  // the last uplink counter whose reading is committed, which is what the session file keeps.
  // s.fcnt_up runs ahead of it while a reading waits for the de-duplication window and the
  // commit; saving that one instead would make a crash lose the reading and then take the
  // device's retransmission for an old frame.
  std::optional<uint32_t> stored_fcnt_up;
  uint64_t session_gen = 0;  // bumped by a join: commits of an older session are ignored
  bool state_changed = true;
  std::string state_json;  // this device's entry of the session file, rebuilt when changed
  int64_t last_seen_ms = 0;
  bool online = false, offline_announced = false;
  uint64_t uplinks = 0, errors = 0, lost = 0;
  std::map<std::string, int64_t> last_warn_ms;  // by kind of problem: logged once a minute each
  std::deque<std::string> recent_ids;           // ChirpStack deduplicationIds seen last
  // Downlink commands, oldest first; only the front is ever on the air. Changed on the io
  // thread under Impl::mu (Health reads it from any thread).
  std::deque<QueuedDownlink> downlinks;
};

struct Copy {
  uint64_t gateway = 0;
  Rxpk rx;
};

struct RadioMeta {
  std::optional<double> rssi_dbm, snr_db;
  std::optional<int64_t> frequency_hz;
  std::string data_rate, concentrator;
  int concentrators = 0;
  bool via_chirpstack = false;
};

bool Better(const Rxpk& a, const Rxpk& b) {
  double sa = a.lsnr.value_or(-100), sb = b.lsnr.value_or(-100);
  int ra = a.rssi.value_or(-200), rb = b.rssi.value_or(-200);
  return ra != rb ? ra > rb : sa > sb;
}

uint16_t TokenKey(const Token& t) { return static_cast<uint16_t>((t[0] << 8) | t[1]); }

}  // namespace

struct LorawanAdapter::Impl : std::enable_shared_from_this<LorawanAdapter::Impl> {
  struct PendingUplink {
    DeviceState* dev = nullptr;
    DataFrame frame;
    uint32_t fcnt = 0;
    int64_t received_ms = 0;
    std::vector<Copy> copies;
    std::unique_ptr<asio::steady_timer> timer;
  };
  struct PendingJoin {
    DeviceState* dev = nullptr;
    uint16_t dev_nonce = 0;
    std::vector<Copy> copies;
    std::unique_ptr<asio::steady_timer> timer;
  };
  struct Downlink {
    uint64_t gateway = 0;
    std::string device;
    Txpk txpk;
    std::optional<Txpk> rx2;
    DeviceState* dev = nullptr;
    uint64_t cmd_id = 0;  // the queued command this frame carries (0: a bare ACK or a join accept)
    const char* window = "rx1";
  };
  struct GatewayInfo {
    udp::endpoint pull_ep;
    bool has_pull = false;
    uint8_t version = 2;
    int64_t last_seen_ms = 0;
    uint64_t pushes = 0, rx = 0;
    std::optional<uint32_t> stat_rxnb, stat_rxok;
  };

  Impl(LorawanConfig c, MqttInputFactory f) : cfg(std::move(c)), input_factory(std::move(f)) {
    auto found = FindBandPlan(cfg.region);
    plan = found.ok() ? found.value() : &Cn470();
    for (const auto& d : cfg.devices) {
      auto st = std::make_unique<DeviceState>();
      st->cfg = &d;
      if (!d.otaa && !d.via_chirpstack) {
        st->s.active = true;
        st->s.dev_addr = d.dev_addr;
        st->s.keys = {d.nwk_s_key, d.app_s_key};
      }
      by_eui[d.dev_eui] = st.get();
      devices.push_back(std::move(st));
    }
  }

  // ---- counters committed with their readings ----
  static constexpr const char* kCounterMark = "lorawan.fcnt_up";
  // The session an uplink counter belongs to: the DevAddr and, for OTAA, the join's DevNonce
  // (a new join starts the counters again). No key material: the outbox is not a secret.
  static std::string SessionTag(const DeviceState& d) {
    std::string tag = fmt::format("{:08X}", d.s.dev_addr);
    if (d.cfg->otaa) tag += d.s.dev_nonces.empty() ? "/-" : fmt::format("/{}", d.s.dev_nonces.back());
    return tag;
  }
  static std::string CounterMark(const DeviceState& d, uint32_t fcnt) { return SessionTag(d) + " " + std::to_string(fcnt); }

  // The session file is written within a second of a commit; a crash in that second leaves the
  // last counters only in the outbox, committed with their readings. Take them from there.
  void RestoreCommittedCounters() {
    for (auto& d : devices) {
      if (!d->s.active) continue;
      auto mark = sink->LastMark(d->cfg->id, kCounterMark);
      if (!mark) continue;
      auto space = mark->rfind(' ');
      if (space == std::string::npos || mark->compare(0, space, SessionTag(*d)) != 0) continue;  // another session
      uint32_t fcnt = 0;
      const char* end = mark->data() + mark->size();
      if (auto [ptr, ec] = std::from_chars(mark->data() + space + 1, end, fcnt); ec != std::errc() || ptr != end) continue;
      if (d->cfg->fcnt_up_start && fcnt + 1 < *d->cfg->fcnt_up_start) continue;  // the operator's seed wins, as above
      std::lock_guard lk(state_mu);
      if (d->stored_fcnt_up && *d->stored_fcnt_up >= fcnt) continue;
      spdlog::info("lorawan: {}: uplink {} was stored after the session file was last written (it says {}); continuing from it",
                   d->cfg->id, fcnt, d->stored_fcnt_up ? std::to_string(*d->stored_fcnt_up) : std::string("none"));
      d->s.fcnt_up = fcnt;
      d->stored_fcnt_up = fcnt;
      d->state_changed = true;
      dirty = true;
    }
  }

  // ---- state file ----
  // Sessions, counters and used DevNonces live in a 0600 JSON file replaced atomically. Writes
  // run on their own thread. Whatever a downlink depends on (its FCntDown, the counter of the
  // uplink it acknowledges, a join's session) is written before the downlink leaves; the rest
  // within a second. An uplink counter is saved only once its reading is committed.
  void LoadState() {
    std::ifstream in(cfg.state_file);
    if (!in) return;
    json j = json::parse(in, nullptr, false);
    if (j.is_discarded() || !j.contains("devices") || !j["devices"].is_object()) {
      std::string aside = cfg.state_file + ".corrupt";
      std::error_code ec;
      std::filesystem::rename(cfg.state_file, aside, ec);
      spdlog::error("lorawan: {} is not a session file; moved to {}: OTAA devices must join again", cfg.state_file, aside);
      return;
    }
    size_t restored = 0;
    for (auto& [eui_hex, v] : j["devices"].items()) {
      auto eui = ParseEui(eui_hex);
      if (!eui.ok() || !by_eui.count(*eui) || !v.is_object()) continue;
      DeviceState& d = *by_eui[*eui];
      try {
        uint32_t addr = v.at("dev_addr").get<uint32_t>();
        if (d.cfg->otaa) {
          auto nk = ParseKey(v.at("nwk_s_key").get<std::string>()), ak = ParseKey(v.at("app_s_key").get<std::string>());
          if (!nk.ok() || !ak.ok()) continue;
          d.s.active = true;
          d.s.dev_addr = addr;
          d.s.keys = {*nk, *ak};
          for (const auto& n : v.value("dev_nonces", json::array())) d.s.dev_nonces.push_back(n.get<uint16_t>());
        } else if (addr != d.cfg->dev_addr) {
          continue;  // re-provisioned ABP device: its old counters do not apply
        }
        if (v.contains("fcnt_up") && !v["fcnt_up"].is_null()) d.s.fcnt_up = v["fcnt_up"].get<uint32_t>();
        // A counter seeded in the config above the stored one wins (the operator knows better).
        if (d.s.fcnt_up && d.cfg->fcnt_up_start && *d.s.fcnt_up + 1 < *d.cfg->fcnt_up_start) {
          spdlog::info(
              "lorawan: {}: stored uplink counter {} is below fcnt_up_start {}: starting from the "
              "latter",
              d.cfg->id, *d.s.fcnt_up, *d.cfg->fcnt_up_start);
          d.s.fcnt_up.reset();
        }
        d.stored_fcnt_up = d.s.fcnt_up;
        d.s.fcnt_down = v.value("fcnt_down", 0u);
        LoadDownlinks(d, v.value("downlinks", json::array()));
        restored++;
      } catch (const json::exception&) {
        continue;
      }
    }
    if (restored) spdlog::info("lorawan: restored {} sessions from {}", restored, cfg.state_file);
  }

  // The downlink queue of a session-file entry. A command that was waiting for its TX_ACK when
  // the gateway stopped was most likely sent: a confirmed one waits for the device's ACK, an
  // unconfirmed one is dropped (logged: its outcome is unknown).
  void LoadDownlinks(DeviceState& d, const json& list) {
    if (!list.is_array()) return;
    for (const auto& e : list) {
      if (!e.is_object() || d.downlinks.size() >= cfg.downlink_queue_max) continue;
      QueuedDownlink q;
      q.id = e.value("id", uint64_t{0});
      q.command = e.value("command", std::string("downlink"));
      q.fport = e.value("fport", uint8_t{1});
      auto payload = ParseHex(e.value("hex", std::string()), "hex");
      if (!q.id || !payload.ok() || q.fport == 0 || q.fport > 223) continue;
      q.payload = std::move(*payload);
      q.confirmed = e.value("confirmed", false);
      q.queued_ms = e.value("queued", int64_t{0});
      q.expires_ms = e.value("expires", int64_t{0});
      q.attempts = e.value("attempts", 0u);
      q.fcnt_down = e.value("fcnt_down", 0u);
      std::string st = e.value("state", std::string("queued"));
      q.state = st == "queued" ? DlState::kQueued : DlState::kAwaitAck;
      if (st == "tx" && !q.confirmed) {
        spdlog::warn("lorawan: {}: downlink #{} ({}) was waiting for its TX_ACK at the last stop: outcome unknown, dropped",
                     d.cfg->id, q.id, q.command);
        continue;
      }
      next_cmd_id = std::max(next_cmd_id, q.id + 1);
      d.downlinks.push_back(std::move(q));
    }
    if (!d.downlinks.empty())
      spdlog::info("lorawan: {}: {} queued downlink(s) restored", d.cfg->id, d.downlinks.size());
  }

  static json DownlinksJson(const DeviceState& d, bool for_status) {
    json list = json::array();
    for (const auto& q : d.downlinks) {
      json e = {{"id", q.id}, {"command", q.command}, {"fport", q.fport}, {"confirmed", q.confirmed},
                {"state", DlStateName(q.state)}, {"attempts", q.attempts}, {"queued", q.queued_ms},
                {"expires", q.expires_ms}};
      if (for_status) e["bytes"] = q.payload.size();
      else e["hex"] = ToHex(q.payload), e["fcnt_down"] = q.fcnt_down;
      list.push_back(std::move(e));
    }
    return list;
  }

  void MarkChanged(DeviceState& d) {
    std::lock_guard lk(state_mu);
    d.state_changed = true;
  }

  // The session file's text. Only changed devices are encoded again, so a busy network with
  // thousands of devices does not pay for all of them at every write. Call on the io thread
  // (or once it has stopped).
  std::string Snapshot() {
    std::lock_guard lk(state_mu);
    std::string text = R"({"version":1,"devices":{)";
    bool first = true;
    for (auto& d : devices) {
      if (!d->s.active) continue;
      if (d->state_changed || d->state_json.empty()) {
        json v;
        v["dev_addr"] = d->s.dev_addr;
        if (d->cfg->otaa) {
          v["nwk_s_key"] = ToHex(d->s.keys.nwk_s_key);
          v["app_s_key"] = ToHex(d->s.keys.app_s_key);
          v["dev_nonces"] = d->s.dev_nonces;
        }
        v["fcnt_up"] = d->stored_fcnt_up ? json(*d->stored_fcnt_up) : json(nullptr);
        v["fcnt_down"] = d->s.fcnt_down;
        if (!d->downlinks.empty()) v["downlinks"] = DownlinksJson(*d, false);
        d->state_json = json(EuiToHex(d->cfg->dev_eui)).dump() + ":" + v.dump();
        d->state_changed = false;
      }
      if (!first) text += ',';
      first = false;
      text += d->state_json;
    }
    text += "}}";
    return text;
  }

  // Writes `text` (snapshot number `gen`) durably: temporary file, fsync, rename, fsync of the
  // directory. A snapshot older than one already written is skipped, so a slow write can never
  // put older counters back. Any thread.
  Status WriteStateFile(const std::string& text, uint64_t gen) {
    std::lock_guard lk(write_mu);
    if (gen <= written_gen) return Status::Ok();
    std::string tmp = cfg.state_file + ".tmp";
    std::filesystem::path dir = std::filesystem::path(cfg.state_file).parent_path();
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    bool ok = fd >= 0 && ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) && ::fsync(fd) == 0;
    int err = errno;
    if (fd >= 0) ::close(fd);
    if (!ok || ::rename(tmp.c_str(), cfg.state_file.c_str()) != 0) {
      if (ok) err = errno;
      return Unavailable("cannot write " + cfg.state_file + ": " + std::strerror(err));
    }
    // The rename itself is durable only once the directory is.
    int dfd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
      ::fsync(dfd);
      ::close(dfd);
    }
    written_gen = gen;
    return Status::Ok();
  }

  // Asks for the session file to be written with the state as it is now; `then(ok)` runs on the
  // io thread once it is on disk (ok false: it could not be written). Requests that arrive while
  // a write is running share the next one.
  void RequestSave(std::function<void(bool)> then = {}) {
    if (then) save_waiters.push_back(std::move(then));
    save_wanted = true;
    if (!save_busy) StartSave();
  }

  void StartSave() {
    save_busy = true;
    save_wanted = false;
    dirty = false;
    auto waiters = std::move(save_waiters);
    save_waiters.clear();
    uint64_t gen = ++save_gen;
    std::string text = Snapshot();
    auto started = std::chrono::steady_clock::now();
    asio::post(state_writer, [self = shared_from_this(), text = std::move(text), gen, started,
                              waiters = std::move(waiters)]() mutable {
      Status st = self->WriteStateFile(text, gen);
      // Weak: a handler left in a stopped io_context must not keep the Impl (its owner) alive.
      asio::post(self->io, [w = self->weak_from_this(), st, started, waiters = std::move(waiters)] {
        auto self = w.lock();
        if (!self) return;
        if (!st.ok()) {
          self->dirty = true;  // tried again by the sweep
          self->Warn(nullptr, st.message() + " (downlinks wait for it)", "state");
        }
        for (auto& w : waiters) w(st.ok());
        // Group what came in meanwhile into the next write, kStateWriteGap after this one.
        auto next = started + kStateWriteGap;
        if (!self->save_wanted || std::chrono::steady_clock::now() >= next) {
          self->save_busy = false;
          if (self->save_wanted) self->StartSave();
          return;
        }
        self->save_timer->expires_at(next);
        self->save_timer->async_wait([self](asio::error_code ec) {
          self->save_busy = false;
          if (!ec && self->save_wanted) self->StartSave();
        });
      });
    });
  }

  // ---- counters ----
  void SetError(const std::string& e) {
    std::lock_guard lk(mu);
    last_error = e;
  }
  // Counts a problem of a device and logs it at most once a minute per device and kind, so a
  // device stuck in a bad state cannot flood the journal.
  void Warn(DeviceState* d, const std::string& what, const std::string& kind = "other") {
    int64_t now = NowMs();
    if (d) d->errors++;
    auto& last = d ? d->last_warn_ms : global_warn_ms;
    auto [it, fresh] = last.try_emplace(kind, now);
    if (!fresh && now - it->second < 60000) return;
    it->second = now;
    spdlog::warn("lorawan: {}{}", d ? d->cfg->id + ": " : std::string(), what);
    SetError(what);
  }
  void Bump(uint64_t& counter) {
    std::lock_guard lk(mu);
    counter++;
  }

  // ---- datagrams ----
  void Send(const udp::endpoint& to, Bytes bytes) {
    auto buf = std::make_shared<Bytes>(std::move(bytes));
    sock->async_send_to(asio::buffer(*buf), to, [buf](asio::error_code, size_t) {});
  }

  void OnDatagram(std::span<const uint8_t> data, const udp::endpoint& from) {
    auto d = ParseDatagram(data);
    if (!d.ok()) {
      Bump(malformed);
      int64_t now = NowMs();
      if (now - last_malformed_log >= 60000) {
        last_malformed_log = now;
        spdlog::warn("lorawan: malformed datagram from {}: {}", from.address().to_string(), d.status().message());
      }
      return;
    }
    switch (d->id) {
      case GwmpId::kPullData: {
        auto& g = gateways[*d->gateway_eui];
        g.pull_ep = from;
        g.has_pull = true;
        g.version = d->version;
        g.last_seen_ms = NowMs();
        Send(from, BuildPullAck(d->token, d->version));
        return;
      }
      case GwmpId::kPushData: {
        Send(from, BuildPushAck(d->token, d->version));
        auto& g = gateways[*d->gateway_eui];
        g.last_seen_ms = NowMs();
        {
          std::lock_guard lk(mu);
          g.pushes++;
          g.rx += d->rxpk.size();
          if (d->stat) {
            if (d->stat->rxnb) g.stat_rxnb = *d->stat->rxnb;
            if (d->stat->rxok) g.stat_rxok = *d->stat->rxok;
          }
        }
        // Entries that did not parse were left out by the parser; the good ones go on.
        if (d->rxpk_bad || d->stat_error) {
          {
            std::lock_guard lk(mu);
            malformed += d->rxpk_bad + (d->stat_error ? 1 : 0);
          }
          std::string first =
              !d->rxpk_errors.empty() ? d->rxpk_errors[0] : d->stat_error.value_or("");
          Warn(nullptr,
               "concentrator " + EuiToHex(*d->gateway_eui) + " sent " +
                   std::to_string(d->rxpk_bad) +
                   (d->rxpk_bad == 1 ? " bad rxpk entry" : " bad rxpk entries") +
                   (d->stat_error ? " and a bad stat" : "") + " (first: " + first +
                   "); the rest of the datagram is used",
               "rxpk");
        }
        for (auto& rx : d->rxpk) OnRxpk(*d->gateway_eui, std::move(rx));
        return;
      }
      case GwmpId::kTxAck: return OnTxAck(*d);
      default: Bump(malformed);  // a server-to-gateway message sent to the server
    }
  }

  void OnRxpk(uint64_t gw, Rxpk rx) {
    if (rx.stat != 1 || rx.modu != "LORA" || !rx.lora) return;  // CRC bad/absent, or FSK
    auto mt = PeekMType(rx.data);
    if (!mt.ok()) return Bump(malformed);
    if (*mt == MType::kJoinRequest) return OnJoinRequest(gw, std::move(rx));
    if (*mt == MType::kUnconfirmedUp || *mt == MType::kConfirmedUp) return OnDataUp(gw, std::move(rx));
    Bump(malformed);  // downlink types heard by our own concentrator, proprietary frames
  }

  FCntPolicy Policy(const DeviceState& d) const {
    return {d.cfg->max_fcnt_gap, d.cfg->fcnt_up_start.value_or(0), cfg.fcnt_search_epochs};
  }

  // The last accepted counter as a log text.
  static std::string LastText(const DeviceState& d) {
    if (d.s.fcnt_up) return "the last accepted " + std::to_string(*d.s.fcnt_up);
    return "fcnt_up_start " + std::to_string(d.cfg->fcnt_up_start.value_or(0));
  }

  void OnDataUp(uint64_t gw, Rxpk rx) {
    auto f = ParseDataFrame(rx.data);
    if (!f.ok()) return Bump(malformed);
    bool any_device = false;
    for (auto& dev : devices) {
      Session& s = dev->s;
      if (!s.active || s.dev_addr != f->dev_addr) continue;
      any_device = true;
      // A byte-for-byte copy of an uplink being collected is that uplink heard again: its MIC
      // was checked with the first copy. Anything else with the same counter must pass the MIC
      // itself, or a forger could lend his radio metadata (and the ACK's path) to our frame.
      for (auto it = pending_up.lower_bound({f->dev_addr, 0});
           it != pending_up.end() && it->first.first == f->dev_addr; ++it) {
        if (it->second.dev != dev.get() || it->second.copies[0].rx.data != rx.data) continue;
        it->second.copies.push_back({gw, std::move(rx)});
        Bump(duplicates);
        return;
      }
      auto check = CheckUplink(*f, s.keys.nwk_s_key, s.fcnt_up, Policy(*dev));
      if (!check.ok())
        return Warn(dev.get(), "uplink not checked: " + check.status().message(), "crypto");
      const uint32_t fcnt = check->fcnt32;
      switch (check->verdict) {
        case UplinkVerdict::kBadMic:
          continue;  // maybe another device shares the address
        case UplinkVerdict::kRepeat:
          return OnRepeat(*dev, gw, std::move(rx), *f, fcnt);
        case UplinkVerdict::kReplay:
          Bump(replays);
          return Warn(dev.get(),
                      "replayed frame (counter " + std::to_string(fcnt) + " is behind " +
                          LastText(*dev) + ") dropped",
                      "replay");
        case UplinkVerdict::kGapTooLarge:
          Bump(fcnt_gap_drops);
          return Warn(dev.get(),
                      "frame counter " + std::to_string(fcnt) + " is " +
                          std::to_string(fcnt - *s.fcnt_up) + " ahead of " +
                          std::to_string(*s.fcnt_up) + ", more than max_fcnt_gap " +
                          std::to_string(dev->cfg->max_fcnt_gap) + " (LoRaWAN " +
                          dev->cfg->lorawan_version +
                          "): dropped; raise max_fcnt_gap (0 = no limit) if the device really lost "
                          "that many",
                      "gap");
        case UplinkVerdict::kExhausted:
          return Warn(dev.get(),
                      "frame counter ran past 0xFFFFFFFF: dropped; the session must be renewed "
                      "(join again, or new ABP keys)",
                      "exhausted");
        case UplinkVerdict::kNew:
          return Accept(*dev, gw, std::move(rx), std::move(*f), fcnt);
      }
    }
    if (!any_device) {
      // Neighbours' devices share the band: not a forgery signal, counted apart.
      Bump(unknown_devices);
      char buf[80];
      std::snprintf(buf, sizeof buf, "uplink from unknown DevAddr %08X dropped", f->dev_addr);
      return Warn(nullptr, buf, "unknown_devaddr");
    }
    Bump(bad_mic);
    for (auto& dev : devices)
      if (dev->s.active && dev->s.dev_addr == f->dev_addr) Warn(dev.get(), "uplink with a wrong MIC (forged or wrong keys) dropped", "mic");
  }

  // An authentic frame with the last accepted counter that is not a byte copy of an uplink
  // being collected: a retransmission after the window (confirmed uplinks are repeated until
  // ACKed), or, with different bytes inside the window, a second frame under one counter.
  void OnRepeat(DeviceState& dev, uint64_t gw, Rxpk rx, const DataFrame& f, uint32_t fcnt) {
    Bump(duplicates);
    if (pending_up.count({f.dev_addr, fcnt})) return;  // not merged: it is not the same frame
    if (f.mtype != MType::kConfirmedUp) return;
    // ACK again only what is stored; until then the first copy's ACK is on its way.
    bool stored;
    {
      std::lock_guard lk(state_mu);
      stored = dev.stored_fcnt_up && *dev.stored_fcnt_up >= fcnt;
    }
    if (stored) SendAck(dev, gw, rx);
  }

  void Accept(DeviceState& dev, uint64_t gw, Rxpk rx, DataFrame f, uint32_t fcnt) {
    Session& s = dev.s;
    if (s.fcnt_up) {
      dev.lost += fcnt - *s.fcnt_up - 1;
    } else if (fcnt >> 16 != dev.cfg->fcnt_up_start.value_or(0) >> 16) {
      spdlog::info(
          "lorawan: {}: no stored counter; found the device at uplink counter {} (16-bit epoch {})",
          dev.cfg->id, fcnt, fcnt >> 16);
    }
    s.fcnt_up = fcnt;
    PendingUplink p;
    p.dev = &dev;
    p.frame = std::move(f);
    p.fcnt = fcnt;
    p.received_ms = NowMs();
    p.copies.push_back({gw, std::move(rx)});
    p.timer =
        std::make_unique<asio::steady_timer>(io, std::chrono::milliseconds(cfg.dedup_window_ms));
    auto key = std::make_pair(p.frame.dev_addr, p.fcnt);
    p.timer->async_wait([self = shared_from_this(), key](asio::error_code ec) {
      if (!ec) self->FinishUplink(key);
    });
    pending_up.emplace(key, std::move(p));
  }

  void FinishUplink(std::pair<uint32_t, uint32_t> key) {
    auto it = pending_up.find(key);
    if (it == pending_up.end()) return;
    PendingUplink p = std::move(it->second);
    pending_up.erase(it);
    DeviceState& dev = *p.dev;
    const Copy* best = &p.copies[0];
    for (const auto& c : p.copies)
      if (Better(c.rx, best->rx)) best = &c;
    dev.uplinks++;
    {
      std::lock_guard lk(mu);
      uplinks++;
    }
    std::vector<Record> out;
    MarkSeen(dev, p.received_ms, out);
    Bytes plain;
    if (p.frame.fport && *p.frame.fport > 0 && !p.frame.frm_payload.empty()) {
      auto decrypted = DecryptFrmPayload(p.frame, dev.s.keys, p.fcnt);
      if (decrypted.ok()) plain = std::move(*decrypted);
      else Warn(&dev, "payload on port " + std::to_string(*p.frame.fport) + " not decrypted: " + decrypted.status().message());
    }
    RadioMeta radio;
    if (best->rx.rssi) radio.rssi_dbm = static_cast<double>(*best->rx.rssi);
    radio.snr_db = best->rx.lsnr;
    radio.frequency_hz = static_cast<int64_t>(best->rx.freq_hz);
    radio.data_rate = FormatLoraDatr(*best->rx.lora);
    radio.concentrator = EuiToHex(best->gateway);
    radio.concentrators = static_cast<int>(p.copies.size());
    Record r = UplinkReading(dev, p.received_ms, p.fcnt, p.frame.fport.value_or(0), plain, radio);
    // The counter is committed with the reading, in the outbox's transaction: a crash before
    // the session file catches up cannot make this uplink's retransmission a new record.
    Record::Mark mark{kCounterMark, CounterMark(dev, p.fcnt)};
    if (!r.metrics.empty()) {
      r.mark = std::move(mark);
      out.push_back(std::move(r));
    } else if (!out.empty()) {
      out.front().mark = std::move(mark);
    }
    // Once the reading is committed its counter may go to the session file. A confirmed uplink
    // gets its ACK only after that write: after a crash the device's retransmission is known as
    // one (ACKed again, not published again under a new id). An unconfirmed one has no ACK to
    // wait for; its counter goes with the next sweep (within a second), which spares the flash
    // a rewrite of the whole file per uplink.
    bool confirmed = p.frame.mtype == MType::kConfirmedUp;
    // Downlink commands: this uplink's ACK bit settles a confirmed one on the air; the next one
    // goes in this uplink's window (with the ACK, for a confirmed uplink, once that is stored).
    CheckDownlinkAck(dev, p.frame);
    if (!confirmed) SendDown(dev, best->gateway, best->rx, false);
    std::weak_ptr<Impl> w = weak_from_this();
    Copy via = *best;
    DeviceState* devp = &dev;  // devices live as long as the Impl
    uint32_t fcnt = p.fcnt;
    uint64_t gen = dev.session_gen;
    {
      std::lock_guard lk(state_mu);
      outstanding_durable++;
    }
    EmitDurable(std::move(out), [w, via, devp, fcnt, gen, confirmed](bool durable) {
      auto self = w.lock();
      if (!self) return;
      {
        std::lock_guard lk(self->state_mu);
        if (durable && devp->session_gen == gen &&
            (!devp->stored_fcnt_up || *devp->stored_fcnt_up < fcnt)) {
          devp->stored_fcnt_up = fcnt;
          devp->state_changed = true;
        }
        self->outstanding_durable--;
      }
      self->durable_cv.notify_all();
      if (!durable) return;  // not stored: no ACK, the device will send it again
      asio::post(self->io, [w, via, devp, confirmed] {
        auto self = w.lock();
        if (!self || !self->running) return;
        self->dirty = true;
        // SendAck's own write carries this counter along with the ACK's FCntDown.
        if (confirmed) self->SendAck(*devp, via.gateway, via.rx);
      });
    });
  }

  // One uplink's reading, decoded by the device's profile, with the radio metadata in its
  // source; shared by the packet-forwarder path and the ChirpStack input.
  Record UplinkReading(DeviceState& dev, int64_t ts, uint32_t fcnt, uint8_t fport, const Bytes& plain,
                       const RadioMeta& radio) {
    Record r = MakeReading(dev.cfg->id, dev.cfg->kind, "lorawan", ts);
    if (fport > 0 && !plain.empty()) {
      auto decoded = DecodePayload(*dev.cfg->profile, fport, plain);
      if (decoded.ok()) {
        r.metrics = std::move(decoded->metrics);
        r.quality = std::move(decoded->quality);
      } else {
        Warn(&dev, "payload on port " + std::to_string(fport) + " not decoded: " + decoded.status().message());
      }
    }
    r.location = dev.cfg->location;
    r.source_extra.push_back({"dev_eui", EuiToHex(dev.cfg->dev_eui)});
    r.source_extra.push_back({"profile", dev.cfg->profile_name});
    r.source_extra.push_back({"fcnt", static_cast<int64_t>(fcnt)});
    if (radio.rssi_dbm) r.source_extra.push_back({"rssi_dbm", *radio.rssi_dbm});
    if (radio.snr_db) r.source_extra.push_back({"snr_db", *radio.snr_db});
    if (radio.frequency_hz) r.source_extra.push_back({"frequency_hz", *radio.frequency_hz});
    if (!radio.data_rate.empty()) r.source_extra.push_back({"data_rate", radio.data_rate});
    if (!radio.concentrator.empty()) r.source_extra.push_back({"concentrator", radio.concentrator});
    if (radio.concentrators) r.source_extra.push_back({"concentrators", static_cast<int64_t>(radio.concentrators)});
    if (radio.via_chirpstack) r.source_extra.push_back({"network_server", std::string("chirpstack")});
    if (fcnt > 0 && dev.lost) r.source_extra.push_back({"frames_lost", static_cast<int64_t>(dev.lost)});
    return r;
  }

  // ---- ChirpStack MQTT integration ----
  // ChirpStack has checked MICs and counters and merged the copies; what is left here is the
  // DevEUI mapping, MQTT's at-least-once duplicates, the profile and the events.
  void OnChirpstackUp(const std::string& topic, const std::string& payload) {
    std::string_view topic_eui;
    if (auto pos = topic.find("/device/"); pos != std::string::npos) {
      topic_eui = std::string_view(topic).substr(pos + 8);
      topic_eui = topic_eui.substr(0, topic_eui.find('/'));
    }
    auto up = ParseChirpstackUplink(payload, topic_eui);
    if (!up.ok()) {
      Bump(malformed);
      int64_t now = NowMs();
      if (now - last_malformed_log >= 60000) {
        last_malformed_log = now;
        spdlog::warn("lorawan: chirpstack message on {} ignored: {}", topic, up.status().message());
      }
      SetError(up.status().message());
      return;
    }
    auto it = by_eui.find(up->dev_eui);
    if (it == by_eui.end() || !it->second->cfg->via_chirpstack) {
      Bump(unknown_devices);
      int64_t now = NowMs();
      if (now - last_unknown_log >= 60000) {
        last_unknown_log = now;
        spdlog::warn("lorawan: chirpstack uplink from DevEUI {} ignored: no device with activation = \"chirpstack\" has it",
                     EuiToHex(up->dev_eui));
      }
      return;
    }
    DeviceState& dev = *it->second;
    // A redelivered message (QoS 1 after a reconnect) carries the same deduplicationId.
    std::string key = up->deduplication_id.empty() ? std::to_string(up->fcnt) + "/" + Base64Encode(up->data)
                                                   : up->deduplication_id;
    if (std::find(dev.recent_ids.begin(), dev.recent_ids.end(), key) != dev.recent_ids.end()) {
      Bump(duplicates);
      return;
    }
    dev.recent_ids.push_back(std::move(key));
    if (dev.recent_ids.size() > 16) dev.recent_ids.pop_front();
    if (dev.s.fcnt_up && up->fcnt > *dev.s.fcnt_up + 1) dev.lost += up->fcnt - *dev.s.fcnt_up - 1;
    dev.s.fcnt_up = up->fcnt;
    dev.uplinks++;
    Bump(uplinks);
    Bump(chirpstack_uplinks);
    int64_t now = NowMs();
    std::vector<Record> out;
    MarkSeen(dev, now, out);
    RadioMeta radio;
    radio.rssi_dbm = up->rssi_dbm;
    radio.snr_db = up->snr_db;
    radio.frequency_hz = up->frequency_hz;
    radio.data_rate = up->data_rate;
    radio.concentrator = up->gateway_id;
    radio.concentrators = up->concentrators;
    radio.via_chirpstack = true;
    Record r = UplinkReading(dev, up->time_ms.value_or(now), up->fcnt, up->fport, up->data, radio);
    if (!r.metrics.empty()) out.push_back(std::move(r));
    Emit(std::move(out));
  }

  void MarkSeen(DeviceState& dev, int64_t now, std::vector<Record>& out) {
    dev.last_seen_ms = now;
    if (dev.online) return;
    dev.online = true;
    out.push_back(MakeStatus(dev.cfg->id, dev.cfg->kind, "lorawan", now, true, now));
    if (dev.offline_announced) {
      dev.offline_announced = false;
      Record ev = MakeEvent(dev.cfg->id, dev.cfg->kind, "lorawan", now, "offline", EventState::kCleared, Severity::kWarning);
      ev.message = "reporting again";
      out.push_back(std::move(ev));
    }
  }

  void SendAck(DeviceState& dev, uint64_t gw, const Rxpk& rx) { SendDown(dev, gw, rx, true); }

  // ---- downlink commands ----
  QueuedDownlink* FindCommand(DeviceState& dev, uint64_t id) {
    for (auto& q : dev.downlinks)
      if (q.id == id) return &q;
    return nullptr;
  }

  // Takes command `id` off the queue and answers it (exactly once; a command restored after a
  // restart has nobody to answer: the outcome is logged).
  void FinishCommand(DeviceState& dev, uint64_t id, CommandReply reply, uint64_t Impl::*counter) {
    ReplyFn fn;
    std::string command;
    {
      std::lock_guard lk(mu);
      auto it = std::find_if(dev.downlinks.begin(), dev.downlinks.end(), [&](const QueuedDownlink& q) { return q.id == id; });
      if (it == dev.downlinks.end()) return;
      fn = std::move(it->reply);
      command = it->command;
      dev.downlinks.erase(it);
      this->*counter += 1;
    }
    MarkChanged(dev);
    dirty = true;
    if (reply.ok)
      spdlog::info("lorawan: {}: downlink #{} ({}) done", dev.cfg->id, id, command);
    else
      spdlog::warn("lorawan: {}: downlink #{} ({}) failed: {}", dev.cfg->id, id, command, reply.error);
    if (fn) fn(std::move(reply));
    else if (reply.ok || !reply.error.empty())
      spdlog::info("lorawan: {}: downlink #{} was queued before a restart: no requester to answer", dev.cfg->id, id);
  }

  std::string ResultJson(const QueuedDownlink& q, bool acked) const {
    json r = {{"id", q.id}, {"command", q.command}, {"fport", q.fport}, {"bytes", q.payload.size()},
              {"confirmed", q.confirmed}, {"fcnt_down", q.fcnt_down}, {"window", q.window},
              {"concentrator", q.concentrator}, {"attempts", q.attempts}, {"queued_ms", NowMs() - q.queued_ms}};
    if (q.confirmed) r["acked"] = acked;
    return r.dump();
  }

  // The uplink `f` of `dev` was accepted: its ACK bit settles a confirmed downlink on the air;
  // a missing ACK sends it again (a fresh FCntDown) until downlink_max_attempts.
  void CheckDownlinkAck(DeviceState& dev, const DataFrame& f) {
    if (dev.downlinks.empty() || dev.downlinks.front().state != DlState::kAwaitAck) return;
    QueuedDownlink& q = dev.downlinks.front();
    if (f.fctrl.ack())
      return FinishCommand(dev, q.id, {true, {}, ResultJson(q, true)}, &Impl::commands_ok);
    if (q.attempts >= cfg.downlink_max_attempts)
      return FinishCommand(dev, q.id,
                           {false,
                            "confirmed downlink not acknowledged by the device after " + std::to_string(q.attempts) +
                                " transmissions",
                            ResultJson(q, false)},
                           &Impl::commands_failed);
    std::lock_guard lk(mu);
    q.state = DlState::kQueued;  // again in this uplink's window
  }

  // The data downlink answering an uplink of `dev` heard through `gw`: the ACK of a confirmed
  // uplink (`ack`) and/or the first queued command. Its FCntDown (and the queue) are on disk
  // before it leaves, as for every downlink.
  void SendDown(DeviceState& dev, uint64_t gw, const Rxpk& rx, bool ack) {
    if (!running) return;
    QueuedDownlink* q = !dev.downlinks.empty() && dev.downlinks.front().state == DlState::kQueued ? &dev.downlinks.front() : nullptr;
    if (!ack && !q) return;
    DataFrameSpec spec;
    spec.mtype = q && q->confirmed ? MType::kConfirmedDown : MType::kUnconfirmedDown;
    spec.dev_addr = dev.s.dev_addr;
    spec.fcnt32 = dev.s.fcnt_down++;
    spec.fctrl_flags = static_cast<uint8_t>((ack ? kFCtrlAck : 0) | (q && dev.downlinks.size() > 1 ? kFCtrlFPending : 0));
    if (q) {
      spec.fport = q->fport;
      spec.payload = q->payload;
    }
    MarkChanged(dev);
    auto phy = BuildDataFrame(spec, dev.s.keys);
    if (!phy.ok()) {
      if (q) FinishCommand(dev, q->id, {false, "cannot build the downlink: " + phy.status().message(), {}}, &Impl::commands_failed);
      return Warn(&dev, "cannot build the downlink: " + phy.status().message());
    }
    uint64_t id = 0;
    if (q) {
      std::lock_guard lk(mu);
      id = q->id;
      q->state = DlState::kTx;
      q->tx_ms = NowMs();
      q->attempts++;
      q->fcnt_down = spec.fcnt32;
      q->concentrator = EuiToHex(gw);
    }
    // The FCntDown is on disk before the frame leaves: after a crash it is never sent twice.
    RequestSave([this, devp = &dev, gw, rx, id, phy = std::move(*phy)](bool saved) {
      if (!saved) {
        if (id) RequeueCommand(*devp, id);
        return Warn(devp, "downlink not sent: its frame counter could not be saved", "state");
      }
      ScheduleDownlink(*devp, gw, rx, phy, kRxDelayUs, id);
    });
  }

  // A command whose frame could not leave goes back to the queue for the next uplink.
  void RequeueCommand(DeviceState& dev, uint64_t id) {
    {
      std::lock_guard lk(mu);
      if (QueuedDownlink* q = FindCommand(dev, id)) q->state = DlState::kQueued;
    }
    MarkChanged(dev);
    dirty = true;
  }

  // The concentrator's verdict on the frame of command `id` (after the RX2 fallback, if any).
  void OnCommandTx(DeviceState& dev, uint64_t id, bool sent, const char* window, const std::string& error) {
    QueuedDownlink* q = FindCommand(dev, id);
    if (!q) return;
    if (!sent)
      return FinishCommand(dev, id, {false, "concentrator " + q->concentrator + " refused the downlink: " + error, ResultJson(*q, false)},
                           &Impl::commands_failed);
    {
      std::lock_guard lk(mu);
      q->window = window;
    }
    if (!q->confirmed) return FinishCommand(dev, id, {true, {}, ResultJson(*q, false)}, &Impl::commands_ok);
    {
      std::lock_guard lk(mu);
      q->state = DlState::kAwaitAck;
    }
    MarkChanged(dev);
    dirty = true;
    spdlog::info("lorawan: {}: confirmed downlink #{} sent in {} (FCntDown {}, attempt {}); waiting for the device's ACK",
                 dev.cfg->id, id, window, q->fcnt_down, q->attempts);
  }

  // Once a second: commands past their time, and frames whose TX_ACK never came.
  void ExpireCommands(int64_t now) {
    for (auto& d : devices) {
      std::vector<std::pair<uint64_t, std::string>> gone;
      for (const auto& q : d->downlinks) {
        if (q.state == DlState::kTx) {
          if (now - q.tx_ms > 10'000) gone.emplace_back(q.id, "concentrator " + q.concentrator + " sent no TX_ACK");
          continue;
        }
        if (now < q.expires_ms) continue;
        std::string secs = std::to_string((q.expires_ms - q.queued_ms + 999) / 1000);
        if (q.state == DlState::kAwaitAck || q.attempts > 0)
          gone.emplace_back(q.id, "expired: sent " + std::to_string(q.attempts) + " time(s), not acknowledged by the device within " + secs + " s");
        else
          gone.emplace_back(q.id, "expired: no downlink window within " + secs + " s (class A: the device sent no uplink)");
      }
      for (auto& [id, why] : gone) {
        bool expired = why.rfind("expired", 0) == 0;
        FinishCommand(*d, id, {false, why, {}}, expired ? &Impl::commands_expired : &Impl::commands_failed);
      }
    }
  }

  // Execute(), on the io thread.
  void QueueCommand(CommandRequest req, ReplyFn reply) {
    DeviceState* dev = nullptr;
    for (auto& d : devices)
      if (d->cfg->id == req.device) dev = d.get();
    if (!dev) return reply({false, "unknown device " + QuotePrefix(req.device, 64), {}});
    if (dev->cfg->via_chirpstack)
      return reply({false, req.device + " is served by ChirpStack: send its downlinks through ChirpStack", {}});
    if (!cfg.udp_enabled) return reply({false, "lorawan.listen is off: no concentrator to send downlinks through", {}});
    if (!dev->s.active) return reply({false, req.device + " has not joined yet: no session to send a downlink in", {}});
    auto max_mac = plan->MaxMacPayload(plan->Rx2DataRate());
    size_t max_payload = max_mac.ok() && *max_mac > 8 ? static_cast<size_t>(*max_mac - 8) : 51;  // FHDR 7 + FPort 1
    auto enc = EncodeDownlinkCommand(dev->cfg->profile.get(), req.name, req.args, max_payload);
    if (!enc.ok()) return reply({false, enc.status().message(), {}});
    if (dev->downlinks.size() >= cfg.downlink_queue_max)
      return reply({false,
                    "downlink queue of " + req.device + " is full (" + std::to_string(dev->downlinks.size()) +
                        " commands wait for its next uplinks; lorawan.downlink_queue_max)",
                    {}});
    QueuedDownlink q;
    q.id = next_cmd_id++;
    q.command = req.name;
    q.fport = enc->fport;
    q.payload = std::move(enc->payload);
    q.confirmed = enc->confirmed;
    q.queued_ms = NowMs();
    q.expires_ms = q.queued_ms + (req.timeout.count() > 0 ? req.timeout.count() : cfg.downlink_timeout_s * 1000);
    q.reply = std::move(reply);
    spdlog::info("lorawan: {}: downlink #{} ({}) queued: FPort {}, {} bytes, {}, {} waiting", dev->cfg->id, q.id, q.command,
                 q.fport, q.payload.size(), q.confirmed ? "confirmed" : "unconfirmed", dev->downlinks.size() + 1);
    {
      std::lock_guard lk(mu);
      dev->downlinks.push_back(std::move(q));
      commands_queued++;
    }
    MarkChanged(*dev);
    dirty = true;  // on disk within a second (and before any downlink leaves)
  }

  // RX1 (on the uplink's channel plan, `delay_us` after it) with RX2 one second later as the
  // fallback when the concentrator refuses RX1 (TX_ACK error).
  void ScheduleDownlink(DeviceState& dev, uint64_t gw, const Rxpk& rx, const Bytes& phy, uint32_t delay_us,
                        uint64_t cmd_id = 0) {
    auto g = gateways.find(gw);
    if (g == gateways.end() || !g->second.has_pull) {
      if (cmd_id) RequeueCommand(dev, cmd_id);
      return Warn(&dev, "no PULL_DATA from concentrator " + EuiToHex(gw) + " yet: downlink not sent");
    }
    auto up_dr = plan->DataRate(*rx.lora);
    auto rx1_freq = plan->Rx1Frequency(rx.freq_hz);
    auto rx1_dr = up_dr.ok() ? plan->Rx1DataRate(*up_dr) : Result<int>(up_dr.status());
    auto rx1_rate = rx1_dr.ok() ? plan->Rate(*rx1_dr) : Result<LoraRate>(rx1_dr.status());
    auto rx2_rate = plan->Rate(plan->Rx2DataRate());
    Downlink dl;
    dl.gateway = gw;
    dl.device = dev.cfg->id;
    dl.dev = &dev;
    dl.cmd_id = cmd_id;
    Txpk t;
    t.powe = cfg.tx_power_dbm;
    t.data = phy;
    if (rx2_rate.ok()) {
      Txpk t2 = t;
      t2.tmst = rx.tmst + delay_us + 1'000'000;  // mod 2^32 by unsigned arithmetic
      t2.freq_hz = plan->Rx2Frequency();
      t2.rate = *rx2_rate;
      dl.rx2 = t2;
    }
    if (rx1_freq.ok() && rx1_rate.ok()) {
      t.tmst = rx.tmst + delay_us;
      t.freq_hz = *rx1_freq;
      t.rate = *rx1_rate;
      dl.txpk = t;
    } else if (dl.rx2) {
      dl.txpk = *dl.rx2;
      dl.rx2.reset();
      dl.window = "rx2";
    } else {
      if (cmd_id) RequeueCommand(dev, cmd_id);
      return Warn(&dev, "no downlink window for an uplink on " + std::to_string(rx.freq_hz) + " Hz");
    }
    SendPullResp(std::move(dl));
  }

  void SendPullResp(Downlink dl) {
    auto& g = gateways[dl.gateway];
    Token token{static_cast<uint8_t>(next_token >> 8), static_cast<uint8_t>(next_token)};
    next_token++;
    auto bytes = BuildPullResp(token, dl.txpk, g.version);
    if (!bytes.ok()) return Warn(nullptr, "cannot build PULL_RESP: " + bytes.status().message());
    Send(g.pull_ep, std::move(*bytes));
    {
      std::lock_guard lk(mu);
      downlinks++;
    }
    // A v1 forwarder sends no TX_ACK: a command's frame counts as sent once it is handed over.
    if (g.version < 2) {
      if (dl.cmd_id && dl.dev) OnCommandTx(*dl.dev, dl.cmd_id, true, dl.window, {});
      return;
    }
    if (pending_tx.size() > 4096) pending_tx.erase(pending_tx.begin());  // TX_ACKs that never came
    pending_tx[TokenKey(token)] = std::move(dl);
  }

  void OnTxAck(const Datagram& d) {
    auto it = pending_tx.find(TokenKey(d.token));
    if (it == pending_tx.end()) return;
    Downlink dl = std::move(it->second);
    pending_tx.erase(it);
    if (!d.tx_ack || d.tx_ack->error == TxAckError::kNone) {
      if (dl.cmd_id && dl.dev) OnCommandTx(*dl.dev, dl.cmd_id, true, dl.window, {});
      return;
    }
    Bump(tx_errors);
    spdlog::warn("lorawan: concentrator {} refused the downlink to {}: {}{}", EuiToHex(dl.gateway), dl.device,
                 QuotePrefix(d.tx_ack->text, 32), dl.rx2 ? "; trying RX2" : "");
    if (!dl.rx2) {
      if (dl.cmd_id && dl.dev)
        OnCommandTx(*dl.dev, dl.cmd_id, false, dl.window,
                    QuotePrefix(d.tx_ack->text, 32) + (std::string_view(dl.window) == "rx2" ? " (in RX2)" : ""));
      return;
    }
    dl.txpk = *dl.rx2;
    dl.rx2.reset();
    dl.window = "rx2";
    SendPullResp(std::move(dl));
  }

  void OnJoinRequest(uint64_t gw, Rxpk rx) {
    auto jr = ParseJoinRequest(rx.data);
    if (!jr.ok()) return Bump(malformed);
    auto key = std::make_pair(jr->dev_eui, jr->dev_nonce);
    if (auto it = pending_join.find(key); it != pending_join.end()) {
      it->second.copies.push_back({gw, std::move(rx)});
      return Bump(duplicates);
    }
    auto dit = by_eui.find(jr->dev_eui);
    if (dit == by_eui.end() || !dit->second->cfg->otaa) {
      Bump(unknown_devices);
      int64_t now = NowMs();
      if (now - last_unknown_log >= 60000) {
        last_unknown_log = now;
        spdlog::warn("lorawan: join request from unknown DevEUI {} refused", EuiToHex(jr->dev_eui));
      }
      return;
    }
    DeviceState& dev = *dit->second;
    if (dev.cfg->join_eui && *dev.cfg->join_eui != jr->app_eui)
      return Warn(&dev, "join request with JoinEUI " + EuiToHex(jr->app_eui) + " refused (configured " + EuiToHex(*dev.cfg->join_eui) + ")");
    auto mic = VerifyJoinRequestMic(rx.data, dev.cfg->app_key);
    if (!mic.ok() || !*mic) {
      Bump(bad_mic);
      return Warn(&dev, "join request with a wrong MIC (forged or wrong AppKey) refused");
    }
    for (uint16_t n : dev.s.dev_nonces)
      if (n == jr->dev_nonce) {
        Bump(replays);
        return Warn(&dev, "join request reusing DevNonce " + std::to_string(n) + " refused (replay)");
      }
    PendingJoin p;
    p.dev = &dev;
    p.dev_nonce = jr->dev_nonce;
    p.copies.push_back({gw, std::move(rx)});
    p.timer = std::make_unique<asio::steady_timer>(io, std::chrono::milliseconds(cfg.dedup_window_ms));
    p.timer->async_wait([self = shared_from_this(), key](asio::error_code ec) {
      if (!ec) self->FinishJoin(key);
    });
    pending_join.emplace(key, std::move(p));
  }

  uint32_t AllocateDevAddr(const DeviceState& dev) {
    // NwkID = the 7 low bits of NetID in the top bits; the rest from the DevEUI, made unique.
    uint32_t base = (cfg.net_id & 0x7F) << 25;
    uint32_t nwk_addr = static_cast<uint32_t>((dev.cfg->dev_eui * 0x9E3779B97F4A7C15ull) >> 39) & 0x1FFFFFF;
    for (;;) {
      uint32_t addr = base | nwk_addr;
      bool used = false;
      for (const auto& d : devices)
        if (d.get() != &dev && d->s.active && d->s.dev_addr == addr) used = true;
      if (!used) return addr;
      nwk_addr = (nwk_addr + 1) & 0x1FFFFFF;
    }
  }

  void FinishJoin(std::pair<uint64_t, uint16_t> key) {
    auto it = pending_join.find(key);
    if (it == pending_join.end()) return;
    PendingJoin p = std::move(it->second);
    pending_join.erase(it);
    DeviceState& dev = *p.dev;
    const Copy* best = &p.copies[0];
    for (const auto& c : p.copies)
      if (Better(c.rx, best->rx)) best = &c;
    uint8_t rnd[3];
    RAND_bytes(rnd, 3);
    JoinAccept ja;
    ja.app_nonce = (uint32_t{rnd[0]} << 16) | (uint32_t{rnd[1]} << 8) | rnd[2];
    ja.net_id = cfg.net_id;
    ja.dev_addr = AllocateDevAddr(dev);
    ja.dl_settings = static_cast<uint8_t>(plan->Rx2DataRate() & 0x0F);  // RX1DROffset 0
    ja.rx_delay = 1;
    auto keys = DeriveSessionKeys(dev.cfg->app_key, ja.app_nonce, ja.net_id, p.dev_nonce);
    auto phy = keys.ok() ? BuildJoinAccept(ja, dev.cfg->app_key) : Result<Bytes>(keys.status());
    if (!phy.ok()) return Warn(&dev, "cannot build the join accept: " + phy.status().message());
    dev.s.active = true;
    dev.s.dev_addr = ja.dev_addr;
    dev.s.keys = *keys;
    dev.s.fcnt_up.reset();
    dev.s.fcnt_down = 0;
    dev.s.dev_nonces.push_back(p.dev_nonce);
    while (dev.s.dev_nonces.size() > kDevNoncesKept) dev.s.dev_nonces.pop_front();
    {
      std::lock_guard lk(state_mu);
      dev.session_gen++;  // commits of the old session's readings no longer count
      dev.stored_fcnt_up.reset();
      dev.state_changed = true;
    }
    Bump(joins);
    spdlog::info("lorawan: {} joined (DevAddr {:08X}, heard by {} concentrators)", dev.cfg->id, ja.dev_addr, p.copies.size());
    // A join must survive a restart, or the device is locked out until it joins again: the
    // accept leaves only once the session is on disk.
    RequestSave(
        [this, devp = &dev, gw = best->gateway, rx = best->rx, phy = std::move(*phy)](bool saved) {
          if (!saved)
            return Warn(devp, "join accept not sent: the session could not be saved", "state");
          ScheduleDownlink(*devp, gw, rx, phy, kJoinAcceptDelayUs);
        });
    std::vector<Record> out;
    MarkSeen(dev, NowMs(), out);
    Emit(std::move(out));
  }

  void Sweep() {
    int64_t now = NowMs();
    std::vector<Record> out;
    for (auto& d : devices) {
      int64_t since = d->last_seen_ms ? d->last_seen_ms : started_ms;
      if (d->offline_announced || now - since < d->cfg->expected_interval_s * 1000 * d->cfg->offline_after_missed) continue;
      d->online = false;
      d->offline_announced = true;
      out.push_back(MakeStatus(d->cfg->id, d->cfg->kind, "lorawan", now, false,
                               d->last_seen_ms ? std::optional(d->last_seen_ms) : std::nullopt,
                               "missed " + std::to_string(d->cfg->offline_after_missed) + " reports"));
      Record ev = MakeEvent(d->cfg->id, d->cfg->kind, "lorawan", now, "offline", EventState::kActive, Severity::kWarning);
      ev.message = "no report for " + std::to_string((now - since) / 1000) + " s (expected every " +
                   std::to_string(d->cfg->expected_interval_s) + " s)";
      out.push_back(std::move(ev));
      spdlog::warn("lorawan: {} is offline: {}", d->cfg->id, out.back().message);
    }
    Emit(std::move(out));
    ExpireCommands(now);
    if (dirty && !save_busy) RequestSave();  // a failed write is tried again
  }

  void Emit(std::vector<Record> records) {
    if (!records.empty()) sink->EmitBatch(std::move(records));
  }
  void EmitDurable(std::vector<Record> records, RecordSink::DurableFn fn) { sink->EmitDurable(std::move(records), std::move(fn)); }

  void ReceiveNext() {
    sock->async_receive_from(asio::buffer(rx_buf), rx_from, [self = shared_from_this()](asio::error_code ec, size_t n) {
      if (ec == asio::error::operation_aborted || !self->running) return;
      if (!ec) self->OnDatagram(std::span<const uint8_t>(self->rx_buf.data(), n), self->rx_from);
      self->ReceiveNext();
    });
  }
  void SweepNext() {
    sweep_timer->expires_after(std::chrono::seconds(1));
    sweep_timer->async_wait([self = shared_from_this()](asio::error_code ec) {
      if (ec || !self->running) return;
      self->Sweep();
      self->SweepNext();
    });
  }

  LorawanConfig cfg;
  MqttInputFactory input_factory;
  std::unique_ptr<MqttInput> chirpstack;
  const BandPlan* plan = nullptr;
  std::vector<std::unique_ptr<DeviceState>> devices;
  std::unordered_map<uint64_t, DeviceState*> by_eui;
  asio::io_context io{1};
  std::optional<udp::socket> sock;
  std::optional<asio::steady_timer> sweep_timer;
  std::array<uint8_t, 65536> rx_buf{};
  udp::endpoint rx_from;
  std::thread thread;
  RecordSink* sink = nullptr;
  std::atomic<bool> running{false};
  std::atomic<uint16_t> bound_port{0};
  int64_t started_ms = 0;
  uint16_t next_token = 1;
  int64_t last_malformed_log = -60000, last_unknown_log = -60000;
  std::map<std::string, int64_t> global_warn_ms;  // Warn() without a device, by kind

  // Session file (io thread): a write in progress, requests waiting for the next one.
  bool dirty = false;
  bool save_busy = false, save_wanted = false;
  uint64_t save_gen = 0;
  std::vector<std::function<void(bool)>> save_waiters;
  std::optional<asio::steady_timer> save_timer;
  asio::thread_pool state_writer{1};  // the file is fsynced here, never on the io thread
  std::mutex write_mu;                // WriteStateFile
  uint64_t written_gen = 0;
  // Guards DeviceState::stored_fcnt_up/session_gen/state_changed/state_json and the count of
  // uplinks whose commit is not confirmed yet (Stop waits for them).
  std::mutex state_mu;
  std::condition_variable durable_cv;
  uint64_t outstanding_durable = 0;
  std::map<std::pair<uint32_t, uint32_t>, PendingUplink> pending_up;
  std::map<std::pair<uint64_t, uint16_t>, PendingJoin> pending_join;
  std::map<uint16_t, Downlink> pending_tx;
  uint64_t next_cmd_id = 1;
  // Execute() requests on their way to the io thread (answered by Stop if they never got there).
  std::mutex exec_mu;
  bool exec_closed = false;
  uint64_t exec_seq = 0;
  std::map<uint64_t, ReplyFn> exec_pending;

  // guarded by mu (read by Health from any thread); gateways' map itself changes on io only,
  // so Health copies it under mu as well.
  mutable std::mutex mu;
  std::map<uint64_t, GatewayInfo> gateways;
  uint64_t uplinks = 0, malformed = 0, bad_mic = 0, replays = 0, duplicates = 0, joins = 0,
           unknown_devices = 0, downlinks = 0, tx_errors = 0, chirpstack_uplinks = 0,
           fcnt_gap_drops = 0;
  uint64_t commands_queued = 0, commands_ok = 0, commands_failed = 0, commands_expired = 0;
  std::string last_error;
};

LorawanAdapter::LorawanAdapter(LorawanConfig config, MqttInputFactory mqtt_input)
    : impl_(std::make_shared<Impl>(std::move(config), std::move(mqtt_input))) {}
LorawanAdapter::~LorawanAdapter() { Stop(); }

Status LorawanAdapter::Start(RecordSink& sink) {
  auto& a = *impl_;
  a.sink = &sink;
  a.LoadState();
  a.RestoreCommittedCounters();
  // A monitor announced offline before a restart is cleared at its first uplink.
  for (auto& d : a.devices)
    if (sink.LastAnnounced(d->cfg->id, "offline").value_or(false)) d->offline_announced = true;
  if (a.cfg.chirpstack && !a.input_factory)
    return Status(Code::kFailedPrecondition, "lorawan.chirpstack: no MQTT input was given to the adapter");
  if (a.cfg.udp_enabled) {
    asio::error_code ec;
    auto addr = asio::ip::make_address(a.cfg.host, ec);
    if (ec) return Invalid("lorawan.listen: \"" + a.cfg.host + "\" is not an IP address");
    a.sock.emplace(a.io);
    udp::endpoint ep(addr, a.cfg.port);
    a.sock->open(ep.protocol(), ec);
    if (!ec) a.sock->bind(ep, ec);
    if (ec) {
      a.sock.reset();
      return Unavailable("lorawan: cannot listen on udp " + a.cfg.host + ":" + std::to_string(a.cfg.port) + ": " + ec.message());
    }
    // Bursts of PUSH_DATA from several concentrators must not overflow the socket buffer.
    a.sock->set_option(asio::socket_base::receive_buffer_size(4 << 20), ec);
    a.bound_port = a.sock->local_endpoint().port();
  }
  a.started_ms = NowMs();
  {
    std::lock_guard lk(a.exec_mu);
    a.exec_closed = false;
  }
  a.running = true;
  a.sweep_timer.emplace(a.io);
  a.save_timer.emplace(a.io);
  if (a.sock) a.ReceiveNext();
  a.SweepNext();
  a.thread = std::thread([impl = impl_] {
    NameThisThread("lorawan");
    try {
      impl->io.run();
    } catch (const std::exception& e) {
      spdlog::critical("lorawan: io loop failed: {}", e.what());
    }
  });
  if (a.cfg.chirpstack) {
    const auto& cs = *a.cfg.chirpstack;
    MqttInputOptions o;
    o.url = cs.url;
    o.client_id = cs.client_id;
    o.username = cs.username;
    o.password = cs.password;
    o.ca_file = cs.ca_file;
    o.filters = {cs.topic};
    a.chirpstack = a.input_factory(std::move(o));
    std::weak_ptr<Impl> w = impl_;
    a.chirpstack->Start([w](const std::string& topic, const std::string& payload) {
      if (auto self = w.lock())
        asio::post(self->io, [self, topic, payload] {
          if (self->running) self->OnChirpstackUp(topic, payload);
        });
    });
    spdlog::info("lorawan: reading ChirpStack uplinks from {} on {}", cs.url.empty() ? "the gateway's broker" : cs.url,
                 cs.topic);
  }
  if (a.sock)
    spdlog::info("lorawan: listening on udp {}:{} ({} devices, {})", a.cfg.host, a.bound_port.load(), a.devices.size(),
                 a.plan->name());
  return Status::Ok();
}

void LorawanAdapter::Stop() {
  auto& a = *impl_;
  if (!a.thread.joinable()) return;
  if (a.chirpstack) a.chirpstack->Stop();
  a.running = false;
  asio::post(a.io, [impl = impl_] {
    asio::error_code ec;
    if (impl->sock) impl->sock->close(ec);
    impl->sweep_timer->cancel();
    impl->save_timer->cancel();
    // Uplinks still inside their de-duplication window are published now, not dropped.
    while (!impl->pending_up.empty()) impl->FinishUplink(impl->pending_up.begin()->first);
    impl->pending_join.clear();
  });
  a.thread.join();
  // The last readings' counters are saved once the outbox confirms them (bounded), after any
  // write still running; a snapshot newer than all of them is written last.
  {
    std::unique_lock lk(a.state_mu);
    a.durable_cv.wait_for(lk, kStopDurableWait, [&] { return a.outstanding_durable == 0; });
  }
  a.state_writer.join();
  a.save_waiters.clear();  // downlinks that never got their write: too late now
  std::map<uint64_t, ReplyFn> unseen;
  {
    std::lock_guard lk(a.exec_mu);
    a.exec_closed = true;
    unseen.swap(a.exec_pending);
  }
  for (auto& [seq, fn] : unseen) fn({false, "lorawan adapter stopped before the command was queued", {}});
  // Queued commands stay in the session file and go out after the restart; their requesters
  // get their answer now (the reply path ends with this process).
  for (auto& d : a.devices)
    for (auto& q : d->downlinks)
      if (q.reply) {
        auto fn = std::move(q.reply);
        q.reply = nullptr;
        fn({false, "gateway stopping: downlink #" + std::to_string(q.id) +
                       " stays queued and is sent after the restart (its outcome will be logged, not answered)",
            {}});
      }
  for (auto& d : a.devices)
    if (!d->downlinks.empty()) a.MarkChanged(*d);
  if (Status st = a.WriteStateFile(a.Snapshot(), ++a.save_gen); !st.ok())
    spdlog::error("lorawan: {}", st.message());
}

uint16_t LorawanAdapter::port() const { return impl_->bound_port; }

void LorawanAdapter::Execute(CommandRequest request, ReplyFn reply) {
  auto& a = *impl_;
  uint64_t seq;
  {
    // Held here until the io thread takes it, so Stop() can answer a request it never saw.
    std::lock_guard lk(a.exec_mu);
    if (a.exec_closed || !a.running) {
      seq = 0;
    } else {
      seq = ++a.exec_seq;
      a.exec_pending.emplace(seq, std::move(reply));
    }
  }
  if (!seq) return reply({false, "lorawan adapter is not running", {}});
  asio::post(a.io, [w = std::weak_ptr<Impl>(impl_), request = std::move(request), seq]() mutable {
    auto self = w.lock();
    if (!self) return;
    ReplyFn fn;
    {
      std::lock_guard lk(self->exec_mu);
      auto it = self->exec_pending.find(seq);
      if (it == self->exec_pending.end()) return;
      fn = std::move(it->second);
      self->exec_pending.erase(it);
    }
    if (!self->running) return fn({false, "lorawan adapter is stopping", {}});
    self->QueueCommand(std::move(request), std::move(fn));
  });
}

AdapterHealth LorawanAdapter::Health() const {
  auto& a = *impl_;
  AdapterHealth h;
  h.state = a.running ? "running" : "stopped";
  h.devices = static_cast<uint32_t>(a.devices.size());
  std::lock_guard lk(a.mu);
  for (const auto& d : a.devices) {
    DeviceCounters c;
    c.id = d->cfg->id;
    c.online = d->online;
    c.requests = d->uplinks;
    c.errors = d->errors;
    h.online += c.online;
    h.per_device.push_back(std::move(c));
  }
  h.polls = a.uplinks;
  h.errors =
      a.malformed + a.bad_mic + a.replays + a.unknown_devices + a.tx_errors + a.fcnt_gap_drops;
  h.last_error = a.last_error;
  json details;
  json gws = json::object();
  for (const auto& [eui, g] : a.gateways) {
    json gj = {{"last_seen", g.last_seen_ms}, {"push_data", g.pushes}, {"rx", g.rx}, {"pull", g.has_pull}};
    if (g.stat_rxnb) gj["stat_rxnb"] = *g.stat_rxnb;
    if (g.stat_rxok) gj["stat_rxok"] = *g.stat_rxok;
    gws[EuiToHex(eui)] = gj;
  }
  details["concentrators"] = gws;
  details["uplinks"] = a.uplinks;
  details["duplicates"] = a.duplicates;
  details["bad_mic"] = a.bad_mic;
  details["replays"] = a.replays;
  details["malformed"] = a.malformed;
  details["unknown_devices"] = a.unknown_devices;
  details["joins"] = a.joins;
  details["downlinks"] = a.downlinks;
  details["tx_errors"] = a.tx_errors;
  details["fcnt_gap_drops"] = a.fcnt_gap_drops;
  json queues = json::object();
  size_t waiting = 0, queues_omitted = 0;
  for (const auto& d : a.devices)
    if (!d->downlinks.empty()) {
      // The status stays small on a large site: the first queues in full, the rest counted.
      if (queues.size() < kStatusDownlinkQueues) queues[d->cfg->id] = Impl::DownlinksJson(*d, true);
      else ++queues_omitted;
      waiting += d->downlinks.size();
    }
  details["downlink_queue"] = queues;
  if (queues_omitted) details["downlink_queue_omitted"] = queues_omitted;
  details["commands"] = {{"waiting", waiting}, {"queued", a.commands_queued}, {"ok", a.commands_ok},
                         {"failed", a.commands_failed}, {"expired", a.commands_expired}};
  if (a.chirpstack)
    details["chirpstack"] = {{"connected", a.chirpstack->connected()},
                             {"uplinks", a.chirpstack_uplinks},
                             {"last_error", a.chirpstack->last_error()}};
  h.details_json = details.dump();
  return h;
}

RulesByDevice LorawanAdapter::Rules() const {
  RulesByDevice r;
  for (const auto& d : impl_->cfg.devices) r[d.id] = d.rules;
  return r;
}

}  // namespace sanigate::dev::lorawan
