// A JT/T 808 terminal for tests and the simulator: a blocking TCP client (POSIX sockets with
// poll deadlines) that speaks register/authenticate/report through the project's codec, whose
// frames are checked against the protocol dossier's vectors. One thread per terminal object.
#pragma once

#include <atomic>
#include <chrono>
#include <deque>
#include <map>
#include <optional>
#include <string>

#include "core/status.h"
#include "jt808/frame.h"
#include "jt808/messages.h"

namespace sanigate::test {

using dev::jt808::Bytes;
using dev::jt808::Frame;
using dev::jt808::Location;

// How the terminal behaves when the platform sends it firmware (0x8108).
struct UpgradeBehavior {
  std::string new_version;     // what 0x0107 reports after a successful install; "" = keeps the old
  uint8_t result = 0;          // the 0x0108 result: 0 success, 1 failed, 2 cancelled
  bool reboot = true;          // after a successful install: close, reconnect, authenticate again
  bool report_after_reconnect = false;  // send 0x0108 on the new connection (the standard's order)
  bool report = true;          // false: never sends 0x0108 (a terminal that never answers)
  int ack_packets = -1;        // answer only packets 1..k, then stay silent (-1: all)
  int close_after_packets = -1;  // close the connection after acknowledging packet k (-1: never)
};

// What the terminal saw and did while serving (for assertions).
struct UpgradeLog {
  int frames = 0;                              // 0x8108 frames received, resends included
  std::map<uint16_t, int> received_per_index;  // packet index -> times received
  std::vector<uint16_t> serials;               // header serial of every 0x8108 frame, in order
  uint16_t packet_total = 0;
  std::optional<dev::jt808::UpgradePackage> package;  // the reassembled body, parsed
  bool result_sent = false, result_acked = false;     // 0x0108, and the platform's 0x8001 to it
  int reboots = 0;
  int attribute_queries = 0;                   // 0x8107 answered
  std::string error;                           // why serving stopped early ("" = stop or timeout)
};

class Jt808Terminal {
 public:
  Jt808Terminal(std::string phone, bool v2019 = false) : phone_(std::move(phone)), v2019_(v2019) {}
  ~Jt808Terminal() { Close(); }
  Jt808Terminal(const Jt808Terminal&) = delete;
  Jt808Terminal& operator=(const Jt808Terminal&) = delete;

  // Connects to host:port, binding to `source_ip` when given (to spread load over 127.0.0.x).
  Status Connect(uint16_t port, const std::string& source_ip = "", const std::string& host = "127.0.0.1");
  void Close();
  bool connected() const { return fd_ >= 0; }
  // True once the server closed the connection (reads see EOF) within `timeout`.
  bool WaitClosedByPeer(std::chrono::milliseconds timeout);

  uint16_t Send(uint16_t msg_id, const Bytes& body);
  // Splits one message into `packets` subpackages (serials consecutive); returns the last serial.
  uint16_t SendSubpackaged(uint16_t msg_id, const Bytes& body, int packets);
  Status SendRaw(const Bytes& bytes);

  // Next platform message of the given id (others are kept for later), or nullopt on timeout.
  std::optional<Frame> WaitFor(uint16_t msg_id, std::chrono::milliseconds timeout);
  // Result of the 0x8001 answering our message `serial`, or nullopt on timeout.
  std::optional<uint8_t> WaitAck(uint16_t serial, std::chrono::milliseconds timeout);

  // Register (0x0100) and return the auth code, or the 0x8100 result as an error.
  Result<std::string> Register(std::chrono::milliseconds timeout = std::chrono::seconds(5));
  // Authenticate (0x0102); ok when the platform answers 0x8001 result 0.
  Status Authenticate(const std::string& code, std::chrono::milliseconds timeout = std::chrono::seconds(5));
  // Sends a 0x0200 and waits for its ack; returns the ack result.
  std::optional<uint8_t> Report(const Location& loc, std::chrono::milliseconds timeout = std::chrono::seconds(5));

  const std::string& phone() const { return phone_; }
  bool v2019() const { return v2019_; }

  // The firmware version 0x0107 reports (and the 2019 0x0102 sends as software version).
  void set_firmware_version(std::string v) { firmware_ = std::move(v); }
  const std::string& firmware_version() const { return firmware_; }
  // Answers the platform until `stop` is set, `timeout` passes or the connection is lost: 0x8108
  // packets (reassembled, each acknowledged with 0x0001), then 0x0108 and the reboot `b` asks
  // for; 0x8107 with 0x0107 at any time. Needs a prior Connect and Register (for the reboot).
  UpgradeLog ServeUpgrade(const UpgradeBehavior& b, const std::atomic<bool>& stop,
                          std::chrono::milliseconds timeout = std::chrono::seconds(60));

 private:
  // Reads whatever is available into inbox_ until `deadline`; false on timeout or EOF.
  bool Pump(std::chrono::steady_clock::time_point deadline);

  std::string phone_;
  bool v2019_;
  std::string firmware_ = "SIM-1.2.0";
  std::string auth_code_;  // from Register/Authenticate, for reconnecting after a reboot
  uint16_t port_ = 0;
  std::string source_ip_, host_;
  int fd_ = -1;
  bool peer_closed_ = false;
  uint16_t serial_ = 0;
  dev::jt808::FrameSplitter splitter_{1 << 16};
  std::deque<Frame> inbox_;
};

// A location at `ts_ms` near Xiamen's Huli district, moving east with `i`.
Location SampleLocation(int64_t ts_ms, int i = 0, uint32_t alarm = 0);

}  // namespace sanigate::test
