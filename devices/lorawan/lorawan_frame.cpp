#include "lorawan/lorawan_frame.h"

#include <openssl/crypto.h>

#include <algorithm>
#include <cstdio>

namespace sanigate::dev::lorawan {
namespace {

// A LoRa PHY payload is at most 255 bytes (the radio's length byte), which also keeps len(msg)
// within the one length byte of B0.
constexpr size_t kMaxPhySize = 255;
constexpr size_t kMicSize = 4;
constexpr size_t kJoinRequestSize = 23;

uint32_t Le32(std::span<const uint8_t> b, size_t at) {
  return uint32_t{b[at]} | uint32_t{b[at + 1]} << 8 | uint32_t{b[at + 2]} << 16 |
         uint32_t{b[at + 3]} << 24;
}
uint64_t Le64(std::span<const uint8_t> b, size_t at) {
  return uint64_t{Le32(b, at)} | uint64_t{Le32(b, at + 4)} << 32;
}
void PutLe(Bytes& out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i, v >>= 8) out.push_back(static_cast<uint8_t>(v));
}

std::string Hex8(uint8_t v) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "0x%02X", v);
  return buf;
}

Mic FirstFour(const Block& b) { return {b[0], b[1], b[2], b[3]}; }

// Constant-time: a forger learns nothing from how fast a wrong MIC is rejected.
bool SameMic(const Mic& a, const Mic& b) {
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

// The Ai / B0 block shared by encryption and MIC: first byte, Dir, DevAddr, FCnt32, last byte.
Block CounterBlock(uint8_t first, Direction dir, uint32_t dev_addr, uint32_t fcnt32, uint8_t last) {
  Block b{};
  b[0] = first;
  b[5] = static_cast<uint8_t>(dir);
  for (int i = 0; i < 4; ++i) {
    b[6 + i] = static_cast<uint8_t>(dev_addr >> (8 * i));
    b[10 + i] = static_cast<uint8_t>(fcnt32 >> (8 * i));
  }
  b[15] = last;
  return b;
}

Result<Mic> CmacMic(const Key& key, std::span<const uint8_t> msg) {
  auto cmac = AesCmac(key, msg);
  if (!cmac.ok()) return cmac.status();
  return FirstFour(*cmac);
}

}  // namespace

const char* MTypeName(MType t) {
  switch (t) {
    case MType::kJoinRequest:
      return "join_request";
    case MType::kJoinAccept:
      return "join_accept";
    case MType::kUnconfirmedUp:
      return "unconfirmed_up";
    case MType::kUnconfirmedDown:
      return "unconfirmed_down";
    case MType::kConfirmedUp:
      return "confirmed_up";
    case MType::kConfirmedDown:
      return "confirmed_down";
    case MType::kRfu:
      return "rfu";
    case MType::kProprietary:
      return "proprietary";
  }
  return "?";
}

bool IsDataFrame(MType t) {
  return t == MType::kUnconfirmedUp || t == MType::kUnconfirmedDown || t == MType::kConfirmedUp ||
         t == MType::kConfirmedDown;
}

bool IsUplink(MType t) {
  return t == MType::kJoinRequest || t == MType::kUnconfirmedUp || t == MType::kConfirmedUp;
}

Direction DataFrame::direction() const {
  return IsUplink(mtype) ? Direction::kUp : Direction::kDown;
}

Result<MType> PeekMType(std::span<const uint8_t> phy) {
  if (phy.empty()) return Invalid("empty PHYPayload");
  uint8_t major = phy[0] & 0x03;
  if (major != 0)
    return Invalid("MHDR " + Hex8(phy[0]) + ": major version " + std::to_string(major) +
                   " is not LoRaWAN R1 (0)");
  return static_cast<MType>(phy[0] >> 5);
}

