// Firmware transfer benchmark (issue 7); prints figures, asserts nothing.
// One real Mosquitto on a free loopback port, the real sanifleet holding a signed image (uploaded
// with firmware_put in 192 KiB chunks) and GATEWAYS real sanigate processes (gw-01.., site
// "bench"), each with a [jt808] listener and one configured terminal (truck-NN) that never
// connects: the gateway pulls the image, verifies it and then fails the install at once with
// "terminal ... is not connected", which is all a transfer benchmark needs. The terminals never
// talk, so the bench tells sanifleet's registry about them with one telemetry message each, as
// their gateway would (protocol jt808, gateway gw-NN).
// One campaign over all of them (canary 0, one wave of 100 %, one device per gateway, no
// retries); from the gateways' retained job reports ({prefix}/bench/gateway/+/firmware/+) the
// time from "downloading" to "verifying" per gateway, and the whole transfer (first
// "downloading" to last "verifying"): MiB/s per gateway and aggregate. Meanwhile a telemetry
// probe: a Paho client publishes QoS 1 at 200/s on sanigate/v1/bench/devices/probe/telemetry and
// another one subscribed (QoS 1) measures publish -> receive latency, during the transfer versus
// 5 s before the campaign. Also the CPU seconds (utime + stime, /proc/PID/stat) used by
// sanifleet, the gateways and mosquitto over the campaign, and their RSS afterwards.
// Run twice from scratch: the default [firmware] settings (chunk_kib 64, window 4, max_kib_s 512)
// and max_kib_s 8192, to show the cap.
// Usage: rollout_transfer_bench SANIGATE_BIN SANIFLEET_BIN [GATEWAYS=20] [IMAGE_KIB=1024]
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cctype>
#include <cstdio>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <mqtt/async_client.h>

#include "firmware/artifact.h"
#include "firmware/base64.h"
#include "firmware/keys.h"
#include "harness/broker.h"
#include "harness/ports.h"
#include "harness/process.h"
#include "harness/temp_dir.h"

using namespace sanigate;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;
using json = nlohmann::json;

namespace {

constexpr const char* kPrefix = "sanigate/v1/bench";
constexpr int kProbeRate = 200;                // probe messages per second
constexpr auto kBaseline = 5s;                 // probe before the campaign
constexpr auto kCampaignTimeout = 120s;        // every job must have ended by then
constexpr size_t kUploadChunk = 192 * 1024;    // firmware_put chunk (sanifleet accepts 256 KiB)
constexpr size_t kProbeMax = kProbeRate * 200; // bound on probe messages per run

int64_t WallMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}
double Sec(Clock::duration d) { return std::chrono::duration<double>(d).count(); }
int64_t Ns(Clock::time_point t) { return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count(); }

struct ProcStats {
  double cpu_s = 0;
  long rss_kib = 0;
};
ProcStats Stats(pid_t pid) {
  ProcStats s;
  if (pid <= 0) return s;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string all((std::istreambuf_iterator<char>(stat)), {});
  auto close = all.rfind(')');  // the command name may hold spaces
  if (close != std::string::npos) {
    std::istringstream rest(all.substr(close + 2));
    std::string tok;
    for (int field = 3; field <= 15 && rest >> tok; ++field)
      if (field == 14 || field == 15) s.cpu_s += std::stod(tok) / static_cast<double>(sysconf(_SC_CLK_TCK));
  }
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line))
    if (line.rfind("VmRSS:", 0) == 0) s.rss_kib = std::stol(line.substr(6));
  return s;
}

// The harness does not expose the broker's PID: the mosquitto whose command line names the
// broker's own config directory (read-only, for /proc/PID/stat).
pid_t BrokerPid(const test::MosquittoBroker& broker) {
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/proc", ec)) {
    std::string name = e.path().filename().string();
    if (name.empty() || !std::all_of(name.begin(), name.end(), ::isdigit)) continue;
    std::ifstream in(e.path() / "cmdline");
    std::string cmd((std::istreambuf_iterator<char>(in)), {});
    std::replace(cmd.begin(), cmd.end(), '\0', ' ');
    if (cmd.find("mosquitto") != std::string::npos && cmd.find(broker.dir()) != std::string::npos) return std::stoi(name);
  }
  return -1;
}

