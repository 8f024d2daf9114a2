// The sanictl verbs. Each takes the resolved Context and its own arguments, writes its output
// (a table, or one JSON document with --json) to stdout and problems to stderr, and returns
// the exit code (context.h). Called from main's thread, one verb per run.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "ctl/context.h"
#include "ctl/rollout_format.h"

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
// LoRaWAN commands waiting for their device's next uplink, from the gateways' retained statuses
// (no sanifleet needed): every device's, or one device's (`device` non-empty).
int RunDownlinks(const Context& ctx, const std::string& device);

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

// verbs_firmware.cpp: operator keys, signed manifests, and sanifleet's image store (admin verbs
// firmware_put, firmware_list). keygen and sign never touch the broker.
struct FirmwareSignArgs {
  std::string file;      // the image
  std::string key;       // PKCS#8 PEM private key (mode 0600)
  std::string model, version, target, notes;
  std::string out;       // sign: the manifest file; empty = FILE.manifest.json
};
int RunFirmwareKeygen(const std::string& prefix, bool json);
int RunFirmwareSign(const FirmwareSignArgs& args, bool json);
struct FirmwareAddArgs {
  FirmwareSignArgs sign;  // file, and key/model/version/target/notes when there is no manifest
  std::string manifest;   // an existing signed manifest instead of a key
};
int RunFirmwareAdd(const Context& ctx, const FirmwareAddArgs& args);
int RunFirmwareList(const Context& ctx);

// verbs_rollout.cpp: campaigns (admin verbs rollout_*).
int RunRolloutCreate(const Context& ctx, const RolloutSpecArgs& args);
// action: start, pause, resume or abort; reason for pause and abort (empty = sanifleet's default).
int RunRolloutAction(const Context& ctx, const std::string& action, const std::string& id, const std::string& reason);
struct RolloutStatusArgs {
  std::string id;
  bool devices = false;     // add the devices that have not succeeded yet
  bool watch = false;       // redraw until completed / aborted or Ctrl-C
  double interval_s = 2.0;  // --watch poll interval
};
int RunRolloutStatus(const Context& ctx, const RolloutStatusArgs& args);
int RunRolloutList(const Context& ctx);

// verbs_config.cpp: offline validation of a sanigate or sanifleet config file.
int RunConfigCheck(const std::string& file, bool json);

// verbs_diag.cpp: one .tar.gz for support (versions, host, redacted configs, retained statuses,
// state sizes, journal). Resolves the context itself: a bad sanictl config costs only the
// broker part. Exit 0; 3 / 5 when the broker cannot be reached / refuses the user, 2 for a bad
// sanictl config or --since (the archive is written in all these cases); 1 when it cannot be.
struct DiagArgs {
  std::string output;                       // FILE, a directory, or "-"; "" = ./sanigate-diag-HOST-TIME.tar.gz
  std::string config_dir = "/etc/sanigate";
  std::string since = "24h";                // journal lines this far back
  std::vector<std::string> state_dirs = {"/var/lib/sanigate", "/var/lib/sanifleet"};
};
int RunDiag(const GlobalFlags& flags, const DiagArgs& args);

}  // namespace sanigate::ctl
