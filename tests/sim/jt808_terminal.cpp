#include "jt808_terminal.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace sanigate::test {

using namespace dev::jt808;
using SteadyClock = std::chrono::steady_clock;

Status Jt808Terminal::Connect(uint16_t port, const std::string& source_ip, const std::string& host) {
  Close();
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Unavailable(std::string("socket: ") + std::strerror(errno));
  if (!source_ip.empty()) {
    sockaddr_in src{};
    src.sin_family = AF_INET;
    ::inet_pton(AF_INET, source_ip.c_str(), &src.sin_addr);
    if (::bind(fd, reinterpret_cast<sockaddr*>(&src), sizeof src) != 0) {
      ::close(fd);
      return Unavailable("bind " + source_ip + ": " + std::strerror(errno));
    }
  }
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  ::inet_pton(AF_INET, host.c_str(), &addr.sin_addr);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    int e = errno;
    ::close(fd);
    return Unavailable("connect " + host + ":" + std::to_string(port) + ": " + std::strerror(e));
  }
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  fd_ = fd;
  port_ = port;
  source_ip_ = source_ip;
  host_ = host;
  peer_closed_ = false;
  splitter_ = FrameSplitter(1 << 16);
  inbox_.clear();
  return Status::Ok();
}

void Jt808Terminal::Close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

Status Jt808Terminal::SendRaw(const Bytes& bytes) {
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::send(fd_, bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Unavailable(std::string("send: ") + std::strerror(errno));
    }
    done += static_cast<size_t>(n);
  }
  return Status::Ok();
}

uint16_t Jt808Terminal::Send(uint16_t msg_id, const Bytes& body) {
  Header h;
  h.msg_id = msg_id;
  h.v2019 = v2019_;
  h.phone = phone_;
  h.serial = serial_++;
  (void)SendRaw(EncodeFrame(h, body));
  return h.serial;
}

uint16_t Jt808Terminal::SendSubpackaged(uint16_t msg_id, const Bytes& body, int packets) {
  size_t per = (body.size() + static_cast<size_t>(packets) - 1) / static_cast<size_t>(packets);
  uint16_t serial = 0;
  for (int i = 0; i < packets; ++i) {
    Header h;
    h.msg_id = msg_id;
    h.v2019 = v2019_;
    h.phone = phone_;
    h.serial = serial = serial_++;
    h.subpackage = true;
    h.packet_total = static_cast<uint16_t>(packets);
    h.packet_index = static_cast<uint16_t>(i + 1);
    size_t from = static_cast<size_t>(i) * per, to = std::min(body.size(), from + per);
    (void)SendRaw(EncodeFrame(h, std::span(body).subspan(from, to - from)));
  }
  return serial;
}

bool Jt808Terminal::Pump(SteadyClock::time_point deadline) {
  if (fd_ < 0 || peer_closed_) return false;
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - SteadyClock::now()).count();
  if (left < 0) left = 0;
  pollfd p{fd_, POLLIN, 0};
  int r = ::poll(&p, 1, static_cast<int>(left));
  if (r <= 0) return false;
  uint8_t buf[4096];
  ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
  if (n <= 0) {
    peer_closed_ = true;
    return false;
  }
  splitter_.Feed(std::span<const uint8_t>(buf, static_cast<size_t>(n)));
  FrameSplitter::Chunk c;
  while (splitter_.Next(c)) {
    auto f = DecodeFrame(c.escaped);
    if (f.ok()) inbox_.push_back(std::move(*f));
  }
  return true;
}

std::optional<Frame> Jt808Terminal::WaitFor(uint16_t msg_id, std::chrono::milliseconds timeout) {
  auto deadline = SteadyClock::now() + timeout;
  for (;;) {
    for (auto it = inbox_.begin(); it != inbox_.end(); ++it) {
      if (it->header.msg_id == msg_id) {
        Frame f = std::move(*it);
        inbox_.erase(it);
        return f;
      }
    }
    if (SteadyClock::now() >= deadline) return std::nullopt;
    if (!Pump(deadline) && peer_closed_) return std::nullopt;
  }
}

