#include "settings/reader.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

namespace sanigate::settings {
namespace {

const char* TypeName(const toml::node& n) {
  switch (n.type()) {
    case toml::node_type::string: return "a string";
    case toml::node_type::integer: return "an integer";
    case toml::node_type::floating_point: return "a float";
    case toml::node_type::boolean: return "a boolean";
    case toml::node_type::table: return "a table";
    case toml::node_type::array: return "an array";
    case toml::node_type::date: return "a date";
    case toml::node_type::time: return "a time";
    case toml::node_type::date_time: return "a date-time";
    default: return "nothing";
  }
}

size_t EditDistance(std::string_view a, std::string_view b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j)
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1])});
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

std::string Quoted(std::string_view s) { return "\"" + std::string(s) + "\""; }

std::string FormatNumber(double v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

}  // namespace

std::string ConfigError::ToString() const {
  return file + ":" + std::to_string(line) + ":" + std::to_string(column) + ": " + path + ": " +
         problem;
}

void ConfigErrors::Add(const toml::source_region& where, std::string path, std::string problem) {
  // A region knows its own file, so problems in an included profile point into that file.
  std::string file = where.path && !where.path->empty() ? *where.path : file_;
  errors_.push_back({file, where.begin.line, where.begin.column, std::move(path), std::move(problem)});
}

void ConfigErrors::Add(uint32_t line, uint32_t column, std::string path, std::string problem) {
  errors_.push_back({file_, line, column, std::move(path), std::move(problem)});
}

void ConfigErrors::Warn(const toml::source_region& where, std::string path, std::string problem) {
  std::string file = where.path && !where.path->empty() ? *where.path : file_;
  warnings_.push_back({file, where.begin.line, where.begin.column, std::move(path), "warning: " + std::move(problem)});
}

std::vector<std::string> ConfigErrors::Warnings() const {
  std::vector<std::string> out;
  for (const auto& w : warnings_) out.push_back(w.ToString());
  return out;
}

std::vector<ConfigError> ConfigErrors::Sorted() const {
  auto v = errors_;
  // The main file first, then included files, each top to bottom.
  std::stable_sort(v.begin(), v.end(), [&](const ConfigError& a, const ConfigError& b) {
    return std::make_tuple(a.file != file_, a.file, a.line, a.column) <
           std::make_tuple(b.file != file_, b.file, b.line, b.column);
  });
  return v;
}

std::string ConfigErrors::Joined() const {
  std::string out;
  for (const auto& e : Sorted()) out += e.ToString() + "\n";
  return out;
}

bool IsValidId(std::string_view id) {
  if (id.empty() || id.size() > 128) return false;
  return std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
  });
}

Node::Node(const toml::table& table, std::string path, ConfigErrors& errors)
    : table_(&table), path_(std::move(path)), errors_(&errors) {}

std::string Node::KeyPath(std::string_view key) const {
  return path_.empty() ? std::string(key) : path_ + "." + std::string(key);
}

bool Node::Has(std::string_view key) const { return table_->contains(key); }

const toml::node* Node::Find(std::string_view key) {
  consumed_.emplace(key);  // asked-for keys are known keys, present or not
  return table_->get(key);
}

const toml::source_region& Node::SourceOf(std::string_view key) const {
  const toml::node* n = table_->get(key);
  return n ? n->source() : table_->source();
}

void Node::Problem(std::string_view key, std::string problem) {
  errors_->Add(SourceOf(key), KeyPath(key), std::move(problem));
}

void Node::Warn(std::string_view key, std::string problem) {
  errors_->Warn(SourceOf(key), KeyPath(key), std::move(problem));
}

void Node::TypeError(std::string_view key, const toml::node& n, const char* expected) {
  Problem(key, std::string("expected ") + expected + ", got " + TypeName(n));
}

std::string Node::String(std::string_view key, std::string def) {
  const toml::node* n = Find(key);
  if (!n) return def;
  if (auto s = n->value<std::string>(); s && n->is_string()) return *s;
  TypeError(key, *n, "a string");
  return def;
}

std::vector<std::string> Node::StringArray(std::string_view key) {
  std::vector<std::string> out;
  const toml::node* n = Find(key);
  if (!n) return out;
  const toml::array* arr = n->as_array();
  if (!arr) {
    TypeError(key, *n, "an array of strings");
    return out;
  }
  for (const auto& e : *arr) {
    if (!e.is_string()) {
      TypeError(key, e, "an array of strings");
      return {};
    }
    out.push_back(*e.value<std::string>());
  }
  return out;
}

std::optional<std::string> Node::RequiredString(std::string_view key) {
  const toml::node* n = Find(key);
  if (!n) {
    errors_->Add(table_->source(), KeyPath(key), "required key is missing");
    return std::nullopt;
  }
  if (!n->is_string()) {
    TypeError(key, *n, "a string");
    return std::nullopt;
  }
  return *n->value<std::string>();
}