struct Percentiles {
  size_t n = 0, lost = 0;
  double p50 = 0, p99 = 0, max = 0;
};
Percentiles Summarize(std::vector<double> v, size_t lost) {
  Percentiles p;
  p.n = v.size();
  p.lost = lost;
  if (v.empty()) return p;
  std::sort(v.begin(), v.end());
  auto at = [&](double q) { return v[std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size())))]; };
  p.p50 = at(0.50);
  p.p99 = at(0.99);
  p.max = v.back();
  return p;
}

std::unique_ptr<mqtt::async_client> Connect(const test::MosquittoBroker& broker, const std::string& id) {
  auto c = std::make_unique<mqtt::async_client>(broker.url(), id, mqtt::create_options(MQTTVERSION_5), nullptr);
  return c;
}
void ConnectNow(mqtt::async_client& c) {
  auto opts = mqtt::connect_options_builder().mqtt_version(MQTTVERSION_5).clean_start(true).max_inflight(20).finalize();
  if (!c.connect(opts)->wait_for(10s)) throw std::runtime_error("cannot connect " + c.get_client_id());
}

// ---- the operator's client: admin requests (MQTT 5 request/response) and what it watches ----

struct Job {
  std::optional<Clock::time_point> downloading, verifying, ended;
  std::string state, error;
  uint64_t bytes = 0, total = 0;
};

class Operator {
 public:
  explicit Operator(const test::MosquittoBroker& broker) : c_(Connect(broker, "bench-operator")) {
    c_->set_message_callback([this](mqtt::const_message_ptr m) { OnMessage(m); });
    ConnectNow(*c_);
    for (std::string f : {reply_, std::string(kPrefix) + "/gateway/+/firmware/+", std::string(kPrefix) + "/gateway/+/status",
                          std::string(kPrefix) + "/fleet/status"})
      c_->subscribe(f, 1)->wait_for(10s);
  }
  ~Operator() {
    try {
      c_->disconnect()->wait_for(5s);
    } catch (...) {
    }
  }

  json Admin(const std::string& verb, const json& args = json::object(), std::chrono::milliseconds timeout = 15s) {
    std::string corr = "c" + std::to_string(++seq_);
    {
      std::lock_guard lk(mu_);
      want_ = corr;
      answer_.reset();
    }
    auto msg = mqtt::make_message(std::string(kPrefix) + "/fleet/admin/" + verb, args.dump(), 1, false);
    mqtt::properties props;
    props.add(mqtt::property(mqtt::property::RESPONSE_TOPIC, reply_));
    props.add(mqtt::property(mqtt::property::CORRELATION_DATA, corr));
    msg->set_properties(props);
    c_->publish(msg)->wait_for(10s);
    std::unique_lock lk(mu_);
    cv_.wait_for(lk, timeout, [&] { return answer_.has_value(); });
    return answer_ ? *answer_ : json{{"ok", false}, {"error", "no answer to " + verb + " within the timeout"}};
  }

  void Publish(const std::string& topic, const std::string& payload) { c_->publish(topic, payload.data(), payload.size(), 1, false)->wait_for(10s); }

  void WatchCampaign(const std::string& id) {
    std::lock_guard lk(mu_);
    campaign_ = id;
    jobs_.clear();
  }
  std::map<std::string, Job> Jobs() {
    std::lock_guard lk(mu_);
    return jobs_;
  }
  size_t GatewaysOnline() {
    std::lock_guard lk(mu_);
    return online_.size();
  }
  bool GatewayOnline(const std::string& gw) {
    std::lock_guard lk(mu_);
    return online_.count(gw) > 0;
  }
  bool FleetOnline() {
    std::lock_guard lk(mu_);
    return fleet_online_;
  }

