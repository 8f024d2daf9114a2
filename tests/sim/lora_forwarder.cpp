#include "lora_forwarder.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <random>

namespace sanigate::test {

using namespace dev::lorawan;
using std::chrono::duration_cast;
using std::chrono::microseconds;
using std::chrono::milliseconds;

namespace {

// Unclaimed acks and downlinks kept per concentrator. lora_sim claims them continuously; a test
// that never claims them must not grow memory without bound.
constexpr size_t kMaxQueued = 4096;
// Datagrams read per Pump() after the first, so one flooding server cannot pin a caller.
constexpr int kMaxDrain = 1024;

uint16_t TokenKey(const Token& t) { return static_cast<uint16_t>(t[0] << 8 | t[1]); }

std::string TokenHex(const Token& t) { return ToHex(t); }

Status Deadline(std::string m) { return {Code::kDeadline, std::move(m)}; }
Status FailedPrecondition(std::string m) { return {Code::kFailedPrecondition, std::move(m)}; }

std::string Hex32(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%08X", v);
  return buf;
}

// Time left until `deadline`, rounded up so that a wait of "1 µs left" still polls once.
milliseconds Left(std::chrono::steady_clock::time_point deadline) {
  auto left = deadline - std::chrono::steady_clock::now();
  if (left <= left.zero()) return milliseconds(0);
  return std::chrono::ceil<milliseconds>(left);
}

}  // namespace

Rxpk MakeRxpk(const Bytes& phy, uint32_t tmst, uint32_t freq_hz, int rssi, double snr,
              LoraRate rate) {
  Rxpk p;
  p.tmst = tmst;
  p.freq_hz = freq_hz;
  p.chan = 0;
  p.rfch = 0;
  p.stat = 1;
  p.modu = "LORA";
  p.lora = rate;
  p.codr = "4/5";
  p.rssi = rssi;
  p.lsnr = snr;
  p.data = phy;
  return p;
}

std::string RxpkJson(const Rxpk& rx) {
  auto d = BuildPushData(Token{}, 0, {rx});
  if (!d.ok()) return "{}";
  // The JSON body follows the 12-byte header (version, token, id, gateway EUI).
  auto j = nlohmann::json::parse(d->begin() + 12, d->end(), nullptr, false);
  if (j.is_discarded()) return "{}";
  return j["rxpk"][0].dump();
}

// ---- Concentrator
// --------------------------------------------------------------------------------

Concentrator::Concentrator(uint64_t gateway_eui, uint8_t version)
    : eui_(gateway_eui), version_(version) {
  // Random token start and tmst offset: two runs (or two concentrators) never look alike, which
  // is what a server sees in the field.
  std::random_device rd;
  std::mt19937_64 rng((static_cast<uint64_t>(rd()) << 32) ^ rd() ^ gateway_eui);
  next_token_ = static_cast<uint16_t>(rng());
  tmst_offset_ = static_cast<uint32_t>(rng());
}

Concentrator::~Concentrator() { Close(); }

Status Concentrator::Open(uint16_t server_port, const std::string& source_ip,
                          const std::string& server_host) {
  Close();
  sockaddr_in src{};
  src.sin_family = AF_INET;
  if (::inet_pton(AF_INET, source_ip.c_str(), &src.sin_addr) != 1)
    return Invalid("source_ip \"" + source_ip + "\" is not an IPv4 address");
  in_addr dst{};
  if (::inet_pton(AF_INET, server_host.c_str(), &dst) != 1)
    return Invalid("server_host \"" + server_host + "\" is not an IPv4 address");
  int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Unavailable(std::string("socket: ") + std::strerror(errno));
  // Benchmarks push bursts of acks at one socket: a larger receive buffer avoids kernel drops
  // that would read as lost acks. Best effort (capped by net.core.rmem_max).
  int rcvbuf = 1 << 20;
  ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&src), sizeof src) != 0) {
    int e = errno;
    ::close(fd);
    return Unavailable("bind " + source_ip + ": " + std::strerror(e));
  }
  sockaddr_in bound{};
  socklen_t len = sizeof bound;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &len);
  fd_ = fd;
  local_port_ = ntohs(bound.sin_port);
  server_ip_ = dst.s_addr;
  server_port_ = server_port;
  pending_push_.clear();
  pending_pull_.clear();
  push_acks_.clear();
  pull_acks_.clear();
  downlinks_.clear();
  return Status::Ok();
}

