#include "harness/tcp_proxy.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <deque>
#include <random>
#include <stdexcept>
#include <vector>

namespace sanigate::test {
namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr size_t kReadChunk = 16 * 1024;
constexpr size_t kMaxQueued = 1024 * 1024;  // per direction; reading pauses above it

sockaddr_in Ipv4(const std::string& host, uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  if (::inet_pton(AF_INET, host.c_str(), &a.sin_addr) != 1)
    throw std::runtime_error("TcpProxy: not an IPv4 address: " + host);
  return a;
}

void CloseWithReset(int fd) {
  if (fd < 0) return;
  linger l{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
  ::close(fd);
}

struct Chunk {
  Clock::time_point due;
  std::string data;
  size_t off = 0;
};

// One direction of a connection: read from `from`, written to the other socket when due.
struct Flow {
  std::deque<Chunk> q;
  size_t queued = 0;
  bool eof = false;   // the reading side sent FIN
  bool shut = false;  // FIN passed on
  Clock::time_point last_due{};
};

struct Conn {
  int fd[2] = {-1, -1};  // 0: the client, 1: the target
  bool connecting = true;
  bool silent = false;  // dropped silently: nothing is read or written any more
  bool dead = false;
  Flow flow[2];  // flow[0]: client -> target, flow[1]: target -> client
};

}  // namespace

struct TcpProxy::Impl {
  TcpProxyOptions opt;  // guarded by mu (the settings part)
  mutable std::mutex mu;
  TcpProxyStats stats;                             // guarded by mu
  bool drop_all = false, drop_all_silent = false;  // guarded by mu
  sockaddr_in target{};
  int listen_fd = -1, wake_fd = -1;
  std::atomic<bool> stop{false};
  std::vector<std::unique_ptr<Conn>> conns;  // loop thread only
  std::mt19937_64 rng;
  std::thread thread;

  void Wake() {
    uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(wake_fd, &one, sizeof one);
  }

  void Drop(Conn& c, bool silent) {
    {
      std::lock_guard lk(mu);
      stats.dropped++;
    }
    if (silent) {
      c.silent = true;
      for (auto& f : c.flow) f.q.clear(), f.queued = 0;
      return;
    }
    CloseWithReset(c.fd[0]);
    CloseWithReset(c.fd[1]);
    c.fd[0] = c.fd[1] = -1;
    c.dead = true;
  }

