#pragma once

// Schema-driven, strict configuration shared by every subcommand.
//
// A subcommand declares every key it understands (dotted path, kind, default, constraints, help) in a
// ConfigSchema. A Config starts from those defaults, then YAML files and command-line overrides are merged on
// top, each value validated the moment it arrives so the error can point at the exact file line or argument
// that caused it. The result is one nested nlohmann::json that is hashed to fingerprint a run.
//
// Strictness is deliberate: a misspelt key silently falling back to its default is the classic way to waste
// a multi-hour training run, so unknown keys, wrong types and out-of-range values are all hard errors.

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace husai {

class Config;

enum class FieldKind {
  kInt,          // 64-bit integer; a YAML float is accepted only if it is integral (1e6 ok, 1.5 not).
  kFloat,        // finite double; YAML ints are accepted and stored as doubles so `1` and `1.0` hash alike.
  kBool,         // true / false only (no yes/no/on/off: those are YAML 1.1 traps).
  kString,       // any scalar, taken verbatim.
  kEnum,         // one of FieldSpec::allowed.
  kFloatList,    // sequence of finite doubles, optionally of fixed length; bounds apply per element.
  kIntList,      // sequence of integers; bounds apply per element.
  kIntOrString,  // an integer (bounds apply) or one of FieldSpec::allowed, e.g. `batch_size: full`.
};

// "int", "float", "list of floats", ...: used in error messages and describe().
std::string_view kind_name(FieldKind kind);

// One declared key. Built through ConfigSchema::add_* and refined with the chainable setters, e.g.
//   schema.add_float("training.lr", 1e-3, "Peak learning rate.").greater_than(0).max(1);
// clang-tidy cannot prove that nlohmann::json's noexcept destructor and moves never throw.
// NOLINTNEXTLINE(bugprone-exception-escape)
struct FieldSpec {
  std::string path;  // dotted, e.g. "training.lr"; segments are [A-Za-z0-9_]+
  FieldKind kind = FieldKind::kInt;
  nlohmann::json default_value;  // JSON null only together with is_nullable
  std::string help;
  bool is_nullable = false;            // null is a legal value (e.g. "derived from other keys")
  std::optional<double> lower, upper;  // numeric bounds (per element for lists)
  bool lower_inclusive = true, upper_inclusive = true;
  std::vector<std::string> allowed;    // enum values, or the literal(s) of kIntOrString
  std::optional<size_t> fixed_length;  // lists only

  FieldSpec& min(double v);           // value >= v
  FieldSpec& max(double v);           // value <= v
  FieldSpec& greater_than(double v);  // value > v
  FieldSpec& less_than(double v);     // value < v
  FieldSpec& length(size_t n);        // lists: exactly n elements
  FieldSpec& nullable(bool on = true);

  // Human description of what is accepted, e.g. "float in (0, 1]", "int >= 1 or 'full'", "one of: a, b".
  std::string constraint_text() const;
};

// The set of keys a subcommand accepts, plus cross-field rules. Misuse of the schema itself (bad path,
// invalid default) is a programming error and throws std::logic_error, not husai::Error.
class ConfigSchema {
 public:
  using Check = std::function<void(const Config&)>;

  // Generic form; the typed helpers below just fill in `kind`. The returned reference stays valid for the
  // schema's lifetime (fields live in a deque), so chaining setters is safe.
  FieldSpec& add(std::string path, FieldKind kind, nlohmann::json default_value, std::string help);

  FieldSpec& add_int(std::string path, nlohmann::json default_value, std::string help);
  FieldSpec& add_float(std::string path, nlohmann::json default_value, std::string help);
  FieldSpec& add_bool(std::string path, nlohmann::json default_value, std::string help);
  FieldSpec& add_string(std::string path, nlohmann::json default_value, std::string help);
  FieldSpec& add_enum(std::string path, nlohmann::json default_value, std::vector<std::string> allowed,
                      std::string help);
  FieldSpec& add_float_list(std::string path, nlohmann::json default_value, std::string help);
  FieldSpec& add_int_list(std::string path, nlohmann::json default_value, std::string help);
  FieldSpec& add_int_or_string(std::string path, nlohmann::json default_value, std::string literal,
                               std::string help);

  // Cross-field rule run by Config::validate() after all merges. Throw husai::Error, ideally via
  // Config::fail(), so the message names the keys involved and where their values came from.
  void add_check(Check check);

  const FieldSpec* find(std::string_view path) const;  // nullptr when `path` is not a field
  bool is_section(std::string_view path) const;        // a strict prefix of some field path ("" = root)
  // Names directly under a section ("" = the root), in declaration order; empty if not a section.
  std::vector<std::string> children(std::string_view section) const;
  const std::deque<FieldSpec>& fields() const { return fields_; }  // in declaration order
  const std::vector<Check>& checks() const { return checks_; }

  // The declared key closest to `path` (edit distance <= 2 over fields and sections, else a field with the
  // same last segment in another section), or "" when nothing is plausible. Drives "did you mean".
  std::string suggest(std::string_view path) const;

  // One line per key: path, constraint, default and help, aligned, in declaration order.
  std::string describe() const;

 private:
  std::deque<FieldSpec> fields_;
  std::map<std::string, size_t, std::less<>> index_;                       // path -> position in fields_
  std::map<std::string, std::vector<std::string>, std::less<>> sections_;  // section -> child names
  std::vector<Check> checks_;
};

// Where a key's current value came from, so errors (including cross-field ones) can point at it.
struct ValueSource {
  enum class Kind { kDefault, kFile, kCommandLine };
  Kind kind = Kind::kDefault;
  std::string where;  // file path, or the command-line text such as "--set training.lr=0.1" or "--lr"
  int64_t line = 0;   // 1-based line in `where`; 0 when unknown or not a file

  // "default", "cfg.yaml:12", "command line (--set training.lr=0.1)".
  std::string label() const;
};

// A resolved configuration. Every mutation validates immediately and throws husai::Error on bad input; on
// a throw, values assigned before the offending key by the same call stay applied (callers abort anyway).
class Config {
 public:
  // Copies the schema (cheap, and the Config cannot outlive it) and fills in defaults.
  explicit Config(ConfigSchema schema);

  // Merges a YAML file. Missing/unreadable file, syntax error, unknown key, wrong type, out-of-range value,
  // a section given a scalar or a value given a map, and a key set twice in one file are all errors naming
  // the file, 1-based line and dotted key. An empty file changes nothing.
  void merge_yaml_file(const std::string& path);
  // Same, from text already in memory; `source_name` stands in for the file name in errors.
  void merge_yaml_string(std::string_view yaml, const std::string& source_name);

  // "section.key=value" as given to --set; value parsed as a YAML scalar or flow collection, so
  // `training.betas=[0.9,0.98]` and `training.batch_size=full` work. Errors name
  // "command line (--set ASSIGNMENT)" where a file would go.
  void apply_override(std::string_view assignment);

  // A value from a named flag, e.g. set("training.lr", 0.01, "--lr"). JSON types are taken literally (a
  // JSON string is not parsed as a number).
  void set(std::string_view path, const nlohmann::json& value, const std::string& flag);
  // A named flag's raw text, parsed like an override value: set_text("training.lr", "1e-3", "--lr").
  void set_text(std::string_view path, std::string_view text, const std::string& flag);

  // Runs the schema's cross-field checks; call once after all merges.
  void validate() const;

  const nlohmann::json& resolved() const { return resolved_; }
  const ConfigSchema& schema() const { return schema_; }

  // Typed access by dotted path. Asking for an undeclared key, the wrong type, or a null value is a
  // programming error (std::logic_error). get_double accepts int fields; get_string also serves enums and
  // the string branch of kIntOrString.
  const nlohmann::json& get(std::string_view path) const;
  int64_t get_int(std::string_view path) const;
  double get_double(std::string_view path) const;
  std::string get_string(std::string_view path) const;
  bool get_bool(std::string_view path) const;
  std::vector<double> get_double_list(std::string_view path) const;
  std::vector<int64_t> get_int_list(std::string_view path) const;
  bool is_null(std::string_view path) const;

  const ValueSource& source(std::string_view path) const;

  // Throws the husai::Error a cross-field check should raise. The message is `rule` followed by each key's
  // value and source; the error's file/line/key point at the key changed most recently (a default is never
  // blamed if a non-default key is involved), since that is most likely the edit that broke the rule.
  [[noreturn]] void fail(std::string_view rule, const std::vector<std::string>& keys) const;

  // Minified JSON with sorted keys (nlohmann's default object is a std::map): identical configs give
  // byte-identical text whatever order or form the inputs used.
  std::string to_canonical_json() const;
  // sha256 hex of to_canonical_json(); the run fingerprint.
  std::string hash() const;

  // The config as data (values, each key's source, the assignment order) and back, for another process that
  // must run with the same config (an MPI rank, husai/core/cluster.hpp): the rebuilt Config has the same
  // values, hash and sources. `schema` must be the schema this config was built with.
  nlohmann::json to_transfer_json() const;
  static Config from_transfer_json(ConfigSchema schema, const nlohmann::json& data);

 private:
  // The merge and coercion machinery lives in config.cpp so this header need not include yaml-cpp.
  friend struct ConfigMerge;

  const FieldSpec& field_or_throw(std::string_view path) const;
  const nlohmann::json& value_of(const FieldSpec& spec) const;

  ConfigSchema schema_;
  nlohmann::json resolved_ = nlohmann::json::object();
  std::map<std::string, ValueSource, std::less<>> sources_;
  std::map<std::string, uint64_t, std::less<>> set_order_;  // path -> sequence number of the last assignment
  uint64_t next_order_ = 1;
};

}  // namespace husai
