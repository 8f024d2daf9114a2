// Self-test of the integration-test harness against the real tools (mosquitto, openssl, sh,
// modbus_sim). Each test owns its broker/processes/dirs/ptys; nothing is shared between tests.
// Runs single-threaded except for Paho's internal callback threads and PtyBridge's thread.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <modbus/modbus.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "harness/broker.h"
#include "harness/mqtt_capture.h"
#include "harness/ports.h"
#include "harness/process.h"
#include "harness/pty_bridge.h"
#include "harness/temp_dir.h"

namespace sanigate::test {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// Runs mosquitto_pub against 127.0.0.1 and returns "" on success or the tool's output on failure.
std::string Publish(const MosquittoBroker& broker, std::vector<std::string> args) {
  std::vector<std::string> argv{"mosquitto_pub", "-h", "127.0.0.1"};
  argv.insert(argv.end(), args.begin(), args.end());
  Process::Options opts;
  opts.stdout_path = broker.dir() + "/mosquitto_pub.out";
  opts.stderr_path = opts.stdout_path;
  const int status = Process::Run(argv, 15s, opts);
  if (ExitedWith(status, 0)) return "";
  return "mosquitto_pub " + DescribeWaitStatus(status) + ": " + ReadFile(opts.stdout_path);
}

std::string Describe(const std::vector<Captured>& msgs) {
  std::string out;
  for (const auto& m : msgs) out += m.topic + " " + m.payload + (m.retained ? " [r]\n" : "\n");
  return out;
}

bool ProcessGone(pid_t pid) { return ::kill(pid, 0) != 0 && errno == ESRCH; }

// ---------------------------------------------------------------- ports

TEST(Ports, FreeTcpPortIsBindableAndWaitSeesListener) {
  const uint16_t port = FreeTcpPort();
  ASSERT_NE(port, 0);
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0) << "port " << port;
  ASSERT_EQ(::listen(fd, 4), 0);
  EXPECT_TRUE(WaitForTcpPort(port, 2s));
  ::close(fd);
  const auto start = Clock::now();
  EXPECT_FALSE(WaitForTcpPort(port, 200ms));
  EXPECT_GE(Clock::now() - start, 200ms);
}

TEST(Ports, ReadPortFileParsesCompleteLines) {
  TempDir dir;
  {
    std::ofstream out(dir.File("ports"));
    out << "15020\nmodbus=15021\n 15022 \n1502";  // the last line is still being written
  }
  EXPECT_EQ(ReadPortFile(dir.File("ports"), 3, 1s), (std::vector<uint16_t>{15020, 15021, 15022}));
  EXPECT_THROW(ReadPortFile(dir.File("ports"), 4, 100ms), std::runtime_error);
  EXPECT_THROW(ReadPortFile(dir.File("missing"), 1, 100ms), std::runtime_error);
}

TEST(Ports, ReadPortFileWaitsForWriter) {
  TempDir dir;
  // Written by another process, atomically via rename, as a daemon would do.
  Process writer = Process::Start(
      {"sh", "-c", "printf '4711\\n4712\\n' > ports.tmp && mv ports.tmp ports"},
      {.cwd = dir.path().string()});
  EXPECT_EQ(ReadPortFile(dir.File("ports"), 2, 10s), (std::vector<uint16_t>{4711, 4712}));
  ASSERT_TRUE(writer.Wait(10s).has_value());
}

// ---------------------------------------------------------------- temp dir

TEST(TempDirTest, CreatesAndRemovesDirectory) {
  std::filesystem::path path;
  {
    TempDir dir;
    path = dir.path();
    EXPECT_TRUE(std::filesystem::is_directory(path));
    EXPECT_EQ(path.filename().string().rfind("sanigate-test-", 0), 0u) << path;
    std::filesystem::create_directories(path / "a" / "b");
    std::ofstream(path / "a" / "b" / "f") << "x";
    TempDir moved = std::move(dir);
    EXPECT_EQ(moved.path(), path);
    EXPECT_TRUE(dir.path().empty());  // NOLINT(bugprone-use-after-move): moved-from is empty
  }
  EXPECT_FALSE(std::filesystem::exists(path));
}

// ---------------------------------------------------------------- process

TEST(ProcessTest, ReportsExitStatus) {
  const int status = Process::Run({"sh", "-c", "exit 3"}, 10s);
  EXPECT_TRUE(ExitedWith(status, 3)) << DescribeWaitStatus(status);
}

