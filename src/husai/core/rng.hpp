#pragma once

#include <array>
#include <cstdint>
#include <string_view>
#include <vector>

namespace husai {

// Counter-based random numbers: Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as
// 1, 2, 3", SC 2011), the generator of Random123, cuRAND and JAX. A value is a pure function of
// (key, counter), so any element of any tensor can be drawn independently of every other: results do
// not depend on thread count, iteration order or how much was drawn before.
//
// husai's convention: key = the run's 64-bit seed; counter = (stream, index), where `stream` names
// what is drawn (a parameter tensor, a shuffle of epoch e, ...) and `index` is the element.
std::array<uint32_t, 4> philox4x32_10(std::array<uint32_t, 4> counter, std::array<uint32_t, 2> key);

class Philox {
 public:
  Philox(uint64_t seed, uint64_t stream) : seed_(seed), stream_(stream) {}

  // Four 32-bit words for block `index`.
  std::array<uint32_t, 4> block(uint64_t index) const;
  // Uniform in [0, 1) with 24 random bits (exactly representable in float), element `index`.
  float uniform_f32(uint64_t index) const;
  // Uniform in [0, 1) with 53 random bits.
  double uniform_f64(uint64_t index) const;
  // Standard normal, element `index` (Box-Muller on one block: two normals per block).
  double normal(uint64_t index) const;
  // Uniform integer in [0, n), element `index` (64-bit multiply-shift; bias below 2^-32 for n < 2^32).
  uint64_t below(uint64_t index, uint64_t n) const;

 private:
  uint64_t seed_;
  uint64_t stream_;
};

// A stable 64-bit stream id for a name (FNV-1a), e.g. the parameter "blocks.0.attn.W_Q".
uint64_t stream_id(std::string_view name);

// Seeded permutation of 0..n-1 (Fisher-Yates driven by Philox(seed, stream)).
std::vector<int64_t> permutation(int64_t n, uint64_t seed, uint64_t stream);

}  // namespace husai