Result<DataFrame> ParseDataFrame(std::span<const uint8_t> phy) {
  auto mtype = PeekMType(phy);
  if (!mtype.ok()) return mtype.status();
  if (!IsDataFrame(*mtype))
    return Invalid(std::string("MType ") + MTypeName(*mtype) + " is not a data frame");
  // MHDR 1 + DevAddr 4 + FCtrl 1 + FCnt 2 + MIC 4.
  if (phy.size() < 12)
    return Invalid("data frame of " + std::to_string(phy.size()) +
                   " bytes is shorter than the 12-byte minimum (MHDR, FHDR, MIC)");
  if (phy.size() > kMaxPhySize)
    return Invalid("data frame of " + std::to_string(phy.size()) + " bytes is longer than " +
                   std::to_string(kMaxPhySize));
  DataFrame f;
  f.mtype = *mtype;
  f.dev_addr = Le32(phy, 1);
  f.fctrl.raw = phy[5];
  f.fcnt16 = static_cast<uint16_t>(phy[6] | phy[7] << 8);
  const size_t body_end = phy.size() - kMicSize;
  size_t pos = 8;
  const size_t fopts_len = f.fctrl.fopts_len();
  if (pos + fopts_len > body_end)
    return Invalid("FOptsLen " + std::to_string(fopts_len) + " runs past the frame (" +
                   std::to_string(body_end - pos) + " bytes before the MIC)");
  f.fopts.assign(phy.begin() + pos, phy.begin() + pos + fopts_len);
  pos += fopts_len;
  if (pos < body_end) {
    f.fport = phy[pos++];
    f.frm_payload.assign(phy.begin() + pos, phy.begin() + body_end);
  }
  if (f.fport == 0 && fopts_len > 0)
    return Invalid("FPort 0 with FOptsLen " + std::to_string(fopts_len) +
                   ": MAC commands may be in FOpts or in FRMPayload, not both");
  std::copy(phy.end() - kMicSize, phy.end(), f.mic.begin());
  f.mic_input.assign(phy.begin(), phy.begin() + body_end);
  return f;
}

Result<Mic> ComputeDataMic(const Key& nwk_s_key, Direction dir, uint32_t dev_addr, uint32_t fcnt32,
                           std::span<const uint8_t> msg) {
  if (msg.size() > kMaxPhySize)
    return Invalid("MIC input of " + std::to_string(msg.size()) + " bytes is longer than " +
                   std::to_string(kMaxPhySize));
  Block b0 = CounterBlock(0x49, dir, dev_addr, fcnt32, static_cast<uint8_t>(msg.size()));
  Bytes all(b0.begin(), b0.end());
  all.insert(all.end(), msg.begin(), msg.end());
  return CmacMic(nwk_s_key, all);
}

Result<bool> VerifyDataMic(const DataFrame& frame, const Key& nwk_s_key, uint32_t fcnt32) {
  auto mic = ComputeDataMic(nwk_s_key, frame.direction(), frame.dev_addr, fcnt32, frame.mic_input);
  if (!mic.ok()) return mic.status();
  return SameMic(*mic, frame.mic);
}

Result<Bytes> CryptFrmPayload(const Key& key, Direction dir, uint32_t dev_addr, uint32_t fcnt32,
                              std::span<const uint8_t> data) {
  if (data.empty()) return Bytes{};
  if (data.size() > kMaxPhySize)
    return Invalid("FRMPayload of " + std::to_string(data.size()) + " bytes is longer than " +
                   std::to_string(kMaxPhySize));
  // All A blocks in one buffer, one ECB call for the key stream S.
  const size_t blocks = (data.size() + 15) / 16;
  Bytes a;
  a.reserve(blocks * 16);
  for (size_t i = 1; i <= blocks; ++i) {
    Block ai = CounterBlock(0x01, dir, dev_addr, fcnt32, static_cast<uint8_t>(i));
    a.insert(a.end(), ai.begin(), ai.end());
  }
  auto s = AesEcbEncrypt(key, a);
  if (!s.ok()) return s.status();
  Bytes out(data.begin(), data.end());
  for (size_t i = 0; i < out.size(); ++i) out[i] ^= (*s)[i];
  return out;
}

