// config check FILE: validates a sanigate or sanifleet config offline, with the daemons' own
// loaders, so the answer is exactly what the daemon would say at start-up.
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "app/config_loader.h"
#include "app/fleet_config.h"
#include "ctl/verbs.h"
#include "settings/reader.h"

namespace sanigate::ctl {

int RunConfigCheck(const std::string& file, bool as_json) {
  std::ifstream in(file, std::ios::binary);
  if (!in || std::filesystem::is_directory(file)) {
    std::string why = in ? "is a directory" : std::strerror(errno);
    if (as_json) std::cout << json{{"file", file}, {"ok", false}, {"errors", {"cannot read: " + why}}}.dump() << "\n";
    std::cerr << "sanictl: cannot read " << file << ": " << why << "\n";
    return kExitUsage;
  }
  // Which daemon the file is for: a [fleet] table makes it sanifleet's. A file that does not
  // parse goes to the gateway loader, which reports the syntax error with its position.
  bool fleet = false;
  {
    settings::ConfigErrors ignored(file);
    settings::ParsedFile parsed = settings::ParseFile(file, ignored);
    fleet = parsed.table && parsed.table->contains("fleet");
  }
  const char* kind = fleet ? "sanifleet config" : "sanigate config";
  Status status = fleet ? fleet::LoadFleetConfig(file).status() : app::LoadGatewayConfig(file).status();

  std::vector<std::string> errors;
  for (size_t pos = 0; !status.ok() && pos < status.message().size();) {
    size_t nl = status.message().find('\n', pos);
    if (nl == std::string::npos) nl = status.message().size();
    if (nl > pos) errors.push_back(status.message().substr(pos, nl - pos));
    pos = nl + 1;
  }
  if (as_json)
    std::cout << json{{"file", file}, {"type", fleet ? "sanifleet" : "sanigate"}, {"ok", status.ok()}, {"errors", errors}}.dump()
              << "\n";
  if (!status.ok()) {
    for (const auto& e : errors) std::cerr << e << "\n";
    return kExitUsage;
  }
  if (!as_json) std::cout << file << ": ok (" << kind << ")\n";
  return kExitOk;
}

}  // namespace sanigate::ctl
