// The NMEA 0183 adapter: GNSS receivers and simple trackers, each source one device fed by a TCP
// listener or a serial port. RMC/GGA/VTG epochs become vehicle readings (throttled per source);
// a source that sends no valid sentence for offline_after_s goes offline. All I/O runs as
// coroutines on one io_context thread owned by the adapter; counters sit behind one mutex.
// Thread-safety: Start/Stop from the owner; Health/Rules/OwnsDevice from any thread.
#pragma once

#include <memory>

#include "api/adapter.h"
#include "nmea/nmea_config.h"

namespace sanigate::dev::nmea {

class NmeaAdapter : public Adapter {
 public:
  explicit NmeaAdapter(NmeaConfig config);
  ~NmeaAdapter() override;
  NmeaAdapter(const NmeaAdapter&) = delete;
  NmeaAdapter& operator=(const NmeaAdapter&) = delete;

  std::string_view protocol() const override { return "nmea"; }
  // Binds every TCP listener (a port in use fails the start) and starts the io thread; serial
  // ports that cannot be opened yet are retried every second.
  Status Start(RecordSink& sink) override;
  // Stops accepting, closes connections and ports, emits the epochs still pending, and joins.
  void Stop() override;
  AdapterHealth Health() const override;
  RulesByDevice Rules() const override;
  bool OwnsDevice(const std::string& device) const override;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace sanigate::dev::nmea
