// Well-formed JSON with fields of the wrong type, from the gateways and from sanifleet (issue 17):
// nlohmann's value() throws type_error on them and get<int64_t>() of a huge float is undefined.
// The typed readers of core/untrusted.h, the firmware agent's install job and chunk answer
// decoders, and the rollout service's chunk server, job status and install answer handling must
// refuse or ignore such input cleanly.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>

#include "app/firmware_agent.h"
#include "app/rollout_service.h"
#include "core/untrusted.h"
#include "firmware/artifact.h"
#include "firmware/keys.h"

namespace sanigate {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

TEST(TypedJsonTest, IntegersAcceptWholeNumbersInsideTheirRangeOnly) {
  EXPECT_EQ(AsInt64(json(-5)), -5);
  EXPECT_EQ(AsInt64(json(3.0)), 3);
  EXPECT_EQ(AsInt64(json(1.5)), std::nullopt);
  EXPECT_EQ(AsInt64(json(1e30)), std::nullopt);
  EXPECT_EQ(AsInt64(json(-9223372036854775808.0)), INT64_MIN);
  EXPECT_EQ(AsInt64(json(9223372036854775808.0)), std::nullopt);
  EXPECT_EQ(AsInt64(json(uint64_t{1} << 63)), std::nullopt);
  EXPECT_EQ(AsInt64(json("7")), std::nullopt);
  EXPECT_EQ(AsUint64(json(uint64_t{1} << 63)), uint64_t{1} << 63);
  EXPECT_EQ(AsUint64(json(-1)), std::nullopt);
  EXPECT_EQ(AsUint64(json(-0.0)), 0u);
  EXPECT_EQ(AsUint64(json(18446744073709551616.0)), std::nullopt);
  EXPECT_EQ(AsUint64(json(true)), std::nullopt);
}

TEST(TypedJsonTest, FieldsOfAnotherTypeReadAsMissing) {
  json j = json::parse(R"({"s":"x","n":7,"b":true,"a":[1],"z":null})");
  EXPECT_EQ(FieldString(j, "s"), "x");
  EXPECT_EQ(FieldString(j, "n"), std::nullopt);
  EXPECT_EQ(FieldString(j, "missing"), std::nullopt);
  EXPECT_EQ(FieldBool(j, "b"), true);
  EXPECT_EQ(FieldBool(j, "z"), std::nullopt);
  EXPECT_EQ(FieldInt64(j, "n"), 7);
  EXPECT_EQ(FieldInt64(j, "a"), std::nullopt);
  EXPECT_EQ(FieldUint64(j, "s"), std::nullopt);
  EXPECT_EQ(FieldString(json::array({1}), "s"), std::nullopt) << "not an object";
}

json GoodJob() {
  return {{"campaign", "fw-1"}, {"device", "room-1"}, {"attempt", 2}, {"manifest", {{"v", 1}}}, {"chunks", "p/s/fleet/firmware/get"}};
}

TEST(FirmwareJobTest, WrongTypedFieldsAreRefusedNotThrown) {
  auto ok = DecodeFirmwareJob(GoodJob());
  ASSERT_TRUE(ok.ok()) << ok.status().message();
  EXPECT_EQ(ok->attempt, 2);
  json no_attempt = GoodJob();
  no_attempt.erase("attempt");
  EXPECT_EQ(DecodeFirmwareJob(no_attempt)->attempt, 1);

  const std::string needs = "a job needs campaign, device, attempt, manifest and chunks";
  for (const char* key : {"device", "campaign", "chunks"}) {
    for (json bad : {json(7), json(nullptr), json::array(), json::object(), json("")}) {
      json job = GoodJob();
      job[key] = bad;
      Result<FirmwareJobRequest> r = Invalid("");
      EXPECT_NO_THROW(r = DecodeFirmwareJob(job)) << key;
      EXPECT_EQ(r.status().message(), needs) << key << " = " << bad.dump();
    }
  }
  json manifest_text = GoodJob();
  manifest_text["manifest"] = "{}";
  EXPECT_EQ(DecodeFirmwareJob(manifest_text).status().message(), needs);
  for (json bad : {json("1"), json(1.5), json(1e30), json(0), json(-1), json(2147483648.0), json(true)}) {
    json job = GoodJob();
    job["attempt"] = bad;
    Result<FirmwareJobRequest> r = Invalid("");
    EXPECT_NO_THROW(r = DecodeFirmwareJob(job)) << bad.dump();
    EXPECT_EQ(r.status().message(), "attempt must be a whole number from 1 to 2147483647") << bad.dump();
  }
  EXPECT_EQ(DecodeFirmwareJob(json::array()).status().message(), "the job must be a JSON object");
}

TEST(ChunkAnswerTest, RefusalsFailAndMalformedDataIsAskedAgain) {
  auto good = DecodeChunkAnswer(R"({"ok":true,"result":{"offset":1024,"size":3000,"data":"AAEC"}})", 1024);
  ASSERT_TRUE(good.ok()) << good.status().message();
  EXPECT_EQ(good->offset, 1024u);
  EXPECT_EQ(good->data, std::string("\x00\x01\x02", 3));

  struct Case {
    const char* payload;
    Code code;
    const char* message;
  };
  const Case cases[] = {
      {"not json", Code::kInvalid, "unreadable answer"},
      {"[1]", Code::kInvalid, "unreadable answer"},
      {R"({"ok":false,"error":"no stored image"})", Code::kInvalid, "no stored image"},
      {R"({"ok":false,"error":7})", Code::kInvalid, "refused"},
      {R"({"ok":1,"result":{"offset":0,"data":""}})", Code::kInvalid, "refused"},
      {R"({"ok":"true"})", Code::kInvalid, "refused"},
      {R"({"ok":true})", Code::kUnavailable, "an answer without a result"},
      {R"({"ok":true,"result":null})", Code::kUnavailable, "an answer without offset and data"},
      {R"({"ok":true,"result":{"offset":"0","data":"AAAA"}})", Code::kUnavailable, "an answer without offset and data"},
      {R"({"ok":true,"result":{"offset":1e300,"data":"AAAA"}})", Code::kUnavailable, "an answer without offset and data"},
      {R"({"ok":true,"result":{"offset":-1,"data":"AAAA"}})", Code::kUnavailable, "an answer without offset and data"},
      {R"({"ok":true,"result":{"offset":0,"data":5}})", Code::kUnavailable, "an answer without offset and data"},
      {R"({"ok":true,"result":{"offset":0,"data":"*"}})", Code::kUnavailable, "chunk data that is not base64"},
  };
  for (const Case& c : cases) {
    Result<ChunkAnswer> r = Invalid("");
    EXPECT_NO_THROW(r = DecodeChunkAnswer(c.payload, 1024)) << c.payload;
    ASSERT_FALSE(r.ok()) << c.payload;
    EXPECT_EQ(r.status().code(), c.code) << c.payload;
    EXPECT_EQ(r.status().message(), c.message) << c.payload;
  }
  std::string big = R"({"ok":true,"result":{"offset":0,"data":")" + std::string(8000, 'A') + "\"}}";
  EXPECT_EQ(DecodeChunkAnswer(big, 16).status().message(), "unreadable answer") << "larger than a chunk of 16 bytes can be";
  EXPECT_EQ(DecodeChunkAnswer(R"({"ok":true,"result":{"offset":0,"data":"AAAAAAAA"}})", 4).status().message(),
            "a chunk larger than asked for");
  auto long_error = DecodeChunkAnswer(R"({"ok":false,"error":")" + std::string(5000, 'e') + "\"}", 1024);
  EXPECT_LE(long_error.status().message().size(), 200u) << "quoted and cut";
}

