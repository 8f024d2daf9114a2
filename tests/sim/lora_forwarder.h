// The LoRaWAN test side: a Semtech UDP packet forwarder ("Concentrator"), a simulated end device
// ("LoraDevice") and payload builders for the two bin-monitor profiles. Tests, the lora_sim demo
// and benchmarks drive the gateway's LoRaWAN adapter with them over real UDP on loopback; every
// frame is built and opened by the project's codec (devices/lorawan/), whose output is checked
// against the dossier's vectors (protocols.md §2, §3.1).
//
// Ownership: a Concentrator owns its UDP socket (closed by Close() or the destructor); a
// LoraDevice is a plain value holding keys and counters. Neither is thread-safe: use one object
// from one thread at a time (several objects on several threads are fine; they share nothing).
// Every wait takes a timeout and returns when it runs out: nothing here blocks unboundedly.
#pragma once

#include <chrono>
#include <atomic>
#include <cstdint>
#include <deque>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/status.h"
#include "lorawan/band_plan.h"
#include "lorawan/lorawan_crypto.h"
#include "lorawan/lorawan_frame.h"
#include "lorawan/semtech_udp.h"

namespace sanigate::test {

using dev::lorawan::Bytes;
using dev::lorawan::Datagram;
using dev::lorawan::JoinAccept;
using dev::lorawan::Key;
using dev::lorawan::LoraRate;
using dev::lorawan::MType;
using dev::lorawan::Rxpk;
using dev::lorawan::SessionKeys;
using dev::lorawan::Token;
using dev::lorawan::TxAckError;
using dev::lorawan::Txpk;

// One received frame as a concentrator reports it: CRC ok, LoRa, coding rate 4/5, no GPS time.
// `freq_hz` defaults to CN470 uplink channel 80 (486.3 MHz), the dossier's example.
Rxpk MakeRxpk(const Bytes& phy, uint32_t tmst, uint32_t freq_hz = 486'300'000, int rssi = -80,
              double snr = 7.5, LoraRate rate = LoraRate{7, 125});

// One rxpk object as JSON text, as BuildPushData writes it: a building block for datagrams that
// mix good entries with bad ones (Concentrator::PushEntries).
std::string RxpkJson(const Rxpk& rx);

// A PUSH_ACK that matched a PUSH_DATA we sent, with the time between send and receipt.
struct PushAck {
  Token token{};
  std::chrono::microseconds latency{0};
};

// A PULL_RESP as received (it has already been answered with TX_ACK, unless disabled).
struct Downlink {
  Token token{};
  uint8_t version = 2;
  Txpk txpk;
  std::chrono::steady_clock::time_point received;
};

struct ConcentratorStats {
  uint64_t push_sent = 0;
  uint64_t push_acks = 0;     // matched to a PUSH_DATA we sent
  uint64_t push_expired = 0;  // given up by ExpirePushes (ack lost or never sent)
  uint64_t pull_sent = 0;
  uint64_t pull_acks = 0;  // matched to a PULL_DATA we sent
  uint64_t downlinks = 0;  // PULL_RESP received
  uint64_t tx_acks_sent = 0;
  uint64_t stray_acks = 0;   // PUSH_ACK/PULL_ACK with a token we have no request for
  uint64_t unexpected = 0;   // datagrams a server should never send a forwarder (PUSH_DATA ...)
  uint64_t undecodable = 0;  // ParseDatagram failed; see last_parse_error()
  uint64_t dropped = 0;      // unclaimed acks/downlinks evicted from a full queue
};

// One packet forwarder (GWMP, protocols.md §2) with its own gateway EUI and UDP socket. Everything
// received is sorted into queues as it arrives, whichever call is waiting, so a PULL_RESP that
// comes in while Push() waits for its PUSH_ACK is still there for WaitDownlink().
class Concentrator {
 public:
  // `version` 2 (default) or 1 (no TX_ACK, as in the old protocol).
  explicit Concentrator(uint64_t gateway_eui, uint8_t version = 2);
  ~Concentrator();
  Concentrator(const Concentrator&) = delete;
  Concentrator& operator=(const Concentrator&) = delete;

