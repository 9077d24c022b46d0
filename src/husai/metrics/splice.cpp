#include "husai/metrics/splice.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "husai/core/error.hpp"
#include "husai/core/progress.hpp"
#include "husai/core/threading.hpp"
#include "husai/model/extract.hpp"

namespace husai {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

int64_t parse_int(const std::string& text, const std::string& what, const std::string& key) {
  try {
    size_t used = 0;
    const int64_t v = std::stoll(text, &used);
    if (used != text.size()) throw std::invalid_argument("trailing");
    return v;
  } catch (const std::exception&) {
    throw Error(what + " must be an integer, got '" + text + "'").key(key);
  }
}

// Log-softmax of one row of logits, in double; returns the arg-max (lowest index on ties, as torch.argmax).
int64_t log_softmax(const float* logits, int64_t V, double* log_probs) {
  int64_t arg = 0;
  for (int64_t v = 1; v < V; ++v) {
    if (logits[v] > logits[arg]) arg = v;
  }
  const double max_z = static_cast<double>(logits[arg]);
  double sum = 0;
  for (int64_t v = 0; v < V; ++v) sum += std::exp(static_cast<double>(logits[v]) - max_z);
  const double log_sum = max_z + std::log(sum);
  for (int64_t v = 0; v < V; ++v) log_probs[v] = static_cast<double>(logits[v]) - log_sum;
  return arg;
}

double mean(const std::vector<double>& values) {
  double sum = 0;
  for (const double v : values) sum += v;  // pair order
  return sum / static_cast<double>(values.size());
}

double ratio_or_nan(double num, double den) {
  return den == 0.0 ? kNaN : num / den;
}

}  // namespace

SpliceSpec splice_spec_from_metadata(const std::map<std::string, std::string>& metadata) {
  auto get = [&](const std::string& key) -> const std::string& {
    const auto it = metadata.find(key);
    if (it == metadata.end()) {
      throw Error("activations metadata has no '" + key + "' (not written by husai extract?)").key(key);
    }
    return it->second;
  };
  SpliceSpec spec;
  spec.layer = parse_int(get("layer"), "metadata layer", "layer");
  spec.site = parse_hook_site(get("site"));
  spec.position = get("position");
  if (spec.position == "all") {
    throw Error(
        "activations of every position (position 'all') cannot be spliced at one position; extract one "
        "position (e.g. --position answer)")
        .key("position");
  }
  return spec;
}

SpliceSpec SpliceSpec::written() const {
  SpliceSpec w = *this;
  if (out_site) {
    w.layer = out_layer;
    w.site = *out_site;
    w.out_site.reset();
  }
  return w;
}

int64_t resolve_splice_position(const LoadedModel& model, const SpliceSpec& spec) {
  resolve_layer_index(spec.layer, model.cfg.n_layers);
  if (spec.position == "all") {
    throw Error("position 'all' cannot be spliced: choose 'answer' or one index").key("--position");
  }
  return resolve_position_index(spec.position, model.task);
}

bool splice_affects_answer(const LoadedModel& model, const SpliceSpec& read_spec) {
  const SpliceSpec spec = read_spec.written();
  const int64_t layer = resolve_layer_index(spec.layer, model.cfg.n_layers);
  const int64_t position = resolve_splice_position(model, spec);
  const int64_t answer = model.task.answer_position();
  if (position > answer) return false;
  const bool last_block_output = layer == model.cfg.n_layers - 1 && spec.site != HookSite::ResidPre;
  return position == answer || !last_block_output;
}

nlohmann::json SpliceMetrics::to_json() const {
  auto number = [](double v) -> nlohmann::json { return std::isfinite(v) ? nlohmann::json(v) : nullptr; };
  return {{"n_pairs", n_pairs},
          {"ce_clean", number(ce_clean)},
          {"ce_sae", number(ce_sae)},
          {"ce_zero_ablation", number(ce_zero_ablation)},
          {"ce_loss_score", number(ce_loss_score)},
          {"kl_sae", number(kl_sae)},
          {"kl_zero_ablation", number(kl_zero_ablation)},
          {"kl_div_score", number(kl_div_score)},
          {"accuracy_clean", number(accuracy_clean)},
          {"accuracy_sae", number(accuracy_sae)},
          {"accuracy_zero_ablation", number(accuracy_zero_ablation)}};
}

