// TopK SAE (Gao et al. 2024, "Scaling and evaluating sparse autoencoders"; SAELens topk):
//   z = (x - b_dec) W_enc + b_enc     f = ReLU(TopK_k(z))     x_hat = f W_dec + b_dec
//   loss = (1/B) sum_b ||x_hat_b - x_b||^2 + aux_coefficient * AuxK
// AuxK: with `dead` = latents that have not fired within the last dead_window samples, the top
// k_aux' = min(k_aux, n_dead) pre-activations among dead latents of each row (signed, as SAELens) reconstruct
// the residual e = stop(x - x_hat) without b_dec:
//   AuxK = min(n_dead / k_aux, 1) * (1/B) sum_b ||sum_{i in aux(b)} z_bi W_dec,i - e_b||^2
//
// This file also holds the sparse path shared with batchtopk.cpp and matryoshka.cpp.

// Every value here is computed by the same portable code on every CPU (the build targets x86-64-v3; there is
// no AVX-512 variant): the selection is exact (a strict total order), and each decoded element is one chain
// of multiply-adds in entry order, so results do not depend on the SIMD width.

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <numeric>
#include <type_traits>

#include "husai/core/cluster.hpp"
#include "husai/core/error.hpp"
#include "husai/core/lanes.hpp"
#include "husai/core/threading.hpp"
#include "husai/io/config.hpp"
#include "husai/sae/architecture.hpp"
#include "husai/sae/dense_path.hpp"
#include "husai/sae/encoder_kernel.hpp"
#include "husai/sae/sparse_path.hpp"

