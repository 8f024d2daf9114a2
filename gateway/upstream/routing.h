// Which outbox destinations want a record, and the topic each one gets it under. Destination 0
// is the local broker, destination i (1..) is the i-th [[upstream]]. Built once from the config;
// pure and immutable afterwards, so thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "settings/gateway_config.h"

namespace sanigate::upstream {

class Routing {
 public:
  Routing(std::string local_prefix, const std::vector<settings::UpstreamSection>& upstreams);

  // A record of this gateway (pipeline output): the local broker, plus every upstream whose
  // kinds and filters take the topic.
  uint32_t ForRecord(std::string_view topic) const { return 1u | Upstreams(topic); }
  // A message relayed from the local broker (sanifleet's outputs): the upstreams only, since the
  // local broker has it already.
  uint32_t Upstreams(std::string_view topic) const;
  // The topic under destination `dest`'s prefix.
  std::string MapTopic(size_t dest, const std::string& topic) const;
  // Whether some upstream takes this kind (to relay only what somebody wants).
  bool AnyWants(std::string_view kind) const;

  // The kind of a topic of the local model: telemetry, event, status (devices/{id}/…), fleet,
  // heatmap, gateway; empty for what never goes up (commands, admin requests and replies).
  static std::string KindOf(std::string_view prefix, std::string_view topic);

 private:
  struct Up {
    std::string prefix;
    std::vector<std::string> kinds, include, exclude;
  };
  std::string local_prefix_;
  std::vector<Up> ups_;
};

}  // namespace sanigate::upstream
