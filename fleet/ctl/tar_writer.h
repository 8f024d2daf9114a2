// A .tar.gz written straight to a file descriptor: POSIX ustar members (regular files and
// directories), gzip by zlib. For `sanictl diag`, whose members are small texts built in memory:
// nothing of the archive's content ever touches the disk outside the archive itself.
// Not thread-safe; one writer per archive. Does not own the descriptor.
#pragma once

#include <zlib.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "core/status.h"

namespace sanigate::ctl {

// The 512-byte ustar header of one member, or an error when the name does not fit (at most 100
// bytes, or a 155-byte directory prefix and a 100-byte rest split at a '/'). `type`: '0' file,
// '5' directory. Owner uid/gid 0 without names: whoever extracts the archive owns the files.
Status UstarHeader(std::string_view name, uint64_t size, unsigned mode, int64_t mtime, char type, char out[512]);

class TarGzWriter {
 public:
  explicit TarGzWriter(int fd);
  ~TarGzWriter();
  TarGzWriter(const TarGzWriter&) = delete;
  TarGzWriter& operator=(const TarGzWriter&) = delete;

  // A directory member ("name/" is written with the trailing slash).
  Status AddDirectory(std::string_view name, unsigned mode, int64_t mtime);
  Status AddFile(std::string_view name, std::string_view data, unsigned mode, int64_t mtime);
  // The two zero blocks that end a tar, then the gzip trailer. Nothing may be added afterwards.
  Status Finish();
  // Compressed bytes written to the descriptor so far.
  uint64_t bytes_written() const { return written_; }

 private:
  Status Deflate(std::string_view data, int flush);

  int fd_;
  z_stream z_{};
  bool open_ = false;
  bool finished_ = false;
  uint64_t written_ = 0;
};

}  // namespace sanigate::ctl
