#include "firmware/artifact.h"

#include "core/unique_fd.h"
#include "firmware/base64.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <vector>

#include "firmware/digest.h"
#include "firmware/version.h"

namespace sanigate::firmware {
namespace {

using nlohmann::json;

constexpr size_t kChunk = 64 * 1024;
constexpr size_t kSignatureBase64Length = 88;  // 64 bytes -> 22 groups of 4, "==" padded
constexpr std::string_view kAlg = "ed25519";

Status Refuse(Refusal refusal, const std::string& detail) {
  return Invalid(std::string(RefusalPhrase(refusal)) + ": " + detail);
}
Status Malformed(const std::string& detail) { return Refuse(Refusal::kMalformedManifest, detail); }

Status ErrnoStatus(const std::string& what, int err) {
  std::string m = what + ": " + std::strerror(err);
  if (err == ENOENT) return {Code::kNotFound, std::move(m)};
  if (err == EACCES || err == EPERM) return {Code::kFailedPrecondition, std::move(m)};
  return Unavailable(std::move(m));
}

bool IsLowerHex(std::string_view s, size_t length) {
  return s.size() == length && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

std::string Base64(std::span<const uint8_t> bytes) {
  return Base64Encode({reinterpret_cast<const char*>(bytes.data()), bytes.size()});
}

// Exactly the 88-character canonical encoding of 64 bytes; anything else (other padding, spare
// bits set, whitespace) is refused, so one signature has one spelling.
std::optional<Signature> DecodeSignature(std::string_view text) {
  if (text.size() != kSignatureBase64Length || !text.ends_with("==")) return std::nullopt;
  unsigned char buf[66];
  int n = EVP_DecodeBlock(buf, reinterpret_cast<const unsigned char*>(text.data()),
                          static_cast<int>(text.size()));
  if (n != 66) return std::nullopt;
  Signature sig{};
  std::copy(buf, buf + sig.size(), sig.begin());
  if (Base64(sig) != text) return std::nullopt;
  return sig;
}

std::string Quoted(std::string_view s) {
  return json(std::string(s.substr(0, 100))).dump(-1, ' ', false, json::error_handler_t::replace);
}

// A JSON value's type for messages.
std::string TypeOf(const json& v) {
  if (v.is_number_unsigned() || v.is_number_integer()) return "an integer";
  if (v.is_number_float()) return "a fractional number";
  if (v.is_string()) return "a string";
  if (v.is_boolean()) return "a boolean";
  if (v.is_null()) return "null";
  if (v.is_array()) return "an array";
  return "an object";
}

Status CheckModel(std::string_view model, const char* what) {
  bool control = std::any_of(model.begin(), model.end(), [](char c) {
    return static_cast<unsigned char>(c) < 0x20 || c == 0x7f;
  });
  if (model.empty() || model.size() > kMaxModelLength || control)
    return Malformed(std::string(what) + " must be 1 to " + std::to_string(kMaxModelLength) +
                     " bytes without control characters, got " + Quoted(model));
  return Status::Ok();
}

Status CheckNotes(std::string_view notes, const char* what) {
  if (notes.size() > kMaxNotesLength)
    return Malformed(std::string(what) + " is " + std::to_string(notes.size()) +
                     " bytes, at most " + std::to_string(kMaxNotesLength) + " are allowed");
  return Status::Ok();
}

// The fields of an authentic manifest object, checked strictly.
Result<Manifest> ParseFields(const json& obj) {
  static constexpr std::string_view kFields[] = {
      "created", "model", "notes", "sha256", "signature", "size", "target", "v", "version"};
  // The format version first: a later format may have other fields.
  auto v = obj.find("v");
  if (v == obj.end()) return Malformed("missing field \"v\"");
  if (!v->is_number_integer())
    return Malformed("field \"v\" must be an integer, got " + TypeOf(*v));
  if (v->get<int64_t>() != kManifestFormat)
    return Malformed("format v " + v->dump() + " is not supported (this verifier reads v " +
                     std::to_string(kManifestFormat) + ")");
  for (const auto& [key, value] : obj.items()) {
    if (std::find(std::begin(kFields), std::end(kFields), key) == std::end(kFields))
      return Malformed("unknown field " + Quoted(key));
  }
  auto field = [&](const char* name) -> Result<const json*> {
    auto it = obj.find(name);
    if (it == obj.end()) return Malformed(std::string("missing field \"") + name + "\"");
    return &*it;
  };
  auto string_field = [&](const char* name) -> Result<std::string> {
    auto f = field(name);
    if (!f.ok()) return f.status();
    if (!(*f)->is_string())
      return Malformed(std::string("field \"") + name + "\" must be a string, got " + TypeOf(**f));
    return (*f)->get<std::string>();
  };

  Manifest m;
  auto model = string_field("model");
  if (!model.ok()) return model.status();
  m.model = std::move(model).value();
  auto version = string_field("version");
  if (!version.ok()) return version.status();
  m.version = std::move(version).value();
  auto size = field("size");
  if (!size.ok()) return size.status();
  if (!(*size)->is_number_unsigned() || (*size)->get<uint64_t>() == 0)
    return Malformed("field \"size\" must be a positive integer, got " + (*size)->dump());
  m.size = (*size)->get<uint64_t>();
  auto sha = string_field("sha256");
  if (!sha.ok()) return sha.status();
  m.sha256 = std::move(sha).value();
  if (!IsLowerHex(m.sha256, 64))
    return Malformed("field \"sha256\" must be 64 lowercase hex digits, got " + Quoted(m.sha256));
  auto created = field("created");
  if (!created.ok()) return created.status();
  if (!(*created)->is_number_unsigned() ||
      (*created)->get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
    return Malformed(
        "field \"created\" must be milliseconds since the epoch (an integer >= 0), "
        "got " +
        (*created)->dump());
  m.created_ms = static_cast<int64_t>((*created)->get<uint64_t>());
  auto target = string_field("target");
  if (!target.ok()) return target.status();
  auto notes = string_field("notes");
  if (!notes.ok()) return notes.status();
  m.notes = std::move(notes).value();

  if (Status st = CheckModel(m.model, "field \"model\""); !st.ok()) return st;
  if (Status st = CheckNotes(m.notes, "field \"notes\""); !st.ok()) return st;
  if (Status st = CheckVersion(m.version); !st.ok()) return st;
  auto t = ParseTarget(*target);
  if (!t.ok()) return t.status();
  m.target = *t;
  return m;
}

Result<ImageDigest> DigestFd(int fd, const std::string& path) {
  Sha256 hash;
  std::vector<uint8_t> buf(kChunk);
  uint64_t total = 0;
  for (;;) {
    ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus("read " + path, errno);
    }
    if (n == 0) break;
    hash.Update(std::span<const uint8_t>(buf.data(), static_cast<size_t>(n)));
    total += static_cast<uint64_t>(n);
  }
  auto digest = hash.Final();
  if (!digest.ok()) return digest.status();
  return ImageDigest{total, Hex(*digest)};
}

using Fd = UniqueFd;

// An image file opened for reading, with its length.
Result<uint64_t> OpenImage(const std::string& path, Fd& fd) {
  if (fd.get() < 0) return ErrnoStatus("open image " + path, errno);
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return ErrnoStatus("stat " + path, errno);
  if (!S_ISREG(st.st_mode)) return Invalid("image " + path + " is not a regular file");
  return static_cast<uint64_t>(st.st_size);
}

std::string SizeMismatch(uint64_t actual, uint64_t declared) {
  return "image is " + std::to_string(actual) + " bytes, manifest says " + std::to_string(declared);
}

}  // namespace

std::string_view TargetName(Target target) {
  switch (target) {
    case Target::kGateway:
      return "gateway";
    case Target::kModbus:
      return "modbus";
    case Target::kJt808:
      return "jt808";
  }
  return "unknown";
}

Result<Target> ParseTarget(std::string_view name) {
  for (Target t : {Target::kGateway, Target::kModbus, Target::kJt808}) {
    if (name == TargetName(t)) return t;
  }
  std::string lower(name);
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (lower == "lorawan" || lower == "lora")
    return Refuse(Refusal::kUnsupportedTarget, "LoRaWAN FUOTA is not supported");
  return Refuse(Refusal::kUnsupportedTarget,
                Quoted(name) + " is not one of gateway, modbus, jt808");
}

std::string_view RefusalPhrase(Refusal refusal) {
  switch (refusal) {
    case Refusal::kMalformedManifest:
      return "malformed manifest";
    case Refusal::kUnknownKey:
      return "unknown signing key";
    case Refusal::kBadSignature:
      return "bad signature";
    case Refusal::kVersionRejected:
      return "version not accepted";
    case Refusal::kUnsupportedTarget:
      return "unsupported target";
    case Refusal::kWrongTarget:
      return "wrong target";
    case Refusal::kWrongModel:
      return "wrong model";
    case Refusal::kSizeMismatch:
      return "size mismatch";
    case Refusal::kDigestMismatch:
      return "sha256 mismatch";
  }
  return "refused";
}

std::string_view RefusalCode(Refusal refusal) {
  switch (refusal) {
    case Refusal::kMalformedManifest:
      return "malformed_manifest";
    case Refusal::kUnknownKey:
      return "unknown_key";
    case Refusal::kBadSignature:
      return "bad_signature";
    case Refusal::kVersionRejected:
      return "version_rejected";
    case Refusal::kUnsupportedTarget:
      return "unsupported_target";
    case Refusal::kWrongTarget:
      return "wrong_target";
    case Refusal::kWrongModel:
      return "wrong_model";
    case Refusal::kSizeMismatch:
      return "size_mismatch";
    case Refusal::kDigestMismatch:
      return "sha256_mismatch";
  }
  return "refused";
}

std::optional<Refusal> RefusalOf(const Status& status) {
  if (status.code() != Code::kInvalid) return std::nullopt;
  for (int i = 0; i <= static_cast<int>(Refusal::kDigestMismatch); ++i) {
    auto r = static_cast<Refusal>(i);
    std::string prefix = std::string(RefusalPhrase(r)) + ": ";
    if (status.message().starts_with(prefix)) return r;
  }
  return std::nullopt;
}

Result<ImageDigest> DigestBytes(std::span<const uint8_t> image) {
  auto digest = Sha256::Of(image);
  if (!digest.ok()) return digest.status();
  return ImageDigest{image.size(), Hex(*digest)};
}

Result<ImageDigest> DigestFile(const std::string& path) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY));
  auto length = OpenImage(path, fd);
  if (!length.ok()) return length.status();
  return DigestFd(fd.get(), path);
}