  // Binds a UDP socket to source_ip:0 (any 127.0.0.0/8 address on Linux) and aims it at
  // server_host:server_port. Only IPv4 literals.
  Status Open(uint16_t server_port, const std::string& source_ip = "127.0.0.1",
              const std::string& server_host = "127.0.0.1");
  void Close();
  bool is_open() const { return fd_ >= 0; }
  int fd() const { return fd_; }  // for poll() over many concentrators (lora_sim)
  uint16_t local_port() const { return local_port_; }
  uint64_t eui() const { return eui_; }

  // The answer to every following PULL_RESP: TX_ACK with this error (kNone: the reference
  // forwarder's JSON-less success), or nullopt to send no TX_ACK at all.
  void set_tx_ack(std::optional<TxAckError> error) { tx_ack_ = error; }
  // Only the next PULL_RESP gets `error`; later ones get the set_tx_ack answer again (a test
  // that resets the answer itself races the gateway's immediate retry).
  void refuse_next(TxAckError error) {
    next_error_ = error;
    refuse_next_ = true;
  }

  // This concentrator's free-running 32-bit µs counter (tmst) now. Each concentrator starts at a
  // random offset, as real ones do, so a server cannot assume that counters agree.
  uint32_t Tmst() const;

  // PULL_DATA, then wait for the PULL_ACK with the same token.
  Status Pull(std::chrono::milliseconds timeout = std::chrono::seconds(1));
  Result<Token> SendPull();
  // PUSH_DATA, then wait for the PUSH_ACK with the same token.
  Result<PushAck> Push(const std::vector<Rxpk>& rxpk,
                       std::chrono::milliseconds timeout = std::chrono::seconds(1));
  Result<Token> SendPush(const std::vector<Rxpk>& rxpk);
  // The latency of the PUSH_ACK for `token` (sent by SendPush), or nullopt on timeout.
  std::optional<std::chrono::microseconds> WaitAck(const Token& token,
                                                   std::chrono::milliseconds timeout);
  // A PUSH_DATA whose rxpk array holds these JSON texts as they are (RxpkJson() for good
  // entries, anything for bad ones), then wait for its PUSH_ACK.
  Result<PushAck> PushEntries(const std::vector<std::string>& rxpk_json,
                              std::chrono::milliseconds timeout = std::chrono::seconds(1));
  Result<Token> SendPushEntries(const std::vector<std::string>& rxpk_json);
  // Any bytes, e.g. a malformed datagram.
  Status SendRaw(std::span<const uint8_t> bytes);

  // The next PULL_RESP's txpk (oldest first), or nullopt on timeout.
  std::optional<Txpk> WaitDownlink(std::chrono::milliseconds timeout);
  // The same with the PULL_RESP's token and version.
  std::optional<Downlink> WaitPullResp(std::chrono::milliseconds timeout);

  // Reads datagrams for up to `timeout` (0: only what is already there): waits for the first,
  // then drains without waiting. True if anything arrived.
  bool Pump(std::chrono::milliseconds timeout);
  // Non-blocking claims for lora_sim: every PUSH_ACK received so far, and the number of PULL_ACKs.
  std::vector<PushAck> TakePushAcks();
  size_t TakePullAcks();
  // Forgets PUSH_DATA sent more than `older_than` ago without an ack; returns how many.
  size_t ExpirePushes(std::chrono::milliseconds older_than);

  const ConcentratorStats& stats() const { return stats_; }
  const std::string& last_parse_error() const { return last_parse_error_; }

 private:
  using Clock = std::chrono::steady_clock;
  Token NextToken();
  Status Send(const Bytes& datagram);
  void Sort(const uint8_t* data, size_t size, Clock::time_point at);
  template <class T>
  void Enqueue(std::deque<T>& q, T item);

  uint64_t eui_;
  uint8_t version_;
  int fd_ = -1;
  uint16_t local_port_ = 0;
  uint32_t server_ip_ = 0;  // network byte order
  uint16_t server_port_ = 0;
  std::optional<TxAckError> tx_ack_ = TxAckError::kNone;
  TxAckError next_error_ = TxAckError::kNone;
  std::atomic<bool> refuse_next_{false};
  uint16_t next_token_ = 0;
  uint32_t tmst_offset_ = 0;
  std::unordered_map<uint16_t, Clock::time_point> pending_push_;  // token -> sent at
  std::unordered_map<uint16_t, Clock::time_point> pending_pull_;
  std::deque<PushAck> push_acks_;
  std::deque<Token> pull_acks_;
  std::deque<Downlink> downlinks_;
  ConcentratorStats stats_;
  std::string last_parse_error_;
};

// What a device learns from a data downlink.
struct DownlinkInfo {
  MType mtype = MType::kUnconfirmedDown;
  uint32_t fcnt = 0;  // the reconstructed 32-bit FCntDown
  bool ack = false;   // FCtrl ACK: acknowledges our last confirmed uplink
  bool f_pending = false;
  bool repeat = false;  // same FCntDown as the previous downlink (a retransmission)
  Bytes fopts;          // MAC commands in FOpts
  std::optional<uint8_t> fport;
  Bytes payload;  // decrypted FRMPayload (NwkSKey for FPort 0, else AppSKey)
};

// A simulated class A end device (LoRaWAN 1.0.x), ABP or OTAA. Builds uplinks with the current
// FCntUp and opens downlinks and join accepts as the device would.
class LoraDevice {
 public:
  // ABP: the session is given; uplinks start at `fcnt_up`.
  static LoraDevice Abp(uint32_t dev_addr, const Key& nwk_s_key, const Key& app_s_key,
                        uint32_t fcnt_up = 0);
  // OTAA: no session until AcceptJoin() succeeds.
  static LoraDevice Otaa(uint64_t dev_eui, uint64_t join_eui, const Key& app_key);

  // The PHYPayload of the next uplink (FCntUp, then FCntUp++). Empty when the device cannot send
  // (OTAA before a join) or the frame would exceed 255 bytes; last_error() says why.
  Bytes Uplink(uint8_t fport, const Bytes& payload, bool confirmed = false);
  // The last uplink, byte for byte (a replay or a retransmission).
  Bytes Replay() const { return last_uplink_; }
  // What a forger without the keys makes of the last uplink: the same MType, DevAddr and FCnt,
  // another payload on the same port, and a MIC computed with a guessed key. Empty before the
  // first uplink.
  Bytes ForgedCopy(const Bytes& payload) const;
  // Join Request with this DevNonce (remembered for AcceptJoin). Empty for an ABP device.
  Bytes JoinRequest(uint16_t dev_nonce);
  // Decrypts the Join Accept with the AppKey, checks its MIC, derives the session keys with the
  // DevNonce of the last JoinRequest and takes the DevAddr; counters restart at 0.
  Status AcceptJoin(const Bytes& join_accept_phy);
  // Parses a data downlink for this DevAddr, reconstructs FCntDown, verifies the MIC and decrypts.
  // Errors: not a data downlink, another DevAddr, replayed or too far ahead counter, bad MIC.
  Result<DownlinkInfo> OpenDownlink(const Bytes& phy);

  // Uplink FCtrl: ADR bit (off by default), ACK bit on the next uplink only, FOpts on the next
  // uplink only (up to 15 bytes of MAC commands, e.g. 02 = LinkCheckReq).
  void set_adr(bool on) { adr_ = on; }
  void set_ack_next(bool on) { ack_next_ = on; }
  void set_fopts_next(Bytes fopts) { fopts_next_ = std::move(fopts); }
  // Counters: force FCntUp (wrap tests), or the last FCntDown seen (nullopt: none yet).
  void set_fcnt_up(uint32_t fcnt) { fcnt_up_ = fcnt; }
  void set_fcnt_down(std::optional<uint32_t> last) { last_fcnt_down_ = last; }

  bool is_otaa() const { return otaa_; }
  bool joined() const { return has_session_; }  // ABP: always
  uint32_t dev_addr() const { return dev_addr_; }
  const SessionKeys& keys() const { return keys_; }
  const Key& nwk_s_key() const { return keys_.nwk_s_key; }
  const Key& app_s_key() const { return keys_.app_s_key; }
  uint64_t dev_eui() const { return dev_eui_; }
  uint64_t join_eui() const { return join_eui_; }
  const Key& app_key() const { return app_key_; }
  uint32_t fcnt_up() const { return fcnt_up_; }
  std::optional<uint32_t> last_fcnt_down() const { return last_fcnt_down_; }
  std::optional<uint16_t> dev_nonce() const { return dev_nonce_; }
  const std::optional<JoinAccept>& join_accept() const { return join_accept_; }
  const Status& last_error() const { return last_error_; }

 private:
  LoraDevice() = default;

  bool otaa_ = false;
  bool has_session_ = false;
  uint32_t dev_addr_ = 0;
  SessionKeys keys_{};
  uint64_t dev_eui_ = 0;
  uint64_t join_eui_ = 0;
  Key app_key_{};
  std::optional<uint16_t> dev_nonce_;
  std::optional<JoinAccept> join_accept_;
  uint32_t fcnt_up_ = 0;
  std::optional<uint32_t> last_fcnt_down_;
  bool adr_ = false;
  bool ack_next_ = false;
  Bytes fopts_next_;
  Bytes last_uplink_;
  Status last_error_;
};

// config/profiles/bin-monitor-ultrasonic-v1.toml, FPort 2, 8 bytes big-endian: distance mm (u16),
// fill % (u8), temperature 0.1 °C (i16), battery mV (u16), flags (bit 0 tilted, bit 1 fire).
// Values are rounded and clamped to their field (a fill of 101 % stays 101: out-of-range tests).
Bytes UltrasonicPayload(int distance_mm, int fill_pct, double temp_c, double battery_v, bool tilted,
                        bool fire);
inline constexpr uint8_t kUltrasonicFPort = 2;

// config/profiles/bin-monitor-compact-le-v1.toml, FPort 1, 8 bytes little-endian: flags (bit 0
// tilted, bit 2 lid open), battery % (u8), distance mm (u16), temperature °C (f32).
Bytes CompactMeasurementPayload(bool tilted, bool lid_open, int battery_pct, int distance_mm,
                                float temp_c);
inline constexpr uint8_t kCompactMeasurementFPort = 1;

// The settings a simulated bin monitor takes by downlink, and the device side of the commands in
// the bin-monitor profiles (written here by hand from the profiles' comments, independent of
// the gateway's encoder): ultrasonic FPort 3, 01 + u32 BE seconds / 02 + u8 % / 03 reboot;
// compact FPort 5, A1 + u16 LE seconds / A2 + u8 % / A3 reboot.
enum class BinMonitorModel { kUltrasonic, kCompact };
inline constexpr uint8_t kUltrasonicCommandFPort = 3;
inline constexpr uint8_t kCompactCommandFPort = 5;
struct BinMonitorSettings {
  uint32_t interval_s = 0;  // 0: not set by downlink yet
  int overflow_threshold_pct = 90;
  uint32_t reboots = 0;
  uint32_t commands_applied = 0;
};
// Applies one decrypted downlink to `settings`; a description of what changed, or an error for
// a port or payload the monitor does not know (a real one ignores such downlinks).
Result<std::string> ApplyBinMonitorCommand(BinMonitorModel model, uint8_t fport,
                                           std::span<const uint8_t> payload,
                                           BinMonitorSettings& settings);

}  // namespace sanigate::test
