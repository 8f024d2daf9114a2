#include "harness/broker.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <fstream>
#include <stdexcept>
#include <thread>

#include "harness/ports.h"

namespace sanigate::test {
namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr const char* kMosquittoBinary = "/usr/sbin/mosquitto";
constexpr auto kStartDeadline = 10s;
constexpr int kFreshPortAttempts = 5;

void WriteTextFile(const std::string& path, const std::string& content) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << content;
  out.close();
  if (!out) throw std::runtime_error("MosquittoBroker: cannot write " + path);
}

// openssl ca's -startdate/-enddate form, `offset` from now.
std::string OpenSslDate(std::chrono::seconds offset) {
  const std::time_t t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now() + offset);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y%m%d%H%M%SZ", &tm);
  return buf;
}

std::string Tail(const std::string& text, std::size_t max_chars = 4000) {
  return text.size() <= max_chars ? text : "..." + text.substr(text.size() - max_chars);
}

}  // namespace

MosquittoBroker::MosquittoBroker() : MosquittoBroker(Options{}) {}

MosquittoBroker::MosquittoBroker(Options options) : options_(std::move(options)) {
  config_file_ = dir_.File("mosquitto.conf");
  log_file_ = dir_.File("mosquitto.log");
}

MosquittoBroker::~MosquittoBroker() {
  try {
    Stop();
  } catch (...) {
    // Process's own destructor still SIGKILLs and reaps whatever survived.
  }
}

std::string MosquittoBroker::url() const {
  return "tcp://127.0.0.1:" + std::to_string(port_);
}

std::string MosquittoBroker::tls_url() const {
  return "ssl://127.0.0.1:" + std::to_string(tls_port_);
}

std::string MosquittoBroker::log() const { return ReadFile(log_file_); }

bool MosquittoBroker::Running() { return process_.Running(); }

void MosquittoBroker::Start() {
  if (process_.Running()) throw std::logic_error("MosquittoBroker::Start: already running");
  if (configured_) {
    RelaunchOnSamePorts();
    return;
  }
  if (options_.require_password) {
    if (options_.username.empty()) {
      throw std::invalid_argument("MosquittoBroker: require_password needs a username");
    }
    WritePasswordFile();
  }
  if (options_.tls) GenerateTlsMaterial();

  // FreeTcpPort() can race with other processes; a fresh pair of ports is the cheapest fix.
  for (int attempt = 0; attempt < kFreshPortAttempts; ++attempt) {
    port_ = FreeTcpPort();
    tls_port_ = 0;
    while (options_.tls && (tls_port_ == 0 || tls_port_ == port_)) tls_port_ = FreeTcpPort();
    WriteConfig();
    if (Launch() == LaunchResult::kServing) {
      configured_ = true;
      return;
    }
  }
  throw std::runtime_error("MosquittoBroker: every port tried was already in use" +
                           Diagnostics(Tail(log())));
}

void MosquittoBroker::Stop() {
  if (process_.Running()) process_.Stop(5s);
}

void MosquittoBroker::Kill() { process_.Kill(); }

void MosquittoBroker::Restart() {
  if (!configured_) throw std::logic_error("MosquittoBroker::Restart before Start");
  Stop();
  RelaunchOnSamePorts();
}

void MosquittoBroker::RelaunchOnSamePorts() {
  // Clients reconnecting in a loop, or a lingering socket of the old broker, may hold the port
  // for a short moment; keep trying until the deadline rather than failing on the first clash.
  const auto deadline = Clock::now() + kStartDeadline;
  auto backoff = 20ms;
  while (Launch() != LaunchResult::kServing) {
    if (Clock::now() >= deadline) {
      throw std::runtime_error("MosquittoBroker: port " + std::to_string(port_) +
                               " still in use after 10 s" + Diagnostics(Tail(log())));
    }
    std::this_thread::sleep_for(backoff);
    backoff = std::min(backoff * 2, std::chrono::milliseconds(250));
  }
}