// Nesting of a JSON value, iteratively (a manifest from outside may be nested 30,000 deep).
size_t Depth(const json& root) {
  size_t deepest = 0;
  std::vector<std::pair<const json*, size_t>> todo{{&root, 1}};
  while (!todo.empty()) {
    auto [j, d] = todo.back();
    todo.pop_back();
    if (!j->is_structured()) continue;
    deepest = std::max(deepest, d);
    if (deepest > 64) return deepest;
    for (const auto& child : *j) todo.push_back({&child, d + 1});
  }
  return deepest;
}

Result<std::string> CanonicalBytes(const json& manifest) {
  if (!manifest.is_object())
    return Malformed("a manifest is a JSON object, got " + TypeOf(manifest));
  // Copying and dumping are recursive: refuse deep nesting before either runs.
  if (Depth(manifest) > 16) return Malformed("a manifest nests objects or arrays more than 16 deep");
  json unsigned_part = manifest;
  unsigned_part.erase("signature");
  try {
    return unsigned_part.dump(-1, ' ', false, json::error_handler_t::strict);
  } catch (const json::exception& e) {
    return Malformed(std::string("a string is not valid UTF-8 (") + e.what() + ")");
  }
}

Result<std::string> SignDigest(const ImageDigest& image, const ArtifactInfo& info,
                               const PrivateKey& key) {
  if (Status st = CheckModel(info.model, "model"); !st.ok()) return st;
  if (Status st = CheckVersion(info.version); !st.ok()) return st;
  if (Status st = CheckNotes(info.notes, "notes"); !st.ok()) return st;
  if (info.created_ms < 0)
    return Malformed("created must be >= 0 ms since the epoch, got " +
                     std::to_string(info.created_ms));
  if (image.size == 0) return Malformed("the image is empty");
  if (!IsLowerHex(image.sha256, 64))
    return Malformed("sha256 must be 64 lowercase hex digits, got " + Quoted(image.sha256));

  json manifest = {{"v", kManifestFormat},
                   {"model", info.model},
                   {"version", info.version},
                   {"size", image.size},
                   {"sha256", image.sha256},
                   {"created", static_cast<uint64_t>(info.created_ms)},
                   {"target", std::string(TargetName(info.target))},
                   {"notes", info.notes}};
  auto bytes = CanonicalBytes(manifest);
  if (!bytes.ok()) return bytes.status();
  auto sig = key.Sign(
      std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(bytes->data()), bytes->size()));
  if (!sig.ok()) return sig.status();
  manifest["signature"] = {{"alg", kAlg}, {"key_id", key.key_id()}, {"sig", Base64(*sig)}};
  return manifest.dump(-1, ' ', false, json::error_handler_t::strict);
}

