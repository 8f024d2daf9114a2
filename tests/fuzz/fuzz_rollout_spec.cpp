// Rollout campaigns (fleet/rollout/campaign.h): the admin verb rollout_create hands sanifleet a
// campaign spec as JSON (ParseSpec), and a campaign's state lives in a JSON file (FromJson).
// A spec that parses is written back (SpecJson) and must parse to the same spec; it is then
// planned over a fixed set of devices and run for a few ticks with installs that succeed, fail or
// go quiet, and its state must survive ToJson/FromJson at every step. Any state document that
// loads must round-trip and keep working through Tick.
#include <algorithm>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <vector>

#include "fuzz_common.h"
#include "rollout/campaign.h"

using nlohmann::json;
using namespace sanigate::fleet::rollout;

namespace {

void StateRoundTrip(const Campaign& c) {
  json a = c.ToJson();
  auto back = Campaign::FromJson(a);
  FUZZ_CHECK(back.ok(), "FromJson(ToJson(c)) failed: " + back.status().message());
  FUZZ_CHECK(back.value().ToJson() == a, "campaign state changed in the round trip");
}

std::vector<Candidate> Devices() {
  std::vector<Candidate> d;
  const char* gateways[] = {"gw-a", "gw-b", "gw-c"};
  for (int i = 0; i < 9; ++i) {
    Candidate c;
    c.site = i < 6 ? "houpu" : "xinyuan";
    c.device = "dev-" + std::to_string(i);
    c.key = c.site + "/" + c.device;
    c.kind = i % 2 ? "room" : "truck";
    c.profile = i % 3 ? "garbage-room-v1" : "jt808-truck";
    c.model = i % 2 ? "GR-200" : "JT-1";
    c.gateway = gateways[i % 3];
    c.bus = "bus-" + std::to_string(i % 2);
    c.firmware = i == 4 ? "2.0.0" : "1.0." + std::to_string(i);
    c.tags = {i % 2 ? "east" : "west"};
    c.online = i != 5;
    d.push_back(c);
  }
  return d;
}

void Run(Campaign& c, const CampaignSpec& spec, uint32_t seed, int64_t t) {
  (void)c.Start(t);
  for (int step = 0; step < 24; ++step) {
    t += 60'000 * (1 + (seed >> (step % 29) & 7));
    auto jobs = c.Tick(t);
    for (const StartJob& j : jobs) {
      FUZZ_CHECK(c.devices().count(j.key), "a start for a device outside the campaign");
      switch ((seed + step + j.attempt) % 4) {
        case 0: c.OnVersion(j.key, spec.version, t); break;
        case 1: c.OnFailed(j.key, "flash error", t); break;
        case 2: c.OnOnline(j.key, false, t); break;
        default: break;  // quiet: times out
      }
    }
    for (const auto& [key, d] : c.devices()) {
      if (d.state == DeviceState::kVerifying) c.OnHealth(key, (seed >> (step % 31)) & 1, t - 1000, t);
      if (d.state == DeviceState::kDeferred && step % 3 == 0) c.OnOnline(key, true, t);
    }
    if (step == 7 && (seed & 1)) (void)c.Pause("operator", t);
    if (step == 9) (void)c.Resume(t);
    if (step == 20 && (seed & 2)) (void)c.Abort("operator", t);
    (void)c.StatusJson(t);
    StateRoundTrip(c);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  json j = json::parse(fuzz::Text(data, size), nullptr, false);
  if (j.is_discarded()) return 0;
  uint32_t seed = static_cast<uint32_t>(size * 2654435761u);
  const int64_t t0 = 1'767'225'600'000;

  auto spec = ParseSpec(j);
  if (spec.ok()) {
    json written = SpecJson(spec.value());
    auto again = ParseSpec(written);
    FUZZ_CHECK(again.ok(), "ParseSpec(SpecJson(s)) failed: " + again.status().message());
    FUZZ_CHECK(SpecJson(again.value()) == written, "spec changed in the round trip");
    Plan plan = MakePlan(spec.value(), Devices(), [](const std::string& v) { return v.rfind("1.", 0) == 0; });
    Campaign c(spec.value(), plan, t0);
    FUZZ_CHECK(plan.total() == c.devices().size(), "the campaign has other devices than its plan");
    Run(c, spec.value(), seed, t0);
  }

  auto state = Campaign::FromJson(j);
  if (state.ok()) {
    StateRoundTrip(state.value());
    Campaign c = state.value();
    // The clock of this run starts at the state's own time (kept where our additions cannot overflow).
    Run(c, c.spec(), seed, std::clamp<int64_t>(c.updated_ms(), 0, 4'000'000'000'000'000));
  }
  return 0;
}
