// Ed25519 signing keys for firmware artifacts (OpenSSL 3): generation, PEM files (PKCS#8 private
// key, SubjectPublicKeyInfo public key, the formats `openssl genpkey`/`openssl pkey` use) and key
// ids. A PrivateKey owns its OpenSSL key object and is move-only; a PublicKey is a plain copyable
// value (the raw 32 bytes). Const methods may run concurrently; objects are not shared mutably.
//
// Key id: the first 16 hex characters (lowercase) of SHA-256 over the raw 32-byte public key.
// Private key files are written with mode 0600 and never overwrite an existing file; reading one
// whose mode grants any access to group or others is refused (as ssh does), so a key copied with
// a lax umask is noticed before it is used.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "core/status.h"

struct evp_pkey_st;  // OpenSSL's EVP_PKEY; kept out of this header

namespace sanigate::firmware {

inline constexpr size_t kPublicKeySize = 32;
inline constexpr size_t kSignatureSize = 64;
inline constexpr size_t kKeyIdLength = 16;
using RawPublicKey = std::array<uint8_t, kPublicKeySize>;
using Signature = std::array<uint8_t, kSignatureSize>;

// The key id of a raw public key (see above).
std::string KeyId(const RawPublicKey& raw);

class PublicKey {
 public:
  static Result<PublicKey> FromRaw(std::span<const uint8_t> raw);
  // A SubjectPublicKeyInfo PEM ("-----BEGIN PUBLIC KEY-----") holding an Ed25519 key.
  static Result<PublicKey> FromPem(std::string_view pem);

  const RawPublicKey& raw() const { return raw_; }
  const std::string& key_id() const { return key_id_; }
  Result<std::string> ToPem() const;
  // True only for a valid Ed25519 signature of `message` by this key. Fails closed: any library
  // error is "not verified".
  bool Verify(std::span<const uint8_t> message, std::span<const uint8_t> signature) const;

  friend bool operator==(const PublicKey& a, const PublicKey& b) { return a.raw_ == b.raw_; }

 private:
  explicit PublicKey(const RawPublicKey& raw);
  RawPublicKey raw_;
  std::string key_id_;
};

class PrivateKey {
 public:
  static Result<PrivateKey> Generate();
  // A PKCS#8 PEM ("-----BEGIN PRIVATE KEY-----", unencrypted) holding an Ed25519 key.
  static Result<PrivateKey> FromPem(std::string_view pem);

  PrivateKey(PrivateKey&&) noexcept;
  PrivateKey& operator=(PrivateKey&&) noexcept;
  ~PrivateKey();

  const PublicKey& public_key() const { return public_; }
  const std::string& key_id() const { return public_.key_id(); }
  // Pure Ed25519 (RFC 8032) over the whole message; deterministic.
  Result<Signature> Sign(std::span<const uint8_t> message) const;

 private:
  struct Free {
    void operator()(evp_pkey_st* key) const;
  };
  PrivateKey(std::unique_ptr<evp_pkey_st, Free> key, PublicKey pub);
  static Result<PrivateKey> Adopt(evp_pkey_st* key, std::string_view what);

  std::unique_ptr<evp_pkey_st, Free> key_;
  PublicKey public_;

  friend Status WritePrivateKey(const PrivateKey& key, const std::string& path);
};

// Writes the PKCS#8 PEM with mode 0600. FailedPrecondition when `path` already exists (never
// overwritten); a partly written file is removed again.
Status WritePrivateKey(const PrivateKey& key, const std::string& path);
// Writes the SubjectPublicKeyInfo PEM with mode 0644; also refuses to overwrite.
Status WritePublicKey(const PublicKey& key, const std::string& path);

// FailedPrecondition when the file's mode grants group or other any access ("chmod 600 PATH"),
// NotFound when it does not exist, Invalid when it is not an unencrypted Ed25519 PKCS#8 PEM.
Result<PrivateKey> ReadPrivateKey(const std::string& path);
Result<PublicKey> ReadPublicKey(const std::string& path);

}  // namespace sanigate::firmware
