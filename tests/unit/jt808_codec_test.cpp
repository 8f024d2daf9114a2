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
  EXPECT_EQ(bad.status().message(), "text is not valid UTF-8 (byte 0)");
}

TEST(Jt808Messages, TextErrorsSayWhatIsWrongAndTheLimitOfTheEdition) {
  // Valid UTF-8, but GBK has no code for an emoji: say so, not "not valid UTF-8".
  auto emoji = BuildTextMessage("SOS \xf0\x9f\x9a\xa8 received", false);
  EXPECT_EQ(emoji.status().message(), "text has a character GBK cannot encode (U+1F6A8 at byte 4)");
  // The body holds 1023 bytes: flags + 1022 text bytes in 2013, flags + type + 1021 in 2019.
  EXPECT_TRUE(BuildTextMessage(std::string(1022, 'a'), false).ok());
  EXPECT_EQ(BuildTextMessage(std::string(1023, 'a'), false).status().message(),
            "text is 1023 bytes in GBK; a message holds at most 1022");
  EXPECT_TRUE(BuildTextMessage(std::string(1021, 'a'), true).ok());
  EXPECT_EQ(BuildTextMessage(std::string(1022, 'a'), true).status().message(),
            "text is 1022 bytes in GBK; a message holds at most 1021");
}

TEST(Jt808Messages, SetParamsLayout) {
  Bytes b = BuildSetParams({{0x0029, 30}});
  EXPECT_EQ(b, Hex("01 00 00 00 29 04 00 00 00 1E"));
  EXPECT_EQ(ParamId("report_interval_s").value_or(0), 0x0029u);
  EXPECT_FALSE(ParamId("nonsense").has_value());
}

// ---- Firmware: 0x8108 upgrade package, 0x0108 upgrade result, 0x8107/0x0107 attributes ----

// Public vector (hylexus/xtream-codec, BuiltinMessage8108Test, 2013): type 0x34 (BeiDou module),
// maker "12345", version "v-1.2.3", package 01 02 03 04; phone 013912344323, serial 0.
//   81 08 | 00 16 (len 22) | 01 39 12 34 43 23 | 00 00 |
//   34 | 31 32 33 34 35 | 07 | 76 2D 31 2E 32 2E 33 | 00 00 00 04 | 01 02 03 04 | check 88
TEST(Jt808Firmware, PublicVectorXtream2013UpgradePackage) {
  UpgradePackage p{upgrade_type::kBeidouModule, "12345", "v-1.2.3", {1, 2, 3, 4}};
  auto body = BuildUpgradePackage(p, false);
  ASSERT_TRUE(body.ok()) << body.status().ToString();
  EXPECT_EQ(*body, Hex("34 31 32 33 34 35 07 76 2D 31 2E 32 2E 33 00 00 00 04 01 02 03 04"));
  Header h;
  h.msg_id = msg::kUpgradePackage;
  h.phone = "13912344323";
  h.serial = 0;
  EXPECT_EQ(EncodeFrame(h, *body), Hex("7e81080016013912344323000034313233343507762d312e322e330000000401020304887e"));
  auto back = ParseUpgradePackage(*body, false);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->type, 0x34);
  EXPECT_EQ(back->maker, "12345");
  EXPECT_EQ(back->version, "v-1.2.3");
  EXPECT_EQ(back->package, Bytes({1, 2, 3, 4}));
}

// 2019: the manufacturer id is BYTE[11] (as in the 2019 0x0100), NUL-padded. Hand-computed:
//   00 (terminal) | 53 41 4E 49 31 + 6 x 00 ("SANI1") | 05 | 32 2E 31 2E 30 ("2.1.0") |
//   00 00 00 02 | AB CD                                       = 1 + 11 + 1 + 5 + 4 + 2 = 24 bytes
// 2013: the same with the 5-byte field (no padding for "SANI1")  = 18 bytes.
TEST(Jt808Firmware, UpgradePackageBothEditions) {
  UpgradePackage p{upgrade_type::kTerminal, "SANI1", "2.1.0", {0xAB, 0xCD}};
  auto b19 = BuildUpgradePackage(p, true);
  ASSERT_TRUE(b19.ok());
  EXPECT_EQ(*b19, Hex("00 53 41 4E 49 31 00 00 00 00 00 00 05 32 2E 31 2E 30 00 00 00 02 AB CD"));
  auto b13 = BuildUpgradePackage(p, false);
  ASSERT_TRUE(b13.ok());
  EXPECT_EQ(*b13, Hex("00 53 41 4E 49 31 05 32 2E 31 2E 30 00 00 00 02 AB CD"));
  // A terminal that registered no maker gets five (eleven) NULs.
  auto none = BuildUpgradePackageHead(upgrade_type::kTerminal, "", "1", 0, false);
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(*none, Hex("00 00 00 00 00 00 01 31 00 00 00 00"));
  // The head is the body without the package: what the adapter streams the image after.
  auto head = BuildUpgradePackageHead(upgrade_type::kTerminal, "SANI1", "2.1.0", 2, true);
  ASSERT_TRUE(head.ok());
  EXPECT_EQ(*head, Bytes(b19->begin(), b19->end() - 2));
  auto back = ParseUpgradePackage(*b19, true);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->maker, "SANI1");
  EXPECT_EQ(back->version, "2.1.0");
  EXPECT_FALSE(ParseUpgradePackage(*b19, false).ok());  // read with the 2013 width: lengths disagree
}