namespace {

// Where a splice reads and writes, resolved and checked against the model.
struct SpliceSites {
  int64_t layer = 0, out_layer = 0, position = 0;
  HookSite site = HookSite::ResidPost, out_site = HookSite::ResidPost;
  std::string hook_name, out_hook_name;
};

SpliceSites resolve_splice_sites(const LoadedModel& model, const SpliceSpec& spec) {
  SpliceSites s;
  s.layer = resolve_layer_index(spec.layer, model.cfg.n_layers);
  s.position = resolve_splice_position(model, spec);
  s.site = spec.site;
  s.hook_name = hook_point_name(s.layer, spec.site);
  const SpliceSpec written = spec.written();
  s.out_layer = resolve_layer_index(written.layer, model.cfg.n_layers);
  s.out_site = written.site;
  s.out_hook_name = hook_point_name(s.out_layer, written.site);
  const int64_t answer = model.task.answer_position();
  // The prediction is made from the clean run's input rows; the patched runs must see those same rows, so
  // the written site has to come strictly later (sites are in forward order within a block).
  if (spec.out_site &&
      std::pair(s.out_layer, static_cast<int>(s.out_site)) <= std::pair(s.layer, static_cast<int>(s.site))) {
    throw Error("a transcoder's output site " + s.out_hook_name + " must come after its input site " +
                s.hook_name + " in the forward pass")
        .key("hook_name_out");
  }
  if (!splice_affects_answer(model, spec)) {
    throw Error("splicing " + s.hook_name + " at position " + std::to_string(s.position) +
                " cannot change the answer's logits at position " + std::to_string(answer) +
                " (causal attention), so CE and KL scores are undefined there")
        .key("--position");
  }
  if (spec.batch_size < 1) throw Error("batch size must be >= 1").key("batch_size");
  return s;
}

enum SpliceRun { kClean = 0, kSae = 1, kZero = 2 };

// The three forward passes over batches of pairs, and per pair the answer's CE and correctness for clean /
// sae / zero and KL(clean || patched) for sae / zero.
class SpliceRunner {
 public:
  SpliceRunner(const LoadedModel& model, const SpliceSpec& spec, const SpliceSites& sites)
      : model_(model),
        sites_(sites),
        pv_(make_views(model.cfg, model.layout, const_cast<float*>(model.params.data()))),
        tokens_(model.task.tokens()),
        labels_(model.task.labels()) {
    const TransformerConfig& cfg = model.cfg;
    const int64_t answer = model.task.answer_position();
    const bool answer_only = sites.position == answer;
    n_pos_ = answer_only ? answer + 1 : cfg.n_ctx;
    n_query_ = answer_only ? 1 : n_pos_;
    answer_query_ = answer - (n_pos_ - n_query_);  // the answer's row among a pair's logits rows
    const int64_t n_pairs = model.task.n_pairs();
    for (int run = 0; run < 3; ++run) {
      ce[run].resize(static_cast<size_t>(n_pairs));
      correct[run].resize(static_cast<size_t>(n_pairs));
      kl[run].resize(static_cast<size_t>(n_pairs));
    }
    const int64_t max_batch = std::min(spec.batch_size, n_pairs);
    x.resize(static_cast<size_t>(max_batch * cfg.d_model));
    x_hat.resize(x.size());
    clean_log_probs_.resize(static_cast<size_t>(max_batch * cfg.d_vocab));
  }