void Concentrator::Close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

uint32_t Concentrator::Tmst() const {
  auto us = duration_cast<microseconds>(Clock::now().time_since_epoch()).count();
  return static_cast<uint32_t>(static_cast<uint64_t>(us)) + tmst_offset_;  // wraps mod 2^32
}

Token Concentrator::NextToken() {
  uint16_t t = next_token_++;
  return Token{static_cast<uint8_t>(t >> 8), static_cast<uint8_t>(t)};
}

Status Concentrator::Send(const Bytes& datagram) {
  if (fd_ < 0) return FailedPrecondition("concentrator " + EuiToHex(eui_) + " is not open");
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_addr.s_addr = server_ip_;
  to.sin_port = htons(server_port_);
  // A UDP send does not block for long; retry only on EINTR, a bounded number of times.
  for (int attempt = 0; attempt < 8; ++attempt) {
    ssize_t n = ::sendto(fd_, datagram.data(), datagram.size(), 0,
                         reinterpret_cast<const sockaddr*>(&to), sizeof to);
    if (n >= 0) return Status::Ok();
    if (errno != EINTR) break;
  }
  return Unavailable(std::string("sendto: ") + std::strerror(errno));
}

Result<Token> Concentrator::SendPushEntries(const std::vector<std::string>& rxpk_json) {
  Token t = NextToken();
  Bytes d = {version_, t[0], t[1], 0x00};
  for (int i = 7; i >= 0; --i) d.push_back(static_cast<uint8_t>(eui_ >> (8 * i)));
  std::string body = "{\"rxpk\":[";
  for (size_t i = 0; i < rxpk_json.size(); ++i) body += (i ? "," : "") + rxpk_json[i];
  body += "]}";
  d.insert(d.end(), body.begin(), body.end());
  auto at = Clock::now();
  if (Status s = Send(d); !s.ok()) return s;
  pending_push_[TokenKey(t)] = at;
  ++stats_.push_sent;
  return t;
}

Result<PushAck> Concentrator::PushEntries(const std::vector<std::string>& rxpk_json,
                                          milliseconds timeout) {
  auto token = SendPushEntries(rxpk_json);
  if (!token.ok()) return token.status();
  auto latency = WaitAck(*token, timeout);
  if (!latency) {
    pending_push_.erase(TokenKey(*token));
    return Deadline("no PUSH_ACK for token " + TokenHex(*token) + " within " +
                    std::to_string(timeout.count()) + " ms");
  }
  return PushAck{*token, *latency};
}

Status Concentrator::SendRaw(std::span<const uint8_t> bytes) {
  return Send(Bytes(bytes.begin(), bytes.end()));
}

Result<Token> Concentrator::SendPull() {
  Token t = NextToken();
  if (Status s = Send(BuildPullData(t, eui_, version_)); !s.ok()) return s;
  pending_pull_[TokenKey(t)] = Clock::now();
  ++stats_.pull_sent;
  return t;
}

Status Concentrator::Pull(milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  auto token = SendPull();
  if (!token.ok()) return token.status();
  for (;;) {
    auto it = std::find(pull_acks_.begin(), pull_acks_.end(), *token);
    if (it != pull_acks_.end()) {
      pull_acks_.erase(it);
      return Status::Ok();
    }
    if (Clock::now() >= deadline) break;
    Pump(Left(deadline));
  }
  pending_pull_.erase(TokenKey(*token));
  return Deadline("no PULL_ACK for token " + TokenHex(*token) + " within " +
                  std::to_string(timeout.count()) + " ms");
}

