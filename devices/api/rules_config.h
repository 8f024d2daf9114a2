// Config parsing shared by every protocol: the `overflow = {…}` table and the `[[…events]]`
// entries that become pipeline rules (core/device_rules.h). Whether the named metric exists is
// the caller's check (each protocol knows its own metrics). Load time only; not thread-safe.
#pragma once

#include <string>

#include "core/device_rules.h"
#include "settings/reader.h"

namespace sanigate::dev {

bool IsMetricName(const std::string& s);  // ^[a-z][a-z0-9_]*$

// `overflow = { metric, active_at, clear_below }`
OverflowRule ParseOverflowRule(settings::Node& table);
// One `[[events]]` entry: event, metric, active_at, clear_at, below, severity.
EventRule ParseEventRule(settings::Node& entry);

}  // namespace sanigate::dev
