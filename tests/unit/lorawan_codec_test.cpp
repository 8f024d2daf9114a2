// LoRaWAN codecs against the verified vectors of protocols.md §2 and §3.1 (V1-V6, intermediates,
// the lora-packet library vector), RFC 4493 AES-CMAC, counter wrap and replay, forged MICs,
// truncated and malformed input (no crash), band plans and declarative payload layouts.
#include <gtest/gtest.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "lorawan/band_plan.h"
#include "lorawan/chirpstack_uplink.h"
#include "lorawan/lorawan_crypto.h"
#include "lorawan/lorawan_frame.h"
#include "lorawan/payload_codec.h"
#include "lorawan/semtech_udp.h"

namespace sanigate::dev::lorawan {
namespace {

Bytes H(std::string_view hex) {
  auto b = ParseHex(hex);
  EXPECT_TRUE(b.ok()) << b.status().ToString();
  return b.ok() ? *b : Bytes{};
}
Key K(std::string_view hex) {
  auto k = ParseKey(hex);
  EXPECT_TRUE(k.ok()) << k.status().ToString();
  return k.ok() ? *k : Key{};
}
std::string Hx(std::span<const uint8_t> b) { return ToHex(b); }
// The value of a result that must be ok (a failed EXPECT and a default value otherwise).
template <class T>
T V(Result<T> r) {
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return r.ok() ? std::move(r).value() : T{};
}

// protocols.md §3.1: DevAddr 0x260B1234; keys of V1-V3.
constexpr uint32_t kDevAddr = 0x260B1234;
const Key kNwk = K("2B7E151628AED2A6ABF7158809CF4F3C");
const Key kApp = K("000102030405060708090A0B0C0D0E0F");
const SessionKeys kKeys{kNwk, kApp};
const Key kAppKey = K("00112233445566778899AABBCCDDEEFF");  // V4/V5

// ---- hex helpers -------------------------------------------------------------------------------

TEST(LorawanHexTest, KeysEuisAndDevAddrsParse) {
  EXPECT_EQ(Hx(kNwk), "2B7E151628AED2A6ABF7158809CF4F3C");
  EXPECT_EQ(V(ParseEui("0102030405060708")), 0x0102030405060708u);
  EXPECT_EQ(V(ParseEui("a1b2c3d4e5f60718")), 0xA1B2C3D4E5F60718u);
  EXPECT_EQ(V(ParseDevAddr("260B1234")), 0x260B1234u);
  EXPECT_EQ(EuiToHex(0xAA555A0000000101u), "AA555A0000000101");
}

TEST(LorawanHexTest, BadHexIsAnErrorWithThePosition) {
  EXPECT_EQ(ParseKey("2B7E", "app_key").status().message(),
            "app_key: expected 32 hex digits, got 4");
  EXPECT_EQ(ParseEui("01020304050607", "dev_eui").status().message(),
            "dev_eui: expected 16 hex digits, got 14");
  EXPECT_EQ(ParseDevAddr("260B12G4").status().message(),
            "dev_addr: 'G' at position 6 is not a hex digit");
  EXPECT_EQ(ParseHex("ABC").status().message(), "hex: odd number of hex digits (3)");
  EXPECT_EQ(ParseHex("").value().size(), 0u);
}

// ---- AES-CMAC, RFC 4493 §4 (key 2b7e1516 28aed2a6 abf71588 09cf4f3c) ---------------------------

TEST(LorawanCryptoTest, Rfc4493Example1EmptyMessage) {
  EXPECT_EQ(Hx(V(AesCmac(kNwk, {}))), "BB1D6929E95937287FA37D129B756746");
}

TEST(LorawanCryptoTest, Rfc4493Example2SixteenBytes) {
  EXPECT_EQ(Hx(V(AesCmac(kNwk, H("6bc1bee22e409f96e93d7e117393172a")))),
            "070A16B46B4D4144F79BDD9DD04A287C");
}

TEST(LorawanCryptoTest, Rfc4493Example3FortyBytes) {
  EXPECT_EQ(Hx(V(AesCmac(kNwk, H("6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51"
                                 "30c81c46a35ce411")))),
            "DFA66747DE9AE63030CA32611497C827");
}

TEST(LorawanCryptoTest, Rfc4493Example4SixtyFourBytes) {
  EXPECT_EQ(
      Hx(V(AesCmac(kNwk, H("6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51"
                           "30c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710")))),
      "51F0BEBF7E3B9D92FC49741779363CFE");
}

TEST(LorawanCryptoTest, AesEcbFips197AppendixC1) {
  // FIPS-197 C.1: key 000102..0f, plaintext 00112233..ff -> 69c4e0d8 6a7b0430 d8cdb780 70b4c55a.
  auto enc = AesEcbEncrypt(kApp, H("00112233445566778899aabbccddeeff"));
  EXPECT_EQ(Hx(*enc), "69C4E0D86A7B0430D8CDB78070B4C55A");
  EXPECT_EQ(Hx(V(AesEcbDecrypt(kApp, *enc))), "00112233445566778899AABBCCDDEEFF");
}

TEST(LorawanCryptoTest, EcbRejectsPartialBlocks) {
  EXPECT_EQ(AesEcbEncrypt(kApp, H("00112233")).status().message(),
            "AES-ECB input of 4 bytes is not a multiple of 16");
  EXPECT_TRUE(AesEcbEncrypt(kApp, {}).ok());
}

// ---- data frames: V1-V3, V6 and intermediates ---------------------------------------------------

TEST(LorawanFrameTest, V1IntermediatesS1) {
  // A1 = 01 00000000 00 34120B26 2A000000 00 01 -> S1 = 01D35D1E88E893F2CE80EDD16B102BE2
  auto s = AesEcbEncrypt(kApp, H("01000000000034120B262A0000000001"));
  EXPECT_EQ(Hx(*s), "01D35D1E88E893F2CE80EDD16B102BE2");
  // Encrypting zeros yields the key stream itself.
  EXPECT_EQ(Hx(V(CryptFrmPayload(kApp, Direction::kUp, kDevAddr, 42, Bytes(16, 0)))),
            "01D35D1E88E893F2CE80EDD16B102BE2");
}

TEST(LorawanFrameTest, V1ParseVerifyDecrypt) {
  Bytes phy = H("4034120B26802A000A00985DF8849DE74273");
  auto f = ParseDataFrame(phy);
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_EQ(f->mtype, MType::kUnconfirmedUp);
  EXPECT_EQ(f->dev_addr, kDevAddr);
  EXPECT_TRUE(f->fctrl.adr());
  EXPECT_FALSE(f->fctrl.ack());
  EXPECT_EQ(f->fctrl.fopts_len(), 0);
  EXPECT_EQ(f->fcnt16, 42);
  EXPECT_EQ(f->fport, 10);
  EXPECT_EQ(Hx(f->frm_payload), "00985DF884");
  EXPECT_EQ(Hx(f->mic), "9DE74273");
  EXPECT_TRUE(V(VerifyDataMic(*f, kNwk, 42)));
  EXPECT_EQ(Hx(V(DecryptFrmPayload(*f, kKeys, 42))), "014B00E60C");
}

TEST(LorawanFrameTest, V1B0BlockGivesTheMic) {
  // B0 = 49000000000034120B262A000000000E, then the 14-byte msg.
  Bytes in =
      H("49000000000034120B262A000000000E"
        "4034120B26802A000A00985DF884");
  auto cmac = AesCmac(kNwk, in);
  EXPECT_EQ(Hx(std::span<const uint8_t>(cmac->data(), 4)), "9DE74273");
}

TEST(LorawanFrameTest, V1Build) {
  DataFrameSpec s{MType::kUnconfirmedUp, kDevAddr, 42, kFCtrlAdr, {}, 10, H("014B00E60C")};
  EXPECT_EQ(Hx(V(BuildDataFrame(s, kKeys))), "4034120B26802A000A00985DF8849DE74273");
}

TEST(LorawanFrameTest, V2ConfirmedTwoBlocksNeedsTheUpperCounterHalf) {
  Bytes phy = H("8034120B2600050002F66FF58589B16EAC167B26E04B8EFE7CE65CF7B6F48E352A");
  auto f = ParseDataFrame(phy);
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(f->mtype, MType::kConfirmedUp);
  EXPECT_EQ(f->fcnt16, 5);
  EXPECT_EQ(f->fport, 2);
  auto c = ReconstructFCnt(f->fcnt16, 0x00010004);
  EXPECT_EQ(c.verdict, FCntVerdict::kNew);
  EXPECT_EQ(c.fcnt32, 0x00010005u);
  EXPECT_TRUE(V(VerifyDataMic(*f, kNwk, c.fcnt32)));
  EXPECT_FALSE(V(VerifyDataMic(*f, kNwk, 5)));  // upper half taken as 0: fails, as documented
  EXPECT_EQ(Hx(V(DecryptFrmPayload(*f, kKeys, c.fcnt32))),
            "00112233445566778899AABBCCDDEEFF01020304");
  // Intermediates: B0, S1, S2.
  auto mic = AesCmac(kNwk, H("49000000000034120B2605000100001D" + Hx(f->mic_input)));
  EXPECT_EQ(Hx(std::span<const uint8_t>(mic->data(), 4)), "F48E352A");
  EXPECT_EQ(Hx(V(CryptFrmPayload(kApp, Direction::kUp, kDevAddr, 0x10005, Bytes(32, 0)))),
            "F67ED7B6CDE408DB9EE28C5B87531083E75EF4B212C05203EBB5CEF1C66C77F7");
  DataFrameSpec s{MType::kConfirmedUp,
                  kDevAddr,
                  0x00010005,
                  0,
                  {},
                  2,
                  H("00112233445566778899AABBCCDDEEFF01020304")};
  EXPECT_EQ(Hx(V(BuildDataFrame(s, kKeys))), Hx(phy));
}

TEST(LorawanFrameTest, V3FPortZeroUsesTheNetworkKey) {
  Bytes phy = H("4034120B26002B0000864071D0C4");
  auto f = ParseDataFrame(phy);
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(f->fport, 0);
  EXPECT_TRUE(V(VerifyDataMic(*f, kNwk, 43)));
  EXPECT_EQ(Hx(V(DecryptFrmPayload(*f, kKeys, 43))), "02");  // LinkCheckReq
  DataFrameSpec s{MType::kUnconfirmedUp, kDevAddr, 43, 0, {}, 0, H("02")};
  EXPECT_EQ(Hx(V(BuildDataFrame(s, kKeys))), Hx(phy));
  // Decrypting with the AppSKey would be wrong: it gives another byte.
  EXPECT_NE(Hx(V(CryptFrmPayload(kApp, Direction::kUp, kDevAddr, 43, f->frm_payload))), "02");
}

TEST(LorawanFrameTest, LoraPacketLibraryVector) {
  Bytes phy = H("40F17DBE4900020001954378762B11FF0D");
  SessionKeys keys{K("44024241ed4ce9a68c6a8bc055233fd3"), K("ec925802ae430ca77fd3dd73cb2cc588")};
  auto f = ParseDataFrame(phy);
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(f->dev_addr, 0x49BE7DF1u);
  EXPECT_EQ(f->fcnt16, 2);
  EXPECT_EQ(f->fport, 1);
  EXPECT_TRUE(V(VerifyDataMic(*f, keys.nwk_s_key, 2)));
  auto plain = DecryptFrmPayload(*f, keys, 2);
  EXPECT_EQ(std::string(plain->begin(), plain->end()), "test");
}

TEST(LorawanFrameTest, ForgedMicIsRejected) {
  Bytes phy = H("4034120B26802A000A00985DF8849DE74273");
  for (size_t i = 0; i < phy.size(); ++i) {
    for (uint8_t bit : {0x01, 0x80}) {
      Bytes forged = phy;
      forged[i] ^= bit;
      auto f = ParseDataFrame(forged);
      if (!f.ok()) continue;  // e.g. the MHDR no longer says "data frame"
      EXPECT_FALSE(V(VerifyDataMic(*f, kNwk, f->fcnt16))) << "byte " << i << " bit " << int(bit);
    }
  }
  auto f = ParseDataFrame(phy);
  EXPECT_FALSE(V(VerifyDataMic(*f, kApp, 42)));            // wrong key
  EXPECT_FALSE(V(VerifyDataMic(*f, kNwk, 42 + 0x10000)));  // wrong upper half
}

TEST(LorawanFrameTest, TruncatedFramesOfEveryLengthAreErrorsNotCrashes) {
  Bytes phy = H("8034120B2600050002F66FF58589B16EAC167B26E04B8EFE7CE65CF7B6F48E352A");
  for (size_t n = 0; n < phy.size(); ++n) {
    auto f = ParseDataFrame(std::span<const uint8_t>(phy.data(), n));
    if (n < 12) {
      EXPECT_FALSE(f.ok()) << n;
      continue;
    }
    // Longer prefixes parse (the MIC is then the last four bytes) but never verify.
    ASSERT_TRUE(f.ok()) << n << ": " << f.status().ToString();
    EXPECT_FALSE(V(VerifyDataMic(*f, kNwk, 0x10005))) << n;
  }
  EXPECT_EQ(ParseDataFrame({}).status().message(), "empty PHYPayload");
  EXPECT_EQ(ParseDataFrame(std::span<const uint8_t>(phy.data(), 11)).status().message(),
            "data frame of 11 bytes is shorter than the 12-byte minimum (MHDR, FHDR, MIC)");
}

TEST(LorawanFrameTest, StructuralErrorsAreNamed) {
  EXPECT_EQ(ParseDataFrame(H("4134120B26002B0000864071D0C4")).status().message(),
            "MHDR 0x41: major version 1 is not LoRaWAN R1 (0)");
  EXPECT_EQ(ParseDataFrame(H("0008070605040302011807F6E5D4C3B2A12B1A3F417441")).status().message(),
            "MType join_request is not a data frame");
  // FOptsLen 5 with only 2 bytes before the MIC.
  EXPECT_EQ(ParseDataFrame(H("4034120B26052B000102AABBCCDD")).status().message(),
            "FOptsLen 5 runs past the frame (2 bytes before the MIC)");
  // FOptsLen 1 and FPort 0.
  EXPECT_EQ(ParseDataFrame(H("4034120B26012B00020086AABBCCDD")).status().message(),
            "FPort 0 with FOptsLen 1: MAC commands may be in FOpts or in FRMPayload, not both");
  EXPECT_FALSE(ParseDataFrame(Bytes(256, 0x40)).ok());
}

TEST(LorawanFrameTest, FOptsAndNoFPortParse) {
  // A downlink with FOpts = LinkCheckAns (02 0A 03) and no FPort, built then parsed.
  DataFrameSpec s{MType::kUnconfirmedDown,
                  kDevAddr,
                  7,
                  kFCtrlAck | kFCtrlFPending,
                  H("020A03"),
                  std::nullopt,
                  {}};
  auto phy = BuildDataFrame(s, kKeys);
  ASSERT_TRUE(phy.ok());
  auto f = ParseDataFrame(*phy);
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(f->mtype, MType::kUnconfirmedDown);
  EXPECT_EQ(f->direction(), Direction::kDown);
  EXPECT_TRUE(f->fctrl.ack());
  EXPECT_TRUE(f->fctrl.f_pending());
  EXPECT_EQ(Hx(f->fopts), "020A03");
  EXPECT_FALSE(f->fport.has_value());
  EXPECT_TRUE(f->frm_payload.empty());
  EXPECT_TRUE(V(VerifyDataMic(*f, kNwk, 7)));
  EXPECT_FALSE(V(VerifyDataMic(*f, kNwk, 8)));
}

TEST(LorawanFrameTest, AckDownlinkForAConfirmedUplink) {
  // Unconfirmed down, ACK bit, FCntDown 0x00010002, no FPort: 60 | DevAddr | 20 | 0200 | MIC.
  DataFrameSpec s{MType::kUnconfirmedDown, kDevAddr, 0x00010002, kFCtrlAck, {}, std::nullopt, {}};
  auto phy = BuildDataFrame(s, kKeys);
  ASSERT_TRUE(phy.ok());
  ASSERT_EQ(phy->size(), 12u);
  EXPECT_EQ(Hx(std::span<const uint8_t>(phy->data(), 8)), "6034120B26200200");
  // The MIC uses Dir = 1 and the full 32-bit FCntDown.
  auto mic = ComputeDataMic(kNwk, Direction::kDown, kDevAddr, 0x00010002,
                            std::span<const uint8_t>(phy->data(), 8));
  EXPECT_EQ(Hx(*mic), Hx(std::span<const uint8_t>(phy->data() + 8, 4)));
  // With an application payload on FPort 5 the downlink key stream has Dir = 1.
  DataFrameSpec p{MType::kUnconfirmedDown, kDevAddr, 9, kFCtrlAck, {}, 5, H("0102")};
  auto pd = ParseDataFrame(V(BuildDataFrame(p, kKeys)));
  ASSERT_TRUE(pd.ok());
  EXPECT_EQ(Hx(V(DecryptFrmPayload(*pd, kKeys, 9))), "0102");
  EXPECT_NE(Hx(V(CryptFrmPayload(kApp, Direction::kUp, kDevAddr, 9, pd->frm_payload))), "0102");
}

TEST(LorawanFrameTest, BuildRejectsBadSpecs) {
  DataFrameSpec s{MType::kJoinAccept, kDevAddr, 0, 0, {}, std::nullopt, {}};
  EXPECT_EQ(BuildDataFrame(s, kKeys).status().message(), "MType join_accept is not a data frame");
  s.mtype = MType::kUnconfirmedDown;
  s.payload = H("01");
  EXPECT_EQ(BuildDataFrame(s, kKeys).status().message(), "a payload needs an FPort");
  s.payload.clear();
  s.fopts = Bytes(16, 0);
  EXPECT_EQ(BuildDataFrame(s, kKeys).status().message(), "fopts of 16 bytes exceeds 15");
  s.fopts = H("02");
  s.fport = 0;
  EXPECT_EQ(BuildDataFrame(s, kKeys).status().message(),
            "FPort 0 with fopts: MAC commands may be in FOpts or in FRMPayload, not both");
  s.fopts.clear();
  s.fctrl_flags = 0x21;
  EXPECT_EQ(BuildDataFrame(s, kKeys).status().message(),
            "fctrl_flags 0x21 sets FOptsLen bits; FOptsLen comes from fopts");
  s.fctrl_flags = 0;
  s.fport = 1;
  s.payload = Bytes(243, 0);
  EXPECT_EQ(BuildDataFrame(s, kKeys).status().message(), "frame of 256 bytes is longer than 255");
}

// ---- 32-bit counter reconstruction
// ---------------------------------------------------------------

TEST(LorawanFCntTest, FirstFrameOfASessionTakesTheLowBits) {
  EXPECT_EQ(ReconstructFCnt(0, std::nullopt).verdict, FCntVerdict::kNew);
  EXPECT_EQ(ReconstructFCnt(1234, std::nullopt).fcnt32, 1234u);
}

TEST(LorawanFCntTest, WrapOfTheLowHalf) {
  auto c = ReconstructFCnt(0x0000, 0x0000FFFF);
  EXPECT_EQ(c.verdict, FCntVerdict::kNew);
  EXPECT_EQ(c.fcnt32, 0x00010000u);
  c = ReconstructFCnt(0x0002, 0x0001FFFE);  // lost 0x1FFFF..0x20001
  EXPECT_EQ(c.verdict, FCntVerdict::kNew);
  EXPECT_EQ(c.fcnt32, 0x00020002u);
  c = ReconstructFCnt(0x1000, 0x0000F000);  // across the wrap, gap 0x2000 < 16384
  EXPECT_EQ(c.verdict, FCntVerdict::kNew);
  EXPECT_EQ(c.fcnt32, 0x00011000u);
}

TEST(LorawanFCntTest, EqualIsARepeatAndLowerIsAReplay) {
  EXPECT_EQ(ReconstructFCnt(42, 42).verdict, FCntVerdict::kRepeat);
  EXPECT_EQ(ReconstructFCnt(42, 42).fcnt32, 42u);
  EXPECT_EQ(ReconstructFCnt(5, 0x00010005).verdict, FCntVerdict::kRepeat);
  auto c = ReconstructFCnt(41, 42);
  EXPECT_EQ(c.verdict, FCntVerdict::kReplay);
  EXPECT_EQ(c.fcnt32, 41u);
  EXPECT_EQ(ReconstructFCnt(0, 42).verdict, FCntVerdict::kReplay);
  c = ReconstructFCnt(0xFFFF, 0x00010005);  // from before the wrap
  EXPECT_EQ(c.verdict, FCntVerdict::kReplay);
  EXPECT_EQ(c.fcnt32, 0x0000FFFFu);
  EXPECT_EQ(ReconstructFCnt(20000, 100).verdict, FCntVerdict::kGapTooLarge);  // nothing behind
  // Half way round: nearer behind (or a tie) is a replay, nearer ahead a gap.
  EXPECT_EQ(ReconstructFCnt(0x8000, 0x00010000).verdict, FCntVerdict::kReplay);
  EXPECT_EQ(ReconstructFCnt(0x7FFF, 0x00010000).verdict, FCntVerdict::kGapTooLarge);
}

TEST(LorawanFCntTest, MaxGapBoundary) {
  auto c = ReconstructFCnt(static_cast<uint16_t>(100 + kMaxFCntGap - 1), 100);
  EXPECT_EQ(c.verdict, FCntVerdict::kNew);
  EXPECT_EQ(c.fcnt32, 100 + kMaxFCntGap - 1);
  EXPECT_EQ(ReconstructFCnt(static_cast<uint16_t>(100 + kMaxFCntGap), 100).verdict,
            FCntVerdict::kGapTooLarge);
}

TEST(LorawanFCntTest, TopOfTheCounterIsExhaustedNotWrapped) {
  auto c = ReconstructFCnt(0x0000, 0xFFFFFFFF);
  EXPECT_EQ(c.verdict, FCntVerdict::kExhausted);
  EXPECT_EQ(ReconstructFCnt(0xFFFF, 0xFFFFFFFE).fcnt32, 0xFFFFFFFFu);
}

// Issue 15 item 6: the gap limit is a setting; 0 is LoRaWAN 1.0.4's "no limit".
TEST(LorawanFCntTest, GapLimitIsAParameterAndZeroMeansNone) {
  EXPECT_EQ(ReconstructFCnt(20100, 100, kMaxFCntGap).verdict, FCntVerdict::kGapTooLarge);
  auto c = ReconstructFCnt(20100, 100, 30000);
  EXPECT_EQ(c.verdict, FCntVerdict::kNew);
  EXPECT_EQ(c.fcnt32, 20100u);
  c = ReconstructFCnt(20100, 100, 0);
  EXPECT_EQ(c.verdict, FCntVerdict::kNew);
  EXPECT_EQ(c.fcnt32, 20100u);
  // Without a limit every other 16 LSBs are ahead; only the MIC tells a replay (CheckUplink).
  c = ReconstructFCnt(41, 42, 0);
  EXPECT_EQ(c.verdict, FCntVerdict::kNew);
  EXPECT_EQ(c.fcnt32, 0x10029u);
  EXPECT_EQ(ReconstructFCnt(42, 42, 0).verdict, FCntVerdict::kRepeat);
  EXPECT_EQ(ReconstructFCnt(0, 0xFFFFFFFF, 0).verdict, FCntVerdict::kExhausted);
}

// Issue 15 item 5: an ABP session with no stored counter may be past 65535.
TEST(LorawanFCntTest, CandidatesWithoutASessionTryTheNextEpochs) {
  using V32 = std::vector<uint32_t>;
  EXPECT_EQ(FCntCandidatesWithoutSession(5, 0, 1), (V32{5}));
  EXPECT_EQ(FCntCandidatesWithoutSession(5, 0, 3), (V32{5, 0x10005, 0x20005}));
  // Never below the floor (a seeded counter); the search starts in the floor's epoch.
  EXPECT_EQ(FCntCandidatesWithoutSession(0x0001, 0x12345, 2), (V32{0x20001, 0x30001}));
  EXPECT_EQ(FCntCandidatesWithoutSession(0x2345, 0x12345, 2), (V32{0x12345, 0x22345}));
  // The top of the 32-bit counter ends the list.
  EXPECT_EQ(FCntCandidatesWithoutSession(7, 0xFFFE0000, 5), (V32{0xFFFE0007, 0xFFFF0007}));
  EXPECT_TRUE(FCntCandidatesWithoutSession(7, 0xFFFFFFF0, 5).empty());
  EXPECT_TRUE(FCntCandidatesWithoutSession(7, 0, 0).empty());
}

// An uplink of the V1 session with FCnt32 `fcnt` (FPort 10, two bytes), optionally with a MIC
// made with a key the forger guessed.
Bytes V1Uplink(uint32_t fcnt, uint8_t first_byte = 1, bool forged = false) {
  DataFrameSpec s;
  s.mtype = MType::kUnconfirmedUp;
  s.dev_addr = kDevAddr;
  s.fcnt32 = fcnt;
  s.fport = 10;
  s.payload = {first_byte, 0x4B};
  SessionKeys keys = kKeys;
  if (forged) keys.nwk_s_key[0] ^= 0x5A;
  return V(BuildDataFrame(s, keys));
}
UplinkCheck Check(const Bytes& phy, std::optional<uint32_t> last, FCntPolicy policy = {}) {
  return V(CheckUplink(V(ParseDataFrame(phy)), kKeys.nwk_s_key, last, policy));
}

// Issue 15 items 2, 5, 6, 7: every verdict is given only with a verified MIC, under the true
// 32-bit counter.
TEST(LorawanFCntTest, CheckUplinkVerifiesTheMicUnderTheTrueCounter) {
  auto c = Check(V1Uplink(43), 42);
  EXPECT_EQ(c.verdict, UplinkVerdict::kNew);
  EXPECT_EQ(c.fcnt32, 43u);
  EXPECT_EQ(Check(V1Uplink(43, 1, true), 42).verdict, UplinkVerdict::kBadMic);
  EXPECT_EQ(Check(V1Uplink(42), 42).verdict, UplinkVerdict::kRepeat);
  // Item 2: same counter, another payload, a guessed MIC: not a repeat.
  EXPECT_EQ(Check(V1Uplink(42, 9, true), 42).verdict, UplinkVerdict::kBadMic);
  // Item 7: a replay from before the 16-bit wrap verifies under its own counter, 0xFFFF.
  c = Check(V1Uplink(0xFFFF), 0x10001);
  EXPECT_EQ(c.verdict, UplinkVerdict::kReplay);
  EXPECT_EQ(c.fcnt32, 0xFFFFu);
  EXPECT_EQ(Check(V1Uplink(0xFFFF, 1, true), 0x10001).verdict, UplinkVerdict::kBadMic);
  // Item 6: beyond the gap limit an authentic frame is a gap, not a forgery; no limit accepts it.
  c = Check(V1Uplink(20100), 100);
  EXPECT_EQ(c.verdict, UplinkVerdict::kGapTooLarge);
  EXPECT_EQ(c.fcnt32, 20100u);
  EXPECT_EQ(Check(V1Uplink(20100, 1, true), 100).verdict, UplinkVerdict::kBadMic);
  c = Check(V1Uplink(20100), 100, {.max_gap = 0});
  EXPECT_EQ(c.verdict, UplinkVerdict::kNew);
  EXPECT_EQ(c.fcnt32, 20100u);
  // With no limit a replay looks "ahead" by its 16 bits; its MIC gives it away.
  c = Check(V1Uplink(99), 100, {.max_gap = 0});
  EXPECT_EQ(c.verdict, UplinkVerdict::kReplay);
  EXPECT_EQ(c.fcnt32, 99u);
  // Item 5: no counter yet; the device is at 70000 (epoch 1).
  EXPECT_EQ(Check(V1Uplink(70000), std::nullopt).verdict, UplinkVerdict::kBadMic);
  c = Check(V1Uplink(70000), std::nullopt, {.search_epochs = 4});
  EXPECT_EQ(c.verdict, UplinkVerdict::kNew);
  EXPECT_EQ(c.fcnt32, 70000u);
  // ... or far beyond the search, with a seeded floor near it.
  c = Check(V1Uplink(0x500010), std::nullopt, {.floor = 0x500000, .search_epochs = 1});
  EXPECT_EQ(c.verdict, UplinkVerdict::kNew);
  EXPECT_EQ(c.fcnt32, 0x500010u);
  // A frame just below the seeded floor is an old one, not a forgery.
  c = Check(V1Uplink(0x500001), std::nullopt, {.floor = 0x500002, .search_epochs = 2});
  EXPECT_EQ(c.verdict, UplinkVerdict::kReplay);
  EXPECT_EQ(c.fcnt32, 0x500001u);
  // The top of the counter: a device that wrapped to 0 signs with 0; the session is over.
  EXPECT_EQ(Check(V1Uplink(0), 0xFFFFFFFF).verdict, UplinkVerdict::kExhausted);
  EXPECT_EQ(Check(V1Uplink(0, 1, true), 0xFFFFFFFF).verdict, UplinkVerdict::kBadMic);
  EXPECT_EQ(Check(V1Uplink(0xFFFFFFFF), 0xFFFFFFFF).verdict, UplinkVerdict::kRepeat);
}

// ---- join: V4, V5 and the V5 session keys with V6 -----------------------------------------------

TEST(LorawanJoinTest, V4JoinRequest) {
  Bytes phy = H("0008070605040302011807F6E5D4C3B2A12B1A3F417441");
  auto r = ParseJoinRequest(phy);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->app_eui, 0x0102030405060708u);
  EXPECT_EQ(r->dev_eui, 0xA1B2C3D4E5F60718u);
  EXPECT_EQ(r->dev_nonce, 0x1A2B);
  EXPECT_EQ(Hx(r->mic), "3F417441");
  EXPECT_TRUE(V(VerifyJoinRequestMic(phy, kAppKey)));
  EXPECT_FALSE(V(VerifyJoinRequestMic(phy, kNwk)));
  EXPECT_EQ(Hx(V(BuildJoinRequest(*r, kAppKey))), Hx(phy));
  Bytes forged = phy;
  forged[17] ^= 1;  // another DevNonce
  EXPECT_FALSE(V(VerifyJoinRequestMic(forged, kAppKey)));
}

TEST(LorawanJoinTest, JoinRequestOfEveryWrongLengthIsAnError) {
  Bytes phy = H("0008070605040302011807F6E5D4C3B2A12B1A3F417441");
  for (size_t n = 0; n < phy.size(); ++n) {
    std::span<const uint8_t> p(phy.data(), n);
    EXPECT_FALSE(ParseJoinRequest(p).ok()) << n;
    EXPECT_FALSE(VerifyJoinRequestMic(p, kAppKey).ok()) << n;
  }
  phy.push_back(0);
  EXPECT_EQ(ParseJoinRequest(phy).status().message(), "join request of 24 bytes, expected 23");
}

TEST(LorawanJoinTest, V5JoinAcceptIsEncryptedWithAesDecrypt) {
  JoinAccept ja{0x123456, 0x000013, kDevAddr, 0x03, 1, std::nullopt};
  auto wire = BuildJoinAccept(ja, kAppKey);
  ASSERT_TRUE(wire.ok()) << wire.status().ToString();
  EXPECT_EQ(Hx(*wire), "205EB1A8395EED777A8AE8E077FE7FEE17");
  // The plain form with its MIC: AES-ECB encrypt undoes the server's decrypt.
  Bytes plain{0x20};
  auto dec = AesEcbEncrypt(kAppKey, std::span<const uint8_t>(*wire).subspan(1));
  plain.insert(plain.end(), dec->begin(), dec->end());
  EXPECT_EQ(Hx(plain), "2056341213000034120B260301F3BBC06D");
  auto opened = OpenJoinAccept(*wire, kAppKey);
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  EXPECT_EQ(opened->app_nonce, 0x123456u);
  EXPECT_EQ(opened->net_id, 0x13u);
  EXPECT_EQ(opened->dev_addr, kDevAddr);
  EXPECT_EQ(opened->dl_settings, 0x03);
  EXPECT_EQ(opened->rx_delay, 1);
  EXPECT_FALSE(opened->cf_list.has_value());
  EXPECT_EQ(OpenJoinAccept(*wire, kNwk).status().message(),
            "join accept MIC mismatch (wrong AppKey or corrupted)");
}

TEST(LorawanJoinTest, JoinAcceptWithCFListRoundTrips) {
  std::array<uint8_t, 16> cf{};
  for (size_t i = 0; i < cf.size(); ++i) cf[i] = static_cast<uint8_t>(i * 7);
  JoinAccept ja{0xABCDEF, 0x000001, 0x01020304, 0x12, 5, cf};
  auto wire = BuildJoinAccept(ja, kAppKey);
  ASSERT_EQ(wire->size(), 33u);
  auto opened = OpenJoinAccept(*wire, kAppKey);
  ASSERT_TRUE(opened.ok());
  EXPECT_EQ(opened->cf_list, cf);
  EXPECT_EQ(opened->dl_settings, 0x12);
  EXPECT_EQ(opened->rx_delay, 5);
  for (size_t n = 0; n < wire->size(); ++n)
    EXPECT_FALSE(OpenJoinAccept(std::span<const uint8_t>(wire->data(), n), kAppKey).ok()) << n;
}

TEST(LorawanJoinTest, JoinAcceptRejectsOutOfRangeFields) {
  EXPECT_EQ(BuildJoinAccept({0x1000000, 0, 0, 0, 1, {}}, kAppKey).status().message(),
            "app_nonce 16777216 exceeds 24 bits");
  EXPECT_EQ(BuildJoinAccept({0, 0x1000000, 0, 0, 1, {}}, kAppKey).status().message(),
            "net_id 16777216 exceeds 24 bits");
  EXPECT_EQ(BuildJoinAccept({0, 0, 0, 0x80, 1, {}}, kAppKey).status().message(),
            "dl_settings 0x80: bit 7 is RFU in LoRaWAN 1.0.x");
  EXPECT_EQ(BuildJoinAccept({0, 0, 0, 0, 16, {}}, kAppKey).status().message(),
            "rx_delay 16 is outside 0..15");
}

TEST(LorawanJoinTest, V5SessionKeysAndV6Uplink) {
  auto keys = DeriveSessionKeys(kAppKey, 0x123456, 0x000013, 0x1A2B);
  ASSERT_TRUE(keys.ok());
  EXPECT_EQ(Hx(keys->nwk_s_key), "398096E8BCB01B903C55F05422A14904");
  EXPECT_EQ(Hx(keys->app_s_key), "8B4C5CF380C115ADE95F740F3DECC4F2");
  Bytes phy = H("4034120B2600000001A624F68004A2");
  auto f = ParseDataFrame(phy);
  ASSERT_TRUE(f.ok());
  EXPECT_TRUE(V(VerifyDataMic(*f, keys->nwk_s_key, 0)));
  EXPECT_EQ(Hx(V(DecryptFrmPayload(*f, *keys, 0))), "4869");  // "Hi"
  DataFrameSpec s{MType::kUnconfirmedUp, kDevAddr, 0, 0, {}, 1, H("4869")};
  EXPECT_EQ(Hx(V(BuildDataFrame(s, *keys))), Hx(phy));
}

// ---- Semtech UDP: the protocols.md §2 exchange
// ---------------------------------------------------

Bytes Concat(const Bytes& head, std::string_view json) {
  Bytes out = head;
  out.insert(out.end(), json.begin(), json.end());
  return out;
}

constexpr uint64_t kGwEui = 0xAA555A0000000101;
const std::string kPushJson =
    R"({"rxpk":[{"time":"2024-05-20T00:30:15.123456Z","tmst":3512348611,"chan":0,"rfch":0,)"
    R"("freq":486.3,"stat":1,"modu":"LORA","datr":"SF7BW125","codr":"4/5","rssi":-57,)"
    R"("lsnr":9.8,"size":23,"data":"AAgHBgUEAwIBGAf25dTDsqErGj9BdEE="}]})";
const std::string kPullRespJson =
    R"({"txpk":{"imme":false,"tmst":3517348611,"freq":506.7,"rfch":0,"powe":17,"modu":"LORA",)"
    R"("datr":"SF7BW125","codr":"4/5","ipol":true,"size":17,"data":"IF6xqDle7Xd6iujgd/5/7hc="}})";

TEST(SemtechUdpTest, PushDataOfTheExampleCarriesTheV4JoinRequest) {
  Bytes d = Concat(H("023A7C00AA555A0000000101"), kPushJson);
  auto g = ParseDatagram(d);
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  EXPECT_EQ(g->version, 2);
  EXPECT_EQ(g->id, GwmpId::kPushData);
  EXPECT_EQ(Hx(g->token), "3A7C");
  EXPECT_EQ(g->gateway_eui, kGwEui);
  ASSERT_EQ(g->rxpk.size(), 1u);
  const Rxpk& p = g->rxpk[0];
  EXPECT_EQ(p.time, "2024-05-20T00:30:15.123456Z");
  EXPECT_EQ(p.tmst, 3512348611u);
  EXPECT_EQ(p.freq_hz, 486300000u);
  EXPECT_EQ(p.chan, 0u);
  EXPECT_EQ(p.rfch, 0u);
  EXPECT_EQ(p.stat, 1);
  EXPECT_EQ(p.modu, "LORA");
  EXPECT_EQ(p.lora, (LoraRate{7, 125}));
  EXPECT_EQ(p.codr, "4/5");
  EXPECT_EQ(p.rssi, -57);
  EXPECT_DOUBLE_EQ(*p.lsnr, 9.8);
  EXPECT_EQ(Hx(p.data), "0008070605040302011807F6E5D4C3B2A12B1A3F417441");
  EXPECT_TRUE(V(VerifyJoinRequestMic(p.data, kAppKey)));
  EXPECT_FALSE(g->stat.has_value());
  // The builder writes the same bytes back.
  EXPECT_EQ(Hx(V(BuildPushData(g->token, kGwEui, g->rxpk))), Hx(d));
}

TEST(SemtechUdpTest, AcksEchoTheToken) {
  EXPECT_EQ(Hx(BuildPushAck({0x3A, 0x7C})), "023A7C01");
  EXPECT_EQ(Hx(BuildPullAck({0xB1, 0x9F})), "02B19F04");
  auto pull = ParseDatagram(H("02B19F02AA555A0000000101"));
  ASSERT_TRUE(pull.ok());
  EXPECT_EQ(pull->id, GwmpId::kPullData);
  EXPECT_EQ(pull->gateway_eui, kGwEui);
  EXPECT_EQ(Hx(BuildPullData({0xB1, 0x9F}, kGwEui)), "02B19F02AA555A0000000101");
  EXPECT_EQ(ParseDatagram(H("023A7C01"))->id, GwmpId::kPushAck);
  EXPECT_EQ(ParseDatagram(H("02B19F04"))->id, GwmpId::kPullAck);
  // Version 1 forwarders are answered in version 1.
  EXPECT_EQ(ParseDatagram(H("01B19F02AA555A0000000101"))->version, 1);
  EXPECT_EQ(Hx(BuildPullAck({0xB1, 0x9F}, 1)), "01B19F04");
}

TEST(SemtechUdpTest, PullRespOfTheExampleCarriesTheV5JoinAccept) {
  // RX1 of a join accept on CN470: rx.tmst + 5 s, 486.3 MHz uplink -> 506.7 MHz.
  Txpk t;
  t.tmst = 3512348611u + 5'000'000u;
  t.freq_hz = V(Cn470().Rx1Frequency(486'300'000));
  t.powe = 17;
  t.rate = {7, 125};
  t.data = V(BuildJoinAccept({0x123456, 0x000013, kDevAddr, 0x03, 1, std::nullopt}, kAppKey));
  Bytes resp = V(BuildPullResp({0x5E, 0x21}, t));
  EXPECT_EQ(std::string(resp.begin() + 4, resp.end()), kPullRespJson);
  EXPECT_EQ(Hx(std::span<const uint8_t>(resp.data(), 4)), "025E2103");
  // And it parses back (what a forwarder simulator does).
  auto g = ParseDatagram(resp);
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  ASSERT_TRUE(g->txpk.has_value());
  EXPECT_EQ(g->txpk->tmst, 3517348611u);
  EXPECT_EQ(g->txpk->freq_hz, 506'700'000u);
  EXPECT_TRUE(g->txpk->ipol);
  EXPECT_EQ(Hx(g->txpk->data), "205EB1A8395EED777A8AE8E077FE7FEE17");
}

TEST(SemtechUdpTest, PullRespImmediateAndNcrc) {
  Txpk t;
  t.imme = true;
  t.tmst = 123;  // ignored
  t.freq_hz = 505'300'000;
  t.rate = {12, 125};
  t.ncrc = true;
  t.data = H("60");
  Bytes resp = V(BuildPullResp({1, 2}, t));
  auto j = nlohmann::json::parse(resp.begin() + 4, resp.end());
  EXPECT_TRUE(j["txpk"]["imme"].get<bool>());
  EXPECT_FALSE(j["txpk"].contains("tmst"));
  EXPECT_EQ(j["txpk"]["freq"].get<double>(), 505.3);
  EXPECT_EQ(j["txpk"]["datr"], "SF12BW125");
  EXPECT_TRUE(j["txpk"]["ncrc"].get<bool>());
  t.data.clear();
  EXPECT_EQ(BuildPullResp({1, 2}, t).status().message(), "txpk data is empty");
}

TEST(SemtechUdpTest, TxAckWithoutJsonIsSuccessAndErrorsAreTyped) {
  auto ok = ParseDatagram(H("025E2105AA555A0000000101"));
  ASSERT_TRUE(ok.ok());
  ASSERT_TRUE(ok->tx_ack.has_value());
  EXPECT_EQ(ok->tx_ack->error, TxAckError::kNone);
  EXPECT_EQ(Hx(BuildTxAck({0x5E, 0x21}, kGwEui)), "025E2105AA555A0000000101");
  const std::pair<const char*, TxAckError> cases[] = {
      {"NONE", TxAckError::kNone},
      {"TOO_LATE", TxAckError::kTooLate},
      {"TOO_EARLY", TxAckError::kTooEarly},
      {"COLLISION_PACKET", TxAckError::kCollisionPacket},
      {"COLLISION_BEACON", TxAckError::kCollisionBeacon},
      {"TX_FREQ", TxAckError::kTxFreq},
      {"TX_POWER", TxAckError::kTxPower},
      {"GPS_UNLOCKED", TxAckError::kGpsUnlocked},
      {"SOMETHING_NEW", TxAckError::kUnknown}};
  for (const auto& [text, error] : cases) {
    std::string json = std::string(R"({"txpk_ack":{"error":")") + text + R"("}})";
    auto g = ParseDatagram(Concat(H("025E2105AA555A0000000101"), json));
    ASSERT_TRUE(g.ok()) << text << ": " << g.status().ToString();
    EXPECT_EQ(g->tx_ack->error, error) << text;
    EXPECT_EQ(g->tx_ack->text, text);
  }
  auto built = ParseDatagram(BuildTxAck({0, 1}, kGwEui, TxAckError::kTooLate));
  EXPECT_EQ(built->tx_ack->error, TxAckError::kTooLate);
  // A trailing NUL (some forwarders send one) and a warning instead of an error.
  std::string warn = R"({"txpk_ack":{"warn":"TX_POWER","value":14}})";
  warn.push_back('\0');
  auto w = ParseDatagram(Concat(H("025E2105AA555A0000000101"), warn));
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  EXPECT_EQ(w->tx_ack->error, TxAckError::kNone);
  EXPECT_EQ(w->tx_ack->warn, "TX_POWER");
  EXPECT_EQ(ParseDatagram(H("015E2105AA555A0000000101")).status().message(),
            "TX_ACK does not exist in protocol version 1");
}

TEST(SemtechUdpTest, StatIsTyped) {
  std::string json =
      R"({"stat":{"time":"2014-01-12 08:59:28 GMT","lati":46.24000,"long":3.25230,"alti":145,)"
      R"("rxnb":2,"rxok":2,"rxfw":2,"ackr":100.0,"dwnb":2,"txnb":2}})";
  auto g = ParseDatagram(Concat(H("023A7C00AA555A0000000101"), json));
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  ASSERT_TRUE(g->stat.has_value());
  EXPECT_EQ(g->stat->time, "2014-01-12 08:59:28 GMT");
  EXPECT_DOUBLE_EQ(*g->stat->lati, 46.24);
  EXPECT_DOUBLE_EQ(*g->stat->longi, 3.2523);
  EXPECT_EQ(g->stat->alti, 145);
  EXPECT_EQ(g->stat->rxnb, 2u);
  EXPECT_DOUBLE_EQ(*g->stat->ackr, 100.0);
  EXPECT_EQ(g->stat->txnb, 2u);
  EXPECT_TRUE(g->rxpk.empty());
}

// Each malformed datagram gives its exact error.
TEST(SemtechUdpTest, MalformedDatagramsAreErrors) {
  const Bytes head = H("023A7C00AA555A0000000101");
  auto rx = [](std::string fields) {
    return R"({"rxpk":[{"tmst":1,"freq":486.3,"stat":1,"modu":"LORA","datr":"SF7BW125",)" + fields +
           "}]}";
  };
  const std::pair<Bytes, std::string> cases[] = {
      {H(""), "datagram of 0 bytes is shorter than the 4-byte header"},
      {H("023A7C"), "datagram of 3 bytes is shorter than the 4-byte header"},
      {H("033A7C01"), "protocol version 3 is not 1 or 2"},
      {H("023A7C06"), "identifier 0x06 is not a GWMP message (0x00..0x05)"},
      {H("023A7C0100"), "PUSH_ACK of 5 bytes, expected 4"},
      {H("02B19F02AA555A00000001"), "PULL_DATA of 11 bytes, expected 12"},
      {H("023A7C00AA555A00000001"),
       "PUSH_DATA of 11 bytes is shorter than 12 (header and gateway EUI)"},
      {head, "PUSH_DATA: no JSON body"},
      {Concat(head, "[1,2]"), "PUSH_DATA: JSON body is not an object but [1,2]"},
      {Concat(head, R"({"rxpk":[{"tmst":)"),
       "PUSH_DATA: malformed JSON: parse error at line 1, column 18: syntax error while parsing "
       "value - unexpected end of input; expected '[', '{', or a literal"},
      {Concat(head, R"({"rxpk":{}})"), "PUSH_DATA rxpk: expected an array, got {}"},
      {Concat(head, R"({"rxpk":[7]})"), "PUSH_DATA rxpk[0]: expected an object, got 7"},
      {Concat(head, rx(R"("size":2,"data":"AAE=","tmst":-5)")),
       "PUSH_DATA rxpk[0].tmst: expected an unsigned 32-bit integer, got -5"},
      {Concat(head, R"({"rxpk":[{"tmst":4294967296}]})"),
       "PUSH_DATA rxpk[0].tmst: expected an unsigned 32-bit integer, got 4294967296"},
      {Concat(head, R"({"rxpk":[{"tmst":1.5}]})"),
       "PUSH_DATA rxpk[0].tmst: expected an unsigned 32-bit integer, got 1.5"},
      {Concat(head, R"({"rxpk":[{"tmst":1,"freq":"486.3"}]})"),
       "PUSH_DATA rxpk[0].freq: expected a number, got \"486.3\""},
      {Concat(head, R"({"rxpk":[{"tmst":1,"freq":-1}]})"),
       "PUSH_DATA rxpk[0].freq: frequency -1 MHz is outside 0..4294.967295"},
      {Concat(head, R"({"rxpk":[{"tmst":1,"freq":486.3,"stat":2}]})"),
       "PUSH_DATA rxpk[0].stat: expected an integer in -1..1, got 2"},
      {Concat(head, R"({"rxpk":[{"tmst":1,"freq":486.3,"stat":1,"modu":"OOK"}]})"),
       "PUSH_DATA rxpk[0].modu: \"OOK\" is not \"LORA\" or \"FSK\""},
      {Concat(head,
              R"({"rxpk":[{"tmst":1,"freq":486.3,"stat":1,"modu":"LORA","datr":"SF13BW125"}]})"),
       "PUSH_DATA rxpk[0].datr: datr \"SF13BW125\": spreading factor 13 is outside 5..12"},
      {Concat(head, R"({"rxpk":[{"tmst":1,"freq":486.3,"stat":1,"modu":"LORA","datr":"SF7"}]})"),
       "PUSH_DATA rxpk[0].datr: datr \"SF7\" is not a LoRa data rate like \"SF7BW125\""},
      {Concat(head, R"({"rxpk":[{"tmst":1,"freq":486.3,"stat":1,"modu":"LORA","datr":125}]})"),
       "PUSH_DATA rxpk[0].datr: expected a string, got 125"},
      {Concat(head, rx(R"("size":2)")), "PUSH_DATA rxpk[0].data: required key is missing"},
      {Concat(head, rx(R"("size":3,"data":"AAE=")")),
       "PUSH_DATA rxpk[0].data: decodes to 2 bytes but size is 3"},
      {Concat(head, rx(R"("size":2,"data":"AA!=")")),
       "PUSH_DATA rxpk[0].data: base64: '!' at position 2 is not in the alphabet"},
      {Concat(head, rx(R"("size":2,"data":"A=AE")")),
       "PUSH_DATA rxpk[0].data: base64: '=' at position 1 is not in the alphabet"},
      {Concat(head, rx(R"("size":2,"data":"AAE=A")")),
       "PUSH_DATA rxpk[0].data: base64 of 5 characters is truncated"},
      {Concat(head, rx(R"("size":256,"data":"")")),
       "PUSH_DATA rxpk[0].size: expected an integer in 0..255, got 256"},
      {Concat(head, rx(R"("size":2,"data":"AAE=","rssi":"x")")),
       "PUSH_DATA rxpk[0].rssi: expected an integer in -400..100, got \"x\""},
      {Concat(head, R"({"stat":[]})"), "PUSH_DATA stat: expected an object, got []"},
      {Concat(head, R"({"stat":{"rxnb":-1}})"),
       "PUSH_DATA stat.rxnb: expected an unsigned 32-bit integer, got -1"},
      {Concat(H("025E2105AA555A0000000101"), R"({"txpk_ack":5})"),
       "TX_ACK txpk_ack: expected an object, got 5"},
      {Concat(H("025E2105AA555A0000000101"), R"({"txpk_ack":{"error":1}})"),
       "TX_ACK txpk_ack.error: expected a string, got 1"},
      {Concat(H("025E2103"), R"({"txpk":{"imme":true}})"),
       "PULL_RESP txpk.freq: required key is missing"},
      {Concat(H("025E2103"), R"({"tx":{}})"), "PULL_RESP txpk: required key is missing"},
  };
  for (const auto& [bytes, message] : cases) {
    auto g = ParseDatagram(bytes);
    // A bad rxpk entry or stat object is reported on its own; the datagram stays (issue 15).
    if (message.rfind("PUSH_DATA rxpk[", 0) == 0) {
      ASSERT_TRUE(g.ok()) << message;
      EXPECT_TRUE(g->rxpk.empty());
      EXPECT_EQ(g->rxpk_bad, 1u);
      ASSERT_EQ(g->rxpk_errors.size(), 1u) << message;
      EXPECT_EQ(g->rxpk_errors[0], message);
      continue;
    }
    if (message.rfind("PUSH_DATA stat", 0) == 0) {
      ASSERT_TRUE(g.ok()) << message;
      EXPECT_FALSE(g->stat.has_value());
      EXPECT_EQ(g->stat_error, message);
      continue;
    }
    ASSERT_FALSE(g.ok()) << message;
    EXPECT_EQ(g.status().message(), message);
    EXPECT_EQ(g.status().code(), Code::kInvalid);
  }
  // nlohmann's parse errors quote the token they stopped at, however long: kept short.
  std::string huge = R"({"rxpk":[{"time":")" + std::string(60000, 'x');
  auto g = ParseDatagram(Concat(head, huge));
  ASSERT_FALSE(g.ok());
  EXPECT_LT(g.status().message().size(), 300u);
}

// Issue 15 item 3: each rxpk is decoded on its own; a bad one (or a bad stat) is reported and
// left out, the datagram and its good uplinks stay.
TEST(SemtechUdpTest, OneBadRxpkKeepsTheGoodOnes) {
  const std::string good =
      R"({"tmst":1,"freq":486.3,"stat":1,"modu":"LORA","datr":"SF7BW125","codr":"4/5","size":2,"data":"AAE="})";
  auto g = ParseDatagram(
      Concat(H("023A7C00AA555A0000000101"),
             R"({"rxpk":[)" + good + R"(,{"tmst":"x"},7,)" + good + R"(],"stat":{"rxnb":-1}})"));
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  EXPECT_EQ(g->rxpk.size(), 2u);
  EXPECT_EQ(g->rxpk_bad, 2u);
  ASSERT_EQ(g->rxpk_errors.size(), 2u);
  EXPECT_EQ(g->rxpk_errors[0],
            "PUSH_DATA rxpk[1].tmst: expected an unsigned 32-bit integer, got \"x\"");
  EXPECT_EQ(g->rxpk_errors[1], "PUSH_DATA rxpk[2]: expected an object, got 7");
  EXPECT_FALSE(g->stat.has_value());
  EXPECT_EQ(g->stat_error, "PUSH_DATA stat.rxnb: expected an unsigned 32-bit integer, got -1");
  // Thousands of bad entries are counted, and only the first few messages kept.
  std::string many = R"({"rxpk":[)";
  for (int i = 0; i < 5000; ++i) many += "7,";
  many += good + "]}";
  g = ParseDatagram(Concat(H("023A7C00AA555A0000000101"), many));
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  EXPECT_EQ(g->rxpk.size(), 1u);
  EXPECT_EQ(g->rxpk_bad, 5000u);
  EXPECT_LE(g->rxpk_errors.size(), 4u);
}

TEST(SemtechUdpTest, UnknownKeysAreIgnoredAndInvalidUtf8IsAnError) {
  auto g = ParseDatagram(Concat(H("023A7C00AA555A0000000101"),
                                R"({"rxpk":[],"foo":{"bar":[1,2,3]},"stat":{"new":1}})"));
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  Bytes bad = Concat(H("023A7C00AA555A0000000101"), R"({"rxpk":[{"time":")");
  bad.push_back(0xFF);
  bad.insert(bad.end(), {'"', '}', ']', '}'});
  EXPECT_FALSE(ParseDatagram(bad).ok());
}

TEST(SemtechUdpTest, EveryPrefixOfAGoodDatagramIsHandled) {
  Bytes d = Concat(H("023A7C00AA555A0000000101"), kPushJson);
  for (size_t n = 0; n < d.size(); ++n) {
    auto g = ParseDatagram(std::span<const uint8_t>(d.data(), n));
    EXPECT_FALSE(g.ok()) << n;  // a truncated JSON never parses
  }
}

TEST(SemtechUdpTest, DeeplyNestedJsonDoesNotOverflowTheStack) {
  Bytes d = H("023A7C00AA555A0000000101");
  std::string deep = R"({"rxpk":)" + std::string(60000, '[') + std::string(60000, ']') + "}";
  d.insert(d.end(), deep.begin(), deep.end());
  auto g = ParseDatagram(d);
  ASSERT_TRUE(g.ok());  // the one entry is bad, not the datagram
  ASSERT_EQ(g->rxpk_errors.size(), 1u);
  EXPECT_EQ(g->rxpk_errors[0], "PUSH_DATA rxpk[0]: expected an object, got [[[[...]]]]");
  Bytes o = H("023A7C00AA555A0000000101");
  std::string objects = R"({"stat":)";
  for (int i = 0; i < 30000; ++i) objects += R"({"a":)";
  objects += "1" + std::string(30001, '}');
  o.insert(o.end(), objects.begin(), objects.end());
  // Unknown keys are ignored, however deep; parsing and freeing the tree must not recurse.
  EXPECT_TRUE(ParseDatagram(o).ok());
}

TEST(SemtechUdpTest, FskUplinkTakesANumericDatr) {
  auto g = ParseDatagram(Concat(H("023A7C00AA555A0000000101"),
                                R"({"rxpk":[{"tmst":1,"freq":868.8,"stat":1,"modu":"FSK",)"
                                R"("datr":50000,"size":1,"data":"AA=="}]})"));
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  EXPECT_EQ(g->rxpk[0].fsk_bps, 50000u);
  EXPECT_FALSE(g->rxpk[0].lora.has_value());
}

TEST(Base64Test, PaddingIsHandled) {
  EXPECT_EQ(Base64Encode({}), "");
  EXPECT_EQ(Base64Encode(H("66")), "Zg==");
  EXPECT_EQ(Base64Encode(H("666F")), "Zm8=");
  EXPECT_EQ(Base64Encode(H("666F6F")), "Zm9v");
  // RFC 4648 §10 vectors.
  const std::pair<const char*, const char*> rfc[] = {{"", ""},
                                                     {"f", "Zg=="},
                                                     {"fo", "Zm8="},
                                                     {"foo", "Zm9v"},
                                                     {"foob", "Zm9vYg=="},
                                                     {"fooba", "Zm9vYmE="},
                                                     {"foobar", "Zm9vYmFy"}};
  for (const auto& [plain, b64] : rfc) {
    Bytes p(plain, plain + std::string_view(plain).size());
    EXPECT_EQ(Base64Encode(p), b64);
    EXPECT_EQ(Hx(V(Base64Decode(b64))), Hx(p)) << b64;
  }
  EXPECT_EQ(Hx(V(Base64Decode("Zm8"))), "666F");  // unpadded is accepted
  EXPECT_EQ(Hx(V(Base64Decode("Zg"))), "66");
  EXPECT_EQ(Base64Decode("Zg=").status().message(), "base64 of 3 characters has partial padding");
  EXPECT_EQ(Base64Decode("Z===").status().message(),
            "base64: '=' at position 1 is not in the alphabet");
  EXPECT_EQ(Base64Decode(" Zg=").status().message(),
            "base64: ' ' at position 0 is not in the alphabet");
  Bytes all(256);
  for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<uint8_t>(i);
  for (size_t n = 0; n <= all.size(); ++n) {
    std::span<const uint8_t> p(all.data(), n);
    EXPECT_EQ(Hx(V(Base64Decode(Base64Encode(p)))), Hx(p)) << n;
  }
}

// ---- band plans ---------------------------------------------------------------------------------

TEST(BandPlanTest, Cn470ExampleOfProtocolsMd) {
  const BandPlan& cn = Cn470();
  EXPECT_EQ(V(cn.UplinkChannel(486'300'000)), 80);
  EXPECT_EQ(V(cn.Rx1Frequency(486'300'000)), 506'700'000u);
  EXPECT_EQ(cn.Rx2Frequency(), 505'300'000u);
  EXPECT_EQ(cn.Rx2DataRate(), 0);
  EXPECT_EQ(V(cn.Rate(cn.Rx2DataRate())), (LoraRate{12, 125}));
}

TEST(BandPlanTest, Cn470ChannelEdgesAndFloatNoise) {
  const BandPlan& cn = Cn470();
  EXPECT_EQ(V(cn.UplinkChannel(470'300'000)), 0);
  EXPECT_EQ(V(cn.Rx1Frequency(470'300'000)), 500'300'000u);
  EXPECT_EQ(V(cn.UplinkChannel(489'300'000)), 95);
  EXPECT_EQ(V(cn.Rx1Frequency(489'300'000)), 500'300'000u + 47 * 200'000u);  // 95 mod 48 = 47
  EXPECT_EQ(V(cn.Rx1Frequency(479'900'000)), 500'300'000u);                  // 48 mod 48 = 0
  // 486.3 read as a double and rounded, and frequencies a few Hz off, are still channel 80.
  EXPECT_EQ(V(cn.UplinkChannel(V(MhzToHz(486.3)))), 80);
  EXPECT_EQ(V(cn.UplinkChannel(V(MhzToHz(486.29999999)))), 80);
  EXPECT_EQ(V(cn.UplinkChannel(486'300'700)), 80);
  EXPECT_EQ(V(cn.UplinkChannel(486'299'300)), 80);
  EXPECT_EQ(cn.UplinkChannel(486'400'000).status().message(),
            "CN470: 486.4 MHz is not an uplink channel (470.3 + 0.2 n MHz, n = 0..95)");
  EXPECT_FALSE(cn.UplinkChannel(470'100'000).ok());
  EXPECT_FALSE(cn.UplinkChannel(489'500'000).ok());
  EXPECT_FALSE(cn.UplinkChannel(0).ok());
}

TEST(BandPlanTest, DataRatesBothWays) {
  const BandPlan& cn = Cn470();
  for (int dr = 0; dr <= 5; ++dr) {
    LoraRate r = V(cn.Rate(dr));
    EXPECT_EQ(r.sf, 12 - dr);
    EXPECT_EQ(V(cn.DataRate(r)), dr);
  }
  EXPECT_EQ(cn.Rate(6).status().message(), "CN470: DR6 is outside DR0..DR5");
  EXPECT_EQ(cn.DataRate({7, 250}).status().message(),
            "CN470: SF7BW250 is not a data rate of this plan");
  const BandPlan& eu = Eu868();
  EXPECT_EQ(V(eu.DataRate({7, 250})), 6);
  EXPECT_EQ(eu.Rate(7).status().message(), "EU868: DR7 is FSK, not LoRa");
  EXPECT_EQ(V(ParseLoraDatr("SF12BW125")), (LoraRate{12, 125}));
  EXPECT_EQ(FormatLoraDatr({9, 500}), "SF9BW500");
  EXPECT_EQ(ParseLoraDatr("SF7BW126").status().message(),
            "datr \"SF7BW126\": bandwidth 126 kHz is not 125, 250 or 500");
  EXPECT_FALSE(ParseLoraDatr("SF7BW125x").ok());
  EXPECT_FALSE(ParseLoraDatr("sf7bw125").ok());
  EXPECT_FALSE(ParseLoraDatr("").ok());
  EXPECT_FALSE(ParseLoraDatr("SF0007BW125").ok());
}

TEST(BandPlanTest, Rx1DataRateOffsets) {
  const BandPlan& cn = Cn470();
  EXPECT_EQ(V(cn.Rx1DataRate(5)), 5);  // offset 0 by default: same DR as the uplink
  EXPECT_EQ(V(cn.Rx1DataRate(5, 2)), 3);
  EXPECT_EQ(V(cn.Rx1DataRate(1, 3)), 0);  // never below DR0
  EXPECT_EQ(cn.Rx1DataRate(6, 0).status().message(),
            "CN470: uplink data rate DR6 is outside DR0..DR5");
  EXPECT_EQ(cn.Rx1DataRate(3, 6).status().message(), "CN470: RX1DROffset 6 is outside 0..5");
  EXPECT_EQ(V(Eu868().Rx1DataRate(7, 5)), 2);
}

TEST(BandPlanTest, Eu868) {
  const BandPlan& eu = Eu868();
  EXPECT_EQ(V(eu.Rx1Frequency(868'100'000)), 868'100'000u);
  EXPECT_EQ(V(eu.Rx1Frequency(867'500'000)), 867'500'000u);  // a CFList channel
  EXPECT_EQ(V(eu.UplinkChannel(868'500'000)), 2);
  EXPECT_EQ(eu.Rx2Frequency(), 869'525'000u);
  EXPECT_EQ(eu.Rx2DataRate(), 0);
  EXPECT_EQ(eu.Rx1Frequency(486'300'000).status().message(),
            "EU868: 486.3 MHz is outside 863..870 MHz");
  EXPECT_EQ(V(FindBandPlan("cn470"))->name(), "CN470");
  EXPECT_EQ(V(FindBandPlan("EU863-870"))->region(), Region::kEu868);
  EXPECT_EQ(FindBandPlan("US915").status().message(),
            "band plan \"US915\" is not one of \"CN470\", \"EU868\"");
  EXPECT_EQ(V(Cn470().MaxMacPayload(0)), 59);
  EXPECT_EQ(V(Cn470().MaxMacPayload(3)), 123);
  EXPECT_EQ(V(Cn470().MaxMacPayload(5)), 230);
}

// ---- declarative payload layouts and the two shipped profiles
// --------------------------------------

PayloadProfile Profile(const std::string& name) {
  return V(
      LoadPayloadProfile(std::string(SANIGATE_SOURCE_DIR) + "/config/profiles/" + name + ".toml"));
}

const MetricValue* Find(const DecodedPayload& d, const std::string& name) {
  for (const auto& m : d.metrics)
    if (m.name == name) return &m.value;
  return nullptr;
}

TEST(PayloadCodecTest, UltrasonicProfileDecodesItsExample) {
  PayloadProfile p = Profile("bin-monitor-ultrasonic-v1");
  EXPECT_EQ(p.kind, "bin");
  ASSERT_EQ(p.layouts.size(), 1u);
  EXPECT_EQ(p.layouts[0].min_size, 8u);
  auto d = DecodePayload(p, 2, H("019C4E00EB0E1C02"));
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  ASSERT_EQ(d->metrics.size(), 6u);
  EXPECT_EQ(*Find(*d, "distance_mm"), MetricValue(int64_t{412}));    // 0x019C
  EXPECT_EQ(*Find(*d, "fill_level_pct"), MetricValue(int64_t{78}));  // 0x4E
  EXPECT_EQ(*Find(*d, "temperature_c"), MetricValue(23.5));          // 0x00EB = 235 x 0.1
  EXPECT_EQ(*Find(*d, "battery_v"), MetricValue(3.612));             // 0x0E1C = 3612 mV
  EXPECT_EQ(*Find(*d, "tilted"), MetricValue(false));
  EXPECT_EQ(*Find(*d, "fire_alarm"), MetricValue(true));
  EXPECT_TRUE(d->quality.empty());
  // Below zero, tilted and no fire; a fill level of 101 % is out of range: flagged, not sent.
  d = DecodePayload(p, 2, H("003065FFCC0BB801"));
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(*Find(*d, "temperature_c"), MetricValue(-5.2));  // 0xFFCC = -52
  EXPECT_EQ(*Find(*d, "battery_v"), MetricValue(3.0));       // 0x0BB8 = 3000 mV
  EXPECT_EQ(*Find(*d, "tilted"), MetricValue(true));
  EXPECT_EQ(*Find(*d, "fire_alarm"), MetricValue(false));
  EXPECT_EQ(*Find(*d, "distance_mm"), MetricValue(int64_t{48}));
  EXPECT_EQ(Find(*d, "fill_level_pct"), nullptr);  // 0x65 = 101 > max 100
  ASSERT_EQ(d->quality.size(), 1u);
  EXPECT_EQ(d->quality[0], (std::pair<std::string, std::string>{"fill_level_pct", "out_of_range"}));
}

TEST(PayloadCodecTest, UltrasonicProfileErrors) {
  PayloadProfile p = Profile("bin-monitor-ultrasonic-v1");
  EXPECT_EQ(DecodePayload(p, 3, H("019C4E00EB0E1C02")).status().message(),
            "fport 3 has no layout in this profile");
  for (size_t n = 0; n < 8; ++n) {
    Bytes b = H("019C4E00EB0E1C02");
    b.resize(n);
    auto d = DecodePayload(p, 2, b);
    ASSERT_FALSE(d.ok()) << n;
    EXPECT_EQ(d.status().message(),
              "fport 2: payload of " + std::to_string(n) + " bytes is shorter than the layout's 8");
  }
  // Longer payloads (a newer firmware appending fields) decode the known part.
  EXPECT_TRUE(DecodePayload(p, 2, H("019C4E00EB0E1C02FFFF")).ok());
}

TEST(PayloadCodecTest, CompactLittleEndianProfileDecodesBothPorts) {
  PayloadProfile p = Profile("bin-monitor-compact-le-v1");
  ASSERT_EQ(p.layouts.size(), 2u);
  auto d = DecodePayload(p, 1, H("05570A040000AA41"));
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  ASSERT_EQ(d->metrics.size(), 5u);
  EXPECT_EQ(*Find(*d, "tilted"), MetricValue(true));                // 0x05 bit 0
  EXPECT_EQ(*Find(*d, "lid_open"), MetricValue(true));              // 0x05 bit 2
  EXPECT_EQ(*Find(*d, "battery_pct"), MetricValue(int64_t{87}));    // 0x57
  EXPECT_EQ(*Find(*d, "distance_mm"), MetricValue(int64_t{1034}));  // 0A 04 LE = 0x040A
  EXPECT_EQ(*Find(*d, "temperature_c"), MetricValue(21.25));        // 41AA0000 as f32
  auto h = DecodePayload(p, 4, H("0C70110100F9"));
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  ASSERT_EQ(h->metrics.size(), 3u);
  EXPECT_EQ(*Find(*h, "battery_pct"), MetricValue(int64_t{12}));
  EXPECT_EQ(*Find(*h, "uptime_h"), MetricValue(int64_t{70000}));    // 70 11 01 00 LE
  EXPECT_EQ(*Find(*h, "temperature_c"), MetricValue(int64_t{-7}));  // 0xF9 as i8
  // A NaN temperature (7FC00000) and a battery of 200 % are flagged, not published.
  auto q = DecodePayload(p, 1, H("00C80A040000C07F"));
  ASSERT_TRUE(q.ok());
  EXPECT_EQ(q->metrics.size(), 3u);
  ASSERT_EQ(q->quality.size(), 2u);
  EXPECT_EQ(q->quality[0], (std::pair<std::string, std::string>{"battery_pct", "out_of_range"}));
  EXPECT_EQ(q->quality[1], (std::pair<std::string, std::string>{"temperature_c", "out_of_range"}));
  EXPECT_EQ(DecodePayload(p, 2, H("00")).status().message(),
            "fport 2 has no layout in this profile");
}

TEST(PayloadCodecTest, AnyPortLayoutAndSignedBigTypes) {
  auto p = ParsePayloadProfileText(R"(
codec = "byte-layout"
[[uplinks]]
[[uplinks.fields]]
metric = "a_i32"
offset = 0
type = "i32"
[[uplinks.fields]]
metric = "b_u32"
offset = 0
type = "u32"
endian = "little"
[[uplinks.fields]]
metric = "c_scaled"
offset = 4
type = "i16"
endian = "little"
scale = 0.5
offset_add = -10.0
[[uplinks.fields]]
metric = "d_high_bit"
offset = 0
type = "u32"
bit = 31
[[uplinks]]
fport = 9
[[uplinks.fields]]
metric = "only"
offset = 0
)",
                                   "any.toml");
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  auto d = DecodePayload(*p, 200, H("FFFFFFFEFBFF"));
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(*Find(*d, "a_i32"), MetricValue(int64_t{-2}));
  EXPECT_EQ(*Find(*d, "b_u32"), MetricValue(int64_t{0xFEFFFFFF}));
  EXPECT_EQ(*Find(*d, "c_scaled"), MetricValue(-12.5));  // FBFF LE = -5; -5 x 0.5 - 10
  EXPECT_EQ(*Find(*d, "d_high_bit"), MetricValue(true));
  auto nine = DecodePayload(*p, 9, H("2A"));
  ASSERT_TRUE(nine.ok());
  EXPECT_EQ(*Find(*nine, "only"), MetricValue(int64_t{42}));
}

TEST(PayloadCodecTest, ConfigErrorsNameTheKeyPath) {
  auto p = ParsePayloadProfileText(R"(description = "bad"
kind = "Bin"
codec = "cayenne"
colour = "blue"

[[uplinks]]
fport = 0

[[uplinks.fields]]
metric = "Distance"
offset = 254
type = "u16"

[[uplinks.fields]]
metric = "flags"
offset = 1
type = "u8"
bit = 8

[[uplinks.fields]]
metric = "temp"
offset = 2
type = "f32"
bit = 1
scale = 0

[[uplinks.fields]]
metric = "temp"
offset = 3
type = "u24"
endian = "middle"
min = 10.0
max = 5.0

[[uplinks.fields]]
metric = "flag2"
offset = 0
bit = 3
scale = 2.0

[[uplinks.fields]]
offset = -1
ofset = 3

[[uplinks]]
fport = 5
[[uplinks.fields]]
metric = "x"
offset = 0

[[uplinks]]
fport = 5
[[uplinks.fields]]
metric = "y"
offset = 0

[[uplinks]]
fport = 7
)",
                                   "bad.toml");
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), Code::kInvalid);
  EXPECT_EQ(
      p.status().message(),
      "bad.toml:2:8: kind: \"Bin\" is not a valid kind (^[a-z0-9_]+$)\n"
      "bad.toml:3:9: codec: \"cayenne\" is not one of \"byte-layout\"\n"
      "bad.toml:4:1: colour: unknown key\n"
      "bad.toml:7:9: uplinks[0].fport: 0 is outside 1..223\n"
      "bad.toml:10:10: uplinks[0].fields[0].metric: \"Distance\" is not a metric name "
      "(snake_case: ^[a-z][a-z0-9_]*$)\n"
      "bad.toml:11:10: uplinks[0].fields[0].offset: 254 + 2 bytes runs past 255\n"
      "bad.toml:18:7: uplinks[0].fields[1].bit: 8 is outside 0..7\n"
      "bad.toml:24:7: uplinks[0].fields[2].bit: a f32 field has no bits (flags are integer "
      "fields)\n"
      "bad.toml:25:9: uplinks[0].fields[2].scale: must not be 0\n"
      "bad.toml:28:10: uplinks[0].fields[3].metric: \"temp\" is already decoded by "
      "uplinks[0].fields[2]\n"
      "bad.toml:30:8: uplinks[0].fields[3].type: \"u24\" is not one of \"u8\", \"i8\", \"u16\", "
      "\"i16\", \"u32\", \"i32\", \"f32\"\n"
      "bad.toml:31:10: uplinks[0].fields[3].endian: \"middle\" is not one of \"big\", \"little\"\n"
      "bad.toml:33:7: uplinks[0].fields[3].max: is below min\n"
      "bad.toml:39:9: uplinks[0].fields[4].scale: a flag (bit) is a bool and takes no scale\n"
      "bad.toml:41:1: uplinks[0].fields[5].metric: required key is missing\n"
      "bad.toml:42:10: uplinks[0].fields[5].offset: -1 is outside 0..254\n"
      "bad.toml:43:1: uplinks[0].fields[5].ofset: unknown key (did you mean \"offset\"?)\n"
      "bad.toml:52:9: uplinks[2].fport: fport 5 already has a layout in uplinks[1]\n"
      "bad.toml:57:1: uplinks[3].fields: a layout needs at least one [[uplinks.fields]] entry");
}

