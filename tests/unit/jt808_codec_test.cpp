// JT/T 808 framing and message codecs against the verified frames of protocols.md §1.6 and
// public vectors, plus split/glued streams, bad escapes, bad checks and truncated bodies.
#include <gtest/gtest.h>

#include <sstream>

#include "jt808/frame.h"
#include "jt808/messages.h"

namespace sanigate::dev::jt808 {
namespace {

Bytes Hex(const std::string& text) {
  Bytes out;
  std::istringstream is(text);
  std::string tok;
  std::string all;
  while (is >> tok) all += tok;
  for (size_t i = 0; i + 1 < all.size(); i += 2) out.push_back(static_cast<uint8_t>(std::stoul(all.substr(i, 2), nullptr, 16)));
  return out;
}

// Splits a complete wire frame and decodes its single chunk.
Frame DecodeWire(const Bytes& wire) {
  FrameSplitter s;
  s.Feed(wire);
  FrameSplitter::Chunk c;
  EXPECT_TRUE(s.Next(c));
  EXPECT_EQ(c.kind, FrameSplitter::Kind::kFrame);
  auto f = DecodeFrame(c.escaped);
  EXPECT_TRUE(f.ok()) << f.status().ToString();
  return f.ok() ? *f : Frame{};
}

const char* kFrameA =
    "7E 02 00 00 28 01 39 12 34 56 78 00 01"
    " 00 00 00 01 00 0C 00 03 01 75 88 59 07 09 E6 D1 00 0C 01 64 00 5A 24 05 20 08 30 15"
    " 01 04 00 01 7D 02 7D 01 30 01 1A 31 01 0C 86 7E";

TEST(Jt808Frame, EscapeOnlyExample) {
  Bytes content = Hex("30 7E 08 7D 55");
  Bytes wire = EscapeAndWrap(content);
  EXPECT_EQ(wire, Hex("7E 30 7D 02 08 7D 01 55 7E"));
  auto back = Unescape(std::span(wire).subspan(1, wire.size() - 2));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, content);
}

TEST(Jt808Frame, BadEscapeIsAnError) {
  auto r = Unescape(Hex("30 7D 03 08"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(), "bad escape 7D 03 at byte 1");
  EXPECT_FALSE(Unescape(Hex("30 7D")).ok());
}

TEST(Jt808Frame, VectorA_2013LocationWithSos) {
  Frame f = DecodeWire(Hex(kFrameA));
  EXPECT_EQ(f.header.msg_id, 0x0200);
  EXPECT_FALSE(f.header.v2019);
  EXPECT_EQ(f.header.phone, "13912345678");
  EXPECT_EQ(f.header.serial, 1);
  ASSERT_EQ(f.body.size(), 40u);
  auto loc = ParseLocation(f.body);
  ASSERT_TRUE(loc.ok()) << loc.status().ToString();
  EXPECT_TRUE(loc->alarm_set(alarm_bit::kSos));
  EXPECT_TRUE(loc->acc_on());
  EXPECT_TRUE(loc->positioned());
  EXPECT_DOUBLE_EQ(loc->lat, 24.479833);
  EXPECT_DOUBLE_EQ(loc->lon, 118.089425);
  EXPECT_EQ(loc->altitude_m, 12);
  EXPECT_DOUBLE_EQ(loc->speed_kmh, 35.6);
  EXPECT_EQ(loc->heading_deg, 90);
  // 2024-05-20 08:30:15 GMT+8 = 2024-05-20 00:30:15 UTC = 1716165015 s
  EXPECT_EQ(loc->ts_ms, 1716165015000);
  ASSERT_TRUE(loc->odometer_km.has_value());
  EXPECT_DOUBLE_EQ(*loc->odometer_km, 9791.7);
  EXPECT_EQ(loc->signal_strength.value_or(0), 26);
  EXPECT_EQ(loc->satellites.value_or(0), 12);
}

TEST(Jt808Frame, VectorA_RoundTripsThroughTheBuilders) {
  Frame f = DecodeWire(Hex(kFrameA));
  auto loc = ParseLocation(f.body);
  ASSERT_TRUE(loc.ok());
  // Our builder writes items in id order 01, 30, 31 as in the vector.
  Bytes rebuilt = EncodeFrame(f.header, BuildLocation(*loc));
  EXPECT_EQ(rebuilt, Hex(kFrameA));
}

TEST(Jt808Frame, VectorB_PlatformResponse) {
  Header h;
  h.msg_id = msg::kPlatformResponse;
  h.phone = "13912345678";
  h.serial = 0x10;
  Bytes wire = EncodeFrame(h, BuildPlatformResponse(1, 0x0200, ResponseResult::kOk));
  EXPECT_EQ(wire, Hex("7E 80 01 00 05 01 39 12 34 56 78 00 10 00 01 02 00 00 A7 7E"));
}

TEST(Jt808Frame, VectorC_RegisterResponse) {
  Header h;
  h.msg_id = msg::kRegisterResponse;
  h.phone = "13912345678";
  h.serial = 0x11;
  Bytes wire = EncodeFrame(h, BuildRegisterResponse(2, RegisterResult::kOk, "AUTH1234"));
  EXPECT_EQ(wire, Hex("7E 81 00 00 0B 01 39 12 34 56 78 00 11 00 02 00 41 55 54 48 31 32 33 34 A5 7E"));
}

TEST(Jt808Frame, VectorD_2019Heartbeat) {
  Frame f = DecodeWire(Hex("7E 00 02 40 00 01 00 00 00 00 01 39 12 34 56 78 00 03 70 7E"));
  EXPECT_EQ(f.header.msg_id, msg::kHeartbeat);
  EXPECT_TRUE(f.header.v2019);
  EXPECT_EQ(f.header.proto_version, 1);
  EXPECT_EQ(f.header.phone, "13912345678");
  EXPECT_EQ(f.header.phone_bcd.size(), 10u);
  EXPECT_EQ(f.header.serial, 3);
  EXPECT_TRUE(f.body.empty());
  // Replies echo the 2019 header with its BCD[10] phone.
  Bytes again = EncodeFrame(f.header, {});
  EXPECT_EQ(again, Hex("7E 00 02 40 00 01 00 00 00 00 01 39 12 34 56 78 00 03 70 7E"));
}

TEST(Jt808Frame, VectorE_2019Authentication) {
  Frame f = DecodeWire(Hex(
      "7E 01 02 40 2C 01 00 00 00 00 01 39 12 34 56 78 00 04 08 41 55 54 48 31 32 33 34 38 36 31 32 "
      "33 34 35 36 37 38 39 30 31 32 33 56 31 2E 30 2E 30 00 00 00 00 00 00 00 00 00 00 00 00 00 00 06 7E"));
  EXPECT_EQ(f.header.msg_id, msg::kAuthenticate);
  auto a = ParseAuthentication(f.body, f.header.v2019);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->code, "AUTH1234");
  EXPECT_EQ(a->imei, "861234567890123");
  EXPECT_EQ(a->software, "V1.0.0");
  EXPECT_EQ(BuildAuthentication(*a, true), f.body);
}

TEST(Jt808Frame, VectorF_2013Heartbeat) {
  Frame f = DecodeWire(Hex("7E 00 02 00 00 01 39 12 34 56 78 00 02 30 7E"));
  EXPECT_EQ(f.header.msg_id, msg::kHeartbeat);
  EXPECT_EQ(f.header.serial, 2);
}

TEST(Jt808Frame, PublicVectorSmallChi2013Location) {
  Frame f = DecodeWire(Hex(
      "7E 02 00 00 26 12 34 56 78 90 12 00 7D 02 00 00 00 01 00 00 00 02 00 BA 7F 0E 07 E4 F1 1C 00 28 "
      "00 3C 00 00 18 10 15 10 10 10 01 04 00 00 00 64 02 02 00 7D 01 13 7E"));
  EXPECT_EQ(f.header.phone, "123456789012");
  EXPECT_EQ(f.header.serial, 0x007E);
  auto loc = ParseLocation(f.body);
  ASSERT_TRUE(loc.ok()) << loc.status().ToString();
  EXPECT_DOUBLE_EQ(loc->lat, 12.222222);
  EXPECT_DOUBLE_EQ(loc->lon, 132.444444);
  EXPECT_EQ(loc->altitude_m, 40);
  EXPECT_DOUBLE_EQ(loc->speed_kmh, 6.0);
  EXPECT_EQ(loc->ts_ms, 1539569410000);  // 2018-10-15 10:10:10 GMT+8
  EXPECT_DOUBLE_EQ(loc->odometer_km.value_or(0), 10.0);
  EXPECT_DOUBLE_EQ(loc->fuel_l.value_or(0), 12.5);
}

TEST(Jt808Frame, PublicVectorXtream2019Location) {
  Frame f = DecodeWire(Hex(
      "7e02004026010000000001391234432900000000006f0000001601dc9a0707456246007b004200032501292233440202006401040000000c417e"));
  EXPECT_TRUE(f.header.v2019);
  auto loc = ParseLocation(f.body);
  ASSERT_TRUE(loc.ok()) << loc.status().ToString();
  // The vector's status word is 0x16: bit 2 (south) is set, so the standard reads it as
  // 31.234567 S. The raw DWORD is what the dossier lists.
  EXPECT_EQ(loc->status, 0x16u);
  EXPECT_DOUBLE_EQ(loc->lat, -31.234567);
  EXPECT_DOUBLE_EQ(loc->lon, 121.987654);
  EXPECT_DOUBLE_EQ(loc->fuel_l.value_or(0), 10.0);
  EXPECT_DOUBLE_EQ(loc->odometer_km.value_or(0), 1.2);
  EXPECT_EQ(loc->ts_ms, 1738161224000);  // 2025-01-29 22:33:44 GMT+8
}

TEST(Jt808Frame, PublicVectorSmallChi2019ServerTime) {
  Frame f = DecodeWire(Hex("7E 80 04 40 06 01 00 00 00 00 12 34 56 78 90 12 00 01 19 12 02 10 10 10 51 7E"));
  EXPECT_EQ(f.header.msg_id, 0x8004);
  EXPECT_EQ(f.body.size(), 6u);
}

TEST(Jt808Frame, BadCheckCodeIsReported) {
  Bytes wire = Hex("7E 00 02 00 00 01 39 12 34 56 78 00 02 31 7E");
  FrameSplitter s;
  s.Feed(wire);
  FrameSplitter::Chunk c;
  ASSERT_TRUE(s.Next(c));
  auto f = DecodeFrame(c.escaped);
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().message(), "bad check code: got 31, computed 30");
}

