// lora_sim: a fleet of simulated LoRaWAN bin-overflow monitors heard by K simulated concentrators
// (Semtech UDP packet forwarders), for the demo and benchmarks of Sanigate's LoRaWAN adapter.
//
// Every uplink is heard by all K concentrators, each with its own tmst counter and its own
// RSSI/SNR, so the server must de-duplicate. OTAA devices join first (retry every 10 s without an
// answer) and open their JoinAccepts like a real device; downlinks are matched to the device by
// DevAddr (data) or by the expected RX1 tmst (join accepts, whose MIC alone cannot tell devices
// that share a demo AppKey apart), and their timing is checked (RX1 = tmst + 1 s, join + 5 s).
//
// Hostile and odd traffic on request: forged copies of uplinks (same DevAddr and FCnt, another
// payload, a guessed MIC) heard loudly by the last concentrator, datagrams with one bad rxpk entry
// beside the good one, and ABP counters that start past 65535.
//
// Single-threaded: one poll() loop over the K sockets. Bounded by --duration-s; SIGINT/SIGTERM
// end it early, and the stats are still printed and written.
#include <poll.h>
#include <signal.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <queue>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "lora_forwarder.h"
#include "lorawan/band_plan.h"

namespace {

using namespace sanigate;
using namespace sanigate::test;
using namespace sanigate::dev::lorawan;
using Clock = std::chrono::steady_clock;
using std::chrono::microseconds;
using std::chrono::milliseconds;

volatile std::sig_atomic_t g_stop = 0;
void OnSignal(int) { g_stop = 1; }

constexpr uint32_t kRx1DelayUs = 1'000'000;   // RECEIVE_DELAY1
constexpr uint32_t kJoinDelayUs = 5'000'000;  // JOIN_ACCEPT_DELAY1
constexpr auto kJoinRetry = std::chrono::seconds(10);
constexpr auto kPullEvery = std::chrono::seconds(5);  // the reference forwarder's keep-alive
constexpr auto kAckGiveUp = std::chrono::seconds(2);  // a PUSH_ACK later than this counts as lost
constexpr size_t kMaxLatencySamples = 4'000'000;      // beyond: reservoir sampling
constexpr int kMaxActionsPerTurn = 20'000;            // keeps the socket reads going under load

struct Options {
  uint16_t port = 1700;
  std::string host = "127.0.0.1";
  int concentrators = 1;
  int devices = 1;
  std::string mode = "abp";
  std::string dev_eui_base = "0102030405060000";
  std::string dev_addr_base = "26010000";
  std::string join_eui = "0102030405060708";
  std::string app_key = "2B7E151628AED2A6ABF7158809CF4F3C";
  std::string nwk_s_key = "2B7E151628AED2A6ABF7158809CF4F3C";
  std::string app_s_key = "000102030405060708090A0B0C0D0E0F";
  std::string payload = "ultrasonic";
  int interval_ms = 10'000;
  double duration_s = 0;
  int confirmed_every = 0;
  uint32_t fcnt_start = 0;
  int forge_every = 0;
  int bad_rxpk_every = 0;
  double rate = 0;
  std::string stats_json;
  uint32_t seed = 1;
  bool quiet = false;
};

// A bin that fills over time, is emptied after it reported 100 %, runs on a draining battery and
// is knocked over now and then: realistic overflow, tilt and low-battery events for the demo.
struct Bin {
  double fill_pct = 0;
  double temp_c = 20;
  double battery_v = 3.6;
  int depth_mm = 1200;
  int tilt_reports_left = 0;
  bool lid_open = false;
};

struct SimDevice {
  std::unique_ptr<LoraDevice> dev;
  Bin bin;
  uint16_t next_nonce = 0;
  uint64_t reports = 0;
  uint32_t up_freq_hz = 0;
  std::vector<std::optional<uint32_t>> up_tmst;  // per concentrator: tmst of the last uplink
  std::vector<uint32_t> join_tmst;               // per concentrator: tmst of the pending join
  bool join_pending = false;
  BinMonitorSettings settings;  // what downlink commands set (e.g. the report interval)
  Clock::time_point next_due;  // the live entry of this device in the due queue
};

struct Stats {
  uint64_t uplinks = 0, confirmed = 0, overflow_reports = 0, join_requests = 0, joins_ok = 0,
           join_failures = 0, downlinks = 0, downlink_acks = 0, downlink_errors = 0,
           downlinks_unmatched = 0, downlink_timing_errors = 0, downlink_freq_errors = 0,
           rate_resets = 0, forged_sent = 0, bad_rxpk_sent = 0, commands_applied = 0,
           commands_refused = 0;
  std::vector<int64_t> latencies_us;
  uint64_t latency_seen = 0;
};

double Percentile(std::vector<int64_t>& v, double p) {
  if (v.empty()) return 0;
  size_t i = static_cast<size_t>(std::ceil(p / 100.0 * static_cast<double>(v.size()))) - 1;
  i = std::min(i, v.size() - 1);
  std::nth_element(v.begin(), v.begin() + static_cast<long>(i), v.end());
  return static_cast<double>(v[i]) / 1000.0;
}

class Simulation {
 public:
  Simulation(const Options& o, std::vector<std::unique_ptr<Concentrator>> concs,
             std::vector<SimDevice> devices)
      : o_(o), concs_(std::move(concs)), devs_(std::move(devices)), rng_(o.seed) {}