Result<Bytes> DecryptFrmPayload(const DataFrame& frame, const SessionKeys& keys, uint32_t fcnt32) {
  if (!frame.fport) return Bytes{};
  const Key& k = *frame.fport == 0 ? keys.nwk_s_key : keys.app_s_key;
  return CryptFrmPayload(k, frame.direction(), frame.dev_addr, fcnt32, frame.frm_payload);
}

const char* FCntVerdictName(FCntVerdict v) {
  switch (v) {
    case FCntVerdict::kNew:
      return "new";
    case FCntVerdict::kRepeat:
      return "repeat";
    case FCntVerdict::kReplay:
      return "replay";
    case FCntVerdict::kGapTooLarge:
      return "gap_too_large";
    case FCntVerdict::kExhausted:
      return "exhausted";
  }
  return "?";
}

FCntCandidate ReconstructFCnt(uint16_t fcnt16, std::optional<uint32_t> last, uint32_t max_gap) {
  if (!last) return {fcnt16, FCntVerdict::kNew};
  const uint64_t l = *last;
  const uint64_t same_epoch = (l & 0xFFFF0000u) | fcnt16;
  if (same_epoch == l) return {*last, FCntVerdict::kRepeat};
  // The nearest value above `last` with these 16 LSBs: the next epoch if the low half wrapped.
  const uint64_t ahead = same_epoch > l ? same_epoch : same_epoch + 0x10000;
  if (max_gap == 0 || ahead - l < max_gap) {
    if (ahead > 0xFFFFFFFFu) return {0, FCntVerdict::kExhausted};
    return {static_cast<uint32_t>(ahead), FCntVerdict::kNew};
  }
  // Too far ahead to be the next frame. If the nearest value at or below `last` with these LSBs
  // is closer, call it what it most likely is, an old frame played again; both are dropped
  // without a MIC check.
  const bool has_behind = same_epoch < l || l >= 0x10000;
  const uint64_t behind = same_epoch < l ? same_epoch : same_epoch - 0x10000;
  if (has_behind && l - behind <= ahead - l)
    return {static_cast<uint32_t>(behind), FCntVerdict::kReplay};
  return {static_cast<uint32_t>(ahead), FCntVerdict::kGapTooLarge};
}

std::vector<uint32_t> FCntCandidatesWithoutSession(uint16_t fcnt16, uint32_t floor,
                                                   uint32_t epochs) {
  std::vector<uint32_t> out;
  uint64_t c = (uint64_t{floor} & 0xFFFF0000u) | fcnt16;
  if (c < floor) c += 0x10000;  // this epoch's value is below the floor: start with the next
  for (uint32_t i = 0; i < epochs && c <= 0xFFFFFFFFu; ++i, c += 0x10000)
    out.push_back(static_cast<uint32_t>(c));
  return out;
}

const char* UplinkVerdictName(UplinkVerdict v) {
  switch (v) {
    case UplinkVerdict::kNew:
      return "new";
    case UplinkVerdict::kRepeat:
      return "repeat";
    case UplinkVerdict::kReplay:
      return "replay";
    case UplinkVerdict::kGapTooLarge:
      return "gap_too_large";
    case UplinkVerdict::kExhausted:
      return "exhausted";
    case UplinkVerdict::kBadMic:
      return "bad_mic";
  }
  return "?";
}

