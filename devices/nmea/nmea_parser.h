// NMEA 0183 without I/O: a line splitter for arbitrary byte chunks and a parser for the RMC, GGA
// and VTG sentences of GNSS receivers (talkers GP, GN, BD, GB, GL, GA). Bytes in, sentences or a
// precise error out; nothing here throws. LineSplitter is stateful and not thread-safe (one per
// byte stream); ParseSentence is a pure function.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace sanigate::dev::nmea {

// NMEA 0183 allows 82 characters including '$' and CR LF, but multi-constellation receivers
// with extra precision or NMEA 4.1 fields exceed it; 120 leaves room for those while a run of
// noise without a line end is still cut off early.
inline constexpr size_t kMaxSentence = 120;  // from '$' up to, not including, the line end

struct SplitterStats {
  uint64_t lines = 0;          // candidate sentences handed out
  uint64_t overlong = 0;       // sentences longer than kMaxSentence, discarded
  uint64_t truncated = 0;      // a '$' before the previous sentence ended: the earlier part dropped
  uint64_t garbage_bytes = 0;  // bytes outside any sentence (noise, binary protocols, blank lines)
};

// Cuts a byte stream into candidate sentences: each starts at '$' and ends before CR or LF.
// Sentences may be split across chunks or glued in one; CR LF, LF and CR all end a line.
class LineSplitter {
 public:
  // Appends every sentence completed by `chunk` to `out` (without the line end).
  void Feed(std::string_view chunk, std::vector<std::string>& out);
  // Drops a partial sentence (the stream ended or was reset).
  void Reset();
  const SplitterStats& stats() const { return stats_; }

 private:
  enum class State { kOutside, kInside, kSkipping };
  State state_ = State::kOutside;
  std::string line_;
  SplitterStats stats_;
};

enum class SentenceType { kRmc, kGga, kVtg };
const char* SentenceTypeName(SentenceType t);

struct Date {
  int year = 0;  // four digits: yy < 80 is 20yy, otherwise 19yy
  int month = 0;
  int day = 0;
  bool operator==(const Date&) const = default;
};

// Signed WGS-84 degrees: south and west are negative.
struct Position {
  double lat = 0;
  double lon = 0;
};

// Recommended minimum data. `valid` is status A and a mode other than N (NMEA 2.3+ / 4.1).
struct Rmc {
  std::optional<int32_t> time_ms;  // UTC milliseconds of the day
  bool valid = false;
  char status = 'V';
  std::optional<char> mode;  // A autonomous, D differential, E estimated, N no fix, ...
  std::optional<Position> position;
  std::optional<double> speed_knots;
  std::optional<double> course_deg;  // true course over ground
  std::optional<Date> date;
};

// Fix data. `quality` 0 means no fix; 1 GPS, 2 DGPS, 4 RTK fixed, 5 RTK float, 6 estimated ...
struct Gga {
  std::optional<int32_t> time_ms;
  int quality = 0;
  std::optional<Position> position;
  std::optional<int> satellites;
  std::optional<double> hdop;
  std::optional<double> altitude_m;  // above mean sea level
};

// Course and speed over ground (no time: it belongs to the epoch it is sent with).
struct Vtg {
  std::optional<double> course_deg;  // true
  std::optional<double> speed_knots;
  std::optional<double> speed_kmh;
  std::optional<char> mode;  // NMEA 2.3+: N = not valid
};

struct Sentence {
  std::string talker;  // "GP", "GN", "BD", "GB", "GL", "GA"
  SentenceType type = SentenceType::kRmc;
  std::variant<Rmc, Gga, Vtg> body;
};

enum class ParseStatus {
  kOk,
  kUnsupported,  // well-formed with a valid checksum, but not a talker/type we use: ignored
  kBadChecksum,
  kMalformed,  // no '$' or '*hh', bad characters, wrong field count or a value out of range
};
const char* ParseStatusName(ParseStatus s);

struct ParseResult {
  ParseStatus status = ParseStatus::kMalformed;
  Sentence sentence;  // set when status == kOk
  std::string error;  // why, e.g. "bad checksum: got 3A, computed 3B"; empty when kOk
  bool ok() const { return status == ParseStatus::kOk; }
};

// Parses one sentence as handed out by LineSplitter ("$GPRMC,...*6A", no line end). A sentence
// without a checksum is rejected: on a noisy serial line it is the only integrity check.
ParseResult ParseSentence(std::string_view line);

// XOR of the characters between '$' and '*' (exclusive), as the sentence's *hh carries it.
uint8_t Checksum(std::string_view between);

}  // namespace sanigate::dev::nmea