TEST(Jt808Firmware, UpgradePackageErrors) {
  auto long_maker = BuildUpgradePackageHead(0, "TOO-LONG", "1.0", 0, false);
  ASSERT_FALSE(long_maker.ok());
  EXPECT_EQ(long_maker.status().message(), "manufacturer id \"TOO-LONG\" is longer than 5 bytes");
  EXPECT_TRUE(BuildUpgradePackageHead(0, "TOO-LONG", "1.0", 0, true).ok());  // 11 bytes in 2019
  EXPECT_EQ(BuildUpgradePackageHead(0, "", "", 0, false).status().message(), "the version is empty");
  EXPECT_EQ(BuildUpgradePackageHead(0, "", std::string(256, '9'), 0, false).status().message(),
            "version is 256 bytes; at most 255 fit");
  EXPECT_FALSE(BuildUpgradePackageHead(0, "", "\xff\xfe", 0, false).ok());  // no GBK form
  // GBK version: 固件 is B9 CC BC FE.
  auto gbk = BuildUpgradePackageHead(0, "", "固件2", 0, false);
  ASSERT_TRUE(gbk.ok());
  EXPECT_EQ(*gbk, Hex("00 00 00 00 00 00 05 B9 CC BC FE 32 00 00 00 00"));

  Bytes body = Hex("00 53 41 4E 49 31 05 32 2E 31 2E 30 00 00 00 02 AB CD");
  for (size_t n = 0; n < body.size(); ++n) EXPECT_FALSE(ParseUpgradePackage(std::span(body).first(n), false).ok()) << n;
  auto cut = ParseUpgradePackage(std::span(body).first(17), false);
  EXPECT_EQ(cut.status().message(), "package length field says 2 bytes, body has 1");
}

// Packets of at most N body bytes; the header of packet 1 of 3 (2013, 1000-byte body, phone
// 013912345678, serial 7), hand-computed: 81 08 | 23 E8 (bit 13 + length 0x3E8) | 01 39 12 34 56 78 |
// 00 07 | 00 03 (total) | 00 01 (index).
TEST(Jt808Firmware, SubpackagedUpgradeReassembles) {
  EXPECT_EQ(PacketCount(0, 1000), 1u);
  EXPECT_EQ(PacketCount(1000, 1000), 1u);
  EXPECT_EQ(PacketCount(1001, 1000), 2u);
  EXPECT_EQ(PacketCount(51200 + 16, 1000), 52u);

  UpgradePackage p{upgrade_type::kTerminal, "SANI1", "2.1.0", Bytes(2484)};  // + the 16-byte head = 2500
  for (size_t i = 0; i < p.package.size(); ++i) p.package[i] = static_cast<uint8_t>(i * 7);  // 7E and 7D inside
  auto body = BuildUpgradePackage(p, false);
  ASSERT_TRUE(body.ok());
  ASSERT_EQ(body->size(), 2500u);
  const size_t per = 1000;
  size_t n = PacketCount(body->size(), per);
  ASSERT_EQ(n, 3u);
  Bytes wire;
  for (size_t i = 0; i < n; ++i) {
    Header h;
    h.msg_id = msg::kUpgradePackage;
    h.phone = "13912345678";
    h.serial = static_cast<uint16_t>(7 + i);
    h.subpackage = true;
    h.packet_total = static_cast<uint16_t>(n);
    h.packet_index = static_cast<uint16_t>(i + 1);
    size_t off = i * per, len = std::min(per, body->size() - off);
    Bytes f = EncodeFrame(h, std::span(*body).subspan(off, len));
    if (i == 0) {
      auto content = Unescape(std::span(f).subspan(1, f.size() - 2));
      ASSERT_TRUE(content.ok());
      EXPECT_EQ(Bytes(content->begin(), content->begin() + 16), Hex("81 08 23 E8 01 39 12 34 56 78 00 07 00 03 00 01"));
    }
    wire.insert(wire.end(), f.begin(), f.end());
  }
  FrameSplitter splitter(4096);
  splitter.Feed(wire);
  FrameSplitter::Chunk c;
  Bytes whole;
  uint16_t expect_index = 1;
  while (splitter.Next(c)) {
    auto f = DecodeFrame(c.escaped);
    ASSERT_TRUE(f.ok()) << f.status().ToString();
    EXPECT_TRUE(f->header.subpackage);
    EXPECT_EQ(f->header.packet_total, 3);
    EXPECT_EQ(f->header.packet_index, expect_index);
    EXPECT_EQ(f->header.serial, 6 + expect_index);
    expect_index++;
    whole.insert(whole.end(), f->body.begin(), f->body.end());
  }
  EXPECT_EQ(expect_index, 4);
  auto back = ParseUpgradePackage(whole, false);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->package, p.package);
}

