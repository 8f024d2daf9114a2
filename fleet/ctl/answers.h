// What the broker and the daemons answered, in words and exit codes, without MQTT: MQTT 5 reason
// codes of refusals, sanifleet's retained status, a device command's refusal, and health reasons
// as they read at the moment they are shown (a silence keeps growing after it was judged).
// Pure functions of their arguments (local time uses the process's TZ); thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace sanigate::ctl {

using json = nlohmann::json;

// ---- the broker's refusals (MQTT 5 reason codes >= 0x80) ----

// "not authorized", "bad user name or password", "quota exceeded", ...; "reason code N" for a
// code without a name here.
std::string MqttReasonName(int code);
// Codes that refuse the user rather than the message: bad user name or password (0x86), not
// authorized (0x87), banned (0x8A), bad authentication method (0x8C). sanictl exits 5 on them.
bool IsAccessRefusal(int code);
// The reason code (>= 0x80) in a failure text of MqttLink ("connect ... failed (rc 135)",
// "(reason code 135)"), if there is one.
std::optional<int> ReasonCodeIn(std::string_view text);

// ---- sanifleet's retained status ({prefix}/{site}/fleet/status) ----

// True when the status is a JSON object that says "online": false (its goodbye or its will).
bool FleetSaysOffline(const json& status);
// "sanifleet fleet-1 is offline since 2025-11-21 12:00:00 (4m ago), says TOPIC"; without a time
// (the will is made at connect time and carries ts 0): "... is offline: its connection to the
// broker was lost (its MQTT will), says TOPIC".
std::string FleetOfflineText(const json& status, const std::string& topic, int64_t now_ms);

// ---- a device command's answer ----

// The exit code of a command answer that is not ok: `code` when the gateway sends one
// (not_found 4, invalid 2), else by the adapters' phrases: an unknown device or command is not
// found (4), an argument the command does not take is bad usage (2), anything else (timeout,
// device not connected, write refused) failed (1).
int CommandFailureExit(const json& answer);

// ---- health ----

// ok, degraded, critical, offline, unknown: the states a --state filter may name.
bool IsHealthState(std::string_view state);
// "ok, degraded, critical, offline or unknown"
std::string HealthStatesText();

// One reason of a verdict as it reads at now_ms: its detail (or its code when there is none);
// a "silent" reason's "no traffic for ..." counts the silence from last_seen_ms (the verdict's)
// up to now; a reason with "stale": true whose detail does not say so yet gets
// " (stale: device offline)".
std::string ReasonText(const json& reason, int64_t last_seen_ms, int64_t now_ms);

}  // namespace sanigate::ctl