TEST(ProcessTest, RedirectsOutputAndAppliesEnvAndCwd) {
  TempDir dir;
  Process::Options opts;
  opts.stdout_path = dir.File("out.txt");
  opts.stderr_path = dir.File("err.txt");
  opts.extra_env = {{"SANIGATE_HARNESS_VALUE", "hello"}, {"HOME", "/nowhere"}};
  opts.cwd = dir.path().string();
  Process p = Process::Start(
      {"sh", "-c", "echo \"$SANIGATE_HARNESS_VALUE $HOME\"; pwd; echo oops >&2; exit 0"}, opts);
  const auto status = p.Wait(10s);
  ASSERT_TRUE(status.has_value());
  EXPECT_TRUE(ExitedWith(*status, 0)) << DescribeWaitStatus(*status);
  EXPECT_EQ(ReadFile(opts.stdout_path), "hello /nowhere\n" + dir.path().string() + "\n");
  EXPECT_EQ(ReadFile(opts.stderr_path), "oops\n");
}

TEST(ProcessTest, ChildDoesNotInheritTestDescriptors) {
  TempDir dir;
  // Deliberately without SOCK_CLOEXEC, like many libraries' sockets.
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 3);
  Process::Options opts;
  opts.stdout_path = dir.File("fds.txt");
  const int status = Process::Run({"sh", "-c", "ls /proc/$$/fd"}, 10s, opts);
  ::close(fd);
  ASSERT_TRUE(ExitedWith(status, 0)) << DescribeWaitStatus(status);
  EXPECT_EQ(ReadFile(opts.stdout_path), "0\n1\n2\n");
}

TEST(ProcessTest, ExecFailureThrows) {
  try {
    Process::Start({"/nonexistent/sanigate-no-such-binary"});
    FAIL() << "expected an exception";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("No such file"), std::string::npos) << e.what();
  }
  EXPECT_THROW(Process::Start({"sanigate-no-such-command-in-path"}), std::runtime_error);
  Process::Options bad_cwd;
  bad_cwd.cwd = "/nonexistent/dir";
  EXPECT_THROW(Process::Start({"true"}, bad_cwd), std::runtime_error);
}

TEST(ProcessTest, StopTerminatesSleep) {
  Process p = Process::Start({"sleep", "30"});
  EXPECT_TRUE(p.Running());
  EXPECT_FALSE(p.Wait(50ms).has_value());
  const auto start = Clock::now();
  const int status = p.Stop(5s);
  EXPECT_LT(Clock::now() - start, 4s);
  ASSERT_TRUE(WIFSIGNALED(status)) << DescribeWaitStatus(status);
  EXPECT_EQ(WTERMSIG(status), SIGTERM);
  EXPECT_FALSE(p.Running());
  EXPECT_TRUE(ProcessGone(p.pid()));
}

TEST(ProcessTest, StopEscalatesToSigkill) {
  TempDir dir;
  // The child ignores SIGTERM; it announces readiness so we never signal it before the trap.
  Process p = Process::Start(
      {"sh", "-c", "trap '' TERM; echo ready > " + dir.File("ready") + "; exec sleep 30"});
  const auto deadline = Clock::now() + 10s;
  while (ReadFile(dir.File("ready")) != "ready\n" && Clock::now() < deadline) {
    std::this_thread::sleep_for(5ms);  // polling with a deadline, not synchronising by sleep
  }
  ASSERT_EQ(ReadFile(dir.File("ready")), "ready\n");
  const int status = p.Stop(300ms);
  ASSERT_TRUE(WIFSIGNALED(status)) << DescribeWaitStatus(status);
  EXPECT_EQ(WTERMSIG(status), SIGKILL);
}

TEST(ProcessTest, DestructorKillsAndReaps) {
  pid_t pid = -1;
  {
    Process p = Process::Start({"sleep", "30"});
    pid = p.pid();
    Process moved = std::move(p);
    EXPECT_EQ(p.pid(), -1);  // NOLINT(bugprone-use-after-move)
    EXPECT_EQ(moved.pid(), pid);
  }
  EXPECT_TRUE(ProcessGone(pid));
}

// ---------------------------------------------------------------- topic helpers

TEST(MqttHelpers, TopicMatches) {
  EXPECT_TRUE(TopicMatches("a/b", "a/b"));
  EXPECT_FALSE(TopicMatches("a/b", "a/b/c"));
  EXPECT_TRUE(TopicMatches("a/+", "a/b"));
  EXPECT_FALSE(TopicMatches("a/+", "a/b/c"));
  EXPECT_TRUE(TopicMatches("a/+/c", "a/x/c"));
  EXPECT_TRUE(TopicMatches("a/+", "a/"));
  EXPECT_TRUE(TopicMatches("a/#", "a"));
  EXPECT_TRUE(TopicMatches("a/#", "a/b/c"));
  EXPECT_FALSE(TopicMatches("a/#", "b/a"));
  EXPECT_TRUE(TopicMatches("#", "sanigate/x/telemetry"));
  EXPECT_FALSE(TopicMatches("#", "$SYS/broker/uptime"));
  EXPECT_FALSE(TopicMatches("+/broker/uptime", "$SYS/broker/uptime"));
  EXPECT_TRUE(TopicMatches("$SYS/#", "$SYS/broker/uptime"));
}

