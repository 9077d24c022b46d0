#include "husai/experiments/compare.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <map>
#include <numeric>
#include <optional>
#include <sstream>

#include <fmt/format.h>

#include "husai/core/atomic_file.hpp"
#include "husai/core/error.hpp"
#include "husai/core/rng.hpp"
#include "husai/core/threading.hpp"
#include "husai/io/activations.hpp"
#include "husai/io/gnuplot.hpp"
#include "husai/io/manifest.hpp"
#include "husai/io/run_dir.hpp"
#include "husai/io/sha256.hpp"
#include "husai/metrics/nulls.hpp"
#include "husai/metrics/stability.hpp"
#include "husai/metrics/statistics.hpp"

namespace husai {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr int kSchemaVersion = 1;
constexpr int64_t kListedLatents = 10;  // most / least stable latents listed per SAE

// The symmetric pairwise metrics: each gets a similarity matrix and the seed-level statistics.
// pwmcc_ab / pwmcc_ba are directional and only reported per pair.
const std::vector<std::string>& summary_metrics() {
  static const std::vector<std::string> names = {
      "pwmcc",     "matched_mean_cos",     "shared_frac_05",     "shared_frac_07",     "shared_frac_09",
      "pwmcc_enc", "matched_mean_cos_enc", "shared_frac_05_enc", "shared_frac_07_enc", "shared_frac_09_enc"};
  return names;
}

double metric_value(const PairStability& p, const std::string& base) {
  if (base == "pwmcc") return p.pwmcc;
  if (base == "pwmcc_ab") return p.pwmcc_ab;
  if (base == "pwmcc_ba") return p.pwmcc_ba;
  if (base == "matched_mean_cos") return p.matched_mean_cos;
  if (base == "shared_frac_05") return p.shared_frac[0];
  if (base == "shared_frac_07") return p.shared_frac[1];
  if (base == "shared_frac_09") return p.shared_frac[2];
  throw Error("unknown stability metric " + base);
}

const std::vector<std::string>& pair_metric_names() {
  static const std::vector<std::string> names = {
      "pwmcc",          "pwmcc_ab",       "pwmcc_ba",      "matched_mean_cos",
      "shared_frac_05", "shared_frac_07", "shared_frac_09"};
  return names;
}

// A finite number, or null (JSON has no NaN/inf).
json num(double x) {
  return std::isfinite(x) ? json(x) : json(nullptr);
}

std::string fmt_num(double x, int digits = 4) {
  if (std::isnan(x)) return "n/a";
  if (std::isinf(x)) return x > 0 ? "inf" : "-inf";
  return fmt::format("{:.{}f}", x, digits);
}

std::string fmt_p(double p) {
  if (std::isnan(p)) return "n/a";
  return p < 1e-3 ? fmt::format("{:.2e}", p) : fmt::format("{:.4f}", p);
}

uint64_t derived_seed(uint64_t seed, const std::string& name) {
  const auto b = Philox(seed, stream_id(name)).block(0);
  return (static_cast<uint64_t>(b[0]) << 32) | b[1];
}

// Both dictionaries of one SAE (trained or null).
struct Dictionary {
  std::string label;  // folder as given, or "gaussian:1000"
  int64_t d_sae = 0, d_in = 0;
  FeatureSet dec, enc;
  bool enc_is_dec = false;  // nulls: the encoder is the decoder's transpose, the same features
};

struct PairRecord {
  int64_t a = 0, b = 0;
  PairStability dec, enc;
};

json pair_json(const PairRecord& r, const std::string& a_label, const std::string& b_label) {
  json j = {{"a", r.a}, {"b", r.b}, {"a_path", a_label}, {"b_path", b_label}};
  for (const std::string& m : pair_metric_names()) j[m] = metric_value(r.dec, m);
  for (const std::string& m : pair_metric_names()) j[m + "_enc"] = metric_value(r.enc, m);
  return j;
}

// n x n similarity matrix of one metric from the records of the pairs (i < j) of a group.
stats::SimilarityMatrix similarity(int64_t n, const std::vector<PairRecord>& pairs,
                                   const std::string& metric) {
  const bool enc = metric.size() > 4 && metric.substr(metric.size() - 4) == "_enc";
  const std::string base = enc ? metric.substr(0, metric.size() - 4) : metric;
  stats::SimilarityMatrix s;
  s.n = n;
  s.values.assign(static_cast<size_t>(n * n), 0.0);
  for (const PairRecord& r : pairs) {
    const double v = metric_value(enc ? r.enc : r.dec, base);
    s.values[static_cast<size_t>(r.a * n + r.b)] = v;
    s.values[static_cast<size_t>(r.b * n + r.a)] = v;
  }
  return s;
}

std::vector<double> upper_values(const stats::SimilarityMatrix& s) {
  std::vector<double> v;
  for (int64_t i = 0; i < s.n; ++i) {
    for (int64_t j = i + 1; j < s.n; ++j) v.push_back(s.at(i, j));
  }
  return v;
}

json interval_json(const stats::Interval& iv) {
  return json::array({num(iv.lo), num(iv.hi)});
}

json bootstrap_json(const stats::BootstrapResult& b) {
  return {{"mean", num(b.estimate)},
          {"standard_error", num(b.standard_error)},
          {"ci_percentile", interval_json(b.percentile)},
          {"ci_bca", interval_json(b.bca)},
          {"confidence", b.confidence},
          {"n_resamples", b.n_resamples},
          {"n_redrawn", b.n_redrawn}};
}

double binomial(int64_t n, int64_t k) {
  double r = 1;
  for (int64_t i = 1; i <= k; ++i) r = r * static_cast<double>(n - k + i) / static_cast<double>(i);
  return r;
}

struct Quantiles {
  double mean = 0, median = 0, q10 = 0, q90 = 0, min = 0, max = 0;
};

Quantiles describe(const std::vector<double>& v) {
  Quantiles q;
  if (v.empty()) return q;
  q.mean = std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
  q.median = stats::quantile(v, 0.5);
  q.q10 = stats::quantile(v, 0.1);
  q.q90 = stats::quantile(v, 0.9);
  q.min = *std::min_element(v.begin(), v.end());
  q.max = *std::max_element(v.begin(), v.end());
  return q;
}

// Latent indices ordered by stability, descending (ties: lower index first).
std::vector<int64_t> order_by_stability(const std::vector<double>& v) {
  std::vector<int64_t> idx(v.size());
  std::iota(idx.begin(), idx.end(), int64_t{0});
  std::stable_sort(idx.begin(), idx.end(), [&](int64_t x, int64_t y) {
    return v[static_cast<size_t>(x)] > v[static_cast<size_t>(y)];
  });
  return idx;
}

json per_feature_json(const std::vector<double>& v) {
  const Quantiles q = describe(v);
  const std::vector<int64_t> order = order_by_stability(v);
  json most = json::array(), least = json::array();
  const auto n = static_cast<int64_t>(v.size());
  for (int64_t k = 0; k < std::min(kListedLatents, n); ++k) {
    const int64_t top = order[static_cast<size_t>(k)], bottom = order[static_cast<size_t>(n - 1 - k)];
    most.push_back({{"latent", top}, {"stability", v[static_cast<size_t>(top)]}});
    least.push_back({{"latent", bottom}, {"stability", v[static_cast<size_t>(bottom)]}});
  }
  json frac = json::object();
  for (const double t : kSharedThresholds) {
    const auto above = std::count_if(v.begin(), v.end(), [&](double x) { return x >= t; });
    frac[fmt::format("{:.1f}", t)] =
        static_cast<double>(above) / static_cast<double>(std::max<int64_t>(n, 1));
  }
  return {{"n_latents", n},      {"mean", q.mean},       {"median", q.median}, {"q10", q.q10},
          {"q90", q.q90},        {"min", q.min},         {"max", q.max},       {"frac_at_least", frac},
          {"most_stable", most}, {"least_stable", least}};
}

std::string csv_escape(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string out = "\"";
  for (const char c : s) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

bool path_inside(const fs::path& inner, const fs::path& outer) {
  std::error_code ec;
  const fs::path a = fs::weakly_canonical(inner, ec), b = fs::weakly_canonical(outer, ec);
  auto ai = a.begin();
  for (auto bi = b.begin(); bi != b.end(); ++bi, ++ai) {
    if (bi->empty()) continue;
    if (ai == a.end() || *ai != *bi) return false;
  }
  return true;
}

std::string weights_file(const std::string& dir) {
  const fs::path p = fs::path(dir) / "sae_weights.safetensors";
  if (fs::exists(p)) return p.string();
  const fs::path s = fs::path(dir) / "sae.safetensors";
  return fs::exists(s) ? s.string() : std::string();
}

}  // namespace

nlohmann::json run_compare(const CompareOptions& options) {
  const auto t_start = std::chrono::steady_clock::now();
  // ---- Validate everything before touching the output folder.
  const auto n = static_cast<int64_t>(options.sae_dirs.size());
  if (n < 2) throw Error("husai compare needs at least two SAE folders (got " + std::to_string(n) + ")");
  if (options.out_dir.empty()) throw Error("husai compare: --out is required");
  if (options.bootstrap < 1) throw Error("--bootstrap must be at least 1");
  if (!(options.confidence > 0 && options.confidence < 1)) throw Error("confidence must lie in (0, 1)");
  if (options.null_seeds < 0) throw Error("--null-seeds must not be negative");
  std::vector<NullKind> nulls;
  if (options.nulls.empty()) {
    nulls = {NullKind::Gaussian, NullKind::Untrained};
    if (!options.activations_path.empty()) nulls.push_back(NullKind::Covariance);
  } else {
    for (const std::string& name : options.nulls) {
      const NullKind k = parse_null_kind(name);
      if (std::find(nulls.begin(), nulls.end(), k) != nulls.end())
        throw Error("null '" + name + "' listed twice");
      nulls.push_back(k);
    }
  }
  const bool want_cov = std::find(nulls.begin(), nulls.end(), NullKind::Covariance) != nulls.end();
  if (want_cov && options.activations_path.empty()) {
    throw Error(
        "the covariance null needs the activations the SAEs were trained on: pass --activations FILE");
  }
  for (const std::string& dir : options.sae_dirs) {
    if (path_inside(dir, options.out_dir)) {
      throw Error("the output folder must not contain an input SAE folder").file(dir);
    }
  }
  if (!options.activations_path.empty() && path_inside(options.activations_path, options.out_dir)) {
    throw Error("the output folder must not contain the activation file").file(options.activations_path);
  }

  std::vector<SaeModel> saes;
  saes.reserve(static_cast<size_t>(n));
  for (const std::string& dir : options.sae_dirs) saes.push_back(load_sae(dir));
  for (int64_t i = 1; i < n; ++i) {
    if (saes[static_cast<size_t>(i)].d_in != saes[0].d_in) {
      throw Error(fmt::format("SAEs must share d_in: {} has d_in = {} but {} has d_in = {}",
                              options.sae_dirs[0], saes[0].d_in, options.sae_dirs[static_cast<size_t>(i)],
                              saes[static_cast<size_t>(i)].d_in))
          .file(options.sae_dirs[static_cast<size_t>(i)]);
    }
  }
  const int64_t d_in = saes[0].d_in;
  std::optional<ActivationFile> acts;
  if (!options.activations_path.empty()) {
    acts = load_activation_file(options.activations_path, options.activations_key);
    if (acts->d_in != d_in) {
      throw Error(fmt::format("activations have {} columns but the SAEs have d_in = {}", acts->d_in, d_in))
          .file(options.activations_path);
    }
  }
  const int64_t m = options.null_seeds > 0 ? options.null_seeds : n;
  if (!nulls.empty() && m < 2) throw Error("--null-seeds must be at least 2");

  if (!options.overwrite && fs::exists(options.out_dir) && fs::is_directory(options.out_dir) &&
      !fs::is_empty(options.out_dir)) {
    throw Error("output directory exists and is not empty; pass --overwrite to replace it")
        .file(options.out_dir);
  }

  // ---- Dictionaries: trained, then each null's.
  std::vector<Dictionary> trained(static_cast<size_t>(n));
  parallel_for(n, [&](int64_t i) {
    Dictionary& d = trained[static_cast<size_t>(i)];
    const SaeModel& s = saes[static_cast<size_t>(i)];
    d.label = options.sae_dirs[static_cast<size_t>(i)];
    d.d_sae = s.d_sae;
    d.d_in = s.d_in;
    d.dec = decoder_features(s);
    d.enc = encoder_features(s);
  });
  std::optional<CovarianceNull> cov;
  if (want_cov) cov.emplace(acts->x.data(), acts->n_rows, acts->d_in);
  std::vector<uint64_t> null_seeds(static_cast<size_t>(m));
  for (int64_t j = 0; j < m; ++j) null_seeds[static_cast<size_t>(j)] = 1000 + static_cast<uint64_t>(j);
  std::vector<std::vector<Dictionary>> null_dicts(nulls.size(),
                                                  std::vector<Dictionary>(static_cast<size_t>(m)));
  parallel_for(static_cast<int64_t>(nulls.size()) * m, [&](int64_t t) {
    const size_t k = static_cast<size_t>(t / m);
    const int64_t j = t % m;
    const SaeModel& like = saes[static_cast<size_t>(j % n)];
    const uint64_t seed = null_seeds[static_cast<size_t>(j)];
    Dictionary& d = null_dicts[k][static_cast<size_t>(j)];
    d.label = fmt::format("{}:{}", null_kind_name(nulls[k]), seed);
    d.d_sae = like.d_sae;
    d.d_in = like.d_in;
    d.enc_is_dec = true;
    std::vector<float> w;
    switch (nulls[k]) {
      case NullKind::Gaussian:
        w = gaussian_null_decoder(like.d_sae, like.d_in, seed);
        break;
      case NullKind::Untrained:
        w = untrained_null_sae(like, seed).W_dec;
        break;
      case NullKind::Covariance:
        w = cov->decoder(like.d_sae, seed);
        break;
    }
    d.dec = features_from_rows(w.data(), like.d_sae, like.d_in);
  });

  // ---- Every pair: trained-trained (decoder and encoder), and per null null-null and trained-null.
  // All dictionaries in one list so that one parallel loop runs every GEMM + assignment.
  std::vector<const FeatureSet*> sets;
  sets.reserve(2 * trained.size() + nulls.size() * static_cast<size_t>(m));
  for (const Dictionary& d : trained) sets.push_back(&d.dec);
  for (const Dictionary& d : trained) sets.push_back(&d.enc);
  const auto null_base = [&](size_t k) { return 2 * n + static_cast<int64_t>(k) * m; };
  for (const auto& group : null_dicts) {
    for (const Dictionary& d : group) sets.push_back(&d.dec);
  }
  std::vector<std::pair<int64_t, int64_t>> jobs;
  const std::vector<std::pair<int64_t, int64_t>> tp = upper_pairs(n), np = upper_pairs(m);
  jobs.reserve(2 * tp.size() + nulls.size() * (np.size() + 2 * static_cast<size_t>(n * m)));
  for (const auto& [a, b] : tp) jobs.emplace_back(a, b);
  for (const auto& [a, b] : tp) jobs.emplace_back(n + a, n + b);
  for (size_t k = 0; k < nulls.size(); ++k) {
    for (const auto& [a, b] : np) jobs.emplace_back(null_base(k) + a, null_base(k) + b);
    for (int64_t a = 0; a < n; ++a) {
      for (int64_t b = 0; b < m; ++b) jobs.emplace_back(a, null_base(k) + b);
    }
    for (int64_t a = 0; a < n; ++a) {
      for (int64_t b = 0; b < m; ++b) jobs.emplace_back(n + a, null_base(k) + b);
    }
  }
  const auto t_pairs = std::chrono::steady_clock::now();
  const std::vector<PairStability> results = pair_stabilities(sets, jobs, true);
  const double pairs_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t_pairs).count();

