#include "modbus/modbus_rtu_bus.h"
#include "core/thread_name.h"

#include <modbus.h>
#include <spdlog/spdlog.h>

#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

namespace sanigate::dev::modbus {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// Errors that mean the port itself is gone, not that a device is silent.
bool PortLost(int err) {
  // ECONNRESET: libmodbus reports a tty hangup (read() == 0) that way.
  return err == EIO || err == EBADF || err == ENXIO || err == ENODEV || err == ECONNRESET;
}

}  // namespace

struct ModbusRtuBus::Device {
  Device(const DeviceConfig& cfg, const PlanLimits& limits) : poller(cfg, limits) {}
  DevicePoller poller;
  Clock::time_point due{};
  // Worker thread only: the firmware job in progress and when its next step is due.
  std::unique_ptr<FirmwareInstaller> job;
  Clock::time_point job_due{};
  // Time of the next visit: a job step replaces the device's polls.
  Clock::time_point next() const { return job ? job_due : due; }
};

ModbusRtuBus::ModbusRtuBus(BusConfig config, PlanLimits limits) : cfg_(std::move(config)) {
  for (const auto& d : cfg_.devices) devices_.push_back(std::make_unique<Device>(d, limits));
  health_.devices = static_cast<uint32_t>(devices_.size());
}

ModbusRtuBus::~ModbusRtuBus() {
  Stop();
  ClosePort();
}

void ModbusRtuBus::Start(RecordSink& sink) {
  sink_ = &sink;
  for (auto& d : devices_)
    if (sink.LastAnnounced(d->poller.config().id, "offline").value_or(false)) d->poller.AssumeAnnouncedOffline();
  stop_ = false;
  worker_ = std::thread([this] {
    NameThisThread("modbus-rtu");
    Run();
  });
}

