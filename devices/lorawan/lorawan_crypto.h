// LoRaWAN crypto primitives over OpenSSL 3: AES-128-CMAC (RFC 4493) and AES-128-ECB, plus hex
// parsing for keys, EUIs and DevAddrs. No hand-written crypto: OpenSSL does the AES. Every
// OpenSSL object lives in an RAII holder for one call; nothing is shared but the fetched
// algorithms, which OpenSSL allows. Thread-safe. Errors are Status values, never exceptions.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace sanigate::dev::lorawan {

using Bytes = std::vector<uint8_t>;
using Key = std::array<uint8_t, 16>;    // AES-128 key as written: "2B7E1516..." = bytes 2B 7E ...
using Block = std::array<uint8_t, 16>;  // one AES block
using Mic = std::array<uint8_t, 4>;     // on-air order (the first four bytes of the CMAC)

// AES-CMAC of `msg` (RFC 4493), the full 16 bytes.
Result<Block> AesCmac(const Key& key, std::span<const uint8_t> msg);
// AES-128-ECB without padding: `data` must be a multiple of 16 bytes.
Result<Bytes> AesEcbEncrypt(const Key& key, std::span<const uint8_t> data);
Result<Bytes> AesEcbDecrypt(const Key& key, std::span<const uint8_t> data);

// Hex in, bytes out; upper or lower case, no separators. `what` names the value in the error,
// e.g. "app_key: expected 32 hex digits, got 31".
Result<Bytes> ParseHex(std::string_view hex, std::string_view what = "hex");
Result<Key> ParseKey(std::string_view hex, std::string_view what = "key");
// EUIs and DevAddrs are written MSB first ("0102030405060708" is 0x0102030405060708); on air
// they travel little-endian, which the frame code handles.
Result<uint64_t> ParseEui(std::string_view hex, std::string_view what = "eui");
Result<uint32_t> ParseDevAddr(std::string_view hex, std::string_view what = "dev_addr");
std::string ToHex(std::span<const uint8_t> bytes);  // upper case, no separators
std::string EuiToHex(uint64_t eui);                 // 16 upper-case digits

}  // namespace sanigate::dev::lorawan
