// From NMEA sentences to vehicle readings, without I/O: the epoch assembler joins the RMC, GGA
// and VTG of one UTC time into one Fix, Throttle keeps at most one reading per interval, and
// ToReading maps a Fix onto the vehicle model shared with JT/T 808. Each object belongs to one
// source and is not thread-safe; the wall clock is injected so tests control "today".
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "core/record.h"
#include "nmea/nmea_parser.h"

namespace sanigate::dev::nmea {

inline constexpr double kKmhPerKnot = 1.852;
inline constexpr int64_t kDayMs = 86'400'000;

// What the sentences of one epoch said together. Metrics absent from every sentence stay empty.
struct Fix {
  int64_t ts_ms = 0;  // the receiver's UTC time of the measurement
  bool fix = false;   // a valid position: RMC status A (mode not N) and GGA quality > 0
  std::optional<Position> position;  // only with a fix
  std::optional<double> speed_kmh;   // only with a fix
  std::optional<double> heading_deg;
  std::optional<double> altitude_m;
  std::optional<double> hdop;
  std::optional<int64_t> satellites;  // also without a fix: "0 satellites" explains why
};

class EpochAssembler {
 public:
  using WallClock = std::function<int64_t()>;  // UTC ms since the Unix epoch
  explicit EpochAssembler(WallClock now);

  // Adds one parsed sentence; a completed epoch is appended to `out`. An epoch completes when a
  // sentence with another time arrives or when it has both RMC and GGA (no need to wait a
  // whole second for the next burst). VTG has no time and joins the pending epoch.
  void Add(const Sentence& s, std::vector<Fix>& out);
  // Completes the pending epoch now (the source went quiet, disconnected or we stop).
  void Flush(std::vector<Fix>& out);
  bool pending() const { return pending_.has_value(); }

 private:
  struct Pending {
    int32_t tod_ms = 0;
    std::optional<Rmc> rmc;
    std::optional<Gga> gga;
    std::optional<Vtg> vtg;
  };
  Fix Complete(const Pending& p);
  int64_t Timestamp(const Pending& p);

  WallClock now_;
  std::optional<Pending> pending_;
  // The epoch emitted last, so a late sentence of it (a second talker, a VTG after the RMC+GGA
  // pair) does not open a duplicate epoch.
  std::optional<int32_t> done_tod_ms_;
  int64_t done_wall_ms_ = 0;
  // The last RMC date as a full timestamp and the wall time it arrived: GGA carries no date,
  // so its day is the one nearest to this reference moved on by the time passed since.
  std::optional<int64_t> dated_ts_ms_;
  int64_t dated_wall_ms_ = 0;
};

// At most one reading per `min_interval_ms` of receiver time; a change of gnss_fix always
// passes, so losing or regaining the fix is never delayed by the throttle.
class Throttle {
 public:
  explicit Throttle(int64_t min_interval_ms) : interval_ms_(min_interval_ms) {}
  bool Admit(const Fix& fix);

 private:
  int64_t interval_ms_;
  std::optional<int64_t> last_ts_ms_;
  bool last_fix_ = false;
};

// The reading of one fix: protocol "nmea", metrics gnss_fix, speed_kmh, heading_deg,
// altitude_m, satellites, hdop (those the epoch had) and the location when there is a fix.
Record ToReading(const Fix& fix, const std::string& device, const std::string& kind);

}  // namespace sanigate::dev::nmea
