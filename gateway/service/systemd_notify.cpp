#include "service/systemd_notify.h"

#include <systemd/sd-daemon.h>
#include <time.h>

#include <cstdint>

namespace sanigate::service {
namespace {

// STATUS= is one line for `systemctl status`: newlines would end the field early.
std::string OneLine(std::string s) {
  for (char& c : s)
    if (c == '\n' || c == '\r') c = ' ';
  return s;
}

uint64_t MonotonicUsec() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000u + static_cast<uint64_t>(ts.tv_nsec) / 1000u;
}

}  // namespace

void NotifyReady(const std::string& status) { sd_notify(0, ("READY=1\nSTATUS=" + OneLine(status)).c_str()); }

// MONOTONIC_USEC lets systemd (Type=notify-reload) tell this reload's READY=1 from an older one.
void NotifyReloading() { sd_notify(0, ("RELOADING=1\nMONOTONIC_USEC=" + std::to_string(MonotonicUsec())).c_str()); }

void NotifyStopping(const std::string& status) { sd_notify(0, ("STOPPING=1\nSTATUS=" + OneLine(status)).c_str()); }

void NotifyStatus(const std::string& status) { sd_notify(0, ("STATUS=" + OneLine(status)).c_str()); }

std::optional<std::chrono::microseconds> WatchdogInterval() {
  uint64_t usec = 0;
  if (sd_watchdog_enabled(0, &usec) > 0 && usec > 0) return std::chrono::microseconds(usec);
  return std::nullopt;
}

void NotifyWatchdog() { sd_notify(0, "WATCHDOG=1"); }

int WaitForSignal(const sigset_t& signals) {
  static const std::optional<std::chrono::microseconds> watchdog = WatchdogInterval();
  while (true) {
    if (!watchdog) {
      int sig = 0;
      if (sigwait(&signals, &sig) == 0) return sig;
      continue;
    }
    auto half = *watchdog / 2;
    timespec wait{static_cast<time_t>(half.count() / 1'000'000), static_cast<long>(half.count() % 1'000'000) * 1000};
    int sig = sigtimedwait(&signals, nullptr, &wait);
    if (sig > 0) return sig;
    NotifyWatchdog();  // timed out (or interrupted): still alive
  }
}

}  // namespace sanigate::service
