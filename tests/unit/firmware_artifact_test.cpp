// Signed firmware artifacts: Ed25519 key files, the signed manifest and every refusal of
// verification with its exact reason, interoperability with the `openssl` command line (an
// independent signer and verifier), and version ordering and ranges.
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "firmware/artifact.h"
#include "firmware/digest.h"
#include "firmware/keys.h"
#include "firmware/version.h"
#include "test_support.h"

namespace sanigate::firmware {
namespace {

using nlohmann::json;
using unit::ReadFile;
using unit::ScratchDir;
using unit::WriteFile;

constexpr int64_t kCreated = 1763712000000;

std::string RandomBytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string out(n, '\0');
  for (char& c : out) c = static_cast<char>(rng() & 0xff);
  return out;
}

std::span<const uint8_t> Bytes(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

PrivateKey NewKey() {
  auto key = PrivateKey::Generate();
  EXPECT_TRUE(key.ok()) << key.status().ToString();
  return std::move(key).value();
}

ArtifactInfo Info() {
  ArtifactInfo info;
  info.model = "GR-200";
  info.version = "1.4.2";
  info.target = Target::kModbus;
  info.notes = "fixes the door sensor debounce";
  info.created_ms = kCreated;
  return info;
}

DeviceExpectation Device(Target target = Target::kModbus, std::string model = "GR-200") {
  return {target, std::move(model)};
}

// Plain RFC 4648 base64, written here so the test does not trust the library's encoder.
std::string Base64(std::span<const uint8_t> in) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  for (size_t i = 0; i < in.size(); i += 3) {
    uint32_t v = uint32_t{in[i]} << 16;
    if (i + 1 < in.size()) v |= uint32_t{in[i + 1]} << 8;
    if (i + 2 < in.size()) v |= in[i + 2];
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += i + 1 < in.size() ? kAlphabet[(v >> 6) & 63] : '=';
    out += i + 2 < in.size() ? kAlphabet[v & 63] : '=';
  }
  return out;
}

// Signs an arbitrary manifest object the way any signer would: canonical bytes, Ed25519,
// signature member. Lets the tests produce authentic manifests that the library's Sign* refuses.
std::string SignObject(json manifest, const PrivateKey& key) {
  auto bytes = CanonicalBytes(manifest);
  EXPECT_TRUE(bytes.ok()) << bytes.status().ToString();
  auto sig = key.Sign(Bytes(*bytes));
  EXPECT_TRUE(sig.ok()) << sig.status().ToString();
  manifest["signature"] = {{"alg", "ed25519"}, {"key_id", key.key_id()}, {"sig", Base64(*sig)}};
  return manifest.dump();
}

json GoodObject(const std::string& image) {
  auto digest = DigestBytes(Bytes(image));
  EXPECT_TRUE(digest.ok());
  return {{"v", 1},
          {"model", "GR-200"},
          {"version", "1.4.2"},
          {"size", image.size()},
          {"sha256", digest->sha256},
          {"created", kCreated},
          {"target", "modbus"},
          {"notes", ""}};
}

struct Shell {
  int exit_code;
  std::string output;
};

// Runs a command line through /bin/sh, stdout and stderr together.
Shell RunShell(const std::string& command) {
  Shell r{-1, {}};
  FILE* p = ::popen((command + " 2>&1").c_str(), "r");
  if (!p) return r;
  char buf[512];
  while (size_t n = std::fread(buf, 1, sizeof buf, p)) r.output.append(buf, n);
  int status = ::pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

std::string Q(const std::string& path) { return "'" + path + "'"; }

bool HaveOpensslCli() { return RunShell("openssl version").exit_code == 0; }

mode_t ModeOf(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
  return st.st_mode & 07777;
}

// ---- keys --------------------------------------------------------------------------------------

TEST(FirmwareKeys, KeyFilesRoundTripAndKeyIdIsSha256OfRawKey) {
  ScratchDir dir;
  PrivateKey key = NewKey();
  std::string priv = dir.File("operator.key"), pub = dir.File("operator.pub");
  ASSERT_TRUE(WritePrivateKey(key, priv).ok());
  ASSERT_TRUE(WritePublicKey(key.public_key(), pub).ok());
  EXPECT_EQ(ModeOf(priv), 0600u);
  EXPECT_EQ(ModeOf(pub), 0644u);
  EXPECT_TRUE(ReadFile(priv).starts_with("-----BEGIN PRIVATE KEY-----\n"));
  EXPECT_TRUE(ReadFile(pub).starts_with("-----BEGIN PUBLIC KEY-----\n"));

  auto loaded = ReadPrivateKey(priv);
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  auto loaded_pub = ReadPublicKey(pub);
  ASSERT_TRUE(loaded_pub.ok()) << loaded_pub.status().ToString();
  EXPECT_EQ(loaded->public_key(), key.public_key());
  EXPECT_EQ(*loaded_pub, key.public_key());

  auto sha = Sha256::Of(key.public_key().raw());
  ASSERT_TRUE(sha.ok());
  EXPECT_EQ(key.key_id(), Hex(*sha).substr(0, 16));
  EXPECT_EQ(key.key_id().size(), 16u);
  EXPECT_EQ(loaded_pub->key_id(), key.key_id());

  // Ed25519 is deterministic: the reloaded key makes the same signature.
  std::string msg = "garbage room 7";
  EXPECT_EQ(key.Sign(Bytes(msg)).value(), loaded->Sign(Bytes(msg)).value());
  EXPECT_TRUE(loaded_pub->Verify(Bytes(msg), key.Sign(Bytes(msg)).value()));
  EXPECT_FALSE(
      loaded_pub->Verify(Bytes(std::string("garbage room 8")), key.Sign(Bytes(msg)).value()));
}

TEST(FirmwareKeys, PrivateKeyFileIs0600WhateverTheUmask) {
  ScratchDir dir;
  mode_t old = ::umask(0);
  Status st = WritePrivateKey(NewKey(), dir.File("k"));
  ::umask(old);
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(ModeOf(dir.File("k")), 0600u);
}

TEST(FirmwareKeys, PrivateKeyReadableByOthersIsRefused) {
  ScratchDir dir;
  std::string path = dir.File("operator.key");
  ASSERT_TRUE(WritePrivateKey(NewKey(), path).ok());
  for (mode_t mode : {0644, 0640, 0604, 0660, 0700}) {
    ASSERT_EQ(::chmod(path.c_str(), mode), 0);
    auto key = ReadPrivateKey(path);
    if (mode == 0700) {
      EXPECT_TRUE(key.ok()) << key.status().ToString();
      continue;
    }
    ASSERT_FALSE(key.ok()) << std::oct << mode;
    EXPECT_EQ(key.status().code(), Code::kFailedPrecondition);
    char m[8];
    std::snprintf(m, sizeof m, "%04o", static_cast<unsigned>(mode));
    EXPECT_EQ(key.status().message(),
              "private key " + path + " has mode " + m +
                  ", which lets group or others read it; refusing to use it (chmod 600 " + path +
                  ")");
  }
  ASSERT_EQ(::chmod(path.c_str(), 0600), 0);
  EXPECT_TRUE(ReadPrivateKey(path).ok());
}

TEST(FirmwareKeys, PrivateKeyFileIsNeverOverwritten) {
  ScratchDir dir;
  std::string path = dir.File("operator.key");
  PrivateKey first = NewKey();
  ASSERT_TRUE(WritePrivateKey(first, path).ok());
  std::string before = ReadFile(path);

  PrivateKey second = NewKey();
  Status st = WritePrivateKey(second, path);
  EXPECT_EQ(st.code(), Code::kFailedPrecondition);
  EXPECT_EQ(st.message(),
            path + " already exists; refusing to overwrite it with a new private key");
  EXPECT_EQ(ReadFile(path), before);
  EXPECT_EQ(ReadPrivateKey(path)->key_id(), first.key_id());

  // Any existing file, and a symlink (even a dangling one), are left alone too.
  std::string other = dir.File("notes.txt");
  WriteFile(other, "precious");
  EXPECT_EQ(WritePrivateKey(second, other).code(), Code::kFailedPrecondition);
  EXPECT_EQ(ReadFile(other), "precious");
  std::string link = dir.File("link.key");
  std::filesystem::create_symlink(dir.File("elsewhere.key"), link);
  EXPECT_EQ(WritePrivateKey(second, link).code(), Code::kFailedPrecondition);
  EXPECT_FALSE(std::filesystem::exists(dir.File("elsewhere.key")));

  std::string pub = dir.File("operator.pub");
  ASSERT_TRUE(WritePublicKey(first.public_key(), pub).ok());
  EXPECT_EQ(WritePublicKey(second.public_key(), pub).message(),
            pub + " already exists; refusing to overwrite it with a new public key");
  EXPECT_EQ(ReadPublicKey(pub)->key_id(), first.key_id());
}

TEST(FirmwareKeys, BadKeyFiles) {
  ScratchDir dir;
  auto missing = ReadPrivateKey(dir.File("nope.key"));
  EXPECT_EQ(missing.status().code(), Code::kNotFound);

  std::string junk = dir.File("junk.key");
  WriteFile(junk, "not a key\n");
  ASSERT_EQ(::chmod(junk.c_str(), 0600), 0);
  auto j = ReadPrivateKey(junk);
  EXPECT_EQ(j.status().code(), Code::kInvalid);
  EXPECT_TRUE(j.status().message().starts_with(junk + ": not a PEM private key"))
      << j.status().message();

  // A public key where a private key is expected, and the other way round.
  PrivateKey key = NewKey();
  std::string pub = dir.File("k.pub");
  ASSERT_TRUE(WritePublicKey(key.public_key(), pub).ok());
  ASSERT_EQ(::chmod(pub.c_str(), 0600), 0);
  EXPECT_FALSE(ReadPrivateKey(pub).ok());
  std::string priv = dir.File("k.key");
  ASSERT_TRUE(WritePrivateKey(key, priv).ok());
  EXPECT_FALSE(ReadPublicKey(priv).ok());

  EXPECT_EQ(PublicKey::FromRaw(std::vector<uint8_t>(31)).status().message(),
            "an Ed25519 public key is 32 bytes, got 31");
}

// ---- manifest: round trip ----------------------------------------------------------------------

TEST(FirmwareArtifact, SignAndVerifyRealFile) {
  ScratchDir dir;
  PrivateKey key = NewKey();
  std::string priv = dir.File("operator.key"), pub = dir.File("operator.pub");
  ASSERT_TRUE(WritePrivateKey(key, priv).ok());
  ASSERT_TRUE(WritePublicKey(key.public_key(), pub).ok());

  std::string image = RandomBytes(300 * 1024 + 17, 42);
  std::string image_path = dir.File("gr200-1.4.2.bin");
  WriteFile(image_path, image);

  auto signer = ReadPrivateKey(priv);
  ASSERT_TRUE(signer.ok());
  auto signed_manifest = SignFile(image_path, Info(), *signer);
  ASSERT_TRUE(signed_manifest.ok()) << signed_manifest.status().ToString();
  // Signing a file and signing the same bytes in memory give the same manifest.
  EXPECT_EQ(*signed_manifest, SignImage(Bytes(image), Info(), key).value());

  json m = json::parse(*signed_manifest);
  EXPECT_EQ(m["v"], 1);
  EXPECT_EQ(m["model"], "GR-200");
  EXPECT_EQ(m["version"], "1.4.2");
  EXPECT_EQ(m["size"], image.size());
  EXPECT_EQ(m["sha256"], DigestBytes(Bytes(image))->sha256);
  EXPECT_EQ(m["created"], kCreated);
  EXPECT_EQ(m["target"], "modbus");
  EXPECT_EQ(m["notes"], "fixes the door sensor debounce");
  EXPECT_EQ(m["signature"]["alg"], "ed25519");
  EXPECT_EQ(m["signature"]["key_id"], key.key_id());
  EXPECT_EQ(m["signature"]["sig"].get<std::string>().size(), 88u);
  EXPECT_EQ(m.size(), 9u);

  auto trusted_key = ReadPublicKey(pub);
  ASSERT_TRUE(trusted_key.ok());
  std::vector<PublicKey> trusted{*trusted_key};
  auto verified = VerifyFile(image_path, *signed_manifest, trusted, Device());
  ASSERT_TRUE(verified.ok()) << verified.status().ToString();
  EXPECT_EQ(verified->model, "GR-200");
  EXPECT_EQ(verified->version, "1.4.2");
  EXPECT_EQ(verified->size, image.size());
  EXPECT_EQ(verified->target, Target::kModbus);
  EXPECT_EQ(verified->created_ms, kCreated);
  EXPECT_EQ(verified->key_id, key.key_id());
  EXPECT_TRUE(VerifyImage(Bytes(image), *signed_manifest, trusted, Device()).ok());
  // The model is optional on the device side.
  EXPECT_TRUE(VerifyFile(image_path, *signed_manifest, trusted, {Target::kModbus, {}}).ok());

  // Whitespace and member order of the transported text do not matter.
  std::string pretty = m.dump(2);
  EXPECT_TRUE(VerifyImage(Bytes(image), pretty, trusted, Device()).ok());
}

TEST(FirmwareArtifact, CanonicalBytesAreDocumentedDump) {
  json m = {{"v", 1},
            {"version", "1.0"},
            {"model", "M/1"},
            {"size", 5},
            {"target", "jt808"},
            {"created", 7},
            {"sha256", std::string(64, 'a')},
            {"notes", "line\n\"quoted\" \\ tab\t\x01 垃圾"},
            {"signature", {{"alg", "ed25519"}}}};
  auto bytes = CanonicalBytes(m);
  ASSERT_TRUE(bytes.ok());
  EXPECT_EQ(*bytes,
            "{\"created\":7,\"model\":\"M/1\",\"notes\":\"line\\n\\\"quoted\\\" \\\\ tab\\t\\u0001 "
            "垃圾\",\"sha256\":\"" +
                std::string(64, 'a') +
                "\",\"size\":5,\"target\":\"jt808\",\"v\":1,\"version\":\"1.0\"}");
  json bad = {{"notes", std::string("\xff\xfe")}};
  EXPECT_EQ(RefusalOf(CanonicalBytes(bad).status()), Refusal::kMalformedManifest);
}

TEST(FirmwareArtifact, StreamsLargeFiles) {
  ScratchDir dir;
  PrivateKey key = NewKey();
  std::string path = dir.File("big.bin");
  {
    FILE* f = std::fopen(path.c_str(), "wb");
    ASSERT_NE(f, nullptr);
    ASSERT_EQ(::ftruncate(::fileno(f), 50 << 20), 0);  // sparse: 50 MiB of zeros, no disk
    std::fputc(1, f);                                  // and one byte at the start
    std::fclose(f);
  }
  struct rusage before {};
  ::getrusage(RUSAGE_SELF, &before);
  auto manifest = SignFile(path, Info(), key);
  ASSERT_TRUE(manifest.ok()) << manifest.status().ToString();
  std::vector<PublicKey> trusted{key.public_key()};
  auto verified = VerifyFile(path, *manifest, trusted, Device());
  ASSERT_TRUE(verified.ok()) << verified.status().ToString();
  EXPECT_EQ(verified->size, uint64_t{50} << 20);
  struct rusage after {};
  ::getrusage(RUSAGE_SELF, &after);
  // ru_maxrss is in KiB; loading the image whole would add 50 MiB.
  EXPECT_LT(after.ru_maxrss - before.ru_maxrss, 16 * 1024);
}

// ---- refusals ----------------------------------------------------------------------------------

class FirmwareRefusal : public ::testing::Test {
 protected:
  void SetUp() override {
    image_ = RandomBytes(2048, 7);
    manifest_ = SignImage(Bytes(image_), Info(), key_).value();
    trusted_ = {key_.public_key()};
  }
  Status Check(const std::string& image, const std::string& manifest,
               const DeviceExpectation& device = Device()) {
    return VerifyImage(Bytes(image), manifest, trusted_, device).status();
  }
  Status CheckFile(const std::string& image, const std::string& manifest) {
    std::string path = dir_.File("image.bin");
    WriteFile(path, image);
    return VerifyFile(path, manifest, trusted_, Device()).status();
  }
  // The refusal and its exact message, for both the in-memory and the file path.
  void ExpectRefused(const std::string& image, const std::string& manifest, Refusal refusal,
                     const std::string& message) {
    for (const Status& st : {Check(image, manifest), CheckFile(image, manifest)}) {
      EXPECT_EQ(st.code(), Code::kInvalid);
      EXPECT_EQ(st.message(), message);
      EXPECT_EQ(RefusalOf(st), refusal) << st.message();
    }
  }
  // A manifest object changed by `edit` and signed again by the trusted key.
  std::string Resigned(const std::function<void(json&)>& edit) {
    json m = GoodObject(image_);
    edit(m);
    return SignObject(m, key_);
  }
  std::string Edited(const std::function<void(json&)>& edit) {
    json m = json::parse(manifest_);
    edit(m);
    return m.dump();
  }

  ScratchDir dir_;
  PrivateKey key_ = NewKey();
  std::string image_;
  std::string manifest_;
  std::vector<PublicKey> trusted_;
};

TEST_F(FirmwareRefusal, GoodBaseline) {
  EXPECT_TRUE(Check(image_, manifest_).ok());
  EXPECT_TRUE(CheckFile(image_, manifest_).ok());
  EXPECT_TRUE(Check(image_, Resigned([](json&) {})).ok());
}

TEST_F(FirmwareRefusal, UntrustedSigningKey) {
  PrivateKey stranger = NewKey();
  std::string foreign = SignImage(Bytes(image_), Info(), stranger).value();
  ExpectRefused(image_, foreign, Refusal::kUnknownKey,
                "unknown signing key: " + stranger.key_id() + " is not one of the 1 trusted keys");
  std::vector<PublicKey> none;
  EXPECT_EQ(VerifyImage(Bytes(image_), manifest_, none, Device()).status().message(),
            "unknown signing key: " + key_.key_id() + " (no trusted keys are configured)");
  // Trusting the stranger as well makes it acceptable.
  trusted_.push_back(stranger.public_key());
  EXPECT_TRUE(Check(image_, foreign).ok());
}

TEST_F(FirmwareRefusal, StrangerClaimingATrustedKeyId) {
  PrivateKey stranger = NewKey();
  json m = json::parse(SignImage(Bytes(image_), Info(), stranger).value());
  m["signature"]["key_id"] = key_.key_id();
  ExpectRefused(image_, m.dump(), Refusal::kBadSignature,
                "bad signature: the manifest does not match its signature by key " + key_.key_id() +
                    " (changed after signing, or a corrupt signature)");
}

TEST_F(FirmwareRefusal, FieldChangedAfterSigning) {
  const std::string bad = "bad signature: the manifest does not match its signature by key " +
                          key_.key_id() + " (changed after signing, or a corrupt signature)";
  ExpectRefused(image_, Edited([](json& m) { m["version"] = "1.4.3"; }), Refusal::kBadSignature,
                bad);
  ExpectRefused(image_, Edited([](json& m) { m["model"] = "GR-100"; }), Refusal::kBadSignature,
                bad);
  ExpectRefused(image_, Edited([](json& m) { m["notes"] = "harmless"; }), Refusal::kBadSignature,
                bad);
  ExpectRefused(image_, Edited([](json& m) { m["created"] = kCreated + 1; }),
                Refusal::kBadSignature, bad);
  // Swapping in another image's size and hash cannot be done without the key.
  std::string other = RandomBytes(4096, 8);
  ExpectRefused(other, Edited([&](json& m) {
                  m["size"] = other.size();
                  m["sha256"] = DigestBytes(Bytes(other))->sha256;
                }),
                Refusal::kBadSignature, bad);
  // An added member is covered as well.
  ExpectRefused(image_, Edited([](json& m) { m["force"] = true; }), Refusal::kBadSignature, bad);
  // A corrupted signature (one base64 character changed, still 64 bytes).
  ExpectRefused(image_, Edited([](json& m) {
                  std::string s = m["signature"]["sig"];
                  s[10] = s[10] == 'A' ? 'B' : 'A';
                  m["signature"]["sig"] = s;
                }),
                Refusal::kBadSignature, bad);
}

TEST_F(FirmwareRefusal, TruncatedImage) {
  ExpectRefused(image_.substr(0, 1000), manifest_, Refusal::kSizeMismatch,
                "size mismatch: image is 1000 bytes, manifest says 2048");
  ExpectRefused(image_ + "x", manifest_, Refusal::kSizeMismatch,
                "size mismatch: image is 2049 bytes, manifest says 2048");
  ExpectRefused("", manifest_, Refusal::kSizeMismatch,
                "size mismatch: image is 0 bytes, manifest says 2048");
}

TEST_F(FirmwareRefusal, OneFlippedBitAnywhere) {
  std::string want = DigestBytes(Bytes(image_))->sha256;
  std::mt19937 rng(99);
  std::vector<size_t> positions = {0, 1, 1023, 2047};
  for (int i = 0; i < 12; ++i) positions.push_back(rng() % image_.size());
  for (size_t pos : positions) {
    std::string tampered = image_;
    tampered[pos] = static_cast<char>(tampered[pos] ^ (1 << (pos % 8)));
    std::string got = DigestBytes(Bytes(tampered))->sha256;
    ExpectRefused(tampered, manifest_, Refusal::kDigestMismatch,
                  "sha256 mismatch: image hashes to " + got + ", manifest says " + want +
                      " (tampered or corrupt)");
  }
}

TEST_F(FirmwareRefusal, WrongModel) {
  Status st = Check(image_, manifest_, Device(Target::kModbus, "GR-100"));
  EXPECT_EQ(st.message(), "wrong model: built for GR-200, device is GR-100");
  EXPECT_EQ(RefusalOf(st), Refusal::kWrongModel);
}

TEST_F(FirmwareRefusal, WrongTarget) {
  Status st = Check(image_, manifest_, Device(Target::kJt808));
  EXPECT_EQ(st.message(), "wrong target: image is for modbus, device is jt808");
  EXPECT_EQ(RefusalOf(st), Refusal::kWrongTarget);
}

TEST_F(FirmwareRefusal, UnsupportedTarget) {
  ExpectRefused(image_, Resigned([](json& m) { m["target"] = "lorawan"; }),
                Refusal::kUnsupportedTarget, "unsupported target: LoRaWAN FUOTA is not supported");
  ExpectRefused(image_, Resigned([](json& m) { m["target"] = "zigbee"; }),
                Refusal::kUnsupportedTarget,
                "unsupported target: \"zigbee\" is not one of gateway, modbus, jt808");
  EXPECT_EQ(ParseTarget("LoRaWAN").status().message(),
            "unsupported target: LoRaWAN FUOTA is not supported");
  EXPECT_EQ(ParseTarget("jt808").value(), Target::kJt808);
}

TEST_F(FirmwareRefusal, VersionNotAccepted) {
  for (const std::string& v : std::vector<std::string>{"1.2 beta", "", "1.2;reboot", "1.2/3",
                                                       "\xe7\x89\x88", std::string(65, '1')}) {
    std::string shown = json(v).dump(-1, ' ', false, json::error_handler_t::replace);
    ExpectRefused(image_, Resigned([&](json& m) { m["version"] = v; }), Refusal::kVersionRejected,
                  "version not accepted: " + shown + " must match [0-9A-Za-z._+-]{1,64}");
  }
  // The signer refuses the same versions with the same message.
  ArtifactInfo info = Info();
  info.version = "1.2 beta";
  EXPECT_EQ(SignImage(Bytes(image_), info, key_).status().message(),
            "version not accepted: \"1.2 beta\" must match [0-9A-Za-z._+-]{1,64}");
  EXPECT_TRUE(Check(image_, Resigned([](json& m) { m["version"] = std::string(64, '9'); })).ok());
  EXPECT_TRUE(Check(image_, Resigned([](json& m) { m["version"] = "v2.0.1-rc.1+b7"; })).ok());
}

TEST_F(FirmwareRefusal, MalformedManifest) {
  auto expect = [&](const std::string& manifest, const std::string& detail) {
    ExpectRefused(image_, manifest, Refusal::kMalformedManifest, "malformed manifest: " + detail);
  };
  for (const char* field :
       {"v", "model", "version", "size", "sha256", "created", "target", "notes"}) {
    SCOPED_TRACE(field);
    expect(Resigned([&](json& m) { m.erase(field); }),
           std::string("missing field \"") + field + "\"");
  }
  expect(Resigned([](json& m) { m["v"] = 2; }),
         "format v 2 is not supported (this verifier reads v 1)");
  expect(Resigned([](json& m) { m["v"] = "1"; }), "field \"v\" must be an integer, got a string");
  expect(Resigned([](json& m) { m["size"] = "2048"; }),
         "field \"size\" must be a positive integer, got \"2048\"");
  expect(Resigned([](json& m) { m["size"] = 2048.0; }),
         "field \"size\" must be a positive integer, got 2048.0");
  expect(Resigned([](json& m) { m["size"] = -1; }),
         "field \"size\" must be a positive integer, got -1");
  expect(Resigned([](json& m) { m["model"] = 200; }),
         "field \"model\" must be a string, got an integer");
  expect(Resigned([](json& m) { m["model"] = ""; }),
         "field \"model\" must be 1 to 64 bytes without control characters, got \"\"");
  expect(Resigned([](json& m) { m["notes"] = nullptr; }),
         "field \"notes\" must be a string, got null");
  expect(Resigned([](json& m) { m["sha256"] = std::string(64, 'A'); }),
         "field \"sha256\" must be 64 lowercase hex digits, got \"" + std::string(64, 'A') + "\"");
  expect(Resigned([](json& m) { m["created"] = -5; }),
         "field \"created\" must be milliseconds since the epoch (an integer >= 0), got -5");
  expect(Resigned([](json& m) { m["target"] = json::array({"modbus"}); }),
         "field \"target\" must be a string, got an array");
  expect(Resigned([](json& m) { m["force"] = true; }), "unknown field \"force\"");

  expect(
      "{\"v\":1,", "not JSON (" + [] {
        try {
          json ignored = json::parse("{\"v\":1,");
          (void)ignored;
        } catch (const json::exception& e) {
          return std::string(e.what());
        }
        return std::string();
      }() + ")");
  expect("[1,2]", "a manifest is a JSON object, got an array");
  expect(GoodObject(image_).dump(), "missing field \"signature\"");
  expect(Edited([](json& m) { m["signature"] = "abc"; }),
         "field \"signature\" must be an object, got a string");
  expect(Edited([](json& m) { m["signature"]["alg"] = "rsa-sha256"; }),
         "signature algorithm \"rsa-sha256\" is not supported (only ed25519)");
  expect(Edited([](json& m) { m["signature"].erase("sig"); }), "missing field \"signature.sig\"");
  expect(Edited([](json& m) { m["signature"]["key_id"] = "XYZ"; }),
         "field \"signature.key_id\" must be 16 lowercase hex digits, got \"XYZ\"");
  expect(Edited([](json& m) { m["signature"]["sig"] = "not base64!"; }),
         "field \"signature.sig\" must be the 88-character base64 of 64 bytes");
  expect(Edited([](json& m) { m["signature"]["extra"] = 1; }), "unknown field \"signature.extra\"");
  // Deep nesting within the size limit neither crashes the parser nor the destructor.
  expect(std::string(30000, '[') + std::string(30000, ']'),
         "a manifest is a JSON object, got an array");
  expect("{\"signature\":" + std::string(30000, '[') + std::string(30000, ']') + "}",
         "field \"signature\" must be an object, got an array");
  expect(std::string(kMaxManifestBytes + 1, ' '), "it is 65537 bytes, at most 65536 are allowed");
}

TEST_F(FirmwareRefusal, SignerRefusesWhatVerifiersWould) {
  ArtifactInfo info = Info();
  info.model = "";
  EXPECT_EQ(RefusalOf(SignImage(Bytes(image_), info, key_).status()), Refusal::kMalformedManifest);
  info = Info();
  info.notes = std::string(kMaxNotesLength + 1, 'n');
  EXPECT_EQ(SignImage(Bytes(image_), info, key_).status().message(),
            "malformed manifest: notes is 4097 bytes, at most 4096 are allowed");
  info = Info();
  info.notes = "\xff";
  EXPECT_EQ(RefusalOf(SignImage(Bytes(image_), info, key_).status()), Refusal::kMalformedManifest);
  EXPECT_EQ(SignImage({}, Info(), key_).status().message(),
            "malformed manifest: the image is empty");
}

TEST_F(FirmwareRefusal, MissingImageFileIsNotARefusal) {
  auto r = VerifyFile(dir_.File("absent.bin"), manifest_, trusted_, Device());
  EXPECT_EQ(r.status().code(), Code::kNotFound);
  EXPECT_EQ(RefusalOf(r.status()), std::nullopt);
}

// ---- the openssl command line as an independent peer -------------------------------------------

TEST(FirmwareOpensslCli, LibraryKeysAndSignaturesVerifyWithOpenssl) {
  if (!HaveOpensslCli()) GTEST_SKIP() << "the openssl command line tool is not installed";
  ScratchDir dir;
  PrivateKey key = NewKey();
  std::string priv = dir.File("op.key"), pub = dir.File("op.pub");
  ASSERT_TRUE(WritePrivateKey(key, priv).ok());
  ASSERT_TRUE(WritePublicKey(key.public_key(), pub).ok());

  Shell r = RunShell("openssl pkey -pubin -in " + Q(pub) + " -noout");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  r = RunShell("openssl pkey -in " + Q(priv) + " -noout");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  // The raw key is the last 32 bytes of the DER SubjectPublicKeyInfo.
  std::string der = dir.File("op.der");
  r = RunShell("openssl pkey -pubin -in " + Q(pub) + " -outform DER -out " + Q(der));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::string der_bytes = ReadFile(der);
  ASSERT_EQ(der_bytes.size(), 44u);
  EXPECT_EQ(der_bytes.substr(12),
            std::string(key.public_key().raw().begin(), key.public_key().raw().end()));

  // A manifest signed by the library: its canonical bytes and raw signature, verified by openssl.
  std::string image = RandomBytes(5000, 3);
  auto manifest = SignImage(Bytes(image), Info(), key);
  ASSERT_TRUE(manifest.ok());
  json m = json::parse(*manifest);
  std::string bytes = CanonicalBytes(m).value();
  auto sig = key.Sign(Bytes(bytes));
  ASSERT_TRUE(sig.ok());
  EXPECT_EQ(Base64(*sig), m["signature"]["sig"]);
  std::string bytes_file = dir.File("signed.bin"), sig_file = dir.File("sig.bin");
  WriteFile(bytes_file, bytes);
  WriteFile(sig_file, std::string(sig->begin(), sig->end()));
  r = RunShell("openssl pkeyutl -verify -pubin -inkey " + Q(pub) + " -rawin -in " + Q(bytes_file) +
               " -sigfile " + Q(sig_file));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("Signature Verified Successfully"), std::string::npos) << r.output;

  // openssl rejects the same signature over a changed manifest.
  m["version"] = "9.9.9";
  WriteFile(bytes_file, CanonicalBytes(m).value());
  r = RunShell("openssl pkeyutl -verify -pubin -inkey " + Q(pub) + " -rawin -in " + Q(bytes_file) +
               " -sigfile " + Q(sig_file));
  EXPECT_NE(r.exit_code, 0) << r.output;
}

TEST(FirmwareOpensslCli, OpensslGeneratedKeyWorksWithTheLibrary) {
  if (!HaveOpensslCli()) GTEST_SKIP() << "the openssl command line tool is not installed";
  ScratchDir dir;
  std::string priv = dir.File("cli.key"), pub = dir.File("cli.pub");
  Shell r = RunShell("openssl genpkey -algorithm ed25519 -out " + Q(priv));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  ASSERT_EQ(::chmod(priv.c_str(), 0600), 0);
  r = RunShell("openssl pkey -in " + Q(priv) + " -pubout -out " + Q(pub));
  ASSERT_EQ(r.exit_code, 0) << r.output;

  auto key = ReadPrivateKey(priv);
  ASSERT_TRUE(key.ok()) << key.status().ToString();
  auto pub_key = ReadPublicKey(pub);
  ASSERT_TRUE(pub_key.ok()) << pub_key.status().ToString();
  EXPECT_EQ(key->public_key(), *pub_key);
  EXPECT_EQ(key->key_id(), pub_key->key_id());

  std::string image = RandomBytes(100 * 1024, 11);
  std::string image_path = dir.File("fw.bin");
  WriteFile(image_path, image);
  auto manifest = SignFile(image_path, Info(), *key);
  ASSERT_TRUE(manifest.ok()) << manifest.status().ToString();
  std::vector<PublicKey> trusted{*pub_key};
  EXPECT_TRUE(VerifyFile(image_path, *manifest, trusted, Device()).ok());

  // openssl as the signer: same (deterministic) signature, and the library verifies it.
  std::string bytes = CanonicalBytes(json::parse(*manifest)).value();
  std::string bytes_file = dir.File("signed.bin"), sig_file = dir.File("sig.bin");
  WriteFile(bytes_file, bytes);
  r = RunShell("openssl pkeyutl -sign -inkey " + Q(priv) + " -rawin -in " + Q(bytes_file) +
               " -out " + Q(sig_file));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::string cli_sig = ReadFile(sig_file);
  ASSERT_EQ(cli_sig.size(), 64u);
  EXPECT_TRUE(pub_key->Verify(Bytes(bytes), Bytes(cli_sig)));
  EXPECT_EQ(Base64(Bytes(cli_sig)), json::parse(*manifest)["signature"]["sig"]);
}

TEST(FirmwareOpensslCli, ForeignKeyFilesAreRefused) {
  if (!HaveOpensslCli()) GTEST_SKIP() << "the openssl command line tool is not installed";
  ScratchDir dir;
  std::string enc = dir.File("enc.key");
  Shell r =
      RunShell("openssl genpkey -algorithm ed25519 -aes-256-cbc -pass pass:secret -out " + Q(enc));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  ASSERT_EQ(::chmod(enc.c_str(), 0600), 0);
  EXPECT_EQ(ReadPrivateKey(enc).status().message(),
            enc +
                ": the private key is encrypted; firmware signing keys are kept unencrypted "
                "with mode 0600");

  std::string ec = dir.File("ec.key"), ec_pub = dir.File("ec.pub");
  r = RunShell("openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out " + Q(ec));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  ASSERT_EQ(::chmod(ec.c_str(), 0600), 0);
  EXPECT_EQ(ReadPrivateKey(ec).status().message(), ec + ": the private key is EC, not Ed25519");
  r = RunShell("openssl pkey -in " + Q(ec) + " -pubout -out " + Q(ec_pub));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(ReadPublicKey(ec_pub).status().message(),
            ec_pub + ": the public key is EC, not Ed25519");
}

// ---- versions ----------------------------------------------------------------------------------

TEST(FirmwareVersion, CompareTable) {
  struct Row {
    const char* a;
    const char* b;
    int want;  // sign of a <=> b
  };
  const Row rows[] = {
      {"1.2.10", "1.2.9", 1},
      {"1.2.9", "1.2.10", -1},
      {"1.2.0-rc1", "1.2.0", -1},
      {"1.2.0", "1.2.0-rc1", 1},
      {"1.2.0-rc2", "1.2.0-rc10", -1},
      {"1.2.0-alpha", "1.2.0-beta", -1},
      {"1.2.0-rc", "1.2.0-rc.1", -1},
      {"1.2.0-rc.1", "1.2.0-rc.2", -1},
      {"1.2.0-1", "1.2.0-rc", -1},
      {"1.2.0-rc1", "1.1.9", 1},
      {"1.2", "1.2.0", 0},
      {"1.2.0", "1.2.0.0", 0},
      {"01.02", "1.2", 0},
      {"1.2.0+b1", "1.2.0+b2", 0},
      {"v1.3", "1.3", 0},
      {"V1.3", "1.2.9", 1},
      {"1.1.1w", "1.1.1", 1},
      {"1.1.1w", "1.1.1x", -1},
      {"1.1.1a", "1.1.2", -1},
      {"2", "1.99.99", 1},
      {"1.10", "1.9", 1},
      {"1..2", "1.0.2", 0},
      {"1.2.99999999999999999999", "1.2.9", 1},
      {"1.2.3", "1.2.3", 0},
      {"1.x", "1.2", 1},
      {"2024.11.21", "2024.9.30", 1},
      {"1.0.0-rc.1+build.5", "1.0.0-rc.1", 0},
  };
  for (const Row& row : rows) {
    auto got = CompareVersions(row.a, row.b);
    int sign = got < 0 ? -1 : got > 0 ? 1 : 0;
    EXPECT_EQ(sign, row.want) << row.a << " vs " << row.b;
    auto back = CompareVersions(row.b, row.a);
    EXPECT_EQ(back < 0 ? -1 : back > 0 ? 1 : 0, -row.want) << row.b << " vs " << row.a;
  }
}

TEST(FirmwareVersion, AcceptedSyntax) {
  EXPECT_TRUE(IsAcceptedVersion("1.2.0-rc.1+build.5"));
  EXPECT_TRUE(IsAcceptedVersion(std::string(64, 'a')));
  EXPECT_FALSE(IsAcceptedVersion(std::string(65, 'a')));
  EXPECT_FALSE(IsAcceptedVersion(""));
  EXPECT_FALSE(IsAcceptedVersion("1.2_3"));
  EXPECT_FALSE(IsAcceptedVersion("1.2 3"));
  EXPECT_EQ(CheckVersion("1,2").message(),
            "version not accepted: \"1,2\" must match [0-9A-Za-z._+-]{1,64}");
}

TEST(FirmwareVersion, Ranges) {
  auto r = VersionRange::Parse(">=1.2.0,<1.3.0");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE(r->Contains("1.2.0"));
  EXPECT_TRUE(r->Contains("1.2"));
  EXPECT_TRUE(r->Contains("1.2.10"));
  EXPECT_TRUE(r->Contains("1.3.0-rc1"));  // documented: pre-releases sort below the release
  EXPECT_FALSE(r->Contains("1.3.0"));
  EXPECT_FALSE(r->Contains("1.1.9"));
  EXPECT_FALSE(r->Contains("1.2.0-rc1"));
  EXPECT_EQ(r->ToString(), ">=1.2.0,<1.3.0");

  auto spaced = VersionRange::Parse(" > 1.0 , != 1.5.0 , <= 2 ");
  ASSERT_TRUE(spaced.ok()) << spaced.status().ToString();
  EXPECT_EQ(spaced->ToString(), ">1.0,!=1.5.0,<=2");
  EXPECT_TRUE(spaced->Contains("1.4"));
  EXPECT_FALSE(spaced->Contains("1.5"));
  EXPECT_TRUE(spaced->Contains("2.0.0"));
  EXPECT_FALSE(spaced->Contains("2.0.1"));
  EXPECT_FALSE(spaced->Contains("1.0"));

  auto exact = VersionRange::Parse("1.4.2");
  ASSERT_TRUE(exact.ok());
  EXPECT_EQ(exact->ToString(), "=1.4.2");
  EXPECT_TRUE(exact->Contains("v1.4.2"));
  EXPECT_FALSE(exact->Contains("1.4.3"));
  EXPECT_TRUE(VersionRange::Parse("==1.4.2")->Contains("1.4.2"));

  auto any = VersionRange::Parse("*");
  ASSERT_TRUE(any.ok());
  EXPECT_TRUE(any->Contains("0.0.1"));
  EXPECT_EQ(any->ToString(), "*");

  EXPECT_EQ(VersionRange::Parse(">=1.2,<").status().message(),
            "version range \">=1.2,<\": clause 2 has no version");
  EXPECT_EQ(VersionRange::Parse(">=1.2,,<2").status().message(),
            "version range \">=1.2,,<2\": clause 2 is empty");
  EXPECT_EQ(VersionRange::Parse("").status().message(), "version range \"\": clause 1 is empty");
  EXPECT_EQ(VersionRange::Parse("~>1.2").status().message(),
            "version range \"~>1.2\": clause 1: version not accepted: \"~>1.2\" must match "
            "[0-9A-Za-z._+-]{1,64}");
}

}  // namespace
}  // namespace sanigate::firmware
