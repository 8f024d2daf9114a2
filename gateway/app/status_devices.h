// Which devices' counters the gateway status lists. A small box lists every device; a large one
// (a depot of 18,000 trucks) lists only the devices someone must look at, so the retained status
// stays a few KB and is cheap to republish every interval:
//   1. offline devices,
//   2. devices with new failures (timeouts, exceptions, errors) since the previous retained status,
//   3. devices that had new failures at the previous retained status and none since: listed once
//      more, so a reader computing an error rate from two statuses (sanifleet) sees them recover.
// Everything else is counted as omitted; every device's counters are on request, page by page,
// through the admin verb `devices`.
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "api/adapter.h"

namespace sanigate::app {

struct StatusDeviceLimits {
  size_t list_all_up_to = 64;  // an adapter with at most this many devices lists them all
  size_t max_listed = 32;      // otherwise at most this many, the most urgent first
};

struct DeviceSelection {
  std::vector<const dev::DeviceCounters*> listed;
  size_t omitted = 0;          // devices not listed
  size_t omitted_failing = 0;  // of them, with new failures (only when max_listed was too few)
};

class StatusDeviceRanking {
 public:
  explicit StatusDeviceRanking(StatusDeviceLimits limits = {}) : limits_(limits) {}

  // `advance`: this selection goes into the retained status, so its failure counts become the
  // baseline "new failures" are measured against (an admin query or a scrape leaves it alone).
  DeviceSelection Select(std::string_view adapter, const std::vector<dev::DeviceCounters>& all, bool advance);

 private:
  struct Seen {
    uint64_t failures = 0;
    bool failing = false;  // had new failures at the last retained status
  };
  StatusDeviceLimits limits_;
  std::mutex mu_;
  std::unordered_map<std::string, Seen> seen_;  // "adapter/device"
};

uint64_t Failures(const dev::DeviceCounters& d);

// One device's counters as the status shows them (also the admin verb `devices`).
nlohmann::ordered_json DeviceCountersJson(const dev::DeviceCounters& d);

// The admin verb `devices`: {"adapter": name, "offset": n, "limit": n (1..kMaxDevicesPage)} over
// the adapters' counters sorted by id. Returns the answer's `result` or an error message.
inline constexpr size_t kMaxDevicesPage = 1000;
struct DevicesPageRequest {
  std::string adapter;
  size_t offset = 0;
  size_t limit = 200;
};
nlohmann::ordered_json DevicesPage(const DevicesPageRequest& req, std::vector<dev::DeviceCounters> all);

}  // namespace sanigate::app
