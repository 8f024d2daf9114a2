// sanifleet's heat-map documents as their readers decode them: ParseHeatmapResult (sanictl
// heatmap show|export|render, the admin verb's answer) followed by every renderer (headline, top
// cells table, character map, GeoJSON, CSV, picture and PNG), and heatmap::ParseCells (cells of a
// feed read back) with its writer CellsJson.
#include <cmath>
#include <cstdint>
#include <nlohmann/json.hpp>

#include "ctl/heatmap_render.h"
#include "ctl/png_writer.h"
#include "fuzz_common.h"
#include "heatmap/feed.h"

using nlohmann::json;
using namespace sanigate;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  json j = json::parse(fuzz::Text(data, size), nullptr, false);
  if (j.is_discarded()) return 0;

  auto r = ctl::ParseHeatmapResult(j);
  if (r.ok()) {
    const ctl::HeatmapResult& h = r.value();
    std::string metric = ctl::DefaultMetric(h.layer);
    (void)ctl::HeatmapHeadline(h);
    if (ctl::CheckMetric(h, metric).ok()) {
      auto scale = ctl::ScaleOf(h, metric);
      auto rank = ctl::RankCells(h, metric);
      FUZZ_CHECK(rank.size() == h.cells.size(), "RankCells lost cells");
      for (const auto& c : h.cells)
        if (auto v = ctl::Intensity(h, c, metric); v && std::isfinite(*v) && scale.any) {
          double n = scale.Normalize(*v);
          FUZZ_CHECK(!(n < 0) && !(n > 1), "Normalize outside 0..1: " + std::to_string(n));
        }
      (void)ctl::RenderTable(ctl::TopCellsTable(h, metric, 10), true);
      ctl::TermMapOptions tm;
      tm.max_cols = 40;
      tm.max_rows = 12;
      tm.unicode = size & 1;
      auto map = ctl::RenderTermMap(h, tm);
      FUZZ_CHECK(static_cast<int>(map.grid.size()) == map.rows && map.cols <= tm.max_cols && map.rows <= tm.max_rows,
                 "character map size");
      (void)map.Text();
      ctl::PictureOptions po;
      po.width = ctl::kMinPictureWidth;
      po.title = ctl::HeatmapTitle(h);
      auto pic = ctl::RenderHeatPicture(h, po);
      if (pic.ok() && h.cells.size() < 64) (void)ctl::EncodePng(pic.value().image);
    }
    (void)ctl::ToGeoJson(h).dump();
    (void)ctl::ToCsv(h);
  }

  if (j.is_object() && j.contains("fields") && j.contains("cells")) {
    for (heatmap::Layer layer : {heatmap::Layer::kVehicleCoverage, heatmap::Layer::kBinFill, heatmap::Layer::kUnattended}) {
      auto cells = heatmap::ParseCells(j["fields"], j["cells"], layer);
      if (!cells) continue;
      (void)heatmap::CellsJson(*cells, layer, 8);
    }
  }
  return 0;
}
