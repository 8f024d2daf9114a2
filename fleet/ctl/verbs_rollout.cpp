// rollout create | start | pause | resume | abort | status | list (issue 7): sanifleet's campaign
// admin verbs (fleet/README.md, "Firmware rollouts"; the spec is fleet/rollout/campaign.h).
// `status --watch` polls rollout_status every interval: on a terminal it redraws the view in
// place, otherwise it prints one line (or one JSON document) per change; it ends when the
// campaign is completed (exit 0) or aborted (exit 1), or on Ctrl-C (exit 0). A sanifleet that
// stops answering mid-watch (a restart) is waited for, not an error.
#include <signal.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <iostream>
#include <thread>

#include "ctl/format.h"
#include "ctl/rollout_format.h"
#include "ctl/verbs.h"
#include "mqtt/topics.h"

namespace sanigate::ctl {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

volatile sig_atomic_t g_stop = 0;

void OnStop(int) { g_stop = 1; }

void CatchStopSignals() {
  struct sigaction sa {};
  sa.sa_handler = OnStop;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}

void PrintJson(const json& doc) { std::cout << doc.dump() << "\n"; }

bool StdoutIsTerminal() { return ::isatty(STDOUT_FILENO) == 1; }


// Columns and rows of the terminal on stdout (80 x 24 when unknown).
std::pair<int, int> TerminalSize() {
  struct winsize ws {};
  if (::ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0 && ws.ws_row > 0) return {ws.ws_col, ws.ws_row};
  return {80, 24};
}

bool IsFullSha(const std::string& s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

StatusViewOptions ViewOptions(const Context& ctx) {
  StatusViewOptions o;
  o.color = ctx.color;
  o.utf8 = Utf8Terminal();
  o.width = StdoutIsTerminal() ? TerminalSize().first : 80;
  o.now_ms = NowMs();
  o.site = ctx.admin.site;
  return o;
}

std::string StateText(const json& st, bool color) {
  std::string state = st.value("state", "?");
  std::string out = Paint(state, CampaignStateColor(state), color);
  if (std::string reason = st.value("reason", ""); !reason.empty()) out += " (" + reason + ")";
  return out;
}

size_t Lines(const std::string& text) { return static_cast<size_t>(std::count(text.begin(), text.end(), '\n')); }

// A campaign id is [a-z0-9._-]{1,64} (fleet/rollout/campaign.h): anything else is bad usage,
// said before anything is sent, as every verb's bad value.
bool ValidCampaignId(const std::string& id) {
  bool ok = !id.empty() && id.size() <= 64 && std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
  });
  if (!ok) std::cerr << "sanictl: \"" << id << "\" is not a campaign id ([a-z0-9._-]{1,64})\n";
  return ok;
}

}  // namespace

int RunRolloutCreate(const Context& ctx, const RolloutSpecArgs& a) {
  if (!RequireSite(ctx)) return kExitUsage;
  json base = json::object();
  if (!a.spec_file.empty()) {
    std::ifstream in(a.spec_file, std::ios::binary);
    if (!in) {
      std::cerr << "sanictl: cannot read the spec " << a.spec_file << "\n";
      return kExitUsage;
    }
    std::string text(std::istreambuf_iterator<char>(in), {});
    try {
      base = json::parse(text);
    } catch (const json::exception& e) {
      std::cerr << "sanictl: " << a.spec_file << " is not JSON: " << e.what() << "\n";
      return kExitUsage;
    }
  }
  auto spec = BuildSpec(base, a);
  if (!spec.ok()) {
    std::cerr << "sanictl: " << spec.status().message() << "\n";
    return kExitUsage;
  }
  int connect_exit = kExitOk;
  auto client = ConnectOrExplain(ctx, connect_exit);
  if (!client) return connect_exit;

  // A prefix from `firmware list` is resolved against sanifleet's store.
  std::string artifact = (*spec)["artifact_sha256"].get<std::string>();
  for (char& c : artifact) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (!IsFullSha(artifact)) {
    json list;
    if (int rc = FleetCall(ctx, *client, "firmware_list", json::object(), list); rc != kExitOk) return rc;
    auto sha = ResolveArtifact(artifact, list);
    if (!sha.ok()) {
      std::cerr << "sanictl: " << sha.status().message() << "\n";
      return sha.status().code() == Code::kNotFound ? kExitNotFound : kExitUsage;
    }
    artifact = *sha;
  }
  (*spec)["artifact_sha256"] = artifact;

  json plan;
  if (int rc = FleetCall(ctx, *client, "rollout_create", *spec, plan); rc != kExitOk) return rc;
  std::string id = (*spec)["id"].get<std::string>();
  bool has_canary = !(*spec).contains("canary_count") || !(*spec)["canary_count"].is_number() ||
                    (*spec)["canary_count"].get<double>() > 0;
  if (!ctx.json) std::cout << "rollout " << id << " created (draft): " << PlanSummary(plan, has_canary) << "\n";
  if (!a.start) {
    if (ctx.json) PrintJson(plan);
    else std::cout << "start it with: sanictl rollout start " << id << "\n";
    return kExitOk;
  }
  json status;
  int rc = FleetCall(ctx, *client, "rollout_start", {{"id", id}}, status, kExitFailed);
  if (ctx.json) PrintJson({{"plan", plan}, {"status", rc == kExitOk ? status : json(nullptr)}});
  else if (rc == kExitOk) std::cout << "rollout " << id << " started: " << StateText(status, ctx.color) << "\n";
  return rc;
}