Result<UplinkCheck> CheckUplink(const DataFrame& frame, const Key& nwk_s_key,
                                std::optional<uint32_t> last, const FCntPolicy& policy) {
  // True when the MIC verifies under `fcnt`; `error` keeps a library failure.
  Status error;
  auto mic_ok = [&](uint32_t fcnt) {
    auto ok = VerifyDataMic(frame, nwk_s_key, fcnt);
    if (!ok.ok()) error = ok.status();
    return ok.ok() && *ok;
  };
  auto result = [&](UplinkVerdict v, uint32_t fcnt) -> Result<UplinkCheck> {
    if (!error.ok()) return error;
    return UplinkCheck{v, fcnt};
  };

  if (!last) {
    // No counter known: the first epoch (at or above the floor) whose MIC fits is the counter.
    auto candidates =
        FCntCandidatesWithoutSession(frame.fcnt16, policy.floor, policy.search_epochs);
    for (uint32_t c : candidates)
      if (mic_ok(c)) return result(UplinkVerdict::kNew, c);
    // Just below a seeded floor: an old frame, not a forgery.
    const uint64_t below = (uint64_t{policy.floor} & 0xFFFF0000u) | frame.fcnt16;
    if (below < policy.floor && mic_ok(static_cast<uint32_t>(below)))
      return result(UplinkVerdict::kReplay, static_cast<uint32_t>(below));
    return result(UplinkVerdict::kBadMic, candidates.empty() ? frame.fcnt16 : candidates[0]);
  }

  const FCntCandidate cand = ReconstructFCnt(frame.fcnt16, last, policy.max_gap);
  if (cand.verdict == FCntVerdict::kRepeat)
    return result(mic_ok(cand.fcnt32) ? UplinkVerdict::kRepeat : UplinkVerdict::kBadMic,
                  cand.fcnt32);
  // The two counters these 16 LSBs can mean: the nearest above `last` and the nearest below.
  // The counter picks which one to try first; the MIC decides. With no gap limit (LoRaWAN
  // 1.0.4) the MIC is the only way to tell a replay from a frame ahead.
  const uint64_t l = *last;
  const uint64_t same_epoch = (l & 0xFFFF0000u) | frame.fcnt16;
  const uint64_t ahead = same_epoch > l ? same_epoch : same_epoch + 0x10000;
  const bool has_behind = same_epoch < l || same_epoch >= 0x10000;
  const uint32_t behind = static_cast<uint32_t>(same_epoch < l ? same_epoch : same_epoch - 0x10000);
  // Past 0xFFFFFFFF a device signs with its wrapped 32-bit counter: the session is over.
  const uint32_t ahead32 = static_cast<uint32_t>(ahead);
  const UplinkVerdict ahead_verdict = ahead > 0xFFFFFFFFu ? UplinkVerdict::kExhausted
                                      : policy.max_gap == 0 || ahead - l < policy.max_gap
                                          ? UplinkVerdict::kNew
                                          : UplinkVerdict::kGapTooLarge;
  if (cand.verdict == FCntVerdict::kReplay) {
    if (mic_ok(behind)) return result(UplinkVerdict::kReplay, behind);
    if (mic_ok(ahead32)) return result(ahead_verdict, ahead32);
    return result(UplinkVerdict::kBadMic, behind);
  }
  if (mic_ok(ahead32)) return result(ahead_verdict, ahead32);
  if (has_behind && mic_ok(behind)) return result(UplinkVerdict::kReplay, behind);
  return result(UplinkVerdict::kBadMic, ahead32);
}

