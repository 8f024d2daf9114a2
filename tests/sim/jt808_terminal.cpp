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
    return std::string(f->body.begin() + 3, f->body.end());
  }
  return Status(Code::kDeadline, "no 0x8100");
}

Status Jt808Terminal::Authenticate(const std::string& code, std::chrono::milliseconds timeout) {
  Authentication a;
  a.code = code;
  a.imei = "861234567890123";
  a.software = "SIM-1.2.0";
  uint16_t serial = Send(msg::kAuthenticate, BuildAuthentication(a, v2019_));
  auto r = WaitAck(serial, timeout);
  if (!r) return Status(Code::kDeadline, "no answer to 0x0102");
  if (*r != 0) return Status(Code::kFailedPrecondition, "auth result " + std::to_string(*r));
  return Status::Ok();
}

std::optional<uint8_t> Jt808Terminal::Report(const Location& loc, std::chrono::milliseconds timeout) {
  return WaitAck(Send(msg::kLocation, BuildLocation(loc)), timeout);
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
