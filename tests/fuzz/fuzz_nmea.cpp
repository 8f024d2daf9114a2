// NMEA 0183 as a serial or TCP byte stream: LineSplitter (in one chunk and in chunks of a size
// the input picks: the same sentences either way), ParseSentence on every line and on the input
// itself, then what the adapter does with the sentences: EpochAssembler (fixed wall clock),
// Throttle and ToReading.
#include <cmath>
#include <cctype>
#include <cstdint>
#include <cstdio>
#include <vector>

#include "fuzz_common.h"
#include "nmea/nmea_epoch.h"
#include "nmea/nmea_parser.h"

using namespace sanigate::dev::nmea;

namespace {

std::vector<std::string> Lines(std::string_view stream, size_t chunk, SplitterStats* stats) {
  LineSplitter s;
  std::vector<std::string> out;
  for (size_t i = 0; i < stream.size(); i += chunk) s.Feed(stream.substr(i, chunk), out);
  if (stats) *stats = s.stats();
  return out;
}

void CheckSentence(std::string_view line, const ParseResult& r) {
  if (r.ok()) {
    FUZZ_CHECK(r.error.empty(), "an ok sentence with an error");
    FUZZ_CHECK(line.size() >= 4 && line[0] == '$', "an ok sentence without '$'");
    size_t star = line.find('*');
    FUZZ_CHECK(star != std::string_view::npos, "an ok sentence without a checksum");
    char hex[3];
    std::snprintf(hex, sizeof hex, "%02X", Checksum(line.substr(1, star - 1)));
    std::string got(line.substr(star + 1, 2));
    for (char& c : got) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    FUZZ_CHECK(got == hex, "an ok sentence whose checksum does not match");
    (void)SentenceTypeName(r.sentence.type);
  } else {
    FUZZ_CHECK(!r.error.empty(), std::string("a refusal without a reason: ") + ParseStatusName(r.status));
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::Knobs k(data, size);
  const size_t chunk = 1 + k.U8() % 17;
  std::string_view stream = k.RestText();
  SplitterStats whole_stats;
  auto whole = Lines(stream, stream.size() + 1, &whole_stats);
  auto chunked = Lines(stream, chunk, nullptr);
  FUZZ_CHECK(whole == chunked, "chunking changed the sentences");
  FUZZ_CHECK(whole_stats.lines == whole.size(), "stats.lines");

  int64_t wall = 1'767'225'600'000;  // 2026-01-01T00:00:00Z
  EpochAssembler epochs([&wall] { return wall; });
  Throttle throttle(1000);
  std::vector<Fix> fixes;
  for (const std::string& line : whole) {
    FUZZ_CHECK(line.size() <= kMaxSentence && !line.empty() && line[0] == '$', "splitter handed out a bad line");
    FUZZ_CHECK(line.find_first_of("\r\n") == std::string::npos, "a line end inside a sentence");
    ParseResult r = ParseSentence(line);
    CheckSentence(line, r);
    if (r.ok()) epochs.Add(r.sentence, fixes);
    wall += 250;
  }
  epochs.Flush(fixes);
  for (const Fix& f : fixes) {
    if (f.position) {
      FUZZ_CHECK(std::fabs(f.position->lat) <= 90 && std::fabs(f.position->lon) <= 180, "position off the globe");
      FUZZ_CHECK(f.fix, "a position without a fix");
    }
    if (f.heading_deg) FUZZ_CHECK(*f.heading_deg >= 0 && *f.heading_deg < 360, "heading " + std::to_string(*f.heading_deg));
    if (throttle.Admit(f)) (void)ToReading(f, "truck-01", "vehicle");
  }
  CheckSentence(stream, ParseSentence(stream));
  return 0;
}