TEST(MqttHelpers, WriteMosquittoSubFormat) {
  TempDir dir;
  std::vector<Captured> msgs{{"a/b", "{\"x\":1}", false, Clock::now()},
                             {"c", "", true, Clock::now()}};
  WriteMosquittoSubFormat(msgs, dir.File("cap.txt"));
  EXPECT_EQ(ReadFile(dir.File("cap.txt")), "a/b {\"x\":1}\nc \n");
}

// ---------------------------------------------------------------- broker + capture

TEST(Broker, CaptureReceivesPublishedMessage) {
  MosquittoBroker broker;
  broker.Start();
  EXPECT_TRUE(broker.Running());
  EXPECT_EQ(broker.url(), "tcp://127.0.0.1:" + std::to_string(broker.port()));

  MqttCapture cap(broker.url(), "selftest-basic");
  cap.Connect();
  EXPECT_TRUE(cap.IsConnected());
  EXPECT_EQ(cap.connect_count(), 1u);
  cap.Subscribe("a/#");
  ASSERT_EQ(Publish(broker, {"-p", std::to_string(broker.port()), "-t", "a/b", "-m", "hi", "-q", "1"}),
            "");
  ASSERT_TRUE(cap.WaitForCount("a/b", 1, 10s)) << Describe(cap.Messages());
  const auto msgs = cap.Messages();
  ASSERT_EQ(msgs.size(), 1u);
  EXPECT_EQ(msgs[0].topic, "a/b");
  EXPECT_EQ(msgs[0].payload, "hi");
  EXPECT_FALSE(msgs[0].retained);
  EXPECT_EQ(cap.Count("/b"), 1u);
  EXPECT_EQ(cap.Count(""), 1u);
  EXPECT_EQ(cap.Count("x"), 0u);

  cap.Clear();
  EXPECT_TRUE(cap.Messages().empty());
  const auto start = Clock::now();
  EXPECT_FALSE(cap.WaitFor([](const std::vector<Captured>& m) { return !m.empty(); }, 200ms));
  EXPECT_GE(Clock::now() - start, 200ms);
}

TEST(Broker, RetainedMessagesAreFlagged) {
  MosquittoBroker broker;
  broker.Start();
  const std::string port = std::to_string(broker.port());
  ASSERT_EQ(Publish(broker, {"-p", port, "-t", "status/gw1", "-m", "online", "-q", "1", "-r"}), "");

  MqttCapture cap(broker.url(), "selftest-retained");
  cap.Connect();
  cap.Subscribe("status/#");
  ASSERT_TRUE(cap.WaitForCount("status/gw1", 1, 10s));
  EXPECT_TRUE(cap.Messages().at(0).retained);

  // Live messages keep the publisher's flag (retain-as-published).
  ASSERT_EQ(Publish(broker, {"-p", port, "-t", "status/gw2", "-m", "online", "-q", "1", "-r"}), "");
  ASSERT_EQ(Publish(broker, {"-p", port, "-t", "status/gw3", "-m", "plain", "-q", "1"}), "");
  ASSERT_TRUE(cap.WaitForCount("status/+", 3, 10s)) << Describe(cap.Messages());
  const auto msgs = cap.Messages();
  ASSERT_EQ(msgs.size(), 3u) << Describe(msgs);
  EXPECT_TRUE(msgs[1].retained);
  EXPECT_FALSE(msgs[2].retained);
}

