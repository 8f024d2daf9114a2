#include "heatmap/gcj02.h"

#include <cmath>
#include <numbers>

namespace sanigate::heatmap {
namespace {

constexpr double kPi = std::numbers::pi;
constexpr double kA = 6378245.0;                     // Krasovsky semi-major axis
constexpr double kEe = 0.00669342162296594323;       // its eccentricity squared

double OffsetLat(double x, double y) {
  double r = -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * std::sqrt(std::abs(x));
  r += (20.0 * std::sin(6.0 * x * kPi) + 20.0 * std::sin(2.0 * x * kPi)) * 2.0 / 3.0;
  r += (20.0 * std::sin(y * kPi) + 40.0 * std::sin(y / 3.0 * kPi)) * 2.0 / 3.0;
  r += (160.0 * std::sin(y / 12.0 * kPi) + 320.0 * std::sin(y * kPi / 30.0)) * 2.0 / 3.0;
  return r;
}

double OffsetLon(double x, double y) {
  double r = 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * std::sqrt(std::abs(x));
  r += (20.0 * std::sin(6.0 * x * kPi) + 20.0 * std::sin(2.0 * x * kPi)) * 2.0 / 3.0;
  r += (20.0 * std::sin(x * kPi) + 40.0 * std::sin(x / 3.0 * kPi)) * 2.0 / 3.0;
  r += (150.0 * std::sin(x / 12.0 * kPi) + 300.0 * std::sin(x / 30.0 * kPi)) * 2.0 / 3.0;
  return r;
}

LatLon Delta(double lat, double lon) {
  double x = lon - 105.0, y = lat - 35.0;
  double phi = lat / 180.0 * kPi;
  double w = 1 - kEe * std::sin(phi) * std::sin(phi);
  double sw = std::sqrt(w);
  double dlat = OffsetLat(x, y) * 180.0 / ((kA * (1 - kEe)) / (w * sw) * kPi);
  double dlon = OffsetLon(x, y) * 180.0 / (kA / sw * std::cos(phi) * kPi);
  return {dlat, dlon};
}

}  // namespace

bool OutsideChina(double lat, double lon) {
  return lon < 72.004 || lon > 137.8347 || lat < 0.8293 || lat > 55.8271;
}

LatLon WgsToGcj(double lat, double lon) {
  if (OutsideChina(lat, lon)) return {lat, lon};
  LatLon d = Delta(lat, lon);
  return {lat + d.lat, lon + d.lon};
}

LatLon GcjToWgs(double lat, double lon) {
  if (OutsideChina(lat, lon)) return {lat, lon};
  LatLon w{lat, lon};
  for (int i = 0; i < 3; ++i) {
    LatLon g = WgsToGcj(w.lat, w.lon);
    w.lat += lat - g.lat;
    w.lon += lon - g.lon;
  }
  return w;
}

}  // namespace sanigate::heatmap
