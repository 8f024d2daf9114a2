#include "mqtt/connect_diagnosis.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <memory>
#include <utility>

namespace sanigate::mqtt {
namespace {

using Clock = std::chrono::steady_clock;

// How long the broker gets after the handshake to refuse the client certificate: a TLS 1.3
// server checks it after the client's handshake is complete and answers with an alert.
constexpr std::chrono::milliseconds kVerdictWait{1500};

template <class T, void (*Free)(T*)>
struct Deleter {
  void operator()(T* p) const { Free(p); }
};
using CtxPtr = std::unique_ptr<SSL_CTX, Deleter<SSL_CTX, SSL_CTX_free>>;
using SslPtr = std::unique_ptr<SSL, Deleter<SSL, SSL_free>>;
using X509Ptr = std::unique_ptr<X509, Deleter<X509, X509_free>>;

struct Socket {
  int fd = -1;
  Socket() = default;
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;
  ~Socket() {
    if (fd >= 0) ::close(fd);
  }
};

std::string Lowercased(std::string s) {
  if (!s.empty()) s[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(s[0])));
  return s;
}

bool IsIpLiteral(const std::string& host) {
  unsigned char buf[sizeof(in6_addr)];
  return ::inet_pton(AF_INET, host.c_str(), buf) == 1 ||
         ::inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

// OpenSSL's reason for the last error on this thread's queue ("wrong version number"), or "".
std::string OpenSslReason() {
  unsigned long err = ERR_peek_last_error();
  if (err == 0) return {};
  if (const char* reason = ERR_reason_error_string(err)) return reason;
  char buf[256];
  ERR_error_string_n(err, buf, sizeof buf);
  return buf;
}

// A write to a broker that has hung up must fail with EPIPE, not end the process: SIGPIPE is
// blocked on this thread while the probe runs, and one raised meanwhile is taken off.
class SigpipeBlocked {
 public:
  SigpipeBlocked() {
    sigemptyset(&pipe_);
    sigaddset(&pipe_, SIGPIPE);
    sigset_t pending;
    was_pending_ = sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE) == 1;
    pthread_sigmask(SIG_BLOCK, &pipe_, &old_);
  }
  ~SigpipeBlocked() {
    if (!was_pending_) {
      const timespec now{0, 0};
      while (sigtimedwait(&pipe_, nullptr, &now) == SIGPIPE) {
      }
    }
    pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }
  SigpipeBlocked(const SigpipeBlocked&) = delete;
  SigpipeBlocked& operator=(const SigpipeBlocked&) = delete;

 private:
  sigset_t pipe_, old_;
  bool was_pending_ = false;
};

// ---- certificates ----

std::string UtcMinute(const ASN1_TIME* t) {
  std::tm tm{};
  if (!t || ASN1_TIME_to_tm(t, &tm) != 1) return "?";
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M UTC", &tm);
  return buf;
}

// "" when `cert` is valid now, else "certificate expired (not after ...)" or "certificate not
// yet valid (not before ...)".
std::string DateProblem(const X509* cert) {
  if (X509_cmp_current_time(X509_get0_notAfter(cert)) < 0)
    return "certificate expired (not after " + UtcMinute(X509_get0_notAfter(cert)) + ")";
  if (X509_cmp_current_time(X509_get0_notBefore(cert)) > 0)
    return "certificate not yet valid (not before " + UtcMinute(X509_get0_notBefore(cert)) + ")";
  return {};
}

// The names a certificate is for: its subject alternative names (at most four), else its CN.
std::string CertificateNames(X509* cert) {
  std::string names;
  int shown = 0, more = 0;
  auto* sans =
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  for (int i = 0; sans && i < sk_GENERAL_NAME_num(sans); ++i) {
    const GENERAL_NAME* n = sk_GENERAL_NAME_value(sans, i);
    std::string name;
    if (n->type == GEN_DNS) {
      name =
          "DNS:" + std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(n->d.dNSName)),
                               static_cast<size_t>(ASN1_STRING_length(n->d.dNSName)));
    } else if (n->type == GEN_IPADD) {
      char buf[INET6_ADDRSTRLEN] = "?";
      int len = ASN1_STRING_length(n->d.iPAddress);
      if (len == 4 || len == 16)
        ::inet_ntop(len == 4 ? AF_INET : AF_INET6, ASN1_STRING_get0_data(n->d.iPAddress), buf,
                    sizeof buf);
      name = std::string("IP:") + buf;
    } else {
      continue;
    }
    if (shown == 4) {
      ++more;
      continue;
    }
    names += (shown++ ? ", " : "") + name;
  }
  if (sans) GENERAL_NAMES_free(sans);
  if (more) names += " and " + std::to_string(more) + " more";
  if (names.empty()) {
    char cn[256];
    if (X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn, sizeof cn) > 0)
      names = std::string("CN=") + cn;
  }
  return names;
}

