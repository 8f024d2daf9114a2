#include "ctl/answers.h"

#include <array>
#include <cctype>

#include "ctl/exit_codes.h"
#include "ctl/format.h"

namespace sanigate::ctl {
namespace {

bool StartsWith(std::string_view s, std::string_view prefix) { return s.substr(0, prefix.size()) == prefix; }

std::string StringField(const json& obj, const char* key) {
  auto it = obj.find(key);
  return it != obj.end() && it->is_string() ? it->get<std::string>() : std::string();
}

constexpr std::array<const char*, 5> kStates = {"ok", "degraded", "critical", "offline", "unknown"};

constexpr std::string_view kStaleSuffix = " (stale: device offline)";

}  // namespace

std::string MqttReasonName(int code) {
  switch (code) {
    case 0x80: return "unspecified error";
    case 0x81: return "malformed packet";
    case 0x82: return "protocol error";
    case 0x83: return "implementation specific error";
    case 0x84: return "unsupported protocol version";
    case 0x85: return "client identifier not valid";
    case 0x86: return "bad user name or password";
    case 0x87: return "not authorized";
    case 0x88: return "server unavailable";
    case 0x89: return "server busy";
    case 0x8A: return "banned";
    case 0x8C: return "bad authentication method";
    case 0x8F: return "topic filter invalid";
    case 0x90: return "topic name invalid";
    case 0x91: return "packet identifier in use";
    case 0x95: return "packet too large";
    case 0x97: return "quota exceeded";
    case 0x99: return "payload format invalid";
    case 0x9A: return "retain not supported";
    case 0x9B: return "QoS not supported";
    case 0x9E: return "shared subscriptions not supported";
    case 0xA1: return "subscription identifiers not supported";
    case 0xA2: return "wildcard subscriptions not supported";
    default: return "reason code " + std::to_string(code);
  }
}

bool IsAccessRefusal(int code) { return code == 0x86 || code == 0x87 || code == 0x8A || code == 0x8C; }

std::optional<int> ReasonCodeIn(std::string_view text) {
  // MqttLink writes "reason code N" for PUBACK/SUBACK and "(rc N" in texts of
  // older versions, which used Paho (it put the CONNACK reason code into the return code).
  for (std::string_view marker : {"reason code ", "(rc "}) {
    for (size_t at = text.find(marker); at != std::string_view::npos; at = text.find(marker, at + 1)) {
      size_t i = at + marker.size();
      int code = 0, digits = 0;
      while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i])) && digits < 4) {
        code = code * 10 + (text[i++] - '0');
        ++digits;
      }
      if (digits > 0 && code >= 0x80 && code <= 0xFF) return code;
    }
  }
  return std::nullopt;
}

bool FleetSaysOffline(const json& status) {
  if (!status.is_object()) return false;
  auto it = status.find("online");
  return it != status.end() && it->is_boolean() && !it->get<bool>();
}

std::string FleetOfflineText(const json& status, const std::string& topic, int64_t now_ms) {
  std::string id = status.is_object() ? StringField(status, "fleet") : "";
  std::string out = "sanifleet" + (id.empty() ? std::string() : " " + id) + " is offline";
  auto ts = status.is_object() ? status.find("ts") : status.end();
  int64_t when = ts != status.end() && ts->is_number_integer() ? ts->get<int64_t>() : 0;
  if (when > 0) out += " since " + LocalDateTime(when) + " (" + RelativeTime(when, now_ms) + ")";
  else out += ": its connection to the broker was lost (its MQTT will)";
  return out + ", says " + topic;
}

int CommandFailureExit(const json& answer) {
  std::string code = answer.is_object() ? StringField(answer, "code") : "";
  if (code == "not_found") return kExitNotFound;
  if (code == "invalid") return kExitUsage;
  std::string error = answer.is_object() ? StringField(answer, "error") : "";
  if (StartsWith(error, "unknown device") || StartsWith(error, "unknown command")) return kExitNotFound;
  // The gateways' answers carry no code yet: these are the adapters' words for an argument the
  // command does not take (devices/modbus, devices/jt808, devices/lorawan, the command payload).
  static constexpr std::string_view kBadValue[] = {
      " is not a value of ", " is outside ", " takes exactly one value",        // modbus
      "usage: ", " is not NAME=VALUE", " is not a whole number", " takes \"",   // jt808
      " is not a number", "unknown argument ", "too many arguments", " has no argument ",
      " given twice", "downlink needs ", "give either hex= or base64=", " is not valid",  // lorawan
      "payload must be ", "invalid UTF-8",                                      // gateway
  };
  for (std::string_view phrase : kBadValue)
    if (error.find(phrase) != std::string::npos) return kExitUsage;
  return kExitFailed;
}

bool IsHealthState(std::string_view state) {
  for (const char* s : kStates)
    if (state == s) return true;
  return false;
}

std::string HealthStatesText() {
  std::string out;
  for (size_t i = 0; i < kStates.size(); ++i) out += (i == 0 ? "" : i + 1 == kStates.size() ? " or " : ", ") + std::string(kStates[i]);
  return out;
}

std::string ReasonText(const json& reason, int64_t last_seen_ms, int64_t now_ms) {
  if (!reason.is_object()) return ValueText(reason);
  std::string code = StringField(reason, "code"), detail = StringField(reason, "detail");
  if (detail.empty()) detail = code.empty() ? "?" : code;
  // The verdict was judged when the silence began to count; the silence goes on until now.
  static constexpr std::string_view kSilence = "no traffic for ";
  if (code == "silent" && last_seen_ms > 0 && now_ms >= last_seen_ms && StartsWith(detail, kSilence)) {
    size_t rest = detail.find(" (");
    detail = std::string(kSilence) + Duration(now_ms - last_seen_ms) + (rest == std::string::npos ? "" : detail.substr(rest));
  }
  auto stale = reason.find("stale");
  if (stale != reason.end() && stale->is_boolean() && stale->get<bool>() && detail.find(kStaleSuffix) == std::string::npos)
    detail += kStaleSuffix;
  return detail;
}

}  // namespace sanigate::ctl