Result<Bytes> BuildDataFrame(const DataFrameSpec& spec, const SessionKeys& keys) {
  if (!IsDataFrame(spec.mtype))
    return Invalid(std::string("MType ") + MTypeName(spec.mtype) + " is not a data frame");
  if (spec.fctrl_flags & 0x0F)
    return Invalid("fctrl_flags " + Hex8(spec.fctrl_flags) +
                   " sets FOptsLen bits; FOptsLen comes from fopts");
  if (spec.fopts.size() > 15)
    return Invalid("fopts of " + std::to_string(spec.fopts.size()) + " bytes exceeds 15");
  if (!spec.fport && !spec.payload.empty()) return Invalid("a payload needs an FPort");
  if (spec.fport == 0 && !spec.fopts.empty())
    return Invalid("FPort 0 with fopts: MAC commands may be in FOpts or in FRMPayload, not both");
  const size_t size = 8 + spec.fopts.size() + (spec.fport ? 1 : 0) + spec.payload.size() + kMicSize;
  if (size > kMaxPhySize)
    return Invalid("frame of " + std::to_string(size) + " bytes is longer than " +
                   std::to_string(kMaxPhySize));
  const Direction dir = IsUplink(spec.mtype) ? Direction::kUp : Direction::kDown;
  Bytes out;
  out.reserve(size);
  out.push_back(static_cast<uint8_t>(static_cast<uint8_t>(spec.mtype) << 5));
  PutLe(out, spec.dev_addr, 4);
  out.push_back(static_cast<uint8_t>(spec.fctrl_flags | spec.fopts.size()));
  PutLe(out, spec.fcnt32 & 0xFFFF, 2);
  out.insert(out.end(), spec.fopts.begin(), spec.fopts.end());
  if (spec.fport) {
    out.push_back(*spec.fport);
    const Key& k = *spec.fport == 0 ? keys.nwk_s_key : keys.app_s_key;
    auto enc = CryptFrmPayload(k, dir, spec.dev_addr, spec.fcnt32, spec.payload);
    if (!enc.ok()) return enc.status();
    out.insert(out.end(), enc->begin(), enc->end());
  }
  auto mic = ComputeDataMic(keys.nwk_s_key, dir, spec.dev_addr, spec.fcnt32, out);
  if (!mic.ok()) return mic.status();
  out.insert(out.end(), mic->begin(), mic->end());
  return out;
}

Result<JoinRequest> ParseJoinRequest(std::span<const uint8_t> phy) {
  auto mtype = PeekMType(phy);
  if (!mtype.ok()) return mtype.status();
  if (*mtype != MType::kJoinRequest)
    return Invalid(std::string("MType ") + MTypeName(*mtype) + " is not a join request");
  if (phy.size() != kJoinRequestSize)
    return Invalid("join request of " + std::to_string(phy.size()) + " bytes, expected 23");
  JoinRequest r;
  r.app_eui = Le64(phy, 1);
  r.dev_eui = Le64(phy, 9);
  r.dev_nonce = static_cast<uint16_t>(phy[17] | phy[18] << 8);
  std::copy(phy.begin() + 19, phy.end(), r.mic.begin());
  return r;
}

Result<bool> VerifyJoinRequestMic(std::span<const uint8_t> phy, const Key& app_key) {
  auto req = ParseJoinRequest(phy);
  if (!req.ok()) return req.status();
  auto mic = CmacMic(app_key, phy.first(kJoinRequestSize - kMicSize));
  if (!mic.ok()) return mic.status();
  return SameMic(*mic, req->mic);
}

Result<Bytes> BuildJoinRequest(const JoinRequest& req, const Key& app_key) {
  Bytes out{0x00};
  PutLe(out, req.app_eui, 8);
  PutLe(out, req.dev_eui, 8);
  PutLe(out, req.dev_nonce, 2);
  auto mic = CmacMic(app_key, out);
  if (!mic.ok()) return mic.status();
  out.insert(out.end(), mic->begin(), mic->end());
  return out;
}