TEST(Broker, PersistentSessionSurvivesRestart) {
  MosquittoBroker broker(MosquittoBroker::Options{.persistence = true});
  broker.Start();
  const uint16_t port = broker.port();
  const std::string port_arg = std::to_string(port);

  MqttCapture cap(broker.url(), "selftest-persistent", /*clean_session=*/false);
  cap.Connect();
  cap.Subscribe("gw/#", 1);

  // 1) Published while the capture is offline, then a graceful broker restart in between.
  cap.Disconnect();
  EXPECT_FALSE(cap.IsConnected());
  ASSERT_EQ(Publish(broker, {"-p", port_arg, "-t", "gw/offline", "-m", "m1", "-q", "1"}), "");
  broker.Stop();
  EXPECT_FALSE(broker.Running());
  broker.Restart();
  EXPECT_TRUE(broker.Running());
  EXPECT_EQ(broker.port(), port);
  cap.Connect();
  EXPECT_TRUE(cap.session_present());
  ASSERT_TRUE(cap.WaitForCount("gw/offline", 1, 10s)) << Describe(cap.Messages()) << broker.log();
  EXPECT_EQ(cap.Messages().at(0).payload, "m1");

  // 2) Published during the restart window, before the capture's automatic reconnect.
  const std::size_t connects = cap.connect_count();
  broker.Restart();
  ASSERT_EQ(Publish(broker, {"-p", port_arg, "-t", "gw/window", "-m", "m2", "-q", "1"}), "");
  ASSERT_TRUE(cap.WaitForCount("gw/window", 1, 20s))
      << Describe(cap.Messages()) << cap.last_error() << "\n" << broker.log();
  EXPECT_TRUE(cap.WaitConnected(1s));
  EXPECT_GT(cap.connect_count(), connects);
}

TEST(Broker, KillAndStartAgainKeepsPort) {
  MosquittoBroker broker;
  broker.Start();
  const uint16_t port = broker.port();
  broker.Kill();
  EXPECT_FALSE(broker.Running());
  EXPECT_FALSE(WaitForTcpPort(port, 100ms));
  broker.Start();
  EXPECT_EQ(broker.port(), port);
  EXPECT_TRUE(WaitForTcpPort(port, 1s));
}

TEST(Broker, PasswordRequired) {
  MosquittoBroker broker(
      MosquittoBroker::Options{.require_password = true, .username = "gw", .password = "s3cret"});
  broker.Start();
  MqttCapture anonymous(broker.url(), "selftest-anon");
  EXPECT_THROW(anonymous.Connect(5s), std::runtime_error);
  MqttCapture wrong(broker.url(), "selftest-wrong-pass");
  wrong.SetCredentials("gw", "nope");
  EXPECT_THROW(wrong.Connect(5s), std::runtime_error);
  MqttCapture ok(broker.url(), "selftest-auth");
  ok.SetCredentials("gw", "s3cret");
  ok.Connect();
  EXPECT_TRUE(ok.IsConnected());
}

TEST(Broker, TlsListener) {
  MosquittoBroker broker(MosquittoBroker::Options{.tls = true});
  broker.Start();
  ASSERT_NE(broker.tls_port(), 0);
  ASSERT_NE(broker.tls_port(), broker.port());
  EXPECT_EQ(broker.tls_url(), "ssl://127.0.0.1:" + std::to_string(broker.tls_port()));
  for (const auto& f : {broker.ca_file(), broker.wrong_ca_file(), broker.client_cert_file(),
                        broker.client_key_file()}) {
    EXPECT_TRUE(std::filesystem::exists(f)) << f;
  }

  MqttCapture cap(broker.tls_url(), "selftest-tls");
  cap.SetTrustStore(broker.ca_file());
  cap.Connect();
  cap.Subscribe("secure/#");
  const std::string tls_port = std::to_string(broker.tls_port());
  ASSERT_EQ(Publish(broker, {"--cafile", broker.ca_file(), "-p", tls_port, "-t", "secure/a", "-m",
                             "over-tls", "-q", "1"}),
            "");
  ASSERT_TRUE(cap.WaitForCount("secure/a", 1, 10s)) << Describe(cap.Messages());
  EXPECT_EQ(cap.Messages().at(0).payload, "over-tls");

  // A client trusting an unrelated CA must refuse the broker.
  MqttCapture wrong(broker.tls_url(), "selftest-wrong-ca");
  wrong.SetTrustStore(broker.wrong_ca_file());
  EXPECT_THROW(wrong.Connect(5s), std::runtime_error);
  EXPECT_NE(Publish(broker, {"--cafile", broker.wrong_ca_file(), "-p", tls_port, "-t", "secure/b",
                             "-m", "x"}),
            "");
  // Plain MQTT on the TLS port must not work either.
  MqttCapture plain("tcp://127.0.0.1:" + tls_port, "selftest-plain-on-tls");
  EXPECT_THROW(plain.Connect(3s), std::runtime_error);
}

TEST(Broker, MutualTls) {
  MosquittoBroker broker(
      MosquittoBroker::Options{.tls = true, .require_client_certificate = true});
  broker.Start();
  MqttCapture without(broker.tls_url(), "selftest-mtls-none");
  without.SetTrustStore(broker.ca_file());
  EXPECT_THROW(without.Connect(5s), std::runtime_error);

  MqttCapture with(broker.tls_url(), "selftest-mtls");
  with.SetTrustStore(broker.ca_file());
  with.SetClientCertificate(broker.client_cert_file(), broker.client_key_file());
  with.Connect();
  EXPECT_TRUE(with.IsConnected());
}