// 0x0108, 2013, phone 013912345678, serial 0x2A, body 00 00 (terminal, success). Check code:
// 01^08^00^02^01^39^12^34^56^78^00^2A^00^00 = 11.
TEST(Jt808Firmware, UpgradeResult) {
  Frame f = DecodeWire(Hex("7E 01 08 00 02 01 39 12 34 56 78 00 2A 00 00 11 7E"));
  EXPECT_EQ(f.header.msg_id, msg::kUpgradeResult);
  auto r = ParseUpgradeResult(f.body);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->type, upgrade_type::kTerminal);
  EXPECT_EQ(r->result, upgrade_result::kSuccess);
  auto failed = ParseUpgradeResult(Hex("34 01"));
  ASSERT_TRUE(failed.ok());
  EXPECT_EQ(failed->type, upgrade_type::kBeidouModule);
  EXPECT_EQ(failed->result, upgrade_result::kFailed);
  EXPECT_EQ(ParseUpgradeResult(Hex("00 02"))->result, upgrade_result::kCancelled);
  EXPECT_EQ(BuildUpgradeResult({upgrade_type::kIcCardReader, 2}), Hex("0C 02"));
  auto short_body = ParseUpgradeResult(Hex("00"));
  ASSERT_FALSE(short_body.ok());
  EXPECT_EQ(short_body.status().message(), "upgrade result body of 1 bytes is shorter than 2 (type, result)");
  EXPECT_FALSE(ParseUpgradeResult({}).ok());
}

// 0x8107 has an empty body. 2013, phone 013912345678, serial 5: check 81^07^00^00^01^39^12^34^56^78^00^05
// = B3. 2019 public vector (hylexus/xtream-codec mock data): phone 00000000013912344329, serial 0.
TEST(Jt808Firmware, QueryAttributesFrames) {
  EXPECT_TRUE(BuildQueryAttributes().empty());
  Header h;
  h.msg_id = msg::kQueryAttributes;
  h.phone = "13912345678";
  h.serial = 5;
  EXPECT_EQ(EncodeFrame(h, BuildQueryAttributes()), Hex("7E 81 07 00 00 01 39 12 34 56 78 00 05 B3 7E"));
  Header h19;
  h19.msg_id = msg::kQueryAttributes;
  h19.v2019 = true;
  h19.proto_version = 1;
  h19.phone = "13912344329";
  h19.serial = 0;
  EXPECT_EQ(EncodeFrame(h19, BuildQueryAttributes()), Hex("7e8107400001000000000139123443290000b37e"));
}

// 0x0107, 2013, hand-computed (59 bytes):
//   00 04 (freight) | 53 41 4E 49 31 ("SANI1") | 53 49 4D 2D 38 30 38 ("SIM-808") + 13 x 00 |
//   54 33 34 35 36 37 38 ("T345678") | 89 86 00 12 34 56 78 90 12 34 (ICCID BCD) |
//   06 48 57 2D 31 2E 30 ("HW-1.0") | 05 32 2E 31 2E 30 ("2.1.0") | 03 (GPS+BeiDou) | 01 (GPRS)
const char* kAttrs2013 =
    "00 04 53 41 4E 49 31 53 49 4D 2D 38 30 38 00 00 00 00 00 00 00 00 00 00 00 00 00"
    " 54 33 34 35 36 37 38 89 86 00 12 34 56 78 90 12 34"
    " 06 48 57 2D 31 2E 30 05 32 2E 31 2E 30 03 01";

