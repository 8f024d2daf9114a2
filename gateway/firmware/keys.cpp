#include "firmware/keys.h"

#include "core/unique_fd.h"

#include <fcntl.h>
#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <functional>
#include <utility>

#include "firmware/digest.h"

namespace sanigate::firmware {
namespace {

// Larger than any PEM Ed25519 key by far; a bigger "key file" is something else.
constexpr size_t kMaxKeyFileBytes = 64 * 1024;

struct PkeyFree {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
struct PkeyCtxFree {
  void operator()(EVP_PKEY_CTX* p) const { EVP_PKEY_CTX_free(p); }
};
struct MdCtxFree {
  void operator()(EVP_MD_CTX* p) const { EVP_MD_CTX_free(p); }
};
struct BioFree {
  void operator()(BIO* p) const { BIO_free_all(p); }
};
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;
using BioPtr = std::unique_ptr<BIO, BioFree>;

// The oldest queued OpenSSL error as text; the queue is cleared so it cannot leak into the next
// caller on this thread.
std::string TakeOpenSslError() {
  unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (!e) return "no OpenSSL error queued";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  return buf;
}

Status OpenSslFailure(std::string_view what) {
  return Internal(std::string(what) + ": " + TakeOpenSslError());
}

Status ErrnoStatus(const std::string& what, int err) {
  std::string m = what + ": " + std::strerror(err);
  if (err == ENOENT) return {Code::kNotFound, std::move(m)};
  if (err == EACCES || err == EPERM) return {Code::kFailedPrecondition, std::move(m)};
  return Unavailable(std::move(m));
}

// Refuse to ask for a passphrase on the terminal: an encrypted key simply fails to load.
int NoPassphrase(char*, int, int, void*) { return -1; }

std::string TypeName(const EVP_PKEY* key) {
  const char* name = EVP_PKEY_get0_type_name(key);
  return name ? name : "an unknown key type";
}

PkeyPtr RawPublicPkey(const RawPublicKey& raw) {
  return PkeyPtr(EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, nullptr, raw.data(), raw.size()));
}

using Fd = UniqueFd;

// Creates `path` exclusively with `mode` (exactly, whatever the umask), lets `write` fill it
// through a BIO on the descriptor, and syncs it. Removes the file again when anything fails.
Status WriteNewFile(const std::string& path, mode_t mode, const std::string& what,
                    const std::function<bool(BIO*)>& write) {
  Fd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode));
  if (fd.get() < 0) {
    int err = errno;
    if (err == EEXIST)
      return {Code::kFailedPrecondition,
              path + " already exists; refusing to overwrite it with a new " + what};
    return ErrnoStatus("create " + path, err);
  }
  auto fail = [&](Status st) {
    ::close(fd.release());
    ::unlink(path.c_str());
    return st;
  };
  if (::fchmod(fd.get(), mode) != 0) return fail(ErrnoStatus("chmod " + path, errno));
  BioPtr bio(BIO_new_fd(fd.get(), BIO_NOCLOSE));
  if (!bio) return fail(OpenSslFailure("BIO_new_fd"));
  if (!write(bio.get()) || BIO_flush(bio.get()) != 1)
    return fail(OpenSslFailure("write " + what + " to " + path));
  bio.reset();
  if (::fsync(fd.get()) != 0) return fail(ErrnoStatus("fsync " + path, errno));
  if (::close(fd.release()) != 0) {
    int err = errno;
    ::unlink(path.c_str());
    return ErrnoStatus("close " + path, err);
  }
  return Status::Ok();
}

// The whole (small) file behind an open descriptor.
Result<std::string> ReadSmall(int fd, const std::string& path) {
  // Reserved up front so no reallocation leaves key bytes behind in freed memory.
  std::string out;
  out.reserve(kMaxKeyFileBytes);
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      OPENSSL_cleanse(out.data(), out.size());
      return ErrnoStatus("read " + path, err);
    }
    if (n == 0) break;
    if (out.size() + static_cast<size_t>(n) > kMaxKeyFileBytes) {
      OPENSSL_cleanse(out.data(), out.size());
      OPENSSL_cleanse(buf, sizeof buf);
      return Invalid(path + ": larger than " + std::to_string(kMaxKeyFileBytes) +
                     " bytes, not a key file");
    }
    out.append(buf, static_cast<size_t>(n));
  }
  OPENSSL_cleanse(buf, sizeof buf);
  return out;
}

