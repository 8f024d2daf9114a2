// Mergeable partial aggregates: what every heat-map cell carries. Two partials of the same cell
// and window (from two sites, two gateways or two halves of a stream) combine by adding counts
// and sums and taking the min of minima and first times and the max of maxima and last times,
// so a city platform merges community feeds without seeing a single raw point.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <limits>

namespace sanigate::heatmap {

struct Agg {
  uint64_t n = 0;
  double sum = 0;
  double min = std::numeric_limits<double>::infinity();
  double max = -std::numeric_limits<double>::infinity();
  int64_t first = std::numeric_limits<int64_t>::max();
  int64_t last = std::numeric_limits<int64_t>::min();

  void Add(double v, int64_t ts) {
    ++n;
    sum += v;
    min = std::min(min, v);
    max = std::max(max, v);
    first = std::min(first, ts);
    last = std::max(last, ts);
  }
  void Merge(const Agg& o) {
    n += o.n;
    sum += o.sum;
    min = std::min(min, o.min);
    max = std::max(max, o.max);
    first = std::min(first, o.first);
    last = std::max(last, o.last);
  }
  bool operator==(const Agg&) const = default;
};

// Layer-specific counters next to the aggregate (see heatmap.h for their meaning per layer).
constexpr int kExtras = 4;
enum class MergeOp { kAdd, kMax };

struct CellAgg {
  Agg agg;
  std::array<double, kExtras> extra{};
  bool operator==(const CellAgg&) const = default;
};

}  // namespace sanigate::heatmap