namespace husai {
namespace sae_detail {
namespace {

constexpr int64_t kRowChunk = 64;
constexpr int64_t kGradLatents = 256;  // latents per task of the weight-gradient pass
constexpr int64_t kSelLanes = 16;

constexpr int64_t kMaxLaneRank = 64;

// Selection buffer size for n values: every value may be a candidate, plus one vector of slack.
int64_t selection_cap(int64_t n) {
  return n + kSelLanes;
}

// Step 3 of the selection below: of nb > k candidates (buf_val / buf_pos, position order), keeps the top k in
// the order "larger value first, then lower position", in position order. nth_element on a copy (tmp) gives
// the k-th largest value kth; an in-order filter keeps the values > kth and the first (lowest-position) ones
// equal to kth up to k in all. Returns k.
template <typename T>
int64_t keep_top_candidates(int64_t nb, int64_t k, int32_t* buf_pos, T* buf_val, T* tmp) {
  std::copy_n(buf_val, nb, tmp);
  std::nth_element(tmp, tmp + (k - 1), tmp + nb, std::greater<T>());
  const T kth = tmp[k - 1];
  int64_t ties = k;
  for (int64_t q = 0; q < k - 1; ++q) ties -= tmp[q] > kth ? 1 : 0;
  int64_t out = 0;
  for (int64_t q = 0; q < nb; ++q) {
    const T v = buf_val[q];
    if (v > kth || (v == kth && ties-- > 0)) {
      buf_val[out] = v;
      buf_pos[out] = buf_pos[q];
      ++out;
    }
  }
  return out;
}

#if defined(__AVX2__)
// select_top for float with AVX2, the same selected set (so the same bits downstream) by a cheaper route:
// 1. the lane bound with 8 lanes (one register) and rank ceil(k / 8), which leaves fewer candidates than 16
//    lanes; 2. the candidate scan as 8-wide compares and a bit mask; 3. up to kRankSelectMax candidates, each
//    one's exact rank in the order (how many candidates are larger, or equal and earlier), kept when < k;
//    more go to the generic nth_element route.
constexpr int64_t kRankSelectMax = 128;

int64_t select_top_avx2(const float* vals, int64_t n, int64_t k, float floor, int32_t* buf_pos,
                        float* buf_val, float* tmp) {
  const int64_t rank = (k + 7) / 8;
  float t0 = -std::numeric_limits<float>::infinity();
  if (rank <= kMaxLaneRank && n >= 8 * rank) {
    __m256 top[kMaxLaneRank];
    for (int64_t q = 0; q < rank; ++q) top[q] = _mm256_set1_ps(t0);
    for (int64_t j = 0; j + 8 <= n; j += 8) {
      __m256 v = _mm256_loadu_ps(vals + j);
      for (int64_t q = 0; q < rank; ++q) {
        const __m256 hi = _mm256_max_ps(top[q], v);
        v = _mm256_min_ps(top[q], v);
        top[q] = hi;
      }
    }
    alignas(32) float last[8];
    _mm256_store_ps(last, top[rank - 1]);
    t0 = *std::min_element(last, last + 8);
  }
  const bool use_t0 = t0 > floor;
  const float thr = use_t0 ? t0 : floor;
  const __m256 thr_v = _mm256_set1_ps(thr);
  int64_t nb = 0;
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m256 v = _mm256_loadu_ps(vals + j);
    auto mask = static_cast<unsigned>(_mm256_movemask_ps(use_t0 ? _mm256_cmp_ps(v, thr_v, _CMP_GE_OQ)
                                                                : _mm256_cmp_ps(v, thr_v, _CMP_GT_OQ)));
    while (mask != 0) {
      const int l = __builtin_ctz(mask);
      buf_val[nb] = vals[j + l];
      buf_pos[nb] = static_cast<int32_t>(j + l);
      ++nb;
      mask &= mask - 1;
    }
  }
  for (; j < n; ++j) {
    const float v = vals[j];
    buf_val[nb] = v;
    buf_pos[nb] = static_cast<int32_t>(j);
    nb += (use_t0 ? v >= thr : v > thr) ? 1 : 0;
  }
  if (nb <= k) return nb;
  if (nb > kRankSelectMax) return keep_top_candidates(nb, k, buf_pos, buf_val, tmp);
  // Pad to a whole register with -inf (never a candidate: candidates exceed floor or t0).
  const int64_t padded = (nb + 7) / 8 * 8;
  for (int64_t t = nb; t < padded; ++t) buf_val[t] = -std::numeric_limits<float>::infinity();
  int32_t order_rank[kRankSelectMax];
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  for (int64_t q = 0; q < nb; ++q) {
    const __m256 v = _mm256_set1_ps(buf_val[q]);
    const __m256i qv = _mm256_set1_epi32(static_cast<int32_t>(q));
    __m256i count = _mm256_setzero_si256();
    for (int64_t t = 0; t < padded; t += 8) {
      const __m256 u = _mm256_loadu_ps(buf_val + t);
      const __m256i earlier =
          _mm256_cmpgt_epi32(qv, _mm256_add_epi32(lane, _mm256_set1_epi32(static_cast<int32_t>(t))));
      const __m256 before =
          _mm256_or_ps(_mm256_cmp_ps(u, v, _CMP_GT_OQ),
                       _mm256_and_ps(_mm256_cmp_ps(u, v, _CMP_EQ_OQ), _mm256_castsi256_ps(earlier)));
      count = _mm256_sub_epi32(count, _mm256_castps_si256(before));  // a true lane is -1
    }
    alignas(32) int32_t c[8];
    _mm256_store_si256(reinterpret_cast<__m256i*>(c), count);
    order_rank[q] = c[0] + c[1] + c[2] + c[3] + c[4] + c[5] + c[6] + c[7];
  }
  int64_t out = 0;
  for (int64_t q = 0; q < nb; ++q) {
    if (order_rank[q] < k) {
      buf_val[out] = buf_val[q];
      buf_pos[out] = buf_pos[q];
      ++out;
    }
  }
  return out;
}
#endif

// Top `k` of vals[0, n) among the values > floor, in the order "larger value first, then lower position" (a
// strict total order, so the selected set is unique whatever algorithm computes it), written in ascending
// position order to buf_pos / buf_val. Returns the number selected (< k only when fewer than k values exceed
// floor). buf_pos / buf_val / tmp hold selection_cap(n) entries.
//
// 1. A lower bound t0 of the k-th largest value: the values are dealt to kSelLanes lanes (lane l takes
//    positions l, l + kSelLanes, ...), each lane keeps its r = ceil(k / kSelLanes) largest; every lane then
//    has r values >= its r-th largest, so at least k values are >= t0 = min over lanes of the r-th largest.
// 2. One pass collects, in position order, the candidates v > floor and v >= t0: a superset of the answer.
// 3. If more than k: keep_top_candidates keeps exactly the top k of them.
template <typename T>
int64_t select_top(const T* vals, int64_t n, int64_t k, T floor, int32_t* buf_pos, T* buf_val, T* tmp) {
#if defined(__AVX2__)
  if constexpr (std::is_same_v<T, float>) return select_top_avx2(vals, n, k, floor, buf_pos, buf_val, tmp);
#endif
  const int64_t rank = (k + kSelLanes - 1) / kSelLanes;
  T t0 = -std::numeric_limits<T>::infinity();
  if (rank <= kMaxLaneRank && n >= kSelLanes * rank) {
    T top[kMaxLaneRank][kSelLanes];
    for (int64_t q = 0; q < rank; ++q) std::fill_n(top[q], kSelLanes, t0);
    for (int64_t j = 0; j + kSelLanes <= n; j += kSelLanes) {
      T v[kSelLanes];
      std::copy_n(vals + j, kSelLanes, v);
      for (int64_t q = 0; q < rank; ++q) {
        for (int64_t l = 0; l < kSelLanes; ++l) {
          const T hi = std::max(top[q][l], v[l]);
          v[l] = std::min(top[q][l], v[l]);
          top[q][l] = hi;
        }
      }
    }
    t0 = top[rank - 1][0];
    for (int64_t l = 1; l < kSelLanes; ++l) t0 = std::min(t0, top[rank - 1][l]);
  }
  // Candidates: v >= t0 when t0 > floor, else v > floor.
  const bool use_t0 = t0 > floor;
  const T thr = use_t0 ? t0 : floor;
  int64_t nb = 0;
  for (int64_t j = 0; j < n; ++j) {
    const T v = vals[j];
    buf_val[nb] = v;
    buf_pos[nb] = static_cast<int32_t>(j);
    nb += (use_t0 ? v >= thr : v > thr) ? 1 : 0;
  }
  if (nb <= k) return nb;
  return keep_top_candidates(nb, k, buf_pos, buf_val, tmp);
}

// Rows selected at a fixed stride (count[r] <= stride entries at r * stride) into CSR.
template <typename T>
void compact_rows(int64_t B, int64_t stride, const std::vector<int64_t>& count,
                  const std::vector<int32_t>& sidx, const std::vector<T>& sact, std::vector<int64_t>& row_ptr,
                  std::vector<int32_t>& idx, std::vector<T>& act) {
  row_ptr.resize(static_cast<size_t>(B + 1));
  row_ptr[0] = 0;
  for (int64_t r = 0; r < B; ++r)
    row_ptr[static_cast<size_t>(r + 1)] = row_ptr[static_cast<size_t>(r)] + count[static_cast<size_t>(r)];
  const int64_t nnz = row_ptr[static_cast<size_t>(B)];
  idx.resize(static_cast<size_t>(nnz));
  act.resize(static_cast<size_t>(nnz));
  parallel_chunks(B, kRowChunk * 4, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const auto s = static_cast<size_t>(row_ptr[static_cast<size_t>(r)]);
      const auto n = static_cast<size_t>(count[static_cast<size_t>(r)]);
      const auto from = static_cast<size_t>(r * stride);
      std::copy_n(sidx.begin() + static_cast<std::ptrdiff_t>(from), n,
                  idx.begin() + static_cast<std::ptrdiff_t>(s));
      std::copy_n(sact.begin() + static_cast<std::ptrdiff_t>(from), n,
                  act.begin() + static_cast<std::ptrdiff_t>(s));
    }
  });
}

// acc[d] = fma(a, w[d], acc[d]): one rounding per element, written out rather than left to the compiler's
// contraction of acc + a * w, so the bits do not depend on the compiler's -ffp-contract setting either.
template <typename T>
inline void axpy(T* __restrict acc, T a, const T* __restrict w, int64_t D) {
  for (int64_t d = 0; d < D; ++d) acc[d] = std::fma(a, w[d], acc[d]);
}

