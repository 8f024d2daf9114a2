// firmware keygen | sign | add | list (issue 7). keygen and sign work offline with the signing
// library (gateway/firmware): operator keys are made and kept on an operator's machine, never on
// a box. add signs when it is given a key, then uploads the image to sanifleet with the admin verb
// firmware_put in base64 chunks of 192 KiB (fleet/README.md, "Firmware rollouts"); list shows
// sanifleet's image store.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <thread>

#include "core/atomic_file.h"
#include "ctl/format.h"
#include "ctl/rollout_format.h"
#include "ctl/verbs.h"
#include "firmware/artifact.h"
#include "firmware/keys.h"
#include "mqtt/topics.h"

namespace sanigate::ctl {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;

constexpr int kChunkRetries = 3;

void PrintJson(const json& doc) { std::cout << doc.dump() << "\n"; }

// The signing inputs → ArtifactInfo; prints the problem (exit 2) when one is missing or bad.
std::optional<firmware::ArtifactInfo> InfoOf(const FirmwareSignArgs& a) {
  for (auto [flag, value] : {std::pair{"--model", &a.model}, {"--version", &a.version}, {"--target", &a.target}})
    if (value->empty()) {
      std::cerr << "sanictl: " << flag << " is required to sign an image\n";
      return std::nullopt;
    }
  auto target = firmware::ParseTarget(a.target);
  if (!target.ok()) {
    // "unsupported target: LoRaWAN FUOTA is not supported" for lorawan.
    std::cerr << "sanictl: --target " << a.target << ": " << target.status().message()
              << " (targets: gateway, modbus, jt808)\n";
    return std::nullopt;
  }
  firmware::ArtifactInfo info;
  info.model = a.model;
  info.version = a.version;
  info.target = *target;
  info.notes = a.notes;
  info.created_ms = NowMs();
  return info;
}

// Reads the operator key; prints why not (exit 2).
std::optional<firmware::PrivateKey> KeyOf(const std::string& path) {
  auto key = firmware::ReadPrivateKey(path);
  if (!key.ok()) {
    std::cerr << "sanictl: --key " << path << ": " << key.status().message() << "\n";
    return std::nullopt;
  }
  return std::move(key.value());
}

// Signs the image (already hashed); the manifest text, or nullopt after printing why (exit 2).
std::optional<std::string> Sign(const FirmwareSignArgs& a, const firmware::ImageDigest& digest, std::string* key_id) {
  auto info = InfoOf(a);
  if (!info) return std::nullopt;
  auto key = KeyOf(a.key);
  if (!key) return std::nullopt;
  auto text = firmware::SignDigest(digest, *info, *key);
  if (!text.ok()) {
    std::cerr << "sanictl: cannot sign " << a.file << ": " << text.status().message() << "\n";
    return std::nullopt;
  }
  if (key_id) *key_id = key->key_id();
  return text.value();
}

std::optional<firmware::ImageDigest> DigestOf(const std::string& file) {
  auto digest = firmware::DigestFile(file);
  if (!digest.ok()) {
    std::cerr << "sanictl: cannot read the image " << file << ": " << digest.status().message() << "\n";
    return std::nullopt;
  }
  if (digest->size == 0) {
    std::cerr << "sanictl: the image " << file << " is empty\n";
    return std::nullopt;
  }
  return digest.value();
}

bool StderrIsTerminal() { return ::isatty(STDERR_FILENO) == 1; }

// The stored artifact with this sha256 in a firmware_list result (null when there is none).
json StoredEntry(const json& list, const std::string& sha) {
  if (list.is_object() && list.contains("artifacts") && list["artifacts"].is_array())
    for (const auto& a : list["artifacts"])
      if (a.is_object() && a.value("sha256", "") == sha) return a;
  return nullptr;
}

std::string KeyIdOf(const json& manifest) {
  return manifest.contains("signature") && manifest["signature"].is_object() ? manifest["signature"].value("key_id", "") : "";
}

}  // namespace

