#pragma once

// The experiments `husai experiment NAME` knows. Each lives in its own file of src/husai/experiments/ and
// returns its ExperimentDef (experiments/runner.hpp); catalog.cpp lists them. To add one: declare its
// factory here, define it in its own file, add one line to catalog.cpp, and add
// configs/experiments/NAME.yaml equal to its schema's defaults.

#include "husai/experiments/runner.hpp"

namespace husai {

ExperimentDef phase4a_experiment();
ExperimentDef ablations_experiment();
ExperimentDef adaptive_l0_experiment();
ExperimentDef release_gate_experiment();
ExperimentDef benchmark_slice_experiment();
ExperimentDef consistency_sweep_experiment();
ExperimentDef transformer_seeds_experiment();

}  // namespace husai
