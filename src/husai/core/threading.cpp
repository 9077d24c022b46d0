#include "husai/core/threading.hpp"

#include <omp.h>

#include <atomic>
#include <cstdlib>
#include <string>

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

}  // namespace

void set_num_threads(int n_threads) {
  thread_count() = n_threads > 0 ? n_threads : default_threads();
}

int num_threads() {
  return thread_count().load(std::memory_order_relaxed);
}

}  // namespace husai
