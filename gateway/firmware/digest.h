// SHA-256 through OpenSSL's EVP interface, fed incrementally so a 50 MiB image is hashed in
// chunks, plus lowercase hex. One Sha256 per stream; not thread-safe; move-only.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "core/status.h"

struct evp_md_ctx_st;  // OpenSSL's EVP_MD_CTX

namespace sanigate::firmware {

using Sha256Digest = std::array<uint8_t, 32>;

class Sha256 {
 public:
  Sha256();
  Sha256(Sha256&&) noexcept;
  Sha256& operator=(Sha256&&) noexcept;
  ~Sha256();

  void Update(std::span<const uint8_t> bytes);
  // The digest of everything fed so far; an Internal status when OpenSSL failed at any step.
  // Call once.
  Result<Sha256Digest> Final();

  static Result<Sha256Digest> Of(std::span<const uint8_t> bytes);

 private:
  struct Free {
    void operator()(evp_md_ctx_st* ctx) const;
  };
  std::unique_ptr<evp_md_ctx_st, Free> ctx_;
  Status status_;
};

// Lowercase hex, two characters per byte.
std::string Hex(std::span<const uint8_t> bytes);

}  // namespace sanigate::firmware