// ---- the handshake ----

// What OpenSSL tells about the probe while it runs (SSL app data).
struct Probe {
  int alert = 0;           // the fatal alert the broker sent (TLS alert description), 0 none
  std::string alert_text;  // in OpenSSL's words, e.g. "certificate expired"
  int refused_depth = -1;  // the chain position of the certificate the chain check refused
  std::string refused_dates;
};

void InfoCallback(const SSL* ssl, int where, int value) {
  // value: alert level << 8 | description; level 2 is fatal (a close_notify is a warning).
  if (!(where & SSL_CB_READ_ALERT) || (value >> 8) != 2) return;
  auto* probe = static_cast<Probe*>(SSL_get_app_data(ssl));
  if (!probe || probe->alert) return;
  probe->alert = value & 0xFF;
  probe->alert_text = SSL_alert_desc_string_long(value);
  if (probe->alert_text == "unknown")  // OpenSSL 3.0 has no words for the TLS 1.3 alerts
    probe->alert_text = probe->alert == SSL_AD_CERTIFICATE_REQUIRED
                            ? "certificate required"
                            : "code " + std::to_string(probe->alert);
}

int VerifyCallback(int ok, X509_STORE_CTX* store) {
  if (ok) return ok;
  auto* ssl =
      static_cast<SSL*>(X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx()));
  auto* probe = ssl ? static_cast<Probe*>(SSL_get_app_data(ssl)) : nullptr;
  if (probe && probe->refused_depth < 0) {
    probe->refused_depth = X509_STORE_CTX_get_error_depth(store);
    if (X509* cert = X509_STORE_CTX_get_current_cert(store))
      probe->refused_dates = DateProblem(cert);
  }
  return ok;
}

// Waits until `fd` is ready for `events`; false when the deadline passes or `stop` turns true.
bool WaitReady(int fd, short events, Clock::time_point deadline,
               const std::function<bool()>& stop) {
  while (!stop()) {
    auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) return false;
    pollfd p{fd, events, 0};
    int n = ::poll(&p, 1, static_cast<int>(std::min<int64_t>(left.count(), 100)));
    if (n > 0 || (n < 0 && errno != EINTR)) return true;  // the next call tells what happened
  }
  return false;
}

constexpr int kTimedOut = -1;

// Runs an SSL call on the non-blocking socket until it completes: its SSL_get_error (0 done),
// or kTimedOut. On failure, the error queue and errno are left for the caller to read.
template <class Call>
int Drive(SSL* ssl, int fd, Call call, Clock::time_point deadline,
          const std::function<bool()>& stop) {
  for (;;) {
    ERR_clear_error();
    errno = 0;
    int r = call();
    if (r > 0) return 0;
    int e = SSL_get_error(ssl, r);
    if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) return e;
    if (!WaitReady(fd, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline, stop))
      return kTimedOut;
  }
}

// Why an SSL call failed (its SSL_get_error `e`) when the broker sent no alert; "" when the
// broker just closed the connection.
std::string SslFailure(int e) {
  if (std::string reason = OpenSslReason(); !reason.empty()) {
    if (reason == "wrong version number" || reason == "packet length too long")
      reason += " (is the port a TLS listener?)";
    return reason;
  }
  if (e == SSL_ERROR_SYSCALL && errno != 0) return Lowercased(std::strerror(errno));
  return {};
}

// Why our client certificate is not valid now, "" when it is (or cannot be read here).
std::string ClientCertificateDates(const TlsOptions& tls) {
  if (tls.cert_file.empty()) return {};
  std::string dates = CertificateDateProblem(tls.cert_file);
  return dates.rfind("certificate ", 0) == 0 ? dates : std::string();
}

