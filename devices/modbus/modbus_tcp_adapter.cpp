#include "modbus/modbus_tcp_adapter.h"
#include "core/thread_name.h"

#include <modbus.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <queue>

#include "core/clock.h"

namespace sanigate::dev::modbus {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

}  // namespace

struct ModbusTcpAdapter::Device {
  explicit Device(const DeviceConfig& cfg, const PlanLimits& limits) : poller(cfg, limits) {}
  ~Device() {
    if (ctx) {
      modbus_close(ctx);
      modbus_free(ctx);
    }
  }
  DevicePoller poller;
  modbus_t* ctx = nullptr;  // one TCP connection per device, kept open between polls
  bool connected = false;
  Clock::time_point due{};
  // How long the last visit took (a timeout until the first one): whether the next due poll
  // would wait on this one, so another worker must keep the time meanwhile.
  Clock::duration last_visit = milliseconds(poller.config().timeout_ms);
  // Copies for Health(), written under the adapter's mutex after each poll.
  DeviceCounters counters;
  bool online = false, failing = false;
  // Guarded by the adapter's mutex: writes waiting, and whether a worker holds the device.
  std::deque<PendingCommand> commands;
  bool busy = false;
  // A firmware job in progress: set under the mutex; its steps run by the worker holding `busy`.
  std::unique_ptr<FirmwareInstaller> job;
};

ModbusTcpAdapter::ModbusTcpAdapter(ModbusConfig config) : config_(std::move(config)) {
  PlanLimits limits{static_cast<size_t>(config_.max_gap), static_cast<size_t>(config_.max_registers),
                    static_cast<size_t>(config_.max_bits)};
  for (const auto& d : config_.devices) devices_.push_back(std::make_unique<Device>(d, limits));
}

ModbusTcpAdapter::~ModbusTcpAdapter() { Stop(); }

Status ModbusTcpAdapter::Start(RecordSink& sink) {
  sink_ = &sink;
  for (auto& d : devices_)
    if (sink.LastAnnounced(d->poller.config().id, "offline").value_or(false)) d->poller.AssumeAnnouncedOffline();
  std::unique_lock start_lock(mu_);
  stop_ = false;
  // Stagger the first polls across one interval instead of bunching them at start.
  auto now = Clock::now();
  size_t n = devices_.size();
  for (size_t i = 0; i < n; ++i) {
    auto& d = *devices_[i];
    d.due = now + milliseconds(d.poller.config().interval_ms * static_cast<int64_t>(i) / static_cast<int64_t>(std::max<size_t>(n, 1)));
    ready_.push({d.due, i});
  }
  start_lock.unlock();
  int workers = std::min<int>(config_.workers, static_cast<int>(std::max<size_t>(n, 1)));
  for (int i = 0; i < workers; ++i) workers_.emplace_back([this] {
      NameThisThread("modbus-tcp");
      WorkerLoop();
    });
  std::lock_guard lk(mu_);
  health_.state = "running";
  health_.devices = static_cast<uint32_t>(n);
  return Status::Ok();
}

void ModbusTcpAdapter::Stop() {
  {
    std::lock_guard lk(mu_);
    if (stop_ && workers_.empty()) return;
    stop_ = true;
  }
  idle_cv_.notify_all();
  timer_cv_.notify_all();
  for (auto& t : workers_)
    if (t.joinable()) t.join();
  workers_.clear();
  std::vector<std::unique_ptr<FirmwareInstaller>> jobs;
  {
    std::lock_guard lk(mu_);
    health_.state = "stopped";
    for (auto& d : devices_) {  // every request gets an answer, even at shutdown
      for (auto& c : d->commands) c.reply({false, "gateway stopping", {}});
      d->commands.clear();
      if (d->job) jobs.push_back(std::move(d->job));
    }
    urgent_.clear();
  }
  for (auto& j : jobs) j->Cancel("gateway stopping");  // outside the lock: `done` may call back
}

void ModbusTcpAdapter::Idle(std::unique_lock<std::mutex>& lk) {
  ++idle_workers_;
  idle_cv_.wait(lk);
  --idle_workers_;
}

void ModbusTcpAdapter::WakeForUrgent() {
  if (idle_workers_ > 0) idle_cv_.notify_one();
  else timer_cv_.notify_one();  // the time keeper, if any, is free too
}

void ModbusTcpAdapter::WakeFor(Clock::time_point due) {
  if (timer_taken_) {
    if (due < timer_until_) timer_cv_.notify_one();
  } else if (idle_workers_ > 0) {
    idle_cv_.notify_one();
  }
}

