#include "modbus/value_codec.h"

#include <bit>
#include <cmath>
#include <limits>

namespace sanigate::dev::modbus {

size_t RegisterCount(ValueType t) {
  switch (t) {
    case ValueType::kU32:
    case ValueType::kI32:
    case ValueType::kF32: return 2;
    default: return 1;
  }
}

bool IsBitTable(Table t) { return t == Table::kCoil || t == Table::kDiscrete; }

std::optional<ValueType> ParseValueType(std::string_view s) {
  if (s == "u16") return ValueType::kU16;
  if (s == "i16") return ValueType::kI16;
  if (s == "u32") return ValueType::kU32;
  if (s == "i32") return ValueType::kI32;
  if (s == "f32") return ValueType::kF32;
  if (s == "bool") return ValueType::kBool;
  return std::nullopt;
}

std::optional<Table> ParseTable(std::string_view s) {
  if (s == "holding") return Table::kHolding;
  if (s == "input") return Table::kInput;
  if (s == "coil") return Table::kCoil;
  if (s == "discrete") return Table::kDiscrete;
  return std::nullopt;
}

double DecodeRegisters(std::span<const uint16_t> regs, ValueType t, WordOrder order) {
  auto u32 = [&] {
    uint32_t hi = order == WordOrder::kHighFirst ? regs[0] : regs[1];
    uint32_t lo = order == WordOrder::kHighFirst ? regs[1] : regs[0];
    return (hi << 16) | lo;
  };
  switch (t) {
    case ValueType::kU16: return regs[0];
    case ValueType::kI16: return static_cast<int16_t>(regs[0]);
    case ValueType::kU32: return u32();
    case ValueType::kI32: return static_cast<int32_t>(u32());
    case ValueType::kF32: {
      float f = std::bit_cast<float>(u32());
      return std::isfinite(f) ? f : std::numeric_limits<double>::quiet_NaN();
    }
    case ValueType::kBool: return regs[0] != 0 ? 1 : 0;
  }
  return std::numeric_limits<double>::quiet_NaN();
}

}  // namespace sanigate::dev::modbus
