#include "lorawan/band_plan.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <cmath>
#include <sstream>

namespace sanigate::dev::lorawan {
namespace {

// Sources for every number below:
//  [P2]  /work/shared/protocols.md §2 (CN470 uplink ch 80 = 486.3 MHz -> RX1 506.7 MHz, RX2
//        505.3 MHz SF12BW125) and §3 (RX2 defaults CN470 505.3 MHz DR0, EU868 869.525 MHz DR0;
//        CN470 max MACPayload M: DR0-2 59, DR3 123, DR4-5 230).
//  [RP]  LoRa Alliance, LoRaWAN Regional Parameters (RP002-1.0.x; RP2-1.0.x), sections
//        "CN470-510MHz ISM Band" and "EU863-870MHz ISM Band": channel plans, data-rate tables,
//        RX1DROffset 0..5 with RX1 DR = max(uplink DR - offset, 0), RX2 defaults, M per DR.
//  [BL]  cross-checked against brocaar/lorawan band/band_cn470_510.go and band_eu863_870.go
//        (facts only: the same tables in another implementation).

// Rate tables are indexed by data rate; {0, 0} marks a non-LoRa (FSK) or undefined rate.
constexpr std::array<LoraRate, 6> kCn470Rates{
    {{12, 125}, {11, 125}, {10, 125}, {9, 125}, {8, 125}, {7, 125}}};  // [RP] CN470 DR0..DR5 [BL]
constexpr std::array<int, 6> kCn470MaxM{59, 59, 59, 123, 230, 230};    // [P2] [RP] [BL]

constexpr std::array<LoraRate, 8> kEu868Rates{
    {{12, 125}, {11, 125}, {10, 125}, {9, 125}, {8, 125}, {7, 125}, {7, 250}, {0, 0}}};
// [RP] EU868 DR0..DR7 (DR6 SF7BW250, DR7 FSK 50 kbit/s) [BL]
constexpr std::array<int, 8> kEu868MaxM{59, 59, 59, 123, 250, 250, 250, 250};  // [RP] no repeater

constexpr int kMaxRx1DrOffset = 5;  // [RP] both regions: RX1DROffset 0..5

Result<int> Rx1Dr(int uplink_dr, int offset, int max_uplink_dr, std::string_view plan) {
  if (uplink_dr < 0 || uplink_dr > max_uplink_dr)
    return Invalid(std::string(plan) + ": uplink data rate DR" + std::to_string(uplink_dr) +
                   " is outside DR0..DR" + std::to_string(max_uplink_dr));
  if (offset < 0 || offset > kMaxRx1DrOffset)
    return Invalid(std::string(plan) + ": RX1DROffset " + std::to_string(offset) +
                   " is outside 0.." + std::to_string(kMaxRx1DrOffset));
  return std::max(uplink_dr - offset, 0);  // [RP] the RX1 tables of both regions
}

template <size_t N>
Result<LoraRate> RateOf(const std::array<LoraRate, N>& rates, int dr, std::string_view plan) {
  if (dr < 0 || dr >= static_cast<int>(N))
    return Invalid(std::string(plan) + ": DR" + std::to_string(dr) + " is outside DR0..DR" +
                   std::to_string(N - 1));
  if (rates[static_cast<size_t>(dr)].sf == 0)
    return Invalid(std::string(plan) + ": DR" + std::to_string(dr) + " is FSK, not LoRa");
  return rates[static_cast<size_t>(dr)];
}

template <size_t N>
Result<int> DrOf(const std::array<LoraRate, N>& rates, LoraRate r, std::string_view plan) {
  for (size_t i = 0; i < N; ++i)
    if (rates[i] == r) return static_cast<int>(i);
  return Invalid(std::string(plan) + ": " + FormatLoraDatr(r) + " is not a data rate of this plan");
}

std::string Mhz(uint32_t hz) {
  // 486300000 -> "486.3 MHz": integer arithmetic, no float formatting surprises.
  std::string s = std::to_string(hz / 1000000);
  uint32_t frac = hz % 1000000;
  if (frac) {
    std::string f = std::to_string(frac);
    f.insert(0, 6 - f.size(), '0');
    while (f.back() == '0') f.pop_back();
    s += "." + f;
  }
  return s + " MHz";
}

class Cn470Plan final : public BandPlan {
 public:
  Region region() const override { return Region::kCn470; }
  std::string_view name() const override { return "CN470"; }
  Result<LoraRate> Rate(int dr) const override { return RateOf(kCn470Rates, dr, name()); }
  Result<int> DataRate(LoraRate r) const override { return DrOf(kCn470Rates, r, name()); }

  Result<int> UplinkChannel(uint32_t freq_hz) const override {
    // [P2] [RP] uplink channel n = 0..95 at 470.3 + 0.2 n MHz.
    int64_t rel = int64_t{freq_hz} - kUplinkBase;
    int64_t n = (rel + kStep / 2) / kStep;
    if (rel < -int64_t{kFrequencyTolerance} || n < 0 || n >= kUplinkChannels ||
        std::llabs(rel - n * kStep) > kFrequencyTolerance)
      return Invalid("CN470: " + Mhz(freq_hz) +
                     " is not an uplink channel (470.3 + 0.2 n MHz, n = 0..95)");
    return static_cast<int>(n);
  }
  Result<uint32_t> Rx1Frequency(uint32_t uplink_hz) const override {
    auto n = UplinkChannel(uplink_hz);
    if (!n.ok()) return n.status();
    // [P2] [RP] RX1 downlink channel = n mod 48, at 500.3 + 0.2 k MHz.
    return static_cast<uint32_t>(kDownlinkBase + (*n % kDownlinkChannels) * kStep);
  }
  Result<int> Rx1DataRate(int uplink_dr, int offset) const override {
    return Rx1Dr(uplink_dr, offset, 5, name());
  }
  uint32_t Rx2Frequency() const override { return 505'300'000; }  // [P2] [RP] [BL]
  int Rx2DataRate() const override { return 0; }                  // [P2] [RP] DR0 = SF12BW125
  Result<int> MaxMacPayload(int dr) const override {
    if (dr < 0 || dr > 5) return Invalid("CN470: DR" + std::to_string(dr) + " is outside DR0..DR5");
    return kCn470MaxM[static_cast<size_t>(dr)];
  }

