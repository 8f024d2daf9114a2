// JT/T 808 framing: a TCP byte stream through FrameSplitter (whole and in two chunks: the same
// frames either way), each frame through DecodeFrame, a decoded frame re-encoded and decoded again
// (same header and body), Unescape against EscapeAndWrap, and the body of a decoded frame through
// the parser its message id selects, as the adapter does.
#include <cstdint>
#include <vector>

#include "fuzz_common.h"
#include "jt808/frame.h"
#include "jt808/messages.h"

using namespace sanigate::dev::jt808;

namespace {

std::vector<FrameSplitter::Chunk> Split(std::span<const uint8_t> stream, size_t cut, size_t max_bytes) {
  FrameSplitter s(max_bytes);
  std::vector<FrameSplitter::Chunk> out;
  FrameSplitter::Chunk c;
  s.Feed(stream.first(cut));
  while (s.Next(c)) out.push_back(c);
  s.Feed(stream.subspan(cut));
  while (s.Next(c)) out.push_back(c);
  return out;
}

void SameHeader(const Header& a, const Header& b) {
  FUZZ_CHECK(a.msg_id == b.msg_id, "msg_id");
  FUZZ_CHECK(a.v2019 == b.v2019, "v2019");
  if (a.v2019) FUZZ_CHECK(a.proto_version == b.proto_version, "proto_version");
  FUZZ_CHECK(a.phone_bcd == b.phone_bcd, "phone_bcd");
  FUZZ_CHECK(a.phone == b.phone, "phone");
  FUZZ_CHECK(a.serial == b.serial, "serial");
  FUZZ_CHECK(a.subpackage == b.subpackage, "subpackage");
  if (a.subpackage) {
    FUZZ_CHECK(a.packet_total == b.packet_total, "packet_total");
    FUZZ_CHECK(a.packet_index == b.packet_index, "packet_index");
  }
  FUZZ_CHECK(a.encryption == b.encryption, "encryption");
}

void ParseBody(const Frame& f) {
  const auto& body = f.body;
  const bool v19 = f.header.v2019;
  switch (f.header.msg_id) {
    case msg::kLocation: (void)ParseLocation(body); break;
    case msg::kBatchLocation: (void)ParseBatchLocation(body); break;
    case msg::kPositionReply: (void)ParsePositionReply(body); break;
    case msg::kRegister: (void)ParseRegistration(body, v19); break;
    case msg::kAuthenticate: (void)ParseAuthentication(body, v19); break;
    case msg::kTerminalResponse: (void)ParseTerminalResponse(body); break;
    case msg::kUpgradeResult: (void)ParseUpgradeResult(body); break;
    case msg::kTerminalAttributes: (void)ParseTerminalAttributes(body, v19); break;
    case msg::kUpgradePackage: (void)ParseUpgradePackage(body, v19); break;
    default: break;
  }
}

void OneFrame(std::span<const uint8_t> escaped) {
  auto content = Unescape(escaped);
  if (content.ok()) {
    Bytes wrapped = EscapeAndWrap(content.value());
    FUZZ_CHECK(wrapped.size() >= 2 && wrapped.front() == 0x7E && wrapped.back() == 0x7E, "EscapeAndWrap delimiters");
    auto again = Unescape(std::span<const uint8_t>(wrapped).subspan(1, wrapped.size() - 2));
    FUZZ_CHECK(again.ok() && again.value() == content.value(), "Unescape(EscapeAndWrap(x)) != x");
  }
  auto frame = DecodeFrame(escaped);
  if (!frame.ok()) return;
  FUZZ_CHECK(content.ok(), "DecodeFrame accepted what Unescape refused");
  const Frame& f = frame.value();
  FUZZ_CHECK(f.body.size() <= 0x3FF, "body longer than the 10-bit length field");
  ParseBody(f);
  Bytes wire = EncodeFrame(f.header, f.body);
  FUZZ_CHECK(wire.size() >= 2, "EncodeFrame output too short");
  auto re = DecodeFrame(std::span<const uint8_t>(wire).subspan(1, wire.size() - 2));
  FUZZ_CHECK(re.ok(), "DecodeFrame(EncodeFrame(f)) failed: " + re.status().message());
  SameHeader(f.header, re.value().header);
  FUZZ_CHECK(f.body == re.value().body, "body changed in the round trip");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::span<const uint8_t> stream(data, size);
  // The stream as one read and as two reads cut at a point the input chooses.
  size_t cut = size == 0 ? 0 : data[0] % (size + 1);
  for (size_t max_bytes : {size_t{4096}, size_t{32}}) {
    auto whole = Split(stream, 0, max_bytes);
    auto parts = Split(stream, cut, max_bytes);
    FUZZ_CHECK(whole.size() == parts.size(), "chunking changed the number of frames");
    for (size_t i = 0; i < whole.size(); ++i) {
      FUZZ_CHECK(whole[i].kind == parts[i].kind && whole[i].escaped == parts[i].escaped,
                 "chunking changed frame " + std::to_string(i));
      FUZZ_CHECK(whole[i].kind != FrameSplitter::Kind::kFrame || whole[i].escaped.size() <= max_bytes,
                 "a frame longer than max_bytes was handed out");
      if (max_bytes == 4096 && whole[i].kind == FrameSplitter::Kind::kFrame) OneFrame(whole[i].escaped);
    }
  }
  // The input as the content between two delimiters.
  OneFrame(stream);
  return 0;
}
