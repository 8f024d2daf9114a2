#include "firmware/digest.h"

#include <openssl/err.h>
#include <openssl/evp.h>

namespace sanigate::firmware {
namespace {

Status OpenSslFailure(std::string_view what) {
  unsigned long e = ERR_get_error();
  ERR_clear_error();
  char buf[256] = "no OpenSSL error queued";
  if (e) ERR_error_string_n(e, buf, sizeof buf);
  return Internal(std::string(what) + ": " + buf);
}

// Fetched once; fetched algorithm objects are reference-counted and shareable between threads.
const EVP_MD* Sha256Algorithm() {
  static EVP_MD* const md = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  return md;
}

}  // namespace

void Sha256::Free::operator()(evp_md_ctx_st* ctx) const { EVP_MD_CTX_free(ctx); }

Sha256::Sha256() : ctx_(EVP_MD_CTX_new()) {
  const EVP_MD* md = Sha256Algorithm();
  if (!md) {
    status_ = OpenSslFailure("fetch SHA256");
  } else if (!ctx_) {
    status_ = OpenSslFailure("EVP_MD_CTX_new");
  } else if (EVP_DigestInit_ex2(ctx_.get(), md, nullptr) != 1) {
    status_ = OpenSslFailure("SHA-256 init");
  }
}

Sha256::Sha256(Sha256&&) noexcept = default;
Sha256& Sha256::operator=(Sha256&&) noexcept = default;
Sha256::~Sha256() = default;

void Sha256::Update(std::span<const uint8_t> bytes) {
  if (!status_.ok() || bytes.empty()) return;
  if (EVP_DigestUpdate(ctx_.get(), bytes.data(), bytes.size()) != 1)
    status_ = OpenSslFailure("SHA-256 update");
}

Result<Sha256Digest> Sha256::Final() {
  if (!status_.ok()) return status_;
  Sha256Digest out{};
  unsigned int len = 0;
  if (EVP_DigestFinal_ex(ctx_.get(), out.data(), &len) != 1 || len != out.size())
    return OpenSslFailure("SHA-256 final");
  return out;
}

Result<Sha256Digest> Sha256::Of(std::span<const uint8_t> bytes) {
  Sha256 h;
  h.Update(bytes);
  return h.Final();
}

std::string Hex(std::span<const uint8_t> bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (uint8_t b : bytes) {
    out += kDigits[b >> 4];
    out += kDigits[b & 0xf];
  }
  return out;
}

}  // namespace sanigate::firmware
