#include "core/status.h"

namespace sanigate {

std::string_view CodeName(Code code) {
  switch (code) {
    case Code::kOk: return "ok";
    case Code::kInvalid: return "invalid";
    case Code::kNotFound: return "not found";
    case Code::kUnavailable: return "unavailable";
    case Code::kDeadline: return "deadline exceeded";
    case Code::kResourceExhausted: return "resource exhausted";
    case Code::kDataLoss: return "data loss";
    case Code::kFailedPrecondition: return "failed precondition";
    case Code::kInternal: return "internal";
  }
  return "unknown";
}

std::string Status::ToString() const {
  if (ok()) return "ok";
  std::string s(CodeName(code_));
  s += ": ";
  s += message_;
  return s;
}

}  // namespace sanigate
