// MQTT topic filters (MQTT 5 §4.7): validity and matching, for the upstream destinations'
// include/exclude lists. Pure functions; thread-safe.
#pragma once

#include <string_view>

namespace sanigate {

// '+' must fill a whole level, '#' only as the whole last level; no NUL, not empty.
bool IsValidTopicFilter(std::string_view filter);
// Whether `topic` (no wildcards) matches `filter`. Topics starting with '$' never match a filter
// that starts with a wildcard.
bool TopicMatchesFilter(std::string_view filter, std::string_view topic);

}  // namespace sanigate
