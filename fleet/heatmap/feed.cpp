#include "heatmap/feed.h"

#include <cmath>

#include "core/untrusted.h"
#include "heatmap/geohash.h"

namespace sanigate::heatmap {
namespace {

using json = nlohmann::json;

// Whole numbers print without ".0": counts and millisecond sums stay compact.
json Number(double v) {
  if (std::isfinite(v) && v == std::floor(v) && std::abs(v) < 9.0e15) return static_cast<int64_t>(v);
  return v;
}

json Values(const CellAgg& c, size_t extras) {
  const Agg& a = c.agg;
  json v = json::array({a.n, Number(a.sum)});
  if (a.n == 0) {
    v.insert(v.end(), {nullptr, nullptr, nullptr, nullptr});
  } else {
    v.insert(v.end(), {Number(a.min), Number(a.max), a.first, a.last});
  }
  for (size_t i = 0; i < extras; ++i) v.push_back(Number(c.extra[i]));
  return v;
}

}  // namespace

json Header(const HeatmapConfig& cfg, const std::string& site, Layer layer, int precision, int64_t now) {
  json fields = {"n", "sum", "min", "max", "first", "last"};
  json merge = {"add", "add", "min", "max", "min", "max"};
  for (const ExtraField& f : ExtraFields(layer)) {
    fields.push_back(f.name);
    merge.push_back(f.merge == MergeOp::kMax ? "max" : "add");
  }
  return {{"v", 1},          {"site", site},          {"layer", LayerName(layer)}, {"ts", now},
          {"grid", "geohash"}, {"precision", precision}, {"crs", CrsName(cfg.crs)}, {"fields", fields},
          {"merge", merge}};
}

json CellsJson(const std::vector<CellOut>& cells, Layer layer, int precision) {
  size_t extras = ExtraFields(layer).size();
  json out = json::object();
  for (const CellOut& c : cells) out[ToString(c.cell, precision)] = Values(c.value, extras);
  return out;
}

json FeedJson(const HeatmapEngine& engine, const std::string& site, Layer layer, int64_t now) {
  const HeatmapConfig& cfg = engine.config();
  int p = cfg.feed_precision;
  json doc = Header(cfg, site, layer, p, now);
  doc["state"] = {{"cells", CellsJson(engine.State(layer, p, now), layer, p)}};
  json windows = json::array();
  if (layer != Layer::kUnattended) {
    for (int64_t size : cfg.windows_s) {
      WindowOut w = engine.Window(layer, size, now, p);
      windows.push_back({{"size_s", size}, {"start", w.start_ms}, {"end", w.end_ms}, {"cells", CellsJson(w.cells, layer, p)}});
    }
  }
  doc["windows"] = std::move(windows);
  return doc;
}

json ClosedWindowJson(const HeatmapEngine& engine, const std::string& site, const HeatmapEngine::ClosedWindow& closed,
                      int64_t now) {
  const HeatmapConfig& cfg = engine.config();
  int p = cfg.feed_precision;
  WindowOut w = engine.Window(closed.layer, closed.size_s, closed.start_ms, p);
  json doc = Header(cfg, site, closed.layer, p, now);
  doc["window"] = {{"size_s", w.size_s}, {"start", w.start_ms}, {"end", w.end_ms}};
  doc["closed"] = true;
  doc["amended"] = closed.amended;
  doc["cells"] = CellsJson(w.cells, closed.layer, p);
  return doc;
}

json QueryJson(const HeatmapEngine& engine, const std::string& site, Layer layer, int64_t window_s, int64_t at_ms,
               int precision, int64_t now) {
  json doc = Header(engine.config(), site, layer, precision, now);
  if (window_s == 0) {
    doc["window"] = nullptr;
    doc["cells"] = CellsJson(engine.State(layer, precision, now), layer, precision);
  } else {
    WindowOut w = engine.Window(layer, window_s, at_ms, precision);
    doc["window"] = {{"size_s", w.size_s}, {"start", w.start_ms}, {"end", w.end_ms}};
    doc["cells"] = CellsJson(w.cells, layer, precision);
  }
  return doc;
}

std::optional<std::vector<CellOut>> ParseCells(const json& field_names, const json& cells, Layer layer) {
  if (!field_names.is_array() || !cells.is_object()) return std::nullopt;
  std::vector<std::string> fields;
  for (const auto& f : field_names) {
    if (!f.is_string()) return std::nullopt;
    fields.push_back(f.get<std::string>());
  }
  auto extras = ExtraFields(layer);
  std::vector<CellOut> out;
  for (auto it = cells.begin(); it != cells.end(); ++it) {
    auto cell = Parse(it.key());
    if (!cell || !it->is_array() || it->size() != fields.size()) return std::nullopt;
    CellOut c;
    c.cell = *cell;
    for (size_t i = 0; i < fields.size(); ++i) {
      const json& v = (*it)[i];
      if (v.is_null()) continue;
      if (!v.is_number()) return std::nullopt;
      const std::string& f = fields[i];
      Agg& a = c.value.agg;
      // Counts and times are integers; a float beyond their range would be an undefined cast.
      if (f == "n") {
        auto n = AsUint64(v);
        if (!n) return std::nullopt;
        a.n = *n;
      } else if (f == "sum") a.sum = v.get<double>();
      else if (f == "min") a.min = v.get<double>();
      else if (f == "max") a.max = v.get<double>();
      else if (f == "first" || f == "last") {
        auto t = AsInt64(v);
        if (!t) return std::nullopt;
        (f == "first" ? a.first : a.last) = *t;
      } else {
        for (size_t e = 0; e < extras.size(); ++e)
          if (f == extras[e].name) c.value.extra[e] = v.get<double>();
      }
    }
    out.push_back(c);
  }
  std::sort(out.begin(), out.end(), [](const CellOut& a, const CellOut& b) { return a.cell < b.cell; });
  return out;
}

}  // namespace sanigate::heatmap
