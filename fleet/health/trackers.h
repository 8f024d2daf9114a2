// Small per-device trackers of the health evaluator (internal header): interval learning, radio
// averaging, LoRaWAN frame loss and stuck values. Fixed-size, allocation-free value types (except
// StuckTracker's metric name) so that 50k devices stay cheap. Not thread-safe.
#pragma once

#include <array>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

namespace sanigate::fleet::detail {

inline constexpr int64_t kNoTime = std::numeric_limits<int64_t>::min();

// Learns a device's reporting interval as the median of the last kWindow gaps between consecutive
// live readings/events, by measurement time (ts_ms). A median ignores the odd outage gap or burst
// that would drag an average; for an even count the upper middle is taken (errs long, so fewer
// false "silent"). Gaps below 1 s are ignored (duplicates, a reading and an event of the same
// uplink) without moving the base; a timestamp going backwards (clock reset, reordering) only
// moves the base; gaps are clamped to 7 days. No estimate before kMinGaps gaps.
class IntervalLearner {
 public:
  static constexpr int kWindow = 7;
  static constexpr int kMinGaps = 3;
  static constexpr int64_t kMinGapMs = 1000;
  static constexpr int64_t kMaxGapMs = 7 * 24 * 3600'000LL;

  void Add(int64_t ts_ms);
  // Restores a previously learned interval as if kMinGaps gaps of that length had been seen.
  void Seed(int64_t interval_ms);
  int64_t Estimate() const;  // 0 = not known yet
  int gaps() const { return count_; }

 private:
  void Push(int64_t gap_ms);

  int64_t last_ts_ = kNoTime;
  std::array<uint32_t, kWindow> gaps_{};  // ms; 7 days fits in 32 bits
  uint8_t count_ = 0;
  uint8_t next_ = 0;
};

// Mean of the last kSize samples, stored in tenths as int16 (±3276.7 covers dBm and dB).
class MeanWindow {
 public:
  static constexpr int kSize = 5;
  void Add(double value);
  bool full() const { return count_ == kSize; }
  double Mean() const;  // of the samples held; 0 when empty
  // The samples held, oldest first; Add-ing them to an empty window rebuilds it (persistence).
  std::vector<double> Samples() const;

 private:
  std::array<int16_t, kSize> tenths_{};
  uint8_t count_ = 0;
  uint8_t next_ = 0;
};

// Frame loss over the last kFrames expected frames: one bit per expected frame (1 = lost) in a
// 128-bit ring. Fed either with the LoRaWAN frame counter of each uplink (a gap of n = n lost;
// a repeat is ignored; a drop is a re-join or a rollover: new baseline, no loss) or with the
// gateway's cumulative lost-frame counter (delta = lost; a drop is a new baseline).
class LossWindow {
 public:
  static constexpr int kFrames = 100;
  void AddFcnt(int64_t fcnt);
  void AddFramesLost(int64_t cumulative_lost);
  int expected() const { return filled_; }
  int lost() const { return lost_; }
  // The whole ring and its baselines, to carry the window across a restart of sanifleet.
  struct Saved {
    uint64_t bits_lo = 0, bits_hi = 0;
    int head = 0, filled = 0;
    int64_t last_fcnt = -1, last_lost = -1;
  };
  Saved Save() const;
  void Load(const Saved& saved);  // out-of-range values leave an empty window

 private:
  void Push(bool lost);
  void PushLost(int64_t n);

  std::array<uint64_t, 2> bits_{};
  uint8_t head_ = 0;
  uint8_t filled_ = 0;
  uint8_t lost_ = 0;
  int64_t last_fcnt_ = -1;
  int64_t last_lost_ = -1;
};

// Run of identical values of one watched metric: value, run length and first/last measurement.
struct StuckTracker {
  std::string metric;
  double value = 0;
  uint32_t count = 0;
  int64_t first_ts = 0;
  int64_t last_ts = 0;

  void Add(double v, int64_t ts_ms);
};

}  // namespace sanigate::fleet::detail
