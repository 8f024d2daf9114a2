#include "service/metrics_http.h"
#include "core/thread_name.h"

#include <spdlog/spdlog.h>

#include <array>
#include <atomic>
#include <thread>

#include "runtime/asio.h"

namespace sanigate::service {
namespace {

using tcp = asio::ip::tcp;

constexpr const char* kContentType = "text/plain; version=0.0.4; charset=utf-8";

std::string Response(int code, const char* reason, const std::string& body, const char* type,
                     const char* extra = "") {
  return "HTTP/1.1 " + std::to_string(code) + " " + reason + "\r\nContent-Type: " + type +
         "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n" + extra + "Connection: close\r\n\r\n" + body;
}

std::string Plain(int code, const char* reason, const char* extra = "") {
  return Response(code, reason, std::string(reason) + "\n", "text/plain; charset=utf-8", extra);
}

}  // namespace

struct MetricsHttpServer::Impl {
  MetricsHttpOptions opt;
  BodyFn body;
  asio::io_context io;  // first: destroyed last, after the sessions its handlers own
  tcp::acceptor acceptor{io};
  std::thread thread;
  std::atomic<uint64_t> scrapes{0}, rejected{0};
  // Shared with every session, so a session destroyed during teardown never touches freed state.
  std::shared_ptr<std::atomic<size_t>> active = std::make_shared<std::atomic<size_t>>(0);
  uint16_t port = 0;

  void Accept();
  // The answer to one request head (everything up to the blank line).
  std::string Answer(std::string_view head);
};

namespace {

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket s, MetricsHttpServer::Impl& srv)
      : socket_(std::move(s)), timer_(socket_.get_executor()), srv_(srv), active_(srv.active) {
    ++*active_;
  }
  ~Session() { --*active_; }

  void Begin() {
    timer_.expires_after(srv_.opt.read_timeout);
    timer_.async_wait([self = shared_from_this()](asio::error_code ec) {
      if (ec || self->answered_) return;
      self->srv_.rejected++;
      if (self->head_.empty()) return self->Close();
      self->Write(Plain(408, "Request Timeout"));
    });
    Read();
  }

 private:
  void Read() {
    socket_.async_read_some(asio::buffer(buf_), [self = shared_from_this()](asio::error_code ec, size_t n) {
      if (self->answered_) return;
      if (ec) return self->Close();  // the peer went away (or the timer closed it)
      self->head_.append(self->buf_.data(), n);
      auto end = self->head_.find("\r\n\r\n");
      if (end == std::string::npos) end = self->head_.find("\n\n");
      if (end == std::string::npos) {
        if (self->head_.size() >= self->srv_.opt.max_request_bytes) {
          self->srv_.rejected++;
          return self->Write(Plain(431, "Request Header Fields Too Large"));
        }
        return self->Read();
      }
      if (end > self->srv_.opt.max_request_bytes) {
        self->srv_.rejected++;
        return self->Write(Plain(431, "Request Header Fields Too Large"));
      }
      self->Write(self->srv_.Answer(std::string_view(self->head_).substr(0, end)));
    });
  }

  void Write(std::string response) {
    answered_ = true;
    timer_.cancel();
    out_ = std::move(response);
    // The write gets a deadline of its own: a client that never reads cannot hold a slot.
    timer_.expires_after(srv_.opt.read_timeout);
    timer_.async_wait([self = shared_from_this()](asio::error_code ec) {
      if (!ec) self->Close();
    });
    asio::async_write(socket_, asio::buffer(out_), [self = shared_from_this()](asio::error_code ec, size_t) {
      if (ec) return self->Close();
      // Lingering close: what the client still sends (the rest of an oversized request) is read
      // and dropped until it closes, so the kernel does not answer it with a reset that could
      // destroy the response before the client read it. Bounded by the timer and kMaxDrain.
      asio::error_code ignored;
      self->socket_.shutdown(tcp::socket::shutdown_send, ignored);
      self->Drain();
    });
  }

  void Drain() {
    socket_.async_read_some(asio::buffer(buf_), [self = shared_from_this()](asio::error_code ec, size_t n) {
      self->drained_ += n;
      if (ec || self->drained_ > kMaxDrain) {
        self->timer_.cancel();
        return self->Close();
      }
      self->Drain();
    });
  }

  // Also cancels the timer, whose handler holds the session: its slot is free once this returns.
  void Close() {
    timer_.cancel();
    asio::error_code ignored;
    socket_.shutdown(tcp::socket::shutdown_both, ignored);
    socket_.close(ignored);
  }

