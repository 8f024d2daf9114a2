// Modbus value decoding: registers or bits in, a number out. No I/O: unit-testable with the
// vectors of protocols.md §5. Word order is separate from byte order; registers are always
// big-endian on the wire (libmodbus gives them as host uint16_t already).
// Stateless: thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

namespace sanigate::dev::modbus {

enum class Table { kHolding, kInput, kCoil, kDiscrete };
enum class ValueType { kU16, kI16, kU32, kI32, kF32, kBool };
enum class WordOrder { kHighFirst, kLowFirst };  // ABCD vs CDAB

size_t RegisterCount(ValueType t);  // 1 or 2 (kBool: 1 register or 1 bit)
bool IsBitTable(Table t);
std::optional<ValueType> ParseValueType(std::string_view s);
std::optional<Table> ParseTable(std::string_view s);

// Decodes `regs` (RegisterCount(t) registers) as a number. Non-finite floats come back as NaN.
double DecodeRegisters(std::span<const uint16_t> regs, ValueType t, WordOrder order);

}  // namespace sanigate::dev::modbus
