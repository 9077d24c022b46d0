// Computes husai's linear assignment and stability metrics for the SciPy parity test (stability_parity.py).
// Usage: husai_stability_dump IN.safetensors OUT.json
// IN holds cost matrices "lap.NAME" (2-D, any float dtype, read as double) and dictionaries "dict.K" [n, d]
// (features as rows, K = 0, 1, ...). OUT: {"lap": {NAME: {"min": total or {"error": msg}, "max": ...}},
// "pairs": [{"a", "b", "pwmcc", ...}] over all dictionary pairs a < b, "per_feature": [[...] per
// dictionary]}.

#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "husai/core/atomic_file.hpp"
#include "husai/core/error.hpp"
#include "husai/io/safetensors.hpp"
#include "husai/metrics/assignment.hpp"
#include "husai/metrics/stability.hpp"

int main(int argc, char** argv) {
  using namespace husai;
  if (argc != 3) {
    std::fprintf(stderr, "usage: husai_stability_dump IN.safetensors OUT.json\n");
    return 1;
  }
  try {
    const SafetensorsFile in = SafetensorsFile::load(argv[1]);
    nlohmann::json out;
    out["lap"] = nlohmann::json::object();
    std::map<int64_t, FeatureSet> dicts;
    for (const auto& [name, t] : in.tensors) {
      if (t.shape.size() != 2) throw Error("tensor " + name + " is not 2-D");
      if (name.rfind("lap.", 0) == 0) {
        const std::vector<double> cost = t.to_f64();
        nlohmann::json entry;
        for (const bool maximize : {false, true}) {
          try {
            entry[maximize ? "max" : "min"] =
                linear_sum_assignment(cost.data(), t.shape[0], t.shape[1], maximize).total;
          } catch (const Error& e) {
            entry[maximize ? "max" : "min"] = {{"error", e.message()}};
          }
        }
        out["lap"][name.substr(4)] = entry;
      } else if (name.rfind("dict.", 0) == 0) {
        const std::vector<float> rows = t.to_f32();
        dicts[std::stoll(name.substr(5))] = features_from_rows(rows.data(), t.shape[0], t.shape[1]);
      }
    }
    std::vector<const FeatureSet*> sets;
    for (const auto& [k, f] : dicts) {
      if (k != static_cast<int64_t>(sets.size())) throw Error("dictionaries must be numbered 0, 1, ...");
      sets.push_back(&f);
    }
    out["pairs"] = nlohmann::json::array();
    if (sets.size() >= 2) {
      const auto order = upper_pairs(static_cast<int64_t>(sets.size()));
      const std::vector<PairStability> ps = pair_stabilities(sets, order, true);
      for (size_t p = 0; p < ps.size(); ++p) {
        out["pairs"].push_back({{"a", order[p].first},
                                {"b", order[p].second},
                                {"pwmcc", ps[p].pwmcc},
                                {"pwmcc_ab", ps[p].pwmcc_ab},
                                {"pwmcc_ba", ps[p].pwmcc_ba},
                                {"matched_mean_cos", ps[p].matched_mean_cos},
                                {"shared_frac_05", ps[p].shared_frac[0]},
                                {"shared_frac_07", ps[p].shared_frac[1]},
                                {"shared_frac_09", ps[p].shared_frac[2]}});
      }
      out["per_feature"] = per_feature_stability(static_cast<int64_t>(sets.size()), ps);
    }
    write_file_atomic(argv[2], out.dump(1) + "\n");
  } catch (const Error& e) {
    std::fprintf(stderr, "husai_stability_dump: %s\n", e.message().c_str());
    return 1;
  }
  return 0;
}
