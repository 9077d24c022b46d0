#include "husai/model/model_io.hpp"

#include <filesystem>

#include "husai/core/error.hpp"
#include "husai/io/json_file.hpp"
#include "husai/io/safetensors.hpp"
#include "husai/io/sha256.hpp"

namespace husai {

nlohmann::json transformer_config_json(const TransformerConfig& cfg, const ModularTask& task,
                                       const nlohmann::json& training) {
  nlohmann::json j;
  j["n_layers"] = cfg.n_layers;
  j["d_model"] = cfg.d_model;
  j["n_heads"] = cfg.n_heads;
  j["d_head"] = cfg.d_head;
  j["d_mlp"] = cfg.d_mlp;
  j["d_vocab"] = cfg.d_vocab;
  j["d_vocab_out"] = cfg.d_vocab;
  j["n_ctx"] = cfg.n_ctx;
  j["act_fn"] = to_string(cfg.act_fn);
  j["normalization_type"] = cfg.layer_norm ? nlohmann::json("LN") : nlohmann::json(nullptr);
  j["eps"] = cfg.ln_eps;
  j["attn_only"] = false;
  j["positional_embedding_type"] = "standard";
  j["task"] = {{"modulus", task.modulus},
               {"operation", to_string(task.op)},
               {"format", to_string(task.format)},
               {"answer_position", task.answer_position()}};
  j["training"] = training;
  return j;
}

void save_model_safetensors(const std::string& path, const ParamLayout& layout, const float* params,
                            const std::map<std::string, std::string>& metadata) {
  SafetensorsFile file;
  for (const ParamEntry& e : layout.entries) file.put(e.name, TensorData::f32(e.shape, params + e.offset));
  file.metadata = metadata;
  file.save(path);
}

std::vector<float> load_model_safetensors(const std::string& path, const ParamLayout& layout) {
  const SafetensorsFile file = SafetensorsFile::load(path);
  std::vector<float> params(static_cast<size_t>(layout.total));
  for (const ParamEntry& e : layout.entries) {
    const TensorData& t = file.get(e.name);
    if (t.shape != e.shape) {
      std::string want, got;
      for (const auto s : e.shape) want += (want.empty() ? "" : ",") + std::to_string(s);
      for (const auto s : t.shape) got += (got.empty() ? "" : ",") + std::to_string(s);
      throw Error("tensor '" + e.name + "' has shape [" + got + "], expected [" + want + "] from config.json")
          .file(path);
    }
    const std::vector<float> values = t.to_f32();
    std::copy(values.begin(), values.end(), params.begin() + e.offset);
  }
  return params;
}

LoadedModel load_model_dir(const std::string& dir) {
  namespace fs = std::filesystem;
  LoadedModel m;
  m.dir = dir;
  const std::string config_path = (fs::path(dir) / "config.json").string();
  m.model_path = (fs::path(dir) / "model.safetensors").string();
  if (!fs::is_directory(dir)) throw Error("model directory not found").file(dir);
  m.config_json = read_json_file(config_path);
  if (!m.config_json.is_object()) throw Error("config.json must be a JSON object").file(config_path);
  auto need_int = [&](const nlohmann::json& obj, const char* key) -> int64_t {
    if (!obj.contains(key) || !obj[key].is_number_integer()) {
      throw Error("missing or non-integer key").file(config_path).key(key);
    }
    return obj[key].get<int64_t>();
  };
  const nlohmann::json& j = m.config_json;
  try {
    m.cfg.n_layers = need_int(j, "n_layers");
    m.cfg.d_model = need_int(j, "d_model");
    m.cfg.n_heads = need_int(j, "n_heads");
    m.cfg.d_head = need_int(j, "d_head");
    m.cfg.d_mlp = need_int(j, "d_mlp");
    m.cfg.d_vocab = need_int(j, "d_vocab");
    m.cfg.n_ctx = need_int(j, "n_ctx");
    if (!j.contains("act_fn") || !j["act_fn"].is_string()) throw Error("missing act_fn").key("act_fn");
    m.cfg.act_fn = parse_act_fn(j["act_fn"].get<std::string>());
    const nlohmann::json& norm = j.value("normalization_type", nlohmann::json(nullptr));
    if (norm.is_null()) {
      m.cfg.layer_norm = false;
    } else if (norm == "LN") {
      m.cfg.layer_norm = true;
    } else {
      throw Error("unsupported normalization_type " + norm.dump() + " (husai supports \"LN\" and null)")
          .key("normalization_type");
    }
    if (j.contains("eps") && j["eps"].is_number()) m.cfg.ln_eps = j["eps"].get<double>();
    if (!j.contains("task") || !j["task"].is_object()) throw Error("missing task section").key("task");
    const nlohmann::json& t = j["task"];
    m.task.modulus = need_int(t, "modulus");
    m.task.op = parse_mod_op(t.value("operation", "add"));
    m.task.format = parse_token_format(t.value("format", "seq7"));
    m.task.validate();
    m.cfg.validate();
  } catch (Error& e) {
    if (!e.file()) e.file(config_path);
    throw;
  } catch (const nlohmann::json::exception& e) {
    // A hand-edited config.json with a value of the wrong type (e.g. "operation": 3).
    throw Error(std::string("unexpected value: ") + e.what()).file(config_path);
  }
  if (m.task.n_ctx() != m.cfg.n_ctx || m.task.d_vocab() != m.cfg.d_vocab) {
    throw Error("n_ctx/d_vocab do not match the task's token format").file(config_path);
  }
  m.layout = make_param_layout(m.cfg);
  m.params = load_model_safetensors(m.model_path, m.layout);
  m.model_sha256 = sha256_file_hex(m.model_path);
  return m;
}

}  // namespace husai
