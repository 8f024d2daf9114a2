// What every sanictl verb gets: the resolved global options (broker, credentials, site, prefix,
// timeout, output mode), the exit codes of CONTRACT §4, and the shared steps of the verbs that
// talk to the daemons (need a site, connect or explain, call a sanifleet admin verb).
// Plain values; used from main's thread only.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "ctl/admin_client.h"
#include "ctl/exit_codes.h"

namespace sanigate::ctl {

using json = nlohmann::json;

// The global options as given on the command line (empty / unset when absent).
struct GlobalFlags {
  std::string broker;
  std::string config;
  std::string site;
  std::string prefix;
  bool json = false;
  int64_t timeout_ms = 3000;
  bool timeout_given = false;
};

struct Context {
  AdminOptions admin;  // mqtt (url after --broker), prefix, site, connection timeout
  bool json = false;
  bool color = false;  // stdout is a terminal and NO_COLOR is not set
  std::chrono::milliseconds timeout{3000};
  bool timeout_given = false;
  std::string config_file;  // the sanictl config that was read ("" when none)
};

// Default location of sanictl's own config; read only when it exists.
inline constexpr const char* kDefaultConfig = "/etc/sanigate/sanictl.toml";

// Reads the sanictl config ([mqtt] as every daemon's, [ctl] site and topic_prefix) and applies
// the flags over it. On a bad config or flag: prints why on stderr and returns nullopt (exit 2).
std::optional<Context> ResolveContext(const GlobalFlags& flags);

// Prints "no site ..." on stderr and returns false when ctx has no site.
bool RequireSite(const Context& ctx);

// Connects; on failure prints why ("cannot reach the broker at URL: reason", or the broker's
// refusal of the user) and returns null with the exit code in `exit_code` (3, or 5).
std::unique_ptr<AdminClient> ConnectOrExplain(const Context& ctx, int& exit_code);

// Prints a failed AdminClient call's message on stderr and returns its exit code: refused by
// the broker (kFailedPrecondition) 5; unreachable, offline or no answer 3; not found 4; else 1.
int Explain(const Status& status);

// Before calling sanifleet: follows its retained status (AdminClient::FollowFleetStatus). When it
// says sanifleet is offline, prints that ("sanifleet ID is offline since ..., says TOPIC") and
// returns 3; a reply topic the broker does not deliver to the user → 5; else kExitOk.
int FleetReady(const Context& ctx, AdminClient& client);

// Milliseconds since the Unix epoch, now.
int64_t NowMs();

// Calls sanifleet's admin `verb` (after FleetReady) and puts the `result` of an ok answer into
// `result`. Returns kExitOk, or the exit code after printing the problem on stderr: sanifleet
// offline or no answer in time → 3 ("sanifleet did not answer on TOPIC within N ms"), the
// broker refused the request → 5, code not_found → 4, invalid → `invalid_exit` (2, bad input;
// verbs whose "invalid" means a refused operation, like resuming a running rollout, pass 1),
// other → 1.
int FleetCall(const Context& ctx, AdminClient& client, const std::string& verb, const nlohmann::json& args,
              nlohmann::json& result, int invalid_exit = kExitUsage);
// The same checks for an answer already awaited (status sends early and waits late).
int FleetAnswer(const Context& ctx, const std::string& topic, Result<nlohmann::json> answer,
                nlohmann::json& result, int invalid_exit = kExitUsage);

}  // namespace sanigate::ctl