// acc[d] += act[e] * W[idx[e] * D + d] for e = 0, 1, ..., n - 1 in that order, one fused multiply-add per
// entry and element.
template <typename T>
inline void accumulate_rows(T* __restrict acc, const int32_t* idx, const T* act, int64_t n,
                            const T* __restrict W, int64_t D) {
  for (int64_t e = 0; e < n; ++e) axpy<T>(acc, act[e], W + static_cast<int64_t>(idx[e]) * D, D);
}

// One entry's contribution to a latent's decoder and encoder gradient rows.
template <typename T>
inline void axpy2(T* __restrict gdec, T a, const T* __restrict u, T* __restrict genc, T dz,
                  const T* __restrict xc, int64_t D) {
  for (int64_t d = 0; d < D; ++d) {
    gdec[d] += a * u[d];
    genc[d] += dz * xc[d];
  }
}

// u[d] = scale * (a[d] - b[d]) (u may be a); returns sum_d (a[d] - b[d])^2 in double, kLanes partial sums
// folded in a fixed order.
template <typename T>
double scaled_diff_sq(const T* a, const T* b, T scale, T* u, int64_t D) {
  double part[kLanes] = {};
  int64_t d = 0;
  for (; d + kLanes <= D; d += kLanes) {
    for (int l = 0; l < kLanes; ++l) {
      const T diff = a[d + l] - b[d + l];
      part[l] += static_cast<double>(diff) * static_cast<double>(diff);
      u[d + l] = scale * diff;
    }
  }
  for (int l = 0; d < D; ++d, ++l) {
    const T diff = a[d] - b[d];
    part[l] += static_cast<double>(diff) * static_cast<double>(diff);
    u[d] = scale * diff;
  }
  for (int w = kLanes / 2; w > 0; w /= 2) {
    for (int l = 0; l < w; ++l) part[l] += part[l + w];
  }
  return part[0];
}

}  // namespace

namespace {

// This thread's block of a buffer of num_threads() blocks (scratch: which block a task gets never changes its
// result).
template <typename T>
T* thread_block(std::vector<T>& buf, int64_t block_elems) {
  const int tid = omp_get_thread_num();
  return buf.data() + static_cast<int64_t>(tid) * block_elems;
}

template <typename T>
void size_thread_blocks(std::vector<T>& buf, int64_t block_elems) {
  buf.resize(static_cast<size_t>(std::max(1, num_threads()) * block_elems));
}

// Per-row selection of rows [r0, r1) (z_block: row r0, stride L) into the fixed-stride ws.sel_* buffers, with
// this thread's scratch.
template <typename T>
void select_rows(const T* z_block, int64_t r0, int64_t r1, int64_t L, int64_t k, SaeWorkspace<T>& ws) {
  const int64_t cap = selection_cap(L);
  int32_t* bp = thread_block(ws.sel_pos, cap);
  T* bv = thread_block(ws.sel_val, 2 * cap);
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t n = select_top<T>(z_block + (r - r0) * L, L, k, T(0), bp, bv, bv + cap);
    std::copy_n(bp, n, ws.sel_idx.begin() + r * k);
    std::copy_n(bv, n, ws.sel_act.begin() + r * k);
    ws.sel_count[static_cast<size_t>(r)] = n;
  }
}

template <typename T>
void size_selection(int64_t B, int64_t L, int64_t k, SaeWorkspace<T>& ws) {
  const int64_t cap = selection_cap(L);
  ws.sel_idx.resize(static_cast<size_t>(B * k));
  ws.sel_act.resize(static_cast<size_t>(B * k));
  ws.sel_count.resize(static_cast<size_t>(B));
  size_thread_blocks(ws.sel_pos, cap);
  size_thread_blocks(ws.sel_val, 2 * cap);
}

// AuxK's latents: the dead ones (batch.dead, when aux_coefficient > 0) into ws.dead_list; ws.aux_k_eff =
// min(k_aux, n_dead) and the selection buffers sized.
template <typename T>
void prepare_auxk(const SaeConfig& cfg, const SaeBatch<T>& batch, SaeWorkspace<T>& ws) {
  const int64_t B = batch.n_rows;
  ws.dead_list.clear();
  if (cfg.aux_coefficient > 0 && batch.dead != nullptr) {
    for (int64_t i = 0; i < cfg.d_sae; ++i) {
      if (batch.dead[i] != 0) ws.dead_list.push_back(static_cast<int32_t>(i));
    }
  }
  const auto n_dead = static_cast<int64_t>(ws.dead_list.size());
  ws.aux_k_eff = std::min(cfg.resolved_k_aux(), n_dead);
  if (ws.aux_k_eff == 0) return;
  const int64_t cap = selection_cap(n_dead);
  ws.aux_sel_idx.resize(static_cast<size_t>(B * ws.aux_k_eff));
  ws.aux_sel_act.resize(static_cast<size_t>(B * ws.aux_k_eff));
  ws.aux_sel_count.resize(static_cast<size_t>(B));
  size_thread_blocks(ws.aux_sel_pos, cap);
  size_thread_blocks(ws.aux_sel_val, n_dead + 2 * cap);
}

// AuxK's selection for rows [r0, r1) (z_block: row r0, stride L): each row's top aux_k_eff pre-activations
// among the dead latents (signed: no floor), latent ids ascending, into ws.aux_sel_* at stride aux_k_eff.
template <typename T>
void select_auxk_rows(const T* z_block, int64_t r0, int64_t r1, int64_t L, SaeWorkspace<T>& ws) {
  const int64_t k_eff = ws.aux_k_eff;
  if (k_eff == 0) return;
  const auto n_dead = static_cast<int64_t>(ws.dead_list.size());
  const int64_t cap = selection_cap(n_dead);
  const int32_t* dead = ws.dead_list.data();
  int32_t* bp = thread_block(ws.aux_sel_pos, cap);
  T* vals = thread_block(ws.aux_sel_val, n_dead + 2 * cap);
  T* bv = vals + n_dead;
  for (int64_t r = r0; r < r1; ++r) {
    const T* zr = z_block + (r - r0) * L;
    for (int64_t j = 0; j < n_dead; ++j) vals[j] = zr[dead[j]];
    const int64_t n =
        select_top<T>(vals, n_dead, k_eff, -std::numeric_limits<T>::infinity(), bp, bv, bv + cap);
    for (int64_t j = 0; j < n; ++j) {
      ws.aux_sel_idx[static_cast<size_t>(r * k_eff + j)] = dead[bp[j]];
      ws.aux_sel_act[static_cast<size_t>(r * k_eff + j)] = bv[j];
    }
    ws.aux_sel_count[static_cast<size_t>(r)] = n;
  }
}

}  // namespace