std::string OctalMode(mode_t mode) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "%04o", static_cast<unsigned>(mode & 07777));
  return buf;
}

}  // namespace

std::string KeyId(const RawPublicKey& raw) {
  auto digest = Sha256::Of(raw);
  // SHA-256 of 32 bytes only fails when OpenSSL itself is broken; an empty id matches nothing.
  if (!digest.ok()) return {};
  return Hex(*digest).substr(0, kKeyIdLength);
}

// ---- PublicKey ---------------------------------------------------------------------------------

PublicKey::PublicKey(const RawPublicKey& raw) : raw_(raw), key_id_(KeyId(raw)) {}

Result<PublicKey> PublicKey::FromRaw(std::span<const uint8_t> raw) {
  if (raw.size() != kPublicKeySize)
    return Invalid("an Ed25519 public key is 32 bytes, got " + std::to_string(raw.size()));
  RawPublicKey r{};
  std::copy(raw.begin(), raw.end(), r.begin());
  // Let OpenSSL accept it once, so a key that cannot be used is refused here and not later.
  if (!RawPublicPkey(r)) return Invalid("not a usable Ed25519 public key: " + TakeOpenSslError());
  PublicKey key(r);
  if (key.key_id_.empty()) return OpenSslFailure("SHA-256 of the public key");
  return key;
}

Result<PublicKey> PublicKey::FromPem(std::string_view pem) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) return OpenSslFailure("BIO_new_mem_buf");
  PkeyPtr key(PEM_read_bio_PUBKEY(bio.get(), nullptr, NoPassphrase, nullptr));
  if (!key)
    return Invalid("not a PEM public key (\"-----BEGIN PUBLIC KEY-----\"): " + TakeOpenSslError());
  if (EVP_PKEY_get_base_id(key.get()) != EVP_PKEY_ED25519)
    return Invalid("the public key is " + TypeName(key.get()) + ", not Ed25519");
  RawPublicKey raw{};
  size_t len = raw.size();
  if (EVP_PKEY_get_raw_public_key(key.get(), raw.data(), &len) != 1 || len != raw.size())
    return OpenSslFailure("EVP_PKEY_get_raw_public_key");
  return FromRaw(raw);
}

Result<std::string> PublicKey::ToPem() const {
  PkeyPtr key = RawPublicPkey(raw_);
  if (!key) return OpenSslFailure("EVP_PKEY_new_raw_public_key");
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_PUBKEY(bio.get(), key.get()) != 1)
    return OpenSslFailure("PEM_write_bio_PUBKEY");
  char* data = nullptr;
  long len = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(len));
}

bool PublicKey::Verify(std::span<const uint8_t> message, std::span<const uint8_t> signature) const {
  if (signature.size() != kSignatureSize) return false;
  PkeyPtr key = RawPublicPkey(raw_);
  std::unique_ptr<EVP_MD_CTX, MdCtxFree> ctx(EVP_MD_CTX_new());
  bool ok = key && ctx &&
            EVP_DigestVerifyInit(ctx.get(), nullptr, nullptr, nullptr, key.get()) == 1 &&
            EVP_DigestVerify(ctx.get(), signature.data(), signature.size(), message.data(),
                             message.size()) == 1;
  ERR_clear_error();  // a bad signature queues an error; it is an answer, not a failure
  return ok;
}

// ---- PrivateKey --------------------------------------------------------------------------------

void PrivateKey::Free::operator()(evp_pkey_st* key) const { EVP_PKEY_free(key); }

PrivateKey::PrivateKey(std::unique_ptr<evp_pkey_st, Free> key, PublicKey pub)
    : key_(std::move(key)), public_(std::move(pub)) {}
PrivateKey::PrivateKey(PrivateKey&&) noexcept = default;
PrivateKey& PrivateKey::operator=(PrivateKey&&) noexcept = default;
PrivateKey::~PrivateKey() = default;

Result<PrivateKey> PrivateKey::Adopt(evp_pkey_st* raw_key, std::string_view what) {
  std::unique_ptr<evp_pkey_st, Free> key(raw_key);
  if (EVP_PKEY_get_base_id(key.get()) != EVP_PKEY_ED25519)
    return Invalid(std::string(what) + " is " + TypeName(key.get()) + ", not Ed25519");
  RawPublicKey raw{};
  size_t len = raw.size();
  if (EVP_PKEY_get_raw_public_key(key.get(), raw.data(), &len) != 1 || len != raw.size())
    return OpenSslFailure("EVP_PKEY_get_raw_public_key");
  auto pub = PublicKey::FromRaw(raw);
  if (!pub.ok()) return pub.status();
  return PrivateKey(std::move(key), std::move(pub).value());
}

