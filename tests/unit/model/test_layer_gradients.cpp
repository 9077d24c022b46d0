// Finite-difference gradient checks (double precision) for every layer kind: each layer's backward
// pass is checked against the numerical derivative of loss = sum(R * forward(x)) for a random R.

#include <gtest/gtest.h>

#include <numeric>
#include <vector>

#include "gradcheck.hpp"
#include "husai/model/attention.hpp"
#include "husai/model/cross_entropy.hpp"
#include "husai/model/embed.hpp"
#include "husai/model/layernorm.hpp"
#include "husai/model/mlp.hpp"
#include "husai/model/unembed.hpp"

namespace husai {

// Readable parameter text in test listings (gtest would otherwise print the raw bytes). In namespace husai,
// not the anonymous one, so argument-dependent lookup finds it for husai::ActFn.
void PrintTo(ActFn act, std::ostream* os);
void PrintTo(ActFn act, std::ostream* os) {
  *os << to_string(act);
}

namespace {

using gradcheck::expect_gradient_matches;
using gradcheck::fill_normal;
using Vec = std::vector<double>;

double dot(const Vec& a, const Vec& b) {
  return std::inner_product(a.begin(), a.end(), b.begin(), 0.0);
}

TEST(LayerGradients, LayerNorm) {
  const int64_t N = 5, D = 8;
  Vec x(N * D), w(D), b(D), r(N * D);
  fill_normal(x, 1);
  fill_normal(w, 2);
  fill_normal(b, 3);
  fill_normal(r, 4);
  Vec out(N * D), mean(N), rstd(N);
  auto loss = [&] {
    layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), N, D, 1e-5);
    return dot(out, r);
  };
  loss();
  Vec dx(N * D, 0.0), dw(D, 0.0), db(D, 0.0);
  layernorm_backward(dx.data(), dw.data(), db.data(), r.data(), x.data(), mean.data(), rstd.data(), w.data(),
                     N, D);
  expect_gradient_matches("ln.x", loss, x.data(), dx.data(), N * D);
  expect_gradient_matches("ln.w", loss, w.data(), dw.data(), D);
  expect_gradient_matches("ln.b", loss, b.data(), db.data(), D);
}

TEST(LayerGradients, Embed) {
  const int64_t B = 3, n_ctx = 4, n_pos = 3, D = 5, V = 6;
  const std::vector<int64_t> tokens = {0, 5, 2, 1, 5, 5, 3, 0, 2, 1, 0, 4};
  Vec W_E(V * D), W_pos(n_ctx * D), r(B * n_pos * D);
  fill_normal(W_E, 1);
  fill_normal(W_pos, 2);
  fill_normal(r, 3);
  Vec out(B * n_pos * D);
  auto loss = [&] {
    embed_forward(out.data(), tokens.data(), n_ctx, W_E.data(), W_pos.data(), B, n_pos, D);
    return dot(out, r);
  };
  Vec dW_E(V * D, 0.0), dW_pos(n_ctx * D, 0.0);
  embed_backward(dW_E.data(), dW_pos.data(), r.data(), tokens.data(), n_ctx, B, n_pos, D);
  expect_gradient_matches("embed.W_E", loss, W_E.data(), dW_E.data(), V * D);
  expect_gradient_matches("embed.W_pos", loss, W_pos.data(), dW_pos.data(), n_ctx * D);
}

