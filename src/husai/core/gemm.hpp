#pragma once

#include <cstdint>

namespace husai {

// C[M,N] = alpha * op(A) op(B) + beta * C, all row-major with leading dimensions (elements per row).
// op(A) is A [M,K] or, with trans_a, A^T where A is stored [K,M]; likewise B.
//
// C is cut into fixed tiles (sizes depend only on M and N) and each tile is one single-threaded Eigen
// product over the whole K; the tiles run in parallel. Every element of C is therefore computed by
// the same instruction sequence whatever the thread count: bitwise-reproducible results.
template <typename T>
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda,
          const T* B, int64_t ldb, T beta, T* C, int64_t ldc);

// The same product as one single-threaded Eigen call, no tiling: for callers that split their own work into
// fixed blocks run in parallel (each block's result depends only on its shape, never on the thread count).
template <typename T>
void gemm_serial(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
                 int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc);

// out[j] (+)= sum_i in[i, j] over rows, summed in row order; columns are split across threads.
template <typename T>
void column_sums(const T* in, int64_t rows, int64_t cols, int64_t ld, T* out, bool accumulate);

}  // namespace husai
