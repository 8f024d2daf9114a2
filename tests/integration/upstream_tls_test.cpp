// TLS to an upstream city broker (issue 21): a broker whose certificate the box cannot verify
// (wrong CA), a broker that refuses the box's expired client certificate and a broker whose
// certificate is for another host are all refused; the gateway status and log say which of the
// three it was, the city gets nothing, and the local broker is not held back. With the config
// fixed and the gateway restarted, every record held for the city arrives. A city that is down
// or refuses the credentials is named so too. Certificates come from the test's own throw-away
// CA (MosquittoBroker with tls).
#include <iostream>

#include "gateway_fixture.h"

namespace sanigate::test {
namespace {

constexpr const char* kStatusTopic = "sanigate/v1/houpu/gateway/gw-test/status";

class UpstreamTlsTest : public GatewayTest {
 protected:
  std::unique_ptr<MosquittoBroker> city;
  std::unique_ptr<MqttCapture> city_capture;

  // The city broker with a TLS listener; the test watches it on its plain listener.
  void StartCity(MosquittoBroker::Options o) {
    o.tls = true;
    o.persistence = true;
    city = std::make_unique<MosquittoBroker>(o);
    city->Start();
    city_capture =
        std::make_unique<MqttCapture>(city->url(), "city-capture", /*clean_session=*/false);
    city_capture->Connect();
    city_capture->Subscribe("#", 1);
  }

  // A gateway polling one room every 100 ms, sending its telemetry to the city over TLS with
  // `tls` as the [upstream.tls] table.
  std::string Config(const std::string& tls) const {
    return BaseConfig() + "[[upstream]]\nname = \"city\"\nurl = \"" + city->tls_url() +
           "\"\nreconnect_min_ms = 100\nreconnect_max_ms = 500\nkinds = "
           "[\"telemetry\"]\n[upstream.tls]\n" +
           tls + "\n[modbus]\n" + RoomConfig("room-07", 0, 100);
  }

  std::string Tls(const std::string& ca, const std::string& cert = "",
                  const std::string& key = "") const {
    std::string t = "ca_file = \"" + ca + "\"\n";
    if (!cert.empty()) t += "cert_file = \"" + cert + "\"\nkey_file = \"" + key + "\"\n";
    return t;
  }

  // Record ids of room-07's telemetry under `prefix`, first occurrences, in order.
  static std::vector<std::string> Ids(const std::vector<Captured>& msgs,
                                      const std::string& prefix) {
    std::vector<std::string> ids;
    for (const auto& p : Unique(msgs, "/devices/room-07/telemetry"))
      if (p.topic.rfind(prefix + "/", 0) == 0) ids.push_back(p.payload["id"].get<std::string>());
    return ids;
  }

  std::vector<std::string> CityIds() const {
    return Ids(city_capture->Messages(), "sanigate/v1/houpu");
  }
  std::vector<std::string> LocalIds() const {
    return Ids(capture->Messages(), "sanigate/v1/houpu");
  }

  // The city's entry of the last gateway status seen on the local broker.
  json LastCityStatus() const {
    json last;
    for (const auto& m : capture->Messages())
      if (m.topic == kStatusTopic) {
        json j = json::parse(m.payload, nullptr, false);
        if (j.is_object() && j.contains("upstreams")) last = j["upstreams"][0];
      }
    return last;
  }

  // Waits for a gateway status in which the city is down, is owed records and its last_error
  // contains `needle`; returns that last_error, empty when none came in time.
  std::string WaitCityError(const std::string& needle, std::chrono::milliseconds timeout) {
    std::string found;
    capture->WaitFor(
        [&](const std::vector<Captured>& msgs) {
          for (const auto& m : msgs) {
            if (m.topic != kStatusTopic) continue;
            json j = json::parse(m.payload, nullptr, false);
            if (!j.is_object() || !j.contains("upstreams")) continue;
            const json& u = j["upstreams"][0];
            if (u["name"] != "city" || u["connected"] != false || !u["pending"].is_number() ||
                u["pending"].get<int64_t>() <= 0 || !u.contains("last_error"))
              continue;
            std::string e = u["last_error"].get<std::string>();
            if (e.find(needle) != std::string::npos) {
              found = e;
              return true;
            }
          }
          return false;
        },
        timeout);
    if (!found.empty()) std::cout << "upstream city last_error: " << found << "\n";
    return found;
  }

