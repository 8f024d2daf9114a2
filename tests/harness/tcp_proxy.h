// A user-space TCP proxy standing in for a bad WAN where the kernel has no netem: every
// connection accepted on a free 127.0.0.1 port is forwarded to a target, with a one-way latency
// on every chunk of bytes (order kept), occasional stalls (what a lost segment costs over TCP:
// the bytes behind it wait for the retransmission), and connection drops, either with a reset or
// silently (the proxy stops forwarding and keeps both sockets open, so only a keep-alive can
// notice). TCP itself never loses bytes, so "5 % loss" at this level is the stalls and drops.
// Ownership: owns its listening socket, the connections and one thread; the destructor closes
// everything. Thread-safety: the setters, DropAll and stats() may be called from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

namespace sanigate::test {

struct TcpProxyOptions {
  std::string target_host = "127.0.0.1";  // an IPv4 address
  uint16_t target_port = 0;
  std::chrono::milliseconds latency{0};  // added to every chunk, in each direction
  double stall_pct = 0;  // % of chunks held back `stall` longer (and all behind them)
  std::chrono::milliseconds stall{300};
  double drop_pct = 0;        // % of chunks on which their whole connection is dropped
  bool silent_drops = false;  // drop by going silent instead of resetting both ends
  uint64_t seed = 0;          // 0: random
};

struct TcpProxyStats {
  uint64_t accepted = 0, dropped = 0, stalls = 0;
  uint64_t bytes_up = 0, bytes_down = 0;  // forwarded client -> target, target -> client
  size_t open = 0;                        // connections currently forwarding
};

class TcpProxy {
 public:
  // Starts listening and forwarding at once. Throws std::runtime_error if it cannot listen.
  explicit TcpProxy(TcpProxyOptions options);
  ~TcpProxy();
  TcpProxy(const TcpProxy&) = delete;
  TcpProxy& operator=(const TcpProxy&) = delete;

  uint16_t port() const { return port_; }
  std::string url() const;  // tcp://127.0.0.1:PORT

  // Apply to chunks read from now on.
  void SetLatency(std::chrono::milliseconds latency);
  void SetStalls(double pct, std::chrono::milliseconds stall);
  void SetDrops(double pct, bool silent);
  // Drops every open connection now (reset, or silent as in SetDrops).
  void DropAll(bool silent);
  TcpProxyStats stats() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  uint16_t port_ = 0;
};

}  // namespace sanigate::test
