#include "jt808/auth_codes.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

namespace sanigate::dev::jt808 {

Result<AuthCodes> AuthCodes::Load(const std::string& path) {
  AuthCodes codes;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0 && errno == ENOENT) {
    std::error_code ec;
    std::filesystem::create_directories(std::filesystem::path(path).parent_path(), ec);
    if (RAND_bytes(codes.secret_.data(), static_cast<int>(codes.secret_.size())) != 1)
      return Internal("no random bytes for the JT/T 808 secret");
    std::string tmp = path + ".tmp";
    int out = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (out < 0) return Unavailable("cannot create " + tmp + ": " + std::strerror(errno));
    bool ok = ::write(out, codes.secret_.data(), codes.secret_.size()) == static_cast<ssize_t>(codes.secret_.size()) &&
              ::fsync(out) == 0;
    ::close(out);
    if (!ok || ::rename(tmp.c_str(), path.c_str()) != 0)
      return Unavailable("cannot write " + path + ": " + std::strerror(errno));
    return codes;
  }
  if (fd < 0) return Unavailable("cannot read " + path + ": " + std::strerror(errno));
  struct stat st {};
  ::fstat(fd, &st);
  ssize_t n = ::read(fd, codes.secret_.data(), codes.secret_.size());
  char extra;
  ssize_t more = ::read(fd, &extra, 1);
  ::close(fd);
  if ((st.st_mode & 077) != 0) return Invalid(path + " must not be readable by others (chmod 600)");
  if (n != static_cast<ssize_t>(codes.secret_.size()) || more != 0)
    return DataLoss(path + " is not a JT/T 808 secret (expected exactly 32 bytes); move it away to issue new codes");
  return codes;
}

std::string AuthCodes::CodeFor(const std::string& phone) const {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), secret_.data(), static_cast<int>(secret_.size()),
       reinterpret_cast<const unsigned char*>(phone.data()), phone.size(), mac, &len);
  static const char* kHex = "0123456789ABCDEF";
  std::string code;
  for (int i = 0; i < 8; ++i) {
    code.push_back(kHex[mac[i] >> 4]);
    code.push_back(kHex[mac[i] & 15]);
  }
  return code;
}

}  // namespace sanigate::dev::jt808
