#include "upstream/routing.h"

#include <algorithm>

#include "core/topic_filter.h"

namespace sanigate::upstream {

Routing::Routing(std::string local_prefix, const std::vector<settings::UpstreamSection>& upstreams)
    : local_prefix_(std::move(local_prefix)) {
  for (const auto& u : upstreams) ups_.push_back({u.topic_prefix, u.kinds, u.include, u.exclude});
}

std::string Routing::KindOf(std::string_view prefix, std::string_view topic) {
  if (topic.size() <= prefix.size() + 1 || topic.substr(0, prefix.size()) != prefix || topic[prefix.size()] != '/')
    return {};
  std::vector<std::string_view> levels;
  std::string_view rest = topic.substr(prefix.size() + 1);
  while (true) {
    auto slash = rest.find('/');
    levels.push_back(rest.substr(0, slash));
    if (slash == std::string_view::npos) break;
    rest = rest.substr(slash + 1);
  }
  // levels: site, group, ...
  if (levels.size() < 3) return {};
  std::string_view group = levels[1];
  if (group == "devices" && levels.size() == 4) {
    std::string_view leaf = levels[3];
    if (leaf == "telemetry" || leaf == "event" || leaf == "status") return std::string(leaf);
    return {};
  }
  if (group == "fleet") return levels[2] == "admin" ? std::string() : "fleet";
  if (group == "heatmap") return "heatmap";
  if (group == "gateway" && levels.size() >= 4) return levels[3] == "admin" ? std::string() : "gateway";
  return {};
}

uint32_t Routing::Upstreams(std::string_view topic) const {
  if (ups_.empty()) return 0;
  std::string kind = KindOf(local_prefix_, topic);
  if (kind.empty()) return 0;
  uint32_t bits = 0;
  for (size_t i = 0; i < ups_.size(); ++i) {
    const Up& u = ups_[i];
    if (std::find(u.kinds.begin(), u.kinds.end(), kind) == u.kinds.end()) continue;
    auto matches = [&](const std::string& f) { return TopicMatchesFilter(f, topic); };
    if (!u.include.empty() && std::none_of(u.include.begin(), u.include.end(), matches)) continue;
    if (std::any_of(u.exclude.begin(), u.exclude.end(), matches)) continue;
    bits |= 1u << (i + 1);
  }
  return bits;
}

std::string Routing::MapTopic(size_t dest, const std::string& topic) const {
  if (dest == 0 || dest > ups_.size()) return topic;
  const std::string& to = ups_[dest - 1].prefix;
  if (to == local_prefix_ || topic.compare(0, local_prefix_.size(), local_prefix_) != 0) return topic;
  return to + topic.substr(local_prefix_.size());
}

bool Routing::AnyWants(std::string_view kind) const {
  return std::any_of(ups_.begin(), ups_.end(), [&](const Up& u) {
    return std::find(u.kinds.begin(), u.kinds.end(), kind) != u.kinds.end();
  });
}

}  // namespace sanigate::upstream