int RunRolloutAction(const Context& ctx, const std::string& action, const std::string& id, const std::string& reason) {
  if (!RequireSite(ctx) || !ValidCampaignId(id)) return kExitUsage;
  json args = {{"id", id}};
  if (!reason.empty()) args["reason"] = reason;
  int connect_exit = kExitOk;
  auto client = ConnectOrExplain(ctx, connect_exit);
  if (!client) return connect_exit;
  json status;
  // "invalid" here is a refusal of the campaign's state machine (resume a running campaign…).
  if (int rc = FleetCall(ctx, *client, "rollout_" + action, args, status, kExitFailed); rc != kExitOk) return rc;
  if (ctx.json) PrintJson(status);
  else std::cout << "rollout " << id << ": " << StateText(status, ctx.color) << "\n";
  return kExitOk;
}

int RunRolloutStatus(const Context& ctx, const RolloutStatusArgs& a) {
  if (!RequireSite(ctx) || !ValidCampaignId(a.id)) return kExitUsage;
  if (a.watch && !(a.interval_s > 0 && std::isfinite(a.interval_s))) {
    std::cerr << "sanictl: --interval must be a positive number of seconds\n";
    return kExitUsage;
  }
  json args = {{"id", a.id}};
  if (a.devices) args["devices"] = true;
  int connect_exit = kExitOk;
  auto client = ConnectOrExplain(ctx, connect_exit);
  if (!client) return connect_exit;

  if (!a.watch) {
    json status;
    if (int rc = FleetCall(ctx, *client, "rollout_status", args, status); rc != kExitOk) return rc;
    if (ctx.json) PrintJson(status);
    else std::cout << RenderRolloutStatus(status, ViewOptions(ctx));
    return kExitOk;
  }

  if (int rc = FleetReady(ctx, *client); rc != kExitOk) return rc;  // the first look fails as usual
  CatchStopSignals();
  std::string topic = mqtt::topics::FleetAdmin(ctx.admin.prefix, ctx.admin.site, "rollout_status");
  bool redraw = StdoutIsTerminal() && !ctx.json;
  auto interval = std::chrono::milliseconds(static_cast<int64_t>(std::llround(a.interval_s * 1000)));
  json status;
  size_t drawn = 0;             // lines of the last redraw
  std::string last_key;         // of the last printed line (no terminal)
  int64_t silent_since = 0;     // sanifleet stopped answering at (epoch ms), 0 = it answers
  while (!g_stop) {
    // While sanifleet's status says it is offline nothing is sent; the answer says so at once.
    auto answer = client->Request(topic, args, ctx.timeout, /*to_fleet=*/true);
    bool no_answer = !answer.ok() && (answer.status().code() == Code::kDeadline || answer.status().code() == Code::kUnavailable);
    if (no_answer && !status.is_null()) {
      if (silent_since == 0) {
        silent_since = NowMs();
        if (!redraw) std::cerr << "sanictl: sanifleet does not answer (" << answer.status().message() << "); still watching\n";
      }
    } else {
      json fresh;
      if (int rc = FleetAnswer(ctx, topic, answer, fresh); rc != kExitOk) return rc;  // first call, or not found any more
      if (silent_since != 0 && !redraw) std::cerr << "sanictl: sanifleet answers again\n";
      silent_since = 0;
      status = std::move(fresh);
    }

    if (redraw) {
      StatusViewOptions o = ViewOptions(ctx);
      auto [cols, rows] = TerminalSize();
      size_t groups = status.contains("groups") && status["groups"].is_array() ? status["groups"].size() : 0;
      o.max_devices = static_cast<size_t>(std::max<int64_t>(3, rows - 17 - static_cast<int64_t>(groups)));
      std::string view = RenderRolloutStatus(status, o);
      std::string footer = "\nevery " + Duration(interval.count()) + ", Ctrl-C stops";
      if (silent_since != 0)
        footer += "  " + Paint("sanifleet has not answered for " + Duration(NowMs() - silent_since), Color::kYellow, ctx.color);
      view += footer + "\n";
      std::string out;
      if (drawn > 0) out += "\x1b[" + std::to_string(drawn) + "F";  // back to the top of the last view
      out += "\x1b[J" + view;
      std::cout << out << std::flush;
      drawn = Lines(view);
    } else if (std::string key = StatusChangeKey(status); key != last_key) {
      last_key = key;
      if (ctx.json) PrintJson(status);
      else std::cout << RolloutStatusLine(status) << "\n";
      std::cout.flush();
    }

    std::string state = status.value("state", "");
    if (state == "completed") return kExitOk;
    if (state == "aborted") return kExitFailed;
    for (auto until = Clock::now() + interval; !g_stop && Clock::now() < until;) std::this_thread::sleep_for(50ms);
  }
  return kExitOk;
}

int RunRolloutList(const Context& ctx) {
  if (!RequireSite(ctx)) return kExitUsage;
  int connect_exit = kExitOk;
  auto client = ConnectOrExplain(ctx, connect_exit);
  if (!client) return connect_exit;
  json result;
  if (int rc = FleetCall(ctx, *client, "rollout_list", json::object(), result); rc != kExitOk) return rc;
  if (ctx.json) {
    PrintJson(result);
    return kExitOk;
  }
  Table t = RolloutTable(result, NowMs());
  if (t.rows.empty()) {
    std::cout << "no rollouts (sanictl rollout create --id ID --artifact SHA256 …)\n";
    return kExitOk;
  }
  std::cout << RenderTable(t, ctx.color);
  return kExitOk;
}

}  // namespace sanigate::ctl
