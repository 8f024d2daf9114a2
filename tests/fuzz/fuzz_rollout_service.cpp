// sanifleet's rollout service (fleet/app/rollout_service.h) with everything that reaches it from
// outside: chunk requests of the gateways (ServeChunk), their retained job statuses
// (OnJobStatus), their answers to install requests (OnInstallAnswer), and the admin verbs
// firmware_* / rollout_* with their arguments parsed as FleetDaemon::HandleAdmin does
// (ParseUntrustedJson, an object of arguments), each followed by a campaign tick.
//
// The service works on a data directory: one is set up once (in /dev/shm when there is one) with a
// trusted key, a stored 3000-byte image signed by it, a running campaign "fw-1" whose first devices
// were sent their install jobs (attempt 1) and a draft "fw-2"; before every input it is put back to
// that state and the service created from it anew, so inputs do not depend on each other.
//
// Input: byte 0 picks the entry point, byte 1 a device or verb, byte 2 how far the clock moves;
// the rest is the payload (for OnInstallAnswer: the correlation data, a newline, the payload).
// Checked: every answer and everything published is JSON that dumps without replacement
// characters; admin errors carry a known code and a message of at most 512 bytes; a chunk served
// is the image's bytes at the asked offset, at most max_chunk_bytes long; a version is reported
// as installed only for a "succeeded" status; whatever an input did, the saved state loads again.
#include <signal.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "app/rollout_service.h"
#include "core/untrusted.h"
#include "firmware/artifact.h"
#include "firmware/base64.h"
#include "firmware/keys.h"
#include "fuzz_common.h"

using nlohmann::json;
using namespace sanigate;
using namespace sanigate::fleet;
namespace fs = std::filesystem;

