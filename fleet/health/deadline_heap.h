// Indexed binary min-heap of deadlines (internal header): each item is queued at most once and
// remembers its own slot (T::heap_pos), so moving or cancelling a deadline is O(log n) and no
// stale entries pile up when a device reports more often than its timers fire. Not thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

namespace sanigate::fleet::detail {

inline constexpr uint32_t kNotQueued = std::numeric_limits<uint32_t>::max();

template <typename T>  // T has a member `uint32_t heap_pos` initialised to kNotQueued
class DeadlineHeap {
 public:
  void Schedule(T* item, int64_t at) {
    if (item->heap_pos == kNotQueued) {
      item->heap_pos = static_cast<uint32_t>(entries_.size());
      entries_.push_back({at, item});
      Up(item->heap_pos);
      return;
    }
    size_t pos = item->heap_pos;
    int64_t old = entries_[pos].at;
    entries_[pos].at = at;
    if (at < old) {
      Up(pos);
    } else if (at > old) {
      Down(pos);
    }
  }

  void Cancel(T* item) {
    size_t pos = item->heap_pos;
    if (pos == kNotQueued) return;
    item->heap_pos = kNotQueued;
    size_t last = entries_.size() - 1;
    if (pos != last) {
      entries_[pos] = entries_[last];
      entries_[pos].item->heap_pos = static_cast<uint32_t>(pos);
    }
    entries_.pop_back();
    if (pos < entries_.size()) {
      T* moved = entries_[pos].item;
      Up(pos);
      Down(moved->heap_pos);
    }
  }

  // The earliest item if its deadline is <= now, removed from the heap; else nullptr.
  T* PopDue(int64_t now) {
    if (entries_.empty() || entries_.front().at > now) return nullptr;
    T* item = entries_.front().item;
    Cancel(item);
    return item;
  }

  int64_t NextDeadline() const {
    return entries_.empty() ? std::numeric_limits<int64_t>::max() : entries_.front().at;
  }
  size_t size() const { return entries_.size(); }

 private:
  struct Entry {
    int64_t at;
    T* item;
  };

  void Swap(size_t a, size_t b) {
    std::swap(entries_[a], entries_[b]);
    entries_[a].item->heap_pos = static_cast<uint32_t>(a);
    entries_[b].item->heap_pos = static_cast<uint32_t>(b);
  }
  void Up(size_t pos) {
    while (pos > 0) {
      size_t parent = (pos - 1) / 2;
      if (entries_[parent].at <= entries_[pos].at) break;
      Swap(parent, pos);
      pos = parent;
    }
  }
  void Down(size_t pos) {
    for (;;) {
      size_t left = 2 * pos + 1;
      if (left >= entries_.size()) break;
      size_t best = left;
      if (left + 1 < entries_.size() && entries_[left + 1].at < entries_[left].at) best = left + 1;
      if (entries_[pos].at <= entries_[best].at) break;
      Swap(pos, best);
      pos = best;
    }
  }

  std::vector<Entry> entries_;
};

}  // namespace sanigate::fleet::detail