// A data directory with a trusted key and a stored image, and a running campaign whose first
// devices were sent their install jobs.
class RolloutPayloadTest : public ::testing::Test {
 protected:
  static constexpr int64_t kT0 = 1'767'225'600'000;

  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "sanigate-rollout-types-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    auto key = firmware::PrivateKey::Generate();
    ASSERT_TRUE(key.ok());
    std::string pub = (dir_ / "trusted.pub").string();
    ASSERT_TRUE(firmware::WritePublicKey(key->public_key(), pub).ok());
    std::string image(3000, 'i');
    auto span = std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(image.data()), image.size());
    auto manifest = firmware::SignImage(span, {"GR-200", "2.1.0", firmware::Target::kModbus, "", kT0}, *key);
    ASSERT_TRUE(manifest.ok());
    sha_ = firmware::DigestBytes(span)->sha256;
    fs::create_directories(dir_ / "firmware");
    std::ofstream(dir_ / "firmware" / (sha_ + ".img"), std::ios::binary) << image;
    std::ofstream(dir_ / "firmware" / (sha_ + ".json"), std::ios::binary) << *manifest;
    for (int i = 1; i <= 4; ++i) {
      fleet::DeviceEntry& e = registry_.Device("houpu", "room-" + std::to_string(i), kT0);
      e.protocol = "modbus-rtu";
      e.gateway = "gw-a";
      e.model = "GR-200";
      e.firmware = "1.0.0";
      e.online = true;
    }
    auto s = fleet::RolloutService::Create({dir_.string(), "sanigate/v1", "houpu", {pub}, 1024}, [](auto&, auto&, bool) {},
                                           [](auto&, auto&, auto&) {});
    ASSERT_TRUE(s.ok()) << s.status().message();
    service_ = std::move(*s);
    ASSERT_TRUE(Admin("rollout_create", {{"id", "fw-1"}, {"artifact_sha256", sha_}}).code.empty());
    ASSERT_TRUE(Admin("rollout_start", {{"id", "fw-1"}}).code.empty());
    service_->Tick(kT0 + 1000);
    for (const auto& d : Devices())
      if (d["state"] == "updating") updating_ = d["device"].get<std::string>();
    ASSERT_FALSE(updating_.empty());
  }
  void TearDown() override {
    service_.reset();
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  fleet::AdminAnswer Admin(const std::string& verb, const json& args) {
    fleet::AdminAnswer a;
    EXPECT_NO_THROW(a = service_->Admin(verb, args, registry_, kT0 + 2000)) << verb << " " << args.dump();
    return a;
  }
  json Devices() { return Admin("rollout_status", {{"id", "fw-1"}, {"devices", true}}).result["devices"]; }
  json Device(const std::string& key) {
    for (const auto& d : Devices())
      if (d["device"] == key) return d;
    return nullptr;
  }
  std::optional<std::string> JobStatus(const std::string& payload) {
    std::optional<std::string> r;
    std::string device = updating_.substr(updating_.find('/') + 1);
    EXPECT_NO_THROW(r = service_->OnJobStatus("houpu", device, payload, kT0 + 3000)) << payload;
    return r;
  }
  json Chunk(const json& request) {
    std::string reply;
    EXPECT_NO_THROW(reply = service_->ServeChunk(request.dump())) << request.dump();
    return json::parse(reply);
  }

  fs::path dir_;
  std::string sha_, updating_;
  fleet::Registry registry_;
  std::unique_ptr<fleet::RolloutService> service_;
};

