// diag: one .tar.gz an operator can send to support. Every step that fails is written down in
// the archive (diag-errors.txt) and the next step runs: the archive is most wanted on a box where
// things are broken. Secrets stay out: configs are redacted (diag_redact.h), files named by *_file
// keys (passwords, keys) are never read, the credentials directory is never entered. The archive
// is built in memory and written with mode 0600 through a temporary file renamed into place.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysinfo.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <set>
#include <sstream>

#include "ctl/diag_redact.h"
#include "ctl/diag_support.h"
#include "ctl/format.h"
#include "ctl/rollout_format.h"  // HumanBytes
#include "ctl/tar_writer.h"
#include "ctl/verbs.h"
#include "mqtt/topics.h"

namespace sanigate::ctl {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

constexpr auto kRetainedQuiet = 300ms;
constexpr uintmax_t kMaxConfigBytes = 1 << 20;   // a config larger than this is not a config
constexpr size_t kMaxJournalBytes = 32 << 20;
constexpr int kMaxJournalLines = 50000;
constexpr size_t kMaxStateEntries = 5000;

struct Member {
  std::string name, data;
};

// What the archive collects, step by step.
struct Diag {
  std::vector<Member> members;
  std::vector<std::string> errors;  // one line per failed step, for diag-errors.txt
  std::vector<std::string> secrets; // every secret value of the configs, scrubbed from every member

  void Add(std::string name, std::string data) { members.push_back({std::move(name), std::move(data)}); }
  void Error(std::string what) { errors.push_back(std::move(what)); }
};

std::string Utc(int64_t epoch_s, const char* format) {
  std::time_t t = static_cast<std::time_t>(epoch_s);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, format, &tm);
  return buf;
}

