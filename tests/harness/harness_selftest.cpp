// Self-test of the integration-test harness against the real tools (mosquitto, openssl, sh).
// Each test owns its broker/processes/dirs; nothing is shared between tests.
// Runs single-threaded except for Paho's internal callback threads.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "harness/broker.h"
#include "harness/mqtt_capture.h"
#include "harness/ports.h"
#include "harness/process.h"
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

}  // namespace
}  // namespace sanigate::test