TEST_F(RolloutPayloadTest, JobStatusesWithWrongTypesAreIgnored) {
  for (const char* payload : {R"({"campaign":5,"attempt":1,"state":"failed"})", R"({"campaign":"fw-1","attempt":"1","state":"failed"})",
                              R"({"campaign":"fw-1","attempt":1e300,"state":"failed"})", R"({"campaign":"fw-1","attempt":1,"state":7})",
                              "[]", "not json"}) {
    EXPECT_EQ(JobStatus(payload), std::nullopt) << payload;
    EXPECT_EQ(Device(updating_)["state"], "updating") << payload;
  }
  // A wrong-typed error or time is not a reason to drop the report: the defaults stand in.
  EXPECT_EQ(JobStatus(R"({"campaign":"fw-1","attempt":1,"state":"succeeded","version":"2.1.0","ts":"now"})"), "2.1.0");
  EXPECT_EQ(Device(updating_)["state"], "verifying");
}

TEST_F(RolloutPayloadTest, AFailureWithAWrongTypedErrorFailsTheAttempt) {
  JobStatus(R"({"campaign":"fw-1","attempt":1,"state":"failed","error":{"code":7}})");
  json d = Device(updating_);
  EXPECT_NE(d["state"], "updating");
  EXPECT_EQ(d["reason"], "failed");
}

TEST_F(RolloutPayloadTest, InstallAnswersWithWrongTypesAreRefusals) {
  std::string corr = std::string("fw-1") + '\x1f' + updating_ + '\x1f' + "1";
  EXPECT_NO_THROW(service_->OnInstallAnswer(corr, R"({"ok":"yes","error":["x"]})", kT0 + 3000));
  json d = Device(updating_);
  EXPECT_NE(d["state"], "updating");
  EXPECT_EQ(d["reason"], "gateway refused the job: refused");
}

TEST_F(RolloutPayloadTest, ChunkRequestsWithWrongTypesAreAnsweredWithAnError) {
  EXPECT_EQ(Chunk({{"sha256", sha_}, {"offset", 1024}, {"length", 10}})["result"]["offset"], 1024);
  EXPECT_EQ(Chunk({{"sha256", 5}})["code"], "not_found");
  for (json bad : {json("0"), json(1e30), json(-1), json(0.5)}) {
    json r = Chunk({{"sha256", sha_}, {"offset", bad}});
    EXPECT_EQ(r["ok"], false) << bad.dump();
    EXPECT_EQ(r["error"], "offset and length must be whole numbers") << bad.dump();
  }
  EXPECT_EQ(Chunk({{"sha256", sha_}, {"length", "all"}})["error"], "offset and length must be whole numbers");
  EXPECT_EQ(Chunk({{"sha256", std::string(500, 'x')}})["error"].get<std::string>().size(), 16u + 2 + 64 + 15)
      << "an unknown name is quoted and cut";
}

TEST_F(RolloutPayloadTest, AdminArgumentsWithWrongTypesAreRefusedOrIgnored) {
  fleet::AdminAnswer a = Admin("rollout_status", {{"id", "fw-1"}, {"devices", "yes"}});
  EXPECT_TRUE(a.code.empty());
  EXPECT_FALSE(a.result.contains("devices"));
  EXPECT_EQ(Admin("firmware_put", {{"sha256", 5}, {"offset", 0}}).error, "sha256 must be 64 lower-case hex digits");
  EXPECT_EQ(Admin("firmware_put", {{"sha256", sha_}, {"offset", 0u}, {"data", 5}, {"last", "yes"}}).error,
            "the first chunk carries the signed manifest");
  EXPECT_EQ(Admin("rollout_create", {{"artifact_sha256", json::array({1})}}).code, "not_found");
}

}  // namespace
}  // namespace sanigate