  // One run over pairs [start, start + count): the clean run captures the read site's rows into x, the sae
  // run writes x_hat at the written site, the zero run zeros it.
  void run_batch(SpliceRun run, int64_t start, int64_t count) {
    const TransformerConfig& cfg = model_.cfg;
    const int64_t D = cfg.d_model, V = cfg.d_vocab;
    const bool capture = run == kClean;
    const float* replacement = run == kSae ? x_hat.data() : nullptr;
    bool reached = false;
    const HookFn<float> hook = [&](int64_t l, HookSite site, float* acts, int64_t B, int64_t hook_pos,
                                   int64_t first_pos) {
      const bool read_here = l == sites_.layer && site == sites_.site;
      const bool write_here = l == sites_.out_layer && site == sites_.out_site;
      if (capture ? !read_here : !write_here) return;
      reached = true;
      for (int64_t b = 0; b < B; ++b) {
        float* row = acts + (b * hook_pos + sites_.position - first_pos) * D;
        if (capture) {
          std::copy_n(row, D, x.data() + b * D);
        } else if (replacement) {
          std::copy_n(replacement + b * D, D, row);
        } else {
          std::fill_n(row, D, 0.0f);
        }
      }
    };
    transformer_forward(cfg, pv_, ws_, tokens_.data() + start * cfg.n_ctx, count, n_pos_, n_query_, &hook);
    if (!reached) throw Error("internal: splice hook " + sites_.hook_name + " was not reached");
    parallel_chunks(count, 64, [&](int64_t b0, int64_t b1) {
      std::vector<double> log_probs(static_cast<size_t>(V));
      for (int64_t b = b0; b < b1; ++b) {
        const auto pair = static_cast<size_t>(start + b);
        const float* logits = ws_.logits.data() + (b * n_query_ + answer_query_) * V;
        double* lp = run == kClean ? clean_log_probs_.data() + b * V : log_probs.data();
        const int64_t arg = log_softmax(logits, V, lp);
        const int64_t label = labels_[pair];
        ce[run][pair] = -lp[label];
        correct[run][pair] = arg == label ? 1.0 : 0.0;
        if (run != kClean) {
          const double* lc = clean_log_probs_.data() + b * V;
          double sum = 0;
          for (int64_t v = 0; v < V; ++v) sum += std::exp(lc[v]) * (lc[v] - lp[v]);
          kl[run][pair] = sum;
        }
      }
    });
  }

  std::vector<double> ce[3], correct[3], kl[3];
  std::vector<float> x, x_hat;  // the read site's rows of a batch, and their reconstruction

 private:
  const LoadedModel& model_;
  const SpliceSites& sites_;
  ParamViews<float> pv_;
  std::vector<int64_t> tokens_, labels_;
  int64_t n_pos_ = 0, n_query_ = 0, answer_query_ = 0;
  std::vector<double> clean_log_probs_;
  TransformerWorkspace<float> ws_;
};

}  // namespace

SpliceMetrics splice_metrics(const LoadedModel& model, const SpliceSpec& spec,
                             const ReconstructFn& reconstruct, bool quiet) {
  const SpliceSites sites = resolve_splice_sites(model, spec);
  if (!reconstruct) throw Error("splice_metrics: no reconstruct function");
  const int64_t n_pairs = model.task.n_pairs();
  SpliceRunner runner(model, spec, sites);
  Progress progress("splice", n_pairs, quiet);
  for (int64_t start = 0; start < n_pairs; start += spec.batch_size) {
    const int64_t count = std::min(spec.batch_size, n_pairs - start);
    runner.run_batch(kClean, start, count);
    reconstruct(runner.x.data(), count, runner.x_hat.data());
    runner.run_batch(kSae, start, count);
    runner.run_batch(kZero, start, count);
    progress.update(start + count);
  }
  progress.finish();

  // Per-pair values averaged in pair order.
  SpliceMetrics m;
  m.n_pairs = n_pairs;
  m.hook_name = spec.out_site ? sites.hook_name + " -> " + sites.out_hook_name : sites.hook_name;
  m.position = sites.position;
  m.ce_clean = mean(runner.ce[kClean]);
  m.ce_sae = mean(runner.ce[kSae]);
  m.ce_zero_ablation = mean(runner.ce[kZero]);
  m.ce_loss_score = ratio_or_nan(m.ce_zero_ablation - m.ce_sae, m.ce_zero_ablation - m.ce_clean);
  m.kl_sae = mean(runner.kl[kSae]);
  m.kl_zero_ablation = mean(runner.kl[kZero]);
  m.kl_div_score = ratio_or_nan(m.kl_zero_ablation - m.kl_sae, m.kl_zero_ablation);
  m.accuracy_clean = mean(runner.correct[kClean]);
  m.accuracy_sae = mean(runner.correct[kSae]);
  m.accuracy_zero_ablation = mean(runner.correct[kZero]);
  return m;
}

}  // namespace husai
