#include "harness/process.h"

#include <fcntl.h>
#include <linux/close_range.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <thread>

extern char** environ;

namespace sanigate::test {
namespace {

using Clock = std::chrono::steady_clock;

// What the child reports through the CLOEXEC pipe when it cannot reach exec().
struct ChildFailure {
  int stage;  // one of the kStage* values below
  int error;  // errno
};
constexpr int kStageChdir = 1;
constexpr int kStageRedirect = 2;
constexpr int kStageExec = 3;

class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { Reset(); }
  int get() const { return fd_; }
  void Reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

// PATH lookup happens in the parent because the child of a multithreaded parent may only call
// async-signal-safe functions, and execvp may allocate.
std::string ResolveExecutable(const std::string& name) {
  if (name.find('/') != std::string::npos) return name;
  const char* env_path = std::getenv("PATH");
  std::string path = env_path != nullptr ? env_path : "/usr/local/bin:/usr/bin:/bin";
  std::size_t start = 0;
  while (start <= path.size()) {
    std::size_t end = path.find(':', start);
    if (end == std::string::npos) end = path.size();
    // An empty PATH entry means the current directory.
    const std::string dir = end > start ? path.substr(start, end - start) : std::string(".");
    const std::string candidate = dir + "/" + name;
    struct stat st {};
    if (::stat(candidate.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
        ::access(candidate.c_str(), X_OK) == 0) {
      return candidate;
    }
    start = end + 1;
  }
  return name;  // execve will fail with ENOENT and we report it like any other exec failure
}

int OpenOutput(const std::string& path) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    throw std::runtime_error("Process: cannot open output file " + path + ": " +
                             std::strerror(errno));
  }
  return fd;
}

std::vector<std::string> BuildEnvironment(
    const std::vector<std::pair<std::string, std::string>>& extra) {
  std::vector<std::string> env;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    const std::string entry = *e;
    const std::string key = entry.substr(0, entry.find('='));
    const bool overridden = std::any_of(extra.begin(), extra.end(),
                                        [&](const auto& kv) { return kv.first == key; });
    if (!overridden) env.push_back(entry);
  }
  for (const auto& [key, value] : extra) env.push_back(key + "=" + value);
  return env;
}

std::vector<char*> CPointers(std::vector<std::string>& strings) {
  std::vector<char*> out;
  out.reserve(strings.size() + 1);
  for (auto& s : strings) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

[[noreturn]] void ChildFail(int pipe_fd, int stage) {
  const ChildFailure failure{stage, errno};
  // Nothing useful can be done if this write fails; the parent then sees exit code 127.
  [[maybe_unused]] const ssize_t n = ::write(pipe_fd, &failure, sizeof failure);
  ::_exit(127);
}

}  // namespace

Process Process::Start(std::vector<std::string> argv, Options options) {
  if (argv.empty() || argv.front().empty()) {
    throw std::runtime_error("Process::Start: empty argv");
  }
  // Everything the child needs is prepared before fork() so the child only makes syscalls.
  std::string executable = ResolveExecutable(argv.front());
  std::vector<std::string> env = BuildEnvironment(options.extra_env);
  std::vector<char*> c_argv = CPointers(argv);
  std::vector<char*> c_env = CPointers(env);

  Fd out_holder(options.stdout_path.empty() ? -1 : OpenOutput(options.stdout_path));
  // The same file for both streams must share one open file description, or the two writers
  // would overwrite each other's bytes at independent offsets.
  const bool same_file =
      !options.stderr_path.empty() && options.stderr_path == options.stdout_path;
  Fd err_holder(options.stderr_path.empty() || same_file ? -1 : OpenOutput(options.stderr_path));
  const int child_out = out_holder.get();
  const int child_err = same_file ? out_holder.get() : err_holder.get();

  // Upper bound for the fallback descriptor sweep, computed here because sysconf/getrlimit are
  // not guaranteed async-signal-safe.
  rlimit nofile{};
  const int max_fd = ::getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur != RLIM_INFINITY
                         ? static_cast<int>(std::min<rlim_t>(nofile.rlim_cur, 1 << 20))
                         : 65536;

  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) {
    throw std::runtime_error(std::string("Process::Start: pipe2 failed: ") + std::strerror(errno));
  }
  Fd pipe_read(pipe_fds[0]);
  Fd pipe_write(pipe_fds[1]);

  const pid_t pid = ::fork();
  if (pid < 0) {
    throw std::runtime_error(std::string("Process::Start: fork failed: ") + std::strerror(errno));
  }
  if (pid == 0) {
    // Child: async-signal-safe calls only.
    sigset_t none;
    ::sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    // Ignored dispositions survive exec (libraries commonly ignore SIGPIPE); servers under test
    // must start with the defaults they would get from a shell.
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; ++sig) {
      if (sig != SIGKILL && sig != SIGSTOP) ::sigaction(sig, &dfl, nullptr);
    }
    if (child_out >= 0 && ::dup2(child_out, STDOUT_FILENO) < 0) {
      ChildFail(pipe_write.get(), kStageRedirect);
    }
    if (child_err >= 0 && ::dup2(child_err, STDERR_FILENO) < 0) {
      ChildFail(pipe_write.get(), kStageRedirect);
    }
    // Sockets the test holds (listeners, Paho connections) must not leak into the child, or a
    // port stays bound / a connection stays open after the test closed it. CLOEXEC rather than
    // close keeps the error pipe usable until exec succeeds.
    if (::close_range(3, ~0U, CLOSE_RANGE_CLOEXEC) != 0) {
      for (int fd = 3; fd < max_fd; ++fd) ::fcntl(fd, F_SETFD, FD_CLOEXEC);
    }
    if (!options.cwd.empty() && ::chdir(options.cwd.c_str()) != 0) {
      ChildFail(pipe_write.get(), kStageChdir);
    }
    ::execve(executable.c_str(), c_argv.data(), c_env.data());
    ChildFail(pipe_write.get(), kStageExec);
  }

  pipe_write.Reset();
  ChildFailure failure{};
  ssize_t got = 0;
  do {
    got = ::read(pipe_read.get(), &failure, sizeof failure);
  } while (got < 0 && errno == EINTR);

  Process process(pid, argv.front());
  if (got > 0) {
    // The child is already on its way to _exit(127); reaping it is immediate.
    process.Wait(std::chrono::seconds(10));
    const char* stage = failure.stage == kStageChdir      ? "chdir to '"
                        : failure.stage == kStageRedirect ? "redirect output for '"
                                                          : "exec '";
    const std::string target = failure.stage == kStageChdir ? options.cwd : executable;
    throw std::runtime_error("Process::Start: failed to " + std::string(stage) + target +
                             "' for " + argv.front() + ": " + std::strerror(failure.error));
  }
  return process;
}

