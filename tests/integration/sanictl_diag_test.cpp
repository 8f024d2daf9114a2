// sanictl diag end to end: the real binary, a real Mosquitto with the shipped ACL and its users,
// the real sanigate (one simulated garbage room) and sanifleet. The archive is unpacked with the
// system's tar and read like support would: the expected members, the retained statuses, and
// not one secret of the configs (each kind, commented out, in a URL, a keys file named by
// keys_file, the credentials directory) anywhere in it. A broker that is down still gives an
// archive, with a note, and exit 3.
#include <sys/stat.h>

#include <filesystem>
#include <regex>

#include "gateway_fixture.h"

namespace sanigate::test {
namespace {

namespace fs = std::filesystem;

const std::vector<std::string> kSecrets = {
    "gw-secret",   "fleet-secret",  "admin-secret", "up-secret",   "LW-APPKEY-9c1e", "LW-NWKKEY-77ab",
    "LW-APPS-41f0", "LW-NWKS-0d2c", "CITY-TOKEN-5e", "JT-AUTH-3141", "COMMENTED-PW-8", "URL-PASS-2718",
    "KEYSFILE-KEY-1", "CRED-FILE-PW-1"};

class SanictlDiagTest : public GatewayTest {
 protected:
  struct Result {
    int status = -1;
    std::string out, err;
  };

  Process fleet;
  std::string etc;  // the config dir the archive is made of

  void StartAclBroker() {
    MosquittoBroker::Options o;
    o.require_password = true;
    o.username = "gateway";
    o.password = "gw-secret";
    o.more_users = {{"fleet", "fleet-secret"}, {"admin", "admin-secret"}, {"upstream", "up-secret"}};
    o.acl_file = SourceDir() + "/packaging/sanigate.acl";
    StartBroker(o);
  }

  void StartFleet() {
    std::ofstream(path("sanifleet.toml")) << "[fleet]\nid = \"fleet-test\"\nsite = \"houpu\"\ndata_dir = \""
                                          << path("fleet") << "\"\nregistry_flush_ms = 100\n\n[mqtt]\nurl = \""
                                          << broker->url() << "\"\nreconnect_min_ms = 100\n"
                                          << "username = \"fleet\"\npassword = \"fleet-secret\"\n";
    fleet = Process::Start({SANIFLEET_BIN, "--config", path("sanifleet.toml")}, {.stderr_path = path("fleet.log")});
  }

  // A box's /etc/sanigate: the daemons' configs as they run, sanictl's with the admin password, a
  // LoRaWAN file with every kind of key, its keys file (TOML, named by keys_file) and the
  // credentials directory.
  void WriteEtc(const std::string& broker_url) {
    etc = path("etc");
    fs::create_directories(etc + "/credentials");
    fs::create_directories(etc + "/profiles");
    fs::copy_file(path("sanigate.toml"), etc + "/sanigate.toml", fs::copy_options::overwrite_existing);
    if (fs::exists(path("sanifleet.toml")))
      fs::copy_file(path("sanifleet.toml"), etc + "/sanifleet.toml", fs::copy_options::overwrite_existing);
    std::ofstream(etc + "/sanictl.toml") << "[mqtt]\nurl = \"" << broker_url
                                         << "\"\nusername = \"admin\"\npassword = \"admin-secret\"\n"
                                         << "# password = \"COMMENTED-PW-8\"\n\n[ctl]\nsite = \"houpu\"\n";
    std::ofstream(etc + "/lorawan.toml") << R"(# LoRaWAN devices (not loaded by the test's gateway)
[lorawan]
keys_file = "lorawan-keys.toml"
[lorawan.chirpstack]
broker = "tcp://chirp:URL-PASS-2718@127.0.0.1:1883"
api_token = "CITY-TOKEN-5e"
[[lorawan.devices]]
id = "bin-0412"
dev_eui = "0102030405060708"
app_key = "LW-APPKEY-9c1e"
nwk_key = 'LW-NWKKEY-77ab'
apps_key = """LW-APPS-41f0"""
keys = { nwks_key = "LW-NWKS-0d2c", dev_addr = "260B1234" }
[[jt808.terminals]]
phone = "13800000001"
auth_code = "JT-AUTH-3141"
)";
    std::ofstream(etc + "/lorawan-keys.toml") << "[0102030405060708]\napp_key = \"KEYSFILE-KEY-1\"\n";
    std::ofstream(etc + "/credentials/admin.password") << "admin-secret\n";
    std::ofstream(etc + "/credentials/extra.toml") << "password = \"CRED-FILE-PW-1\"\n";
    std::ofstream(etc + "/profiles/room-v1.toml") << "model = \"GR-200\"\n";
  }

