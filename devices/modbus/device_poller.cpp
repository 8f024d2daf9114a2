#include "modbus/device_poller.h"

#include <modbus.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <bit>
#include <charconv>
#include <cstdlib>
#include <cmath>
#include <cstdio>
#include <limits>

#include "core/clock.h"
#include "core/untrusted.h"

namespace sanigate::dev::modbus {
namespace {

using Clock = std::chrono::steady_clock;

// A rejected address is probed again after this many cycles (firmware may change).
constexpr int kReprobeCycles = 100;
// A failing device is retried at most this far apart (unless its own interval is longer).
constexpr int64_t kMaxBackoffMs = 10'000;
// Refusals in a row (of the point's own request) before it is set aside.
constexpr int kConfirmRefusals = 2;
// Tries after a wrong answer before the request counts as failed.
constexpr int kWrongAnswerRetries = 2;

double Round(double v, int decimals) {
  double f = std::pow(10.0, decimals);
  double r = std::round(v * f) / f;
  return std::isfinite(r) ? r : v;
}

// `v` to `digits` significant digits: removes the binary artefacts of scaling.
double RoundSignificant(double v, int digits) {
  if (v == 0 || !std::isfinite(v)) return v;
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.*g", digits, v);
  return std::strtod(buf, nullptr);
}

// raw * scale + offset, rounded to the point's `decimals`, or by default to what the type can
// really tell: a float32 carries 6 to 9 significant digits, so 23.19 (0x41B98520, exactly
// 23.1900005...) is 23.19, its shortest round-trip form, not 23.190001.
double ScaleAndRound(double raw, const PointConfig& p) {
  if (p.type == ValueType::kF32) {
    char buf[32];
    auto res = std::to_chars(buf, buf + sizeof buf, static_cast<float>(raw));
    raw = std::strtod(std::string(buf, res.ptr).c_str(), nullptr);
  }
  double v = raw * p.scale + p.offset;
  if (p.decimals) return Round(v, *p.decimals);
  bool is_float = p.type == ValueType::kF32 || p.type == ValueType::kF64;
  if (!is_float) return Round(v, 6);
  if (p.scale == 1.0 && p.offset == 0.0) return v;
  return RoundSignificant(v, p.type == ValueType::kF32 ? 9 : 15);
}

// Exception responses (the device answered "no"), as opposed to transport errors.
bool IsException(int err) { return err > MODBUS_ENOBASE && err <= EMBXGTAR; }

// An answer that is not the one asked for: another slave's, garbled, or for another transaction.
bool IsWrongAnswer(int err) { return err == EMBBADSLAVE || err == EMBBADCRC || err == EMBBADDATA; }

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

DeviceCounters ToDeviceCounters(const DevicePoller& poller) {
  const PollCounters& c = poller.counters();
  DeviceCounters d;
  d.id = poller.config().id;
  d.online = poller.online();
  d.requests = c.requests;
  d.timeouts = c.timeouts;
  d.exceptions = c.exceptions;
  d.errors = c.errors;
  d.last_latency_ms = c.last_latency_ms;
  d.max_latency_ms = c.max_latency_ms;
  d.polls = c.polls;
  d.partial_polls = c.partial_polls;
  d.wrong_answers = c.wrong_answers;
  return d;
}

DevicePoller::DevicePoller(DeviceConfig config, PlanLimits limits)
    : cfg_(std::move(config)), limits_(limits) {
  size_t n = cfg_.points.size();
  rejected_.assign(n, false);
  own_refusals_.assign(n, 0);
  split_.assign(n, false);
  hole_strikes_.assign(n, 0);
  probe_at_.assign(n, 0);
  Replan();
}

void DevicePoller::Replan() {
  // Merged blocks for the healthy points, then one request per point of a block with a hole.
  std::vector<bool> skip(cfg_.points.size());
  for (size_t i = 0; i < skip.size(); ++i) skip[i] = rejected_[i] || split_[i];
  plan_ = PlanReads(cfg_.points, limits_, skip);
  for (size_t i = 0; i < cfg_.points.size(); ++i) {
    if (!split_[i] || rejected_[i]) continue;
    const auto& p = cfg_.points[i];
    plan_.push_back({p.table, p.address, static_cast<uint16_t>(p.registers()), {i}});
  }
}

std::chrono::milliseconds DevicePoller::NextInterval() const {
  std::chrono::milliseconds interval(cfg_.interval_ms);
  if (!failing()) return interval;
  const std::chrono::milliseconds ceiling = std::max(interval, std::chrono::milliseconds(kMaxBackoffMs));
  int doublings = std::min(failures_ - cfg_.offline_after, 20);
  return std::min(interval * (int64_t{1} << doublings), ceiling);
}

void DevicePoller::Unreachable(const std::string& why, std::vector<Record>& out) {
  last_error_ = why;
  counters_.errors++;
  counters_.polls++;
  counters_.failed_polls++;
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

int DevicePoller::Read(modbus_t* ctx, const ReadBlock& blk, std::vector<uint16_t>& regs,
                       std::vector<uint8_t>& bits, int& err) {
  for (int attempt = 0;; ++attempt) {
    int rc = -1;
    if (before_request) before_request();
    auto t0 = Clock::now();
    counters_.requests++;
    errno = 0;
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
    err = errno;
    if (after_request) after_request();
    auto answered = [&] {
      double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
      counters_.last_latency_ms = ms;
      counters_.max_latency_ms = std::max(counters_.max_latency_ms, ms);
      return rc;
    };
    if (rc == blk.count) return answered();
    if (rc >= 0) err = EMBBADDATA;
    if (err == EMBBADSLAVE) {
      // On a serial line: another slave's late answer arrived first. Ours is probably right
      // behind it, so keep listening rather than asking again.
      counters_.wrong_answers++;
      rc = ReceiveOwnAnswer(ctx, blk, regs, bits, err);
      if (after_request) after_request();
      if (rc == blk.count) return answered();
    } else if (IsWrongAnswer(err)) {
      counters_.wrong_answers++;
    }
    // A garbled frame, or one for an earlier transaction: not this device's fault. Let the
    // line settle and ask again.
    if (!IsWrongAnswer(err) || attempt >= kWrongAnswerRetries) return -1;
    spdlog::debug("modbus: {}: {} reading {} at {}; asking again", cfg_.id, modbus_strerror(err),
                  blk.count, blk.start);
    if (recover_line) recover_line();
    else modbus_flush(ctx);
  }
}

int DevicePoller::ReceiveOwnAnswer(modbus_t* ctx, const ReadBlock& blk, std::vector<uint16_t>& regs,
                                   std::vector<uint8_t>& bits, int& err) {
  static constexpr uint8_t kFunction[] = {0x03, 0x04, 0x01, 0x02};  // holding, input, coil, discrete
  const uint8_t fc = kFunction[static_cast<int>(blk.table)];
  uint8_t rsp[MODBUS_RTU_MAX_ADU_LENGTH];
  for (int frames = 0; frames < 4; ++frames) {
    errno = 0;
    int len = modbus_receive_confirmation(ctx, rsp);
    err = errno;
    if (len < 0) return -1;
    if (len == 0) {  // yet another slave's frame
      err = EMBBADSLAVE;
      counters_.wrong_answers++;
      continue;
    }
    // slave, function, then the exception code or a byte count and the data, then the CRC.
    if (len >= 5 && rsp[1] == (fc | 0x80)) {
      err = MODBUS_ENOBASE + rsp[2];
      return -1;
    }
    const size_t want = IsBitTable(blk.table) ? (blk.count + 7u) / 8u : blk.count * 2u;
    if (len < 5 || rsp[1] != fc || rsp[2] != want || static_cast<size_t>(len) != 3 + want + 2) {
      err = EMBBADDATA;
      return -1;
    }
    if (IsBitTable(blk.table)) {
      bits.resize(blk.count);
      for (size_t i = 0; i < blk.count; ++i) bits[i] = (rsp[3 + i / 8] >> (i % 8)) & 1;
    } else {
      regs.resize(blk.count);
      for (size_t i = 0; i < blk.count; ++i)
        regs[i] = static_cast<uint16_t>((rsp[3 + 2 * i] << 8) | rsp[4 + 2 * i]);
    }
    return blk.count;
  }
  return -1;
}

void DevicePoller::DecodePoint(size_t pi, const ReadBlock& blk, const std::vector<uint16_t>& regs,
                               const std::vector<uint8_t>& bits, Record& reading) const {
  const PointConfig& p = cfg_.points[pi];
  size_t off = p.address - blk.start;
  if (IsBitTable(blk.table)) {
    reading.metrics.push_back({p.metric, bits[off] != 0});
    return;
  }
  Decoded v = Decode(std::span<const uint16_t>(regs.data() + off, p.registers()), p.encoding());
  if (auto* s = std::get_if<std::string>(&v)) {
    reading.metrics.push_back({p.metric, *s});
    return;
  }
  if (auto* b = std::get_if<bool>(&v)) {
    reading.metrics.push_back({p.metric, *b});
    return;
  }
  bool plain_integer = std::holds_alternative<int64_t>(v) && p.scale == 1.0 && p.offset == 0.0;
  double raw = std::holds_alternative<int64_t>(v) ? static_cast<double>(std::get<int64_t>(v))
                                                  : std::get<double>(v);
  double value = plain_integer ? raw : ScaleAndRound(raw, p);
  if (std::isnan(value) || (p.min && value < *p.min) || (p.max && value > *p.max)) {
    // A value outside the sensor's range is a fault, not a reading: flagged, not published.
    reading.quality.emplace_back(p.metric, "out_of_range");
    return;
  }
  if (plain_integer) reading.metrics.push_back({p.metric, std::get<int64_t>(v)});
  else reading.metrics.push_back({p.metric, value});
}

PollOutcome DevicePoller::Poll(modbus_t* ctx, std::vector<Record>& out) {
  const size_t n = cfg_.points.size();
  ++cycles_;
  counters_.polls++;
  bool replan = false;
  if (cycles_ % kReprobeCycles == 0 && std::find(split_.begin(), split_.end(), true) != split_.end()) {
    // Firmware may have changed: try merging across the holes again.
    split_.assign(n, false);
    hole_strikes_.assign(n, 0);
    replan = true;
  }
  if (replan) Replan();
  modbus_set_slave(ctx, cfg_.unit_id);
  Record reading = MakeReading(cfg_.id, cfg_.kind, "modbus", 0);
  reading.location = cfg_.location;
  // sanifleet selects rollouts and health overrides by profile, as for the other protocols.
  if (!cfg_.profile.empty()) reading.source_extra.push_back({"profile", cfg_.profile});

  std::vector<ReadBlock> todo = plan_;
  // Points set aside are asked again on their own now and then: firmware may have changed.
  for (size_t i = 0; i < n; ++i) {
    if (!rejected_[i] || cycles_ < probe_at_[i]) continue;
    const auto& p = cfg_.points[i];
    todo.push_back({p.table, p.address, static_cast<uint16_t>(p.registers()), {i}});
    probe_at_[i] = cycles_ + kReprobeCycles;
  }
  std::vector<bool> handled(n, false);  // a value or a flag is in the reading
  std::vector<bool> refused_alone(n, false);
  struct SplitGroup {
    std::vector<size_t> points;  // of a merged block refused this cycle, read one by one
  };
  std::vector<SplitGroup> groups;
  bool answered = false;  // the device said something (data or an exception) this cycle
  constexpr size_t kNotCut = std::numeric_limits<size_t>::max();
  size_t cut_at = kNotCut;  // index in `todo` of the request that got no answer
  int cut_err = 0;
  std::vector<uint16_t> regs;
  std::vector<uint8_t> bits;
  for (size_t bi = 0; bi < todo.size(); ++bi) {
    const ReadBlock blk = todo[bi];
    bool single = blk.points.size() == 1 && blk.count == cfg_.points[blk.points[0]].registers();
    if (single && handled[blk.points[0]]) continue;  // already read inside another block
    int err = 0;
    int rc = Read(ctx, blk, regs, bits, err);
    if (rc == blk.count) {
      answered = true;
      for (size_t pi : blk.points) {
        if (handled[pi]) continue;
        DecodePoint(pi, blk, regs, bits, reading);
        handled[pi] = true;
        own_refusals_[pi] = 0;
        if (!single) hole_strikes_[pi] = 0;
        if (rejected_[pi]) rejected_[pi] = false, replan = true;  // a probe that was answered
      }
      // A point set aside whose registers this block covered anyway is published too.
      for (size_t pi = 0; pi < n; ++pi) {
        const PointConfig& p = cfg_.points[pi];
        if (!rejected_[pi] || handled[pi] || p.table != blk.table || p.address < blk.start ||
            p.address + p.registers() > static_cast<size_t>(blk.start) + blk.count)
          continue;
        DecodePoint(pi, blk, regs, bits, reading);
        handled[pi] = true;
        own_refusals_[pi] = 0;
        rejected_[pi] = false;
        replan = true;
      }
      continue;
    }
    if (rc < 0 && IsException(err)) {
      // The device answered "no" for this block: it is alive. A merged block is read point by
      // point in this cycle only, so one refusal does not hide its neighbours.
      answered = true;
      counters_.exceptions++;
      std::string name = ExceptionName(err);
      last_error_ = name + " reading " + std::to_string(blk.count) + " at " + std::to_string(blk.start);
      bool address_problem = err == EMBXILADD || err == EMBXILFUN;
      if (address_problem && !single) {
        SplitGroup g;
        for (size_t pi : blk.points) {
          if (handled[pi]) continue;
          const PointConfig& p = cfg_.points[pi];
          todo.push_back({p.table, p.address, static_cast<uint16_t>(p.registers()), {pi}});
          g.points.push_back(pi);
        }
        groups.push_back(std::move(g));
        continue;
      }
      for (size_t pi : blk.points) {
        if (handled[pi]) continue;
        reading.quality.emplace_back(cfg_.points[pi].metric, name);
        handled[pi] = true;
        if (!address_problem) continue;
        refused_alone[pi] = true;
        if (rejected_[pi]) continue;  // a probe: still refused
        if (++own_refusals_[pi] >= kConfirmRefusals) {
          rejected_[pi] = true;
          probe_at_[pi] = cycles_ + kReprobeCycles;
          replan = true;
          spdlog::info("modbus: {} refuses {} ({} at {}) in {} polls in a row; set aside, asked again "
                       "every {} polls", cfg_.id, cfg_.points[pi].metric, name, blk.start,
                       kConfirmRefusals, kReprobeCycles);
        }
      }
      continue;
    }
    // No answer (or a broken link): the cycle stops here so a dead device costs one timeout.
    if (err == ETIMEDOUT) counters_.timeouts++;
    else counters_.errors++;
    last_error_ = std::string("read ") + std::to_string(blk.count) + " at " +
                  std::to_string(blk.start) + ": " + modbus_strerror(err);
    spdlog::debug("modbus: {} poll failed: {}", cfg_.id, last_error_);
    cut_at = bi;
    cut_err = err;
    break;
  }
  // Merged blocks refused while each of their points reads fine alone have a hole in the gap.
  for (const auto& g : groups) {
    bool all_fine = !g.points.empty();
    for (size_t pi : g.points) all_fine &= handled[pi] && !refused_alone[pi];
    if (!all_fine || cut_at != kNotCut) continue;
    bool confirmed = false;
    for (size_t pi : g.points) confirmed |= ++hole_strikes_[pi] >= kConfirmRefusals;
    if (!confirmed) continue;
    for (size_t pi : g.points) split_[pi] = true;
    replan = true;
    spdlog::info("modbus: {} refuses a merged read over a gap in {} polls in a row; its {} points "
                 "are read one by one", cfg_.id, kConfirmRefusals, g.points.size());
  }
  // Points the cycle did not get to (the request without an answer and every later one).
  for (size_t bi = cut_at; cut_at != kNotCut && bi < todo.size(); ++bi)
    for (size_t pi : todo[bi].points)
      if (!handled[pi]) {
        reading.quality.emplace_back(cfg_.points[pi].metric,
                                     bi == cut_at ? (cut_err == ETIMEDOUT ? "timeout" : "read_error")
                                                  : "not_read");
        handled[pi] = true;
      }
  // Points set aside stay visible to consumers until the device serves them again.
  for (size_t i = 0; i < n; ++i)
    if (rejected_[i] && !handled[i]) reading.quality.emplace_back(cfg_.points[i].metric, "illegal_data_address");
  if (replan) {
    Replan();
    spdlog::info("modbus: {} re-planned into {} requests", cfg_.id, plan_.size());
  }

  if (!answered) {
    counters_.failed_polls++;
    Failed(out);
    return PollOutcome::kFailed;
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
  if (cut_at != kNotCut) {
    counters_.partial_polls++;
    return PollOutcome::kPartial;
  }
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
  if (!value) return {false, QuotePrefix(arg, 32) + " is not a value of " + req.name, {}};
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