TEST(Jt808Frame, LengthFieldMustMatchTheBody) {
  Header h;
  h.msg_id = msg::kHeartbeat;
  h.phone = "13912345678";
  Bytes content = Hex("00 02 00 03 01 39 12 34 56 78 00 02 AA BB");  // says 3, has 2
  content.push_back(XorCheck(content));
  Bytes wire = EscapeAndWrap(content);
  auto f = DecodeFrame(std::span(wire).subspan(1, wire.size() - 2));
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().message(), "body length field says 3 bytes, frame has 2");
}

TEST(Jt808Splitter, SplitAndGluedFramesAreReassembled) {
  Bytes a = Hex(kFrameA);
  Bytes f = Hex("7E 00 02 00 00 01 39 12 34 56 78 00 02 30 7E");
  Bytes stream;
  stream.insert(stream.end(), a.begin(), a.end());
  stream.insert(stream.end(), f.begin(), f.end());
  stream.insert(stream.end(), a.begin(), a.end());
  // Feed in every possible split of the stream into two pieces, and byte by byte.
  for (size_t cut = 0; cut <= stream.size(); ++cut) {
    FrameSplitter s;
    s.Feed(std::span(stream).first(cut));
    s.Feed(std::span(stream).subspan(cut));
    std::vector<uint16_t> ids;
    FrameSplitter::Chunk c;
    while (s.Next(c)) {
      auto fr = DecodeFrame(c.escaped);
      ASSERT_TRUE(fr.ok()) << "cut " << cut << ": " << fr.status().ToString();
      ids.push_back(fr->header.msg_id);
    }
    EXPECT_EQ(ids, (std::vector<uint16_t>{0x0200, 0x0002, 0x0200})) << "cut at " << cut;
  }
  FrameSplitter s;
  for (uint8_t b : stream) s.Feed(std::span(&b, 1));
  int n = 0;
  FrameSplitter::Chunk c;
  while (s.Next(c)) n++;
  EXPECT_EQ(n, 3);
}

