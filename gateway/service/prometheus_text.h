// The Prometheus text exposition format (version 0.0.4), built without I/O: metric families
// with their # HELP and # TYPE lines, each family's samples together, label values escaped.
// The daemons fill one from what their status already knows; metrics_http.h serves it.
// Thread-safety: none; one builder per scrape.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace sanigate::service {

enum class MetricType { kGauge, kCounter };

struct Label {
  std::string name;   // [a-zA-Z_][a-zA-Z0-9_]*, fixed by the caller
  std::string value;  // anything: escaped on output (invalid UTF-8 bytes become U+FFFD)
};

class PrometheusText {
 public:
  // Declares a family; HELP and TYPE are written once, in declaration order. Declaring the same
  // name again keeps the first declaration.
  void Family(std::string_view name, MetricType type, std::string_view help);
  // One sample of a declared family (an undeclared name is declared as an untyped gauge).
  void Sample(std::string_view name, double value, std::vector<Label> labels = {});
  // The whole exposition, families in declaration order, each ending with '\n'.
  std::string Text() const;

 private:
  struct Fam {
    std::string name, help;
    MetricType type;
    std::string samples;
  };
  Fam& Find(std::string_view name);
  std::vector<Fam> families_;
};

// `\` → `\\`, `"` → `\"`, newline → `\n`; invalid UTF-8 → U+FFFD.
std::string EscapeLabelValue(std::string_view v);
// `\` → `\\`, newline → `\n` (HELP text).
std::string EscapeHelp(std::string_view v);
// Integers exactly (up to 2^53), others in the shortest round-trip form; NaN, +Inf, -Inf.
std::string FormatValue(double v);

}  // namespace sanigate::service
