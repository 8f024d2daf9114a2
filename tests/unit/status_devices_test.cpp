// Which devices the retained gateway status lists (gateway/app/status_devices.h): every one on a
// small box; on a large one the offline, the newly failing and, once more, the recovered, so a
// reader taking error rates from two statuses (sanifleet) sees a failure and its end.
#include "app/status_devices.h"

#include <set>

#include <gtest/gtest.h>

namespace sanigate::app {
namespace {

std::vector<dev::DeviceCounters> Trucks(size_t n) {
  std::vector<dev::DeviceCounters> v(n);
  for (size_t i = 0; i < n; ++i) {
    v[i].id = "truck-" + std::to_string(10000 + i);
    v[i].online = true;
    v[i].requests = 100;
  }
  return v;
}

std::set<std::string> Ids(const DeviceSelection& s) {
  std::set<std::string> out;
  for (const auto* d : s.listed) out.insert(d->id);
  return out;
}

TEST(StatusDevicesTest, ASmallBoxListsEveryDevice) {
  StatusDeviceRanking r({.list_all_up_to = 64, .max_listed = 8});
  auto all = Trucks(64);
  auto s = r.Select("modbus", all, true);
  EXPECT_EQ(s.listed.size(), 64u);
  EXPECT_EQ(s.omitted, 0u);
}

TEST(StatusDevicesTest, ALargeBoxListsTheOfflineAndTheNewlyFailingThenTheRecoveredOnce) {
  StatusDeviceRanking r({.list_all_up_to = 64, .max_listed = 8});
  auto all = Trucks(20000);
  auto first = r.Select("jt808", all, true);
  EXPECT_TRUE(first.listed.empty());  // nothing to look at
  EXPECT_EQ(first.omitted, 20000u);

  all[5].online = false;
  all[700].timeouts = 3;
  all[900].errors = 1;
  auto second = r.Select("jt808", all, true);
  EXPECT_EQ(Ids(second), (std::set<std::string>{"truck-10005", "truck-10700", "truck-10900"}));
  EXPECT_EQ(second.listed.front()->id, "truck-10005");  // offline first
  EXPECT_EQ(second.listed[1]->id, "truck-10700");       // then the most new failures
  EXPECT_EQ(second.omitted, 19997u);
  EXPECT_EQ(second.omitted_failing, 0u);

  // 700 failed again, 900 did not: 900 is listed once more (its recovery), then left out.
  all[700].timeouts = 5;
  auto third = r.Select("jt808", all, true);
  EXPECT_EQ(Ids(third), (std::set<std::string>{"truck-10005", "truck-10700", "truck-10900"}));
  auto fourth = r.Select("jt808", all, true);
  EXPECT_EQ(Ids(fourth), (std::set<std::string>{"truck-10005", "truck-10700"}));
}

TEST(StatusDevicesTest, AQueryDoesNotMoveTheBaselineOfTheRetainedStatus) {
  StatusDeviceRanking r({.list_all_up_to = 4, .max_listed = 8});
  auto all = Trucks(10);
  (void)r.Select("modbus", all, true);
  all[3].exceptions = 1;
  for (int i = 0; i < 3; ++i) EXPECT_EQ(Ids(r.Select("modbus", all, false)), std::set<std::string>{"truck-10003"});
  EXPECT_EQ(Ids(r.Select("modbus", all, true)), std::set<std::string>{"truck-10003"});
}

TEST(StatusDevicesTest, WhenTooManyFailTheMostFailingAreListedAndTheRestCounted) {
  StatusDeviceRanking r({.list_all_up_to = 4, .max_listed = 3});
  auto all = Trucks(10);
  (void)r.Select("modbus", all, true);
  for (size_t i = 0; i < 10; ++i) all[i].timeouts = i;  // 1..9 new failures on nine devices
  auto s = r.Select("modbus", all, true);
  EXPECT_EQ(Ids(s), (std::set<std::string>{"truck-10009", "truck-10008", "truck-10007"}));
  EXPECT_EQ(s.omitted, 7u);
  EXPECT_EQ(s.omitted_failing, 6u);
}

TEST(StatusDevicesTest, CountersThatStartOverAfterAnAdapterRestartAreNewFailures) {
  StatusDeviceRanking r({.list_all_up_to = 1, .max_listed = 3});
  auto all = Trucks(3);
  all[1].timeouts = 50;
  (void)r.Select("modbus", all, true);
  (void)r.Select("modbus", all, true);
  EXPECT_TRUE(r.Select("modbus", all, true).listed.empty());
  all[1].timeouts = 2;  // restarted from zero, then two timeouts
  EXPECT_EQ(Ids(r.Select("modbus", all, true)), std::set<std::string>{"truck-10001"});
}

TEST(StatusDevicesTest, PagesCoverEveryDeviceOnceInIdOrder) {
  auto all = Trucks(25);
  std::set<std::string> seen;
  size_t offset = 0, pages = 0;
  while (true) {
    auto page = DevicesPage({.adapter = "jt808", .offset = offset, .limit = 10}, all);
    EXPECT_EQ(page["total"], 25);
    std::string last;
    for (const auto& [id, counters] : page["per_device"].items()) {
      EXPECT_LT(last, id);
      last = id;
      EXPECT_TRUE(seen.insert(id).second) << id;
      EXPECT_EQ(counters["requests"], 100);
    }
    ++pages;
    if (!page.contains("next_offset")) break;
    offset = page["next_offset"].get<size_t>();
  }
  EXPECT_EQ(pages, 3u);
  EXPECT_EQ(seen.size(), 25u);
  EXPECT_EQ(DevicesPage({.adapter = "jt808", .offset = 99, .limit = 10}, all)["count"], 0);
}

}  // namespace
}  // namespace sanigate::app