TEST(PayloadCodecTest, ProfileFileErrors) {
  EXPECT_EQ(ParsePayloadProfileText("", "empty.toml").status().message(),
            "empty.toml:1:1: codec: required key is missing\n"
            "empty.toml:1:1: uplinks: a payload profile needs at least one [[uplinks]] entry");
  auto syntax = ParsePayloadProfileText("codec = ", "syntax.toml");
  EXPECT_FALSE(syntax.ok());
  EXPECT_EQ(syntax.status().message().rfind("syntax.toml:1:", 0), 0u) << syntax.status().message();
  auto missing = LoadPayloadProfile("/nonexistent/profile.toml");
  EXPECT_EQ(missing.status().message(),
            "/nonexistent/profile.toml:0:0: (file): cannot read: No such file or directory");
  // A Modbus profile is not a payload profile, and says so.
  auto modbus =
      LoadPayloadProfile(std::string(SANIGATE_SOURCE_DIR) + "/config/profiles/bin-level-v1.toml");
  ASSERT_FALSE(modbus.ok());
  EXPECT_NE(modbus.status().message().find("codec: required key is missing"), std::string::npos);
}

// ---- random input: every decoder returns a result, never crashes (run under ASan/UBSan too) ----

TEST(LorawanRobustnessTest, RandomBytesAndMutatedVectorsNeverCrash) {
  std::mt19937 rng(20240520);  // fixed seed: reproducible
  const Bytes seeds[] = {
      H("8034120B2600050002F66FF58589B16EAC167B26E04B8EFE7CE65CF7B6F48E352A"),
      H("0008070605040302011807F6E5D4C3B2A12B1A3F417441"),
      H("205EB1A8395EED777A8AE8E077FE7FEE17"),
      Concat(H("023A7C00AA555A0000000101"), kPushJson),
      Concat(H("025E2103"), kPullRespJson),
  };
  const PayloadProfile profile = Profile("bin-monitor-compact-le-v1");
  size_t accepted = 0;
  for (int i = 0; i < 20000; ++i) {
    Bytes b;
    if (i % 2 == 0) {
      b.resize(rng() % 300);
      for (auto& x : b) x = static_cast<uint8_t>(rng());
    } else {
      b = seeds[rng() % std::size(seeds)];
      for (int m = 0, n = 1 + static_cast<int>(rng() % 4); m < n && !b.empty(); ++m)
        b[rng() % b.size()] = static_cast<uint8_t>(rng());
      b.resize(rng() % (b.size() + 1));
    }
    if (auto f = ParseDataFrame(b); f.ok()) {
      accepted += V(VerifyDataMic(*f, kNwk, f->fcnt16)) ? 1 : 0;
      (void)V(DecryptFrmPayload(*f, kKeys, f->fcnt16));
    }
    (void)VerifyJoinRequestMic(b, kAppKey);
    (void)OpenJoinAccept(b, kAppKey);
    (void)ParseDatagram(b);
    (void)DecodePayload(profile, static_cast<uint8_t>(rng()), b);
    (void)Base64Decode(std::string(b.begin(), b.end()));
  }
  EXPECT_EQ(accepted, 0u);  // no random or mutated frame carries a valid MIC
}

