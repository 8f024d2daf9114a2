// DevicePoller against the real libmodbus simulator over TCP on loopback: merged reads, byte and
// word orders (protocols.md §5 vectors), strings and bits, and re-planning when the device
// rejects an address.
#include <gtest/gtest.h>
#include <modbus.h>

#include <fstream>
#include <map>
#include <thread>

#include <nlohmann/json.hpp>

#include "harness/ports.h"
#include "harness/process.h"
#include "harness/temp_dir.h"
#include "modbus/device_poller.h"

namespace sanigate::dev::modbus {
namespace {

using namespace std::chrono_literals;
using test::Process;
using json = nlohmann::json;

class PollerTest : public ::testing::Test {
 protected:
  test::TempDir dir;
  Process sim;
  modbus_t* ctx = nullptr;

  void StartSim(std::vector<std::string> extra) {
    std::string ports = (dir.path() / "ports").string();
    std::vector<std::string> argv = {MODBUS_SIM_BIN, "--port-file", ports};
    argv.insert(argv.end(), extra.begin(), extra.end());
    sim = Process::Start(argv, {.stderr_path = (dir.path() / "sim.err").string()});
    uint16_t port = test::ReadPortFile(ports, 1, 10s).at(0);
    ctx = modbus_new_tcp("127.0.0.1", port);
    ASSERT_NE(ctx, nullptr);
    modbus_set_response_timeout(ctx, 0, 500000);
    ASSERT_EQ(modbus_connect(ctx), 0) << modbus_strerror(errno);
  }
  void TearDown() override {
    if (ctx) {
      modbus_close(ctx);
      modbus_free(ctx);
    }
  }