Result<Token> Concentrator::SendPush(const std::vector<Rxpk>& rxpk) {
  Token t = NextToken();
  auto datagram = BuildPushData(t, eui_, rxpk, version_);
  if (!datagram.ok()) return datagram.status();
  // Stamp before the send so the latency includes it, as the reference forwarder measures.
  auto at = Clock::now();
  if (Status s = Send(*datagram); !s.ok()) return s;
  pending_push_[TokenKey(t)] = at;
  ++stats_.push_sent;
  return t;
}

std::optional<microseconds> Concentrator::WaitAck(const Token& token, milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  for (;;) {
    for (auto it = push_acks_.begin(); it != push_acks_.end(); ++it) {
      if (it->token != token) continue;
      auto latency = it->latency;
      push_acks_.erase(it);
      return latency;
    }
    if (Clock::now() >= deadline) return std::nullopt;
    Pump(Left(deadline));
  }
}

Result<PushAck> Concentrator::Push(const std::vector<Rxpk>& rxpk, milliseconds timeout) {
  auto token = SendPush(rxpk);
  if (!token.ok()) return token.status();
  auto latency = WaitAck(*token, timeout);
  if (!latency) {
    pending_push_.erase(TokenKey(*token));
    return Deadline("no PUSH_ACK for token " + TokenHex(*token) + " within " +
                    std::to_string(timeout.count()) + " ms");
  }
  return PushAck{*token, *latency};
}

std::optional<Downlink> Concentrator::WaitPullResp(milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  for (;;) {
    if (!downlinks_.empty()) {
      Downlink d = std::move(downlinks_.front());
      downlinks_.pop_front();
      return d;
    }
    if (Clock::now() >= deadline) return std::nullopt;
    Pump(Left(deadline));
  }
}

std::optional<Txpk> Concentrator::WaitDownlink(milliseconds timeout) {
  auto d = WaitPullResp(timeout);
  if (!d) return std::nullopt;
  return std::move(d->txpk);
}

bool Concentrator::Pump(milliseconds timeout) {
  if (fd_ < 0) return false;
  pollfd p{fd_, POLLIN, 0};
  int wait_ms = static_cast<int>(std::clamp<int64_t>(timeout.count(), 0, INT_MAX));
  if (::poll(&p, 1, wait_ms) <= 0) return false;  // timeout, or EINTR: the caller re-checks
  bool any = false;
  uint8_t buf[65536];  // the largest UDP payload
  for (int i = 0; i < kMaxDrain; ++i) {
    ssize_t n = ::recv(fd_, buf, sizeof buf, MSG_DONTWAIT);
    if (n < 0) break;  // EAGAIN: drained
    any = true;
    Sort(buf, static_cast<size_t>(n), Clock::now());
  }
  return any;
}

template <class T>
void Concentrator::Enqueue(std::deque<T>& q, T item) {
  if (q.size() >= kMaxQueued) {
    q.pop_front();
    ++stats_.dropped;
  }
  q.push_back(std::move(item));
}

