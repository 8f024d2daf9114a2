#include "mqtt/topics.h"

namespace sanigate::mqtt::topics {
namespace {

std::string Join(std::initializer_list<std::string_view> parts) {
  std::string out;
  for (auto p : parts) {
    if (!out.empty()) out += '/';
    out += p;
  }
  return out;
}

}  // namespace

std::string Device(std::string_view prefix, std::string_view site, std::string_view device, std::string_view leaf) {
  return Join({prefix, site, "devices", device, leaf});
}
std::string GatewayStatus(std::string_view prefix, std::string_view site, std::string_view gateway) {
  return Join({prefix, site, "gateway", gateway, "status"});
}
std::string GatewayAdmin(std::string_view prefix, std::string_view site, std::string_view gateway, std::string_view verb) {
  return Join({prefix, site, "gateway", gateway, "admin", verb});
}
std::string FleetAdmin(std::string_view prefix, std::string_view site, std::string_view verb) {
  return Join({prefix, site, "fleet", "admin", verb});
}
std::string AdminReply(std::string_view prefix, std::string_view site, std::string_view client) {
  return Join({prefix, site, "admin", "reply", client});
}
std::string DeviceHealth(std::string_view prefix, std::string_view site, std::string_view device) {
  return Join({prefix, site, "fleet", "health", device});
}
std::string GatewayHealth(std::string_view prefix, std::string_view site, std::string_view gateway) {
  return Join({prefix, site, "fleet", "health", "gateway", gateway});
}
std::string FleetEvents(std::string_view prefix, std::string_view site) { return Join({prefix, site, "fleet", "events"}); }
std::string FleetStatus(std::string_view prefix, std::string_view site) { return Join({prefix, site, "fleet", "status"}); }
std::string Heatmap(std::string_view prefix, std::string_view site, std::string_view layer) {
  return Join({prefix, site, "heatmap", layer});
}

std::optional<ModelTopic> ParseModelTopic(std::string_view prefix, std::string_view topic) {
  if (topic.size() <= prefix.size() + 1 || topic.substr(0, prefix.size()) != prefix || topic[prefix.size()] != '/')
    return std::nullopt;
  std::string_view rest = topic.substr(prefix.size() + 1);
  auto next = [&rest]() -> std::optional<std::string_view> {
    if (rest.empty()) return std::nullopt;
    auto slash = rest.find('/');
    std::string_view part = rest.substr(0, slash);
    rest = slash == std::string_view::npos ? std::string_view() : rest.substr(slash + 1);
    return part;
  };
  ModelTopic t;
  auto site = next();
  auto group = next();
  if (!site || !group || site->empty()) return std::nullopt;
  t.site = *site;
  t.group = *group;
  if (t.group == "fleet") {
    t.leaf = rest;
    return t;
  }
  auto id = next();
  if (!id || id->empty() || rest.empty()) return std::nullopt;
  t.id = *id;
  t.leaf = rest;
  return t;
}

}  // namespace sanigate::mqtt::topics