  // The error as an operator meets it: one short printable line, in the status and in the log.
  void ExpectOperatorFacing(const std::string& error, const std::string& starts_with) {
    EXPECT_EQ(error.rfind(starts_with, 0), 0u) << error;
    EXPECT_LT(error.size(), 200u) << error;
    for (char c : error) EXPECT_TRUE(c >= 0x20 && c < 0x7F) << "unprintable byte in " << error;
    EXPECT_NE(GatewayLog().find("upstream city: " + error), std::string::npos) << GatewayLog();
  }

  // The local broker keeps getting readings while the city refuses the box.
  void ExpectLocalStreamGoesOn() {
    size_t before = Reads("room-07").size();
    EXPECT_TRUE(WaitReads("room-07", before + 20, 10s)) << GatewayLog();
  }

  // Stops the gateway, rewrites its config and starts it again: every record the local broker
  // got (and so the outbox holds for the city) reaches the city.
  void FixAndExpectEverythingArrives(const std::string& tls) {
    ASSERT_TRUE(ExitedWith(gateway.Stop(), 0)) << GatewayLog();
    std::vector<std::string> held = LocalIds();
    ASSERT_GE(held.size(), 20u);
    WriteConfig(Config(tls));
    StartGateway();
    ASSERT_TRUE(city_capture->WaitFor(
        [&](const std::vector<Captured>& msgs) {
          auto got = Ids(msgs, "sanigate/v1/houpu");
          std::set<std::string> have(got.begin(), got.end());
          for (const auto& id : held)
            if (!have.count(id)) return false;
          return true;
        },
        20s))
        << CityIds().size() << " of " << held.size() << " held records reached the city\n"
        << GatewayLog();
    // The ones held first go first.
    auto got = CityIds();
    EXPECT_EQ(std::vector<std::string>(got.begin(), got.begin() + static_cast<long>(held.size())),
              held);
  }
};

// The box trusts another CA than the one that signed the city's certificate.
TEST_F(UpstreamTlsTest,
       AWrongCaIsRefusedAsACertificateVerifyFailureAndTheRightCaGetsEverythingThrough) {
  StartBroker();
  StartCity({});
  StartSim(1, {"--counter", "hr:4"});
  Capture();
  WriteConfig(Config(Tls(city->wrong_ca_file())));
  StartGateway();
  ASSERT_TRUE(WaitReads("room-07", 20, 10s)) << GatewayLog();
  std::string error = WaitCityError("certificate verify failed", 15s);
  ASSERT_FALSE(error.empty()) << LastCityStatus().dump();
  ExpectOperatorFacing(error,
                       "connect to " + city->tls_url() + " failed: TLS: certificate verify failed");
  // OpenSSL's chain verdict, and what it means here.
  EXPECT_NE(error.find("(the broker's certificate is not signed by the CA in ca_file)"),
            std::string::npos)
      << error;
  ExpectLocalStreamGoesOn();
  EXPECT_TRUE(CityIds().empty()) << "a broker the box cannot verify got records";

  FixAndExpectEverythingArrives(Tls(city->ca_file()));
}

// The city demands a client certificate, and the box's expired a while ago. Over TLS 1.3 the
// box's handshake completes and the broker then hangs up: the error must still name the cause.
TEST_F(UpstreamTlsTest,
       AnExpiredClientCertificateIsRefusedAndNamedAndARenewedOneGetsEverythingThrough) {
  StartBroker();
  StartCity({.require_client_certificate = true});
  StartSim(1, {"--counter", "hr:4"});
  Capture();
  WriteConfig(Config(
      Tls(city->ca_file(), city->expired_client_cert_file(), city->expired_client_key_file())));
  StartGateway();
  ASSERT_TRUE(WaitReads("room-07", 20, 10s)) << GatewayLog();
  std::string error = WaitCityError("certificate expired", 15s);
  ASSERT_FALSE(error.empty()) << LastCityStatus().dump();
  ExpectOperatorFacing(error, "connect to " + city->tls_url() + " failed: TLS: ");
  EXPECT_NE(error.find("client certificate"), std::string::npos) << error;
  // The broker did refuse the certificate (it logs only OpenSSL's generic words).
  EXPECT_NE(city->log().find("certificate verify failed"), std::string::npos) << city->log();
  ExpectLocalStreamGoesOn();
  EXPECT_TRUE(CityIds().empty()) << "a broker that demands a valid client certificate got records";

  FixAndExpectEverythingArrives(
      Tls(city->ca_file(), city->client_cert_file(), city->client_key_file()));
}

// The city's certificate is signed by the CA the box trusts but names city.example only, while
// the box connects to 127.0.0.1: with verify_peer (the default) the hostname is checked too.
TEST_F(UpstreamTlsTest, ACertificateForAnotherHostIsRefusedAsAHostnameMismatch) {
  StartBroker();
  StartCity({.server_cert_host = "city.example"});
  StartSim(1, {"--counter", "hr:4"});
  Capture();
  WriteConfig(Config(Tls(city->ca_file())));
  StartGateway();
  ASSERT_TRUE(WaitReads("room-07", 20, 10s)) << GatewayLog();
  std::string error = WaitCityError("hostname mismatch", 15s);
  ASSERT_FALSE(error.empty()) << LastCityStatus().dump();
  ExpectOperatorFacing(error, "connect to " + city->tls_url() + " failed: TLS: hostname mismatch");
  EXPECT_NE(error.find("is not for 127.0.0.1 (it is for DNS:city.example)"), std::string::npos)
      << error;
  ExpectLocalStreamGoesOn();
  EXPECT_TRUE(CityIds().empty()) << "a broker with a certificate for another host got records";
}

// Without TLS: a city that is down says connection refused; one that refuses the box's
// credentials says not authorized.
TEST_F(UpstreamTlsTest, ACityThatIsDownOrRefusesTheCredentialsIsNamedSo) {
  StartBroker();
  city = std::make_unique<MosquittoBroker>(MosquittoBroker::Options{
      .require_password = true, .username = "city-user", .password = "right"});
  city->Start();
  city->Stop();
  StartSim(1, {"--counter", "hr:4"});
  Capture();
  WriteConfig(BaseConfig() + "[[upstream]]\nname = \"city\"\nurl = \"" + city->url() +
              "\"\nusername = \"city-user\"\npassword = \"pw-wr0ng-4711\"\nreconnect_min_ms = "
              "100\nreconnect_max_ms = 500\n" +
              "kinds = [\"telemetry\"]\n[modbus]\n" + RoomConfig("room-07", 0, 100));
  StartGateway();
  std::string error = WaitCityError("connection refused", 15s);
  ASSERT_FALSE(error.empty()) << LastCityStatus().dump();
  ExpectOperatorFacing(error, "connect to " + city->url() + " failed: connection refused");

  city->Restart();
  error = WaitCityError("not authorized", 15s);
  ASSERT_FALSE(error.empty()) << LastCityStatus().dump();
  ExpectOperatorFacing(error, "connect to " + city->url() +
                                  " failed: the broker refused the connection: not authorized");
  EXPECT_EQ(GatewayLog().find("pw-wr0ng-4711"), std::string::npos) << "the password was logged";
}

}  // namespace
}  // namespace sanigate::test
