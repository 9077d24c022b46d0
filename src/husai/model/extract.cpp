#include "husai/model/extract.hpp"

#include <algorithm>
#include <filesystem>

#include "husai/core/error.hpp"
#include "husai/core/progress.hpp"
#include "husai/io/safetensors.hpp"

namespace husai {

int64_t resolve_layer_index(int64_t layer, int64_t n_layers) {
  const int64_t resolved = layer < 0 ? n_layers + layer : layer;
  if (resolved < 0 || resolved >= n_layers) {
    throw Error("layer " + std::to_string(layer) + " out of range: the model has " +
                std::to_string(n_layers) + " layer(s), 0-based")
        .key("--layer");
  }
  return resolved;
}

int64_t resolve_position_index(const std::string& position, const ModularTask& task) {
  if (position == "answer") return task.answer_position();
  int64_t index = 0;
  try {
    size_t used = 0;
    index = std::stoll(position, &used);
    if (used != position.size()) throw std::invalid_argument("trailing");
  } catch (const std::exception&) {
    throw Error("position must be 'answer', 'all' or an integer, got '" + position + "'").key("--position");
  }
  if (index < 0) index += task.n_ctx();
  if (index < 0 || index >= task.n_ctx()) {
    throw Error("position " + position + " out of range for n_ctx " + std::to_string(task.n_ctx()))
        .key("--position");
  }
  return index;
}

ExtractSummary extract_activations(const LoadedModel& model, const ExtractSpec& spec,
                                   const std::string& out_path, bool quiet) {
  const TransformerConfig& cfg = model.cfg;
  const ModularTask& task = model.task;
  const int64_t layer = resolve_layer_index(spec.layer, cfg.n_layers);
  const int64_t answer = task.answer_position();
  const bool all_positions = spec.position == "all";
  const int64_t position = all_positions ? answer : resolve_position_index(spec.position, task);
  // Answer position: the prefix up to '=' suffices and the last block needs only that query.
  const bool prefix_only = !all_positions && position == answer;
  const int64_t n_pos = prefix_only ? answer + 1 : cfg.n_ctx;
  const int64_t n_query = prefix_only ? 1 : n_pos;
  const int64_t per_pair = all_positions ? cfg.n_ctx : 1;
  const int64_t n_pairs = task.n_pairs();
  const int64_t D = cfg.d_model;

  std::vector<float> acts(static_cast<size_t>(n_pairs * per_pair * D));
  const std::vector<int64_t> tokens = task.tokens();
  const ParamViews<float> pv = make_views(cfg, model.layout, const_cast<float*>(model.params.data()));
  TransformerWorkspace<float> ws;
  int64_t batch_start = 0;
  bool captured = false;
  const HookFn<float> hook = [&](int64_t l, HookSite site, float* data, int64_t B, int64_t hook_pos,
                                 int64_t first_pos) {
    if (l != layer || site != spec.site) return;
    captured = true;
    for (int64_t b = 0; b < B; ++b) {
      if (all_positions) {
        std::copy_n(data + b * hook_pos * D, hook_pos * D, acts.begin() + (batch_start + b) * per_pair * D);
      } else {
        std::copy_n(data + (b * hook_pos + position - first_pos) * D, D,
                    acts.begin() + (batch_start + b) * D);
      }
    }
  };
  Progress progress("extract", n_pairs, quiet);
  for (batch_start = 0; batch_start < n_pairs; batch_start += spec.batch_size) {
    const int64_t count = std::min(spec.batch_size, n_pairs - batch_start);
    captured = false;
    transformer_forward(cfg, pv, ws, tokens.data() + batch_start * cfg.n_ctx, count, n_pos, n_query, &hook);
    if (!captured) throw Error("internal: hook point was not reached");
    progress.update(batch_start + count);
  }
  progress.finish();

  std::vector<int64_t> a, b, labels, is_train(static_cast<size_t>(n_pairs), 0), pos;
  const std::vector<int64_t> all_labels = task.labels();
  const std::string split_path = (std::filesystem::path(model.dir) / "split.safetensors").string();
  if (std::filesystem::exists(split_path)) {
    const SafetensorsFile split = SafetensorsFile::load(split_path);
    for (const int64_t r : split.get("train_idx").to_i64()) {
      if (r < 0 || r >= n_pairs) throw Error("train_idx out of range").file(split_path);
      is_train[static_cast<size_t>(r)] = 1;
    }
  }
  std::vector<int64_t> train_flag;
  for (int64_t r = 0; r < n_pairs; ++r) {
    for (int64_t p = 0; p < per_pair; ++p) {
      a.push_back(task.a_of(r));
      b.push_back(task.b_of(r));
      labels.push_back(all_labels[static_cast<size_t>(r)]);
      train_flag.push_back(is_train[static_cast<size_t>(r)]);
      if (all_positions) pos.push_back(p);
    }
  }
  const int64_t N = n_pairs * per_pair;
  SafetensorsFile out;
  out.put("activations", TensorData::f32({N, D}, acts.data()));
  out.put("a", TensorData::i64({N}, a.data()));
  out.put("b", TensorData::i64({N}, b.data()));
  out.put("labels", TensorData::i64({N}, labels.data()));
  out.put("is_train", TensorData::i64({N}, train_flag.data()));
  if (all_positions) out.put("position", TensorData::i64({N}, pos.data()));
  const std::string hook_name = "blocks." + std::to_string(layer) + ".hook_" + hook_site_name(spec.site);
  const std::string position_text =
      all_positions ? "all" : (prefix_only ? "answer" : std::to_string(position));
  out.metadata = {{"model_sha256", model.model_sha256},
                  {"model_path", model.model_path},
                  {"hook_name", hook_name},
                  {"layer", std::to_string(layer)},
                  {"site", hook_site_name(spec.site)},
                  {"position", position_text},
                  {"position_index", all_positions ? "all" : std::to_string(position)},
                  {"answer_position", std::to_string(answer)},
                  {"modulus", std::to_string(task.modulus)},
                  {"operation", to_string(task.op)},
                  {"format", to_string(task.format)},
                  {"producer", "husai"}};
  out.save(out_path);
  return ExtractSummary{N, D, hook_name, position_text};
}

}  // namespace husai
