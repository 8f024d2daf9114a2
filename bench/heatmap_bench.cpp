// Heat-map figures (never run by ctest). Three runs over the engine sanifleet uses:
//   1. binning: replayed truck positions binned per second on one core (target ≥ 2M/s), with
//      the geohash encoding alone for reference. Trucks drive fixed 2-hour routes over and over
//      (as sanitation routes are), with a few metres of GNSS noise; a second figure has every
//      truck on an endless random walk, where nearly every point is a new 40 m cell (worst case);
//   2. feed rebuild: every layer's feed JSON for 20k vehicles and 50k bins (the retained
//      payloads sanifleet publishes each feed interval), with their sizes;
//   3. memory: a city-sized day (DAY_VEHICLES trucks on their routes every 10 s for 24 h, 50k
//      bins hourly, overflow events) in 15 min / 1 h / 24 h windows at precision 8 kept 24 h,
//      as the RSS growth of the process.
// TakeClosed (the fold of closed 15-minute windows) runs every 10 s of replayed time, as in
// sanifleet, and is part of the measured time.
// Usage: heatmap_bench [BINNING_POINTS=5000000] [DAY_VEHICLES=600]
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "heatmap/feed.h"
#include "heatmap/geohash.h"
#include "heatmap/heatmap.h"

using namespace sanigate::heatmap;
using Clock = std::chrono::steady_clock;