Result<Bytes> BuildJoinAccept(const JoinAccept& ja, const Key& app_key) {
  if (ja.app_nonce > 0xFFFFFF)
    return Invalid("app_nonce " + std::to_string(ja.app_nonce) + " exceeds 24 bits");
  if (ja.net_id > 0xFFFFFF)
    return Invalid("net_id " + std::to_string(ja.net_id) + " exceeds 24 bits");
  if (ja.dl_settings & 0x80)
    return Invalid("dl_settings " + Hex8(ja.dl_settings) + ": bit 7 is RFU in LoRaWAN 1.0.x");
  if (ja.rx_delay > 15)
    return Invalid("rx_delay " + std::to_string(ja.rx_delay) + " is outside 0..15");
  Bytes plain{0x20};
  PutLe(plain, ja.app_nonce, 3);
  PutLe(plain, ja.net_id, 3);
  PutLe(plain, ja.dev_addr, 4);
  plain.push_back(ja.dl_settings);
  plain.push_back(ja.rx_delay);
  if (ja.cf_list) plain.insert(plain.end(), ja.cf_list->begin(), ja.cf_list->end());
  auto mic = CmacMic(app_key, plain);
  if (!mic.ok()) return mic.status();
  plain.insert(plain.end(), mic->begin(), mic->end());
  auto enc = AesEcbDecrypt(app_key, std::span<const uint8_t>(plain).subspan(1));
  if (!enc.ok()) return enc.status();
  Bytes wire{0x20};
  wire.insert(wire.end(), enc->begin(), enc->end());
  return wire;
}

Result<JoinAccept> OpenJoinAccept(std::span<const uint8_t> wire, const Key& app_key) {
  auto mtype = PeekMType(wire);
  if (!mtype.ok()) return mtype.status();
  if (*mtype != MType::kJoinAccept)
    return Invalid(std::string("MType ") + MTypeName(*mtype) + " is not a join accept");
  if (wire.size() != 17 && wire.size() != 33)
    return Invalid("join accept of " + std::to_string(wire.size()) + " bytes, expected 17 or 33");
  auto dec = AesEcbEncrypt(app_key, wire.subspan(1));
  if (!dec.ok()) return dec.status();
  Bytes plain{wire[0]};
  plain.insert(plain.end(), dec->begin(), dec->end());
  Mic got{};
  std::copy(plain.end() - kMicSize, plain.end(), got.begin());
  plain.resize(plain.size() - kMicSize);
  auto mic = CmacMic(app_key, plain);
  if (!mic.ok()) return mic.status();
  if (!SameMic(*mic, got)) return Invalid("join accept MIC mismatch (wrong AppKey or corrupted)");
  JoinAccept ja;
  ja.app_nonce = plain[1] | plain[2] << 8 | plain[3] << 16;
  ja.net_id = plain[4] | plain[5] << 8 | plain[6] << 16;
  ja.dev_addr = Le32(plain, 7);
  ja.dl_settings = plain[11];
  ja.rx_delay = plain[12];
  if (plain.size() == 29) {
    ja.cf_list.emplace();
    std::copy(plain.begin() + 13, plain.end(), ja.cf_list->begin());
  }
  return ja;
}

Result<SessionKeys> DeriveSessionKeys(const Key& app_key, uint32_t app_nonce, uint32_t net_id,
                                      uint16_t dev_nonce) {
  if (app_nonce > 0xFFFFFF)
    return Invalid("app_nonce " + std::to_string(app_nonce) + " exceeds 24 bits");
  if (net_id > 0xFFFFFF) return Invalid("net_id " + std::to_string(net_id) + " exceeds 24 bits");
  // Two blocks, one ECB call: 01|AppNonce|NetID|DevNonce|pad and the same with 02.
  Bytes in;
  for (uint8_t type : {0x01, 0x02}) {
    in.push_back(type);
    PutLe(in, app_nonce, 3);
    PutLe(in, net_id, 3);
    PutLe(in, dev_nonce, 2);
    in.resize(in.size() + 7, 0);
  }
  auto out = AesEcbEncrypt(app_key, in);
  if (!out.ok()) return out.status();
  SessionKeys k;
  std::copy(out->begin(), out->begin() + 16, k.nwk_s_key.begin());
  std::copy(out->begin() + 16, out->end(), k.app_s_key.begin());
  return k;
}

}  // namespace sanigate::dev::lorawan
