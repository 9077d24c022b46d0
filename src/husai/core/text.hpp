#pragma once

// The one home of husai's small helpers: path joins, means, number formatting and list splitting. Anything
// that formats a number for a report or splits a user's comma list comes from here, so "n/a" and the
// separators read the same everywhere.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>

namespace husai {

// dir/name as a string.
inline std::string path_join(const std::string& dir, const std::string& name) {
  return (std::filesystem::path(dir) / name).string();
}

// Arithmetic mean, summed in order; NaN for an empty list (a missing value, never a silent 0).
inline double mean_or_nan(const std::vector<double>& v) {
  double s = 0;
  for (const double x : v) s += x;
  return v.empty() ? std::numeric_limits<double>::quiet_NaN() : s / static_cast<double>(v.size());
}

// Fixed-point with `digits` decimals for reports; "n/a" for NaN (a value that was not computed).
inline std::string fmt_num(double v, int digits = 4) {
  if (std::isnan(v)) return "n/a";
  return fmt::format("{:.{}f}", v, digits);
}

// "[lo, hi]" with fmt_num.
inline std::string fmt_ci(double lo, double hi, int digits = 4) {
  return "[" + fmt_num(lo, digits) + ", " + fmt_num(hi, digits) + "]";
}

// Shortest form that reads back exactly; integral values without a fractional part ("1", not "1.0"), as
// config bounds are shown.
inline std::string fmt_plain(double v) {
  if (std::isfinite(v) && std::trunc(v) == v && std::fabs(v) < 1e15)
    return fmt::format("{}", static_cast<int64_t>(v));
  return fmt::format("{}", v);
}

// Splits "a,b,,c" at `sep` into its non-empty items.
inline std::vector<std::string> split_list(std::string_view text, char sep = ',') {
  std::vector<std::string> out;
  for (size_t start = 0; start <= text.size();) {
    const size_t end = std::min(text.find(sep, start), text.size());
    if (end > start) out.emplace_back(text.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

// parts joined with sep.
inline std::string join_list(const std::vector<std::string>& parts, std::string_view sep) {
  std::string out;
  for (size_t i = 0; i < parts.size(); ++i) {
    if (i > 0) out += sep;
    out += parts[i];
  }
  return out;
}

}  // namespace husai
