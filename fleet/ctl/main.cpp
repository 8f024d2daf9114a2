// sanictl: the admin CLI of Sanigate (CONTRACT §4). This file is the command-line wiring only:
// global options, verbs and their arguments, then one call into verbs.h. Exit codes
// (exit_codes.h): 0 ok, 1 the operation failed, 2 bad usage or input, 3 cannot reach the broker
// or daemon, 4 not found, 5 the broker refused the user (credentials or ACL).
#include <signal.h>

#include <CLI/CLI.hpp>
#include <iostream>

#include "ctl/context.h"
#include "ctl/verbs.h"

using namespace sanigate::ctl;

int main(int argc, char** argv) {
  signal(SIGPIPE, SIG_IGN);  // `sanictl tail | head` ends with a write error, not a signal

  CLI::App cli{"sanictl: admin CLI of Sanigate: gateways, devices, health, live stream, commands, heat map,\n"
               "firmware images, rollouts and a diagnostic archive.\n"
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

  std::string dl_device;
  CLI::App* downlinks = cli.add_subcommand(
      "downlinks", "LoRaWAN commands queued for their devices' next uplinks (from the gateways' statuses)");
  downlinks->add_option("DEVICE", dl_device, "only this device");

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

  // ---- firmware (issue 7) ----
  CLI::App* firmware = cli.add_subcommand("firmware", "signed firmware images: operator keys, signing, sanifleet's image store");
  firmware->require_subcommand(1);
  std::string keygen_out;
  CLI::App* fw_keygen = firmware->add_subcommand(
      "keygen", "make an Ed25519 operator key pair (on an operator's machine, never on a box); prints its key id");
  fw_keygen->add_option("--out", keygen_out, "PREFIX: writes PREFIX.key (mode 0600, never overwritten) and PREFIX.pub")
      ->required();
  FirmwareSignArgs sign_args;
  CLI::App* fw_sign = firmware->add_subcommand("sign", "write the signed manifest of an image (offline)");
  fw_sign->add_option("FILE", sign_args.file, "the image")->required();
  fw_sign->add_option("--key", sign_args.key, "the operator's private key (PEM, mode 0600)")->required();
  fw_sign->add_option("--model", sign_args.model, "device model the image is for (e.g. GR-200)")->required();
  fw_sign->add_option("--version", sign_args.version, "the image's version ([0-9A-Za-z._+-]{1,64})")->required();
  fw_sign->add_option("--target", sign_args.target, "gateway, modbus or jt808 (LoRaWAN FUOTA is not supported)")->required();
  fw_sign->add_option("--notes", sign_args.notes, "release notes (at most 4096 bytes)");
  fw_sign->add_option("--out", sign_args.out, "the manifest file (default FILE.manifest.json)");
  FirmwareAddArgs add_args;
  CLI::App* fw_add = firmware->add_subcommand(
      "add", "sign (with --key) or take a signed --manifest, and upload the image to sanifleet");
  fw_add->add_option("FILE", add_args.sign.file, "the image")->required();
  fw_add->add_option("--manifest", add_args.manifest, "its signed manifest (sanictl firmware sign)");
  fw_add->add_option("--key", add_args.sign.key, "sign now with this private key (needs --model, --version, --target)");
  fw_add->add_option("--model", add_args.sign.model, "with --key: device model");
  fw_add->add_option("--version", add_args.sign.version, "with --key: the image's version");
  fw_add->add_option("--target", add_args.sign.target, "with --key: gateway, modbus or jt808");
  fw_add->add_option("--notes", add_args.sign.notes, "with --key: release notes");
  CLI::App* fw_list = firmware->add_subcommand("list", "the images sanifleet stores, newest first");

  // ---- rollout (issue 7) ----
  CLI::App* rollout = cli.add_subcommand("rollout", "firmware campaigns run by sanifleet: canary, waves, pauses, status");
  rollout->require_subcommand(1);
  RolloutSpecArgs spec;
  CLI::App* ro_create = rollout->add_subcommand(
      "create", "plan a campaign (draft) and print its groups; --start starts it. "
                "After the verb, --site is a target filter: give sanictl's site before the verb or in the config");
  ro_create->add_option("--spec", spec.spec_file, "a JSON campaign spec (fleet/rollout/campaign.h); flags override it");
  ro_create->add_option("--id", spec.id, "campaign id ([a-z0-9._-]{1,64})");
  ro_create->add_option("--artifact", spec.artifact, "the image: its SHA-256, or a unique prefix from `firmware list`");
  ro_create->add_option("--kind", spec.kinds, "only devices of this kind (repeat or comma-separate)")->delimiter(',');
  ro_create->add_option("--profile", spec.profiles, "only devices with this profile")->delimiter(',');
  ro_create->add_option("--model", spec.models, "only devices of this model")->delimiter(',');
  ro_create->add_option("--site", spec.sites, "only devices of this site")->delimiter(',');
  ro_create->add_option("--gateway", spec.gateways, "only devices behind this gateway")->delimiter(',');
  ro_create->add_option("--tag", spec.tags, "only devices with this tag (all given tags)")->delimiter(',');
  ro_create->add_option("--device", spec.devices, "exactly these devices (id or site/id)")->delimiter(',');
  ro_create->add_option_function<std::string>("--version-range", [&](const std::string& v) { spec.version_range = v; },
                                               "only devices whose firmware is in this range, e.g. \">=2.0.0,<2.1.0\"");
  ro_create->add_option_function<int>("--canary", [&](const int& v) { spec.canary = v; }, "devices in the canary group (default 1; 0 = none)");
  ro_create->add_option_function<std::string>("--waves", [&](const std::string& v) { spec.waves = v; },
                                              "cumulative wave percentages, e.g. 10,50,100 (default 25,100)");
  ro_create->add_option_function<double>("--success-pct", [&](const double& v) { spec.success_pct = v; },
                                         "a wave advances when this share succeeded (default 95)");
  ro_create->add_option_function<int>("--max-failures", [&](const int& v) { spec.max_failures = v; },
                                      "pause after this many failures (default 10)");
  ro_create->add_option_function<double>("--max-failure-pct", [&](const double& v) { spec.max_failure_pct = v; },
                                         "pause when this share of attempted devices failed (default 10)");
  ro_create->add_option_function<int>("--per-gateway", [&](const int& v) { spec.per_gateway = v; },
                                      "devices updating at once behind one gateway (default 5)");
  ro_create->add_option_function<int>("--per-bus", [&](const int& v) { spec.per_bus = v; },
                                      "devices updating at once on one serial bus (default 1)");
  ro_create->add_option_function<int64_t>("--timeout-s", [&](const int64_t& v) { spec.timeout_s = v; },
                                          "a device attempt fails after this many seconds (default 1800)");
  ro_create->add_option_function<int>("--retries", [&](const int& v) { spec.retries = v; }, "attempts after the first (default 2)");
  ro_create->add_option_function<int64_t>("--health-gate-s", [&](const int64_t& v) { spec.health_gate_s = v; },
                                          "a device must stay healthy on the new version this long (default 600)");
  ro_create->add_option("--blackout", spec.blackout, "no starts in this local window, e.g. 06:00-09:00 (repeat)")->delimiter(',');
  ro_create->add_option_function<std::string>("--utc-offset", [&](const std::string& v) { spec.utc_offset = v; },
                                              "the local time of --blackout, e.g. +08:00 (default; write --utc-offset=-05:00)");
  ro_create->add_flag("--start", spec.start, "start the campaign right after planning it");
  std::string rollout_id, rollout_reason;
  std::vector<std::pair<std::string, CLI::App*>> ro_actions;
  for (const char* action : {"start", "pause", "resume", "abort"}) {
    std::string what = std::string(action) == "start"    ? "start a draft campaign"
                       : std::string(action) == "pause"  ? "pause a running campaign (devices updating finish)"
                       : std::string(action) == "resume" ? "resume a paused campaign (accepts the failures so far)"
                                                         : "abort a campaign for good (devices updating finish)";
    CLI::App* v = rollout->add_subcommand(action, what);
    v->add_option("ID", rollout_id, "campaign id")->required();
    if (std::string(action) == "pause" || std::string(action) == "abort")
      v->add_option("--reason", rollout_reason, "why (shown in the status)");
    ro_actions.emplace_back(action, v);
  }
  RolloutStatusArgs ro_status_args;
  CLI::App* ro_status = rollout->add_subcommand("status", "a campaign's state, progress and groups");
  ro_status->add_option("ID", ro_status_args.id, "campaign id")->required();
  ro_status->add_flag("--devices", ro_status_args.devices, "also the devices that have not succeeded yet");
  ro_status->add_flag("--watch", ro_status_args.watch,
                      "redraw until completed (exit 0) or aborted (exit 1), or Ctrl-C; one line per change when not a terminal");
  ro_status->add_option("--interval", ro_status_args.interval_s, "--watch: seconds between updates (default 2)")
      ->check(CLI::PositiveNumber);
  CLI::App* ro_list = rollout->add_subcommand("list", "every campaign with its state and progress");

  std::string check_file;
  CLI::App* config = cli.add_subcommand("config", "configuration files");
  config->require_subcommand(1);
  CLI::App* check = config->add_subcommand("check", "validate a sanigate or sanifleet config (exit 2 if invalid)");
  check->add_option("FILE", check_file, "the TOML file")->required();

  DiagArgs diag_args;
  std::vector<std::string> state_dirs;
  CLI::App* diag = cli.add_subcommand(
      "diag", "write one .tar.gz for support: versions, host, configs without secrets, statuses, state sizes, journal");
  diag->add_option("--output,-o", diag_args.output,
                   "the archive (default ./sanigate-diag-HOST-TIME.tar.gz; a directory: that name inside; - for stdout)");
  diag->add_option("--config-dir", diag_args.config_dir, "where the configs are (default /etc/sanigate)");
  diag->add_option("--since", diag_args.since, "journal lines this far back: 30m, 2h, 1d (default 24h)");
  CLI::Option* state_opt = diag->add_option(
      "--state-dir", state_dirs, "a state directory to list (repeat; default /var/lib/sanigate and /var/lib/sanifleet)");

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
  // Offline: operator keys and signing never need the broker or a config.
  if (*fw_keygen) return RunFirmwareKeygen(keygen_out, g.json);
  if (*fw_sign) return RunFirmwareSign(sign_args, g.json);

  g.timeout_given = timeout->count() > 0;
  if (*diag) {
    if (state_opt->count() > 0) diag_args.state_dirs = state_dirs;
    return RunDiag(g, diag_args);
  }
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
  if (*downlinks) return RunDownlinks(*ctx, dl_device);
  if (*heatmap) {
    for (CLI::Option* o : precision_opts)
      if (o->count() > 0) hm.precision = precision;
    if (*hm_show) return RunHeatmapShow(*ctx, hm);
    if (*hm_export) return RunHeatmapExport(*ctx, hm);
    if (*hm_render) return RunHeatmapRender(*ctx, hm);
  }
  if (*fw_add) return RunFirmwareAdd(*ctx, add_args);
  if (*fw_list) return RunFirmwareList(*ctx);
  if (*ro_create) return RunRolloutCreate(*ctx, spec);
  for (const auto& [action, v] : ro_actions)
    if (*v) return RunRolloutAction(*ctx, action, rollout_id, rollout_reason);
  if (*ro_status) return RunRolloutStatus(*ctx, ro_status_args);
  if (*ro_list) return RunRolloutList(*ctx);
  std::cerr << cli.help();
  return kExitUsage;
}
