#include "harness/pty_bridge.h"

#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <iostream>
#include <optional>
#include <stdexcept>
#include <vector>

namespace sanigate::test {
namespace {

using Clock = std::chrono::steady_clock;

constexpr std::size_t kChunk = 4096;           // bytes per read()/write() on a master
constexpr std::size_t kMaxQueued = 64 * 1024;  // stop reading a source beyond this backlog
constexpr int kA = 0;
constexpr int kB = 1;

int Index(PtyBridge::Side side) { return side == PtyBridge::Side::A ? kA : kB; }

[[noreturn]] void ThrowErrno(const std::string& what) {
  throw std::runtime_error("PtyBridge: " + what + ": " + std::strerror(errno));
}

// One direction of the line. Every queued byte carries the time it is due at the other end.
struct Pending {
  std::uint8_t byte;
  Clock::time_point due;
};
struct Direction {
  std::deque<Pending> queue;
  Clock::time_point line_free{};  // when the last scheduled byte has been "transmitted"
  bool write_blocked = false;     // the destination master returned EAGAIN: wait for POLLOUT
};

}  // namespace

PtyBridge::PtyBridge(Options options)
    : options_(options),
      char_time_(options.baud > 0 ? std::chrono::nanoseconds(1'000'000'000LL *
                                                             options.bits_per_char / options.baud)
                                  : std::chrono::nanoseconds(0)) {
  if (options.baud < 0 || options.bits_per_char <= 0 || options.turnaround.count() < 0) {
    throw std::invalid_argument("PtyBridge: baud >= 0, bits_per_char > 0, turnaround >= 0");
  }
  try {
    const char* env = std::getenv("TMPDIR");
    std::string base = (env != nullptr && *env != '\0') ? env : "/tmp";
    while (base.size() > 1 && base.back() == '/') base.pop_back();
    std::string pattern = base + "/sanigate-pty-XXXXXX";
    std::vector<char> buf(pattern.begin(), pattern.end());
    buf.push_back('\0');
    if (::mkdtemp(buf.data()) == nullptr) ThrowErrno("mkdtemp(" + pattern + ")");
    dir_ = buf.data();
    link_a_ = dir_ + "/a";
    link_b_ = dir_ + "/b";
    if (::pipe2(wake_, O_CLOEXEC | O_NONBLOCK) != 0) ThrowErrno("pipe2");
    for (Side side : {Side::A, Side::B}) {
      ends_[Index(side)] = OpenEnd();
      UpdateLink(side, ends_[Index(side)].name);
    }
    thread_ = std::thread([this] { Run(); });
  } catch (...) {
    Cleanup();
    throw;
  }
}

PtyBridge::~PtyBridge() {
  {
    std::lock_guard lk(mu_);
    stop_ = true;
  }
  Wake();
  if (thread_.joinable()) thread_.join();
  Cleanup();
}

std::string PtyBridge::path(Side side) const {
  std::lock_guard lk(mu_);
  return ends_[Index(side)].name;
}

bool PtyBridge::plugged(Side side) const {
  std::lock_guard lk(mu_);
  return ends_[Index(side)].master >= 0;
}

PtyBridgeStats PtyBridge::Stats() const {
  PtyBridgeStats s;
  s.a_to_b = moved_[kA].load();
  s.b_to_a = moved_[kB].load();
  s.dropped_to_a = dropped_[kA].load();
  s.dropped_to_b = dropped_[kB].load();
  return s;
}

void PtyBridge::Unplug(Side side) {
  const int s = Index(side);
  std::unique_lock lk(mu_);
  if (ends_[s].master < 0 || unplug_request_[s]) return;
  // The link goes first, as udev removes /dev/serial/by-id/... when the adapter disappears.
  UpdateLink(side, "");
  unplug_request_[s] = true;
  Wake();
  // Only the bridge thread closes master fds, so it never polls a closed (or reused) number.
  done_cv_.wait(lk, [&] { return !unplug_request_[s] || stop_; });
}

void PtyBridge::Plug(Side side) {
  const int s = Index(side);
  {
    std::lock_guard lk(mu_);
    if (ends_[s].master >= 0) return;
  }
  End end = OpenEnd();
  std::lock_guard lk(mu_);
  if (ends_[s].master >= 0 || stop_) {  // a concurrent Plug won
    CloseEnd(end);
    return;
  }
  try {
    UpdateLink(side, end.name);
  } catch (...) {
    CloseEnd(end);
    throw;
  }
  ends_[s] = std::move(end);
  Wake();
}

PtyBridge::End PtyBridge::OpenEnd() {
  End end;
  char name[128] = {};
  if (::openpty(&end.master, &end.slave, name, nullptr, nullptr) != 0) ThrowErrno("openpty");
  end.name = name;
  try {
    termios tio{};
    if (::tcgetattr(end.slave, &tio) != 0) ThrowErrno("tcgetattr(" + end.name + ")");
    ::cfmakeraw(&tio);  // no echo, no CR/LF translation, no signals: an 8-bit clean line
    if (::tcsetattr(end.slave, TCSANOW, &tio) != 0) ThrowErrno("tcsetattr(" + end.name + ")");
    for (int fd : {end.master, end.slave}) {
      if (::fcntl(fd, F_SETFD, FD_CLOEXEC) != 0) ThrowErrno("fcntl(FD_CLOEXEC)");
    }
    const int flags = ::fcntl(end.master, F_GETFL, 0);
    if (flags < 0 || ::fcntl(end.master, F_SETFL, flags | O_NONBLOCK) != 0) {
      ThrowErrno("fcntl(O_NONBLOCK)");
    }
  } catch (...) {
    CloseEnd(end);
    throw;
  }
  return end;
}

void PtyBridge::CloseEnd(End& end) noexcept {
  // Closing the master hangs the tty up for every opener and removes /dev/pts/N.
  if (end.slave >= 0) ::close(end.slave);
  if (end.master >= 0) ::close(end.master);
  end = End{};
}

void PtyBridge::UpdateLink(Side side, const std::string& target) {
  const std::string& link = this->link(side);
  if (target.empty()) {
    if (::unlink(link.c_str()) != 0 && errno != ENOENT) ThrowErrno("unlink(" + link + ")");
    return;
  }
  // symlink + rename replaces the link atomically: an opener never sees it missing.
  const std::string tmp = link + ".tmp";
  ::unlink(tmp.c_str());
  if (::symlink(target.c_str(), tmp.c_str()) != 0) ThrowErrno("symlink(" + tmp + ")");
  if (::rename(tmp.c_str(), link.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    errno = err;
    ThrowErrno("rename(" + tmp + ", " + link + ")");
  }
}

void PtyBridge::Wake() noexcept {
  if (wake_[1] < 0) return;
  const char c = 'w';
  // EAGAIN means the pipe already holds wake-ups: the thread will rebuild its poll set anyway.
  [[maybe_unused]] const ssize_t n = ::write(wake_[1], &c, 1);
}

void PtyBridge::Cleanup() noexcept {
  for (End& end : ends_) CloseEnd(end);
  for (int& fd : wake_) {
    if (fd >= 0) ::close(fd);
    fd = -1;
  }
  if (!dir_.empty()) {
    for (const std::string& link : {link_a_, link_b_}) {
      ::unlink(link.c_str());
      ::unlink((link + ".tmp").c_str());
    }
    ::rmdir(dir_.c_str());
    dir_.clear();
  }
}

void PtyBridge::Run() noexcept {
  Direction dirs[2];  // indexed by source side: dirs[kA] carries A -> B, dirs[kB] carries B -> A
  std::vector<std::uint8_t> buf(kChunk);
  int last_master[2] = {-1, -1};
  bool dead[2] = {false, false};  // a master that failed unexpectedly: not polled until replugged

  // Queues bytes read from `src`, giving each the time it is due at the other end.
  auto schedule = [&](int src, const std::uint8_t* data, std::size_t n, Clock::time_point now) {
    Direction& d = dirs[src];
    Clock::time_point start;
    if (now >= d.line_free) {  // the line was idle: a new burst, after the turnaround if B -> A
      start = now;
      if (src == kB) start += options_.turnaround;
    } else {
      start = d.line_free;  // continues the burst being transmitted
    }
    for (std::size_t i = 0; i < n; ++i) {
      start += char_time_;  // delivered once its last bit is on the wire, as a UART does
      d.queue.push_back({data[i], start});
    }
    d.line_free = start;
  };

  // Writes every due byte of `src`'s queue to the destination master.
  auto deliver = [&](int src, int dst_fd, Clock::time_point now) {
    Direction& d = dirs[src];
    const int dst = 1 - src;
    if (dst_fd < 0) {  // nobody on the other end: the bytes fall off the line
      dropped_[dst] += d.queue.size();
      d.queue.clear();
      d.write_blocked = false;
      return;
    }
    while (!d.write_blocked && !d.queue.empty() && d.queue.front().due <= now) {
      std::size_t n = 0;
      while (n < d.queue.size() && n < kChunk && d.queue[n].due <= now) {
        buf[n] = d.queue[n].byte;
        ++n;
      }
      const ssize_t w = ::write(dst_fd, buf.data(), n);
      if (w > 0) {
        d.queue.erase(d.queue.begin(), d.queue.begin() + w);
        moved_[src] += static_cast<std::uint64_t>(w);
        if (static_cast<std::size_t>(w) < n) d.write_blocked = true;
      } else if (w < 0 && errno == EINTR) {
        continue;
      } else if (w < 0 && errno == EAGAIN) {
        d.write_blocked = true;  // the tty's input queue is full: nobody reads the other side
      } else {
        std::cerr << "[pty-bridge] write to side " << (dst == kA ? 'A' : 'B')
                  << " failed: " << std::strerror(errno) << "; dropping its bytes\n";
        dead[dst] = true;
        dropped_[dst] += d.queue.size();
        d.queue.clear();
        return;
      }
    }
  };

  try {
    std::vector<pollfd> pfds;
    for (;;) {
      int master[2];
      {
        std::lock_guard lk(mu_);
        if (stop_) break;
        bool acked = false;
        for (int s : {kA, kB}) {
          if (!unplug_request_[s]) continue;
          CloseEnd(ends_[s]);
          Direction& to = dirs[1 - s];  // whatever was on its way to the pulled adapter is lost
          dropped_[s] += to.queue.size();
          to.queue.clear();
          to.write_blocked = false;
          unplug_request_[s] = false;
          acked = true;
        }
        if (acked) done_cv_.notify_all();
        for (int s : {kA, kB}) {
          master[s] = ends_[s].master;
          if (master[s] != last_master[s]) {  // replugged (or unplugged): a fresh start
            dead[s] = false;
            dirs[1 - s].write_blocked = false;
            last_master[s] = master[s];
          }
        }
      }

      auto now = Clock::now();
      for (int s : {kA, kB}) deliver(s, dead[1 - s] ? -1 : master[1 - s], now);

      pfds.clear();
      pfds.push_back({wake_[0], POLLIN, 0});
      int slot[2] = {-1, -1};
      for (int s : {kA, kB}) {
        if (master[s] < 0 || dead[s]) continue;
        short events = 0;
        if (dirs[s].queue.size() < kMaxQueued) events |= POLLIN;
        if (dirs[1 - s].write_blocked) events |= POLLOUT;
        if (events == 0) continue;
        slot[s] = static_cast<int>(pfds.size());
        pfds.push_back({master[s], events, 0});
      }

      std::optional<Clock::time_point> next;
      for (int s : {kA, kB}) {
        const Direction& d = dirs[s];
        if (d.queue.empty() || d.write_blocked) continue;
        if (!next || d.queue.front().due < *next) next = d.queue.front().due;
      }
      timespec ts{};
      timespec* timeout = nullptr;
      if (next) {
        const auto wait =
            std::max(std::chrono::nanoseconds(0),
                     std::chrono::duration_cast<std::chrono::nanoseconds>(*next - Clock::now()));
        ts.tv_sec = static_cast<time_t>(wait.count() / 1'000'000'000);
        ts.tv_nsec = static_cast<long>(wait.count() % 1'000'000'000);
        timeout = &ts;
      }
      const int rc = ::ppoll(pfds.data(), pfds.size(), timeout, nullptr);
      if (rc < 0) {
        if (errno == EINTR) continue;
        std::cerr << "[pty-bridge] ppoll failed: " << std::strerror(errno) << '\n';
        std::this_thread::sleep_for(std::chrono::milliseconds(10));  // never spin
        continue;
      }
      if (rc == 0) continue;
      if (pfds[0].revents != 0) {
        char drain[64];
        while (::read(wake_[0], drain, sizeof drain) > 0) {
        }
      }
      now = Clock::now();
      for (int s : {kA, kB}) {
        if (slot[s] < 0) continue;
        const short rev = pfds[static_cast<std::size_t>(slot[s])].revents;
        if ((rev & POLLOUT) != 0) dirs[1 - s].write_blocked = false;
        if ((rev & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
        const ssize_t n = ::read(master[s], buf.data(), buf.size());
        if (n > 0) {
          schedule(s, buf.data(), static_cast<std::size_t>(n), now);
        } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
          continue;
        } else {
          // Cannot happen while we hold the slave fd; stop polling rather than spin.
          std::cerr << "[pty-bridge] read from side " << (s == kA ? 'A' : 'B')
                    << " failed: " << (n == 0 ? "end of file" : std::strerror(errno)) << '\n';
          dead[s] = true;
        }
      }
    }
  } catch (const std::exception& e) {
    std::cerr << "[pty-bridge] thread failed: " << e.what() << '\n';
  }
  // Never leave an Unplug() waiting.
  std::lock_guard lk(mu_);
  stop_ = true;
  done_cv_.notify_all();
}

}  // namespace sanigate::test
