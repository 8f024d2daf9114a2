// Input from outside: limits before parsing, UTF-8, quoting, and the command payload grammar.
// The two payloads that killed the gateway (issue 17) and their neighbours are here.
#include <gtest/gtest.h>

#include <string>

#include "app/command_payload.h"
#include "core/untrusted.h"

namespace sanigate {
namespace {

using app::ParseCommandPayload;

TEST(UntrustedTest, QuotePrefixEscapesAndCutsLongInput) {
  EXPECT_EQ(QuotePrefix("on"), "\"on\"");
  EXPECT_EQ(QuotePrefix(std::string("a\"b\\c\n\xff", 7)), "\"a\\\"b\\\\c\\x0a\\xff\"");
  std::string big(1 << 20, 'x');
  std::string q = QuotePrefix(big, 8);
  EXPECT_EQ(q, "\"xxxxxxxx\"... (1048576 bytes)");
}

TEST(UntrustedTest, Utf8ValidationFindsTheFirstBadByte) {
  EXPECT_EQ(FirstInvalidUtf8("plain"), std::string_view::npos);
  EXPECT_EQ(FirstInvalidUtf8("\xe7\x8e\xaf\xe5\x8d\xab"), std::string_view::npos);  // 环卫
  EXPECT_EQ(FirstInvalidUtf8("\xf0\x9f\x9a\x9b"), std::string_view::npos);           // an emoji
  EXPECT_EQ(FirstInvalidUtf8("ab\xff"), 2u);
  EXPECT_EQ(FirstInvalidUtf8("\xc0\xaf"), 0u);          // overlong "/"
  EXPECT_EQ(FirstInvalidUtf8("x\xed\xa0\x80"), 1u);     // a UTF-16 surrogate
  EXPECT_EQ(FirstInvalidUtf8("\xe7\x8e"), 0u);          // cut short
  EXPECT_EQ(FirstInvalidUtf8("\xf4\x90\x80\x80"), 0u);  // above U+10FFFF
}

TEST(UntrustedTest, NestingDepthIgnoresBracketsInsideStrings) {
  EXPECT_EQ(JsonNestingDepth(R"({"a":[1,{"b":"[[[{{"}]})", 100), 3u);
  EXPECT_EQ(JsonNestingDepth(R"("\"[")", 100), 0u);
  std::string deep(100000, '[');
  EXPECT_EQ(JsonNestingDepth(deep, 16), 17u) << "stops as soon as the limit is passed";
}

TEST(UntrustedTest, ParseRefusesOversizedInvalidAndDeepInputWithClearErrors) {
  JsonLimits limits{.max_bytes = 1024, .max_depth = 8};
  EXPECT_EQ(ParseUntrustedJson(std::string(2000, ' '), limits).status().message(),
            "payload of 2000 bytes is over the limit of 1024");
  EXPECT_EQ(ParseUntrustedJson("{\"v\":\"\xff\"}", limits).status().message(), "invalid UTF-8 at byte 6");
  EXPECT_EQ(ParseUntrustedJson(std::string(500, '[') + std::string(500, ']'), limits).status().message(),
            "JSON nested deeper than 8");
  EXPECT_EQ(ParseUntrustedJson("{\"a\":", limits).status().message(), "invalid JSON: \"{\\\"a\\\":\"");
  auto ok = ParseUntrustedJson("{\"a\":[1,2]}", limits);
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ((*ok)["a"][1], 2);
}

TEST(UntrustedTest, SafeDumpNeverThrowsOnInvalidUtf8) {
  nlohmann::json j = {{"error", std::string("\"\xff\xfe\" is not a value")}};
  EXPECT_THROW((void)j.dump(), nlohmann::json::type_error);
  EXPECT_EQ(SafeDump(j), "{\"error\":\"\\\"\xef\xbf\xbd\xef\xbf\xbd\\\" is not a value\"}");
}

TEST(CommandPayloadTest, EveryDocumentedFormGivesTheSameArguments) {
  for (const char* p : {"on", "\"on\"", "{\"value\":\"on\"}", "{\"args\":[\"on\"]}", "  on  "}) {
    auto r = ParseCommandPayload(p);
    ASSERT_TRUE(r.ok()) << p << ": " << r.status().message();
    EXPECT_EQ(r->args, std::vector<std::string>{"on"}) << p;
  }
  auto numbers = ParseCommandPayload("{\"args\":[600, true, \"x\"], \"timeout_ms\": 2500}");
  ASSERT_TRUE(numbers.ok());
  EXPECT_EQ(numbers->args, (std::vector<std::string>{"600", "true", "x"}));
  EXPECT_EQ(numbers->timeout.count(), 2500);
  auto text = ParseCommandPayload("set_interval 600");
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(text->args, (std::vector<std::string>{"set_interval", "600"}));
  EXPECT_TRUE(ParseCommandPayload("")->args.empty());
}

TEST(CommandPayloadTest, ATimeoutAloneIsAValidRequest) {
  // README: {"timeout_ms": 2000} asks with the command's default argument and a timeout.
  auto r = ParseCommandPayload("{\"timeout_ms\": 2000}");
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_TRUE(r->args.empty());
  EXPECT_EQ(r->timeout.count(), 2000);
}

TEST(CommandPayloadTest, HostilePayloadsAreRefusedWithShortClearErrors) {
  // The two payloads that killed the gateway: invalid UTF-8 in a value, and 100,000 levels.
  auto bad_utf8 = ParseCommandPayload("{\"value\":\"\xff\xfe\"}");
  EXPECT_EQ(bad_utf8.status().message(), "invalid UTF-8 at byte 10");
  std::string deep = "{\"args\":" + std::string(100000, '[') + std::string(100000, ']') + "}";
  EXPECT_EQ(ParseCommandPayload(deep).status().message(), "payload of 200009 bytes is over the limit of 4096");
  std::string deep_small = "{\"args\":" + std::string(1000, '[') + std::string(1000, ']') + "}";
  EXPECT_EQ(ParseCommandPayload(deep_small).status().message(), "JSON nested deeper than 4");
  std::string mib(1 << 20, 'a');
  auto big = ParseCommandPayload(mib);
  EXPECT_EQ(big.status().message(), "payload of 1048576 bytes is over the limit of 4096");
  EXPECT_LT(big.status().message().size(), 80u) << "never echoes the payload";
  EXPECT_EQ(ParseCommandPayload("{\"args\":[[1]]}").status().message(),
            "arguments must be strings, numbers or booleans");
  EXPECT_EQ(ParseCommandPayload("{\"arg\":[\"on\"]}").status().message(),
            "unknown key \"arg\" (args, value, timeout_ms)");
  EXPECT_EQ(ParseCommandPayload("{\"args\":[\"on\"],").status().message(), "invalid JSON: \"{\\\"args\\\":[\\\"on\\\"],\"");
  EXPECT_EQ(ParseCommandPayload("{\"timeout_ms\": 1}").status().message(), "timeout_ms must be an integer from 10 to 60000");
  std::string many = "{\"args\":[";
  for (int i = 0; i < 17; ++i) many += std::string(i ? "," : "") + "\"a\"";
  EXPECT_EQ(ParseCommandPayload(many + "]}").status().message(), "more than 16 arguments");
  EXPECT_EQ(ParseCommandPayload("{\"value\":\"" + std::string(300, 'z') + "\"}").status().message(),
            "argument \"zzzzzzzzzzzzzzzzzzzzzzzz\"... (300 bytes) is longer than 256 bytes");
}

}  // namespace
}  // namespace sanigate
