#include "modbus/modbus_tcp_adapter.h"

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

constexpr size_t kMaxRegistersPerRead = 125;  // FC03/FC04 limit
constexpr size_t kMaxBitsPerRead = 2000;      // FC01/FC02 limit

double Round(double v, int decimals) {
  double f = std::pow(10.0, decimals);
  double r = std::round(v * f) / f;
  return std::isfinite(r) ? r : v;
}

}  // namespace

std::vector<ReadBlock> PlanReads(const std::vector<PointConfig>& points, size_t max_gap) {
  std::vector<ReadBlock> blocks;
  for (Table table : {Table::kHolding, Table::kInput, Table::kCoil, Table::kDiscrete}) {
    std::vector<size_t> idx;
    for (size_t i = 0; i < points.size(); ++i)
      if (points[i].table == table) idx.push_back(i);
    std::sort(idx.begin(), idx.end(),
              [&](size_t a, size_t b) { return points[a].address < points[b].address; });
    size_t limit = IsBitTable(table) ? kMaxBitsPerRead : kMaxRegistersPerRead;
    for (size_t i : idx) {
      uint32_t start = points[i].address;
      uint32_t end = start + static_cast<uint32_t>(RegisterCount(points[i].type));  // exclusive
      if (!blocks.empty() && blocks.back().table == table) {
        ReadBlock& b = blocks.back();
        uint32_t b_end = b.start + b.count;
        uint32_t new_end = std::max(b_end, end);
        if (start <= b_end + max_gap && new_end - b.start <= limit) {
          b.count = static_cast<uint16_t>(new_end - b.start);
          b.points.push_back(i);
          continue;
        }
      }
      blocks.push_back({table, static_cast<uint16_t>(start), static_cast<uint16_t>(end - start), {i}});
    }
  }
  return blocks;
}

struct ModbusTcpAdapter::Device {
  DeviceConfig cfg;
  std::vector<ReadBlock> plan;
  modbus_t* ctx = nullptr;
  bool connected = false;
  // Poll state (touched only by the worker holding the device).
  int failures = 0;
  bool online = false;
  bool announced = false;  // a status was published at least once
  int64_t last_seen_ms = 0;
  Clock::time_point due{};
  std::string last_error;
  std::chrono::steady_clock::time_point last_exception_log{};

  ~Device() {
    if (ctx) {
      modbus_close(ctx);
      modbus_free(ctx);
    }
  }
};

ModbusTcpAdapter::ModbusTcpAdapter(ModbusConfig config) : config_(std::move(config)) {
  for (const auto& d : config_.devices) {
    auto dev = std::make_unique<Device>();
    dev->cfg = d;
    dev->plan = PlanReads(d.points, static_cast<size_t>(config_.max_gap));
    devices_.push_back(std::move(dev));
  }
}

ModbusTcpAdapter::~ModbusTcpAdapter() { Stop(); }

Status ModbusTcpAdapter::Start(RecordSink& sink) {
  sink_ = &sink;
  stop_ = false;
  // Stagger the first polls across one interval instead of bunching them at start.
  auto now = Clock::now();
  size_t n = devices_.size();
  for (size_t i = 0; i < n; ++i) {
    auto& d = *devices_[i];
    d.due = now + milliseconds(d.cfg.interval_ms * static_cast<int64_t>(i) / static_cast<int64_t>(std::max<size_t>(n, 1)));
    ready_.push({d.due, i});
  }
  int workers = std::min<int>(config_.workers, static_cast<int>(std::max<size_t>(n, 1)));
  for (int i = 0; i < workers; ++i) workers_.emplace_back([this] { WorkerLoop(); });
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
  cv_.notify_all();
  for (auto& t : workers_)
    if (t.joinable()) t.join();
  workers_.clear();
  std::lock_guard lk(mu_);
  health_.state = "stopped";
}

