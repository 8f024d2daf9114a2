// connect_diagnosis: the validity of a client certificate as OpenSSL reads it, the one-line error
// text, and the look at a broker from outside against stand-ins on 127.0.0.1 (a closed port, a
// plain TCP listener, a TLS listener in a thread with a certificate made here: expired, for
// another host, self-signed and unknown to the box). The upstream_tls integration test covers
// the same against Mosquitto.
#include "mqtt/connect_diagnosis.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <thread>

#include "test_support.h"

namespace sanigate::mqtt {
namespace {

using namespace std::chrono_literals;

bool NeverStop() { return false; }

// A self-signed EC certificate valid from `from` to `to` (seconds from now) for the
// subjectAltName `san`, written with its key as DIR/NAME.crt and DIR/NAME.key.
void MakeCertificate(const std::filesystem::path& dir, const std::string& name, long from, long to,
                     const std::string& san) {
  EVP_PKEY* key = EVP_EC_gen("P-256");
  ASSERT_NE(key, nullptr);
  X509* cert = X509_new();
  X509_set_version(cert, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(cert), 7);
  X509_gmtime_adj(X509_getm_notBefore(cert), from);
  X509_gmtime_adj(X509_getm_notAfter(cert), to);
  X509_set_pubkey(cert, key);
  X509_NAME* subject = X509_get_subject_name(cert);
  X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(name.c_str()), -1, -1, 0);
  X509_set_issuer_name(cert, subject);
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, cert, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, NID_subject_alt_name, san.c_str());
  ASSERT_NE(ext, nullptr);
  X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
  ASSERT_GT(X509_sign(cert, key, EVP_sha256()), 0);
  FILE* f = std::fopen((dir / (name + ".crt")).c_str(), "w");
  PEM_write_X509(f, cert);
  std::fclose(f);
  f = std::fopen((dir / (name + ".key")).c_str(), "w");
  PEM_write_PrivateKey(f, key, nullptr, nullptr, 0, nullptr, nullptr);
  std::fclose(f);
  X509_free(cert);
  EVP_PKEY_free(key);
}

// A TCP socket on 127.0.0.1 (an ephemeral port); listening or not.
struct Listener {
  int fd = -1;
  std::string port;
  explicit Listener(bool listening) {
    fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), len), 0);
    EXPECT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len), 0);
    port = std::to_string(ntohs(a.sin_port));
    if (listening) {
      EXPECT_EQ(::listen(fd, 4), 0);
    }
  }
  ~Listener() { ::close(fd); }
};

// A TLS server (TLS 1.3) for one connection, in a thread: the handshake with DIR/NAME.crt,
// demanding a client certificate signed by `client_ca` when given, then it waits (up to 5 s)
// for the client to go.
class TlsServer {
 public:
  TlsServer(const std::filesystem::path& dir, const std::string& name,
            const std::string& client_ca = "")
      : listener_(true) {
    std::signal(SIGPIPE, SIG_IGN);  // a client that has gone does not end the test
    ctx_ = SSL_CTX_new(TLS_server_method());
    EXPECT_EQ(SSL_CTX_use_certificate_file(ctx_, (dir / (name + ".crt")).c_str(), SSL_FILETYPE_PEM),
              1);
    EXPECT_EQ(SSL_CTX_use_PrivateKey_file(ctx_, (dir / (name + ".key")).c_str(), SSL_FILETYPE_PEM),
              1);
    if (!client_ca.empty()) {
      EXPECT_EQ(SSL_CTX_load_verify_locations(ctx_, client_ca.c_str(), nullptr), 1);
      SSL_CTX_set_verify(ctx_, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
    }
    thread_ = std::thread([this] {
      int fd = ::accept(listener_.fd, nullptr, nullptr);
      if (fd < 0) return;
      timeval tv{5, 0};
      ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      SSL* ssl = SSL_new(ctx_);
      SSL_set_fd(ssl, fd);
      if (SSL_accept(ssl) == 1) {
        char buf[16];
        while (SSL_read(ssl, buf, sizeof buf) > 0) {
        }
      }
      SSL_free(ssl);
      ::close(fd);
    });
  }
  ~TlsServer() {
    ::shutdown(listener_.fd, SHUT_RDWR);  // ends an accept() still waiting
    thread_.join();
    SSL_CTX_free(ctx_);
  }
  const std::string& port() const { return listener_.port; }

 private:
  Listener listener_;
  SSL_CTX* ctx_ = nullptr;
  std::thread thread_;
};

class ConnectDiagnosisTest : public ::testing::Test {
 protected:
  unit::ScratchDir dir;
  std::string File(const std::string& name) const { return (dir.path() / name).string(); }

