// Modbus value decoding with the vectors of protocols.md §5, and read planning (PlanReads):
// merging points into as few requests as the function-code limits allow.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "modbus/modbus_config.h"
#include "modbus/modbus_tcp_adapter.h"
#include "modbus/value_codec.h"

namespace sanigate::dev::modbus {
namespace {

double Decode(std::vector<uint16_t> regs, ValueType t, WordOrder order = WordOrder::kHighFirst) {
  return DecodeRegisters(regs, t, order);
}

TEST(ModbusDecodeTest, Float32HighWordFirstAbcd) {
  EXPECT_EQ(Decode({0x42F6, 0xE979}, ValueType::kF32, WordOrder::kHighFirst),
            static_cast<double>(123.456f));
}

TEST(ModbusDecodeTest, Float32LowWordFirstCdab) {
  EXPECT_EQ(Decode({0xE979, 0x42F6}, ValueType::kF32, WordOrder::kLowFirst),
            static_cast<double>(123.456f));
}

TEST(ModbusDecodeTest, Float32WithTheWrongWordOrderIsADifferentNumber) {
  EXPECT_EQ(Decode({0x42F6, 0xE979}, ValueType::kF32, WordOrder::kLowFirst),
            static_cast<double>(std::bit_cast<float>(uint32_t{0xE97942F6})));
}

TEST(ModbusDecodeTest, Int32HighWordFirst) {
  EXPECT_EQ(Decode({0xFFFE, 0x1DC0}, ValueType::kI32, WordOrder::kHighFirst), -123456.0);
}

TEST(ModbusDecodeTest, Int32LowWordFirst) {
  EXPECT_EQ(Decode({0x1DC0, 0xFFFE}, ValueType::kI32, WordOrder::kLowFirst), -123456.0);
}

TEST(ModbusDecodeTest, Unsigned32OfTheSameRegistersIsPositive) {
  EXPECT_EQ(Decode({0xFFFE, 0x1DC0}, ValueType::kU32), 4294843840.0);  // 2^32 - 123456
}

TEST(ModbusDecodeTest, Unsigned32Max) {
  EXPECT_EQ(Decode({0xFFFF, 0xFFFF}, ValueType::kU32), 4294967295.0);
  EXPECT_EQ(Decode({0xFFFF, 0xFFFF}, ValueType::kU32, WordOrder::kLowFirst), 4294967295.0);
}

TEST(ModbusDecodeTest, Unsigned16AndSigned16OfOneRegister) {
  EXPECT_EQ(Decode({0xFF38}, ValueType::kU16), 65336.0);
  EXPECT_EQ(Decode({0xFF38}, ValueType::kI16), -200.0);
  EXPECT_EQ(Decode({0x7FFF}, ValueType::kI16), 32767.0);
  EXPECT_EQ(Decode({0x8000}, ValueType::kI16), -32768.0);
}

TEST(ModbusDecodeTest, NaNFloatDecodesAsNaN) {
  EXPECT_TRUE(std::isnan(Decode({0x7FC0, 0x0000}, ValueType::kF32)));
}

TEST(ModbusDecodeTest, InfiniteFloatDecodesAsNaN) {
  EXPECT_TRUE(std::isnan(Decode({0x7F80, 0x0000}, ValueType::kF32)));  // +inf
  EXPECT_TRUE(std::isnan(Decode({0xFF80, 0x0000}, ValueType::kF32)));  // -inf
}

TEST(ModbusDecodeTest, BoolFromRegisterIsZeroOrOne) {
  EXPECT_EQ(Decode({0x0000}, ValueType::kBool), 0.0);
  EXPECT_EQ(Decode({0x0005}, ValueType::kBool), 1.0);
}

TEST(ModbusDecodeTest, RegisterCountIsTwoForThirtyTwoBitTypes) {
  EXPECT_EQ(RegisterCount(ValueType::kU16), 1u);
  EXPECT_EQ(RegisterCount(ValueType::kI16), 1u);
  EXPECT_EQ(RegisterCount(ValueType::kBool), 1u);
  EXPECT_EQ(RegisterCount(ValueType::kU32), 2u);
  EXPECT_EQ(RegisterCount(ValueType::kI32), 2u);
  EXPECT_EQ(RegisterCount(ValueType::kF32), 2u);
}

TEST(ModbusDecodeTest, ParsesTypeAndTableNames) {
  EXPECT_EQ(ParseValueType("f32"), ValueType::kF32);
  EXPECT_EQ(ParseValueType("i16"), ValueType::kI16);
  EXPECT_EQ(ParseValueType("float"), std::nullopt);
  EXPECT_EQ(ParseTable("discrete"), Table::kDiscrete);
  EXPECT_EQ(ParseTable("input"), Table::kInput);
  EXPECT_EQ(ParseTable("register"), std::nullopt);
  EXPECT_TRUE(IsBitTable(Table::kCoil));
  EXPECT_TRUE(IsBitTable(Table::kDiscrete));
  EXPECT_FALSE(IsBitTable(Table::kHolding));
  EXPECT_FALSE(IsBitTable(Table::kInput));
}

// --- PlanReads ------------------------------------------------------------------------------

PointConfig Point(Table table, uint16_t address, ValueType type = ValueType::kU16) {
  PointConfig p;
  p.metric = "m" + std::to_string(address);
  p.table = table;
  p.address = address;
  p.type = IsBitTable(table) ? ValueType::kBool : type;
  return p;
}

struct Block {
  Table table;
  uint16_t start;
  uint16_t count;
  std::vector<size_t> points;
  bool operator==(const Block&) const = default;
};

std::vector<Block> Plan(const std::vector<PointConfig>& points, size_t max_gap) {
  std::vector<Block> out;
  for (const auto& b : PlanReads(points, max_gap)) out.push_back({b.table, b.start, b.count, b.points});
  return out;
}

void PrintTo(const Block& b, std::ostream* os) {
  *os << "{table " << static_cast<int>(b.table) << ", start " << b.start << ", count " << b.count
      << ", points";
  for (size_t p : b.points) *os << " " << p;
  *os << "}";
}

TEST(PlanReadsTest, ContiguousPointsMergeIntoOneBlock) {
  std::vector<PointConfig> points = {Point(Table::kHolding, 0), Point(Table::kHolding, 1, ValueType::kI16),
                                     Point(Table::kHolding, 2, ValueType::kF32),
                                     Point(Table::kHolding, 4, ValueType::kU32)};
  EXPECT_EQ(Plan(points, 0), (std::vector<Block>{{Table::kHolding, 0, 6, {0, 1, 2, 3}}}));
}

TEST(PlanReadsTest, PointsAreOrderedByAddressWhateverTheConfigOrder) {
  std::vector<PointConfig> points = {Point(Table::kHolding, 3), Point(Table::kHolding, 1),
                                     Point(Table::kHolding, 2)};
  EXPECT_EQ(Plan(points, 0), (std::vector<Block>{{Table::kHolding, 1, 3, {1, 2, 0}}}));
}

TEST(PlanReadsTest, GapUpToMaxGapIsReadOver) {
  // 0 ends at 1; 9 starts 8 registers later.
  std::vector<PointConfig> points = {Point(Table::kHolding, 0), Point(Table::kHolding, 9)};
  EXPECT_EQ(Plan(points, 8), (std::vector<Block>{{Table::kHolding, 0, 10, {0, 1}}}));
}

TEST(PlanReadsTest, GapLargerThanMaxGapSplits) {
  std::vector<PointConfig> points = {Point(Table::kHolding, 0), Point(Table::kHolding, 10)};
  EXPECT_EQ(Plan(points, 8), (std::vector<Block>{{Table::kHolding, 0, 1, {0}},
                                                 {Table::kHolding, 10, 1, {1}}}));
}

TEST(PlanReadsTest, ZeroMaxGapMergesOnlyAdjacentPoints) {
  std::vector<PointConfig> points = {Point(Table::kInput, 0), Point(Table::kInput, 1),
                                     Point(Table::kInput, 3)};
  EXPECT_EQ(Plan(points, 0), (std::vector<Block>{{Table::kInput, 0, 2, {0, 1}},
                                                 {Table::kInput, 3, 1, {2}}}));
}

TEST(PlanReadsTest, TablesNeverMerge) {
  std::vector<PointConfig> points = {Point(Table::kDiscrete, 0), Point(Table::kCoil, 0),
                                     Point(Table::kInput, 0), Point(Table::kHolding, 0),
                                     Point(Table::kHolding, 1), Point(Table::kCoil, 1)};
  EXPECT_EQ(Plan(points, 100), (std::vector<Block>{{Table::kHolding, 0, 2, {3, 4}},
                                                   {Table::kInput, 0, 1, {2}},
                                                   {Table::kCoil, 0, 2, {1, 5}},
                                                   {Table::kDiscrete, 0, 1, {0}}}));
}

TEST(PlanReadsTest, RegisterBlockNeverExceeds125Registers) {
  std::vector<PointConfig> points = {Point(Table::kHolding, 0), Point(Table::kHolding, 130)};
  EXPECT_EQ(Plan(points, 200), (std::vector<Block>{{Table::kHolding, 0, 1, {0}},
                                                   {Table::kHolding, 130, 1, {1}}}));
}

TEST(PlanReadsTest, RegisterBlockOfExactly125RegistersIsOneRead) {
  std::vector<PointConfig> points = {Point(Table::kHolding, 0), Point(Table::kHolding, 124)};
  EXPECT_EQ(Plan(points, 200), (std::vector<Block>{{Table::kHolding, 0, 125, {0, 1}}}));
}

TEST(PlanReadsTest, ThirtyTwoBitPointCountsTwoRegistersTowardsTheLimit) {
  // An f32 at 124 ends at 126: one register past the 125 limit of a block starting at 0.
  std::vector<PointConfig> points = {Point(Table::kHolding, 0),
                                     Point(Table::kHolding, 124, ValueType::kF32)};
  EXPECT_EQ(Plan(points, 200), (std::vector<Block>{{Table::kHolding, 0, 1, {0}},
                                                   {Table::kHolding, 124, 2, {1}}}));
}

TEST(PlanReadsTest, ThirtyTwoBitPointCountsTwoRegistersInItsBlock) {
  std::vector<PointConfig> points = {Point(Table::kInput, 10, ValueType::kI32)};
  EXPECT_EQ(Plan(points, 8), (std::vector<Block>{{Table::kInput, 10, 2, {0}}}));
}

TEST(PlanReadsTest, GapIsMeasuredFromTheEndOfAThirtyTwoBitPoint) {
  // The u32 at 0 covers 0..1, so 10 is 8 registers past its end (read over with max_gap 8);
  // 20 is 9 past the end of 10, so it starts a new block.
  std::vector<PointConfig> points = {Point(Table::kHolding, 0, ValueType::kU32),
                                     Point(Table::kHolding, 10), Point(Table::kHolding, 20)};
  EXPECT_EQ(Plan(points, 8), (std::vector<Block>{{Table::kHolding, 0, 11, {0, 1}},
                                                 {Table::kHolding, 20, 1, {2}}}));
}

TEST(PlanReadsTest, BitBlockMayHold2000Bits) {
  std::vector<PointConfig> points = {Point(Table::kCoil, 0), Point(Table::kCoil, 1999)};
  EXPECT_EQ(Plan(points, 5000), (std::vector<Block>{{Table::kCoil, 0, 2000, {0, 1}}}));
}

TEST(PlanReadsTest, BitBlockNeverExceeds2000Bits) {
  std::vector<PointConfig> points = {Point(Table::kDiscrete, 0), Point(Table::kDiscrete, 2000)};
  EXPECT_EQ(Plan(points, 5000), (std::vector<Block>{{Table::kDiscrete, 0, 1, {0}},
                                                    {Table::kDiscrete, 2000, 1, {1}}}));
}

TEST(PlanReadsTest, SameAddressReadByTwoPointsIsOneRead) {
  std::vector<PointConfig> points = {Point(Table::kHolding, 5, ValueType::kF32),
                                     Point(Table::kHolding, 5, ValueType::kU16)};
  std::vector<Block> plan = Plan(points, 0);
  ASSERT_EQ(plan.size(), 1u);
  std::sort(plan[0].points.begin(), plan[0].points.end());  // equal addresses: any order
  EXPECT_EQ(plan, (std::vector<Block>{{Table::kHolding, 5, 2, {0, 1}}}));
}

TEST(PlanReadsTest, NoPointsNoBlocks) { EXPECT_TRUE(Plan({}, 8).empty()); }

}  // namespace
}  // namespace sanigate::dev::modbus
