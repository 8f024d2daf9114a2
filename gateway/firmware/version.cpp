#include "firmware/version.h"

#include <algorithm>
#include <optional>

namespace sanigate::firmware {
namespace {

bool IsDigit(char c) { return c >= '0' && c <= '9'; }

bool IsVersionChar(char c) {
  return IsDigit(c) || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '.' || c == '+' ||
         c == '-';
}

std::string_view TrimBlanks(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

std::vector<std::string_view> Split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  for (;;) {
    size_t at = s.find(sep);
    out.push_back(s.substr(0, at));
    if (at == std::string_view::npos) return out;
    s.remove_prefix(at + 1);
  }
}

// Digit runs as numbers of any length, other runs as bytes, digits before non-digits, a proper
// prefix first.
std::strong_ordering CompareNatural(std::string_view a, std::string_view b) {
  size_t i = 0, j = 0;
  while (i < a.size() && j < b.size()) {
    bool da = IsDigit(a[i]), db = IsDigit(b[j]);
    if (da != db) return da ? std::strong_ordering::less : std::strong_ordering::greater;
    size_t ie = i, je = j;
    while (ie < a.size() && IsDigit(a[ie]) == da) ++ie;
    while (je < b.size() && IsDigit(b[je]) == db) ++je;
    std::string_view ra = a.substr(i, ie - i), rb = b.substr(j, je - j);
    if (da) {
      while (ra.size() > 1 && ra.front() == '0') ra.remove_prefix(1);
      while (rb.size() > 1 && rb.front() == '0') rb.remove_prefix(1);
      if (ra.size() != rb.size()) return ra.size() <=> rb.size();
    }
    if (int c = ra.compare(rb); c != 0) return c <=> 0;
    i = ie;
    j = je;
  }
  return (a.size() - i) <=> (b.size() - j);
}

struct Parts {
  std::vector<std::string_view> release;
  std::optional<std::vector<std::string_view>> pre;
};

Parts Decompose(std::string_view v) {
  if (v.size() >= 2 && (v[0] == 'v' || v[0] == 'V') && IsDigit(v[1])) v.remove_prefix(1);
  if (size_t plus = v.find('+'); plus != std::string_view::npos) v = v.substr(0, plus);
  Parts p;
  size_t dash = v.find('-');
  p.release = Split(v.substr(0, dash), '.');
  if (dash != std::string_view::npos) p.pre = Split(v.substr(dash + 1), '.');
  return p;
}

}  // namespace

bool IsAcceptedVersion(std::string_view version) {
  return !version.empty() && version.size() <= kMaxVersionLength &&
         std::all_of(version.begin(), version.end(), IsVersionChar);
}

Status CheckVersion(std::string_view version) {
  if (IsAcceptedVersion(version)) return Status::Ok();
  std::string shown(version.substr(0, 80));
  if (version.size() > 80) shown += "...";
  return Invalid("version not accepted: \"" + shown + "\" must match [0-9A-Za-z._+-]{1,64}");
}

std::strong_ordering CompareVersions(std::string_view a, std::string_view b) {
  Parts pa = Decompose(a), pb = Decompose(b);
  size_t n = std::max(pa.release.size(), pb.release.size());
  for (size_t k = 0; k < n; ++k) {
    std::string_view ca = k < pa.release.size() ? pa.release[k] : "0";
    std::string_view cb = k < pb.release.size() ? pb.release[k] : "0";
    if (ca.empty()) ca = "0";
    if (cb.empty()) cb = "0";
    if (auto c = CompareNatural(ca, cb); c != 0) return c;
  }
  if (!pa.pre && !pb.pre) return std::strong_ordering::equal;
  if (!pa.pre) return std::strong_ordering::greater;
  if (!pb.pre) return std::strong_ordering::less;
  size_t m = std::min(pa.pre->size(), pb.pre->size());
  for (size_t k = 0; k < m; ++k) {
    if (auto c = CompareNatural((*pa.pre)[k], (*pb.pre)[k]); c != 0) return c;
  }
  return pa.pre->size() <=> pb.pre->size();
}

Result<VersionRange> VersionRange::Parse(std::string_view text) {
  auto fail = [&](const std::string& why) {
    return Invalid("version range \"" + std::string(text.substr(0, 200)) + "\": " + why);
  };
  VersionRange range;
  if (TrimBlanks(text) == "*") return range;
  std::vector<std::string_view> parts = Split(text, ',');
  for (size_t k = 0; k < parts.size(); ++k) {
    std::string n = "clause " + std::to_string(k + 1);
    std::string_view s = TrimBlanks(parts[k]);
    if (s.empty()) return fail(n + " is empty");
    static constexpr std::pair<std::string_view, Op> kOps[] = {
        {">=", Op::kGe}, {"<=", Op::kLe}, {"==", Op::kEq}, {"!=", Op::kNe},
        {">", Op::kGt},  {"<", Op::kLt},  {"=", Op::kEq}};
    Op op = Op::kEq;
    for (const auto& [token, value] : kOps) {
      if (s.starts_with(token)) {
        op = value;
        s.remove_prefix(token.size());
        break;
      }
    }
    s = TrimBlanks(s);
    if (s.empty()) return fail(n + " has no version");
    if (Status st = CheckVersion(s); !st.ok()) return fail(n + ": " + st.message());
    range.clauses_.push_back({op, std::string(s)});
  }
  return range;
}

bool VersionRange::Contains(std::string_view version) const {
  for (const Clause& c : clauses_) {
    auto order = CompareVersions(version, c.version);
    bool holds = false;
    switch (c.op) {
      case Op::kGe:
        holds = order >= 0;
        break;
      case Op::kLe:
        holds = order <= 0;
        break;
      case Op::kGt:
        holds = order > 0;
        break;
      case Op::kLt:
        holds = order < 0;
        break;
      case Op::kEq:
        holds = order == 0;
        break;
      case Op::kNe:
        holds = order != 0;
        break;
    }
    if (!holds) return false;
  }
  return true;
}

std::string VersionRange::ToString() const {
  if (clauses_.empty()) return "*";
  std::string out;
  for (const Clause& c : clauses_) {
    if (!out.empty()) out += ',';
    switch (c.op) {
      case Op::kGe:
        out += ">=";
        break;
      case Op::kLe:
        out += "<=";
        break;
      case Op::kGt:
        out += ">";
        break;
      case Op::kLt:
        out += "<";
        break;
      case Op::kEq:
        out += "=";
        break;
      case Op::kNe:
        out += "!=";
        break;
    }
    out += c.version;
  }
  return out;
}

}  // namespace sanigate::firmware