  size_t cursor = 0;
  std::vector<PairRecord> trained_pairs(tp.size());
  for (size_t p = 0; p < tp.size(); ++p) {
    trained_pairs[p].a = tp[p].first;
    trained_pairs[p].b = tp[p].second;
    trained_pairs[p].dec = results[cursor + p];
    trained_pairs[p].enc = results[cursor + tp.size() + p];
  }
  cursor += 2 * tp.size();
  std::vector<std::vector<PairRecord>> null_pairs(nulls.size()), cross_pairs(nulls.size());
  for (size_t k = 0; k < nulls.size(); ++k) {
    for (size_t p = 0; p < np.size(); ++p) {
      PairRecord r;
      r.a = np[p].first;
      r.b = np[p].second;
      r.dec = results[cursor + p];
      r.enc = r.dec;  // a null's encoder features are its decoder features
      null_pairs[k].push_back(std::move(r));
    }
    cursor += np.size();
    const auto nm = static_cast<size_t>(n * m);
    for (size_t p = 0; p < nm; ++p) {
      PairRecord r;
      r.a = static_cast<int64_t>(p) / m;
      r.b = static_cast<int64_t>(p) % m;
      r.dec = results[cursor + p];
      r.enc = results[cursor + nm + p];
      cross_pairs[k].push_back(std::move(r));
    }
    cursor += 2 * nm;
  }