template <typename T>
void select_topk_per_row(const T* z, int64_t B, int64_t L, int64_t k, SaeWorkspace<T>& ws) {
  size_selection(B, L, k, ws);
  parallel_chunks(B, kRowChunk, [&](int64_t r0, int64_t r1) { select_rows(z + r0 * L, r0, r1, L, k, ws); });
  compact_rows<T>(B, k, ws.sel_count, ws.sel_idx, ws.sel_act, ws.row_ptr, ws.idx, ws.act);
}

template <typename T>
void select_auxk(const SaeConfig& cfg, const SaeBatch<T>& batch, const T* z, SaeWorkspace<T>& ws) {
  prepare_auxk(cfg, batch, ws);
  const int64_t L = cfg.d_sae;
  parallel_chunks(batch.n_rows, kRowChunk,
                  [&](int64_t r0, int64_t r1) { select_auxk_rows(z + r0 * L, r0, r1, L, ws); });
}

// TopK encoder fused with both selections: ws.xc = x - b_dec, then per fixed block of rows (in parallel) the
// encoder kernel z = xc W_enc + b_enc into this thread's block of ws.z (encoder_kernel.hpp), and while the
// block is still in cache the per-row top-k and AuxK's top k_aux among the dead latents. No [B, d_sae]
// buffer exists.
template <typename T>
void encode_select_topk(const SaeConfig& cfg, const SaeView<const T>& p, const SaeBatch<T>& batch,
                        SaeWorkspace<T>& ws) {
  const int64_t B = batch.n_rows;
  const T* x = batch.x;
  const int64_t D = cfg.d_in;
  const int64_t L = cfg.d_sae;
  const int64_t k = cfg.k;
  ws.xc.resize(static_cast<size_t>(B * D));
  size_thread_blocks(ws.z, kRowChunk * L);
  size_selection(B, L, k, ws);
  prepare_auxk(cfg, batch, ws);
  const EncoderPanels<T> panels = pack_encoder_panels(p.W_enc, p.b_enc, D, L, ws.enc_panel_w, ws.enc_panel_b);
  // This process's blocks: all of them, or its share under data-parallel training.
  const int64_t n_blocks = (B + kRowChunk - 1) / kRowChunk;
  const auto block_of = [&](int q) { return n_blocks * q / ws.share_ranks; };
  const int64_t b0 = block_of(ws.share_rank);
  const int64_t b1 = block_of(ws.share_rank + 1);
  parallel_for(n_blocks, [&](int64_t b) {
    const int64_t r0 = b * kRowChunk;
    const int64_t r1 = std::min(B, r0 + kRowChunk);
    T* xc = ws.xc.data();
    for (int64_t r = r0; r < r1; ++r) {
      for (int64_t d = 0; d < D; ++d)
        xc[r * D + d] = cfg.apply_b_dec_to_input ? x[r * D + d] - p.b_dec[d] : x[r * D + d];
    }
    if (b < b0 || b >= b1) return;
    T* z = thread_block(ws.z, kRowChunk * L);
    encoder_block(panels, xc + r0 * D, r1 - r0, z, L);
    select_rows(z, r0, r1, L, k, ws);
    select_auxk_rows(z, r0, r1, L, ws);
  });
  if (ws.share_ranks > 1) {
    // Every share's selections, in place: rows [block_of(q) * 64, block_of(q + 1) * 64) come from rank q.
    const auto gather = [&](auto& v, int64_t per_row) {
      using E = typename std::decay_t<decltype(v)>::value_type;
      std::vector<int64_t> offsets;
      for (int q = 0; q <= ws.share_ranks; ++q)
        offsets.push_back(std::min(B, block_of(q) * kRowChunk) * per_row * static_cast<int64_t>(sizeof(E)));
      cluster::all_gather_segments(v.data(), offsets);
    };
    gather(ws.sel_idx, k);
    gather(ws.sel_act, k);
    gather(ws.sel_count, 1);
    if (ws.aux_k_eff > 0) {
      gather(ws.aux_sel_idx, ws.aux_k_eff);
      gather(ws.aux_sel_act, ws.aux_k_eff);
      gather(ws.aux_sel_count, 1);
    }
  }
  compact_rows<T>(B, k, ws.sel_count, ws.sel_idx, ws.sel_act, ws.row_ptr, ws.idx, ws.act);
}

// The three stages of sparse_loss_backward. Together they are the one hot loop of TopK-family training (the
// encoder GEMM aside); each stage is a single pass over the batch's sparse entries and keeps its work in
// cache, which is why a stage is longer than a helper elsewhere.

