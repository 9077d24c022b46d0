#include "husai/model/extract.hpp"

#include <algorithm>
#include <filesystem>

#include <fmt/format.h>

#include "husai/core/error.hpp"
#include "husai/core/progress.hpp"
#include "husai/io/safetensors.hpp"

namespace husai {

namespace fs = std::filesystem;

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

namespace {

// The tensors and metadata every extracted file has besides its activations.
struct ExtractRows {
  std::vector<int64_t> a, b, labels, is_train, position;
};

ExtractRows extract_rows(const LoadedModel& model, int64_t per_pair, bool all_positions) {
  const ModularTask& task = model.task;
  const int64_t n_pairs = task.n_pairs();
  std::vector<int64_t> train_flag(static_cast<size_t>(n_pairs), 0);
  const std::vector<int64_t> all_labels = task.labels();
  const std::string split_path = (std::filesystem::path(model.dir) / "split.safetensors").string();
  if (std::filesystem::exists(split_path)) {
    const SafetensorsFile split = SafetensorsFile::load(split_path);
    for (const int64_t r : split.get("train_idx").to_i64()) {
      if (r < 0 || r >= n_pairs) throw Error("train_idx out of range").file(split_path);
      train_flag[static_cast<size_t>(r)] = 1;
    }
  }
  ExtractRows rows;
  for (int64_t r = 0; r < n_pairs; ++r) {
    for (int64_t p = 0; p < per_pair; ++p) {
      rows.a.push_back(task.a_of(r));
      rows.b.push_back(task.b_of(r));
      rows.labels.push_back(all_labels[static_cast<size_t>(r)]);
      rows.is_train.push_back(train_flag[static_cast<size_t>(r)]);
      if (all_positions) rows.position.push_back(p);
    }
  }
  return rows;
}

}  // namespace

ExtractSummary extract_activations(const LoadedModel& model, const ExtractSpec& spec,
                                   const std::string& out_path, bool quiet,
                                   const std::string& target_out_path) {
  const TransformerConfig& cfg = model.cfg;
  const ModularTask& task = model.task;
  const int64_t layer = resolve_layer_index(spec.layer, cfg.n_layers);
  const bool with_target = spec.target_site.has_value();
  if (with_target == target_out_path.empty()) {
    throw Error(with_target ? "a target site needs a target output file"
                            : "a target file needs a target site")
        .key("--target-out");
  }
  const int64_t target_layer =
      with_target ? resolve_layer_index(spec.target_layer.value_or(spec.layer), cfg.n_layers) : layer;
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
  std::vector<float> target_acts(with_target ? acts.size() : 0);
  const std::vector<int64_t> tokens = task.tokens();
  const ParamViews<float> pv = make_views(cfg, model.layout, const_cast<float*>(model.params.data()));
  TransformerWorkspace<float> ws;
  int64_t batch_start = 0;
  int captured = 0;
  const auto copy_rows = [&](const float* data, int64_t B, int64_t hook_pos, int64_t first_pos,
                             std::vector<float>& dst) {
    for (int64_t b = 0; b < B; ++b) {
      if (all_positions) {
        std::copy_n(data + b * hook_pos * D, hook_pos * D, dst.begin() + (batch_start + b) * per_pair * D);
      } else {
        std::copy_n(data + (b * hook_pos + position - first_pos) * D, D, dst.begin() + (batch_start + b) * D);
      }
    }
  };
  const HookFn<float> hook = [&](int64_t l, HookSite site, float* data, int64_t B, int64_t hook_pos,
                                 int64_t first_pos) {
    if (l == layer && site == spec.site) {
      copy_rows(data, B, hook_pos, first_pos, acts);
      ++captured;
    }
    if (with_target && l == target_layer && site == *spec.target_site) {
      copy_rows(data, B, hook_pos, first_pos, target_acts);
      ++captured;
    }
  };
  Progress progress("extract", n_pairs, quiet);
  for (batch_start = 0; batch_start < n_pairs; batch_start += spec.batch_size) {
    const int64_t count = std::min(spec.batch_size, n_pairs - batch_start);
    captured = 0;
    transformer_forward(cfg, pv, ws, tokens.data() + batch_start * cfg.n_ctx, count, n_pos, n_query, &hook);
    if (captured != (with_target ? 2 : 1)) throw Error("internal: hook point was not reached");
    progress.update(batch_start + count);
  }
  progress.finish();

  const ExtractRows rows = extract_rows(model, per_pair, all_positions);
  const int64_t N = n_pairs * per_pair;
  const std::string position_text =
      all_positions ? "all" : (prefix_only ? "answer" : std::to_string(position));
  // Rows [r0, r1) of everything into one safetensors file.
  const auto write_rows = [&](const std::string& path, const std::vector<float>& values, int64_t l,
                              HookSite site, int64_t r0, int64_t r1) {
    const int64_t n = r1 - r0;
    SafetensorsFile out;
    out.put("activations", TensorData::f32({n, D}, values.data() + r0 * D));
    out.put("a", TensorData::i64({n}, rows.a.data() + r0));
    out.put("b", TensorData::i64({n}, rows.b.data() + r0));
    out.put("labels", TensorData::i64({n}, rows.labels.data() + r0));
    out.put("is_train", TensorData::i64({n}, rows.is_train.data() + r0));
    if (all_positions) out.put("position", TensorData::i64({n}, rows.position.data() + r0));
    out.metadata = {{"model_sha256", model.model_sha256},
                    {"model_path", model.model_path},
                    {"hook_name", hook_point_name(l, site)},
                    {"layer", std::to_string(l)},
                    {"site", hook_site_name(site)},
                    {"position", position_text},
                    {"position_index", all_positions ? "all" : std::to_string(position)},
                    {"answer_position", std::to_string(answer)},
                    {"modulus", std::to_string(task.modulus)},
                    {"operation", to_string(task.op)},
                    {"format", to_string(task.format)},
                    {"producer", "husai"}};
    if (spec.shard_rows > 0) {
      out.metadata["shard_index"] = std::to_string(r0 / spec.shard_rows);
      out.metadata["shard_first_row"] = std::to_string(r0);
      out.metadata["n_shards"] = std::to_string((N + spec.shard_rows - 1) / spec.shard_rows);
      out.metadata["total_rows"] = std::to_string(N);
    }
    out.save(path);
  };
  const auto write = [&](const std::string& path, const std::vector<float>& values, int64_t l,
                         HookSite site) {
    if (spec.shard_rows <= 0) {
      write_rows(path, values, l, site, 0, N);
      return;
    }
    // Shards appear together or not at all: written into a temporary folder beside the final one, renamed.
    const fs::path final_dir(path);
    const fs::path tmp = final_dir.parent_path() / ("." + final_dir.filename().string() + ".tmp");
    std::error_code ec;
    fs::remove_all(tmp, ec);
    fs::create_directories(tmp);
    for (int64_t r0 = 0; r0 < N; r0 += spec.shard_rows) {
      const std::string name = fmt::format("shard_{:05d}.safetensors", r0 / spec.shard_rows);
      write_rows((tmp / name).string(), values, l, site, r0, std::min(N, r0 + spec.shard_rows));
    }
    fs::remove_all(final_dir, ec);
    fs::rename(tmp, final_dir, ec);
    if (ec) throw Error("cannot rename " + tmp.string() + " to " + path + ": " + ec.message());
  };
  write(out_path, acts, layer, spec.site);
  ExtractSummary summary{N, D, hook_point_name(layer, spec.site), position_text, ""};
  if (with_target) {
    write(target_out_path, target_acts, target_layer, *spec.target_site);
    summary.target_hook_name = hook_point_name(target_layer, *spec.target_site);
  }
  return summary;
}

}  // namespace husai
