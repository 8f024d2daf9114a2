#include "lorawan/chirpstack_uplink.h"

#include <nlohmann/json.hpp>

#include <cctype>
#include <charconv>
#include <cmath>
#include <limits>
#include <type_traits>
#include <ctime>

#include "lorawan/semtech_udp.h"

namespace sanigate::dev::lorawan {
namespace {

using json = nlohmann::json;

// protobuf-JSON writes 64-bit integers as strings and leaves out zero values.
template <typename T>
std::optional<T> Number(const json& obj, const char* key) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return std::nullopt;
  if constexpr (std::is_floating_point_v<T>) {
    if (it->is_number()) return it->get<T>();
  } else if (it->is_number_integer()) {
    // Within T's range, else not a value (a huge or negative count is not a counter).
    if (it->is_number_unsigned()) {
      auto u = it->get<uint64_t>();
      if (u > static_cast<uint64_t>(std::numeric_limits<T>::max())) return std::nullopt;
      return static_cast<T>(u);
    }
    auto v = it->get<int64_t>();
    if (v < static_cast<int64_t>(std::numeric_limits<T>::lowest()) ||
        (v > 0 && static_cast<uint64_t>(v) > static_cast<uint64_t>(std::numeric_limits<T>::max())))
      return std::nullopt;
    return static_cast<T>(v);
  } else if (it->is_number()) {
    // A float: only a whole number inside T's range converts (a cast outside it is undefined).
    double d = it->get<double>();
    if (!(d >= static_cast<double>(std::numeric_limits<T>::lowest()) && d < static_cast<double>(std::numeric_limits<T>::max())) ||
        d != std::floor(d))
      return std::nullopt;
    return static_cast<T>(d);
  }
  if (it->is_string()) {
    const auto& s = it->get_ref<const std::string&>();
    T v{};
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec == std::errc() && p == s.data() + s.size()) return v;
  }
  return std::nullopt;
}

std::string String(const json& obj, const char* key) {
  auto it = obj.find(key);
  return it != obj.end() && it->is_string() ? it->get<std::string>() : std::string();
}

bool Digits(std::string_view s, size_t pos, size_t n, int& out) {
  if (pos + n > s.size()) return false;
  out = 0;
  for (size_t i = pos; i < pos + n; ++i) {
    if (!std::isdigit(static_cast<unsigned char>(s[i]))) return false;
    out = out * 10 + (s[i] - '0');
  }
  return true;
}

}  // namespace

std::optional<int64_t> ParseRfc3339Ms(std::string_view s) {
  int y, mo, d, h, mi, sec;
  if (!Digits(s, 0, 4, y) || s.size() < 19 || s[4] != '-' || !Digits(s, 5, 2, mo) || s[7] != '-' ||
      !Digits(s, 8, 2, d) || (s[10] != 'T' && s[10] != 't' && s[10] != ' ') || !Digits(s, 11, 2, h) ||
      s[13] != ':' || !Digits(s, 14, 2, mi) || s[16] != ':' || !Digits(s, 17, 2, sec))
    return std::nullopt;
  if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60) return std::nullopt;
  size_t pos = 19;
  int64_t ms = 0;
  if (pos < s.size() && s[pos] == '.') {
    ++pos;
    int digits = 0;
    while (pos < s.size() && std::isdigit(static_cast<unsigned char>(s[pos]))) {
      if (digits < 3) ms = ms * 10 + (s[pos] - '0');
      ++digits;
      ++pos;
    }
    if (digits == 0) return std::nullopt;
    for (; digits < 3; ++digits) ms *= 10;
  }
  int offset_min = 0;
  if (pos < s.size() && (s[pos] == 'Z' || s[pos] == 'z')) {
    ++pos;
  } else if (pos < s.size() && (s[pos] == '+' || s[pos] == '-')) {
    int oh, om;
    if (!Digits(s, pos + 1, 2, oh) || pos + 3 >= s.size() || s[pos + 3] != ':' || !Digits(s, pos + 4, 2, om))
      return std::nullopt;
    offset_min = (oh * 60 + om) * (s[pos] == '-' ? -1 : 1);
    pos += 6;
  } else {
    return std::nullopt;
  }
  if (pos != s.size()) return std::nullopt;
  std::tm tm{};
  tm.tm_year = y - 1900;
  tm.tm_mon = mo - 1;
  tm.tm_mday = d;
  tm.tm_hour = h;
  tm.tm_min = mi;
  tm.tm_sec = sec;
  int64_t secs = static_cast<int64_t>(timegm(&tm)) - int64_t{offset_min} * 60;
  return secs * 1000 + ms;
}

