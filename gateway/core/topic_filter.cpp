#include "core/topic_filter.h"

namespace sanigate {
namespace {

// Splits off the next level: returns it and advances `rest` past the '/' (npos at the end).
std::string_view NextLevel(std::string_view& rest, bool& more) {
  auto slash = rest.find('/');
  std::string_view level = rest.substr(0, slash);
  more = slash != std::string_view::npos;
  rest = more ? rest.substr(slash + 1) : std::string_view();
  return level;
}

}  // namespace

bool IsValidTopicFilter(std::string_view filter) {
  if (filter.empty() || filter.find('\0') != std::string_view::npos) return false;
  std::string_view rest = filter;
  bool more = true;
  while (more) {
    std::string_view level = NextLevel(rest, more);
    if (level.find_first_of("+#") == std::string_view::npos) continue;
    if (level.size() != 1) return false;          // "a+" or "#x"
    if (level == "#" && more) return false;       // '#' only last
  }
  return true;
}

bool TopicMatchesFilter(std::string_view filter, std::string_view topic) {
  if (!topic.empty() && topic.front() == '$' && !filter.empty() && (filter.front() == '+' || filter.front() == '#'))
    return false;
  std::string_view f = filter, t = topic;
  bool f_more = true, t_more = true;
  while (f_more) {
    std::string_view fl = NextLevel(f, f_more);
    if (fl == "#") return true;  // also matches the parent level itself ("a/#" matches "a")
    if (!t_more) return false;
    std::string_view tl = NextLevel(t, t_more);
    if (fl != "+" && fl != tl) return false;
  }
  return !t_more;
}

}  // namespace sanigate