TEST(Jt808Splitter, SharedDelimiterBetweenFrames) {
  // Some terminals send 7E frame 7E frame 7E: one delimiter closes one frame and opens the next.
  Bytes stream = Hex("7E 00 02 00 00 01 39 12 34 56 78 00 02 30 7E 00 02 00 00 01 39 12 34 56 78 00 02 30 7E");
  FrameSplitter s;
  s.Feed(stream);
  int ok = 0;
  FrameSplitter::Chunk c;
  while (s.Next(c)) ok += DecodeFrame(c.escaped).ok();
  EXPECT_EQ(ok, 2);
}

TEST(Jt808Splitter, GarbageBeforeAFrameIsCountedAndSkipped) {
  Bytes stream = Hex("01 02 03 04 7E 00 02 00 00 01 39 12 34 56 78 00 02 30 7E");
  FrameSplitter s;
  s.Feed(stream);
  FrameSplitter::Chunk c;
  ASSERT_TRUE(s.Next(c));
  EXPECT_TRUE(DecodeFrame(c.escaped).ok());
  EXPECT_EQ(s.garbage_bytes(), 4u);
}

TEST(Jt808Splitter, EndlessGarbageOrAnEndlessFrameIsOversize) {
  FrameSplitter s(64);
  Bytes junk(65, 0x41);
  s.Feed(junk);
  FrameSplitter::Chunk c;
  ASSERT_TRUE(s.Next(c));
  EXPECT_EQ(c.kind, FrameSplitter::Kind::kOversize);

  FrameSplitter t(64);
  Bytes open = {0x7E};
  open.insert(open.end(), 100, 0x01);
  t.Feed(open);
  ASSERT_TRUE(t.Next(c));
  EXPECT_EQ(c.kind, FrameSplitter::Kind::kOversize);
  EXPECT_FALSE(t.Next(c));
}