bool IsCertificateAlert(int alert) {
  switch (alert) {
    case SSL_AD_BAD_CERTIFICATE:
    case SSL_AD_UNSUPPORTED_CERTIFICATE:
    case SSL_AD_CERTIFICATE_REVOKED:
    case SSL_AD_CERTIFICATE_EXPIRED:
    case SSL_AD_CERTIFICATE_UNKNOWN:
    case SSL_AD_UNKNOWN_CA:
    case SSL_AD_CERTIFICATE_REQUIRED:
      return true;
    default:
      return false;
  }
}

// The broker ended the connection with a fatal alert, during or after the handshake.
std::string AlertVerdict(const Probe& probe, const TlsOptions& tls) {
  std::string alert = "\"" + probe.alert_text + "\"";
  if (tls.cert_file.empty()) {
    if (IsCertificateAlert(probe.alert) || probe.alert == SSL_AD_HANDSHAKE_FAILURE)
      return "TLS: the broker sent alert " + alert +
             ": does it want a client certificate (cert_file, key_file)?";
    return "TLS: the broker sent alert " + alert;
  }
  if (!IsCertificateAlert(probe.alert)) return "TLS: the broker sent alert " + alert;
  std::string why = "TLS: the broker refused our client certificate: ";
  if (std::string dates = ClientCertificateDates(tls); !dates.empty()) {
    // Ours expired (or is not yet valid): that is the cause, whatever words the broker used.
    why += dates;
    if (dates.rfind(probe.alert_text, 0) != 0) why += " (alert " + alert + ")";
    return why;
  }
  why += probe.alert_text;
  if (probe.alert == SSL_AD_UNKNOWN_CA) why += " (the broker does not trust the CA that signed it)";
  return why;
}

// The chain check refused the broker's certificate: why, from SSL_get_verify_result.
std::string ChainVerdict(long result, const Probe& probe, const TlsOptions& tls) {
  std::string why =
      std::string("TLS: certificate verify failed: ") + X509_verify_cert_error_string(result);
  std::string whose = probe.refused_depth <= 0 ? "the broker's certificate"
                                               : "a CA certificate of the broker's chain (depth " +
                                                     std::to_string(probe.refused_depth) + ")";
  switch (result) {
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_CERT_UNTRUSTED:
      why += tls.ca_file.empty()
                 ? " (the broker's certificate is not signed by a CA of the system store)"
                 : " (the broker's certificate is not signed by the CA in ca_file)";
      break;
    case X509_V_ERR_CERT_HAS_EXPIRED:
    case X509_V_ERR_CERT_NOT_YET_VALID:
      if (!probe.refused_dates.empty()) {
        // "certificate expired (not after ...)": keep the parenthesis.
        std::string dates = probe.refused_dates;
        why += " (" + whose + ": " + dates.substr(dates.find('(') + 1);
      } else {
        why += " (" + whose + ")";
      }
      break;
    default:
      break;
  }
  return why;
}

// The TCP connect: a connected non-blocking socket in `sock`, or why not.
std::string TcpConnect(const BrokerAddress& broker, Clock::time_point deadline,
                       const std::function<bool()>& stop, Socket& sock) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (int rc = ::getaddrinfo(broker.host.c_str(), broker.port.c_str(), &hints, &res); rc != 0)
    return "cannot resolve host " + PrintableLine(broker.host, 60) + ": " + ::gai_strerror(rc);
  std::string problem = "no address for host " + PrintableLine(broker.host, 60);
  for (addrinfo* a = res; a; a = a->ai_next) {
    Socket s;
    s.fd = ::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
    if (s.fd < 0) continue;
    int err = ::connect(s.fd, a->ai_addr, a->ai_addrlen) == 0 ? 0 : errno;
    if (err == EINPROGRESS) {
      err = ETIMEDOUT;
      if (WaitReady(s.fd, POLLOUT, deadline, stop)) {
        socklen_t len = sizeof err;
        ::getsockopt(s.fd, SOL_SOCKET, SO_ERROR, &err, &len);
      }
    }
    if (err == 0) {
      std::swap(sock.fd, s.fd);
      problem.clear();
      break;
    }
    problem = err == ETIMEDOUT ? "no answer to the TCP connect (timed out)"
                               : Lowercased(std::strerror(err));
  }
  ::freeaddrinfo(res);
  return problem;
}