void ModbusTcpAdapter::WorkerLoop() {
  std::unique_lock lk(mu_);
  while (!stop_) {
    if (ready_.empty()) {
      cv_.wait(lk);
      continue;
    }
    auto [due, index] = ready_.top();
    if (Clock::now() < due) {
      cv_.wait_until(lk, due);
      continue;
    }
    ready_.pop();
    lk.unlock();
    Device& d = *devices_[index];
    PollOnce(d);
    // Keep the phase: next poll one interval after the previous due time. A device that fell
    // behind (e.g. waited on a timeout) skips the missed slots instead of bursting.
    auto interval = milliseconds(d.cfg.interval_ms);
    if (!d.online && d.failures >= d.cfg.offline_after) {
      // Offline: retry less often (up to 10 s) so a dead device costs the others little.
      int extra = std::min(d.failures - d.cfg.offline_after, 4);
      interval = std::max(interval, std::min(interval * (1 << extra), milliseconds(10000)));
    }
    auto next = d.due + interval;
    auto now = Clock::now();
    if (next <= now) next = now + interval - (now - d.due) % interval;
    d.due = next;
    lk.lock();
    ready_.push({d.due, index});
    cv_.notify_one();
  }
}

bool ModbusTcpAdapter::EnsureConnected(Device& d) {
  if (d.connected) return true;
  if (!d.ctx) {
    d.ctx = modbus_new_tcp(d.cfg.host.c_str(), d.cfg.port);
    if (!d.ctx) {
      d.last_error = std::string("cannot create context: ") + modbus_strerror(errno);
      return false;
    }
    auto to = milliseconds(d.cfg.timeout_ms);
    modbus_set_response_timeout(d.ctx, static_cast<uint32_t>(to.count() / 1000),
                                static_cast<uint32_t>((to.count() % 1000) * 1000));
    modbus_set_slave(d.ctx, d.cfg.unit_id);
  }
  if (modbus_connect(d.ctx) != 0) {
    d.last_error = std::string("connect to ") + d.cfg.host + ":" + std::to_string(d.cfg.port) +
                   ": " + modbus_strerror(errno);
    return false;
  }
  d.connected = true;
  return true;
}

