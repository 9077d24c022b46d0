#pragma once

// Parallel tasks that need scratch memory and may fail: the shared scaffold of the pairwise similarity loops
// (metrics/stability.cpp, metrics/activation_similarity.cpp).

#include <algorithm>
#include <cstdint>
#include <exception>
#include <string>
#include <vector>

#include <omp.h>

#include "husai/core/error.hpp"
#include "husai/core/threading.hpp"

namespace husai {

// Runs body(task, workspace) for every task in parallel with one Workspace per thread (which one a task
// gets never changes its result, so a workspace only holds scratch memory), and rethrows the first failing
// task's error in task order after the loop (parallel_for bodies must not throw), prefixed with
// describe(task).
template <typename Workspace, typename Body, typename Describe>
void parallel_for_with_workspace(int64_t n_tasks, const Body& body, const Describe& describe) {
  std::vector<Workspace> workspaces(static_cast<size_t>(std::max(1, num_threads())));
  std::vector<std::string> errors(static_cast<size_t>(std::max<int64_t>(0, n_tasks)));
  parallel_for(n_tasks, [&](int64_t t) {
    const int tid = std::min(omp_get_thread_num(), static_cast<int>(workspaces.size()) - 1);
    try {
      body(t, workspaces[static_cast<size_t>(tid)]);
    } catch (const std::exception& e) {
      errors[static_cast<size_t>(t)] = e.what();
    }
  });
  for (int64_t t = 0; t < n_tasks; ++t) {
    if (!errors[static_cast<size_t>(t)].empty())
      throw Error(describe(t) + ": " + errors[static_cast<size_t>(t)]);
  }
}

}  // namespace husai