  // ---- Per-feature stability of the trained SAEs (and of each null, for the histogram's reference).
  std::vector<PairStability> tdec, tenc;
  for (const PairRecord& r : trained_pairs) {
    tdec.push_back(r.dec);
    tenc.push_back(r.enc);
  }
  const std::vector<std::vector<double>> pf_dec = per_feature_stability(n, tdec);
  const std::vector<std::vector<double>> pf_enc = per_feature_stability(n, tenc);
  std::vector<std::vector<std::vector<double>>> pf_null(nulls.size());
  for (size_t k = 0; k < nulls.size(); ++k) {
    std::vector<PairStability> v;
    for (const PairRecord& r : null_pairs[k]) v.push_back(r.dec);
    pf_null[k] = per_feature_stability(m, v);
  }

  // ---- Statistics per metric.
  std::string primary;
  std::string primary_reason;
  if (want_cov) {
    primary = "covariance";
    primary_reason = "activations were given, so the covariance null (chance alignment where the data lives)";
  } else if (std::find(nulls.begin(), nulls.end(), NullKind::Untrained) != nulls.end()) {
    primary = "untrained";
    primary_reason = "no activations were given, so the untrained-initialisation null";
  } else if (!nulls.empty()) {
    primary = std::string(null_kind_name(nulls[0]));
    primary_reason = "neither covariance nor untrained was computed; the first null requested";
  }
  const double alpha = 1.0 - options.confidence;
  const int conf_pct = static_cast<int>(std::lround(options.confidence * 100));
  json summary = json::object();
  for (const std::string& metric : summary_metrics()) {
    const stats::SimilarityMatrix ts = similarity(n, trained_pairs, metric);
    const std::vector<double> tv = upper_values(ts);
    const stats::BootstrapResult tb = stats::seed_bootstrap(ts, options.bootstrap, options.confidence,
                                                            derived_seed(options.seed, "trained/" + metric));
    json entry = {{"trained", bootstrap_json(tb)}, {"nulls", json::object()}};
    entry["trained"]["n_seeds"] = n;
    entry["trained"]["n_pairs"] = static_cast<int64_t>(tv.size());
    std::vector<double> perm_p;
    std::vector<json> per_null;
    for (size_t k = 0; k < nulls.size(); ++k) {
      const std::string name(null_kind_name(nulls[k]));
      const std::string tag = metric + "/" + name;
      const stats::SimilarityMatrix ns = similarity(m, null_pairs[k], metric);
      const std::vector<double> nv = upper_values(ns);
      // Pooled (n + m) x (n + m) matrix: trained first, then the null's dictionaries.
      stats::SimilarityMatrix pooled;
      pooled.n = n + m;
      pooled.values.assign(static_cast<size_t>(pooled.n * pooled.n), 0.0);
      const bool enc = metric.size() > 4 && metric.substr(metric.size() - 4) == "_enc";
      const std::string base = enc ? metric.substr(0, metric.size() - 4) : metric;
      auto put = [&](int64_t i, int64_t j, double v) {
        pooled.values[static_cast<size_t>(i * pooled.n + j)] = v;
        pooled.values[static_cast<size_t>(j * pooled.n + i)] = v;
      };
      for (int64_t i = 0; i < n; ++i) {
        for (int64_t j = i + 1; j < n; ++j) put(i, j, ts.at(i, j));
      }
      for (int64_t i = 0; i < m; ++i) {
        for (int64_t j = i + 1; j < m; ++j) put(n + i, n + j, ns.at(i, j));
      }
      for (const PairRecord& r : cross_pairs[k]) put(r.a, n + r.b, metric_value(enc ? r.enc : r.dec, base));

      const stats::BootstrapResult nb = stats::seed_bootstrap(ns, options.bootstrap, options.confidence,
                                                              derived_seed(options.seed, "null/" + tag));
      const stats::BootstrapResult db = stats::seed_bootstrap_difference(
          ts, ns, options.bootstrap, options.confidence, derived_seed(options.seed, "difference/" + tag));
      const stats::PermutationResult pr = stats::permutation_test(
          pooled, n, options.bootstrap, derived_seed(options.seed, "permutation/" + tag));
      const stats::MannWhitneyResult mw = stats::mann_whitney_greater(tv, nv);
      const double d = stats::cohens_d(tv, nv);
      json ne = bootstrap_json(nb);
      ne["n_seeds"] = m;
      ne["n_pairs"] = static_cast<int64_t>(nv.size());
      ne["difference"] = bootstrap_json(db);
      ne["difference"]["estimate"] = num(db.estimate);
      ne["difference"].erase("mean");
      ne["ratio"] = num(nb.estimate != 0 ? tb.estimate / nb.estimate : std::nan(""));
      ne["permutation"] = {
          {"observed", num(pr.observed)},
          {"p_value", num(pr.p_value)},
          {"p_value_two_sided", num(pr.p_value_two_sided)},
          {"exact", pr.exact},
          {"n_permutations", pr.n_permutations},
          {"min_attainable_p", pr.exact ? 1.0 / binomial(n + m, n) : 1.0 / (1.0 + options.bootstrap)}};
      ne["cohens_d"] = num(d);
      ne["mann_whitney"] = {{"u", num(mw.u)},
                            {"p_value", num(mw.p_value)},
                            {"method", mw.method},
                            {"note",
                             "pairwise values share seeds: not independent; kept for comparison with the "
                             "reference only"}};
      perm_p.push_back(pr.p_value);
      per_null.push_back(std::move(ne));
    }
    const std::vector<double> holm = nulls.empty() ? std::vector<double>{} : stats::holm_adjust(perm_p);
    for (size_t k = 0; k < nulls.size(); ++k) {
      const std::string name(null_kind_name(nulls[k]));
      json& ne = per_null[k];
      ne["permutation"]["p_holm"] = num(holm[k]);
      const double diff = ne["difference"]["estimate"].is_number()
                              ? ne["difference"]["estimate"].get<double>()
                              : std::nan("");
      const double p2 = ne["permutation"]["p_value_two_sided"].is_number()
                            ? ne["permutation"]["p_value_two_sided"].get<double>()
                            : std::nan("");
      const double min_p = ne["permutation"]["min_attainable_p"].get<double>();
      const auto& bca = ne["difference"]["ci_bca"];
      const std::string detail = fmt::format(
          "difference {:+.4f}, {}% BCa CI [{}, {}]; one-sided permutation p = {}, Holm-adjusted over {} "
          "null{} p = {}",
          diff, conf_pct, bca[0].is_number() ? fmt_num(bca[0].get<double>()) : "n/a",
          bca[1].is_number() ? fmt_num(bca[1].get<double>()) : "n/a", fmt_p(perm_p[k]), nulls.size(),
          nulls.size() == 1 ? "" : "s", fmt_p(holm[k]));
      std::string verdict;
      if (holm[k] <= alpha && diff > 0) {
        verdict = fmt::format("trained above {} null ({})", name, detail);
      } else if (diff < 0 && p2 <= alpha) {
        verdict = fmt::format("trained below {} null ({}; two-sided p = {})", name, detail, fmt_p(p2));
      } else if (min_p > alpha) {
        verdict = fmt::format(
            "undecided against {} null: with {} trained and {} null seeds the smallest attainable p is {} > "
            "{} "
            "({})",
            name, n, m, fmt_p(min_p), fmt_num(alpha, 2), detail);
      } else {
        verdict = fmt::format("trained not distinguishable from {} null ({})", name, detail);
      }
      ne["verdict"] = verdict;
      entry["nulls"][name] = std::move(ne);
    }
    summary[metric] = std::move(entry);
  }

