#include "husai/io/config.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <system_error>
#include <utility>

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include "husai/core/error.hpp"
#include "husai/core/text.hpp"
#include "husai/io/sha256.hpp"

namespace husai {

using nlohmann::json;

namespace {

// ---------------------------------------------------------------------------------------------------------
// Small text helpers

std::string quote_list(const std::vector<std::string>& items) {
  std::vector<std::string> q;
  q.reserve(items.size());
  for (const auto& s : items) {
    q.push_back("'" + s + "'");
  }
  return join_list(q, ", ");
}

std::string_view trim(std::string_view s) {
  const auto is_space = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; };
  while (!s.empty() && is_space(s.front())) {
    s.remove_prefix(1);
  }
  while (!s.empty() && is_space(s.back())) {
    s.remove_suffix(1);
  }
  return s;
}

size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) {
    prev[j] = j;
  }
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t sub = prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, sub});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

std::string_view last_segment(std::string_view path) {
  const size_t dot = path.rfind('.');
  return dot == std::string_view::npos ? path : path.substr(dot + 1);
}

bool valid_segment(std::string_view seg) {
  if (seg.empty()) {
    return false;
  }
  return std::all_of(seg.begin(), seg.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
  });
}

// Dotted path -> JSON pointer. Segments are restricted to [A-Za-z0-9_], so no '~' or '/' escaping is needed.
json::json_pointer pointer_for(std::string_view path) {
  std::string p = "/";
  for (char c : path) {
    p += (c == '.') ? '/' : c;
  }
  return json::json_pointer(p);
}

std::string range_text(const FieldSpec& f) {
  if (f.lower && f.upper) {
    return fmt::format("in {}{}, {}{}", f.lower_inclusive ? '[' : '(', fmt_plain(*f.lower),
                       fmt_plain(*f.upper), f.upper_inclusive ? ']' : ')');
  }
  if (f.lower) {
    return fmt::format("{} {}", f.lower_inclusive ? ">=" : ">", fmt_plain(*f.lower));
  }
  if (f.upper) {
    return fmt::format("{} {}", f.upper_inclusive ? "<=" : "<", fmt_plain(*f.upper));
  }
  return "";
}

std::string with_range(const std::string& base, const FieldSpec& f) {
  const std::string r = range_text(f);
  return r.empty() ? base : base + " " + r;
}

bool in_range(const FieldSpec& f, double v) {
  if (f.lower && (f.lower_inclusive ? v < *f.lower : v <= *f.lower)) {
    return false;
  }
  if (f.upper && (f.upper_inclusive ? v > *f.upper : v >= *f.upper)) {
    return false;
  }
  return true;
}

// ---------------------------------------------------------------------------------------------------------
// Plain-scalar resolution, following the YAML 1.2 core schema (but decimal integers only): we resolve types
// ourselves instead of yaml-cpp's as<T>() because as<double>() happily accepts "true"-ish text and as<bool>()
// accepts YAML 1.1's yes/no/on/off, both of which are too lenient for a strict config.

bool is_int_text(std::string_view s) {
  if (!s.empty() && (s[0] == '+' || s[0] == '-')) {
    s.remove_prefix(1);
  }
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

bool is_float_text(std::string_view s) {
  if (!s.empty() && (s[0] == '+' || s[0] == '-')) {
    s.remove_prefix(1);
  }
  size_t i = 0, digits = 0;
  while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
    ++i;
    ++digits;
  }
  if (i < s.size() && s[i] == '.') {
    ++i;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
      ++i;
      ++digits;
    }
  }
  if (digits == 0) {
    return false;
  }
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    ++i;
    if (i < s.size() && (s[i] == '+' || s[i] == '-')) {
      ++i;
    }
    const size_t exp_start = i;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
      ++i;
    }
    if (i == exp_start) {
      return false;
    }
  }
  return i == s.size();
}

// strtod would depend on the C locale (decimal comma); from_chars does not.
double parse_double(std::string_view s) {
  const bool neg = !s.empty() && s[0] == '-';
  if (!s.empty() && (s[0] == '+' || s[0] == '-')) {
    s.remove_prefix(1);
  }
  double v = 0.0;
  const auto res = std::from_chars(s.data(), s.data() + s.size(), v);
  if (res.ec == std::errc::result_out_of_range) {
    // Overflow becomes infinity (rejected later as non-finite); underflow is a legitimate tiny value.
    bool mantissa_nonzero = false;
    for (char c : s) {
      if (c == 'e' || c == 'E') {
        break;
      }
      if (c >= '1' && c <= '9') {
        mantissa_nonzero = true;
      }
    }
    const size_t e = s.find_first_of("eE");
    const bool big_exponent = e != std::string_view::npos && e + 1 < s.size() && s[e + 1] != '-';
    v = (mantissa_nonzero && big_exponent) ? std::numeric_limits<double>::infinity() : 0.0;
  }
  return neg ? -v : v;
}

