// Status and Result<T>: the one error vocabulary of Sanigate. The code says what a caller should
// do (retry, reject, shed, restart); the message names the path, the problem and the allowed range.
// Plain values, no shared state: thread-safe to copy and pass anywhere.
#pragma once

#include <cassert>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace sanigate {

enum class Code {
  kOk,
  kInvalid,            // bad input or config: reject, never retry
  kNotFound,           // a named thing does not exist
  kUnavailable,        // peer or link down: retry with jittered backoff
  kDeadline,           // a wait ran out: retry with backoff
  kResourceExhausted,  // full queue or disk: shed lowest priority first, raise an alarm
  kDataLoss,           // corrupt or foreign stored data: stop, never overwrite
  kFailedPrecondition, // operation not allowed in the current state
  kInternal,           // a bug or an unexpected library error: restart that component only
};

std::string_view CodeName(Code code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(Code code, std::string message) : code_(code), message_(std::move(message)) {}
  static Status Ok() { return {}; }

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  const std::string& message() const { return message_; }
  // "unavailable: connect to 127.0.0.1:502 refused"
  std::string ToString() const;

 private:
  Code code_ = Code::kOk;
  std::string message_;
};

inline Status Invalid(std::string m) { return {Code::kInvalid, std::move(m)}; }
inline Status Unavailable(std::string m) { return {Code::kUnavailable, std::move(m)}; }
inline Status DataLoss(std::string m) { return {Code::kDataLoss, std::move(m)}; }
inline Status Internal(std::string m) { return {Code::kInternal, std::move(m)}; }
inline Status Exhausted(std::string m) { return {Code::kResourceExhausted, std::move(m)}; }

template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}  // NOLINT: implicit by design, like std::expected
  Result(Status status) : v_(std::move(status)) { assert(!std::get<Status>(v_).ok()); }

  bool ok() const { return std::holds_alternative<T>(v_); }
  const Status& status() const {
    static const Status kOk;
    return ok() ? kOk : std::get<Status>(v_);
  }
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace sanigate
