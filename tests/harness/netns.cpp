#include "harness/netns.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <set>
#include <thread>

namespace sanigate::test {
namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr auto kCmdTimeout = 15s;
constexpr const char* kMosquittoBinary = "/usr/sbin/mosquitto";

std::atomic<int> g_next_ns{0};

std::string FindTool(const std::string& name) {
  for (const char* dir : {"/usr/sbin/", "/sbin/", "/usr/bin/", "/bin/"}) {
    std::string p = std::string(dir) + name;
    if (::access(p.c_str(), X_OK) == 0) return p;
  }
  return {};
}

std::string Join(const std::vector<std::string>& argv) {
  std::string s;
  for (const auto& a : argv) s += (s.empty() ? "" : " ") + a;
  return s;
}

std::string Trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

// The /30 blocks of 10.231.0.0/16 that some interface of the root namespace already uses
// (another test's namespace, or a leftover of a crashed run): index = (third octet * 64) +
// fourth octet / 4.
std::set<int> UsedBlocks() {
  std::set<int> used;
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) return used;
  for (ifaddrs* a = list; a != nullptr; a = a->ifa_next) {
    if (a->ifa_addr == nullptr || a->ifa_addr->sa_family != AF_INET) continue;
    uint32_t ip = ntohl(reinterpret_cast<sockaddr_in*>(a->ifa_addr)->sin_addr.s_addr);
    if ((ip >> 16) == ((10u << 8) | 231u)) used.insert(static_cast<int>((ip & 0xffff) >> 2));
  }
  ::freeifaddrs(list);
  return used;
}

std::string Mac(int block, int side) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "02:53:47:%02x:%02x:%02x", (block >> 8) & 0xff, block & 0xff,
                side);
  return buf;
}

void WriteTextFile(const std::string& path, const std::string& content) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << content;
  out.close();
  if (!out) throw std::runtime_error("cannot write " + path);
}

bool TryConnect(const std::string& ip, uint16_t port, std::chrono::milliseconds budget) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return false;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  ::inet_pton(AF_INET, ip.c_str(), &addr.sin_addr);
  bool ok = false;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
    ok = true;
  } else if (errno == EINPROGRESS) {
    pollfd p{fd, POLLOUT, 0};
    if (::poll(&p, 1, static_cast<int>(std::max<int64_t>(1, budget.count()))) == 1) {
      int err = 0;
      socklen_t len = sizeof err;
      ok = ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0;
    }
  }
  ::close(fd);
  return ok;
}

}  // namespace

// ---- NetNs ----------------------------------------------------------------------------------

NetNs::NetNs() {
  if (::geteuid() != 0)
    throw NetNsUnavailable(
        "a network namespace needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN); running as uid " +
        std::to_string(::geteuid()));
  ip_bin_ = FindTool("ip");
  tc_bin_ = FindTool("tc");
  if (ip_bin_.empty()) throw NetNsUnavailable("iproute2's `ip` is not installed");

  const int pid = static_cast<int>(::getpid());
  std::string why;
  for (int attempt = 0; attempt < 8 && !ns_created_; ++attempt) {
    int n = g_next_ns++;
    name_ = "sgup-" + std::to_string(pid) + "-" + std::to_string(n);
    host_if_ = "sgh" + std::to_string(pid) + "n" + std::to_string(n);
    if (host_if_.size() > 15)
      host_if_ = "sgh" + std::to_string(pid % 1000000) + "n" + std::to_string(n % 100);
    auto [rc, out] = Cmd({ip_bin_, "netns", "add", name_});
    if (ExitedWith(rc, 0)) {
      ns_created_ = true;
      break;
    }
    why = Trim(out);
    // Only a name clash (a leftover of a crashed run with the same pid) is worth another name.
    if (why.find("exists") == std::string::npos) break;
  }
  if (!ns_created_) throw NetNsUnavailable("`ip netns add " + name_ + "` failed: " + why);

  try {
    Configure(pid);
  } catch (...) {
    Destroy();  // only what this constructor created
    throw;
  }
}

void NetNs::Configure(int pid) {
  // A free /30, starting from a place that depends on the pid so parallel tests rarely collide.
  std::set<int> used = UsedBlocks();
  int block = -1;
  for (int i = 0; i < 16384; ++i) {
    int candidate = (pid * 37 + g_next_ns * 7 + i) % 16384;
    if (!used.count(candidate)) {
      block = candidate;
      break;
    }
  }
  if (block < 0) throw NetNsUnavailable("no free /30 left in 10.231.0.0/16");
  const std::string net = "10.231." + std::to_string(block / 64) + ".";
  host_ip_ = net + std::to_string((block % 64) * 4 + 1);
  ns_ip_ = net + std::to_string((block % 64) * 4 + 2);
  host_mac_ = Mac(block, 1);
  ns_mac_ = Mac(block, 2);

  if (::if_nametoindex(host_if_.c_str()) != 0)
    throw NetNsUnavailable("an interface named " + host_if_ + " already exists");
  const std::vector<std::vector<std::string>> steps = {
      // The peer is created inside the namespace at once, so its name never meets the root's.
      {ip_bin_, "link", "add", host_if_, "address", host_mac_, "type", "veth", "peer", "name",
       ns_if_, "address", ns_mac_, "netns", name_},
      {ip_bin_, "addr", "add", host_ip_ + "/30", "dev", host_if_},
      {ip_bin_, "-n", name_, "addr", "add", ns_ip_ + "/30", "dev", ns_if_},
      {ip_bin_, "link", "set", host_if_, "up"},
      {ip_bin_, "-n", name_, "link", "set", ns_if_, "up"},
      {ip_bin_, "-n", name_, "link", "set", "lo", "up"},
  };
  for (const auto& argv : steps) {
    auto [rc, out] = Cmd(argv);
    // From the first step on, the veth exists exactly when its host end does.
    veth_created_ = ::if_nametoindex(host_if_.c_str()) != 0;
    if (!ExitedWith(rc, 0)) throw NetNsUnavailable("`" + Join(argv) + "` failed: " + Trim(out));
  }
  try {
    SetNeighbours();
  } catch (const std::runtime_error& e) {
    throw NetNsUnavailable(e.what());
  }
}