std::string Local(int64_t epoch_s) {
  std::time_t t = static_cast<std::time_t>(epoch_s);
  std::tm tm{};
  localtime_r(&t, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S %z", &tm);
  return buf;
}

// A host name safe in a file name.
std::string FileSafe(std::string s) {
  for (char& c : s)
    if (!(std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '.' || c == '-' || c == '_')) c = '_';
  return s.empty() ? "host" : s;
}

std::string FirstLine(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
  if (auto nl = s.find('\n'); nl != std::string::npos) s = s.substr(0, nl) + " ...";
  return s;
}

std::string Trimmed(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  return s;
}

// ---- host ----

void DiskLine(std::ostream& out, const std::string& dir) {
  struct statvfs v{};
  if (::statvfs(dir.c_str(), &v) != 0) {
    out << "  " << dir << ": " << std::strerror(errno) << "\n";
    return;
  }
  uint64_t total = static_cast<uint64_t>(v.f_blocks) * v.f_frsize;
  uint64_t avail = static_cast<uint64_t>(v.f_bavail) * v.f_frsize;
  out << "  " << dir << ": " << HumanBytes(avail) << " free of " << HumanBytes(total);
  if (total > 0) out << " (" << (avail * 100 / total) << "% free)";
  if (v.f_files > 0) out << ", inodes " << v.f_favail << " free of " << v.f_files;
  out << "\n";
}

void CollectHost(Diag& d, const std::string& config_dir, const std::vector<std::string>& state_dirs, int64_t now_s) {
  std::ostringstream out;
  struct utsname u{};
  if (::uname(&u) == 0)
    out << "uname: " << u.sysname << " " << u.nodename << " " << u.release << " " << u.version << " " << u.machine << "\n";
  else
    d.Error(std::string("uname: ") + std::strerror(errno));
  {
    std::ifstream os("/etc/os-release");
    std::string line, pretty;
    while (std::getline(os, line))
      if (line.rfind("PRETTY_NAME=", 0) == 0) pretty = line.substr(12);
    pretty.erase(std::remove(pretty.begin(), pretty.end(), '"'), pretty.end());
    out << "os: " << (pretty.empty() ? "unknown (no /etc/os-release)" : pretty) << "\n";
  }
  out << "time: " << Utc(now_s, "%Y-%m-%dT%H:%M:%SZ") << " (local " << Local(now_s) << ")\n";
  struct sysinfo si{};
  if (::sysinfo(&si) == 0) {
    out << "uptime: " << Duration(static_cast<int64_t>(si.uptime) * 1000) << " (since "
        << Local(now_s - static_cast<int64_t>(si.uptime)) << ")\n";
    char load[64];
    std::snprintf(load, sizeof load, "%.2f %.2f %.2f", si.loads[0] / 65536.0, si.loads[1] / 65536.0, si.loads[2] / 65536.0);
    out << "load: " << load << "\n";
    out << "memory: " << HumanBytes(uint64_t{si.freeram} * si.mem_unit) << " free of "
        << HumanBytes(uint64_t{si.totalram} * si.mem_unit) << "\n";
  } else {
    d.Error(std::string("sysinfo (uptime): ") + std::strerror(errno));
  }
  out << "user: uid " << ::getuid() << (::geteuid() == 0 ? " (root)" : " (not root: some state may be unreadable)")
      << "\n";
  out << "disk free:\n";
  for (const auto& dir : state_dirs) DiskLine(out, dir);
  DiskLine(out, config_dir);
  d.Add("host.txt", out.str());
}

// ---- configs ----

struct ConfigFile {
  fs::path path;
  std::string rel;  // below the config dir
};

// Files named by *_file keys, as the configs read so far give them.
struct FileRefs {
  std::set<std::string> paths;      // canonical
  std::set<std::string> basenames;  // of relative references: their base is not always known
  std::map<std::string, std::string> by;  // canonical or basename -> the config naming it

  void Add(const std::string& ref, const fs::path& config) {
    if (ref.empty()) return;
    std::error_code ec;
    fs::path p(ref);
    fs::path abs = p.is_absolute() ? p : config.parent_path() / p;
    std::string c = fs::weakly_canonical(abs, ec).string();
    if (!ec) {
      paths.insert(c);
      by.emplace(c, config.filename().string());
    }
    if (!p.is_absolute()) {
      basenames.insert(p.filename().string());
      by.emplace(p.filename().string(), config.filename().string());
    }
  }
  // The config naming `file`, or "" when none does.
  std::string Named(const fs::path& file) const {
    std::error_code ec;
    std::string c = fs::weakly_canonical(file, ec).string();
    if (!ec && paths.count(c) > 0) return by.at(c);
    if (basenames.count(file.filename().string()) > 0) return by.at(file.filename().string());
    return "";
  }
};

void CollectConfigs(Diag& d, const std::string& config_dir) {
  std::vector<ConfigFile> files;
  std::error_code ec;
  fs::recursive_directory_iterator it(config_dir, fs::directory_options::skip_permission_denied, ec);
  if (ec) {
    d.Error("configs: cannot read " + config_dir + ": " + ec.message());
    d.Add("config/index.txt", "cannot read " + config_dir + ": " + ec.message() + "\n");
    return;
  }
  for (; it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (ec) {
      d.Error("configs: " + ec.message());
      break;
    }
    const fs::directory_entry& e = *it;
    std::error_code ec2;
    // Never entered: the MQTT passwords live there.
    if (e.is_directory(ec2) && (e.path().filename() == "credentials" || it.depth() >= 3)) {
      it.disable_recursion_pending();
      continue;
    }
    if (e.path().extension() != ".toml" || !e.is_regular_file(ec2)) continue;
    files.push_back({e.path(), e.path().lexically_relative(config_dir).string()});
  }
  // Files named by *_file keys must not be read, and a LoRaWAN keys file is TOML too: read the
  // daemons' configs first, as they name such files, and last what looks like one (a secret-ish
  // name, or not readable by others, as the docs ask of key files), so that the configs naming
  // them come before. One named only by a file read after it is still left out of the archive.
  auto rank = [](const ConfigFile& f) {
    std::string n = f.rel;
    if (n == "sanigate.toml" || n == "sanifleet.toml" || n == "sanictl.toml") return 0;
    std::string lower = n;
    for (char& ch : lower) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    for (const char* word : {"key", "secret", "cred", "passw", "token"})
      if (lower.find(word) != std::string::npos) return 2;
    struct stat st{};
    if (::stat(f.path.c_str(), &st) == 0 && (st.st_mode & S_IROTH) == 0) return 2;
    return 1;
  };
  std::sort(files.begin(), files.end(), [&](const ConfigFile& a, const ConfigFile& b) {
    return rank(a) != rank(b) ? rank(a) < rank(b) : a.rel < b.rel;
  });

  std::ostringstream index;
  index << "Configs of " << config_dir << " (*.toml), with the values of secret keys (password, secret, token,\n"
        << "key, *_key such as app_key or nwk_s_key, auth_code, ...) replaced by \"<removed>\", as are\n"
        << "commented-out ones and the user:password part of URLs. Files named by *_file keys are not read.\n\n";
  FileRefs refs;
  std::vector<std::pair<ConfigFile, RedactedToml>> done;
  for (const auto& f : files) {
    if (std::string by = refs.Named(f.path); !by.empty()) {
      index << f.rel << ": not read (named by a *_file key in " << by << ")\n";
      continue;
    }
    std::error_code sec;
    uintmax_t size = fs::file_size(f.path, sec);
    if (!sec && size > kMaxConfigBytes) {
      index << f.rel << ": not read (" << HumanBytes(size) << ", larger than a config)\n";
      d.Error("config " + f.rel + ": not read, " + HumanBytes(size));
      continue;
    }
    std::ifstream in(f.path, std::ios::binary);
    std::stringstream text;
    text << in.rdbuf();
    if (!in) {
      index << f.rel << ": cannot read: " << std::strerror(errno) << "\n";
      d.Error("config " + f.rel + ": cannot read: " + std::strerror(errno));
      continue;
    }
    RedactedToml r = RedactToml(text.str());
    for (const auto& ref : r.file_refs) refs.Add(ref, f.path);
    d.secrets.insert(d.secrets.end(), r.secrets.begin(), r.secrets.end());
    done.emplace_back(f, std::move(r));
  }
  for (auto& [f, r] : done) {
    // Named by a config read after it: left out all the same.
    if (std::string by = refs.Named(f.path); !by.empty()) {
      index << f.rel << ": left out (named by a *_file key in " << by << ")\n";
      continue;
    }
    index << f.rel << ": " << r.removed << " value(s) removed";
    if (!r.parsed) index << "; does not parse as TOML (" << r.parse_error << "): redacted line by line";
    if (r.reemitted) index << "; re-emitted from the parsed file (comments dropped)";
    index << "\n";
    if (!r.parsed) d.Error("config " + f.rel + ": not valid TOML: " + r.parse_error);
    d.Add("config/" + f.rel, std::move(r.text));
  }
  if (files.empty()) {
    index << "(no *.toml file found)\n";
    d.Error("configs: no *.toml file in " + config_dir);
  }
  d.Add("config/index.txt", index.str());
}

// ---- state directories ----

void CollectState(Diag& d, const std::vector<std::string>& dirs) {
  std::ostringstream out;
  out << "Files of the state directories (outbox, registry, heat map, firmware images): size, last change.\n";
  for (const auto& dir : dirs) {
    out << "\n== " << dir;
    std::error_code ec;
    if (fs::is_symlink(dir, ec)) out << " -> " << fs::read_symlink(dir, ec).string();
    out << "\n";
    fs::recursive_directory_iterator it(dir, fs::directory_options::skip_permission_denied, ec);
    if (ec) {
      out << "cannot read: " << ec.message() << "\n";
      d.Error("state " + dir + ": cannot read: " + ec.message());
      continue;
    }
    Table t{{"SIZE", "BYTES", "MODIFIED", "FILE"}, {}};
    uint64_t total = 0;
    size_t files = 0;
    for (; it != fs::recursive_directory_iterator(); it.increment(ec)) {
      if (ec) {
        d.Error("state " + dir + ": " + ec.message());
        break;
      }
      if (t.rows.size() >= kMaxStateEntries) {
        out << "(more than " << kMaxStateEntries << " entries: the rest is not listed)\n";
        break;
      }
      std::error_code fec;
      struct stat st{};
      if (::lstat(it->path().c_str(), &st) != 0) continue;
      std::string rel = it->path().lexically_relative(dir).string();
      std::string modified = Local(st.st_mtime);
      if (S_ISDIR(st.st_mode)) t.rows.push_back({"-", "-", modified, rel + "/"});
      else if (S_ISLNK(st.st_mode)) t.rows.push_back({"-", "-", modified, rel + " -> " + fs::read_symlink(it->path(), fec).string()});
      else {
        t.rows.push_back({HumanBytes(static_cast<uint64_t>(st.st_size)), std::to_string(st.st_size), modified, rel});
        total += static_cast<uint64_t>(st.st_size);
        ++files;
      }
    }
    std::sort(t.rows.begin(), t.rows.end(), [](const auto& a, const auto& b) { return a[3].text < b[3].text; });
    out << (t.rows.empty() ? "(empty)\n" : RenderTable(t, false));
    out << "total: " << files << " file(s), " << HumanBytes(total) << " (" << total << " bytes)\n";
  }
  d.Add("state.txt", out.str());
}

// ---- broker: retained statuses and sanifleet's answer ----

struct BrokerPart {
  int exit = kExitOk;
  json gateways = json::array();  // [{site, gateway, topic, status}]
  json fleets = json::array();    // [{site, topic, status}]
};

int ExitOf(const Status& st) {
  switch (st.code()) {
    case Code::kFailedPrecondition: return kExitNotAuthorized;
    case Code::kUnavailable:
    case Code::kDeadline: return kExitUnreachable;
    default: return kExitFailed;
  }
}

BrokerPart CollectBroker(Diag& d, const std::optional<Context>& ctx, const std::string& ctx_problem) {
  BrokerPart b;
  std::ostringstream note;
  if (!ctx) {
    note << "The broker was not asked: sanictl's config or flags are invalid:\n" << ctx_problem;
    d.Add("status/broker.txt", note.str());
    b.exit = kExitUsage;
    return b;
  }
  const auto& p = ctx->admin.prefix;
  std::string who = ctx->admin.mqtt.username.empty() ? "anonymously" : "as user " + ctx->admin.mqtt.username;
  auto client = AdminClient::Connect(ctx->admin);
  if (!client.ok()) {
    note << "The broker could not be reached: no gateway or fleet status in this archive.\n"
         << "broker: " << ctx->admin.mqtt.url << " (" << who << ")\n"
         << "reason: " << client.status().message() << "\n";
    d.Add("status/broker.txt", note.str());
    d.Error("broker " + ctx->admin.mqtt.url + ": " + client.status().message());
    b.exit = ExitOf(client.status());
    return b;
  }
  AdminClient& c = *client.value();
  note << "broker: " << ctx->admin.mqtt.url << ", connected " << who << "\n";
  std::string site = ctx->admin.site;
  std::string site_filter = site.empty() ? "+" : site;

  std::string gw_filter = mqtt::topics::GatewayStatus(p, site_filter, "+");
  auto gws = c.CollectRetained(gw_filter, kRetainedQuiet, ctx->timeout);
  if (!gws.ok()) {
    d.Error("gateway statuses (" + gw_filter + "): " + gws.status().message());
    note << "gateway statuses: " << gws.status().message() << "\n";
  } else {
    for (const auto& m : gws.value()) {
      auto t = mqtt::topics::ParseModelTopic(p, m.topic);
      if (!t || t->group != "gateway" || t->leaf != "status") continue;
      json s = json::parse(m.payload, nullptr, false);
      b.gateways.push_back({{"site", t->site}, {"gateway", t->id}, {"topic", m.topic},
                            {"status", s.is_discarded() ? json(m.payload) : s}});
    }
    note << "gateway statuses: " << b.gateways.size() << " retained under " << gw_filter << "\n";
  }

  std::string fleet_filter = mqtt::topics::FleetStatus(p, site_filter);
  auto fleets = c.CollectRetained(fleet_filter, kRetainedQuiet, ctx->timeout);
  std::set<std::string> fleet_sites;
  if (!fleets.ok()) {
    d.Error("fleet status (" + fleet_filter + "): " + fleets.status().message());
    note << "fleet status: " << fleets.status().message() << "\n";
  } else {
    for (const auto& m : fleets.value()) {
      auto t = mqtt::topics::ParseModelTopic(p, m.topic);
      if (!t || t->group != "fleet" || t->leaf != "status") continue;
      json s = json::parse(m.payload, nullptr, false);
      b.fleets.push_back({{"site", t->site}, {"topic", m.topic}, {"status", s.is_discarded() ? json(m.payload) : s}});
      fleet_sites.insert(t->site);
    }
    note << "fleet status: " << b.fleets.size() << " retained under " << fleet_filter << "\n";
  }

  // sanifleet's own answer to `status` (what `sanictl status` shows), when its site is known: the
  // configured one, or the only one with a retained fleet status.
  json admin_status = nullptr;
  std::string admin_error;
  if (site.empty() && fleet_sites.size() == 1) site = *fleet_sites.begin();
  if (site.empty()) {
    admin_error = fleet_sites.empty() ? "not asked: no site configured and no retained fleet status"
                                      : "not asked: no site configured and several sites have a fleet";
  } else {
    auto deadline = std::chrono::steady_clock::now() + ctx->timeout;
    Status st = c.FollowFleetStatus(mqtt::topics::FleetStatus(p, site), deadline);
    if (!st.ok()) admin_error = st.message();
    else if (std::string off = c.FleetOffline(); !off.empty()) admin_error = "not asked: " + off;
    else {
      std::string topic = mqtt::topics::FleetAdmin(p, site, "status");
      auto answer = c.Request(topic, json::object(), ctx->timeout, /*to_fleet=*/true);
      if (!answer.ok())
        admin_error = answer.status().code() == Code::kDeadline
                          ? "sanifleet did not answer on " + topic + " within " + std::to_string(ctx->timeout.count()) + " ms"
                          : answer.status().message();
      else if (!answer.value().value("ok", false))
        admin_error = "sanifleet refused: " + answer.value().dump();
      else
        admin_status = answer.value().contains("result") ? answer.value()["result"] : json(nullptr);
    }
    if (!admin_error.empty()) d.Error("sanifleet status (site " + site + "): " + admin_error);
  }
  note << "sanifleet status: " << (admin_error.empty() ? "answered (site " + site + ")" : admin_error) << "\n";
  c.Close();

  d.Add("status/gateways.json", json{{"topic_filter", gw_filter}, {"gateways", b.gateways}}.dump(2) + "\n");
  json fleet{{"topic_filter", fleet_filter}, {"retained", b.fleets}, {"admin_status", admin_status}};
  if (!admin_error.empty()) fleet["admin_status_error"] = admin_error;
  d.Add("status/fleet.json", fleet.dump(2) + "\n");
  d.Add("status/broker.txt", note.str());
  return b;
}

// ---- versions ----

std::string ProgramVersion(const std::string& name) {
  // The binaries beside this sanictl first (one installation), then PATH.
  std::error_code ec;
  fs::path self = fs::read_symlink("/proc/self/exe", ec);
  std::string program = name;
  if (!ec && fs::exists(self.parent_path() / name, ec)) program = (self.parent_path() / name).string();
  ProgramRun r = RunProgram({program, "--version"}, 5s, 4096);
  if (!r.started) return r.start_error == "not found" ? "not found in PATH" : r.start_error;
  if (r.timed_out) return "no answer to --version within 5 s";
  std::string v = FirstLine(r.out.empty() ? r.err : r.out);
  if (r.exit_code != 0) v += " (exit " + std::to_string(r.exit_code) + ")";
  return v + (program == name ? "" : " [" + program + "]");
}

void CollectVersions(Diag& d, const BrokerPart& b) {
  std::ostringstream out;
  out << "sanictl: " << SANIGATE_VERSION << "\n";
  ProgramRun pkg = RunProgram({"dpkg-query", "-W", "-f", "${Version} ${db:Status-Abbrev}", "sanigate"}, 5s, 4096);
  out << "package sanigate: ";
  if (!pkg.started) out << "dpkg-query " << pkg.start_error << "\n";
  else if (pkg.exit_code == 0) out << Trimmed(pkg.out) << "\n";
  else out << "not installed as a Debian package (" << FirstLine(Trimmed(pkg.err)) << ")\n";
  out << "sanigate --version: " << ProgramVersion("sanigate") << "\n";
  out << "sanifleet --version: " << ProgramVersion("sanifleet") << "\n";
  out << "\ngateways (retained statuses):\n";
  if (b.gateways.empty()) out << "  none\n";
  for (const auto& g : b.gateways) {
    const json& s = g["status"];
    auto field = [&](const char* k) { return s.is_object() && s.contains(k) ? ValueText(s[k]) : std::string("?"); };
    out << "  " << g["site"].get<std::string>() << "/" << g["gateway"].get<std::string>() << ": version " << field("version");
    if (s.is_object() && s.contains("sanigate_version")) out << " (sanigate " << field("sanigate_version") << ")";
    out << ", " << (s.is_object() && s.value("online", false) ? "online" : "offline") << "\n";
  }
  out << "fleet (retained statuses):\n";
  if (b.fleets.empty()) out << "  none\n";
  for (const auto& f : b.fleets) {
    const json& s = f["status"];
    auto field = [&](const char* k) { return s.is_object() && s.contains(k) ? ValueText(s[k]) : std::string("?"); };
    out << "  " << f["site"].get<std::string>() << "/" << field("fleet") << ": version " << field("version") << ", "
        << (s.is_object() && s.value("online", false) ? "online" : "offline") << "\n";
  }
  d.members.insert(d.members.begin(), {"versions.txt", out.str()});  // read first
}

// ---- journal ----

void CollectJournal(Diag& d, int64_t since_s, int64_t now_s) {
  int64_t from = now_s - since_s;
  std::vector<std::string> argv = {"journalctl", "-u", "sanigate", "-u", "sanifleet", "-u", "mosquitto",
                                   "--since", "@" + std::to_string(from), "-o", "short-iso", "--no-pager",
                                   "-n", std::to_string(kMaxJournalLines)};
  ProgramRun r = RunProgram(argv, 30s, kMaxJournalBytes);
  std::string cmd = "journalctl -u sanigate -u sanifleet -u mosquitto --since '" + Utc(from, "%Y-%m-%d %H:%M:%S") +
                    " UTC' -o short-iso";
  if (!r.started) {
    d.Error("journal: journalctl " + r.start_error + ": no journal lines in this archive");
    return;
  }
  if (r.timed_out || r.exit_code != 0) {
    std::string why = r.timed_out ? "did not finish within 30 s" : "exited with " + std::to_string(r.exit_code);
    d.Error("journal: journalctl " + why + (r.err.empty() ? "" : ": " + Trimmed(r.err)));
    if (r.out.empty()) return;
  }
  std::string header = "# " + cmd + " (at most " + std::to_string(kMaxJournalLines) + " lines)\n";
  if (r.truncated) header += "# cut at " + HumanBytes(kMaxJournalBytes) + "\n";
  // journalctl's own remarks (not seeing other users' messages as non-root) explain an empty file.
  if (!r.err.empty() && !r.timed_out && r.exit_code == 0) d.Error("journal: journalctl says: " + Trimmed(r.err));
  d.Add("journal.txt", header + r.out);
}

// ---- the archive ----

std::string Readme(const std::string& host, int64_t now_s, const std::string& since, const Diag& d) {
  std::ostringstream out;
  out << "Sanigate diagnostic archive, made by `sanictl diag` (sanictl " << SANIGATE_VERSION << ")\n"
      << "host: " << host << ", at " << Utc(now_s, "%Y-%m-%dT%H:%M:%SZ") << ", journal lines of the last " << since << "\n\n";
  static const std::map<std::string, std::string> kWhat = {
      {"versions.txt", "sanictl, the package, the daemons' binaries, and the versions in the retained statuses"},
      {"host.txt", "uname, OS, time, uptime, load, memory, free disk space of the state and config directories"},
      {"config/index.txt", "the configs included, and how each was redacted"},
      {"state.txt", "files and sizes of the state directories (outbox, registry, ...)"},
      {"status/broker.txt", "how the broker answered"},
      {"status/gateways.json", "the gateways' retained statuses"},
      {"status/fleet.json", "sanifleet's retained status and its answer to the admin verb status"},
      {"journal.txt", "recent journal lines of sanigate, sanifleet and mosquitto"},
      {"diag-errors.txt", "every step that failed"},
  };
  for (const auto& m : d.members) {
    auto w = kWhat.find(m.name);
    std::string what = w != kWhat.end() ? w->second : m.name.rfind("config/", 0) == 0 ? "a config, secrets removed" : "";
    out << "  " << m.name << (what.empty() ? "" : ": " + what) << "\n";
  }
  out << "  diag-errors.txt: " << kWhat.at("diag-errors.txt") << "\n";
  return out.str();
}

// Where the archive goes: FILE, a directory (the default name inside), or "-" (stdout).
std::string OutputPath(const std::string& output, const std::string& base) {
  if (output.empty()) return base + ".tar.gz";
  std::error_code ec;
  if (output != "-" && fs::is_directory(output, ec)) return (fs::path(output) / (base + ".tar.gz")).string();
  return output;
}

}  // namespace