// ---- ChirpStack v4 MQTT integration uplinks ----

TEST(ChirpstackUplink, FullEventIsReducedToDeviceCounterPayloadAndBestRadio) {
  auto up = ParseChirpstackUplink(R"({
    "deduplicationId":"3ac7e3c4-4401-4b8d-9386-a5c902f9202d","time":"2022-07-18T09:34:15.775023242+00:00",
    "deviceInfo":{"tenantName":"ChirpStack","applicationName":"bins","deviceName":"b1","devEui":"0101010101010101","tags":{}},
    "devAddr":"00189440","adr":true,"dr":1,"fCnt":4,"fPort":2,"confirmed":true,"data":"qrvM",
    "rxInfo":[{"gatewayId":"0016c001f153a14c","uplinkId":4217106255,"rssi":-36,"snr":10.5,"channel":2},
              {"gatewayId":"0016c001f153a14d","rssi":-30,"snr":10.5}],
    "txInfo":{"frequency":867500000,"modulation":{"lora":{"bandwidth":125000,"spreadingFactor":7,"codeRate":"CR_4_5"}}}})");
  ASSERT_TRUE(up.ok()) << up.status().message();
  EXPECT_EQ(up->dev_eui, 0x0101010101010101ull);
  EXPECT_EQ(up->deduplication_id, "3ac7e3c4-4401-4b8d-9386-a5c902f9202d");
  EXPECT_EQ(up->time_ms, 1658136855775);
  EXPECT_EQ(up->fcnt, 4u);
  EXPECT_EQ(up->fport, 2);
  EXPECT_TRUE(up->confirmed);
  EXPECT_EQ(up->data, (Bytes{0xAA, 0xBB, 0xCC}));
  EXPECT_EQ(up->concentrators, 2);
  EXPECT_EQ(up->gateway_id, "0016c001f153a14d");  // same SNR, stronger RSSI
  EXPECT_EQ(up->rssi_dbm, -30);
  EXPECT_EQ(up->snr_db, 10.5);
  EXPECT_EQ(up->frequency_hz, 867500000);
  EXPECT_EQ(up->data_rate, "SF7BW125");
}

