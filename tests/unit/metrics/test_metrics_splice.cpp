// CE / KL scores with a reconstruction spliced into a tiny random transformer: identity and zero
// reconstructions give the exact end points, the three runs match an independent double-precision forward
// (full sequence, hand-written hook), the callback sees exactly the rows `husai extract` writes, and the
// numbers do not depend on the thread count.

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <vector>

#include "husai/core/error.hpp"
#include "husai/core/threading.hpp"
#include "husai/io/safetensors.hpp"
#include "husai/metrics/splice.hpp"
#include "husai/model/cross_entropy.hpp"
#include "husai/model/extract.hpp"
#include "husai/model/params.hpp"

namespace husai {
namespace {

LoadedModel tiny_model(TokenFormat format, int64_t n_layers, uint64_t seed) {
  LoadedModel m;
  m.task.modulus = 7;
  m.task.format = format;
  m.cfg.n_layers = n_layers;
  m.cfg.d_model = 8;
  m.cfg.n_heads = 2;
  m.cfg.d_head = 4;
  m.cfg.d_mlp = 16;
  m.cfg.d_vocab = m.task.d_vocab();
  m.cfg.n_ctx = m.task.n_ctx();
  m.layout = make_param_layout(m.cfg);
  m.params.resize(static_cast<size_t>(m.layout.total));
  // A larger init than gpt2's so that the random model's answers depend visibly on its activations.
  init_params(m.layout, m.params.data(), seed, 1.0);
  return m;
}

struct Case {
  const char* name;
  TokenFormat format;
  int64_t layer;
  HookSite site;
  const char* position;
};

const Case kCases[] = {
    {"last_resid_post_answer", TokenFormat::Seq7, -1, HookSite::ResidPost, "answer"},
    {"layer0_resid_post_pos2", TokenFormat::Seq7, 0, HookSite::ResidPost, "2"},
    {"layer0_mlp_out_answer", TokenFormat::Seq7, 0, HookSite::MlpOut, "answer"},
    {"last_resid_pre_pos1", TokenFormat::Seq7, 1, HookSite::ResidPre, "1"},
    {"layer0_attn_out_neg4", TokenFormat::Seq7, 0, HookSite::AttnOut, "-4"},  // index 3, the b token
    {"abeq_last_resid_mid_answer", TokenFormat::Abeq, 1, HookSite::ResidMid, "answer"},
    {"abeq_layer0_resid_post_pos0", TokenFormat::Abeq, 0, HookSite::ResidPost, "0"},
};

// Readable parameter text in test listings (gtest would otherwise print the raw bytes).
void PrintTo(const Case& c, std::ostream* os) {
  *os << c.name;
}

class Splice : public ::testing::TestWithParam<Case> {
 protected:
  LoadedModel model = tiny_model(GetParam().format, 2, 11);
  SpliceSpec spec() const {
    SpliceSpec s;
    s.layer = GetParam().layer;
    s.site = GetParam().site;
    s.position = GetParam().position;
    s.batch_size = 20;  // several batches, the last one short
    return s;
  }
};

const ReconstructFn kIdentity = [](const float* x, int64_t n, float* out) { std::copy_n(x, n * 8, out); };
const ReconstructFn kZero = [](const float*, int64_t n, float* out) { std::fill_n(out, n * 8, 0.0f); };
// Something in between: a per-dimension scale and shift (a uniform one would be invisible through LayerNorm).
template <typename T>
T blur(T value, int64_t dim) {
  return value * static_cast<T>(0.4 + 0.15 * static_cast<double>(dim)) +
         static_cast<T>(0.05 * static_cast<double>(dim));
}
const ReconstructFn kBlur = [](const float* x, int64_t n, float* out) {
  for (int64_t i = 0; i < n * 8; ++i) out[i] = blur(x[i], i % 8);
};

TEST_P(Splice, IdentityReconstructionIsTheCleanModel) {
  const SpliceMetrics m = splice_metrics(model, spec(), kIdentity);
  EXPECT_EQ(m.n_pairs, 49);
  EXPECT_EQ(m.ce_sae, m.ce_clean);
  EXPECT_EQ(m.ce_loss_score, 1.0);
  EXPECT_EQ(m.kl_sae, 0.0);
  EXPECT_EQ(m.kl_div_score, 1.0);
  EXPECT_EQ(m.accuracy_sae, m.accuracy_clean);
  // The ablation does something, so the scores above are not 0/0 luck.
  EXPECT_GT(std::abs(m.ce_zero_ablation - m.ce_clean), 1e-4);
  EXPECT_GT(m.kl_zero_ablation, 1e-6);
}

TEST_P(Splice, ZeroReconstructionIsTheZeroAblation) {
  const SpliceMetrics m = splice_metrics(model, spec(), kZero);
  EXPECT_EQ(m.ce_sae, m.ce_zero_ablation);
  EXPECT_EQ(m.ce_loss_score, 0.0);
  EXPECT_EQ(m.kl_sae, m.kl_zero_ablation);
  EXPECT_EQ(m.kl_div_score, 0.0);
  EXPECT_EQ(m.accuracy_sae, m.accuracy_zero_ablation);
}

// Independent oracle: the model in double precision over the whole sequence (never the answer-only path),
// with a hook written here that replaces the one position; CE via cross_entropy_forward_backward, KL by hand.
struct Oracle {
  double ce[3] = {0, 0, 0}, kl[3] = {0, 0, 0}, acc[3] = {0, 0, 0};
};

Oracle oracle(const LoadedModel& model, int64_t layer, HookSite site, int64_t position) {
  const TransformerConfig& cfg = model.cfg;
  const int64_t D = cfg.d_model, V = cfg.d_vocab, T = cfg.n_ctx, N = model.task.n_pairs();
  const int64_t answer = model.task.answer_position();
  std::vector<double> params(model.params.begin(), model.params.end());
  const ParamViews<double> pv = make_views(cfg, model.layout, params.data());
  const std::vector<int64_t> tokens = model.task.tokens();
  const std::vector<int64_t> labels = model.task.labels();
  Oracle out;
  std::vector<double> log_probs[3];
  for (int run = 0; run < 3; ++run) {
    const HookFn<double> hook = [&](int64_t l, HookSite s, double* acts, int64_t B, int64_t n_pos,
                                    int64_t first) {
      ASSERT_EQ(n_pos, T);
      ASSERT_EQ(first, 0);
      if (l != layer || s != site || run == 0) return;
      for (int64_t b = 0; b < B; ++b) {
        double* row = acts + (b * T + position) * D;
        for (int64_t d = 0; d < D; ++d) row[d] = run == 1 ? blur(row[d], d) : 0.0;
      }
    };
    TransformerWorkspace<double> ws;
    transformer_forward(cfg, pv, ws, tokens.data(), N, T, T, &hook);
    std::vector<double> answer_logits(static_cast<size_t>(N * V));
    for (int64_t b = 0; b < N; ++b) {
      std::copy_n(ws.logits.data() + (b * T + answer) * V, V, answer_logits.data() + b * V);
    }
    std::vector<double> losses(static_cast<size_t>(N));
    std::vector<uint8_t> correct(static_cast<size_t>(N));
    cross_entropy_forward_backward<double>(losses.data(), correct.data(), nullptr, answer_logits.data(),
                                           labels.data(), N, V, 0.0);
    log_probs[run].resize(answer_logits.size());
    for (int64_t b = 0; b < N; ++b) {
      const auto ub = static_cast<size_t>(b);
      out.ce[run] += losses[ub] / static_cast<double>(N);
      out.acc[run] += correct[ub] / static_cast<double>(N);
      double z_max = -1e300, sum = 0;
      for (int64_t v = 0; v < V; ++v) z_max = std::max(z_max, answer_logits[static_cast<size_t>(b * V + v)]);
      for (int64_t v = 0; v < V; ++v) sum += std::exp(answer_logits[static_cast<size_t>(b * V + v)] - z_max);
      for (int64_t v = 0; v < V; ++v) {
        const auto i = static_cast<size_t>(b * V + v);
        log_probs[run][i] = answer_logits[i] - z_max - std::log(sum);
      }
      if (run > 0) {
        for (int64_t v = 0; v < V; ++v) {
          const auto i = static_cast<size_t>(b * V + v);
          out.kl[run] +=
              std::exp(log_probs[0][i]) * (log_probs[0][i] - log_probs[run][i]) / static_cast<double>(N);
        }
      }
    }
  }
  return out;
}

TEST_P(Splice, MatchesAnIndependentDoubleForward) {
  const SpliceSpec s = spec();
  const int64_t layer = s.layer < 0 ? model.cfg.n_layers + s.layer : s.layer;
  const Oracle o = oracle(model, layer, s.site, resolve_splice_position(model, s));
  const SpliceMetrics m = splice_metrics(model, s, kBlur);
  EXPECT_NEAR(m.ce_clean, o.ce[0], 1e-5);
  EXPECT_NEAR(m.ce_sae, o.ce[1], 1e-5);
  EXPECT_NEAR(m.ce_zero_ablation, o.ce[2], 1e-5);
  EXPECT_NEAR(m.kl_sae, o.kl[1], 3e-6);
  EXPECT_NEAR(m.kl_zero_ablation, o.kl[2], 3e-6);
  EXPECT_NEAR(m.ce_loss_score, (o.ce[2] - o.ce[1]) / (o.ce[2] - o.ce[0]), 1e-4);
  EXPECT_NEAR(m.kl_div_score, (o.kl[2] - o.kl[1]) / o.kl[2], 1e-4);
  // Accuracies are counts over 49 pairs; a float/double tie flip would move one by 1/49.
  EXPECT_NEAR(m.accuracy_clean, o.acc[0], 1.5 / 49);
  EXPECT_NEAR(m.accuracy_sae, o.acc[1], 1.5 / 49);
  EXPECT_NEAR(m.accuracy_zero_ablation, o.acc[2], 1.5 / 49);
  EXPECT_GT(std::abs(m.ce_sae - m.ce_clean), 1e-4);  // the blur does change the answer distribution
}

// The callback is fed the clean activations in pair order: exactly the rows `husai extract` writes.
TEST_P(Splice, CallbackSeesTheExtractedRows) {
  const std::filesystem::path dir =
      std::filesystem::path(::testing::TempDir()) / (std::string("husai_splice_") + GetParam().name);
  std::filesystem::create_directories(dir);
  model.dir = dir.string();
  ExtractSpec es;
  es.layer = GetParam().layer;
  es.site = GetParam().site;
  es.position = GetParam().position;
  es.batch_size = 20;
  const std::string path = (dir / "acts.safetensors").string();
  extract_activations(model, es, path, true);
  const SafetensorsFile file = SafetensorsFile::load(path);
  const std::vector<float> rows = file.get("activations").to_f32();

  std::vector<float> seen;
  const ReconstructFn record = [&](const float* x, int64_t n, float* out) {
    seen.insert(seen.end(), x, x + n * 8);
    std::copy_n(x, n * 8, out);
  };
  const SpliceSpec from_file = splice_spec_from_metadata(file.metadata);
  EXPECT_EQ(resolve_splice_position(model, from_file), resolve_splice_position(model, spec()));
  SpliceSpec s = from_file;
  s.batch_size = 20;
  splice_metrics(model, s, record);
  ASSERT_EQ(seen.size(), rows.size());
  EXPECT_EQ(std::memcmp(seen.data(), rows.data(), rows.size() * sizeof(float)), 0);
  std::filesystem::remove_all(dir);
}

bool same_bits(double a, double b) {
  return std::memcmp(&a, &b, sizeof a) == 0;
}

TEST_P(Splice, SameBitsWithOneAndTwoThreads) {
  const int saved = num_threads();
  set_num_threads(1);
  const nlohmann::json one = splice_metrics(model, spec(), kBlur).to_json();
  set_num_threads(2);
  const SpliceMetrics two_m = splice_metrics(model, spec(), kBlur);
  set_num_threads(saved);
  const nlohmann::json two = two_m.to_json();
  for (const auto& item : one.items()) {
    if (item.value().is_number_float()) {
      EXPECT_TRUE(same_bits(item.value().get<double>(), two.at(item.key()).get<double>())) << item.key();
    } else {
      EXPECT_EQ(item.value(), two.at(item.key())) << item.key();
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Sites, Splice, ::testing::ValuesIn(kCases),
                         [](const ::testing::TestParamInfo<Case>& param_info) {
                           return std::string(param_info.param.name);
                         });

TEST(SpliceSpecs, PositionsThatCannotReachTheAnswerAreRefused) {
  const LoadedModel model = tiny_model(TokenFormat::Seq7, 2, 3);
  SpliceSpec s;
  s.position = "5";  // after '='
  EXPECT_FALSE(splice_affects_answer(model, s));
  EXPECT_THROW(splice_metrics(model, s, kIdentity), Error);
  s.position = "2";  // last block's output at a non-answer position only feeds that position's logits
  s.layer = 1;
  s.site = HookSite::ResidPost;
  EXPECT_FALSE(splice_affects_answer(model, s));
  EXPECT_THROW(splice_metrics(model, s, kIdentity), Error);
  s.site = HookSite::ResidPre;  // but its input does, through attention
  EXPECT_TRUE(splice_affects_answer(model, s));
  s.position = "all";
  EXPECT_THROW(splice_metrics(model, s, kIdentity), Error);
  s.position = "7";
  EXPECT_THROW(splice_metrics(model, s, kIdentity), Error);
  s.position = "2x";
  EXPECT_THROW(splice_metrics(model, s, kIdentity), Error);
  s.position = "answer";
  s.layer = 2;
  EXPECT_THROW(splice_metrics(model, s, kIdentity), Error);
  s.layer = -3;
  EXPECT_THROW(splice_metrics(model, s, kIdentity), Error);
  s.layer = -2;
  s.batch_size = 0;
  EXPECT_THROW(splice_metrics(model, s, kIdentity), Error);
}

TEST(SpliceSpecs, FromMetadata) {
  const SpliceSpec s =
      splice_spec_from_metadata({{"layer", "0"}, {"site", "mlp_out"}, {"position", "answer"}});
  EXPECT_EQ(s.layer, 0);
  EXPECT_EQ(s.site, HookSite::MlpOut);
  EXPECT_EQ(s.position, "answer");
  EXPECT_THROW(splice_spec_from_metadata({{"layer", "0"}, {"site", "mlp_out"}, {"position", "all"}}), Error);
  EXPECT_THROW(splice_spec_from_metadata({{"layer", "0"}, {"site", "mlp_out"}}), Error);
  EXPECT_THROW(splice_spec_from_metadata({{"layer", "x"}, {"site", "mlp_out"}, {"position", "2"}}), Error);
  EXPECT_THROW(splice_spec_from_metadata({{"layer", "0"}, {"site", "mlp"}, {"position", "2"}}), Error);
}

TEST(SpliceSpecs, JsonKeys) {
  const LoadedModel model = tiny_model(TokenFormat::Seq7, 1, 5);
  const nlohmann::json j = splice_metrics(model, SpliceSpec{}, kBlur).to_json();
  for (const char* key :
       {"n_pairs", "ce_clean", "ce_sae", "ce_zero_ablation", "ce_loss_score", "kl_sae", "kl_zero_ablation",
        "kl_div_score", "accuracy_clean", "accuracy_sae", "accuracy_zero_ablation"}) {
    EXPECT_TRUE(j.contains(key)) << key;
  }
  EXPECT_EQ(j.size(), 11u);
  EXPECT_EQ(j.at("n_pairs"), 49);
}

}  // namespace
}  // namespace husai