  // ---- Documents.
  json inputs = json::array();
  for (int64_t i = 0; i < n; ++i) {
    const SaeModel& s = saes[static_cast<size_t>(i)];
    json in = {{"index", i},
               {"path", options.sae_dirs[static_cast<size_t>(i)]},
               {"architecture", s.architecture},
               {"d_in", s.d_in},
               {"d_sae", s.d_sae},
               {"format", s.source_format}};
    const json& md = s.cfg.contains("metadata") ? s.cfg["metadata"] : json::object();
    in["seed"] = md.is_object() && md.contains("seed") ? md["seed"] : json(nullptr);
    in["training_architecture"] =
        md.is_object() && md.contains("training_architecture") ? md["training_architecture"] : json(nullptr);
    const std::string wf = weights_file(options.sae_dirs[static_cast<size_t>(i)]);
    in["weights_sha256"] = wf.empty() ? json(nullptr) : json(sha256_file_hex(wf));
    inputs.push_back(in);
  }
  json settings = {{"nulls", json::array()},         {"null_seeds", null_seeds},
                   {"bootstrap", options.bootstrap}, {"confidence", options.confidence},
                   {"seed", options.seed},           {"activations", nullptr}};
  for (const NullKind k : nulls) settings["nulls"].push_back(std::string(null_kind_name(k)));
  if (acts) {
    settings["activations"] = {{"path", options.activations_path},
                               {"key", options.activations_key},
                               {"sha256", acts->sha256},
                               {"n_rows", acts->n_rows},
                               {"hook_name", acts->hook_name}};
  }
  json doc = {{"schema_version", kSchemaVersion}, {"inputs", inputs}, {"settings", settings}};
  doc["primary_null"] =
      primary.empty() ? json(nullptr) : json({{"name", primary}, {"reason", primary_reason}});
  doc["summary_metrics"] = summary_metrics();
  doc["pairs"] = json::array();
  for (const PairRecord& r : trained_pairs) {
    doc["pairs"].push_back(
        pair_json(r, trained[static_cast<size_t>(r.a)].label, trained[static_cast<size_t>(r.b)].label));
  }
  doc["nulls"] = json::object();
  for (size_t k = 0; k < nulls.size(); ++k) {
    const auto& dicts = null_dicts[k];
    json nj = {{"seeds", null_seeds}, {"encoder_equals_decoder", true}, {"shapes", json::array()}};
    for (const Dictionary& d : dicts) nj["shapes"].push_back({d.d_sae, d.d_in});
    nj["pairs"] = json::array();
    for (const PairRecord& r : null_pairs[k]) {
      nj["pairs"].push_back(
          pair_json(r, dicts[static_cast<size_t>(r.a)].label, dicts[static_cast<size_t>(r.b)].label));
    }
    nj["cross_pairs"] = json::array();
    for (const PairRecord& r : cross_pairs[k]) {
      nj["cross_pairs"].push_back(
          pair_json(r, trained[static_cast<size_t>(r.a)].label, dicts[static_cast<size_t>(r.b)].label));
    }
    nj["per_feature"] = per_feature_json([&] {
      std::vector<double> all;
      for (const auto& v : pf_null[k]) all.insert(all.end(), v.begin(), v.end());
      return all;
    }());
    nj["per_feature"].erase("most_stable");
    nj["per_feature"].erase("least_stable");
    doc["nulls"][std::string(null_kind_name(nulls[k]))] = nj;
  }
  doc["per_feature"] = json::array();
  for (int64_t i = 0; i < n; ++i) {
    doc["per_feature"].push_back({{"sae", i},
                                  {"path", trained[static_cast<size_t>(i)].label},
                                  {"decoder", per_feature_json(pf_dec[static_cast<size_t>(i)])},
                                  {"encoder", per_feature_json(pf_enc[static_cast<size_t>(i)])}});
  }
  doc["summary"] = summary;