void Concentrator::Sort(const uint8_t* data, size_t size, Clock::time_point at) {
  auto d = ParseDatagram(std::span<const uint8_t>(data, size));
  if (!d.ok()) {
    ++stats_.undecodable;
    last_parse_error_ = d.status().message();
    return;
  }
  switch (d->id) {
    case GwmpId::kPushAck: {
      auto it = pending_push_.find(TokenKey(d->token));
      if (it == pending_push_.end()) {
        ++stats_.stray_acks;
        return;
      }
      ++stats_.push_acks;
      Enqueue(push_acks_, PushAck{d->token, duration_cast<microseconds>(at - it->second)});
      pending_push_.erase(it);
      return;
    }
    case GwmpId::kPullAck: {
      auto it = pending_pull_.find(TokenKey(d->token));
      if (it == pending_pull_.end()) {
        ++stats_.stray_acks;
        return;
      }
      ++stats_.pull_acks;
      Enqueue(pull_acks_, d->token);
      pending_pull_.erase(it);
      return;
    }
    case GwmpId::kPullResp: {
      ++stats_.downlinks;
      // Answer at once, whoever waits: the reference forwarder sends TX_ACK as soon as it has
      // queued (or refused) the packet, long before the transmission.
      if (version_ >= 2 && d->version >= 2 && refuse_next_.exchange(false)) {
        if (Send(BuildTxAck(d->token, eui_, next_error_)).ok()) ++stats_.tx_acks_sent;
      } else if (version_ >= 2 && d->version >= 2 && tx_ack_) {
        if (Send(BuildTxAck(d->token, eui_, *tx_ack_)).ok()) ++stats_.tx_acks_sent;
      }
      if (!d->txpk) {
        ++stats_.undecodable;
        last_parse_error_ = "PULL_RESP without txpk";
        return;
      }
      Enqueue(downlinks_, Downlink{d->token, d->version, std::move(*d->txpk), at});
      return;
    }
    default:
      ++stats_.unexpected;
      return;
  }
}

std::vector<PushAck> Concentrator::TakePushAcks() {
  std::vector<PushAck> out(std::make_move_iterator(push_acks_.begin()),
                           std::make_move_iterator(push_acks_.end()));
  push_acks_.clear();
  return out;
}

size_t Concentrator::TakePullAcks() {
  size_t n = pull_acks_.size();
  pull_acks_.clear();
  return n;
}

size_t Concentrator::ExpirePushes(milliseconds older_than) {
  auto limit = Clock::now() - older_than;
  size_t n = std::erase_if(pending_push_, [&](const auto& kv) { return kv.second < limit; });
  stats_.push_expired += n;
  return n;
}

// ---- LoraDevice
// ----------------------------------------------------------------------------------

LoraDevice LoraDevice::Abp(uint32_t dev_addr, const Key& nwk_s_key, const Key& app_s_key,
                           uint32_t fcnt_up) {
  LoraDevice d;
  d.has_session_ = true;
  d.dev_addr_ = dev_addr;
  d.keys_ = SessionKeys{nwk_s_key, app_s_key};
  d.fcnt_up_ = fcnt_up;
  return d;
}

LoraDevice LoraDevice::Otaa(uint64_t dev_eui, uint64_t join_eui, const Key& app_key) {
  LoraDevice d;
  d.otaa_ = true;
  d.dev_eui_ = dev_eui;
  d.join_eui_ = join_eui;
  d.app_key_ = app_key;
  return d;
}

Bytes LoraDevice::Uplink(uint8_t fport, const Bytes& payload, bool confirmed) {
  if (!has_session_) {
    last_error_ = FailedPrecondition("device " + EuiToHex(dev_eui_) + " has not joined");
    return {};
  }
  DataFrameSpec s;
  s.mtype = confirmed ? MType::kConfirmedUp : MType::kUnconfirmedUp;
  s.dev_addr = dev_addr_;
  s.fcnt32 = fcnt_up_;
  s.fctrl_flags = static_cast<uint8_t>((adr_ ? kFCtrlAdr : 0) | (ack_next_ ? kFCtrlAck : 0));
  s.fopts = fopts_next_;
  s.fport = fport;
  s.payload = payload;
  auto phy = BuildDataFrame(s, keys_);
  if (!phy.ok()) {
    last_error_ = phy.status();
    return {};
  }
  ack_next_ = false;
  fopts_next_.clear();
  ++fcnt_up_;  // a 32-bit wrap is the session's end; tests that go there set it on purpose
  last_uplink_ = std::move(phy).value();
  last_error_ = Status::Ok();
  return last_uplink_;
}

