// The daemons' side of systemd's Type=notify protocol (libsystemd's sd_notify): ready only once
// the config is loaded and the outbox (or registry) is open, reloading and stopping announced,
// and watchdog pings while the main loop runs. Without NOTIFY_SOCKET (not started by systemd)
// every call does nothing.
#pragma once

#include <signal.h>

#include <chrono>
#include <optional>
#include <string>

namespace sanigate::service {

void NotifyReady(const std::string& status);
void NotifyReloading();
void NotifyStopping(const std::string& status);
void NotifyStatus(const std::string& status);
// The interval at which systemd expects WATCHDOG=1 (WatchdogSec=), when it expects any.
std::optional<std::chrono::microseconds> WatchdogInterval();
void NotifyWatchdog();
// Waits for one of `signals` (blocked in every thread) and returns it. Under WatchdogSec= it
// pings systemd at half the interval meanwhile, so a wedged main thread stops the pings.
int WaitForSignal(const sigset_t& signals);

}  // namespace sanigate::service
