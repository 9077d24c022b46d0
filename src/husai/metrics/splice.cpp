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

SpliceMetrics splice_metrics(const LoadedModel& model, const SpliceSpec& spec,
                             const ReconstructFn& reconstruct, bool quiet) {
  const TransformerConfig& cfg = model.cfg;
  const ModularTask& task = model.task;
  const int64_t layer = resolve_layer_index(spec.layer, cfg.n_layers);
  const int64_t position = resolve_splice_position(model, spec);
  const int64_t answer = task.answer_position();
  const std::string hook_name = "blocks." + std::to_string(layer) + ".hook_" + hook_site_name(spec.site);
  const SpliceSpec written = spec.written();
  const int64_t out_layer = resolve_layer_index(written.layer, cfg.n_layers);
  const std::string out_hook_name =
      "blocks." + std::to_string(out_layer) + ".hook_" + hook_site_name(written.site);
  // The prediction is made from the clean run's input rows; the patched runs must see those same rows, so
  // the written site has to come strictly later (sites are in forward order within a block).
  if (spec.out_site &&
      std::pair(out_layer, static_cast<int>(written.site)) <= std::pair(layer, static_cast<int>(spec.site))) {
    throw Error("a transcoder's output site " + out_hook_name + " must come after its input site " +
                hook_name + " in the forward pass")
        .key("hook_name_out");
  }
  if (!splice_affects_answer(model, spec)) {
    throw Error("splicing " + hook_name + " at position " + std::to_string(position) +
                " cannot change the answer's logits at position " + std::to_string(answer) +
                " (causal attention), so CE and KL scores are undefined there")
        .key("--position");
  }
  if (spec.batch_size < 1) throw Error("batch size must be >= 1").key("batch_size");
  if (!reconstruct) throw Error("splice_metrics: no reconstruct function");

  const bool answer_only = position == answer;
  const int64_t n_pos = answer_only ? answer + 1 : cfg.n_ctx;
  const int64_t n_query = answer_only ? 1 : n_pos;
  const int64_t answer_query = answer - (n_pos - n_query);  // the answer's row among a pair's logits rows
  const int64_t n_pairs = task.n_pairs();
  const int64_t D = cfg.d_model, V = cfg.d_vocab;
  const std::vector<int64_t> tokens = task.tokens();
  const std::vector<int64_t> labels = task.labels();
  const ParamViews<float> pv = make_views(cfg, model.layout, const_cast<float*>(model.params.data()));

  // Per pair: CE and correctness for clean / sae / zero, KL for sae / zero; averaged in pair order at the
  // end.
  enum Run { kClean = 0, kSae = 1, kZero = 2 };
  std::vector<double> ce[3], correct[3], kl[3];
  for (int run = 0; run < 3; ++run) {
    ce[run].resize(static_cast<size_t>(n_pairs));
    correct[run].resize(static_cast<size_t>(n_pairs));
    kl[run].resize(static_cast<size_t>(n_pairs));
  }

  const int64_t max_batch = std::min(spec.batch_size, n_pairs);
  std::vector<float> x(static_cast<size_t>(max_batch * D)), x_hat(x.size());
  std::vector<double> clean_log_probs(static_cast<size_t>(max_batch * V));
  TransformerWorkspace<float> ws;

  // The hook either captures the spliced rows into x (clean run) or overwrites them with `replacement`
  // (nullptr: zeros).
  bool capture = true;
  const float* replacement = nullptr;
  bool reached = false;
  const HookFn<float> hook = [&](int64_t l, HookSite site, float* acts, int64_t B, int64_t hook_pos,
                                 int64_t first_pos) {
    const bool read_here = l == layer && site == spec.site;
    const bool write_here = l == out_layer && site == written.site;
    if (capture ? !read_here : !write_here) return;
    reached = true;
    for (int64_t b = 0; b < B; ++b) {
      float* row = acts + (b * hook_pos + position - first_pos) * D;
      if (capture) {
        std::copy_n(row, D, x.data() + b * D);
      } else if (replacement) {
        std::copy_n(replacement + b * D, D, row);
      } else {
        std::fill_n(row, D, 0.0f);
      }
    }
  };

  auto run_batch = [&](Run run, int64_t start, int64_t count) {
    capture = run == kClean;
    replacement = run == kSae ? x_hat.data() : nullptr;
    reached = false;
    transformer_forward(cfg, pv, ws, tokens.data() + start * cfg.n_ctx, count, n_pos, n_query, &hook);
    if (!reached) throw Error("internal: splice hook " + hook_name + " was not reached");
    parallel_chunks(count, 64, [&](int64_t b0, int64_t b1) {
      std::vector<double> log_probs(static_cast<size_t>(V));
      for (int64_t b = b0; b < b1; ++b) {
        const auto pair = static_cast<size_t>(start + b);
        const float* logits = ws.logits.data() + (b * n_query + answer_query) * V;
        double* lp = run == kClean ? clean_log_probs.data() + b * V : log_probs.data();
        const int64_t arg = log_softmax(logits, V, lp);
        const int64_t label = labels[pair];
        ce[run][pair] = -lp[label];
        correct[run][pair] = arg == label ? 1.0 : 0.0;
        if (run != kClean) {
          const double* lc = clean_log_probs.data() + b * V;
          double sum = 0;
          for (int64_t v = 0; v < V; ++v) sum += std::exp(lc[v]) * (lc[v] - lp[v]);
          kl[run][pair] = sum;
        }
      }
    });
  };

  Progress progress("splice", n_pairs, quiet);
  for (int64_t start = 0; start < n_pairs; start += spec.batch_size) {
    const int64_t count = std::min(spec.batch_size, n_pairs - start);
    run_batch(kClean, start, count);
    reconstruct(x.data(), count, x_hat.data());
    run_batch(kSae, start, count);
    run_batch(kZero, start, count);
    progress.update(start + count);
  }
  progress.finish();

  SpliceMetrics m;
  m.n_pairs = n_pairs;
  m.hook_name = spec.out_site ? hook_name + " -> " + out_hook_name : hook_name;
  m.position = position;
  m.ce_clean = mean(ce[kClean]);
  m.ce_sae = mean(ce[kSae]);
  m.ce_zero_ablation = mean(ce[kZero]);
  m.ce_loss_score = ratio_or_nan(m.ce_zero_ablation - m.ce_sae, m.ce_zero_ablation - m.ce_clean);
  m.kl_sae = mean(kl[kSae]);
  m.kl_zero_ablation = mean(kl[kZero]);
  m.kl_div_score = ratio_or_nan(m.kl_zero_ablation - m.kl_sae, m.kl_zero_ablation);
  m.accuracy_clean = mean(correct[kClean]);
  m.accuracy_sae = mean(correct[kSae]);
  m.accuracy_zero_ablation = mean(correct[kZero]);
  return m;
}

}  // namespace husai