NetNs::~NetNs() { Destroy(); }

void NetNs::Destroy() noexcept {
  try {
    // Deleting one end of a veth deletes both; the namespace goes once its last process exits.
    if (veth_created_) {
      auto [rc, out] = Cmd({ip_bin_, "link", "del", host_if_});
      if (!ExitedWith(rc, 0) && ::if_nametoindex(host_if_.c_str()) != 0)
        std::cerr << "[sanigate-test] could not delete veth " << host_if_ << ": " << out << '\n';
      veth_created_ = false;
    }
    if (ns_created_) {
      auto [rc, out] = Cmd({ip_bin_, "netns", "del", name_});
      if (!ExitedWith(rc, 0))
        std::cerr << "[sanigate-test] could not delete namespace " << name_ << ": " << out << '\n';
      ns_created_ = false;
    }
  } catch (const std::exception& e) {
    std::cerr << "[sanigate-test] NetNs cleanup of " << name_ << ": " << e.what() << '\n';
  }
}

std::pair<int, std::string> NetNs::Cmd(std::vector<std::string> argv) const {
  Process::Options o;
  o.stdout_path = dir_.File("cmd.out");
  o.stderr_path = o.stdout_path;
  int rc = Process::Run(std::move(argv), kCmdTimeout, o);
  return {rc, ReadFile(o.stdout_path)};
}

void NetNs::CmdOrThrow(std::vector<std::string> argv) const {
  std::string cmd = Join(argv);
  auto [rc, out] = Cmd(std::move(argv));
  if (!ExitedWith(rc, 0))
    throw std::runtime_error("NetNs: `" + cmd + "` " + DescribeWaitStatus(rc) + ": " + Trim(out));
}

// Static neighbours on both ends: during a partition ARP would fail after a few seconds and the
// kernel would then answer a pending connect with "no route to host" instead of silence.
// Taking a link down flushes its neighbours, so Heal() sets them again.
void NetNs::SetNeighbours() const {
  CmdOrThrow({ip_bin_, "neigh", "replace", ns_ip_, "lladdr", ns_mac_, "dev", host_if_, "nud",
              "permanent"});
  CmdOrThrow({ip_bin_, "-n", name_, "neigh", "replace", host_ip_, "lladdr", host_mac_, "dev",
              ns_if_, "nud", "permanent"});
}

Process NetNs::Start(std::vector<std::string> argv, Process::Options options) const {
  std::vector<std::string> full = {ip_bin_, "netns", "exec", name_};
  full.insert(full.end(), argv.begin(), argv.end());
  return Process::Start(std::move(full), std::move(options));
}

int NetNs::Run(std::vector<std::string> argv, std::chrono::milliseconds timeout,
               Process::Options options) const {
  std::vector<std::string> full = {ip_bin_, "netns", "exec", name_};
  full.insert(full.end(), argv.begin(), argv.end());
  return Process::Run(std::move(full), timeout, std::move(options));
}

void NetNs::PartitionSilently() {
  if (partitioned_) return;
  CmdOrThrow({ip_bin_, "-n", name_, "link", "set", ns_if_, "down"});
  partitioned_ = true;
}

void NetNs::Heal() {
  if (!partitioned_) return;
  CmdOrThrow({ip_bin_, "-n", name_, "link", "set", ns_if_, "up"});
  SetNeighbours();
  partitioned_ = false;
}

void NetNs::LimitBandwidth(int kbit, int burst_bytes, std::chrono::milliseconds latency) {
  if (tc_bin_.empty()) throw std::runtime_error("NetNs::LimitBandwidth: `tc` is not installed");
  CmdOrThrow({tc_bin_, "qdisc", "replace", "dev", host_if_, "root", "tbf", "rate",
              std::to_string(kbit) + "kbit", "burst", std::to_string(burst_bytes), "latency",
              std::to_string(latency.count()) + "ms"});
  limit_kbit_ = kbit;
  limit_burst_bytes_ = burst_bytes;
}

