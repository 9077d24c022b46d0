#include "husai/sae/encoder_kernel.hpp"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "husai/core/error.hpp"
#include "husai/core/threading.hpp"

namespace husai::sae_detail {

template <typename T>
EncoderPanels<T> pack_encoder_panels(const T* W, const T* b, int64_t D, int64_t L, std::vector<T>& w_buf,
                                     std::vector<T>& b_buf) {
  EncoderPanels<T> out;
  out.D = D;
  out.L = L;
  out.n_panels = (L + kEncPanel - 1) / kEncPanel;
  w_buf.resize(static_cast<size_t>(out.n_panels * D * kEncPanel));
  b_buf.resize(static_cast<size_t>(out.n_panels * kEncPanel));
  parallel_for(out.n_panels, [&](int64_t p) {
    const int64_t i0 = p * kEncPanel;
    const int64_t n = std::min(kEncPanel, L - i0);
    T* dst = w_buf.data() + p * D * kEncPanel;
    for (int64_t d = 0; d < D; ++d) {
      std::copy_n(W + d * L + i0, n, dst + d * kEncPanel);
      std::fill(dst + d * kEncPanel + n, dst + (d + 1) * kEncPanel, T(0));
    }
    std::copy_n(b + i0, n, b_buf.data() + i0);
    std::fill(b_buf.data() + i0 + n, b_buf.data() + i0 + kEncPanel, T(0));
  });
  out.w = w_buf.data();
  out.bias = b_buf.data();
  return out;
}

namespace {

// Portable form: the same fused chain per element.
template <typename T>
void encoder_block_generic(const EncoderPanels<T>& pk, const T* xc, int64_t M, T* z, int64_t ldz) {
  const int64_t D = pk.D;
  T acc[kEncPanel];
  for (int64_t p = 0; p < pk.n_panels; ++p) {
    const int64_t i0 = p * kEncPanel;
    const int64_t n = std::min(kEncPanel, pk.L - i0);
    const T* w = pk.w + p * D * kEncPanel;
    for (int64_t r = 0; r < M; ++r) {
      std::copy_n(pk.bias + i0, kEncPanel, acc);
      for (int64_t d = 0; d < D; ++d) {
        const T a = xc[r * D + d];
        for (int64_t j = 0; j < kEncPanel; ++j) acc[j] = std::fma(a, w[d * kEncPanel + j], acc[j]);
      }
      std::copy_n(acc, n, z + r * ldz + i0);
    }
  }
}

// Calls tile(std::integral_constant<int, R>{}) for the R = rows (1 to 5) rows left after the full tiles of a
// kernel: the last rows as one smaller tile.
template <typename Tile>
inline void last_rows_tile(int64_t rows, const Tile& tile) {
  switch (rows) {
    case 5:
      tile(std::integral_constant<int, 5>{});
      break;
    case 4:
      tile(std::integral_constant<int, 4>{});
      break;
    case 3:
      tile(std::integral_constant<int, 3>{});
      break;
    case 2:
      tile(std::integral_constant<int, 2>{});
      break;
    case 1:
      tile(std::integral_constant<int, 1>{});
      break;
    default:
      break;
  }
}

// The AVX-512 kernel is compiled for AVX-512 on its own (target attribute) and chosen at run time, so the one
// portable x86-64-v3 binary uses it where the CPU has it. It gives the same bits as the portable form: each
// z[r, i] is the same chain (start from b_enc[i], one fused multiply-add per d in d order, each rounded
// once), only more of the chains run side by side in the wider registers. test_encoder_kernel compares the
// two byte for byte on a CPU with AVX-512.
#define HUSAI_AVX512 __attribute__((target("avx512f")))

// A tile of kRows rows x one 64-latent panel: 4 * kRows accumulators, 4 panel loads and kRows broadcasts per
// d.
template <int kRows>
HUSAI_AVX512 inline void tile_f32(const float* __restrict xc, int64_t D, const float* __restrict w,
                                  const float* bias, float* z, int64_t ldz, __mmask16 last_mask, int n_vec) {
  __m512 c[kRows][4];
  for (int j = 0; j < 4; ++j) {
    const __m512 bj = _mm512_loadu_ps(bias + 16 * j);
    for (int i = 0; i < kRows; ++i) c[i][j] = bj;
  }
  for (int64_t d = 0; d < D; ++d) {
    const __m512 b0 = _mm512_loadu_ps(w + d * kEncPanel);
    const __m512 b1 = _mm512_loadu_ps(w + d * kEncPanel + 16);
    const __m512 b2 = _mm512_loadu_ps(w + d * kEncPanel + 32);
    const __m512 b3 = _mm512_loadu_ps(w + d * kEncPanel + 48);
    for (int i = 0; i < kRows; ++i) {
      const __m512 a = _mm512_set1_ps(xc[i * D + d]);
      c[i][0] = _mm512_fmadd_ps(a, b0, c[i][0]);
      c[i][1] = _mm512_fmadd_ps(a, b1, c[i][1]);
      c[i][2] = _mm512_fmadd_ps(a, b2, c[i][2]);
      c[i][3] = _mm512_fmadd_ps(a, b3, c[i][3]);
    }
  }
  for (int i = 0; i < kRows; ++i) {
    for (int j = 0; j < n_vec; ++j) {
      if (j + 1 < n_vec) {
        _mm512_storeu_ps(z + i * ldz + 16 * j, c[i][j]);
      } else {
        _mm512_mask_storeu_ps(z + i * ldz + 16 * j, last_mask, c[i][j]);
      }
    }
  }
}

HUSAI_AVX512 void encoder_block_avx512(const EncoderPanels<float>& pk, const float* xc, int64_t M, float* z,
                                       int64_t ldz) {
  constexpr int kTileRows = 6;
  const int64_t D = pk.D;
  for (int64_t p = 0; p < pk.n_panels; ++p) {
    const int64_t i0 = p * kEncPanel;
    const int64_t n = std::min(kEncPanel, pk.L - i0);
    const int n_vec = static_cast<int>((n + 15) / 16);
    const auto last_mask = static_cast<__mmask16>(0xffffu >> (16 * n_vec - n));
    const float* w = pk.w + p * D * kEncPanel;
    const float* bias = pk.bias + i0;
    int64_t r = 0;
    for (; r + kTileRows <= M; r += kTileRows)
      tile_f32<kTileRows>(xc + r * D, D, w, bias, z + r * ldz + i0, ldz, last_mask, n_vec);
    float* zr = z + r * ldz + i0;
    last_rows_tile(M - r, [&](auto rows) HUSAI_AVX512 {
      tile_f32<decltype(rows)::value>(xc + r * D, D, w, bias, zr, ldz, last_mask, n_vec);
    });
  }
}

// The AVX2 + FMA kernel (the x86-64-v3 baseline every build targets): the classic 6 x 16 register tile, 12
// accumulators of 8 latents, 2 panel loads and 6 broadcasts per d. The same chains as the portable form (one
// fused multiply-add per d in d order, from b_enc), so the same bits; it only keeps 96 chains in registers
// instead of streaming 64 through memory per row.
#if defined(__AVX2__) && defined(__FMA__)
constexpr bool kHaveAvx2Kernel = true;

template <int kRows>
inline void tile16_avx2(const float* __restrict xc, int64_t D, const float* __restrict w, const float* bias,
                        float* z, int64_t ldz, int64_t n) {
  __m256 c[kRows][2];
  const __m256 bias0 = _mm256_loadu_ps(bias);
  const __m256 bias1 = _mm256_loadu_ps(bias + 8);
#pragma GCC unroll 8
  for (int i = 0; i < kRows; ++i) {
    c[i][0] = bias0;
    c[i][1] = bias1;
  }
  for (int64_t d = 0; d < D; ++d) {
    const __m256 w0 = _mm256_loadu_ps(w + d * kEncPanel);
    const __m256 w1 = _mm256_loadu_ps(w + d * kEncPanel + 8);
#pragma GCC unroll 8
    for (int i = 0; i < kRows; ++i) {
      const __m256 a = _mm256_broadcast_ss(xc + i * D + d);
      c[i][0] = _mm256_fmadd_ps(a, w0, c[i][0]);
      c[i][1] = _mm256_fmadd_ps(a, w1, c[i][1]);
    }
  }
  // Stores with constant register indices (the loop unrolled), so the accumulators stay in registers in the
  // d loop; a partial panel is written through lane masks, never past latent n.
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i m0 = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)), lane);
  const __m256i m1 = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n) - 8), lane);
