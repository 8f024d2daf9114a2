#include "jt808/spec.h"

#include "jt808/jt808_adapter.h"
#include "jt808/jt808_config.h"

namespace sanigate::dev::jt808 {

AdapterSpec Spec() {
  AdapterSpec s;
  s.name = "jt808";
  s.sample_config = "jt808.toml";
  s.parse = ParseJt808Section;
  s.create = [](const std::any& cfg, const settings::GatewaySection&, const AdapterServices&) -> std::unique_ptr<Adapter> {
    return std::make_unique<Jt808Adapter>(std::any_cast<const Jt808Config&>(cfg));
  };
  return s;
}

}  // namespace sanigate::dev::jt808
