#include "modbus/firmware_installer.h"

#include <modbus.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <fstream>

#include "modbus/value_codec.h"

namespace sanigate::dev::modbus {
namespace {

using std::chrono::milliseconds;

constexpr auto kRetryDelay = milliseconds(200);      // after a request with no answer
constexpr auto kBusyDelay = milliseconds(20);        // after "busy", or a status not there yet
constexpr auto kVerifyPoll = milliseconds(100);      // status polls while the device verifies
constexpr auto kVersionPoll = milliseconds(1000);    // version reads after the reboot time

constexpr std::array<uint32_t, 256> MakeCrcTable() {
  std::array<uint32_t, 256> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1u) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    t[i] = c;
  }
  return t;
}
constexpr std::array<uint32_t, 256> kCrcTable = MakeCrcTable();

bool IsException(int err) { return err > MODBUS_ENOBASE && err <= EMBXGTAR; }

uint16_t Swap(uint16_t r) { return static_cast<uint16_t>((r >> 8) | (r << 8)); }

const char* StatusName(uint16_t s) {
  switch (s) {
    case FirmwareInstaller::kIdle: return "idle";
    case FirmwareInstaller::kReceiving: return "receiving";
    case FirmwareInstaller::kVerifying: return "verifying";
    case FirmwareInstaller::kReady: return "ready";
    case FirmwareInstaller::kError: return "error";
    default: return "unknown";
  }
}

}  // namespace

uint32_t Crc32(std::span<const uint8_t> bytes, uint32_t crc) {
  crc = ~crc;
  for (uint8_t b : bytes) crc = kCrcTable[(crc ^ b) & 0xFFu] ^ (crc >> 8);
  return ~crc;
}

std::string FirmwareErrorText(const FirmwareConfig& fw, int code) {
  for (const auto& [c, text] : fw.errors)
    if (c == code) return text;
  switch (code) {
    case 1: return "checksum mismatch";
    case 2: return "chunk out of order";
    case 3: return "image too large";
    case 4: return "image incomplete";
    case 5: return "command not allowed now";
    case 6: return "flash write failed";
    default: return "error " + std::to_string(code);
  }
}

FirmwareInstaller::FirmwareInstaller(const DeviceConfig& device, FirmwareJob job,
                                     FirmwareProgressFn progress, FirmwareDoneFn done)
    : device_(device),
      fw_(*device_.firmware),
      job_(std::move(job)),
      progress_(std::move(progress)),
      done_(std::move(done)) {
  started_ = Clock::now();
  auto timeout = job_.timeout.count() > 0 ? job_.timeout : milliseconds(30 * 60 * 1000);
  deadline_ = started_ + timeout;
}

FirmwareInstaller::~FirmwareInstaller() {
  if (!finished_) Finish({false, "gateway stopping", {}});
}

void FirmwareInstaller::Cancel(const std::string& why) {
  if (!finished_) Finish({false, why, {}});
}

void FirmwareInstaller::Finish(FirmwareResult result) {
  finished_ = true;
  if (result.ok)
    spdlog::info("modbus: {} runs firmware {} ({} bytes in {})", device_.id, result.version, image_.size(),
                 Elapsed(started_));
  else
    spdlog::warn("modbus: firmware {} for {} failed: {}", job_.version, device_.id, result.error);
  image_.clear();
  image_.shrink_to_fit();
  if (done_) {
    auto done = std::move(done_);
    done_ = nullptr;
    done(std::move(result));
  }
}

std::string FirmwareInstaller::Elapsed(Clock::time_point since) const {
  auto ms = std::chrono::duration_cast<milliseconds>(Clock::now() - since).count();
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f s", static_cast<double>(ms) / 1000.0);
  return buf;
}