MosquittoBroker::LaunchResult MosquittoBroker::Launch() {
  // The log is appended across runs; only this run's part tells whether this run succeeded.
  const std::size_t log_offset = ReadFile(log_file_).size();
  Process::Options popts;
  popts.stdout_path = dir_.File("mosquitto.stdout");
  popts.stderr_path = dir_.File("mosquitto.stderr");
  popts.cwd = dir();
  process_ = Process::Start({kMosquittoBinary, "-c", config_file_}, popts);

  const auto deadline = Clock::now() + kStartDeadline;
  auto backoff = 2ms;
  for (;;) {
    const std::string full = ReadFile(log_file_);
    const std::string run_log = full.size() > log_offset ? full.substr(log_offset) : std::string();
    if (!process_.Running()) {
      if (run_log.find("Address already in use") != std::string::npos) {
        return LaunchResult::kAddressInUse;
      }
      throw std::runtime_error("MosquittoBroker: mosquitto exited during startup" +
                               Diagnostics(Tail(run_log)));
    }
    // mosquitto logs "... running" only after every listener is bound.
    if (run_log.find(" running") != std::string::npos) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      const bool plain_up = WaitForTcpPort(port_, std::max(left, 1ms));
      const bool tls_up = tls_port_ == 0 || WaitForTcpPort(tls_port_, std::max(left, 1ms));
      if (plain_up && tls_up && process_.Running()) return LaunchResult::kServing;
      process_.Kill();
      throw std::runtime_error("MosquittoBroker: mosquitto reported running but port " +
                               std::to_string(port_) + " does not accept connections" +
                               Diagnostics(Tail(run_log)));
    }
    if (Clock::now() >= deadline) {
      process_.Kill();
      throw std::runtime_error("MosquittoBroker: mosquitto not ready within 10 s" +
                               Diagnostics(Tail(run_log)));
    }
    std::this_thread::sleep_for(backoff);
    backoff = std::min(backoff * 2, std::chrono::milliseconds(50));
  }
}

std::string MosquittoBroker::Diagnostics(const std::string& log_tail) const {
  std::string out = " [dir " + dir() + "]";
  if (auto status = process_.status()) out += "\nmosquitto " + DescribeWaitStatus(*status);
  out += "\n--- mosquitto stderr ---\n" + Tail(ReadFile(dir_.File("mosquitto.stderr")));
  out += "\n--- mosquitto log ---\n" + log_tail;
  return out;
}

void MosquittoBroker::WriteConfig() {
  const std::string d = dir();
  std::string c;
  c += "# Generated by sanigate::test::MosquittoBroker\n";
  c += "per_listener_settings false\n";
  c += std::string("allow_anonymous ") + (options_.require_password ? "false" : "true") + "\n";
  if (options_.require_password) c += "password_file " + dir_.File("passwd") + "\n";
  if (!options_.acl_file.empty()) c += "acl_file " + options_.acl_file + "\n";
  // As root, mosquitto would otherwise drop to the 'mosquitto' user and lose access to our dir.
  if (::geteuid() == 0) c += "user root\n";
  c += "max_queued_messages 100000\n";
  c += "set_tcp_nodelay true\n";
  if (options_.persistence) {
    c += "persistence true\n";
    c += "persistence_location " + d + "/\n";
    c += "autosave_interval 1\n";
  } else {
    c += "persistence false\n";
  }
  c += "log_dest file " + log_file_ + "\n";
  c += "log_type error\nlog_type warning\nlog_type notice\nlog_type information\n";
  c += "log_timestamp_format %Y-%m-%dT%H:%M:%S\n";
  c += "listener " + std::to_string(port_) + " 127.0.0.1\n";
  if (options_.tls) {
    c += "listener " + std::to_string(tls_port_) + " 127.0.0.1\n";
    c += "cafile " + ca_file_ + "\n";
    c += "certfile " + dir_.File("server.crt") + "\n";
    c += "keyfile " + dir_.File("server.key") + "\n";
    if (options_.require_client_certificate) c += "require_certificate true\n";
  }
  WriteTextFile(config_file_, c);
}

void MosquittoBroker::WritePasswordFile() {
  Process::Options popts;
  popts.stdout_path = dir_.File("mosquitto_passwd.out");
  popts.stderr_path = popts.stdout_path;
  const int status = Process::Run({"mosquitto_passwd", "-b", "-c", dir_.File("passwd"),
                                   options_.username, options_.password},
                                  30s, popts);
  if (!ExitedWith(status, 0)) {
    throw std::runtime_error("MosquittoBroker: mosquitto_passwd " + DescribeWaitStatus(status) +
                             ": " + ReadFile(popts.stdout_path));
  }
  for (const auto& [user, password] : options_.more_users) {
    const int more = Process::Run({"mosquitto_passwd", "-b", dir_.File("passwd"), user, password}, 30s, popts);
    if (!ExitedWith(more, 0))
      throw std::runtime_error("MosquittoBroker: mosquitto_passwd " + user + ": " + DescribeWaitStatus(more));
  }
}

void MosquittoBroker::OpenSsl(const std::vector<std::string>& args) {
  std::vector<std::string> argv{"openssl"};
  argv.insert(argv.end(), args.begin(), args.end());
  Process::Options popts;
  popts.stdout_path = dir_.File("openssl.out");
  popts.stderr_path = popts.stdout_path;
  popts.cwd = dir();
  const int status = Process::Run(argv, 30s, popts);
  if (!ExitedWith(status, 0)) {
    std::string cmd;
    for (const auto& a : argv) cmd += a + " ";
    throw std::runtime_error("MosquittoBroker: '" + cmd + "' " + DescribeWaitStatus(status) +
                             ": " + ReadFile(popts.stdout_path));
  }
}

void MosquittoBroker::GenerateTlsMaterial() {
  // A private openssl config keeps the result independent of the system openssl.cnf defaults.
  const std::string cnf = dir_.File("openssl.cnf");
  WriteTextFile(cnf,
                "[req]\n"
                "distinguished_name = dn\n"
                "prompt = no\n"
                "[dn]\n"
                "CN = Sanigate Test\n"
                "[v3_ca]\n"
                "basicConstraints = critical,CA:TRUE\n"
                "keyUsage = critical,keyCertSign,cRLSign\n"
                "subjectKeyIdentifier = hash\n"
                // `openssl ca`, only for the expired client certificate: x509 -req cannot set
                // dates in the past.
                "[ca]\n"
                "default_ca = test_ca\n"
                "[test_ca]\n"
                "database = " + dir_.File("ca-index.txt") + "\n"
                "serial = " + dir_.File("ca-serial") + "\n"
                "new_certs_dir = " + dir() + "\n"
                "certificate = " + dir_.File("ca.crt") + "\n"
                "private_key = " + dir_.File("ca.key") + "\n"
                "default_md = sha256\n"
                "policy = any_name\n"
                "unique_subject = no\n"
                "[any_name]\n"
                "commonName = supplied\n");
  WriteTextFile(dir_.File("ca-index.txt"), "");
  WriteTextFile(dir_.File("ca-serial"), "1000\n");
  const std::string& server_host = options_.server_cert_host;
  WriteTextFile(dir_.File("server.ext"),
                (server_host.empty() ? std::string("subjectAltName = IP:127.0.0.1,DNS:localhost\n")
                                     : "subjectAltName = DNS:" + server_host + "\n") +
                "basicConstraints = critical,CA:FALSE\n"
                "keyUsage = critical,digitalSignature\n"
                "extendedKeyUsage = serverAuth\n");
  WriteTextFile(dir_.File("client.ext"),
                "basicConstraints = critical,CA:FALSE\n"
                "keyUsage = critical,digitalSignature\n"
                "extendedKeyUsage = clientAuth\n");

  // EC P-256 keys are generated instantly, unlike RSA, which keeps fixture setup fast.
  const std::vector<std::string> ec_key{"-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                                        "-noenc"};
  auto make_ca = [&](const std::string& name, const std::string& cn) {
    std::vector<std::string> args{"req", "-x509", "-config", cnf, "-extensions", "v3_ca"};
    args.insert(args.end(), ec_key.begin(), ec_key.end());
    args.insert(args.end(), {"-keyout", dir_.File(name + ".key"), "-out", dir_.File(name + ".crt"),
                             "-days", "1", "-subj", "/CN=" + cn});
    OpenSsl(args);
  };
  auto make_leaf = [&](const std::string& name, const std::string& cn, const std::string& serial) {
    std::vector<std::string> req{"req", "-new", "-config", cnf};
    req.insert(req.end(), ec_key.begin(), ec_key.end());
    req.insert(req.end(), {"-keyout", dir_.File(name + ".key"), "-out", dir_.File(name + ".csr"),
                           "-subj", "/CN=" + cn});
    OpenSsl(req);
    OpenSsl({"x509", "-req", "-in", dir_.File(name + ".csr"), "-CA", dir_.File("ca.crt"), "-CAkey",
             dir_.File("ca.key"), "-set_serial", serial, "-days", "1", "-extfile",
             dir_.File(name + ".ext"), "-out", dir_.File(name + ".crt")});
  };

  make_ca("ca", "Sanigate Test CA");
  make_ca("wrong-ca", "Sanigate Unrelated Test CA");
  make_leaf("server", server_host.empty() ? "localhost" : server_host, "2");
  make_leaf("client", "sanigate-test-client", "3");

  std::vector<std::string> expired_req{"req", "-new", "-config", cnf};
  expired_req.insert(expired_req.end(), ec_key.begin(), ec_key.end());
  expired_req.insert(expired_req.end(), {"-keyout", dir_.File("expired-client.key"), "-out",
                                         dir_.File("expired-client.csr"), "-subj", "/CN=sanigate-expired-client"});
  OpenSsl(expired_req);
  OpenSsl({"ca", "-config", cnf, "-batch", "-notext", "-in", dir_.File("expired-client.csr"), "-out",
           dir_.File("expired-client.crt"), "-startdate", OpenSslDate(-std::chrono::hours(48)), "-enddate",
           OpenSslDate(-std::chrono::hours(1)), "-extfile", dir_.File("client.ext")});

  ca_file_ = dir_.File("ca.crt");
  wrong_ca_file_ = dir_.File("wrong-ca.crt");
  client_cert_file_ = dir_.File("client.crt");
  client_key_file_ = dir_.File("client.key");
  expired_client_cert_file_ = dir_.File("expired-client.crt");
  expired_client_key_file_ = dir_.File("expired-client.key");
}

}  // namespace sanigate::test