int RunFirmwareKeygen(const std::string& prefix, bool as_json) {
  if (prefix.empty()) {
    std::cerr << "sanictl: --out PREFIX is required (writes PREFIX.key and PREFIX.pub)\n";
    return kExitUsage;
  }
  std::string key_path = prefix + ".key", pub_path = prefix + ".pub";
  for (const auto& p : {key_path, pub_path}) {
    std::error_code ec;
    if (fs::exists(p, ec)) {
      std::cerr << "sanictl: " << p << " exists: keys are never overwritten (choose another --out)\n";
      return kExitFailed;
    }
  }
  for (const char* daemon_config : {"/etc/sanigate/sanigate.toml"})
    if (std::error_code ec; fs::exists(daemon_config, ec))
      std::cerr << "sanictl: warning: this machine has " << daemon_config
                << ": operator keys belong on an operator's machine, not on a gateway\n";
  auto key = firmware::PrivateKey::Generate();
  if (!key.ok()) {
    std::cerr << "sanictl: cannot generate a key: " << key.status().message() << "\n";
    return kExitFailed;
  }
  if (Status st = firmware::WritePrivateKey(*key, key_path); !st.ok()) {
    std::cerr << "sanictl: " << st.message() << "\n";
    return kExitFailed;
  }
  if (Status st = firmware::WritePublicKey(key->public_key(), pub_path); !st.ok()) {
    std::error_code ec;
    fs::remove(key_path, ec);  // no half pair left behind
    std::cerr << "sanictl: " << st.message() << "\n";
    return kExitFailed;
  }
  if (as_json) {
    PrintJson({{"key_id", key->key_id()}, {"private_key", key_path}, {"public_key", pub_path}});
    return kExitOk;
  }
  std::cout << RenderKeyValues({{"key id", key->key_id()},
                                {"private key", key_path + " (mode 0600: keep it on this machine, never on a box)"},
                                {"public key", pub_path + " (list it in [firmware] trusted_keys of sanifleet and sanigate)"}});
  return kExitOk;
}

int RunFirmwareSign(const FirmwareSignArgs& a, bool as_json) {
  if (a.key.empty()) {
    std::cerr << "sanictl: --key KEY is required\n";
    return kExitUsage;
  }
  if (!InfoOf(a)) return kExitUsage;  // flags first: no hashing for a typo
  auto digest = DigestOf(a.file);
  if (!digest) return kExitUsage;
  std::string key_id;
  auto text = Sign(a, *digest, &key_id);
  if (!text) return kExitUsage;
  std::string out = a.out.empty() ? a.file + ".manifest.json" : a.out;
  if (Status st = WriteFileAtomically(out, *text + "\n", 0644); !st.ok()) {
    std::cerr << "sanictl: cannot write the manifest: " << st.message() << "\n";
    return kExitFailed;
  }
  if (as_json) {
    PrintJson({{"manifest", out}, {"sha256", digest->sha256}, {"size", digest->size}, {"key_id", key_id},
               {"model", a.model}, {"version", a.version}, {"target", a.target}});
    return kExitOk;
  }
  std::cout << RenderKeyValues({{"manifest", out},
                                {"sha256", digest->sha256},
                                {"size", HumanBytes(digest->size) + " (" + std::to_string(digest->size) + " bytes)"},
                                {"key id", key_id}});
  return kExitOk;
}

