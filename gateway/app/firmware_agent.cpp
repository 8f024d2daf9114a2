#include "app/firmware_agent.h"
#include "core/thread_name.h"

#include <fcntl.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/wait.h>
#include <unistd.h>

#include <climits>
#include <filesystem>
#include <fstream>

#include "core/atomic_file.h"
#include "core/clock.h"
#include "core/untrusted.h"
#include "firmware/base64.h"

namespace sanigate {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

json Refuse(const std::string& why) { return {{"ok", false}, {"code", "invalid"}, {"error", why}}; }

// Runs `command` with /bin/sh and the given environment; its exit code, or -1 when it could not
// run or was killed after `timeout_s`.
int RunShell(const std::string& command, const std::vector<std::pair<std::string, std::string>>& env, int64_t timeout_s) {
  pid_t pid = ::fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    sigset_t none;
    sigemptyset(&none);
    pthread_sigmask(SIG_SETMASK, &none, nullptr);  // the daemon blocks signals for sigwait
    for (const auto& [k, v] : env) ::setenv(k.c_str(), v.c_str(), 1);
    ::execl("/bin/sh", "sh", "-c", command.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  for (int64_t waited_ms = 0;; waited_ms += 50) {
    int status = 0;
    pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    if (r < 0) return -1;
    if (waited_ms > timeout_s * 1000) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      return -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

std::string Trimmed(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  return s;
}

}  // namespace

Result<FirmwareJobRequest> DecodeFirmwareJob(const json& job) {
  if (!job.is_object()) return Invalid("the job must be a JSON object");
  FirmwareJobRequest r;
  // Each field checked for its type: value() would throw on a job with, say, "device":7.
  r.device = FieldString(job, "device").value_or("");
  r.campaign = FieldString(job, "campaign").value_or("");
  r.chunks_topic = FieldString(job, "chunks").value_or("");
  auto manifest = job.find("manifest");
  if (r.device.empty() || r.campaign.empty() || r.chunks_topic.empty() || manifest == job.end() || !manifest->is_object())
    return Invalid("a job needs campaign, device, attempt, manifest and chunks");
  if (auto a = job.find("attempt"); a != job.end()) {
    auto attempt = AsInt64(*a);
    if (!attempt || *attempt < 1 || *attempt > INT_MAX)
      return Invalid("attempt must be a whole number from 1 to " + std::to_string(INT_MAX));
    r.attempt = static_cast<int>(*attempt);
  }
  r.manifest = *manifest;
  return r;
}

Result<ChunkAnswer> DecodeChunkAnswer(std::string_view payload, uint64_t max_chunk_bytes) {
  // Base64 of the largest chunk plus room for the envelope; anything larger is not an answer.
  size_t limit = static_cast<size_t>(std::min<uint64_t>(max_chunk_bytes, 16 << 20) / 3 * 4 + 4096);
  auto parsed = ParseUntrustedJson(payload, {.max_bytes = limit, .max_depth = 4});
  if (!parsed.ok() || !parsed->is_object()) return Invalid("unreadable answer");
  const json& answer = *parsed;
  if (FieldBool(answer, "ok") != true) {
    // The reason goes into the job's status and the log: short, or quoted and cut.
    std::string why = FieldString(answer, "error").value_or("");
    if (why.empty()) return Invalid("refused");
    return Invalid(why.size() <= 200 ? why : QuotePrefix(why, 160));
  }
  auto result = answer.find("result");
  if (result == answer.end()) return Unavailable("an answer without a result");
  auto offset = FieldUint64(*result, "offset");
  auto text = FieldString(*result, "data");
  if (!offset || !text) return Unavailable("an answer without offset and data");
  auto data = firmware::Base64Decode(*text);
  if (!data) return Unavailable("chunk data that is not base64");
  if (data->size() > max_chunk_bytes) return Unavailable("a chunk larger than asked for");
  return ChunkAnswer{*offset, std::move(*data)};
}

FirmwareAgent::FirmwareAgent(const settings::Config& cfg, WithAdapter with) : cfg_(cfg), with_adapter_(std::move(with)) {}

Result<std::unique_ptr<FirmwareAgent>> FirmwareAgent::Create(const settings::Config& cfg, WithAdapter with, Healthy healthy,
                                                             Restart restart) {
  std::unique_ptr<FirmwareAgent> a(new FirmwareAgent(cfg, std::move(with)));
  a->healthy_ = std::move(healthy);
  a->restart_ = std::move(restart);
  for (const auto& file : cfg.firmware.trusted_keys) {
    auto key = firmware::ReadPublicKey(file);
    if (!key.ok()) return Invalid("[firmware] trusted key " + file + ": " + key.status().message());
    a->trusted_.push_back(*key);
  }
  std::error_code ec;
  fs::create_directories(cfg.FirmwareDir(), ec);
  if (ec) return Unavailable("cannot create " + cfg.FirmwareDir() + ": " + ec.message());
  const auto& m = cfg.mqtt;
  mqtt::ClientOptions o;
  o.link.url = m.url;
  o.link.client_id = m.client_id + "-fw";  // its own connection: image chunks never queue ahead of telemetry
  o.link.username = m.username;
  o.link.password = m.password;
  o.link.keepalive_s = static_cast<int>(m.keepalive_s);
  o.link.connect_timeout_s = static_cast<int>(m.connect_timeout_s);
  o.link.ack_timeout_s = static_cast<int>(m.ack_timeout_s);
  o.link.tls = {m.tls.enabled, m.tls.ca_file, m.tls.cert_file, m.tls.key_file, m.tls.verify_peer};
  a->reply_topic_ = cfg.gateway.topic_prefix + "/" + cfg.gateway.site + "/admin/reply/" + o.link.client_id;
  o.filters = {a->reply_topic_};
  o.reconnect_min = std::chrono::milliseconds(m.reconnect_min_ms);
  o.reconnect_max = std::chrono::milliseconds(m.reconnect_max_ms);
  mqtt::ClientHandlers h;
  FirmwareAgent* self = a.get();
  h.on_message = [self](mqtt::InboundMessage msg) {
    self->Post([self, corr = std::move(msg.correlation_data), payload = std::move(msg.payload)] { self->OnChunk(corr, payload, NowMs()); });
  };
  a->client_ = std::make_unique<mqtt::MqttClient>(std::move(o), std::move(h));
  // A self-update in progress: this start is the new image's (or, after a rollback, the old one's).
  std::ifstream marker(fs::path(cfg.FirmwareDir()) / "self-update.json");
  json saved = json::parse(marker, nullptr, false);
  if (saved.is_object()) {
    SelfUpdate su;
    // Our own file, but a damaged one must not stop the start: fields of another type read as unset.
    su.campaign = FieldString(saved, "campaign").value_or("");
    su.device = FieldString(saved, "device").value_or("");
    su.expected = FieldString(saved, "expected").value_or("");
    su.previous = FieldString(saved, "previous").value_or("");
    su.state = FieldString(saved, "state").value_or("");
    su.reason = FieldString(saved, "reason").value_or("");
    su.attempt = static_cast<int>(std::clamp<int64_t>(FieldInt64(saved, "attempt").value_or(0), 0, INT_MAX));
    su.boots = static_cast<int>(std::clamp<int64_t>(FieldInt64(saved, "boots").value_or(0), 0, 1000)) + 1;
    su.deadline_ms = NowMs() + cfg.firmware.self_health_s * 1000;
    Job job;
    job.campaign = su.campaign;
    job.device = su.device;
    job.attempt = su.attempt;
    job.manifest.version = su.expected;
    job.state = su.state == "rolled_back" ? "failed" : "installing";
    job.error = su.state == "rolled_back" ? "rolled back to " + su.previous + ": " + su.reason : "";
    a->jobs_[su.device] = std::move(job);
    a->self_ = std::move(su);
    a->SaveSelf();
    spdlog::info("firmware: self-update {} -> {}: start {} in state {}", a->self_->previous, a->self_->expected, a->self_->boots,
                 a->self_->state);
  }
  return a;
}

FirmwareAgent::~FirmwareAgent() { Stop(); }

void FirmwareAgent::Start() {
  client_->Start();
  worker_ = std::thread([this] {
    NameThisThread("firmware");
    Loop();
  });
}

void FirmwareAgent::Stop() {
  if (!worker_.joinable()) return;
  {
    std::lock_guard lk(mu_);
    stop_ = true;
    cv_.notify_all();
  }
  worker_.join();
  for (const auto& [sha, d] : downloads_)
    if (!d.done) SaveProgress(d);
  client_->Stop(std::chrono::milliseconds(1000));
}

void FirmwareAgent::Post(std::function<void()> task) {
  std::lock_guard lk(mu_);
  if (stop_) return;
  tasks_.push_back(std::move(task));
  cv_.notify_all();
}

void FirmwareAgent::Loop() {
  while (true) {
    std::deque<std::function<void()>> batch;
    {
      std::unique_lock lk(mu_);
      cv_.wait_for(lk, std::chrono::milliseconds(100), [&] { return stop_ || !tasks_.empty(); });
      if (stop_) return;
      batch.swap(tasks_);
    }
    for (auto& t : batch) t();
    Pump(NowMs());
  }
}

std::string FirmwareAgent::PartPath(const std::string& sha) const { return (fs::path(cfg_.FirmwareDir()) / (sha + ".part")).string(); }
std::string FirmwareAgent::ImagePath(const std::string& sha) const { return (fs::path(cfg_.FirmwareDir()) / (sha + ".img")).string(); }

json FirmwareAgent::Accept(const json& job) {
  auto request = DecodeFirmwareJob(job);
  if (!request.ok()) return Refuse(request.status().message());
  const std::string& device = request->device;
  if (trusted_.empty()) return Refuse("this gateway has no [firmware] trusted_keys: it installs nothing");
  std::string protocol;
  if (device == cfg_.gateway.id) {
    if (cfg_.firmware.self_install_command.empty())
      return Refuse("self-update is not configured on this gateway ([firmware] self_install_command)");
    protocol = "gateway";
  } else if (!with_adapter_(device, [&](dev::Adapter& a) { protocol = a.protocol(); })) {
    return Refuse("unknown device " + device);
  }
  firmware::DeviceExpectation expect;
  if (protocol == "gateway") expect.target = firmware::Target::kGateway;
  else if (protocol == "modbus") expect.target = firmware::Target::kModbus;
  else if (protocol == "jt808") expect.target = firmware::Target::kJt808;
  else if (protocol == "lorawan") return Refuse("LoRaWAN FUOTA is not supported");
  else return Refuse(protocol + " devices have no firmware installer");
  std::string text = SafeDump(request->manifest);  // a bad UTF-8 string only fails the signature
  auto manifest = firmware::VerifyManifest(text, trusted_, expect);
  if (!manifest.ok()) {
    spdlog::warn("firmware: job for {} refused: {}", device, manifest.status().message());
    return Refuse(manifest.status().message());
  }
  Job j;
  j.campaign = std::move(request->campaign);
  j.device = device;
  j.attempt = request->attempt;
  j.manifest_text = std::move(text);
  j.chunks_topic = std::move(request->chunks_topic);
  j.manifest = *manifest;
  Post([this, j = std::move(j)]() mutable {
    int64_t now = NowMs();
    auto it = jobs_.find(j.device);
    if (it != jobs_.end() && it->second.campaign == j.campaign && it->second.attempt == j.attempt) return;  // a resent request
    if (it != jobs_.end() && (it->second.state == "installing"))
      spdlog::warn("firmware: {} gets a new job while installing attempt {}", j.device, it->second.attempt);
    spdlog::info("firmware: job {} attempt {}: {} {} for {}", j.campaign, j.attempt, j.manifest.model, j.manifest.version, j.device);
    Job& job = jobs_[j.device] = std::move(j);
    const std::string& sha = job.manifest.sha256;
    if (fs::exists(ImagePath(sha))) return Install(job, now);  // pulled and checked for an earlier job
    job.state = "downloading";
    Report(job, now);
    Download& d = downloads_[sha];
    if (d.sha256.empty()) {
      d.sha256 = sha;
      d.chunks_topic = job.chunks_topic;
      d.size = job.manifest.size;
      d.chunk = static_cast<uint64_t>(cfg_.firmware.chunk_kib) * 1024;
      d.have.assign(static_cast<size_t>((d.size + d.chunk - 1) / d.chunk), false);
      // Resume: the chunks an interrupted download already wrote (saved beside the part file).
      std::ifstream progress(PartPath(sha) + ".chunks");
      std::string bits;
      if (progress >> bits && bits.size() == d.have.size() && fs::exists(PartPath(sha)))
        for (size_t i = 0; i < bits.size(); ++i) d.have[i] = bits[i] == '1';
      size_t had = static_cast<size_t>(std::count(d.have.begin(), d.have.end(), true));
      if (had) spdlog::info("firmware: resuming {} with {} of {} chunks already here", sha.substr(0, 12), had, d.have.size());
      else std::ofstream(PartPath(sha), std::ios::binary | std::ios::trunc).close();
    }
  });
  return {{"ok", true}, {"result", {{"accepted", true}}}};
}

void FirmwareAgent::Pump(int64_t now) {
  // Rate limit: a budget refilled at max_kib_s, never more than one window of chunks ahead.
  double rate = static_cast<double>(cfg_.firmware.max_kib_s) * 1024.0 / 1000.0;
  double cap = static_cast<double>(cfg_.firmware.window * cfg_.firmware.chunk_kib * 1024);
  if (budget_ms_ == 0) budget_ms_ = now, budget_bytes_ = cap;
  budget_bytes_ = std::min(cap, budget_bytes_ + static_cast<double>(now - budget_ms_) * rate);
  budget_ms_ = now;
  for (auto& [sha, d] : downloads_) {
    if (d.done) continue;
    for (auto it = d.asked.begin(); it != d.asked.end();)  // lost requests or answers are asked again
      it = now - it->second > cfg_.firmware.request_timeout_ms ? d.asked.erase(it) : std::next(it);
    for (size_t i = 0; i < d.have.size() && static_cast<int64_t>(d.asked.size()) < cfg_.firmware.window; ++i) {
      if (d.have[i] || d.asked.count(i)) continue;
      uint64_t len = std::min(d.chunk, d.size - i * d.chunk);
      if (budget_bytes_ < static_cast<double>(len) || !client_->connected()) break;
      json req = {{"sha256", sha}, {"offset", i * d.chunk}, {"length", len}};
      if (!client_->PublishRequest(d.chunks_topic, req.dump(), reply_topic_, sha + ":" + std::to_string(i)).ok()) break;
      d.asked[i] = now;
      budget_bytes_ -= static_cast<double>(len);
    }
    if (now - d.saved_ms > 2000) {
      SaveProgress(d);
      d.saved_ms = now;
    }
  }
  CheckSelf(now);
  for (auto& [device, job] : jobs_)
    if (job.reported_ms == 0 || (now - job.reported_ms > 2000 && (job.state == "downloading" || job.state == "installing")))
      Report(job, now);
}

void FirmwareAgent::OnChunk(const std::string& correlation, const std::string& payload, int64_t now) {
  auto colon = correlation.find(':');
  if (colon == std::string::npos) return;
  auto dit = downloads_.find(correlation.substr(0, colon));
  if (dit == downloads_.end() || dit->second.done) return;
  Download& d = dit->second;
  size_t index = std::strtoul(correlation.c_str() + colon + 1, nullptr, 10);
  if (index >= d.have.size() || d.have[index]) return;
  auto answer = DecodeChunkAnswer(payload, d.chunk);
  if (!answer.ok() && answer.status().code() == Code::kInvalid) {
    const std::string& why = answer.status().message();
    for (auto& [device, job] : jobs_)
      if (job.state == "downloading" && job.manifest.sha256 == d.sha256) Fail(job, "image not available from sanifleet: " + why, "", now);
    d.done = true;
    return;
  }
  uint64_t offset = index * d.chunk, want = std::min(d.chunk, d.size - offset);
  if (!answer.ok() || answer->offset != offset || answer->data.size() != want) {
    d.asked.erase(index);  // asked again on the next pump
    return;
  }
  const std::string& data = answer->data;
  int fd = ::open(PartPath(d.sha256).c_str(), O_WRONLY | O_CLOEXEC);
  bool ok = fd >= 0 && ::pwrite(fd, data.data(), data.size(), static_cast<off_t>(offset)) == static_cast<ssize_t>(data.size());
  if (fd >= 0) ::close(fd);
  d.asked.erase(index);
  if (!ok) {
    spdlog::error("firmware: cannot write {} (disk full?); the chunk is asked again", PartPath(d.sha256));
    return;
  }
  d.have[index] = true;
  uint64_t bytes = 0;
  for (size_t i = 0; i < d.have.size(); ++i)
    if (d.have[i]) bytes += std::min(d.chunk, d.size - i * d.chunk);
  for (auto& [device, job] : jobs_)
    if (job.state == "downloading" && job.manifest.sha256 == d.sha256) job.bytes = bytes;
  if (bytes == d.size) Finished(d, now);
}

void FirmwareAgent::Finished(Download& d, int64_t now) {
  d.done = true;
  std::error_code ec;
  fs::remove(PartPath(d.sha256) + ".chunks", ec);
  for (auto& [device, job] : jobs_) {
    if (job.state != "downloading" || job.manifest.sha256 != d.sha256) continue;
    job.state = "verifying";
    Report(job, now);
    firmware::DeviceExpectation expect{job.manifest.target, std::nullopt};
    std::string path = fs::exists(ImagePath(d.sha256)) ? ImagePath(d.sha256) : PartPath(d.sha256);
    auto verified = firmware::VerifyFile(path, job.manifest_text, trusted_, expect);
    if (!verified.ok()) {
      auto refusal = firmware::RefusalOf(verified.status());
      Fail(job, verified.status().message(), refusal ? std::string(firmware::RefusalCode(*refusal)) : "", now);
      fs::remove(path, ec);  // a bad image is never kept
      continue;
    }
    if (path != ImagePath(d.sha256)) fs::rename(path, ImagePath(d.sha256), ec);
    Install(job, now);
  }
  downloads_.erase(d.sha256);
}

void FirmwareAgent::Install(Job& job, int64_t now) {
  job.state = "installing";
  job.bytes = 0;
  Report(job, now);
  if (job.device == cfg_.gateway.id) return InstallSelf(job, now);
  dev::FirmwareJob fj;
  fj.device = job.device;
  fj.image_path = ImagePath(job.manifest.sha256);
  fj.model = job.manifest.model;
  fj.version = job.manifest.version;
  fj.sha256 = job.manifest.sha256;
  fj.size = job.manifest.size;
  fj.timeout = std::chrono::seconds(cfg_.firmware.job_timeout_s);
  std::string device = job.device;
  int attempt = job.attempt;
  auto progress = [this, device, attempt](uint64_t done, uint64_t) {
    Post([this, device, attempt, done] {
      auto it = jobs_.find(device);
      if (it != jobs_.end() && it->second.attempt == attempt) it->second.bytes = done;
    });
  };
  auto finished = [this, device, attempt](dev::FirmwareResult r) {
    Post([this, device, attempt, r = std::move(r)] {
      auto it = jobs_.find(device);
      if (it == jobs_.end() || it->second.attempt != attempt) return;
      Job& j = it->second;
      int64_t t = NowMs();
      if (!r.ok) return Fail(j, r.error, "", t);
      j.version = r.version;
      j.state = "succeeded";
      spdlog::info("firmware: {} now runs {}", j.device, r.version);
      Report(j, t);
    });
  };
  bool found = with_adapter_(job.device, [&](dev::Adapter& a) { a.InstallFirmware(std::move(fj), progress, finished); });
  if (!found) Fail(job, "device " + job.device + " is no longer configured on this gateway", "", now);
}

std::string FirmwareAgent::RunningVersion() const {
  if (cfg_.firmware.version_file.empty()) return SANIGATE_VERSION;
  std::ifstream in(cfg_.firmware.version_file);
  std::string v((std::istreambuf_iterator<char>(in)), {});
  return Trimmed(v);
}

void FirmwareAgent::SaveSelf() {
  std::string path = (fs::path(cfg_.FirmwareDir()) / "self-update.json").string();
  if (!self_) {
    std::error_code ec;
    fs::remove(path, ec);
    return;
  }
  json m = {{"campaign", self_->campaign}, {"device", self_->device},     {"attempt", self_->attempt},
            {"expected", self_->expected}, {"previous", self_->previous}, {"state", self_->state},
            {"reason", self_->reason},     {"boots", self_->boots}};
  if (Status st = WriteFileAtomically(path, SafeDump(m)); !st.ok()) spdlog::error("firmware: self-update marker: {}", st.ToString());
}

void FirmwareAgent::InstallSelf(Job& job, int64_t now) {
  std::vector<std::pair<std::string, std::string>> env = {{"SANIGATE_IMAGE", ImagePath(job.manifest.sha256)},
                                                          {"SANIGATE_VERSION", job.manifest.version},
                                                          {"SANIGATE_SHA256", job.manifest.sha256}};
  std::string previous = RunningVersion();
  spdlog::info("firmware: installing {} on this gateway (running {})", job.manifest.version, previous);
  int rc = RunShell(cfg_.firmware.self_install_command, env, cfg_.firmware.job_timeout_s);
  if (rc != 0) return Fail(job, "install command exited with " + std::to_string(rc) + "; still running " + previous, "", now);
  self_ = SelfUpdate{job.campaign, job.device, job.manifest.version, previous, "restarting", "", job.attempt, 0, 0};
  SaveSelf();
  spdlog::warn("firmware: {} installed; restarting into it", job.manifest.version);
  restarting_ = true;
  if (restart_) restart_();
}

void FirmwareAgent::CheckSelf(int64_t now) {
  if (!self_ || restarting_) return;
  auto it = jobs_.find(self_->device);
  if (self_->state == "rolled_back") {
    if (it == jobs_.end() || it->second.reported_ms != 0) {  // the failure is on the broker: done
      self_.reset();
      SaveSelf();
    }
    return;
  }
  if (it == jobs_.end()) return;
  std::string running = RunningVersion();
  if (running != self_->expected) return RollBack("came up as " + running + ", not " + self_->expected, now);
  if (self_->boots > 3) return RollBack("restarted " + std::to_string(self_->boots) + " times without becoming healthy", now);
  if (healthy_ && healthy_()) {
    std::vector<std::pair<std::string, std::string>> env = {{"SANIGATE_VERSION", running}};
    int rc = cfg_.firmware.self_check_command.empty() ? 0 : RunShell(cfg_.firmware.self_check_command, env, 120);
    if (rc != 0) return RollBack("self_check_command failed (exit " + std::to_string(rc) + ")", now);
    Job& job = it->second;
    job.state = "succeeded";
    job.version = running;
    spdlog::info("firmware: this gateway now runs {} and is healthy", running);
    Report(job, now);
    self_.reset();
    SaveSelf();
    return;
  }
  if (now > self_->deadline_ms)
    RollBack("not healthy within " + std::to_string(cfg_.firmware.self_health_s) + " s (broker or adapters)", now);
}

void FirmwareAgent::RollBack(const std::string& why, int64_t now) {
  spdlog::error("firmware: self-update to {} failed: {}; rolling back to {}", self_->expected, why, self_->previous);
  std::vector<std::pair<std::string, std::string>> env = {{"SANIGATE_VERSION", self_->previous}};
  int rc = RunShell(cfg_.firmware.self_rollback_command, env, cfg_.firmware.job_timeout_s);
  self_->state = "rolled_back";
  self_->reason = why;
  if (rc != 0) {
    // Nothing to restart into: report from this process and leave it to the operator.
    auto it = jobs_.find(self_->device);
    if (it != jobs_.end()) Fail(it->second, why + "; the rollback command exited with " + std::to_string(rc), "", now);
    self_.reset();
    SaveSelf();
    return;
  }
  self_->boots = 0;
  SaveSelf();
  restarting_ = true;
  if (restart_) restart_();
}

void FirmwareAgent::Fail(Job& job, std::string error, std::string refusal, int64_t now) {
  spdlog::warn("firmware: job {} on {} failed: {}", job.campaign, job.device, error);
  job.state = "failed";
  job.error = std::move(error);
  job.refusal = std::move(refusal);
  Report(job, now);
}

void FirmwareAgent::Report(Job& job, int64_t now) {
  json j = {{"campaign", job.campaign},
            {"device", job.device},
            {"attempt", job.attempt},
            {"state", job.state},
            {"bytes", job.bytes},
            {"total", job.manifest.size},
            {"error", job.error},
            {"refusal", job.refusal},
            {"version", job.version},
            {"ts", now}};
  std::string topic = cfg_.gateway.topic_prefix + "/" + cfg_.gateway.site + "/gateway/" + cfg_.gateway.id + "/firmware/" + job.device;
  // SafeDump: an error text from an adapter or a version file may hold bad UTF-8, and a throw
  // here would end the worker thread.
  if (client_->Publish(topic, SafeDump(j), true).ok()) job.reported_ms = now;
  else job.reported_ms = 0;  // link down: the next pump tries again (states that end a job too)
}

void FirmwareAgent::SaveProgress(const Download& d) {
  std::string bits;
  for (bool b : d.have) bits += b ? '1' : '0';
  (void)WriteFileAtomically(PartPath(d.sha256) + ".chunks", bits);
}

}  // namespace sanigate