  // pairs.csv: every pair of every group.
  std::string pairs_csv = "group,a,b,a_path,b_path";
  for (const std::string& mname : pair_metric_names()) pairs_csv += "," + mname;
  for (const std::string& mname : pair_metric_names()) pairs_csv += "," + mname + "_enc";
  pairs_csv += "\n";
  auto csv_rows = [&](const std::string& group, const std::vector<PairRecord>& recs,
                      const std::vector<Dictionary>& da, const std::vector<Dictionary>& db) {
    for (const PairRecord& r : recs) {
      pairs_csv +=
          fmt::format("{},{},{},{},{}", group, r.a, r.b, csv_escape(da[static_cast<size_t>(r.a)].label),
                      csv_escape(db[static_cast<size_t>(r.b)].label));
      for (const std::string& mname : pair_metric_names())
        pairs_csv += fmt::format(",{:.9g}", metric_value(r.dec, mname));
      for (const std::string& mname : pair_metric_names())
        pairs_csv += fmt::format(",{:.9g}", metric_value(r.enc, mname));
      pairs_csv += "\n";
    }
  };
  csv_rows("trained", trained_pairs, trained, trained);
  for (size_t k = 0; k < nulls.size(); ++k) {
    const std::string name(null_kind_name(nulls[k]));
    csv_rows("null:" + name, null_pairs[k], null_dicts[k], null_dicts[k]);
    csv_rows("cross:" + name, cross_pairs[k], trained, null_dicts[k]);
  }
  std::string pf_csv = "sae,path,latent,stability,stability_enc\n";
  for (int64_t i = 0; i < n; ++i) {
    const auto& vd = pf_dec[static_cast<size_t>(i)];
    const auto& ve = pf_enc[static_cast<size_t>(i)];
    for (size_t f = 0; f < vd.size(); ++f) {
      pf_csv += fmt::format("{},{},{},{:.9g},{:.9g}\n", i, csv_escape(trained[static_cast<size_t>(i)].label),
                            f, vd[f], ve[f]);
    }
  }

