// [metrics] on the real daemons: sanigate and sanifleet serve GET /metrics on loopback, and what
// they serve matches their status (read through the admin API just before and just after the
// scrape: gauges that cannot move here are equal, counters lie between the two); a malformed, an
// oversized and a wrong-path request are refused without disturbing the endpoint.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <map>
#include <sstream>

#include "fleet_fixture.h"

namespace sanigate::test {
namespace {

using namespace std::string_literals;

// One request on a plain socket; everything the server sends until it closes.
std::string Http(uint16_t port, const std::string& request) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return "";
  }
  timeval tv{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  for (size_t off = 0; off < request.size();) {
    ssize_t n = ::send(fd, request.data() + off, request.size() - off, MSG_NOSIGNAL);
    if (n <= 0) break;
    off += static_cast<size_t>(n);
  }
  std::string out;
  char buf[8192];
  for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;) out.append(buf, static_cast<size_t>(n));
  ::close(fd);
  return out;
}

std::string StatusLine(const std::string& r) { return r.substr(0, r.find("\r\n")); }

struct Scrape {
  std::string text;
  std::map<std::string, double> series;  // "name{labels}" → value
  std::map<std::string, std::string> types;
  bool Has(const std::string& s) const { return series.count(s) != 0; }
  double At(const std::string& s) const {
    auto it = series.find(s);
    EXPECT_NE(it, series.end()) << "no series " << s << " in:\n" << text;
    return it == series.end() ? -1 : it->second;
  }
};

Scrape Get(uint16_t port) {
  std::string r = Http(port, "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
  Scrape s;
  EXPECT_EQ(StatusLine(r), "HTTP/1.1 200 OK") << r;
  EXPECT_NE(r.find("\r\nContent-Type: text/plain; version=0.0.4"), std::string::npos) << r;
  auto body = r.find("\r\n\r\n");
  if (body == std::string::npos) return s;
  s.text = r.substr(body + 4);
  std::istringstream in(s.text);
  std::set<std::string> helps;
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("# TYPE ", 0) == 0) {
      std::istringstream l(line.substr(7));
      std::string name, type;
      l >> name >> type;
      EXPECT_TRUE(helps.count(name)) << "TYPE without HELP: " << line;
      EXPECT_TRUE(s.types.emplace(name, type).second) << "family declared twice: " << name;
      continue;
    }
    if (line.rfind("# HELP ", 0) == 0) {
      helps.insert(line.substr(7, line.find(' ', 7) - 7));
      continue;
    }
    auto sp = line.rfind(' ');
    EXPECT_NE(sp, std::string::npos) << line;
    if (sp == std::string::npos) continue;
    std::string key = line.substr(0, sp);
    EXPECT_TRUE(s.types.count(key.substr(0, key.find('{')))) << "sample before its TYPE: " << line;
    EXPECT_TRUE(s.series.emplace(key, std::stod(line.substr(sp + 1))).second) << "duplicate series " << key;
  }
  return s;
}

class MetricsTest : public FleetFixture {
 protected:
  json GatewayAdminStatus() {
    int rc = Process::Run({"mosquitto_rr", "-h", "127.0.0.1", "-p", std::to_string(broker->port()), "-t",
                           "sanigate/v1/houpu/gateway/gw-test/admin/status", "-e", "sanigate/v1/houpu/admin/reply/metrics",
                           "-m", "{}", "-W", "10"},
                          15s, {.stdout_path = path("gw-rr.out"), .stderr_path = path("gw-rr.err")});
    EXPECT_TRUE(ExitedWith(rc, 0)) << DescribeWaitStatus(rc) << ReadFile(path("gw-rr.err"));
    json j = json::parse(ReadFile(path("gw-rr.out")), nullptr, false);
    EXPECT_TRUE(j.is_object() && j.value("ok", false)) << j.dump();
    return j.is_object() && j.contains("result") ? j["result"] : json::object();
  }
};

TEST_F(MetricsTest, BothDaemonsServeTheirStatusAsPrometheusText) {
  StartBroker();
  StartSim(2);
  Capture();
  uint16_t gw_port = FreeTcpPort(), fleet_port = FreeTcpPort();
  WriteConfig(BaseConfig() + "[metrics]\nlisten = \"127.0.0.1:" + std::to_string(gw_port) + "\"\n\n[modbus]\n" +
              RoomConfig("room-a", 0, 200) + RoomConfig("room-b", 1, 200));
  StartGateway();
  ASSERT_TRUE(WaitReads("room-a", 3, 15s)) << GatewayLog();
  ASSERT_TRUE(WaitForTcpPort(gw_port, 10s)) << GatewayLog();
  WriteFleetConfigText(FleetBaseConfig() + "[metrics]\nlisten = \"127.0.0.1:" + std::to_string(fleet_port) + "\"\n");
  StartFleet();
  ASSERT_TRUE(WaitForTcpPort(fleet_port, 10s)) << FleetLog();

  // ---- sanigate ----
  json before = GatewayAdminStatus();
  Scrape g = Get(gw_port);
  json after = GatewayAdminStatus();
  EXPECT_EQ(g.At("sanigate_up"), 1);
  EXPECT_EQ(g.At("sanigate_mqtt_connected"), 1);
  EXPECT_EQ(g.At("sanigate_build_info{version=\"" + before["version"].get<std::string>() + "\"}"), 1);
  EXPECT_DOUBLE_EQ(g.At("sanigate_start_time_seconds"), before["started"].get<double>() / 1000);
  EXPECT_EQ(g.types["sanigate_outbox_shed_records_total"], "counter");
  EXPECT_EQ(g.types["sanigate_outbox_pending_records"], "gauge");
  for (const char* p : {"telemetry", "status", "event", "alarm"})
    EXPECT_EQ(g.At(std::string("sanigate_outbox_shed_records_total{priority=\"") + p + "\"}"), 0);
  EXPECT_GE(g.At("sanigate_outbox_pending_records"), 0);
  EXPECT_GE(g.At("sanigate_outbox_bytes"), 0);
  EXPECT_GE(g.At("sanigate_outbox_oldest_age_seconds"), 0);
  EXPECT_LT(g.At("sanigate_outbox_oldest_age_seconds"), 60);
  const json& ma = after["adapters"]["modbus"];
  const std::string m = "{adapter=\"modbus\"}";
  EXPECT_EQ(g.At("sanigate_adapter_devices" + m), ma["devices"].get<double>());
  EXPECT_EQ(g.At("sanigate_adapter_devices" + m), 2);
  EXPECT_EQ(g.At("sanigate_adapter_state{adapter=\"modbus\",state=\"" + ma["state"].get<std::string>() + "\"}"), 1);
  auto between = [&](const std::string& series, double lo, double hi) {
    double v = g.At(series);
    EXPECT_LE(lo, v) << series;
    EXPECT_LE(v, hi) << series;
  };
  const json& mb = before["adapters"]["modbus"];
  between("sanigate_adapter_errors_total" + m, mb["errors"].get<double>(), ma["errors"].get<double>());
  between("sanigate_adapter_polls_total" + m, mb["polls"].get<double>(), ma["polls"].get<double>());
  for (const char* dev : {"room-a", "room-b"}) {
    const json& db = mb["per_device"][dev];
    const json& da = ma["per_device"][dev];
    std::string l = std::string("{adapter=\"modbus\",device=\"") + dev + "\"}";
    between("sanigate_device_requests_total" + l, db["requests"].get<double>(), da["requests"].get<double>());
    between("sanigate_device_timeouts_total" + l, db["timeouts"].get<double>(), da["timeouts"].get<double>());
    between("sanigate_device_errors_total" + l, db["errors"].get<double>(), da["errors"].get<double>());
    between("sanigate_device_polls_total" + l, db["polls"].get<double>(), da["polls"].get<double>());
    EXPECT_TRUE(g.Has("sanigate_device_latency_seconds" + l));
    EXPECT_TRUE(g.Has("sanigate_device_max_latency_seconds" + l));
  }
  EXPECT_EQ(g.At("sanigate_device_online{adapter=\"modbus\",device=\"room-a\"}"), 1);
  EXPECT_EQ(g.At("sanigate_device_requests_total{adapter=\"modbus\",device=\"room-a\"}") > 0, true);

  // A standard HTTP client takes it as well (python3's urllib; curl too when installed).
  int rc = Process::Run({"/usr/bin/python3", "-c",
                         "import sys,urllib.request as u; r=u.urlopen(sys.argv[1],timeout=10); "
                         "assert r.headers['Content-Type'].startswith('text/plain; version=0.0.4'); "
                         "sys.stdout.write(r.read().decode())",
                         "http://127.0.0.1:" + std::to_string(gw_port) + "/metrics"},
                        15s, {.stdout_path = path("urllib.out"), .stderr_path = path("urllib.err")});
  EXPECT_TRUE(ExitedWith(rc, 0)) << ReadFile(path("urllib.err"));
  EXPECT_NE(ReadFile(path("urllib.out")).find("\nsanigate_up 1\n"), std::string::npos);
  if (::access("/usr/bin/curl", X_OK) == 0) {
    rc = Process::Run({"/usr/bin/curl", "-sf", "http://127.0.0.1:" + std::to_string(gw_port) + "/metrics"}, 15s,
                      {.stdout_path = path("curl.out"), .stderr_path = path("curl.err")});
    EXPECT_TRUE(ExitedWith(rc, 0)) << ReadFile(path("curl.err"));
    EXPECT_NE(ReadFile(path("curl.out")).find("\nsanigate_up 1\n"), std::string::npos);
  }

  // ---- sanifleet ----
  // The fleet serves a snapshot at most a second old: wait until it has heard the gateway.
  json fs;
  Scrape f;
  for (int i = 0; i < 50; ++i) {
    f = Get(fleet_port);
    fs = Admin("status")["result"];
    if (f.Has("sanifleet_registered_gateways") && f.At("sanifleet_registered_gateways") >= 1 &&
        f.At("sanifleet_registered_devices") == fs["devices"].get<double>())
      break;
    std::this_thread::sleep_for(200ms);
  }
  EXPECT_EQ(f.At("sanifleet_up"), 1);
  EXPECT_EQ(f.At("sanifleet_mqtt_connected"), 1);
  EXPECT_EQ(f.At("sanifleet_build_info{version=\"" + fs["version"].get<std::string>() + "\"}"), 1);
  // The admin answer lists the gateways where the status counts them.
  EXPECT_EQ(f.At("sanifleet_registered_gateways"), static_cast<double>(fs["gateways"].size()));
  EXPECT_EQ(f.At("sanifleet_registered_devices"), fs["devices"].get<double>());
  EXPECT_GE(f.At("sanifleet_registered_devices"), 1);
  EXPECT_LE(f.At("sanifleet_messages_total"), fs["messages"].get<double>());
  EXPECT_GT(f.At("sanifleet_messages_total"), 0);
  EXPECT_EQ(f.At("sanifleet_malformed_messages_total"), fs["malformed"].get<double>());
  EXPECT_EQ(f.types["sanifleet_devices"], "gauge");
  double states = 0;
  for (const char* st : {"ok", "degraded", "critical", "offline", "unknown"}) states += f.At(std::string("sanifleet_devices{state=\"") + st + "\"}");
  double status_states = 0;
  for (const auto& [k, v] : fs["by_state"].items()) status_states += v.get<double>();
  EXPECT_EQ(states, status_states);

  // ---- requests that are not a scrape, on both ----
  for (uint16_t port : {gw_port, fleet_port}) {
    EXPECT_EQ(StatusLine(Http(port, "GET / HTTP/1.1\r\n\r\n")), "HTTP/1.1 404 Not Found");
    EXPECT_EQ(StatusLine(Http(port, "\x16\x03\x01\x02\x00garbage\r\n\r\n"s)), "HTTP/1.1 400 Bad Request");
    EXPECT_EQ(StatusLine(Http(port, "GET /metrics HTTP/1.1\r\nX: " + std::string(20000, 'x') + "\r\n\r\n")),
              "HTTP/1.1 431 Request Header Fields Too Large");
    EXPECT_EQ(StatusLine(Http(port, "GET /metrics HTTP/1.1\r\nX: " + std::string(20000, 'x'))),
              "HTTP/1.1 431 Request Header Fields Too Large");
    EXPECT_EQ(StatusLine(Http(port, "POST /metrics HTTP/1.1\r\n\r\n")), "HTTP/1.1 405 Method Not Allowed");
    EXPECT_EQ(StatusLine(Http(port, "GET /metrics HTTP/1.1\r\n\r\n")), "HTTP/1.1 200 OK");
  }
  EXPECT_TRUE(gateway.Running());
  EXPECT_TRUE(fleet.Running());
}

TEST_F(MetricsTest, PerDeviceSeriesOffAndNoEndpointWithoutListen) {
  StartBroker();
  StartSim(1);
  Capture();
  uint16_t gw_port = FreeTcpPort();
  WriteConfig(BaseConfig() + "[metrics]\nlisten = \"127.0.0.1:" + std::to_string(gw_port) + "\"\nper_device = false\n\n[modbus]\n" +
              RoomConfig("room-a", 0, 200));
  StartGateway();
  ASSERT_TRUE(WaitReads("room-a", 2, 15s)) << GatewayLog();
  ASSERT_TRUE(WaitForTcpPort(gw_port, 10s));
  Scrape g = Get(gw_port);
  EXPECT_EQ(g.text.find("sanigate_device_"), std::string::npos);
  EXPECT_EQ(g.At("sanigate_adapter_devices{adapter=\"modbus\"}"), 1);
  gateway.Stop(10s);
  // Without [metrics] nothing listens.
  WriteConfig(BaseConfig() + "[modbus]\n" + RoomConfig("room-a", 0, 200));
  StartGateway();
  WaitGatewayOnline();
  EXPECT_FALSE(WaitForTcpPort(gw_port, 1s));
}

}  // namespace
}  // namespace sanigate::test
