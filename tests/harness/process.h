// Child process handle for integration tests (mosquitto, simulators, the sanigate daemon, CLIs).
// Ownership: owns only the PID it started, signals only it, always reaps it (dtor SIGKILLs).
// Thread-safety: not thread-safe; use one Process from one thread at a time.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace sanigate::test {

// Declared outside Process so it can be a defaulted argument of Process::Start (a nested struct
// with member initializers is incomplete inside its enclosing class).
struct ProcessOptions {
  std::string stdout_path{};  // empty: inherit the test's stdout; otherwise truncate and write here
  std::string stderr_path{};  // empty: inherit the test's stderr
  std::vector<std::pair<std::string, std::string>> extra_env{};  // added to / overriding environ
  std::string cwd{};          // empty: the test's working directory
};

class Process {
 public:
  using Options = ProcessOptions;

  // Starts argv[0] (searched in PATH unless it contains '/'). Throws std::runtime_error if the
  // output files cannot be opened or the exec itself fails, so a typo never looks like a crash.
  static Process Start(std::vector<std::string> argv, Options options = {});

  // Starts a command and waits for it; returns the raw wait status. Throws std::runtime_error
  // (after killing the child) if it does not finish within `timeout`.
  static int Run(std::vector<std::string> argv, std::chrono::milliseconds timeout,
                 Options options = {});

  Process() = default;  // empty handle, owns nothing
  ~Process();
  Process(Process&& other) noexcept;
  Process& operator=(Process&& other) noexcept;
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  pid_t pid() const { return pid_; }
  // The raw wait status once the child has been reaped.
  std::optional<int> status() const { return status_; }

  // False once the child exited (reaping it) or if the handle is empty.
  bool Running();
  // No-op once the child has been reaped, so a recycled PID is never signalled.
  void Signal(int sig);
  // Raw wait status, or nullopt if the child is still running at the deadline.
  std::optional<int> Wait(std::chrono::milliseconds timeout);
  // SIGTERM, up to `grace` to exit, then SIGKILL. Returns the wait status.
  int Stop(std::chrono::milliseconds grace = std::chrono::seconds(5));
  // SIGKILL and reap.
  void Kill();

 private:
  explicit Process(pid_t pid, std::string name) : pid_(pid), name_(std::move(name)) {}
  void Release() noexcept;

  pid_t pid_ = -1;
  std::string name_;  // argv[0], for error messages
  std::optional<int> status_;
};

// Whole file content; empty string if it cannot be read (logs may not exist yet).
std::string ReadFile(const std::string& path);

// "exited with code 3" / "killed by signal 9 (Killed)", for assertion messages.
std::string DescribeWaitStatus(int status);

// True if the status is a normal exit with `code`.
bool ExitedWith(int status, int code);

}  // namespace sanigate::test