  // summary.md
  std::string md = "# husai compare: stability of SAEs across seeds\n\n";
  md += fmt::format(
      "{} SAEs (d_in {}), nulls: {}; {} null seeds each ({}..{}); {} bootstrap resamples; seed {}.\n\n", n,
      d_in, nulls.empty() ? std::string("none") : settings["nulls"].dump(), m, null_seeds.front(),
      null_seeds.back(), options.bootstrap, options.seed);
  md += "| # | SAE folder | architecture | d_sae | seed |\n|---|---|---|---|---|\n";
  for (const json& in : inputs) {
    md +=
        fmt::format("| {} | `{}` | {} | {} | {} |\n", in["index"].get<int64_t>(),
                    in["path"].get<std::string>(), in["architecture"].get<std::string>(),
                    in["d_sae"].get<int64_t>(), in["seed"].is_null() ? std::string("?") : in["seed"].dump());
  }
  if (!primary.empty()) {
    md += fmt::format("\nThe null for decisions (CONTRACTS.md): **{}** ({}).\n", primary, primary_reason);
  }
  md +=
      "\nFeatures are the rows of W_dec (`_enc`: the columns of W_enc). `pwmcc` is the reference's max-based "
      "score; `matched_mean_cos` is the Hungarian-matched score Song et al. (2025) call PW-MCC. Intervals "
      "resample seeds (never pairs); p-values permute seed labels.\n";
  md += "\n## Verdicts\n\n";
  for (const std::string& metric : summary_metrics()) {
    for (size_t k = 0; k < nulls.size(); ++k) {
      const std::string name(null_kind_name(nulls[k]));
      md += fmt::format("- `{}` vs {}{}: {}\n", metric, name, name == primary ? " (primary)" : "",
                        summary[metric]["nulls"][name]["verdict"].get<std::string>());
    }
  }
  md += fmt::format("\n## Trained vs nulls ({}% intervals: BCa; percentile in stability.json)\n\n", conf_pct);
  md +=
      "| metric | trained | null | null mean | difference | ratio | perm. p | Holm p | Cohen's d | "
      "Mann-Whitney U (p) |\n|---|---|---|---|---|---|---|---|---|---|\n";
  auto ci_text = [](const json& b, const char* key) {
    const json& iv = b[key];
    return fmt::format("[{}, {}]", iv[0].is_number() ? fmt_num(iv[0].get<double>()) : "n/a",
                       iv[1].is_number() ? fmt_num(iv[1].get<double>()) : "n/a");
  };
  auto jnum = [](const json& v, int digits = 4) {
    return v.is_number() ? fmt_num(v.get<double>(), digits) : "n/a";
  };
  auto jp = [](const json& v) { return v.is_number() ? fmt_p(v.get<double>()) : "n/a"; };
  for (const std::string& metric : summary_metrics()) {
    const json& s = summary[metric];
    const std::string trained_txt =
        fmt::format("{} {}", jnum(s["trained"]["mean"]), ci_text(s["trained"], "ci_bca"));
    if (nulls.empty()) {
      md += fmt::format("| `{}` | {} | - | - | - | - | - | - | - | - |\n", metric, trained_txt);
    }
    for (size_t k = 0; k < nulls.size(); ++k) {
      const std::string name(null_kind_name(nulls[k]));
      const json& ne = s["nulls"][name];
      md += fmt::format("| `{}` | {} | {} | {} {} | {:} {} | {} | {} | {} | {} | {} ({}) |\n", metric,
                        trained_txt, name, jnum(ne["mean"]), ci_text(ne, "ci_bca"),
                        jnum(ne["difference"]["estimate"]), ci_text(ne["difference"], "ci_bca"),
                        jnum(ne["ratio"], 3), jp(ne["permutation"]["p_value"]),
                        jp(ne["permutation"]["p_holm"]), jnum(ne["cohens_d"], 2),
                        jnum(ne["mann_whitney"]["u"], 1), jp(ne["mann_whitney"]["p_value"]));
    }
  }
  md +=
      "\n## Trained pairs\n\n| a | b | pwmcc | pwmcc_ab | pwmcc_ba | matched_mean_cos | shared >= 0.5 | >= "
      "0.7 | "
      ">= 0.9 | pwmcc_enc | matched_mean_cos_enc |\n|---|---|---|---|---|---|---|---|---|---|---|\n";
  for (const PairRecord& r : trained_pairs) {
    md += fmt::format("| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n", r.a, r.b,
                      fmt_num(r.dec.pwmcc), fmt_num(r.dec.pwmcc_ab), fmt_num(r.dec.pwmcc_ba),
                      fmt_num(r.dec.matched_mean_cos), fmt_num(r.dec.shared_frac[0], 3),
                      fmt_num(r.dec.shared_frac[1], 3), fmt_num(r.dec.shared_frac[2], 3),
                      fmt_num(r.enc.pwmcc), fmt_num(r.enc.matched_mean_cos));
  }
  md +=
      "\n## Per-feature stability (decoder)\n\nFor each latent: the mean over the other SAEs of its best "
      "|cos|.\n\n"
      "| SAE | mean | median | q10 | q90 | most stable (latent: value) | least stable (latent: value) |\n"
      "|---|---|---|---|---|---|---|\n";
  for (int64_t i = 0; i < n; ++i) {
    const json& pj = doc["per_feature"][static_cast<size_t>(i)]["decoder"];
    auto list = [](const json& arr) {
      std::string s;
      for (size_t k = 0; k < std::min<size_t>(arr.size(), 5); ++k) {
        s += fmt::format("{}{}: {}", k ? ", " : "", arr[k]["latent"].get<int64_t>(),
                         fmt_num(arr[k]["stability"].get<double>(), 3));
      }
      return s;
    };
    md += fmt::format("| {} | {} | {} | {} | {} | {} | {} |\n", i, fmt_num(pj["mean"].get<double>()),
                      fmt_num(pj["median"].get<double>()), fmt_num(pj["q10"].get<double>()),
                      fmt_num(pj["q90"].get<double>()), list(pj["most_stable"]), list(pj["least_stable"]));
  }
  for (size_t k = 0; k < nulls.size(); ++k) {
    const json& pj = doc["nulls"][std::string(null_kind_name(nulls[k]))]["per_feature"];
    md += fmt::format("| {} null (all seeds) | {} | {} | {} | {} | | |\n", null_kind_name(nulls[k]),
                      fmt_num(pj["mean"].get<double>()), fmt_num(pj["median"].get<double>()),
                      fmt_num(pj["q10"].get<double>()), fmt_num(pj["q90"].get<double>()));
  }
  md += fmt::format(
      "\nThe {} most and least stable latents of each SAE (decoder and encoder) are in "
      "`stability.json` under `per_feature`; every latent is in `per_feature.csv`.\n",
      kListedLatents);
  if (options.figures) {
    md +=
        "\n## Figures\n\n![pairwise matrix](pairwise_heatmap.png)\n\n![trained vs "
        "nulls](trained_vs_nulls.png)"
        "\n\n![per-feature stability](per_feature_hist.png)\n";
  }

