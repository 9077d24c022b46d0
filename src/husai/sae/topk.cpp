// TopK SAE (Gao et al. 2024, "Scaling and evaluating sparse autoencoders"; SAELens topk):
//   z = (x - b_dec) W_enc + b_enc     f = ReLU(TopK_k(z))     x_hat = f W_dec + b_dec
//   loss = (1/B) sum_b ||x_hat_b - x_b||^2 + aux_coefficient * AuxK
// AuxK: with `dead` = latents that have not fired within the last dead_window samples, the top
// k_aux' = min(k_aux, n_dead) pre-activations among dead latents of each row (signed, as SAELens) reconstruct
// the residual e = stop(x - x_hat) without b_dec:
//   AuxK = min(n_dead / k_aux, 1) * (1/B) sum_b ||sum_{i in aux(b)} z_bi W_dec,i - e_b||^2
//
// This file also holds the sparse path shared with batchtopk.cpp and matryoshka.cpp.

#include <algorithm>
#include <numeric>

#include "husai/core/threading.hpp"
#include "husai/sae/dense_path.hpp"
#include "husai/sae/sparse_path.hpp"

namespace husai {
namespace sae_detail {
namespace {

constexpr int64_t kRowChunk = 64;
constexpr int64_t kLatentChunk = 32;

// Ordering of candidates: larger value first, then lower index. A strict total order, so the selected set is
// unique whatever algorithm or thread computes it.
template <typename T>
struct ByValueDesc {
  const T* v;
  bool operator()(int32_t a, int32_t b) const { return v[a] > v[b] || (v[a] == v[b] && a < b); }
};

}  // namespace

template <typename T>
void select_topk_per_row(const T* z, int64_t B, int64_t L, int64_t k, SaeWorkspace<T>& ws) {
  std::vector<int32_t> sel(static_cast<size_t>(B * k));
  std::vector<int64_t> count(static_cast<size_t>(B));
  parallel_chunks(B, kRowChunk, [&](int64_t r0, int64_t r1) {
    std::vector<int32_t> cand(static_cast<size_t>(L));
    for (int64_t r = r0; r < r1; ++r) {
      const T* zr = z + r * L;
      std::iota(cand.begin(), cand.end(), 0);
      std::nth_element(cand.begin(), cand.begin() + (k - 1), cand.end(), ByValueDesc<T>{zr});
      int32_t* out = sel.data() + r * k;
      int64_t n = 0;
      for (int64_t j = 0; j < k; ++j) {
        if (zr[cand[static_cast<size_t>(j)]] > T(0)) out[n++] = cand[static_cast<size_t>(j)];
      }
      std::sort(out, out + n);
      count[static_cast<size_t>(r)] = n;
    }
  });
  ws.row_ptr.assign(static_cast<size_t>(B + 1), 0);
  for (int64_t r = 0; r < B; ++r)
    ws.row_ptr[static_cast<size_t>(r + 1)] =
        ws.row_ptr[static_cast<size_t>(r)] + count[static_cast<size_t>(r)];
  const int64_t nnz = ws.row_ptr[static_cast<size_t>(B)];
  ws.idx.resize(static_cast<size_t>(nnz));
  ws.act.resize(static_cast<size_t>(nnz));
  parallel_chunks(B, kRowChunk, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t s = ws.row_ptr[static_cast<size_t>(r)];
      for (int64_t j = 0; j < count[static_cast<size_t>(r)]; ++j) {
        const int32_t i = sel[static_cast<size_t>(r * k + j)];
        ws.idx[static_cast<size_t>(s + j)] = i;
        ws.act[static_cast<size_t>(s + j)] = z[r * L + i];
      }
    }
  });
}