  void Run();
  nlohmann::json Report(double elapsed_s);

 private:
  uint32_t UniqueTmst(size_t k);
  std::vector<Rxpk> Heard(size_t d, size_t k, const Bytes& phy, uint32_t freq, LoraRate rate,
                          uint32_t tmst);
  void SendJoin(size_t d);
  void SendUplink(size_t d);
  Bytes NextPayload(SimDevice& s);
  void HandleDownlink(size_t k, const Downlink& dl);
  void Collect(size_t k);
  void Progress(Clock::time_point start);
  void Schedule(size_t d, Clock::time_point at) {
    devs_[d].next_due = at;
    due_.push({at, d});
  }

  const Options& o_;
  std::vector<std::unique_ptr<Concentrator>> concs_;
  std::vector<SimDevice> devs_;
  std::mt19937 rng_;
  Stats st_;
  double active_s_ = 0;  // the sending phase, without the final wait for acks
  std::vector<uint32_t> last_tmst_;
  std::unordered_map<uint32_t, size_t> by_addr_;  // DevAddr -> device
  // (concentrator, expected join-accept tmst) -> device
  std::unordered_map<uint64_t, size_t> join_by_tmst_;
  // Due times: joins (OTAA) and, without --rate, every device's reports. An entry whose time is
  // not its device's next_due has been superseded (a join succeeded early) and is skipped.
  using Due = std::pair<Clock::time_point, size_t>;
  std::priority_queue<Due, std::vector<Due>, std::greater<>> due_;