std::optional<uint8_t> Jt808Terminal::WaitAck(uint16_t serial, std::chrono::milliseconds timeout) {
  auto deadline = SteadyClock::now() + timeout;
  for (;;) {
    for (auto it = inbox_.begin(); it != inbox_.end(); ++it) {
      if (it->header.msg_id != msg::kPlatformResponse || it->body.size() != 5) continue;
      uint16_t s = static_cast<uint16_t>((it->body[0] << 8) | it->body[1]);
      if (s != serial) continue;
      uint8_t result = it->body[4];
      inbox_.erase(it);
      return result;
    }
    if (SteadyClock::now() >= deadline) return std::nullopt;
    if (!Pump(deadline) && peer_closed_) return std::nullopt;
  }
}

bool Jt808Terminal::WaitClosedByPeer(std::chrono::milliseconds timeout) {
  auto deadline = SteadyClock::now() + timeout;
  while (!peer_closed_ && SteadyClock::now() < deadline) Pump(deadline);
  return peer_closed_;
}

Result<std::string> Jt808Terminal::Register(std::chrono::milliseconds timeout) {
  Registration reg;
  reg.province = 35;
  reg.city = 200;
  reg.maker = "SANI1";
  reg.model = "SIM-808";
  reg.terminal_id = "T" + phone_.substr(phone_.size() > 6 ? phone_.size() - 6 : 0);
  reg.plate_color = 2;
  reg.plate = "闽D·" + phone_.substr(phone_.size() > 5 ? phone_.size() - 5 : 0);
  uint16_t serial = Send(msg::kRegister, BuildRegistration(reg, v2019_));
  auto deadline = SteadyClock::now() + timeout;
  while (SteadyClock::now() < deadline) {
    auto f = WaitFor(msg::kRegisterResponse, std::chrono::duration_cast<std::chrono::milliseconds>(deadline - SteadyClock::now()));
    if (!f) break;
    if (f->body.size() < 3) return Invalid("short 0x8100");
    if (static_cast<uint16_t>((f->body[0] << 8) | f->body[1]) != serial) continue;
    if (f->body[2] != 0) return Status(Code::kFailedPrecondition, "register result " + std::to_string(f->body[2]));
    auth_code_.assign(f->body.begin() + 3, f->body.end());
    return auth_code_;
  }
  return Status(Code::kDeadline, "no 0x8100");
}

Status Jt808Terminal::Authenticate(const std::string& code, std::chrono::milliseconds timeout) {
  Authentication a;
  a.code = code;
  a.imei = "861234567890123";
  a.software = firmware_;
  uint16_t serial = Send(msg::kAuthenticate, BuildAuthentication(a, v2019_));
  auto r = WaitAck(serial, timeout);
  if (!r) return Status(Code::kDeadline, "no answer to 0x0102");
  if (*r != 0) return Status(Code::kFailedPrecondition, "auth result " + std::to_string(*r));
  auth_code_ = code;
  return Status::Ok();
}

std::optional<uint8_t> Jt808Terminal::Report(const Location& loc, std::chrono::milliseconds timeout) {
  return WaitAck(Send(msg::kLocation, BuildLocation(loc)), timeout);
}