// ---------------------------------------------------------------- pty bridge + RTU simulator

// An opener of one side of a PtyBridge, as a serial application would open its tty.
class Tty {
 public:
  explicit Tty(const std::string& path)
      : fd_(::open(path.c_str(), O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC)) {}
  ~Tty() {
    if (fd_ >= 0) ::close(fd_);
  }
  Tty(const Tty&) = delete;
  Tty& operator=(const Tty&) = delete;
  int fd() const { return fd_; }

  bool Write(const std::string& data) {
    return ::write(fd_, data.data(), data.size()) == static_cast<ssize_t>(data.size());
  }
  // Reads until `n` bytes arrived or the deadline passed; returns what arrived.
  std::string Read(std::size_t n, std::chrono::milliseconds timeout) {
    std::string out;
    const auto deadline = Clock::now() + timeout;
    while (out.size() < n) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) break;
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left.count()) + 1) <= 0) continue;
      char buf[512];
      const ssize_t got = ::read(fd_, buf, std::min(sizeof buf, n - out.size()));
      if (got > 0) out.append(buf, static_cast<std::size_t>(got));
    }
    return out;
  }

 private:
  int fd_;
};

// A libmodbus RTU master on one side of the bridge (what the gateway does).
class RtuMaster {
 public:
  explicit RtuMaster(const std::string& path, std::chrono::milliseconds response_timeout = 500ms)
      : ctx_(modbus_new_rtu(path.c_str(), 9600, 'E', 8, 1)) {
    if (ctx_ == nullptr) throw std::runtime_error("modbus_new_rtu failed");
    SetTimeout(response_timeout);
  }
  ~RtuMaster() {
    modbus_close(ctx_);  // no-op if never connected
    modbus_free(ctx_);
  }
  RtuMaster(const RtuMaster&) = delete;
  RtuMaster& operator=(const RtuMaster&) = delete;

  bool Connect() {
    const bool ok = modbus_connect(ctx_) == 0;
    error = ok ? 0 : errno;
    return ok;
  }
  void SetTimeout(std::chrono::milliseconds t) {
    modbus_set_response_timeout(ctx_, static_cast<uint32_t>(t.count() / 1000),
                                static_cast<uint32_t>(t.count() % 1000 * 1000));
  }
  // Holding registers [addr, addr + n) of `slave`, or nullopt with `error` = errno.
  std::optional<std::vector<uint16_t>> Read(int slave, int addr, int n) {
    std::vector<uint16_t> regs(static_cast<std::size_t>(n));
    modbus_set_slave(ctx_, slave);
    if (modbus_read_registers(ctx_, addr, n, regs.data()) != n) {
      error = errno;
      modbus_flush(ctx_);  // a late answer must not be taken for the next one
      return std::nullopt;
    }
    error = 0;
    return regs;
  }
  bool Write(int slave, int addr, uint16_t value) {
    modbus_set_slave(ctx_, slave);
    const bool ok = modbus_write_register(ctx_, addr, value) == 1;
    error = ok ? 0 : errno;
    return ok;
  }
  std::string ErrorText() const { return std::string(modbus_strerror(error)); }

  int error = 0;

 private:
  modbus_t* ctx_;
};

std::size_t CountOccurrences(const std::string& text, const std::string& needle) {
  std::size_t n = 0;
  for (auto pos = text.find(needle); pos != std::string::npos; pos = text.find(needle, pos + 1)) {
    ++n;
  }
  return n;
}

// Polls a log file until `needle` occurs `count` times.
bool WaitForLog(const std::string& path, const std::string& needle, std::size_t count,
                std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (CountOccurrences(ReadFile(path), needle) < count) {
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(10ms);  // polling with a deadline
  }
  return true;
}

// Starts modbus_sim in RTU mode and waits until it serves the line.
Process StartRtuSim(const TempDir& dir, std::vector<std::string> args) {
  std::vector<std::string> argv{MODBUS_SIM_BIN, "--verbose"};
  argv.insert(argv.end(), args.begin(), args.end());
  Process::Options opts;
  opts.stderr_path = dir.File("sim.log");
  opts.stdout_path = dir.File("sim.out");
  Process sim = Process::Start(argv, opts);
  if (!WaitForLog(opts.stderr_path, "serving slave(s)", 1, 10s)) {
    throw std::runtime_error("modbus_sim did not open its tty:\n" + ReadFile(opts.stderr_path));
  }
  return sim;
}

