// Semtech UDP packet-forwarder datagrams (GWMP v1/v2): ParseDatagram on anything; what parses is
// built again (PUSH_DATA rxpk, PULL_RESP txpk, PULL_DATA, TX_ACK, the ACKs) and parsed once more,
// with the same values back. Each received frame also goes where the adapter sends it: the band
// plans (channel, data rate, RX1) and the LoRaWAN frame parsers.
#include <cstdint>

#include "fuzz_common.h"
#include "lorawan/band_plan.h"
#include "lorawan/lorawan_frame.h"
#include "lorawan/semtech_udp.h"

using namespace sanigate::dev::lorawan;

namespace {

void SameRxpk(const Rxpk& a, const Rxpk& b) {
  FUZZ_CHECK(a.time == b.time, "time");
  FUZZ_CHECK(a.tmst == b.tmst, "tmst");
  FUZZ_CHECK(a.freq_hz == b.freq_hz, "freq " + std::to_string(a.freq_hz) + " vs " + std::to_string(b.freq_hz));
  FUZZ_CHECK(a.chan == b.chan && a.rfch == b.rfch, "chan/rfch");
  FUZZ_CHECK(a.stat == b.stat, "stat");
  FUZZ_CHECK(a.modu == b.modu, "modu");
  FUZZ_CHECK(a.lora == b.lora && a.fsk_bps == b.fsk_bps, "datr");
  FUZZ_CHECK(a.codr == b.codr, "codr");
  FUZZ_CHECK(a.rssi == b.rssi, "rssi");
  FUZZ_CHECK(a.lsnr == b.lsnr, "lsnr");
  FUZZ_CHECK(a.data == b.data, "data");
}

void Radio(const Rxpk& p) {
  for (const BandPlan* plan : {&Cn470(), &Eu868()}) {
    (void)plan->UplinkChannel(p.freq_hz);
    if (auto rx1 = plan->Rx1Frequency(p.freq_hz); rx1.ok()) (void)plan->UplinkChannel(rx1.value());
    if (p.lora) {
      auto dr = plan->DataRate(*p.lora);
      if (dr.ok()) {
        auto rate = plan->Rate(dr.value());
        FUZZ_CHECK(rate.ok() && rate.value() == *p.lora, "Rate(DataRate(r)) != r");
        for (int off = 0; off < 8; ++off)
          if (auto d1 = plan->Rx1DataRate(dr.value(), off); d1.ok()) (void)plan->Rate(d1.value());
        (void)plan->MaxMacPayload(dr.value());
      }
    }
  }
  if (p.lora) {
    auto again = ParseLoraDatr(FormatLoraDatr(*p.lora));
    FUZZ_CHECK(again.ok() && again.value() == *p.lora, "datr round trip");
  }
  auto mtype = PeekMType(p.data);
  if (!mtype.ok()) return;
  if (IsDataFrame(mtype.value())) (void)ParseDataFrame(p.data);
  else if (mtype.value() == MType::kJoinRequest) (void)ParseJoinRequest(p.data);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::span<const uint8_t> in(data, size);
  auto parsed = ParseDatagram(in);
  if (!parsed.ok()) {
    FUZZ_CHECK(parsed.status().code() == sanigate::Code::kInvalid, "a parse failure that is not Invalid: " + parsed.status().ToString());
    return 0;
  }
  const Datagram& g = parsed.value();
  FUZZ_CHECK(size >= 4 && g.version == data[0] && g.token[0] == data[1] && g.token[1] == data[2], "header");
  switch (g.id) {
    case GwmpId::kPushAck:
      FUZZ_CHECK(BuildPushAck(g.token, g.version) == Bytes(in.begin(), in.end()), "PUSH_ACK bytes");
      break;
    case GwmpId::kPullAck:
      FUZZ_CHECK(BuildPullAck(g.token, g.version) == Bytes(in.begin(), in.end()), "PULL_ACK bytes");
      break;
    case GwmpId::kPullData:
      FUZZ_CHECK(g.gateway_eui && BuildPullData(g.token, *g.gateway_eui, g.version) == Bytes(in.begin(), in.end()),
                 "PULL_DATA bytes");
      break;
    case GwmpId::kPushData: {
      FUZZ_CHECK(g.gateway_eui.has_value(), "PUSH_DATA without EUI");
      for (const Rxpk& p : g.rxpk) Radio(p);
      auto built = BuildPushData(g.token, *g.gateway_eui, g.rxpk, g.version);
      FUZZ_CHECK(built.ok(), "BuildPushData refused what ParseDatagram accepted: " + built.status().message());
      auto again = ParseDatagram(built.value());
      FUZZ_CHECK(again.ok(), "ParseDatagram(BuildPushData(...)) failed: " + again.status().message());
      FUZZ_CHECK(again.value().gateway_eui == g.gateway_eui, "EUI");
      FUZZ_CHECK(again.value().rxpk.size() == g.rxpk.size(), "rxpk count");
      for (size_t i = 0; i < g.rxpk.size(); ++i) SameRxpk(g.rxpk[i], again.value().rxpk[i]);
      break;
    }
    case GwmpId::kPullResp: {
      FUZZ_CHECK(g.txpk.has_value(), "PULL_RESP without txpk");
      const Txpk& t = *g.txpk;
      auto built = BuildPullResp(g.token, t, g.version);
      if (!built.ok()) {
        // The builder refuses an empty payload (the parser reads "size":0 as no payload).
        FUZZ_CHECK(t.data.empty(), "BuildPullResp refused a parsed txpk: " + built.status().message());
        break;
      }
      auto again = ParseDatagram(built.value());
      FUZZ_CHECK(again.ok() && again.value().txpk, "ParseDatagram(BuildPullResp(...)) failed: " + again.status().message());
      const Txpk& u = *again.value().txpk;
      FUZZ_CHECK(t.imme == u.imme && (t.imme || t.tmst == u.tmst), "imme/tmst");
      FUZZ_CHECK(t.freq_hz == u.freq_hz && t.rfch == u.rfch && t.powe == u.powe, "freq/rfch/powe");
      FUZZ_CHECK(t.rate == u.rate && t.codr == u.codr && t.ipol == u.ipol && t.ncrc == u.ncrc, "rate/codr/ipol/ncrc");
      FUZZ_CHECK(t.data == u.data, "data");
      break;
    }
    case GwmpId::kTxAck: {
      FUZZ_CHECK(g.tx_ack && g.gateway_eui, "TX_ACK without ack or EUI");
      if (g.tx_ack->error == TxAckError::kUnknown) break;  // a text this code does not know: kept as text only
      auto again = ParseDatagram(BuildTxAck(g.token, *g.gateway_eui, g.tx_ack->error));
      FUZZ_CHECK(again.ok() && again.value().tx_ack, "ParseDatagram(BuildTxAck(...)) failed");
      FUZZ_CHECK(again.value().tx_ack->error == g.tx_ack->error, "TX_ACK error");
      FUZZ_CHECK(ParseTxAckError(TxAckErrorName(g.tx_ack->error)) == g.tx_ack->error, "TX_ACK name round trip");
      break;
    }
  }
  return 0;
}