// Stage 1: the nested-prefix reconstructions, their loss terms, and with gradients each active entry's
// d loss / d z and the offsets where each row's entries enter each gradient latent range.
template <typename T>
SaeLossParts sparse_reconstruction(const SaeConfig& cfg, const SaeView<const T>& p, bool with_grads,
                                   const SaeBatch<T>& batch, SaeWorkspace<T>& ws,
                                   const std::vector<int64_t>& prefix_ends,
                                   const std::vector<double>& prefix_weights) {
  const int64_t B = batch.n_rows;
  const int64_t D = cfg.d_in;
  const int64_t L = cfg.d_sae;
  const auto m = static_cast<int64_t>(prefix_ends.size());
  const T* y = batch.y();  // the decoder's target: x, or a transcoder's target rows
  const int64_t nnz = ws.row_ptr[static_cast<size_t>(B)];
  const T two_over_b = T(2) / static_cast<T>(B);

  // Reconstructions of the nested prefixes, accumulated in place in ws.x_hat (a gather of the active W_dec
  // rows). ws.up[r, j] first holds w_j (2/B)(x_hat_j - y); the suffix sum below turns it into d loss / d
  // x_hat seen by a latent of group j (a latent of group j is in prefixes >= j).
  ws.x_hat.resize(static_cast<size_t>(B * D));
  ws.up.resize(static_cast<size_t>(B * m * D));
  ws.row_err.resize(static_cast<size_t>(B * m));
  // Group of each latent: the first prefix that contains it.
  ws.group.resize(static_cast<size_t>(L));
  for (int64_t i = 0, j = 0; i < L; ++i) {
    while (i >= prefix_ends[static_cast<size_t>(j)]) ++j;
    ws.group[static_cast<size_t>(i)] = static_cast<int32_t>(j);
  }
  // With gradients, also d loss / d z of every active entry (u of its latent's group . W_dec,i; the ReLU
  // passes it, z = f > 0) while the row is in cache, and where each row's entries cross into the next
  // gradient latent range (the gradient pass below).
  const int64_t n_ranges = (L + kGradLatents - 1) / kGradLatents;
  if (with_grads) {
    ws.dz_entry.resize(static_cast<size_t>(nnz));
    ws.range_ptr.resize(static_cast<size_t>(B * (n_ranges + 1)));
  }
  parallel_chunks(B, kRowChunk, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      T* acc = ws.x_hat.data() + r * D;
      std::copy_n(p.b_dec, D, acc);
      int64_t e = ws.row_ptr[static_cast<size_t>(r)];
      const int64_t e_end = ws.row_ptr[static_cast<size_t>(r + 1)];
      for (int64_t j = 0; j < m; ++j) {
        const int64_t seg = e;
        while (e < e_end && ws.idx[static_cast<size_t>(e)] < prefix_ends[static_cast<size_t>(j)]) ++e;
        accumulate_rows<T>(acc, ws.idx.data() + seg, ws.act.data() + seg, e - seg, p.W_dec, D);
        T* u = ws.up.data() + (r * m + j) * D;
        const auto wj = static_cast<T>(prefix_weights[static_cast<size_t>(j)]);
        ws.row_err[static_cast<size_t>(r * m + j)] = scaled_diff_sq<T>(acc, y + r * D, wj * two_over_b, u, D);
      }
      for (int64_t j = m - 2; j >= 0; --j) {
        T* u = ws.up.data() + (r * m + j) * D;
        const T* next = u + D;
        for (int64_t d = 0; d < D; ++d) u[d] += next[d];
      }
      if (with_grads) {
        const int64_t e0 = ws.row_ptr[static_cast<size_t>(r)];
        int32_t* rp = ws.range_ptr.data() + r * (n_ranges + 1);
        int64_t q = 0;
        for (int64_t e1 = e0; e1 < e_end; ++e1) {
          const int64_t i = ws.idx[static_cast<size_t>(e1)];
          while (q * kGradLatents <= i) rp[q++] = static_cast<int32_t>(e1 - e0);
          const T* u = ws.up.data() + (r * m + ws.group[static_cast<size_t>(i)]) * D;
          ws.dz_entry[static_cast<size_t>(e1)] = dot_lanes(u, p.W_dec + i * D, D);
        }
        while (q <= n_ranges) rp[q++] = static_cast<int32_t>(e_end - e0);
      }
    }
  });
  SaeLossParts out;
  double recon = 0;
  for (int64_t j = 0; j < m; ++j) {
    double s = 0;
    for (int64_t r = 0; r < B; ++r) s += ws.row_err[static_cast<size_t>(r * m + j)];
    s /= static_cast<double>(B);
    recon += prefix_weights[static_cast<size_t>(j)] * s;
    if (j == m - 1) out.mse = s;
  }
  out.loss = recon;
  out.l0 = static_cast<double>(nnz) / static_cast<double>(B);
  out.explained_variance = batch_explained_variance(y, ws.x_hat.data(), B, D);
  ws.fired.assign(static_cast<size_t>(L), 0);
  double min_active = 0;
  for (int64_t e = 0; e < nnz; ++e) {
    ws.fired[static_cast<size_t>(ws.idx[static_cast<size_t>(e)])] = 1;
    const auto a = static_cast<double>(ws.act[static_cast<size_t>(e)]);
    if (e == 0 || a < min_active) min_active = a;
  }
  ws.min_active = min_active;
  return out;
}

// Stage 2: AuxK over the dead latents (adds to out.aux and out.loss; leaves the AuxK entries in ws).
template <typename T>
void sparse_auxk(const SaeConfig& cfg, const SaeView<const T>& p, const SaeBatch<T>& batch,
                 SaeWorkspace<T>& ws, SaeLossParts& out) {
  const int64_t B = batch.n_rows;
  const int64_t D = cfg.d_in;
  const T* y = batch.y();
  const T two_over_b = T(2) / static_cast<T>(B);

  // AuxK over the dead latents: per row, the top k_eff pre-activations among them, already selected
  // (ws.aux_sel_*: select_auxk, or fused in encode_select_topk).
  const auto n_dead = static_cast<int64_t>(ws.dead_list.size());
  const int64_t k_aux = cfg.resolved_k_aux();
  const int64_t k_eff = ws.aux_k_eff;
  if (k_eff > 0) {
    const bool fresh_residual =
        !ws.freeze_aux_residual || ws.aux_residual.size() != static_cast<size_t>(B * D);
    ws.aux_residual.resize(static_cast<size_t>(B * D));
    ws.aux_grad.resize(static_cast<size_t>(B * D));
    ws.aux_err.resize(static_cast<size_t>(B));
    const double scale = std::min(1.0, static_cast<double>(n_dead) / static_cast<double>(k_aux));
    const auto gscale = static_cast<T>(cfg.aux_coefficient * scale) * two_over_b;
    parallel_chunks(B, kRowChunk, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        T* res = ws.aux_residual.data() + r * D;
        if (fresh_residual) {
          for (int64_t d = 0; d < D; ++d) res[d] = y[r * D + d] - ws.x_hat[static_cast<size_t>(r * D + d)];
        }
        T* acc = ws.aux_grad.data() + r * D;
        std::fill_n(acc, D, T(0));
        const int64_t n = ws.aux_sel_count[static_cast<size_t>(r)];
        for (int64_t j = 0; j < n; ++j) {
          const int32_t i = ws.aux_sel_idx[static_cast<size_t>(r * k_eff + j)];
          axpy<T>(acc, ws.aux_sel_act[static_cast<size_t>(r * k_eff + j)],
                  p.W_dec + static_cast<int64_t>(i) * D, D);
        }
        ws.aux_err[static_cast<size_t>(r)] = scaled_diff_sq<T>(acc, res, gscale, acc, D);
      }
    });
    compact_rows<T>(B, k_eff, ws.aux_sel_count, ws.aux_sel_idx, ws.aux_sel_act, ws.aux_row_ptr, ws.aux_idx,
                    ws.aux_act);
    double s = 0;
    for (int64_t r = 0; r < B; ++r) s += ws.aux_err[static_cast<size_t>(r)];
    out.aux = scale * s / static_cast<double>(B);
    out.loss += cfg.aux_coefficient * out.aux;
  } else {
    ws.aux_row_ptr.assign(static_cast<size_t>(B + 1), 0);
    ws.aux_idx.clear();
    ws.aux_act.clear();
  }
}