void ModbusRtuBus::Stop() {
  {
    std::lock_guard lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (worker_.joinable()) worker_.join();
  std::deque<PendingCommand> left;
  {
    std::lock_guard lk(mu_);
    left.swap(commands_);
  }
  for (auto& c : left) c.reply({false, "gateway stopping", {}});  // every request gets an answer
  CancelJobs("gateway stopping");
}

void ModbusRtuBus::CancelJobs(const std::string& why) {
  // Only once the worker is gone (or never started): the jobs are the worker's otherwise.
  std::deque<std::unique_ptr<FirmwareInstaller>> queued;
  {
    std::lock_guard lk(mu_);
    queued.swap(new_jobs_);
  }
  for (auto& j : queued) j->Cancel(why);
  for (auto& d : devices_)
    if (d->job) {
      d->job->Cancel(why);
      d->job.reset();
    }
}

bool ModbusRtuBus::OpenPort() {
  ctx_ = modbus_new_rtu(cfg_.port.c_str(), cfg_.baud, cfg_.parity, cfg_.data_bits, cfg_.stop_bits);
  std::string error;
  if (!ctx_) {
    error = std::string("cannot create an RTU context: ") + modbus_strerror(errno);
  } else if (modbus_connect(ctx_) != 0) {
    error = "open " + cfg_.port + ": " + modbus_strerror(errno);
    modbus_free(ctx_);
    ctx_ = nullptr;
  }
  if (ctx_ && cfg_.rs485 && modbus_rtu_set_serial_mode(ctx_, MODBUS_RTU_RS485) != 0)
    spdlog::warn("modbus: bus {}: {} has no RS-485 mode ({}); using it as it is", cfg_.name,
                 cfg_.port, modbus_strerror(errno));
  std::lock_guard lk(mu_);
  health_.port_open = ctx_ != nullptr;
  if (!ctx_) health_.last_error = error;
  return ctx_ != nullptr;
}

void ModbusRtuBus::ClosePort() {
  if (!ctx_) return;
  modbus_close(ctx_);
  modbus_free(ctx_);
  ctx_ = nullptr;
  std::lock_guard lk(mu_);
  health_.port_open = false;
}

void ModbusRtuBus::Run() {
  const auto gap = cfg_.FrameGap();
  // Every request waits until the line has been quiet for t3.5.
  for (auto& d : devices_) {
    d->poller.before_request = [this, gap] {
      auto earliest = line_quiet_since_ + gap;
      if (Clock::now() < earliest) std::this_thread::sleep_until(earliest);
    };
    d->poller.after_request = [this] { line_quiet_since_ = Clock::now(); };
    d->poller.recover_line = [this] { SettleLine(); };
  }
  // Stagger first polls over one interval.
  auto start = Clock::now();
  for (size_t i = 0; i < devices_.size(); ++i)
    devices_[i]->due = start + milliseconds(devices_[i]->poller.config().interval_ms *
                                            static_cast<int64_t>(i) /
                                            static_cast<int64_t>(devices_.size()));
  bool logged_open_failure = false;
  std::unique_lock lk(mu_);
  while (!stop_) {
    lk.unlock();
    if (!ctx_ && !OpenPort()) {
      if (!logged_open_failure) spdlog::warn("modbus: bus {}: {}; retrying every second", cfg_.name, health_.last_error);
      logged_open_failure = true;
      // Devices cannot be reached: let them fail (and go offline) at their own pace.
      std::vector<Record> out;
      auto now = Clock::now();
      for (auto& d : devices_) {
        if (d->job || d->due > now) continue;
        d->poller.Unreachable("serial port " + cfg_.port + " unavailable", out);
        d->due = now + milliseconds(std::max<int64_t>(d->poller.config().interval_ms, 1000));
      }
      if (!out.empty()) sink_->EmitBatch(std::move(out));
      AdoptJobs();
      for (auto& d : devices_)
        if (d->job && d->job_due <= now) RunJobStep(*d);  // no port: a try without an answer
      RunCommands();  // answers "unavailable" rather than letting them time out silently
      lk.lock();
      cv_.wait_for(lk, milliseconds(1000), [&] { return stop_; });
      continue;
    }
    if (logged_open_failure) spdlog::info("modbus: bus {}: {} is open again", cfg_.name, cfg_.port);
    logged_open_failure = false;

    AdoptJobs();
    // The device most overdue goes next: fair across the line, nobody starves. A firmware job
    // takes its device's turns, one step (a chunk) at a time, so other devices' polls that fall
    // due meanwhile go between its chunks.
    auto next = std::min_element(devices_.begin(), devices_.end(),
                                 [](const auto& a, const auto& b) { return a->next() < b->next(); });
    Device& d = **next;
    lk.lock();
    // Writes go ahead of polls: a command arriving while we wait is served first.
    if (cv_.wait_until(lk, d.next(), [&] { return stop_ || !commands_.empty() || !new_jobs_.empty(); })) {
      if (stop_) break;
      lk.unlock();
      RunCommands();
      lk.lock();
      continue;
    }
    lk.unlock();
    if (d.job) {
      RunJobStep(d);
      lk.lock();
      continue;
    }

    const auto& dc = d.poller.config();
    auto to = milliseconds(dc.timeout_ms);
    modbus_set_response_timeout(ctx_, static_cast<uint32_t>(to.count() / 1000),
                                static_cast<uint32_t>((to.count() % 1000) * 1000));
    std::vector<Record> out;
    errno = 0;
    PollOutcome outcome = d.poller.Poll(ctx_, out);
    int err = errno;
    if (outcome != PollOutcome::kOk) {
      if (PortLost(err)) {
        spdlog::warn("modbus: bus {}: {} lost ({}); reopening", cfg_.name, cfg_.port, modbus_strerror(err));
        ClosePort();
        std::lock_guard g(mu_);
        health_.reopens++;
      } else {
        // A late answer may still be on its way: let it pass before the next device talks.
        SettleLine();
      }
    }
    // A silent device is asked less often, so the others keep their pace.
    auto interval = d.poller.NextInterval();
    auto now = Clock::now();
    d.due += interval;
    if (d.due <= now) d.due = now + interval - (now - d.due) % interval;
    {
      std::lock_guard g(mu_);
      health_.online = 0;
      health_.requests = health_.timeouts = health_.exceptions = health_.errors = 0;
      health_.polls = health_.wrong_answers = 0;
      health_.per_device.clear();
      for (const auto& x : devices_) {
        const auto& c = x->poller.counters();
        health_.per_device.push_back(ToDeviceCounters(x->poller));
        health_.online += x->poller.online() ? 1 : 0;
        health_.polls += c.polls;
        health_.wrong_answers += c.wrong_answers;
        health_.requests += c.requests;
        health_.timeouts += c.timeouts;
        health_.exceptions += c.exceptions;
        health_.errors += c.errors;
      }
      if (!d.poller.last_error().empty()) health_.last_error = dc.id + ": " + d.poller.last_error();
    }
    if (!out.empty()) sink_->EmitBatch(std::move(out));
    lk.lock();
  }
}

void ModbusRtuBus::SettleLine() {
  if (!ctx_) return;
  int fd = modbus_get_socket(ctx_);
  const auto quiet = cfg_.FrameGap() + milliseconds(cfg_.guard_ms);
  // A frame is at most 256 bytes: never wait longer than that on top of the quiet time, so a
  // babbling line cannot hold the worker for ever.
  const auto frame_time = std::chrono::microseconds(cfg_.FrameGap().count() * 256 * 2 / 7);
  const auto deadline = Clock::now() + quiet + frame_time + milliseconds(cfg_.guard_ms);
  auto quiet_until = Clock::now() + quiet;
  uint64_t dropped = 0;
  uint8_t buf[256];
  while (fd >= 0) {
    auto now = Clock::now();
    auto until = std::min(quiet_until, deadline);
    if (now >= until) break;
    auto wait = std::chrono::duration_cast<std::chrono::nanoseconds>(until - now);
    timespec ts{static_cast<time_t>(wait.count() / 1000000000), static_cast<long>(wait.count() % 1000000000)};
    pollfd p{fd, POLLIN, 0};
    int n = ::ppoll(&p, 1, &ts, nullptr);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) continue;  // timed out: loop checks the time
    if (!(p.revents & POLLIN)) break;  // hangup: the next request finds out
    ssize_t got = ::read(fd, buf, sizeof buf);
    if (got <= 0) break;
    dropped += static_cast<uint64_t>(got);
    quiet_until = Clock::now() + quiet;
  }
  modbus_flush(ctx_);
  line_quiet_since_ = Clock::now();
  if (dropped) {
    spdlog::debug("modbus: bus {}: dropped {} stale bytes", cfg_.name, dropped);
    std::lock_guard g(mu_);
    health_.stale_bytes += dropped;
  }
}

