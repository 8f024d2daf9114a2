// sanictl: the admin CLI of Sanigate (CONTRACT §4). This file is the command-line wiring only:
// global options, verbs and their arguments, then one call into verbs.h. Exit codes: 0 ok,
// 1 the operation failed, 2 bad usage or input, 3 cannot reach the broker or daemon, 4 not found.
#include <signal.h>

#include <CLI/CLI.hpp>
#include <iostream>

#include "ctl/context.h"
#include "ctl/verbs.h"

using namespace sanigate::ctl;

int main(int argc, char** argv) {
  signal(SIGPIPE, SIG_IGN);  // `sanictl tail | head` ends with a write error, not a signal

  CLI::App cli{"sanictl: admin CLI of Sanigate: gateways, devices, health, live stream, commands, heat map.\n"
               "Talks to sanigate and sanifleet through the MQTT broker."};
  cli.set_version_flag("--version", std::string("sanictl ") + SANIGATE_VERSION);
  cli.require_subcommand(1);
  // Global options may be given before or after the verb.
  cli.fallthrough();

  GlobalFlags g;
  cli.add_option("--broker", g.broker, "broker URL: tcp://host:port, mqtt://, ssl://, mqtts:// (default tcp://127.0.0.1:1883)");
  cli.add_option("--config", g.config,
                 std::string("sanictl's config: [mqtt] credentials/TLS and [ctl] site, topic_prefix (default ") +
                     kDefaultConfig + " if it exists)");
  cli.add_option("--site", g.site, "site id (default: [ctl] site of the config)");
  cli.add_option("--prefix", g.prefix, "topic prefix (default sanigate/v1)");
  cli.add_flag("--json", g.json, "machine output: one JSON document on stdout (tail: one per line)");
  CLI::Option* timeout = cli.add_option("--timeout", g.timeout_ms,
                                        "milliseconds to wait for the broker and for an answer (default 3000)");

  CLI::App* status = cli.add_subcommand("status", "gateways and fleet at a glance");

  CLI::App* devices = cli.add_subcommand("devices", "the device registry of sanifleet");
  devices->require_subcommand(1);
  DevicesListArgs list_args;
  int64_t limit = 0;
  CLI::App* list = devices->add_subcommand("list", "devices as a table");
  list->add_option("--kind", list_args.kind, "only this kind (garbage_room, bin, vehicle, ...)");
  list->add_option("--state", list_args.state, "only this health state (ok, degraded, critical, offline, unknown)");
  list->add_option("--gateway", list_args.gateway, "only devices behind this gateway");
  CLI::Option* limit_opt = list->add_option("--limit", limit, "at most N devices (sanifleet's default: 1000)")
                               ->check(CLI::PositiveNumber);
  std::string show_id;
  CLI::App* show = devices->add_subcommand("show", "one device: registry entry, latest metrics, health");
  show->add_option("DEVICE", show_id, "device id")->required();

  HealthArgs health_args;
  CLI::App* health = cli.add_subcommand("health", "health verdicts, most severe first");
  health->add_flag("--problems", health_args.problems, "only what needs attention (state other than ok)");
  health->add_option("--kind", health_args.kind, "only this kind");
  health->add_option("--state", health_args.state, "only this state");

  TailArgs tail_args;
  int64_t count = 0;
  double seconds = 0;
  CLI::App* tail = cli.add_subcommand("tail", "the live normalized stream (Ctrl-C stops)");
  tail->add_option("FILTER", tail_args.filter, "device id, or a glob with * (e.g. 'room-*')");
  CLI::Option* count_opt = tail->add_option("--count", count, "stop after N messages")->check(CLI::PositiveNumber);
  CLI::Option* seconds_opt = tail->add_option("--seconds", seconds, "stop after S seconds")->check(CLI::PositiveNumber);

  std::string cmd_device, cmd_name;
  std::vector<std::string> cmd_args;
  CLI::App* cmd = cli.add_subcommand("cmd", "send a command to a device and print its answer");
  cmd->add_option("DEVICE", cmd_device, "device id")->required();
  cmd->add_option("NAME", cmd_name, "command name (as configured for the device)")->required();
  cmd->add_option("ARGS", cmd_args, "command arguments");

  HeatmapArgs hm;
  int precision = 0;
  CLI::App* heatmap = cli.add_subcommand("heatmap", "sanifleet's heat map: hottest cells, GeoJSON/CSV export, PNG picture");
  heatmap->require_subcommand(1);
  std::vector<CLI::Option*> precision_opts;
  auto heatmap_verb = [&](const char* name, const char* what) {
    CLI::App* v = heatmap->add_subcommand(name, what);
    v->add_option("--layer", hm.layer,
                  "vehicle_coverage, bin_fill, overflow, alarms, workers or unattended")->required();
    v->add_option("--window", hm.window, "state (now, the default), 15m, 1h, 24h or a window size in seconds");
    v->add_option("--at", hm.at, "a time inside the wanted past window: epoch ms or ISO-8601 (2025-11-21T15:30, +08:00, Z)");
    precision_opts.push_back(v->add_option("--precision", precision, "geohash precision: 6 (~1.2 km), 7 (~150 m), 8 (~40 m)"));
    v->add_option("--site", hm.site, "the heat map of this site (default: sanifleet's own)");
    v->add_option("--by", hm.by, "intensity: n, mean or a field name (default per layer: bin_fill mean, unattended sum, else n)");
    return v;
  };
  CLI::App* hm_show = heatmap_verb("show", "the hottest cells and a character map of the layer");
  hm_show->add_option("--top", hm.top, "rows in the table (default 10; 0: the map only)")->check(CLI::NonNegativeNumber);
  hm_show->add_flag("--ascii", hm.ascii, "ASCII shades even on a UTF-8 terminal");
  CLI::App* hm_export = heatmap_verb("export", "the layer's cells as GeoJSON (RFC 7946) or CSV");
  hm_export->add_option("--format", hm.format, "geojson (default) or csv");
  hm_export->add_option("--output,-o", hm.output, "write to FILE instead of stdout");
  CLI::App* hm_render = heatmap_verb("render", "a PNG picture of the layer over its grid");
  hm_render->add_option("--png", hm.png, "the PNG file to write (- for stdout)")->required();
  hm_render->add_option("--width", hm.width, "picture width in pixels (default 800)");

  std::string check_file;
  CLI::App* config = cli.add_subcommand("config", "configuration files");
  config->require_subcommand(1);
  CLI::App* check = config->add_subcommand("check", "validate a sanigate or sanifleet config (exit 2 if invalid)");
  check->add_option("FILE", check_file, "the TOML file")->required();

  try {
    cli.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // "A subcommand is required" hides a mistyped verb: name it.
    if (dynamic_cast<const CLI::RequiredError*>(&e) != nullptr && !cli.remaining().empty()) {
      CLI::App* at = &cli;  // the deepest verb given so far ("devices" in "devices frob")
      for (bool deeper = true; deeper;) {
        deeper = false;
        for (CLI::App* sub : at->get_subcommands())
          if (sub->parsed()) {
            at = sub;
            deeper = true;
          }
      }
      std::string known;
      for (const CLI::App* sub : at->get_subcommands({})) known += (known.empty() ? "" : ", ") + sub->get_name();
      std::cerr << "unknown verb \"" << cli.remaining().front() << "\" (expected " << known
                << ")\nRun with --help for more information.\n";
      return kExitUsage;
    }
    int rc = cli.exit(e);  // prints help, version or the error with a hint
    return rc == 0 ? kExitOk : kExitUsage;
  }

  if (*check) return RunConfigCheck(check_file, g.json);

  g.timeout_given = timeout->count() > 0;
  auto ctx = ResolveContext(g);
  if (!ctx) return kExitUsage;

  if (*status) return RunStatus(*ctx);
  if (*list) {
    if (limit_opt->count() > 0) list_args.limit = limit;
    return RunDevicesList(*ctx, list_args);
  }
  if (*show) return RunDevicesShow(*ctx, show_id);
  if (*health) return RunHealth(*ctx, health_args);
  if (*tail) {
    if (count_opt->count() > 0) tail_args.count = count;
    if (seconds_opt->count() > 0) tail_args.seconds = seconds;
    return RunTail(*ctx, tail_args);
  }
  if (*cmd) return RunCmd(*ctx, cmd_device, cmd_name, cmd_args);
  if (*heatmap) {
    for (CLI::Option* o : precision_opts)
      if (o->count() > 0) hm.precision = precision;
    if (*hm_show) return RunHeatmapShow(*ctx, hm);
    if (*hm_export) return RunHeatmapExport(*ctx, hm);
    if (*hm_render) return RunHeatmapRender(*ctx, hm);
  }
  std::cerr << cli.help();
  return kExitUsage;
}
