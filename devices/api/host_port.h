// "HOST:PORT" for the listeners of every protocol (JT/T 808, NMEA, LoRaWAN UDP): an IPv4
// address or a bracketed IPv6 one, and a port 1..65535. Pure; thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace sanigate::dev {

// "127.0.0.1:10110", "0.0.0.0:10110" or "[::1]:10110" -> host (without brackets) and port.
struct HostPort {
  std::string host;
  uint16_t port = 0;
};
std::optional<HostPort> ParseHostPort(std::string_view text);

}  // namespace sanigate::dev
