// What an upstream destination handles from outside: topics of requests from the city's broker
// matched against the down-link allow-list (core/topic_filter.h), payloads relayed from the
// local broker packed into batches (upstream/batch.h), and the batch decoder a consumer would
// use with its size limit. Byte 0 picks the part; the rest is split at the first NUL.
// Checked: a wildcard-free valid filter matches exactly itself; '#' matches every topic not
// starting with '$'; a batch is always one JSON object with every record; decompression never
// returns more than its limit.
#include <cstdint>
#include <nlohmann/json.hpp>

#include "core/topic_filter.h"
#include "fuzz_common.h"
#include "upstream/batch.h"

using namespace sanigate;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::Knobs k(data, size);
  uint8_t mode = k.U8() % 3;
  std::string_view rest = k.RestText();
  auto nul = rest.find('\0');
  std::string a(rest.substr(0, nul)), b(nul == std::string_view::npos ? std::string_view() : rest.substr(nul + 1));
  if (mode == 0) {
    bool valid = IsValidTopicFilter(a);
    bool match = TopicMatchesFilter(a, b);
    if (valid && a.find_first_of("+#") == std::string::npos) FUZZ_CHECK(match == (a == b), "a plain filter is not equality");
    if (!b.empty() && b[0] != '$') FUZZ_CHECK(TopicMatchesFilter("#", b), "'#' missed a topic");
  } else if (mode == 1) {
    std::vector<store::Envelope> records(2);
    records[0].seq = 1;
    records[0].msg.topic = a;
    records[0].msg.payload = b;
    records[1].seq = 2;
    records[1].msg.topic = b;
    records[1].msg.payload = a;
    records[1].msg.retain = true;
    std::string doc = upstream::BuildBatch(records, nullptr, a);
    auto j = nlohmann::json::parse(doc, nullptr, false);
    FUZZ_CHECK(j.is_object() && j["records"].size() == 2, "a batch that is not one JSON object with its records");
  } else {
    for (auto c : {upstream::Compression::kDeflate, upstream::Compression::kZstd}) {
      auto out = upstream::Decompress(rest, c, 4096);
      if (out.ok()) FUZZ_CHECK(out->size() <= 4096, "decompressed past the limit");
    }
  }
  return 0;
}
