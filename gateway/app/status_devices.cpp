#include "app/status_devices.h"

#include <algorithm>
#include <cmath>
#include <tuple>

namespace sanigate::app {

uint64_t Failures(const dev::DeviceCounters& d) { return d.timeouts + d.exceptions + d.errors; }

nlohmann::ordered_json DeviceCountersJson(const dev::DeviceCounters& d) {
  nlohmann::ordered_json j = {{"online", d.online},
                              {"requests", d.requests},
                              {"timeouts", d.timeouts},
                              {"exceptions", d.exceptions},
                              {"errors", d.errors},
                              {"latency_ms", std::round(d.last_latency_ms * 100) / 100},
                              {"max_latency_ms", std::round(d.max_latency_ms * 100) / 100}};
  if (d.polls) {
    j["polls"] = d.polls;
    j["partial_polls"] = d.partial_polls;
    j["wrong_answers"] = d.wrong_answers;
  }
  return j;
}

DeviceSelection StatusDeviceRanking::Select(std::string_view adapter, const std::vector<dev::DeviceCounters>& all,
                                            bool advance) {
  DeviceSelection out;
  std::lock_guard lk(mu_);
  auto key = [&](const dev::DeviceCounters& d) {
    std::string k(adapter);
    k += '/';
    k += d.id;
    return k;
  };
  // Urgency: 0 offline, 1 new failures (more first), 2 recovering, 3 nothing to say.
  struct Candidate {
    int urgency;
    uint64_t new_failures;
    const dev::DeviceCounters* d;
  };
  std::vector<Candidate> candidates;
  candidates.reserve(all.size());
  for (const auto& d : all) {
    auto it = seen_.find(key(d));
    uint64_t before = it == seen_.end() ? 0 : it->second.failures;
    uint64_t now = Failures(d);
    uint64_t fresh = now >= before ? now - before : now;  // counters restart with the adapter
    bool was_failing = it != seen_.end() && it->second.failing;
    int urgency = !d.online ? 0 : fresh > 0 ? 1 : was_failing ? 2 : 3;
    candidates.push_back({urgency, fresh, &d});
  }
  if (all.size() <= limits_.list_all_up_to) {
    for (const auto& c : candidates) out.listed.push_back(c.d);
  } else {
    std::sort(candidates.begin(), candidates.end(), [](const Candidate& a, const Candidate& b) {
      return std::tie(a.urgency, b.new_failures, a.d->id) < std::tie(b.urgency, a.new_failures, b.d->id);
    });
    for (const auto& c : candidates) {
      if (c.urgency < 3 && out.listed.size() < limits_.max_listed) {
        out.listed.push_back(c.d);
        continue;
      }
      ++out.omitted;
      if (c.new_failures > 0) ++out.omitted_failing;
    }
  }
  if (advance) {
    for (const auto& c : candidates) {
      Seen& s = seen_[key(*c.d)];
      s.failures = Failures(*c.d);
      s.failing = c.new_failures > 0;
    }
  }
  return out;
}

nlohmann::ordered_json DevicesPage(const DevicesPageRequest& req, std::vector<dev::DeviceCounters> all) {
  std::sort(all.begin(), all.end(), [](const auto& a, const auto& b) { return a.id < b.id; });
  nlohmann::ordered_json page = nlohmann::ordered_json::object();
  size_t end = std::min(all.size(), req.offset + std::min(req.limit, kMaxDevicesPage));
  for (size_t i = req.offset; i < end; ++i) page[all[i].id] = DeviceCountersJson(all[i]);
  nlohmann::ordered_json j = {{"adapter", req.adapter}, {"total", all.size()}, {"offset", req.offset},
                              {"count", page.size()}, {"per_device", std::move(page)}};
  if (end < all.size()) j["next_offset"] = end;
  return j;
}

}  // namespace sanigate::app
