#include "husai/core/rng.hpp"

#include <cmath>
#include <numbers>
#include <numeric>

namespace husai {
namespace {
// 128-bit product for the multiply-shift range reduction (GCC/Clang extension, hence __extension__).
__extension__ using uint128 = unsigned __int128;
}  // namespace

std::array<uint32_t, 4> philox4x32_10(std::array<uint32_t, 4> ctr, std::array<uint32_t, 2> key) {
  constexpr uint32_t kM0 = 0xD2511F53u;
  constexpr uint32_t kM1 = 0xCD9E8D57u;
  constexpr uint32_t kW0 = 0x9E3779B9u;
  constexpr uint32_t kW1 = 0xBB67AE85u;
  for (int round = 0; round < 10; ++round) {
    if (round > 0) {
      key[0] += kW0;
      key[1] += kW1;
    }
    const uint64_t p0 = static_cast<uint64_t>(kM0) * ctr[0];
    const uint64_t p1 = static_cast<uint64_t>(kM1) * ctr[2];
    const auto hi0 = static_cast<uint32_t>(p0 >> 32);
    const auto lo0 = static_cast<uint32_t>(p0);
    const auto hi1 = static_cast<uint32_t>(p1 >> 32);
    const auto lo1 = static_cast<uint32_t>(p1);
    ctr = {hi1 ^ ctr[1] ^ key[0], lo1, hi0 ^ ctr[3] ^ key[1], lo0};
  }
  return ctr;
}

std::array<uint32_t, 4> Philox::block(uint64_t index) const {
  return philox4x32_10({static_cast<uint32_t>(index), static_cast<uint32_t>(index >> 32),
                        static_cast<uint32_t>(stream_), static_cast<uint32_t>(stream_ >> 32)},
                       {static_cast<uint32_t>(seed_), static_cast<uint32_t>(seed_ >> 32)});
}

float Philox::uniform_f32(uint64_t index) const {
  return static_cast<float>(block(index)[0] >> 8) * (1.0f / 16777216.0f);
}

double Philox::uniform_f64(uint64_t index) const {
  const auto b = block(index);
  const uint64_t bits = (static_cast<uint64_t>(b[0]) << 21) ^ (b[1] >> 11);
  return static_cast<double>(bits & ((uint64_t{1} << 53) - 1)) * 0x1.0p-53;
}

double Philox::normal(uint64_t index) const {
  // Block index/2 gives two 53-bit uniforms; the pair (cos, sin) serves elements 2i and 2i+1.
  const auto b = block(index / 2);
  const uint64_t bits1 = ((static_cast<uint64_t>(b[0]) << 21) ^ (b[1] >> 11)) & ((uint64_t{1} << 53) - 1);
  const uint64_t bits2 = ((static_cast<uint64_t>(b[2]) << 21) ^ (b[3] >> 11)) & ((uint64_t{1} << 53) - 1);
  // u1 in (0, 1] so the log is finite.
  const double u1 = (static_cast<double>(bits1) + 1.0) * 0x1.0p-53;
  const double u2 = static_cast<double>(bits2) * 0x1.0p-53;
  const double r = std::sqrt(-2.0 * std::log(u1));
  const double angle = 2.0 * std::numbers::pi * u2;
  return (index % 2 == 0) ? r * std::cos(angle) : r * std::sin(angle);
}

uint64_t Philox::below(uint64_t index, uint64_t n) const {
  const auto b = block(index);
  const uint64_t x = (static_cast<uint64_t>(b[0]) << 32) | b[1];
  return static_cast<uint64_t>((static_cast<uint128>(x) * n) >> 64);
}

uint64_t stream_id(std::string_view name) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (const char c : name) {
    h ^= static_cast<unsigned char>(c);
    h *= 0x100000001b3ull;
  }
  return h;
}

std::vector<int64_t> permutation(int64_t n, uint64_t seed, uint64_t stream) {
  std::vector<int64_t> perm(static_cast<size_t>(n));
  std::iota(perm.begin(), perm.end(), int64_t{0});
  const Philox rng(seed, stream);
  for (int64_t i = n - 1; i > 0; --i) {
    const auto j = static_cast<int64_t>(rng.below(static_cast<uint64_t>(i), static_cast<uint64_t>(i + 1)));
    std::swap(perm[static_cast<size_t>(i)], perm[static_cast<size_t>(j)]);
  }
  return perm;
}

}  // namespace husai