Bytes LoraDevice::ForgedCopy(const Bytes& payload) const {
  auto last = ParseDataFrame(last_uplink_);
  if (!last.ok() || !has_session_) return {};
  DataFrameSpec s;
  s.mtype = last->mtype;
  s.dev_addr = dev_addr_;
  s.fcnt32 = fcnt_up_ - 1;  // the last uplink's counter
  s.fport = last->fport;
  s.payload = payload;
  SessionKeys guessed = keys_;
  for (auto& b : guessed.nwk_s_key) b ^= 0xA5;  // the forger does not know the NwkSKey
  auto phy = BuildDataFrame(s, guessed);
  return phy.ok() ? std::move(phy).value() : Bytes{};
}

Bytes LoraDevice::JoinRequest(uint16_t dev_nonce) {
  if (!otaa_) {
    last_error_ = FailedPrecondition("an ABP device does not join");
    return {};
  }
  auto phy =
      BuildJoinRequest(dev::lorawan::JoinRequest{join_eui_, dev_eui_, dev_nonce, {}}, app_key_);
  if (!phy.ok()) {
    last_error_ = phy.status();
    return {};
  }
  dev_nonce_ = dev_nonce;
  last_uplink_ = std::move(phy).value();
  last_error_ = Status::Ok();
  return last_uplink_;
}

Status LoraDevice::AcceptJoin(const Bytes& join_accept_phy) {
  if (!otaa_) return FailedPrecondition("an ABP device does not join");
  if (!dev_nonce_) return FailedPrecondition("no JoinRequest was sent");
  auto ja = OpenJoinAccept(join_accept_phy, app_key_);
  if (!ja.ok()) return ja.status();
  auto keys = DeriveSessionKeys(app_key_, ja->app_nonce, ja->net_id, *dev_nonce_);
  if (!keys.ok()) return keys.status();
  keys_ = *keys;
  dev_addr_ = ja->dev_addr;
  join_accept_ = ja.value();
  has_session_ = true;
  // A new session restarts both counters (LoRaWAN 1.0.3 §6.2.6 via the join procedure).
  fcnt_up_ = 0;
  last_fcnt_down_.reset();
  ack_next_ = false;
  fopts_next_.clear();
  return Status::Ok();
}

Result<DownlinkInfo> LoraDevice::OpenDownlink(const Bytes& phy) {
  if (!has_session_) return FailedPrecondition("device has no session");
  auto f = ParseDataFrame(phy);
  if (!f.ok()) return f.status();
  if (f->direction() != Direction::kDown)
    return Invalid(std::string("MType ") + MTypeName(f->mtype) + " is not a downlink");
  if (f->dev_addr != dev_addr_)
    return Invalid("DevAddr " + Hex32(f->dev_addr) + " is not this device's " + Hex32(dev_addr_));
  FCntCandidate c = ReconstructFCnt(f->fcnt16, last_fcnt_down_);
  if (c.verdict != FCntVerdict::kNew && c.verdict != FCntVerdict::kRepeat)
    return Invalid("FCntDown 16 LSBs " + std::to_string(f->fcnt16) + " after " +
                   (last_fcnt_down_ ? std::to_string(*last_fcnt_down_) : "none") + ": " +
                   FCntVerdictName(c.verdict));
  auto mic_ok = VerifyDataMic(*f, keys_.nwk_s_key, c.fcnt32);
  if (!mic_ok.ok()) return mic_ok.status();
  if (!*mic_ok) return Invalid("downlink MIC mismatch at FCntDown " + std::to_string(c.fcnt32));
  auto plain = DecryptFrmPayload(*f, keys_, c.fcnt32);
  if (!plain.ok()) return plain.status();
  DownlinkInfo info;
  info.mtype = f->mtype;
  info.fcnt = c.fcnt32;
  info.ack = f->fctrl.ack();
  info.f_pending = f->fctrl.f_pending();
  info.repeat = c.verdict == FCntVerdict::kRepeat;
  info.fopts = f->fopts;
  info.fport = f->fport;
  info.payload = std::move(plain).value();
  // Only a new, authentic counter moves the window; a repeat or a forgery must not.
  if (c.verdict == FCntVerdict::kNew) last_fcnt_down_ = c.fcnt32;
  return info;
}

