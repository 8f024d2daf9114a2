// A network namespace owned by one test, joined to the root namespace by a veth pair in a private
// /30 (10.231.X.Y+1 on the host side, 10.231.X.Y+2 inside), for faults that loopback cannot
// show: silent partitions (packets vanish, nothing closes the connection) and a bandwidth cap
// (tc tbf). NetNsMosquitto runs a real Mosquitto inside it, listening on the inside address.
// Ownership: NetNs owns the namespace and the veth pair it created, and deletes exactly those
// (by name) on destruction. Processes started with Start() belong to the caller: stop them
// before the NetNs goes (the kernel frees the namespace when its last process exits).
// Thread-safety: none; drive one NetNs from one test thread. Not copyable or movable.
// Needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) and iproute2; the constructor throws
// NetNsUnavailable otherwise, and tests GTEST_SKIP with its message.
#pragma once

#include <chrono>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "harness/process.h"
#include "harness/temp_dir.h"

namespace sanigate::test {

// The environment cannot give the test a namespace (not root, no `ip`, `ip netns add` or the
// veth set-up refused): skip, do not fail. what() says which step and why.
class NetNsUnavailable : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class NetNs {
 public:
  NetNs();  // throws NetNsUnavailable
  ~NetNs();
  NetNs(const NetNs&) = delete;
  NetNs& operator=(const NetNs&) = delete;

  const std::string& name() const { return name_; }        // sgup-<pid>-<n>
  const std::string& host_ip() const { return host_ip_; }  // root namespace side, 10.231.X.Y+1
  const std::string& ns_ip() const { return ns_ip_; }      // inside, 10.231.X.Y+2
  const std::string& host_if() const { return host_if_; }  // veth in the root namespace
  const std::string& ns_if() const { return ns_if_; }      // its peer inside ("city0")

  // Starts argv inside the namespace with `ip netns exec`, which execs the program itself:
  // the PID (and so Signal/Stop/Kill) is the program's.
  Process Start(std::vector<std::string> argv, Process::Options options = {}) const;
  // Runs argv inside the namespace and waits; raw wait status (Process::Run semantics).
  int Run(std::vector<std::string> argv, std::chrono::milliseconds timeout,
          Process::Options options = {}) const;

  // A silent partition: every packet between the namespaces is dropped and nothing tells either
  // end, as when a 4G link stalls. Established connections stay open (until a keep-alive gives
  // up), new connects time out. The inside end of the veth is taken down, so the host end loses
  // its carrier and drops what is sent to it while its route stays in place. (Taking the host
  // end itself down would delete that route, and the traffic would follow the default route out
  // of the machine instead of vanishing.) Neighbour entries are static, so no ARP failure turns
  // the silence into "host unreachable" errors.
  void PartitionSilently();
  // Ends the partition; connections resume with TCP's next retransmission.
  void Heal();
  bool partitioned() const { return partitioned_; }

  // Caps what the root namespace sends into the namespace (the box's uplink) with a token bucket
  // filter on the host end: `kbit` kbit/s, a bucket of `burst_bytes`, packets queued at most
  // `latency` before they are dropped. Replaces an earlier limit. Throws std::runtime_error if
  // tc refuses (e.g. no sch_tbf).
  void LimitBandwidth(int kbit, int burst_bytes = 4096,
                      std::chrono::milliseconds latency = std::chrono::milliseconds(400));
  void ClearLimits();
  int limit_kbit() const { return limit_kbit_; }
  int limit_burst_bytes() const { return limit_burst_bytes_; }

  // Connects from the root namespace to ns_ip():port until a listener accepts or the timeout
  // expires.
  bool WaitForTcp(uint16_t port, std::chrono::milliseconds timeout) const;

 private:
  // Runs an iproute2/tc command in the root namespace; returns {wait status, stdout+stderr}.
  std::pair<int, std::string> Cmd(std::vector<std::string> argv) const;
  void CmdOrThrow(std::vector<std::string> argv) const;
  void Configure(int pid);  // addresses, veth pair, links up; throws NetNsUnavailable
  void SetNeighbours() const;
  void Destroy() noexcept;

  TempDir dir_;  // command output
  std::string ip_bin_, tc_bin_;
  std::string name_, host_if_, ns_if_ = "city0";
  std::string host_ip_, ns_ip_, host_mac_, ns_mac_;
  bool ns_created_ = false, veth_created_ = false;
  bool partitioned_ = false;
  int limit_kbit_ = 0, limit_burst_bytes_ = 0;
};

// A real /usr/sbin/mosquitto inside a NetNs, listening on ns_ip():port only, persistence in its
// own TempDir (kept across Stop/Restart), anonymous access. Stop is SIGTERM (the database is
// written), Kill is SIGKILL.
// Ownership: owns its process and dir; the destructor stops it. Must be destroyed before its
// NetNs. Thread-safety: none.
class NetNsMosquitto {
 public:
  struct Options {
    uint16_t port = 1883;  // the namespace is the test's own: the port is always free
    bool persistence = true;
    std::string extra_config{};  // appended to the generated mosquitto.conf
    // Logs at debug level too, so ReceivedPublishes() can count what each client sent.
    bool log_publishes = false;
  };
  explicit NetNsMosquitto(const NetNs& ns);
  NetNsMosquitto(const NetNs& ns, Options options);
  ~NetNsMosquitto();
  NetNsMosquitto(const NetNsMosquitto&) = delete;
  NetNsMosquitto& operator=(const NetNsMosquitto&) = delete;

  // Starts mosquitto and waits up to 10 s until it logs "running" and, unless the namespace is
  // partitioned, accepts a TCP connection from the root namespace. Throws with the log if not.
  void Start();
  void Stop();     // SIGTERM, 5 s, SIGKILL
  void Kill();     // SIGKILL
  void Restart();  // Stop (if running) and Start, same address, same store
  bool Running();

  uint16_t port() const { return options_.port; }
  std::string url() const;  // tcp://ns_ip:port
  std::string log() const;
  std::string dir() const { return dir_.path().string(); }
  // PUBLISH packets the broker received from `client_id` on `topic`, over all its runs,
  // resends included (needs Options::log_publishes).
  size_t ReceivedPublishes(const std::string& client_id, const std::string& topic) const;

 private:
  const NetNs& ns_;
  Options options_;
  TempDir dir_;
  Process process_;
};

}  // namespace sanigate::test