TEST(Jt808Messages, TruncatedBodiesNeverCrash) {
  Frame f = DecodeWire(Hex(kFrameA));
  for (size_t n = 0; n < f.body.size(); ++n) {
    auto r = ParseLocation(std::span(f.body).first(n));
    if (n < 28) {
      EXPECT_FALSE(r.ok()) << n;
    }
    (void)ParseBatchLocation(std::span(f.body).first(n));
    (void)ParseRegistration(std::span(f.body).first(n), n % 2);
    (void)ParseAuthentication(std::span(f.body).first(n), true);
    (void)ParsePositionReply(std::span(f.body).first(n));
  }
  // Cut off inside the additional items: the items are checked against their lengths.
  auto cut = ParseLocation(std::span(f.body).first(31));
  ASSERT_FALSE(cut.ok());
  EXPECT_EQ(cut.status().message(), "additional item 01 says 4 bytes, 1 left");
}

TEST(Jt808Messages, HeaderTruncationsAreErrors) {
  Bytes content = Hex("02 00 00 28 01 39 12 34");
  for (size_t n = 0; n <= content.size(); ++n) {
    Bytes part(content.begin(), content.begin() + static_cast<long>(n));
    part.push_back(XorCheck(part));
    EXPECT_FALSE(DecodeFrame(part).ok()) << n;
  }
}

