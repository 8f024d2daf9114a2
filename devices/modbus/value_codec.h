// Modbus value decoding: registers or bits in, a value out. No I/O: unit-testable with the
// vectors of protocols.md §5. Byte order (inside each 16-bit register) and word order (which
// register comes first) are separate settings, because devices mix them.
// Stateless: thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>

namespace sanigate::dev::modbus {

enum class Table { kHolding, kInput, kCoil, kDiscrete };
enum class ValueType { kU16, kI16, kU32, kI32, kU64, kI64, kF32, kF64, kString, kBool, kBit };
enum class WordOrder { kHighFirst, kLowFirst };  // ABCD vs CDAB
enum class ByteOrder { kBig, kLittle };          // AB vs BA inside one register

struct Encoding {
  ValueType type = ValueType::kU16;
  WordOrder word_order = WordOrder::kHighFirst;
  ByteOrder byte_order = ByteOrder::kBig;
  uint16_t length = 1;  // registers, for strings (2 characters each)
  uint8_t bit = 0;      // for kBit: which bit of the register (0 = least significant)
};

using Decoded = std::variant<double, int64_t, bool, std::string>;

size_t RegisterCount(ValueType t);  // for fixed-size types; strings use Encoding::length
size_t RegisterCount(const Encoding& e);
bool IsBitTable(Table t);
bool IsIntegerType(ValueType t);
std::optional<ValueType> ParseValueType(std::string_view s);
std::optional<Table> ParseTable(std::string_view s);

// Decodes RegisterCount(e) registers. Integers come back as int64_t (u64 above INT64_MAX as
// double), floats as double (NaN when not finite), strings trimmed at the first NUL and of
// trailing spaces, bits as bool.
Decoded Decode(std::span<const uint16_t> regs, const Encoding& e);

// Numeric shortcut kept for the simple types: the value as a double.
double DecodeRegisters(std::span<const uint16_t> regs, ValueType t, WordOrder order);

}  // namespace sanigate::dev::modbus
