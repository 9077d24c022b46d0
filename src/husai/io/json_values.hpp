#pragma once

// Reading numbers out of result JSON for reports: a missing or null value is NaN / "n/a", never 0.

#include <limits>
#include <string>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace husai {

// j[key] as a double; NaN when the key is absent or null.
inline double json_number_or_nan(const nlohmann::json& j, const char* key) {
  if (!j.contains(key) || j[key].is_null()) return std::numeric_limits<double>::quiet_NaN();
  return j[key].get<double>();
}

// v formatted with `format` when it is a number, else "n/a".
inline std::string fmt_json(const nlohmann::json& v, const char* format = "{:.4f}") {
  return v.is_number() ? fmt::format(fmt::runtime(format), v.get<double>()) : std::string("n/a");
}

}  // namespace husai