 private:
  void OnMessage(const mqtt::const_message_ptr& m) {
    auto now = Clock::now();
    const std::string& topic = m->get_topic();
    std::lock_guard lk(mu_);
    if (topic == reply_) {
      const auto& props = m->get_properties();
      std::string corr = props.contains(mqtt::property::CORRELATION_DATA) ? mqtt::get<std::string>(props, mqtt::property::CORRELATION_DATA) : "";
      if (corr == want_) {
        answer_ = json::parse(m->to_string(), nullptr, false);
        cv_.notify_all();
      }
      return;
    }
    json j = json::parse(m->to_string(), nullptr, false);
    if (!j.is_object()) return;
    std::string rest = topic.substr(std::string(kPrefix).size());  // /gateway/gw-01/firmware/truck-01
    if (rest == "/fleet/status") {
      fleet_online_ = j.value("online", false);
      return;
    }
    auto gw_end = rest.find('/', 9);
    if (rest.rfind("/gateway/", 0) != 0 || gw_end == std::string::npos) return;
    std::string gw = rest.substr(9, gw_end - 9), leaf = rest.substr(gw_end + 1);
    if (leaf == "status") {
      if (j.value("online", false)) online_.insert({gw, true});
      else online_.erase(gw);
      return;
    }
    if (leaf.rfind("firmware/", 0) != 0 || campaign_.empty() || j.value("campaign", "") != campaign_) return;
    Job& job = jobs_[gw];
    std::string state = j.value("state", "");
    if (state == "downloading" && !job.downloading) job.downloading = now;
    if ((state == "verifying" || state == "installing") && !job.verifying) job.verifying = now;
    if ((state == "failed" || state == "succeeded") && !job.ended) job.ended = now;
    job.state = state;
    job.error = j.value("error", "");
    job.bytes = std::max(job.bytes, j.value("bytes", uint64_t{0}));
    job.total = j.value("total", uint64_t{0});
  }

  std::unique_ptr<mqtt::async_client> c_;
  const std::string reply_ = std::string(kPrefix) + "/admin/reply/bench-operator";
  std::mutex mu_;
  std::condition_variable cv_;
  std::string want_, campaign_;
  std::optional<json> answer_;
  int seq_ = 0;
  std::map<std::string, Job> jobs_;
  std::map<std::string, bool> online_;
  bool fleet_online_ = false;
};

// ---- the telemetry probe ----

class Probe {
 public:
  explicit Probe(const test::MosquittoBroker& broker)
      : pub_(Connect(broker, "bench-probe-pub")), sub_(Connect(broker, "bench-probe-sub")), sent_(kProbeMax), got_(kProbeMax) {
    sub_->set_message_callback([this](mqtt::const_message_ptr m) {
      int64_t now = Ns(Clock::now());
      const std::string& p = m->get_payload_ref().to_string();
      auto at = p.find("\"seq\":");
      if (at == std::string::npos) return;
      size_t seq = std::strtoul(p.c_str() + at + 6, nullptr, 10);
      if (seq < got_.size()) got_[seq].store(now);
    });
    ConnectNow(*sub_);
    sub_->subscribe(std::string(kPrefix) + "/devices/probe/telemetry", 1)->wait_for(10s);
    ConnectNow(*pub_);
  }
  ~Probe() {
    Stop();
    for (auto* c : {pub_.get(), sub_.get()}) try {
        c->disconnect()->wait_for(5s);
      } catch (...) {
      }
  }

