// sanictl firmware / rollout helpers (fleet/ctl/rollout_format.h): base64 and chunking of an
// image for firmware_put, upload progress, artifact prefixes, the campaign spec built from flags,
// the plan summary, the progress bar's cell split, and the status view / watch line of a
// rollout_status result. No MQTT.
#include <stdlib.h>
#include <time.h>

#include <gtest/gtest.h>

#include <fstream>
#include <numeric>
#include <sstream>
#include <string>
#include <vector>

#include "ctl/rollout_format.h"
#include "test_support.h"

namespace sanigate::ctl {
namespace {

using json = nlohmann::json;

class RolloutFormatTest : public ::testing::Test {
 protected:
  void SetUp() override {
    setenv("TZ", "UTC", 1);
    tzset();
  }
};

constexpr int64_t kTs = 1763712000000;  // 2025-11-21 08:00:00 UTC

TEST_F(RolloutFormatTest, Base64MatchesRfc4648Vectors) {
  EXPECT_EQ(Base64Encode(""), "");
  EXPECT_EQ(Base64Encode("f"), "Zg==");
  EXPECT_EQ(Base64Encode("fo"), "Zm8=");
  EXPECT_EQ(Base64Encode("foo"), "Zm9v");
  EXPECT_EQ(Base64Encode("foob"), "Zm9vYg==");
  EXPECT_EQ(Base64Encode("fooba"), "Zm9vYmE=");
  EXPECT_EQ(Base64Encode("foobar"), "Zm9vYmFy");
  EXPECT_EQ(Base64Encode(std::string("\xff\xfe\x00\x01", 4)), "//4AAQ==");
  // A full 192 KiB chunk: 4/3 of it, no padding (192 KiB is a multiple of 3).
  EXPECT_EQ(Base64Encode(std::string(kUploadChunkBytes, 'x')).size(), kUploadChunkBytes / 3 * 4);
}

TEST_F(RolloutFormatTest, ChunksCoverTheImageAndOnlyTheLastIsMarked) {
  auto chunks = PlanChunks(500, 192);
  ASSERT_EQ(chunks.size(), 3u);
  EXPECT_EQ(chunks[0].offset, 0u);
  EXPECT_EQ(chunks[0].length, 192u);
  EXPECT_FALSE(chunks[0].last);
  EXPECT_EQ(chunks[2].offset, 384u);
  EXPECT_EQ(chunks[2].length, 116u);
  EXPECT_TRUE(chunks[2].last);
  // Exact multiple: no empty tail chunk.
  auto even = PlanChunks(384, 192);
  ASSERT_EQ(even.size(), 2u);
  EXPECT_TRUE(even[1].last);
  EXPECT_EQ(even[1].length, 192u);
  // From an offset (a smaller chunk limit met halfway).
  auto rest = PlanChunks(500, 100, 384);
  ASSERT_EQ(rest.size(), 2u);
  EXPECT_EQ(rest[0].offset, 384u);
  EXPECT_EQ(rest[1].length, 16u);
  EXPECT_TRUE(PlanChunks(0, 192).empty());
  EXPECT_TRUE(PlanChunks(10, 192, 10).empty());
  EXPECT_EQ(PlanChunks(3, 0).size(), 3u);  // 0 counts as 1
}

TEST_F(RolloutFormatTest, FileRangesAndPutArguments) {
  unit::ScratchDir dir;
  std::string path = (dir.path() / "image.bin").string();
  std::string bytes;
  for (int i = 0; i < 1000; ++i) bytes += static_cast<char>(i * 7);
  { std::ofstream(path, std::ios::binary) << bytes; }

  std::string joined;
  json manifest = {{"v", 1}, {"sha256", std::string(64, 'a')}};
  for (const auto& c : PlanChunks(bytes.size(), 300)) {
    auto part = ReadFileRange(path, c.offset, c.length);
    ASSERT_TRUE(part.ok()) << part.status().message();
    joined += *part;
    json args = FirmwarePutArgs(std::string(64, 'a'), c, *part, manifest);
    EXPECT_EQ(args["offset"], c.offset);
    EXPECT_EQ(args["last"], c.last);
    EXPECT_EQ(args["data"], Base64Encode(*part));
    EXPECT_EQ(args.contains("manifest"), c.offset == 0);  // the manifest rides with the first chunk only
  }
  EXPECT_EQ(joined, bytes);
  EXPECT_FALSE(FirmwarePutArgs("x", {0, 1, true}, "a", nullptr).contains("manifest"));

  auto past = ReadFileRange(path, 900, 200);
  ASSERT_FALSE(past.ok());
  EXPECT_EQ(past.status().code(), Code::kDataLoss);
  EXPECT_EQ(ReadFileRange((dir.path() / "missing").string(), 0, 1).status().code(), Code::kInvalid);
}

TEST_F(RolloutFormatTest, ChunkLimitIsReadFromSanifleetsRefusal) {
  EXPECT_EQ(ChunkLimitFromError("a chunk may hold at most 65536 bytes"), 65536u);
  EXPECT_FALSE(ChunkLimitFromError("image refused: sha256 mismatch").has_value());
  EXPECT_FALSE(ChunkLimitFromError("a chunk may hold at most 0 bytes").has_value());
}

TEST_F(RolloutFormatTest, BytesAndUploadProgress) {
  EXPECT_EQ(HumanBytes(900), "900 B");
  EXPECT_EQ(HumanBytes(483328), "472 KiB");
  EXPECT_EQ(HumanBytes(1258291), "1.2 MiB");
  EXPECT_EQ(HumanBytes(uint64_t{3} << 30), "3.0 GiB");
  EXPECT_EQ(UploadProgress(0, 2 << 20, 0), "uploading   0%  0 B of 2.0 MiB");
  // 1 MiB in 2 s = 512 KiB/s.
  EXPECT_EQ(UploadProgress(1 << 20, 2 << 20, 2000), "uploading  50%  1.0 MiB of 2.0 MiB  512 KiB/s");
  EXPECT_EQ(UploadProgress(20 << 20, 20 << 20, 1000), "uploading 100%  20.0 MiB of 20.0 MiB  20.0 MiB/s");
}

json Artifacts() {
  return {{"artifacts",
           {{{"sha256", "3f2a" + std::string(60, '1')}, {"size", 483328}, {"model", "GR-200"}, {"version", "1.4.2"},
             {"target", "modbus"}, {"created", kTs}, {"key_id", "1a2b3c4d5e6f7a8b"}, {"notes", "door sensor"}},
            {{"sha256", "3f9b" + std::string(60, '2')}, {"size", 900}, {"model", "JT-1"}, {"version", "2.0"},
             {"target", "jt808"}, {"created", kTs - 1000}, {"key_id", "1a2b3c4d5e6f7a8b"}, {"notes", ""}}}}};
}

TEST_F(RolloutFormatTest, ArtifactPrefixesResolveToOneImage) {
  auto one = ResolveArtifact("3F2A", Artifacts());
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(*one, "3f2a" + std::string(60, '1'));
  auto ambiguous = ResolveArtifact("3f", Artifacts());
  ASSERT_FALSE(ambiguous.ok());
  EXPECT_EQ(ambiguous.status().code(), Code::kInvalid);
  EXPECT_NE(ambiguous.status().message().find("matches 2 images"), std::string::npos);
  EXPECT_EQ(ResolveArtifact("ab", Artifacts()).status().code(), Code::kNotFound);
  EXPECT_EQ(ResolveArtifact("xyz", Artifacts()).status().code(), Code::kInvalid);
  EXPECT_EQ(ResolveArtifact("", Artifacts()).status().code(), Code::kInvalid);
}

TEST_F(RolloutFormatTest, FirmwareTableAndArtifactText) {
  EXPECT_EQ(RenderTable(FirmwareTable(Artifacts()), false),
            "SHA256        MODEL   VERSION  TARGET  SIZE     CREATED              KEY ID\n"
            "3f2a11111111  GR-200  1.4.2    modbus  472 KiB  2025-11-21 08:00:00  1a2b3c4d5e6f7a8b\n"
            "3f9b22222222  JT-1    2.0      jt808   900 B    2025-11-21 07:59:59  1a2b3c4d5e6f7a8b\n");
  std::string text = ArtifactText(Artifacts()["artifacts"][0]);
  EXPECT_NE(text.find("sha256:  3f2a"), std::string::npos) << text;
  EXPECT_NE(text.find("size:    472 KiB (483328 bytes)"), std::string::npos) << text;
  EXPECT_NE(text.find("notes:   door sensor"), std::string::npos) << text;
}

TEST_F(RolloutFormatTest, WavesAreRisingPercentagesEndingAt100) {
  auto w = ParseWaves("10, 50%,100");
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(*w, (std::vector<double>{10, 50, 100}));
  EXPECT_TRUE(ParseWaves("100").ok());
  EXPECT_TRUE(ParseWaves("12.5,100").ok());
  for (const char* bad : {"", "10,50", "50,10,100", "10,,100", "0,100", "10,abc,100", "10,150", "100,100"})
    EXPECT_FALSE(ParseWaves(bad).ok()) << bad;
}

TEST_F(RolloutFormatTest, SpecFromFlagsUsesTheCampaignFieldNames) {
  RolloutSpecArgs a;
  a.id = "fw-142";
  a.artifact = "3f2a";
  a.kinds = {"garbage_room"};
  a.sites = {"houpu"};
  a.devices = {"room-07", "room-08"};
  a.version_range = ">=1.0,<1.4.2";
  a.canary = 2;
  a.waves = "10,50,100";
  a.success_pct = 90;
  a.max_failures = 3;
  a.max_failure_pct = 5;
  a.per_gateway = 4;
  a.per_bus = 1;
  a.timeout_s = 900;
  a.retries = 1;
  a.health_gate_s = 300;
  a.blackout = {"06:00-09:00,17:00-20:00", "23:00-01:00"};
  a.utc_offset = "+08:00";
  auto s = BuildSpec(json::object(), a);
  ASSERT_TRUE(s.ok()) << s.status().message();
  json expected = {{"id", "fw-142"},
                   {"artifact_sha256", "3f2a"},
                   {"target",
                    {{"kinds", {"garbage_room"}},
                     {"sites", {"houpu"}},
                     {"devices", {"room-07", "room-08"}},
                     {"version_range", ">=1.0,<1.4.2"}}},
                   {"canary_count", 2},
                   {"waves_pct", {10, 50, 100}},
                   {"success_threshold_pct", 90.0},
                   {"failure_limit_count", 3},
                   {"failure_limit_pct", 5.0},
                   {"max_parallel_per_gateway", 4},
                   {"max_parallel_per_bus", 1},
                   {"device_timeout_s", 900},
                   {"retries", 1},
                   {"health_gate_s", 300},
                   {"blackout", {"06:00-09:00", "17:00-20:00", "23:00-01:00"}},
                   {"utc_offset", "+08:00"}};
  EXPECT_EQ(*s, expected) << s->dump();
}

TEST_F(RolloutFormatTest, FlagsOverrideASpecFile) {
  json file = {{"id", "from-file"}, {"artifact_sha256", std::string(64, 'a')}, {"canary_count", 1},
               {"target", {{"kinds", {"bin"}}, {"models", {"B-1"}}}}};
  RolloutSpecArgs a;
  a.id = "from-flag";
  a.kinds = {"garbage_room"};
  auto s = BuildSpec(file, a);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ((*s)["id"], "from-flag");
  EXPECT_EQ((*s)["artifact_sha256"], std::string(64, 'a'));
  EXPECT_EQ((*s)["target"]["kinds"], json({"garbage_room"}));
  EXPECT_EQ((*s)["target"]["models"], json({"B-1"}));  // untouched
  EXPECT_EQ((*s)["canary_count"], 1);

  EXPECT_FALSE(BuildSpec(json::array(), a).ok());
  RolloutSpecArgs no_id;
  no_id.artifact = "3f";
  EXPECT_NE(BuildSpec(json::object(), no_id).status().message().find("--id"), std::string::npos);
  RolloutSpecArgs no_artifact;
  no_artifact.id = "x";
  EXPECT_NE(BuildSpec(json::object(), no_artifact).status().message().find("--artifact"), std::string::npos);
  RolloutSpecArgs bad_waves;
  bad_waves.id = "x";
  bad_waves.artifact = "3f";
  bad_waves.waves = "50,10";
  EXPECT_NE(BuildSpec(json::object(), bad_waves).status().message().find("--waves"), std::string::npos);
  // No filter at all: no "target" member (sanifleet's default: every device of the type).
  RolloutSpecArgs plain;
  plain.id = "x";
  plain.artifact = "3f";
  EXPECT_FALSE(BuildSpec(json::object(), plain)->contains("target"));
}

TEST_F(RolloutFormatTest, PlanSummaryNamesTheCanaryAndTheWaves) {
  EXPECT_EQ(PlanSummary({{"id", "x"}, {"total", 40}, {"groups", {1, 4, 35}}}, true),
            "40 devices in 3 groups: canary: 1, wave 1: 4, wave 2: 35");
  EXPECT_EQ(PlanSummary({{"total", 10}, {"groups", {5, 5}}}, false), "10 devices in 2 groups: wave 1: 5, wave 2: 5");
  EXPECT_EQ(PlanSummary({{"total", 1}, {"groups", {1}}}, true), "1 device in 1 group: canary: 1");
  EXPECT_EQ(PlanSummary({{"total", 0}, {"groups", json::array()}}, true).rfind("0 devices: ", 0), 0u);
}

TEST_F(RolloutFormatTest, BarWidthsAreProportionalAndKeepSmallCountsVisible) {
  auto sum = [](const std::vector<int>& w) { return std::accumulate(w.begin(), w.end(), 0); };
  BarCounts half{5, 0, 0, 0, 5};
  EXPECT_EQ(BarWidths(half, 20), (std::vector<int>{10, 0, 0, 0, 10}));
  // One failure among 1000 still gets a cell; the total stays the width.
  BarCounts one_failure{499, 1, 0, 0, 500};
  auto w = BarWidths(one_failure, 20);
  EXPECT_EQ(w[1], 1);
  EXPECT_EQ(sum(w), 20);
  // Thirds: the remainder goes to the largest fractions, ties to the earlier segment.
  BarCounts thirds{1, 0, 1, 0, 1};
  EXPECT_EQ(BarWidths(thirds, 10), (std::vector<int>{4, 0, 3, 0, 3}));
  // More non-zero segments than cells: the sum never exceeds the width.
  BarCounts all{1, 1, 1, 1, 1};
  EXPECT_EQ(sum(BarWidths(all, 3)), 3);
  EXPECT_EQ(sum(BarWidths(all, 5)), 5);
  EXPECT_EQ(BarWidths(BarCounts{}, 20), (std::vector<int>(5, 0)));
  EXPECT_EQ(BarWidths(half, 0), (std::vector<int>(5, 0)));
  for (int width = 1; width <= 40; ++width) EXPECT_EQ(sum(BarWidths({7, 2, 3, 1, 30}, width)), width);
}

TEST_F(RolloutFormatTest, ProgressBarCharactersAndColour) {
  EXPECT_EQ(ProgressBar({2, 1, 1, 1, 5}, 10, false, false), "[##x>~.....]");
  EXPECT_EQ(ProgressBar({}, 5, false, false), "[     ]");
  EXPECT_EQ(ProgressBar({1, 0, 0, 0, 1}, 4, false, true), "[██··]");
  std::string coloured = ProgressBar({1, 1, 0, 0, 0}, 2, true, false);
  EXPECT_EQ(coloured, "[" + Paint("#", Color::kGreen, true) + Paint("x", Color::kRed, true) + "]");
}

json Status(const std::string& state = "running") {
  return {{"id", "fw-142"},
          {"state", state},
          {"reason", state == "paused" ? "wave 1: 50% succeeded, below 95%" : ""},
          {"target_type", "modbus"},
          {"model", "GR-200"},
          {"version", "1.4.2"},
          {"group", 1},
          {"groups",
           {{{"group", 0}, {"name", "canary"}, {"total", 1}, {"succeeded", 1}, {"failed", 0}},
            {{"group", 1}, {"name", "wave 1"}, {"total", 4}, {"succeeded", 2}, {"failed", 1}},
            {{"group", 2}, {"name", "wave 2"}, {"total", 5}, {"succeeded", 0}, {"failed", 0}}}},
          {"total", 10},
          {"counts", {{"pending", 5}, {"deferred", 0}, {"updating", 1}, {"verifying", 0}, {"succeeded", 3}, {"failed", 1}}},
          {"blackout_now", false},
          {"created", kTs - 3600000},
          {"updated", kTs - 5000},
          {"ts", kTs}};
}

TEST_F(RolloutFormatTest, StatusViewShowsStateProgressAndGroups) {
  StatusViewOptions o;
  o.now_ms = kTs;
  o.width = 80;
  std::string view = RenderRolloutStatus(Status(), o);
  EXPECT_EQ(view,
            "rollout fw-142  running  at wave 1 (group 2 of 3)\n"
            "image:    GR-200 1.4.2 (modbus)\n"
            // 44 cells: 13.2 / 4.4 / 4.4 / 0 / 22 → 13, 5 (the tie goes to failed), 4, 0, 22
            "progress: [#############xxxxx>>>>......................]  3/10 succeeded (30%)\n"
            "          failed 1, updating 1, verifying 0, deferred 0, pending 5\n"
            "created:  2025-11-21 07:00:00 (1h ago)\n"
            "updated:  2025-11-21 07:59:55 (5s ago)\n"
            "\n"
            "   GROUP   TOTAL  SUCCEEDED  FAILED\n"
            "   canary  1      1          0\n"
            ">  wave 1  4      2          1\n"
            "   wave 2  5      0          0\n")
      << view;
}

TEST_F(RolloutFormatTest, StatusViewOfAPausedCampaignShowsTheReasonAndBlackout) {
  json st = Status("paused");
  st["blackout_now"] = true;
  StatusViewOptions o;
  o.now_ms = kTs;
  std::string view = RenderRolloutStatus(st, o);
  EXPECT_NE(view.find("reason:   wave 1: 50% succeeded, below 95%\n"), std::string::npos) << view;
  EXPECT_NE(view.find("blackout: now: no device starts"), std::string::npos) << view;
  // Done campaigns have no current group.
  std::string completed = RenderRolloutStatus(Status("completed"), o);
  EXPECT_EQ(completed.find("\n>"), std::string::npos) << completed;
  EXPECT_NE(completed.find("\nGROUP   TOTAL"), std::string::npos) << completed;
  EXPECT_NE(RenderRolloutStatus(Status("draft"), o).find("sanictl rollout start fw-142"), std::string::npos);
}

TEST_F(RolloutFormatTest, DeviceTableListsWhatIsNotDoneFailedFirst) {
  json st = Status();
  st["devices"] = {
      {{"device", "houpu/room-01"}, {"gateway", "gw-1"}, {"group", 0}, {"state", "succeeded"}, {"attempts", 1}, {"reason", ""}},
      {{"device", "houpu/room-09"}, {"gateway", "gw-2"}, {"group", 2}, {"state", "pending"}, {"attempts", 0}, {"reason", ""}},
      {{"device", "houpu/room-04"}, {"gateway", "gw-1"}, {"group", 1}, {"state", "updating"}, {"attempts", 1}, {"reason", ""}},
      {{"device", "other/room-05"}, {"gateway", "gw-9"}, {"group", 1}, {"state", "failed"}, {"attempts", 3},
       {"reason", "device reports 1.4.1 after the install, not 1.4.2"}},
  };
  StatusViewOptions o;
  o.now_ms = kTs;
  o.site = "houpu";
  std::string view = RenderRolloutStatus(st, o);
  auto at = view.find("DEVICE");
  ASSERT_NE(at, std::string::npos) << view;
  EXPECT_EQ(view.substr(at),
            "DEVICE         GATEWAY  GROUP   STATE     ATTEMPTS  LAST FAILURE\n"
            "other/room-05  gw-9     wave 1  failed    3         device reports 1.4.1 after the install, not 1.4.2\n"
            "room-04        gw-1     wave 1  updating  1         -\n"
            "room-09        gw-2     wave 2  pending   0         -\n");
  o.max_devices = 1;
  view = RenderRolloutStatus(st, o);
  EXPECT_NE(view.find("… and 2 more"), std::string::npos) << view;
  EXPECT_EQ(view.find("room-04"), std::string::npos);

  json done = Status("completed");
  done["devices"] = json::array({{{"device", "houpu/room-01"}, {"state", "succeeded"}}});
  EXPECT_NE(RenderRolloutStatus(done, o).find("every device has succeeded"), std::string::npos);
}

TEST_F(RolloutFormatTest, WatchLineAndChangeKey) {
  EXPECT_EQ(RolloutStatusLine(Status()),
            "08:00:00 fw-142 running wave 1: succeeded 3/10, failed 1, updating 1, deferred 0, pending 5");
  EXPECT_EQ(RolloutStatusLine(Status("paused")),
            "08:00:00 fw-142 paused wave 1: succeeded 3/10, failed 1, updating 1, deferred 0, pending 5 "
            "(wave 1: 50% succeeded, below 95%)");
  json later = Status();
  later["ts"] = kTs + 2000;
  later["updated"] = kTs + 1000;
  EXPECT_EQ(StatusChangeKey(later), StatusChangeKey(Status()));  // only time moved
  later["counts"]["succeeded"] = 4;
  EXPECT_NE(StatusChangeKey(later), StatusChangeKey(Status()));
}

TEST_F(RolloutFormatTest, GroupNamesWithoutACanaryStartAtWave1) {
  EXPECT_EQ(GroupNames(3, true), (std::vector<std::string>{"canary", "wave 1", "wave 2"}));
  EXPECT_EQ(GroupNames(2, false), (std::vector<std::string>{"wave 1", "wave 2"}));
  json st = Status();
  st["groups"][0]["name"] = "wave 0";  // sanifleet's name for group 0 when there is no canary
  st["group"] = 0;
  EXPECT_NE(RenderRolloutStatus(st, {}).find("at wave 1 (group 1 of 3)"), std::string::npos);
}

TEST_F(RolloutFormatTest, RolloutListTable) {
  json list = {{"rollouts", {Status(), Status("completed")}}};
  list["rollouts"][1]["id"] = "fw-141";
  EXPECT_EQ(RenderTable(RolloutTable(list, kTs), false),
            "ID      STATE      IMAGE         TARGET  GROUP   PROGRESS  FAILED  UPDATED\n"
            "fw-142  running    GR-200 1.4.2  modbus  wave 1  3/10      1       5s ago\n"
            "fw-141  completed  GR-200 1.4.2  modbus  -       3/10      1       5s ago\n");
}

}  // namespace
}  // namespace sanigate::ctl
