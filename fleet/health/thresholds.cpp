#include "health/thresholds.h"

namespace sanigate::fleet {

const HealthThresholds& ThresholdsFor(const HealthConfig& config, const std::string& kind,
                                      const std::string& profile) {
  if (!profile.empty()) {
    if (auto it = config.by_profile.find(profile); it != config.by_profile.end()) return it->second;
  }
  if (!kind.empty()) {
    if (auto it = config.by_kind.find(kind); it != config.by_kind.end()) return it->second;
  }
  return config.defaults;
}

}  // namespace sanigate::fleet