  // ---- Write. Figures first, then the data files, the manifest last: a folder without manifest.json is
  // incomplete. Every file is written atomically.
  prepare_output_dir(options.out_dir, options.overwrite ? ExistingOutput::Overwrite : ExistingOutput::Refuse);
  const std::string& dir = options.out_dir;
  auto in_dir = [&](const std::string& name) { return (fs::path(dir) / name).string(); };
  std::vector<std::string> written;
  if (options.figures) {
    // Pairwise heatmaps: pwmcc and matched_mean_cos of the trained SAEs.
    std::ostringstream heat;
    for (const auto& [block, metric] :
         std::vector<std::pair<std::string, std::string>>{{"$P", "pwmcc"}, {"$M", "matched_mean_cos"}}) {
      const stats::SimilarityMatrix s = similarity(n, trained_pairs, metric);
      heat << block << " << EOD\n";
      for (int64_t i = 0; i < n; ++i) {
        for (int64_t j = 0; j < n; ++j) {
          heat << i << " " << j << " " << (i == j ? std::string("NaN") : fmt::format("{:.6f}", s.at(i, j)))
               << "\n";
        }
        heat << "\n";
      }
      heat << "EOD\n";
    }
    heat << "set multiplot layout 1,2 title 'trained SAEs: pairwise similarity (decoder rows)'\n";
    heat << "set xrange [-0.5:" << n - 0.5 << "]\nset yrange [" << n - 0.5 << ":-0.5]\nset size ratio -1\n";
    heat << "set xtics 1\nset ytics 1\nset xlabel 'SAE'\nset ylabel 'SAE'\nset palette rgb 33,13,10\n";
    heat << "set cbrange [0:1]\n";
    const bool labels = n <= 12;
    heat << "set title 'pwmcc'\nplot $P using 1:2:3 with image notitle"
         << (labels ? ", $P using 1:2:(sprintf('%.3f',$3)) with labels font ',8' notitle" : "") << "\n";
    heat << "set title 'matched\\_mean\\_cos (PW-MCC)'\nplot $M using 1:2:3 with image notitle"
         << (labels ? ", $M using 1:2:(sprintf('%.3f',$3)) with labels font ',8' notitle" : "") << "\n";
    heat << "unset multiplot\n";
    render_figure(heat.str(), in_dir("pairwise_heatmap.png"), in_dir("pairwise_heatmap.svg"), 1100, 550);
    written.insert(written.end(), {"pairwise_heatmap.png", "pairwise_heatmap.svg"});

    // Trained vs nulls: bars with BCa intervals for the decoder metrics.
    std::ostringstream bars;
    const std::vector<std::string> shown = {"pwmcc", "matched_mean_cos", "shared_frac_05", "shared_frac_07",
                                            "shared_frac_09"};
    bars << "$D << EOD\n";
    for (const std::string& metric : shown) {
      const json& s = summary[metric];
      auto triple = [](const json& b) {
        const json& iv = b["ci_bca"];
        const double mean = b["mean"].is_number() ? b["mean"].get<double>() : 0.0;
        return fmt::format(" {:.6f} {:.6f} {:.6f}", mean, iv[0].is_number() ? iv[0].get<double>() : mean,
                           iv[1].is_number() ? iv[1].get<double>() : mean);
      };
      bars << metric;
      bars << triple(s["trained"]);
      for (const NullKind k : nulls) bars << triple(s["nulls"][std::string(null_kind_name(k))]);
      bars << "\n";
    }
    bars << "EOD\n";
    bars << "set title 'trained SAEs vs null dictionaries (mean over seed pairs, " << conf_pct
         << "% seed-bootstrap BCa CI)'\n";
    bars << "set style data histograms\nset style histogram errorbars gap 2 lw 1\nset style fill solid 0.7 "
            "border -1\n";
    bars << "set yrange [0:1.05]\nset grid ytics\nset key top right\nset ylabel 'similarity'\nset xtics "
            "noenhanced\n";
    const std::vector<std::string> colours = {"#1f77b4", "#7f7f7f", "#ff7f0e", "#2ca02c"};
    bars << "plot $D using 2:3:4:xtic(1) title 'trained' lc rgb '" << colours[0] << "'";
    for (size_t k = 0; k < nulls.size(); ++k) {
      bars << ", '' using " << 5 + 3 * k << ":" << 6 + 3 * k << ":" << 7 + 3 * k << " title '"
           << null_kind_name(nulls[k]) << " null' lc rgb '" << colours[(k + 1) % colours.size()] << "'";
    }
    bars << "\n";
    render_figure(bars.str(), in_dir("trained_vs_nulls.png"), in_dir("trained_vs_nulls.svg"), 1000, 600);
    written.insert(written.end(), {"trained_vs_nulls.png", "trained_vs_nulls.svg"});

    // Per-feature stability histogram: all trained latents pooled, each null as a reference line.
    constexpr int kBins = 50;
    auto histogram = [&](const std::vector<std::vector<double>>& groups) {
      std::vector<double> counts(kBins, 0.0);
      double total = 0;
      for (const auto& g : groups) {
        for (const double v : g) {
          const int b = std::clamp(static_cast<int>(v * kBins), 0, kBins - 1);
          counts[static_cast<size_t>(b)] += 1;
          total += 1;
        }
      }
      for (double& c : counts) c = total > 0 ? c / total : 0.0;
      return counts;
    };
    std::ostringstream hist;
    std::vector<std::vector<double>> columns = {histogram(pf_dec)};
    for (size_t k = 0; k < nulls.size(); ++k) columns.push_back(histogram(pf_null[k]));
    hist << "$H << EOD\n";
    for (int b = 0; b < kBins; ++b) {
      hist << fmt::format("{:.4f}", (b + 0.5) / kBins);
      for (const auto& c : columns) hist << fmt::format(" {:.6f}", c[static_cast<size_t>(b)]);
      hist << "\n";
    }
    hist << "EOD\n";
    hist << "set title 'per-feature stability: mean over the other seeds of each latent''s best |cos| "
            "(decoder)'\n";
    hist << "set xlabel 'per-feature stability'\nset ylabel 'fraction of latents'\nset xrange [0:1]\nset "
            "grid\n";
    hist << "set style fill solid 0.6 border -1\nset boxwidth " << 1.0 / kBins << " absolute\n";
    hist << "plot $H using 1:2 with boxes lc rgb '" << colours[0] << "' title 'trained (" << n << " SAEs)'";
    for (size_t k = 0; k < nulls.size(); ++k) {
      hist << ", '' using 1:" << 3 + k << " with steps lw 2 lc rgb '" << colours[(k + 1) % colours.size()]
           << "' title '" << null_kind_name(nulls[k]) << " null'";
    }
    hist << "\n";
    render_figure(hist.str(), in_dir("per_feature_hist.png"), in_dir("per_feature_hist.svg"), 900, 600);
    written.insert(written.end(), {"per_feature_hist.png", "per_feature_hist.svg"});
  }
  write_file_atomic(in_dir("pairs.csv"), pairs_csv);
  write_file_atomic(in_dir("per_feature.csv"), pf_csv);
  write_file_atomic(in_dir("summary.md"), md);
  write_file_atomic(in_dir("stability.json"), doc.dump(2) + "\n");
  written.insert(written.end(), {"pairs.csv", "per_feature.csv", "summary.md", "stability.json"});

  Manifest manifest;
  manifest.command = command_line();
  json resolved = settings;
  resolved["sae_dirs"] = options.sae_dirs;
  manifest.config_hash = sha256_hex(resolved.dump());
  for (const std::string& d : options.sae_dirs) {
    const std::string wf = weights_file(d);
    if (!wf.empty()) manifest.add_input(wf);
    const fs::path cfg = fs::path(d) / "cfg.json";
    if (fs::exists(cfg)) manifest.add_input(cfg.string());
  }
  if (acts) manifest.add_input(options.activations_path);
  for (const std::string& name : written) manifest.add_output(dir, name);
  manifest.extra["settings"] = settings;
  manifest.extra["timing_s"] = {
      {"pairs", pairs_seconds},
      {"total", std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count()}};
  manifest.extra["pair_computations"] = static_cast<int64_t>(jobs.size());
  manifest.write(dir);
  return doc;
}

}  // namespace husai
