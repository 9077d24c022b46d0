#pragma once

// A transformer run folder as Python users load it: model.safetensors (TransformerLens names and
// shapes, F32) + config.json (HookedTransformerConfig keys, husai's extras under task/training).

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "husai/data/modular_arithmetic.hpp"
#include "husai/model/config.hpp"
#include "husai/model/params.hpp"

namespace husai {

nlohmann::json transformer_config_json(const TransformerConfig& cfg, const ModularTask& task,
                                       const nlohmann::json& training);

// Writes the parameters under their TransformerLens names (atomic).
void save_model_safetensors(const std::string& path, const ParamLayout& layout, const float* params,
                            const std::map<std::string, std::string>& metadata = {});

// Reads parameters by name into a flat buffer laid out by `layout`; every tensor must be present with
// the right shape (errors name the file and tensor).
std::vector<float> load_model_safetensors(const std::string& path, const ParamLayout& layout);

// clang-tidy cannot prove that nlohmann::json's moves never throw (as in io/config.hpp).
// NOLINTNEXTLINE(bugprone-exception-escape)
struct LoadedModel {
  std::string dir;
  TransformerConfig cfg;
  ModularTask task;
  ParamLayout layout;
  std::vector<float> params;
  nlohmann::json config_json;
  std::string model_path;
  std::string model_sha256;
};

// Loads DIR/config.json and DIR/model.safetensors.
LoadedModel load_model_dir(const std::string& dir);

}  // namespace husai