  std::string Diagnose(const std::string& port, const TlsOptions& tls) {
    return DiagnoseConnectFailure({"127.0.0.1", port}, tls, 2s, NeverStop,
                                  "TCP/TLS connect failure");
  }
  static TlsOptions Tls(const std::string& ca_file) { return {true, ca_file, "", "", true}; }
};

TEST_F(ConnectDiagnosisTest, ReadsTheValidityOfACertificate) {
  MakeCertificate(dir.path(), "current", -3600, 3600, "DNS:box");
  MakeCertificate(dir.path(), "expired", -2 * 86400, -3600, "DNS:box");
  MakeCertificate(dir.path(), "future", 86400, 2 * 86400, "DNS:box");
  EXPECT_EQ(CertificateDateProblem(File("current.crt")), "");
  std::string expired = CertificateDateProblem(File("expired.crt"));
  EXPECT_EQ(expired.rfind("certificate expired (not after 20", 0), 0u) << expired;
  EXPECT_EQ(expired.substr(expired.size() - 5), " UTC)") << expired;
  std::string future = CertificateDateProblem(File("future.crt"));
  EXPECT_EQ(future.rfind("certificate not yet valid (not before 20", 0), 0u) << future;
  EXPECT_EQ(CertificateDateProblem(File("current.key")),
            "cannot read a certificate from " + File("current.key"));
  EXPECT_EQ(CertificateDateProblem(File("missing.crt")),
            "cannot read a certificate from " + File("missing.crt"));
}

TEST_F(ConnectDiagnosisTest, ErrorTextIsOnePrintableLine) {
  EXPECT_EQ(PrintableLine("bad\tbyte \xff\n"), "bad\\x09byte \\xff");
  std::string cut = PrintableLine(std::string(300, 'x'));
  EXPECT_EQ(cut.size(), 200u);
  EXPECT_EQ(cut.substr(197), "...");
  EXPECT_EQ(ConnackRefusalText(135),
            "the broker refused the connection: not authorized (reason code 135)");
  EXPECT_EQ(ConnackRefusalText(0x86),
            "the broker refused the connection: bad user name or password (reason code 134)");
}

TEST_F(ConnectDiagnosisTest, SplitsBrokerUrls) {
  auto a = ParseBrokerAddress("ssl://city.example:8884", true);
  EXPECT_EQ(a.host, "city.example");
  EXPECT_EQ(a.port, "8884");
  a = ParseBrokerAddress("ssl://[::1]:9000", true);
  EXPECT_EQ(a.host, "::1");
  EXPECT_EQ(a.port, "9000");
  a = ParseBrokerAddress("tcp://10.0.0.1", false);
  EXPECT_EQ(a.host, "10.0.0.1");
  EXPECT_EQ(a.port, "1883");
  EXPECT_EQ(ParseBrokerAddress("mqtts://city.example", true).port, "8883");
}

TEST_F(ConnectDiagnosisTest, NamesARefusedOrSilentTcpConnect) {
  Listener closed(false);  // bound, not listening: the kernel answers with a reset
  EXPECT_EQ(Diagnose(closed.port, {}), "connection refused");
  EXPECT_EQ(Diagnose(closed.port, Tls("")), "connection refused");
  Listener open(true);  // takes the connection, never answers
  EXPECT_EQ(
      Diagnose(open.port, {}),
      "the broker closed the connection before answering the CONNECT (TCP/TLS connect failure)");
  EXPECT_EQ(Diagnose(open.port, Tls("")),
            "TLS: the broker did not complete the handshake within 2000 ms");
}

TEST_F(ConnectDiagnosisTest, NamesAnUnreadableCaFile) {
  Listener closed(false);
  std::string why = Diagnose(closed.port, Tls(File("nowhere.crt")));
  EXPECT_EQ(why, "TLS: cannot read ca_file " + File("nowhere.crt") + ": no such file or directory");
}

TEST_F(ConnectDiagnosisTest, TellsAnUnknownCaFromAnExpiredBrokerCertificate) {
  MakeCertificate(dir.path(), "broker", -3600, 3600, "IP:127.0.0.1");
  MakeCertificate(dir.path(), "other", -3600, 3600, "IP:127.0.0.1");
  MakeCertificate(dir.path(), "expired", -2 * 86400, -3600, "IP:127.0.0.1");
  {
    TlsServer server(dir.path(), "broker");
    std::string why = Diagnose(server.port(), Tls(File("other.crt")));
    EXPECT_EQ(why.rfind("TLS: certificate verify failed: ", 0), 0u) << why;
    EXPECT_NE(why.find("(the broker's certificate is not signed by the CA in ca_file)"),
              std::string::npos)
        << why;
  }
  {
    TlsServer server(dir.path(), "expired");
    std::string why = Diagnose(server.port(), Tls(File("expired.crt")));
    EXPECT_EQ(
        why.rfind(
            "TLS: certificate verify failed: certificate has expired (the broker's certificate: "
            "not after 20",
            0),
        0u)
        << why;
  }
}

TEST_F(ConnectDiagnosisTest, NamesAHostnameMismatchAndFindsNothingWrongWithAGoodBroker) {
  MakeCertificate(dir.path(), "city", -3600, 3600, "DNS:city.example");
  MakeCertificate(dir.path(), "local", -3600, 3600, "IP:127.0.0.1,DNS:localhost");
  {
    TlsServer server(dir.path(), "city");
    EXPECT_EQ(Diagnose(server.port(), Tls(File("city.crt"))),
              "TLS: hostname mismatch: the broker's certificate is not for 127.0.0.1 (it is for "
              "DNS:city.example)");
  }
  {
    TlsServer server(dir.path(), "local");
    EXPECT_EQ(Diagnose(server.port(), Tls(File("local.crt"))),
              "TCP/TLS connect failure (a second look found TCP, the TLS handshake and the "
              "certificates in order)");
  }
}

// Over TLS 1.3 the broker checks the client certificate after the client's handshake is done
// and answers with an alert: the expired certificate is named with its date.
TEST_F(ConnectDiagnosisTest, NamesTheClientCertificateTheBrokerRefuses) {
  MakeCertificate(dir.path(), "local", -3600, 3600, "IP:127.0.0.1");
  MakeCertificate(dir.path(), "client", -2 * 86400, -3600, "DNS:box");
  {
    TlsServer server(dir.path(), "local", File("client.crt"));
    TlsOptions tls = Tls(File("local.crt"));
    tls.cert_file = File("client.crt");
    tls.key_file = File("client.key");
    std::string why = Diagnose(server.port(), tls);
    EXPECT_EQ(
        why.rfind(
            "TLS: the broker refused our client certificate: certificate expired (not after 20", 0),
        0u)
        << why;
    EXPECT_EQ(why.find("alert"), std::string::npos) << why;
  }
  {
    TlsServer server(dir.path(), "local", File("client.crt"));
    EXPECT_EQ(
        Diagnose(server.port(), Tls(File("local.crt"))),
        "TLS: the broker sent alert \"certificate required\": does it want a client certificate "
        "(cert_file, key_file)?");
  }
}

}  // namespace
}  // namespace sanigate::mqtt