TEST(Jt808Messages, InvalidTimeIsRejected) {
  auto r = TimeFromBcd(Hex("24 13 20 08 30 15"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(), "time 2024-13-20 08:30:15 is not a valid date");
  EXPECT_FALSE(TimeFromBcd(Hex("23 02 29 00 00 00")).ok());
  EXPECT_TRUE(TimeFromBcd(Hex("24 02 29 00 00 00")).ok());
  EXPECT_FALSE(TimeFromBcd(Hex("24 0A 20 08 30 15")).ok());
}

TEST(Jt808Messages, TimeRoundTripsAcrossTheChinaDateLine) {
  // 2024-12-31 20:00:00 UTC is 2025-01-01 04:00:00 in China.
  int64_t utc = 1735675200000;
  EXPECT_EQ(BcdFromTime(utc), Hex("25 01 01 04 00 00"));
  auto back = TimeFromBcd(BcdFromTime(utc));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, utc);
}

TEST(Jt808Messages, SouthAndWestHemispheresFromStatusBits) {
  Location l;
  l.lat = -33.8688;
  l.lon = -70.6693;
  l.ts_ms = 1716165015000;
  l.status = 1u << status_bit::kPositioned;
  auto back = ParseLocation(BuildLocation(l));
  ASSERT_TRUE(back.ok());
  EXPECT_DOUBLE_EQ(back->lat, -33.8688);
  EXPECT_DOUBLE_EQ(back->lon, -70.6693);
}

TEST(Jt808Messages, BatchWithABadPointKeepsTheOthers) {
  Location a, b;
  a.ts_ms = 1716165015000;
  b.ts_ms = 1716165020000;
  Bytes body = BuildBatchLocation({a, b}, true);
  auto batch = ParseBatchLocation(body);
  ASSERT_TRUE(batch.ok());
  EXPECT_TRUE(batch->backfill);
  EXPECT_EQ(batch->points.size(), 2u);
  // Corrupt the month of the first point: it is skipped with a reason, the second survives.
  body[3 + 2 + 22 + 1] = 0x13;
  batch = ParseBatchLocation(body);
  ASSERT_TRUE(batch.ok());
  ASSERT_EQ(batch->points.size(), 1u);
  EXPECT_EQ(batch->points[0].ts_ms, b.ts_ms);
  ASSERT_EQ(batch->bad_points.size(), 1u);
  // Count larger than what is there.
  body[1] = 5;
  EXPECT_FALSE(ParseBatchLocation(body).ok());
}

TEST(Jt808Messages, RegistrationBothEditionsWithAGbkPlate) {
  Registration r;
  r.province = 35;
  r.city = 200;
  r.maker = "SANI1";
  r.model = "HW-TRK-9";
  r.terminal_id = "T000042";
  r.plate_color = 2;
  r.plate = "闽D·H1234";
  for (bool v2019 : {false, true}) {
    Bytes body = BuildRegistration(r, v2019);
    auto back = ParseRegistration(body, v2019);
    ASSERT_TRUE(back.ok()) << back.status().ToString();
    EXPECT_EQ(back->maker, r.maker);
    EXPECT_EQ(back->model, r.model);
    EXPECT_EQ(back->terminal_id, r.terminal_id);
    EXPECT_EQ(back->plate, r.plate);
  }
}

TEST(Jt808Messages, TextMessageIsGbk) {
  auto t = BuildTextMessage("请到3号垃圾屋", false);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ((*t)[0], 0x0C);
  // 请 in GBK is C7 EB.
  EXPECT_EQ((*t)[1], 0xC7);
  EXPECT_EQ((*t)[2], 0xEB);
  auto bad = BuildTextMessage(std::string("\xff\xfe"), false);
  EXPECT_FALSE(bad.ok());
}

TEST(Jt808Messages, SetParamsLayout) {
  Bytes b = BuildSetParams({{0x0029, 30}});
  EXPECT_EQ(b, Hex("01 00 00 00 29 04 00 00 00 1E"));
  EXPECT_EQ(ParamId("report_interval_s").value_or(0), 0x0029u);
  EXPECT_FALSE(ParamId("nonsense").has_value());
}

}  // namespace
}  // namespace sanigate::dev::jt808