void ModbusTcpAdapter::WorkerLoop() {
  std::unique_lock lk(mu_);
  while (!stop_) {
    // Writes first: a device with queued commands is visited at once, unless a worker already
    // holds it (that worker looks at the queue again when it is done).
    if (!urgent_.empty()) {
      size_t index = urgent_.front();
      urgent_.pop_front();
      Device& d = *devices_[index];
      if (d.busy || d.commands.empty()) continue;
      d.busy = true;
      auto commands = std::move(d.commands);
      d.commands.clear();
      bool installing = d.job != nullptr;
      lk.unlock();
      if (installing) {
        for (auto& c : commands)
          c.reply({false, d.poller.config().id + " is installing firmware; try again when it is done", {}});
      } else {
        Visit(d, std::move(commands), /*poll=*/false);
      }
      lk.lock();
      d.busy = false;
      if (!d.commands.empty()) urgent_.push_back(index);
      continue;
    }
    if (ready_.empty()) {
      Idle(lk);
      continue;
    }
    auto [due, index] = ready_.top();
    if (Clock::now() < due) {
      if (timer_taken_) {
        Idle(lk);
        continue;
      }
      timer_taken_ = true;
      timer_until_ = due;
      timer_cv_.wait_until(lk, due);
      timer_taken_ = false;
      continue;
    }
    ready_.pop();
    Device& d = *devices_[index];
    if (due != d.due) continue;  // rescheduled since (a firmware job started): a stale slot
    if (d.busy) {
      // A write is running on this device right now: poll right after it.
      d.due = Clock::now() + milliseconds(5);
      ready_.push({d.due, index});
      continue;
    }
    d.busy = true;
    auto commands = std::move(d.commands);
    d.commands.clear();
    FirmwareInstaller* job = d.job.get();
    // Another free worker keeps the time while this one polls, when the next poll is due before
    // this visit is likely over; otherwise this worker takes the time again itself (one wake-up
    // a poll instead of two). A visit that runs over its estimate delays the next poll by that
    // much once; its next estimate is the longer time.
    auto visit_start = Clock::now();
    if (!ready_.empty() && !timer_taken_ && idle_workers_ > 0 &&
        ready_.top().first <= visit_start + d.last_visit + milliseconds(1))
      idle_cv_.notify_one();
    lk.unlock();
    Clock::time_point next;
    bool job_finished = false;
    if (job) {
      // A firmware step instead of a poll: the device's own polls pause during the job; the
      // next step is queued by time like any poll, so overdue polls of others go first.
      FirmwareInstaller::Step step = VisitJob(d, *job, std::move(commands));
      job_finished = step.finished;
      next = step.finished ? Clock::now() : step.next;
    } else {
      Visit(d, std::move(commands), /*poll=*/true);
      // Keep the phase: next poll one interval after the previous due time. A device that fell
      // behind (e.g. waited on a timeout) skips the missed slots instead of bursting.
      // Offline: retried less often (up to 10 s) so a dead device costs the others little.
      auto interval = d.poller.NextInterval();
      next = due + interval;
      auto now = Clock::now();
      if (next <= now) next = now + interval - (now - due) % interval;
    }
    lk.lock();
    d.busy = false;
    d.last_visit = Clock::now() - visit_start;
    std::unique_ptr<FirmwareInstaller> finished;
    if (job_finished) finished = std::move(d.job);  // its `done` has run: polls resume now
    else if (!job && d.job) next = Clock::now();    // a job arrived during the poll: start it
    d.due = next;
    if (!d.commands.empty()) urgent_.push_back(index);
    ready_.push({d.due, index});
    if (timer_taken_ && d.due < timer_until_) timer_cv_.notify_one();  // this worker loops on by itself
    if (finished) {
      lk.unlock();
      finished.reset();
      lk.lock();
    }
  }
}

bool ModbusTcpAdapter::Owns(const std::string& device) const {
  for (const auto& d : devices_)
    if (d->poller.config().id == device) return true;
  return false;
}

void ModbusTcpAdapter::Execute(CommandRequest request, ReplyFn reply) {
  for (size_t i = 0; i < devices_.size(); ++i) {
    Device& d = *devices_[i];
    if (d.poller.config().id != request.device) continue;
    auto timeout = d.poller.Admit(request, reply);
    if (!timeout) return;
    {
      std::lock_guard lk(mu_);
      d.commands.push_back({std::move(request), std::move(reply), Clock::now() + *timeout});
      if (!d.busy) {
        urgent_.push_back(i);
        WakeForUrgent();
      }
    }
    return;
  }
  reply({false, "unknown device " + request.device, {}});
}

