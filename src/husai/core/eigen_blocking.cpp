#include "husai/core/eigen_blocking.hpp"

#include <Eigen/Core>

namespace husai {

void fix_eigen_blocking() {
  // A function-local static: set once, thread-safely, before the first product that needs it.
  static const bool fixed = [] {
    Eigen::setCpuCacheSizes(kEigenL1CacheBytes, kEigenL2CacheBytes, kEigenL3CacheBytes);
    return true;
  }();
  (void)fixed;
}

}  // namespace husai
