// SAE kernels: the encoder GEMM (husai tiled gemm, and as TopK training blocks it) vs one plain
// (single-threaded, EIGEN_DONT_PARALLELIZE) Eigen sgemm of the same shape in the same run, and a whole TopK
// training step (forward, AuxK off, every gradient) at d_in 128, d_sae 1024, k 32, batch 4096; and a relu
// training step at the same size and L0 about 32, sparse path against the dense reference.

// Instantiates Eigen's GEMM directly: the same GCC 12 false -W(maybe-)uninitialized inside AVX-512 intrinsics
// that src/husai/core/gemm.cpp documents.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

#include <benchmark/benchmark.h>

#include <Eigen/Core>
#include <vector>

#include "husai/core/gemm.hpp"
#include "husai/core/rng.hpp"
#include "husai/core/threading.hpp"
#include "husai/sae/architecture.hpp"
#include "husai/sae/dense_path.hpp"
#include "husai/sae/encoder_kernel.hpp"
#include "husai/sae/sae.hpp"

namespace {

constexpr int64_t kB = 4096, kD = 128, kL = 1024, kK = 32;

std::vector<float> normal(int64_t n, uint64_t seed) {
  const husai::Philox rng(seed, 1);
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    v[static_cast<size_t>(i)] = static_cast<float>(rng.normal(static_cast<uint64_t>(i)));
  return v;
}

// GFLOP/s of the encoder product [kB x D] x [D x L] over the iterations run.
void set_flops(benchmark::State& state, int64_t D, int64_t L) {
  state.counters["GFLOP/s"] = benchmark::Counter(
      2.0 * kB * D * L * static_cast<double>(state.iterations()) * 1e-9, benchmark::Counter::kIsRate);
}

void BM_EncoderGemm_husai(benchmark::State& state) {
  const std::vector<float> x = normal(kB * kD, 1), w = normal(kD * kL, 2);
  std::vector<float> z(static_cast<size_t>(kB * kL));
  for (auto _ : state) {
    husai::gemm<float>(false, false, kB, kL, kD, 1.0f, x.data(), kD, w.data(), kL, 0.0f, z.data(), kL);
    benchmark::DoNotOptimize(z.data());
  }
  set_flops(state, kD, kL);
  state.counters["threads"] = husai::num_threads();
}
BENCHMARK(BM_EncoderGemm_husai)->Unit(benchmark::kMillisecond)->UseRealTime();

// The encoder product as TopK training runs it (src/husai/sae/topk.cpp, encode_select_topk): W_enc packed
// into latent panels once (counted), then fixed 64-row blocks, each one single-threaded call of the encoder
// kernel (src/husai/sae/encoder_kernel.hpp), the blocks in parallel (the selection that follows each block is
// left out here).
template <int64_t D, int64_t L>
void BM_EncoderTopkBlocks(benchmark::State& state) {
  constexpr int64_t kBlockRows = 64;
  const std::vector<float> x = normal(kB * D, 1), w = normal(D * L, 2), b(L, 0.0f);
  std::vector<float> z(static_cast<size_t>(kB * L)), pw, pb;
  for (auto _ : state) {
    const auto panels = husai::sae_detail::pack_encoder_panels(w.data(), b.data(), D, L, pw, pb);
    husai::parallel_chunks(kB, kBlockRows, [&](int64_t r0, int64_t r1) {
      husai::sae_detail::encoder_block(panels, x.data() + r0 * D, r1 - r0, z.data() + r0 * L, L);
    });
    benchmark::DoNotOptimize(z.data());
  }
  set_flops(state, D, L);
  state.counters["threads"] = husai::num_threads();
}

// The same product as one plain single-threaded Eigen sgemm (EIGEN_DONT_PARALLELIZE).
template <int64_t D, int64_t L>
void BM_EncoderEigenSgemm(benchmark::State& state) {
  using M = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const std::vector<float> xv = normal(kB * D, 1), wv = normal(D * L, 2);
  const Eigen::Map<const M> x(xv.data(), kB, D), w(wv.data(), D, L);
  M z(kB, L);
  for (auto _ : state) {
    z.noalias() = x * w;
    benchmark::DoNotOptimize(z.data());
  }
  set_flops(state, D, L);
  state.counters["threads"] = 1;
}

BENCHMARK(BM_EncoderTopkBlocks<kD, kL>)
    ->Name("BM_EncoderGemm_husai_topk_blocks")
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_EncoderEigenSgemm<kD, kL>)
    ->Name("BM_EncoderGemm_EigenSgemm")
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// At a language-model size, d_in 768 -> d_sae 16,384, batch 4,096 (103 GFLOP per product).
constexpr int64_t kBigD = 768, kBigL = 16384;
BENCHMARK(BM_EncoderTopkBlocks<kBigD, kBigL>)
    ->Name("BM_EncoderGemmBig_husai_topk_blocks")
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()
    ->Iterations(3);
