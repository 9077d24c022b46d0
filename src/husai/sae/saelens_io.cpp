#include "husai/sae/saelens_io.hpp"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <numeric>

#include "husai/core/atomic_file.hpp"
#include "husai/core/error.hpp"
#include "husai/core/gemm.hpp"
#include "husai/core/text.hpp"
#include "husai/core/threading.hpp"
#include "husai/io/safetensors.hpp"
#include "husai/sae/architecture.hpp"

namespace husai {
namespace {

namespace fs = std::filesystem;

void expect_size(const std::vector<float>& v, int64_t n, const char* name, const std::string& where) {
  if (static_cast<int64_t>(v.size()) != n) {
    throw Error(std::string("tensor '") + name + "' has " + std::to_string(v.size()) +
                " elements, expected " + std::to_string(n))
        .file(where);
  }
}

}  // namespace

std::vector<float> saelens_tensor(const SafetensorsFile& f, const std::string& name,
                                  const std::vector<int64_t>& shape) {
  const TensorData& t = f.get(name);
  if (t.shape != shape) {
    auto text = [](const std::vector<int64_t>& s) {
      std::string out = "[";
      for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
      return out + "]";
    };
    throw Error("tensor '" + name + "' has shape " + text(t.shape) + ", expected " + text(shape))
        .file(f.source_path());
  }
  return t.to_f32();
}

namespace {

// cfg.json must be a JSON object; anything else (an array, a number, invalid JSON) is refused here so that
// the lookups below never meet a value of the wrong type.
nlohmann::json parse_cfg_json(std::string_view text, const std::string& path) {
  nlohmann::json cfg;
  try {
    cfg = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw Error(std::string("invalid JSON: ") + e.what()).file(path);
  }
  if (!cfg.is_object())
    throw Error("cfg.json must be a JSON object, got " + std::string(cfg.type_name())).file(path);
  return cfg;
}

// A positive integer key ("d_in", "d_sae", "k"). Every key read from cfg.json goes through a typed helper, so
// a mistyped value is a husai::Error naming the key rather than a nlohmann type_error from deep inside.
}  // namespace

int64_t saelens_cfg_int(const nlohmann::json& cfg, const std::string& key, const std::string& path) {
  if (!cfg.contains(key) || !cfg.at(key).is_number_integer()) {
    throw Error("cfg.json lacks an integer '" + key + "'").file(path).key(key);
  }
  const nlohmann::json& v = cfg.at(key);
  if (v.is_number_unsigned() ? v.get<uint64_t>() > static_cast<uint64_t>(kMaxSaeDim)
                             : v.get<int64_t>() < 1 || v.get<int64_t>() > kMaxSaeDim) {
    throw Error("must be an integer in [1, " + std::to_string(kMaxSaeDim) + "], got " + v.dump())
        .file(path)
        .key(key);
  }
  return v.get<int64_t>();
}

namespace {

const SaeInferenceKind& kind_of(const std::string& architecture, const std::string& where) {
  const SaeInferenceKind* kind = find_sae_inference_kind(architecture);
  if (kind == nullptr) throw Error("internal: no inference kind '" + architecture + "'").file(where);
  return *kind;
}

// An optional string key; null counts as absent (SAELens writes null for unset options).
std::string cfg_string(const nlohmann::json& cfg, const std::string& key, const std::string& fallback,
                       const std::string& path) {
  if (!cfg.contains(key) || cfg.at(key).is_null()) return fallback;
  if (!cfg.at(key).is_string()) {
    throw Error("must be a string, got " + cfg.at(key).dump()).file(path).key(key);
  }
  return cfg.at(key).get<std::string>();
}

// A layer index (>= 0); absent or null reads as 0.
int64_t cfg_layer(const nlohmann::json& cfg, const std::string& key, const std::string& path) {
  if (!cfg.contains(key) || cfg.at(key).is_null()) return 0;
  const nlohmann::json& v = cfg.at(key);
  if (!v.is_number_integer() || (!v.is_number_unsigned() && v.get<int64_t>() < 0) ||
      v.get<uint64_t>() > static_cast<uint64_t>(kMaxSaeDim)) {
    throw Error("must be a layer index >= 0, got " + v.dump()).file(path).key(key);
  }
  return v.get<int64_t>();
}

bool cfg_bool(const nlohmann::json& cfg, const std::string& key, bool fallback, const std::string& path) {
  if (!cfg.contains(key) || cfg.at(key).is_null()) return fallback;
  if (!cfg.at(key).is_boolean()) {
    throw Error("must be true or false, got " + cfg.at(key).dump()).file(path).key(key);
  }
  return cfg.at(key).get<bool>();
}

}  // namespace

SaeModel saelens_from_parts(const std::string& dir, std::string_view cfg_text, const SafetensorsFile& f) {
  const std::string cfg_path = path_join(dir, "cfg.json");
  SaeModel m;
  m.source_format = "saelens";
  m.cfg = parse_cfg_json(cfg_text, cfg_path);
  m.d_in = saelens_cfg_int(m.cfg, "d_in", cfg_path);
  m.d_sae = saelens_cfg_int(m.cfg, "d_sae", cfg_path);
  m.architecture = cfg_string(m.cfg, "architecture", "standard", cfg_path);
  // Pre-v6 SAELens wrote TopK SAEs as architecture "standard" with activation_fn_str "topk".
  if (m.architecture == "standard" && cfg_string(m.cfg, "activation_fn_str", "relu", cfg_path) == "topk") {
    m.architecture = "topk";
  }
  const SaeInferenceKind* kind = find_sae_inference_kind(m.architecture);
  if (kind == nullptr) {
    kind = find_sae_transcoder_kind(m.architecture);  // "transcoder" encodes as standard, ...
    if (kind != nullptr) {
      m.transcoder = true;
      m.architecture = std::string(kind->name);
    }
  }
  if (kind == nullptr) {
    std::string known;
    for (const SaeInferenceKind* k : sae_inference_kinds())
      known += (known.empty() ? "" : ", ") + std::string(k->name);
    throw Error("unsupported SAE architecture '" + m.architecture + "' (husai reads " + known + ")")
        .file(cfg_path)
        .key("architecture");
  }
  m.apply_b_dec_to_input = cfg_bool(m.cfg, "apply_b_dec_to_input", true, cfg_path);
  // husai's topk-family transcoders keep their kind's name and carry the transcoder keys.
  if (!cfg_string(m.cfg, "hook_name_out", "", cfg_path).empty()) m.transcoder = true;
  if (m.transcoder) {
    m.d_out = saelens_cfg_int(m.cfg, "d_out", cfg_path);
    m.hook_name_out = cfg_string(m.cfg, "hook_name_out", "", cfg_path);
    m.hook_layer_out = cfg_layer(m.cfg, "hook_layer_out", cfg_path);
    m.apply_b_dec_to_input = false;  // SAELens' Transcoder never centres its input (b_dec is d_out wide)
  }
  const std::string norm = cfg_string(m.cfg, "normalize_activations", "none", cfg_path);
  if (norm != "none") {
    throw Error("normalize_activations '" + norm +
                "' is not supported: fold the scaling into the weights first (SAELens "
                "fold_activation_norm_scaling_factor) so that it reads 'none'")
        .file(cfg_path)
        .key("normalize_activations");
  }
  m.W_enc = saelens_tensor(f, "W_enc", {m.d_in, m.d_sae});
  m.W_dec = saelens_tensor(f, "W_dec", {m.d_sae, m.out_dim()});
  m.b_enc = kind->has_b_enc ? saelens_tensor(f, "b_enc", {m.d_sae})
                            : std::vector<float>(static_cast<size_t>(m.d_sae), 0.0f);
  m.b_dec = saelens_tensor(f, "b_dec", {m.out_dim()});
  if (kind->read != nullptr) {
    kind->read(m.cfg, cfg_path, f, m);
  } else {
    for (std::string_view name : kind->tensors)
      m.extra[std::string(name)] = saelens_tensor(f, std::string(name), {m.d_sae});
  }
  m.validate(dir);
  return m;
}

SaeModel sparsify_from_parts(const std::string& dir, std::string_view cfg_text, const SafetensorsFile& f) {
  const std::string& weights_path = f.source_path();
  const std::string cfg_path = path_join(dir, "cfg.json");
  SaeModel m;
  m.source_format = "sparsify";
  m.architecture = "topk";
  m.apply_b_dec_to_input = true;
  m.cfg = parse_cfg_json(cfg_text, cfg_path);
  if (f.has("W_skip"))
    throw Error("sparsify SAEs with a skip connection (W_skip) are not supported").file(weights_path);
  const TensorData& enc = f.get("encoder.weight");
  if (enc.shape.size() != 2 || enc.shape[0] < 1 || enc.shape[1] < 1) {
    throw Error("tensor 'encoder.weight' must be 2-D [M, d_in] with M, d_in >= 1").file(weights_path);
  }
  m.d_sae = enc.shape[0];
  m.d_in = enc.shape[1];
  if (m.cfg.contains("d_in") && !m.cfg.at("d_in").is_null() &&
      saelens_cfg_int(m.cfg, "d_in", cfg_path) != m.d_in) {
    throw Error("cfg.json d_in " + m.cfg.at("d_in").dump() + " disagrees with encoder.weight [M, " +
                std::to_string(m.d_in) + "]")
        .file(cfg_path)
        .key("d_in");
  }
  m.k = saelens_cfg_int(m.cfg, "k", cfg_path);
  if (m.k > m.d_sae) {
    throw Error("topk k = " + std::to_string(m.k) + " exceeds the " + std::to_string(m.d_sae) +
                " latents of encoder.weight")
        .file(cfg_path)
        .key("k");
  }
  const std::vector<float> enc_w = enc.to_f32();
  m.W_enc.resize(static_cast<size_t>(m.d_in * m.d_sae));
  for (int64_t i = 0; i < m.d_sae; ++i) {
    for (int64_t d = 0; d < m.d_in; ++d) {
      m.W_enc[static_cast<size_t>(d * m.d_sae + i)] = enc_w[static_cast<size_t>(i * m.d_in + d)];
    }
  }
  m.b_enc = saelens_tensor(f, "encoder.bias", {m.d_sae});
  m.W_dec = saelens_tensor(f, "W_dec", {m.d_sae, m.d_in});
  m.b_dec = saelens_tensor(f, "b_dec", {m.d_in});
  m.validate(dir);
  return m;
}

void SaeModel::validate(const std::string& where) const {
  if (d_in <= 0 || d_sae <= 0) throw Error("d_in and d_sae must be positive").file(where);
  if (d_in > kMaxSaeDim || d_sae > kMaxSaeDim) {
    throw Error("d_in and d_sae must be at most " + std::to_string(kMaxSaeDim)).file(where);
  }
  expect_size(W_enc, d_in * d_sae, "W_enc", where);
  if (d_out < 0 || d_out > kMaxSaeDim || (!transcoder && d_out != 0 && d_out != d_in)) {
    throw Error("d_out " + std::to_string(d_out) + " is out of range (an SAE's output is its input site)")
        .file(where);
  }
  if (transcoder && apply_b_dec_to_input) {
    throw Error("a transcoder's b_dec lives at its output site: apply_b_dec_to_input must be false")
        .file(where);
  }
  expect_size(W_dec, d_sae * out_dim(), "W_dec", where);
  expect_size(b_enc, d_sae, "b_enc", where);
  expect_size(b_dec, out_dim(), "b_dec", where);
  const SaeInferenceKind* kind = find_sae_inference_kind(architecture);
  if (kind == nullptr) throw Error("unknown SAE architecture '" + architecture + "'").file(where);
  for (std::string_view name : kind->tensors) {
    const auto it = extra.find(std::string(name));
    if (it == extra.end()) throw Error("tensor '" + std::string(name) + "' is missing").file(where);
    expect_size(it->second, d_sae, std::string(name).c_str(), where);
  }
  if (kind->validate != nullptr) kind->validate(*this, where);
}

void SaeModel::encode(const float* x, int64_t n_rows, float* latents) const {
  const int64_t D = d_in;
  const int64_t L = d_sae;
  std::vector<float> xc(static_cast<size_t>(n_rows * D));
  for (int64_t j = 0; j < n_rows * D; ++j) {
    xc[static_cast<size_t>(j)] = apply_b_dec_to_input ? x[j] - b_dec[static_cast<size_t>(j % D)] : x[j];
  }
  gemm<float>(false, false, n_rows, L, D, 1.0f, xc.data(), D, W_enc.data(), L, 0.0f, latents, L);
  const SaeInferenceKind& kind = kind_of(architecture, "SAE");
  parallel_chunks(n_rows, 64,
                  [&](int64_t r0, int64_t r1) { kind.activate(*this, latents + r0 * L, r1 - r0); });
}

std::vector<float> SaeModel::encode(const float* x, int64_t n_rows) const {
  std::vector<float> out(static_cast<size_t>(n_rows * d_sae));
  encode(x, n_rows, out.data());
  return out;
}

void SaeModel::decode(const float* latents, int64_t n_rows, float* x_hat) const {
  const int64_t O = out_dim();
  for (int64_t r = 0; r < n_rows; ++r) std::copy(b_dec.begin(), b_dec.end(), x_hat + r * O);
  gemm<float>(false, false, n_rows, O, d_sae, 1.0f, latents, d_sae, W_dec.data(), O, 1.0f, x_hat, O);
}

std::vector<float> SaeModel::decode(const float* latents, int64_t n_rows) const {
  std::vector<float> out(static_cast<size_t>(n_rows * out_dim()));
  decode(latents, n_rows, out.data());
  return out;
}

SaeModel load_sae(const std::string& dir) {
  if (!fs::is_directory(dir)) throw Error("SAE folder not found").file(dir);
  const std::string cfg_path = path_join(dir, "cfg.json");
  if (fs::exists(path_join(dir, "sae_weights.safetensors"))) {
    const std::string cfg_text = read_file(cfg_path);
    return saelens_from_parts(dir, cfg_text,
                              SafetensorsFile::load(path_join(dir, "sae_weights.safetensors")));
  }
  if (fs::exists(path_join(dir, "sae.safetensors"))) {
    const std::string cfg_text = read_file(cfg_path);
    return sparsify_from_parts(dir, cfg_text, SafetensorsFile::load(path_join(dir, "sae.safetensors")));
  }
  throw Error(
      "not an SAE folder: expected cfg.json + sae_weights.safetensors (SAELens) or cfg.json + "
      "sae.safetensors (sparsify)")
      .file(dir);
}

void write_saelens_folder(const std::string& dir, const SaeModel& sae, const nlohmann::json& metadata) {
  sae.validate(dir);
  ensure_directory(dir);
  SafetensorsFile f;
  f.put("W_enc", TensorData::f32({sae.d_in, sae.d_sae}, sae.W_enc.data()));
  f.put("W_dec", TensorData::f32({sae.d_sae, sae.out_dim()}, sae.W_dec.data()));
  const SaeInferenceKind& kind = kind_of(sae.architecture, dir);
  if (kind.has_b_enc) f.put("b_enc", TensorData::f32({sae.d_sae}, sae.b_enc.data()));
  f.put("b_dec", TensorData::f32({sae.out_dim()}, sae.b_dec.data()));
  for (std::string_view name : kind.tensors) {
    f.put(std::string(name), TensorData::f32({sae.d_sae}, sae.extra.at(std::string(name)).data()));
  }
  f.save(path_join(dir, "sae_weights.safetensors"));
  const std::string architecture =
      sae.transcoder && !kind.transcoder_name.empty() ? std::string(kind.transcoder_name) : sae.architecture;
  nlohmann::json cfg = {{"architecture", architecture},
                        {"d_in", sae.d_in},
                        {"d_sae", sae.d_sae},
                        {"dtype", "float32"},
                        {"device", "cpu"},
                        {"apply_b_dec_to_input", sae.apply_b_dec_to_input},
                        {"normalize_activations", "none"},
                        {"reshape_activations", "none"},
                        {"metadata", metadata}};
  if (kind.write_cfg != nullptr) kind.write_cfg(sae, cfg);
  if (sae.transcoder) {  // SAELens TranscoderConfig
    cfg["d_out"] = sae.out_dim();
    cfg["hook_name_out"] = sae.hook_name_out;
    cfg["hook_layer_out"] = sae.hook_layer_out;
    cfg["hook_head_index_out"] = nullptr;
  }
  write_file_atomic(path_join(dir, "cfg.json"), cfg.dump(2) + "\n");
}

}  // namespace husai
