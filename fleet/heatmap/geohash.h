// Geohash cells: the heat map's global grid. A cell is its geohash as an integer (5 bits per
// character, the most significant first), so a coarser cell is a right shift and cells from any
// site or gateway line up. Precision 6 ≈ 1.2 km × 0.6 km, 7 ≈ 153 m × 153 m, 8 ≈ 38 m × 19 m.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace sanigate::heatmap {

constexpr int kMaxPrecision = 12;  // 60 bits

struct CellBounds {
  double lat_min, lat_max, lon_min, lon_max;
  double lat_center() const { return (lat_min + lat_max) / 2; }
  double lon_center() const { return (lon_min + lon_max) / 2; }
};

// The cell holding (lat, lon) at `precision` (1..12). Latitudes outside ±90 and longitudes
// outside ±180 are clamped. A point on a border belongs to the cell north and east of it,
// as in the reference bisection.
uint64_t Encode(double lat, double lon, int precision);
// The cell containing `cell` (given at precision `from`) at the coarser precision `to`.
inline uint64_t Parent(uint64_t cell, int from, int to) { return cell >> (5 * (from - to)); }
CellBounds Bounds(uint64_t cell, int precision);
std::string ToString(uint64_t cell, int precision);
// Case-insensitive; nullopt for an empty string, more than 12 characters or a letter outside
// the geohash alphabet (a, i, l, o).
std::optional<uint64_t> Parse(std::string_view text);
// The cell `dlat` rows north and `dlon` columns east; nullopt beyond the poles. Longitude wraps.
std::optional<uint64_t> Neighbour(uint64_t cell, int precision, int dlat, int dlon);

}  // namespace sanigate::heatmap
