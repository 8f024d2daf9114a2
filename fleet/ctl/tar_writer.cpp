#include "ctl/tar_writer.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace sanigate::ctl {
namespace {

constexpr size_t kBlock = 512;

// An octal field of `width` bytes: digits, then NUL (ustar's layout).
bool Octal(char* field, size_t width, uint64_t value) {
  char buf[32];
  int n = std::snprintf(buf, sizeof buf, "%0*llo", static_cast<int>(width - 1), static_cast<unsigned long long>(value));
  if (n < 0 || static_cast<size_t>(n) > width - 1) return false;
  std::memcpy(field, buf, width - 1);
  field[width - 1] = '\0';
  return true;
}

}  // namespace

Status UstarHeader(std::string_view name, uint64_t size, unsigned mode, int64_t mtime, char type, char out[512]) {
  std::memset(out, 0, kBlock);
  std::string_view prefix, rest = name;
  if (name.empty()) return Invalid("empty member name");
  if (name.size() > 100) {
    // Split at a '/' so that the prefix has at most 155 bytes and the rest at most 100.
    size_t cut = name.rfind('/', 155);
    while (cut != std::string_view::npos && name.size() - cut - 1 > 100) cut = std::string_view::npos;
    if (cut == std::string_view::npos || cut == 0) return Invalid("member name too long for tar: " + std::string(name));
    prefix = name.substr(0, cut);
    rest = name.substr(cut + 1);
  }
  std::memcpy(out, rest.data(), rest.size());
  if (!Octal(out + 100, 8, mode & 07777) || !Octal(out + 108, 8, 0) || !Octal(out + 116, 8, 0) ||
      !Octal(out + 124, 12, size) || !Octal(out + 136, 12, static_cast<uint64_t>(mtime < 0 ? 0 : mtime)))
    return Invalid("member too large for tar: " + std::string(name));
  out[156] = type;
  std::memcpy(out + 257, "ustar", 6);  // magic "ustar\0"
  std::memcpy(out + 263, "00", 2);     // version
  std::memcpy(out + 345, prefix.data(), prefix.size());
  // The checksum counts its own field as eight spaces.
  std::memset(out + 148, ' ', 8);
  unsigned sum = 0;
  for (size_t i = 0; i < kBlock; ++i) sum += static_cast<unsigned char>(out[i]);
  std::snprintf(out + 148, 8, "%06o", sum);  // six digits, NUL, and the last space stays
  out[155] = ' ';
  return Status::Ok();
}

TarGzWriter::TarGzWriter(int fd) : fd_(fd) {
  // windowBits 15 + 16: a gzip wrapper rather than zlib's own.
  open_ = deflateInit2(&z_, Z_BEST_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) == Z_OK;
}

TarGzWriter::~TarGzWriter() {
  if (open_) deflateEnd(&z_);
}

Status TarGzWriter::Deflate(std::string_view data, int flush) {
  if (!open_) return Internal("zlib could not be initialised");
  if (finished_) return Internal("archive already finished");
  z_.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  z_.avail_in = static_cast<uInt>(data.size());
  unsigned char out[64 * 1024];
  int rc = Z_OK;
  do {
    z_.next_out = out;
    z_.avail_out = sizeof out;
    rc = deflate(&z_, flush);
    if (rc == Z_STREAM_ERROR) return Internal("zlib deflate failed");
    size_t have = sizeof out - z_.avail_out;
    for (size_t off = 0; off < have;) {
      ssize_t n = ::write(fd_, out + off, have - off);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return Unavailable(std::string("cannot write the archive: ") + std::strerror(errno));
      off += static_cast<size_t>(n);
      written_ += static_cast<uint64_t>(n);
    }
  } while (z_.avail_out == 0 || (flush == Z_FINISH && rc != Z_STREAM_END));
  return Status::Ok();
}

Status TarGzWriter::AddDirectory(std::string_view name, unsigned mode, int64_t mtime) {
  std::string dir(name);
  if (dir.empty() || dir.back() != '/') dir += '/';
  char header[kBlock];
  if (Status st = UstarHeader(dir, 0, mode, mtime, '5', header); !st.ok()) return st;
  return Deflate({header, kBlock}, Z_NO_FLUSH);
}

Status TarGzWriter::AddFile(std::string_view name, std::string_view data, unsigned mode, int64_t mtime) {
  char header[kBlock];
  if (Status st = UstarHeader(name, data.size(), mode, mtime, '0', header); !st.ok()) return st;
  if (Status st = Deflate({header, kBlock}, Z_NO_FLUSH); !st.ok()) return st;
  if (Status st = Deflate(data, Z_NO_FLUSH); !st.ok()) return st;
  static const char kZeros[kBlock] = {};
  size_t pad = (kBlock - data.size() % kBlock) % kBlock;
  return Deflate({kZeros, pad}, Z_NO_FLUSH);
}

Status TarGzWriter::Finish() {
  static const char kEnd[2 * kBlock] = {};
  Status st = Deflate({kEnd, sizeof kEnd}, Z_FINISH);
  finished_ = true;
  return st;
}

}  // namespace sanigate::ctl