void NetNs::ClearLimits() {
  if (limit_kbit_ == 0) return;
  CmdOrThrow({tc_bin_, "qdisc", "del", "dev", host_if_, "root"});
  limit_kbit_ = limit_burst_bytes_ = 0;
}

bool NetNs::WaitForTcp(uint16_t port, std::chrono::milliseconds timeout) const {
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (TryConnect(ns_ip_, port, std::clamp(left, 1ms, 500ms))) return true;
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(20ms);
  }
}

// ---- NetNsMosquitto -------------------------------------------------------------------------

NetNsMosquitto::NetNsMosquitto(const NetNs& ns) : NetNsMosquitto(ns, Options{}) {}

NetNsMosquitto::NetNsMosquitto(const NetNs& ns, Options options)
    : ns_(ns), options_(std::move(options)) {
  std::string c;
  c += "# Generated by sanigate::test::NetNsMosquitto (inside namespace " + ns_.name() + ")\n";
  c += "per_listener_settings false\nallow_anonymous true\n";
  // As root, mosquitto would otherwise drop to the 'mosquitto' user and lose access to our dir.
  if (::geteuid() == 0) c += "user root\n";
  c += "max_queued_messages 100000\nset_tcp_nodelay true\n";
  if (options_.persistence)
    c += "persistence true\npersistence_location " + dir() + "/\nautosave_interval 1\n";
  else
    c += "persistence false\n";
  c += "log_dest file " + dir_.File("mosquitto.log") + "\n";
  c += "log_type error\nlog_type warning\nlog_type notice\nlog_type information\n";
  if (options_.log_publishes) c += "log_type debug\n";
  c += "log_timestamp_format %Y-%m-%dT%H:%M:%S\n";
  c += "listener " + std::to_string(options_.port) + " " + ns_.ns_ip() + "\n";
  c += options_.extra_config + "\n";
  WriteTextFile(dir_.File("mosquitto.conf"), c);
}

NetNsMosquitto::~NetNsMosquitto() {
  try {
    Stop();
  } catch (...) {
    // Process's destructor still SIGKILLs and reaps it.
  }
}

std::string NetNsMosquitto::url() const {
  return "tcp://" + ns_.ns_ip() + ":" + std::to_string(options_.port);
}
std::string NetNsMosquitto::log() const { return ReadFile(dir_.File("mosquitto.log")); }
bool NetNsMosquitto::Running() { return process_.Running(); }

size_t NetNsMosquitto::ReceivedPublishes(const std::string& client_id,
                                         const std::string& topic) const {
  // Mosquitto 2 logs "Received PUBLISH from CLIENT (d0, q1, r0, m12, 'TOPIC', ... (N bytes))".
  const std::string head = "Received PUBLISH from " + client_id + " (";
  const std::string tail = ", '" + topic + "', ";
  std::string l = log();
  size_t n = 0;
  for (size_t pos = l.find(head); pos != std::string::npos; pos = l.find(head, pos + 1)) {
    size_t eol = l.find('\n', pos);
    if (l.substr(pos, eol == std::string::npos ? std::string::npos : eol - pos).find(tail) !=
        std::string::npos)
      n++;
  }
  return n;
}

void NetNsMosquitto::Start() {
  if (process_.Running()) throw std::logic_error("NetNsMosquitto::Start: already running");
  const size_t log_offset = log().size();
  auto diagnostics = [&] {
    std::string l = log();
    return " [dir " + dir() + "]\n--- stderr ---\n" + ReadFile(dir_.File("mosquitto.stderr")) +
           "\n--- log ---\n" + (l.size() > log_offset ? l.substr(log_offset) : std::string());
  };
  Process::Options o;
  o.stdout_path = dir_.File("mosquitto.stdout");
  o.stderr_path = dir_.File("mosquitto.stderr");
  o.cwd = dir();
  const auto deadline = Clock::now() + 10s;
  // A restart may find the old listening socket still closing for a moment: retry the bind.
  for (;;) {
    process_ = ns_.Start({kMosquittoBinary, "-c", dir_.File("mosquitto.conf")}, o);
    bool running = false;
    while (Clock::now() < deadline && process_.Running()) {
      std::string l = log();
      if (l.size() > log_offset && l.find(" running", log_offset) != std::string::npos) {
        running = true;
        break;
      }
      std::this_thread::sleep_for(10ms);
    }
    if (running) break;
    bool in_use = log().find("Address already in use", log_offset) != std::string::npos;
    if (process_.Running()) process_.Kill();
    if (!in_use || Clock::now() >= deadline)
      throw std::runtime_error("NetNsMosquitto: mosquitto did not start" + diagnostics());
    std::this_thread::sleep_for(100ms);
  }
  if (!ns_.partitioned()) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (!ns_.WaitForTcp(options_.port, std::max(left, 1000ms)))
      throw std::runtime_error("NetNsMosquitto: " + url() + " does not accept connections" +
                               diagnostics());
  }
}

void NetNsMosquitto::Stop() {
  if (process_.Running()) process_.Stop(5s);
}

void NetNsMosquitto::Kill() { process_.Kill(); }

void NetNsMosquitto::Restart() {
  Stop();
  Start();
}

}  // namespace sanigate::test