json resolve_plain(const std::string& s) {
  if (s.empty() || s == "~" || s == "null" || s == "Null" || s == "NULL") {
    return nullptr;
  }
  if (s == "true" || s == "True" || s == "TRUE") {
    return true;
  }
  if (s == "false" || s == "False" || s == "FALSE") {
    return false;
  }
  if (is_int_text(s)) {
    std::string_view digits = s;
    if (digits[0] == '+') {
      digits.remove_prefix(1);
    }
    int64_t v = 0;
    const auto res = std::from_chars(digits.data(), digits.data() + digits.size(), v);
    if (res.ec == std::errc() && res.ptr == digits.data() + digits.size()) {
      return v;
    }
    return parse_double(s);  // too big for int64: the int check reports it as not fitting
  }
  if (is_float_text(s)) {
    return parse_double(s);
  }
  std::string_view body = s;
  const bool neg = !body.empty() && body[0] == '-';
  if (!body.empty() && (body[0] == '+' || body[0] == '-')) {
    body.remove_prefix(1);
  }
  if (body == ".inf" || body == ".Inf" || body == ".INF") {
    return neg ? -std::numeric_limits<double>::infinity() : std::numeric_limits<double>::infinity();
  }
  if (s == ".nan" || s == ".NaN" || s == ".NAN") {
    return std::numeric_limits<double>::quiet_NaN();
  }
  return s;
}

// ---------------------------------------------------------------------------------------------------------
// A value on its way into the config, from YAML or from JSON, so one coercion routine serves files,
// overrides and named flags alike.

// clang-tidy cannot prove that nlohmann::json's noexcept destructor and moves never throw.
// NOLINTNEXTLINE(bugprone-exception-escape)
struct Raw {
  enum class Type { kNull, kScalar, kSequence, kMap };
  Type type = Type::kNull;
  json typed;              // scalars: null/bool/int/float/string as resolved
  std::string text;        // scalars: the text as written (a string's content for JSON input)
  bool from_yaml = false;  // a YAML scalar of any type may stand for a string; a JSON one must be a string
  std::vector<Raw> items;  // sequences
  int64_t line = 0;        // 1-based line in the source file; 0 when not from a file
};

Raw raw_from_yaml(const YAML::Node& node, bool track_lines, int64_t fallback_line) {
  Raw r;
  r.from_yaml = true;
  r.line = fallback_line;
  if (track_lines && !node.Mark().is_null()) {
    r.line = node.Mark().line + 1;
  }
  switch (node.Type()) {
    case YAML::NodeType::Undefined:
    case YAML::NodeType::Null:
      r.type = Raw::Type::kNull;
      break;
    case YAML::NodeType::Scalar: {
      r.type = Raw::Type::kScalar;
      r.text = node.Scalar();
      // "!" is yaml-cpp's tag for quoted scalars: quoting means "this is a string", as in YAML itself.
      const std::string& tag = node.Tag();
      if (tag == "!" || tag == "tag:yaml.org,2002:str") {
        r.typed = r.text;
      } else {
        r.typed = resolve_plain(r.text);
      }
      if (r.typed.is_null()) {
        r.type = Raw::Type::kNull;
      }
      break;
    }
    case YAML::NodeType::Sequence:
      r.type = Raw::Type::kSequence;
      for (const auto& item : node) {
        r.items.push_back(raw_from_yaml(item, track_lines, r.line));
      }
      break;
    case YAML::NodeType::Map:
      r.type = Raw::Type::kMap;
      break;
  }
  return r;
}

Raw raw_from_json(const json& j) {
  Raw r;
  if (j.is_null()) {
    r.type = Raw::Type::kNull;
  } else if (j.is_array()) {
    r.type = Raw::Type::kSequence;
    for (const auto& item : j) {
      r.items.push_back(raw_from_json(item));
    }
  } else if (j.is_object()) {
    r.type = Raw::Type::kMap;
  } else {
    r.type = Raw::Type::kScalar;
    r.typed = j;
    r.text = j.is_string() ? j.get<std::string>() : j.dump();
  }
  return r;
}

// "string 'abc'", "bool 'true'", "a list", ...: the value seen, for error messages.
std::string seen(const Raw& r) {
  switch (r.type) {
    case Raw::Type::kNull:
      return "null";
    case Raw::Type::kSequence:
      return "a list";
    case Raw::Type::kMap:
      return "a map";
    case Raw::Type::kScalar:
      break;
  }
  std::string text = r.text;
  if (text.size() > 60) {
    text = text.substr(0, 57) + "...";
  }
  const char* word = r.typed.is_boolean()          ? "bool"
                     : r.typed.is_number_integer() ? "int"
                     : r.typed.is_number()         ? "float"
                                                   : "string";
  return fmt::format("{} '{}'", word, text);
}

