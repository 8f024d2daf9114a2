// Regional band plans for the edge network server: data rates, uplink channel lookup, RX1 and RX2
// parameters. CN470-510 is the primary plan (the devices in our cities), EU863-870 the second.
// Frequencies are integer Hz throughout, so a frequency read from JSON as 486.3 MHz compares
// exactly after one rounding. Immutable singletons: thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "core/status.h"

namespace sanigate::dev::lorawan {

// A LoRa data rate as the packet forwarder writes it: "SF7BW125" = SF 7, 125 kHz.
struct LoraRate {
  int sf = 12;
  int bw_khz = 125;
  bool operator==(const LoraRate&) const = default;
};
// "SF7BW125" -> {7, 125}; SF 5..12 and BW 125/250/500 (what SX130x concentrators report).
Result<LoraRate> ParseLoraDatr(std::string_view datr);
std::string FormatLoraDatr(LoraRate r);

enum class Region { kCn470, kEu868 };

class BandPlan {
 public:
  virtual ~BandPlan() = default;
  virtual Region region() const = 0;
  virtual std::string_view name() const = 0;  // "CN470", "EU868"

  // Data rate index <-> modulation. FSK (EU868 DR7) is not a LoRa rate: an error here.
  virtual Result<LoraRate> Rate(int dr) const = 0;
  virtual Result<int> DataRate(LoraRate rate) const = 0;  // for uplinks
  // The uplink channel index of a frequency, within kFrequencyTolerance.
  virtual Result<int> UplinkChannel(uint32_t freq_hz) const = 0;
  // RX1 window of an uplink on `uplink_hz` at `uplink_dr`; offset = RX1DROffset (default 0).
  virtual Result<uint32_t> Rx1Frequency(uint32_t uplink_hz) const = 0;
  virtual Result<int> Rx1DataRate(int uplink_dr, int rx1_dr_offset = 0) const = 0;
  virtual uint32_t Rx2Frequency() const = 0;
  virtual int Rx2DataRate() const = 0;
  // Largest MACPayload (M) at a data rate, without the repeater allowance.
  virtual Result<int> MaxMacPayload(int dr) const = 0;

  // Concentrators report Hz precision; this absorbs float noise without merging channels
  // (they are 200 kHz apart).
  static constexpr uint32_t kFrequencyTolerance = 1000;
};

const BandPlan& Cn470();
const BandPlan& Eu868();
// "CN470" / "EU868" (case-insensitive, "CN470-510" and "EU863-870" too).
Result<const BandPlan*> FindBandPlan(std::string_view name);

// MHz as JSON writes it -> Hz, rounded; NaN, negative and > 10 GHz are errors.
Result<uint32_t> MhzToHz(double mhz);

}  // namespace sanigate::dev::lorawan