void ModbusRtuBus::InstallFirmware(FirmwareJob job, FirmwareProgressFn progress, FirmwareDoneFn done) {
  for (const auto& d : devices_) {
    if (d->poller.config().id != job.device) continue;
    auto installer = std::make_unique<FirmwareInstaller>(d->poller.config(), std::move(job),
                                                         std::move(progress), std::move(done));
    {
      std::unique_lock lk(mu_);
      if (stop_) {
        lk.unlock();
        installer->Cancel("gateway stopping");
        return;
      }
      new_jobs_.push_back(std::move(installer));
    }
    cv_.notify_all();
    return;
  }
  done({false, "unknown device " + job.device, {}});
}

void ModbusRtuBus::AdoptJobs() {
  std::deque<std::unique_ptr<FirmwareInstaller>> jobs;
  {
    std::lock_guard lk(mu_);
    jobs.swap(new_jobs_);
  }
  for (auto& j : jobs) {
    for (auto& d : devices_) {
      if (d->poller.config().id != j->device()) continue;
      if (d->job) {
        j->Cancel("a firmware installation is already running on " + j->device());
        break;
      }
      d->job = std::move(j);
      d->job_due = Clock::now();
      const auto gap = cfg_.FrameGap();
      d->job->before_request = [this, gap] {
        auto earliest = line_quiet_since_ + gap;
        if (Clock::now() < earliest) std::this_thread::sleep_until(earliest);
      };
      d->job->after_request = [this] { line_quiet_since_ = Clock::now(); };
      break;
    }
  }
}

void ModbusRtuBus::RunJobStep(Device& d) {
  FirmwareInstaller::Step step;
  if (!ctx_) {
    step = d.job->Run(nullptr, "serial port " + cfg_.port + " unavailable");
  } else {
    auto to = milliseconds(d.poller.config().timeout_ms);
    modbus_set_response_timeout(ctx_, static_cast<uint32_t>(to.count() / 1000),
                                static_cast<uint32_t>((to.count() % 1000) * 1000));
    step = d.job->Run(ctx_);
    if (step.link_failed) {
      modbus_flush(ctx_);
      if (PortLost(step.error)) {
        spdlog::warn("modbus: bus {}: {} lost ({}); reopening", cfg_.name, cfg_.port, modbus_strerror(step.error));
        ClosePort();
        std::lock_guard g(mu_);
        health_.reopens++;
      }
    }
  }
  if (step.finished) {
    d.job.reset();
    d.due = Clock::now();  // polls resume at once: the new firmware's first reading
  } else {
    d.job_due = step.next;
  }
}

bool ModbusRtuBus::Owns(const std::string& device) const {
  for (const auto& d : devices_)
    if (d->poller.config().id == device) return true;
  return false;
}

void ModbusRtuBus::Execute(CommandRequest request, ReplyFn reply) {
  for (const auto& d : devices_) {
    if (d->poller.config().id != request.device) continue;
    auto timeout = d->poller.Admit(request, reply);
    if (!timeout) return;
    {
      std::lock_guard lk(mu_);
      commands_.push_back({std::move(request), std::move(reply), Clock::now() + *timeout});
    }
    cv_.notify_all();
    return;
  }
  reply({false, "unknown device " + request.device, {}});
}

void ModbusRtuBus::RunCommands() {
  std::deque<PendingCommand> batch;
  {
    std::lock_guard lk(mu_);
    batch.swap(commands_);
  }
  for (auto& cmd : batch) {
    if (Clock::now() > cmd.deadline) {
      cmd.reply({false, "timeout: not executed in time", {}});
      continue;
    }
    if (!ctx_) {
      cmd.reply({false, "serial port " + cfg_.port + " unavailable", {}});
      continue;
    }
    for (auto& d : devices_) {
      if (d->poller.config().id != cmd.request.device) continue;
      if (d->job) {
        cmd.reply({false, cmd.request.device + " is installing firmware; try again when it is done", {}});
        continue;
      }
      auto to = milliseconds(d->poller.config().timeout_ms);
      modbus_set_response_timeout(ctx_, static_cast<uint32_t>(to.count() / 1000),
                                  static_cast<uint32_t>((to.count() % 1000) * 1000));
      CommandReply r = d->poller.Write(ctx_, cmd.request);
      if (!r.ok) modbus_flush(ctx_);
      cmd.reply(std::move(r));
    }
  }
}

BusHealth ModbusRtuBus::Health() const {
  std::lock_guard lk(mu_);
  return health_;
}

}  // namespace sanigate::dev::modbus
