#include "api/rules_config.h"

#include <regex>
#include <sstream>

namespace sanigate::dev {
namespace {
std::string FormatValue(double v) {
  std::ostringstream os;
  os << v;
  return os.str();
}
}  // namespace

bool IsMetricName(const std::string& s) {
  static const std::regex re("^[a-z][a-z0-9_]*$");
  return std::regex_match(s, re);
}

OverflowRule ParseOverflowRule(settings::Node& ov) {
  OverflowRule o;
  o.metric = ov.String("metric", o.metric);
  o.active_at = ov.Double("active_at", o.active_at, -1e9, 1e9);
  o.clear_below = ov.Double("clear_below", o.clear_below, -1e9, 1e9);
  if (o.clear_below > o.active_at)
    ov.Problem("clear_below", "must not be above active_at (" + FormatValue(o.active_at) + ")");
  ov.Finish();
  return o;
}

EventRule ParseEventRule(settings::Node& en) {
  EventRule e;
  if (auto ev = en.RequiredString("event")) {
    e.event = *ev;
    if (!IsMetricName(e.event)) en.Problem("event", "\"" + e.event + "\" is not an event name (^[a-z][a-z0-9_]*$)");
  }
  if (auto m = en.RequiredString("metric")) e.metric = *m;
  e.active_at = en.OptionalDouble("active_at", -1e15, 1e15);
  e.clear_at = en.OptionalDouble("clear_at", -1e15, 1e15);
  e.below = en.Bool("below", false);
  std::string sev = en.OneOf("severity", "warning", {"info", "warning", "critical"});
  e.severity = sev == "info" ? Severity::kInfo : sev == "critical" ? Severity::kCritical : Severity::kWarning;
  if (e.clear_at && !e.active_at) en.Problem("clear_at", "needs active_at (a bool metric has no threshold)");
  if (e.active_at && e.clear_at && (e.below ? *e.clear_at < *e.active_at : *e.clear_at > *e.active_at))
    en.Problem("clear_at", e.below ? "must not be below active_at when below = true" : "must not be above active_at");
  en.Finish();
  return e;
}

}  // namespace sanigate::dev