// The bridge counts a write after it returned, so a reader can be a moment ahead of Stats().
bool WaitForStats(const PtyBridge& bridge, uint64_t a_to_b, uint64_t b_to_a) {
  const auto deadline = Clock::now() + 5s;
  while (bridge.Stats().a_to_b != a_to_b || bridge.Stats().b_to_a != b_to_a) {
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(1ms);  // polling with a deadline
  }
  return true;
}

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

const std::vector<uint16_t> kNone{};

TEST(PtyBridgeTest, MovesBytesBothWaysEightBitClean) {
  PtyBridge bridge;
  ASSERT_FALSE(bridge.path_a().empty());
  ASSERT_NE(bridge.path_a(), bridge.path_b());
  EXPECT_EQ(std::filesystem::read_symlink(bridge.link_a()).string(), bridge.path_a());
  EXPECT_EQ(std::filesystem::read_symlink(bridge.link_b()).string(), bridge.path_b());
  EXPECT_TRUE(bridge.plugged(PtyBridge::Side::A));

  Tty a(bridge.path_a());
  Tty b(bridge.link_b());  // through the stable link
  ASSERT_GE(a.fd(), 0);
  ASSERT_GE(b.fd(), 0);
  ASSERT_TRUE(a.Write("hello from A"));
  EXPECT_EQ(b.Read(12, 5s), "hello from A");
  ASSERT_TRUE(b.Write("and back"));
  EXPECT_EQ(a.Read(8, 5s), "and back");

  // Raw mode: CR/LF, ^C, XON/XOFF, NUL and 0xFF pass unchanged, nothing is echoed.
  std::string all;
  for (int i = 0; i < 256; ++i) all.push_back(static_cast<char>(i));
  ASSERT_TRUE(a.Write(all));
  EXPECT_EQ(b.Read(256, 5s), all);
  EXPECT_EQ(a.Read(1, 50ms), "");  // no echo

  EXPECT_TRUE(WaitForStats(bridge, 12 + 256, 8))
      << bridge.Stats().a_to_b << " " << bridge.Stats().b_to_a;
  EXPECT_EQ(bridge.Stats().dropped_to_a + bridge.Stats().dropped_to_b, 0u);
}