// Coercion errors carry only the line; the caller adds file and key, which it knows better.
[[noreturn]] void bad(const Raw& r, const std::string& what) {
  Error e(what);
  if (r.line > 0) {
    e.line(r.line);
  }
  throw e;
}

[[noreturn]] void bad_type(const Raw& r, const std::string& prefix, const std::string& expected) {
  std::string what = fmt::format("{}expected {}, got {}", prefix, expected, seen(r));
  if (r.type == Raw::Type::kMap) {
    what += " (this key is a single value, not a section)";
  }
  bad(r, what);
}

json coerce_int(const FieldSpec& f, const Raw& r, const std::string& prefix, const std::string& expected) {
  if (r.type != Raw::Type::kScalar || !r.typed.is_number()) {
    bad_type(r, prefix, expected);
  }
  int64_t v = 0;
  if (r.typed.is_number_unsigned()) {
    const auto u = r.typed.get<uint64_t>();
    if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      bad(r, fmt::format("{}value {} does not fit in a 64-bit integer", prefix, r.text));
    }
    v = static_cast<int64_t>(u);
  } else if (r.typed.is_number_integer()) {
    v = r.typed.get<int64_t>();
  } else {
    // Integral floats are accepted so that `steps: 1e6` works; 1.5 is a mistake, not a rounding request.
    const double d = r.typed.get<double>();
    if (!std::isfinite(d) || std::trunc(d) != d) {
      bad(r, fmt::format("{}expected {}, got non-integral number '{}'", prefix, expected, r.text));
    }
    if (d < -9.2233720368547758e18 || d >= 9.2233720368547758e18) {
      bad(r, fmt::format("{}value {} does not fit in a 64-bit integer", prefix, r.text));
    }
    v = static_cast<int64_t>(d);
  }
  // Out-of-range messages quote the value as written ("1e-400", not the 0 it rounds to).
  if (!in_range(f, static_cast<double>(v))) {
    bad(r, fmt::format("{}value {} is out of range: must be {}", prefix, r.text, range_text(f)));
  }
  return v;
}

json coerce_float(const FieldSpec& f, const Raw& r, const std::string& prefix, const std::string& expected) {
  if (r.type != Raw::Type::kScalar || !r.typed.is_number()) {
    bad_type(r, prefix, expected);
  }
  const double v = r.typed.get<double>();
  if (!std::isfinite(v)) {
    // The resolved config is JSON, which cannot represent inf/nan; no hyperparameter needs them anyway.
    bad(r, fmt::format("{}expected {}, got non-finite number '{}'", prefix, expected, r.text));
  }
  if (!in_range(f, v)) {
    bad(r, fmt::format("{}value {} is out of range: must be {}", prefix, r.text, range_text(f)));
  }
  return v;
}

std::string coerce_text(const Raw& r, const std::string& expected) {
  if (r.type == Raw::Type::kScalar) {
    if (r.typed.is_string()) {
      return r.typed.get<std::string>();
    }
    // In YAML, `name: 2024` is a perfectly reasonable string; in JSON from code, a number is a bug.
    if (r.from_yaml) {
      return r.text;
    }
  }
  bad_type(r, "", expected);
}