int Process::Run(std::vector<std::string> argv, std::chrono::milliseconds timeout,
                 Options options) {
  const std::string name = argv.empty() ? std::string() : argv.front();
  Process process = Start(std::move(argv), std::move(options));
  if (auto status = process.Wait(timeout)) return *status;
  process.Kill();
  throw std::runtime_error("Process::Run: " + name + " did not finish within " +
                           std::to_string(timeout.count()) + " ms (killed)");
}

Process::~Process() { Release(); }

Process::Process(Process&& other) noexcept
    : pid_(other.pid_), name_(std::move(other.name_)), status_(other.status_) {
  other.pid_ = -1;
  other.status_.reset();
}

Process& Process::operator=(Process&& other) noexcept {
  if (this != &other) {
    Release();
    pid_ = other.pid_;
    name_ = std::move(other.name_);
    status_ = other.status_;
    other.pid_ = -1;
    other.status_.reset();
  }
  return *this;
}

void Process::Release() noexcept {
  if (pid_ <= 0) return;
  try {
    if (Running()) Kill();
  } catch (const std::exception& e) {
    std::cerr << "[sanigate-test] could not reap " << name_ << " (pid " << pid_ << "): " << e.what()
              << '\n';
  }
  pid_ = -1;
}

bool Process::Running() {
  if (pid_ <= 0 || status_) return false;
  return !Wait(std::chrono::milliseconds(0)).has_value();
}

void Process::Signal(int sig) {
  if (pid_ <= 0 || status_) return;
  ::kill(pid_, sig);
}

std::optional<int> Process::Wait(std::chrono::milliseconds timeout) {
  if (status_) return status_;
  if (pid_ <= 0) throw std::runtime_error("Process::Wait on an empty handle");
  const auto deadline = Clock::now() + timeout;
  auto backoff = std::chrono::milliseconds(1);
  for (;;) {
    int status = 0;
    const pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      status_ = status;
      return status_;
    }
    if (r < 0 && errno != EINTR) {
      // ECHILD: someone else reaped our child (e.g. SIGCHLD set to SIG_IGN). It is gone either way.
      status_ = -1;
      return status_;
    }
    const auto now = Clock::now();
    if (now >= deadline) return std::nullopt;
    std::this_thread::sleep_for(std::min<Clock::duration>(backoff, deadline - now));
    backoff = std::min(backoff * 2, std::chrono::milliseconds(25));
  }
}

int Process::Stop(std::chrono::milliseconds grace) {
  if (!Running()) {
    if (!status_) throw std::runtime_error("Process::Stop on an empty handle");
    return *status_;
  }
  Signal(SIGTERM);
  if (auto status = Wait(grace)) return *status;
  Kill();
  return *status_;
}

void Process::Kill() {
  if (pid_ <= 0 || status_) return;
  ::kill(pid_, SIGKILL);
  if (!Wait(std::chrono::seconds(10))) {
    throw std::runtime_error("Process::Kill: " + name_ + " (pid " + std::to_string(pid_) +
                             ") still alive 10 s after SIGKILL");
  }
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return {};
  std::ostringstream buf;
  buf << in.rdbuf();
  return buf.str();
}

std::string DescribeWaitStatus(int status) {
  if (status == -1) return "reaped elsewhere (status unknown)";
  if (WIFEXITED(status)) return "exited with code " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    const int sig = WTERMSIG(status);
    const char* name = ::strsignal(sig);
    return "killed by signal " + std::to_string(sig) + " (" + (name ? name : "?") + ")";
  }
  return "wait status " + std::to_string(status);
}

bool ExitedWith(int status, int code) {
  return status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == code;
}

}  // namespace sanigate::test
