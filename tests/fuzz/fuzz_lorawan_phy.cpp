// LoRaWAN 1.0.x PHYPayloads: PeekMType, data frames (parse, 32-bit FCnt reconstruction, MIC check,
// FRMPayload decryption with the session keys of protocols.md §3.1, then BuildDataFrame from what
// was read: the same frame comes back, with a MIC that verifies), join requests (parse, MIC, build
// round trip) and join accepts (OpenJoinAccept on the input; and the input's bytes as the fields
// of a join accept, built, encrypted and opened again). MAC commands have no parser of their own
// in the code base (FOpts and FPort-0 payloads are carried as bytes), so they are covered only as
// part of the frame.
#include <cstdint>
#include <cstring>

#include "fuzz_common.h"
#include "lorawan/lorawan_crypto.h"
#include "lorawan/lorawan_frame.h"

using namespace sanigate::dev::lorawan;

namespace {

// protocols.md §3.1: NwkSKey and AppSKey of V1-V3, AppKey of V4/V5.
const Key kNwk = {0x2B, 0x7E, 0x15, 0x16, 0x28, 0xAE, 0xD2, 0xA6, 0xAB, 0xF7, 0x15, 0x88, 0x09, 0xCF, 0x4F, 0x3C};
const Key kApp = {0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x0E, 0x0F};
const Key kAppKey = {0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xAA, 0xBB, 0xCC, 0xDD, 0xEE, 0xFF};

void CheckFCnt(uint16_t f16, std::optional<uint32_t> last) {
  FCntCandidate c = ReconstructFCnt(f16, last);
  switch (c.verdict) {
    case FCntVerdict::kNew:
      FUZZ_CHECK((c.fcnt32 & 0xFFFF) == f16, "new counter keeps the received LSBs");
      if (last) FUZZ_CHECK(c.fcnt32 > *last && c.fcnt32 - *last < kMaxFCntGap, "new counter within the gap");
      break;
    case FCntVerdict::kRepeat:
      FUZZ_CHECK(last && c.fcnt32 == *last && (*last & 0xFFFF) == f16, "repeat is the last counter");
      break;
    case FCntVerdict::kReplay:
      FUZZ_CHECK(last && c.fcnt32 < *last && (c.fcnt32 & 0xFFFF) == f16, "replay is behind the last counter");
      break;
    case FCntVerdict::kGapTooLarge:
      FUZZ_CHECK(last && (c.fcnt32 & 0xFFFF) == f16 && c.fcnt32 - *last >= kMaxFCntGap, "gap");
      break;
    case FCntVerdict::kExhausted:
      FUZZ_CHECK(last && *last > 0xFFFFFFFFu - kMaxFCntGap, "exhausted only near the end of the counter");
      break;
  }
}

void Data(std::span<const uint8_t> phy) {
  auto parsed = ParseDataFrame(phy);
  if (!parsed.ok()) return;
  const DataFrame& f = parsed.value();
  FUZZ_CHECK(f.fopts.size() == f.fctrl.fopts_len(), "FOpts length");
  FUZZ_CHECK(f.mic_input.size() + 4 == phy.size(), "MIC input");
  for (std::optional<uint32_t> last : {std::optional<uint32_t>{}, std::optional<uint32_t>{0u},
                                      std::optional<uint32_t>{0xFFFFu}, std::optional<uint32_t>{0x12345u},
                                      std::optional<uint32_t>{0xFFFFFFF0u}})
    CheckFCnt(f.fcnt16, last);
  // Take the upper half of the counter from the frame itself, so every epoch is reachable.
  const uint32_t fcnt32 = uint32_t{f.dev_addr >> 16} << 16 | f.fcnt16;
  SessionKeys keys{kNwk, kApp};
  auto mic_ok = VerifyDataMic(f, kNwk, fcnt32);
  FUZZ_CHECK(mic_ok.ok(), "VerifyDataMic failed: " + mic_ok.status().message());
  auto plain = DecryptFrmPayload(f, keys, fcnt32);
  FUZZ_CHECK(plain.ok(), "DecryptFrmPayload failed: " + plain.status().message());
  FUZZ_CHECK(plain.value().size() == f.frm_payload.size(), "decrypted size");

  DataFrameSpec spec;
  spec.mtype = f.mtype;
  spec.dev_addr = f.dev_addr;
  spec.fcnt32 = fcnt32;
  spec.fctrl_flags = f.fctrl.raw & 0xF0;
  spec.fopts = f.fopts;
  spec.fport = f.fport;
  spec.payload = plain.value();
  auto built = BuildDataFrame(spec, keys);
  FUZZ_CHECK(built.ok(), "BuildDataFrame refused a parsed frame: " + built.status().message());
  const Bytes& b = built.value();
  FUZZ_CHECK(b.size() == phy.size(), "rebuilt size");
  FUZZ_CHECK(b[0] == (phy[0] & 0xE0), "rebuilt MHDR");  // the RFU bits 4..2 are not kept
  FUZZ_CHECK(std::memcmp(b.data() + 1, phy.data() + 1, phy.size() - 5) == 0, "rebuilt frame differs before the MIC");
  auto again = ParseDataFrame(b);
  FUZZ_CHECK(again.ok(), "ParseDataFrame(BuildDataFrame(f)) failed: " + again.status().message());
  auto verified = VerifyDataMic(again.value(), kNwk, fcnt32);
  FUZZ_CHECK(verified.ok() && verified.value(), "the MIC of a built frame does not verify");
  // The MIC covers the MHDR as received; the rebuilt frame drops its RFU and Major bits, so the
  // two MICs are comparable only when those bits were zero.
  if ((phy[0] & 0x1F) == 0)
    FUZZ_CHECK(mic_ok.value() == (std::memcmp(b.data() + b.size() - 4, phy.data() + phy.size() - 4, 4) == 0),
               "VerifyDataMic disagrees with the MIC BuildDataFrame computes");
}

void JoinRequest_(std::span<const uint8_t> phy) {
  auto req = ParseJoinRequest(phy);
  if (!req.ok()) return;
  auto mic_ok = VerifyJoinRequestMic(phy, kAppKey);
  FUZZ_CHECK(mic_ok.ok(), "VerifyJoinRequestMic failed");
  auto built = BuildJoinRequest(req.value(), kAppKey);
  FUZZ_CHECK(built.ok(), "BuildJoinRequest failed");
  FUZZ_CHECK(built.value().size() == 23 && std::memcmp(built.value().data() + 1, phy.data() + 1, 18) == 0, "join request fields");
  auto again = ParseJoinRequest(built.value());
  FUZZ_CHECK(again.ok() && again.value().app_eui == req.value().app_eui && again.value().dev_eui == req.value().dev_eui &&
                 again.value().dev_nonce == req.value().dev_nonce,
             "join request round trip");
  auto v = VerifyJoinRequestMic(built.value(), kAppKey);
  FUZZ_CHECK(v.ok() && v.value(), "the MIC of a built join request does not verify");
  // The builder writes MHDR 0x00; the input's MIC covers its own MHDR, whose RFU bits may be set.
  if (phy[0] == 0x00)
    FUZZ_CHECK(mic_ok.value() == (std::memcmp(built.value().data() + 19, phy.data() + 19, 4) == 0), "join MIC verdict");
}

void JoinAccept_(std::span<const uint8_t> in) {
  (void)OpenJoinAccept(in, kAppKey);
  // The input's bytes as the fields of a join accept.
  fuzz::Knobs k(in.data(), in.size());
  JoinAccept ja;
  ja.app_nonce = k.U32() & 0xFFFFFF;
  ja.net_id = k.U32() & 0xFFFFFF;
  ja.dev_addr = k.U32();
  ja.dl_settings = k.U8() & 0x7F;
  ja.rx_delay = k.U8() & 0x0F;
  if (k.Bit()) {
    std::array<uint8_t, 16> cf{};
    for (auto& c : cf) c = k.U8();
    ja.cf_list = cf;
  }
  auto wire = BuildJoinAccept(ja, kAppKey);
  FUZZ_CHECK(wire.ok(), "BuildJoinAccept failed: " + wire.status().message());
  FUZZ_CHECK(wire.value().size() == (ja.cf_list ? 33u : 17u), "join accept size");
  auto opened = OpenJoinAccept(wire.value(), kAppKey);
  FUZZ_CHECK(opened.ok(), "OpenJoinAccept(BuildJoinAccept(ja)) failed: " + opened.status().message());
  const JoinAccept& o = opened.value();
  FUZZ_CHECK(o.app_nonce == ja.app_nonce && o.net_id == ja.net_id && o.dev_addr == ja.dev_addr &&
                 o.dl_settings == ja.dl_settings && o.rx_delay == ja.rx_delay && o.cf_list == ja.cf_list,
             "join accept round trip");
  Key wrong = kAppKey;
  wrong[0] ^= 1;
  FUZZ_CHECK(!OpenJoinAccept(wire.value(), wrong).ok(), "a join accept opened with the wrong AppKey");
  auto keys = DeriveSessionKeys(kAppKey, ja.app_nonce, ja.net_id, static_cast<uint16_t>(ja.dev_addr));
  FUZZ_CHECK(keys.ok(), "DeriveSessionKeys failed");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::span<const uint8_t> phy(data, size);
  auto mtype = PeekMType(phy);
  if (mtype.ok()) {
    FUZZ_CHECK(static_cast<uint8_t>(mtype.value()) == data[0] >> 5, "MType");
    (void)MTypeName(mtype.value());
  }
  Data(phy);
  JoinRequest_(phy);
  JoinAccept_(phy);
  return 0;
}