void check_attention(int64_t B, int64_t T, int64_t Q, int64_t D, int64_t H, int64_t E) {
  const int64_t HE = H * E;
  Vec x(B * T * D), W_Q(H * D * E), W_K(H * D * E), W_V(H * D * E), W_O(HE * D), b_Q(HE), b_K(HE), b_V(HE),
      b_O(D), r(B * Q * D);
  fill_normal(x, 1);
  fill_normal(W_Q, 2, 0.5);
  fill_normal(W_K, 3, 0.5);
  fill_normal(W_V, 4, 0.5);
  fill_normal(W_O, 5, 0.5);
  fill_normal(b_Q, 6, 0.3);
  fill_normal(b_K, 7, 0.3);
  fill_normal(b_V, 8, 0.3);
  fill_normal(b_O, 9, 0.3);
  fill_normal(r, 10);
  Vec w_q(D * HE), w_kv(D * 2 * HE), x_q(B * Q * D), q(B * Q * HE), kv(B * T * 2 * HE),
      pattern(B * H * Q * T), z(B * Q * HE), out(B * Q * D);
  AttentionActs<double> acts{w_q.data(), w_kv.data(),    x_q.data(), q.data(),
                             kv.data(),  pattern.data(), z.data()};
  const AttentionWeights<double> w{W_Q.data(), W_K.data(), W_V.data(), W_O.data(),
                                   b_Q.data(), b_K.data(), b_V.data(), b_O.data()};
  const AttentionDims dims{B, T, Q, D, H, E};
  auto loss = [&] {
    attention_forward(out.data(), acts, x.data(), w, dims);
    return dot(out, r);
  };
  loss();
  Vec dx(B * T * D, 0.0), dW_Q(H * D * E, 0.0), dW_K(H * D * E, 0.0), dW_V(H * D * E, 0.0), dW_O(HE * D, 0.0),
      db_Q(HE, 0.0), db_K(HE, 0.0), db_V(HE, 0.0), db_O(D, 0.0);
  Vec dz(B * Q * HE), dq(B * Q * HE), dkv(B * T * 2 * HE), dx_q(B * Q * D), dw_q(D * HE), dw_kv(D * 2 * HE);
  AttentionScratch<double> scratch{dz.data(), dq.data(), dkv.data(), dx_q.data(), dw_q.data(), dw_kv.data()};
  attention_backward(dx.data(),
                     AttentionGrads<double>{dW_Q.data(), dW_K.data(), dW_V.data(), dW_O.data(), db_Q.data(),
                                            db_K.data(), db_V.data(), db_O.data()},
                     scratch, r.data(), acts, x.data(), w, dims);
  expect_gradient_matches("attn.x", loss, x.data(), dx.data(), B * T * D);
  expect_gradient_matches("attn.W_Q", loss, W_Q.data(), dW_Q.data(), H * D * E);
  expect_gradient_matches("attn.W_K", loss, W_K.data(), dW_K.data(), H * D * E);
  expect_gradient_matches("attn.W_V", loss, W_V.data(), dW_V.data(), H * D * E);
  expect_gradient_matches("attn.W_O", loss, W_O.data(), dW_O.data(), HE * D);
  expect_gradient_matches("attn.b_Q", loss, b_Q.data(), db_Q.data(), HE);
  expect_gradient_matches("attn.b_K", loss, b_K.data(), db_K.data(), HE);
  expect_gradient_matches("attn.b_V", loss, b_V.data(), db_V.data(), HE);
  expect_gradient_matches("attn.b_O", loss, b_O.data(), db_O.data(), D);
}

TEST(LayerGradients, AttentionAllQueries) {
  check_attention(2, 4, 4, 6, 2, 3);
}
TEST(LayerGradients, AttentionLastQueryOnly) {
  check_attention(3, 5, 1, 6, 3, 2);
}

class MlpGradients : public ::testing::TestWithParam<ActFn> {};

