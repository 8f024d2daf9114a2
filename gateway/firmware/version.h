// Firmware version strings: which strings a manifest may carry, how two versions are ordered,
// and version ranges (">=1.2.0,<1.3.0") for campaign targeting. Pure functions and plain values;
// thread-safe.
//
// Accepted syntax: 1 to 64 characters from [0-9A-Za-z._+-]. Anything else is refused.
//
// Ordering (CompareVersions), applied in this order:
//   1. A leading 'v' or 'V' directly followed by a digit is ignored: v1.2 == 1.2.
//   2. Everything from the first '+' on is build metadata and is ignored: 1.2.0+b7 == 1.2.0+b9.
//   3. The rest is split at its first '-' into the release and an optional pre-release.
//   4. Releases are compared component by component ('.'-separated); a missing or empty
//      component counts as "0", so 1.2 == 1.2.0. Components compare "naturally": each is cut into
//      runs of digits and runs of other characters; digit runs compare as numbers of any size
//      (leading zeros ignored: 1.02 == 1.2, 1.2.10 > 1.2.9), other runs compare as ASCII bytes,
//      a digit run sorts before a non-digit run, and a component that is a proper prefix of the
//      other (in runs) sorts first. So a letter suffix on a release component is a *later*
//      release: 1.1.1w > 1.1.1 (OpenSSL style). Mark pre-releases with '-' instead.
//   5. Equal releases: one without a pre-release is greater than one with a pre-release
//      (1.2.0-rc1 < 1.2.0). Two pre-releases compare identifier by identifier ('.'-separated,
//      '-' is part of an identifier) with the same natural rule (rc2 < rc10, 1 < rc,
//      alpha < beta); when all shared identifiers are equal the one with fewer sorts first
//      (rc < rc.1).
// Two different strings can therefore compare equal (v1.2, 1.2.0, 1.2.0+b3); callers that need
// "exactly this build" compare strings.
#pragma once

#include <compare>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace sanigate::firmware {

inline constexpr size_t kMaxVersionLength = 64;

// True when `version` matches [0-9A-Za-z._+-]{1,64}.
bool IsAcceptedVersion(std::string_view version);

// Ok, or Invalid("version not accepted: \"1.2 beta\" must match [0-9A-Za-z._+-]{1,64}").
Status CheckVersion(std::string_view version);

// The order described above. Defined for any strings; meant for accepted versions.
std::strong_ordering CompareVersions(std::string_view a, std::string_view b);

// A conjunction of comparisons, e.g. ">=1.2.0,<1.3.0". Clauses are separated by ','; each is an
// operator (>=, <=, >, <, =, ==, !=) followed by an accepted version; a bare version means "=";
// blanks around clauses and operators are ignored; "*" alone matches every version. Comparisons
// use CompareVersions, so "<1.3.0" includes 1.3.0-rc1 and "=1.2" includes 1.2.0.
class VersionRange {
 public:
  // Invalid("version range \">=1.2,<\": clause 2 has no version") and the like.
  static Result<VersionRange> Parse(std::string_view text);

  bool Contains(std::string_view version) const;
  // Normalized text: clauses joined by ',' with no blanks, "=" for bare versions, "*" for any.
  std::string ToString() const;

 private:
  enum class Op { kGe, kLe, kGt, kLt, kEq, kNe };
  struct Clause {
    Op op;
    std::string version;
  };
  std::vector<Clause> clauses_;  // empty = any version
};

}  // namespace sanigate::firmware
