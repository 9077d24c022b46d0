#include "husai/experiments/catalog.hpp"

namespace husai {

const std::vector<ExperimentDef>& experiment_catalog() {
  static const std::vector<ExperimentDef> catalog = {
      phase4a_experiment(),           ablations_experiment(),       adaptive_l0_experiment(),
      release_gate_experiment(),      benchmark_slice_experiment(), consistency_sweep_experiment(),
      transformer_seeds_experiment(),
  };
  return catalog;
}

}  // namespace husai
