// The metrics HTTP server on a free loopback port: GET /metrics, the answers to anything else
// (404, 405, 400, 431), the read timeout, the connection limit and the address rules.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "service/metrics_http.h"

namespace sanigate::service {
namespace {

using namespace std::chrono_literals;

int Connect(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  timeval tv{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return fd;
}

std::string ReadAll(int fd) {
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  return out;
}

// Sends `request` on a new connection and returns everything until the server closes.
std::string Exchange(uint16_t port, const std::string& request) {
  int fd = Connect(port);
  if (fd < 0) return "connect failed";
  size_t off = 0;
  while (off < request.size()) {
    ssize_t n = ::send(fd, request.data() + off, request.size() - off, MSG_NOSIGNAL);
    if (n <= 0) break;
    off += static_cast<size_t>(n);
  }
  std::string out = ReadAll(fd);
  ::close(fd);
  return out;
}

std::string StatusLine(const std::string& response) { return response.substr(0, response.find("\r\n")); }

class MetricsHttpTest : public ::testing::Test {
 protected:
  void SetUp() override {
    MetricsHttpOptions o;
    o.read_timeout = 500ms;
    o.max_connections = 3;
    auto s = MetricsHttpServer::Start(o, [this] {
      calls++;
      return std::string("# TYPE x gauge\nx 1\n");
    });
    ASSERT_TRUE(s.ok()) << s.status().message();
    server = std::move(*s);
    ASSERT_NE(server->port(), 0);
  }
  std::unique_ptr<MetricsHttpServer> server;
  std::atomic<int> calls{0};
};

TEST_F(MetricsHttpTest, ServesMetrics) {
  std::string r = Exchange(server->port(), "GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n");
  EXPECT_EQ(StatusLine(r), "HTTP/1.1 200 OK");
  EXPECT_NE(r.find("\r\nContent-Type: text/plain; version=0.0.4"), std::string::npos) << r;
  EXPECT_NE(r.find("\r\nContent-Length: 19\r\n"), std::string::npos) << r;
  EXPECT_NE(r.find("\r\nConnection: close\r\n"), std::string::npos) << r;
  EXPECT_EQ(r.substr(r.find("\r\n\r\n") + 4), "# TYPE x gauge\nx 1\n");
  // HTTP/1.0, a query string, a bare-LF head: all fine.
  EXPECT_EQ(StatusLine(Exchange(server->port(), "GET /metrics?x=1 HTTP/1.0\n\n")), "HTTP/1.1 200 OK");
  EXPECT_EQ(calls.load(), 2);
  EXPECT_EQ(server->Stats().scrapes, 2u);
}

TEST_F(MetricsHttpTest, AnswersEverythingElse) {
  EXPECT_EQ(StatusLine(Exchange(server->port(), "GET / HTTP/1.1\r\n\r\n")), "HTTP/1.1 404 Not Found");
  EXPECT_EQ(StatusLine(Exchange(server->port(), "GET /metricsx HTTP/1.1\r\n\r\n")), "HTTP/1.1 404 Not Found");
  std::string post = Exchange(server->port(), "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
  EXPECT_EQ(StatusLine(post), "HTTP/1.1 405 Method Not Allowed");
  EXPECT_NE(post.find("\r\nAllow: GET\r\n"), std::string::npos);
  for (const char* bad : {"garbage\r\n\r\n", "GET /metrics\r\n\r\n", "GET  /metrics HTTP/1.1\r\n\r\n",
                          "GET /metrics HTTP/2.0\r\n\r\n", "GET /metrics HTTP/1.1 x\r\n\r\n", "\r\n\r\n",
                          " GET /metrics HTTP/1.1\r\n\r\n"})
    EXPECT_EQ(StatusLine(Exchange(server->port(), bad)), "HTTP/1.1 400 Bad Request") << bad;
  EXPECT_EQ(calls.load(), 0);
}

TEST_F(MetricsHttpTest, RefusesOversizedRequests) {
  // A head past 8 KiB: 431, whether the blank line never comes or comes too late.
  std::string big = "GET /metrics HTTP/1.1\r\nX-Filler: " + std::string(9000, 'a') + "\r\n\r\n";
  EXPECT_EQ(StatusLine(Exchange(server->port(), big)), "HTTP/1.1 431 Request Header Fields Too Large");
  std::string endless = "GET /metrics HTTP/1.1\r\nX-Filler: " + std::string(100'000, 'b');
  EXPECT_EQ(StatusLine(Exchange(server->port(), endless)), "HTTP/1.1 431 Request Header Fields Too Large");
  // Just under the limit is served.
  std::string fits = "GET /metrics HTTP/1.1\r\nX-Filler: " + std::string(8000, 'c') + "\r\n\r\n";
  EXPECT_EQ(StatusLine(Exchange(server->port(), fits)), "HTTP/1.1 200 OK");
  EXPECT_EQ(calls.load(), 1);
}

TEST_F(MetricsHttpTest, TimesOutSlowClients) {
  auto t0 = std::chrono::steady_clock::now();
  // Nothing sent: closed without an answer; half a head: 408.
  EXPECT_EQ(Exchange(server->port(), ""), "");
  EXPECT_EQ(StatusLine(Exchange(server->port(), "GET /metr")), "HTTP/1.1 408 Request Timeout");
  auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_GE(took, 900ms);
  EXPECT_LT(took, 5s);
}

TEST_F(MetricsHttpTest, LimitsConnections) {
  std::vector<int> idle;
  for (int i = 0; i < 3; ++i) idle.push_back(Connect(server->port()));
  std::this_thread::sleep_for(100ms);  // all three accepted
  // The fourth is closed at once, without an answer.
  int extra = Connect(server->port());
  ASSERT_GE(extra, 0);
  EXPECT_EQ(ReadAll(extra), "");
  ::close(extra);
  for (int fd : idle) ::close(fd);
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(StatusLine(Exchange(server->port(), "GET /metrics HTTP/1.1\r\n\r\n")), "HTTP/1.1 200 OK");
}

TEST_F(MetricsHttpTest, StopClosesOpenConnections) {
  int fd = Connect(server->port());
  std::this_thread::sleep_for(50ms);
  server->Stop();
  server->Stop();  // idempotent
  EXPECT_EQ(ReadAll(fd), "");
  ::close(fd);
  EXPECT_LT(Connect(server->port()), 0);
}

TEST(MetricsHttpAddress, RefusesRemoteUnlessAllowed) {
  MetricsHttpOptions o;
  o.host = "0.0.0.0";
  auto refused = MetricsHttpServer::Start(o, [] { return std::string(); });
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), Code::kInvalid);
  o.host = "localhost";
  EXPECT_FALSE(MetricsHttpServer::Start(o, [] { return std::string(); }).ok());
  o.host = "0.0.0.0";
  o.allow_remote = true;
  auto allowed = MetricsHttpServer::Start(o, [] { return std::string(); });
  EXPECT_TRUE(allowed.ok()) << allowed.status().message();
}

TEST(MetricsHttpAddress, ReportsAPortInUse) {
  auto first = MetricsHttpServer::Start({}, [] { return std::string(); });
  ASSERT_TRUE(first.ok());
  MetricsHttpOptions o;
  o.port = (*first)->port();
  auto second = MetricsHttpServer::Start(o, [] { return std::string(); });
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), Code::kUnavailable);
}

TEST(MetricsHttpAddress, ServesOnIpv6Loopback) {
  MetricsHttpOptions o;
  o.host = "::1";
  auto s = MetricsHttpServer::Start(o, [] { return std::string("x 1\n"); });
  if (!s.ok()) GTEST_SKIP() << "no IPv6 loopback here: " << s.status().message();
  EXPECT_NE((*s)->port(), 0);
}

}  // namespace
}  // namespace sanigate::service