// Stage 3: every gradient, from the entries and d loss / d x_hat of stages 1 and 2.
template <typename T>
void sparse_gradients(const SaeConfig& cfg, const SaeView<const T>& p, const SaeView<T>& g, int64_t B,
                      int64_t m, SaeWorkspace<T>& ws) {
  const int64_t D = cfg.d_in;
  const int64_t L = cfg.d_sae;
  const int64_t n_ranges = (L + kGradLatents - 1) / kGradLatents;

  // d loss / d z of every AuxK entry: its row's AuxK residual gradient . W_dec,i (signed pre-activations:
  // no ReLU).
  const auto n_aux = static_cast<int64_t>(ws.aux_idx.size());
  ws.aux_dz.resize(static_cast<size_t>(n_aux));
  if (n_aux > 0) {
    parallel_chunks(B, kRowChunk, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const T* u = ws.aux_grad.data() + r * D;
        for (int64_t e = ws.aux_row_ptr[static_cast<size_t>(r)];
             e < ws.aux_row_ptr[static_cast<size_t>(r + 1)]; ++e) {
          ws.aux_dz[static_cast<size_t>(e)] =
              dot_lanes(u, p.W_dec + static_cast<int64_t>(ws.aux_idx[static_cast<size_t>(e)]) * D, D);
        }
      }
    });
  }
  // Weight gradients, row-major: each task owns a fixed range of kGradLatents latents (their W_dec gradient
  // rows, W_enc gradient columns in a transposed [L, D] buffer, and b_enc entries, all in cache) and streams
  // the batch rows in order, adding each entry of its range: dW_dec,i += f u, dW_enc[:, i] += dz xc,
  // db_enc,i += dz, main entries of a row before its AuxK entries. u is d loss / d x_hat of the entry's row:
  // the latent's prefix group for a main entry, the AuxK residual gradient for an AuxK one. Every latent
  // sums its entries in row order whatever the thread count.
  ws.dwenc_t.resize(static_cast<size_t>(L * D));
  parallel_chunks(L, kGradLatents, [&](int64_t i0, int64_t i1) {
    const int64_t q = i0 / kGradLatents;
    T* gdec = g.W_dec;
    T* genc = ws.dwenc_t.data();
    std::fill(gdec + i0 * D, gdec + i1 * D, T(0));
    std::fill(genc + i0 * D, genc + i1 * D, T(0));
    std::fill(g.b_enc + i0, g.b_enc + i1, T(0));
    for (int64_t r = 0; r < B; ++r) {
      const T* xr = ws.xc.data() + r * D;
      const int64_t base = ws.row_ptr[static_cast<size_t>(r)];
      const int32_t* rp = ws.range_ptr.data() + r * (n_ranges + 1);
      const int64_t e_stop = base + rp[q + 1];
      for (int64_t e = base + rp[q]; e < e_stop; ++e) {
        const int64_t i = ws.idx[static_cast<size_t>(e)];

        const T dz = ws.dz_entry[static_cast<size_t>(e)];
        const T* u = ws.up.data() + (r * m + ws.group[static_cast<size_t>(i)]) * D;
        g.b_enc[i] += dz;
        axpy2<T>(gdec + i * D, ws.act[static_cast<size_t>(e)], u, genc + i * D, dz, xr, D);
      }
      if (n_aux > 0) {
        const T* u = ws.aux_grad.data() + r * D;
        for (int64_t e = ws.aux_row_ptr[static_cast<size_t>(r)];
             e < ws.aux_row_ptr[static_cast<size_t>(r + 1)]; ++e) {
          const int64_t i = ws.aux_idx[static_cast<size_t>(e)];
          if (i < i0 || i >= i1) continue;
          const T dz = ws.aux_dz[static_cast<size_t>(e)];
          g.b_enc[i] += dz;
          axpy2<T>(gdec + i * D, ws.aux_act[static_cast<size_t>(e)], u, genc + i * D, dz, xr, D);
        }
      }
    }
    // The task's W_enc gradient columns, transposed into place while its rows are still in cache.
    constexpr int64_t kTile = 16;
    for (int64_t t0 = i0; t0 < i1; t0 += kTile) {
      const int64_t t1 = std::min(i1, t0 + kTile);
      for (int64_t d = 0; d < D; ++d) {
        for (int64_t i = t0; i < t1; ++i) g.W_enc[d * L + i] = genc[i * D + d];
      }
    }
  });
  // b_dec: in every prefix reconstruction (ws.up[r, 0] sums them), and minus through the encoder input.
  column_sums<T>(ws.up.data(), B, D, m * D, g.b_dec, false);
  if (cfg.apply_b_dec_to_input) {
    for (int64_t d = 0; d < D; ++d) g.b_dec[d] -= dot_lanes(p.W_enc + d * L, g.b_enc, L);
  }
}

template <typename T>
SaeLossParts sparse_loss_backward(const SaeConfig& cfg, const SaeView<const T>& p, const SaeView<T>* g,
                                  const SaeBatch<T>& batch, SaeWorkspace<T>& ws,
                                  const std::vector<int64_t>& prefix_ends,
                                  const std::vector<double>& prefix_weights) {
  SaeLossParts out = sparse_reconstruction(cfg, p, g != nullptr, batch, ws, prefix_ends, prefix_weights);
  sparse_auxk(cfg, p, batch, ws, out);
  if (g == nullptr) return out;
  sparse_gradients(cfg, p, *g, batch.n_rows, static_cast<int64_t>(prefix_ends.size()), ws);
  return out;
}