template <typename T>
SaeLossParts sparse_loss_backward(const SaeConfig& cfg, const SaeView<const T>& p, const SaeView<T>* g,
                                  const SaeBatch<T>& batch, SaeWorkspace<T>& ws,
                                  const std::vector<int64_t>& prefix_ends,
                                  const std::vector<double>& prefix_weights) {
  const int64_t B = batch.n_rows;
  const int64_t D = cfg.d_in;
  const int64_t L = cfg.d_sae;
  const auto m = static_cast<int64_t>(prefix_ends.size());
  const T* x = batch.x;
  const int64_t nnz = ws.row_ptr[static_cast<size_t>(B)];
  const T two_over_b = T(2) / static_cast<T>(B);

  // Reconstructions of the nested prefixes. ws.up[r, j] first holds w_j (2/B)(x_hat_j - x); the suffix sum
  // below turns it into d loss / d x_hat seen by a latent of group j (a latent of group j is in prefixes >=
  // j).
  ws.x_hat.resize(static_cast<size_t>(B * D));
  ws.up.resize(static_cast<size_t>(B * m * D));
  std::vector<double> row_err(static_cast<size_t>(B * m));
  parallel_chunks(B, kRowChunk, [&](int64_t r0, int64_t r1) {
    std::vector<T> acc(static_cast<size_t>(D));
    for (int64_t r = r0; r < r1; ++r) {
      for (int64_t d = 0; d < D; ++d) acc[static_cast<size_t>(d)] = p.b_dec[d];
      int64_t e = ws.row_ptr[static_cast<size_t>(r)];
      const int64_t e_end = ws.row_ptr[static_cast<size_t>(r + 1)];
      for (int64_t j = 0; j < m; ++j) {
        for (; e < e_end && ws.idx[static_cast<size_t>(e)] < prefix_ends[static_cast<size_t>(j)]; ++e) {
          const T a = ws.act[static_cast<size_t>(e)];
          const T* w = p.W_dec + static_cast<int64_t>(ws.idx[static_cast<size_t>(e)]) * D;
          for (int64_t d = 0; d < D; ++d) acc[static_cast<size_t>(d)] += a * w[d];
        }
        T* u = ws.up.data() + (r * m + j) * D;
        const auto wj = static_cast<T>(prefix_weights[static_cast<size_t>(j)]);
        double s = 0;
        for (int64_t d = 0; d < D; ++d) {
          const T diff = acc[static_cast<size_t>(d)] - x[r * D + d];
          s += static_cast<double>(diff) * static_cast<double>(diff);
          u[d] = wj * two_over_b * diff;
        }
        row_err[static_cast<size_t>(r * m + j)] = s;
      }
      std::copy(acc.begin(), acc.end(), ws.x_hat.begin() + r * D);
      for (int64_t j = m - 2; j >= 0; --j) {
        T* u = ws.up.data() + (r * m + j) * D;
        const T* next = u + D;
        for (int64_t d = 0; d < D; ++d) u[d] += next[d];
      }
    }
  });
  SaeLossParts out;
  double recon = 0;
  for (int64_t j = 0; j < m; ++j) {
    double s = 0;
    for (int64_t r = 0; r < B; ++r) s += row_err[static_cast<size_t>(r * m + j)];
    s /= static_cast<double>(B);
    recon += prefix_weights[static_cast<size_t>(j)] * s;
    if (j == m - 1) out.mse = s;
  }
  out.loss = recon;
  out.l0 = static_cast<double>(nnz) / static_cast<double>(B);
  out.explained_variance = batch_explained_variance(x, ws.x_hat.data(), B, D);
  ws.fired.assign(static_cast<size_t>(L), 0);
  double min_active = 0;
  for (int64_t e = 0; e < nnz; ++e) {
    ws.fired[static_cast<size_t>(ws.idx[static_cast<size_t>(e)])] = 1;
    const auto a = static_cast<double>(ws.act[static_cast<size_t>(e)]);
    if (e == 0 || a < min_active) min_active = a;
  }
  ws.min_active = min_active;

  // AuxK over the dead latents.
  std::vector<int32_t> dead;
  if (cfg.aux_coefficient > 0 && batch.dead != nullptr) {
    for (int64_t i = 0; i < L; ++i) {
      if (batch.dead[i] != 0) dead.push_back(static_cast<int32_t>(i));
    }
  }
  const auto n_dead = static_cast<int64_t>(dead.size());
  const int64_t k_aux = cfg.resolved_k_aux();
  const int64_t k_eff = std::min(k_aux, n_dead);
  ws.aux_row_ptr.assign(static_cast<size_t>(B + 1), 0);
  ws.aux_idx.clear();
  ws.aux_act.clear();
  if (k_eff > 0) {
    const T* z = ws.z.data();
    for (int64_t r = 0; r <= B; ++r) ws.aux_row_ptr[static_cast<size_t>(r)] = r * k_eff;
    ws.aux_idx.resize(static_cast<size_t>(B * k_eff));
    ws.aux_act.resize(static_cast<size_t>(B * k_eff));
    if (!ws.freeze_aux_residual || ws.aux_residual.size() != static_cast<size_t>(B * D)) {
      ws.aux_residual.resize(static_cast<size_t>(B * D));
      for (int64_t j = 0; j < B * D; ++j)
        ws.aux_residual[static_cast<size_t>(j)] = x[j] - ws.x_hat[static_cast<size_t>(j)];
    }
    ws.aux_grad.resize(static_cast<size_t>(B * D));
    const double scale = std::min(1.0, static_cast<double>(n_dead) / static_cast<double>(k_aux));
    const auto gscale = static_cast<T>(cfg.aux_coefficient * scale) * two_over_b;
    std::vector<double> aux_err(static_cast<size_t>(B));
    parallel_chunks(B, kRowChunk, [&](int64_t r0, int64_t r1) {
      std::vector<int32_t> cand(dead);
      std::vector<T> acc(static_cast<size_t>(D));
      for (int64_t r = r0; r < r1; ++r) {
        const T* zr = z + r * L;
        std::copy(dead.begin(), dead.end(), cand.begin());
        std::nth_element(cand.begin(), cand.begin() + (k_eff - 1), cand.end(), ByValueDesc<T>{zr});
        std::sort(cand.begin(), cand.begin() + k_eff);
        std::fill(acc.begin(), acc.end(), T(0));
        for (int64_t j = 0; j < k_eff; ++j) {
          const int32_t i = cand[static_cast<size_t>(j)];
          ws.aux_idx[static_cast<size_t>(r * k_eff + j)] = i;
          ws.aux_act[static_cast<size_t>(r * k_eff + j)] = zr[i];
          const T* w = p.W_dec + static_cast<int64_t>(i) * D;
          for (int64_t d = 0; d < D; ++d) acc[static_cast<size_t>(d)] += zr[i] * w[d];
        }
        double s = 0;
        for (int64_t d = 0; d < D; ++d) {
          const T diff = acc[static_cast<size_t>(d)] - ws.aux_residual[static_cast<size_t>(r * D + d)];
          s += static_cast<double>(diff) * static_cast<double>(diff);
          ws.aux_grad[static_cast<size_t>(r * D + d)] = gscale * diff;
        }
        aux_err[static_cast<size_t>(r)] = s;
      }
    });
    double s = 0;
    for (double v : aux_err) s += v;
    out.aux = scale * s / static_cast<double>(B);
    out.loss += cfg.aux_coefficient * out.aux;
  }
  if (g == nullptr) return out;

  // Group of each latent: the first prefix that contains it.
  std::vector<int32_t> group(static_cast<size_t>(L));
  for (int64_t i = 0, j = 0; i < L; ++i) {
    while (i >= prefix_ends[static_cast<size_t>(j)]) ++j;
    group[static_cast<size_t>(i)] = static_cast<int32_t>(j);
  }
  // d loss / d z of every entry (active entries have z = f > 0: ReLU passes the gradient).
  const int64_t n_aux = static_cast<int64_t>(ws.aux_idx.size());
  ws.dact.resize(static_cast<size_t>(nnz));
  ws.aux_dact.resize(static_cast<size_t>(n_aux));
  parallel_chunks(B, kRowChunk, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      for (int64_t e = ws.row_ptr[static_cast<size_t>(r)]; e < ws.row_ptr[static_cast<size_t>(r + 1)]; ++e) {
        const int32_t i = ws.idx[static_cast<size_t>(e)];
        const T* u = ws.up.data() + (r * m + group[static_cast<size_t>(i)]) * D;
        const T* w = p.W_dec + static_cast<int64_t>(i) * D;
        T s = T(0);
        for (int64_t d = 0; d < D; ++d) s += u[d] * w[d];
        ws.dact[static_cast<size_t>(e)] = s;
      }
      for (int64_t e = ws.aux_row_ptr[static_cast<size_t>(r)]; e < ws.aux_row_ptr[static_cast<size_t>(r + 1)];
           ++e) {
        const T* u = ws.aux_grad.data() + r * D;
        const T* w = p.W_dec + static_cast<int64_t>(ws.aux_idx[static_cast<size_t>(e)]) * D;
        T s = T(0);
        for (int64_t d = 0; d < D; ++d) s += u[d] * w[d];
        ws.aux_dact[static_cast<size_t>(e)] = s;
      }
    }
  });
  // Entries grouped by latent, in row order (main before AuxK within a row): a counting sort.
  ws.col_ptr.assign(static_cast<size_t>(L + 1), 0);
  for (int64_t e = 0; e < nnz; ++e) ++ws.col_ptr[static_cast<size_t>(ws.idx[static_cast<size_t>(e)]) + 1];
  for (int64_t e = 0; e < n_aux; ++e)
    ++ws.col_ptr[static_cast<size_t>(ws.aux_idx[static_cast<size_t>(e)]) + 1];
  for (int64_t i = 0; i < L; ++i)
    ws.col_ptr[static_cast<size_t>(i + 1)] += ws.col_ptr[static_cast<size_t>(i)];
  ws.col_entry.resize(static_cast<size_t>(nnz + n_aux));
  std::vector<int64_t> fill(ws.col_ptr.begin(), ws.col_ptr.end() - 1);
  std::vector<int32_t> entry_row(static_cast<size_t>(nnz + n_aux));
  for (int64_t r = 0; r < B; ++r) {
    for (int64_t e = ws.row_ptr[static_cast<size_t>(r)]; e < ws.row_ptr[static_cast<size_t>(r + 1)]; ++e) {
      ws.col_entry[static_cast<size_t>(fill[static_cast<size_t>(ws.idx[static_cast<size_t>(e)])]++)] = e;
      entry_row[static_cast<size_t>(e)] = static_cast<int32_t>(r);
    }
    for (int64_t e = ws.aux_row_ptr[static_cast<size_t>(r)]; e < ws.aux_row_ptr[static_cast<size_t>(r + 1)];
         ++e) {
      ws.col_entry[static_cast<size_t>(fill[static_cast<size_t>(ws.aux_idx[static_cast<size_t>(e)])]++)] =
          nnz + e;
      entry_row[static_cast<size_t>(nnz + e)] = static_cast<int32_t>(r);
    }
  }
  // Per latent: b_enc, W_dec row and W_enc column (into a [L, D] buffer, transposed below).
  ws.dwenc_t.assign(static_cast<size_t>(L * D), T(0));
  parallel_chunks(L, kLatentChunk, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      T* gdec = g->W_dec + i * D;
      T* genc = ws.dwenc_t.data() + i * D;
      T gb = T(0);
      const int64_t grp = group[static_cast<size_t>(i)];
      for (int64_t c = ws.col_ptr[static_cast<size_t>(i)]; c < ws.col_ptr[static_cast<size_t>(i + 1)]; ++c) {
        const int64_t e = ws.col_entry[static_cast<size_t>(c)];
        const int64_t r = entry_row[static_cast<size_t>(e)];
        T a;
        T dz;
        const T* u;
        if (e < nnz) {
          a = ws.act[static_cast<size_t>(e)];
          dz = ws.dact[static_cast<size_t>(e)];
          u = ws.up.data() + (r * m + grp) * D;
        } else {
          a = ws.aux_act[static_cast<size_t>(e - nnz)];
          dz = ws.aux_dact[static_cast<size_t>(e - nnz)];
          u = ws.aux_grad.data() + r * D;
        }
        gb += dz;
        const T* xc = ws.xc.data() + r * D;
        for (int64_t d = 0; d < D; ++d) {
          gdec[d] += a * u[d];
          genc[d] += dz * xc[d];
        }
      }
      g->b_enc[i] = gb;
    }
  });
  parallel_chunks(D, 8, [&](int64_t d0, int64_t d1) {
    for (int64_t d = d0; d < d1; ++d) {
      for (int64_t i = 0; i < L; ++i) g->W_enc[d * L + i] = ws.dwenc_t[static_cast<size_t>(i * D + d)];
    }
  });
  // b_dec: in every prefix reconstruction (ws.up[r, 0] sums them), and minus through the encoder input.
  column_sums<T>(ws.up.data(), B, D, m * D, g->b_dec, true);
  if (cfg.apply_b_dec_to_input) {
    for (int64_t d = 0; d < D; ++d) {
      T s = T(0);
      for (int64_t i = 0; i < L; ++i) s += p.W_enc[d * L + i] * g->b_enc[i];
      g->b_dec[d] -= s;
    }
  }
  return out;
}

}  // namespace sae_detail

