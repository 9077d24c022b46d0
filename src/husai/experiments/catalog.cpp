#include "husai/experiments/catalog.hpp"

namespace husai {

const std::vector<ExperimentDef>& experiment_catalog() {
  static const std::vector<ExperimentDef> catalog = {
#ifdef HUSAI_HAVE_COMPARE  // CMakeLists.txt: defined once compare.cpp is in the tree
      phase4a_experiment(),
      ablations_experiment(),
      adaptive_l0_experiment(),
#endif
      release_gate_experiment(),
  };
  return catalog;
}

}  // namespace husai