TEST(ChirpstackUplink, ZeroValuesLeftOutByProtobufJsonAndEuiFromTheTopic) {
  // protobuf-JSON omits fCnt 0 and confirmed false; an empty payload has no data.
  auto up = ParseChirpstackUplink(R"({"deduplicationId":"d","fPort":1,"dr":3})", "0102030405060708");
  ASSERT_TRUE(up.ok()) << up.status().message();
  EXPECT_EQ(up->dev_eui, 0x0102030405060708ull);
  EXPECT_EQ(up->fcnt, 0u);
  EXPECT_FALSE(up->confirmed);
  EXPECT_TRUE(up->data.empty());
  EXPECT_EQ(up->data_rate, "DR3");
  EXPECT_FALSE(up->time_ms.has_value());
  EXPECT_EQ(up->concentrators, 0);
}

TEST(ChirpstackUplink, BadInputIsRefusedWithTheReason) {
  auto msg = [](std::string_view json, std::string_view eui = {}) {
    auto r = ParseChirpstackUplink(json, eui);
    return r.ok() ? std::string("ok") : r.status().message();
  };
  EXPECT_NE(msg("{not json").find("not a JSON object"), std::string::npos);
  EXPECT_NE(msg("[1,2]").find("not a JSON object"), std::string::npos);
  EXPECT_NE(msg(R"({"fCnt":1})").find("no deviceInfo.devEui"), std::string::npos);
  EXPECT_NE(msg(R"({"deviceInfo":{"devEui":"xyz"}})").find("devEui"), std::string::npos);
  EXPECT_NE(msg(R"({"fPort":300})", "0102030405060708").find("fPort 300 is outside 0..255"), std::string::npos);
  EXPECT_NE(msg(R"({"fCnt":-1})", "0102030405060708").find("fCnt -1"), std::string::npos);
  EXPECT_NE(msg(R"({"data":"!!"})", "0102030405060708").find("not base64"), std::string::npos);
}

