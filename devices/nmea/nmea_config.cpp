#include "nmea/nmea_config.h"

#include <arpa/inet.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <map>

namespace sanigate::dev::nmea {
namespace {

constexpr std::array<int, 6> kBauds = {4800, 9600, 19200, 38400, 57600, 115200};

void ParseTransport(settings::Node& n, SourceConfig& s, std::map<std::string, std::string>& used) {
  bool tcp = n.Has("listen"), serial = n.Has("serial");
  if (tcp && serial) {
    n.Problem("serial", "a source has either listen or serial, not both");
  } else if (!tcp && !serial) {
    n.Problem("listen",
              "a source needs listen = \"HOST:PORT\" (TCP) or serial = \"/dev/...\" (serial port)");
  }
  // Both keys are read even after a problem, so neither is also reported as unknown.
  std::string listen = n.String("listen", "");
  std::string port = n.String("serial", "");
  if (tcp && !serial) {
    if (auto hp = ParseHostPort(listen)) {
      s.listen_host = hp->host;
      s.listen_port = hp->port;
      auto [it, fresh] = used.emplace("tcp " + hp->host + ":" + std::to_string(hp->port), n.path());
      if (!fresh) n.Problem("listen", "\"" + listen + "\" is already used by " + it->second);
    } else {
      n.Problem("listen", "\"" + listen +
                              "\" is not HOST:PORT (an IP address and a port 1..65535, e.g. "
                              "\"0.0.0.0:10110\")");
    }
  }
  if (serial && !tcp) {
    if (port.empty()) {
      n.Problem("serial", "must not be empty");
    } else {
      s.serial = port;
      auto [it, fresh] = used.emplace("serial " + port, n.path());
      if (!fresh) n.Problem("serial", "\"" + port + "\" is already used by " + it->second);
    }
  }
  if (n.Has("baud")) {
    int64_t baud = n.Int("baud", s.baud, 0, 10'000'000);
    if (!serial) {
      n.Problem("baud", "only a serial source has a baud rate");
    } else if (std::find(kBauds.begin(), kBauds.end(), baud) == kBauds.end()) {
      n.Problem("baud",
                std::to_string(baud) + " is not one of 4800, 9600, 19200, 38400, 57600, 115200");
    } else {
      s.baud = static_cast<int>(baud);
    }
  }
  if (n.Has("max_connections")) {
    s.max_connections = static_cast<int>(n.Int("max_connections", s.max_connections, 1, 256));
    if (serial) n.Problem("max_connections", "only a listen source takes connections");
  }
}

}  // namespace

std::string SourceConfig::Endpoint() const {
  if (is_serial()) return "serial " + serial;
  bool v6 = listen_host.find(':') != std::string::npos;
  return "tcp " + (v6 ? "[" + listen_host + "]" : listen_host) + ":" + std::to_string(listen_port);
}


std::any ParseNmeaSection(settings::Node& node, const settings::GatewaySection&) {
  NmeaConfig cfg;
  std::map<std::string, std::string> ids, endpoints;
  auto sources = node.TableArray("sources");
  if (sources.empty() && !node.Has("sources"))
    node.Problem("sources", "[nmea] needs at least one [[nmea.sources]] entry");
  for (auto& n : sources) {
    SourceConfig s;
    if (auto id = n.RequiredId("device")) {
      s.device = *id;
      auto [it, fresh] = ids.emplace(s.device, n.path());
      if (!fresh) n.Problem("device", "\"" + s.device + "\" is already used by " + it->second);
    }
    s.kind = n.String("kind", s.kind);
    if (!settings::IsValidId(s.kind) || s.kind.find_first_of(".-") != std::string::npos)
      n.Problem("kind", "\"" + s.kind + "\" is not a valid kind (^[a-z0-9_]+$)");
    ParseTransport(n, s, endpoints);
    s.min_interval_ms = n.Int("min_interval_ms", s.min_interval_ms, 0, 3'600'000);
    s.offline_after_s = n.Int("offline_after_s", s.offline_after_s, 1, 86'400);
    n.Finish();
    cfg.sources.push_back(std::move(s));
  }
  node.Finish();
  return cfg;
}

}  // namespace sanigate::dev::nmea