void ModbusTcpAdapter::PollOnce(Device& d) {
  std::vector<Record> out;
  bool ok = EnsureConnected(d);
  Record reading = MakeReading(d.cfg.id, d.cfg.kind, "modbus", 0);
  reading.location = d.cfg.location;
  size_t exceptions = 0;
  std::vector<uint16_t> regs;
  std::vector<uint8_t> bits;
  for (size_t b = 0; ok && b < d.plan.size(); ++b) {
    const ReadBlock& blk = d.plan[b];
    int rc = -1;
    switch (blk.table) {
      case Table::kHolding:
        regs.resize(blk.count);
        rc = modbus_read_registers(d.ctx, blk.start, blk.count, regs.data());
        break;
      case Table::kInput:
        regs.resize(blk.count);
        rc = modbus_read_input_registers(d.ctx, blk.start, blk.count, regs.data());
        break;
      case Table::kCoil:
        bits.resize(blk.count);
        rc = modbus_read_bits(d.ctx, blk.start, blk.count, bits.data());
        break;
      case Table::kDiscrete:
        bits.resize(blk.count);
        rc = modbus_read_input_bits(d.ctx, blk.start, blk.count, bits.data());
        break;
    }
    if (rc != blk.count) {
      int err = errno;
      if (rc >= 0 || err > MODBUS_ENOBASE) {
        // The device answered with an exception (e.g. illegal data address): it is alive; the
        // points of this block are skipped this cycle and counted.
        exceptions++;
        d.last_error = "exception reading " + std::to_string(blk.count) + " from " +
                       std::to_string(blk.start) + ": " + modbus_strerror(err);
        continue;
      }
      d.last_error = std::string("read from ") + d.cfg.host + ":" + std::to_string(d.cfg.port) +
                     ": " + modbus_strerror(err);
      ok = false;
      break;
    }
    for (size_t pi : blk.points) {
      const PointConfig& p = d.cfg.points[pi];
      size_t off = p.address - blk.start;
      if (p.type == ValueType::kBool) {
        bool v = IsBitTable(blk.table) ? bits[off] != 0 : regs[off] != 0;
        reading.metrics.push_back({p.metric, v});
        continue;
      }
      double raw = DecodeRegisters(std::span<const uint16_t>(regs.data() + off, RegisterCount(p.type)),
                                   p.type, p.word_order);
      if (p.scale == 1.0 && p.offset == 0.0 && p.type != ValueType::kF32 && !p.min && !p.max) {
        reading.metrics.push_back({p.metric, static_cast<int64_t>(raw)});  // counts stay integers
        continue;
      }
      double v = Round(raw * p.scale + p.offset, p.decimals);
      if ((p.min && v < *p.min) || (p.max && v > *p.max) || std::isnan(v)) {
        // An out-of-range value is a sensor fault, not a reading: count it, do not publish it.
        exceptions++;
        d.last_error = p.metric + " out of range: " + std::to_string(v);
        continue;
      }
      reading.metrics.push_back({p.metric, v});
    }
  }

  int64_t now_ms = NowMs();
  if (ok) {
    reading.ts_ms = now_ms;
    d.failures = 0;
    d.last_seen_ms = now_ms;
    if (!d.online) {
      Record st = MakeStatus(d.cfg.id, d.cfg.kind, "modbus", now_ms, true, now_ms);
      out.push_back(std::move(st));
      if (d.announced) {
        Record ev = MakeEvent(d.cfg.id, d.cfg.kind, "modbus", now_ms, "offline",
                              EventState::kCleared, Severity::kWarning);
        ev.location = d.cfg.location;
        out.push_back(std::move(ev));
        spdlog::info("modbus: {} is back online", d.cfg.id);
      }
      d.online = true;
      d.announced = true;
    }
    if (!reading.metrics.empty()) out.push_back(std::move(reading));
  } else {
    if (d.ctx) modbus_close(d.ctx);
    d.connected = false;
    d.failures++;
    if ((d.online || !d.announced) && d.failures >= d.cfg.offline_after) {
      Record st = MakeStatus(d.cfg.id, d.cfg.kind, "modbus", now_ms, false,
                             d.last_seen_ms ? std::optional<int64_t>(d.last_seen_ms) : std::nullopt,
                             d.last_error);
      out.push_back(std::move(st));
      Record ev = MakeEvent(d.cfg.id, d.cfg.kind, "modbus", now_ms, "offline", EventState::kActive,
                            Severity::kWarning);
      ev.location = d.cfg.location;
      ev.message = d.last_error;
      out.push_back(std::move(ev));
      spdlog::warn("modbus: {} is offline after {} failed polls: {}", d.cfg.id, d.failures, d.last_error);
      d.online = false;
      d.announced = true;
    }
  }
  {
    std::lock_guard lk(mu_);
    if (ok) health_.polls++;
    else health_.errors++;
    health_.errors += exceptions;
    if (!ok || exceptions) health_.last_error = d.cfg.id + ": " + d.last_error;
    online_[d.cfg.id] = d.online;
  }
  if (!out.empty()) sink_->EmitBatch(std::move(out));
}

AdapterHealth ModbusTcpAdapter::Health() const {
  std::lock_guard lk(mu_);
  AdapterHealth h = health_;
  h.online = 0;
  for (const auto& [id, on] : online_) h.online += on ? 1 : 0;
  if (h.state == "running" && h.online < h.devices && !online_.empty()) h.state = "degraded";
  return h;
}

RulesByDevice ModbusTcpAdapter::Rules() const {
  RulesByDevice rules;
  for (const auto& d : config_.devices) {
    DeviceRules r;
    r.overflow = d.overflow;
    for (const auto& p : d.points)
      if (p.rule.deadband) r.metrics[p.metric] = p.rule;
    rules[d.id] = std::move(r);
  }
  return rules;
}

}  // namespace sanigate::dev::modbus
