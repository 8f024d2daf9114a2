#include "modbus/device_poller.h"

#include <modbus.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <bit>
#include <cmath>
#include <cstdio>
#include <limits>

#include "core/clock.h"

namespace sanigate::dev::modbus {
namespace {

using Clock = std::chrono::steady_clock;

// A rejected address is probed again after this many cycles (firmware may change).
constexpr int kReprobeCycles = 100;

double Round(double v, int decimals) {
  double f = std::pow(10.0, decimals);
  double r = std::round(v * f) / f;
  return std::isfinite(r) ? r : v;
}

// Exception responses (the device answered "no"), as opposed to transport errors.
bool IsException(int err) { return err > MODBUS_ENOBASE && err <= EMBXGTAR; }

std::string ExceptionName(int err) {
  switch (err) {
    case EMBXILFUN: return "illegal_function";
    case EMBXILADD: return "illegal_data_address";
    case EMBXILVAL: return "illegal_data_value";
    case EMBXSFAIL: return "server_device_failure";
    case EMBXACK: return "acknowledge";
    case EMBXSBUSY: return "server_busy";
    case EMBXNACK: return "negative_acknowledge";
    case EMBXMEMPAR: return "memory_parity_error";
    case EMBXGPATH: return "gateway_path_unavailable";
    case EMBXGTAR: return "gateway_target_failed";
    default: return "exception_" + std::to_string(err - MODBUS_ENOBASE);
  }
}

// Registers for `value` in the command's encoding (the inverse of Decode).
std::vector<uint16_t> EncodeValue(double raw, const CommandConfig& c) {
  uint64_t bits = 0;
  size_t n = RegisterCount(c.type);
  switch (c.type) {
    case ValueType::kU16: bits = static_cast<uint16_t>(raw); break;
    case ValueType::kI16: bits = static_cast<uint16_t>(static_cast<int16_t>(raw)); break;
    case ValueType::kU32: bits = static_cast<uint32_t>(raw); break;
    case ValueType::kI32: bits = static_cast<uint32_t>(static_cast<int32_t>(raw)); break;
    case ValueType::kF32: bits = std::bit_cast<uint32_t>(static_cast<float>(raw)); break;
    default: break;
  }
  std::vector<uint16_t> regs(n);
  for (size_t i = 0; i < n; ++i) {
    uint16_t word = static_cast<uint16_t>(bits >> (16 * (n - 1 - i)));  // big-endian words
    if (c.byte_order == ByteOrder::kLittle) word = static_cast<uint16_t>((word >> 8) | (word << 8));
    regs[c.word_order == WordOrder::kHighFirst ? i : n - 1 - i] = word;
  }
  return regs;
}

std::string JsonNumber(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.15g", v);
  return buf;
}

}  // namespace

std::vector<ReadBlock> PlanReads(const std::vector<PointConfig>& points, const PlanLimits& limits,
                                 const std::vector<bool>& skip) {
  std::vector<ReadBlock> blocks;
  for (Table table : {Table::kHolding, Table::kInput, Table::kCoil, Table::kDiscrete}) {
    std::vector<size_t> idx;
    for (size_t i = 0; i < points.size(); ++i)
      if (points[i].table == table && !(i < skip.size() && skip[i])) idx.push_back(i);
    std::stable_sort(idx.begin(), idx.end(),
                     [&](size_t a, size_t b) { return points[a].address < points[b].address; });
    size_t limit = IsBitTable(table) ? limits.max_bits : limits.max_registers;
    bool last_in_table = false;
    for (size_t i : idx) {
      uint32_t start = points[i].address;
      uint32_t end = start + static_cast<uint32_t>(points[i].registers());  // exclusive
      if (last_in_table) {
        ReadBlock& b = blocks.back();
        uint32_t b_end = b.start + b.count;
        uint32_t new_end = std::max(b_end, end);
        if (start <= b_end + limits.max_gap && new_end - b.start <= limit) {
          b.count = static_cast<uint16_t>(new_end - b.start);
          b.points.push_back(i);
          continue;
        }
      }
      blocks.push_back({table, static_cast<uint16_t>(start), static_cast<uint16_t>(end - start), {i}});
      last_in_table = true;
    }
  }
  return blocks;
}

DevicePoller::DevicePoller(DeviceConfig config, PlanLimits limits)
    : cfg_(std::move(config)), limits_(limits) {
  split_.assign(cfg_.points.size(), false);
  rejected_.assign(cfg_.points.size(), false);
  Replan();
}

void DevicePoller::Replan() {
  // Merged blocks for the healthy points, then one request per point whose block was refused.
  std::vector<bool> skip(cfg_.points.size());
  for (size_t i = 0; i < skip.size(); ++i) skip[i] = rejected_[i] || split_[i];
  plan_ = PlanReads(cfg_.points, limits_, skip);
  for (size_t i = 0; i < cfg_.points.size(); ++i) {
    if (!split_[i] || rejected_[i]) continue;
    const auto& p = cfg_.points[i];
    plan_.push_back({p.table, p.address, static_cast<uint16_t>(p.registers()), {i}});
  }
}

void DevicePoller::Unreachable(const std::string& why, std::vector<Record>& out) {
  last_error_ = why;
  counters_.errors++;
  Failed(out);
}

void DevicePoller::Failed(std::vector<Record>& out) {
  failures_++;
  if ((online_ || !announced_) && failures_ >= cfg_.offline_after) {
    int64_t now_ms = NowMs();
    out.push_back(MakeStatus(cfg_.id, cfg_.kind, "modbus", now_ms, false,
                             last_seen_ms_ ? std::optional<int64_t>(last_seen_ms_) : std::nullopt,
                             last_error_));
    Record ev = MakeEvent(cfg_.id, cfg_.kind, "modbus", now_ms, "offline", EventState::kActive,
                          Severity::kWarning);
    ev.location = cfg_.location;
    ev.message = last_error_;
    out.push_back(std::move(ev));
    spdlog::warn("modbus: {} is offline after {} failed polls: {}", cfg_.id, failures_, last_error_);
    online_ = false;
    announced_ = true;
  }
}

PollOutcome DevicePoller::Poll(modbus_t* ctx, std::vector<Record>& out) {
  if (++cycles_ % kReprobeCycles == 0 &&
      std::any_of(rejected_.begin(), rejected_.end(), [](bool b) { return b; })) {
    rejected_.assign(rejected_.size(), false);
    Replan();
  }
  modbus_set_slave(ctx, cfg_.unit_id);
  Record reading = MakeReading(cfg_.id, cfg_.kind, "modbus", 0);
  reading.location = cfg_.location;
  bool replan = false;
  const std::vector<bool> rejected_before = rejected_;  // not in the plan: flagged below
  bool newly_rejected = false;
  std::vector<uint16_t> regs;
  std::vector<uint8_t> bits;
  // Blocks refused as a whole are split and their points read one by one in the same cycle, so
  // one bad register costs one extra request, not the whole block's data.
  std::vector<ReadBlock> todo = plan_;
  for (size_t bi = 0; bi < todo.size(); ++bi) {
    const ReadBlock blk = todo[bi];
    int rc = -1;
    if (before_request) before_request();
    auto t0 = Clock::now();
    counters_.requests++;
    switch (blk.table) {
      case Table::kHolding:
        regs.resize(blk.count);
        rc = modbus_read_registers(ctx, blk.start, blk.count, regs.data());
        break;
      case Table::kInput:
        regs.resize(blk.count);
        rc = modbus_read_input_registers(ctx, blk.start, blk.count, regs.data());
        break;
      case Table::kCoil:
        bits.resize(blk.count);
        rc = modbus_read_bits(ctx, blk.start, blk.count, bits.data());
        break;
      case Table::kDiscrete:
        bits.resize(blk.count);
        rc = modbus_read_input_bits(ctx, blk.start, blk.count, bits.data());
        break;
    }
    int err = errno;
    if (after_request) after_request();
    if (rc != blk.count) {
      if (rc < 0 && IsException(err)) {
        // The device answered "no" for this block: it is alive. A merged block is split so one
        // bad register does not hide the others; a single rejected address is set aside.
        counters_.exceptions++;
        std::string name = ExceptionName(err);
        last_error_ = name + " reading " + std::to_string(blk.count) + " at " + std::to_string(blk.start);
        bool address_problem = err == EMBXILADD || err == EMBXILFUN;
        bool merged = blk.points.size() > 1 || blk.count > cfg_.points[blk.points[0]].registers();
        for (size_t pi : blk.points) {
          const PointConfig& p = cfg_.points[pi];
          if (address_problem && merged) {
            split_[pi] = true;
            todo.push_back({p.table, p.address, static_cast<uint16_t>(p.registers()), {pi}});
          } else {
            if (address_problem) rejected_[pi] = true, newly_rejected = true;
            reading.quality.emplace_back(p.metric, name);
          }
          replan |= address_problem;
        }
        continue;
      }
      if (err == ETIMEDOUT) counters_.timeouts++;
      else counters_.errors++;
      last_error_ = std::string("read ") + std::to_string(blk.count) + " at " +
                    std::to_string(blk.start) + ": " + modbus_strerror(err);
      spdlog::debug("modbus: {} poll failed: {}", cfg_.id, last_error_);
      if (replan) Replan();
      Failed(out);
      return PollOutcome::kFailed;
    }
    double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    counters_.last_latency_ms = ms;
    counters_.max_latency_ms = std::max(counters_.max_latency_ms, ms);
    for (size_t pi : blk.points) {
      const PointConfig& p = cfg_.points[pi];
      size_t off = p.address - blk.start;
      if (IsBitTable(blk.table)) {
        reading.metrics.push_back({p.metric, bits[off] != 0});
        continue;
      }
      Decoded v = Decode(std::span<const uint16_t>(regs.data() + off, p.registers()), p.encoding());
      if (auto* s = std::get_if<std::string>(&v)) {
        reading.metrics.push_back({p.metric, *s});
        continue;
      }
      if (auto* b = std::get_if<bool>(&v)) {
        reading.metrics.push_back({p.metric, *b});
        continue;
      }
      bool plain_integer = std::holds_alternative<int64_t>(v) && p.scale == 1.0 && p.offset == 0.0;
      double raw = std::holds_alternative<int64_t>(v) ? static_cast<double>(std::get<int64_t>(v))
                                                      : std::get<double>(v);
      double value = plain_integer ? raw : Round(raw * p.scale + p.offset, p.decimals);
      if (std::isnan(value) || (p.min && value < *p.min) || (p.max && value > *p.max)) {
        // A value outside the sensor's range is a fault, not a reading: flagged, not published.
        reading.quality.emplace_back(p.metric, "out_of_range");
        continue;
      }
      if (plain_integer) reading.metrics.push_back({p.metric, std::get<int64_t>(v)});
      else reading.metrics.push_back({p.metric, value});
    }
  }
  // Addresses the device rejects stay visible to consumers until it accepts them again.
  for (size_t i = 0; i < rejected_before.size(); ++i)
    if (rejected_before[i]) reading.quality.emplace_back(cfg_.points[i].metric, "illegal_data_address");
  if (replan) {
    // With the culprit set aside the others can share one request again; if their block is
    // still refused (a hole inside the gap), the next cycle splits it for good.
    if (newly_rejected) split_.assign(split_.size(), false);
    Replan();
    spdlog::info("modbus: {} rejected part of a read; re-planned into {} requests", cfg_.id, plan_.size());
  }

  int64_t now_ms = NowMs();
  reading.ts_ms = now_ms;
  failures_ = 0;
  last_seen_ms_ = now_ms;
  if (!online_) {
    out.push_back(MakeStatus(cfg_.id, cfg_.kind, "modbus", now_ms, true, now_ms));
    if (announced_) {
      Record ev = MakeEvent(cfg_.id, cfg_.kind, "modbus", now_ms, "offline", EventState::kCleared,
                            Severity::kWarning);
      ev.location = cfg_.location;
      out.push_back(std::move(ev));
      spdlog::info("modbus: {} is back online", cfg_.id);
    }
    online_ = true;
    announced_ = true;
  }
  // Quality flags travel with the metrics that were read; a reading needs at least one metric.
  if (!reading.metrics.empty()) out.push_back(std::move(reading));
  return PollOutcome::kOk;
}

}  // namespace sanigate::dev::modbus

