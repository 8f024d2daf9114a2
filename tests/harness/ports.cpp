#include "harness/ports.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace sanigate::test {
namespace {

// Closes the descriptor on every exit path, including exceptions.
class FdGuard {
 public:
  explicit FdGuard(int fd) : fd_(fd) {}
  FdGuard(const FdGuard&) = delete;
  FdGuard& operator=(const FdGuard&) = delete;
  ~FdGuard() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }

 private:
  int fd_;
};

sockaddr_in Loopback(uint16_t port) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return addr;
}

std::string Errno(const char* what) {
  return std::string(what) + ": " + std::strerror(errno);
}

bool TryConnect(uint16_t port, std::chrono::milliseconds budget) {
  FdGuard fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) return false;
  // A listener with a full backlog would otherwise block connect() past our deadline.
  const auto ms = std::clamp<long long>(budget.count(), 1, 1000);
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(ms / 1000);
  tv.tv_usec = static_cast<suseconds_t>((ms % 1000) * 1000);
  ::setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  sockaddr_in addr = Loopback(port);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) return false;
  // Linux can "simultaneously open" a socket to itself when the kernel picks the target port as
  // our source port and nobody listens; that must not count as the server being up.
  sockaddr_in local{};
  socklen_t len = sizeof local;
  if (::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&local), &len) == 0 &&
      ntohs(local.sin_port) == port) {
    return false;
  }
  return true;
}

// Accepts "15020", "modbus=15020", "port: 15020"; the trailing number is the port.
uint16_t ParsePortLine(const std::string& line, const std::string& path) {
  std::size_t end = line.size();
  while (end > 0 && std::isspace(static_cast<unsigned char>(line[end - 1]))) --end;
  std::size_t begin = end;
  while (begin > 0 && std::isdigit(static_cast<unsigned char>(line[begin - 1]))) --begin;
  if (begin == end || end - begin > 5) {
    throw std::runtime_error("ReadPortFile: no port number in line '" + line + "' of " + path);
  }
  const unsigned long value = std::stoul(line.substr(begin, end - begin));
  if (value == 0 || value > 65535) {
    throw std::runtime_error("ReadPortFile: port out of range in line '" + line + "' of " + path);
  }
  return static_cast<uint16_t>(value);
}

}  // namespace

uint16_t FreeTcpPort() {
  FdGuard fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) throw std::runtime_error(Errno("FreeTcpPort: socket"));
  int one = 1;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr = Loopback(0);
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    throw std::runtime_error(Errno("FreeTcpPort: bind"));
  }
  socklen_t len = sizeof addr;
  if (::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    throw std::runtime_error(Errno("FreeTcpPort: getsockname"));
  }
  return ntohs(addr.sin_port);
}

int ListenOnLoopback(uint16_t* port, int backlog) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::runtime_error(Errno("ListenOnLoopback: socket"));
  FdGuard guard(fd);
  sockaddr_in addr = Loopback(0);
  socklen_t len = sizeof addr;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(fd, backlog) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0)
    throw std::runtime_error(Errno("ListenOnLoopback"));
  *port = ntohs(addr.sin_port);
  return ::dup(fd);  // the guard closes the original
}

bool WaitForTcpPort(uint16_t port, std::chrono::milliseconds timeout) {
  using Clock = std::chrono::steady_clock;
  const auto deadline = Clock::now() + timeout;
  auto backoff = std::chrono::milliseconds(5);
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (TryConnect(port, left)) return true;
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::min(backoff, std::max(left, std::chrono::milliseconds(1))));
    backoff = std::min(backoff * 2, std::chrono::milliseconds(100));
  }
}

std::vector<uint16_t> ReadPortFile(const std::string& path, std::size_t expected,
                                   std::chrono::milliseconds timeout) {
  using Clock = std::chrono::steady_clock;
  const auto deadline = Clock::now() + timeout;
  auto backoff = std::chrono::milliseconds(5);
  std::string content;
  for (;;) {
    std::ifstream in(path, std::ios::binary);
    if (in) {
      std::ostringstream buf;
      buf << in.rdbuf();
      content = buf.str();
      // Only '\n'-terminated lines count: a writer may be halfway through the last one.
      std::vector<uint16_t> ports;
      std::size_t start = 0;
      for (std::size_t nl = content.find('\n'); nl != std::string::npos;
           start = nl + 1, nl = content.find('\n', start)) {
        const std::string line = content.substr(start, nl - start);
        if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
        ports.push_back(ParsePortLine(line, path));
      }
      if (ports.size() >= expected) return ports;
    }
    if (Clock::now() >= deadline) {
      throw std::runtime_error("ReadPortFile: " + path + " did not get " + std::to_string(expected) +
                               " port line(s) within " + std::to_string(timeout.count()) +
                               " ms; content so far: '" + content + "'");
    }
    std::this_thread::sleep_for(backoff);
    backoff = std::min(backoff * 2, std::chrono::milliseconds(50));
  }
}

}  // namespace sanigate::test