// An SSL_CTX as the client library builds it from the link's TLS settings, or why it cannot be built.
std::string MakeContext(const TlsOptions& tls, CtxPtr& ctx) {
  for (auto [key, file] :
       {std::pair{"ca_file", &tls.ca_file}, std::pair{"cert_file", &tls.cert_file},
        std::pair{"key_file", &tls.key_file}}) {
    if (!file->empty() && ::access(file->c_str(), R_OK) != 0)
      return std::string("TLS: cannot read ") + key + " " + PrintableLine(*file, 80) + ": " +
             Lowercased(std::strerror(errno));
  }
  ERR_clear_error();
  ctx.reset(SSL_CTX_new(TLS_client_method()));
  if (!ctx) return "TLS: cannot set up OpenSSL: " + OpenSslReason();
  auto bad = [](const char* key, const std::string& file) {
    return std::string("TLS: ") + key + " " + PrintableLine(file, 80) + ": " + OpenSslReason();
  };
  if (tls.ca_file.empty()
          ? SSL_CTX_set_default_verify_paths(ctx.get()) != 1
          : SSL_CTX_load_verify_locations(ctx.get(), tls.ca_file.c_str(), nullptr) != 1)
    return bad("ca_file", tls.ca_file);
  if (!tls.cert_file.empty()) {
    if (SSL_CTX_use_certificate_chain_file(ctx.get(), tls.cert_file.c_str()) != 1)
      return bad("cert_file", tls.cert_file);
    const std::string& key = tls.key_file.empty() ? tls.cert_file : tls.key_file;
    if (SSL_CTX_use_PrivateKey_file(ctx.get(), key.c_str(), SSL_FILETYPE_PEM) != 1)
      return bad("key_file", key);
    if (SSL_CTX_check_private_key(ctx.get()) != 1)
      return "TLS: key_file does not belong to cert_file";
  }
  SSL_CTX_set_verify(ctx.get(), tls.verify_peer ? SSL_VERIFY_PEER : SSL_VERIFY_NONE,
                     VerifyCallback);
  SSL_CTX_set_info_callback(ctx.get(), InfoCallback);
  return {};
}

}  // namespace

BrokerAddress ParseBrokerAddress(const std::string& url, bool tls) {
  size_t scheme = url.find("://");
  std::string rest = url.substr(scheme == std::string::npos ? 0 : scheme + 3);
  if (size_t slash = rest.find('/'); slash != std::string::npos) rest.resize(slash);
  BrokerAddress a{rest, tls ? "8883" : "1883"};
  if (!rest.empty() && rest[0] == '[') {
    size_t close = rest.find(']');
    a.host = rest.substr(1, close == std::string::npos ? std::string::npos : close - 1);
    if (close != std::string::npos && close + 1 < rest.size() && rest[close + 1] == ':')
      a.port = rest.substr(close + 2);
  } else if (size_t colon = rest.rfind(':'); colon != std::string::npos) {
    a.host = rest.substr(0, colon);
    a.port = rest.substr(colon + 1);
  }
  return a;
}

