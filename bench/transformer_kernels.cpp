// Google Benchmark kernels for the transformer: husai's deterministic tiled GEMM against a plain
// single-call Eigen product of the same shape (measured in the same run), and one full training step
// of the default model (forward + backward + AdamW) at batch 512.

// GCC 12's false -W(maybe-)uninitialized inside Eigen's AVX-512 GEMM kernels; see src/husai/core/gemm.cpp.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

#include <benchmark/benchmark.h>

#include <Eigen/Core>
#include <vector>

#include "husai/core/gemm.hpp"
#include "husai/core/rng.hpp"
#include "husai/core/tensor.hpp"
#include "husai/core/threading.hpp"
#include "husai/data/modular_arithmetic.hpp"
#include "husai/model/cross_entropy.hpp"
#include "husai/model/params.hpp"
#include "husai/model/transformer.hpp"
#include "husai/train/adamw.hpp"

namespace {

using husai::MatrixRf;

MatrixRf random_matrix(int64_t rows, int64_t cols, uint64_t seed) {
  MatrixRf m(rows, cols);
  const husai::Philox rng(seed, 1);
  for (int64_t i = 0; i < m.size(); ++i)
    m.data()[i] = static_cast<float>(rng.normal(static_cast<uint64_t>(i)));
  return m;
}

// Shapes from the default model at batch 512 (2560 token rows): the MLP's input projection.
void BM_TiledGemm(benchmark::State& state) {
  const int64_t M = state.range(0), N = state.range(1), K = state.range(2);
  const MatrixRf a = random_matrix(M, K, 1), b = random_matrix(K, N, 2);
  MatrixRf c(M, N);
  for (auto _ : state) {
    husai::gemm<float>(false, false, M, N, K, 1.0f, a.data(), K, b.data(), N, 0.0f, c.data(), N);
    benchmark::DoNotOptimize(c.data());
  }
  state.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * static_cast<double>(M * N * K), benchmark::Counter::kIsIterationInvariantRate,
                         benchmark::Counter::kIs1000);
}
BENCHMARK(BM_TiledGemm)->Args({2560, 512, 128})->Args({4096, 1024, 128})->UseRealTime();

// Eigen's own product in one call (single-threaded: husai builds with EIGEN_DONT_PARALLELIZE), the
// per-core peak the tiles are measured against.
void BM_EigenGemmOneCore(benchmark::State& state) {
  const int64_t M = state.range(0), N = state.range(1), K = state.range(2);
  const MatrixRf a = random_matrix(M, K, 1), b = random_matrix(K, N, 2);
  MatrixRf c(M, N);
  for (auto _ : state) {
    c.noalias() = a * b;
    benchmark::DoNotOptimize(c.data());
  }
  state.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * static_cast<double>(M * N * K), benchmark::Counter::kIsIterationInvariantRate,
                         benchmark::Counter::kIs1000);
}
BENCHMARK(BM_EigenGemmOneCore)->Args({2560, 512, 128})->Args({4096, 1024, 128})->UseRealTime();

void BM_TransformerTrainStep(benchmark::State& state) {
  husai::ModularTask task;
  husai::TransformerConfig cfg;
  cfg.d_vocab = task.d_vocab();
  cfg.n_ctx = task.n_ctx();
  const husai::ParamLayout layout = husai::make_param_layout(cfg);
  std::vector<float> params(static_cast<size_t>(layout.total)), grads(params.size()), m(params.size()),
      v(params.size());
  husai::init_params(layout, params.data(), 0, 0.8 / std::sqrt(128.0));
  const int64_t B = state.range(0);
  const std::vector<int64_t> all = task.tokens(), all_labels = task.labels();
  std::vector<int64_t> tokens(all.begin(), all.begin() + B * cfg.n_ctx),
      labels(all_labels.begin(), all_labels.begin() + B);
  husai::TransformerWorkspace<float> ws;
  std::vector<float> losses(static_cast<size_t>(B)), dlogits(static_cast<size_t>(B * cfg.d_vocab));
  const husai::AdamWConfig adamw;
  int64_t step = 0;
  for (auto _ : state) {
    const auto pv = husai::make_views(cfg, layout, params.data());
    husai::transformer_forward(cfg, pv, ws, tokens.data(), B, task.answer_position() + 1, 1);
    husai::cross_entropy_forward_backward(losses.data(), nullptr, dlogits.data(), ws.logits.data(),
                                          labels.data(), B, cfg.d_vocab, 1.0f / static_cast<float>(B));
    std::fill(grads.begin(), grads.end(), 0.0f);
    husai::transformer_backward(cfg, pv, husai::make_views(cfg, layout, grads.data()), ws, tokens.data(),
                                dlogits.data());
    husai::adamw_step(params.data(), grads.data(), m.data(), v.data(), layout.total, ++step, 1e-3, adamw);
  }
  state.counters["samples/s"] =
      benchmark::Counter(static_cast<double>(B), benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_TransformerTrainStep)->Arg(512)->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace
