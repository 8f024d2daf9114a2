#include "lorawan/semtech_udp.h"

#include <openssl/evp.h>

#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>

namespace sanigate::dev::lorawan {
namespace {

using Json = nlohmann::json;
using OrderedJson = nlohmann::ordered_json;  // replies keep the key order of PROTOCOL.TXT

constexpr size_t kHeaderSize = 4;      // version, token[2], identifier
constexpr size_t kEuiHeaderSize = 12;  // + gateway EUI[8]
constexpr size_t kMaxPhySize = 255;
constexpr size_t kMaxRxpkErrors = 4;       // messages kept per datagram; the rest are only counted
constexpr size_t kMaxJsonErrorSize = 160;  // nlohmann quotes the token it choked on, any length

struct TxAckName {
  TxAckError error;
  const char* name;
};
constexpr TxAckName kTxAckNames[] = {
    {TxAckError::kNone, "NONE"},
    {TxAckError::kTooLate, "TOO_LATE"},
    {TxAckError::kTooEarly, "TOO_EARLY"},
    {TxAckError::kCollisionPacket, "COLLISION_PACKET"},
    {TxAckError::kCollisionBeacon, "COLLISION_BEACON"},
    {TxAckError::kTxFreq, "TX_FREQ"},
    {TxAckError::kTxPower, "TX_POWER"},
    {TxAckError::kGpsUnlocked, "GPS_UNLOCKED"},
};

// A short rendering of a JSON value for error messages. Not Json::dump: that recurses, and a
// datagram of 60000 '[' would overflow the stack. Never throws on odd UTF-8.
void ShowInto(const Json& j, std::string& out, int depth) {
  constexpr size_t kMax = 40;
  if (out.size() > kMax) return;
  if (j.is_array() || j.is_object()) {
    out += j.is_array() ? '[' : '{';
    if (depth >= 3 && !j.empty()) {
      out += "...";
    } else {
      bool first = true;
      for (auto it = j.begin(); it != j.end() && out.size() <= kMax; ++it) {
        if (!first) out += ',';
        first = false;
        if (j.is_object())
          out += Json(it.key()).dump(-1, ' ', false, Json::error_handler_t::replace) + ":";
        ShowInto(*it, out, depth + 1);
      }
    }
    out += j.is_array() ? ']' : '}';
    return;
  }
  out += j.dump(-1, ' ', false, Json::error_handler_t::replace);
}

std::string Show(const Json& j) {
  std::string s;
  ShowInto(j, s, 0);
  if (s.size() > 40) s = s.substr(0, 37) + "...";
  return s;
}

// Reads typed members of one JSON object, collecting the first problem with its path.
class Reader {
 public:
  Reader(const Json& obj, std::string path) : obj_(obj), path_(std::move(path)) {}

  bool ok() const { return error_.empty(); }
  Status status() const { return Invalid(error_); }

  const Json* Get(const char* key, bool required) {
    auto it = obj_.find(key);
    if (it == obj_.end()) {
      if (required) Fail(key, "required key is missing");
      return nullptr;
    }
    return &*it;
  }
  std::optional<uint32_t> U32(const char* key, bool required) {
    const Json* j = Get(key, required);
    if (!j) return std::nullopt;
    if (!j->is_number_unsigned() || j->get<uint64_t>() > std::numeric_limits<uint32_t>::max())
      return Fail(key, "expected an unsigned 32-bit integer, got " + Show(*j)), std::nullopt;
    return static_cast<uint32_t>(j->get<uint64_t>());
  }
  std::optional<int> Int(const char* key, bool required, int min, int max) {
    const Json* j = Get(key, required);
    if (!j) return std::nullopt;
    if (!j->is_number_integer() || j->get<int64_t>() < min || j->get<int64_t>() > max ||
        (j->is_number_unsigned() && j->get<uint64_t>() > static_cast<uint64_t>(max)))
      return Fail(key, "expected an integer in " + std::to_string(min) + ".." +
                           std::to_string(max) + ", got " + Show(*j)),
             std::nullopt;
    return static_cast<int>(j->get<int64_t>());
  }
  std::optional<double> Number(const char* key, bool required) {
    const Json* j = Get(key, required);
    if (!j) return std::nullopt;
    if (!j->is_number()) return Fail(key, "expected a number, got " + Show(*j)), std::nullopt;
    return j->get<double>();
  }
  std::optional<std::string> String(const char* key, bool required) {
    const Json* j = Get(key, required);
    if (!j) return std::nullopt;
    if (!j->is_string()) return Fail(key, "expected a string, got " + Show(*j)), std::nullopt;
    return j->get<std::string>();
  }
  std::optional<bool> Bool(const char* key, bool required) {
    const Json* j = Get(key, required);
    if (!j) return std::nullopt;
    if (!j->is_boolean()) return Fail(key, "expected a boolean, got " + Show(*j)), std::nullopt;
    return j->get<bool>();
  }
  void Fail(std::string_view key, std::string problem) {
    if (error_.empty()) error_ = path_ + "." + std::string(key) + ": " + problem;
  }

 private:
  const Json& obj_;
  std::string path_;
  std::string error_;
};

// Frequency in MHz (Hz precision) -> Hz.
std::optional<uint32_t> Frequency(Reader& r, const char* key) {
  auto mhz = r.Number(key, true);
  if (!mhz) return std::nullopt;
  auto hz = MhzToHz(*mhz);
  if (!hz.ok()) return r.Fail(key, hz.status().message()), std::nullopt;
  return *hz;
}

// modu + datr: "LORA" with "SF7BW125", or "FSK" with a bit rate.
void Modulation(Reader& r, std::string& modu, std::optional<LoraRate>& lora,
                std::optional<uint32_t>* fsk_bps) {
  auto m = r.String("modu", true);
  if (!m) return;
  modu = *m;
  if (modu == "LORA") {
    if (auto d = r.String("datr", true)) {
      auto rate = ParseLoraDatr(*d);
      if (rate.ok())
        lora = *rate;
      else
        r.Fail("datr", rate.status().message());
    }
  } else if (modu == "FSK" && fsk_bps) {
    *fsk_bps = r.U32("datr", true);
  } else {
    r.Fail("modu", "\"" + modu + "\" is not " + (fsk_bps ? "\"LORA\" or \"FSK\"" : "\"LORA\""));
  }
}

// size + data: base64 whose decoded length must equal size.
void Payload(Reader& r, Bytes& data) {
  auto size = r.Int("size", true, 0, static_cast<int>(kMaxPhySize));
  auto text = r.String("data", true);
  if (!size || !text) return;
  auto bytes = Base64Decode(*text);
  if (!bytes.ok()) return r.Fail("data", bytes.status().message());
  if (bytes->size() != static_cast<size_t>(*size))
    return r.Fail("data", "decodes to " + std::to_string(bytes->size()) + " bytes but size is " +
                              std::to_string(*size));
  data = std::move(*bytes);
}

Result<Rxpk> ParseRxpk(const Json& j, const std::string& path) {
  if (!j.is_object()) return Invalid(path + ": expected an object, got " + Show(j));
  Reader r(j, path);
  Rxpk p;
  p.time = r.String("time", false);
  if (auto t = r.U32("tmst", true)) p.tmst = *t;
  if (auto f = Frequency(r, "freq")) p.freq_hz = *f;
  p.chan = r.U32("chan", false);
  p.rfch = r.U32("rfch", false);
  if (auto s = r.Int("stat", true, -1, 1)) p.stat = *s;
  Modulation(r, p.modu, p.lora, &p.fsk_bps);
  p.codr = r.String("codr", false);
  p.rssi = r.Int("rssi", false, -400, 100);
  p.lsnr = r.Number("lsnr", false);
  Payload(r, p.data);
  if (!r.ok()) return r.status();
  return p;
}

Result<GatewayStat> ParseStat(const Json& j, const std::string& path) {
  if (!j.is_object()) return Invalid(path + ": expected an object, got " + Show(j));
  Reader r(j, path);
  GatewayStat s;
  s.time = r.String("time", false);
  s.lati = r.Number("lati", false);
  s.longi = r.Number("long", false);
  s.alti = r.Int("alti", false, -100000, 100000);
  s.rxnb = r.U32("rxnb", false);
  s.rxok = r.U32("rxok", false);
  s.rxfw = r.U32("rxfw", false);
  s.ackr = r.Number("ackr", false);
  s.dwnb = r.U32("dwnb", false);
  s.txnb = r.U32("txnb", false);
  if (!r.ok()) return r.status();
  return s;
}

Result<Txpk> ParseTxpk(const Json& j, const std::string& path) {
  if (!j.is_object()) return Invalid(path + ": expected an object, got " + Show(j));
  Reader r(j, path);
  Txpk t;
  t.imme = r.Bool("imme", false).value_or(false);
  if (!t.imme) {
    if (auto v = r.U32("tmst", true)) t.tmst = *v;
  }
  if (auto f = Frequency(r, "freq")) t.freq_hz = *f;
  t.rfch = r.U32("rfch", false).value_or(0);
  t.powe = r.Int("powe", false, -50, 50).value_or(t.powe);
  std::string modu;
  std::optional<LoraRate> lora;
  Modulation(r, modu, lora, nullptr);
  if (lora) t.rate = *lora;
  t.codr = r.String("codr", false).value_or(t.codr);
  t.ipol = r.Bool("ipol", false).value_or(false);
  t.ncrc = r.Bool("ncrc", false);
  Payload(r, t.data);
  if (!r.ok()) return r.status();
  return t;
}

// The JSON after the header; forwarders may end it with NUL or whitespace.
Result<Json> ParseJsonBody(std::span<const uint8_t> body, const std::string& what) {
  size_t n = body.size();
  while (n > 0 && (body[n - 1] == 0 || std::isspace(body[n - 1]))) --n;
  if (n == 0) return Invalid(what + ": no JSON body");
  try {
    Json j = Json::parse(body.begin(), body.begin() + static_cast<std::ptrdiff_t>(n));
    if (!j.is_object()) return Invalid(what + ": JSON body is not an object but " + Show(j));
    return j;
  } catch (const Json::exception& e) {
    // "[json.exception.parse_error.101] parse error at line 1, column 9: ..." -> from "parse".
    std::string m = e.what();
    if (auto at = m.find("] "); at != std::string::npos) m = m.substr(at + 2);
    // "last read: '...'" repeats outside input, possibly a 60 KiB string: keep a short prefix.
    if (m.size() > kMaxJsonErrorSize) m = m.substr(0, kMaxJsonErrorSize) + "...";
    return Invalid(what + ": malformed JSON: " + m);
  }
}

uint64_t EuiAt(std::span<const uint8_t> d) {
  uint64_t v = 0;
  for (size_t i = 4; i < 12; ++i) v = v << 8 | d[i];
  return v;
}

void PutHeader(Bytes& out, uint8_t version, const Token& token, GwmpId id) {
  out.push_back(version);
  out.push_back(token[0]);
  out.push_back(token[1]);
  out.push_back(static_cast<uint8_t>(id));
}

void PutEui(Bytes& out, uint64_t eui) {
  for (int i = 7; i >= 0; --i) out.push_back(static_cast<uint8_t>(eui >> (8 * i)));
}

void PutJson(Bytes& out, const OrderedJson& j) {
  std::string s = j.dump(-1, ' ', false, OrderedJson::error_handler_t::replace);
  out.insert(out.end(), s.begin(), s.end());
}

// JSON writes MHz with Hz precision; the division is correctly rounded, so 506700000 prints as
// 506.7 (the shortest round-trip form), exactly what forwarders expect.
double HzToMhz(uint32_t hz) { return hz / 1e6; }

Result<Datagram> ParseUnchecked(std::span<const uint8_t> d) {
  if (d.size() < kHeaderSize)
    return Invalid("datagram of " + std::to_string(d.size()) +
                   " bytes is shorter than the 4-byte header");
  Datagram g;
  g.version = d[0];
  if (g.version != 1 && g.version != 2)
    return Invalid("protocol version " + std::to_string(g.version) + " is not 1 or 2");
  g.token = {d[1], d[2]};
  if (d[3] > static_cast<uint8_t>(GwmpId::kTxAck))
    return Invalid("identifier 0x" + ToHex(d.subspan(3, 1)) +
                   " is not a GWMP message (0x00..0x05)");
  g.id = static_cast<GwmpId>(d[3]);
  const std::string name = GwmpIdName(g.id);
  auto exact = [&](size_t n) -> Status {
    if (d.size() != n)
      return Invalid(name + " of " + std::to_string(d.size()) + " bytes, expected " +
                     std::to_string(n));
    return Status::Ok();
  };
  auto with_eui = [&]() -> Status {
    if (d.size() < kEuiHeaderSize)
      return Invalid(name + " of " + std::to_string(d.size()) +
                     " bytes is shorter than 12 (header and gateway EUI)");
    g.gateway_eui = EuiAt(d);
    return Status::Ok();
  };
  switch (g.id) {
    case GwmpId::kPushAck:
    case GwmpId::kPullAck:
      if (Status s = exact(kHeaderSize); !s.ok()) return s;
      return g;
    case GwmpId::kPullData:
      if (Status s = exact(kEuiHeaderSize); !s.ok()) return s;
      g.gateway_eui = EuiAt(d);
      return g;
    case GwmpId::kPushData: {
      if (Status s = with_eui(); !s.ok()) return s;
      auto j = ParseJsonBody(d.subspan(kEuiHeaderSize), name);
      if (!j.ok()) return j.status();
      if (auto it = j->find("rxpk"); it != j->end()) {
        if (!it->is_array()) return Invalid(name + " rxpk: expected an array, got " + Show(*it));
        // Each entry on its own: a forwarder's one bad packet must not cost the good ones.
        for (size_t i = 0; i < it->size(); ++i) {
          auto p = ParseRxpk((*it)[i], name + " rxpk[" + std::to_string(i) + "]");
          if (p.ok()) {
            g.rxpk.push_back(std::move(*p));
            continue;
          }
          g.rxpk_bad++;
          if (g.rxpk_errors.size() < kMaxRxpkErrors) g.rxpk_errors.push_back(p.status().message());
        }
      }
      if (auto it = j->find("stat"); it != j->end()) {
        auto s = ParseStat(*it, name + " stat");
        if (s.ok())
          g.stat = std::move(*s);
        else
          g.stat_error = s.status().message();  // statistics only: the uplinks stay
      }
      return g;
    }
    case GwmpId::kPullResp: {
      auto j = ParseJsonBody(d.subspan(kHeaderSize), name);
      if (!j.ok()) return j.status();
      auto it = j->find("txpk");
      if (it == j->end()) return Invalid(name + " txpk: required key is missing");
      auto t = ParseTxpk(*it, name + " txpk");
      if (!t.ok()) return t.status();
      g.txpk = std::move(*t);
      return g;
    }
    case GwmpId::kTxAck: {
      if (g.version == 1) return Invalid("TX_ACK does not exist in protocol version 1");
      if (Status s = with_eui(); !s.ok()) return s;
      TxAck ack;
      std::span<const uint8_t> body = d.subspan(kEuiHeaderSize);
      bool blank = true;
      for (uint8_t c : body) blank = blank && (c == 0 || std::isspace(c));
      if (!blank) {
        auto j = ParseJsonBody(body, name);
        if (!j.ok()) return j.status();
        auto it = j->find("txpk_ack");
        if (it == j->end() || !it->is_object())
          return Invalid(name + " txpk_ack: expected an object, got " +
                         (it == j->end() ? std::string("nothing") : Show(*it)));
        Reader r(*it, name + " txpk_ack");
        if (auto e = r.String("error", false)) {
          ack.text = *e;
          ack.error = ParseTxAckError(*e);
        }
        ack.warn = r.String("warn", false);
        if (!r.ok()) return r.status();
      }
      g.tx_ack = std::move(ack);
      return g;
    }
  }
  return Invalid("unreachable identifier");
}

}  // namespace

const char* GwmpIdName(GwmpId id) {
  switch (id) {
    case GwmpId::kPushData:
      return "PUSH_DATA";
    case GwmpId::kPushAck:
      return "PUSH_ACK";
    case GwmpId::kPullData:
      return "PULL_DATA";
    case GwmpId::kPullResp:
      return "PULL_RESP";
    case GwmpId::kPullAck:
      return "PULL_ACK";
    case GwmpId::kTxAck:
      return "TX_ACK";
  }
  return "?";
}

TxAckError ParseTxAckError(std::string_view s) {
  for (const auto& n : kTxAckNames)
    if (s == n.name) return n.error;
  return TxAckError::kUnknown;
}

const char* TxAckErrorName(TxAckError e) {
  for (const auto& n : kTxAckNames)
    if (e == n.error) return n.name;
  return "UNKNOWN";
}

Result<Datagram> ParseDatagram(std::span<const uint8_t> datagram) {
  try {
    return ParseUnchecked(datagram);
  } catch (const std::exception& e) {
    // Only allocation failures can get here; the parser itself reports through Status.
    return Internal(std::string("GWMP parse: ") + e.what());
  }
}

Bytes BuildPushAck(const Token& token, uint8_t version) {
  Bytes out;
  PutHeader(out, version, token, GwmpId::kPushAck);
  return out;
}

Bytes BuildPullAck(const Token& token, uint8_t version) {
  Bytes out;
  PutHeader(out, version, token, GwmpId::kPullAck);
  return out;
}

Result<Bytes> BuildPullResp(const Token& token, const Txpk& t, uint8_t version) {
  if (t.data.empty()) return Invalid("txpk data is empty");
  if (t.data.size() > kMaxPhySize)
    return Invalid("txpk data of " + std::to_string(t.data.size()) + " bytes is longer than 255");
  if (t.freq_hz == 0) return Invalid("txpk freq is not set");
  OrderedJson tx;
  tx["imme"] = t.imme;
  if (!t.imme) tx["tmst"] = t.tmst;
  tx["freq"] = HzToMhz(t.freq_hz);
  tx["rfch"] = t.rfch;
  tx["powe"] = t.powe;
  tx["modu"] = "LORA";
  tx["datr"] = FormatLoraDatr(t.rate);
  tx["codr"] = t.codr;
  tx["ipol"] = t.ipol;
  tx["size"] = t.data.size();
  tx["data"] = Base64Encode(t.data);
  if (t.ncrc) tx["ncrc"] = *t.ncrc;
  OrderedJson root;
  root["txpk"] = std::move(tx);
  Bytes out;
  PutHeader(out, version, token, GwmpId::kPullResp);
  PutJson(out, root);
  return out;
}

Bytes BuildPullData(const Token& token, uint64_t gateway_eui, uint8_t version) {
  Bytes out;
  PutHeader(out, version, token, GwmpId::kPullData);
  PutEui(out, gateway_eui);
  return out;
}

Bytes BuildTxAck(const Token& token, uint64_t gateway_eui, TxAckError error) {
  Bytes out;
  PutHeader(out, 2, token, GwmpId::kTxAck);
  PutEui(out, gateway_eui);
  if (error != TxAckError::kNone) {
    OrderedJson root;
    root["txpk_ack"]["error"] = TxAckErrorName(error);
    PutJson(out, root);
  }
  return out;
}

Result<Bytes> BuildPushData(const Token& token, uint64_t gateway_eui, const std::vector<Rxpk>& rxpk,
                            uint8_t version) {
  OrderedJson list = OrderedJson::array();
  for (const Rxpk& p : rxpk) {
    if (p.data.size() > kMaxPhySize)
      return Invalid("rxpk data of " + std::to_string(p.data.size()) + " bytes is longer than 255");
    OrderedJson j;
    if (p.time) j["time"] = *p.time;
    j["tmst"] = p.tmst;
    if (p.chan) j["chan"] = *p.chan;
    if (p.rfch) j["rfch"] = *p.rfch;
    j["freq"] = HzToMhz(p.freq_hz);
    j["stat"] = p.stat;
    j["modu"] = p.modu;
    if (p.lora)
      j["datr"] = FormatLoraDatr(*p.lora);
    else if (p.fsk_bps)
      j["datr"] = *p.fsk_bps;
    if (p.codr) j["codr"] = *p.codr;
    if (p.rssi) j["rssi"] = *p.rssi;
    if (p.lsnr) j["lsnr"] = *p.lsnr;
    j["size"] = p.data.size();
    j["data"] = Base64Encode(p.data);
    list.push_back(std::move(j));
  }
  OrderedJson root;
  root["rxpk"] = std::move(list);
  Bytes out;
  PutHeader(out, version, token, GwmpId::kPushData);
  PutEui(out, gateway_eui);
  PutJson(out, root);
  return out;
}

std::string Base64Encode(std::span<const uint8_t> bytes) {
  std::string out(4 * ((bytes.size() + 2) / 3) + 1, '\0');  // + the NUL EVP_EncodeBlock writes
  int n = bytes.empty() ? 0
                        : EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                          bytes.data(), static_cast<int>(bytes.size()));
  out.resize(static_cast<size_t>(n));
  return out;
}

Result<Bytes> Base64Decode(std::string_view text) {
  // EVP_DecodeBlock trims whitespace, accepts '=' in odd places and reports padding as zero
  // bytes, so the alphabet and the padding are checked here and the padding subtracted after.
  // Unpadded input (length 2 or 3 mod 4) is accepted and padded first.
  if (text.size() % 4 == 1)
    return Invalid("base64 of " + std::to_string(text.size()) + " characters is truncated");
  if (text.size() % 4 != 0 && text.find('=') != std::string_view::npos)
    return Invalid("base64 of " + std::to_string(text.size()) + " characters has partial padding");
  std::string padded(text);
  padded.append((4 - padded.size() % 4) % 4, '=');
  size_t pad = 0;
  while (pad < 2 && padded.size() > pad && padded[padded.size() - 1 - pad] == '=') ++pad;
  for (size_t i = 0; i < padded.size() - pad; ++i) {
    char c = padded[i];
    bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '+' || c == '/';
    if (!ok)
      return Invalid("base64: '" + std::string(1, c) + "' at position " + std::to_string(i) +
                     " is not in the alphabet");
  }
  if (padded.empty()) return Bytes{};
  Bytes out(padded.size() / 4 * 3);
  int n = EVP_DecodeBlock(out.data(), reinterpret_cast<const unsigned char*>(padded.data()),
                          static_cast<int>(padded.size()));
  if (n < 0 || static_cast<size_t>(n) != out.size()) return Invalid("base64: not decodable");
  out.resize(out.size() - pad);
  return out;
}

}  // namespace sanigate::dev::lorawan