int RunFirmwareAdd(const Context& ctx, const FirmwareAddArgs& a) {
  if (!RequireSite(ctx)) return kExitUsage;
  const FirmwareSignArgs& s = a.sign;
  if (!a.manifest.empty() && !s.key.empty()) {
    std::cerr << "sanictl: give --manifest or --key, not both\n";
    return kExitUsage;
  }
  if (a.manifest.empty() && s.key.empty()) {
    std::cerr << "sanictl: give --manifest MANIFEST (made by sanictl firmware sign) or --key KEY --model M --version V --target T\n";
    return kExitUsage;
  }
  if (!a.manifest.empty() && (!s.model.empty() || !s.version.empty() || !s.target.empty() || !s.notes.empty())) {
    std::cerr << "sanictl: --model, --version, --target and --notes come from the manifest; leave them out with --manifest\n";
    return kExitUsage;
  }
  if (!s.key.empty() && !InfoOf(s)) return kExitUsage;

  auto digest = DigestOf(s.file);
  if (!digest) return kExitUsage;
  json manifest;
  if (!a.manifest.empty()) {
    std::ifstream in(a.manifest, std::ios::binary);
    std::string text(std::istreambuf_iterator<char>(in), {});
    if (!in.good() && !in.eof()) text.clear();
    if (text.empty() || text.size() > firmware::kMaxManifestBytes) {
      std::cerr << "sanictl: cannot read the manifest " << a.manifest << (text.empty() ? "" : ": larger than 64 KiB") << "\n";
      return kExitUsage;
    }
    manifest = json::parse(text, nullptr, false);
    if (!manifest.is_object() || !manifest.contains("sha256") || !manifest["sha256"].is_string() || !manifest.contains("size") ||
        !manifest["size"].is_number_unsigned()) {
      std::cerr << "sanictl: " << a.manifest << " is not a signed manifest (sanictl firmware sign makes one)\n";
      return kExitUsage;
    }
    // The same checks sanifleet makes at the end of the upload, before sending a byte.
    if (manifest["size"].get<uint64_t>() != digest->size) {
      std::cerr << "sanictl: image refused: " << firmware::RefusalPhrase(firmware::Refusal::kSizeMismatch) << ": "
                << s.file << " has " << digest->size << " bytes, its manifest says " << manifest["size"].get<uint64_t>() << "\n";
      return kExitFailed;
    }
    if (manifest["sha256"].get<std::string>() != digest->sha256) {
      std::cerr << "sanictl: image refused: " << firmware::RefusalPhrase(firmware::Refusal::kDigestMismatch) << ": "
                << s.file << " is " << digest->sha256 << ", its manifest says " << manifest["sha256"].get<std::string>() << "\n";
      return kExitFailed;
    }
  } else {
    auto text = Sign(s, *digest, nullptr);
    if (!text) return kExitUsage;
    manifest = json::parse(*text);
  }
  const std::string& sha = digest->sha256;

  int connect_exit = kExitOk;
  auto client = ConnectOrExplain(ctx, connect_exit);
  if (!client) return connect_exit;
  // Already there with the same label and signer: nothing to send over a slow link.
  json list;
  if (int rc = FleetCall(ctx, *client, "firmware_list", json::object(), list); rc != kExitOk) return rc;
  if (json stored = StoredEntry(list, sha); !stored.is_null() && stored.value("model", "") == manifest.value("model", "") &&
                                            stored.value("version", "") == manifest.value("version", "") &&
                                            stored.value("target", "") == manifest.value("target", "") &&
                                            stored.value("key_id", "") == KeyIdOf(manifest)) {
    if (ctx.json) {
      stored["already_stored"] = true;
      PrintJson(stored);
    } else {
      std::cout << "already stored:\n" << ArtifactText(stored);
    }
    return kExitOk;
  }

  // Chunks wait longer than a query: 256 KiB of base64 over a slow link, and the last one makes
  // sanifleet hash and check the whole image.
  auto chunk_timeout = ctx.timeout_given ? ctx.timeout : std::max(ctx.timeout, std::chrono::milliseconds(10000));
  std::string topic = mqtt::topics::FleetAdmin(ctx.admin.prefix, ctx.admin.site, "firmware_put");
  bool progress = StderrIsTerminal() && !ctx.json;
  auto started = Clock::now();
  auto elapsed_ms = [&] { return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started).count(); };
  auto show = [&](uint64_t sent) {
    if (progress) std::cerr << "\r" << UploadProgress(sent, digest->size, elapsed_ms()) << "\x1b[K" << std::flush;
  };
  auto note = [&](const std::string& text) {
    if (progress) std::cerr << "\r\x1b[K";
    std::cerr << "sanictl: " << text << "\n";
  };

  size_t chunk_bytes = kUploadChunkBytes;
  uint64_t offset = 0;
  bool restarted = false;
  json stored;
  show(0);
  while (stored.is_null()) {
    ChunkSpan span = PlanChunks(digest->size, chunk_bytes, offset).front();
    auto bytes = ReadFileRange(s.file, span.offset, span.length);
    if (!bytes.ok()) {
      note(bytes.status().message());
      return kExitFailed;
    }
    json args = FirmwarePutArgs(sha, span, *bytes, manifest);
    auto timeout = span.last ? chunk_timeout * 3 : chunk_timeout;
    enum class Next { kChunk, kSame, kRestart } next = Next::kChunk;
    for (int tries = 0;; ++tries) {
      auto answer = client->Request(topic, args, timeout, /*to_fleet=*/true);
      if (!answer.ok() && answer.status().code() == Code::kFailedPrecondition) {  // the broker refused the user
        if (progress) std::cerr << "\r\x1b[K";
        return Explain(answer.status());
      }
      if (answer.ok() && answer->value("ok", false)) {
        if (span.last) stored = answer->contains("result") ? (*answer)["result"] : json::object();
        break;
      }
      std::string why;
      bool unreachable = !answer.ok() && (answer.status().code() == Code::kDeadline || answer.status().code() == Code::kUnavailable);
      if (!answer.ok()) {
        why = answer.status().code() == Code::kDeadline
                  ? "sanifleet did not answer on " + topic + " within " + std::to_string(timeout.count()) + " ms"
                  : answer.status().message();
      } else {
        std::string code = answer->value("code", ""), error = answer->value("error", answer->dump());
        if (auto limit = code == "invalid" ? ChunkLimitFromError(error) : std::nullopt; limit && *limit < chunk_bytes) {
          chunk_bytes = *limit;  // a sanifleet with a smaller [firmware] max_chunk_kib
          next = Next::kSame;
          break;
        }
        if (code == "invalid" && error.rfind("start the upload of", 0) == 0) {
          // An earlier try may have been stored after all (its answer was lost), or sanifleet
          // restarted and forgot the upload: look, then start over once.
          json again;
          if (tries > 0 && FleetCall(ctx, *client, "firmware_list", json::object(), again) == kExitOk &&
              !(stored = StoredEntry(again, sha)).is_null())
            break;
          if (!restarted) {
            restarted = true;
            note("sanifleet lost the upload (" + error + "); starting again from the beginning");
            next = Next::kRestart;
            break;
          }
        }
        if (code != "internal") {  // a refusal: unknown signing key, tampered image, no trusted keys…
          note(error);
          return code == "not_found" ? kExitNotFound : kExitFailed;
        }
        why = error;
      }
      if (tries >= kChunkRetries) {
        note("the chunk at offset " + std::to_string(span.offset) + " failed " + std::to_string(tries + 1) + " times: " + why);
        return unreachable ? kExitUnreachable : kExitFailed;
      }
      note("chunk at offset " + std::to_string(span.offset) + ": " + why + "; retrying (" + std::to_string(tries + 1) + "/" +
           std::to_string(kChunkRetries) + ")");
      std::this_thread::sleep_for(500ms * (tries + 1));
    }
    if (next == Next::kRestart) offset = 0;
    else if (next == Next::kChunk) offset = span.offset + span.length;
    if (next != Next::kSame) show(offset);
  }
  if (progress) std::cerr << "\n";
  client->Close();
  if (ctx.json) {
    PrintJson(stored);
    return kExitOk;
  }
  std::cout << "stored:\n" << ArtifactText(stored);
  return kExitOk;
}

int RunFirmwareList(const Context& ctx) {
  if (!RequireSite(ctx)) return kExitUsage;
  int connect_exit = kExitOk;
  auto client = ConnectOrExplain(ctx, connect_exit);
  if (!client) return connect_exit;
  json result;
  if (int rc = FleetCall(ctx, *client, "firmware_list", json::object(), result); rc != kExitOk) return rc;
  if (ctx.json) {
    PrintJson(result);
    return kExitOk;
  }
  Table t = FirmwareTable(result);
  if (t.rows.empty()) {
    std::cout << "no images stored (sanictl firmware add FILE --key KEY --model M --version V --target T)\n";
    return kExitOk;
  }
  std::cout << RenderTable(t, ctx.color);
  return kExitOk;
}

}  // namespace sanigate::ctl
