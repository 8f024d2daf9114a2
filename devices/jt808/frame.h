// JT/T 808 framing: 0x7E delimiters, 7D escaping, XOR check, and the 2013/2019 message header.
// Pure code, no I/O: bytes in, frames or a precise error out. FrameSplitter is per connection
// (not thread-safe); the free functions are stateless.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "core/status.h"

namespace sanigate::dev::jt808 {

using Bytes = std::vector<uint8_t>;

struct Header {
  uint16_t msg_id = 0;
  bool v2019 = false;          // attribute bit 14: 2019 header (protocol version + BCD[10] phone)
  uint8_t proto_version = 1;   // 2019 only
  Bytes phone_bcd;             // as sent (6 or 10 bytes): replies echo the same encoding
  std::string phone;           // digits without the leading zeros of the padding
  uint16_t serial = 0;
  bool subpackage = false;
  uint16_t packet_total = 0;   // when subpackage
  uint16_t packet_index = 0;   // 1-based, when subpackage
  uint8_t encryption = 0;      // attribute bits 10..12; 0 = none
};

struct Frame {
  Header header;
  Bytes body;
};

// Splits a TCP byte stream on 0x7E. Accepts both "7E..7E7E..7E" and frames that share one
// delimiter. Bytes before the first delimiter are garbage. A frame (or garbage run) longer than
// `max_bytes` is reported as oversize: the caller closes the connection, since a peer that sends
// that much without a delimiter is not speaking JT/T 808.
class FrameSplitter {
 public:
  explicit FrameSplitter(size_t max_bytes = 4096) : max_bytes_(max_bytes) {}

  enum class Kind { kFrame, kOversize };
  struct Chunk {
    Kind kind = Kind::kFrame;
    Bytes escaped;  // content between the delimiters, still escaped
  };

  // Appends bytes; complete chunks become available through Next().
  void Feed(std::span<const uint8_t> data);
  bool Next(Chunk& out);
  uint64_t garbage_bytes() const { return garbage_bytes_; }

 private:
  size_t max_bytes_;
  bool inside_ = false;
  bool oversize_reported_ = false;
  Bytes current_;
  std::vector<Chunk> ready_;
  size_t ready_pos_ = 0;
  uint64_t garbage_bytes_ = 0;
  size_t garbage_run_ = 0;
};

// 7D 02 -> 7E, 7D 01 -> 7D. A 7D followed by anything else is an error.
Result<Bytes> Unescape(std::span<const uint8_t> escaped);
// Escapes content and wraps it in 7E delimiters.
Bytes EscapeAndWrap(std::span<const uint8_t> content);
uint8_t XorCheck(std::span<const uint8_t> data);

// Unescapes, verifies the check code and parses header and body.
Result<Frame> DecodeFrame(std::span<const uint8_t> escaped);
// Builds a complete frame (delimiters included). The body must fit in one packet (<= 1023 B);
// the header's subpackage fields are written when header.subpackage is set.
Bytes EncodeFrame(const Header& header, std::span<const uint8_t> body);

// BCD helpers. DigitsFromBcd fails on a nibble above 9.
Result<std::string> DigitsFromBcd(std::span<const uint8_t> bcd);
Bytes BcdFromDigits(const std::string& digits, size_t bytes);  // left-pads with zeros
// "013912345678" -> "13912345678": how terminals are named in config and logs.
std::string NormalizePhone(const std::string& digits);

}  // namespace sanigate::dev::jt808