namespace {

constexpr const char kKeyPem[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MC4CAQAwBQYDK2VwBCIEIGroz96H79jp0B8tPdI8nI0oJvrv1I5HB3BdgwkYZR7J\n"
    "-----END PRIVATE KEY-----\n";
constexpr int64_t kT0 = 1'767'225'600'000;
constexpr int64_t kMaxChunk = 1024;

const char* const kVerbs[] = {"firmware_put",  "firmware_list", "rollout_create", "rollout_start", "rollout_pause",
                              "rollout_resume", "rollout_abort", "rollout_status", "rollout_list",  "rollout_nope"};
const std::pair<const char*, const char*> kDevices[] = {
    {"houpu", "room-1"}, {"houpu", "room-2"}, {"houpu", "room-3"}, {"xinyuan", "room-1"}};

struct Fixture {
  fs::path dir;
  RolloutSettings settings;
  Registry registry;
  std::string image;
  std::map<fs::path, std::string> baseline;  // rollouts/*.json as set up
};

std::string ReadAll(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void WriteAll(const fs::path& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << bytes;
  FUZZ_CHECK(static_cast<bool>(out), "cannot write " + p.string());
}

// A service on the fixture's directory; what it publishes goes to `sent`.
std::unique_ptr<RolloutService> Service(const Fixture& f, std::vector<std::string>* sent = nullptr) {
  auto s = RolloutService::Create(
      f.settings, [sent](const std::string&, const std::string& p, bool) { if (sent) sent->push_back(p); },
      [sent](const std::string&, const std::string& p, const std::string&) { if (sent) sent->push_back(p); });
  FUZZ_CHECK(s.ok(), "the saved state does not load: " + s.status().message());
  return std::move(s).value();
}

Fixture& Setup() {
  static Fixture* fixture = [] {
    spdlog::set_level(spdlog::level::off);
    auto* f = new Fixture;
    std::error_code ec;
    fs::path base = fs::is_directory("/dev/shm", ec) && ::access("/dev/shm", W_OK) == 0 ? fs::path("/dev/shm") : fs::temp_directory_path();
    // libFuzzer ends a timed run without atexit handlers: directories of processes that are gone
    // are removed here (the name carries the pid).
    const std::string kPrefix = "sanigate-fuzz-rollout-";
    for (const auto& entry : fs::directory_iterator(base, ec)) {
      std::string name = entry.path().filename().string();
      if (name.rfind(kPrefix, 0) != 0) continue;
      long pid = std::strtol(name.c_str() + kPrefix.size(), nullptr, 10);
      if (pid > 0 && ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH) fs::remove_all(entry.path(), ec);
    }
    std::string tmpl = (base / (kPrefix + std::to_string(::getpid()) + "-XXXXXX")).string();
    FUZZ_CHECK(::mkdtemp(tmpl.data()) != nullptr, "mkdtemp in " + base.string());
    f->dir = tmpl;
    std::atexit([] { std::error_code e; fs::remove_all(Setup().dir, e); });

    auto key = firmware::PrivateKey::FromPem(kKeyPem);
    FUZZ_CHECK(key.ok(), "the fuzz key does not load");
    std::string pub = (f->dir / "trusted.pub").string();
    FUZZ_CHECK(firmware::WritePublicKey(key.value().public_key(), pub).ok(), "cannot write the public key");
    for (int i = 0; i < 3000; ++i) f->image += static_cast<char>(i * 7 % 251);
    auto span = std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(f->image.data()), f->image.size());
    auto manifest = firmware::SignImage(span, {"GR-200", "2.1.0", firmware::Target::kModbus, "fuzz", kT0}, key.value());
    FUZZ_CHECK(manifest.ok(), "cannot sign the image: " + manifest.status().message());
    std::string sha = firmware::DigestBytes(span).value().sha256;
    fs::create_directories(f->dir / "firmware");
    WriteAll(f->dir / "firmware" / (sha + ".img"), f->image);
    WriteAll(f->dir / "firmware" / (sha + ".json"), manifest.value());

    f->settings = {f->dir.string(), "sanigate/v1", "houpu", {pub}, kMaxChunk};
    for (int i = 1; i <= 4; ++i) {
      DeviceEntry& e = f->registry.Device("houpu", "room-" + std::to_string(i), kT0);
      e.kind = "room";
      e.protocol = "modbus-rtu";
      e.gateway = i % 2 ? "gw-a" : "gw-b";
      e.profile = "garbage-room-v1";
      e.model = "GR-200";
      e.firmware = "1.0.0";
      e.online = true;
    }
    f->registry.Gateway("houpu", "gw-a", kT0).online = true;

    auto s = Service(*f);
    for (const char* id : {"fw-1", "fw-2"}) {
      AdminAnswer a = s->Admin("rollout_create", {{"id", id}, {"artifact_sha256", sha}, {"waves_pct", {50, 100}}}, f->registry, kT0);
      FUZZ_CHECK(a.code.empty(), "rollout_create in the set-up: " + a.error);
    }
    FUZZ_CHECK(s->Admin("rollout_start", {{"id", "fw-1"}}, f->registry, kT0).code.empty(), "rollout_start in the set-up");
    s->Tick(kT0 + 1000);  // install jobs for the first group: attempt 1
    for (const auto& entry : fs::directory_iterator(f->dir / "rollouts")) f->baseline[entry.path()] = ReadAll(entry.path());
    FUZZ_CHECK(f->baseline.size() == 2, "the set-up saved " + std::to_string(f->baseline.size()) + " campaigns");
    return f;
  }();
  return *fixture;
}

// The data directory as set up: campaigns as saved then (rewritten when the last input changed
// them), no uploads in progress.
void Reset(const Fixture& f, bool campaigns_changed) {
  std::error_code ec;
  if (campaigns_changed) {
    for (const auto& entry : fs::directory_iterator(f.dir / "rollouts", ec))
      if (!f.baseline.count(entry.path())) fs::remove(entry.path(), ec);
    for (const auto& [path, bytes] : f.baseline) WriteAll(path, bytes);
  }
  for (const auto& entry : fs::directory_iterator(f.dir / "firmware", ec))
    if (entry.path().extension() == ".part") fs::remove(entry.path(), ec);
}

// Whether the saved campaigns differ from the set-up (loading them again is most of the cost).
bool Changed(const Fixture& f) {
  size_t n = 0;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(f.dir / "rollouts", ec)) {
    auto it = f.baseline.find(entry.path());
    if (it == f.baseline.end() || ReadAll(entry.path()) != it->second) return true;
    ++n;
  }
  return n != f.baseline.size();
}

void CheckJson(const std::string& text, const char* what) {
  json j = json::parse(text, nullptr, false);
  FUZZ_CHECK(!j.is_discarded(), std::string(what) + " is not JSON: " + QuotePrefix(text, 200));
  FUZZ_CHECK(SafeDump(j) == j.dump(), std::string(what) + " needed replacement characters");
}

void CheckChunk(const Fixture& f, const std::string& payload, const std::string& reply) {
  CheckJson(reply, "a chunk reply");
  json r = json::parse(reply);
  FUZZ_CHECK(r.is_object() && r["ok"].is_boolean(), "a chunk reply without ok: " + reply);
  if (!r["ok"].get<bool>()) {
    FUZZ_CHECK(r["code"].is_string() && r["error"].is_string() && r["error"].get<std::string>().size() <= 512,
               "a chunk refusal: " + QuotePrefix(reply, 200));
    return;
  }
  json req = json::parse(payload);
  const json& res = r["result"];
  uint64_t offset = res["offset"].get<uint64_t>();
  auto data = firmware::Base64Decode(res["data"].get<std::string>());
  FUZZ_CHECK(data.has_value(), "chunk data that is not base64");
  FUZZ_CHECK(offset == FieldUint64(req, "offset").value_or(0), "the chunk of another offset");
  FUZZ_CHECK(data->size() <= static_cast<size_t>(kMaxChunk), "a chunk over max_chunk_bytes");
  FUZZ_CHECK(offset <= f.image.size() && f.image.compare(offset, data->size(), *data) == 0, "chunk bytes that are not the image's");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static bool changed = true;
  Fixture& f = Setup();
  Reset(f, changed);
  std::vector<std::string> sent;
  auto service = Service(f, &sent);
  fuzz::Knobs k(data, size);
  uint8_t op = k.U8(), pick = k.U8();
  int64_t now = kT0 + 2000 + int64_t{k.U8()} * 60'000;
  std::string payload(k.RestText());

  switch (op % 4) {
    case 0:
      CheckChunk(f, payload, service->ServeChunk(payload));
      break;
    case 1: {
      const auto& [site, device] = kDevices[pick % std::size(kDevices)];
      auto installed = service->OnJobStatus(site, device, payload, now);
      if (installed) {
        json j = json::parse(payload, nullptr, false);
        FUZZ_CHECK(FieldString(j, "state") == "succeeded" && FieldString(j, "version") == *installed && !installed->empty(),
                   "a version reported as installed from " + QuotePrefix(payload, 200));
      }
      break;
    }
    case 2: {
      size_t nl = payload.find('\n');
      std::string correlation = payload.substr(0, nl);
      service->OnInstallAnswer(correlation, nl == std::string::npos ? "" : payload.substr(nl + 1), now);
      break;
    }
    default: {
      std::string verb = kVerbs[pick % std::size(kVerbs)];
      auto args = payload.empty() ? Result<json>(json::object()) : ParseUntrustedJson(payload, {.max_bytes = 64 * 1024, .max_depth = 16});
      if (!args.ok() || !args->is_object()) break;  // refused by the daemon before the service
      if (!service->HandlesVerb(verb)) break;
      AdminAnswer a = service->Admin(verb, *args, f.registry, now);
      if (a.code.empty()) {
        json reply = {{"ok", true}, {"result", a.result}};
        FUZZ_CHECK(SafeDump(reply) == reply.dump(), "an admin answer that needed replacement characters");
      } else {
        FUZZ_CHECK(a.code == "invalid" || a.code == "not_found" || a.code == "internal", "admin code " + a.code);
        FUZZ_CHECK(!a.error.empty() && a.error.size() <= 512,
                   "admin error of " + std::to_string(a.error.size()) + " bytes: " + QuotePrefix(a.error, 200));
        json reply = {{"ok", false}, {"error", a.error}, {"code", a.code}};
        FUZZ_CHECK(SafeDump(reply) == reply.dump(), "an admin error that needed replacement characters");
      }
      break;
    }
  }
  // A tick after it (retries, timeouts, install jobs); what the service published is JSON, and
  // the state it saved loads again (a sanifleet restart must not refuse it).
  service->Tick(now + 1000);
  for (const std::string& p : sent) CheckJson(p, "a published payload");
  changed = Changed(f);
  if (changed) (void)Service(f);
  return 0;
}
