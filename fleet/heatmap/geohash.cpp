#include "heatmap/geohash.h"

#include <algorithm>
#include <cmath>

namespace sanigate::heatmap {
namespace {

constexpr char kAlphabet[] = "0123456789bcdefghjkmnpqrstuvwxyz";

// Moves bit i of a 32-bit value to bit 2i (the classic "Morton" spread).
uint64_t Spread(uint64_t v) {
  v &= 0xffffffffULL;
  v = (v | (v << 16)) & 0x0000ffff0000ffffULL;
  v = (v | (v << 8)) & 0x00ff00ff00ff00ffULL;
  v = (v | (v << 4)) & 0x0f0f0f0f0f0f0f0fULL;
  v = (v | (v << 2)) & 0x3333333333333333ULL;
  v = (v | (v << 1)) & 0x5555555555555555ULL;
  return v;
}

uint64_t Compact(uint64_t v) {
  v &= 0x5555555555555555ULL;
  v = (v | (v >> 1)) & 0x3333333333333333ULL;
  v = (v | (v >> 2)) & 0x0f0f0f0f0f0f0f0fULL;
  v = (v | (v >> 4)) & 0x00ff00ff00ff00ffULL;
  v = (v | (v >> 8)) & 0x0000ffff0000ffffULL;
  v = (v | (v >> 16)) & 0x00000000ffffffffULL;
  return v;
}

// Geohash bits alternate longitude, latitude, longitude… from the most significant end. At 60
// bits (precision 12) the least significant bit is latitude's, so latitude sits on the even
// positions and longitude on the odd ones; each has 30 bits.
constexpr int kHalfBits = 30;
constexpr double kSteps = 1073741824.0;  // 2^30

uint64_t Quantize(double v, double lo, double span) {
  double q = std::floor((v - lo) * kSteps / span);
  if (!(q >= 0)) return 0;  // also NaN
  if (q >= kSteps) return static_cast<uint64_t>(kSteps) - 1;
  // v - lo may round across a border; the borders themselves (lo + q·span/2^30) are exact in a
  // double, so compare against them to agree with the reference bisection to the last bit.
  double step = span / kSteps;
  if (lo + q * step > v) q -= 1;
  else if (q + 1 < kSteps && lo + (q + 1) * step <= v) q += 1;
  return static_cast<uint64_t>(q);
}

// Splits a cell into its latitude and longitude indices and their bit counts.
struct Axes {
  uint64_t lat, lon;
  int lat_bits, lon_bits;
};

Axes Split(uint64_t cell, int precision) {
  int shift = 5 * (kMaxPrecision - precision);
  uint64_t full = cell << shift;  // back to 60 bits, the lower ones zero
  Axes a{Compact(full), Compact(full >> 1), 0, 0};
  int bits = 5 * precision;
  a.lon_bits = (bits + 1) / 2;
  a.lat_bits = bits / 2;
  a.lat >>= kHalfBits - a.lat_bits;
  a.lon >>= kHalfBits - a.lon_bits;
  return a;
}

uint64_t Join(uint64_t lat, uint64_t lon, int precision) {
  int bits = 5 * precision;
  int lon_bits = (bits + 1) / 2, lat_bits = bits / 2;
  uint64_t full = Spread(lat << (kHalfBits - lat_bits)) | (Spread(lon << (kHalfBits - lon_bits)) << 1);
  return full >> (5 * (kMaxPrecision - precision));
}

}  // namespace

uint64_t Encode(double lat, double lon, int precision) {
  uint64_t full = Spread(Quantize(lat, -90.0, 180.0)) | (Spread(Quantize(lon, -180.0, 360.0)) << 1);
  return full >> (5 * (kMaxPrecision - precision));
}

CellBounds Bounds(uint64_t cell, int precision) {
  Axes a = Split(cell, precision);
  double lat_step = 180.0 / std::ldexp(1.0, a.lat_bits), lon_step = 360.0 / std::ldexp(1.0, a.lon_bits);
  double lat0 = -90.0 + static_cast<double>(a.lat) * lat_step, lon0 = -180.0 + static_cast<double>(a.lon) * lon_step;
  return {lat0, lat0 + lat_step, lon0, lon0 + lon_step};
}

std::string ToString(uint64_t cell, int precision) {
  std::string s(static_cast<size_t>(precision), '0');
  for (int i = precision - 1; i >= 0; --i, cell >>= 5) s[static_cast<size_t>(i)] = kAlphabet[cell & 31];
  return s;
}

std::optional<uint64_t> Parse(std::string_view text) {
  if (text.empty() || text.size() > kMaxPrecision) return std::nullopt;
  uint64_t cell = 0;
  for (char c : text) {
    char lower = static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
    const char* at = std::find(kAlphabet, kAlphabet + 32, lower);
    if (at == kAlphabet + 32) return std::nullopt;
    cell = (cell << 5) | static_cast<uint64_t>(at - kAlphabet);
  }
  return cell;
}

std::optional<uint64_t> Neighbour(uint64_t cell, int precision, int dlat, int dlon) {
  Axes a = Split(cell, precision);
  int64_t lat = static_cast<int64_t>(a.lat) + dlat;
  if (lat < 0 || lat >= (int64_t{1} << a.lat_bits)) return std::nullopt;
  int64_t lon_count = int64_t{1} << a.lon_bits;
  int64_t lon = ((static_cast<int64_t>(a.lon) + dlon) % lon_count + lon_count) % lon_count;
  return Join(static_cast<uint64_t>(lat), static_cast<uint64_t>(lon), precision);
}

}  // namespace sanigate::heatmap
