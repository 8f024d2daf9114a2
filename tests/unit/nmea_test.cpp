// NMEA 0183 without I/O: sentence vectors with hand-computed values (checksums checked with a
// separate XOR calculation), the line splitter on split, glued and broken input, epoch assembly
// with date rollover, the throttle, the vehicle reading, and [nmea] config errors.
#include <gtest/gtest.h>

#include <map>
#include <random>
#include <string>
#include <vector>

#include "nmea/nmea_config.h"
#include "nmea/nmea_epoch.h"
#include "nmea/nmea_parser.h"
#include "nmea/spec.h"
#include "settings/reader.h"

namespace sanigate::dev::nmea {
namespace {

// The classic textbook pair (both checksums verified): 12:35:19 UTC on 23 March 1994.
constexpr const char* kRmc = "$GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*6A";
constexpr const char* kGga = "$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47";
// calendar.timegm((1994, 3, 23, 12, 35, 19)) = 764426119
constexpr int64_t kClassicTs = 764'426'119'000;

Sentence MustParse(const std::string& line) {
  ParseResult r = ParseSentence(line);
  EXPECT_TRUE(r.ok()) << line << ": " << r.error;
  return r.sentence;
}

std::vector<std::string> Split(LineSplitter& s, const std::string& bytes) {
  std::vector<std::string> out;
  s.Feed(bytes, out);
  return out;
}

// Feeds whole sentences to an assembler and returns the completed fixes.
std::vector<Fix> Assemble(EpochAssembler& a, const std::vector<std::string>& lines,
                          bool flush = false) {
  std::vector<Fix> out;
  for (const auto& l : lines) a.Add(MustParse(l), out);
  if (flush) a.Flush(out);
  return out;
}

std::map<std::string, MetricValue> Metrics(const Record& r) {
  std::map<std::string, MetricValue> m;
  for (const auto& x : r.metrics) m[x.name] = x.value;
  return m;
}

// --- sentences -----------------------------------------------------------------------------

TEST(NmeaParser, ChecksumIsTheXorBetweenDollarAndStar) {
  EXPECT_EQ(Checksum("GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W"), 0x6A);
  EXPECT_EQ(Checksum("GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,"), 0x47);
}

TEST(NmeaParser, ClassicRmc) {
  Sentence s = MustParse(kRmc);
  EXPECT_EQ(s.talker, "GP");
  ASSERT_EQ(s.type, SentenceType::kRmc);
  const Rmc& r = std::get<Rmc>(s.body);
  EXPECT_EQ(r.time_ms, (12 * 3600 + 35 * 60 + 19) * 1000);
  EXPECT_TRUE(r.valid);
  EXPECT_EQ(r.status, 'A');
  EXPECT_FALSE(r.mode);  // NMEA 2.0: no mode field
  ASSERT_TRUE(r.position);
  EXPECT_DOUBLE_EQ(r.position->lat, 48 + 7.038 / 60);  // 48.1173
  EXPECT_DOUBLE_EQ(r.position->lon, 11 + 31.0 / 60);   // 11.516666...
  EXPECT_DOUBLE_EQ(*r.speed_knots, 22.4);
  EXPECT_DOUBLE_EQ(*r.course_deg, 84.4);
  EXPECT_EQ(r.date, (Date{1994, 3, 23}));
}

TEST(NmeaParser, ClassicGga) {
  Sentence s = MustParse(kGga);
  ASSERT_EQ(s.type, SentenceType::kGga);
  const Gga& g = std::get<Gga>(s.body);
  EXPECT_EQ(g.time_ms, 45'319'000);
  EXPECT_EQ(g.quality, 1);
  EXPECT_EQ(g.satellites, 8);
  EXPECT_DOUBLE_EQ(*g.hdop, 0.9);
  EXPECT_DOUBLE_EQ(*g.altitude_m, 545.4);
  EXPECT_DOUBLE_EQ(g.position->lat, 48.1173);
}

TEST(NmeaParser, ChineseReceiverTalkersSouthWestAndNmea41Fields) {
  // A GN (multi-constellation) RMC with NMEA 4.1 mode A and navigational status V, and a BeiDou
  // GGA below sea level. 3339.5237 S = -(33 + 39.5237 / 60) = -33.658728333...;
  // 07032.1230 W = -(70 + 32.123 / 60) = -70.535383333...
  Sentence rmc_s =
      MustParse("$GNRMC,083559.00,A,3339.5237,S,07032.1230,W,0.52,271.3,150624,,,A,V*0C");
  EXPECT_EQ(rmc_s.talker, "GN");
  const Rmc& rmc = std::get<Rmc>(rmc_s.body);
  EXPECT_TRUE(rmc.valid);
  EXPECT_EQ(rmc.mode, 'A');
  EXPECT_NEAR(rmc.position->lat, -33.658728333, 1e-9);
  EXPECT_NEAR(rmc.position->lon, -70.535383333, 1e-9);
  EXPECT_EQ(rmc.date, (Date{2024, 6, 15}));
  EXPECT_EQ(rmc.time_ms, (8 * 3600 + 35 * 60 + 59) * 1000);

  Sentence gga_s =
      MustParse("$BDGGA,083559.00,3339.5237,S,07032.1230,W,1,14,0.8,-12.5,M,31.2,M,,*69");
  EXPECT_EQ(gga_s.talker, "BD");
  const Gga& gga = std::get<Gga>(gga_s.body);
  EXPECT_EQ(gga.satellites, 14);
  EXPECT_DOUBLE_EQ(*gga.altitude_m, -12.5);
  EXPECT_NEAR(gga.position->lon, -70.535383333, 1e-9);
}

TEST(NmeaParser, EverySupportedTalkerIsAccepted) {
  const std::string body = "RMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W";
  for (const char* talker : {"GP", "GN", "BD", "GB", "GL", "GA"}) {
    std::string between = talker + body;
    char sum[3];
    std::snprintf(sum, sizeof sum, "%02X", Checksum(between));
    ParseResult r = ParseSentence("$" + between + "*" + sum);
    EXPECT_TRUE(r.ok()) << talker << ": " << r.error;
    EXPECT_EQ(r.sentence.talker, talker);
  }
}

TEST(NmeaParser, OtherTalkersTypesAndProprietarySentencesAreUnsupportedNotErrors) {
  ParseResult gsv =
      ParseSentence("$GPGSV,3,1,11,03,03,111,00,04,15,270,00,06,01,010,00,13,06,292,00*74");
  EXPECT_EQ(gsv.status, ParseStatus::kUnsupported);
  EXPECT_EQ(gsv.error, "sentence type GSV is not used");
  ParseResult qzss =
      ParseSentence("$GQRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*6B");
  EXPECT_EQ(qzss.status, ParseStatus::kUnsupported);
  EXPECT_EQ(qzss.error, "talker GQ is not used");
  ParseResult ubx = ParseSentence("$PUBX,00,081350.00*3E");
  EXPECT_EQ(ubx.status, ParseStatus::kUnsupported);
  EXPECT_EQ(ubx.error, "proprietary sentence PUBX");
}

TEST(NmeaParser, BadChecksumSaysWhatWasExpected) {
  ParseResult r =
      ParseSentence("$GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*6B");
  EXPECT_EQ(r.status, ParseStatus::kBadChecksum);
  EXPECT_EQ(r.error, "bad checksum: got 6B, computed 6A");
  // One flipped character in the data (4807 -> 4817) is caught the same way.
  ParseResult flipped =
      ParseSentence("$GPRMC,123519,A,4817.038,N,01131.000,E,022.4,084.4,230394,003.1,W*6A");
  EXPECT_EQ(flipped.error, "bad checksum: got 6A, computed 6B");
  // Lower-case hex is off-spec but unambiguous.
  EXPECT_TRUE(
      ParseSentence("$GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*6a").ok());
}

TEST(NmeaParser, SentenceWithoutChecksumIsRejected) {
  ParseResult r =
      ParseSentence("$GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W");
  EXPECT_EQ(r.status, ParseStatus::kMalformed);
  EXPECT_EQ(r.error, "no checksum (*hh): sentences without one are rejected");
  EXPECT_EQ(ParseSentence("$GPGGA,1*4").error, "checksum \"4\" is not two hex digits");
  EXPECT_EQ(ParseSentence("GPGGA,1*47").error, "does not start with '$'");
}

TEST(NmeaParser, MissingAndBrokenFieldsArePreciseErrors) {
  // Truncated after the latitude, checksum recomputed so only the structure is wrong.
  EXPECT_EQ(ParseSentence("$GPRMC,123519,A,4807.038,N*57").error,
            "GPRMC has 4 fields, expected 11..13");
  EXPECT_EQ(
      ParseSentence("$GPRMC,123519,A,48x7.038,N,01131.000,E,022.4,084.4,230394,003.1,W*22").error,
      "GPRMC field 3 (latitude): \"48x7.038\" is not ddmm.mmmm");
  // A latitude without a longitude is not a position.
  EXPECT_EQ(ParseSentence("$GPRMC,123519,A,4807.038,N,,,022.4,084.4,230394,003.1,W*03").error,
            "GPRMC field 5 (longitude): \"\" is not dddmm.mmmm");
  // 23 and 32 swapped: the XOR checksum cannot see it (*6A both), the date check does.
  EXPECT_EQ(
      ParseSentence("$GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,320394,003.1,W*6A").error,
      "GPRMC field 9 (date): \"320394\" is not a calendar date");
  EXPECT_EQ(ParseSentence("$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9*7C").status,
            ParseStatus::kMalformed);
  ParseResult bad_char = ParseSentence(std::string("$GPGGA,1\x01*47"));
  EXPECT_EQ(bad_char.error, "invalid character 0x01 at column 9");
}

TEST(NmeaParser, NoFixSentencesParseWithEmptyFields) {
  Sentence rmc = MustParse("$GPRMC,123519,V,,,,,,,230394,,,N*51");
  EXPECT_FALSE(std::get<Rmc>(rmc.body).valid);
  EXPECT_FALSE(std::get<Rmc>(rmc.body).position);
  Sentence gga = MustParse("$GPGGA,123519,,,,,0,00,99.99,,,,,,*45");
  EXPECT_EQ(std::get<Gga>(gga.body).quality, 0);
  EXPECT_EQ(std::get<Gga>(gga.body).satellites, 0);
  // Status A but NMEA 2.3 mode N ("data not valid"): no fix either.
  Sentence mode_n =
      MustParse("$GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W,N*08");
  EXPECT_FALSE(std::get<Rmc>(mode_n.body).valid);
}

TEST(NmeaParser, VtgCourseAndSpeed) {
  Sentence s = MustParse("$GPVTG,084.4,T,081.2,M,022.4,N,041.5,K,A*24");
  const Vtg& v = std::get<Vtg>(s.body);
  EXPECT_DOUBLE_EQ(*v.course_deg, 84.4);
  EXPECT_DOUBLE_EQ(*v.speed_knots, 22.4);
  EXPECT_DOUBLE_EQ(*v.speed_kmh, 41.5);
  EXPECT_EQ(v.mode, 'A');
}

// --- line splitter -------------------------------------------------------------------------

TEST(NmeaSplitter, SentencesSplitAcrossChunksAndGluedTogether) {
  LineSplitter s;
  std::string two = std::string(kRmc) + "\r\n" + kGga + "\r\n";
  // Byte by byte: nothing comes out before each line end.
  std::vector<std::string> out;
  for (char c : two) s.Feed(std::string_view(&c, 1), out);
  EXPECT_EQ(out, (std::vector<std::string>{kRmc, kGga}));
  // Both in one chunk, and cut in the middle of the checksum.
  EXPECT_EQ(Split(s, two), (std::vector<std::string>{kRmc, kGga}));
  EXPECT_TRUE(Split(s, std::string(kRmc).substr(0, 66)).empty());
  EXPECT_EQ(Split(s, std::string(kRmc).substr(66) + "\r\n"), (std::vector<std::string>{kRmc}));
  EXPECT_EQ(s.stats().garbage_bytes, 0u);
}

TEST(NmeaSplitter, LfCrAndCrLfAllEndALine) {
  LineSplitter s;
  EXPECT_EQ(Split(s, std::string(kRmc) + "\n" + kGga + "\r" + kRmc + "\r\n\r\n"),
            (std::vector<std::string>{kRmc, kGga, kRmc}));
}

TEST(NmeaSplitter, GarbageOverlongAndCutShortSentencesAreDroppedAndCounted) {
  LineSplitter s;
  // Noise (a wrong baud rate looks like this) before a sentence, then a 200-character line.
  std::string noise = "\xff\xfe\x01junk";
  std::string overlong = "$GPTXT," + std::string(200, 'A') + "*00";
  std::string cut = "$GPGGA,123519,4807";  // the receiver restarted mid-sentence
  auto out = Split(s, noise + kRmc + "\r\n" + overlong + "\r\n" + cut + kGga + "\r\n");
  EXPECT_EQ(out, (std::vector<std::string>{kRmc, kGga}));
  EXPECT_EQ(s.stats().garbage_bytes, noise.size());
  EXPECT_EQ(s.stats().overlong, 1u);
  EXPECT_EQ(s.stats().truncated, 1u);
  // An overlong line with a '$' inside recovers at it; 120 characters is still fine.
  std::string max_len = "$" + std::string(kMaxSentence - 1, 'B');
  EXPECT_EQ(Split(s, max_len + "\n"), (std::vector<std::string>{max_len}));
  EXPECT_EQ(Split(s, max_len + "C" + kGga + "\n"), (std::vector<std::string>{kGga}));
  EXPECT_EQ(s.stats().overlong, 2u);
}

TEST(NmeaSplitter, RandomBytesNeverBreakTheParser) {
  // Not a fuzzer (that belongs in a libFuzzer target), but a cheap seeded smoke test: mutated
  // real sentences and NMEA-ish noise through splitter, parser and assembler.
  std::mt19937 rng(808);
  const char chars[] = "$*,.0123456789ABCDEFGNPRSVWT\r\n\x00\xff";
  const std::string alphabet(chars, sizeof chars - 1);  // with the NUL
  std::string base = std::string(kRmc) + "\r\n" + kGga + "\r\n";
  LineSplitter splitter;
  EpochAssembler a([] { return int64_t{0}; });
  size_t ok = 0;
  for (int round = 0; round < 2000; ++round) {
    std::string chunk = base;
    for (int m = 0; m < 3; ++m) chunk[rng() % chunk.size()] = alphabet[rng() % alphabet.size()];
    std::vector<std::string> lines;
    splitter.Feed(chunk.substr(0, rng() % chunk.size()), lines);
    splitter.Feed(chunk.substr(lines.size() % 2), lines);
    std::vector<Fix> fixes;
    for (const auto& l : lines) {
      ParseResult r = ParseSentence(l);
      EXPECT_EQ(r.ok(), r.error.empty()) << l;
      if (r.ok()) {
        ok++;
        a.Add(r.sentence, fixes);
      }
    }
  }
  EXPECT_GT(ok, 0u);  // many rounds leave some sentence intact
}

// --- epochs --------------------------------------------------------------------------------

TEST(NmeaEpoch, RmcAndGgaOfOneTimeMakeOneVehicleReading) {
  int64_t now = 1'763'692'200'000;  // today's system clock must not matter when RMC has a date
  EpochAssembler a([&] { return now; });
  auto fixes = Assemble(a, {kRmc, kGga});
  ASSERT_EQ(fixes.size(), 1u);  // the pair completes the epoch without waiting for the next
  const Fix& f = fixes[0];
  EXPECT_EQ(f.ts_ms, kClassicTs);
  EXPECT_TRUE(f.fix);
  Record r = ToReading(f, "truck-12", "vehicle");
  EXPECT_EQ(r.type, RecordType::kReading);
  EXPECT_EQ(r.ts_ms, kClassicTs);
  EXPECT_EQ(r.device, "truck-12");
  EXPECT_EQ(r.kind, "vehicle");
  EXPECT_EQ(r.protocol, "nmea");
  ASSERT_TRUE(r.location);
  EXPECT_DOUBLE_EQ(r.location->lat, 48.1173);
  EXPECT_DOUBLE_EQ(r.location->lon, 11.51666667);  // 11 + 31/60, rounded to 1e-8 degrees
  auto m = Metrics(r);
  EXPECT_EQ(m.size(), 6u);
  EXPECT_EQ(std::get<bool>(m["gnss_fix"]), true);
  EXPECT_DOUBLE_EQ(std::get<double>(m["speed_kmh"]), 41.485);  // 22.4 kn * 1.852 = 41.4848
  EXPECT_DOUBLE_EQ(std::get<double>(m["heading_deg"]), 84.4);
  EXPECT_DOUBLE_EQ(std::get<double>(m["altitude_m"]), 545.4);
  EXPECT_EQ(std::get<int64_t>(m["satellites"]), 8);
  EXPECT_DOUBLE_EQ(std::get<double>(m["hdop"]), 0.9);
}

TEST(NmeaEpoch, GgaFirstThenRmcAsChineseReceiversSendThem) {
  EpochAssembler a([] { return int64_t{0}; });
  // GN GGA, then VTG, then RMC of 02:30:00 on 21 Nov 2025 (Xiamen, DGPS).
  auto fixes =
      Assemble(a, {"$GNGGA,023000.000,2430.7380,N,11808.0520,E,2,21,0.6,12.0,M,-5.1,M,1.0,0000*4E",
                   "$GNVTG,45.0,T,,M,12.5,N,23.2,K,D*22",
                   "$GNRMC,023000.000,A,2430.7380,N,11808.0520,E,12.5,45.0,211125,,,D*79"});
  ASSERT_EQ(fixes.size(), 1u);
  EXPECT_EQ(fixes[0].ts_ms, 1'763'692'200'000);        // timegm((2025, 11, 21, 2, 30, 0)) * 1000
  EXPECT_DOUBLE_EQ(fixes[0].position->lat, 24.5123);   // 24 + 30.738 / 60
  EXPECT_DOUBLE_EQ(fixes[0].position->lon, 118.1342);  // 118 + 8.052 / 60
  EXPECT_DOUBLE_EQ(*fixes[0].speed_kmh, 23.15);        // RMC: 12.5 kn * 1.852
  EXPECT_EQ(fixes[0].satellites, 21);
}

TEST(NmeaEpoch, ATimeChangeCompletesTheEpochAndVtgJoinsIt) {
  EpochAssembler a([] { return int64_t{0}; });
  std::vector<Fix> out;
  // RMC-only receiver with VTG: each epoch completes when the next one starts.
  a.Add(MustParse(kRmc), out);
  a.Add(MustParse("$GPVTG,084.4,T,081.2,M,022.4,N,041.5,K,A*24"), out);
  EXPECT_TRUE(out.empty());
  EXPECT_TRUE(a.pending());
  a.Add(MustParse("$GPGGA,123520,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*4D"), out);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].ts_ms, kClassicTs);
  EXPECT_FALSE(out[0].altitude_m);  // that epoch had no GGA
  a.Flush(out);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[1].ts_ms, kClassicTs + 1000);  // GGA dated by the RMC before it
  EXPECT_FALSE(a.pending());
}