void ModbusTcpAdapter::InstallFirmware(FirmwareJob job, FirmwareProgressFn progress, FirmwareDoneFn done) {
  for (size_t i = 0; i < devices_.size(); ++i) {
    Device& d = *devices_[i];
    if (d.poller.config().id != job.device) continue;
    std::unique_lock lk(mu_);
    if (stop_) {
      lk.unlock();
      return done({false, "gateway stopping", {}});
    }
    if (d.job) {
      lk.unlock();
      return done({false, "a firmware installation is already running on " + job.device, {}});
    }
    d.job = std::make_unique<FirmwareInstaller>(d.poller.config(), std::move(job), std::move(progress),
                                                std::move(done));
    if (!d.busy) {
      // Take the device's next slot now; the slot it had becomes stale.
      d.due = Clock::now();
      ready_.push({d.due, i});
      WakeFor(d.due);
    }
    lk.unlock();
    return;
  }
  done({false, "unknown device " + job.device, {}});
}

std::string ModbusTcpAdapter::Connect(Device& d) {
  const DeviceConfig& cfg = d.poller.config();
  if (!d.ctx) {
    d.ctx = modbus_new_tcp(cfg.host.c_str(), cfg.port);
    if (d.ctx) {
      auto to = milliseconds(cfg.timeout_ms);
      modbus_set_response_timeout(d.ctx, static_cast<uint32_t>(to.count() / 1000),
                                  static_cast<uint32_t>((to.count() % 1000) * 1000));
    }
  }
  if (!d.ctx) return std::string("cannot create a context: ") + modbus_strerror(errno);
  if (!d.connected && modbus_connect(d.ctx) != 0)
    return "connect to " + cfg.host + ":" + std::to_string(cfg.port) + ": " + modbus_strerror(errno);
  d.connected = true;
  return {};
}

FirmwareInstaller::Step ModbusTcpAdapter::VisitJob(Device& d, FirmwareInstaller& job,
                                                   std::deque<PendingCommand> commands) {
  for (auto& c : commands)
    c.reply({false, d.poller.config().id + " is installing firmware; try again when it is done", {}});
  std::string unreachable = Connect(d);
  FirmwareInstaller::Step step = job.Run(unreachable.empty() ? d.ctx : nullptr, unreachable);
  if (d.ctx && d.connected && (step.link_failed || step.finished)) {
    // A late answer must not be taken for the next request; after the job the device has
    // usually rebooted, so polls start on a fresh connection too.
    modbus_close(d.ctx);
    d.connected = false;
  }
  return step;
}

void ModbusTcpAdapter::Visit(Device& d, std::deque<PendingCommand> commands, bool poll) {
  const DeviceConfig& cfg = d.poller.config();
  std::vector<Record> out;
  std::string unreachable = Connect(d);
  for (auto& cmd : commands) {
    if (Clock::now() > cmd.deadline) cmd.reply({false, "timeout: not executed in time", {}});
    else if (!unreachable.empty()) cmd.reply({false, "device unreachable: " + unreachable, {}});
    else cmd.reply(d.poller.Write(d.ctx, cmd.request));
  }
  if (poll) {
    if (!unreachable.empty()) {
      d.poller.Unreachable(unreachable, out);
    } else if (d.poller.Poll(d.ctx, out) != PollOutcome::kOk) {
      // A request went unanswered: start the next poll on a fresh connection, so a late answer
      // is never taken for the next request's.
      modbus_close(d.ctx);
      d.connected = false;
    }
  }
  {
    std::lock_guard lk(mu_);
    d.counters = ToDeviceCounters(d.poller);
    d.online = d.poller.online();
    d.failing = d.poller.failing();
    if (!d.poller.last_error().empty()) health_.last_error = cfg.id + ": " + d.poller.last_error();
  }
  if (!out.empty()) sink_->EmitBatch(std::move(out));
}

AdapterHealth ModbusTcpAdapter::Health() const {
  std::lock_guard lk(mu_);
  AdapterHealth h = health_;
  h.online = 0;
  h.errors = h.polls = h.requests = 0;
  bool any_announced = false;
  for (const auto& d : devices_) {
    const auto& c = d->counters;
    h.per_device.push_back(c);
    h.per_device.back().online = d->online;
    h.online += d->online ? 1 : 0;
    h.errors += c.timeouts + c.exceptions + c.errors;
    h.polls += c.polls;
    h.requests += c.requests;
    any_announced |= d->online || d->failing;
  }
  if (h.state == "running" && any_announced && h.online < h.devices) h.state = "degraded";
  return h;
}

}  // namespace sanigate::dev::modbus