bool FirmwareInstaller::Load(std::string& why) {
  if (job_.version.empty()) return why = "the job names no version to expect", false;
  if (!fw_.model.empty() && !job_.model.empty() && fw_.model != job_.model)
    return why = "the image is for model " + job_.model + ", " + device_.id + " is a " + fw_.model, false;
  std::ifstream in(job_.image_path, std::ios::binary);
  if (!in) return why = "cannot read the image " + job_.image_path + ": " + std::strerror(errno), false;
  image_.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  if (in.bad()) return why = "cannot read the image " + job_.image_path, false;
  if (image_.empty()) return why = "the image " + job_.image_path + " is empty", false;
  if (job_.size && image_.size() != job_.size)
    return why = "the image has " + std::to_string(image_.size()) + " bytes, the job says " +
                 std::to_string(job_.size),
           false;
  if (image_.size() > 0xFFFFFFFFull) return why = "the image is larger than 4 GiB", false;
  crc_ = Crc32(image_);
  return true;
}

// --- requests ---------------------------------------------------------------------------------

FirmwareInstaller::Answer FirmwareInstaller::Read(modbus_t* ctx, uint16_t address, uint16_t count,
                                                  uint16_t* out) {
  if (before_request) before_request();
  errno = 0;
  int rc = modbus_read_registers(ctx, address, count, out);
  int err = errno;
  if (after_request) after_request();
  Answer a;
  if (rc == count) return a.ok = true, a;
  a.err = rc < 0 ? err : EMBBADDATA;
  a.busy = a.err == EMBXSBUSY || a.err == EMBXACK;
  a.exception = IsException(a.err) && !a.busy;
  a.text = "read " + std::to_string(count) + " at " + std::to_string(address) + ": " + modbus_strerror(a.err);
  return a;
}

FirmwareInstaller::Answer FirmwareInstaller::Write(modbus_t* ctx, uint16_t address,
                                                   const std::vector<uint16_t>& regs) {
  if (before_request) before_request();
  errno = 0;
  int rc = regs.size() == 1 ? modbus_write_register(ctx, address, regs[0])
                            : modbus_write_registers(ctx, address, static_cast<int>(regs.size()), regs.data());
  int err = errno;
  if (after_request) after_request();
  Answer a;
  if (rc >= 0) return a.ok = true, a;
  a.err = err;
  a.busy = a.err == EMBXSBUSY || a.err == EMBXACK;
  a.exception = IsException(a.err) && !a.busy;
  a.text = "write " + std::to_string(regs.size()) + " at " + std::to_string(address) + ": " + modbus_strerror(a.err);
  return a;
}

// Writes runs in order, merging a run into the previous one when it starts right after it.
FirmwareInstaller::Answer FirmwareInstaller::WriteRuns(
    modbus_t* ctx, std::vector<std::pair<uint16_t, std::vector<uint16_t>>> writes) {
  std::vector<std::pair<uint16_t, std::vector<uint16_t>>> merged;
  for (auto& w : writes) {
    if (!merged.empty() && merged.back().first + merged.back().second.size() == w.first &&
        merged.back().second.size() + w.second.size() <= MODBUS_MAX_WRITE_REGISTERS) {
      merged.back().second.insert(merged.back().second.end(), w.second.begin(), w.second.end());
    } else {
      merged.push_back(std::move(w));
    }
  }
  for (const auto& [address, regs] : merged) {
    Answer a = Write(ctx, address, regs);
    if (!a.ok) return a;
  }
  return Answer{true, false, false, 0, {}};
}

std::vector<uint16_t> FirmwareInstaller::U32(uint32_t v) const {
  auto hi = static_cast<uint16_t>(v >> 16), lo = static_cast<uint16_t>(v & 0xFFFF);
  return fw_.word_order == WordOrder::kHighFirst ? std::vector<uint16_t>{hi, lo} : std::vector<uint16_t>{lo, hi};
}

// The chunk at done_bytes_: its offset, its length in bytes, then the data window (the write
// that covers the data window's first register is the one the bootloader acts on).
std::vector<std::pair<uint16_t, std::vector<uint16_t>>> FirmwareInstaller::ChunkWrites() const {
  size_t len = chunk_bytes_;
  std::vector<uint16_t> data((len + 1) / 2);
  for (size_t i = 0; i < data.size(); ++i) {
    uint8_t b0 = image_[done_bytes_ + 2 * i];
    uint8_t b1 = 2 * i + 1 < len ? image_[done_bytes_ + 2 * i + 1] : 0;
    uint16_t r = static_cast<uint16_t>((b0 << 8) | b1);
    data[i] = fw_.byte_order == ByteOrder::kLittle ? Swap(r) : r;
  }
  return {{fw_.offset, U32(static_cast<uint32_t>(done_bytes_))},
          {fw_.chunk_length, {static_cast<uint16_t>(len)}},
          {fw_.data, std::move(data)}};
}