json coerce(const FieldSpec& f, const Raw& r) {
  const std::string expected = f.constraint_text();
  if (r.type == Raw::Type::kNull) {
    if (f.is_nullable) {
      return nullptr;
    }
    bad(r, fmt::format("expected {}, got null (this key cannot be null)", expected));
  }
  switch (f.kind) {
    case FieldKind::kInt:
      return coerce_int(f, r, "", expected);
    case FieldKind::kFloat:
      return coerce_float(f, r, "", expected);
    case FieldKind::kBool:
      if (r.type != Raw::Type::kScalar || !r.typed.is_boolean()) {
        bad_type(r, "", expected);
      }
      return r.typed;
    case FieldKind::kString:
      return coerce_text(r, expected);
    case FieldKind::kEnum: {
      std::string s = coerce_text(r, expected);
      if (std::find(f.allowed.begin(), f.allowed.end(), s) == f.allowed.end()) {
        std::string what = fmt::format("'{}' is not an allowed value; allowed: {}", s, quote_list(f.allowed));
        for (const auto& a : f.allowed) {
          if (edit_distance(s, a) <= 2) {
            what += fmt::format(" (did you mean '{}'?)", a);
            break;
          }
        }
        bad(r, what);
      }
      return s;
    }
    case FieldKind::kFloatList:
    case FieldKind::kIntList: {
      if (r.type != Raw::Type::kSequence) {
        bad_type(r, "", expected);
      }
      if (f.fixed_length && r.items.size() != *f.fixed_length) {
        bad(r, fmt::format("expected {}, got {} element{}", expected, r.items.size(),
                           r.items.size() == 1 ? "" : "s"));
      }
      const bool is_float = f.kind == FieldKind::kFloatList;
      const std::string elem_expected = with_range(is_float ? "float" : "int", f);
      json out = json::array();
      for (size_t i = 0; i < r.items.size(); ++i) {
        const std::string prefix = fmt::format("element [{}]: ", i);
        if (r.items[i].type == Raw::Type::kNull) {
          bad(r.items[i], fmt::format("{}expected {}, got null", prefix, elem_expected));
        }
        out.push_back(is_float ? coerce_float(f, r.items[i], prefix, elem_expected)
                               : coerce_int(f, r.items[i], prefix, elem_expected));
      }
      return out;
    }
    case FieldKind::kIntOrString:
      if (r.type == Raw::Type::kScalar && r.typed.is_string()) {
        const std::string s = r.typed.get<std::string>();
        if (std::find(f.allowed.begin(), f.allowed.end(), s) != f.allowed.end()) {
          return s;
        }
        bad_type(r, "", expected);
      }
      return coerce_int(f, r, "", expected);
  }
  throw std::logic_error("config: unhandled field kind");
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------
// FieldSpec

std::string_view kind_name(FieldKind kind) {
  switch (kind) {
    case FieldKind::kInt:
      return "int";
    case FieldKind::kFloat:
      return "float";
    case FieldKind::kBool:
      return "bool";
    case FieldKind::kString:
      return "string";
    case FieldKind::kEnum:
      return "enum";
    case FieldKind::kFloatList:
      return "list of floats";
    case FieldKind::kIntList:
      return "list of ints";
    case FieldKind::kIntOrString:
      return "int or literal";
  }
  return "?";
}

FieldSpec& FieldSpec::min(double v) {
  lower = v;
  lower_inclusive = true;
  return *this;
}
FieldSpec& FieldSpec::max(double v) {
  upper = v;
  upper_inclusive = true;
  return *this;
}
FieldSpec& FieldSpec::greater_than(double v) {
  lower = v;
  lower_inclusive = false;
  return *this;
}
FieldSpec& FieldSpec::less_than(double v) {
  upper = v;
  upper_inclusive = false;
  return *this;
}
FieldSpec& FieldSpec::length(size_t n) {
  fixed_length = n;
  return *this;
}
FieldSpec& FieldSpec::nullable(bool on) {
  is_nullable = on;
  return *this;
}

std::string FieldSpec::constraint_text() const {
  std::string out;
  switch (kind) {
    case FieldKind::kInt:
      out = with_range("int", *this);
      break;
    case FieldKind::kFloat:
      out = with_range("float", *this);
      break;
    case FieldKind::kBool:
      out = "bool (true/false)";
      break;
    case FieldKind::kString:
      out = "string";
      break;
    case FieldKind::kEnum:
      out = "one of " + quote_list(allowed);
      break;
    case FieldKind::kFloatList:
    case FieldKind::kIntList: {
      const char* elem = kind == FieldKind::kFloatList ? "floats" : "ints";
      out =
          fixed_length ? fmt::format("list of {} {}", *fixed_length, elem) : fmt::format("list of {}", elem);
      const std::string r = range_text(*this);
      if (!r.empty()) {
        out += ", each " + r;
      }
      break;
    }
    case FieldKind::kIntOrString:
      out = with_range("int", *this) + " or " + quote_list(allowed);
      break;
  }
  if (is_nullable) {
    out += " or null";
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// ConfigSchema

FieldSpec& ConfigSchema::add(std::string path, FieldKind kind, json default_value, std::string help) {
  std::vector<std::string> segments;
  {
    size_t start = 0;
    while (true) {
      const size_t dot = path.find('.', start);
      segments.push_back(path.substr(start, dot == std::string::npos ? std::string::npos : dot - start));
      if (dot == std::string::npos) {
        break;
      }
      start = dot + 1;
    }
  }
  for (const auto& seg : segments) {
    if (!valid_segment(seg)) {
      throw std::logic_error(
          fmt::format("config schema: bad key '{}': segments must be non-empty [A-Za-z0-9_]+", path));
    }
  }
  if (index_.count(path) > 0) {
    throw std::logic_error(fmt::format("config schema: key '{}' declared twice", path));
  }
  if (sections_.count(path) > 0) {
    throw std::logic_error(fmt::format("config schema: '{}' is already a section", path));
  }
  std::string prefix;
  for (size_t i = 0; i + 1 < segments.size(); ++i) {
    prefix += (i == 0 ? "" : ".") + segments[i];
    if (index_.count(prefix) > 0) {
      throw std::logic_error(fmt::format("config schema: '{}' is a value, cannot hold '{}'", prefix, path));
    }
  }
  // Register every enclosing section (the root is ""), remembering child names for error messages.
  prefix.clear();
  for (size_t i = 0; i < segments.size(); ++i) {
    auto& children = sections_[prefix];
    if (std::find(children.begin(), children.end(), segments[i]) == children.end()) {
      children.push_back(segments[i]);
    }
    prefix += (i == 0 ? "" : ".") + segments[i];
  }

  index_.emplace(path, fields_.size());
  FieldSpec& f = fields_.emplace_back();
  f.path = std::move(path);
  f.kind = kind;
  f.default_value = std::move(default_value);
  f.help = std::move(help);
  return f;
}

FieldSpec& ConfigSchema::add_int(std::string path, json default_value, std::string help) {
  return add(std::move(path), FieldKind::kInt, std::move(default_value), std::move(help));
}
FieldSpec& ConfigSchema::add_float(std::string path, json default_value, std::string help) {
  return add(std::move(path), FieldKind::kFloat, std::move(default_value), std::move(help));
}
FieldSpec& ConfigSchema::add_bool(std::string path, json default_value, std::string help) {
  return add(std::move(path), FieldKind::kBool, std::move(default_value), std::move(help));
}
FieldSpec& ConfigSchema::add_string(std::string path, json default_value, std::string help) {
  return add(std::move(path), FieldKind::kString, std::move(default_value), std::move(help));
}
FieldSpec& ConfigSchema::add_enum(std::string path, json default_value, std::vector<std::string> allowed,
                                  std::string help) {
  FieldSpec& f = add(std::move(path), FieldKind::kEnum, std::move(default_value), std::move(help));
  f.allowed = std::move(allowed);
  return f;
}
FieldSpec& ConfigSchema::add_float_list(std::string path, json default_value, std::string help) {
  return add(std::move(path), FieldKind::kFloatList, std::move(default_value), std::move(help));
}
FieldSpec& ConfigSchema::add_int_list(std::string path, json default_value, std::string help) {
  return add(std::move(path), FieldKind::kIntList, std::move(default_value), std::move(help));
}
FieldSpec& ConfigSchema::add_int_or_string(std::string path, json default_value, std::string literal,
                                           std::string help) {
  FieldSpec& f = add(std::move(path), FieldKind::kIntOrString, std::move(default_value), std::move(help));
  f.allowed = {std::move(literal)};
  return f;
}

void ConfigSchema::add_check(Check check) {
  checks_.push_back(std::move(check));
}

const FieldSpec* ConfigSchema::find(std::string_view path) const {
  const auto it = index_.find(path);
  return it == index_.end() ? nullptr : &fields_[it->second];
}

bool ConfigSchema::is_section(std::string_view path) const {
  return sections_.find(path) != sections_.end();
}

std::vector<std::string> ConfigSchema::children(std::string_view section) const {
  const auto it = sections_.find(section);
  return it == sections_.end() ? std::vector<std::string>{} : it->second;
}

std::string ConfigSchema::suggest(std::string_view path) const {
  std::string best;
  size_t best_dist = 3;  // only distances <= 2 are suggested
  const auto consider = [&](const std::string& candidate) {
    if (candidate.empty()) {
      return;
    }
    const size_t d = edit_distance(path, candidate);
    if (d < best_dist && d < path.size()) {
      best_dist = d;
      best = candidate;
    }
  };
  for (const auto& f : fields_) {
    consider(f.path);
  }
  for (const auto& [section, children] : sections_) {
    consider(section);
  }
  if (!best.empty()) {
    return best;
  }
  // A right key in the wrong section ("model.lr" for "training.lr") is too far by edit distance.
  const std::string_view leaf = last_segment(path);
  for (const auto& f : fields_) {
    if (last_segment(f.path) == leaf) {
      return f.path;
    }
  }
  return "";
}

std::string ConfigSchema::describe() const {
  struct Row {
    std::string path, constraint, def, help;
  };
  std::vector<Row> rows;
  size_t w_path = 0, w_constraint = 0, w_def = 0;
  for (const auto& f : fields_) {
    Row r{f.path, f.constraint_text(), "default " + f.default_value.dump(), f.help};
    w_path = std::max(w_path, r.path.size());
    w_constraint = std::max(w_constraint, r.constraint.size());
    w_def = std::max(w_def, r.def.size());
    rows.push_back(std::move(r));
  }
  std::string out;
  for (const auto& r : rows) {
    out += fmt::format("  {:<{}}  {:<{}}  {:<{}}  {}\n", r.path, w_path, r.constraint, w_constraint, r.def,
                       w_def, r.help);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// ValueSource

std::string ValueSource::label() const {
  switch (kind) {
    case Kind::kDefault:
      return "default";
    case Kind::kFile:
      return line > 0 ? fmt::format("{}:{}", where, line) : where;
    case Kind::kCommandLine:
      return where.empty() ? "command line" : fmt::format("command line ({})", where);
  }
  return "?";
}

// ---------------------------------------------------------------------------------------------------------
// Merging

// Everything that needs yaml-cpp or the Raw representation; a friend of Config.
struct ConfigMerge {
  // Error context for one merge operation.
  struct Origin {
    ValueSource::Kind kind;
    std::string where;       // file path or command-line text
    std::string error_file;  // what husai::Error::file() gets: the path, or "command line (...)"
    bool track_lines;
    std::map<std::string, int64_t, std::less<>> assigned;  // path -> line, to catch a key set twice in a file
  };

  static Origin file_origin(const std::string& path) {
    return Origin{ValueSource::Kind::kFile, path, path, true, {}};
  }
  static Origin cli_origin(std::string where) {
    ValueSource s{ValueSource::Kind::kCommandLine, where, 0};
    return Origin{ValueSource::Kind::kCommandLine, std::move(where), s.label(), false, {}};
  }

  static Error located(const std::string& what, const Origin& o, const std::string& key, int64_t line) {
    Error e(what);
    e.file(o.error_file);
    if (!key.empty()) {
      e.key(key);
    }
    if (o.track_lines && line > 0) {
      e.line(line);
    }
    return e;
  }

  [[noreturn]] static void unknown_key(const Config& c, const std::string& path, const Origin& o,
                                       int64_t line) {
    std::string what = "unknown key";
    const std::string hint = c.schema_.suggest(path);
    if (!hint.empty()) {
      what += fmt::format(" (did you mean '{}'?)", hint);
    }
    throw located(what, o, path, line);
  }

  [[noreturn]] static void section_as_value(const Config& c, const std::string& path, const Raw& r,
                                            const Origin& o, int64_t line) {
    if (path.empty()) {
      throw located(fmt::format("expected a map of keys at the top level, got {}", seen(r)), o, "", line);
    }
    throw located(fmt::format("'{}' is a section (keys: {}), not a single value; expected a map, got {}",
                              path, join_list(c.schema_.children(path), ", "), seen(r)),
                  o, path, line);
  }

  static void assign(Config& c, const FieldSpec& f, const Raw& r, Origin& o, int64_t line) {
    if (o.track_lines) {
      const auto it = o.assigned.find(f.path);
      if (it != o.assigned.end()) {
        throw located(fmt::format("set twice in the same file (first at line {})", it->second), o, f.path,
                      line);
      }
      o.assigned.emplace(f.path, line);
    }
    json v;
    try {
      v = coerce(f, r);
    } catch (Error& e) {
      e.file(o.error_file).key(f.path);
      if (o.track_lines && !e.line() && line > 0) {
        e.line(line);
      }
      throw;
    }
    c.resolved_[pointer_for(f.path)] = std::move(v);
    c.sources_[f.path] = ValueSource{o.kind, o.where, o.track_lines ? line : 0};
    c.set_order_[f.path] = c.next_order_++;
  }

  // Walks `node` as the value of `path` ("" = the document root), descending through sections.
  static void merge_node(Config& c, const std::string& path, const YAML::Node& node, Origin& o,
                         int64_t line) {
    if (const FieldSpec* f = c.schema_.find(path)) {
      assign(c, *f, raw_from_yaml(node, o.track_lines, line), o, line);
      return;
    }
    // A section left empty (all its keys commented out) parses as null; treat it as "no overrides".
    if (node.IsNull()) {
      return;
    }
    if (!node.IsMap()) {
      section_as_value(c, path, raw_from_yaml(node, o.track_lines, line), o, line);
    }
    for (const auto& kv : node) {
      const YAML::Node& key_node = kv.first;
      const int64_t key_line =
          (o.track_lines && !key_node.Mark().is_null()) ? key_node.Mark().line + 1 : line;
      if (!key_node.IsScalar()) {
        throw located("map keys must be plain names", o, path, key_line);
      }
      const std::string& key = key_node.Scalar();
      std::string child = path;
      if (!child.empty()) {
        child += '.';
      }
      child += key;
      if (c.schema_.find(child) == nullptr && !c.schema_.is_section(child)) {
        unknown_key(c, child, o, key_line);
      }
      merge_node(c, child, kv.second, o, key_line);
    }
  }

  // A value given as text on the command line (--set or a named flag), parsed as YAML.
  static void assign_text(Config& c, const std::string& path, std::string_view text, Origin& o) {
    const FieldSpec* f = c.schema_.find(path);
    if (f == nullptr && !c.schema_.is_section(path)) {
      unknown_key(c, path, o, 0);
    }
    YAML::Node node;
    try {
      node = YAML::Load(std::string(text));
    } catch (const YAML::Exception& e) {
      // Free-form strings should not need YAML quoting on a shell command line (`--set run.note=a: b`).
      if (f != nullptr && f->kind == FieldKind::kString) {
        assign(c, *f, raw_from_json(std::string(text)), o, 0);
        return;
      }
      throw located(fmt::format("cannot parse value '{}': {}", text, e.msg), o, path, 0);
    }
    if (f != nullptr && f->kind == FieldKind::kString && (node.IsMap() || node.IsSequence())) {
      assign(c, *f, raw_from_json(std::string(trim(text))), o, 0);
      return;
    }
    if (f == nullptr && !node.IsMap()) {
      section_as_value(c, path, raw_from_yaml(node, false, 0), o, 0);
    }
    merge_node(c, path, node, o, 0);
  }
};

// ---------------------------------------------------------------------------------------------------------
// Config

Config::Config(ConfigSchema schema) : schema_(std::move(schema)) {
  for (const auto& f : schema_.fields()) {
    if ((f.kind == FieldKind::kEnum || f.kind == FieldKind::kIntOrString) && f.allowed.empty()) {
      throw std::logic_error(fmt::format("config schema: '{}' has no allowed values", f.path));
    }
    json v;
    try {
      v = coerce(f, raw_from_json(f.default_value));
    } catch (const Error& e) {
      throw std::logic_error(fmt::format("config schema: default for '{}' is invalid: {}", f.path, e.what()));
    }
    resolved_[pointer_for(f.path)] = std::move(v);
    sources_[f.path] = ValueSource{};
  }
}

nlohmann::json Config::to_transfer_json() const {
  json sources = json::object();
  for (const auto& [path, src] : sources_) {
    sources[path] = {{"kind", static_cast<int>(src.kind)}, {"where", src.where}, {"line", src.line}};
  }
  json order = json::object();
  for (const auto& [path, n] : set_order_) order[path] = n;
  return {{"resolved", resolved_}, {"sources", sources}, {"order", order}, {"next_order", next_order_}};
}

Config Config::from_transfer_json(ConfigSchema schema, const nlohmann::json& data) {
  Config c(std::move(schema));
  const json& resolved = data.at("resolved");
  for (const auto& f : c.schema_.fields()) {
    const json::json_pointer ptr = pointer_for(f.path);
    if (!resolved.contains(ptr)) throw Error("transferred config lacks '" + f.path + "'");
    c.resolved_[ptr] = resolved.at(ptr);
  }
  for (const auto& [path, src] : data.at("sources").items()) {
    if (c.schema_.find(path) == nullptr) throw Error("transferred config has an unknown key '" + path + "'");
    c.sources_[path] = ValueSource{static_cast<ValueSource::Kind>(src.at("kind").get<int>()),
                                   src.at("where").get<std::string>(), src.at("line").get<int64_t>()};
  }
  for (const auto& [path, n] : data.at("order").items()) c.set_order_[path] = n.get<uint64_t>();
  c.next_order_ = data.at("next_order").get<uint64_t>();
  return c;
}

void Config::merge_yaml_file(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    throw Error("config file not found").file(path);
  }
  if (std::filesystem::is_directory(path, ec)) {
    throw Error("config path is a directory, expected a YAML file").file(path);
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw Error("cannot open config file").file(path);
  }
  std::ostringstream buf;
  buf << in.rdbuf();
  if (in.bad()) {
    throw Error("cannot read config file").file(path);
  }
  merge_yaml_string(buf.str(), path);
}

void Config::merge_yaml_string(std::string_view yaml, const std::string& source_name) {
  std::vector<YAML::Node> docs;
  try {
    docs = YAML::LoadAll(std::string(yaml));
  } catch (const YAML::ParserException& e) {
    Error err(fmt::format("YAML syntax error: {}{}", e.msg,
                          e.mark.is_null() ? "" : fmt::format(" (column {})", e.mark.column + 1)));
    err.file(source_name);
    if (!e.mark.is_null()) {
      err.line(e.mark.line + 1);
    }
    throw err;
  } catch (const YAML::Exception& e) {
    throw Error(fmt::format("invalid YAML: {}", e.msg)).file(source_name);
  }
  if (docs.empty()) {
    return;  // empty file, or only comments: no overrides
  }
  if (docs.size() > 1) {
    Error err(fmt::format("holds {} YAML documents ('---'); a config file must hold one", docs.size()));
    err.file(source_name);
    if (!docs[1].Mark().is_null()) {
      err.line(docs[1].Mark().line + 1);
    }
    throw err;
  }
  auto origin = ConfigMerge::file_origin(source_name);
  const int64_t root_line = docs[0].Mark().is_null() ? 0 : docs[0].Mark().line + 1;
  ConfigMerge::merge_node(*this, "", docs[0], origin, root_line);
}

void Config::apply_override(std::string_view assignment) {
  auto origin = ConfigMerge::cli_origin(fmt::format("--set {}", assignment));
  const size_t eq = assignment.find('=');
  if (eq == std::string_view::npos) {
    throw ConfigMerge::located("expected KEY=VALUE, e.g. training.lr=0.001", origin, "", 0);
  }
  const std::string key(trim(assignment.substr(0, eq)));
  if (key.empty()) {
    throw ConfigMerge::located("empty key before '='", origin, "", 0);
  }
  ConfigMerge::assign_text(*this, key, assignment.substr(eq + 1), origin);
}

void Config::set(std::string_view path, const json& value, const std::string& flag) {
  auto origin = ConfigMerge::cli_origin(flag);
  const std::string key(path);
  const FieldSpec* f = schema_.find(key);
  if (f == nullptr) {
    if (!key.empty() && schema_.is_section(key)) {
      ConfigMerge::section_as_value(*this, key, raw_from_json(value), origin, 0);
    }
    ConfigMerge::unknown_key(*this, key, origin, 0);
  }
  ConfigMerge::assign(*this, *f, raw_from_json(value), origin, 0);
}

void Config::set_text(std::string_view path, std::string_view text, const std::string& flag) {
  auto origin = ConfigMerge::cli_origin(flag);
  ConfigMerge::assign_text(*this, std::string(path), text, origin);
}

void Config::validate() const {
  for (const auto& check : schema_.checks()) {
    check(*this);
  }
}

const FieldSpec& Config::field_or_throw(std::string_view path) const {
  const FieldSpec* f = schema_.find(path);
  if (f == nullptr) {
    throw std::logic_error(fmt::format("config: key '{}' is not declared in the schema", path));
  }
  return *f;
}

const json& Config::value_of(const FieldSpec& spec) const {
  return resolved_.at(pointer_for(spec.path));
}

const json& Config::get(std::string_view path) const {
  return value_of(field_or_throw(path));
}

namespace {
[[noreturn]] void wrong_getter(std::string_view path, const char* wanted, const json& v) {
  throw std::logic_error(fmt::format("config: key '{}' holds {}, not {}", path, v.dump(), wanted));
}
}  // namespace

int64_t Config::get_int(std::string_view path) const {
  const json& v = get(path);
  if (!v.is_number_integer()) {
    wrong_getter(path, "an int", v);
  }
  return v.get<int64_t>();
}

double Config::get_double(std::string_view path) const {
  const json& v = get(path);
  if (!v.is_number()) {
    wrong_getter(path, "a number", v);
  }
  return v.get<double>();
}

std::string Config::get_string(std::string_view path) const {
  const json& v = get(path);
  if (!v.is_string()) {
    wrong_getter(path, "a string", v);
  }
  return v.get<std::string>();
}

bool Config::get_bool(std::string_view path) const {
  const json& v = get(path);
  if (!v.is_boolean()) {
    wrong_getter(path, "a bool", v);
  }
  return v.get<bool>();
}

std::vector<double> Config::get_double_list(std::string_view path) const {
  const json& v = get(path);
  if (!v.is_array()) {
    wrong_getter(path, "a list", v);
  }
  std::vector<double> out;
  out.reserve(v.size());
  for (const auto& x : v) {
    out.push_back(x.get<double>());
  }
  return out;
}

std::vector<int64_t> Config::get_int_list(std::string_view path) const {
  const json& v = get(path);
  if (!v.is_array() ||
      !std::all_of(v.begin(), v.end(), [](const json& x) { return x.is_number_integer(); })) {
    wrong_getter(path, "a list of ints", v);
  }
  std::vector<int64_t> out;
  out.reserve(v.size());
  for (const auto& x : v) {
    out.push_back(x.get<int64_t>());
  }
  return out;
}

bool Config::is_null(std::string_view path) const {
  return get(path).is_null();
}

const ValueSource& Config::source(std::string_view path) const {
  field_or_throw(path);
  return sources_.find(path)->second;
}

void Config::fail(std::string_view rule, const std::vector<std::string>& keys) const {
  if (keys.empty()) {
    throw std::logic_error("Config::fail needs at least one key");
  }
  std::vector<std::string> details;
  const std::string* blamed = &keys.front();
  uint64_t blamed_order = 0;
  for (const auto& k : keys) {
    const ValueSource& src = source(k);
    details.push_back(fmt::format("{} = {} from {}", k, get(k).dump(), src.label()));
    if (src.kind != ValueSource::Kind::kDefault) {
      const uint64_t order = set_order_.find(k)->second;
      if (order > blamed_order) {
        blamed_order = order;
        blamed = &k;
      }
    }
  }
  Error e(fmt::format("{} ({})", rule, join_list(details, "; ")));
  e.key(*blamed);
  const ValueSource& src = source(*blamed);
  if (src.kind == ValueSource::Kind::kFile) {
    e.file(src.where);
    if (src.line > 0) {
      e.line(src.line);
    }
  } else if (src.kind == ValueSource::Kind::kCommandLine) {
    e.file(src.label());
  }
  throw e;
}

std::string Config::to_canonical_json() const {
  return resolved_.dump();
}

std::string Config::hash() const {
  return sha256_hex(to_canonical_json());
}

}  // namespace husai