template <typename T>
SaeLossParts sparse_forward_no_aux(const SaeConfig& cfg, const SaeView<const T>& p, bool with_grads,
                                   const SaeBatch<T>& batch, SaeWorkspace<T>& ws) {
  SaeLossParts out = sparse_reconstruction(cfg, p, with_grads, batch, ws, {cfg.d_sae}, {1.0});
  ws.aux_row_ptr.assign(static_cast<size_t>(batch.n_rows + 1), 0);
  ws.aux_idx.clear();
  ws.aux_act.clear();
  return out;
}

template <typename T>
void sparse_backward_no_aux(const SaeConfig& cfg, const SaeView<const T>& p, const SaeView<T>& g, int64_t B,
                            SaeWorkspace<T>& ws) {
  sparse_gradients(cfg, p, g, B, 1, ws);
}

template <typename T>
void encode_select_above(const SaeConfig& cfg, const SaeView<const T>& p, const T* x, int64_t B,
                         SaeWorkspace<T>& ws, const T* floor) {
  const int64_t D = cfg.d_in;
  const int64_t L = cfg.d_sae;
  const int64_t n_chunks = (B + kRowChunk - 1) / kRowChunk;
  ws.xc.resize(static_cast<size_t>(B * D));
  size_thread_blocks(ws.z, kRowChunk * L);
  ws.sel_count.resize(static_cast<size_t>(B));
  ws.chunk_idx.resize(static_cast<size_t>(n_chunks));
  ws.chunk_act.resize(static_cast<size_t>(n_chunks));
  const EncoderPanels<T> panels = pack_encoder_panels(p.W_enc, p.b_enc, D, L, ws.enc_panel_w, ws.enc_panel_b);
  // Encode a block of rows into this thread's scratch and keep its selected entries while it is in cache.
  parallel_chunks(B, kRowChunk, [&](int64_t r0, int64_t r1) {
    const int64_t c = r0 / kRowChunk;
    T* xc = ws.xc.data();
    T* z = thread_block(ws.z, kRowChunk * L);
    for (int64_t r = r0; r < r1; ++r) {
      for (int64_t d = 0; d < D; ++d)
        xc[r * D + d] = cfg.apply_b_dec_to_input ? x[r * D + d] - p.b_dec[d] : x[r * D + d];
    }
    encoder_block(panels, xc + r0 * D, r1 - r0, z, L);
    std::vector<int32_t>& ci = ws.chunk_idx[static_cast<size_t>(c)];
    std::vector<T>& ca = ws.chunk_act[static_cast<size_t>(c)];
    ci.clear();
    ca.clear();
    for (int64_t r = r0; r < r1; ++r) {
      const T* zr = z + (r - r0) * L;
      const size_t before = ci.size();
      for (int64_t i = 0; i < L; ++i) {
        const T lo = floor != nullptr ? floor[i] : T(0);
        if (zr[i] > lo) {
          ci.push_back(static_cast<int32_t>(i));
          ca.push_back(zr[i]);
        }
      }
      ws.sel_count[static_cast<size_t>(r)] = static_cast<int64_t>(ci.size() - before);
    }
  });
  ws.row_ptr.resize(static_cast<size_t>(B + 1));
  ws.row_ptr[0] = 0;
  for (int64_t r = 0; r < B; ++r) {
    ws.row_ptr[static_cast<size_t>(r + 1)] =
        ws.row_ptr[static_cast<size_t>(r)] + ws.sel_count[static_cast<size_t>(r)];
  }
  const int64_t nnz = ws.row_ptr[static_cast<size_t>(B)];
  ws.idx.resize(static_cast<size_t>(nnz));
  ws.act.resize(static_cast<size_t>(nnz));
  parallel_for(n_chunks, [&](int64_t c) {
    const auto at = static_cast<std::ptrdiff_t>(ws.row_ptr[static_cast<size_t>(c * kRowChunk)]);
    const std::vector<int32_t>& ci = ws.chunk_idx[static_cast<size_t>(c)];
    const std::vector<T>& ca = ws.chunk_act[static_cast<size_t>(c)];
    std::copy(ci.begin(), ci.end(), ws.idx.begin() + at);
    std::copy(ca.begin(), ca.end(), ws.act.begin() + at);
  });
}

}  // namespace sae_detail

template <typename T>
SaeLossParts topk_loss_backward(const SaeConfig& cfg, const SaeView<const T>& p, const SaeView<T>* g,
                                const SaeBatch<T>& batch, SaeWorkspace<T>& ws) {
  sae_detail::encode_select_topk(cfg, p, batch, ws);
  return sae_detail::sparse_loss_backward(cfg, p, g, batch, ws, {cfg.d_sae}, {1.0});
}

#define HUSAI_INSTANTIATE(T)                                                                               \
  template SaeLossParts sae_detail::sparse_loss_backward<T>(                                               \
      const SaeConfig&, const SaeView<const T>&, const SaeView<T>*, const SaeBatch<T>&, SaeWorkspace<T>&,  \
      const std::vector<int64_t>&, const std::vector<double>&);                                            \
  template SaeLossParts sae_detail::sparse_forward_no_aux<T>(const SaeConfig&, const SaeView<const T>&,    \
                                                             bool, const SaeBatch<T>&, SaeWorkspace<T>&);  \
  template void sae_detail::sparse_backward_no_aux<T>(const SaeConfig&, const SaeView<const T>&,           \
                                                      const SaeView<T>&, int64_t, SaeWorkspace<T>&);       \
  template void sae_detail::encode_select_above<T>(const SaeConfig&, const SaeView<const T>&, const T*,    \
                                                   int64_t, SaeWorkspace<T>&, const T*);                   \
  template void sae_detail::select_topk_per_row<T>(const T*, int64_t, int64_t, int64_t, SaeWorkspace<T>&); \
  template void sae_detail::select_auxk<T>(const SaeConfig&, const SaeBatch<T>&, const T*, SaeWorkspace<T>&);
