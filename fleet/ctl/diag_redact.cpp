#include "ctl/diag_redact.h"

#include <algorithm>
#include <cctype>
#include <optional>
#include <sstream>

#include <toml++/toml.h>

namespace sanigate::ctl {
namespace {

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

bool AnySecret(const std::vector<std::string>& parts) {
  return std::any_of(parts.begin(), parts.end(), [](const std::string& p) { return IsSecretKey(p); });
}

bool BareKeyChar(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_' || c == '-';
}

// What replaces a span: a value, a piece of a string (URL user info), or a whole line that could
// not be read after a secret that did not scan (it may be the secret's continuation).
enum class SpanKind { kValue, kInString, kLine };

struct Span {
  size_t begin, end;
  SpanKind kind;
};

// Walks the text as TOML, tolerantly: an error ends the statement at its line, and the next line
// starts afresh. Finds the spans to replace; never writes.
class Scanner {
 public:
  explicit Scanner(std::string_view s) : s_(s) {}

  void Run() {
    while (p_ < s_.size()) Statement();
  }

  std::vector<Span> spans;
  std::vector<std::string> secret_strings;  // string values inside removed spans
  std::vector<std::string> file_refs;

 private:
  char Peek(size_t k = 0) const { return p_ + k < s_.size() ? s_[p_ + k] : '\0'; }
  bool Starts(std::string_view t) const { return s_.substr(p_, t.size()) == t; }
  size_t LineEnd(size_t from) const {
    size_t nl = s_.find('\n', from);
    return nl == std::string_view::npos ? s_.size() : nl;
  }
  void SkipWs() {
    while (Peek() == ' ' || Peek() == '\t') ++p_;
  }
  bool AtLineEnd() const { return p_ >= s_.size() || Peek() == '\n' || (Peek() == '\r' && Peek(1) == '\n'); }

  // Spaces, newlines and comments (inside arrays and, tolerated, inline tables).
  void SkipWsNlComments() {
    while (p_ < s_.size()) {
      char c = Peek();
      if (c == ' ' || c == '\t' || c == '\n' || c == '\r') ++p_;
      else if (c == '#') Comment();
      else break;
    }
  }

  // A comment (or an unreadable line) may hold an assignment to a secret key, commented out or
  // in prose ("# password = ..."): from the '=' after such a key to the end goes.
  void LooseAssignments(size_t begin, size_t end) {
    for (size_t eq = s_.find('=', begin); eq != std::string_view::npos && eq < end; eq = s_.find('=', eq + 1)) {
      size_t k = eq;
      while (k > begin && (s_[k - 1] == ' ' || s_[k - 1] == '\t' || s_[k - 1] == '"' || s_[k - 1] == '\'')) --k;
      size_t key_end = k;
      while (k > begin && BareKeyChar(s_[k - 1])) --k;
      if (k == key_end || !IsSecretKey(s_.substr(k, key_end - k))) continue;
      size_t v = eq + 1;
      while (v < end && (s_[v] == ' ' || s_[v] == '\t')) ++v;
      size_t e = end;
      if (e > v && s_[e - 1] == '\r') --e;
      if (e > v) spans.push_back({v, e, SpanKind::kValue});
      return;  // the rest of the line is gone
    }
  }

  void Comment() {
    size_t end = LineEnd(p_);
    LooseAssignments(p_, end);
    p_ = end;
  }

  // Strings: p_ on the opening quote; `content` gets the raw text between the quotes.
  bool BasicString(std::string& content, size_t& content_begin) {
    ++p_;
    content_begin = p_;
    while (p_ < s_.size()) {
      char c = Peek();
      if (c == '\n') return false;
      if (c == '\\') {
        p_ += 2;
        continue;
      }
      if (c == '"') {
        content.assign(s_.substr(content_begin, p_ - content_begin));
        ++p_;
        return true;
      }
      ++p_;
    }
    return false;
  }
  bool LiteralString(std::string& content, size_t& content_begin) {
    ++p_;
    content_begin = p_;
    size_t close = s_.find_first_of("'\n", p_);
    if (close == std::string_view::npos || s_[close] != '\'') {
      p_ = close == std::string_view::npos ? s_.size() : close;
      return false;
    }
    content.assign(s_.substr(p_, close - p_));
    p_ = close + 1;
    return true;
  }
  bool MultiLineString(char q, std::string& content, size_t& content_begin) {
    p_ += 3;
    content_begin = p_;
    std::string close(3, q);
    while (p_ < s_.size()) {
      if (q == '"' && Peek() == '\\') {
        p_ += 2;
        continue;
      }
      if (Starts(close)) {
        size_t end = p_;
        p_ += 3;
        for (int extra = 0; extra < 2 && Peek() == q; ++extra, ++end) ++p_;  // """a"""" ends in a quote
        content.assign(s_.substr(content_begin, end - content_begin));
        return true;
      }
      ++p_;
    }
    return false;  // runs to the end of the file
  }

