// What `sanictl tail` (and sanifleet's dispatcher) do with a message of the MQTT model: the topic
// taken apart (mqtt/topics.h ParseModelTopic, checked against the topic builders) and the payload
// rendered as one line (ctl/format.h TailLine, with and without colour), plus the text helpers it
// uses (DisplayWidth, ValueText, MetricsText, GlobMatch, times). A tail line is one line, and
// without colour it holds no control characters. Input: the topic, a newline, the payload.
#include <cstdint>
#include <nlohmann/json.hpp>

#include "ctl/format.h"
#include "fuzz_common.h"
#include "mqtt/topics.h"

using nlohmann::json;
using namespace sanigate;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text = fuzz::Text(data, size);
  size_t nl = text.find('\n');
  std::string_view topic = text.substr(0, nl);
  std::string_view payload = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);

  for (std::string_view prefix : {std::string_view("sanigate/v1"), std::string_view("+")}) {
    auto t = mqtt::topics::ParseModelTopic(prefix, topic);
    if (!t) continue;
    if (t->group == "devices" && prefix == "sanigate/v1") {
      std::string rebuilt = mqtt::topics::Device(prefix, t->site, t->id, t->leaf);
      auto again = mqtt::topics::ParseModelTopic(prefix, rebuilt);
      FUZZ_CHECK(again && again->site == t->site && again->group == t->group && again->id == t->id && again->leaf == t->leaf,
                 "topic round trip: " + std::string(topic) + " -> " + rebuilt);
    }
  }

  (void)ctl::DisplayWidth(topic);
  ctl::GlobMatch(topic, payload.substr(0, 256));
  json j = json::parse(payload, nullptr, false);
  if (j.is_discarded()) return 0;
  (void)ctl::ValueText(j);
  if (j.is_object()) {
    if (auto m = j.find("metrics"); m != j.end()) (void)ctl::MetricsText(*m);
    if (auto ts = j.find("ts"); ts != j.end() && ts->is_number_integer()) {
      int64_t v = ts->get<int64_t>();
      (void)ctl::RelativeTime(v, 1'767'225'600'000);
      (void)ctl::Duration(v);
      (void)ctl::LocalClock(v);
      (void)ctl::LocalDateTime(v);
    }
  }
  for (const char* group : {"devices", "gateway"}) {
    for (const char* type : {"telemetry", "event", "status"}) {
      ctl::TailMessage m{group, "room-07", type, j};
      for (bool color : {false, true}) {
        std::string line = ctl::TailLine(m, color);
        FUZZ_CHECK(line.find('\n') == std::string::npos || line.find('\n') == line.size() - 1,
                   "a tail line with a line break inside: " + line);
        // Without colour nothing in the line may control the terminal (ESC, CR, BEL, ...).
        if (!color)
          for (char c : line)
            FUZZ_CHECK(static_cast<unsigned char>(c) >= 0x20 && c != 0x7F, "a control character in a tail line: " + line);
      }
    }
  }
  return 0;
}
