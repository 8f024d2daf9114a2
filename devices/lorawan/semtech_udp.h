// Semtech UDP packet-forwarder protocol (GWMP, versions 1 and 2): datagram parsing into typed
// rxpk/stat/TX_ACK structs, and the server's replies (PUSH_ACK, PULL_ACK, PULL_RESP). Also the
// gateway-side builders (PUSH_DATA, PULL_DATA, TX_ACK) for simulators and tests.
// Bytes in, a datagram or a precise error out: never throws, no I/O, no state. Thread-safe.
// Layout: protocols.md §2 (Lora-net/packet_forwarder PROTOCOL.TXT).
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "lorawan/band_plan.h"
#include "lorawan/lorawan_crypto.h"

namespace sanigate::dev::lorawan {

enum class GwmpId : uint8_t {
  kPushData = 0x00,
  kPushAck = 0x01,
  kPullData = 0x02,
  kPullResp = 0x03,
  kPullAck = 0x04,
  kTxAck = 0x05,
};
const char* GwmpIdName(GwmpId id);

using Token = std::array<uint8_t, 2>;  // opaque, echoed byte for byte

// One received frame ("rxpk"). Required: tmst, freq, stat, modu, datr, size, data; the rest is
// optional because forwarders differ (e.g. multi-antenna ones report rssi per antenna).
struct Rxpk {
  std::optional<std::string> time;  // ISO-8601 UTC, present with GPS
  uint32_t tmst = 0;                // µs counter at end of RX, base for downlink timing
  uint32_t freq_hz = 0;
  std::optional<uint32_t> chan;
  std::optional<uint32_t> rfch;
  int stat = 0;                     // CRC: 1 ok, -1 bad, 0 none
  std::string modu;                 // "LORA" or "FSK"
  std::optional<LoraRate> lora;     // modu LORA: datr "SF7BW125"
  std::optional<uint32_t> fsk_bps;  // modu FSK: datr as a number
  std::optional<std::string> codr;  // "4/5" .. "4/8"
  std::optional<int> rssi;          // dBm
  std::optional<double> lsnr;       // dB
  Bytes data;                       // the PHYPayload, size checked against "size"
};

struct GatewayStat {
  std::optional<std::string> time;  // "2014-01-12 08:59:28 GMT"
  std::optional<double> lati, longi;
  std::optional<int> alti;
  std::optional<uint32_t> rxnb, rxok, rxfw, dwnb, txnb;
  std::optional<double> ackr;  // % of upstream datagrams acknowledged
};

// TX_ACK result: "NONE" (or no JSON at all) is success.
enum class TxAckError {
  kNone,
  kTooLate,
  kTooEarly,
  kCollisionPacket,
  kCollisionBeacon,
  kTxFreq,
  kTxPower,
  kGpsUnlocked,
  kUnknown,  // a string this code does not know; see TxAck::text
};
struct TxAck {
  TxAckError error = TxAckError::kNone;
  std::string text;                 // as sent ("TOO_LATE"), empty when the forwarder sent no JSON
  std::optional<std::string> warn;  // newer forwarders: {"warn":"TX_POWER","value":14}
};
TxAckError ParseTxAckError(std::string_view s);
const char* TxAckErrorName(TxAckError e);

// The downlink to send ("txpk"). Either imme or tmst; RX1 is rx.tmst + 1 s (join: + 5 s), mod 2^32.
struct Txpk {
  bool imme = false;
  uint32_t tmst = 0;  // ignored when imme
  uint32_t freq_hz = 0;
  uint32_t rfch = 0;
  int powe = 14;  // dBm
  LoraRate rate;
  std::string codr = "4/5";
  bool ipol = true;  // LoRaWAN downlinks use inverted polarity
  std::optional<bool> ncrc;
  Bytes data;
};

struct Datagram {
  uint8_t version = 2;
  Token token{};
  GwmpId id = GwmpId::kPushData;
  std::optional<uint64_t> gateway_eui;  // PUSH_DATA, PULL_DATA, TX_ACK
  std::vector<Rxpk> rxpk;               // PUSH_DATA: the entries that parsed
  // PUSH_DATA: entries that did not parse are left out of `rxpk` and counted here, each on its
  // own, so one bad entry never costs the others (nor the PUSH_ACK). The first few messages
  // are kept ("PUSH_DATA rxpk[1].tmst: ..."), not all: a 64 KiB datagram of bad entries must
  // not become thousands of strings.
  size_t rxpk_bad = 0;
  std::vector<std::string> rxpk_errors;
  std::optional<GatewayStat> stat;        // PUSH_DATA
  std::optional<std::string> stat_error;  // PUSH_DATA: a bad "stat" object, left out
  std::optional<TxAck> tx_ack;            // TX_ACK
  std::optional<Txpk> txpk;               // PULL_RESP (parsed for simulators and tests)
};

// Parses any GWMP datagram. Errors name the part: "PUSH_DATA rxpk[0].tmst: expected an unsigned
// 32-bit integer, got -5". Unknown JSON keys are ignored (forwarders add fields over time).
Result<Datagram> ParseDatagram(std::span<const uint8_t> datagram);

Bytes BuildPushAck(const Token& token, uint8_t version = 2);
Bytes BuildPullAck(const Token& token, uint8_t version = 2);
// {"txpk":{...}} in the key order of PROTOCOL.TXT; errors on an empty or oversized payload.
Result<Bytes> BuildPullResp(const Token& token, const Txpk& txpk, uint8_t version = 2);

// Gateway side, for simulators and tests.
Bytes BuildPullData(const Token& token, uint64_t gateway_eui, uint8_t version = 2);
// error kNone sends no JSON, like the reference forwarder.
Bytes BuildTxAck(const Token& token, uint64_t gateway_eui, TxAckError error = TxAckError::kNone);
Result<Bytes> BuildPushData(const Token& token, uint64_t gateway_eui, const std::vector<Rxpk>& rxpk,
                            uint8_t version = 2);

// Base64 with padding (RFC 4648 §4) over OpenSSL EVP_EncodeBlock / EVP_DecodeBlock.
std::string Base64Encode(std::span<const uint8_t> bytes);
Result<Bytes> Base64Decode(std::string_view text);

}  // namespace sanigate::dev::lorawan
