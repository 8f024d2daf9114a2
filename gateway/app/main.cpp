// sanigate: the gateway daemon. Flags: --config FILE, --check-config FILE, --version.
// Signals: SIGTERM/SIGINT flush and stop; SIGHUP reloads the config (a bad one is refused and
// the running one stays); SIGUSR1 (sent by the firmware agent after a self-update is installed)
// stops cleanly and re-executes the binary at the same path, i.e. the new one. Logs go to stderr.
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include "app/config_loader.h"
#include "app/gateway.h"
#include "service/systemd_notify.h"

namespace {

constexpr int kExitOk = 0;
constexpr int kExitFailure = 1;
constexpr int kExitInvalidConfig = 2;

void SetUpLogging(const std::string& level) {
  auto logger = spdlog::stderr_logger_mt("sanigate");
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");
  spdlog::set_default_logger(logger);
  spdlog::set_level(spdlog::level::from_str(level));
  spdlog::flush_on(spdlog::level::info);
}

int CheckConfig(const std::string& path) {
  auto cfg = sanigate::app::LoadGatewayConfig(path);
  if (!cfg.ok()) {
    std::cerr << cfg.status().message();
    return kExitInvalidConfig;
  }
  for (const auto& w : cfg->warnings) std::cerr << w << "\n";
  std::cout << path << ": ok" << (cfg->warnings.empty() ? "" : " (with warnings)") << "\n";
  return kExitOk;
}

// Every JT/T 808 truck and NMEA tracker holds a socket: lift the soft descriptor limit (often
// 1024) to the hard one, and say what it is so an operator knows the ceiling.
void RaiseFileLimit() {
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) != 0) return;
  if (lim.rlim_cur < lim.rlim_max) {
    lim.rlim_cur = lim.rlim_max;
    (void)setrlimit(RLIMIT_NOFILE, &lim);
  }
  spdlog::debug("open file limit: {}", static_cast<unsigned long long>(lim.rlim_cur));
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App cli{"sanigate: sanitation edge gateway (Modbus, LoRaWAN, JT/T 808 -> MQTT)"};
  std::string config_path, check_path;
  bool version = false;
  cli.add_option("--config", config_path, "run with this TOML config file");
  cli.add_option("--check-config", check_path,
                 "validate a config file: every error as FILE:LINE:COL: key.path: problem; exit 2 "
                 "if invalid");
  cli.add_flag("--version", version, "print the version");
  CLI11_PARSE(cli, argc, argv);

  if (version) {
    std::cout << "sanigate " << SANIGATE_VERSION << "\n";
    return kExitOk;
  }
  if (!check_path.empty()) return CheckConfig(check_path);
  if (config_path.empty()) {
    std::cerr << "sanigate: --config FILE is required (or --check-config FILE, --version)\n";
    return kExitInvalidConfig;
  }

  auto cfg = sanigate::app::LoadGatewayConfig(config_path);
  if (!cfg.ok()) {
    std::cerr << cfg.status().message();
    return kExitInvalidConfig;
  }
  SetUpLogging(cfg->gateway.log_level);
  for (const auto& w : cfg->warnings) spdlog::warn("config: {}", w);
  RaiseFileLimit();

  // Block the signals in every thread we create; the main thread waits for them below.
  sigset_t signals;
  sigemptyset(&signals);
  for (int s : {SIGTERM, SIGINT, SIGHUP, SIGUSR1}) sigaddset(&signals, s);
  // The path this binary was started from: a self-update replaces the file there.
  std::string self_path;
  if (char* p = ::realpath("/proc/self/exe", nullptr)) {
    self_path = p;
    ::free(p);
  }
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  auto gateway = sanigate::app::Gateway::Create(std::move(cfg.value()));
  if (!gateway.ok()) {
    spdlog::critical("cannot start: {}", gateway.status().ToString());
    return kExitFailure;
  }
  if (auto st = (*gateway)->Start(); !st.ok()) {
    spdlog::critical("cannot start: {}", st.ToString());
    return kExitFailure;
  }
  spdlog::info("sanigate {} running with {}", SANIGATE_VERSION, config_path);
  // Ready for systemd only now: the config is loaded, the outbox open, the adapters started.
  namespace svc = sanigate::service;
  svc::NotifyReady("running with " + config_path);

  while (true) {
    int sig = svc::WaitForSignal(signals);
    if (sig == SIGHUP) {
      svc::NotifyReloading();
      auto next = sanigate::app::LoadGatewayConfig(config_path);
      if (!next.ok()) {
        spdlog::error("reload refused, keeping the running config:\n{}", next.status().message());
        svc::NotifyReady("reload refused (the config is invalid), running with the previous one");
        continue;
      }
      if (auto st = (*gateway)->Reload(std::move(next.value())); !st.ok()) {
        spdlog::error("reload: {}", st.ToString());
        svc::NotifyReady("reload failed: " + st.ToString());
      } else {
        spdlog::info("reloaded {}", config_path);
        svc::NotifyReady("running with " + config_path + " (reloaded)");
      }
      continue;
    }
    if (sig == SIGUSR1) {
      spdlog::warn("restarting into the installed image ({})", self_path);
      svc::NotifyReloading();  // the same PID comes back with READY=1 from the new image
      (*gateway)->Stop();
      gateway.value().reset();
      spdlog::default_logger()->flush();
      sigset_t none;
      sigemptyset(&none);
      pthread_sigmask(SIG_SETMASK, &none, nullptr);
      ::execv(self_path.c_str(), argv);
      spdlog::critical("cannot re-execute {}: {}", self_path, std::strerror(errno));
      return kExitFailure;
    }
    spdlog::info("{}: flushing and stopping", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    svc::NotifyStopping("flushing the outbox and stopping");
    break;
  }
  (*gateway)->Stop();
  gateway.value().reset();
  spdlog::info("stopped");
  return kExitOk;
}