  tcp::socket socket_;
  asio::steady_timer timer_;
  MetricsHttpServer::Impl& srv_;
  std::shared_ptr<std::atomic<size_t>> active_;
  std::array<char, 2048> buf_{};
  std::string head_, out_;
  bool answered_ = false;
  size_t drained_ = 0;
  static constexpr size_t kMaxDrain = 64 * 1024;
};

}  // namespace

std::string MetricsHttpServer::Impl::Answer(std::string_view head) {
  std::string_view line = head.substr(0, head.find('\n'));
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  // METHOD SP request-target SP HTTP/1.x
  size_t sp1 = line.find(' '), sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp1 == 0 || sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos ||
      line.substr(sp2 + 1).rfind("HTTP/1.", 0) != 0 || line.size() != sp2 + 1 + 8) {
    rejected++;
    return Plain(400, "Bad Request");
  }
  std::string_view method = line.substr(0, sp1), target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  std::string_view path = target.substr(0, target.find('?'));
  if (path != "/metrics") {
    rejected++;
    return Plain(404, "Not Found");
  }
  if (method != "GET") {
    rejected++;
    return Plain(405, "Method Not Allowed", "Allow: GET\r\n");
  }
  try {
    std::string text = body();
    scrapes++;
    return Response(200, "OK", text, kContentType);
  } catch (const std::exception& e) {
    spdlog::error("metrics: building the scrape failed: {}", e.what());
    rejected++;
    return Plain(500, "Internal Server Error");
  }
}

void MetricsHttpServer::Impl::Accept() {
  acceptor.async_accept([this](asio::error_code ec, tcp::socket s) {
    if (ec == asio::error::operation_aborted || !acceptor.is_open()) return;
    if (!ec) {
      if (active->load() >= opt.max_connections) {
        rejected++;
        asio::error_code ignored;
        s.close(ignored);  // over the limit: refused at once, the slot holders keep theirs
      } else {
        std::make_shared<Session>(std::move(s), *this)->Begin();
      }
    } else {
      spdlog::debug("metrics: accept: {}", ec.message());
    }
    Accept();
  });
}

MetricsHttpServer::MetricsHttpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

MetricsHttpServer::~MetricsHttpServer() { Stop(); }

Result<std::unique_ptr<MetricsHttpServer>> MetricsHttpServer::Start(const MetricsHttpOptions& options, BodyFn body) {
  asio::error_code ec;
  auto addr = asio::ip::make_address(options.host, ec);
  if (ec) return Invalid("metrics: \"" + options.host + "\" is not an IP address");
  if (!addr.is_loopback() && !options.allow_remote)
    return Invalid("metrics: " + options.host + " is not a loopback address (set allow_remote = true to expose it)");
  auto impl = std::make_unique<Impl>();
  impl->opt = options;
  impl->body = std::move(body);
  tcp::endpoint ep(addr, options.port);
  auto& a = impl->acceptor;
  a.open(ep.protocol(), ec);
  if (!ec) a.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec && addr.is_v6()) a.set_option(asio::ip::v6_only(true), ec);
  if (!ec) a.bind(ep, ec);
  if (!ec) a.listen(asio::socket_base::max_listen_connections, ec);
  if (ec)
    return Unavailable("metrics: cannot listen on " + options.host + ":" + std::to_string(options.port) + ": " +
                       ec.message());
  impl->port = a.local_endpoint().port();
  impl->Accept();
  Impl* raw = impl.get();
  impl->thread = std::thread([raw] {
    NameThisThread("metrics-http");
    raw->io.run();
  });
  return std::unique_ptr<MetricsHttpServer>(new MetricsHttpServer(std::move(impl)));
}

void MetricsHttpServer::Stop() {
  if (!impl_) return;
  impl_->io.stop();
  if (impl_->thread.joinable()) impl_->thread.join();
  port_ = impl_->port;
  stats_ = {impl_->scrapes.load(), impl_->rejected.load()};
  // Destroying the io_context destroys the handlers that own the sessions: every connection and
  // the listener are closed when this returns.
  impl_.reset();
}

uint16_t MetricsHttpServer::port() const { return impl_ ? impl_->port : port_; }

MetricsHttpStats MetricsHttpServer::Stats() const {
  return impl_ ? MetricsHttpStats{impl_->scrapes.load(), impl_->rejected.load()} : stats_;
}

}  // namespace sanigate::service