Result<std::string> SignImage(std::span<const uint8_t> image, const ArtifactInfo& info,
                              const PrivateKey& key) {
  auto digest = DigestBytes(image);
  if (!digest.ok()) return digest.status();
  return SignDigest(*digest, info, key);
}

Result<std::string> SignFile(const std::string& path, const ArtifactInfo& info,
                             const PrivateKey& key) {
  auto digest = DigestFile(path);
  if (!digest.ok()) return digest.status();
  return SignDigest(*digest, info, key);
}

Result<Manifest> VerifyManifest(std::string_view signed_manifest,
                                std::span<const PublicKey> trusted,
                                const DeviceExpectation& device) {
  if (signed_manifest.size() > kMaxManifestBytes)
    return Malformed("it is " + std::to_string(signed_manifest.size()) + " bytes, at most " +
                     std::to_string(kMaxManifestBytes) + " are allowed");
  json obj;
  try {
    obj = json::parse(signed_manifest);
  } catch (const json::exception& e) {
    return Malformed(std::string("not JSON (") + e.what() + ")");
  }
  if (!obj.is_object()) return Malformed("a manifest is a JSON object, got " + TypeOf(obj));

  // The signature member: just enough structure to check authenticity.
  auto sig_it = obj.find("signature");
  if (sig_it == obj.end()) return Malformed("missing field \"signature\"");
  const json& sig = *sig_it;
  if (!sig.is_object())
    return Malformed("field \"signature\" must be an object, got " + TypeOf(sig));
  for (const auto& [k, value] : sig.items()) {
    if (k != "alg" && k != "key_id" && k != "sig")
      return Malformed("unknown field " + Quoted("signature." + k));
  }
  for (const char* k : {"alg", "key_id", "sig"}) {
    auto it = sig.find(k);
    if (it == sig.end()) return Malformed(std::string("missing field \"signature.") + k + "\"");
    if (!it->is_string())
      return Malformed(std::string("field \"signature.") + k + "\" must be a string, got " +
                       TypeOf(*it));
  }
  const std::string& alg = sig.at("alg").get_ref<const std::string&>();
  const std::string& key_id = sig.at("key_id").get_ref<const std::string&>();
  const std::string& sig_text = sig.at("sig").get_ref<const std::string&>();
  if (alg != kAlg)
    return Malformed("signature algorithm " + Quoted(alg) + " is not supported (only ed25519)");
  if (!IsLowerHex(key_id, kKeyIdLength))
    return Malformed("field \"signature.key_id\" must be 16 lowercase hex digits, got " +
                     Quoted(key_id));
  auto signature = DecodeSignature(sig_text);
  if (!signature)
    return Malformed("field \"signature.sig\" must be the 88-character base64 of 64 bytes");

  bool known = false;
  for (const PublicKey& k : trusted) known = known || k.key_id() == key_id;
  if (!known) {
    if (trusted.empty())
      return Refuse(Refusal::kUnknownKey, key_id + " (no trusted keys are configured)");
    return Refuse(Refusal::kUnknownKey, key_id + " is not one of the " +
                                            std::to_string(trusted.size()) + " trusted keys");
  }
  auto bytes = CanonicalBytes(obj);
  if (!bytes.ok()) return bytes.status();
  std::span<const uint8_t> message(reinterpret_cast<const uint8_t*>(bytes->data()), bytes->size());
  // Ids are 64 bits of a hash; should two trusted keys ever share one, either may have signed.
  bool valid = false;
  for (const PublicKey& k : trusted) {
    if (k.key_id() == key_id && k.Verify(message, *signature)) valid = true;
  }
  if (!valid)
    return Refuse(Refusal::kBadSignature, "the manifest does not match its signature by key " +
                                              key_id +
                                              " (changed after signing, or a corrupt signature)");

  auto manifest = ParseFields(obj);
  if (!manifest.ok()) return manifest.status();
  manifest->key_id = key_id;
  if (manifest->target != device.target)
    return Refuse(Refusal::kWrongTarget,
                  "image is for " + std::string(TargetName(manifest->target)) + ", device is " +
                      std::string(TargetName(device.target)));
  if (device.model && manifest->model != *device.model)
    return Refuse(Refusal::kWrongModel,
                  "built for " + manifest->model + ", device is " + *device.model);
  return manifest;
}