TEST(PtyBridgeTest, PacesBytesAtBaudRate) {
  PtyBridge bridge({.baud = 9600, .bits_per_char = 11, .turnaround = 10ms});
  EXPECT_EQ(bridge.char_time(), std::chrono::nanoseconds(1'145'833));  // 11 bits / 9600 Bd
  Tty a(bridge.path_a());
  Tty b(bridge.path_b());

  const std::string hundred(100, 'x');
  auto start = Clock::now();
  ASSERT_TRUE(a.Write(hundred));
  ASSERT_EQ(b.Read(100, 5s), hundred);
  auto took = Clock::now() - start;
  // 100 characters of 11 bits at 9600 Bd: 114.58 ms on the wire.
  EXPECT_GE(took, std::chrono::microseconds(114'583)) << Ms(took) << " ms";
  EXPECT_LT(took, 1s) << Ms(took) << " ms";

  // B -> A (the slave's answer) adds the turnaround once per burst: 10 ms + 25 x 1.146 ms.
  const std::string reply(25, 'r');
  start = Clock::now();
  ASSERT_TRUE(b.Write(reply));
  ASSERT_EQ(a.Read(25, 5s), reply);
  took = Clock::now() - start;
  EXPECT_GE(took, std::chrono::microseconds(10'000 + 28'646)) << Ms(took) << " ms";
  EXPECT_LT(took, 1s) << Ms(took) << " ms";
  EXPECT_TRUE(WaitForStats(bridge, 100, 25))
      << bridge.Stats().a_to_b << " " << bridge.Stats().b_to_a;
}

TEST(PtyBridgeTest, RtuExchangeWithSimulator) {
  TempDir dir;
  PtyBridge bridge({.baud = 9600, .bits_per_char = 11});
  Process sim = StartRtuSim(dir, {"--rtu", bridge.path_b(), "--slaves", "1-3", "--counter", "hr:4",
                                  "--turnaround-ms", "0"});
  RtuMaster master(bridge.path_a());
  ASSERT_TRUE(master.Connect()) << master.ErrorText();

  for (uint32_t round = 1; round <= 2; ++round) {
    for (int slave = 1; slave <= 3; ++slave) {
      const auto regs = master.Read(slave, 0, 6);
      ASSERT_TRUE(regs.has_value()) << "slave " << slave << ": " << master.ErrorText() << "\n"
                                    << ReadFile(dir.File("sim.log"));
      EXPECT_EQ((*regs)[0], 815) << "slave " << slave;  // fill level default
      EXPECT_EQ((*regs)[1], 261) << "slave " << slave;  // temperature default
      // Every slave has its own counter: its Nth read returns N.
      EXPECT_EQ((static_cast<uint32_t>((*regs)[4]) << 16) | (*regs)[5], round) << "slave " << slave;
    }
  }

  // Independent register maps.
  ASSERT_TRUE(master.Write(2, 10, 1234)) << master.ErrorText();
  EXPECT_EQ(master.Read(2, 10, 1).value_or(kNone), std::vector<uint16_t>{1234});
  EXPECT_EQ(master.Read(1, 10, 1).value_or(kNone), std::vector<uint16_t>{0});

  // The line runs at 9600 8E1: 10 registers = 8 + 25 characters = 37.8 ms at least.
  auto start = Clock::now();
  ASSERT_TRUE(master.Read(3, 0, 10).has_value()) << master.ErrorText();
  auto took = Clock::now() - start;
  EXPECT_GE(took, std::chrono::microseconds(33 * 1'145'833 / 1000)) << Ms(took) << " ms";

  // Nobody has id 4: libmodbus waits the whole response timeout.
  master.SetTimeout(200ms);
  start = Clock::now();
  EXPECT_FALSE(master.Read(4, 0, 1).has_value());
  took = Clock::now() - start;
  EXPECT_EQ(master.error, ETIMEDOUT) << master.ErrorText();
  EXPECT_GE(took, 190ms) << Ms(took) << " ms";
  EXPECT_LT(took, 2s) << Ms(took) << " ms";
  // ... and the line stays in sync for the others.
  EXPECT_EQ(master.Read(1, 0, 1).value_or(kNone), std::vector<uint16_t>{815}) << master.ErrorText();

  // Broadcast (id 0): every slave applies the write and none answers, so libmodbus 3.1.6
  // reports ETIMEDOUT after the response timeout although the write went out.
  EXPECT_FALSE(master.Write(0, 11, 77));
  EXPECT_EQ(master.error, ETIMEDOUT) << master.ErrorText();
  for (int slave = 1; slave <= 3; ++slave) {
    EXPECT_EQ(master.Read(slave, 11, 1).value_or(kNone), std::vector<uint16_t>{77})
        << "slave " << slave;
  }

  const std::string log = ReadFile(dir.File("sim.log"));
  EXPECT_NE(log.find("unit 4 fc 0x03 read_holding_registers addr 0 count 1 (not ours, ignored)"),
            std::string::npos)
      << log;
  EXPECT_TRUE(ExitedWith(sim.Stop(), 0)) << log;
}

TEST(PtyBridgeTest, SimulatorMutesSlavesAndObeysSignals) {
  TempDir dir;
  PtyBridge bridge;
  Process sim = StartRtuSim(dir, {"--rtu", bridge.link_b(), "--slaves", "1-3", "--mute-slaves", "2",
                                  "--turnaround-ms", "0"});
  RtuMaster master(bridge.link_a(), 200ms);
  ASSERT_TRUE(master.Connect()) << master.ErrorText();

  EXPECT_TRUE(master.Read(1, 0, 1).has_value()) << master.ErrorText();
  EXPECT_FALSE(master.Read(2, 0, 1).has_value());  // an unresponsive device on a healthy bus
  EXPECT_EQ(master.error, ETIMEDOUT);
  EXPECT_TRUE(master.Read(3, 0, 1).has_value()) << master.ErrorText();

  sim.Signal(SIGUSR1);
  ASSERT_TRUE(WaitForLog(dir.File("sim.log"), "muted (SIGUSR1)", 1, 5s));
  EXPECT_FALSE(master.Read(1, 0, 1).has_value());
  EXPECT_EQ(master.error, ETIMEDOUT);
  sim.Signal(SIGUSR2);
  ASSERT_TRUE(WaitForLog(dir.File("sim.log"), "unmuted (SIGUSR2)", 1, 5s));
  EXPECT_TRUE(master.Read(1, 0, 1).has_value()) << master.ErrorText();
  EXPECT_TRUE(ExitedWith(sim.Stop(), 0));
}

// The gateway's adapter (side A) is pulled and plugged back; the simulator keeps side B.
TEST(PtyBridgeTest, UnplugAndPlugGatewaySide) {
  TempDir dir;
  PtyBridge bridge;
  Process sim = StartRtuSim(dir, {"--rtu", bridge.link_b(), "--turnaround-ms", "0"});
  RtuMaster before(bridge.link_a(), 300ms);
  ASSERT_TRUE(before.Connect()) << before.ErrorText();
  ASSERT_EQ(before.Read(1, 0, 1).value_or(kNone), std::vector<uint16_t>{815}) << before.ErrorText();

  const std::string old_path = bridge.path_a();
  bridge.Unplug();
  EXPECT_FALSE(bridge.plugged());
  EXPECT_EQ(bridge.path_a(), "");
  EXPECT_FALSE(std::filesystem::exists(std::filesystem::symlink_status(bridge.link_a())));
  EXPECT_FALSE(std::filesystem::exists(old_path));  // /dev/pts/N is gone with its master
  // The open context is hung up: its write fails with EIO.
  EXPECT_FALSE(before.Read(1, 0, 1).has_value());
  EXPECT_EQ(before.error, EIO) << before.ErrorText();
  // Reopening through the link fails while the adapter is out.
  RtuMaster during(bridge.link_a(), 300ms);
  EXPECT_FALSE(during.Connect());
  EXPECT_EQ(during.error, ENOENT) << during.ErrorText();

  bridge.Plug();
  EXPECT_TRUE(bridge.plugged());
  ASSERT_FALSE(bridge.path_a().empty());
  EXPECT_EQ(std::filesystem::read_symlink(bridge.link_a()).string(), bridge.path_a());
  // The old context stays dead, even if the new pty got the old number ...
  EXPECT_FALSE(before.Read(1, 0, 1).has_value());
  // ... and a new one on the same link reads again.
  RtuMaster after(bridge.link_a(), 300ms);
  ASSERT_TRUE(after.Connect()) << after.ErrorText();
  EXPECT_EQ(after.Read(1, 0, 1).value_or(kNone), std::vector<uint16_t>{815}) << after.ErrorText();
  EXPECT_TRUE(sim.Running());
}

// The simulator's adapter (side B) is pulled and plugged back: it reopens its link.
TEST(PtyBridgeTest, SimulatorFollowsReplugOfItsSide) {
  TempDir dir;
  PtyBridge bridge;
  Process sim = StartRtuSim(dir, {"--rtu", bridge.link_b(), "--turnaround-ms", "0"});
  RtuMaster master(bridge.link_a(), 200ms);
  ASSERT_TRUE(master.Connect()) << master.ErrorText();
  ASSERT_TRUE(master.Read(1, 0, 1).has_value()) << master.ErrorText();

  bridge.Unplug(PtyBridge::Side::B);
  ASSERT_TRUE(WaitForLog(dir.File("sim.log"), "lost " + bridge.link_b() + " (hangup)", 1, 5s))
      << ReadFile(dir.File("sim.log"));
  EXPECT_FALSE(master.Read(1, 0, 1).has_value());  // the request falls off the line
  EXPECT_EQ(master.error, ETIMEDOUT);
  EXPECT_GT(bridge.Stats().dropped_to_b, 0u);

  bridge.Plug(PtyBridge::Side::B);
  ASSERT_TRUE(WaitForLog(dir.File("sim.log"), "serving slave(s)", 2, 5s))
      << ReadFile(dir.File("sim.log"));
  EXPECT_EQ(master.Read(1, 0, 1).value_or(kNone), std::vector<uint16_t>{815})
      << master.ErrorText() << "\n"
      << ReadFile(dir.File("sim.log"));
  EXPECT_TRUE(ExitedWith(sim.Stop(), 0));
}

TEST(ModbusSimRtu, RejectsBadOptions) {
  TempDir dir;
  Process::Options quiet;
  quiet.stderr_path = dir.File("err.txt");
  auto run = [&](std::vector<std::string> args) {
    args.insert(args.begin(), MODBUS_SIM_BIN);
    return Process::Run(args, 10s, quiet);
  };
  EXPECT_TRUE(ExitedWith(run({"--rtu", "/dev/null", "--port", "1502"}), 2));
  EXPECT_TRUE(ExitedWith(run({"--slaves", "1-3"}), 2));  // an RTU option without --rtu
  EXPECT_TRUE(ExitedWith(run({"--rtu", "/dev/null", "--slaves", "0-3"}), 2));
  EXPECT_TRUE(ExitedWith(run({"--rtu", "/dev/null", "--slaves", "5-2"}), 2));
  EXPECT_TRUE(ExitedWith(run({"--rtu", "/dev/null", "--slaves", "1,,2"}), 2));
  EXPECT_TRUE(ExitedWith(run({"--rtu", "/dev/null", "--parity", "X"}), 2));
  EXPECT_TRUE(ExitedWith(run({"--rtu", "/dev/null", "--baud", "12345"}), 2));
  // A path that does not exist fails at startup (later failures are retried).
  EXPECT_TRUE(ExitedWith(run({"--rtu", dir.File("no-such-tty")}), 1));
  EXPECT_NE(ReadFile(dir.File("err.txt")).find("cannot open"), std::string::npos)
      << ReadFile(dir.File("err.txt"));
}

}  // namespace
}  // namespace sanigate::test
