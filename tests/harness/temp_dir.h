// Unique scratch directory for one test or fixture (configs, logs, certificates, port files).
// Ownership: owns the dir, removed recursively on destruction unless SANIGATE_KEEP_TEST_DIRS=1.
// Thread-safety: path() is immutable after construction and safe to read from any thread.
#pragma once

#include <filesystem>
#include <string>

namespace sanigate::test {

class TempDir {
 public:
  // Creates $TMPDIR/sanigate-test-XXXXXX (or /tmp/...). Throws std::runtime_error on failure.
  TempDir();
  ~TempDir();

  TempDir(TempDir&& other) noexcept;
  TempDir& operator=(TempDir&& other) noexcept;
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::filesystem::path& path() const { return path_; }
  // Convenience for building file names inside the directory.
  std::string File(const std::string& name) const { return (path_ / name).string(); }

 private:
  void Remove() noexcept;

  std::filesystem::path path_;  // empty once moved from
};

}  // namespace sanigate::test