namespace sanigate::dev::modbus {

const CommandConfig* DevicePoller::FindCommand(const std::string& name) const {
  for (const auto& c : cfg_.commands)
    if (c.name == name) return &c;
  return nullptr;
}

std::optional<std::chrono::milliseconds> DevicePoller::Admit(const CommandRequest& request,
                                                             const ReplyFn& reply) {
  const CommandConfig* c = FindCommand(request.name);
  if (!c) {
    reply(Write(nullptr, request));  // answers "unknown command" without touching the line
    return std::nullopt;
  }
  return request.timeout.count() > 0 ? request.timeout : std::chrono::milliseconds(c->timeout_ms);
}

CommandReply DevicePoller::Write(modbus_t* ctx, const CommandRequest& req) {
  const CommandConfig* c = FindCommand(req.name);
  if (!c) {
    std::string known;
    for (const auto& k : cfg_.commands) known += (known.empty() ? "" : ", ") + k.name;
    return {false, "unknown command " + req.name + " for " + cfg_.id +
                       (known.empty() ? " (it has none)" : " (known: " + known + ")"), {}};
  }
  if (req.args.size() != 1) return {false, req.name + " takes exactly one value", {}};
  const std::string& arg = req.args[0];
  // The value: a named one from the profile, on/off for coils, or a number.
  std::optional<double> value;
  for (const auto& [name, v] : c->values)
    if (name == arg) value = v;
  if (!value && c->type == ValueType::kBool) {
    if (arg == "on" || arg == "true" || arg == "1") value = 1;
    if (arg == "off" || arg == "false" || arg == "0") value = 0;
  }
  if (!value && c->type != ValueType::kBool) {
    char* end = nullptr;
    double d = std::strtod(arg.c_str(), &end);
    if (end && *end == '\0' && !arg.empty() && std::isfinite(d)) value = d;
  }
  if (!value) return {false, "\"" + arg + "\" is not a value of " + req.name, {}};
  if ((c->min && *value < *c->min) || (c->max && *value > *c->max))
    return {false, JsonNumber(*value) + " is outside " + (c->min ? JsonNumber(*c->min) : "-inf") +
                       ".." + (c->max ? JsonNumber(*c->max) : "inf"), {}};

  modbus_set_slave(ctx, cfg_.unit_id);
  if (before_request) before_request();
  counters_.requests++;
  int rc;
  std::vector<uint16_t> regs;
  double raw = c->type == ValueType::kBool ? *value : (*value - c->offset) / c->scale;
  if (c->type == ValueType::kBool) {
    rc = modbus_write_bit(ctx, c->address, *value != 0 ? 1 : 0);
  } else {
    if (c->type != ValueType::kF32) {
      raw = std::round(raw);
      double lo = c->type == ValueType::kU16 || c->type == ValueType::kU32 ? 0
                  : c->type == ValueType::kI16                              ? -32768
                                                                            : -2147483648.0;
      double hi = c->type == ValueType::kU16   ? 65535
                  : c->type == ValueType::kI16 ? 32767
                  : c->type == ValueType::kU32 ? 4294967295.0
                                               : 2147483647.0;
      if (raw < lo || raw > hi) {
        if (after_request) after_request();
        return {false, "raw value " + JsonNumber(raw) + " does not fit the register", {}};
      }
    }
    regs = EncodeValue(raw, *c);
    rc = regs.size() == 1 ? modbus_write_register(ctx, c->address, regs[0])
                          : modbus_write_registers(ctx, c->address, static_cast<int>(regs.size()), regs.data());
  }
  int err = errno;
  if (after_request) after_request();
  if (rc < 0) {
    if (IsException(err)) counters_.exceptions++;
    else if (err == ETIMEDOUT) counters_.timeouts++;
    else counters_.errors++;
    return {false, "write " + req.name + ": " + (IsException(err) ? ExceptionName(err) : modbus_strerror(err)), {}};
  }
  std::string result = "{\"written\":" + JsonNumber(raw);
  if (c->verify) {
    // Read back what the device now holds: some controllers accept a write and ignore it.
    if (before_request) before_request();
    counters_.requests++;
    bool same = false;
    if (c->type == ValueType::kBool) {
      uint8_t bit = 0;
      rc = modbus_read_bits(ctx, c->address, 1, &bit);
      same = rc == 1 && (bit != 0) == (*value != 0);
    } else {
      std::vector<uint16_t> back(regs.size());
      rc = modbus_read_registers(ctx, c->address, static_cast<int>(back.size()), back.data());
      same = rc == static_cast<int>(back.size()) && back == regs;
    }
    err = errno;
    if (after_request) after_request();
    if (rc < 0) return {false, "verify " + req.name + ": " + modbus_strerror(err), {}};
    if (!same) return {false, "verify " + req.name + ": the device did not take the value", {}};
    result += ",\"verified\":true";
  }
  return {true, {}, result + "}"};
}

}  // namespace sanigate::dev::modbus
