#include "husai/train/consistency.hpp"

#include <cmath>

#include "husai/core/error.hpp"
#include "husai/core/gemm.hpp"
#include "husai/core/threading.hpp"

namespace husai {

ConsistencyReference make_consistency_reference(const float* w_dec, int64_t n_rows, int64_t d_in) {
  if (n_rows < 1 || d_in < 1) throw Error("consistency reference: empty decoder");
  ConsistencyReference ref;
  ref.n_rows = n_rows;
  ref.d_in = d_in;
  ref.unit_rows.assign(w_dec, w_dec + n_rows * d_in);
  for (int64_t j = 0; j < n_rows; ++j) {
    double n2 = 0;
    for (int64_t d = 0; d < d_in; ++d) {
      const auto v = static_cast<double>(ref.unit_rows[static_cast<size_t>(j * d_in + d)]);
      n2 += v * v;
    }
    if (n2 <= 0) continue;
    const double inv = 1.0 / std::sqrt(n2);
    for (int64_t d = 0; d < d_in; ++d) {
      float& v = ref.unit_rows[static_cast<size_t>(j * d_in + d)];
      v = static_cast<float>(static_cast<double>(v) * inv);
    }
  }
  return ref;
}

template <typename T>
double consistency_alignment(const T* dec, int64_t L, const ConsistencyReference& ref, double lambda,
                             T* grad_dec, ConsistencyWorkspace<T>& ws) {
  const int64_t D = ref.d_in;
  const int64_t LR = ref.n_rows;
  if (ws.reference.size() != ref.unit_rows.size()) {
    ws.reference.assign(ref.unit_rows.begin(), ref.unit_rows.end());
  }
  ws.cos.resize(static_cast<size_t>(L * LR));
  ws.best.resize(static_cast<size_t>(L));
  ws.best_cos.resize(static_cast<size_t>(L));
  // <D_i, r_j> for all pairs; divided by ||D_i|| per row below.
  gemm<T>(false, true, L, LR, D, T(1), dec, D, ws.reference.data(), D, T(0), ws.cos.data(), LR);
  const double coef = lambda / static_cast<double>(L);
  parallel_chunks(L, 64, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const T* row = dec + i * D;
      double n2 = 0;
      for (int64_t d = 0; d < D; ++d) n2 += static_cast<double>(row[d]) * static_cast<double>(row[d]);
      const T* c = ws.cos.data() + i * LR;
      int64_t best = 0;
      for (int64_t j = 1; j < LR; ++j) {
        if (std::abs(c[j]) > std::abs(c[best])) best = j;
      }
      ws.best[static_cast<size_t>(i)] = best;
      if (n2 <= 0) {
        ws.best_cos[static_cast<size_t>(i)] = 0.0;
        continue;
      }
      const double norm = std::sqrt(n2);
      const double dot = static_cast<double>(c[best]);
      ws.best_cos[static_cast<size_t>(i)] = std::abs(dot) / norm;
      if (grad_dec == nullptr || lambda == 0.0) continue;
      const double sign = dot >= 0 ? 1.0 : -1.0;
      const double cos_i = dot / norm;
      const T* r = ws.reference.data() + best * D;
      T* g = grad_dec + i * D;
      for (int64_t d = 0; d < D; ++d) {
        const double v =
            -coef * sign * (static_cast<double>(r[d]) / norm - cos_i * static_cast<double>(row[d]) / n2);
        g[d] += static_cast<T>(v);
      }
    }
  });
  double sum = 0;
  for (const double v : ws.best_cos) sum += v;  // row order
  return sum / static_cast<double>(L);
}

template double consistency_alignment<float>(const float*, int64_t, const ConsistencyReference&, double,
                                             float*, ConsistencyWorkspace<float>&);
template double consistency_alignment<double>(const double*, int64_t, const ConsistencyReference&, double,
                                              double*, ConsistencyWorkspace<double>&);

}  // namespace husai