TEST_P(MlpGradients, AllTensors) {
  const ActFn act = GetParam();
  const int64_t N = 4, D = 5, M = 7;
  Vec x(N * D), W_in(D * M), b_in(M), W_out(M * D), b_out(D), r(N * D);
  fill_normal(x, 1);
  fill_normal(W_in, 2, 0.7);
  fill_normal(b_in, 3, 0.5);
  fill_normal(W_out, 4, 0.7);
  fill_normal(b_out, 5);
  fill_normal(r, 6);
  Vec out(N * D), pre(N * M), post(N * M);
  const MlpWeights<double> w{W_in.data(), b_in.data(), W_out.data(), b_out.data()};
  auto loss = [&] {
    mlp_forward(out.data(), pre.data(), post.data(), x.data(), w, act, N, D, M);
    return dot(out, r);
  };
  loss();
  Vec dx(N * D, 0.0), dW_in(D * M, 0.0), db_in(M, 0.0), dW_out(M * D, 0.0), db_out(D, 0.0), dpre(N * M);
  mlp_backward(dx.data(), MlpGrads<double>{dW_in.data(), db_in.data(), dW_out.data(), db_out.data()},
               dpre.data(), r.data(), x.data(), pre.data(), post.data(), w, act, N, D, M);
  const std::string name = "mlp(" + to_string(act) + ")";
  expect_gradient_matches(name + ".x", loss, x.data(), dx.data(), N * D);
  expect_gradient_matches(name + ".W_in", loss, W_in.data(), dW_in.data(), D * M);
  expect_gradient_matches(name + ".b_in", loss, b_in.data(), db_in.data(), M);
  expect_gradient_matches(name + ".W_out", loss, W_out.data(), dW_out.data(), M * D);
  expect_gradient_matches(name + ".b_out", loss, b_out.data(), db_out.data(), D);
}

INSTANTIATE_TEST_SUITE_P(AllActivations, MlpGradients,
                         ::testing::Values(ActFn::Relu, ActFn::Gelu, ActFn::GeluNew, ActFn::GeluFast,
                                           ActFn::Silu),
                         [](const auto& param_info) { return to_string(param_info.param); });

TEST(LayerGradients, Unembed) {
  const int64_t N = 3, D = 4, V = 6;
  Vec x(N * D), W_U(D * V), b_U(V), r(N * V), logits(N * V);
  fill_normal(x, 1);
  fill_normal(W_U, 2);
  fill_normal(b_U, 3);
  fill_normal(r, 4);
  auto loss = [&] {
    unembed_forward(logits.data(), x.data(), W_U.data(), b_U.data(), N, D, V);
    return dot(logits, r);
  };
  Vec dx(N * D, 0.0), dW_U(D * V, 0.0), db_U(V, 0.0);
  unembed_backward(dx.data(), dW_U.data(), db_U.data(), r.data(), x.data(), W_U.data(), N, D, V);
  expect_gradient_matches("unembed.x", loss, x.data(), dx.data(), N * D);
  expect_gradient_matches("unembed.W_U", loss, W_U.data(), dW_U.data(), D * V);
  expect_gradient_matches("unembed.b_U", loss, b_U.data(), db_U.data(), V);
}

TEST(LayerGradients, CrossEntropy) {
  const int64_t N = 4, V = 5;
  Vec logits(N * V);
  fill_normal(logits, 1, 2.0);
  const std::vector<int64_t> labels = {0, 4, 2, 2};
  Vec losses(N);
  auto loss = [&] {
    cross_entropy_forward_backward<double>(losses.data(), nullptr, nullptr, logits.data(), labels.data(), N,
                                           V, 0.0);
    return std::accumulate(losses.begin(), losses.end(), 0.0) / static_cast<double>(N);
  };
  Vec dlogits(N * V);
  cross_entropy_forward_backward<double>(losses.data(), nullptr, dlogits.data(), logits.data(), labels.data(),
                                         N, V, 1.0 / static_cast<double>(N));
  expect_gradient_matches("ce.logits", loss, logits.data(), dlogits.data(), N * V);
}

TEST(LayerGradients, CrossEntropyValueByHand) {
  // logits [0, ln 3] and label 1: p = 3/4, loss = ln(4/3).
  const std::vector<double> logits = {0.0, std::log(3.0)};
  const std::vector<int64_t> labels = {1};
  double loss = 0;
  uint8_t correct = 0;
  cross_entropy_forward_backward<double>(&loss, &correct, nullptr, logits.data(), labels.data(), 1, 2, 1.0);
  EXPECT_NEAR(loss, std::log(4.0 / 3.0), 1e-15);
  EXPECT_EQ(correct, 1);
}

}  // namespace
}  // namespace husai