TEST(ChirpstackUplink, Rfc3339TimesWithOffsetsAndFractions) {
  EXPECT_EQ(ParseRfc3339Ms("1970-01-01T00:00:00Z"), 0);
  EXPECT_EQ(ParseRfc3339Ms("2026-12-03T18:00:00.5+08:00"), ParseRfc3339Ms("2026-12-03T10:00:00.500Z"));
  EXPECT_EQ(ParseRfc3339Ms("2026-12-03T10:00:00.123456789Z").value() % 1000, 123);
  EXPECT_EQ(ParseRfc3339Ms("2026-12-03T09:00:00-01:00"), ParseRfc3339Ms("2026-12-03T10:00:00Z"));
  EXPECT_FALSE(ParseRfc3339Ms("2026-12-03 10:00"));
  EXPECT_FALSE(ParseRfc3339Ms("2026-13-03T10:00:00Z"));
  EXPECT_FALSE(ParseRfc3339Ms("2026-12-03T10:00:00"));      // no zone
  EXPECT_FALSE(ParseRfc3339Ms("2026-12-03T10:00:00.Z"));    // empty fraction
  EXPECT_FALSE(ParseRfc3339Ms("2026-12-03T10:00:00Zjunk"));
}

// ---- downlinks: frames and the command encoder (issue 15) -----------------------------------

