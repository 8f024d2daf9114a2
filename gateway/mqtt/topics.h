// The topic scheme of the MQTT model (CONTRACT §3) and of the admin API, in one place, for the
// gateway, sanifleet and sanictl. Pure string functions; thread-safe.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace sanigate::mqtt::topics {

// {prefix}/{site}/devices/{device}/{leaf}: telemetry, event, status, cmd/{name}
std::string Device(std::string_view prefix, std::string_view site, std::string_view device, std::string_view leaf);
// {prefix}/{site}/gateway/{gateway}/status
std::string GatewayStatus(std::string_view prefix, std::string_view site, std::string_view gateway);
// Admin requests (MQTT 5 request/response): {prefix}/{site}/gateway/{gateway}/admin/{verb}
// and {prefix}/{site}/fleet/admin/{verb}; the answers go to the request's response topic,
// by convention {prefix}/{site}/admin/reply/{client}.
std::string GatewayAdmin(std::string_view prefix, std::string_view site, std::string_view gateway, std::string_view verb);
std::string FleetAdmin(std::string_view prefix, std::string_view site, std::string_view verb);
std::string AdminReply(std::string_view prefix, std::string_view site, std::string_view client);
// sanifleet's outputs: retained health per device and per gateway, and health changes.
std::string DeviceHealth(std::string_view prefix, std::string_view site, std::string_view device);
std::string GatewayHealth(std::string_view prefix, std::string_view site, std::string_view gateway);
std::string FleetEvents(std::string_view prefix, std::string_view site);
std::string FleetStatus(std::string_view prefix, std::string_view site);
// The heat-map feed of a layer (retained) and its closed windows ("…/closed").
std::string Heatmap(std::string_view prefix, std::string_view site, std::string_view layer);

// A model topic taken apart: {prefix}/{site}/{group}/{id}/{leaf...}, group = devices | gateway.
// ("fleet" topics have no id: group = fleet, id = empty, leaf = the rest.)
struct ModelTopic {
  std::string site, group, id, leaf;
};
std::optional<ModelTopic> ParseModelTopic(std::string_view prefix, std::string_view topic);

}  // namespace sanigate::mqtt::topics
