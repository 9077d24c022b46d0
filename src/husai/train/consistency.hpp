#pragma once

// Consistency training (the reference's consistency-objective sweep): an alignment penalty that pulls an
// SAE's decoder rows D_i (i < L) towards a fixed reference SAE's decoder rows R_j (j < L_R):
//
//   penalty(D) = lambda * (1 - (1/L) sum_i max_j |cos(D_i, R_j)|)
//
// The max is piecewise: its (sub)gradient flows through the arg-max j*(i) (ties to the lower j), so with
// s_i = sign(<D_i, R_j*>), r = R_j* / ||R_j*|| and c_i = <D_i, r> / ||D_i||,
//
//   d penalty / d D_i = -(lambda / L) s_i (r / ||D_i|| - c_i D_i / ||D_i||^2)
//
// which is orthogonal to D_i (the penalty does not depend on the row's length). Rows of zero norm get no
// gradient and count as |cos| 0. The product D R^T uses core/gemm (tiled, deterministic): results do not
// depend on the thread count.

#include <cstdint>
#include <vector>

namespace husai {

struct ConsistencyReference {
  int64_t n_rows = 0;  // L_R
  int64_t d_in = 0;
  std::vector<float> unit_rows;  // [L_R, d_in], each row scaled to unit norm (zero rows stay zero)
};

// The reference from decoder rows w_dec [n_rows, d_in] (any scale).
ConsistencyReference make_consistency_reference(const float* w_dec, int64_t n_rows, int64_t d_in);

// Scratch reused across calls (sized on first use).
template <typename T>
struct ConsistencyWorkspace {
  std::vector<T> reference;  // the reference rows in T
  std::vector<T> cos;        // [L, L_R]
  std::vector<int64_t> best;
  std::vector<double> best_cos;
};

// Returns mean_i max_j |cos(D_i, R_j)| of dec [L, d_in]; when grad_dec is non-null adds the gradient of
// lambda * (1 - that) into grad_dec [L, d_in].
template <typename T>
double consistency_alignment(const T* dec, int64_t L, const ConsistencyReference& ref, double lambda,
                             T* grad_dec, ConsistencyWorkspace<T>& ws);

}  // namespace husai
