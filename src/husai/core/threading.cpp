#include "husai/core/threading.hpp"

#include <omp.h>

#include <atomic>
#include <cstdlib>
#include <string>

#include "husai/core/eigen_blocking.hpp"

namespace husai {
namespace {

int default_threads() {
  if (const char* env = std::getenv("OMP_NUM_THREADS")) {
    try {
      const int n = std::stoi(env);
      if (n > 0) return n;
    } catch (...) {
      // Ignore a malformed OMP_NUM_THREADS and use every core, as OpenMP itself would.
    }
  }
  return omp_get_num_procs();
}

std::atomic<int>& thread_count() {
  static std::atomic<int> n{default_threads()};
  return n;
}

// Every binary that runs husai's parallel loops links this file, so its start-up fixes Eigen's blocking
// before main() (see core/eigen_blocking.hpp).
[[maybe_unused]] const bool kEigenBlockingFixed = (fix_eigen_blocking(), true);

}  // namespace

void set_num_threads(int n_threads) {
  fix_eigen_blocking();
  thread_count() = n_threads > 0 ? n_threads : default_threads();
}

int num_threads() {
  return thread_count().load(std::memory_order_relaxed);
}

}  // namespace husai
