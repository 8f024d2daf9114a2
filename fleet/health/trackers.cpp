#include "health/trackers.h"

#include <algorithm>
#include <cmath>

namespace sanigate::fleet::detail {

void IntervalLearner::Add(int64_t ts_ms) {
  if (last_ts_ == kNoTime || ts_ms < last_ts_) {  // first point, or the clock went back
    last_ts_ = ts_ms;
    return;
  }
  int64_t gap = ts_ms - last_ts_;
  if (gap < kMinGapMs) return;  // same uplink or a duplicate: keep the base
  last_ts_ = ts_ms;
  Push(std::min(gap, kMaxGapMs));
}

void IntervalLearner::Seed(int64_t interval_ms) {
  if (interval_ms <= 0) return;
  int64_t gap = std::clamp(interval_ms, kMinGapMs, kMaxGapMs);
  count_ = 0;
  next_ = 0;
  for (int i = 0; i < kMinGaps; ++i) Push(gap);
}

void IntervalLearner::Push(int64_t gap_ms) {
  gaps_[next_] = static_cast<uint32_t>(gap_ms);
  next_ = static_cast<uint8_t>((next_ + 1) % kWindow);
  if (count_ < kWindow) ++count_;
}

int64_t IntervalLearner::Estimate() const {
  if (count_ < kMinGaps) return 0;
  std::array<uint32_t, kWindow> sorted = gaps_;
  auto mid = sorted.begin() + count_ / 2;
  std::nth_element(sorted.begin(), mid, sorted.begin() + count_);
  return *mid;
}

void MeanWindow::Add(double value) {
  double t = std::clamp(std::round(value * 10), -32768.0, 32767.0);
  tenths_[next_] = static_cast<int16_t>(t);
  next_ = static_cast<uint8_t>((next_ + 1) % kSize);
  if (count_ < kSize) ++count_;
}

double MeanWindow::Mean() const {
  if (count_ == 0) return 0;
  int sum = 0;
  for (int i = 0; i < count_; ++i) sum += tenths_[i];
  return sum / (10.0 * count_);
}

std::vector<double> MeanWindow::Samples() const {
  std::vector<double> out;
  out.reserve(count_);
  // Before the ring is full the samples sit at 0..count-1; after, the oldest is at next_.
  int start = count_ == kSize ? next_ : 0;
  for (int i = 0; i < count_; ++i) out.push_back(tenths_[(start + i) % kSize] / 10.0);
  return out;
}

LossWindow::Saved LossWindow::Save() const {
  return Saved{bits_[0], bits_[1], head_, filled_, last_fcnt_, last_lost_};
}

void LossWindow::Load(const Saved& saved) {
  *this = LossWindow();
  if (saved.head < 0 || saved.head >= kFrames || saved.filled < 0 || saved.filled > kFrames) return;
  bits_ = {saved.bits_lo, saved.bits_hi};
  head_ = static_cast<uint8_t>(saved.head);
  filled_ = static_cast<uint8_t>(saved.filled);
  last_fcnt_ = saved.last_fcnt;
  last_lost_ = saved.last_lost;
  // Count the lost frames from the bits rather than trusting a stored count; bits outside the
  // filled part are cleared so that they never count.
  lost_ = 0;
  for (int i = 0; i < kFrames; ++i) {
    int slot = (head_ - filled_ + i + kFrames) % kFrames;  // the filled_ slots before head_
    uint64_t mask = uint64_t{1} << (slot % 64);
    if (i >= filled_) {
      bits_[slot / 64] &= ~mask;
    } else if (bits_[slot / 64] & mask) {
      ++lost_;
    }
  }
}

void LossWindow::Push(bool lost) {
  uint64_t& word = bits_[head_ / 64];
  uint64_t mask = uint64_t{1} << (head_ % 64);
  if (filled_ == kFrames) {
    if (word & mask) --lost_;
  } else {
    ++filled_;
  }
  if (lost) {
    word |= mask;
    ++lost_;
  } else {
    word &= ~mask;
  }
  head_ = static_cast<uint8_t>((head_ + 1) % kFrames);
}

void LossWindow::PushLost(int64_t n) {
  for (int64_t i = 0; i < std::min<int64_t>(n, kFrames); ++i) Push(true);
}

void LossWindow::AddFcnt(int64_t fcnt) {
  if (fcnt < 0) return;
  if (last_fcnt_ >= 0 && fcnt == last_fcnt_) return;  // the same uplink again
  if (last_fcnt_ >= 0 && fcnt > last_fcnt_) PushLost(fcnt - last_fcnt_ - 1);
  // first frame, or fcnt dropped (re-join, 16-bit rollover): new baseline without loss
  last_fcnt_ = fcnt;
  Push(false);
}

void LossWindow::AddFramesLost(int64_t cumulative_lost) {
  if (cumulative_lost < 0) return;
  if (last_lost_ >= 0 && cumulative_lost >= last_lost_) PushLost(cumulative_lost - last_lost_);
  last_lost_ = cumulative_lost;
  Push(false);
}

void StuckTracker::Add(double v, int64_t ts_ms) {
  if (count == 0 || v != value) {
    value = v;
    count = 1;
    first_ts = ts_ms;
  } else if (count < UINT32_MAX) {
    ++count;
  }
  last_ts = ts_ms;
}

}  // namespace sanigate::fleet::detail