  static PointConfig Point(std::string metric, uint16_t address, ValueType type) {
    PointConfig p;
    p.metric = std::move(metric);
    p.address = address;
    p.type = type;
    return p;
  }
  static DeviceConfig Device(std::vector<PointConfig> points) {
    DeviceConfig d;
    d.id = "room-07";
    d.points = std::move(points);
    return d;
  }
  // Polls once and returns the reading's metrics and quality flags.
  struct Result {
    PollOutcome outcome;
    std::map<std::string, MetricValue> metrics;
    std::map<std::string, std::string> quality;
  };
  Result PollOnce(DevicePoller& poller) {
    std::vector<Record> out;
    Result r{poller.Poll(ctx, out), {}, {}};
    for (const auto& rec : out) {
      if (rec.type != RecordType::kReading) continue;
      for (const auto& m : rec.metrics) r.metrics[m.name] = m.value;
      for (const auto& [metric, flag] : rec.quality) r.quality[metric] = flag;
    }
    return r;
  }
};

TEST_F(PollerTest, ReadsTheDefaultGarbageRoomInOneRequestPerTable) {
  StartSim({});
  auto fill = Point("fill_level_pct", 0, ValueType::kU16);
  fill.scale = 0.1;
  auto temp = Point("temperature_c", 1, ValueType::kI16);
  temp.scale = 0.1;
  auto nh3 = Point("nh3_ppm", 2, ValueType::kF32);
  nh3.decimals = 2;
  auto h2s = Point("h2s_ppm", 6, ValueType::kF32);
  h2s.decimals = 2;
  auto door = Point("door_open", 0, ValueType::kBool);
  door.table = Table::kDiscrete;
  DevicePoller poller(Device({fill, temp, nh3, h2s, door}), PlanLimits{});
  EXPECT_EQ(poller.planned_requests(), 2u);
  auto r = PollOnce(poller);
  ASSERT_EQ(r.outcome, PollOutcome::kOk);
  EXPECT_EQ(poller.counters().requests, 2u);
  EXPECT_EQ(std::get<double>(r.metrics["fill_level_pct"]), 81.5);
  EXPECT_EQ(std::get<double>(r.metrics["temperature_c"]), 26.1);
  EXPECT_EQ(std::get<double>(r.metrics["nh3_ppm"]), 3.2);
  EXPECT_EQ(std::get<double>(r.metrics["h2s_ppm"]), 0.15);
  EXPECT_EQ(std::get<bool>(r.metrics["door_open"]), false);
  EXPECT_TRUE(poller.online());
}

TEST_F(PollerTest, DecodesAllFourByteAndWordOrdersOfTheSameFloat) {
  // float32 123.456 = 0x42F6E979 as ABCD, CDAB, BADC, DCBA (protocols.md §5).
  StartSim({"--set", "hr:10=0x42F6", "--set", "hr:11=0xE979", "--set", "hr:12=0xE979", "--set",
            "hr:13=0x42F6", "--set", "hr:14=0xF642", "--set", "hr:15=0x79E9", "--set",
            "hr:16=0x79E9", "--set", "hr:17=0xF642"});
  auto abcd = Point("abcd", 10, ValueType::kF32);
  auto cdab = Point("cdab", 12, ValueType::kF32);
  cdab.word_order = WordOrder::kLowFirst;
  auto badc = Point("badc", 14, ValueType::kF32);
  badc.byte_order = ByteOrder::kLittle;
  auto dcba = Point("dcba", 16, ValueType::kF32);
  dcba.byte_order = ByteOrder::kLittle;
  dcba.word_order = WordOrder::kLowFirst;
  for (auto* p : {&abcd, &cdab, &badc, &dcba}) p->decimals = 3;
  DevicePoller poller(Device({abcd, cdab, badc, dcba}), PlanLimits{});
  auto r = PollOnce(poller);
  ASSERT_EQ(r.outcome, PollOutcome::kOk);
  for (const char* name : {"abcd", "cdab", "badc", "dcba"})
    EXPECT_EQ(std::get<double>(r.metrics[name]), 123.456) << name;
  EXPECT_EQ(poller.counters().requests, 1u) << "four adjacent floats are one read";
}

TEST_F(PollerTest, AFloatWithoutDecimalsIsPublishedAtItsOwnPrecision) {
  // float32 23.19 is 0x41B9851F = 23.1900005...: published as 23.19, not 23.190001.
  StartSim({"--set-f32", "hr:2=23.19", "--set-f32", "hr:4=0.15"});
  auto plain = Point("temperature_c", 2, ValueType::kF32);
  auto scaled = Point("level_m", 2, ValueType::kF32);
  scaled.scale = 0.1;
  auto small = Point("h2s_ppm", 4, ValueType::kF32);
  DevicePoller poller(Device({plain, scaled, small}), PlanLimits{});
  auto r = PollOnce(poller);
  ASSERT_EQ(r.outcome, PollOutcome::kOk);
  EXPECT_EQ(std::get<double>(r.metrics["temperature_c"]), 23.19);
  EXPECT_EQ(std::get<double>(r.metrics["level_m"]), 2.319);
  EXPECT_EQ(std::get<double>(r.metrics["h2s_ppm"]), 0.15);
}

TEST_F(PollerTest, DecodesSixtyFourBitIntegersStringsAndSingleBits) {
  StartSim({"--set", "hr:20=0x5341", "--set", "hr:21=0x4E49", "--set", "hr:22=0x4741", "--set",
            "hr:23=0x5445", "--set", "hr:30=5", "--set", "hr:40=0xFFFF", "--set", "hr:41=0xFFFF",
            "--set", "hr:42=0xFFFE", "--set", "hr:43=0x1DC0"});
  auto name = Point("model", 20, ValueType::kString);
  name.length = 6;  // 20..25, 24 and 25 are zero: trailing NULs trimmed
  auto bit0 = Point("uv_lamp_on", 30, ValueType::kBit);
  auto bit1 = Point("fan_on", 30, ValueType::kBit);
  bit1.bit = 1;
  auto bit2 = Point("deodorizer_on", 30, ValueType::kBit);
  bit2.bit = 2;
  auto i64 = Point("energy", 40, ValueType::kI64);
  DevicePoller poller(Device({name, bit0, bit1, bit2, i64}), PlanLimits{});
  auto r = PollOnce(poller);
  ASSERT_EQ(r.outcome, PollOutcome::kOk);
  EXPECT_EQ(std::get<std::string>(r.metrics["model"]), "SANIGATE");
  EXPECT_TRUE(std::get<bool>(r.metrics["uv_lamp_on"]));
  EXPECT_FALSE(std::get<bool>(r.metrics["fan_on"]));
  EXPECT_TRUE(std::get<bool>(r.metrics["deodorizer_on"]));
  EXPECT_EQ(std::get<int64_t>(r.metrics["energy"]), -123456);
}

TEST_F(PollerTest, ARejectedRegisterDoesNotHideTheOthersInItsBlock) {
  StartSim({});
  // 98..99 exist; 99..100 does not (the simulator has 100 registers): the merged read 0..100 is
  // refused as a whole, so the poller reads its points one by one in that cycle. The bad point
  // is set aside only once the refusal is confirmed: refused on its own in two polls in a row.
  auto fill = Point("fill_level_pct", 0, ValueType::kU16);
  auto good = Point("good_u32", 98, ValueType::kU32);
  auto bad = Point("bad_u32", 99, ValueType::kU32);
  DevicePoller poller(Device({fill, good, bad}), PlanLimits{.max_gap = 100});
  EXPECT_EQ(poller.planned_requests(), 1u);

  auto first = PollOnce(poller);
  ASSERT_EQ(first.outcome, PollOutcome::kOk) << "an exception means the device is alive";
  EXPECT_EQ(poller.counters().requests, 4u) << "1 merged + 3 single";
  EXPECT_EQ(std::get<int64_t>(first.metrics["fill_level_pct"]), 815);
  EXPECT_EQ(std::get<int64_t>(first.metrics["good_u32"]), 0);
  EXPECT_EQ(first.metrics.count("bad_u32"), 0u);
  EXPECT_EQ(first.quality["bad_u32"], "illegal_data_address");
  EXPECT_EQ(first.quality.count("fill_level_pct"), 0u);
  EXPECT_EQ(poller.planned_requests(), 1u) << "one refusal is not confirmed: merged again";

  auto second = PollOnce(poller);
  EXPECT_EQ(poller.counters().requests, 8u) << "refused again: 1 merged + 3 single";
  EXPECT_EQ(second.quality["bad_u32"], "illegal_data_address");
  EXPECT_EQ(std::get<int64_t>(second.metrics["good_u32"]), 0);
  EXPECT_EQ(poller.planned_requests(), 1u) << "confirmed: set aside, the rest merged";

  // Steady state: no request wasted on the bad address, which stays flagged.
  uint64_t before = poller.counters().requests;
  auto third = PollOnce(poller);
  EXPECT_EQ(poller.counters().requests - before, 1u);
  EXPECT_EQ(third.quality["bad_u32"], "illegal_data_address");
  EXPECT_EQ(std::get<int64_t>(third.metrics["fill_level_pct"]), 815);
}

TEST_F(PollerTest, APollCutShortByATimeoutPublishesWhatWasReadAndFlagsTheRest) {
  StartSim({"--counter", "hr:4"});
  modbus_set_response_timeout(ctx, 0, 200000);
  auto fill = Point("fill_level_pct", 0, ValueType::kU16);
  auto reads = Point("reads", 4, ValueType::kU32);
  auto door = Point("door_open", 0, ValueType::kBool);
  door.table = Table::kDiscrete;
  auto cfg = Device({fill, reads, door});
  cfg.offline_after = 1;
  DevicePoller poller(cfg, PlanLimits{});
  ASSERT_EQ(poller.planned_requests(), 2u);
  // The simulator goes silent between the holding-register read and the discrete-input read.
  int sent = 0;
  poller.before_request = [&] {
    if (++sent == 2) {
      sim.Signal(SIGUSR1);
      std::this_thread::sleep_for(100ms);
    }
  };
  auto r = PollOnce(poller);
  EXPECT_EQ(r.outcome, PollOutcome::kPartial);
  ASSERT_EQ(r.metrics.count("reads"), 1u) << "the value read before the timeout is published";
  EXPECT_EQ(std::get<int64_t>(r.metrics["reads"]), 1);
  EXPECT_EQ(std::get<int64_t>(r.metrics["fill_level_pct"]), 815);
  EXPECT_EQ(r.quality["door_open"], "timeout");
  EXPECT_EQ(r.metrics.count("door_open"), 0u);
  EXPECT_EQ(poller.counters().partial_polls, 1u);
  EXPECT_EQ(poller.counters().timeouts, 1u);
  EXPECT_TRUE(poller.online()) << "a device that answered part of the poll is alive";

  poller.before_request = nullptr;
  sim.Signal(SIGUSR2);
  std::this_thread::sleep_for(100ms);
  auto next = PollOnce(poller);
  EXPECT_EQ(next.outcome, PollOutcome::kOk);
  EXPECT_EQ(std::get<int64_t>(next.metrics["reads"]), 2) << "no read lost, none repeated";
  EXPECT_EQ(next.quality.count("door_open"), 0u);
}

// One stats line of the simulator per device (written at exit with --stats-file).
std::vector<json> SimStats(const std::string& file) {
  std::vector<json> out;
  std::ifstream in(file);
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) out.push_back(json::parse(line));
  return out;
}

TEST_F(PollerTest, TransientTimeoutsAndRefusalsLoseNoReadAndMuteNoMetric) {
  // A few per cent of requests time out or are refused with exception 02, at random (seeded).
  std::string stats = (dir.path() / "stats.jsonl").string();
  StartSim({"--counter", "hr:4", "--fault-timeout-pct", "2", "--fault-exception-pct", "5", "--seed",
            "7", "--stats-file", stats});
  modbus_set_response_timeout(ctx, 0, 50000);
  auto fill = Point("fill_level_pct", 0, ValueType::kU16);
  auto temp = Point("temperature_c", 1, ValueType::kI16);
  auto reads = Point("reads", 4, ValueType::kU32);
  auto door = Point("door_open", 0, ValueType::kBool);
  door.table = Table::kDiscrete;
  DevicePoller poller(Device({fill, temp, reads, door}), PlanLimits{});
  const size_t merged = poller.planned_requests();
  ASSERT_EQ(merged, 2u);

  constexpr int kPolls = 400;
  std::vector<int64_t> seen;
  int without_reads = 0, without_temp = 0;
  for (int i = 0; i < kPolls; ++i) {
    auto r = PollOnce(poller);
    if (auto it = r.metrics.find("reads"); it != r.metrics.end()) seen.push_back(std::get<int64_t>(it->second));
    else without_reads++;
    if (!r.metrics.count("temperature_c")) without_temp++;
  }
  EXPECT_EQ(poller.planned_requests(), merged) << "a transient refusal does not split the device for good";
  sim.Signal(SIGTERM);
  sim.Wait(5s);
  auto st = SimStats(stats);
  ASSERT_EQ(st.size(), 1u);
  int64_t faults = st[0]["timeouts"].get<int64_t>() + st[0]["exceptions"].get<int64_t>();
  ASSERT_GT(faults, 10) << "the simulator injected too few faults to test anything";

  // Every read the simulator answered is published exactly once: the counter it bumps on each
  // answered read covering hr:4 has no gap and no repeat.
  ASSERT_FALSE(seen.empty());
  for (size_t i = 0; i < seen.size(); ++i) ASSERT_EQ(seen[i], static_cast<int64_t>(i) + 1) << "at poll " << i;
  // A metric is missing only from a poll a fault touched: never muted for many polls.
  EXPECT_LE(without_reads, faults);
  EXPECT_LE(without_temp, faults);
  // Splitting is for the cycle that saw the refusal: on average little more than 2 per poll.
  double per_poll = static_cast<double>(poller.counters().requests) / kPolls;
  EXPECT_LT(per_poll, 2.5) << poller.counters().requests << " requests in " << kPolls << " polls";
}

TEST_F(PollerTest, AReadingNamesTheDevicesProfile) {
  StartSim({});
  auto cfg = Device({Point("fill_level_pct", 0, ValueType::kU16)});
  cfg.profile = "garbage-room-v1";
  DevicePoller poller(cfg, PlanLimits{});
  std::vector<Record> out;
  ASSERT_EQ(poller.Poll(ctx, out), PollOutcome::kOk);
  const Record* reading = nullptr;
  for (const auto& r : out)
    if (r.type == RecordType::kReading) reading = &r;
  ASSERT_NE(reading, nullptr);
  bool named = false;
  for (const auto& [k, v] : reading->source_extra)
    named |= k == "profile" && std::get<std::string>(v) == "garbage-room-v1";
  EXPECT_TRUE(named) << "source.profile missing: rollouts and health overrides by profile select nothing";
}

TEST_F(PollerTest, AValueOutsideItsRangeIsFlaggedNotPublished) {
  StartSim({"--set", "hr:0=1500"});  // 150.0 % from a fill sensor: a fault
  auto fill = Point("fill_level_pct", 0, ValueType::kU16);
  fill.scale = 0.1;
  fill.min = 0;
  fill.max = 100;
  auto temp = Point("temperature_c", 1, ValueType::kI16);
  DevicePoller poller(Device({fill, temp}), PlanLimits{});
  auto r = PollOnce(poller);
  EXPECT_EQ(r.metrics.count("fill_level_pct"), 0u);
  EXPECT_EQ(r.quality["fill_level_pct"], "out_of_range");
  EXPECT_EQ(std::get<int64_t>(r.metrics["temperature_c"]), 261);
}

TEST_F(PollerTest, ASilentDeviceGoesOfflineAfterTheConfiguredFailures) {
  StartSim({});
  auto fill = Point("fill_level_pct", 0, ValueType::kU16);
  auto cfg = Device({fill});
  cfg.offline_after = 2;
  DevicePoller poller(cfg, PlanLimits{});
  ASSERT_EQ(PollOnce(poller).outcome, PollOutcome::kOk);
  modbus_set_response_timeout(ctx, 0, 100000);
  sim.Signal(SIGUSR1);
  std::vector<Record> out;
  EXPECT_EQ(poller.Poll(ctx, out), PollOutcome::kFailed);
  EXPECT_TRUE(out.empty()) << "one failure is not offline yet";
  EXPECT_EQ(poller.Poll(ctx, out), PollOutcome::kFailed);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].type, RecordType::kStatus);
  EXPECT_FALSE(out[0].online);
  EXPECT_EQ(out[1].event, "offline");
  EXPECT_EQ(poller.counters().timeouts, 2u);
}

}  // namespace
}  // namespace sanigate::dev::modbus
