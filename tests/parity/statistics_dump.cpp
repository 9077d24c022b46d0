// Computes husai's seed-level statistics for the SciPy parity test (statistics_parity.py).
// Usage: husai_statistics_dump IN.json OUT.json
// IN holds lists of cases under "bootstrap", "bootstrap_difference", "permutation", "mann_whitney",
// "cohens_d", "holm", "quantile" and "normal" (see statistics_parity.py); OUT holds husai's answer to each,
// in the same order. Bootstrap answers carry their whole bootstrap distribution, jackknife values and the
// seeds of their first resamples, so that SciPy can recompute the intervals from the same draws.

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "husai/core/atomic_file.hpp"
#include "husai/core/error.hpp"
#include "husai/metrics/statistics.hpp"

namespace {

using husai::stats::SimilarityMatrix;
using nlohmann::json;

SimilarityMatrix matrix(const json& rows) {
  SimilarityMatrix m;
  m.n = static_cast<int64_t>(rows.size());
  for (const auto& row : rows) {
    if (static_cast<int64_t>(row.size()) != m.n) throw husai::Error("similarity matrix must be square");
    for (const auto& v : row) m.values.push_back(v.get<double>());
  }
  return m;
}

json bootstrap_json(const husai::stats::BootstrapDetail& d, int64_t n_seeds_a, int64_t n_seeds_b,
                    uint64_t seed, int64_t n_show) {
  const auto& r = d.result;
  json out = {{"estimate", r.estimate},
              {"standard_error", r.standard_error},
              {"percentile", {r.percentile.lo, r.percentile.hi}},
              {"bca", {r.bca.lo, r.bca.hi}},
              {"n_resamples", r.n_resamples},
              {"n_redrawn", r.n_redrawn},
              {"confidence", r.confidence},
              {"statistics", d.statistics},
              {"jackknife", d.jackknife},
              {"z0", d.z0},
              {"acceleration", d.acceleration}};
  // The seeds of the first resamples and the redraws of all of them, group by group.
  json seeds = json::array();
  int64_t redrawn = 0;
  for (int group = 0; group < (n_seeds_b > 0 ? 2 : 1); ++group) {
    json group_seeds = json::array();
    const int64_t n = group == 0 ? n_seeds_a : n_seeds_b;
    for (int64_t b = 0; b < r.n_resamples; ++b) {
      int64_t k = 0;
      const auto s = husai::stats::bootstrap_resample_seeds(n, seed, b, group, &k);
      redrawn += k;
      if (b < n_show) group_seeds.push_back(s);
    }
    seeds.push_back(group_seeds);
  }
  out["resample_seeds"] = seeds;
  out["n_redrawn_recounted"] = redrawn;
  return out;
}

// JSON has no infinities or NaN (nlohmann would write null): non-finite values travel as strings.
json num(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  return v;
}

double val(const json& j) {
  if (j.is_string()) {
    const auto s = j.get<std::string>();
    if (s == "nan") return std::nan("");
    if (s == "inf") return HUGE_VAL;
    if (s == "-inf") return -HUGE_VAL;
    throw husai::Error("bad number '" + s + "'");
  }
  return j.get<double>();
}

std::vector<double> vals(const json& j) {
  std::vector<double> out;
  for (const auto& v : j) out.push_back(val(v));
  return out;
}

json nums(const std::vector<double>& vs) {
  json out = json::array();
  for (const double v : vs) out.push_back(num(v));
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace husai::stats;
  if (argc != 3) {
    std::fprintf(stderr, "usage: husai_statistics_dump IN.json OUT.json\n");
    return 1;
  }
  try {
    const json in = json::parse(husai::read_file(argv[1]));
    json out;
    constexpr int64_t kShow = 200;

    for (const auto& c : in.at("bootstrap")) {
      const SimilarityMatrix sim = matrix(c.at("sim"));
      const auto seed = c.at("seed").get<uint64_t>();
      const auto d = seed_bootstrap_detail(sim, c.at("n_resamples").get<int64_t>(),
                                           c.at("confidence").get<double>(), seed);
      json j = bootstrap_json(d, sim.n, 0, seed, kShow);
      const BootstrapResult plain =
          seed_bootstrap(sim, c.at("n_resamples").get<int64_t>(), c.at("confidence").get<double>(), seed);
      j["plain_matches_detail"] = plain.bca.lo == d.result.bca.lo && plain.bca.hi == d.result.bca.hi &&
                                  plain.percentile.lo == d.result.percentile.lo &&
                                  plain.standard_error == d.result.standard_error;
      j["mean_pairwise"] = mean_pairwise(sim);
      json resample_stats = json::array();
      for (const auto& s : j["resample_seeds"][0]) resample_stats.push_back(mean_pairwise_resample(sim, s));
      j["mean_pairwise_resample"] = resample_stats;
      out["bootstrap"].push_back(j);
    }

    for (const auto& c : in.at("bootstrap_difference")) {
      const SimilarityMatrix a = matrix(c.at("a"));
      const SimilarityMatrix b = matrix(c.at("b"));
      const auto seed = c.at("seed").get<uint64_t>();
      const auto d = seed_bootstrap_difference_detail(a, b, c.at("n_resamples").get<int64_t>(),
                                                      c.at("confidence").get<double>(), seed);
      out["bootstrap_difference"].push_back(bootstrap_json(d, a.n, b.n, seed, kShow));
    }

    for (const auto& c : in.at("permutation")) {
      const PermutationResult r = permutation_test(
          matrix(c.at("pooled")), c.at("n_a").get<int64_t>(), c.at("n_resamples").get<int64_t>(),
          c.at("seed").get<uint64_t>(), c.at("max_exact").get<int64_t>());
      out["permutation"].push_back({{"observed", r.observed},
                                    {"p_value", r.p_value},
                                    {"p_value_two_sided", r.p_value_two_sided},
                                    {"exact", r.exact},
                                    {"n_permutations", r.n_permutations}});
    }

    for (const auto& c : in.at("mann_whitney")) {
      const MannWhitneyResult r =
          mann_whitney_greater(c.at("x").get<std::vector<double>>(), c.at("y").get<std::vector<double>>());
      out["mann_whitney"].push_back({{"u", r.u}, {"p_value", r.p_value}, {"method", r.method}});
    }

    for (const auto& c : in.at("cohens_d"))
      out["cohens_d"].push_back(
          num(cohens_d(c.at("x").get<std::vector<double>>(), c.at("y").get<std::vector<double>>())));

    for (const auto& c : in.at("holm")) out["holm"].push_back(nums(holm_adjust(vals(c))));

    for (const auto& c : in.at("quantile")) {
      json qs = json::array();
      for (const auto& q : c.at("q"))
        qs.push_back(quantile(c.at("values").get<std::vector<double>>(), q.get<double>()));
      out["quantile"].push_back(qs);
    }

    for (const auto& z : in.at("normal_cdf")) out["normal_cdf"].push_back(num(normal_cdf(val(z))));
    for (const auto& p : in.at("normal_quantile"))
      out["normal_quantile"].push_back(num(normal_quantile(val(p))));

    husai::write_file_atomic(argv[2], out.dump(1) + "\n");
  } catch (const husai::Error& e) {
    std::fprintf(stderr, "husai_statistics_dump: %s\n", e.message().c_str());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "husai_statistics_dump: %s\n", e.what());
    return 1;
  }
  return 0;
}