// Independent vectors (python3 `cryptography` 48: AES-ECB for the A blocks, CMAC for the MIC)
// with the V1-V3 keys: Dir = 1 in A_i and B0, the 32-bit FCntDown in both.
TEST(LorawanDownlinkTest, ConfirmedDownlinkWithAckAndFPendingMatchesTheIndependentVector) {
  DataFrameSpec spec;
  spec.mtype = MType::kConfirmedDown;
  spec.dev_addr = kDevAddr;
  spec.fcnt32 = 0x00010007;
  spec.fctrl_flags = kFCtrlAck | kFCtrlFPending;
  spec.fport = 3;
  spec.payload = H("0100000258");  // set_interval 600, ultrasonic profile
  Bytes phy = V(BuildDataFrame(spec, kKeys));
  EXPECT_EQ(Hx(phy), "A034120B26300700032F696864F65A74257C");
  auto f = V(ParseDataFrame(phy));
  EXPECT_EQ(f.direction(), Direction::kDown);
  EXPECT_TRUE(f.fctrl.ack());
  EXPECT_TRUE(f.fctrl.f_pending());
  EXPECT_TRUE(V(VerifyDataMic(f, kNwk, 0x00010007)));
  EXPECT_FALSE(V(VerifyDataMic(f, kNwk, 0x00000007)));  // the upper half counts
  EXPECT_EQ(Hx(V(DecryptFrmPayload(f, kKeys, 0x00010007))), "0100000258");
}

