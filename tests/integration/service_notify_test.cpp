// Both daemons under systemd's Type=notify protocol (issue 18): a real unix datagram socket as
// NOTIFY_SOCKET, the real sanigate and sanifleet processes. READY=1 only once running, nothing
// when the config is invalid, watchdog pings under WATCHDOG_USEC, RELOADING=1 then READY=1 on
// SIGHUP (also when the new config is refused, which keeps the old one), STOPPING=1 on SIGTERM.
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <csignal>

#include "fleet_fixture.h"

namespace sanigate::test {
namespace {

// The service manager's end of NOTIFY_SOCKET: collects every datagram a daemon sends.
class NotifySocket {
 public:
  explicit NotifySocket(std::string path) : path_(std::move(path)) {
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::snprintf(a.sun_path, sizeof a.sun_path, "%s", path_.c_str());
    bound_ = fd_ >= 0 && ::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  }
  ~NotifySocket() {
    if (fd_ >= 0) ::close(fd_);
    ::unlink(path_.c_str());
  }
  bool bound() const { return bound_; }
  const std::string& path() const { return path_; }

  // Receives until a datagram contains `what` (true) or `t` passed (false); all are kept.
  bool WaitFor(const std::string& what, std::chrono::milliseconds t) {
    auto deadline = std::chrono::steady_clock::now() + t;
    for (size_t i = checked_; i < got_.size(); ++i)
      if (got_[i].find(what) != std::string::npos) return Consume(i);
    while (std::chrono::steady_clock::now() < deadline) {
      pollfd p{fd_, POLLIN, 0};
      int left = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count());
      if (::poll(&p, 1, std::max(left, 0)) <= 0) continue;
      char buf[4096];
      ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) continue;
      got_.emplace_back(buf, static_cast<size_t>(n));
      if (got_.back().find(what) != std::string::npos) return Consume(got_.size() - 1);
    }
    return false;
  }
  // Every datagram received so far, for failure messages.
  std::string All() const {
    std::string s;
    for (const auto& g : got_) s += "[" + g + "] ";
    return s;
  }
  size_t Count(const std::string& what) const {
    size_t n = 0;
    for (const auto& g : got_) n += g.find(what) != std::string::npos;
    return n;
  }

 private:
  // Later waits look only after the datagram that matched: the protocol is ordered.
  bool Consume(size_t i) {
    checked_ = i + 1;
    last_ = got_[i];
    return true;
  }
  std::string path_;
  int fd_ = -1;
  bool bound_ = false;
  std::vector<std::string> got_;
  size_t checked_ = 0;
  std::string last_;
};

class ServiceNotifyTest : public FleetFixture {
 protected:
  Process StartWithNotify(const std::vector<std::string>& argv, const NotifySocket& s, const std::string& log,
                          bool watchdog = false) {
    ProcessOptions o{.stderr_path = path(log)};
    o.extra_env = {{"NOTIFY_SOCKET", s.path()}};
    if (watchdog) o.extra_env.emplace_back("WATCHDOG_USEC", "200000");
    return Process::Start(argv, o);
  }
};

TEST_F(ServiceNotifyTest, SanigateIsReadyOnlyWhenRunningPingsTheWatchdogAndAnnouncesReloadsAndStop) {
  StartBroker();
  NotifySocket s(path("notify.sock"));
  ASSERT_TRUE(s.bound()) << std::strerror(errno);
  // An invalid config: exit 2, and never READY=1.
  WriteConfig(BaseConfig() + "[modbus]\nbogus = 1\n");
  Process bad = StartWithNotify({SANIGATE_BIN, "--config", path("sanigate.toml")}, s, "bad.log");
  auto rc = bad.Wait(10s);
  ASSERT_TRUE(rc.has_value());
  EXPECT_TRUE(ExitedWith(*rc, 2)) << DescribeWaitStatus(*rc) << ReadFile(path("bad.log"));
  EXPECT_FALSE(s.WaitFor("READY=1", 300ms)) << s.All();

  WriteConfig(BaseConfig());
  Process gw = StartWithNotify({SANIGATE_BIN, "--config", path("sanigate.toml")}, s, "gw.log", true);
  ASSERT_TRUE(s.WaitFor("READY=1", 10s)) << s.All() << ReadFile(path("gw.log"));
  EXPECT_NE(ReadFile(path("gw.log")).find("running with"), std::string::npos) << "ready after the start, not before";
  ASSERT_TRUE(s.WaitFor("WATCHDOG=1", 2s)) << s.All();
  ASSERT_TRUE(s.WaitFor("WATCHDOG=1", 2s)) << s.All();

  gw.Signal(SIGHUP);
  ASSERT_TRUE(s.WaitFor("RELOADING=1", 5s)) << s.All();
  ASSERT_TRUE(s.WaitFor("READY=1", 5s)) << s.All();
  // A bad config on reload: refused, the old one runs on, and systemd hears it is ready again.
  WriteConfig(BaseConfig() + "[modbus]\nbogus = 1\n");
  gw.Signal(SIGHUP);
  ASSERT_TRUE(s.WaitFor("RELOADING=1", 5s)) << s.All();
  ASSERT_TRUE(s.WaitFor("reload refused", 5s)) << s.All();
  EXPECT_TRUE(gw.Running());

  gw.Signal(SIGTERM);
  ASSERT_TRUE(s.WaitFor("STOPPING=1", 10s)) << s.All();
  auto stopped = gw.Wait(10s);
  ASSERT_TRUE(stopped.has_value());
  EXPECT_TRUE(ExitedWith(*stopped, 0)) << DescribeWaitStatus(*stopped);
}

TEST_F(ServiceNotifyTest, SanifleetIsReadyAfterItsStartAndAnnouncesItsStop) {
  StartBroker();
  NotifySocket s(path("notify.sock"));
  ASSERT_TRUE(s.bound()) << std::strerror(errno);
  WriteFleetConfigText(FleetBaseConfig());
  Process fl = StartWithNotify({SANIFLEET_BIN, "--config", path("sanifleet.toml")}, s, "fleet.log", true);
  ASSERT_TRUE(s.WaitFor("READY=1", 10s)) << s.All() << ReadFile(path("fleet.log"));
  ASSERT_TRUE(s.WaitFor("WATCHDOG=1", 2s)) << s.All();
  fl.Signal(SIGHUP);
  ASSERT_TRUE(s.WaitFor("RELOADING=1", 5s)) << s.All();
  ASSERT_TRUE(s.WaitFor("READY=1", 5s)) << s.All();
  fl.Signal(SIGTERM);
  ASSERT_TRUE(s.WaitFor("STOPPING=1", 10s)) << s.All();
  auto stopped = fl.Wait(15s);
  ASSERT_TRUE(stopped.has_value());
  EXPECT_TRUE(ExitedWith(*stopped, 0)) << DescribeWaitStatus(*stopped) << ReadFile(path("fleet.log"));
}

}  // namespace
}  // namespace sanigate::test