Status CheckImage(const Manifest& manifest, const ImageDigest& image) {
  if (image.size != manifest.size)
    return Refuse(Refusal::kSizeMismatch, SizeMismatch(image.size, manifest.size));
  if (image.sha256 != manifest.sha256)
    return Refuse(Refusal::kDigestMismatch, "image hashes to " + image.sha256 + ", manifest says " +
                                                manifest.sha256 + " (tampered or corrupt)");
  return Status::Ok();
}

Result<Manifest> VerifyImage(std::span<const uint8_t> image, std::string_view signed_manifest,
                             std::span<const PublicKey> trusted, const DeviceExpectation& device) {
  auto manifest = VerifyManifest(signed_manifest, trusted, device);
  if (!manifest.ok()) return manifest;
  // The size is known without hashing; refuse a truncated image before reading it all.
  if (image.size() != manifest->size)
    return Refuse(Refusal::kSizeMismatch, SizeMismatch(image.size(), manifest->size));
  auto digest = DigestBytes(image);
  if (!digest.ok()) return digest.status();
  if (Status st = CheckImage(*manifest, *digest); !st.ok()) return st;
  return manifest;
}

Result<Manifest> VerifyFile(const std::string& path, std::string_view signed_manifest,
                            std::span<const PublicKey> trusted, const DeviceExpectation& device) {
  auto manifest = VerifyManifest(signed_manifest, trusted, device);
  if (!manifest.ok()) return manifest;
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY));
  auto length = OpenImage(path, fd);
  if (!length.ok()) return length.status();
  if (*length != manifest->size)
    return Refuse(Refusal::kSizeMismatch, SizeMismatch(*length, manifest->size));
  // Hashed as read, so a file that changes length meanwhile is still caught by the size check.
  auto digest = DigestFd(fd.get(), path);
  if (!digest.ok()) return digest.status();
  if (Status st = CheckImage(*manifest, *digest); !st.ok()) return st;
  return manifest;
}

}  // namespace sanigate::firmware