// ---- payloads
// ------------------------------------------------------------------------------------

Bytes UltrasonicPayload(int distance_mm, int fill_pct, double temp_c, double battery_v, bool tilted,
                        bool fire) {
  auto d = static_cast<uint16_t>(std::clamp(distance_mm, 0, 0xFFFF));
  auto fill = static_cast<uint8_t>(std::clamp(fill_pct, 0, 0xFF));
  auto t = static_cast<int16_t>(std::clamp<long>(std::lround(temp_c * 10), INT16_MIN, INT16_MAX));
  auto ut = static_cast<uint16_t>(t);
  auto mv = static_cast<uint16_t>(std::clamp<long>(std::lround(battery_v * 1000), 0, 0xFFFF));
  uint8_t flags = static_cast<uint8_t>((tilted ? 0x01 : 0) | (fire ? 0x02 : 0));
  return Bytes{static_cast<uint8_t>(d >> 8),
               static_cast<uint8_t>(d),
               fill,
               static_cast<uint8_t>(ut >> 8),
               static_cast<uint8_t>(ut),
               static_cast<uint8_t>(mv >> 8),
               static_cast<uint8_t>(mv),
               flags};
}

Bytes CompactMeasurementPayload(bool tilted, bool lid_open, int battery_pct, int distance_mm,
                                float temp_c) {
  auto d = static_cast<uint16_t>(std::clamp(distance_mm, 0, 0xFFFF));
  auto t = std::bit_cast<uint32_t>(temp_c);
  return Bytes{static_cast<uint8_t>((tilted ? 0x01 : 0) | (lid_open ? 0x04 : 0)),
               static_cast<uint8_t>(std::clamp(battery_pct, 0, 0xFF)),
               static_cast<uint8_t>(d),
               static_cast<uint8_t>(d >> 8),
               static_cast<uint8_t>(t),
               static_cast<uint8_t>(t >> 8),
               static_cast<uint8_t>(t >> 16),
               static_cast<uint8_t>(t >> 24)};
}

Result<std::string> ApplyBinMonitorCommand(BinMonitorModel model, uint8_t fport,
                                           std::span<const uint8_t> p, BinMonitorSettings& st) {
  const bool ultrasonic = model == BinMonitorModel::kUltrasonic;
  const uint8_t port = ultrasonic ? kUltrasonicCommandFPort : kCompactCommandFPort;
  const uint8_t base = ultrasonic ? 0x01 : 0xA1;
  if (fport != port) return Invalid("FPort " + std::to_string(fport) + " carries no commands");
  if (p.empty()) return Invalid("empty command");
  const int code = p[0] - base;
  if (code == 0) {
    uint32_t secs = 0;
    if (ultrasonic && p.size() == 5) secs = uint32_t{p[1]} << 24 | uint32_t{p[2]} << 16 | uint32_t{p[3]} << 8 | p[4];
    else if (!ultrasonic && p.size() == 3) secs = uint32_t{p[1]} | uint32_t{p[2]} << 8;
    else return Invalid("set_interval of " + std::to_string(p.size()) + " bytes");
    if (secs == 0) return Invalid("interval 0");
    st.interval_s = secs;
    ++st.commands_applied;
    return "interval " + std::to_string(secs) + " s";
  }
  if (code == 1) {
    if (p.size() != 2 || p[1] > 100) return Invalid("bad overflow threshold");
    st.overflow_threshold_pct = p[1];
    ++st.commands_applied;
    return "overflow threshold " + std::to_string(p[1]) + " %";
  }
  if (code == 2 && p.size() == 1) {
    ++st.reboots;
    ++st.commands_applied;
    return std::string("reboot");
  }
  return Invalid("unknown command byte " + std::to_string(p[0]));
}

}  // namespace sanigate::test
