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

  CLI::App cli{"sanictl: admin CLI of Sanigate: gateways, devices, health, live stream, commands.\n"
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
  std::cerr << cli.help();
  return kExitUsage;
}