UpgradeLog Jt808Terminal::ServeUpgrade(const UpgradeBehavior& b, const std::atomic<bool>& stop,
                                       std::chrono::milliseconds timeout) {
  UpgradeLog log;
  auto deadline = SteadyClock::now() + timeout;
  std::map<uint16_t, Bytes> parts;
  uint16_t result_serial = 0;
  bool ack_due = false;  // our 0x0108 went out on the current connection, its 0x8001 may still come
  bool silent = false;  // stopped acknowledging (ack_packets reached)
  auto send_result = [&] {
    if (!b.report) return;
    result_serial = Send(msg::kUpgradeResult, BuildUpgradeResult({upgrade_type::kTerminal, b.result}));
    log.result_sent = true;
    ack_due = true;
  };
  while (!stop.load() && SteadyClock::now() < deadline) {
    if (fd_ < 0 || peer_closed_) {
      log.error = "connection closed by the gateway";
      return log;
    }
    // Handle what is queued: upgrade packets, attribute queries, the answer to our 0x0108.
    for (auto it = inbox_.begin(); it != inbox_.end();) {
      Frame f = *it;
      uint16_t id = f.header.msg_id;
      if (id != msg::kUpgradePackage && id != msg::kQueryAttributes && id != msg::kPlatformResponse) {
        ++it;
        continue;
      }
      it = inbox_.erase(it);
      if (id == msg::kPlatformResponse) {
        auto r = ParseTerminalResponse(f.body);  // same layout as 0x0001
        if (r.ok() && log.result_sent && r->reply_id == msg::kUpgradeResult && r->reply_serial == result_serial)
          log.result_acked = true;
        continue;
      }
      if (id == msg::kQueryAttributes) {
        TerminalAttributes a;
        a.terminal_type = 0x0004;  // ordinary freight vehicles
        a.maker = "SANI1";
        a.model = "SIM-808";
        a.terminal_id = "T" + phone_.substr(phone_.size() > 6 ? phone_.size() - 6 : 0);
        a.iccid = "89860012345678901234";
        a.hw_version = "HW-1.0";
        a.fw_version = firmware_;
        a.gnss = 0x03;  // GPS + BeiDou
        a.comm = 0x01;
        auto body = BuildTerminalAttributes(a, v2019_);
        if (body.ok()) Send(msg::kTerminalAttributes, *body);
        log.attribute_queries++;
        continue;
      }
      // 0x8108: one packet (or the whole message when it fits in one).
      log.frames++;
      log.serials.push_back(f.header.serial);
      uint16_t total = f.header.subpackage ? f.header.packet_total : 1;
      uint16_t index = f.header.subpackage ? f.header.packet_index : 1;
      log.packet_total = total;
      log.received_per_index[index]++;
      if (silent || (b.ack_packets >= 0 && index > b.ack_packets)) {
        silent = true;
        continue;
      }
      parts[index] = f.body;
      Send(msg::kTerminalResponse, BuildTerminalResponse({f.header.serial, msg::kUpgradePackage, 0}));
      if (b.close_after_packets >= 0 && index >= b.close_after_packets) {
        Close();
        log.error = "closed after packet " + std::to_string(index) + " as asked";
        return log;
      }
      if (parts.size() < total || parts.rbegin()->first != total) continue;
      Bytes whole;
      for (auto& [i, p] : parts) whole.insert(whole.end(), p.begin(), p.end());
      parts.clear();
      auto pkg = ParseUpgradePackage(whole, v2019_);
      if (!pkg.ok()) {
        log.error = "bad upgrade package: " + pkg.status().message();
        return log;
      }
      log.package = std::move(*pkg);
      // "Install": the gateway verified the image; the terminal only reports.
      bool installed = b.result == upgrade_result::kSuccess;
      if (installed && !b.new_version.empty()) firmware_ = b.new_version;
      if (!b.report_after_reconnect) send_result();
      if (installed && b.reboot) {
        Close();
        ack_due = false;  // an answer on the old connection is lost with it
        if (auto st = Connect(port_, source_ip_, host_); !st.ok()) {
          log.error = "reconnect after the reboot: " + st.ToString();
          return log;
        }
        if (auto st = Authenticate(auth_code_); !st.ok()) {
          log.error = "authenticate after the reboot: " + st.ToString();
          return log;
        }
        log.reboots++;
      }
      if (b.report_after_reconnect) send_result();
      break;  // the inbox may have changed (reconnect): start over
    }
    Pump(std::min(deadline, SteadyClock::now() + std::chrono::milliseconds(50)));
  }
  // Stopped right after reporting: give the platform's 0x8001 for the 0x0108 a moment to arrive.
  if (ack_due && !log.result_acked) {
    auto until = SteadyClock::now() + std::chrono::seconds(2);
    while (!log.result_acked && fd_ >= 0 && !peer_closed_ && SteadyClock::now() < until) {
      for (auto it = inbox_.begin(); it != inbox_.end(); ++it) {
        if (it->header.msg_id != msg::kPlatformResponse) continue;
        auto r = ParseTerminalResponse(it->body);
        if (r.ok() && r->reply_id == msg::kUpgradeResult && r->reply_serial == result_serial) {
          log.result_acked = true;
          inbox_.erase(it);
          break;
        }
      }
      if (!log.result_acked) Pump(until);
    }
  }
  return log;
}

Location SampleLocation(int64_t ts_ms, int i, uint32_t alarm) {
  Location l;
  l.alarm = alarm;
  l.status = (1u << status_bit::kAcc) | (1u << status_bit::kPositioned) | (1u << 18) | (1u << 19);
  l.lat = 24.479833;
  l.lon = 118.089425 + i * 0.0001;
  l.altitude_m = 12;
  l.speed_kmh = 18.5;
  l.heading_deg = 90;
  l.ts_ms = ts_ms - ts_ms % 1000;  // the wire carries whole seconds
  l.odometer_km = 9791.7 + i * 0.1;
  l.fuel_l = 80.5;
  l.satellites = 12;
  l.signal_strength = 26;
  return l;
}

}  // namespace sanigate::test
