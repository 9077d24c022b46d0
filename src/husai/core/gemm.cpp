// GCC 12 reports false -W(maybe-)uninitialized inside its own AVX-512 intrinsics when inlining Eigen's
// packet transpose (_mm256_undefined_pd is uninitialised by design); it surfaces in whichever file
// instantiates Eigen's GEMM, i.e. only here.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

#include "husai/core/gemm.hpp"

#include <Eigen/Core>
#include <algorithm>

#include "husai/core/eigen_blocking.hpp"
#include "husai/core/threading.hpp"

namespace husai {
namespace {

template <typename T>
using RowMat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <typename T>
using CMap = Eigen::Map<const RowMat<T>, Eigen::Unaligned, Eigen::OuterStride<>>;
template <typename T>
using MMap = Eigen::Map<RowMat<T>, Eigen::Unaligned, Eigen::OuterStride<>>;

// Tile edges, a function of the output shape only. Large enough that Eigen's packing is amortised;
// short outputs (the weight gradients, e.g. [128 x 512] summed over K = thousands of token rows) get
// narrower column tiles so that even [128 x 128] splits into tasks for several cores.
constexpr int64_t kTileRows = 256;
int64_t tile_cols(int64_t M) {
  return M <= kTileRows ? 64 : 128;
}

template <typename T>
void tile_product(bool trans_a, bool trans_b, int64_t r0, int64_t rn, int64_t c0, int64_t cn, int64_t K,
                  T alpha, const T* A, int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
  MMap<T> c(C + r0 * ldc + c0, rn, cn, Eigen::OuterStride<>(ldc));
  if (beta == T(0)) {
    c.setZero();
  } else if (beta != T(1)) {
    c *= beta;
  }
  if (K == 0) return;
  // op(A) rows r0..r0+rn: either rows of A or columns of A^T storage.
  if (!trans_a && !trans_b) {
    CMap<T> a(A + r0 * lda, rn, K, Eigen::OuterStride<>(lda));
    CMap<T> b(B + c0, K, cn, Eigen::OuterStride<>(ldb));
    c.noalias() += alpha * a * b;
  } else if (!trans_a && trans_b) {
    CMap<T> a(A + r0 * lda, rn, K, Eigen::OuterStride<>(lda));
    CMap<T> b(B + c0 * ldb, cn, K, Eigen::OuterStride<>(ldb));
    c.noalias() += alpha * a * b.transpose();
  } else if (trans_a && !trans_b) {
    CMap<T> a(A + r0, K, rn, Eigen::OuterStride<>(lda));
    CMap<T> b(B + c0, K, cn, Eigen::OuterStride<>(ldb));
    c.noalias() += alpha * a.transpose() * b;
  } else {
    CMap<T> a(A + r0, K, rn, Eigen::OuterStride<>(lda));
    CMap<T> b(B + c0 * ldb, cn, K, Eigen::OuterStride<>(ldb));
    c.noalias() += alpha * a.transpose() * b.transpose();
  }
}

}  // namespace

template <typename T>
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda,
          const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  fix_eigen_blocking();  // already done at start-up; kept so that no product can see the queried sizes
  const int64_t kTileCols = tile_cols(M);
  const int64_t tiles_m = (M + kTileRows - 1) / kTileRows;
  const int64_t tiles_n = (N + kTileCols - 1) / kTileCols;
  parallel_for(tiles_m * tiles_n, [&](int64_t t) {
    const int64_t tm = t / tiles_n;
    const int64_t tn = t % tiles_n;
    const int64_t r0 = tm * kTileRows;
    const int64_t c0 = tn * kTileCols;
    tile_product(trans_a, trans_b, r0, std::min(kTileRows, M - r0), c0, std::min(kTileCols, N - c0), K, alpha,
                 A, lda, B, ldb, beta, C, ldc);
  });
}

template <typename T>
void gemm_serial(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
                 int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  fix_eigen_blocking();
  tile_product(trans_a, trans_b, 0, M, 0, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

template <typename T>
void column_sums(const T* in, int64_t rows, int64_t cols, int64_t ld, T* out, bool accumulate) {
  constexpr int64_t kColChunk = 64;
  parallel_chunks(cols, kColChunk, [&](int64_t c0, int64_t c1) {
    for (int64_t j = c0; j < c1; ++j) {
      if (!accumulate) out[j] = T(0);
    }
    for (int64_t i = 0; i < rows; ++i) {
      const T* row = in + i * ld;
      for (int64_t j = c0; j < c1; ++j) out[j] += row[j];
    }
  });
}

template void gemm<float>(bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t, const float*,
                          int64_t, float, float*, int64_t);
template void gemm<double>(bool, bool, int64_t, int64_t, int64_t, double, const double*, int64_t,
                           const double*, int64_t, double, double*, int64_t);
template void gemm_serial<float>(bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t,
                                 const float*, int64_t, float, float*, int64_t);
template void gemm_serial<double>(bool, bool, int64_t, int64_t, int64_t, double, const double*, int64_t,
                                  const double*, int64_t, double, double*, int64_t);
template void column_sums<float>(const float*, int64_t, int64_t, int64_t, float*, bool);
template void column_sums<double>(const double*, int64_t, int64_t, int64_t, double*, bool);

}  // namespace husai
