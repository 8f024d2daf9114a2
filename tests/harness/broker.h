// A real /usr/sbin/mosquitto on free 127.0.0.1 ports; config, certs and store in its own TempDir.
// Ownership: owns its process and dir; destructor stops it (SIGTERM, 5 s, SIGKILL), removes dir.
// Thread-safety: none; drive one broker from one test thread. Not copyable or movable.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "harness/process.h"
#include "harness/temp_dir.h"

namespace sanigate::test {

// Outside the class so it can be used as a defaulted constructor argument.
struct MosquittoBrokerOptions {
  bool tls = false;               // adds a second, TLS-only listener (tls_port / tls_url)
  bool persistence = false;       // mosquitto.db in dir(), survives Stop()/Restart()
  bool require_password = false;  // allow_anonymous false + password file with username/password
  std::string username{};
  std::string password{};
  bool require_client_certificate = false;  // TLS listener demands a cert signed by ca_file()
  std::vector<std::pair<std::string, std::string>> more_users{};  // further user/password pairs
  std::string acl_file{};  // e.g. packaging/sanigate.acl; empty = no ACL
  // Non-empty: the server certificate names only this DNS name (e.g. "city.example"), not
  // 127.0.0.1 or localhost, so a client that checks the hostname must refuse it.
  std::string server_cert_host{};
};

class MosquittoBroker {
 public:
  using Options = MosquittoBrokerOptions;

  MosquittoBroker();
  explicit MosquittoBroker(Options options);
  ~MosquittoBroker();
  MosquittoBroker(const MosquittoBroker&) = delete;
  MosquittoBroker& operator=(const MosquittoBroker&) = delete;

  // First call: picks free ports, generates config (and TLS material), starts mosquitto and waits
  // up to 10 s until it serves; retries with new ports if another process grabbed one.
  // Later calls (after Stop/Kill) behave like Restart(). Throws std::runtime_error with the
  // broker log if it does not come up.
  void Start();
  // SIGTERM: mosquitto shuts down cleanly and writes its persistence database.
  void Stop();
  // SIGKILL: simulates a broker crash; nothing is saved beyond the last autosave.
  void Kill();
  // Stops the broker if it runs, then starts it again on the same port(s) with the same config
  // and persistence store, retrying the bind for up to 10 s.
  void Restart();
  bool Running();

  uint16_t port() const { return port_; }
  uint16_t tls_port() const { return tls_port_; }  // 0 unless Options::tls
  std::string url() const;                         // tcp://127.0.0.1:PORT
  std::string tls_url() const;                     // ssl://127.0.0.1:TLSPORT
  const std::string& ca_file() const { return ca_file_; }
  const std::string& client_cert_file() const { return client_cert_file_; }
  const std::string& client_key_file() const { return client_key_file_; }
  // A CA that did not sign the server certificate, for negative TLS tests.
  const std::string& wrong_ca_file() const { return wrong_ca_file_; }
  // A client certificate signed by ca_file() whose validity ended an hour ago (valid from two
  // days ago), with its key: a broker with require_client_certificate refuses it.
  const std::string& expired_client_cert_file() const { return expired_client_cert_file_; }
  const std::string& expired_client_key_file() const { return expired_client_key_file_; }
  std::string dir() const { return dir_.path().string(); }
  // The running mosquitto's PID (e.g. to SIGSTOP it: a broker that hangs without closing).
  pid_t pid() const { return process_.pid(); }
  const Options& options() const { return options_; }
  // Whole log file (all runs, since the file is appended across restarts).
  std::string log() const;

 private:
  enum class LaunchResult { kServing, kAddressInUse };

  void WriteConfig();
  void WritePasswordFile();
  void GenerateTlsMaterial();
  void OpenSsl(const std::vector<std::string>& args);
  LaunchResult Launch();
  void RelaunchOnSamePorts();
  std::string Diagnostics(const std::string& log_tail) const;

  Options options_;
  TempDir dir_;
  Process process_;
  bool configured_ = false;
  uint16_t port_ = 0;
  uint16_t tls_port_ = 0;
  std::string config_file_;
  std::string log_file_;
  std::string ca_file_;
  std::string client_cert_file_;
  std::string client_key_file_;
  std::string wrong_ca_file_;
  std::string expired_client_cert_file_;
  std::string expired_client_key_file_;
};

}  // namespace sanigate::test