FirmwareInstaller::Answer FirmwareInstaller::ReadStatus(modbus_t* ctx, uint16_t& status, int& code) {
  code = -1;
  uint16_t regs[2] = {0, 0};
  bool together = fw_.error && *fw_.error == fw_.status + 1;
  Answer a = Read(ctx, fw_.status, together ? 2 : 1, regs);
  if (!a.ok) return a;
  status = regs[0];
  if (status == kError && fw_.error) {
    if (together) {
      code = regs[1];
    } else {
      uint16_t c = 0;
      Answer e = Read(ctx, *fw_.error, 1, &c);
      if (!e.ok) return e;
      code = c;
    }
  }
  return a;
}

std::string FirmwareInstaller::Refusal(int code) const {
  return code < 0 ? std::string("error (the profile names no error register)") : FirmwareErrorText(fw_, code);
}

// --- steps ------------------------------------------------------------------------------------

FirmwareInstaller::Step FirmwareInstaller::Again(Clock::time_point next, bool link_failed, int err) {
  Step s;
  s.next = std::min(next, deadline_);  // a job past its time ends at its deadline
  s.link_failed = link_failed;
  s.error = err;
  return s;
}

FirmwareInstaller::Step FirmwareInstaller::Fail(std::string why, modbus_t* abort_on) {
  if (abort_on) {
    // Best effort: leave the bootloader idle rather than half-way through a transfer.
    Write(abort_on, fw_.control, {kAbort});
  }
  Finish({false, std::move(why), {}});
  Step s;
  s.finished = true;
  s.next = Clock::now();
  return s;
}

FirmwareInstaller::Step FirmwareInstaller::Succeed(std::string version) {
  Finish({true, {}, std::move(version)});
  Step s;
  s.finished = true;
  s.next = Clock::now();
  return s;
}

FirmwareInstaller::Step FirmwareInstaller::NoAnswer(const Answer& a, const std::string& what,
                                                    milliseconds delay) {
  last_error_ = a.text;
  if (++tries_ > fw_.chunk_retries)
    return Fail(what + " after " + std::to_string(tries_) + (tries_ == 1 ? " try: " : " tries: ") + a.text);
  return Again(Clock::now() + delay, /*link_failed=*/true, a.err);
}

FirmwareInstaller::Step FirmwareInstaller::NotYet(const std::string& what) {
  auto now = Clock::now();
  if (!waiting_) {
    waiting_ = true;
    waiting_since_ = now;
  }
  if (now - waiting_since_ > milliseconds(fw_.verify_timeout_ms))
    return Fail(what + " (" + Elapsed(waiting_since_) + ")", nullptr);
  return Again(now + kBusyDelay);
}