  void Start() {
    thread_ = std::thread([this] { Run(); });
  }
  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }

  // Latency (ms) of the messages sent in [from, to]; those not received count as lost.
  Percentiles Window(Clock::time_point from, Clock::time_point to) const {
    std::vector<double> ms;
    size_t lost = 0;
    for (size_t i = 0; i < count_; ++i) {
      int64_t s = sent_[i].load(), r = got_[i].load();
      if (s < Ns(from) || s > Ns(to)) continue;
      if (r == 0) ++lost;
      else ms.push_back(static_cast<double>(r - s) / 1e6);
    }
    return Summarize(std::move(ms), lost);
  }

 private:
  void Run() {
    auto next = Clock::now();
    std::deque<mqtt::delivery_token_ptr> inflight;
    for (size_t i = 0; i < sent_.size() && !stop_; ++i) {
      std::this_thread::sleep_until(next);
      next += std::chrono::microseconds(1'000'000 / kProbeRate);
      char buf[360];
      std::snprintf(buf, sizeof buf,
                    R"({"id":"gw-probe:%zu","seq":%zu,"ts":%lld,"device":"probe","kind":"bench-probe","source":{"protocol":"modbus","gateway":"gw-probe"},"metrics":{"fill_level_pct":%zu,"temperature_c":26.1,"nh3_ppm":1.25}})",
                    i, i, static_cast<long long>(WallMs()), i % 100);
      sent_[i].store(Ns(Clock::now()));
      inflight.push_back(pub_->publish(std::string(kPrefix) + "/devices/probe/telemetry", buf, std::strlen(buf), 1, false));
      count_ = i + 1;
      while (inflight.size() > 50) {  // Paho buffers at most 100 commands by default
        inflight.front()->wait_for(5s);
        inflight.pop_front();
      }
    }
    for (auto& t : inflight) t->wait_for(5s);
  }

  std::unique_ptr<mqtt::async_client> pub_, sub_;
  std::vector<std::atomic<int64_t>> sent_, got_;
  std::atomic<size_t> count_{0};
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// ---- one run ----

struct Options {
  std::string sanigate, sanifleet;
  int gateways = 20;
  size_t image_kib = 1024;
  int max_kib_s = 512;
};

std::string Image(size_t bytes) {
  std::string img = "SGFW1.3.0";
  img.push_back('\0');
  uint32_t x = 4242;
  while (img.size() < bytes) img.push_back(static_cast<char>((x = x * 1103515245u + 12345u) >> 24));
  return img;
}

std::string Gw(int i) {
  char b[16];
  std::snprintf(b, sizeof b, "%02d", i);
  return b;
}

