// WGS-84 ↔ GCJ-02, the datum Chinese map providers (AMap, Tencent) require. The public,
// reverse-engineered formula (protocols.md §6); points outside its China box are not moved.
#pragma once

namespace sanigate::heatmap {

struct LatLon {
  double lat, lon;
};

bool OutsideChina(double lat, double lon);
LatLon WgsToGcj(double lat, double lon);
// Iterates the forward transform (three steps: well under a millimetre inside the box).
LatLon GcjToWgs(double lat, double lon);

}  // namespace sanigate::heatmap
