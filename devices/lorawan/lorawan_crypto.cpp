#include "lorawan/lorawan_crypto.h"

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include <memory>

namespace sanigate::dev::lorawan {
namespace {

struct MacFree {
  void operator()(EVP_MAC* p) const { EVP_MAC_free(p); }
};
struct MacCtxFree {
  void operator()(EVP_MAC_CTX* p) const { EVP_MAC_CTX_free(p); }
};
struct CipherFree {
  void operator()(EVP_CIPHER* p) const { EVP_CIPHER_free(p); }
};
struct CipherCtxFree {
  void operator()(EVP_CIPHER_CTX* p) const { EVP_CIPHER_CTX_free(p); }
};

// The most recent OpenSSL error as text, and the queue cleared so it does not leak into the next
// caller on this thread.
Status OpenSslError(std::string_view what) {
  unsigned long e = ERR_get_error();
  ERR_clear_error();
  char buf[256] = "no OpenSSL error queued";
  if (e) ERR_error_string_n(e, buf, sizeof buf);
  return Internal(std::string(what) + ": " + buf);
}

// Fetching an algorithm walks the provider tables; do it once. Fetched algorithm objects are
// reference-counted and may be shared between threads (OpenSSL 3 threading notes).
EVP_MAC* CmacAlgorithm() {
  static const std::unique_ptr<EVP_MAC, MacFree> mac(EVP_MAC_fetch(nullptr, "CMAC", nullptr));
  return mac.get();
}

const EVP_CIPHER* EcbAlgorithm() {
  static const std::unique_ptr<EVP_CIPHER, CipherFree> cipher(
      EVP_CIPHER_fetch(nullptr, "AES-128-ECB", nullptr));
  return cipher.get();
}

Result<Bytes> Ecb(const Key& key, std::span<const uint8_t> data, bool encrypt) {
  if (data.size() % 16 != 0)
    return Invalid("AES-ECB input of " + std::to_string(data.size()) +
                   " bytes is not a multiple of 16");
  const EVP_CIPHER* alg = EcbAlgorithm();
  if (!alg) return OpenSslError("fetch AES-128-ECB");
  std::unique_ptr<EVP_CIPHER_CTX, CipherCtxFree> ctx(EVP_CIPHER_CTX_new());
  if (!ctx) return OpenSslError("EVP_CIPHER_CTX_new");
  if (EVP_CipherInit_ex2(ctx.get(), alg, key.data(), nullptr, encrypt ? 1 : 0, nullptr) != 1)
    return OpenSslError("AES-128-ECB init");
  // LoRaWAN always hands whole blocks; PKCS#7 padding would add a block and break the layout.
  EVP_CIPHER_CTX_set_padding(ctx.get(), 0);
  Bytes out(data.size() + 16);
  int n = 0, tail = 0;
  if (!data.empty() &&
      EVP_CipherUpdate(ctx.get(), out.data(), &n, data.data(), static_cast<int>(data.size())) != 1)
    return OpenSslError("AES-128-ECB update");
  if (EVP_CipherFinal_ex(ctx.get(), out.data() + n, &tail) != 1)
    return OpenSslError("AES-128-ECB final");
  out.resize(static_cast<size_t>(n + tail));
  return out;
}

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

Result<Bytes> ParseHexOfLength(std::string_view hex, std::string_view what, size_t digits) {
  if (hex.size() != digits)
    return Invalid(std::string(what) + ": expected " + std::to_string(digits) +
                   " hex digits, got " + std::to_string(hex.size()));
  return ParseHex(hex, what);
}

}  // namespace

Result<Block> AesCmac(const Key& key, std::span<const uint8_t> msg) {
  EVP_MAC* alg = CmacAlgorithm();
  if (!alg) return OpenSslError("fetch CMAC");
  std::unique_ptr<EVP_MAC_CTX, MacCtxFree> ctx(EVP_MAC_CTX_new(alg));
  if (!ctx) return OpenSslError("EVP_MAC_CTX_new");
  char cipher[] = "AES-128-CBC";  // CMAC is defined over the CBC-MAC of the block cipher
  OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_CIPHER, cipher, 0),
                         OSSL_PARAM_construct_end()};
  if (EVP_MAC_init(ctx.get(), key.data(), key.size(), params) != 1)
    return OpenSslError("CMAC init");
  if (!msg.empty() && EVP_MAC_update(ctx.get(), msg.data(), msg.size()) != 1)
    return OpenSslError("CMAC update");
  Block out{};
  size_t len = 0;
  if (EVP_MAC_final(ctx.get(), out.data(), &len, out.size()) != 1)
    return OpenSslError("CMAC final");
  if (len != out.size()) return Internal("CMAC returned " + std::to_string(len) + " bytes, not 16");
  return out;
}

Result<Bytes> AesEcbEncrypt(const Key& key, std::span<const uint8_t> data) {
  return Ecb(key, data, true);
}

Result<Bytes> AesEcbDecrypt(const Key& key, std::span<const uint8_t> data) {
  return Ecb(key, data, false);
}

Result<Bytes> ParseHex(std::string_view hex, std::string_view what) {
  if (hex.size() % 2 != 0)
    return Invalid(std::string(what) + ": odd number of hex digits (" + std::to_string(hex.size()) +
                   ")");
  Bytes out;
  out.reserve(hex.size() / 2);
  for (size_t i = 0; i < hex.size(); i += 2) {
    int hi = HexDigit(hex[i]), lo = HexDigit(hex[i + 1]);
    if (hi < 0 || lo < 0) {
      size_t bad = hi < 0 ? i : i + 1;
      return Invalid(std::string(what) + ": '" + std::string(1, hex[bad]) + "' at position " +
                     std::to_string(bad) + " is not a hex digit");
    }
    out.push_back(static_cast<uint8_t>(hi << 4 | lo));
  }
  return out;
}

Result<Key> ParseKey(std::string_view hex, std::string_view what) {
  auto bytes = ParseHexOfLength(hex, what, 32);
  if (!bytes.ok()) return bytes.status();
  Key k{};
  std::copy(bytes->begin(), bytes->end(), k.begin());
  return k;
}

Result<uint64_t> ParseEui(std::string_view hex, std::string_view what) {
  auto bytes = ParseHexOfLength(hex, what, 16);
  if (!bytes.ok()) return bytes.status();
  uint64_t v = 0;
  for (uint8_t b : *bytes) v = v << 8 | b;
  return v;
}

Result<uint32_t> ParseDevAddr(std::string_view hex, std::string_view what) {
  auto bytes = ParseHexOfLength(hex, what, 8);
  if (!bytes.ok()) return bytes.status();
  uint32_t v = 0;
  for (uint8_t b : *bytes) v = v << 8 | b;
  return v;
}

std::string ToHex(std::span<const uint8_t> bytes) {
  static constexpr char kDigits[] = "0123456789ABCDEF";
  std::string s;
  s.reserve(bytes.size() * 2);
  for (uint8_t b : bytes) {
    s.push_back(kDigits[b >> 4]);
    s.push_back(kDigits[b & 0xF]);
  }
  return s;
}

std::string EuiToHex(uint64_t eui) {
  std::array<uint8_t, 8> b{};
  for (int i = 7; i >= 0; --i, eui >>= 8) b[static_cast<size_t>(i)] = static_cast<uint8_t>(eui);
  return ToHex(b);
}

}  // namespace sanigate::dev::lorawan
