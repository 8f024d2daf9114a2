// Configuration of the NMEA 0183 adapter ([nmea] section): sources, each one device fed by a
// TCP listener or a serial port. Parsed strictly through settings::Node.
// Plain values: thread-safe to copy.
#pragma once

#include <any>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "settings/gateway_config.h"
#include "settings/reader.h"
#include "api/host_port.h"

namespace sanigate::dev::nmea {

struct SourceConfig {
  std::string device;  // the device id every sentence of this source is published under
  std::string kind = "vehicle";
  // Exactly one of the two transports.
  std::string listen_host;  // TCP: an IP address to listen on; empty for a serial source
  uint16_t listen_port = 0;
  int max_connections = 4;  // TCP: concurrent connections; more are closed at once
  std::string serial;       // serial port, e.g. /dev/ttyS1; empty for a TCP source
  int baud = 9600;
  int64_t min_interval_ms = 1000;  // at most one reading per interval (10 Hz receivers)
  int64_t offline_after_s = 30;    // no valid sentence for this long: the device is offline

  bool is_serial() const { return !serial.empty(); }
  std::string Endpoint() const;  // "tcp 127.0.0.1:10110" or "serial /dev/ttyS1", for logs
};

struct NmeaConfig {
  std::vector<SourceConfig> sources;
};


// Parses the [nmea] section; problems go to node.errors(). Returns an NmeaConfig in std::any.
std::any ParseNmeaSection(settings::Node& node, const settings::GatewaySection& gateway);

}  // namespace sanigate::dev::nmea
