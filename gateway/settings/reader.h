// Strict TOML reading with locations. A Node wraps one TOML table at a key path; every getter
// checks type and range, records what it consumed, and Finish() reports the keys nobody asked
// for. Problems never stop the walk: they go to one ConfigErrors list, so a user sees every
// mistake at once, each as "FILE:LINE:COL: key.path: problem". Not thread-safe; use at load time.
#pragma once

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <toml++/toml.h>

namespace sanigate::settings {

struct ConfigError {
  std::string file;
  uint32_t line = 0;
  uint32_t column = 0;
  std::string path;
  std::string problem;
  std::string ToString() const;  // FILE:LINE:COL: path: problem
};

class ConfigErrors {
 public:
  explicit ConfigErrors(std::string file) : file_(std::move(file)) {}
  void Add(const toml::source_region& where, std::string path, std::string problem);
  void Add(uint32_t line, uint32_t column, std::string path, std::string problem);
  bool empty() const { return errors_.empty(); }
  size_t size() const { return errors_.size(); }
  // Sorted by position, so the list reads top to bottom like the file.
  std::vector<ConfigError> Sorted() const;
  std::string Joined() const;  // one error per line
  const std::string& file() const { return file_; }
  // Warnings: legal but probably unintended (overlapping registers). They never refuse a config;
  // --check-config prints them and the daemon logs them at start.
  void Warn(const toml::source_region& where, std::string path, std::string problem);
  std::vector<std::string> Warnings() const;  // FILE:LINE:COL: path: warning: problem

 private:
  std::string file_;
  std::vector<ConfigError> errors_;
  std::vector<ConfigError> warnings_;
};

class Node {
 public:
  Node(const toml::table& table, std::string path, ConfigErrors& errors);

  const std::string& path() const { return path_; }
  std::string KeyPath(std::string_view key) const;
  const toml::source_region& where() const { return table_->source(); }
  const toml::table* raw() const { return table_; }  // for tables with free-form keys
  ConfigErrors& errors() const { return *errors_; }
  bool Has(std::string_view key) const;

  // Each getter returns the default (or nullopt) when the key is absent or wrong, after
  // recording the problem. Ranges are inclusive.
  std::string String(std::string_view key, std::string def);
  std::optional<std::string> RequiredString(std::string_view key);
  // A [a-z0-9._-]+ identifier (device, site and gateway ids appear in MQTT topics).
  std::optional<std::string> RequiredId(std::string_view key);
  std::string OneOf(std::string_view key, std::string def, std::initializer_list<const char*> allowed);
  int64_t Int(std::string_view key, int64_t def, int64_t min, int64_t max);
  std::optional<int64_t> RequiredInt(std::string_view key, int64_t min, int64_t max);
  double Double(std::string_view key, double def, double min, double max);
  std::optional<double> OptionalDouble(std::string_view key, double min, double max);
  bool Bool(std::string_view key, bool def);
  // An array of strings; absent = empty.
  std::vector<std::string> StringArray(std::string_view key);

  std::optional<Node> Table(std::string_view key);
  std::vector<Node> TableArray(std::string_view key);  // [[key]] entries, paths key[0], key[1]

  // Report a problem about a key of this table (at the key's value, or the table if absent).
  void Problem(std::string_view key, std::string problem);
  void Warn(std::string_view key, std::string problem);
  // Report keys present but never read, suggesting the nearest known key.
  void Finish();

 private:
  const toml::node* Find(std::string_view key);
  const toml::source_region& SourceOf(std::string_view key) const;
  void TypeError(std::string_view key, const toml::node& n, const char* expected);

  const toml::table* table_;
  std::string path_;
  ConfigErrors* errors_;
  std::set<std::string, std::less<>> consumed_;
};

// Parses a TOML file; a syntax error is reported in the same FILE:LINE:COL form.
struct ParsedFile {
  std::unique_ptr<toml::table> table;  // null on a syntax error or unreadable file
};
ParsedFile ParseFile(const std::string& path, ConfigErrors& errors);
ParsedFile ParseString(std::string_view text, const std::string& name, ConfigErrors& errors);

bool IsValidId(std::string_view id);

}  // namespace sanigate::settings
