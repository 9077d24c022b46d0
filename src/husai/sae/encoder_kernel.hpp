#pragma once

// The TopK family's encoder product z = xc W_enc + b_enc for a block of rows, as its own register-blocked
// kernel. Internal to src/husai/sae.
//
// W_enc [D, L] is first packed once per step into 64-latent panels [P][D][64] (the last panel zero-padded)
// with b_enc padded alongside, so that one block of rows times one panel streams contiguous memory. Each
// z[r, i] is one chain b_enc[i] + xc[r, 0] W[0, i] + ... + xc[r, D-1] W[D-1, i] of fused multiply-adds in d
// order, whatever the block, the tile or the thread: the result depends on neither the row blocking nor the
// thread count.

#include <cstdint>
#include <vector>

namespace husai::sae_detail {

inline constexpr int64_t kEncPanel = 64;

template <typename T>
struct EncoderPanels {
  int64_t D = 0, L = 0, n_panels = 0;
  const T* w = nullptr;     // [n_panels][D][kEncPanel]
  const T* bias = nullptr;  // [n_panels * kEncPanel]
};

// Packs W [D, L] and b [L] into w_buf / b_buf (resized; in parallel over panels) and returns their view.
template <typename T>
EncoderPanels<T> pack_encoder_panels(const T* W, const T* b, int64_t D, int64_t L, std::vector<T>& w_buf,
                                     std::vector<T>& b_buf);

// Which code computes the chains: Auto takes the AVX-512 kernel (float only) where the CPU has AVX-512F, else
// the AVX2 + FMA kernel (float; every x86-64-v3 build has it), else the portable one; all give the same bits.
// Generic / Avx2 / Avx512 force one (for the tests that compare them; Avx512 throws husai::Error on a CPU
// without it, Avx2 in a build without AVX2).
enum class EncoderPath { Auto, Generic, Avx2, Avx512 };

// Whether this CPU can run the AVX-512 kernel (checked once, at run time: the build targets x86-64-v3).
bool encoder_avx512_available();
// Whether this build has the AVX2 + FMA kernel (compiled for x86-64-v3).
bool encoder_avx2_available();

// z[r * ldz + i] = b[i] + sum_d xc[r * D + d] W[d, i] for r in [0, M), i in [0, L), single-threaded.
template <typename T>
void encoder_block(const EncoderPanels<T>& panels, const T* xc, int64_t M, T* z, int64_t ldz,
                   EncoderPath path = EncoderPath::Auto);

}  // namespace husai::sae_detail
