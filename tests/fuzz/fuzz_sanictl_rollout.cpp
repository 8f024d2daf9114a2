// sanifleet's rollout and firmware answers as sanictl renders them (ctl/rollout_format.h):
// rollout_status (status view, one-line form, change key, progress bar), rollout_list,
// rollout_create (plan summary), firmware_list (table, artifact text, prefix resolution), and
// BuildSpec over a spec file's JSON. The bar must fill exactly its width. Also the two small text
// decoders there: ParseWaves and ChunkLimitFromError.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <numeric>

#include "ctl/rollout_format.h"
#include "fuzz_common.h"

using nlohmann::json;
using namespace sanigate;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text = fuzz::Text(data, size);
  if (text.size() < 256) {
    (void)ctl::ChunkLimitFromError(text);
    auto w = ctl::ParseWaves(text);
    if (w.ok()) FUZZ_CHECK(!w.value().empty() && w.value().back() == 100, "waves end at 100");
  }
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded()) return 0;
  const int64_t now = 1'767'225'600'000;

  ctl::StatusViewOptions opt;
  opt.color = size & 1;
  opt.utf8 = size & 2;
  opt.width = 20 + static_cast<int>(size % 100);
  opt.now_ms = now;
  opt.site = "houpu";
  opt.max_devices = size % 4;
  std::string view = ctl::RenderRolloutStatus(j, opt);
  FUZZ_CHECK(!view.empty() && view.back() == '\n', "the status view does not end with a newline");
  (void)ctl::RolloutStatusLine(j);
  (void)ctl::StatusChangeKey(j);
  (void)ctl::RenderTable(ctl::RolloutTable(j, now), false);
  (void)ctl::PlanSummary(j, size & 4);
  (void)ctl::RenderTable(ctl::FirmwareTable(j), true);
  (void)ctl::ArtifactText(j);
  (void)ctl::ResolveArtifact("ab", j);

  ctl::BarCounts counts = ctl::CountsOf(j);
  for (int width : {0, 1, 7, 40}) {
    auto widths = ctl::BarWidths(counts, width);
    FUZZ_CHECK(widths.size() == 5, "five segments");
    int sum = std::accumulate(widths.begin(), widths.end(), 0);
    for (int w : widths) FUZZ_CHECK(w >= 0, "a negative segment");
    FUZZ_CHECK(counts.total() == 0 ? sum == 0 : sum == width,
               "bar of width " + std::to_string(width) + " has " + std::to_string(sum) + " cells");
    (void)ctl::ProgressBar(counts, width, true, true);
  }

  ctl::RolloutSpecArgs args;
  args.id = "fw-1";
  args.artifact = std::string(64, 'a');
  args.waves = "10,50,100";
  args.blackout = {"06:00-09:00"};
  (void)ctl::BuildSpec(j, args);
  return 0;
}