  bool SimpleKey(std::string& out) {
    std::string content;
    size_t begin = 0;
    if (Peek() == '"') {
      if (!BasicString(content, begin)) return false;
      out = content;
      return true;
    }
    if (Peek() == '\'') {
      if (!LiteralString(content, begin)) return false;
      out = content;
      return true;
    }
    size_t start = p_;
    while (BareKeyChar(Peek())) ++p_;
    out.assign(s_.substr(start, p_ - start));
    return p_ > start;
  }

  bool Key(std::vector<std::string>& parts) {
    while (true) {
      SkipWs();
      std::string part;
      if (!SimpleKey(part)) return false;
      parts.push_back(part);
      SkipWs();
      if (Peek() != '.') return true;
      ++p_;
    }
  }

  // One value; `secret`: it lies inside a secret value (whose caller records the span).
  // `str` gets a string value's content (for _file keys).
  bool Value(bool secret, std::optional<std::string>* str = nullptr) {
    char c = Peek();
    if (c == '"' || c == '\'') {
      std::string content;
      size_t content_begin = 0;
      bool ok = Starts(std::string(3, c)) ? MultiLineString(c, content, content_begin)
                                          : (c == '"' ? BasicString(content, content_begin) : LiteralString(content, content_begin));
      if (!ok) return false;
      if (secret) secret_strings.push_back(content);
      else UserInfo(content, content_begin);
      if (str != nullptr) *str = content;
      return true;
    }
    if (c == '[') return Array(secret);
    if (c == '{') return InlineTable(secret);
    size_t start = p_;
    while (p_ < s_.size()) {
      char d = Peek();
      // a local date-time may have a space between date and time (1979-05-27 07:32:00)
      bool date_time = d == ' ' && p_ - start == 10 && s_[start + 4] == '-' &&
                       std::isdigit(static_cast<unsigned char>(Peek(1))) != 0;
      if (!date_time && (d == ',' || d == ']' || d == '}' || d == '#' || d == ' ' || d == '\t' || d == '\n' || d == '\r'))
        break;
      ++p_;
    }
    return p_ > start;
  }

  // scheme://user:password@host: the user info goes, whatever the key.
  void UserInfo(const std::string& content, size_t content_begin) {
    for (size_t at = content.find("://"); at != std::string::npos; at = content.find("://", at + 3)) {
      size_t from = at + 3;
      size_t end = content.find_first_of("/?# \t", from);
      size_t arroba = content.rfind('@', end == std::string::npos ? content.size() : end);
      if (arroba == std::string::npos || arroba < from) continue;
      spans.push_back({content_begin + from, content_begin + arroba, SpanKind::kInString});
    }
  }

  bool Array(bool secret) {
    ++p_;
    while (true) {
      SkipWsNlComments();
      if (Peek() == ']') {
        ++p_;
        return true;
      }
      if (!Value(secret)) return false;
      SkipWsNlComments();
      if (Peek() == ',') ++p_;
      else if (Peek() != ']') return false;
    }
  }

  bool InlineTable(bool secret) {
    ++p_;
    while (true) {
      SkipWsNlComments();  // TOML 1.0 wants one line; a scanner that reads more removes more
      if (Peek() == '}') {
        ++p_;
        return true;
      }
      if (!KeyValue(secret)) return false;
      SkipWsNlComments();
      if (Peek() == ',') ++p_;
      else if (Peek() != '}') return false;
    }
  }

  // key = value. The outermost secret value records its span; on an error, pending_ is where the
  // unfinished secret began. `secret_ctx`: inside a secret value already; `secret_table`: the
  // statement sits in a table whose name is secret.
  bool KeyValue(bool secret_ctx, bool secret_table = false) {
    std::vector<std::string> parts;
    if (!Key(parts)) return false;
    SkipWs();
    if (Peek() != '=') return false;
    ++p_;
    SkipWs();
    size_t start = p_;
    if (!secret_ctx && (secret_table || AnySecret(parts))) {
      if (pending_ == std::string_view::npos) pending_ = start;
      if (!Value(true)) return false;
      spans.push_back({start, p_, SpanKind::kValue});
      if (pending_ == start) pending_ = std::string_view::npos;
      return true;
    }
    std::optional<std::string> str;
    if (!Value(secret_ctx, &str)) return false;
    if (str && EndsWith(Lower(parts.back()), "_file")) file_refs.push_back(*str);
    return true;
  }