#pragma GCC unroll 8
  for (int i = 0; i < kRows; ++i) {
    _mm256_maskstore_ps(z + i * ldz, m0, c[i][0]);
    _mm256_maskstore_ps(z + i * ldz + 8, m1, c[i][1]);
  }
}

void encoder_block_avx2(const EncoderPanels<float>& pk, const float* xc, int64_t M, float* z, int64_t ldz) {
  constexpr int kTileRows = 6;
  const int64_t D = pk.D;
  for (int64_t p = 0; p < pk.n_panels; ++p) {
    const int64_t i0 = p * kEncPanel;
    const int64_t n_panel = std::min(kEncPanel, pk.L - i0);
    for (int64_t s = 0; s < n_panel; s += 16) {
      const int64_t n = std::min<int64_t>(16, n_panel - s);
      const float* w = pk.w + p * D * kEncPanel + s;
      const float* bias = pk.bias + i0 + s;
      int64_t r = 0;
      for (; r + kTileRows <= M; r += kTileRows)
        tile16_avx2<kTileRows>(xc + r * D, D, w, bias, z + r * ldz + i0 + s, ldz, n);
      float* zr = z + r * ldz + i0 + s;
      last_rows_tile(
          M - r, [&](auto rows) { tile16_avx2<decltype(rows)::value>(xc + r * D, D, w, bias, zr, ldz, n); });
    }
  }
}
#else
constexpr bool kHaveAvx2Kernel = false;
void encoder_block_avx2(const EncoderPanels<float>&, const float*, int64_t, float*, int64_t) {
  throw Error("encoder_block: this build has no AVX2 kernel (built without -mavx2 -mfma)");
}
#endif

}  // namespace