TEST(LorawanDownlinkTest, UnconfirmedDownlinkMatchesTheIndependentVector) {
  DataFrameSpec spec;
  spec.mtype = MType::kUnconfirmedDown;
  spec.dev_addr = kDevAddr;
  spec.fcnt32 = 5;
  spec.fport = 5;
  spec.payload = H("A15802");  // set_interval 600, compact profile
  EXPECT_EQ(Hx(V(BuildDataFrame(spec, kKeys))), "6034120B2600050005457F1136CA7CA6");
  // B0 of that frame: 49 | 0000 0000 | 01 | DevAddr | FCnt 5 | 00 | 12 bytes.
  auto f = V(ParseDataFrame(H("6034120B2600050005457F1136CA7CA6")));
  EXPECT_EQ(f.mic, V(ComputeDataMic(kNwk, Direction::kDown, kDevAddr, 5, f.mic_input)));
}

class DownlinkEncoderTest : public ::testing::Test {
 protected:
  PayloadProfile Load(const std::string& name) {
    return V(LoadPayloadProfile(std::string(SANIGATE_SOURCE_DIR) + "/config/profiles/" + name + ".toml"));
  }
  Result<EncodedDownlink> Enc(const PayloadProfile* p, std::string_view name, std::vector<std::string> args) {
    return EncodeDownlinkCommand(p, name, args, 51);
  }
};