Result<PrivateKey> PrivateKey::Generate() {
  std::unique_ptr<EVP_PKEY_CTX, PkeyCtxFree> ctx(EVP_PKEY_CTX_new_id(EVP_PKEY_ED25519, nullptr));
  EVP_PKEY* key = nullptr;
  if (!ctx || EVP_PKEY_keygen_init(ctx.get()) != 1 || EVP_PKEY_generate(ctx.get(), &key) != 1)
    return OpenSslFailure("generate an Ed25519 key");
  return Adopt(key, "the generated key");
}

Result<PrivateKey> PrivateKey::FromPem(std::string_view pem) {
  if (pem.find("-----BEGIN ENCRYPTED PRIVATE KEY-----") != std::string_view::npos)
    return Invalid(
        "the private key is encrypted; firmware signing keys are kept unencrypted with mode 0600");
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) return OpenSslFailure("BIO_new_mem_buf");
  EVP_PKEY* key = PEM_read_bio_PrivateKey(bio.get(), nullptr, NoPassphrase, nullptr);
  if (!key)
    return Invalid("not a PEM private key (\"-----BEGIN PRIVATE KEY-----\"): " +
                   TakeOpenSslError());
  return Adopt(key, "the private key");
}

Result<Signature> PrivateKey::Sign(std::span<const uint8_t> message) const {
  std::unique_ptr<EVP_MD_CTX, MdCtxFree> ctx(EVP_MD_CTX_new());
  Signature sig{};
  size_t len = sig.size();
  // Ed25519 hashes internally: no digest is named (NULL md) and the message goes in one piece.
  if (!ctx || EVP_DigestSignInit(ctx.get(), nullptr, nullptr, nullptr, key_.get()) != 1 ||
      EVP_DigestSign(ctx.get(), sig.data(), &len, message.data(), message.size()) != 1 ||
      len != sig.size())
    return OpenSslFailure("Ed25519 sign");
  return sig;
}

// ---- files -------------------------------------------------------------------------------------

Status WritePrivateKey(const PrivateKey& key, const std::string& path) {
  return WriteNewFile(path, 0600, "private key", [&](BIO* bio) {
    return PEM_write_bio_PKCS8PrivateKey(bio, key.key_.get(), nullptr, nullptr, 0, nullptr,
                                         nullptr) == 1;
  });
}

Status WritePublicKey(const PublicKey& key, const std::string& path) {
  auto pem = key.ToPem();
  if (!pem.ok()) return pem.status();
  return WriteNewFile(path, 0644, "public key", [&](BIO* bio) {
    return BIO_write(bio, pem->data(), static_cast<int>(pem->size())) ==
           static_cast<int>(pem->size());
  });
}

Result<PrivateKey> ReadPrivateKey(const std::string& path) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY));
  if (fd.get() < 0) return ErrnoStatus("open private key " + path, errno);
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return ErrnoStatus("stat " + path, errno);
  if (!S_ISREG(st.st_mode)) return Invalid(path + ": not a regular file");
  // Checked on the descriptor that is read, so the file cannot be swapped in between.
  if ((st.st_mode & 077) != 0)
    return Status(Code::kFailedPrecondition,
                  "private key " + path + " has mode " + OctalMode(st.st_mode) +
                      ", which lets group or others read it; refusing to use it (chmod 600 " +
                      path + ")");
  auto text = ReadSmall(fd.get(), path);
  if (!text.ok()) return text.status();
  auto key = PrivateKey::FromPem(*text);
  OPENSSL_cleanse(text->data(), text->size());
  if (!key.ok()) return Status(key.status().code(), path + ": " + key.status().message());
  return key;
}

Result<PublicKey> ReadPublicKey(const std::string& path) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY));
  if (fd.get() < 0) return ErrnoStatus("open public key " + path, errno);
  auto text = ReadSmall(fd.get(), path);
  if (!text.ok()) return text.status();
  auto key = PublicKey::FromPem(*text);
  if (!key.ok()) return Status(key.status().code(), path + ": " + key.status().message());
  return key;
}

}  // namespace sanigate::firmware
