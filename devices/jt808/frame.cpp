#include "jt808/frame.h"

#include <cstdio>

namespace sanigate::dev::jt808 {

void FrameSplitter::Feed(std::span<const uint8_t> data) {
  if (ready_pos_ == ready_.size()) {
    ready_.clear();
    ready_pos_ = 0;
  }
  for (uint8_t b : data) {
    if (b == 0x7E) {
      if (!inside_) {
        inside_ = true;
        garbage_run_ = 0;
      } else if (!current_.empty()) {
        if (!oversize_reported_) ready_.push_back({Kind::kFrame, std::move(current_)});
        current_.clear();
        oversize_reported_ = false;
        // Stay inside: the closing delimiter may also open the next frame.
      }
      continue;
    }
    if (!inside_) {
      garbage_bytes_++;
      if (++garbage_run_ > max_bytes_ && !oversize_reported_) {
        ready_.push_back({Kind::kOversize, {}});
        oversize_reported_ = true;
      }
      continue;
    }
    if (oversize_reported_) continue;
    current_.push_back(b);
    if (current_.size() > max_bytes_) {
      ready_.push_back({Kind::kOversize, {}});
      oversize_reported_ = true;
      current_.clear();
    }
  }
}

bool FrameSplitter::Next(Chunk& out) {
  if (ready_pos_ >= ready_.size()) return false;
  out = std::move(ready_[ready_pos_++]);
  return true;
}

Result<Bytes> Unescape(std::span<const uint8_t> escaped) {
  Bytes out;
  out.reserve(escaped.size());
  for (size_t i = 0; i < escaped.size(); ++i) {
    uint8_t b = escaped[i];
    if (b != 0x7D) {
      out.push_back(b);
      continue;
    }
    if (i + 1 >= escaped.size()) return Invalid("frame ends inside an escape (7D)");
    uint8_t n = escaped[++i];
    if (n == 0x02) {
      out.push_back(0x7E);
    } else if (n == 0x01) {
      out.push_back(0x7D);
    } else {
      char buf[64];
      std::snprintf(buf, sizeof buf, "bad escape 7D %02X at byte %zu", n, i - 1);
      return Invalid(buf);
    }
  }
  return out;
}

Bytes EscapeAndWrap(std::span<const uint8_t> content) {
  Bytes out;
  out.reserve(content.size() + 8);
  out.push_back(0x7E);
  for (uint8_t b : content) {
    if (b == 0x7E) {
      out.push_back(0x7D);
      out.push_back(0x02);
    } else if (b == 0x7D) {
      out.push_back(0x7D);
      out.push_back(0x01);
    } else {
      out.push_back(b);
    }
  }
  out.push_back(0x7E);
  return out;
}

uint8_t XorCheck(std::span<const uint8_t> data) {
  uint8_t x = 0;
  for (uint8_t b : data) x ^= b;
  return x;
}

Result<std::string> DigitsFromBcd(std::span<const uint8_t> bcd) {
  std::string s;
  s.reserve(bcd.size() * 2);
  for (uint8_t b : bcd) {
    uint8_t hi = b >> 4, lo = b & 0x0F;
    if (hi > 9 || lo > 9) {
      char buf[48];
      std::snprintf(buf, sizeof buf, "BCD byte %02X is not two decimal digits", b);
      return Invalid(buf);
    }
    s.push_back(static_cast<char>('0' + hi));
    s.push_back(static_cast<char>('0' + lo));
  }
  return s;
}

Bytes BcdFromDigits(const std::string& digits, size_t bytes) {
  std::string padded = digits;
  if (padded.size() < bytes * 2) padded.insert(0, bytes * 2 - padded.size(), '0');
  padded = padded.substr(padded.size() - bytes * 2);
  Bytes out(bytes);
  for (size_t i = 0; i < bytes; ++i)
    out[i] = static_cast<uint8_t>(((padded[2 * i] - '0') << 4) | (padded[2 * i + 1] - '0'));
  return out;
}

std::string NormalizePhone(const std::string& digits) {
  size_t first = digits.find_first_not_of('0');
  return first == std::string::npos ? "0" : digits.substr(first);
}

namespace {
uint16_t Word(const uint8_t* p) { return static_cast<uint16_t>((p[0] << 8) | p[1]); }
void PutWord(Bytes& out, uint16_t v) {
  out.push_back(static_cast<uint8_t>(v >> 8));
  out.push_back(static_cast<uint8_t>(v));
}
}  // namespace

Result<Frame> DecodeFrame(std::span<const uint8_t> escaped) {
  auto content = Unescape(escaped);
  if (!content.ok()) return content.status();
  const Bytes& c = *content;
  if (c.size() < 13) return Invalid("frame of " + std::to_string(c.size()) + " bytes is shorter than a header and check code");
  uint8_t check = c.back();
  uint8_t computed = XorCheck(std::span(c.data(), c.size() - 1));
  if (check != computed) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "bad check code: got %02X, computed %02X", check, computed);
    return Invalid(buf);
  }
  Frame f;
  Header& h = f.header;
  h.msg_id = Word(&c[0]);
  uint16_t attr = Word(&c[2]);
  size_t body_len = attr & 0x03FF;
  h.encryption = static_cast<uint8_t>((attr >> 10) & 0x07);
  h.subpackage = (attr >> 13) & 1;
  h.v2019 = (attr >> 14) & 1;
  size_t pos = 4;
  size_t phone_len = 6;
  if (h.v2019) {
    h.proto_version = c[pos++];
    phone_len = 10;
  }
  size_t header_len = pos + phone_len + 2 + (h.subpackage ? 4 : 0);
  if (c.size() - 1 < header_len)
    return Invalid("frame too short for its " + std::string(h.v2019 ? "2019" : "2013") + " header");
  h.phone_bcd.assign(c.begin() + static_cast<long>(pos), c.begin() + static_cast<long>(pos + phone_len));
  auto digits = DigitsFromBcd(h.phone_bcd);
  if (!digits.ok()) return Invalid("terminal phone: " + digits.status().message());
  h.phone = NormalizePhone(*digits);
  pos += phone_len;
  h.serial = Word(&c[pos]);
  pos += 2;
  if (h.subpackage) {
    h.packet_total = Word(&c[pos]);
    h.packet_index = Word(&c[pos + 2]);
    pos += 4;
    if (h.packet_total == 0 || h.packet_index == 0 || h.packet_index > h.packet_total)
      return Invalid("subpackage " + std::to_string(h.packet_index) + " of " + std::to_string(h.packet_total) + " is impossible");
  }
  size_t actual = c.size() - 1 - pos;
  if (actual != body_len)
    return Invalid("body length field says " + std::to_string(body_len) + " bytes, frame has " + std::to_string(actual));
  f.body.assign(c.begin() + static_cast<long>(pos), c.end() - 1);
  return f;
}

Bytes EncodeFrame(const Header& h, std::span<const uint8_t> body) {
  Bytes c;
  c.reserve(body.size() + 24);
  PutWord(c, h.msg_id);
  uint16_t attr = static_cast<uint16_t>(body.size() & 0x03FF);
  attr |= static_cast<uint16_t>((h.encryption & 0x07) << 10);
  if (h.subpackage) attr |= 1u << 13;
  if (h.v2019) attr |= 1u << 14;
  PutWord(c, attr);
  if (h.v2019) c.push_back(h.proto_version);
  size_t phone_len = h.v2019 ? 10 : 6;
  if (h.phone_bcd.size() == phone_len) {
    c.insert(c.end(), h.phone_bcd.begin(), h.phone_bcd.end());
  } else {
    Bytes bcd = BcdFromDigits(h.phone, phone_len);
    c.insert(c.end(), bcd.begin(), bcd.end());
  }
  PutWord(c, h.serial);
  if (h.subpackage) {
    PutWord(c, h.packet_total);
    PutWord(c, h.packet_index);
  }
  c.insert(c.end(), body.begin(), body.end());
  c.push_back(XorCheck(c));
  return EscapeAndWrap(c);
}

}  // namespace sanigate::dev::jt808
