// Configuration of the JT/T 808 listener: where it listens, which terminals may connect and
// which vehicle each one is, what to do with unknown terminals, and the session limits.
// Plain values; parsed once at load (not thread-safe while parsing).
#pragma once

#include <any>
#include <cstdint>
#include <string>
#include <vector>

#include "settings/gateway_config.h"
#include "settings/reader.h"

namespace sanigate::dev::jt808 {

struct TerminalConfig {
  std::string phone;   // terminal phone number (SIM / terminal id), digits, leading zeros dropped
  std::string device;  // vehicle device id in the model
  std::string kind = "vehicle";
  std::string plate;   // informational, shown in the device's source
  std::string auth_code;  // fixed code set on the terminal by hand; empty = derived (auth_codes.h)
};

enum class UnknownPolicy { kRefuse, kRegister };
// Who may (re-)register and so obtain a phone's auth code (0x0100 → 0x8100). JT/T 808 has no
// other credential than the phone number and this code.
//   open:   any time (the behaviour of most platforms);
//   known:  a phone that registered before may register again only while it has no live session;
//   locked: a phone that registered before may not register again until an operator releases it
//           (command `release_registration` on the device, e.g. `sanictl cmd truck-01 release_registration`).
enum class RegistrationPolicy { kOpen, kKnown, kLocked };

struct Jt808Config {
  std::string host = "0.0.0.0";
  uint16_t port = 6808;
  std::vector<TerminalConfig> terminals;
  UnknownPolicy unknown = UnknownPolicy::kRefuse;
  RegistrationPolicy registration = RegistrationPolicy::kKnown;
  // A second session for a phone that is online is refused unless the first has been silent
  // this long (a half-open connection of a truck that changed cell). 0 = always take over.
  int64_t takeover_after_s = 30;
  std::string device_prefix = "vehicle-";  // unknown terminals get device_prefix + phone
  std::string secret_file;                 // the secret auth codes derive from (auth_codes.h)
  int64_t auth_timeout_s = 30;     // a connection must authenticate within this
  int64_t idle_timeout_s = 180;    // no bytes for this long closes the session
  // A terminal is announced offline (event) only after it stayed away this long: a reconnect
  // storm of flaky 4G links is not an event storm. 0 announces at once.
  int64_t offline_after_s = 5;
  int64_t max_connections = 100000;
  int64_t max_per_ip = 0;          // 0 = no limit (many trucks share a carrier NAT address)
  int64_t max_frame_bytes = 4096;  // an escaped frame or garbage run above this closes
  int64_t max_bad_frames = 100;    // malformed frames in a row before the session is closed
  int64_t subpackage_timeout_s = 30;
  int64_t command_timeout_ms = 10000;
  int64_t max_send_queue_kb = 256;  // a terminal that does not read its replies is closed
  // Firmware (0x8108): body bytes per packet, how long to wait for each packet's 0x0001, and how
  // often an unanswered packet is sent again before the job fails.
  int64_t upgrade_packet_bytes = 1000;
  int64_t upgrade_ack_timeout_ms = 30000;
  int64_t upgrade_retries = 3;
};

std::any ParseJt808Section(settings::Node& node, const settings::GatewaySection& gateway);

}  // namespace sanigate::dev::jt808