TEST_F(DownlinkEncoderTest, ShippedProfilesEncodeTheirCommands) {
  auto us = Load("bin-monitor-ultrasonic-v1");
  auto e = V(Enc(&us, "set_interval", {"600"}));
  EXPECT_EQ(e.fport, 3);
  EXPECT_EQ(Hx(e.payload), "0100000258");
  EXPECT_FALSE(e.confirmed);
  EXPECT_EQ(Hx(V(Enc(&us, "set_interval", {"seconds=86400"})).payload), "0100015180");
  EXPECT_EQ(Hx(V(Enc(&us, "set_overflow_threshold", {"85"})).payload), "0255");
  auto rb = V(Enc(&us, "reboot", {}));
  EXPECT_EQ(Hx(rb.payload), "03");
  EXPECT_TRUE(rb.confirmed);  // the profile's default
  EXPECT_FALSE(V(Enc(&us, "reboot", {"confirmed=false"})).confirmed);
  EXPECT_TRUE(V(Enc(&us, "set_interval", {"600", "confirmed"})).confirmed);

  auto le = Load("bin-monitor-compact-le-v1");
  e = V(Enc(&le, "set_interval", {"600"}));
  EXPECT_EQ(e.fport, 5);
  EXPECT_EQ(Hx(e.payload), "A15802");  // u16 little-endian
  EXPECT_EQ(Hx(V(Enc(&le, "reboot", {})).payload), "A3");
}

TEST_F(DownlinkEncoderTest, BadArgumentsAreRefusedWithWhatIsWrong) {
  auto us = Load("bin-monitor-ultrasonic-v1");
  EXPECT_EQ(Enc(&us, "set_interval", {"5"}).status().message(), "seconds: \"5\" is outside 10..86400");
  EXPECT_EQ(Enc(&us, "set_interval", {}).status().message(), "set_interval needs seconds");
  EXPECT_EQ(Enc(&us, "set_interval", {"1.5"}).status().message(), "seconds: \"1.5\" is not a number");
  EXPECT_EQ(Enc(&us, "set_interval", {"0x10"}).status().message(), "seconds: \"0x10\" is not a number");
  EXPECT_NE(Enc(&us, "set_interval", {"600", "700"}).status().message().find("one too many"), std::string::npos);
  EXPECT_EQ(Enc(&us, "set_interval", {"secs=600"}).status().message(), "set_interval has no argument \"secs\"");
  EXPECT_EQ(Enc(&us, "set_interval", {"seconds=600", "seconds=700"}).status().message(),
            "set_interval: seconds given twice");
  EXPECT_EQ(Enc(&us, "set_overflow_threshold", {"101"}).status().message(), "percent: \"101\" is outside 50..100");
  EXPECT_EQ(Enc(&us, "open_lid", {}).status().message(),
            "unknown command \"open_lid\" (this device takes: downlink, set_interval, set_overflow_threshold, reboot)");
  // Huge or hostile text is quoted only as a short escaped prefix.
  std::string junk(200, '9');
  junk[0] = '\xff';
  auto m = Enc(&us, "set_interval", {junk}).status().message();
  EXPECT_LT(m.size(), 80u);
  EXPECT_NE(m.find("\\xff"), std::string::npos) << m;
}

TEST_F(DownlinkEncoderTest, RawDownlinkGrammar) {
  auto e = V(Enc(nullptr, "downlink", {"port=10", "hex=0102"}));
  EXPECT_EQ(e.fport, 10);
  EXPECT_EQ(Hx(e.payload), "0102");
  EXPECT_FALSE(e.confirmed);
  e = V(Enc(nullptr, "downlink", {"10", "0102", "confirmed"}));
  EXPECT_EQ(e.fport, 10);
  EXPECT_TRUE(e.confirmed);
  EXPECT_EQ(Hx(V(Enc(nullptr, "downlink", {"port=7", "base64=AQI="})).payload), "0102");
  EXPECT_TRUE(V(Enc(nullptr, "downlink", {"confirmed=true", "hex=ff", "port=223"})).confirmed);
  EXPECT_EQ(Enc(nullptr, "downlink", {"port=0", "hex=01"}).status().message(), "port: \"0\" is outside 1..223");
  EXPECT_EQ(Enc(nullptr, "downlink", {"port=224", "hex=01"}).status().message(), "port: \"224\" is outside 1..223");
  EXPECT_EQ(Enc(nullptr, "downlink", {"hex=01"}).status().message(), "downlink needs a port: port=N (1..223)");
  EXPECT_EQ(Enc(nullptr, "downlink", {"10"}).status().message(), "downlink needs data: hex=HEX or base64=B64");
  EXPECT_EQ(Enc(nullptr, "downlink", {"10", "0G"}).status().message(), "hex: \"0G\" is not valid");
  EXPECT_EQ(Enc(nullptr, "downlink", {"port=1", "hex=01", "base64=AQ=="}).status().message(),
            "give either hex= or base64=, not both");
  EXPECT_NE(Enc(nullptr, "downlink", {"10", "01", "02"}).status().message().find("too many arguments"), std::string::npos);
  EXPECT_NE(Enc(nullptr, "downlink", {"fport=1", "hex=01"}).status().message().find("unknown argument"), std::string::npos);
  // 51 bytes fit the slowest CN470 rate; 52 do not.
  EXPECT_TRUE(Enc(nullptr, "downlink", {"1", std::string(102, 'A')}).ok());
  EXPECT_EQ(Enc(nullptr, "downlink", {"1", std::string(104, 'A')}).status().message(),
            "payload of 52 bytes is over the 51 a downlink can carry at the slowest data rate");
}

TEST_F(DownlinkEncoderTest, ProfileCommandsAreValidated) {
  auto bad = ParsePayloadProfileText(R"(
codec = "byte-layout"
[[uplinks]]
[[uplinks.fields]]
metric = "x"
offset = 0
[[downlinks]]
name = "downlink"
fport = 0
prefix = "0"
[[downlinks]]
name = "twice"
fport = 3
[[downlinks.args]]
name = "a"
[[downlinks.args]]
name = "a"
type = "u64"
)", "p.toml");
  ASSERT_FALSE(bad.ok());
  const std::string m = bad.status().message();
  EXPECT_NE(m.find("downlinks[0].name"), std::string::npos) << m;
  EXPECT_NE(m.find("downlinks[0].fport"), std::string::npos) << m;
  EXPECT_NE(m.find("downlinks[0].prefix"), std::string::npos) << m;
  EXPECT_NE(m.find("already an argument"), std::string::npos) << m;
  EXPECT_NE(m.find("downlinks[1].args[1].type"), std::string::npos) << m;
}

}  // namespace
}  // namespace sanigate::dev::lorawan
