// What the gateway's firmware agent takes from outside (gateway/app/firmware_agent.h): the install
// job of the admin verb `install` (parsed as Gateway::OnAdmin does, then DecodeFirmwareJob and the
// manifest check of FirmwareAgent::Accept with one trusted key) with the admin answer built from
// it, and sanifleet's answers to chunk requests (DecodeChunkAnswer). First byte: bit 0 picks the
// decoder, bits 1-2 the chunk size. Checked: refusals are kInvalid with a short valid-UTF-8
// reason and the answers dump without replacement; a job that decodes has its fields non-empty
// and an attempt >= 1; a chunk that decodes is at most the chunk size and its answer written back
// decodes to the same offset and bytes.
#include <cstdint>
#include <nlohmann/json.hpp>

#include "app/firmware_agent.h"
#include "core/untrusted.h"
#include "firmware/artifact.h"
#include "firmware/base64.h"
#include "firmware/keys.h"
#include "fuzz_common.h"

using nlohmann::json;
using namespace sanigate;

namespace {

// The fuzz key of fuzz_firmware_manifest: seeds signed with it reach the checks after the signature.
constexpr const char kKeyPem[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MC4CAQAwBQYDK2VwBCIEIGroz96H79jp0B8tPdI8nI0oJvrv1I5HB3BdgwkYZR7J\n"
    "-----END PRIVATE KEY-----\n";

const firmware::PublicKey& Trusted() {
  static const firmware::PublicKey key = [] {
    auto k = firmware::PrivateKey::FromPem(kKeyPem);
    FUZZ_CHECK(k.ok(), "the fuzz key does not load");
    return k.value().public_key();
  }();
  return key;
}

void CheckReason(const Status& st, size_t max_bytes) {
  FUZZ_CHECK(st.code() == Code::kInvalid || st.code() == Code::kUnavailable, "unexpected code: " + st.ToString());
  const std::string& why = st.message();
  FUZZ_CHECK(!why.empty() && why.size() <= max_bytes, "reason of " + std::to_string(why.size()) + " bytes: " + QuotePrefix(why, 400));
  FUZZ_CHECK(FirstInvalidUtf8(why) == std::string_view::npos, "reason with invalid UTF-8: " + QuotePrefix(why, 400));
}

// The admin answer goes out through SafeDump; it must not need it.
void CheckAnswer(const json& answer) {
  std::string text = SafeDump(answer);
  FUZZ_CHECK(text == answer.dump(), "an answer that needed replacement characters: " + QuotePrefix(text, 200));
}

void Job(std::string_view payload) {
  auto parsed = ParseUntrustedJson(payload, {.max_bytes = 256 * 1024, .max_depth = 16});
  if (!parsed.ok()) return CheckAnswer({{"ok", false}, {"code", "invalid"}, {"error", parsed.status().message()}});
  auto job = DecodeFirmwareJob(*parsed);
  if (!job.ok()) {
    FUZZ_CHECK(job.status().code() == Code::kInvalid, "a refused job that is not Invalid");
    CheckReason(job.status(), 200);
    return CheckAnswer({{"ok", false}, {"code", "invalid"}, {"error", job.status().message()}});
  }
  const FirmwareJobRequest& r = job.value();
  FUZZ_CHECK(!r.campaign.empty() && !r.device.empty() && !r.chunks_topic.empty(), "a job with an empty field");
  FUZZ_CHECK(r.attempt >= 1, "attempt " + std::to_string(r.attempt));
  FUZZ_CHECK(r.manifest.is_object(), "a manifest that is not an object");
  // What Accept does next: the manifest as text, verified against the trusted key.
  const firmware::PublicKey trusted[] = {Trusted()};
  for (firmware::Target target : {firmware::Target::kGateway, firmware::Target::kModbus, firmware::Target::kJt808}) {
    auto m = firmware::VerifyManifest(SafeDump(r.manifest), trusted, {target, std::nullopt});
    if (!m.ok()) CheckAnswer({{"ok", false}, {"code", "invalid"}, {"error", m.status().message()}});
  }
  CheckAnswer({{"ok", true}, {"result", {{"accepted", true}}}});
}

void Chunk(std::string_view payload, uint64_t chunk) {
  auto answer = DecodeChunkAnswer(payload, chunk);
  if (!answer.ok()) return CheckReason(answer.status(), 700);
  const ChunkAnswer& a = answer.value();
  FUZZ_CHECK(a.data.size() <= chunk, "a chunk of " + std::to_string(a.data.size()) + " bytes for " + std::to_string(chunk));
  json back = {{"ok", true}, {"result", {{"offset", a.offset}, {"data", firmware::Base64Encode(a.data)}}}};
  auto again = DecodeChunkAnswer(back.dump(), chunk);
  FUZZ_CHECK(again.ok() && again.value().offset == a.offset && again.value().data == a.data, "chunk answer round trip");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::Knobs k(data, size);
  uint8_t mode = k.U8();
  static const uint64_t kChunks[] = {16, 1024, 4096, 256 * 1024};
  if (mode & 1) Chunk(k.RestText(), kChunks[(mode >> 1) & 3]);
  else Job(k.RestText());
  return 0;
}
