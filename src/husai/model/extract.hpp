#pragma once

// `husai extract`: activations at one TransformerLens hook point and position for every pair.

#include <optional>
#include <string>

#include "husai/model/model_io.hpp"
#include "husai/model/transformer.hpp"

namespace husai {

struct ExtractSpec {
  int64_t layer = -1;  // -1: last layer
  HookSite site = HookSite::ResidPost;
  std::string position = "answer";  // "answer" (the '=' position), "all", or an index (negative from the end)
  int64_t batch_size = 2048;
  // A second hook point captured in the same forward passes into its own file (a transcoder's target, e.g.
  // resid_mid -> mlp_out): the same rows in the same order, its own hook metadata.
  std::optional<HookSite> target_site;
  std::optional<int64_t> target_layer;  // unset: `layer`
  // > 0: each output is a folder of shards shard_00000.safetensors, ... of at most shard_rows rows each (the
  // layout train-sae, eval-sae and compare read as one file, rows concatenated in name order).
  int64_t shard_rows = 0;
};

struct ExtractSummary {
  int64_t rows = 0;
  int64_t d_model = 0;
  std::string hook_name;
  std::string position;
  std::string target_hook_name;  // "" without a target site
};

// A layer index as the CLI takes it (-1 = last, negative counts from the end), checked against n_layers.
int64_t resolve_layer_index(int64_t layer, int64_t n_layers);
// One position: "answer" (the '=' position) or an integer (negative counts from the end), checked against
// n_ctx. "all" is the caller's to handle.
int64_t resolve_position_index(const std::string& position, const ModularTask& task);

// Writes a safetensors file: activations [N, d_model] F32 (one position: N = p^2 rows in pair order;
// "all": pair-major rows pair*n_ctx + pos plus an I64 `position`), a, b, labels, is_train (I64), and
// metadata (model hash and path, hook_name, layer, site, position, answer_position, modulus).
// With spec.target_site, target_out_path receives the same layout for the target hook point. With
// spec.shard_rows, each path is a folder of shards (every tensor cut by rows; metadata adds shard_index,
// shard_first_row, n_shards, total_rows), written into a temporary folder and renamed into place.
ExtractSummary extract_activations(const LoadedModel& model, const ExtractSpec& spec,
                                   const std::string& out_path, bool quiet,
                                   const std::string& target_out_path = "");

}  // namespace husai
