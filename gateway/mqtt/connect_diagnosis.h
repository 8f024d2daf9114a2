// Why a connect to an MQTT broker failed, in words an operator can act on. The MQTT client
// library says "Connection refused" or "A TLS error occurred" alike for a refused TCP connect, a CA the box does not trust, a certificate
// for another host and a broker that hangs up after the handshake because it refuses the box's
// client certificate. DiagnoseConnectFailure looks again from outside: one TCP connect and, for
// TLS, one OpenSSL handshake with the link's TLS settings (no MQTT is spoken).
// Thread-safety: every function may be called from any thread.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <string>
#include <string_view>

#include "mqtt/mqtt_link.h"

namespace sanigate::mqtt {

struct BrokerAddress {
  std::string host, port;
};

// Host and port of a broker URL (tcp://host:port, ssl://[v6]:port, mqtts://host); without a
// port 1883, or 8883 with `tls`.
BrokerAddress ParseBrokerAddress(const std::string& url, bool tls);

// The cause of a connect that failed without an answer to its CONNECT, without the "connect to
// URL failed: " prefix: "connection refused", "cannot resolve host ...", "TLS: certificate verify
// failed: unable to get local issuer certificate (...)", "TLS: hostname mismatch: ...", "TLS: the
// broker refused our client certificate: certificate expired (not after ...)", ...
// `client_said`: the MQTT client's own words, given back when the look finds nothing wrong.
// Blocks up to `timeout` for the TCP connect, as long again for the TLS handshake and then up
// to 1.5 s for the broker's verdict on the client certificate (a TLS 1.3 broker sends it after
// the handshake); gives up early, returning "", once `stop` returns true.
std::string DiagnoseConnectFailure(const BrokerAddress& broker, const TlsOptions& tls,
                                   std::chrono::milliseconds timeout,
                                   const std::function<bool()>& stop, std::string_view client_said);

// "" when the first certificate of the PEM file `path` is valid now, otherwise why not:
// "certificate expired (not after 2026-12-07 04:25 UTC)", "certificate not yet valid (not
// before ...)" or "cannot read a certificate from PATH".
std::string CertificateDateProblem(const std::string& path);

// A CONNACK refusal, e.g. "the broker refused the connection: not authorized (reason code 135)".
std::string ConnackRefusalText(int reason_code);

// One line of printable ASCII for logs and the status JSON: trailing whitespace dropped, control
// and non-ASCII bytes as \xNN, cut to `max` characters (the cut ending in "...").
std::string PrintableLine(std::string_view in, size_t max = 200);

}  // namespace sanigate::mqtt
