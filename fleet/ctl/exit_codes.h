// sanictl's exit codes (CONTRACT §4, plus 5): what a script may branch on. Plain constants.
#pragma once

namespace sanigate::ctl {

enum Exit : int {
  kExitOk = 0,
  kExitFailed = 1,         // the operation failed (an ok:false answer)
  kExitUsage = 2,          // bad usage or input: a bad value anywhere, found before sending if possible
  kExitUnreachable = 3,    // cannot reach the broker or the daemon (also: sanifleet says it is offline)
  kExitNotFound = 4,       // the named thing (device, command, campaign, image, site) does not exist
  kExitNotAuthorized = 5,  // the broker refused this user: credentials, or its ACL for a topic
};

}  // namespace sanigate::ctl
