// The main() of the fuzz targets in the normal (non-libFuzzer) build: runs
// LLVMFuzzerTestOneInput once over every file named on the command line and every regular file
// in every directory named there (not recursive, in name order). A missing path is skipped with a
// note, so an empty regression directory does not fail the test. A crash, an abort (failed
// property) or a sanitizer report ends the process, naming the input first.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);
extern "C" __attribute__((weak)) int LLVMFuzzerInitialize(int* argc, char*** argv);

namespace {

bool RunFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "replay: cannot read %s\n", path.c_str());
    return false;
  }
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  // An exact-size heap copy, so a read past the end is caught by ASan when it is enabled.
  std::vector<uint8_t> input(bytes.begin(), bytes.end());
  std::fprintf(stderr, "replay: %s (%zu bytes)\n", path.c_str(), input.size());
  LLVMFuzzerTestOneInput(input.empty() ? nullptr : input.data(), input.size());
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  if (LLVMFuzzerInitialize) LLVMFuzzerInitialize(&argc, &argv);
  size_t runs = 0;
  bool failed = false;
  for (int i = 1; i < argc; ++i) {
    std::filesystem::path p(argv[i]);
    std::error_code ec;
    if (std::filesystem::is_directory(p, ec)) {
      std::vector<std::filesystem::path> files;
      for (const auto& e : std::filesystem::directory_iterator(p, ec))
        if (e.is_regular_file()) files.push_back(e.path());
      std::sort(files.begin(), files.end());
      for (const auto& f : files) {
        failed |= !RunFile(f);
        ++runs;
      }
    } else if (std::filesystem::is_regular_file(p, ec)) {
      failed |= !RunFile(p);
      ++runs;
    } else {
      std::fprintf(stderr, "replay: %s does not exist; skipped\n", argv[i]);
    }
  }
  std::printf("replay: %zu inputs ran without a crash\n", runs);
  return failed ? 1 : 0;
}
