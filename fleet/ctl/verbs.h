// The sanictl verbs. Each takes the resolved Context and its own arguments, writes its output
// (a table, or one JSON document with --json) to stdout and problems to stderr, and returns
// the exit code (context.h). Called from main's thread, one verb per run.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "ctl/context.h"

namespace sanigate::ctl {

// verbs_fleet.cpp: what the gateways' retained statuses and sanifleet's admin API say.
int RunStatus(const Context& ctx);

struct DevicesListArgs {
  std::string kind, state, gateway;
  std::optional<int64_t> limit;
};
int RunDevicesList(const Context& ctx, const DevicesListArgs& args);
int RunDevicesShow(const Context& ctx, const std::string& device);

struct HealthArgs {
  bool problems = false;
  std::string kind, state;
};
int RunHealth(const Context& ctx, const HealthArgs& args);

// verbs_live.cpp: the live stream and device commands.
struct TailArgs {
  std::string filter;              // device id or glob with '*'; empty = everything
  std::optional<int64_t> count;    // stop after this many messages
  std::optional<double> seconds;   // stop after this long
};
int RunTail(const Context& ctx, const TailArgs& args);
int RunCmd(const Context& ctx, const std::string& device, const std::string& name,
           const std::vector<std::string>& args);

// verbs_heatmap.cpp: sanifleet's heat map (admin verb `heatmap`): `show` prints the hottest
// cells and a character map (--json: the raw result), `export` writes GeoJSON or CSV, `render`
// a PNG picture.
struct HeatmapArgs {
  std::string layer;                // required; one of HeatmapLayers()
  std::string window = "state";     // state, 15m, 1h, 24h or seconds
  std::string at;                   // epoch ms or ISO-8601; empty = now
  std::optional<int> precision;     // 6, 7 or 8; unset = the feed's
  std::string site;                 // the heat map's site; empty = sanifleet's own
  std::string by;                   // intensity metric; empty = the layer's default
  int64_t top = 10;                 // show: rows of the table
  bool ascii = false;               // show: no Unicode shades even on a UTF-8 terminal
  std::string format = "geojson";   // export: geojson or csv
  std::string output;               // export: file; empty or "-" = stdout
  std::string png;                  // render: file ("-" = stdout)
  int width = 800;                  // render: pixels
};
int RunHeatmapShow(const Context& ctx, const HeatmapArgs& args);
int RunHeatmapExport(const Context& ctx, const HeatmapArgs& args);
int RunHeatmapRender(const Context& ctx, const HeatmapArgs& args);

// verbs_config.cpp: offline validation of a sanigate or sanifleet config file.
int RunConfigCheck(const std::string& file, bool json);

}  // namespace sanigate::ctl
