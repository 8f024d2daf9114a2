// Authentication codes for JT/T 808 terminals, derived from a per-box secret: code =
// HMAC-SHA256(secret, phone), first 8 bytes in hex. Nothing per terminal needs storing, so codes
// survive restarts and a reconnect storm of thousands of registrations costs no disk writes.
// The secret lives in a 0600 file created on first start. Thread-safe after Load (read-only).
#pragma once

#include <array>
#include <cstdint>
#include <string>

#include "core/status.h"

namespace sanigate::dev::jt808 {

class AuthCodes {
 public:
  // Reads the secret from `path`, creating it (0600, 32 random bytes) if it does not exist.
  // A file with the wrong size or mode is refused: the codes of every truck depend on it.
  static Result<AuthCodes> Load(const std::string& path);
  std::string CodeFor(const std::string& phone) const;

 private:
  std::array<uint8_t, 32> secret_{};
};

}  // namespace sanigate::dev::jt808
