// A JT/T 808 terminal for tests and the simulator: a blocking TCP client (POSIX sockets with
// poll deadlines) that speaks register/authenticate/report through the project's codec, whose
// frames are checked against the protocol dossier's vectors. One thread per terminal object.
#pragma once

#include <chrono>
#include <deque>
#include <optional>
#include <string>

#include "core/status.h"
#include "jt808/frame.h"
#include "jt808/messages.h"

namespace sanigate::test {

using dev::jt808::Bytes;
using dev::jt808::Frame;
using dev::jt808::Location;

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

 private:
  // Reads whatever is available into inbox_ until `deadline`; false on timeout or EOF.
  bool Pump(std::chrono::steady_clock::time_point deadline);

  std::string phone_;
  bool v2019_;
  int fd_ = -1;
  bool peer_closed_ = false;
  uint16_t serial_ = 0;
  dev::jt808::FrameSplitter splitter_{1 << 16};
  std::deque<Frame> inbox_;
};

// A location at `ts_ms` near Xiamen's Huli district, moving east with `i`.
Location SampleLocation(int64_t ts_ms, int i = 0, uint32_t alarm = 0);

}  // namespace sanigate::test