void Run(const Options& o) {
  std::printf("\n== %d gateways, %zu KiB image, [firmware] chunk_kib 64, window 4, max_kib_s %d ==\n", o.gateways, o.image_kib, o.max_kib_s);
  test::TempDir dir;
  auto path = [&](const std::string& n) { return dir.File(n); };
  test::MosquittoBroker broker;
  broker.Start();

  auto key = firmware::PrivateKey::Generate();
  if (!key.ok()) throw std::runtime_error("key: " + key.status().message());
  if (auto st = firmware::WritePublicKey(key->public_key(), path("operator.pub")); !st.ok()) throw std::runtime_error(st.message());
  std::string img = Image(o.image_kib * 1024);
  firmware::ArtifactInfo info;
  info.model = "SIM-808";
  info.version = "1.3.0";
  info.target = firmware::Target::kJt808;
  info.created_ms = WallMs();
  auto manifest = firmware::SignImage({reinterpret_cast<const uint8_t*>(img.data()), img.size()}, info, *key);
  if (!manifest.ok()) throw std::runtime_error("sign: " + manifest.status().message());
  json mf = json::parse(*manifest);
  std::string sha = mf["sha256"];

  Operator op(broker);
  std::ofstream(path("sanifleet.toml")) << "[fleet]\nid = \"fleet-bench\"\nsite = \"bench\"\nsites = [\"bench\"]\ndata_dir = \"" << path("fleet")
                                        << "\"\nlog_level = \"warn\"\nshutdown_drain_ms = 500\n[mqtt]\nurl = \"" << broker.url()
                                        << "\"\n[firmware]\ntrusted_keys = [\"" << path("operator.pub") << "\"]\n";
  auto fleet = test::Process::Start({o.sanifleet, "--config", path("sanifleet.toml")}, {.stderr_path = path("fleet.log")});
  for (int i = 0; i < 150 && !op.FleetOnline(); ++i) std::this_thread::sleep_for(100ms);
  if (!op.FleetOnline()) throw std::runtime_error("sanifleet did not come up:\n" + test::ReadFile(path("fleet.log")));

  // A gateway whose jt808 port was taken in the meantime (FreeTcpPort races) exits: it is
  // started again on another port, at most twice.
  std::vector<test::Process> gws(static_cast<size_t>(o.gateways));
  auto start_gateway = [&](int i) {
    std::string g = Gw(i), cfg = path("gw-" + g + ".toml");
    uint16_t port = test::FreeTcpPort();
    std::ofstream(cfg) << "[gateway]\nid = \"gw-" << g << "\"\nsite = \"bench\"\ndata_dir = \"" << path("gw-" + g)
                       << "\"\nlog_level = \"warn\"\nshutdown_drain_ms = 500\n\n[mqtt]\nurl = \"" << broker.url()
                       << "\"\n\n[firmware]\ntrusted_keys = [\"" << path("operator.pub") << "\"]\nmax_kib_s = " << o.max_kib_s
                       << "\n\n[jt808]\nlisten = \"127.0.0.1:" << port << "\"\n\n[[jt808.terminals]]\nphone = \"139000000" << g
                       << "\"\ndevice = \"truck-" << g << "\"\n";
    gws[static_cast<size_t>(i - 1)] = test::Process::Start({o.sanigate, "--config", cfg}, {.stderr_path = path("gw-" + g + ".log")});
  };
  for (int i = 1; i <= o.gateways; ++i) start_gateway(i);
  auto t_up = Clock::now();
  int restarts = 0;
  while (op.GatewaysOnline() < static_cast<size_t>(o.gateways) && Clock::now() - t_up < 30s) {
    std::this_thread::sleep_for(100ms);
    for (int i = 1; i <= o.gateways; ++i)
      if (!gws[static_cast<size_t>(i - 1)].Running() && !op.GatewayOnline("gw-" + Gw(i)) && restarts < 2) {
        std::fprintf(stderr, "gw-%s exited (%s), started again:\n%s\n", Gw(i).c_str(),
                     test::DescribeWaitStatus(gws[static_cast<size_t>(i - 1)].status().value_or(0)).c_str(),
                     test::ReadFile(path("gw-" + Gw(i) + ".log")).c_str());
        ++restarts;
        start_gateway(i);
      }
  }
  std::printf("set-up: %zu of %d gateways online after %.1f s\n", op.GatewaysOnline(), o.gateways, Sec(Clock::now() - t_up));
  if (op.GatewaysOnline() < static_cast<size_t>(o.gateways)) {
    std::string why;
    for (int i = 1; i <= o.gateways; ++i)
      if (!op.GatewayOnline("gw-" + Gw(i)))
        why += "gw-" + Gw(i) + (gws[static_cast<size_t>(i - 1)].Running() ? " (running)" : " (exited)") + ":\n" +
               test::ReadFile(path("gw-" + Gw(i) + ".log")) + "\n";
    throw std::runtime_error("gateways did not come up: " + why);
  }

  // What each truck's gateway would publish once it talked: its registry entry in sanifleet.
  for (int i = 1; i <= o.gateways; ++i) {
    std::string g = Gw(i);
    json t = {{"id", "gw-" + g + ":seed"}, {"ts", WallMs()}, {"device", "truck-" + g}, {"kind", "vehicle"},
              {"source", {{"protocol", "jt808"}, {"gateway", "gw-" + g}, {"model", "SIM-808"}, {"firmware", "1.2.0"}}},
              {"metrics", {{"speed_kmh", 0}}}};
    op.Publish(std::string(kPrefix) + "/devices/truck-" + g + "/telemetry", t.dump());
  }
  json devices;
  for (int i = 0; i < 100; ++i) {
    devices = op.Admin("devices", {{"kind", "vehicle"}});
    if (devices["ok"] == true && devices["result"]["total"] == o.gateways) break;
    std::this_thread::sleep_for(100ms);
  }
  if (devices["ok"] != true || devices["result"]["total"] != o.gateways) throw std::runtime_error("registry: " + devices.dump());

  auto t_upload = Clock::now();
  for (size_t off = 0; off < img.size(); off += kUploadChunk) {
    size_t len = std::min(kUploadChunk, img.size() - off);
    json args = {{"sha256", sha}, {"offset", off}, {"data", firmware::Base64Encode(std::string_view(img).substr(off, len))},
                 {"last", off + len == img.size()}};
    if (off == 0) args["manifest"] = mf;
    json r = op.Admin("firmware_put", args);
    if (r["ok"] != true) throw std::runtime_error("firmware_put at " + std::to_string(off) + ": " + r.dump());
  }
  std::printf("upload: %zu KiB in %zu KiB firmware_put chunks, %.2f s\n", o.image_kib, kUploadChunk / 1024, Sec(Clock::now() - t_upload));

  Probe probe(broker);
  probe.Start();
  auto t_base = Clock::now();
  std::this_thread::sleep_for(kBaseline);

  std::string id = "bench-" + std::to_string(o.max_kib_s);
  op.WatchCampaign(id);
  json created = op.Admin("rollout_create", {{"id", id}, {"artifact_sha256", sha}, {"target_type", "jt808"}, {"canary_count", 0},
                                             {"waves_pct", {100}}, {"max_parallel_per_gateway", 1}, {"retries", 0},
                                             {"failure_limit_count", 0}, {"failure_limit_pct", 0}, {"health_gate_s", 0},
                                             {"device_timeout_s", 120}, {"blackout", json::array()}});
  if (created["ok"] != true || created["result"]["total"] != o.gateways) throw std::runtime_error("rollout_create: " + created.dump());
  pid_t broker_pid = BrokerPid(broker);
  auto before_fleet = Stats(fleet.pid()), before_broker = Stats(broker_pid);
  std::vector<ProcStats> before_gw;
  for (auto& p : gws) before_gw.push_back(Stats(p.pid()));
  auto t_start = Clock::now();
  json started = op.Admin("rollout_start", {{"id", id}});
  if (started["ok"] != true) throw std::runtime_error("rollout_start: " + started.dump());

  // Until every job ended (the install fails at once: the terminal is not connected).
  std::map<std::string, Job> jobs;
  while (Clock::now() - t_start < kCampaignTimeout) {
    jobs = op.Jobs();
    size_t ended = 0;
    for (const auto& [gw, j] : jobs) ended += j.ended.has_value();
    if (ended == static_cast<size_t>(o.gateways)) break;
    std::this_thread::sleep_for(20ms);
  }
  auto t_done = Clock::now();
  auto after_fleet = Stats(fleet.pid()), after_broker = Stats(broker_pid);
  std::vector<ProcStats> after_gw;
  for (auto& p : gws) after_gw.push_back(Stats(p.pid()));
  std::this_thread::sleep_for(500ms);  // the probe's last messages arrive
  probe.Stop();

  // ---- figures ----
  std::optional<Clock::time_point> first_dl, last_ver;
  std::vector<double> per_gw_s;
  size_t downloaded = 0;
  std::map<std::string, int> end_states;
  std::string an_error;
  for (const auto& [gw, j] : jobs) {
    end_states[j.ended ? j.state : "unfinished (" + j.state + ")"]++;
    if (!j.error.empty()) an_error = j.error;
    if (!j.downloading || !j.verifying) continue;
    ++downloaded;
    if (!first_dl || *j.downloading < *first_dl) first_dl = j.downloading;
    if (!last_ver || *j.verifying > *last_ver) last_ver = j.verifying;
    per_gw_s.push_back(Sec(*j.verifying - *j.downloading));
  }
  std::printf("jobs: %zu of %d downloaded and verified; ended:", downloaded, o.gateways);
  for (const auto& [s, n] : end_states) std::printf(" %s %d", s.c_str(), n);
  std::printf("%s%s%s\n", an_error.empty() ? "" : " (e.g. \"", an_error.c_str(), an_error.empty() ? "" : "\")");
  if (!first_dl) {
    std::printf("no transfer measured; gw-01 log:\n%s\nsanifleet log:\n%s\n", test::ReadFile(path("gw-01.log")).c_str(),
                test::ReadFile(path("fleet.log")).c_str());
  } else {
    double mib = static_cast<double>(o.image_kib) / 1024.0;
    double wall = Sec(*last_ver - *first_dl);
    std::sort(per_gw_s.begin(), per_gw_s.end());
    auto q = [&](double p) { return per_gw_s[std::min(per_gw_s.size() - 1, static_cast<size_t>(p * static_cast<double>(per_gw_s.size())))]; };
    std::printf("transfer: rollout_start -> first \"downloading\" %.2f s; first \"downloading\" -> last \"verifying\" %.2f s; "
                "rollout_start -> all jobs ended %.2f s\n",
                Sec(*first_dl - t_start), wall, Sec(t_done - t_start));
    std::printf("aggregate: %zu x %.2f MiB in %.2f s = %.2f MiB/s\n", downloaded, mib, wall, static_cast<double>(downloaded) * mib / wall);
    std::printf("per gateway (\"downloading\" -> \"verifying\"): min %.2f s, p50 %.2f s, max %.2f s = %.2f / %.2f / %.2f MiB/s (max / p50 / min)\n",
                per_gw_s.front(), q(0.5), per_gw_s.back(), mib / per_gw_s.front(), mib / q(0.5), mib / per_gw_s.back());
    auto base = probe.Window(t_base, t_base + kBaseline);
    auto during = probe.Window(*first_dl, *last_ver);
    std::printf("probe QoS 1 at %d/s, publish -> receive: baseline %.0f s: n %zu, p50 %.2f ms, p99 %.2f ms, max %.2f ms, lost %zu\n", kProbeRate,
                Sec(kBaseline), base.n, base.p50, base.p99, base.max, base.lost);
    std::printf("                                          during transfer: n %zu, p50 %.2f ms, p99 %.2f ms, max %.2f ms, lost %zu\n",
                during.n, during.p50, during.p99, during.max, during.lost);
  }
  double gw_cpu = 0, gw_cpu_max = 0;
  long gw_rss = 0, gw_rss_max = 0;
  for (size_t i = 0; i < gws.size(); ++i) {
    double c = after_gw[i].cpu_s - before_gw[i].cpu_s;
    gw_cpu += c;
    gw_cpu_max = std::max(gw_cpu_max, c);
    gw_rss += after_gw[i].rss_kib;
    gw_rss_max = std::max(gw_rss_max, after_gw[i].rss_kib);
  }
  std::printf("CPU over rollout_start -> all ended (%.2f s): sanifleet %.2f s, gateways %.2f s in all (max %.2f s each), mosquitto %.2f s\n",
              Sec(t_done - t_start), after_fleet.cpu_s - before_fleet.cpu_s, gw_cpu, gw_cpu_max, after_broker.cpu_s - before_broker.cpu_s);
  std::printf("RSS after: sanifleet %ld KiB (%ld before), gateways %ld KiB in all (max %ld KiB each), mosquitto %ld KiB\n", after_fleet.rss_kib,
              before_fleet.rss_kib, gw_rss, gw_rss_max, after_broker.rss_kib);

  // Only the processes started here, by their handles: SIGTERM to all, then reap each.
  for (auto& p : gws) p.Signal(SIGTERM);
  fleet.Signal(SIGTERM);
  for (auto& p : gws) p.Stop(5s);
  fleet.Stop(5s);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: rollout_transfer_bench SANIGATE_BIN SANIFLEET_BIN [GATEWAYS=20] [IMAGE_KIB=1024]\n");
    return 2;
  }
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  Options o;
  o.sanigate = argv[1];
  o.sanifleet = argv[2];
  if (argc > 3) o.gateways = std::clamp(std::stoi(argv[3]), 1, 99);
  if (argc > 4) o.image_kib = std::clamp<size_t>(std::stoul(argv[4]), 1, 64 * 1024);
  try {
    for (int rate : {512, 8192}) {
      o.max_kib_s = rate;
      Run(o);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rollout_transfer_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