  bool Header() {
    bool array = Peek(1) == '[';
    p_ += array ? 2 : 1;
    std::vector<std::string> parts;
    bool ok = Key(parts);
    table_ = parts;  // even a broken header: its keys are the best guess for what follows
    if (!ok) return false;
    SkipWs();
    if (Peek() != ']' || (array && Peek(1) != ']')) return false;
    p_ += array ? 2 : 1;
    return true;
  }

  void Statement() {
    size_t line_start = p_;
    SkipWs();
    if (p_ >= s_.size()) return;
    char c = Peek();
    if (c == '\n' || c == '\r') {
      ++p_;
      return;
    }
    if (c == '#') {
      Comment();
      return;
    }
    size_t text_start = p_;
    pending_ = std::string_view::npos;
    bool ok = c == '[' ? Header() : KeyValue(false, AnySecret(table_));
    if (ok) {
      SkipWs();
      if (Peek() == '#') Comment();
      ok = AtLineEnd();
    }
    if (ok) {
      suspicious_ = false;
      return;
    }
    size_t eol = LineEnd(p_);
    size_t e = eol > text_start && s_[eol - 1] == '\r' ? eol - 1 : eol;
    if (pending_ != std::string_view::npos) {
      spans.push_back({pending_, std::max(pending_, e), SpanKind::kValue});
      suspicious_ = true;
    } else if (suspicious_) {
      spans.push_back({text_start, e, SpanKind::kLine});
    } else {
      LooseAssignments(line_start, e);
    }
    p_ = eol;
  }

  std::string_view s_;
  size_t p_ = 0;
  std::vector<std::string> table_;
  size_t pending_ = std::string_view::npos;
  bool suspicious_ = false;  // a secret value did not scan: unreadable lines after it go too
};

// Text with the spans replaced. Newlines inside a removed value are kept after it, so line numbers
// (in the daemons' error messages) still point at the same lines.
std::string Apply(std::string_view text, std::vector<Span> spans, int& removed) {
  // by start, the longer first, so a span inside another is skipped
  std::sort(spans.begin(), spans.end(),
            [](const Span& a, const Span& b) { return a.begin != b.begin ? a.begin < b.begin : a.end > b.end; });
  std::string out;
  size_t at = 0;
  for (const Span& sp : spans) {
    if (sp.end <= at) continue;  // inside one already replaced
    size_t begin = std::max(sp.begin, at);
    out.append(text.substr(at, begin - at));
    if (sp.kind == SpanKind::kInString) out.append(kRemoved);
    else if (sp.kind == SpanKind::kLine) out.append("# ").append(kRemoved);
    else out.append("\"").append(kRemoved).append("\"");
    out.append(static_cast<size_t>(std::count(text.begin() + begin, text.begin() + sp.end, '\n')), '\n');
    at = sp.end;
    ++removed;
  }
  out.append(text.substr(at));
  return out;
}

// Every occurrence of each secret of min_size characters or more (shorter ones would hit
// everything).
std::string Scrub(std::string text, const std::vector<std::string>& secrets, int& removed, size_t min_size = 4) {
  for (const std::string& secret : secrets) {
    if (secret.size() < min_size || secret == kRemoved) continue;
    for (size_t at = text.find(secret); at != std::string::npos; at = text.find(secret, at + kRemoved.size())) {
      text.replace(at, secret.size(), kRemoved);
      ++removed;
    }
  }
  return text;
}

// scheme://user:password@host -> scheme://<removed>@host, in any text.
std::string RemoveUserInfo(std::string text, int& removed) {
  for (size_t at = text.find("://"); at != std::string::npos; at = text.find("://", at + 3)) {
    size_t from = at + 3;
    size_t end = text.find_first_of("/?# \t\r\n\"'<>", from);
    if (end == std::string::npos) end = text.size();
    size_t arroba = text.rfind('@', end);
    if (arroba == std::string::npos || arroba < from || text.compare(from, arroba - from, kRemoved) == 0) continue;
    text.replace(from, arroba - from, kRemoved);
    ++removed;
  }
  return text;
}

// The string leaves under secret keys of a parsed config.
void CollectSecrets(const toml::node& node, bool secret, std::vector<std::string>& out) {
  if (const toml::table* t = node.as_table()) {
    for (auto&& [k, v] : *t) CollectSecrets(v, secret || IsSecretKey(k.str()), out);
  } else if (const toml::array* a = node.as_array()) {
    for (const toml::node& v : *a) CollectSecrets(v, secret, out);
  } else if (const auto* s = node.as_string(); secret && s != nullptr) {
    out.push_back(s->get());  // strings only: a secret flag's "true" must not go everywhere
  }
}

// Every leaf under a secret key reads "<removed>".
bool AllRemoved(const toml::node& node, bool secret) {
  if (const toml::table* t = node.as_table()) {
    for (auto&& [k, v] : *t)
      if (!AllRemoved(v, secret || IsSecretKey(k.str()))) return false;
    return true;
  }
  if (const toml::array* a = node.as_array()) {
    for (const toml::node& v : *a)
      if (!AllRemoved(v, secret)) return false;
    return true;
  }
  if (!secret) return true;
  const auto* s = node.as_string();
  return s != nullptr && s->get() == kRemoved;
}

// The parsed config with every secret key's value replaced, strings scrubbed of the secrets.
void RedactTree(toml::node& node, const std::vector<std::string>& secrets, int& removed) {
  if (toml::table* t = node.as_table()) {
    std::vector<std::string> gone;
    for (auto&& [k, v] : *t) {
      if (IsSecretKey(k.str())) gone.emplace_back(k.str());
      else RedactTree(v, secrets, removed);
    }
    for (const auto& k : gone) {
      t->insert_or_assign(k, std::string(kRemoved));
      ++removed;
    }
  } else if (toml::array* a = node.as_array()) {
    for (toml::node& v : *a) RedactTree(v, secrets, removed);
  } else if (auto* s = node.as_string()) {
    *s = RemoveUserInfo(Scrub(s->get(), secrets, removed), removed);
  }
}

}  // namespace

bool IsSecretKey(std::string_view key) {
  std::string k = Lower(key);
  if (EndsWith(k, "_file") || EndsWith(k, "_dir") || EndsWith(k, "_path")) return false;
  static const char* kExact[] = {"pin", "psk", "auth_code", "authcode"};
  for (const char* e : kExact)
    if (k == e) return true;
  if (EndsWith(k, "key")) return true;
  static const char* kParts[] = {"password", "passwd", "passphrase", "secret", "token", "credential"};
  for (const char* part : kParts)
    if (k.find(part) != std::string::npos) return true;
  return false;
}

RedactedToml RedactToml(std::string_view text) {
  RedactedToml r;
  Scanner scanner(text);
  scanner.Run();
  r.file_refs = scanner.file_refs;
  std::vector<std::string> secrets = scanner.secret_strings;

  std::optional<toml::table> parsed;
  try {
    parsed = toml::parse(text);
    r.parsed = true;
    CollectSecrets(*parsed, false, secrets);
  } catch (const toml::parse_error& e) {
    r.parse_error = "line " + std::to_string(e.source().begin.line) + ", column " +
                    std::to_string(e.source().begin.column) + ": " + std::string(e.description());
  }
  // Longest first, so a secret containing another is removed whole.
  std::sort(secrets.begin(), secrets.end(), [](const std::string& a, const std::string& b) { return a.size() > b.size(); });

  r.text = Scrub(Apply(text, scanner.spans, r.removed), secrets, r.removed);
  r.secrets = secrets;
  if (!parsed) return r;

  // toml++ reads the result back: it must still parse, and every secret leaf read "<removed>".
  bool good = false;
  try {
    good = AllRemoved(toml::parse(r.text), false);
  } catch (const toml::parse_error&) {
    good = false;
  }
  if (good) return r;
  r.removed = 0;
  RedactTree(*parsed, secrets, r.removed);
  std::ostringstream os;
  os << "# re-emitted by sanictl diag from the parsed file: comments and layout are not kept\n"
     << toml::toml_formatter(*parsed) << "\n";
  r.text = os.str();
  r.reemitted = true;
  return r;
}

std::string ScrubSecrets(std::string text, const std::vector<std::string>& secrets) {
  std::vector<std::string> sorted = secrets;
  std::sort(sorted.begin(), sorted.end(), [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
  int removed = 0;
  // 6 characters here: other texts (statuses, journal) are not the operator's, and a short
  // value such as "auto" under a token_mode key would eat their words.
  return RemoveUserInfo(Scrub(std::move(text), sorted, removed, 6), removed);
}

}  // namespace sanigate::ctl
