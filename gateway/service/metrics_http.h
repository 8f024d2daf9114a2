// A tiny HTTP/1.1 server for Prometheus scrapes: GET /metrics and nothing else. One thread of
// its own (Boost.Asio), at most `max_connections` at once (more are closed on accept), a request
// head of at most `max_request_bytes` read within `read_timeout`, one response per connection
// (`Connection: close`). Binds exactly the given address; refuses one that is not loopback
// unless `allow_remote`. The body comes from a callback run on the server's thread.
// Answers: 200 (text/plain; version=0.0.4), 404 other paths, 405 other methods on /metrics,
// 400 malformed, 431 request head too large, 500 when the callback throws; a read that times out
// is closed without an answer (408 is sent when some bytes had arrived).
// Thread-safety: Start and Stop (or the destructor) from one owner thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "core/status.h"

namespace sanigate::service {

struct MetricsHttpOptions {
  std::string host = "127.0.0.1";  // an IPv4 or IPv6 literal
  uint16_t port = 0;               // 0: any free port (see port())
  bool allow_remote = false;       // without it, only loopback addresses are accepted
  size_t max_request_bytes = 8 * 1024;
  std::chrono::milliseconds read_timeout{5000};
  size_t max_connections = 16;
};

struct MetricsHttpStats {
  uint64_t scrapes = 0;   // 200 answers
  uint64_t rejected = 0;  // 4xx/5xx answers, timeouts, connections over the limit
};

class MetricsHttpServer {
 public:
  using BodyFn = std::function<std::string()>;
  // Binds and starts serving; kInvalid for a bad or (without allow_remote) non-loopback
  // address, kUnavailable when the address cannot be bound.
  static Result<std::unique_ptr<MetricsHttpServer>> Start(const MetricsHttpOptions& options, BodyFn body);
  ~MetricsHttpServer();
  MetricsHttpServer(const MetricsHttpServer&) = delete;
  MetricsHttpServer& operator=(const MetricsHttpServer&) = delete;
  // Closes the listener and every connection, joins the thread. Idempotent.
  void Stop();
  uint16_t port() const;  // the bound port
  MetricsHttpStats Stats() const;

  struct Impl;

 private:
  explicit MetricsHttpServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;  // null once stopped
  uint16_t port_ = 0;           // kept from the stopped server
  MetricsHttpStats stats_;
};

}  // namespace sanigate::service
