// sanifleet's table of admin verbs (fleet/app/admin_verbs.h): the limits and the error replies
// every verb shares, and an unknown verb's reply naming the known ones.
#include "app/admin_verbs.h"

#include <gtest/gtest.h>

#include <string>

namespace sanigate::fleet {
namespace {

using nlohmann::json;

class AdminVerbsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    verbs_.Add("echo", [this](const json& args, int64_t now) {
      ++calls_;
      return AdminAnswer::Ok({{"args", args}, {"now", now}});
    });
    verbs_.Add("find", [](const json& args, int64_t) {
      if (!args.contains("id")) return AdminAnswer::Fail("invalid", "argument \"id\" is required");
      return AdminAnswer::Fail("not_found", "no " + args["id"].get<std::string>());
    });
    verbs_.Add("upload", [](const json&, int64_t) { return AdminAnswer::Ok({{"stored", true}}); }, 1024 * 1024);
  }
  AdminVerbs verbs_;
  int calls_ = 0;
};

TEST_F(AdminVerbsTest, AnswersWithTheHandlersResultOrItsError) {
  json ok = verbs_.Answer("echo", R"({"x":1})", 42);
  EXPECT_EQ(ok, (json{{"ok", true}, {"result", {{"args", {{"x", 1}}}, {"now", 42}}}}));
  // No payload at all is no arguments.
  EXPECT_EQ(verbs_.Answer("echo", "", 1)["result"]["args"], json::object());
  EXPECT_EQ(verbs_.Answer("find", "{}", 1), (json{{"ok", false}, {"error", "argument \"id\" is required"}, {"code", "invalid"}}));
  EXPECT_EQ(verbs_.Answer("find", R"({"id":"bin-9"})", 1)["code"], "not_found");
}

TEST_F(AdminVerbsTest, AnUnknownVerbListsTheKnownOnesInTheOrderTheyWereAdded) {
  json r = verbs_.Answer("frobnicate", "{}", 1);
  EXPECT_EQ(r["ok"], false);
  EXPECT_EQ(r["code"], "invalid");
  EXPECT_EQ(r["error"], "unknown verb \"frobnicate\" (echo, find, upload)");
  EXPECT_EQ(verbs_.Names(), (std::vector<std::string>{"echo", "find", "upload"}));
  // One entry per verb: adding it again replaces the handler and keeps its place.
  verbs_.Add("echo", [](const json&, int64_t) { return AdminAnswer::Ok("again"); });
  EXPECT_EQ(verbs_.Answer("echo", "", 1)["result"], "again");
  EXPECT_EQ(verbs_.Names().size(), 3u);
}

TEST_F(AdminVerbsTest, PayloadsOutsideTheLimitsAreRefusedBeforeTheHandler) {
  // Not JSON, not an object, too deep, too big: "invalid", and the handler never runs.
  for (const std::string& payload : {std::string("{"), std::string("[1,2]"), std::string("\"text\""),
                                     std::string(20, '[') + std::string(20, ']'),
                                     R"({"pad":")" + std::string(AdminVerbs::kDefaultMaxBytes, 'x') + R"("})"}) {
    json r = verbs_.Answer("echo", payload, 1);
    EXPECT_EQ(r["ok"], false) << payload.substr(0, 40);
    EXPECT_EQ(r["code"], "invalid") << payload.substr(0, 40);
    EXPECT_FALSE(r["error"].get<std::string>().empty());
  }
  EXPECT_EQ(calls_, 0);
  EXPECT_EQ(verbs_.Answer("echo", "[]", 1)["error"], "the request payload must be a JSON object of arguments");
  // A verb with a larger limit takes what the others may not.
  std::string big = R"({"pad":")" + std::string(200 * 1024, 'x') + R"("})";
  EXPECT_EQ(verbs_.Answer("echo", big, 1)["code"], "invalid");
  EXPECT_EQ(verbs_.Answer("upload", big, 1)["ok"], true);
  // An unknown verb is held to the default limit too (its payload is parsed first, as always).
  EXPECT_EQ(verbs_.Answer("frobnicate", "{", 1)["error"].get<std::string>().find("unknown verb"), std::string::npos);
}

}  // namespace
}  // namespace sanigate::fleet