namespace {

constexpr int64_t kDayStart = 1763654400000;  // 2025-11-21 00:00 UTC+8
// A city the size of Xiamen's island and its near districts.
constexpr double kLat0 = 24.40, kLat1 = 24.62, kLon0 = 117.95, kLon1 = 118.25;

double Seconds(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

long RssKiB() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  return 0;
}

double CpuSeconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + (u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

// A truck driving the streets: straight runs of ~60 m per 10 s with turns now and then.
struct Truck {
  double lat, lon, heading;
  void Step(std::mt19937& rng, double metres) {
    std::uniform_real_distribution<double> u(0, 1);
    if (u(rng) < 0.1) heading += (u(rng) < 0.5 ? 1 : -1) * M_PI / 2;
    lat += std::cos(heading) * metres / 111'000.0;
    lon += std::sin(heading) * metres / (111'000.0 * std::cos(lat * M_PI / 180));
    if (lat < kLat0 || lat > kLat1) heading = M_PI - heading, lat = std::clamp(lat, kLat0, kLat1);
    if (lon < kLon0 || lon > kLon1) heading = -heading, lon = std::clamp(lon, kLon0, kLon1);
  }
};

std::vector<Truck> Trucks(size_t n, std::mt19937& rng) {
  std::uniform_real_distribution<double> la(kLat0, kLat1), lo(kLon0, kLon1), h(0, 2 * M_PI);
  std::vector<Truck> t(n);
  for (auto& x : t) x = {la(rng), lo(rng), h(rng)};
  return t;
}

// Each truck's route: 720 points 10 s apart (two hours, ~43 km), driven again and again.
struct Fleet {
  std::vector<std::vector<std::pair<double, double>>> routes;
  std::mt19937 rng{11};
  std::normal_distribution<double> noise{0, 3.0 / 111'000};  // ~3 m of GNSS noise
  explicit Fleet(size_t trucks) {
    std::mt19937 r(5);
    auto walkers = Trucks(trucks, r);
    routes.resize(trucks);
    for (size_t v = 0; v < trucks; ++v)
      for (int i = 0; i < 720; ++i) {
        walkers[v].Step(r, 60);
        routes[v].emplace_back(walkers[v].lat, walkers[v].lon);
      }
  }
  std::pair<double, double> At(size_t truck, int64_t step) {
    auto p = routes[truck][static_cast<size_t>(step % 720)];
    return {p.first + noise(rng), p.second + noise(rng)};
  }
};

struct Point {
  int64_t ts;
  double lat, lon, speed;
  uint32_t device;
};

std::vector<Point> RouteReplay(size_t points, size_t vehicles) {
  Fleet fleet(vehicles);
  std::vector<Point> replay;
  replay.reserve(points);
  for (int64_t step = 0; replay.size() < points; ++step)
    for (size_t v = 0; v < vehicles && replay.size() < points; ++v) {
      auto [lat, lon] = fleet.At(v, step + static_cast<int64_t>(v) * 7);
      replay.push_back({kDayStart + step * 10'000, lat, lon, 21.6, static_cast<uint32_t>(v)});
    }
  return replay;
}

std::vector<Point> RandomWalkReplay(size_t points, size_t vehicles) {
  std::mt19937 rng(1);
  auto trucks = Trucks(vehicles, rng);
  std::vector<Point> replay;
  replay.reserve(points);
  for (int64_t step = 0; replay.size() < points; ++step)
    for (size_t v = 0; v < vehicles && replay.size() < points; ++v) {
      trucks[v].Step(rng, 60);
      replay.push_back({kDayStart + step * 10'000, trucks[v].lat, trucks[v].lon, 21.6, static_cast<uint32_t>(v)});
    }
  return replay;
}

// Bins the replay as sanifleet would (TakeClosed every 10 s of replayed time); returns points/s.
double Replay(HeatmapEngine& e, const std::vector<Point>& replay, const std::vector<HeatmapEngine::DeviceId>& ids,
              double* cpu_rate) {
  double c0 = CpuSeconds();
  auto t0 = Clock::now();
  int64_t next_tick = 0;
  for (const Point& p : replay) {
    e.Position(ids[p.device], false, p.ts, p.lat, p.lon, p.speed, false, p.ts);
    if (p.ts >= next_tick) {
      e.TakeClosed(p.ts);
      next_tick = p.ts + 10'000;
    }
  }
  double wall = Seconds(t0, Clock::now());
  if (cpu_rate) *cpu_rate = static_cast<double>(replay.size()) / (CpuSeconds() - c0);
  return static_cast<double>(replay.size()) / wall;
}

void Binning(size_t points) {
  const size_t vehicles = 2000;
  std::vector<Point> replay = RouteReplay(points, vehicles);
  HeatmapEngine e({});
  std::vector<HeatmapEngine::DeviceId> ids;
  for (size_t v = 0; v < vehicles; ++v) ids.push_back(e.Device("truck-" + std::to_string(v)));
  // Encoding alone.
  auto t0 = Clock::now();
  uint64_t sink = 0;
  for (const Point& p : replay) sink ^= Encode(p.lat, p.lon, kStoragePrecision);
  auto t1 = Clock::now();
  double cpu_rate = 0;
  double rate = Replay(e, replay, ids, &cpu_rate);
  auto s = e.stats();
  std::printf("binning: %zu positions of %zu trucks on routes (%.1f h replayed), windows 15m/1h/24h, precision 8 stored\n",
              points, vehicles, static_cast<double>(replay.back().ts - replay.front().ts) / 3600e3);
  std::printf("  geohash encode alone     %.1f M points/s (checksum %llx)\n", points / Seconds(t0, t1) / 1e6,
              static_cast<unsigned long long>(sink & 0xff));
  std::printf("  engine, one thread       %.2f M points/s wall, %.2f M points/CPU-s (target >= 2 M/s/core)\n", rate / 1e6,
              cpu_rate / 1e6);
  std::printf("  cells stored             %llu in %llu windows\n", static_cast<unsigned long long>(s.cells),
              static_cast<unsigned long long>(s.windows));
  HeatmapConfig gcj;
  gcj.crs = Crs::kGcj02;
  HeatmapEngine g(gcj);
  for (size_t v = 0; v < vehicles; ++v) g.Device("truck-" + std::to_string(v));
  std::printf("  engine with crs=gcj02    %.2f M points/s wall\n", Replay(g, replay, ids, nullptr) / 1e6);
  std::vector<Point> walk = RandomWalkReplay(points, vehicles);
  HeatmapEngine w({});
  for (size_t v = 0; v < vehicles; ++v) w.Device("truck-" + std::to_string(v));
  double walk_rate = Replay(w, walk, ids, nullptr);
  std::printf("  random walk (worst case) %.2f M points/s wall, %llu cells stored\n", walk_rate / 1e6,
              static_cast<unsigned long long>(w.stats().cells));
}

void Rebuild() {
  std::mt19937 rng(2);
  HeatmapEngine e({});
  const size_t vehicles = 20'000, bins = 50'000;
  auto trucks = Trucks(vehicles, rng);
  std::uniform_real_distribution<double> la(kLat0, kLat1), lo(kLon0, kLon1), fill(0, 100);
  int64_t now = kDayStart + 10 * 3600'000;
  // Each truck: the last 15 minutes at 10 s; each bin: its last 4 hourly readings; 2 % overflow.
  for (size_t v = 0; v < vehicles; ++v) {
    auto id = e.Device("truck-" + std::to_string(v));
    for (int i = 90; i > 0; --i) {
      trucks[v].Step(rng, 60);
      e.Position(id, false, now - i * 10'000, trucks[v].lat, trucks[v].lon, 20.0, false, now);
    }
  }
  for (size_t b = 0; b < bins; ++b) {
    auto id = e.Device("bin-" + std::to_string(b));
    double lat = la(rng), lon = lo(rng);
    for (int h = 4; h > 0; --h) e.Fill(id, now - h * 3600'000, lat, lon, fill(rng), now);
    if (b % 50 == 0) e.Event(id, now - 3 * 3600'000, lat, lon, "overflow", true, false, now);
    if (b % 500 == 0) e.Event(id, now - 600'000, lat, lon, "fire", true, false, now);
  }
  // Queries as sanictl and the admin verb make them: the state and the current hour of the
  // city at each precision (S7a: a city bounding box with 20k vehicles, p99 <= 50 ms).
  std::vector<double> query_ms;
  for (int round = 0; round < 20; ++round)
    for (int p = kCoarsestPrecision; p <= kStoragePrecision; ++p) {
      auto t0 = Clock::now();
      std::string a = QueryJson(e, "xiamen", Layer::kVehicleCoverage, 0, now, p, now).dump();
      std::string b = QueryJson(e, "xiamen", Layer::kVehicleCoverage, 3600, now, p, now).dump();
      query_ms.push_back(Seconds(t0, Clock::now()) * 1e3 / 2);
    }
  std::sort(query_ms.begin(), query_ms.end());
  std::printf("query (admin verb heatmap, vehicle_coverage state and 1 h window, precision 6-8, %zu queries): p50 %.1f ms, p99 %.1f ms "
              "(target p99 <= 50 ms)\n",
              query_ms.size(), query_ms[query_ms.size() / 2], query_ms[query_ms.size() * 99 / 100]);
  std::printf("feed rebuild: %zu vehicles, %zu bins, precision 7, windows 15m/1h/24h\n", vehicles, bins);
  for (int i = 0; i < kLayerCount; ++i) {
    Layer l = static_cast<Layer>(i);
    auto t0 = Clock::now();
    std::string payload = FeedJson(e, "xiamen", l, now).dump();
    auto t1 = Clock::now();
    std::printf("  %-17s %7.1f ms  %8.1f KiB\n", LayerName(l), Seconds(t0, t1) * 1e3, payload.size() / 1024.0);
  }
}

void CityDay(size_t vehicles) {
  long rss0 = RssKiB();
  std::mt19937 rng(3);
  HeatmapEngine e({});
  Fleet fleet(vehicles);
  std::vector<HeatmapEngine::DeviceId> truck_ids, bin_ids;
  for (size_t v = 0; v < vehicles; ++v) truck_ids.push_back(e.Device("truck-" + std::to_string(v)));
  const size_t bins = 50'000;
  std::uniform_real_distribution<double> la(kLat0, kLat1), lo(kLon0, kLon1), fill(0, 100);
  std::vector<std::pair<double, double>> bin_at;
  for (size_t b = 0; b < bins; ++b) {
    bin_ids.push_back(e.Device("bin-" + std::to_string(b)));
    bin_at.emplace_back(la(rng), lo(rng));
  }
  uint64_t points = 0, readings = 0;
  auto t0 = Clock::now();
  for (int64_t ts = kDayStart; ts < kDayStart + 86400'000; ts += 10'000) {
    for (size_t v = 0; v < vehicles; ++v) {
      auto [lat, lon] = fleet.At(v, (ts - kDayStart) / 10'000 + static_cast<int64_t>(v) * 7);
      e.Position(truck_ids[v], false, ts, lat, lon, 21.6, false, ts);
      ++points;
    }
    if (ts % 3600'000 == 0) {
      for (size_t b = 0; b < bins; ++b) e.Fill(bin_ids[b], ts, bin_at[b].first, bin_at[b].second, fill(rng), ts);
      for (size_t b = ts / 3600'000 % 50; b < bins; b += 50)
        e.Event(bin_ids[b], ts, bin_at[b].first, bin_at[b].second, "overflow", (ts / 3600'000) % 2 == 0, false, ts);
      readings += bins;
    }
    if (ts % 10'000 == 0) e.TakeClosed(ts);
  }
  auto s = e.stats();
  long rss1 = RssKiB();
  std::printf("city day: %zu trucks on routes every 10 s for 24 h (%llu points), %zu bins hourly (%llu readings) in %.1f s\n", vehicles,
              static_cast<unsigned long long>(points), bins, static_cast<unsigned long long>(readings), Seconds(t0, Clock::now()));
  std::printf("  stored: %llu cells in %llu windows; RSS +%.1f MiB (%.0f bytes per stored cell)\n",
              static_cast<unsigned long long>(s.cells), static_cast<unsigned long long>(s.windows), (rss1 - rss0) / 1024.0,
              (rss1 - rss0) * 1024.0 / static_cast<double>(s.cells));
}

}  // namespace

int main(int argc, char** argv) {
  size_t points = argc > 1 ? std::stoul(argv[1]) : 5'000'000;
  size_t day_vehicles = argc > 2 ? std::stoul(argv[2]) : 600;
  Binning(points);
  Rebuild();
  CityDay(day_vehicles);
}