int RunDiag(const GlobalFlags& flags, const DiagArgs& args) {
  auto since_s = ParseSince(args.since);
  if (!since_s) {
    std::cerr << "sanictl: --since \"" << args.since << "\" is not a duration (30m, 2h, 1d, 1h30m or seconds)\n";
    return kExitUsage;
  }
  if (args.output == "-" && ::isatty(STDOUT_FILENO) == 1) {
    std::cerr << "sanictl: --output - writes a gzip archive: redirect stdout to a file or a pipe\n";
    return kExitUsage;
  }
  int64_t now_s = NowMs() / 1000;
  struct utsname u{};
  std::string host = ::uname(&u) == 0 ? u.nodename : "host";
  std::string base = "sanigate-diag-" + FileSafe(host) + "-" + Utc(now_s, "%Y%m%dT%H%M%SZ");
  std::string path = OutputPath(args.output, base);

  // The output first: nothing is gathered for an archive that cannot be written.
  int fd = STDOUT_FILENO;
  std::string tmp;
  if (path != "-") {
    tmp = path + ".part-" + std::to_string(::getpid());
    fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
      std::cerr << "sanictl: cannot write " << path << ": " << std::strerror(errno) << "\n";
      return kExitFailed;
    }
    ::fchmod(fd, 0600);  // whatever the umask
  }

  Diag d;
  // sanictl's config and flags: a bad one costs the broker part only.
  std::ostringstream ctx_errors;
  std::streambuf* old = std::cerr.rdbuf(ctx_errors.rdbuf());
  std::optional<Context> ctx = ResolveContext(flags);
  std::cerr.rdbuf(old);
  if (!ctx) d.Error("sanictl config or flags: " + Trimmed(ctx_errors.str()));  // on stderr at the end

  CollectHost(d, args.config_dir, args.state_dirs, now_s);
  CollectConfigs(d, args.config_dir);
  CollectState(d, args.state_dirs);
  BrokerPart broker = CollectBroker(d, ctx, Trimmed(ctx_errors.str()));
  CollectVersions(d, broker);
  CollectJournal(d, *since_s, now_s);

  // A secret of one config may show up anywhere else: another config, a journal line, a status.
  for (auto& m : d.members) m.data = ScrubSecrets(std::move(m.data), d.secrets);
  for (auto& e : d.errors) e = ScrubSecrets(std::move(e), d.secrets);

  std::string errors;
  for (const auto& e : d.errors) errors += e + "\n";
  if (errors.empty()) errors = "no step failed\n";
  std::string readme = Readme(host, now_s, args.since, d);

  TarGzWriter tar(fd);
  Status st = tar.AddDirectory(base, 0700, now_s);
  if (st.ok()) st = tar.AddFile(base + "/README.txt", readme, 0600, now_s);
  for (const auto& m : d.members) {
    if (!st.ok()) break;
    st = tar.AddFile(base + "/" + m.name, m.data, 0600, now_s);
    if (st.code() == Code::kInvalid) {  // a name tar cannot hold: say so, keep going
      errors += "archive: " + st.message() + "\n";
      st = Status::Ok();
    }
  }
  if (st.ok()) st = tar.AddFile(base + "/diag-errors.txt", errors, 0600, now_s);
  if (st.ok()) st = tar.Finish();
  if (st.ok() && fd != STDOUT_FILENO && ::fsync(fd) != 0) st = Unavailable(std::string("fsync: ") + std::strerror(errno));
  if (fd != STDOUT_FILENO && ::close(fd) != 0 && st.ok()) st = Unavailable(std::string("close: ") + std::strerror(errno));
  if (st.ok() && !tmp.empty() && ::rename(tmp.c_str(), path.c_str()) != 0)
    st = Unavailable("rename to " + path + ": " + std::strerror(errno));
  if (!st.ok()) {
    if (!tmp.empty()) ::unlink(tmp.c_str());
    std::cerr << "sanictl: cannot write " << path << ": " << st.message() << "\n";
    return kExitFailed;
  }

  std::string shown = "stdout";
  std::error_code ec;
  if (path != "-") shown = fs::absolute(path, ec).string();
  uint64_t bytes = tar.bytes_written();
  if (flags.json) {
    json names = json::array({"README.txt"});
    for (const auto& m : d.members) names.push_back(m.name);
    names.push_back("diag-errors.txt");
    std::ostream& out = path == "-" ? std::cerr : std::cout;
    out << json{{"archive", shown}, {"bytes", bytes}, {"members", names}, {"errors", d.errors}}.dump() << "\n";
  } else {
    std::ostream& out = path == "-" ? std::cerr : std::cout;
    out << shown << " (" << HumanBytes(bytes) << ")\n";
  }
  if (!d.errors.empty())
    std::cerr << "sanictl: " << d.errors.size() << " step(s) failed, noted in diag-errors.txt in the archive:\n"
              << errors;
  return broker.exit;
}

}  // namespace sanigate::ctl
