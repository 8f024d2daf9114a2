// Signed firmware manifests (gateway/firmware/artifact.h), as a gateway receives them in an
// install job: VerifyManifest on the text with one trusted key, for two device expectations.
// Since a fuzzer cannot forge Ed25519, the text is also re-signed: the JSON object (if it is one)
// gets a valid signature by the trusted key over its canonical bytes and is verified again, which
// takes it past the signature to the field checks. A manifest that verifies must be one the
// signer produces too: SignDigest of its values gives the same canonical bytes. Also the
// firmware base64 decoder (image chunks) against its encoder.
#include <cstdint>
#include <nlohmann/json.hpp>

#include "firmware/artifact.h"
#include "firmware/base64.h"
#include "firmware/keys.h"
#include "fuzz_common.h"

using namespace sanigate;
using namespace sanigate::firmware;
using nlohmann::json;

namespace {

// A key for this fuzz target only (openssl genpkey -algorithm ed25519).
constexpr const char kKeyPem[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MC4CAQAwBQYDK2VwBCIEIGroz96H79jp0B8tPdI8nI0oJvrv1I5HB3BdgwkYZR7J\n"
    "-----END PRIVATE KEY-----\n";

const PrivateKey& Key() {
  static const PrivateKey key = [] {
    auto k = PrivateKey::FromPem(kKeyPem);
    FUZZ_CHECK(k.ok(), "the fuzz key does not load");
    return std::move(k).value();
  }();
  return key;
}

const DeviceExpectation kDevices[] = {{Target::kGateway, std::nullopt}, {Target::kModbus, std::string("GR-200")}};

void Refusal_(const Status& st) {
  if (st.ok()) return;
  FUZZ_CHECK(st.code() == Code::kInvalid, "a refusal that is not Invalid: " + st.ToString());
  auto r = RefusalOf(st);
  FUZZ_CHECK(r.has_value(), "a refusal without a known phrase: " + st.message());
  FUZZ_CHECK(st.message().rfind(std::string(RefusalPhrase(*r)) + ": ", 0) == 0, "phrase");
  (void)RefusalCode(*r);
}

void Resigned(std::string_view text) {
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return;
  auto canonical = CanonicalBytes(j);
  if (!canonical.ok()) return;
  const std::string& c = canonical.value();
  auto sig = Key().Sign(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(c.data()), c.size()));
  FUZZ_CHECK(sig.ok(), "signing failed");
  j["signature"] = {{"alg", "ed25519"},
                    {"key_id", Key().key_id()},
                    {"sig", Base64Encode(std::string_view(reinterpret_cast<const char*>(sig.value().data()), sig.value().size()))}};
  std::string signed_text = j.dump();
  if (signed_text.size() > kMaxManifestBytes) return;
  const PublicKey trusted[] = {Key().public_key()};
  for (const DeviceExpectation& device : kDevices) {
    auto m = VerifyManifest(signed_text, trusted, device);
    if (!m.ok()) {
      Refusal_(m.status());
      auto r = RefusalOf(m.status());
      FUZZ_CHECK(r != Refusal::kBadSignature && r != Refusal::kUnknownKey,
                 "a correctly signed manifest was refused: " + m.status().message());
      continue;
    }
    const Manifest& man = m.value();
    FUZZ_CHECK(man.key_id == Key().key_id(), "key id");
    FUZZ_CHECK(man.target == device.target, "target");
    // What verifies is what the signer would have produced.
    ArtifactInfo info{man.model, man.version, man.target, man.notes, man.created_ms};
    auto again = SignDigest(ImageDigest{man.size, man.sha256}, info, Key());
    FUZZ_CHECK(again.ok(), "SignDigest refused a manifest VerifyManifest accepted: " + again.status().message());
    auto c2 = CanonicalBytes(json::parse(again.value()));
    FUZZ_CHECK(c2.ok() && c2.value() == c, "SignDigest gave other canonical bytes:\n" + c + "\n" + c2.value());
    FUZZ_CHECK(CheckImage(man, ImageDigest{man.size, man.sha256}).ok(), "CheckImage of the manifest's own digest");
    Refusal_(CheckImage(man, ImageDigest{man.size + 1, man.sha256}));
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text = fuzz::Text(data, size);
  const PublicKey trusted[] = {Key().public_key()};
  for (const DeviceExpectation& device : kDevices) {
    auto m = VerifyManifest(text, trusted, device);
    if (!m.ok()) Refusal_(m.status());
  }
  Resigned(text);
  if (auto b = firmware::Base64Decode(text)) {
    auto again = firmware::Base64Decode(firmware::Base64Encode(*b));
    FUZZ_CHECK(again && *again == *b, "base64 round trip");
  }
  return 0;
}