TEST(Jt808Firmware, TerminalAttributes2013) {
  Bytes body = Hex(kAttrs2013);
  ASSERT_EQ(body.size(), 59u);
  auto a = ParseTerminalAttributes(body, false);
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_EQ(a->terminal_type, 4);
  EXPECT_EQ(a->maker, "SANI1");
  EXPECT_EQ(a->model, "SIM-808");
  EXPECT_EQ(a->terminal_id, "T345678");
  EXPECT_EQ(a->iccid, "89860012345678901234");
  EXPECT_EQ(a->hw_version, "HW-1.0");
  EXPECT_EQ(a->fw_version, "2.1.0");
  EXPECT_EQ(a->gnss, 3);
  EXPECT_EQ(a->comm, 1);
  auto built = BuildTerminalAttributes(*a, false);
  ASSERT_TRUE(built.ok());
  EXPECT_EQ(*built, body);

  // Every truncation is an error, with the field that ran out.
  for (size_t n = 0; n < body.size(); ++n) EXPECT_FALSE(ParseTerminalAttributes(std::span(body).first(n), false).ok()) << n;
  EXPECT_EQ(ParseTerminalAttributes(std::span(body).first(10), false).status().message(),
            "terminal attributes body of 10 bytes is shorter than 45 (fixed fields and the hardware version length)");
  EXPECT_EQ(ParseTerminalAttributes(std::span(body).first(51), false).status().message(),
            "terminal attributes body ends before the firmware version length");
  EXPECT_EQ(ParseTerminalAttributes(std::span(body).first(55), false).status().message(),
            "firmware version length 5 runs past the body (3 bytes left)");
  EXPECT_EQ(ParseTerminalAttributes(std::span(body).first(58), false).status().message(),
            "terminal attributes body ends before the GNSS and communication attributes");
  // Vendor bytes after a complete body are tolerated.
  Bytes longer = body;
  longer.push_back(0xEE);
  EXPECT_EQ(ParseTerminalAttributes(longer, false)->fw_version, "2.1.0");
}

// 2019 public vector (hylexus/xtream-codec BuiltinMessage0107V2019Test): type 0x0042, maker BYTE[5]
// "12345", model BYTE[30], terminal id BYTE[30], ICCID 11112233445566778899, hw "hd-v1.2.3",
// fw "fm-v3.2.1", GNSS 3, comm 2; body length 0x63 = 2+5+30+30+10+1+9+1+9+2 = 99.
TEST(Jt808Firmware, TerminalAttributes2019) {
  Frame f = DecodeWire(Hex(
      "7e0107406301000000000139123443290000004231323334357465726d696e616c547970653132333435363738313131313132"
      "32323232313233343536373839303132333435363738393031323334353637383930111122334455667788990968642d76312e"
      "322e3309666d2d76332e322e310302137e"));
  EXPECT_TRUE(f.header.v2019);
  EXPECT_EQ(f.header.msg_id, msg::kTerminalAttributes);
  auto a = ParseTerminalAttributes(f.body, true);
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_EQ(a->terminal_type, 0x42);
  EXPECT_EQ(a->maker, "12345");
  EXPECT_EQ(a->model, "terminalType123456781111122222");
  EXPECT_EQ(a->terminal_id, "123456789012345678901234567890");
  EXPECT_EQ(a->iccid, "11112233445566778899");
  EXPECT_EQ(a->hw_version, "hd-v1.2.3");
  EXPECT_EQ(a->fw_version, "fm-v3.2.1");
  EXPECT_EQ(a->gnss, 3);
  EXPECT_EQ(a->comm, 2);
  auto built = BuildTerminalAttributes(*a, true);
  ASSERT_TRUE(built.ok());
  EXPECT_EQ(*built, f.body);

  // The same answer from a terminal that widens the maker to 11 bytes (as in its 2019 0x0100).
  Bytes wide = f.body;
  wide.insert(wide.begin() + 7, 6, 0x00);
  auto w = ParseTerminalAttributes(wide, true);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  EXPECT_EQ(w->maker, "12345");
  EXPECT_EQ(w->model, "terminalType123456781111122222");
  EXPECT_EQ(w->fw_version, "fm-v3.2.1");

  // The 2013 layout of the same terminal (model 20, id 7) is a different body.
  TerminalAttributes t13 = *a;
  t13.model = "M";
  t13.terminal_id = "ID";
  auto b13 = BuildTerminalAttributes(t13, false);
  ASSERT_TRUE(b13.ok());
  EXPECT_EQ(b13->size(), 99u - 10 - 23);
  EXPECT_FALSE(ParseTerminalAttributes(*b13, true).ok());
  EXPECT_EQ(ParseTerminalAttributes(*b13, false)->fw_version, "fm-v3.2.1");
  // A GBK firmware version.
  TerminalAttributes g = *a;
  g.fw_version = "固件2";
  auto gb = BuildTerminalAttributes(g, true);
  ASSERT_TRUE(gb.ok());
  EXPECT_EQ(ParseTerminalAttributes(*gb, true)->fw_version, "固件2");
}

}  // namespace
}  // namespace sanigate::dev::jt808
