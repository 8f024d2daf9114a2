// The heat map's JSON: the retained feed of a layer, a closed window, and the admin query's
// result (fleet/README.md "The heat map"; schema config/schema/heatmap.schema.json). A cell is
// "geohash": [n, sum, min, max, first, last, extras…] in the order of the payload's "fields".
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "heatmap/heatmap.h"

namespace sanigate::heatmap {

// v, site, layer, ts, grid, precision, crs, fields, merge.
nlohmann::json Header(const HeatmapConfig& cfg, const std::string& site, Layer layer, int precision, int64_t now);
nlohmann::json CellsJson(const std::vector<CellOut>& cells, Layer layer, int precision);
// The retained feed: header + "state" + the current window of every size, at the feed precision.
nlohmann::json FeedJson(const HeatmapEngine& engine, const std::string& site, Layer layer, int64_t now);
nlohmann::json ClosedWindowJson(const HeatmapEngine& engine, const std::string& site,
                                const HeatmapEngine::ClosedWindow& closed, int64_t now);
// The admin verb's result: window_s 0 = the state.
nlohmann::json QueryJson(const HeatmapEngine& engine, const std::string& site, Layer layer, int64_t window_s,
                         int64_t at_ms, int precision, int64_t now);
// Reads "cells" back, given the document's "fields" (any producer's order); nullopt when malformed.
std::optional<std::vector<CellOut>> ParseCells(const nlohmann::json& fields, const nlohmann::json& cells, Layer layer);

}  // namespace sanigate::heatmap
