#include "app/rollout_service.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "core/atomic_file.h"
#include "core/untrusted.h"
#include "firmware/artifact.h"
#include "firmware/base64.h"
#include "firmware/version.h"

namespace sanigate::fleet {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

bool IsSha256(const std::string& s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

std::string ReadAll(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

std::string ErrorJson(const std::string& code, const std::string& error) {
  return SafeDump(json{{"ok", false}, {"code", code}, {"error", error}});
}

// What the gateways send (chunk requests, job statuses, install answers) is parsed within these
// limits: the largest legitimate one, a job status, is a few hundred bytes.
constexpr JsonLimits kGatewayJsonLimits{.max_bytes = 64 * 1024, .max_depth = 8};

// A reason a gateway gave, as it goes into a campaign's state and status: short, or quoted and cut.
std::string ReasonText(std::string why) { return why.size() <= 200 ? why : QuotePrefix(why, 160); }

// A name from a request (rollout id, image) as it goes back in an error: as is when short and
// printable, else quoted and cut; replies quote at most a short prefix of what was received.
std::string Named(const std::string& text) {
  bool plain = text.size() <= 64 && std::all_of(text.begin(), text.end(), [](char c) { return c >= 0x20 && c < 0x7f; });
  return plain ? text : QuotePrefix(text, 64);
}

// An error that may quote a request at length (a spec with many unknown keys, a long version
// range): cut at a UTF-8 boundary.
std::string Brief(const std::string& message) {
  if (message.size() <= 400) return message;
  size_t n = 400;
  while (n > 0 && (static_cast<unsigned char>(message[n]) & 0xC0) == 0x80) --n;
  return message.substr(0, n) + "... (" + std::to_string(message.size()) + " bytes)";
}

}  // namespace

RolloutService::RolloutService(RolloutSettings settings, SendFn send, RequestFn request)
    : cfg_(std::move(settings)), send_(std::move(send)), request_(std::move(request)) {}

Result<std::unique_ptr<RolloutService>> RolloutService::Create(RolloutSettings settings, SendFn send, RequestFn request) {
  std::unique_ptr<RolloutService> s(new RolloutService(std::move(settings), std::move(send), std::move(request)));
  std::error_code ec;
  for (const char* sub : {"firmware", "rollouts"}) {
    fs::create_directories(fs::path(s->cfg_.data_dir) / sub, ec);
    if (ec) return Unavailable("cannot create " + (fs::path(s->cfg_.data_dir) / sub).string() + ": " + ec.message());
  }
  for (const auto& file : s->cfg_.trusted_key_files) {
    auto key = firmware::ReadPublicKey(file);
    if (!key.ok()) return Invalid("firmware trusted key " + file + ": " + key.status().message());
    s->trusted_.push_back(*key);
  }
  for (const auto& entry : fs::directory_iterator(fs::path(s->cfg_.data_dir) / "firmware", ec)) {
    if (entry.path().extension() != ".json") continue;
    std::string sha = entry.path().stem().string();
    if (IsSha256(sha) && fs::exists(s->ImagePath(sha))) s->manifests_[sha] = ReadAll(entry.path());
  }
  if (Status st = s->LoadCampaigns(); !st.ok()) return st;
  spdlog::info("rollouts: {} images and {} campaigns loaded", s->manifests_.size(), s->campaigns_.size());
  return s;
}

std::string RolloutService::ImagePath(const std::string& sha256) const {
  return (fs::path(cfg_.data_dir) / "firmware" / (sha256 + ".img")).string();
}

Status RolloutService::LoadCampaigns() {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(fs::path(cfg_.data_dir) / "rollouts", ec)) {
    if (entry.path().extension() != ".json") continue;
    json doc = json::parse(ReadAll(entry.path()), nullptr, false);
    auto c = rollout::Campaign::FromJson(doc);
    if (!c.ok()) return DataLoss("campaign file " + entry.path().string() + ": " + c.status().message());
    std::string id = c->spec().id;
    saved_[id] = doc.dump();
    campaigns_.emplace(id, std::move(*c));
  }
  return Status::Ok();
}

Status RolloutService::SaveCampaign(const rollout::Campaign& c) {
  std::string doc = c.ToJson().dump();
  auto& last = saved_[c.spec().id];
  if (last == doc) return Status::Ok();
  // Written to a temporary file, synced and renamed: a crash leaves the old or the new state.
  Status st = WriteFileAtomically((fs::path(cfg_.data_dir) / "rollouts" / (c.spec().id + ".json")).string(), doc);
  if (st.ok()) last = std::move(doc);
  return st;
}

void RolloutService::Publish(const rollout::Campaign& c, int64_t now_ms) {
  send_(cfg_.topic_prefix + "/" + cfg_.site + "/fleet/rollouts/" + c.spec().id, c.StatusJson(now_ms).dump(), true);
  published_rev_[c.spec().id] = c.revision();
}

void RolloutService::RepublishAll(int64_t now_ms) {
  for (const auto& [id, c] : campaigns_) Publish(c, now_ms);
}

const std::vector<std::string>& RolloutService::Verbs() {
  static const std::vector<std::string> verbs = {"firmware_put",  "firmware_list",  "rollout_create", "rollout_start", "rollout_pause",
                                                 "rollout_resume", "rollout_abort", "rollout_status", "rollout_list"};
  return verbs;
}

bool RolloutService::HandlesVerb(const std::string& verb) const {
  return verb.rfind("firmware_", 0) == 0 || verb.rfind("rollout_", 0) == 0;
}

AdminAnswer RolloutService::Admin(const std::string& verb, const json& args, const Registry& registry, int64_t now_ms) {
  auto str = [&](const char* key) { return args.contains(key) && args[key].is_string() ? args[key].get<std::string>() : std::string(); };
  if (verb == "firmware_put") return PutChunk(args);
  if (verb == "firmware_list") {
    json list = json::array();
    for (const auto& [sha, text] : manifests_) {
      json m = json::parse(text, nullptr, false);
      if (!m.is_object()) continue;
      list.push_back({{"sha256", sha},
                      {"size", m.value("size", 0)},
                      {"model", m.value("model", "")},
                      {"version", m.value("version", "")},
                      {"target", m.value("target", "")},
                      {"created", m.value("created", int64_t{0})},
                      {"key_id", m.contains("signature") ? m["signature"].value("key_id", "") : ""},
                      {"notes", m.value("notes", "")}});
    }
    std::sort(list.begin(), list.end(), [](const json& a, const json& b) { return a["created"] > b["created"]; });
    return AdminAnswer::Ok({{"artifacts", list}});
  }
  if (verb == "rollout_create") return Create(args, registry, now_ms);
  if (verb == "rollout_list") {
    json list = json::array();
    for (const auto& [id, c] : campaigns_) list.push_back(c.StatusJson(now_ms));
    return AdminAnswer::Ok({{"rollouts", list}});
  }
  std::string id = str("id");
  auto it = campaigns_.find(id);
  if (id.empty()) return AdminAnswer::Fail("invalid", "argument \"id\" is required");
  if (it == campaigns_.end()) return AdminAnswer::Fail("not_found", "no rollout " + Named(id));
  rollout::Campaign& c = it->second;
  Status st;
  if (verb == "rollout_start") st = c.Start(now_ms);
  else if (verb == "rollout_pause") st = c.Pause(str("reason").empty() ? "paused by the operator" : str("reason"), now_ms);
  else if (verb == "rollout_resume") st = c.Resume(now_ms);
  else if (verb == "rollout_abort") st = c.Abort(str("reason").empty() ? "aborted by the operator" : str("reason"), now_ms);
  else if (verb != "rollout_status") return AdminAnswer::Fail("invalid", "unknown verb \"" + verb + "\"");
  if (!st.ok()) return AdminAnswer::Fail("invalid", st.message());
  if (verb != "rollout_status") {
    spdlog::info("rollout {}: {} ({})", id, rollout::CampaignStateName(c.state()), verb);
    if (Status s = SaveCampaign(c); !s.ok()) spdlog::error("rollout {}: cannot save its state: {}", id, s.ToString());
    Publish(c, now_ms);
  }
  json r = c.StatusJson(now_ms);
  if (FieldBool(args, "devices").value_or(false)) {
    json devices = json::array();
    for (const auto& [key, d] : c.devices())
      devices.push_back({{"device", key}, {"gateway", d.gateway}, {"group", d.group}, {"state", rollout::DeviceStateName(d.state)},
                         {"attempts", d.attempts}, {"reason", d.reason}});
    r["devices"] = devices;
  }
  return AdminAnswer::Ok(r);
}

AdminAnswer RolloutService::PutChunk(const json& args) {
  std::string sha = FieldString(args, "sha256").value_or("");
  if (!IsSha256(sha)) return AdminAnswer::Fail("invalid", "sha256 must be 64 lower-case hex digits");
  if (trusted_.empty())
    return AdminAnswer::Fail("invalid", "this sanifleet has no [firmware] trusted_keys, so it cannot check an image's signature");
  if (!args.contains("offset") || !args["offset"].is_number_unsigned()) return AdminAnswer::Fail("invalid", "offset is required");
  auto data = firmware::Base64Decode(FieldString(args, "data").value_or(""));
  if (!data) return AdminAnswer::Fail("invalid", "data must be base64");
  if (static_cast<int64_t>(data->size()) > cfg_.max_chunk_bytes)
    return AdminAnswer::Fail("invalid", "a chunk may hold at most " + std::to_string(cfg_.max_chunk_bytes) + " bytes");
  uint64_t offset = args["offset"].get<uint64_t>();
  fs::path part = fs::path(cfg_.data_dir) / "firmware" / (sha + ".part");
  if (offset == 0) {
    if (!args.contains("manifest") || !args["manifest"].is_object())
      return AdminAnswer::Fail("invalid", "the first chunk carries the signed manifest");
    std::string text = args["manifest"].dump();
    auto target = firmware::ParseTarget(FieldString(args["manifest"], "target").value_or(""));
    if (!target.ok()) return AdminAnswer::Fail("invalid", Brief(target.status().message()));
    auto m = firmware::VerifyManifest(text, trusted_, {*target, std::nullopt});
    if (!m.ok()) return AdminAnswer::Fail("invalid", Brief(m.status().message()));
    if (m->sha256 != sha) return AdminAnswer::Fail("invalid", "the manifest is for image " + m->sha256 + ", not " + sha);
    uploads_[sha] = text;
    std::ofstream(part, std::ios::binary | std::ios::trunc).close();
  }
  auto up = uploads_.find(sha);
  if (up == uploads_.end()) return AdminAnswer::Fail("invalid", "start the upload of " + sha + " at offset 0");
  std::error_code ec;
  uint64_t have = fs::file_size(part, ec);
  if (ec || offset > have) return AdminAnswer::Fail("invalid", "offset " + std::to_string(offset) + " is beyond the " + std::to_string(have) + " bytes received");
  fs::resize_file(part, offset, ec);  // a resent chunk replaces what followed it
  {
    std::ofstream out(part, std::ios::binary | std::ios::app);
    out.write(data->data(), static_cast<std::streamsize>(data->size()));
    if (!out) return AdminAnswer::Fail("internal", "cannot write " + part.string());
  }
  uint64_t received = offset + data->size();
  if (!FieldBool(args, "last").value_or(false)) return AdminAnswer::Ok({{"sha256", sha}, {"received", received}});
  auto target = firmware::ParseTarget(json::parse(up->second).value("target", ""));
  auto m = firmware::VerifyFile(part.string(), up->second, trusted_, {*target, std::nullopt});
  if (!m.ok()) {
    fs::remove(part, ec);
    uploads_.erase(up);
    return AdminAnswer::Fail("invalid", "image refused: " + Brief(m.status().message()));
  }
  fs::rename(part, ImagePath(sha), ec);
  if (ec) return AdminAnswer::Fail("internal", "cannot store the image: " + ec.message());
  if (Status st = WriteFileAtomically((fs::path(cfg_.data_dir) / "firmware" / (sha + ".json")).string(), up->second); !st.ok())
    return AdminAnswer::Fail("internal", st.message());
  manifests_[sha] = up->second;
  uploads_.erase(up);
  spdlog::info("firmware: stored {} {} for {} ({} bytes, key {})", m->model, m->version, firmware::TargetName(m->target), m->size, m->key_id);
  return AdminAnswer::Ok({{"sha256", sha},
                          {"size", m->size},
                          {"model", m->model},
                          {"version", m->version},
                          {"target", std::string(firmware::TargetName(m->target))},
                          {"key_id", m->key_id}});
}

AdminAnswer RolloutService::Create(const json& args, const Registry& registry, int64_t now_ms) {
  json spec_json = args;
  std::string sha = FieldString(args, "artifact_sha256").value_or("");
  auto m = manifests_.find(sha);
  if (m == manifests_.end())
    return AdminAnswer::Fail("not_found", "no stored image " + Named(sha) + " (sanictl firmware add)");
  json manifest = json::parse(m->second);
  if (!spec_json.contains("model")) spec_json["model"] = manifest["model"];
  if (!spec_json.contains("version")) spec_json["version"] = manifest["version"];
  if (!spec_json.contains("target_type")) spec_json["target_type"] = manifest["target"];
  auto spec = rollout::ParseSpec(spec_json);
  if (!spec.ok()) return AdminAnswer::Fail("invalid", Brief(spec.status().message()));
  if (spec->version != manifest["version"] || spec->target_type != manifest["target"])
    return AdminAnswer::Fail("invalid", "the campaign's version and target type must be the image's");
  if (campaigns_.count(spec->id)) return AdminAnswer::Fail("invalid", "a rollout " + spec->id + " exists already");
  std::optional<firmware::VersionRange> range;
  if (!spec->filter.version_range.empty()) {
    auto r = firmware::VersionRange::Parse(spec->filter.version_range);
    if (!r.ok()) return AdminAnswer::Fail("invalid", Brief(r.status().message()));
    range = *r;
  }
  std::vector<rollout::Candidate> candidates;
  if (spec->target_type == "gateway") {
    for (const auto& [key, g] : registry.gateways())
      candidates.push_back({key, g.site, g.gateway, "gateway", "", spec->model, g.gateway, "", g.version, {}, g.online});
  } else {
    for (const auto& [key, e] : registry.devices()) {
      bool protocol_fits = spec->target_type == "jt808" ? e.protocol == "jt808" : e.protocol.rfind("modbus", 0) == 0;
      if (!protocol_fits) continue;
      candidates.push_back({key, e.site, e.device, e.kind, e.profile, e.model, e.gateway, "", e.firmware, {}, e.online.value_or(true)});
    }
  }
  auto plan = rollout::MakePlan(*spec, candidates, [&](const std::string& v) { return !range || range->Contains(v); });
  rollout::Campaign c(*spec, plan, now_ms);
  for (const auto& cand : candidates) {
    c.SetPlacement(cand.key, cand.gateway, cand.bus);
    if (!cand.online) c.OnOnline(cand.key, false, now_ms);
  }
  if (Status st = SaveCampaign(c); !st.ok()) return AdminAnswer::Fail("internal", "cannot save the rollout: " + st.message());
  Publish(c, now_ms);
  json groups = json::array();
  for (const auto& g : plan.groups) groups.push_back(g.size());
  spdlog::info("rollout {}: created for {} {} on {} devices", spec->id, spec->model, spec->version, plan.total());
  campaigns_.emplace(spec->id, std::move(c));
  return AdminAnswer::Ok({{"id", spec->id}, {"state", "draft"}, {"total", plan.total()}, {"groups", groups}});
}

std::string RolloutService::ServeChunk(const std::string& payload) const {
  auto parsed = ParseUntrustedJson(payload, kGatewayJsonLimits);
  if (!parsed.ok()) return ErrorJson("invalid", parsed.status().message());
  const json& req = *parsed;
  if (!req.is_object()) return ErrorJson("invalid", "the request must be a JSON object");
  std::string sha = FieldString(req, "sha256").value_or("");
  if (!manifests_.count(sha)) return ErrorJson("not_found", "no stored image " + Named(sha));
  // Typed reads: a float offset beyond 2^64 would be an undefined conversion, a string a throw.
  auto offset_field = req.contains("offset") ? FieldUint64(req, "offset") : std::optional<uint64_t>(0);
  auto length_field = req.contains("length") ? FieldInt64(req, "length") : std::optional<int64_t>(cfg_.max_chunk_bytes);
  if (!offset_field || !length_field) return ErrorJson("invalid", "offset and length must be whole numbers");
  uint64_t offset = *offset_field;
  int64_t length = std::min<int64_t>(*length_field, cfg_.max_chunk_bytes);
  std::ifstream in(ImagePath(sha), std::ios::binary);
  in.seekg(0, std::ios::end);
  auto size = static_cast<uint64_t>(in.tellg());
  if (offset > size || length <= 0) return ErrorJson("invalid", "offset " + std::to_string(offset) + " is beyond the image");
  std::string data(static_cast<size_t>(std::min<uint64_t>(static_cast<uint64_t>(length), size - offset)), '\0');
  in.seekg(static_cast<std::streamoff>(offset));
  in.read(data.data(), static_cast<std::streamsize>(data.size()));
  if (!in) return ErrorJson("internal", "cannot read the image");
  return json{{"ok", true}, {"result", {{"offset", offset}, {"size", size}, {"data", firmware::Base64Encode(data)}}}}.dump();
}

std::optional<std::string> RolloutService::OnJobStatus(const std::string& site, const std::string& device, const std::string& payload,
                                                       int64_t now_ms) {
  auto parsed = ParseUntrustedJson(payload, kGatewayJsonLimits);
  if (!parsed.ok() || !parsed->is_object()) return std::nullopt;
  const json& j = *parsed;
  // Fields of another type read as missing (value() would throw on them).
  std::string state = FieldString(j, "state").value_or(""), version = FieldString(j, "version").value_or("");
  std::optional<std::string> installed;
  if (state == "succeeded" && !version.empty()) installed = version;
  auto it = campaigns_.find(FieldString(j, "campaign").value_or(""));
  if (it == campaigns_.end()) return installed;
  rollout::Campaign& c = it->second;
  std::string key = RegistryKey(site, device);
  auto dev = c.devices().find(key);
  if (dev == c.devices().end() || dev->second.attempts != FieldInt64(j, "attempt").value_or(0)) return installed;  // an older attempt's report
  if (state == "succeeded") {
    if (version == c.spec().version) c.OnVersion(key, version, now_ms, FieldInt64(j, "ts").value_or(0));
    else c.OnFailed(key, "device reports " + version + " after the install, not " + c.spec().version, now_ms);
  } else if (state == "failed") {
    c.OnFailed(key, ReasonText(FieldString(j, "error").value_or("failed")), now_ms);
  }
  return installed;
}

void RolloutService::OnInstallAnswer(const std::string& correlation, const std::string& payload, int64_t now_ms) {
  auto a = correlation.find('\x1f'), b = correlation.rfind('\x1f');
  if (a == std::string::npos || a == b) return;
  auto it = campaigns_.find(correlation.substr(0, a));
  if (it == campaigns_.end()) return;
  std::string key = correlation.substr(a + 1, b - a - 1);
  auto parsed = ParseUntrustedJson(payload, kGatewayJsonLimits);
  json answer = parsed.ok() ? std::move(*parsed) : json();
  if (FieldBool(answer, "ok") == true) return;  // accepted: its job status follows
  auto dev = it->second.devices().find(key);
  if (dev == it->second.devices().end() || std::to_string(dev->second.attempts) != correlation.substr(b + 1)) return;
  std::string why = answer.is_object() ? ReasonText(FieldString(answer, "error").value_or("refused")) : "unreadable answer";
  it->second.OnFailed(key, "gateway refused the job: " + why, now_ms);
}

void RolloutService::OnDevice(const std::string& key, const DeviceEntry& e, bool healthy, int64_t observed_ms, int64_t now_ms) {
  for (auto& [id, c] : campaigns_) {
    if (c.state() == rollout::CampaignState::kCompleted || c.state() == rollout::CampaignState::kAborted) continue;
    if (!c.devices().count(key)) continue;
    if (e.online) c.OnOnline(key, *e.online, now_ms);
    if (!e.firmware.empty()) c.OnVersion(key, e.firmware, now_ms);
    c.OnHealth(key, healthy, observed_ms > 0 ? observed_ms : now_ms, now_ms);
  }
}

void RolloutService::Tick(int64_t now_ms) {
  for (auto& [id, c] : campaigns_) {
    auto starts = c.Tick(now_ms);
    for (const auto& s : starts) {
      const auto& d = c.devices().at(s.key);
      std::string site = s.key.substr(0, s.key.find('/')), device = s.key.substr(s.key.find('/') + 1);
      json job = {{"campaign", id}, {"device", device}, {"attempt", s.attempt}, {"manifest", json::parse(manifests_[c.spec().artifact_sha256], nullptr, false)},
                  {"chunks", cfg_.topic_prefix + "/" + cfg_.site + "/fleet/firmware/get"}};
      spdlog::info("rollout {}: installing {} {} on {} (attempt {}) through {}", id, c.spec().model, c.spec().version, s.key, s.attempt, d.gateway);
      request_(cfg_.topic_prefix + "/" + site + "/gateway/" + d.gateway + "/admin/install", job.dump(),
               id + '\x1f' + s.key + '\x1f' + std::to_string(s.attempt));
    }
    // Changes since the last publish, made here or by a report or observation in between (a
    // device's failure and the pause it causes can fall in the same millisecond).
    auto published = published_rev_.find(id);
    if (published == published_rev_.end() || published->second != c.revision() || !starts.empty()) {
      if (Status st = SaveCampaign(c); !st.ok()) spdlog::error("rollout {}: cannot save its state: {}", id, st.ToString());
      Publish(c, now_ms);
    }
  }
}

}  // namespace sanigate::fleet