std::optional<std::string> Node::RequiredId(std::string_view key) {
  auto s = RequiredString(key);
  if (s && !IsValidId(*s)) {
    Problem(key, Quoted(*s) + " is not a valid id (use 1-128 of a-z 0-9 . _ -)");
    return std::nullopt;
  }
  return s;
}

std::string Node::OneOf(std::string_view key, std::string def,
                        std::initializer_list<const char*> allowed) {
  if (!Find(key)) return def;
  std::string v = String(key, def);
  for (const char* a : allowed)
    if (v == a) return v;
  std::string list;
  for (const char* a : allowed) list += (list.empty() ? "" : ", ") + Quoted(a);
  Problem(key, Quoted(v) + " is not one of " + list);
  return def;
}

int64_t Node::Int(std::string_view key, int64_t def, int64_t min, int64_t max) {
  const toml::node* n = Find(key);
  if (!n) return def;
  if (!n->is_integer()) {
    TypeError(key, *n, "an integer");
    return def;
  }
  int64_t v = *n->value<int64_t>();
  if (v < min || v > max) {
    Problem(key, std::to_string(v) + " is outside " + std::to_string(min) + ".." + std::to_string(max));
    return def;
  }
  return v;
}

std::optional<int64_t> Node::RequiredInt(std::string_view key, int64_t min, int64_t max) {
  const toml::node* n = Find(key);
  if (!n) {
    errors_->Add(table_->source(), KeyPath(key), "required key is missing");
    return std::nullopt;
  }
  if (!n->is_integer()) {
    TypeError(key, *n, "an integer");
    return std::nullopt;
  }
  int64_t v = *n->value<int64_t>();
  if (v < min || v > max) {
    Problem(key, std::to_string(v) + " is outside " + std::to_string(min) + ".." + std::to_string(max));
    return std::nullopt;
  }
  return v;
}

double Node::Double(std::string_view key, double def, double min, double max) {
  auto v = OptionalDouble(key, min, max);
  return v ? *v : def;
}

std::optional<double> Node::OptionalDouble(std::string_view key, double min, double max) {
  const toml::node* n = Find(key);
  if (!n) return std::nullopt;
  if (!n->is_number()) {  // integers are accepted where a float is expected: 90 == 90.0
    TypeError(key, *n, "a number");
    return std::nullopt;
  }
  double v = *n->value<double>();
  if (!(v >= min && v <= max)) {
    Problem(key, FormatNumber(v) + " is outside " + FormatNumber(min) + ".." + FormatNumber(max));
    return std::nullopt;
  }
  return v;
}

bool Node::Bool(std::string_view key, bool def) {
  const toml::node* n = Find(key);
  if (!n) return def;
  if (!n->is_boolean()) {
    TypeError(key, *n, "a boolean");
    return def;
  }
  return *n->value<bool>();
}

std::optional<Node> Node::Table(std::string_view key) {
  const toml::node* n = Find(key);
  if (!n) return std::nullopt;
  if (!n->is_table()) {
    TypeError(key, *n, "a table");
    return std::nullopt;
  }
  return Node(*n->as_table(), KeyPath(key), *errors_);
}

std::vector<Node> Node::TableArray(std::string_view key) {
  std::vector<Node> out;
  const toml::node* n = Find(key);
  if (!n) return out;
  const toml::array* arr = n->as_array();
  if (!arr) {
    TypeError(key, *n, "an array of tables");
    return out;
  }
  for (size_t i = 0; i < arr->size(); ++i) {
    const toml::node& item = *arr->get(i);
    std::string p = KeyPath(key) + "[" + std::to_string(i) + "]";
    if (!item.is_table()) {
      errors_->Add(item.source(), p, std::string("expected a table, got ") + TypeName(item));
      continue;
    }
    out.emplace_back(*item.as_table(), p, *errors_);
  }
  return out;
}

void Node::Finish() {
  for (const auto& [k, v] : *table_) {
    if (consumed_.count(k.str())) continue;
    std::string problem = "unknown key";
    std::string best;
    size_t best_d = 3;  // suggest only close misspellings
    for (const auto& cand : consumed_) {
      size_t d = EditDistance(k.str(), cand);
      if (d < best_d) best_d = d, best = cand;
    }
    if (!best.empty()) problem += " (did you mean " + Quoted(best) + "?)";
    errors_->Add(k.source(), KeyPath(k.str()), problem);
  }
}

ParsedFile ParseString(std::string_view text, const std::string& name, ConfigErrors& errors) {
  ParsedFile out;
  try {
    out.table = std::make_unique<toml::table>(toml::parse(text, name));
  } catch (const toml::parse_error& e) {
    errors.Add(e.source(), "(syntax)", std::string(e.description()));
  }
  return out;
}

ParsedFile ParseFile(const std::string& path, ConfigErrors& errors) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    errors.Add(0, 0, "(file)", "cannot read: " + std::string(std::strerror(errno)));
    return {};
  }
  std::stringstream ss;
  ss << in.rdbuf();
  return ParseString(ss.str(), path, errors);
}

}  // namespace sanigate::settings
