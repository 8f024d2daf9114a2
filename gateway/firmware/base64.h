// Standard base64 (RFC 4648, with padding) through OpenSSL, for image chunks carried in JSON.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace sanigate::firmware {

std::string Base64Encode(std::string_view bytes);
// nullopt for a length that is not a multiple of 4 or a character outside the alphabet.
std::optional<std::string> Base64Decode(std::string_view text);

}  // namespace sanigate::firmware