TEST(NmeaEpoch, DuplicateAndLateSentencesOfAnEmittedEpochAreDropped) {
  EpochAssembler a([] { return int64_t{0}; });
  std::vector<Fix> out;
  for (const char* l : {kRmc, kGga, kRmc, "$GPVTG,084.4,T,081.2,M,022.4,N,041.5,K,A*24"})
    a.Add(MustParse(l), out);
  EXPECT_EQ(out.size(), 1u);
  EXPECT_FALSE(a.pending());
}

TEST(NmeaEpoch, VtgSpeedIsUsedWithoutRmc) {
  EpochAssembler a([] { return int64_t{764'400'000'000}; });
  auto fixes = Assemble(a, {kGga, "$GPVTG,084.4,T,081.2,M,022.4,N,041.5,K,A*24"}, true);
  ASSERT_EQ(fixes.size(), 1u);
  EXPECT_DOUBLE_EQ(*fixes[0].speed_kmh, 41.5);
  EXPECT_DOUBLE_EQ(*fixes[0].heading_deg, 84.4);
  // Without the km/h field, knots are converted: 22.4 * 1.852 = 41.4848 -> 41.485.
  EpochAssembler b([] { return int64_t{764'400'000'000}; });
  fixes = Assemble(b, {kGga, "$GPVTG,084.4,T,081.2,M,022.4,N,,K,A*0A"}, true);
  EXPECT_DOUBLE_EQ(*fixes[0].speed_kmh, 41.485);
  // GGA without any RMC takes the system date: 23 March 1994 here.
  EXPECT_EQ(fixes[0].ts_ms, kClassicTs);
}

TEST(NmeaEpoch, NoFixYieldsAReadingWithoutLocation) {
  EpochAssembler a([] { return int64_t{0}; });
  auto fixes =
      Assemble(a, {"$GPRMC,123519,V,,,,,,,230394,,,N*51", "$GPGGA,123519,,,,,0,00,99.99,,,,,,*45"});
  ASSERT_EQ(fixes.size(), 1u);
  EXPECT_EQ(fixes[0].ts_ms, kClassicTs);
  Record r = ToReading(fixes[0], "truck-12", "vehicle");
  EXPECT_FALSE(r.location);
  auto m = Metrics(r);
  EXPECT_EQ(std::get<bool>(m["gnss_fix"]), false);
  EXPECT_EQ(std::get<int64_t>(m["satellites"]), 0);  // why there is no fix
  EXPECT_EQ(m.size(), 2u);  // no speed, heading, altitude or hdop without a fix
  // Status A with mode N is no fix either, even with a position in the sentence.
  EpochAssembler b([] { return int64_t{0}; });
  fixes =
      Assemble(b, {"$GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W,N*08"}, true);
  EXPECT_FALSE(fixes[0].fix);
  EXPECT_FALSE(fixes[0].position);
  EXPECT_FALSE(fixes[0].speed_kmh);
}

TEST(NmeaEpoch, GgaAfterMidnightTakesTheNextDayOfTheLastRmc) {
  int64_t now = 0;  // the system clock is wrong (1970): only the receiver's date counts
  EpochAssembler a([&] { return now; });
  // RMC 23:59:59 on 31 Dec 2024, then a GGA-only epoch at 00:00:00: 1 Jan 2025.
  auto fixes = Assemble(a, {"$GPRMC,235959,A,2430.7380,N,11808.0520,E,0.0,,311224,,,A*56"});
  now += 1000;
  auto more =
      Assemble(a, {"$GPGGA,000000,2430.7380,N,11808.0520,E,1,09,1.0,10.0,M,0.0,M,,*45"}, true);
  fixes.insert(fixes.end(), more.begin(), more.end());
  ASSERT_EQ(fixes.size(), 2u);
  EXPECT_EQ(fixes[0].ts_ms, 1'735'689'600'000 - 1000);  // timegm((2025, 1, 1, 0, 0, 0)) - 1 s
  EXPECT_EQ(fixes[1].ts_ms, 1'735'689'600'000);
  EXPECT_FALSE(fixes[0].heading_deg);  // empty course at standstill: no heading
}

TEST(NmeaEpoch, LateGgaFromBeforeMidnightKeepsThePreviousDay) {
  int64_t now = 0;
  EpochAssembler a([&] { return now; });
  Assemble(a, {"$GPRMC,000001,A,2430.7380,N,11808.0520,E,0.0,,010125,,,A*56"}, true);
  // A GGA of 23:59:59.80 arriving after the RMC of 00:00:01 on 1 Jan 2025.
  auto fixes =
      Assemble(a, {"$GPGGA,235959.80,2430.7380,N,11808.0520,E,1,09,1.0,10.0,M,0.0,M,,*62"}, true);
  ASSERT_EQ(fixes.size(), 1u);
  EXPECT_EQ(fixes[0].ts_ms, 1'735'689'600'000 - 200);
}

TEST(NmeaEpoch, GgaWithoutAnyRmcUsesTheSystemDateNearestToNow) {
  // The system clock says 1 June 2025 00:00:00.300 (timegm = 1748736000); a GGA of
  // 23:59:59.80 is from 31 May, 0.5 s ago, not from the evening of 1 June.
  int64_t now = 1'748'736'000'300;
  EpochAssembler a([&] { return now; });
  auto fixes =
      Assemble(a, {"$GPGGA,235959.80,2430.7380,N,11808.0520,E,1,09,1.0,10.0,M,0.0,M,,*62"}, true);
  ASSERT_EQ(fixes.size(), 1u);
  EXPECT_EQ(fixes[0].ts_ms, 1'748'736'000'000 - 200);
}

TEST(NmeaThrottle, TenHertzBecomesOneReadingPerInterval) {
  Throttle t(1000);
  int admitted = 0;
  for (int i = 0; i < 30; ++i) {
    Fix f;
    f.fix = true;
    f.ts_ms = kClassicTs + i * 100;  // 10 Hz for 3 s
    admitted += t.Admit(f);
  }
  EXPECT_EQ(admitted, 3);
  // Losing the fix passes at once, however soon.
  Fix lost;
  lost.ts_ms = kClassicTs + 3000 + 100;
  EXPECT_TRUE(t.Admit(lost));
  // A receiver whose clock jumped back (reset to its default date) is not silenced.
  Fix reset;
  reset.ts_ms = 0;
  EXPECT_TRUE(t.Admit(reset));
  Throttle every(0);
  EXPECT_TRUE(every.Admit(reset));
  EXPECT_TRUE(every.Admit(reset));
}

// --- config --------------------------------------------------------------------------------

struct Parsed {
  NmeaConfig config;
  std::vector<std::string> errors;
};

Parsed ParseConfig(const std::string& text) {
  settings::ConfigErrors errors("test.toml");
  auto file = settings::ParseString(text, "test.toml", errors);
  Parsed p;
  if (file.table) {
    settings::Node root(*file.table, "", errors);
    if (auto n = root.Table("nmea"))
      p.config = std::any_cast<NmeaConfig>(ParseNmeaSection(*n, settings::GatewaySection{}));
  }
  for (const auto& e : errors.Sorted()) p.errors.push_back(e.ToString());
  return p;
}

TEST(NmeaConfig, TcpAndSerialSourcesWithDefaults) {
  Parsed p = ParseConfig(
      "[nmea]\n"
      "[[nmea.sources]]\n"
      "device = \"truck-12\"\n"
      "listen = \"0.0.0.0:10110\"\n"
      "[[nmea.sources]]\n"
      "device = \"gw-gnss\"\n"
      "kind = \"gateway\"\n"
      "serial = \"/dev/ttyS1\"\n"
      "baud = 4800\n"
      "min_interval_ms = 5000\n"
      "offline_after_s = 10\n"
      "[[nmea.sources]]\n"
      "device = \"sweeper-3\"\n"
      "listen = \"[::1]:10111\"\n"
      "max_connections = 2\n");
  EXPECT_TRUE(p.errors.empty()) << p.errors.front();
  ASSERT_EQ(p.config.sources.size(), 3u);
  const SourceConfig& tcp = p.config.sources[0];
  EXPECT_EQ(tcp.device, "truck-12");
  EXPECT_EQ(tcp.kind, "vehicle");
  EXPECT_FALSE(tcp.is_serial());
  EXPECT_EQ(tcp.listen_host, "0.0.0.0");
  EXPECT_EQ(tcp.listen_port, 10110);
  EXPECT_EQ(tcp.max_connections, 4);
  EXPECT_EQ(tcp.min_interval_ms, 1000);
  EXPECT_EQ(tcp.offline_after_s, 30);
  const SourceConfig& ser = p.config.sources[1];
  EXPECT_TRUE(ser.is_serial());
  EXPECT_EQ(ser.kind, "gateway");
  EXPECT_EQ(ser.serial, "/dev/ttyS1");
  EXPECT_EQ(ser.baud, 4800);
  EXPECT_EQ(ser.min_interval_ms, 5000);
  EXPECT_EQ(ser.offline_after_s, 10);
  EXPECT_EQ(ser.Endpoint(), "serial /dev/ttyS1");
  EXPECT_EQ(p.config.sources[2].listen_host, "::1");
  EXPECT_EQ(p.config.sources[2].Endpoint(), "tcp [::1]:10111");
  EXPECT_EQ(p.config.sources[2].max_connections, 2);
}

TEST(NmeaConfig, EveryMistakeIsReportedWithItsPath) {
  Parsed p = ParseConfig(
      "[nmea]\n"                          // 1
      "[[nmea.sources]]\n"                // 2
      "device = \"truck-12\"\n"           // 3
      "listen = \"127.0.0.1:10110\"\n"    // 4
      "[[nmea.sources]]\n"                // 5
      "device = \"truck-12\"\n"           // 6
      "listen = \"localhost:10110\"\n"    // 7
      "[[nmea.sources]]\n"                // 8
      "device = \"Truck 7\"\n"            // 9
      "[[nmea.sources]]\n"                // 10
      "device = \"gnss\"\n"               // 11
      "serial = \"/dev/ttyS2\"\n"         // 12
      "baud = 19201\n"                    // 13
      "max_connections = 2\n"             // 14
      "[[nmea.sources]]\n"                // 15
      "device = \"tracker\"\n"            // 16
      "listen = \"127.0.0.1:70000\"\n"    // 17
      "baud = 9600\n"                     // 18
      "min_intreval_ms = 10\n"            // 19
      "[[nmea.sources]]\n"                // 20
      "device = \"tracker-2\"\n"          // 21
      "listen = \"127.0.0.1:10111\"\n"    // 22
      "serial = \"/dev/ttyS1\"\n"         // 23
      "offline_after_s = 0\n"             // 24
      "[[nmea.sources]]\n"                // 25
      "device = \"tracker-3\"\n"          // 26
      "listen = \"127.0.0.1:10110\"\n");  // 27
  EXPECT_EQ(p.errors,
            (std::vector<std::string>{
                "test.toml:6:10: nmea.sources[1].device: \"truck-12\" is already used by "
                "nmea.sources[0]",
                "test.toml:7:10: nmea.sources[1].listen: \"localhost:10110\" is not HOST:PORT (an "
                "IP address and a port 1..65535, e.g. \"0.0.0.0:10110\")",
                "test.toml:8:1: nmea.sources[2].listen: a source needs listen = \"HOST:PORT\" "
                "(TCP) or serial = \"/dev/...\" (serial port)",
                "test.toml:9:10: nmea.sources[2].device: \"Truck 7\" is not a valid id (use "
                "1-128 of a-z 0-9 . _ -)",
                "test.toml:13:8: nmea.sources[3].baud: 19201 is not one of 4800, 9600, 19200, "
                "38400, 57600, 115200",
                "test.toml:14:19: nmea.sources[3].max_connections: only a listen source takes "
                "connections",
                "test.toml:17:10: nmea.sources[4].listen: \"127.0.0.1:70000\" is not HOST:PORT (an "
                "IP address and a port 1..65535, e.g. \"0.0.0.0:10110\")",
                "test.toml:18:8: nmea.sources[4].baud: only a serial source has a baud rate",
                "test.toml:19:1: nmea.sources[4].min_intreval_ms: unknown key (did you mean "
                "\"min_interval_ms\"?)",
                "test.toml:23:10: nmea.sources[5].serial: a source has either listen or serial, "
                "not both",
                "test.toml:24:19: nmea.sources[5].offline_after_s: 0 is outside 1..86400",
                "test.toml:27:10: nmea.sources[6].listen: \"127.0.0.1:10110\" is already used by "
                "nmea.sources[0]",
            }));
}

TEST(NmeaConfig, ASectionWithoutSourcesIsAnError) {
  EXPECT_EQ(ParseConfig("[nmea]\n").errors,
            (std::vector<std::string>{
                "test.toml:1:1: nmea.sources: [nmea] needs at least one [[nmea.sources]] entry"}));
}

TEST(NmeaConfig, HostPort) {
  EXPECT_EQ(ParseHostPort("127.0.0.1:10110")->port, 10110);
  EXPECT_EQ(ParseHostPort("[::]:1")->host, "::");
  for (const char* bad : {"", "10110", "127.0.0.1", "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:x",
                          "1.2.3:5", "::1:10110", "[127.0.0.1]:5", "[::1]10110", "host:10110"})
    EXPECT_FALSE(ParseHostPort(bad)) << bad;
}

TEST(NmeaConfig, SpecNamesTheSampleConfig) {
  AdapterSpec s = Spec();
  EXPECT_EQ(s.name, "nmea");
  EXPECT_EQ(s.sample_config, "nmea.toml");
}

}  // namespace
}  // namespace sanigate::dev::nmea