  void Accept() {
    for (;;) {
      int cfd = ::accept4(listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (cfd < 0) return;
      int one = 1;
      ::setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      auto c = std::make_unique<Conn>();
      c->fd[0] = cfd;
      c->fd[1] = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      {
        std::lock_guard lk(mu);
        stats.accepted++;
      }
      ::setsockopt(c->fd[1], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      int rc = ::connect(c->fd[1], reinterpret_cast<sockaddr*>(&target), sizeof target);
      if (rc != 0 && errno != EINPROGRESS) {
        // The target refuses: so does the proxy.
        CloseWithReset(c->fd[0]);
        ::close(c->fd[1]);
        continue;
      }
      c->connecting = rc != 0;
      conns.push_back(std::move(c));
    }
  }

  // Reads what `side` sent into the flow towards the other side.
  void Read(Conn& c, int side, const TcpProxyOptions& o) {
    Flow& f = c.flow[side];
    char buf[kReadChunk];
    while (!c.dead && !c.silent && !f.eof && f.queued < kMaxQueued) {
      ssize_t n = ::read(c.fd[side], buf, sizeof buf);
      if (n == 0) {
        f.eof = true;
        return;
      }
      if (n < 0) {
        if (errno != EAGAIN && errno != EINTR) Drop(c, false);
        return;
      }
      std::uniform_real_distribution<double> pct(0, 100);
      if (o.drop_pct > 0 && pct(rng) < o.drop_pct) {
        Drop(c, o.silent_drops);
        return;
      }
      auto due = Clock::now() + o.latency;
      if (o.stall_pct > 0 && pct(rng) < o.stall_pct) {
        due += o.stall;
        std::lock_guard lk(mu);
        stats.stalls++;
      }
      due = std::max(due, f.last_due);  // bytes never overtake each other
      f.last_due = due;
      f.q.push_back({due, std::string(buf, static_cast<size_t>(n))});
      f.queued += static_cast<size_t>(n);
    }
  }

  // Writes what is due of flow `side` to the other side.
  void Write(Conn& c, int side) {
    Flow& f = c.flow[side];
    int out = c.fd[1 - side];
    auto now = Clock::now();
    while (!c.dead && !c.silent && !f.q.empty() && f.q.front().due <= now) {
      Chunk& ch = f.q.front();
      ssize_t n = ::send(out, ch.data.data() + ch.off, ch.data.size() - ch.off, MSG_NOSIGNAL);
      if (n < 0) {
        if (errno != EAGAIN && errno != EINTR) Drop(c, false);
        return;
      }
      ch.off += static_cast<size_t>(n);
      f.queued -= static_cast<size_t>(n);
      {
        std::lock_guard lk(mu);
        (side == 0 ? stats.bytes_up : stats.bytes_down) += static_cast<uint64_t>(n);
      }
      if (ch.off < ch.data.size()) return;
      f.q.pop_front();
    }
    if (!c.dead && !c.silent && f.q.empty() && f.eof && !f.shut) {
      ::shutdown(out, SHUT_WR);
      f.shut = true;
    }
    if (c.flow[0].shut && c.flow[1].shut) {
      ::close(c.fd[0]);
      ::close(c.fd[1]);
      c.fd[0] = c.fd[1] = -1;
      c.dead = true;
    }
  }

  void Loop() {
    std::vector<pollfd> fds;
    while (!stop) {
      TcpProxyOptions o;
      bool drop_now = false, drop_silent = false;
      {
        std::lock_guard lk(mu);
        o = opt;
        std::swap(drop_now, drop_all);
        drop_silent = drop_all_silent;
      }
      if (drop_now)
        for (auto& c : conns)
          if (!c->dead && !c->silent) Drop(*c, drop_silent);

      fds.clear();
      fds.push_back({listen_fd, POLLIN, 0});
      fds.push_back({wake_fd, POLLIN, 0});
      auto now = Clock::now();
      auto next = now + 100ms;
      for (auto& c : conns) {
        short ev[2] = {0, 0};
        if (c->silent) {
          ev[0] = ev[1] = POLLRDHUP;  // only a peer that gives up ends a silent connection
        } else if (c->connecting) {
          ev[1] = POLLOUT;
          if (!c->flow[0].eof && c->flow[0].queued < kMaxQueued) ev[0] |= POLLIN;
        } else {
          for (int side = 0; side < 2; ++side) {
            Flow& f = c->flow[side];
            if (!f.eof && f.queued < kMaxQueued) ev[side] |= POLLIN;
            if (!f.q.empty()) {
              if (f.q.front().due <= now)
                ev[1 - side] |= POLLOUT;
              else
                next = std::min(next, f.q.front().due);
            }
          }
        }
        fds.push_back({c->fd[0], ev[0], 0});
        fds.push_back({c->fd[1], ev[1], 0});
      }
      auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(next - now) + 1ms;
      int rc = ::poll(fds.data(), fds.size(),
                      static_cast<int>(std::clamp<int64_t>(wait.count(), 0, 100)));
      if (rc < 0 && errno != EINTR) break;
      if (fds[1].revents & POLLIN) {
        uint64_t v;
        [[maybe_unused]] ssize_t n = ::read(wake_fd, &v, sizeof v);
      }
      if (fds[0].revents & POLLIN) Accept();
      // Connections accepted just now have no pollfd yet; they are served next round.
      size_t polled = (fds.size() - 2) / 2;
      for (size_t i = 0; i < polled; ++i) {
        Conn& c = *conns[i];
        short re[2] = {fds[2 + 2 * i].revents, fds[3 + 2 * i].revents};
        if (c.silent) {
          if ((re[0] | re[1]) & (POLLRDHUP | POLLHUP | POLLERR)) {
            CloseWithReset(c.fd[0]);
            CloseWithReset(c.fd[1]);
            c.fd[0] = c.fd[1] = -1;
            c.dead = true;
          }
          continue;
        }
        if (c.connecting && re[1]) {
          int err = 0;
          socklen_t len = sizeof err;
          ::getsockopt(c.fd[1], SOL_SOCKET, SO_ERROR, &err, &len);
          if (err != 0) {  // the target refused or is unreachable: so is the proxy
            CloseWithReset(c.fd[0]);
            ::close(c.fd[1]);
            c.fd[0] = c.fd[1] = -1;
            c.dead = true;
            continue;
          }
          c.connecting = false;
        }
        for (int side = 0; side < 2 && !c.dead; ++side)
          if (re[side] & (POLLIN | POLLHUP | POLLERR | POLLRDHUP)) Read(c, side, o);
        if (!c.connecting)
          for (int side = 0; side < 2 && !c.dead; ++side) Write(c, side);
      }
      conns.erase(std::remove_if(conns.begin(), conns.end(), [](const auto& c) { return c->dead; }),
                  conns.end());
      std::lock_guard lk(mu);
      stats.open = static_cast<size_t>(
          std::count_if(conns.begin(), conns.end(), [](const auto& c) { return !c->silent; }));
    }
  }
};

TcpProxy::TcpProxy(TcpProxyOptions options) : impl_(std::make_unique<Impl>()) {
  auto& d = *impl_;
  d.opt = std::move(options);
  d.rng.seed(d.opt.seed != 0 ? d.opt.seed : std::random_device{}());
  d.target = Ipv4(d.opt.target_host, d.opt.target_port);
  d.listen_fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int one = 1;
  ::setsockopt(d.listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a = Ipv4("127.0.0.1", 0);
  socklen_t len = sizeof a;
  if (d.listen_fd < 0 || ::bind(d.listen_fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::listen(d.listen_fd, 64) != 0 ||
      ::getsockname(d.listen_fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    std::string why = std::strerror(errno);
    if (d.listen_fd >= 0) ::close(d.listen_fd);
    throw std::runtime_error("TcpProxy: cannot listen on 127.0.0.1: " + why);
  }
  port_ = ntohs(a.sin_port);
  d.wake_fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  d.thread = std::thread([&d] { d.Loop(); });
}

TcpProxy::~TcpProxy() {
  auto& d = *impl_;
  d.stop = true;
  d.Wake();
  if (d.thread.joinable()) d.thread.join();
  for (auto& c : d.conns) {
    CloseWithReset(c->fd[0]);
    CloseWithReset(c->fd[1]);
  }
  ::close(d.listen_fd);
  ::close(d.wake_fd);
}

std::string TcpProxy::url() const { return "tcp://127.0.0.1:" + std::to_string(port_); }

void TcpProxy::SetLatency(std::chrono::milliseconds latency) {
  std::lock_guard lk(impl_->mu);
  impl_->opt.latency = latency;
}

void TcpProxy::SetStalls(double pct, std::chrono::milliseconds stall) {
  std::lock_guard lk(impl_->mu);
  impl_->opt.stall_pct = pct;
  impl_->opt.stall = stall;
}

void TcpProxy::SetDrops(double pct, bool silent) {
  std::lock_guard lk(impl_->mu);
  impl_->opt.drop_pct = pct;
  impl_->opt.silent_drops = silent;
}

void TcpProxy::DropAll(bool silent) {
  {
    std::lock_guard lk(impl_->mu);
    impl_->drop_all = true;
    impl_->drop_all_silent = silent;
  }
  impl_->Wake();
}

TcpProxyStats TcpProxy::stats() const {
  std::lock_guard lk(impl_->mu);
  return impl_->stats;
}

}  // namespace sanigate::test