FirmwareInstaller::Step FirmwareInstaller::Run(modbus_t* ctx, const std::string& unreachable) {
  if (finished_) {
    Step s;
    s.finished = true;
    return s;
  }
  auto now = Clock::now();
  if (now >= deadline_) {
    if (stage_ == Stage::kVersion)
      return Fail("no answer for " + Elapsed(reboot_sent_) + " after the reboot" +
                  (last_error_.empty() ? "" : " (" + last_error_ + ")"));
    std::string at = stage_ <= Stage::kBeginWait ? "before the transfer"
                     : stage_ <= Stage::kChunkStatus ? "at chunk offset " + std::to_string(done_bytes_)
                                                      : "while the device verified the image";
    return Fail("timed out after " + Elapsed(started_) + " " + at);
  }
  if (stage_ == Stage::kLoad) {
    std::string why;
    if (!Load(why)) return Fail(why);
    spdlog::info("modbus: installing firmware {} on {} ({} bytes, CRC-32 {:08x})", job_.version, device_.id,
                 image_.size(), crc_);
    stage_ = Stage::kPrepare;
  }
  if (!ctx) {
    Answer a;
    a.text = unreachable.empty() ? std::string("device unreachable") : unreachable;
    a.err = ECONNREFUSED;
    if (stage_ == Stage::kReboot) stage_ = Stage::kVersion;  // cannot tell it: it may have gone
    if (stage_ == Stage::kVersion) {
      last_error_ = a.text;
      return Again(now + kVersionPoll, true, a.err);
    }
    std::string what = stage_ <= Stage::kBeginWait ? "no answer from " + device_.id
                       : stage_ <= Stage::kChunkStatus ? "no answer at chunk offset " + std::to_string(done_bytes_)
                                                        : "no answer while the device verified the image";
    return NoAnswer(a, what, kRetryDelay);
  }
  modbus_set_slave(ctx, device_.unit_id);

  switch (stage_) {
    case Stage::kLoad:
    case Stage::kPrepare: {
      // A transfer left half-way (gateway restart, broken link) is aborted first.
      uint16_t status = 0;
      int code = -1;
      Answer a = ReadStatus(ctx, status, code);
      if (a.busy) return NotYet("the bootloader stayed busy");
      if (a.exception) return Fail("the device has no bootloader window at " + std::to_string(fw_.status) + " (" + a.text + ")");
      if (!a.ok) return NoAnswer(a, "no answer from " + device_.id, kRetryDelay);
      tries_ = 0;
      waiting_ = false;
      if (status != kIdle) {
        spdlog::info("modbus: {}: bootloader was {}; aborting that first", device_.id, StatusName(status));
        Answer ab = Write(ctx, fw_.control, {kAbort});
        if (!ab.ok && !ab.exception) return NoAnswer(ab, "no answer from " + device_.id, kRetryDelay);
      }
      stage_ = Stage::kBegin;
      return Again(Clock::now());
    }
    case Stage::kBegin: {
      Answer a = WriteRuns(ctx, {{fw_.size, U32(static_cast<uint32_t>(image_.size()))}});
      if (a.ok) a = Write(ctx, fw_.control, {kBegin});
      if (a.busy) return NotYet("the bootloader stayed busy");
      if (a.exception) return Fail("the device refused to begin: " + a.text, ctx);
      if (!a.ok) return NoAnswer(a, "no answer from " + device_.id, kRetryDelay);
      tries_ = 0;
      waiting_ = false;
      stage_ = Stage::kBeginWait;
      [[fallthrough]];
    }
    case Stage::kBeginWait: {
      uint16_t status = 0;
      int code = -1;
      Answer a = ReadStatus(ctx, status, code);
      if (a.busy) return NotYet("the bootloader stayed busy");
      if (a.exception) return Fail("reading the bootloader status: " + a.text, ctx);
      if (!a.ok) {
        stage_ = Stage::kBegin;  // "begin" again: it resets the bootloader
        return NoAnswer(a, "no answer from " + device_.id, kRetryDelay);
      }
      if (status == kError) return Fail("the device refused the image: " + Refusal(code), ctx);
      if (status != kReceiving) return NotYet("the bootloader did not start receiving (status " + std::string(StatusName(status)) + ")");
      tries_ = 0;
      waiting_ = false;
      if (progress_) progress_(0, image_.size());
      stage_ = Stage::kChunk;
      return Again(Clock::now());
    }
    case Stage::kChunk: {
      chunk_bytes_ = std::min<size_t>(size_t{fw_.max_chunk} * 2, image_.size() - done_bytes_);
      Answer a = WriteRuns(ctx, ChunkWrites());
      std::string at = "chunk offset " + std::to_string(done_bytes_);
      if (a.busy) return NotYet("the device stayed busy at " + at);
      if (a.exception) return Fail("the device refused " + at + ": " + a.text, ctx);
      if (!a.ok) return NoAnswer(a, "no answer at " + at, kRetryDelay);
      waiting_ = false;
      stage_ = Stage::kChunkStatus;
      [[fallthrough]];
    }
    case Stage::kChunkStatus: {
      std::string at = "chunk offset " + std::to_string(done_bytes_);
      uint16_t status = 0;
      int code = -1;
      Answer a = ReadStatus(ctx, status, code);
      if (a.busy) return NotYet("the device stayed busy at " + at);  // writing flash
      if (a.exception) return Fail("reading the status at " + at + ": " + a.text, ctx);
      if (!a.ok) {
        stage_ = Stage::kChunk;  // the chunk again: the bootloader takes the last one twice
        return NoAnswer(a, "no answer at " + at, kRetryDelay);
      }
      if (status == kError) return Fail("the device refused " + at + ": " + Refusal(code), ctx);
      if (status == kVerifying) return NotYet("the device stayed busy at " + at);
      if (status != kReceiving)
        return Fail("the bootloader left the transfer at " + at + " (status " + StatusName(status) + ")");
      tries_ = 0;
      waiting_ = false;
      done_bytes_ += chunk_bytes_;
      if (progress_) progress_(done_bytes_, image_.size());
      stage_ = done_bytes_ < image_.size() ? Stage::kChunk : Stage::kCommit;
      return Again(Clock::now());
    }
    case Stage::kCommit: {
      Answer a = WriteRuns(ctx, {{fw_.checksum, U32(crc_)}});
      if (a.ok) a = Write(ctx, fw_.control, {kCommit});
      if (a.busy) return NotYet("the device stayed busy before the commit");
      if (a.exception) return Fail("the device refused the commit: " + a.text, ctx);
      if (!a.ok) return NoAnswer(a, "no answer to the commit", kRetryDelay);
      tries_ = 0;
      waiting_ = true;
      waiting_since_ = Clock::now();
      stage_ = Stage::kVerify;
      return Again(Clock::now() + kVerifyPoll);
    }
    case Stage::kVerify: {
      uint16_t status = 0;
      int code = -1;
      Answer a = ReadStatus(ctx, status, code);
      if (a.exception) return Fail("reading the status after the commit: " + a.text, ctx);
      if (!a.ok && !a.busy) return NoAnswer(a, "no answer while the device verified the image", kRetryDelay);
      tries_ = 0;
      if (a.ok && status == kError) return Fail("the device refused the image: " + Refusal(code), ctx);
      if (a.ok && status == kIdle) return Fail("the bootloader went idle before the image was verified");
      if (a.busy || status != kReady) {
        if (Clock::now() - waiting_since_ > milliseconds(fw_.verify_timeout_ms))
          return Fail("the device did not verify the image within " + std::to_string(fw_.verify_timeout_ms / 1000) + " s", ctx);
        return Again(Clock::now() + kVerifyPoll);
      }
      waiting_ = false;
      stage_ = Stage::kReboot;
      [[fallthrough]];
    }
    case Stage::kReboot: {
      Answer a = Write(ctx, fw_.control, {kReboot});
      if (a.busy) return NotYet("the device stayed busy before the reboot");
      if (a.exception) return Fail("the device refused the reboot: " + a.text, ctx);
      // No answer is fine: a device may restart before it answers.
      reboot_sent_ = Clock::now();
      stage_ = Stage::kVersion;
      last_error_.clear();
      spdlog::info("modbus: {} verified firmware {}; rebooting ({} s)", device_.id, job_.version,
                   fw_.reboot_time_ms / 1000);
      return Again(reboot_sent_ + milliseconds(fw_.reboot_time_ms), /*link_failed=*/true, a.ok ? 0 : a.err);
    }
    case Stage::kVersion: {
      std::vector<uint16_t> regs(fw_.version_length);
      Answer a = Read(ctx, fw_.version, fw_.version_length, regs.data());
      if (!a.ok) {
        last_error_ = a.text;
        return Again(Clock::now() + (a.busy ? kVerifyPoll : kVersionPoll), !a.busy && !a.exception, a.err);
      }
      Decoded d = Decode(regs, Encoding{ValueType::kString, fw_.word_order, fw_.byte_order, fw_.version_length, 0});
      std::string version = std::get<std::string>(d);
      if (version != job_.version) {
        Finish({false, "rebooted into " + (version.empty() ? std::string("an empty version") : version) + ", not " + job_.version, version});
        Step s;
        s.finished = true;
        s.next = Clock::now();
        return s;
      }
      return Succeed(version);
    }
  }
  return Fail("internal error: unknown stage");
}

}  // namespace sanigate::dev::modbus