template <typename T>
SaeLossParts topk_loss_backward(const SaeConfig& cfg, const SaeView<const T>& p, const SaeView<T>* g,
                                const SaeBatch<T>& batch, SaeWorkspace<T>& ws) {
  sae_detail::encoder_pre(cfg, p, batch.x, batch.n_rows, ws);
  sae_detail::select_topk_per_row(ws.z.data(), batch.n_rows, cfg.d_sae, cfg.k, ws);
  return sae_detail::sparse_loss_backward(cfg, p, g, batch, ws, {cfg.d_sae}, {1.0});
}

#define HUSAI_INSTANTIATE(T)                                                                                \
  template SaeLossParts topk_loss_backward<T>(const SaeConfig&, const SaeView<const T>&, const SaeView<T>*, \
                                              const SaeBatch<T>&, SaeWorkspace<T>&);                        \
  template SaeLossParts sae_detail::sparse_loss_backward<T>(                                                \
      const SaeConfig&, const SaeView<const T>&, const SaeView<T>*, const SaeBatch<T>&, SaeWorkspace<T>&,   \
      const std::vector<int64_t>&, const std::vector<double>&);                                             \
  template void sae_detail::select_topk_per_row<T>(const T*, int64_t, int64_t, int64_t, SaeWorkspace<T>&);
HUSAI_INSTANTIATE(float)
HUSAI_INSTANTIATE(double)
#undef HUSAI_INSTANTIATE

}  // namespace husai
