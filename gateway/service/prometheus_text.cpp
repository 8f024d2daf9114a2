#include "service/prometheus_text.h"

#include <charconv>
#include <cmath>

namespace sanigate::service {
namespace {

// Length of the valid UTF-8 sequence starting at s[i], or 0 when it is not one.
size_t Utf8Length(std::string_view s, size_t i) {
  auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  unsigned char c = b(i);
  size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
  if (n == 0 || i + n > s.size()) return 0;
  for (size_t k = 1; k < n; ++k)
    if ((b(i + k) & 0xC0) != 0x80) return 0;
  // Overlong forms, surrogates and code points past U+10FFFF.
  if (n == 2 && c < 0xC2) return 0;
  if (n == 3 && ((c == 0xE0 && b(i + 1) < 0xA0) || (c == 0xED && b(i + 1) >= 0xA0))) return 0;
  if (n == 4 && ((c == 0xF0 && b(i + 1) < 0x90) || c > 0xF4 || (c == 0xF4 && b(i + 1) >= 0x90))) return 0;
  return n;
}

const char* TypeName(MetricType t) { return t == MetricType::kCounter ? "counter" : "gauge"; }

}  // namespace

std::string EscapeLabelValue(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (size_t i = 0; i < v.size();) {
    size_t n = Utf8Length(v, i);
    if (n == 0) {
      out += "\xEF\xBF\xBD";
      ++i;
      continue;
    }
    char c = v[i];
    if (n == 1 && c == '\\') out += "\\\\";
    else if (n == 1 && c == '"') out += "\\\"";
    else if (n == 1 && c == '\n') out += "\\n";
    else out.append(v.substr(i, n));
    i += n;
  }
  return out;
}

std::string EscapeHelp(std::string_view v) {
  std::string out;
  for (char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

std::string FormatValue(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (v == std::trunc(v) && std::fabs(v) <= 9007199254740992.0) return std::to_string(static_cast<int64_t>(v));
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, r.ptr);
}

PrometheusText::Fam& PrometheusText::Find(std::string_view name) {
  for (auto& f : families_)
    if (f.name == name) return f;
  families_.push_back({std::string(name), {}, MetricType::kGauge, {}});
  return families_.back();
}

void PrometheusText::Family(std::string_view name, MetricType type, std::string_view help) {
  for (const auto& f : families_)
    if (f.name == name) return;
  families_.push_back({std::string(name), std::string(help), type, {}});
}

void PrometheusText::Sample(std::string_view name, double value, std::vector<Label> labels) {
  Fam& f = Find(name);
  f.samples += name;
  if (!labels.empty()) {
    f.samples += '{';
    for (size_t i = 0; i < labels.size(); ++i) {
      if (i) f.samples += ',';
      f.samples += labels[i].name;
      f.samples += "=\"";
      f.samples += EscapeLabelValue(labels[i].value);
      f.samples += '"';
    }
    f.samples += '}';
  }
  f.samples += ' ';
  f.samples += FormatValue(value);
  f.samples += '\n';
}

std::string PrometheusText::Text() const {
  std::string out;
  for (const auto& f : families_) {
    if (!f.help.empty()) out += "# HELP " + f.name + " " + EscapeHelp(f.help) + "\n";
    out += "# TYPE " + f.name + " " + TypeName(f.type) + "\n";
    out += f.samples;
  }
  return out;
}

}  // namespace sanigate::service