HUSAI_INSTANTIATE(float)
HUSAI_INSTANTIATE(double)
#undef HUSAI_INSTANTIATE

namespace sae_detail {

std::vector<SaeKey> topk_family_keys() {
  return {
      {"sae.k",
       [](ConfigSchema& s) -> FieldSpec& {
         return s
             .add_int("sae.k", SaeConfig{}.k,
                      "active latents per row (mean per row for batch-level selections)")
             .min(1);
       },
       [](const Config& c, SaeConfig& m) { m.k = c.get_int("sae.k"); }},
      {"sae.k_aux",
       [](ConfigSchema& s) -> FieldSpec& {
         return s.add_int("sae.k_aux", nullptr, "AuxK latents per row; null = d_in / 2").nullable().min(1);
       },
       [](const Config& c, SaeConfig& m) { m.k_aux = c.is_null("sae.k_aux") ? 0 : c.get_int("sae.k_aux"); }},
      {"sae.aux_coefficient",
       [](ConfigSchema& s) -> FieldSpec& {
         return s
             .add_float("sae.aux_coefficient", SaeConfig{}.aux_coefficient, "AuxK weight (0 disables AuxK)")
             .min(0.0);
       },
       [](const Config& c, SaeConfig& m) { m.aux_coefficient = c.get_double("sae.aux_coefficient"); }},
      {"sae.dead_window",
       [](ConfigSchema& s) -> FieldSpec& {
         return s
             .add_int("sae.dead_window", SaeConfig{}.dead_window,
                      "samples without firing after which a latent is dead (AuxK)")
             .min(1);
       },
       [](const Config& c, SaeConfig& m) { m.dead_window = c.get_int("sae.dead_window"); }},
  };
}

void validate_topk_family(const SaeConfig& cfg) {
  if (cfg.k < 1) throw Error("k must be >= 1").key("sae.k");
  if (cfg.k > cfg.d_sae) {
    throw Error("k = " + std::to_string(cfg.k) + " exceeds d_sae = " + std::to_string(cfg.d_sae) +
                ": a row cannot have more active latents than the dictionary has")
        .key("sae.k");
  }
}

}  // namespace sae_detail

namespace {

// SAELens topk: f = ReLU(TopK_k(xc W_enc + b_enc)) per row, ties to the lower latent index.
void topk_activate(const SaeModel& sae, float* z, int64_t n_rows) {
  const int64_t L = sae.d_sae;
  const int64_t k = sae.k;
  std::vector<int32_t> cand(static_cast<size_t>(L));
  std::vector<float> keep(static_cast<size_t>(k));
  for (int64_t r = 0; r < n_rows; ++r) {
    float* zr = z + r * L;
    for (int64_t i = 0; i < L; ++i) zr[i] += sae.b_enc[static_cast<size_t>(i)];
    std::iota(cand.begin(), cand.end(), 0);
    std::nth_element(cand.begin(), cand.begin() + (k - 1), cand.end(),
                     [zr](int32_t a, int32_t b) { return zr[a] > zr[b] || (zr[a] == zr[b] && a < b); });
    for (int64_t j = 0; j < k; ++j) keep[static_cast<size_t>(j)] = zr[cand[static_cast<size_t>(j)]];
    std::fill(zr, zr + L, 0.0f);
    for (int64_t j = 0; j < k; ++j)
      zr[cand[static_cast<size_t>(j)]] = std::max(keep[static_cast<size_t>(j)], 0.0f);
  }
}

// k from cfg "k", or the pre-v6 activation_fn_kwargs.k.
void topk_read(const nlohmann::json& cfg, const std::string& cfg_path, const SafetensorsFile& /*weights*/,
               SaeModel& sae) {
  if (cfg.contains("k") && !cfg.at("k").is_null()) {
    sae.k = saelens_cfg_int(cfg, "k", cfg_path);
  } else if (cfg.contains("activation_fn_kwargs") && cfg.at("activation_fn_kwargs").is_object() &&
             cfg.at("activation_fn_kwargs").contains("k")) {
    sae.k = saelens_cfg_int(cfg.at("activation_fn_kwargs"), "k", cfg_path);
  } else {
    throw Error("topk SAE without 'k' in cfg.json").file(cfg_path).key("k");
  }
  if (sae.k > sae.d_sae) {
    throw Error("topk k = " + std::to_string(sae.k) + " exceeds d_sae = " + std::to_string(sae.d_sae))
        .file(cfg_path)
        .key("k");
  }
}

void topk_validate(const SaeModel& sae, const std::string& where) {
  if (sae.k < 1 || sae.k > sae.d_sae) {
    throw Error("topk k = " + std::to_string(sae.k) + " outside [1, d_sae = " + std::to_string(sae.d_sae) +
                "]")
        .file(where);
  }
}

void topk_write_cfg(const SaeModel& sae, nlohmann::json& cfg) {
  cfg["k"] = sae.k;
  cfg["rescale_acts_by_decoder_norm"] = false;
}

const SaeInferenceKind kTopK = [] {
  SaeInferenceKind k;
  k.name = "topk";
  k.read = topk_read;
  k.validate = topk_validate;
  k.write_cfg = topk_write_cfg;
  k.activate = topk_activate;
  return k;
}();

void topk_export(const SaeConfig& cfg, const SaeLayout& /*layout*/, const float* /*params*/,
                 const SaeRunningState& /*state*/, SaeModel& sae) {
  sae.k = cfg.k;
}

}  // namespace

const SaeArchitecture& topk_architecture() {
  static const SaeArchitecture arch = [] {
    SaeArchitecture a;
    a.name = "topk";
    a.summary = "the k largest pre-activations per row, AuxK on dead latents (Gao et al. 2024; SAELens topk)";
    a.inference = &kTopK;
    a.writes_all_grads = true;
    a.keys = sae_detail::topk_family_keys();
    a.loss_backward_f32 = topk_loss_backward<float>;
    a.loss_backward_f64 = topk_loss_backward<double>;
    a.validate = sae_detail::validate_topk_family;
    a.export_tensors = topk_export;
    return a;
  }();
  return arch;
}

}  // namespace husai
