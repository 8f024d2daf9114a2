// Modbus value decoding (devices/modbus/value_codec.h): Decode over registers as a device returns
// them, with every value type, word order and byte order, string lengths 1..125 and bits 0..15
// (the ranges the config accepts). Input: type, orders, length/bit, then the registers (big
// endian). The registers are handed over in a vector of exactly RegisterCount(e) entries, as the
// poller does, so ASan sees any read past them. Also ParseValueType / ParseTable on the text.
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "fuzz_common.h"
#include "modbus/value_codec.h"

using namespace sanigate::dev::modbus;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::Knobs k(data, size);
  Encoding e;
  e.type = static_cast<ValueType>(k.U8() % 11);
  const uint8_t orders = k.U8();
  e.word_order = orders & 1 ? WordOrder::kLowFirst : WordOrder::kHighFirst;
  e.byte_order = orders & 2 ? ByteOrder::kLittle : ByteOrder::kBig;
  const uint8_t param = k.U8();
  e.length = static_cast<uint16_t>(1 + param % 125);
  e.bit = static_cast<uint8_t>(param % 16);
  std::span<const uint8_t> rest = k.Rest();
  const size_t n = RegisterCount(e);
  if (rest.size() < 2 * n) {
    // Not enough registers: a poller never calls Decode like that. Use the text instead.
    std::string_view text = k.RestText();
    if (auto t = ParseValueType(text)) FUZZ_CHECK(RegisterCount(*t) >= 1, "RegisterCount");
    (void)ParseTable(text);
    return 0;
  }
  std::vector<uint16_t> regs(n);
  for (size_t i = 0; i < n; ++i) regs[i] = static_cast<uint16_t>(rest[2 * i] << 8 | rest[2 * i + 1]);

  Decoded d = Decode(regs, e);
  switch (e.type) {
    case ValueType::kU16:
    case ValueType::kI16:
    case ValueType::kU32:
    case ValueType::kI32:
    case ValueType::kI64: {
      FUZZ_CHECK(std::holds_alternative<int64_t>(d), "an integer type decoded to a non-integer");
      int64_t v = std::get<int64_t>(d);
      if (e.type == ValueType::kU16) FUZZ_CHECK(v >= 0 && v <= 0xFFFF, "u16 range");
      if (e.type == ValueType::kI16) FUZZ_CHECK(v >= -32768 && v <= 32767, "i16 range");
      if (e.type == ValueType::kU32) FUZZ_CHECK(v >= 0 && v <= 0xFFFFFFFFll, "u32 range");
      if (e.type == ValueType::kI32) FUZZ_CHECK(v >= INT32_MIN && v <= INT32_MAX, "i32 range");
      break;
    }
    case ValueType::kU64:
      FUZZ_CHECK(std::holds_alternative<int64_t>(d) ? std::get<int64_t>(d) >= 0
                                                    : std::holds_alternative<double>(d) && std::get<double>(d) >= 9.2e18,
                 "u64");
      break;
    case ValueType::kF32:
    case ValueType::kF64:
      FUZZ_CHECK(std::holds_alternative<double>(d) && !std::isinf(std::get<double>(d)), "a float decoded to inf or a non-float");
      break;
    case ValueType::kBool:
    case ValueType::kBit:
      FUZZ_CHECK(std::holds_alternative<bool>(d), "bool/bit");
      if (e.type == ValueType::kBit) FUZZ_CHECK(std::get<bool>(d) == (((regs[0] >> e.bit) & 1) != 0), "bit value");
      break;
    case ValueType::kString: {
      FUZZ_CHECK(std::holds_alternative<std::string>(d), "string");
      const std::string& s = std::get<std::string>(d);
      FUZZ_CHECK(s.size() <= 2u * e.length, "string longer than its registers");
      FUZZ_CHECK(s.find('\0') == std::string::npos, "NUL inside a decoded string");
      FUZZ_CHECK(s.empty() || s.back() != ' ', "trailing blank");
      break;
    }
  }
  // The numeric shortcut agrees with Decode for the simple types (big-endian bytes).
  if (e.byte_order == ByteOrder::kBig && e.type != ValueType::kString && e.type != ValueType::kBit) {
    double x = DecodeRegisters(regs, e.type, e.word_order);
    double y = std::holds_alternative<int64_t>(d)  ? static_cast<double>(std::get<int64_t>(d))
               : std::holds_alternative<bool>(d) ? (std::get<bool>(d) ? 1.0 : 0.0)
                                                 : std::get<double>(d);
    FUZZ_CHECK((std::isnan(x) && std::isnan(y)) || x == y, "DecodeRegisters disagrees with Decode");
  }
  // Swapping the word order twice is the identity: reversing the registers with the other order
  // gives the same value for the multi-register numeric types.
  if (n > 1 && e.type != ValueType::kString) {
    std::vector<uint16_t> reversed(regs.rbegin(), regs.rend());
    Encoding other = e;
    other.word_order = e.word_order == WordOrder::kHighFirst ? WordOrder::kLowFirst : WordOrder::kHighFirst;
    Decoded d2 = Decode(reversed, other);
    bool same = d.index() == d2.index();
    if (same && std::holds_alternative<double>(d))
      same = (std::isnan(std::get<double>(d)) && std::isnan(std::get<double>(d2))) || std::get<double>(d) == std::get<double>(d2);
    else if (same)
      same = d == d2;
    FUZZ_CHECK(same, "word order is not a register reversal");
  }
  return 0;
}