Result<ChirpstackUplink> ParseChirpstackUplink(std::string_view text, std::string_view topic_dev_eui) {
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return Invalid("chirpstack uplink: not a JSON object");
  ChirpstackUplink up;
  std::string eui = topic_dev_eui.empty() ? std::string() : std::string(topic_dev_eui);
  if (auto di = j.find("deviceInfo"); di != j.end() && di->is_object() && !String(*di, "devEui").empty())
    eui = String(*di, "devEui");
  if (eui.empty()) return Invalid("chirpstack uplink: no deviceInfo.devEui");
  auto parsed_eui = ParseEui(eui, "deviceInfo.devEui");
  if (!parsed_eui.ok()) return parsed_eui.status();
  up.dev_eui = *parsed_eui;
  up.deduplication_id = String(j, "deduplicationId");
  if (auto t = String(j, "time"); !t.empty()) up.time_ms = ParseRfc3339Ms(t);
  auto fcnt = Number<int64_t>(j, "fCnt").value_or(0);
  auto fport = Number<int64_t>(j, "fPort").value_or(0);
  if (fcnt < 0 || fcnt > UINT32_MAX) return Invalid("chirpstack uplink: fCnt " + std::to_string(fcnt) + " is outside 0..2^32-1");
  if (fport < 0 || fport > 255) return Invalid("chirpstack uplink: fPort " + std::to_string(fport) + " is outside 0..255");
  up.fcnt = static_cast<uint32_t>(fcnt);
  up.fport = static_cast<uint8_t>(fport);
  if (auto c = j.find("confirmed"); c != j.end() && c->is_boolean()) up.confirmed = c->get<bool>();
  if (auto d = String(j, "data"); !d.empty()) {
    auto bytes = Base64Decode(d);
    if (!bytes.ok()) return Invalid("chirpstack uplink: data is not base64: " + bytes.status().message());
    up.data = std::move(*bytes);
  }
  if (auto rx = j.find("rxInfo"); rx != j.end() && rx->is_array()) {
    for (const auto& r : *rx) {
      if (!r.is_object()) continue;
      ++up.concentrators;
      auto rssi = Number<double>(r, "rssi");
      auto snr = Number<double>(r, "snr");
      // The best copy: highest SNR, then RSSI (as for copies heard by our own concentrators).
      bool better = !up.gateway_id.empty() ? (snr.value_or(-1e9) > up.snr_db.value_or(-1e9) ||
                                              (snr.value_or(-1e9) == up.snr_db.value_or(-1e9) &&
                                               rssi.value_or(-1e9) > up.rssi_dbm.value_or(-1e9)))
                                           : true;
      if (better) {
        up.rssi_dbm = rssi;
        up.snr_db = snr;
        up.gateway_id = String(r, "gatewayId");
        if (up.gateway_id.empty()) up.gateway_id = "unknown";
      }
    }
  }
  if (auto tx = j.find("txInfo"); tx != j.end() && tx->is_object()) {
    up.frequency_hz = Number<int64_t>(*tx, "frequency");
    auto mod = tx->find("modulation");
    if (mod != tx->end() && mod->is_object()) {
      auto lora = mod->find("lora");
      if (lora != mod->end() && lora->is_object()) {
        auto sf = Number<int64_t>(*lora, "spreadingFactor");
        auto bw = Number<int64_t>(*lora, "bandwidth");
        if (sf && bw) up.data_rate = "SF" + std::to_string(*sf) + "BW" + std::to_string(*bw / 1000);
      }
    }
  }
  if (up.data_rate.empty())
    if (auto dr = Number<int64_t>(j, "dr")) up.data_rate = "DR" + std::to_string(*dr);
  return up;
}

}  // namespace sanigate::dev::lorawan