bool encoder_avx2_available() {
  return kHaveAvx2Kernel;
}

bool encoder_avx512_available() {
  // __builtin_cpu_init first: safe even if this runs before libgcc's own start-up call (a static
  // initialiser).
  static const bool available = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") != 0;
  }();
  return available;
}

template <typename T>
void encoder_block(const EncoderPanels<T>& panels, const T* xc, int64_t M, T* z, int64_t ldz,
                   EncoderPath path) {
  if constexpr (std::is_same_v<T, float>) {
    const bool wide =
        path == EncoderPath::Avx512 || (path == EncoderPath::Auto && encoder_avx512_available());
    if (wide) {
      if (!encoder_avx512_available())
        throw Error("encoder_block: the AVX-512 path was asked for on a CPU without it");
      encoder_block_avx512(panels, xc, M, z, ldz);
      return;
    }
    if (path == EncoderPath::Avx2 || (path == EncoderPath::Auto && encoder_avx2_available())) {
      encoder_block_avx2(panels, xc, M, z, ldz);
      return;
    }
  }
  encoder_block_generic(panels, xc, M, z, ldz);
}

template EncoderPanels<float> pack_encoder_panels<float>(const float*, const float*, int64_t, int64_t,
                                                         std::vector<float>&, std::vector<float>&);
template EncoderPanels<double> pack_encoder_panels<double>(const double*, const double*, int64_t, int64_t,
                                                           std::vector<double>&, std::vector<double>&);
template void encoder_block<float>(const EncoderPanels<float>&, const float*, int64_t, float*, int64_t,
                                   EncoderPath);
template void encoder_block<double>(const EncoderPanels<double>&, const double*, int64_t, double*, int64_t,
                                    EncoderPath);

}  // namespace husai::sae_detail