std::string DiagnoseConnectFailure(const BrokerAddress& broker, const TlsOptions& tls,
                                   std::chrono::milliseconds timeout,
                                   const std::function<bool()>& stop,
                                   std::string_view client_said) {
  std::string said =
      client_said.empty() ? std::string("connect failed") : PrintableLine(client_said, 60);
  CtxPtr ctx;
  if (tls.enabled)
    if (std::string problem = MakeContext(tls, ctx); !problem.empty()) return problem;

  Socket sock;
  if (std::string problem = TcpConnect(broker, Clock::now() + timeout, stop, sock);
      !problem.empty())
    return stop() ? std::string() : problem;
  if (!tls.enabled)
    return "the broker closed the connection before answering the CONNECT (" + said + ")";

  Probe probe;
  SslPtr ssl(SSL_new(ctx.get()));
  if (!ssl) return "TLS: cannot set up OpenSSL: " + OpenSslReason();
  SSL_set_app_data(ssl.get(), &probe);
  SSL_set_fd(ssl.get(), sock.fd);
  if (!IsIpLiteral(broker.host)) SSL_set_tlsext_host_name(ssl.get(), broker.host.c_str());
  SigpipeBlocked sigpipe_blocked;
  int e = Drive(
      ssl.get(), sock.fd, [&] { return SSL_connect(ssl.get()); }, Clock::now() + timeout, stop);
  if (stop()) return {};
  if (e == kTimedOut)
    return "TLS: the broker did not complete the handshake within " +
           std::to_string(timeout.count()) + " ms";
  if (e != 0) {
    if (long result = SSL_get_verify_result(ssl.get()); tls.verify_peer && result != X509_V_OK)
      return ChainVerdict(result, probe, tls);
    if (probe.alert) return AlertVerdict(probe, tls);
    std::string failure = SslFailure(e);
    return "TLS: the handshake failed: " +
           (failure.empty() ? std::string("the broker closed the connection") : failure);
  }

  // The client library checks the hostname against the certificate's names (DNS names, or IP
  // addresses for an IP literal); done here after the handshake with X509_check_host/_ip_asc.
  if (tls.verify_peer) {
    X509Ptr peer(SSL_get1_peer_certificate(ssl.get()));
    if (!peer) return "TLS: the broker sent no certificate";
    int match = IsIpLiteral(broker.host) ? X509_check_ip_asc(peer.get(), broker.host.c_str(), 0)
                                         : X509_check_host(peer.get(), broker.host.c_str(),
                                                           broker.host.size(), 0, nullptr);
    if (match != 1) {
      std::string names = CertificateNames(peer.get());
      return "TLS: hostname mismatch: the broker's certificate is not for " +
             PrintableLine(broker.host, 60) +
             (names.empty() ? std::string() : " (it is for " + names + ")");
    }
  }

  // The broker's verdict on the client certificate (TLS 1.3 sends it after the handshake).
  char byte;
  e = Drive(
      ssl.get(), sock.fd, [&] { return SSL_peek(ssl.get(), &byte, 1); },
      Clock::now() + kVerdictWait, stop);
  if (stop()) return {};
  if (probe.alert) return AlertVerdict(probe, tls);
  if (e == 0 || e == kTimedOut) {
    SSL_shutdown(ssl.get());  // close_notify, not waiting for the broker's
    return said + " (a second look found TCP, the TLS handshake and the certificates in order)";
  }
  std::string failure = SslFailure(e);
  std::string closed = "TLS: the broker closed the connection after the handshake" +
                       (failure.empty() ? std::string() : " (" + failure + ")");
  if (tls.cert_file.empty()) return closed + ": does it want a client certificate?";
  if (std::string dates = ClientCertificateDates(tls); !dates.empty())
    return "TLS: the broker refused our client certificate: " + dates;
  return closed + ": did it refuse our client certificate?";
}

std::string CertificateDateProblem(const std::string& path) {
  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "r"), &std::fclose);
  X509Ptr cert(f ? PEM_read_X509(f.get(), nullptr, nullptr, nullptr) : nullptr);
  ERR_clear_error();
  if (!cert) return "cannot read a certificate from " + PrintableLine(path, 80);
  return DateProblem(cert.get());
}

std::string ConnackRefusalText(int code) {
  static constexpr std::pair<int, const char*> kWords[] = {{0x80, "unspecified error"},
                                                           {0x81, "malformed packet"},
                                                           {0x82, "protocol error"},
                                                           {0x83, "implementation specific error"},
                                                           {0x84, "unsupported protocol version"},
                                                           {0x85, "client identifier not valid"},
                                                           {0x86, "bad user name or password"},
                                                           {0x87, "not authorized"},
                                                           {0x88, "server unavailable"},
                                                           {0x89, "server busy"},
                                                           {0x8A, "banned"},
                                                           {0x8C, "bad authentication method"},
                                                           {0x95, "packet too large"},
                                                           {0x97, "quota exceeded"},
                                                           {0x9C, "use another server"},
                                                           {0x9D, "server moved"},
                                                           {0x9F, "connection rate exceeded"}};
  const char* words = "refused";
  for (auto [c, w] : kWords)
    if (c == code) words = w;
  return std::string("the broker refused the connection: ") + words + " (reason code " +
         std::to_string(code) + ")";
}

std::string PrintableLine(std::string_view in, size_t max) {
  while (!in.empty() && std::isspace(static_cast<unsigned char>(in.back()))) in.remove_suffix(1);
  std::string out;
  for (unsigned char c : in) {
    if (c >= 0x20 && c < 0x7F) {
      out += static_cast<char>(c);
    } else {
      static const char* kHex = "0123456789abcdef";
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 0xF];
    }
  }
  if (out.size() > max) out = out.substr(0, max > 3 ? max - 3 : 0) + "...";
  return out;
}

}  // namespace sanigate::mqtt
