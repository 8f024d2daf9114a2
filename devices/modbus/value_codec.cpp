#include "modbus/value_codec.h"

#include <bit>
#include <cmath>
#include <limits>

namespace sanigate::dev::modbus {
namespace {

uint16_t Swap(uint16_t r) { return static_cast<uint16_t>((r >> 8) | (r << 8)); }

// The registers as one big-endian integer of n words, after applying both orders.
uint64_t Combine(std::span<const uint16_t> regs, size_t n, const Encoding& e) {
  uint64_t v = 0;
  for (size_t i = 0; i < n; ++i) {
    uint16_t r = regs[e.word_order == WordOrder::kHighFirst ? i : n - 1 - i];
    if (e.byte_order == ByteOrder::kLittle) r = Swap(r);
    v = (v << 16) | r;
  }
  return v;
}

double FiniteOrNaN(double d) { return std::isfinite(d) ? d : std::numeric_limits<double>::quiet_NaN(); }

}  // namespace

size_t RegisterCount(ValueType t) {
  switch (t) {
    case ValueType::kU32:
    case ValueType::kI32:
    case ValueType::kF32: return 2;
    case ValueType::kU64:
    case ValueType::kI64:
    case ValueType::kF64: return 4;
    default: return 1;
  }
}

size_t RegisterCount(const Encoding& e) {
  return e.type == ValueType::kString ? e.length : RegisterCount(e.type);
}

bool IsBitTable(Table t) { return t == Table::kCoil || t == Table::kDiscrete; }

bool IsIntegerType(ValueType t) {
  switch (t) {
    case ValueType::kU16:
    case ValueType::kI16:
    case ValueType::kU32:
    case ValueType::kI32:
    case ValueType::kU64:
    case ValueType::kI64: return true;
    default: return false;
  }
}

std::optional<ValueType> ParseValueType(std::string_view s) {
  static constexpr std::pair<std::string_view, ValueType> kNames[] = {
      {"u16", ValueType::kU16}, {"i16", ValueType::kI16},       {"u32", ValueType::kU32},
      {"i32", ValueType::kI32}, {"u64", ValueType::kU64},       {"i64", ValueType::kI64},
      {"f32", ValueType::kF32}, {"f64", ValueType::kF64},       {"string", ValueType::kString},
      {"bool", ValueType::kBool}, {"bit", ValueType::kBit}};
  for (const auto& [name, t] : kNames)
    if (s == name) return t;
  return std::nullopt;
}

std::optional<Table> ParseTable(std::string_view s) {
  if (s == "holding") return Table::kHolding;
  if (s == "input") return Table::kInput;
  if (s == "coil") return Table::kCoil;
  if (s == "discrete") return Table::kDiscrete;
  return std::nullopt;
}

Decoded Decode(std::span<const uint16_t> regs, const Encoding& e) {
  switch (e.type) {
    case ValueType::kU16: return static_cast<int64_t>(Combine(regs, 1, e));
    case ValueType::kI16: return static_cast<int64_t>(static_cast<int16_t>(Combine(regs, 1, e)));
    case ValueType::kU32: return static_cast<int64_t>(Combine(regs, 2, e));
    case ValueType::kI32: return static_cast<int64_t>(static_cast<int32_t>(Combine(regs, 2, e)));
    case ValueType::kU64: {
      uint64_t v = Combine(regs, 4, e);
      if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return static_cast<double>(v);
      return static_cast<int64_t>(v);
    }
    case ValueType::kI64: return static_cast<int64_t>(Combine(regs, 4, e));
    case ValueType::kF32:
      return FiniteOrNaN(std::bit_cast<float>(static_cast<uint32_t>(Combine(regs, 2, e))));
    case ValueType::kF64: return FiniteOrNaN(std::bit_cast<double>(Combine(regs, 4, e)));
    case ValueType::kBool: return regs[0] != 0;
    case ValueType::kBit: return ((regs[0] >> e.bit) & 1u) != 0;
    case ValueType::kString: {
      // Characters are in wire order: high byte first unless the device swaps bytes.
      std::string s;
      for (size_t i = 0; i < e.length; ++i) {
        uint16_t r = e.byte_order == ByteOrder::kLittle ? Swap(regs[i]) : regs[i];
        s.push_back(static_cast<char>(r >> 8));
        s.push_back(static_cast<char>(r & 0xFF));
      }
      if (auto nul = s.find('\0'); nul != std::string::npos) s.resize(nul);
      while (!s.empty() && s.back() == ' ') s.pop_back();
      return s;
    }
  }
  return std::numeric_limits<double>::quiet_NaN();
}

double DecodeRegisters(std::span<const uint16_t> regs, ValueType t, WordOrder order) {
  Decoded d = Decode(regs, Encoding{t, order, ByteOrder::kBig, 1, 0});
  if (auto i = std::get_if<int64_t>(&d)) return static_cast<double>(*i);
  if (auto b = std::get_if<bool>(&d)) return *b ? 1 : 0;
  if (auto x = std::get_if<double>(&d)) return *x;
  return std::numeric_limits<double>::quiet_NaN();
}

}  // namespace sanigate::dev::modbus
