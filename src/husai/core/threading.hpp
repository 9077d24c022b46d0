#pragma once

#include <cstdint>

namespace husai {

// Number of threads husai's parallel loops use. Default: OMP_NUM_THREADS if set, else all cores.
// Results never depend on it: work is split into tasks whose boundaries depend only on problem sizes,
// each task is computed single-threaded, and reductions run in task order.
void set_num_threads(int n_threads);
int num_threads();

// Runs body(task) for task in [0, n_tasks) on the thread pool (dynamic schedule). body must not throw.
template <typename Body>
void parallel_for(int64_t n_tasks, const Body& body) {
  if (n_tasks <= 0) return;
  if (n_tasks == 1 || num_threads() == 1) {
    for (int64_t t = 0; t < n_tasks; ++t) body(t);
    return;
  }
#pragma omp parallel for schedule(dynamic, 1) num_threads(num_threads())
  for (int64_t t = 0; t < n_tasks; ++t) body(t);
}

// Splits [0, n) into chunks of `chunk` and runs body(begin, end) for each in parallel.
template <typename Body>
void parallel_chunks(int64_t n, int64_t chunk, const Body& body) {
  const int64_t n_chunks = (n + chunk - 1) / chunk;
  parallel_for(n_chunks, [&](int64_t c) {
    const int64_t begin = c * chunk;
    const int64_t end = begin + chunk < n ? begin + chunk : n;
    body(begin, end);
  });
}

}  // namespace husai
