// Firmware version strings and ranges (gateway/firmware/version.h): CompareVersions must be an
// order (reflexive, antisymmetric, transitive on the three versions the input holds, separated by
// newlines), IsAcceptedVersion and CheckVersion agree, and VersionRange::Parse reads its own
// ToString back to the same range, which contains the same versions.
#include <compare>
#include <cstdint>
#include <string>

#include "firmware/version.h"
#include "fuzz_common.h"

using namespace sanigate::firmware;

namespace {

const char* Name(std::strong_ordering o) { return o < 0 ? "<" : o > 0 ? ">" : "="; }

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text = fuzz::Text(data, size);
  std::string_view part[3];
  std::string_view rest = text;
  for (int i = 0; i < 3; ++i) {
    size_t nl = rest.find('\n');
    part[i] = rest.substr(0, nl);
    rest = nl == std::string_view::npos ? std::string_view() : rest.substr(nl + 1);
  }
  const std::string_view a = part[0], b = part[1], c = part[2];
  for (std::string_view v : {a, b, c}) {
    FUZZ_CHECK(CompareVersions(v, v) == 0, "not reflexive: " + std::string(v));
    FUZZ_CHECK(IsAcceptedVersion(v) == CheckVersion(v).ok(), "IsAcceptedVersion vs CheckVersion");
  }
  auto ab = CompareVersions(a, b), ba = CompareVersions(b, a);
  FUZZ_CHECK((ab < 0 && ba > 0) || (ab > 0 && ba < 0) || (ab == 0 && ba == 0),
             std::string("not antisymmetric: ") + std::string(a) + " " + Name(ab) + " " + std::string(b) + " but " +
                 std::string(b) + " " + Name(ba) + " " + std::string(a));
  auto bc = CompareVersions(b, c), ac = CompareVersions(a, c);
  if (ab <= 0 && bc <= 0)
    FUZZ_CHECK(ac <= 0, "not transitive: " + std::string(a) + " <= " + std::string(b) + " <= " + std::string(c) +
                            " but " + std::string(a) + " " + Name(ac) + " " + std::string(c));
  if (ab == 0 && bc == 0) FUZZ_CHECK(ac == 0, "equality not transitive");

  auto range = VersionRange::Parse(a);
  if (range.ok()) {
    std::string norm = range.value().ToString();
    auto again = VersionRange::Parse(norm);
    FUZZ_CHECK(again.ok(), "VersionRange::Parse(ToString()) failed for \"" + norm + "\": " + again.status().message());
    FUZZ_CHECK(again.value().ToString() == norm, "ToString not stable: " + norm + " -> " + again.value().ToString());
    for (std::string_view v : {b, c})
      FUZZ_CHECK(range.value().Contains(v) == again.value().Contains(v), "the normalized range contains other versions");
  }
  return 0;
}
