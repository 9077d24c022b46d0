#pragma once

// Eigen's GEMM splits the depth K of a product into k-blocks (kc) sized from the CPU cache sizes that it
// queries at run time (cpuid): C is then updated once per k-block, so each element of C is a different sum of
// partial sums on a machine with another L1/L2 size. husai fixes those sizes to constants before any product,
// so the blocking, and with it every GEMM result, depends only on the problem shape (and on the fixed ISA the
// build targets, see CMakeLists.txt), never on the machine.

#include <cstddef>

namespace husai {

// The sizes Eigen is told. L1 and L2 decide kc and the column blocking; L3 only needs to be non-zero (it is
// read by Eigen's multi-threaded blocking, which husai never uses: EIGEN_DONT_PARALLELIZE). They equal what
// Eigen finds on the AMD EPYC (Zen 3) development machine, so its speed there is unchanged.
inline constexpr std::ptrdiff_t kEigenL1CacheBytes = 32 * 1024;
inline constexpr std::ptrdiff_t kEigenL2CacheBytes = 512 * 1024;
inline constexpr std::ptrdiff_t kEigenL3CacheBytes = 32 * 1024 * 1024;

// Sets Eigen's cache sizes to the constants above; idempotent and cheap after the first call. It runs at
// program start-up (a static initialiser in core/threading.cpp, linked into every husai binary), and gemm(),
// set_num_threads() call it again so that no product can run with the queried sizes.
void fix_eigen_blocking();

}  // namespace husai
