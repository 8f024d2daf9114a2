// Shared helpers of the fuzz targets: a bounds-checked reader for the first bytes of an input
// (the "knobs" some targets take before the payload), and FUZZ_CHECK, which aborts with a message
// when a property fails, so libFuzzer records the input as a crash and the replay test fails.
// Header-only, no state.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#define FUZZ_CHECK(cond, what)                                                            \
  do {                                                                                    \
    if (!(cond)) {                                                                        \
      std::fprintf(stderr, "%s:%d: property failed: %s (%s)\n", __FILE__, __LINE__, #cond, \
                   std::string(what).c_str());                                            \
      std::abort();                                                                       \
    }                                                                                     \
  } while (0)

namespace fuzz {

// Takes knobs from the front of the input; past the end every read yields 0.
class Knobs {
 public:
  Knobs(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  uint8_t U8() { return pos_ < size_ ? data_[pos_++] : 0; }
  uint16_t U16() { return static_cast<uint16_t>(U8() << 8 | U8()); }
  uint32_t U32() { return uint32_t{U16()} << 16 | U16(); }
  bool Bit() { return U8() & 1; }
  // The rest of the input, after the knobs taken so far.
  std::span<const uint8_t> Rest() const { return {data_ + pos_, size_ - pos_}; }
  std::string_view RestText() const {
    return {reinterpret_cast<const char*>(data_ + pos_), size_ - pos_};
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

inline std::string_view Text(const uint8_t* data, size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

inline std::string Hex(std::span<const uint8_t> b) {
  static const char kDigits[] = "0123456789ABCDEF";
  std::string s;
  for (uint8_t c : b) {
    s += kDigits[c >> 4];
    s += kDigits[c & 15];
  }
  return s;
}

}  // namespace fuzz