BENCHMARK(BM_EncoderEigenSgemm<kBigD, kBigL>)
    ->Name("BM_EncoderGemmBig_EigenSgemm")
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()
    ->Iterations(2);

void BM_TopKTrainStep(benchmark::State& state) {
  husai::SaeConfig cfg;
  cfg.arch = &husai::sae_architecture("topk");
  cfg.d_in = kD;
  cfg.d_sae = kL;
  cfg.k = kK;
  const husai::SaeLayout layout = husai::make_sae_layout(cfg);
  std::vector<float> params(static_cast<size_t>(layout.total)), grads(params.size());
  husai::init_sae_params(cfg, layout, params.data(), 42, std::vector<float>(kD, 0.0f));
  const std::vector<float> x = normal(kB * kD, 3);
  husai::SaeWorkspace<float> ws;
  const husai::SaeBatch<float> batch{x.data(), kB, 1, nullptr};
  for (auto _ : state) {
    benchmark::DoNotOptimize(
        husai::sae_loss_backward<float>(cfg, layout, params.data(), grads.data(), batch, ws));
  }
  state.counters["samples/s"] =
      benchmark::Counter(static_cast<double>(kB * state.iterations()), benchmark::Counter::kIsRate);
  state.counters["threads"] = husai::num_threads();
}
BENCHMARK(BM_TopKTrainStep)->Unit(benchmark::kMillisecond)->UseRealTime();

// relu and jumprelu at the same size with L0 about 32 (b_enc = -1.86: with unit encoder columns and x ~ N(0,
// I) a pre-activation is N(0, 1), so P(z > 1.86) = 3.1%, 32 of 1,024; jumprelu's threshold is 0.001 above 0
// with bandwidth 0.001, as at initialisation): the training path (sparse after the encoder product) against
// the dense reference it replaced (relu_loss_backward_dense, jumprelu_loss_backward_dense), side by side.
template <bool kJump, bool kDense>
void BM_ThresholdTrainStep(benchmark::State& state) {
  husai::SaeConfig cfg;
  cfg.arch = &husai::sae_architecture(kJump ? "jumprelu" : "relu");
  cfg.d_in = kD;
  cfg.d_sae = kL;
  const husai::SaeLayout layout = husai::make_sae_layout(cfg);
  std::vector<float> params(static_cast<size_t>(layout.total)), grads(params.size());
  husai::init_sae_params(cfg, layout, params.data(), 42, std::vector<float>(kD, 0.0f));
  for (int64_t i = 0; i < kL; ++i) params[static_cast<size_t>(layout.b_enc + i)] = -1.86f;
  const std::vector<float> x = normal(kB * kD, 3);
  husai::SaeWorkspace<float> ws;
  const husai::SaeBatch<float> batch{x.data(), kB, 1, nullptr};
  const husai::SaeView<const float> p =
      husai::make_sae_view(layout, static_cast<const float*>(params.data()));
  const husai::SaeView<float> g = husai::make_sae_view(layout, grads.data());
  double l0 = 0;
  for (auto _ : state) {
    husai::SaeLossParts r;
    if constexpr (!kDense) {
      r = husai::sae_loss_backward<float>(cfg, layout, params.data(), grads.data(), batch, ws);
    } else if constexpr (kJump) {
      r = husai::sae_detail::jumprelu_loss_backward_dense<float>(cfg, p, &g, batch, ws);
    } else {
      r = husai::sae_detail::relu_loss_backward_dense<float>(cfg, p, &g, batch, ws);
    }
    l0 = r.l0;
    benchmark::DoNotOptimize(grads.data());
  }
  state.counters["samples/s"] =
      benchmark::Counter(static_cast<double>(kB * state.iterations()), benchmark::Counter::kIsRate);
  state.counters["l0"] = l0;
  state.counters["threads"] = husai::num_threads();
}
BENCHMARK(BM_ThresholdTrainStep<false, false>)
    ->Name("BM_ReluTrainStep_sparse")
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_ThresholdTrainStep<false, true>)
    ->Name("BM_ReluTrainStep_dense")
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_ThresholdTrainStep<true, false>)
    ->Name("BM_JumpReluTrainStep_sparse")
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_ThresholdTrainStep<true, true>)
    ->Name("BM_JumpReluTrainStep_dense")
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace
