// Signed firmware artifacts: the manifest that describes one image, signing it with an operator's
// Ed25519 key (sanictl, off the box) and verifying image + manifest against the trusted keys
// (gateway, before anything is installed). Pure functions over plain values: no I/O except reading
// the image file named by the caller; thread-safe.
//
// A signed manifest is one JSON object:
//   {"created":1763712000000,"model":"GR-200","notes":"fixes door sensor","sha256":"<64 hex>",
//    "signature":{"alg":"ed25519","key_id":"<16 hex>","sig":"<base64>"},"size":483328,
//    "target":"modbus","v":1,"version":"1.4.2"}
// Fields (all required, no others): v = 1; model = 1..64 bytes of UTF-8 without control
// characters; version = [0-9A-Za-z._+-]{1,64} (version.h); size = image length in bytes, >= 1;
// sha256 = lowercase hex SHA-256 of the image; created = signing time, ms since the Unix epoch,
// >= 0; target = "gateway" | "modbus" | "jt808"; notes = UTF-8, at most 4096 bytes, may be empty.
// signature: alg = "ed25519"; key_id = the signer's key id (keys.h); sig = standard base64 (with
// padding, 88 characters) of the 64-byte Ed25519 signature.
//
// The signed bytes ("canonical form") are the manifest object without its "signature" member,
// serialized as nlohmann::json::dump() does with no indentation: no whitespace at all, members
// sorted by key in byte order, strings as raw UTF-8 with only '"', '\\' and control characters
// escaped (\b \f \n \r \t, others as \u00XX in lowercase hex; '/' and non-ASCII are not escaped),
// integers in plain decimal. A verifier parses the manifest, drops "signature" and re-serializes,
// so whitespace or member order in the transported text do not matter, and every value the
// gateway acts on is covered by the signature.
//
// Verification checks, in this order, and stops at the first failure: the text is a JSON object
// with a well-formed signature member; the key id is trusted; the signature is valid; the fields
// are well-formed; the target is supported and is the device's; the model (when given) is the
// device's; the image size; the image SHA-256. Content is only interpreted once it is known to be
// authentic. Every refusal is Code::kInvalid and its message starts with a fixed phrase
// (RefusalPhrase) followed by ": " and the details.
#pragma once

#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "core/status.h"
#include "firmware/keys.h"

namespace sanigate::firmware {

inline constexpr int kManifestFormat = 1;
inline constexpr size_t kMaxManifestBytes = 64 * 1024;
inline constexpr size_t kMaxModelLength = 64;
inline constexpr size_t kMaxNotesLength = 4096;

// What an image is installed on. LoRaWAN FUOTA is deliberately absent.
enum class Target { kGateway, kModbus, kJt808 };
std::string_view TargetName(Target target);
// "gateway", "modbus", "jt808"; anything else is Invalid with an "unsupported target" message
// ("lorawan" -> "unsupported target: LoRaWAN FUOTA is not supported").
Result<Target> ParseTarget(std::string_view name);

enum class Refusal {
  kMalformedManifest,  // "malformed manifest"
  kUnknownKey,         // "unknown signing key"
  kBadSignature,       // "bad signature"
  kVersionRejected,    // "version not accepted"
  kUnsupportedTarget,  // "unsupported target"
  kWrongTarget,        // "wrong target"
  kWrongModel,         // "wrong model"
  kSizeMismatch,       // "size mismatch"
  kDigestMismatch,     // "sha256 mismatch"
};
std::string_view RefusalPhrase(Refusal refusal);
// A stable snake_case code for state and metrics: "malformed_manifest", "unknown_key", ...
std::string_view RefusalCode(Refusal refusal);
// The refusal a Verify*/Sign* status reports, if it is one (I/O and internal errors are not).
std::optional<Refusal> RefusalOf(const Status& status);

// What the operator states about an image when signing it.
struct ArtifactInfo {
  std::string model;
  std::string version;
  Target target = Target::kGateway;
  std::string notes;
  int64_t created_ms = 0;
};

// An image's length and SHA-256 (lowercase hex).
struct ImageDigest {
  uint64_t size = 0;
  std::string sha256;
};

// A verified manifest (or one just signed).
struct Manifest {
  std::string model;
  std::string version;
  uint64_t size = 0;
  std::string sha256;
  int64_t created_ms = 0;
  Target target = Target::kGateway;
  std::string notes;
  std::string key_id;  // who signed it
};

// What the verifying device is.
struct DeviceExpectation {
  Target target = Target::kGateway;
  std::optional<std::string> model;  // unset: any model is accepted
};

Result<ImageDigest> DigestBytes(std::span<const uint8_t> image);
// Streams the file in 64 KiB chunks.
Result<ImageDigest> DigestFile(const std::string& path);

// The signed bytes of a manifest object (see above); a "signature" member is ignored.
// Invalid when a string in it is not valid UTF-8 or it is not an object.
Result<std::string> CanonicalBytes(const nlohmann::json& manifest);

// The signed manifest as compact JSON text. Invalid (with the same phrases as verification) when
// the info would not pass verification: version syntax, model, notes length, created < 0.
Result<std::string> SignDigest(const ImageDigest& image, const ArtifactInfo& info,
                               const PrivateKey& key);
Result<std::string> SignImage(std::span<const uint8_t> image, const ArtifactInfo& info,
                              const PrivateKey& key);
Result<std::string> SignFile(const std::string& path, const ArtifactInfo& info,
                             const PrivateKey& key);

// Everything except the image: structure, trust, signature, fields, target and model. Lets a
// gateway refuse a manifest before it pulls the image.
Result<Manifest> VerifyManifest(std::string_view signed_manifest,
                                std::span<const PublicKey> trusted,
                                const DeviceExpectation& device);
// Size, then SHA-256, of an image against an already verified manifest.
Status CheckImage(const Manifest& manifest, const ImageDigest& image);

Result<Manifest> VerifyImage(std::span<const uint8_t> image, std::string_view signed_manifest,
                             std::span<const PublicKey> trusted, const DeviceExpectation& device);
// Streams the file; a file whose length differs from the manifest is refused before hashing.
Result<Manifest> VerifyFile(const std::string& path, std::string_view signed_manifest,
                            std::span<const PublicKey> trusted, const DeviceExpectation& device);

}  // namespace sanigate::firmware