  static uint64_t JoinKey(size_t k, uint32_t tmst) { return static_cast<uint64_t>(k) << 32 | tmst; }
};

// Two frames cannot end on the same µs at one concentrator; unique tmst values also keep the
// join-accept matching unambiguous.
uint32_t Simulation::UniqueTmst(size_t k) {
  uint32_t t = concs_[k]->Tmst();
  if (t == last_tmst_[k]) ++t;
  last_tmst_[k] = t;
  return t;
}

std::vector<Rxpk> Simulation::Heard(size_t d, size_t k, const Bytes& phy, uint32_t freq,
                                    LoraRate rate, uint32_t tmst) {
  // Each device has a different best concentrator (a fixed path loss per pair) plus fading.
  std::normal_distribution<double> fade(0.0, 2.0);
  int base = -60 - static_cast<int>(((d * 7 + k * 13) % 9) * 6);
  int rssi = base + static_cast<int>(std::lround(fade(rng_)));
  double snr = std::round((10.0 + (base + 60) / 6.0 + fade(rng_) / 2) * 10) / 10;
  return {MakeRxpk(phy, tmst, freq, rssi, snr, rate)};
}

void Simulation::SendJoin(size_t d) {
  SimDevice& s = devs_[d];
  // Forget the previous attempt's slots: its accept would arrive too late to be used anyway.
  for (size_t k = 0; k < concs_.size() && s.join_pending; ++k)
    join_by_tmst_.erase(JoinKey(k, s.join_tmst[k] + kJoinDelayUs));
  Bytes phy = s.dev->JoinRequest(s.next_nonce++);
  if (phy.empty()) return;
  ++st_.join_requests;
  s.join_pending = true;
  uint32_t freq = 470'300'000 + 200'000 * static_cast<uint32_t>(rng_() % 96);
  s.join_tmst.assign(concs_.size(), 0);
  for (size_t k = 0; k < concs_.size(); ++k) {
    uint32_t t = UniqueTmst(k);
    s.join_tmst[k] = t;
    join_by_tmst_[JoinKey(k, t + kJoinDelayUs)] = d;
    (void)concs_[k]->SendPush(Heard(d, k, phy, freq, LoraRate{10, 125}, t));
  }
}

Bytes Simulation::NextPayload(SimDevice& s) {
  std::uniform_real_distribution<double> u(0.0, 1.0);
  Bin& b = s.bin;
  if (b.fill_pct >= 100)
    b.fill_pct = 8 * u(rng_);  // emptied by the collection truck after the overflow report
  else
    b.fill_pct = std::min(100.0, b.fill_pct + 1 + 4 * u(rng_));
  if (b.fill_pct >= 100) ++st_.overflow_reports;
  b.temp_c = std::clamp(b.temp_c + (u(rng_) - 0.5) * 0.6, 5.0, 38.0);
  b.battery_v = std::max(2.9, b.battery_v - 0.0004 - 0.0002 * u(rng_));
  if (b.tilt_reports_left > 0)
    --b.tilt_reports_left;
  else if (u(rng_) < 0.005)
    b.tilt_reports_left = 1 + static_cast<int>(rng_() % 3);
  bool tilted = b.tilt_reports_left > 0;
  bool fire = u(rng_) < 0.0002;
  int distance = static_cast<int>(b.depth_mm * (1 - b.fill_pct / 100) + 40 + 10 * u(rng_));
  if (o_.payload == "compact") {
    b.lid_open = u(rng_) < 0.05;
    int pct = static_cast<int>(std::lround((b.battery_v - 2.9) / 0.7 * 100));
    return CompactMeasurementPayload(tilted, b.lid_open, pct, distance,
                                     static_cast<float>(b.temp_c));
  }
  return UltrasonicPayload(distance, static_cast<int>(std::lround(b.fill_pct)), b.temp_c,
                           b.battery_v, tilted, fire);
}

void Simulation::SendUplink(size_t d) {
  SimDevice& s = devs_[d];
  bool confirmed =
      o_.confirmed_every > 0 && s.reports % static_cast<uint64_t>(o_.confirmed_every) ==
                                    static_cast<uint64_t>(o_.confirmed_every - 1);
  ++s.reports;
  uint8_t fport = o_.payload == "compact" ? kCompactMeasurementFPort : kUltrasonicFPort;
  Bytes phy = s.dev->Uplink(fport, NextPayload(s), confirmed);
  if (phy.empty()) return;
  ++st_.uplinks;
  st_.confirmed += confirmed ? 1 : 0;
  s.up_freq_hz = 470'300'000 + 200'000 * static_cast<uint32_t>(rng_() % 96);
  // Every K-th uplink's datagram at the first concentrator also carries an entry that does not
  // parse: the server must still take the good one and acknowledge the datagram.
  bool bad_entry =
      o_.bad_rxpk_every > 0 && st_.uplinks % static_cast<uint64_t>(o_.bad_rxpk_every) == 0;
  for (size_t k = 0; k < concs_.size(); ++k) {
    uint32_t t = UniqueTmst(k);
    s.up_tmst[k] = t;
    auto heard = Heard(d, k, phy, s.up_freq_hz, LoraRate{7, 125}, t);
    if (k == 0 && bad_entry) {
      ++st_.bad_rxpk_sent;
      (void)concs_[k]->SendPushEntries({R"({"tmst":"bad","data":"!"})", RxpkJson(heard[0])});
    } else {
      (void)concs_[k]->SendPush(heard);
    }
  }
  // Every K-th uplink gets a forged twin, heard louder than any genuine copy by the last
  // concentrator: it must be counted as bad_mic, never published or used for the ACK.
  if (o_.forge_every > 0 && st_.uplinks % static_cast<uint64_t>(o_.forge_every) == 0) {
    // A fake "bin full" report: what a prankster would send.
    Bytes fake = o_.payload == "compact" ? CompactMeasurementPayload(false, false, 90, 40, 20.0f)
                                         : UltrasonicPayload(40, 100, 20.0, 3.6, false, false);
    Bytes forged = s.dev->ForgedCopy(fake);
    size_t k = concs_.size() - 1;
    if (!forged.empty()) {
      ++st_.forged_sent;
      (void)concs_[k]->SendPush({MakeRxpk(forged, UniqueTmst(k), s.up_freq_hz, -30, 13.0)});
    }
  }
}

void Simulation::HandleDownlink(size_t k, const Downlink& dl) {
  ++st_.downlinks;
  const Txpk& tx = dl.txpk;
  auto mtype = PeekMType(tx.data);
  if (mtype.ok() && *mtype == MType::kJoinAccept) {
    auto it = join_by_tmst_.find(JoinKey(k, tx.tmst));
    if (tx.imme || it == join_by_tmst_.end()) {
      // No pending join expects an accept at this time on this concentrator.
      ++st_.downlinks_unmatched;
      ++st_.downlink_timing_errors;
      return;
    }
    size_t d = it->second;
    SimDevice& s = devs_[d];
    if (Status r = s.dev->AcceptJoin(tx.data); !r.ok()) {
      ++st_.join_failures;
      if (!o_.quiet) std::cerr << "lora_sim: join accept rejected: " << r.ToString() << "\n";
      return;
    }
    for (size_t j = 0; j < concs_.size(); ++j)
      join_by_tmst_.erase(JoinKey(j, s.join_tmst[j] + kJoinDelayUs));
    s.join_pending = false;
    by_addr_[s.dev->dev_addr()] = d;
    ++st_.joins_ok;
    // A device reports soon after joining rather than at its next join retry slot.
    if (o_.rate <= 0) {
      auto first = std::min<Clock::duration>(milliseconds(o_.interval_ms), std::chrono::seconds(1));
      Schedule(d, Clock::now() + first * static_cast<int64_t>(rng_() % 1000) / 1000);
    } else {
      s.next_due = Clock::time_point::max();  // the rate loop drives it now
    }
    return;
  }
  auto f = ParseDataFrame(tx.data);
  auto it = f.ok() ? by_addr_.find(f->dev_addr) : by_addr_.end();
  if (it == by_addr_.end()) {
    ++st_.downlinks_unmatched;
    return;
  }
  SimDevice& s = devs_[it->second];
  auto info = s.dev->OpenDownlink(tx.data);
  if (!info.ok()) {
    ++st_.downlink_errors;
    if (!o_.quiet) std::cerr << "lora_sim: downlink rejected: " << info.status().ToString() << "\n";
    return;
  }
  st_.downlink_acks += info->ack ? 1 : 0;
  if (!tx.imme && (!s.up_tmst[k] || tx.tmst != *s.up_tmst[k] + kRx1DelayUs))
    ++st_.downlink_timing_errors;
  auto rx1 = Cn470().Rx1Frequency(s.up_freq_hz);
  if (!rx1.ok() || tx.freq_hz != *rx1) ++st_.downlink_freq_errors;
  // A confirmed downlink wants an ACK in the next uplink.
  if (info->mtype == MType::kConfirmedDown) s.dev->set_ack_next(true);
  // A command (set_interval, set_overflow_threshold, reboot): applied as the monitor would.
  if (info->fport && *info->fport > 0) {
    auto model = o_.payload == "compact" ? BinMonitorModel::kCompact : BinMonitorModel::kUltrasonic;
    auto applied = ApplyBinMonitorCommand(model, *info->fport, info->payload, s.settings);
    if (!applied.ok()) {
      ++st_.commands_refused;
      if (!o_.quiet) std::cerr << "lora_sim: device " << it->second << " ignored a downlink: " << applied.status().message() << "\n";
      return;
    }
    ++st_.commands_applied;
    if (!o_.quiet) std::cerr << "lora_sim: device " << it->second << " applied " << *applied << "\n";
    // A new interval counts from now; a reboot reports again soon.
    if (o_.rate <= 0 && s.dev->joined()) {
      if (applied->rfind("interval", 0) == 0) Schedule(it->second, Clock::now() + std::chrono::seconds(s.settings.interval_s));
      else if (*applied == "reboot") Schedule(it->second, Clock::now() + std::chrono::seconds(1));
    }
  }
}

void Simulation::Collect(size_t k) {
  Concentrator& c = *concs_[k];
  for (const PushAck& a : c.TakePushAcks()) {
    ++st_.latency_seen;
    if (st_.latencies_us.size() < kMaxLatencySamples) {
      st_.latencies_us.push_back(a.latency.count());
    } else {
      std::uniform_int_distribution<uint64_t> pick(0, st_.latency_seen - 1);
      uint64_t j = pick(rng_);
      if (j < kMaxLatencySamples) st_.latencies_us[j] = a.latency.count();
    }
  }
  c.TakePullAcks();
  while (auto dl = c.WaitPullResp(milliseconds(0))) HandleDownlink(k, *dl);
}

void Simulation::Progress(Clock::time_point start) {
  if (o_.quiet) return;
  uint64_t acks = 0;
  for (const auto& c : concs_) acks += c->stats().push_acks;
  double s = std::chrono::duration<double>(Clock::now() - start).count();
  std::fprintf(stderr,
               "lora_sim: %.0f s: %llu uplinks, %llu push acks, %llu joins, %llu downlinks\n", s,
               static_cast<unsigned long long>(st_.uplinks), static_cast<unsigned long long>(acks),
               static_cast<unsigned long long>(st_.joins_ok),
               static_cast<unsigned long long>(st_.downlinks));
}

void Simulation::Run() {
  const auto start = Clock::now();
  const auto end = start + std::chrono::duration_cast<Clock::duration>(
                               std::chrono::duration<double>(o_.duration_s));
  const auto interval = milliseconds(o_.interval_ms);
  const size_t n = devs_.size();
  last_tmst_.assign(concs_.size(), 0);
  for (size_t d = 0; d < n; ++d) {
    devs_[d].up_tmst.assign(concs_.size(), std::nullopt);
    if (devs_[d].dev->joined()) by_addr_[devs_[d].dev->dev_addr()] = d;
  }

  const bool otaa = o_.mode == "otaa";
  // Spread the first joins (or reports) so a big fleet does not start in one burst.
  double spread_s = o_.rate > 0 ? std::max(1.0, static_cast<double>(n) / o_.rate)
                                : std::min(std::chrono::duration<double>(interval).count(),
                                           std::chrono::duration<double>(kJoinRetry).count());
  auto spread = std::chrono::duration_cast<Clock::duration>(
      std::chrono::duration<double>(std::min(spread_s, o_.duration_s)));
  for (size_t d = 0; d < n; ++d) {
    if (!otaa && o_.rate > 0) continue;
    auto offset =
        otaa ? spread * static_cast<int64_t>(d) / static_cast<int64_t>(n)
             : std::chrono::duration_cast<Clock::duration>(interval * (rng_() % 1000) / 1000);
    Schedule(d, start + offset);
  }
  const auto period = std::chrono::duration_cast<Clock::duration>(
      std::chrono::duration<double>(o_.rate > 0 ? 1.0 / o_.rate : 1.0));
  auto next_rate = start;
  size_t rr = 0;
  auto next_pull = start + kPullEvery;
  auto next_expire = start + std::chrono::seconds(1);
  auto next_progress = start + std::chrono::seconds(10);

  std::vector<pollfd> fds;
  for (const auto& c : concs_) fds.push_back({c->fd(), POLLIN, 0});

  while (!g_stop) {
    auto now = Clock::now();
    if (now >= end) break;
    int actions = 0;
    while (!due_.empty() && due_.top().first <= now && actions < kMaxActionsPerTurn) {
      auto [at, d] = due_.top();
      due_.pop();
      if (at != devs_[d].next_due) continue;
      ++actions;
      if (!devs_[d].dev->joined()) {
        SendJoin(d);
        Schedule(d, now + kJoinRetry);
      } else if (o_.rate <= 0) {
        SendUplink(d);
        const auto& set = devs_[d].settings;
        Schedule(d, now + (set.interval_s ? std::chrono::duration_cast<Clock::duration>(std::chrono::seconds(set.interval_s))
                                          : std::chrono::duration_cast<Clock::duration>(interval)));
      }  // with --rate, a joined device leaves the queue: the rate loop drives it
    }
    if (o_.rate > 0) {
      if (now - next_rate > std::chrono::seconds(1)) {
        next_rate = now;  // too far behind (slow host): restart the schedule, say so in the stats
        ++st_.rate_resets;
      }
      while (next_rate <= now && actions < kMaxActionsPerTurn) {
        next_rate += period;
        ++actions;
        for (size_t tries = 0; tries < n; ++tries) {
          size_t d = rr++ % n;
          if (!devs_[d].dev->joined()) continue;
          SendUplink(d);
          break;
        }
      }
    }
    if (now >= next_pull) {
      for (auto& c : concs_) (void)c->SendPull();
      next_pull = now + kPullEvery;
    }
    if (now >= next_expire) {
      for (auto& c : concs_) c->ExpirePushes(std::chrono::duration_cast<milliseconds>(kAckGiveUp));
      next_expire = now + std::chrono::seconds(1);
    }
    if (now >= next_progress) {
      Progress(start);
      next_progress = now + std::chrono::seconds(10);
    }

    // Sleep until the next action, at most 50 ms so signals and the deadline are seen promptly.
    auto next = end;
    if (!due_.empty()) next = std::min(next, due_.top().first);
    if (o_.rate > 0) next = std::min(next, next_rate);
    next = std::min({next, next_pull, next_expire});
    auto wait = std::chrono::ceil<milliseconds>(next - Clock::now()).count();
    int timeout = static_cast<int>(std::clamp<int64_t>(wait, 0, 50));
    if (actions >= kMaxActionsPerTurn) timeout = 0;
    if (::poll(fds.data(), fds.size(), timeout) > 0) {
      for (size_t k = 0; k < concs_.size(); ++k)
        if (fds[k].revents & POLLIN) concs_[k]->Pump(milliseconds(0));
    }
    for (size_t k = 0; k < concs_.size(); ++k) Collect(k);
  }

  active_s_ = std::chrono::duration<double>(Clock::now() - start).count();

  // Let the last acks and downlinks in: at most kAckGiveUp, less once nothing is outstanding.
  auto drain_end = Clock::now() + kAckGiveUp;
  while (!g_stop && Clock::now() < drain_end) {
    uint64_t outstanding = 0;
    for (const auto& c : concs_) {
      const auto& s = c->stats();
      outstanding += s.push_sent - s.push_acks - s.push_expired;
    }
    if (outstanding == 0) break;
    if (::poll(fds.data(), fds.size(), 20) > 0) {
      for (size_t k = 0; k < concs_.size(); ++k)
        if (fds[k].revents & POLLIN) concs_[k]->Pump(milliseconds(0));
    }
    for (size_t k = 0; k < concs_.size(); ++k) Collect(k);
  }
}

nlohmann::json Simulation::Report(double elapsed_s) {
  ConcentratorStats sum;
  for (const auto& c : concs_) {
    const auto& s = c->stats();
    sum.push_sent += s.push_sent;
    sum.push_acks += s.push_acks;
    sum.push_expired += s.push_expired;
    sum.pull_sent += s.pull_sent;
    sum.pull_acks += s.pull_acks;
    sum.tx_acks_sent += s.tx_acks_sent;
    sum.stray_acks += s.stray_acks;
    sum.unexpected += s.unexpected;
    sum.undecodable += s.undecodable;
    sum.dropped += s.dropped;
  }
  nlohmann::json j;
  j["mode"] = o_.mode;
  j["devices"] = devs_.size();
  j["concentrators"] = concs_.size();
  j["elapsed_s"] = std::round(elapsed_s * 1000) / 1000;
  j["uplinks_sent"] = st_.uplinks;
  j["sending_s"] = std::round(active_s_ * 1000) / 1000;
  j["uplinks_per_s"] = active_s_ > 0 ? std::round(st_.uplinks / active_s_ * 10) / 10 : 0.0;
  j["confirmed_sent"] = st_.confirmed;
  j["overflow_reports"] = st_.overflow_reports;
  j["push_data_sent"] = sum.push_sent;
  j["push_acks"] = sum.push_acks;
  j["push_acks_missing"] = sum.push_sent - sum.push_acks;
  j["push_ack_latency_ms"] = {{"p50", Percentile(st_.latencies_us, 50)},
                              {"p99", Percentile(st_.latencies_us, 99)},
                              {"max", Percentile(st_.latencies_us, 100)},
                              {"samples", st_.latencies_us.size()}};
  j["pull_data_sent"] = sum.pull_sent;
  j["pull_acks"] = sum.pull_acks;
  j["join_requests"] = st_.join_requests;
  j["joins_ok"] = st_.joins_ok;
  j["join_failures"] = st_.join_failures;
  j["downlinks"] = st_.downlinks;
  j["downlink_acks"] = st_.downlink_acks;
  j["downlink_errors"] = st_.downlink_errors;
  j["downlinks_unmatched"] = st_.downlinks_unmatched;
  j["downlink_timing_errors"] = st_.downlink_timing_errors;
  j["downlink_freq_errors"] = st_.downlink_freq_errors;
  j["tx_acks_sent"] = sum.tx_acks_sent;
  j["stray_acks"] = sum.stray_acks;
  j["undecodable"] = sum.undecodable + sum.unexpected;
  j["rate_resets"] = st_.rate_resets;
  j["forged_sent"] = st_.forged_sent;
  j["bad_rxpk_sent"] = st_.bad_rxpk_sent;
  j["commands_applied"] = st_.commands_applied;
  j["commands_refused"] = st_.commands_refused;
  nlohmann::json intervals = nlohmann::json::object();
  for (size_t d = 0; d < devs_.size(); ++d)
    if (devs_[d].settings.interval_s) intervals[std::to_string(d)] = devs_[d].settings.interval_s;
  j["intervals_set_s"] = intervals;
  return j;
}

Result<uint64_t> ParseBase(const std::string& text, std::string_view what, bool addr) {
  std::string hex = text.rfind("0x", 0) == 0 || text.rfind("0X", 0) == 0 ? text.substr(2) : text;
  if (addr) {
    auto a = ParseDevAddr(hex, what);
    if (!a.ok()) return a.status();
    return uint64_t{*a};
  }
  return ParseEui(hex, what);
}

int Main(int argc, char** argv) {
  Options o;
  CLI::App app{"lora_sim: LoRaWAN bin monitors behind simulated Semtech UDP packet forwarders"};
  app.add_option("--port", o.port, "UDP port of the network server")
      ->required()
      ->check(CLI::Range(1, 65535));
  app.add_option("--host", o.host, "IPv4 address of the network server (loopback)")
      ->capture_default_str();
  app.add_option("--concentrators", o.concentrators,
                 "concentrators (gateway EUIs AA555A0000000001..), each hears every uplink")
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
  app.add_option("--devices", o.devices, "simulated end devices")
      ->check(CLI::Range(1, 1'000'000))
      ->capture_default_str();
  app.add_option("--mode", o.mode, "activation")
      ->check(CLI::IsMember({"abp", "otaa"}))
      ->capture_default_str();
  app.add_option("--dev-eui-base", o.dev_eui_base, "DevEUI of device 0; device i has base + i")
      ->capture_default_str();
  app.add_option("--dev-addr-base", o.dev_addr_base, "ABP: DevAddr of device 0 (+ i)")
      ->capture_default_str();
  app.add_option("--join-eui", o.join_eui, "OTAA: JoinEUI (AppEUI)")->capture_default_str();
  app.add_option("--app-key", o.app_key, "OTAA: AppKey, the same for all devices (a demo)")
      ->capture_default_str();
  app.add_option("--nwk-s-key", o.nwk_s_key, "ABP: NwkSKey, the same for all devices (a demo)")
      ->capture_default_str();
  app.add_option("--app-s-key", o.app_s_key, "ABP: AppSKey, the same for all devices (a demo)")
      ->capture_default_str();
  app.add_option("--payload", o.payload, "payload layout (config/profiles/bin-monitor-*-v1)")
      ->check(CLI::IsMember({"ultrasonic", "compact"}))
      ->capture_default_str();
  app.add_option("--interval-ms", o.interval_ms, "report interval of each device (without --rate)")
      ->check(CLI::Range(10, 86'400'000))
      ->capture_default_str();
  app.add_option("--duration-s", o.duration_s, "run time, then print the stats and exit")
      ->required()
      ->check(CLI::Range(0.1, 86'400.0));
  app.add_option("--confirmed-every", o.confirmed_every,
                 "every K-th uplink of a device is confirmed (0: never)")
      ->check(CLI::Range(0, 1'000'000))
      ->capture_default_str();
  app.add_option(
         "--fcnt-start", o.fcnt_start,
         "ABP: uplink counter of every device's first frame (e.g. 70000, past the 16-bit wrap)")
      ->capture_default_str();
  app.add_option("--forge-every", o.forge_every,
                 "every K-th uplink also comes as a forged copy (same DevAddr/FCnt, bad MIC) from "
                 "the last concentrator, louder (0: never)")
      ->check(CLI::Range(0, 1'000'000))
      ->capture_default_str();
  app.add_option("--bad-rxpk-every", o.bad_rxpk_every,
                 "every K-th uplink's PUSH_DATA at the first concentrator also carries a bad rxpk "
                 "entry (0: never)")
      ->check(CLI::Range(0, 1'000'000))
      ->capture_default_str();
  app.add_option("--rate", o.rate, "uplinks/s in total over all devices (benchmarks)")
      ->check(CLI::Range(0.0, 1'000'000.0));
  app.add_option("--stats-json", o.stats_json, "also write the stats to this file");
  app.add_option("--seed", o.seed, "random seed (bins, radio, channels)")->capture_default_str();
  app.add_flag("--quiet", o.quiet, "no progress lines on stderr");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help exits 0; every usage error exits 2, like modbus_sim.
    return app.exit(e) == 0 ? 0 : 2;
  }

  auto eui_base = ParseBase(o.dev_eui_base, "dev_eui_base", false);
  auto addr_base = ParseBase(o.dev_addr_base, "dev_addr_base", true);
  auto join_eui = ParseBase(o.join_eui, "join_eui", false);
  auto app_key = ParseKey(o.app_key, "app_key");
  auto nwk = ParseKey(o.nwk_s_key, "nwk_s_key");
  auto aps = ParseKey(o.app_s_key, "app_s_key");
  for (const Status* s : {&eui_base.status(), &addr_base.status(), &join_eui.status(),
                          &app_key.status(), &nwk.status(), &aps.status()}) {
    if (!s->ok()) {
      std::cerr << "lora_sim: " << s->message() << "\n";
      return 2;
    }
  }

  std::mt19937 rng(o.seed);
  std::vector<SimDevice> devices(static_cast<size_t>(o.devices));
  for (size_t i = 0; i < devices.size(); ++i) {
    SimDevice& s = devices[i];
    uint64_t eui = *eui_base + i;
    if (o.mode == "otaa") {
      s.dev = std::make_unique<LoraDevice>(LoraDevice::Otaa(eui, *join_eui, *app_key));
    } else {
      auto addr = static_cast<uint32_t>(*addr_base + i);
      s.dev = std::make_unique<LoraDevice>(LoraDevice::Abp(addr, *nwk, *aps, o.fcnt_start));
    }
    // DevNonces must not repeat per device (the server keeps the used ones): a random start per
    // device and run, then counting up.
    s.next_nonce = static_cast<uint16_t>(rng() ^ std::random_device{}());
    s.bin.fill_pct = 90.0 * (rng() % 1000) / 1000.0;
    s.bin.temp_c = 15 + 10.0 * (rng() % 1000) / 1000.0;
    s.bin.battery_v = 3.45 + 0.2 * (rng() % 1000) / 1000.0;
    s.bin.depth_mm = 900 + static_cast<int>(rng() % 600);
  }

  std::vector<std::unique_ptr<Concentrator>> concs;
  for (int k = 0; k < o.concentrators; ++k) {
    auto c = std::make_unique<Concentrator>(0xAA555A0000000001ull + static_cast<uint64_t>(k));
    if (Status s = c->Open(o.port, "127.0.0.1", o.host); !s.ok()) {
      std::cerr << "lora_sim: concentrator " << EuiToHex(c->eui()) << ": " << s.ToString() << "\n";
      return 1;
    }
    concs.push_back(std::move(c));
  }

  struct sigaction sa {};
  sa.sa_handler = OnSignal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: poll() returns EINTR and the loop sees g_stop at once
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);

  // Register each concentrator's downlink address first, as a forwarder does on start.
  for (auto& c : concs) {
    if (g_stop) break;
    if (Status s = c->Pull(milliseconds(2000)); !s.ok())
      std::cerr << "lora_sim: concentrator " << EuiToHex(c->eui()) << ": " << s.ToString()
                << " (going on; keep-alive every 5 s)\n";
  }
  if (!o.quiet)
    std::cerr << "lora_sim: " << o.devices << " " << o.mode << " device(s), " << o.concentrators
              << " concentrator(s) -> " << o.host << ":" << o.port << " for " << o.duration_s
              << " s\n";

  auto t0 = Clock::now();
  Simulation sim(o, std::move(concs), std::move(devices));
  sim.Run();
  double elapsed = std::chrono::duration<double>(Clock::now() - t0).count();
  nlohmann::json report = sim.Report(elapsed);

  const auto& lat = report["push_ack_latency_ms"];
  std::printf(
      "lora_sim: %s, %d device(s), %d concentrator(s), %.1f s%s\n"
      "  uplinks sent %llu (%.1f/s, %llu confirmed, %llu overflow reports)\n"
      "  push_data %llu, push acks %llu, latency p50 %.3f ms, p99 %.3f ms, max %.3f ms\n"
      "  joins ok %llu of %llu requests (%llu rejected)\n"
      "  downlinks %llu (acks %llu, errors %llu, unmatched %llu, timing errors %llu, "
      "freq errors %llu)\n",
      o.mode.c_str(), o.devices, o.concentrators, elapsed, g_stop ? " (interrupted)" : "",
      report["uplinks_sent"].get<unsigned long long>(), report["uplinks_per_s"].get<double>(),
      report["confirmed_sent"].get<unsigned long long>(),
      report["overflow_reports"].get<unsigned long long>(),
      report["push_data_sent"].get<unsigned long long>(),
      report["push_acks"].get<unsigned long long>(), lat["p50"].get<double>(),
      lat["p99"].get<double>(), lat["max"].get<double>(),
      report["joins_ok"].get<unsigned long long>(),
      report["join_requests"].get<unsigned long long>(),
      report["join_failures"].get<unsigned long long>(),
      report["downlinks"].get<unsigned long long>(),
      report["downlink_acks"].get<unsigned long long>(),
      report["downlink_errors"].get<unsigned long long>(),
      report["downlinks_unmatched"].get<unsigned long long>(),
      report["downlink_timing_errors"].get<unsigned long long>(),
      report["downlink_freq_errors"].get<unsigned long long>());
  if (o.forge_every > 0 || o.bad_rxpk_every > 0)
    std::printf("  forged copies sent %llu, datagrams with a bad rxpk entry %llu\n",
                report["forged_sent"].get<unsigned long long>(),
                report["bad_rxpk_sent"].get<unsigned long long>());
  std::fflush(stdout);

  if (!o.stats_json.empty()) {
    // Write then rename, so a reader polling for the file never sees half of it.
    std::string tmp = o.stats_json + ".tmp";
    {
      std::ofstream f(tmp, std::ios::trunc);
      f << report.dump(2) << "\n";
      if (!f) {
        std::cerr << "lora_sim: cannot write " << tmp << "\n";
        return 1;
      }
    }
    if (std::rename(tmp.c_str(), o.stats_json.c_str()) != 0) {
      std::cerr << "lora_sim: cannot rename " << tmp << " to " << o.stats_json << "\n";
      return 1;
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return Main(argc, argv); }
