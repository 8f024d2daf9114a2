// The outbox tests' collector of shed reports: the outbox reports from its writer thread, the
// test waits for a total. Declare it before the outbox it is attached to: the outbox may still
// report while it closes.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <vector>

#include "store/outbox.h"

namespace sanigate::store {

class ShedLog {
 public:
  void Attach(Outbox& ob) {
    ob.SetShedListener([this](const ShedReport& r) {
      std::lock_guard lk(mu_);
      reports_.push_back(r);
      cv_.notify_all();
    });
  }
  // True once the reports add up to at least `rows` (waits up to 30 s).
  bool WaitForRows(uint64_t rows) {
    std::unique_lock lk(mu_);
    return cv_.wait_for(lk, std::chrono::seconds(30), [&] { return TotalLocked() >= rows; });
  }
  uint64_t Total() {
    std::lock_guard lk(mu_);
    return TotalLocked();
  }
  std::vector<ShedReport> reports() {
    std::lock_guard lk(mu_);
    return reports_;
  }

 private:
  uint64_t TotalLocked() const {
    uint64_t n = 0;
    for (const auto& r : reports_) n += r.rows;
    return n;
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<ShedReport> reports_;
};

}  // namespace sanigate::store
