#include "nmea/nmea_epoch.h"

#include <chrono>
#include <cmath>
#include <cstdlib>

namespace sanigate::dev::nmea {
namespace {

// A late sentence of the epoch just emitted is dropped only this soon after it: a receiver
// repeating the same time of day a day later must start a new epoch.
constexpr int64_t kLateSentenceMs = 10'000;

int64_t DayNumber(const Date& d) {
  using namespace std::chrono;
  sys_days days{year_month_day{year(d.year), month(static_cast<unsigned>(d.month)),
                               day(static_cast<unsigned>(d.day))}};
  return days.time_since_epoch().count();
}

int64_t FloorDiv(int64_t a, int64_t b) { return a / b - ((a % b != 0) && ((a < 0) != (b < 0))); }

// Converted values carry binary noise (22.4 kn * 1.852 = 41.484800000000007); round it away at a
// precision far below what the receiver resolves.
double Round(double v, double step) { return std::round(v / step) * step; }

}  // namespace

EpochAssembler::EpochAssembler(WallClock now) : now_(std::move(now)) {}

void EpochAssembler::Add(const Sentence& s, std::vector<Fix>& out) {
  if (s.type == SentenceType::kVtg) {
    // No time of its own: it belongs to the burst it arrived in, if that is still open.
    if (pending_ && !pending_->vtg) pending_->vtg = std::get<Vtg>(s.body);
    return;
  }
  std::optional<int32_t> tod =
      s.type == SentenceType::kRmc ? std::get<Rmc>(s.body).time_ms : std::get<Gga>(s.body).time_ms;
  // A receiver without any time yet (cold start) cannot date a measurement.
  if (!tod) return;
  if (done_tod_ms_ == tod && now_() - done_wall_ms_ < kLateSentenceMs) return;
  if (pending_ && pending_->tod_ms != *tod) Flush(out);
  if (!pending_) pending_ = Pending{*tod, {}, {}, {}};
  // The first RMC and GGA of an epoch win; a receiver sending GP and GN versions of a sentence
  // says the same thing twice.
  if (s.type == SentenceType::kRmc && !pending_->rmc) pending_->rmc = std::get<Rmc>(s.body);
  if (s.type == SentenceType::kGga && !pending_->gga) pending_->gga = std::get<Gga>(s.body);
  if (pending_->rmc && pending_->gga) Flush(out);
}

void EpochAssembler::Flush(std::vector<Fix>& out) {
  if (!pending_) return;
  out.push_back(Complete(*pending_));
  done_tod_ms_ = pending_->tod_ms;
  done_wall_ms_ = now_();
  pending_.reset();
}

int64_t EpochAssembler::Timestamp(const Pending& p) {
  int64_t now = now_();
  if (p.rmc && p.rmc->date) {
    int64_t ts = DayNumber(*p.rmc->date) * kDayMs + p.tod_ms;
    dated_ts_ms_ = ts;
    dated_wall_ms_ = now;
    return ts;
  }
  // The receiver's own date (moved on by the time since) is preferred to the system clock: an
  // edge box without a battery-backed clock may not know the date, the receiver always does.
  int64_t ref = dated_ts_ms_ ? *dated_ts_ms_ + (now - dated_wall_ms_) : now;
  // Of the days around the reference, the one that puts this time of day nearest to it: a GGA
  // at 00:00:01 after an RMC of 23:59:59 belongs to the next day, and one at 23:59:59 seen
  // just after midnight to the previous day.
  int64_t day = FloorDiv(ref, kDayMs);
  int64_t best = day * kDayMs + p.tod_ms;
  for (int64_t d : {day - 1, day + 1}) {
    int64_t c = d * kDayMs + p.tod_ms;
    if (std::llabs(c - ref) < std::llabs(best - ref)) best = c;
  }
  return best;
}

Fix EpochAssembler::Complete(const Pending& p) {
  Fix f;
  f.ts_ms = Timestamp(p);
  // Every sentence present must agree that there is a fix; a position is part of a fix.
  bool rmc_ok = !p.rmc || p.rmc->valid;
  bool gga_ok = !p.gga || p.gga->quality > 0;
  std::optional<Position> pos;
  if (p.gga && p.gga->position) pos = p.gga->position;
  if (!pos && p.rmc) pos = p.rmc->position;
  f.fix = rmc_ok && gga_ok && pos.has_value();
  if (p.gga) f.satellites = p.gga->satellites;
  if (!f.fix) return f;  // speed, course and altitude without a fix are stale or invented

  f.position = Position{Round(pos->lat, 1e-8), Round(pos->lon, 1e-8)};
  bool vtg_ok = p.vtg && p.vtg->mode.value_or('A') != 'N';
  if (p.rmc && p.rmc->speed_knots) {
    f.speed_kmh = *p.rmc->speed_knots * kKmhPerKnot;
  } else if (vtg_ok && p.vtg->speed_kmh) {
    f.speed_kmh = *p.vtg->speed_kmh;
  } else if (vtg_ok && p.vtg->speed_knots) {
    f.speed_kmh = *p.vtg->speed_knots * kKmhPerKnot;
  }
  if (f.speed_kmh) f.speed_kmh = Round(*f.speed_kmh, 1e-3);
  if (p.rmc && p.rmc->course_deg) {
    f.heading_deg = p.rmc->course_deg;
  } else if (vtg_ok && p.vtg->course_deg) {
    f.heading_deg = p.vtg->course_deg;
  }
  if (f.heading_deg && *f.heading_deg >= 360) f.heading_deg = *f.heading_deg - 360;
  if (p.gga) {
    f.altitude_m = p.gga->altitude_m;
    f.hdop = p.gga->hdop;
  }
  return f;
}

bool Throttle::Admit(const Fix& fix) {
  // Receiver time may jump back (a reset to its default date): a gap either way counts.
  bool admit =
      !last_ts_ms_ || fix.fix != last_fix_ || std::llabs(fix.ts_ms - *last_ts_ms_) >= interval_ms_;
  if (admit) {
    last_ts_ms_ = fix.ts_ms;
    last_fix_ = fix.fix;
  }
  return admit;
}

Record ToReading(const Fix& fix, const std::string& device, const std::string& kind) {
  Record r = MakeReading(device, kind, "nmea", fix.ts_ms);
  r.metrics.push_back({"gnss_fix", fix.fix});
  if (fix.speed_kmh) r.metrics.push_back({"speed_kmh", *fix.speed_kmh});
  if (fix.heading_deg) r.metrics.push_back({"heading_deg", *fix.heading_deg});
  if (fix.altitude_m) r.metrics.push_back({"altitude_m", *fix.altitude_m});
  if (fix.satellites) r.metrics.push_back({"satellites", *fix.satellites});
  if (fix.hdop) r.metrics.push_back({"hdop", *fix.hdop});
  if (fix.position) r.location = Location{fix.position->lat, fix.position->lon};
  return r;
}

}  // namespace sanigate::dev::nmea