  Result Diag(const std::vector<std::string>& args, const std::string& ctl_config) {
    static int runs = 0;
    ++runs;
    std::string out = path("diag." + std::to_string(runs) + ".out"), err = path("diag." + std::to_string(runs) + ".err");
    std::vector<std::string> argv = {SANICTL_BIN, "--config", ctl_config, "diag"};
    argv.insert(argv.end(), args.begin(), args.end());
    Result r;
    r.status = Process::Run(argv, 90s, {.stdout_path = out, .stderr_path = err});
    r.out = ReadFile(out);
    r.err = ReadFile(err);
    return r;
  }

  static std::string Describe(const Result& r) {
    return DescribeWaitStatus(r.status) + "\n--- stdout ---\n" + r.out + "--- stderr ---\n" + r.err;
  }

  // Unpacks the archive with the system's tar; returns the one top directory inside.
  fs::path Unpack(const std::string& archive, const std::string& into) {
    fs::create_directories(into);
    int rc = Process::Run({"tar", "-xzf", archive, "-C", into}, 30s, {.stderr_path = path("tar.err")});
    EXPECT_TRUE(ExitedWith(rc, 0)) << ReadFile(path("tar.err"));
    std::vector<fs::path> tops;
    for (const auto& e : fs::directory_iterator(into)) tops.push_back(e.path());
    EXPECT_EQ(tops.size(), 1u);
    return tops.empty() ? fs::path(into) : tops[0];
  }

  static std::set<std::string> Members(const fs::path& top) {
    std::set<std::string> out;
    for (const auto& e : fs::recursive_directory_iterator(top))
      if (e.is_regular_file()) out.insert(e.path().lexically_relative(top).string());
    return out;
  }

  // No secret in any member, nor in the compressed bytes themselves (gzip of a short string
  // could keep it literally).
  void ExpectNoSecrets(const fs::path& top, const std::string& archive) {
    for (const auto& e : fs::recursive_directory_iterator(top)) {
      if (!e.is_regular_file()) continue;
      std::string text = ReadFile(e.path().string());
      for (const auto& s : kSecrets)
        EXPECT_EQ(text.find(s), std::string::npos) << s << " leaked into " << e.path() << ":\n" << text;
    }
    std::string raw = ReadFile(archive);
    for (const auto& s : kSecrets) EXPECT_EQ(raw.find(s), std::string::npos) << s;
  }

  void TearDown() override {
    if (fleet.Running()) fleet.Stop(5s);
    if (::testing::Test::HasFailure()) std::cerr << "---- fleet log ----\n" << ReadFile(path("fleet.log"));
    GatewayTest::TearDown();
  }
};

TEST_F(SanictlDiagTest, ArchiveHoldsStatusesAndConfigsWithoutSecrets) {
  StartAclBroker();
  StartSim(1, {"--set", "hr:0=815"});
  capture = std::make_unique<MqttCapture>(broker->url(), "test-capture");
  capture->SetCredentials("admin", "admin-secret");
  capture->Connect();
  capture->Subscribe("sanigate/v1/#", 1);
  WriteConfig(BaseConfig("username = \"gateway\"\npassword = \"gw-secret\"\n") + "[modbus]\n" + RoomConfig("room-07", 0, 200));
  StartGateway();
  WaitGatewayOnline();
  StartFleet();
  ASSERT_TRUE(capture->WaitFor([](const std::vector<Captured>& m) {
    for (const auto& c : m)
      if (c.topic == "sanigate/v1/houpu/fleet/status" && c.payload.find("\"online\":true") != std::string::npos) return true;
    return false;
  }, 15s)) << ReadFile(path("fleet.log"));
  ASSERT_TRUE(WaitReads("room-07", 2, 10s));
  WriteEtc(broker->url());

  std::string archive = path("support.tar.gz");
  Result r = Diag({"--config-dir", etc, "--state-dir", path("data"), "--state-dir", path("fleet"), "--since", "1h",
                   "--output", archive},
                  etc + "/sanictl.toml");
  ASSERT_TRUE(ExitedWith(r.status, 0)) << Describe(r);
  // The path and the size, on stdout.
  EXPECT_TRUE(std::regex_match(r.out, std::regex(std::regex_replace(archive, std::regex("[.]"), "\\.") +
                                                 " \\([0-9.]+ (B|KiB|MiB)\\)\n")))
      << r.out;
  struct stat st{};
  ASSERT_EQ(::stat(archive.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  for (const auto& e : fs::directory_iterator(dir.path()))  // the temporary file was renamed
    EXPECT_EQ(e.path().string().find(".part-"), std::string::npos) << e.path();

  fs::path top = Unpack(archive, path("x"));
  EXPECT_TRUE(std::regex_match(top.filename().string(), std::regex("sanigate-diag-.+-\\d{8}T\\d{6}Z"))) << top;
  std::set<std::string> members = Members(top);
  for (const char* m : {"README.txt", "versions.txt", "host.txt", "state.txt", "diag-errors.txt", "status/broker.txt",
                        "status/gateways.json", "status/fleet.json", "config/index.txt", "config/sanigate.toml",
                        "config/sanifleet.toml", "config/sanictl.toml", "config/lorawan.toml", "config/profiles/room-v1.toml"})
    EXPECT_TRUE(members.count(m)) << m << " missing; members: " << testing::PrintToString(members);
  // The keys file named by keys_file and anything under credentials/ are never read.
  EXPECT_FALSE(members.count("config/lorawan-keys.toml"));
  EXPECT_FALSE(members.count("config/credentials/extra.toml"));
  EXPECT_NE(ReadFile((top / "config/index.txt").string()).find("lorawan-keys.toml: not read (named by a *_file key in lorawan.toml)"),
            std::string::npos)
      << ReadFile((top / "config/index.txt").string());
  ExpectNoSecrets(top, archive);

  // Redacted, not dropped: the configs are still there around the secrets.
  std::string lw = ReadFile((top / "config/lorawan.toml").string());
  EXPECT_NE(lw.find("app_key = \"<removed>\""), std::string::npos) << lw;
  EXPECT_NE(lw.find("broker = \"tcp://<removed>@127.0.0.1:1883\""), std::string::npos) << lw;
  EXPECT_NE(lw.find("dev_eui = \"0102030405060708\""), std::string::npos) << lw;
  std::string gw = ReadFile((top / "config/sanigate.toml").string());
  EXPECT_NE(gw.find("password = \"<removed>\""), std::string::npos) << gw;
  EXPECT_NE(gw.find("id = \"gw-test\""), std::string::npos) << gw;

  json gws = json::parse(ReadFile((top / "status/gateways.json").string()), nullptr, false);
  ASSERT_TRUE(gws.is_object());
  ASSERT_EQ(gws["gateways"].size(), 1u) << gws.dump(2);
  EXPECT_EQ(gws["gateways"][0]["gateway"], "gw-test");
  EXPECT_EQ(gws["gateways"][0]["site"], "houpu");
  EXPECT_EQ(gws["gateways"][0]["status"]["online"], true);
  json fl = json::parse(ReadFile((top / "status/fleet.json").string()), nullptr, false);
  ASSERT_TRUE(fl.is_object());
  ASSERT_EQ(fl["retained"].size(), 1u) << fl.dump(2);
  EXPECT_EQ(fl["retained"][0]["status"]["online"], true);
  EXPECT_EQ(fl["admin_status"]["fleet"], "fleet-test") << fl.dump(2);
  EXPECT_EQ(fl["admin_status"]["version"], SANIGATE_VERSION);

  std::string versions = ReadFile((top / "versions.txt").string());
  EXPECT_NE(versions.find(std::string("sanictl: ") + SANIGATE_VERSION), std::string::npos) << versions;
  EXPECT_NE(versions.find(std::string("houpu/gw-test: version ") + SANIGATE_VERSION + ", online"), std::string::npos) << versions;
  EXPECT_NE(versions.find(std::string("houpu/fleet-test: version ") + SANIGATE_VERSION + ", online"), std::string::npos) << versions;

  std::string host = ReadFile((top / "host.txt").string());
  for (const std::string& k : {std::string("uname: "), std::string("uptime: "), std::string("disk free:\n"), path("data")})
    EXPECT_NE(host.find(k), std::string::npos) << k << " in\n" << host;
  // The outbox and the registry with their sizes.
  std::string state = ReadFile((top / "state.txt").string());
  EXPECT_NE(state.find("== " + path("data")), std::string::npos) << state;
  EXPECT_TRUE(std::regex_search(state, std::regex("\\d+ +[0-9: +-]+ +outbox\\.db\n"))) << state;
  EXPECT_NE(state.find("== " + path("fleet")), std::string::npos) << state;

  // The journal: its lines, or a note saying why there are none.
  std::string errors = ReadFile((top / "diag-errors.txt").string());
  EXPECT_TRUE(members.count("journal.txt") || errors.find("journal: ") != std::string::npos) << errors;
  EXPECT_EQ(errors.find("broker"), std::string::npos) << errors;
  EXPECT_EQ(errors.find("sanifleet"), std::string::npos) << errors;

  // --json: the same facts for a script; the archive is written again in a directory given.
  fs::create_directories(path("out"));
  r = Diag({"--config-dir", etc, "--state-dir", path("data"), "--output", path("out"), "--json"}, etc + "/sanictl.toml");
  ASSERT_TRUE(ExitedWith(r.status, 0)) << Describe(r);
  json doc = json::parse(r.out, nullptr, false);
  ASSERT_TRUE(doc.is_object()) << r.out;
  EXPECT_EQ(fs::path(doc["archive"].get<std::string>()).parent_path(), fs::path(path("out")));
  EXPECT_EQ(doc["bytes"].get<uint64_t>(), fs::file_size(doc["archive"].get<std::string>()));
  EXPECT_TRUE(doc["members"].is_array());
}

TEST_F(SanictlDiagTest, ABrokerThatIsDownGivesANoteAndStillAnArchive) {
  StartAclBroker();
  std::string url = broker->url();
  WriteConfig(BaseConfig("username = \"gateway\"\npassword = \"gw-secret\"\n"));
  WriteEtc(url);
  broker->Stop();

  std::string archive = path("down.tar.gz");
  Result r = Diag({"--config-dir", etc, "--state-dir", path("nowhere"), "--output", archive}, etc + "/sanictl.toml");
  EXPECT_TRUE(ExitedWith(r.status, 3)) << Describe(r);
  EXPECT_NE(r.out.find(archive), std::string::npos) << Describe(r);
  EXPECT_NE(r.err.find("cannot reach the broker at " + url), std::string::npos) << Describe(r);
  ASSERT_TRUE(fs::exists(archive));

  fs::path top = Unpack(archive, path("x"));
  std::set<std::string> members = Members(top);
  for (const char* m : {"README.txt", "versions.txt", "host.txt", "state.txt", "diag-errors.txt", "status/broker.txt",
                        "config/sanigate.toml", "config/sanictl.toml", "config/lorawan.toml"})
    EXPECT_TRUE(members.count(m)) << m << " missing; members: " << testing::PrintToString(members);
  std::string note = ReadFile((top / "status/broker.txt").string());
  EXPECT_NE(note.find("The broker could not be reached"), std::string::npos) << note;
  EXPECT_NE(note.find("connection refused"), std::string::npos) << note;
  std::string errors = ReadFile((top / "diag-errors.txt").string());
  EXPECT_NE(errors.find("broker " + url + ": cannot reach the broker"), std::string::npos) << errors;
  // A state directory that does not exist is a noted failure, not the end.
  EXPECT_NE(errors.find("state " + path("nowhere") + ": cannot read"), std::string::npos) << errors;
  ExpectNoSecrets(top, archive);
}

TEST_F(SanictlDiagTest, ARefusedUserExitsFiveWithAnArchive) {
  StartAclBroker();
  WriteConfig(BaseConfig());
  WriteEtc(broker->url());
  std::ofstream(path("wrong.toml")) << "[mqtt]\nurl = \"" << broker->url()
                                    << "\"\nusername = \"admin\"\npassword = \"not-the-password\"\n[ctl]\nsite = \"houpu\"\n";
  std::string archive = path("refused.tar.gz");
  Result r = Diag({"--config-dir", etc, "--output", archive}, path("wrong.toml"));
  EXPECT_TRUE(ExitedWith(r.status, 5)) << Describe(r);
  ASSERT_TRUE(fs::exists(archive));
  fs::path top = Unpack(archive, path("x"));
  EXPECT_NE(ReadFile((top / "status/broker.txt").string()).find("could not be reached"), std::string::npos);
  ExpectNoSecrets(top, archive);
}

TEST_F(SanictlDiagTest, BadUsageAndAnUnwritableOutput) {
  std::ofstream(path("ctl.toml")) << "[ctl]\nsite = \"houpu\"\n";
  Result r = Diag({"--since", "yesterday", "--output", path("a.tar.gz")}, path("ctl.toml"));
  EXPECT_TRUE(ExitedWith(r.status, 2)) << Describe(r);
  EXPECT_NE(r.err.find("--since \"yesterday\" is not a duration"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(path("a.tar.gz")));

  r = Diag({"--output", path("no/such/dir/a.tar.gz")}, path("ctl.toml"));
  EXPECT_TRUE(ExitedWith(r.status, 1)) << Describe(r);
  EXPECT_NE(r.err.find("cannot write " + path("no/such/dir/a.tar.gz")), std::string::npos) << r.err;

  // A broken sanictl config costs the broker part only: exit 2, and the archive says why.
  std::ofstream(path("bad.toml")) << "[ctl]\nsite = \"Not Valid\"\n";
  r = Diag({"--config-dir", path("none"), "--output", path("b.tar.gz")}, path("bad.toml"));
  EXPECT_TRUE(ExitedWith(r.status, 2)) << Describe(r);
  ASSERT_TRUE(fs::exists(path("b.tar.gz")));
  fs::path top = Unpack(path("b.tar.gz"), path("x"));
  EXPECT_NE(ReadFile((top / "status/broker.txt").string()).find("not asked"), std::string::npos);
  std::string errors = ReadFile((top / "diag-errors.txt").string());
  EXPECT_NE(errors.find("sanictl config or flags: "), std::string::npos) << errors;
  EXPECT_NE(errors.find("configs: cannot read " + path("none")), std::string::npos) << errors;
}

}  // namespace
}  // namespace sanigate::test