 private:
  static constexpr int64_t kUplinkBase = 470'300'000;    // [P2] [RP]
  static constexpr int64_t kDownlinkBase = 500'300'000;  // [P2] [RP]
  static constexpr int64_t kStep = 200'000;              // [P2] [RP] 200 kHz raster
  static constexpr int64_t kUplinkChannels = 96;         // [RP]
  static constexpr int64_t kDownlinkChannels = 48;       // [RP]
};

class Eu868Plan final : public BandPlan {
 public:
  Region region() const override { return Region::kEu868; }
  std::string_view name() const override { return "EU868"; }
  Result<LoraRate> Rate(int dr) const override { return RateOf(kEu868Rates, dr, name()); }
  Result<int> DataRate(LoraRate r) const override { return DrOf(kEu868Rates, r, name()); }

  Result<int> UplinkChannel(uint32_t freq_hz) const override {
    // [RP] the three default channels 868.1/868.3/868.5 MHz are 0..2; further channels come from
    // the CFList or NewChannelReq and are numbered by the device, so they have no index here.
    for (int i = 0; i < 3; ++i)
      if (std::llabs(int64_t{freq_hz} - kDefaultChannels[static_cast<size_t>(i)]) <=
          kFrequencyTolerance)
        return i;
    return Invalid("EU868: " + Mhz(freq_hz) +
                   " is not a default channel (868.1, 868.3, 868.5 MHz)");
  }
  Result<uint32_t> Rx1Frequency(uint32_t uplink_hz) const override {
    // [RP] RX1 uses the uplink frequency; it must lie in the 863-870 MHz band.
    if (uplink_hz < 863'000'000 || uplink_hz > 870'000'000)
      return Invalid("EU868: " + Mhz(uplink_hz) + " is outside 863..870 MHz");
    return uplink_hz;
  }
  Result<int> Rx1DataRate(int uplink_dr, int offset) const override {
    return Rx1Dr(uplink_dr, offset, 7, name());
  }
  uint32_t Rx2Frequency() const override { return 869'525'000; }  // [P2] [RP] [BL]
  int Rx2DataRate() const override { return 0; }                  // [P2] [RP] DR0 = SF12BW125
  Result<int> MaxMacPayload(int dr) const override {
    if (dr < 0 || dr > 7) return Invalid("EU868: DR" + std::to_string(dr) + " is outside DR0..DR7");
    return kEu868MaxM[static_cast<size_t>(dr)];
  }

 private:
  static constexpr std::array<int64_t, 3> kDefaultChannels{868'100'000, 868'300'000, 868'500'000};
};

}  // namespace

Result<LoraRate> ParseLoraDatr(std::string_view datr) {
  auto bad = [&] {
    return Invalid("datr \"" + std::string(datr) + "\" is not a LoRa data rate like \"SF7BW125\"");
  };
  auto digits = [](std::string_view s, size_t& pos, int& out) {
    size_t start = pos;
    out = 0;
    while (pos < s.size() && pos - start < 3 && std::isdigit(static_cast<unsigned char>(s[pos])))
      out = out * 10 + (s[pos++] - '0');
    return pos > start;
  };
  if (datr.substr(0, 2) != "SF") return bad();
  size_t pos = 2;
  LoraRate r;
  if (!digits(datr, pos, r.sf) || datr.substr(pos, 2) != "BW") return bad();
  pos += 2;
  if (!digits(datr, pos, r.bw_khz) || pos != datr.size()) return bad();
  if (r.sf < 5 || r.sf > 12)
    return Invalid("datr \"" + std::string(datr) + "\": spreading factor " + std::to_string(r.sf) +
                   " is outside 5..12");
  if (r.bw_khz != 125 && r.bw_khz != 250 && r.bw_khz != 500)
    return Invalid("datr \"" + std::string(datr) + "\": bandwidth " + std::to_string(r.bw_khz) +
                   " kHz is not 125, 250 or 500");
  return r;
}

std::string FormatLoraDatr(LoraRate r) {
  return "SF" + std::to_string(r.sf) + "BW" + std::to_string(r.bw_khz);
}

const BandPlan& Cn470() {
  static const Cn470Plan plan;
  return plan;
}

const BandPlan& Eu868() {
  static const Eu868Plan plan;
  return plan;
}

Result<const BandPlan*> FindBandPlan(std::string_view name) {
  std::string n(name);
  for (char& c : n) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (n == "CN470" || n == "CN470-510") return &Cn470();
  if (n == "EU868" || n == "EU863-870") return &Eu868();
  return Invalid("band plan \"" + std::string(name) + "\" is not one of \"CN470\", \"EU868\"");
}

Result<uint32_t> MhzToHz(double mhz) {
  // Hz must fit 32 bits (the GWMP and LoRaWAN fields): at most 4294.967295 MHz.
  if (!(mhz > 0 && mhz <= 4294.967295)) {
    std::ostringstream os;
    os << "frequency " << mhz << " MHz is outside 0..4294.967295";
    return Invalid(os.str());
  }
  return static_cast<uint32_t>(std::llround(mhz * 1e6));
}

}  // namespace sanigate::dev::lorawan
