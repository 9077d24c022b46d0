#pragma once

// Shared by the fuzz targets: a failed invariant must look like a crash to libFuzzer (and to the replay
// driver), with a line saying which one.

#include <cstdio>
#include <cstdlib>

#define HUSAI_FUZZ_CHECK(cond)                                                                \
  do {                                                                                        \
    if (!(cond)) {                                                                            \
      std::fprintf(stderr, "fuzz invariant failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__); \
      std::abort();                                                                           \
    }                                                                                         \
  } while (0)
