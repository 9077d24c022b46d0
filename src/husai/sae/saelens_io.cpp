#include "husai/sae/saelens_io.hpp"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <numeric>

#include "husai/core/atomic_file.hpp"
#include "husai/core/error.hpp"
#include "husai/core/gemm.hpp"
#include "husai/core/threading.hpp"
#include "husai/io/safetensors.hpp"

namespace husai {
namespace {

namespace fs = std::filesystem;

std::string join(const std::string& dir, const std::string& name) {
  return (fs::path(dir) / name).string();
}

void expect_size(const std::vector<float>& v, int64_t n, const char* name, const std::string& where) {
  if (static_cast<int64_t>(v.size()) != n) {
    throw Error(std::string("tensor '") + name + "' has " + std::to_string(v.size()) +
                " elements, expected " + std::to_string(n))
        .file(where);
  }
}

std::vector<float> tensor_f32(const SafetensorsFile& f, const std::string& name, std::vector<int64_t> shape) {
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

nlohmann::json read_json(const std::string& path) {
  try {
    return nlohmann::json::parse(read_file(path));
  } catch (const nlohmann::json::exception& e) {
    throw Error(std::string("invalid JSON: ") + e.what()).file(path);
  }
}

int64_t cfg_int(const nlohmann::json& cfg, const char* key, const std::string& path) {
  if (!cfg.contains(key) || !cfg.at(key).is_number_integer()) {
    throw Error(std::string("cfg.json lacks an integer '") + key + "'").file(path);
  }
  return cfg.at(key).get<int64_t>();
}

SaeModel load_saelens(const std::string& dir) {
  const std::string cfg_path = join(dir, "cfg.json");
  const std::string weights_path = join(dir, "sae_weights.safetensors");
  SaeModel m;
  m.source_format = "saelens";
  m.cfg = read_json(cfg_path);
  m.d_in = cfg_int(m.cfg, "d_in", cfg_path);
  m.d_sae = cfg_int(m.cfg, "d_sae", cfg_path);
  m.architecture = m.cfg.value("architecture", std::string("standard"));
  // Pre-v6 SAELens wrote TopK SAEs as architecture "standard" with activation_fn_str "topk".
  if (m.architecture == "standard" && m.cfg.value("activation_fn_str", std::string("relu")) == "topk") {
    m.architecture = "topk";
  }
  if (m.architecture == "topk") {
    if (m.cfg.contains("k") && m.cfg.at("k").is_number_integer()) {
      m.k = m.cfg.at("k").get<int64_t>();
    } else if (m.cfg.contains("activation_fn_kwargs") && m.cfg.at("activation_fn_kwargs").contains("k")) {
      m.k = m.cfg.at("activation_fn_kwargs").at("k").get<int64_t>();
    } else {
      throw Error("topk SAE without 'k' in cfg.json").file(cfg_path);
    }
  }
  if (m.architecture != "standard" && m.architecture != "topk" && m.architecture != "jumprelu" &&
      m.architecture != "gated") {
    throw Error("unsupported SAE architecture '" + m.architecture +
                "' (husai reads standard, topk, jumprelu, gated)")
        .file(cfg_path);
  }
  m.apply_b_dec_to_input = m.cfg.value("apply_b_dec_to_input", true);
  const std::string norm =
      m.cfg.contains("normalize_activations") && m.cfg.at("normalize_activations").is_string()
          ? m.cfg.at("normalize_activations").get<std::string>()
          : std::string("none");
  if (norm != "none") {
    throw Error("normalize_activations '" + norm +
                "' is not supported: fold the scaling into the weights first (SAELens "
                "fold_activation_norm_scaling_factor) so that it reads 'none'")
        .file(cfg_path);
  }
  const SafetensorsFile f = SafetensorsFile::load(weights_path);
  m.W_enc = tensor_f32(f, "W_enc", {m.d_in, m.d_sae});
  m.W_dec = tensor_f32(f, "W_dec", {m.d_sae, m.d_in});
  m.b_enc = m.architecture == "gated" ? std::vector<float>(static_cast<size_t>(m.d_sae), 0.0f)
                                      : tensor_f32(f, "b_enc", {m.d_sae});
  m.b_dec = tensor_f32(f, "b_dec", {m.d_in});
  if (m.architecture == "jumprelu") {
    if (f.has("threshold")) {
      m.threshold = tensor_f32(f, "threshold", {m.d_sae});
    } else if (f.has("log_threshold")) {
      m.threshold = tensor_f32(f, "log_threshold", {m.d_sae});
      for (float& t : m.threshold) t = std::exp(t);
    } else {
      f.get("threshold");  // throws, naming the available tensors
    }
  }
  if (m.architecture == "gated") {
    m.b_gate = tensor_f32(f, "b_gate", {m.d_sae});
    m.b_mag = tensor_f32(f, "b_mag", {m.d_sae});
    m.r_mag = tensor_f32(f, "r_mag", {m.d_sae});
  }
  m.validate(dir);
  return m;
}

SaeModel load_sparsify(const std::string& dir) {
  const std::string weights_path = join(dir, "sae.safetensors");
  const std::string cfg_path = join(dir, "cfg.json");
  SaeModel m;
  m.source_format = "sparsify";
  m.architecture = "topk";
  m.apply_b_dec_to_input = true;
  m.cfg = read_json(cfg_path);
  const SafetensorsFile f = SafetensorsFile::load(weights_path);
  if (f.has("W_skip"))
    throw Error("sparsify SAEs with a skip connection (W_skip) are not supported").file(weights_path);
  const TensorData& enc = f.get("encoder.weight");
  if (enc.shape.size() != 2) throw Error("encoder.weight must be 2-D [M, d_in]").file(weights_path);
  m.d_sae = enc.shape[0];
  m.d_in = enc.shape[1];
  if (m.cfg.contains("d_in") && m.cfg.at("d_in").get<int64_t>() != m.d_in) {
    throw Error("cfg.json d_in " + m.cfg.at("d_in").dump() + " disagrees with encoder.weight [M, " +
                std::to_string(m.d_in) + "]")
        .file(cfg_path);
  }
  m.k = cfg_int(m.cfg, "k", cfg_path);
  const std::vector<float> enc_w = enc.to_f32();
  m.W_enc.resize(static_cast<size_t>(m.d_in * m.d_sae));
  for (int64_t i = 0; i < m.d_sae; ++i) {
    for (int64_t d = 0; d < m.d_in; ++d) {
      m.W_enc[static_cast<size_t>(d * m.d_sae + i)] = enc_w[static_cast<size_t>(i * m.d_in + d)];
    }
  }
  m.b_enc = tensor_f32(f, "encoder.bias", {m.d_sae});
  m.W_dec = tensor_f32(f, "W_dec", {m.d_sae, m.d_in});
  m.b_dec = tensor_f32(f, "b_dec", {m.d_in});
  m.validate(dir);
  return m;
}

}  // namespace

void SaeModel::validate(const std::string& where) const {
  if (d_in <= 0 || d_sae <= 0) throw Error("d_in and d_sae must be positive").file(where);
  expect_size(W_enc, d_in * d_sae, "W_enc", where);
  expect_size(W_dec, d_sae * d_in, "W_dec", where);
  expect_size(b_enc, d_sae, "b_enc", where);
  expect_size(b_dec, d_in, "b_dec", where);
  if (architecture == "topk" && (k < 1 || k > d_sae)) {
    throw Error("topk k = " + std::to_string(k) + " outside [1, d_sae = " + std::to_string(d_sae) + "]")
        .file(where);
  }
  if (architecture == "jumprelu") expect_size(threshold, d_sae, "threshold", where);
  if (architecture == "gated") {
    expect_size(b_gate, d_sae, "b_gate", where);
    expect_size(b_mag, d_sae, "b_mag", where);
    expect_size(r_mag, d_sae, "r_mag", where);
  }
}

void SaeModel::encode(const float* x, int64_t n_rows, float* latents) const {
  const int64_t D = d_in;
  const int64_t L = d_sae;
  std::vector<float> xc(static_cast<size_t>(n_rows * D));
  for (int64_t j = 0; j < n_rows * D; ++j) {
    xc[static_cast<size_t>(j)] = apply_b_dec_to_input ? x[j] - b_dec[static_cast<size_t>(j % D)] : x[j];
  }
  gemm<float>(false, false, n_rows, L, D, 1.0f, xc.data(), D, W_enc.data(), L, 0.0f, latents, L);
  parallel_chunks(n_rows, 64, [&](int64_t r0, int64_t r1) {
    std::vector<int32_t> cand(static_cast<size_t>(L));
    std::vector<float> keep;
    for (int64_t r = r0; r < r1; ++r) {
      float* z = latents + r * L;
      if (architecture == "standard") {
        for (int64_t i = 0; i < L; ++i) z[i] = std::max(z[i] + b_enc[static_cast<size_t>(i)], 0.0f);
      } else if (architecture == "jumprelu") {
        for (int64_t i = 0; i < L; ++i) {
          const float v = z[i] + b_enc[static_cast<size_t>(i)];
          z[i] = v > threshold[static_cast<size_t>(i)] && v > 0.0f ? v : 0.0f;
        }
      } else if (architecture == "gated") {
        for (int64_t i = 0; i < L; ++i) {
          const float gate = z[i] + b_gate[static_cast<size_t>(i)];
          const float mag = z[i] * std::exp(r_mag[static_cast<size_t>(i)]) + b_mag[static_cast<size_t>(i)];
          z[i] = gate > 0.0f ? std::max(mag, 0.0f) : 0.0f;
        }
      } else {  // topk
        for (int64_t i = 0; i < L; ++i) z[i] += b_enc[static_cast<size_t>(i)];
        std::iota(cand.begin(), cand.end(), 0);
        std::nth_element(cand.begin(), cand.begin() + (k - 1), cand.end(),
                         [z](int32_t a, int32_t b) { return z[a] > z[b] || (z[a] == z[b] && a < b); });
        keep.assign(static_cast<size_t>(k), 0.0f);
        for (int64_t j = 0; j < k; ++j) keep[static_cast<size_t>(j)] = z[cand[static_cast<size_t>(j)]];
        std::fill(z, z + L, 0.0f);
        for (int64_t j = 0; j < k; ++j)
          z[cand[static_cast<size_t>(j)]] = std::max(keep[static_cast<size_t>(j)], 0.0f);
      }
    }
  });
}

std::vector<float> SaeModel::encode(const float* x, int64_t n_rows) const {
  std::vector<float> out(static_cast<size_t>(n_rows * d_sae));
  encode(x, n_rows, out.data());
  return out;
}

void SaeModel::decode(const float* latents, int64_t n_rows, float* x_hat) const {
  for (int64_t r = 0; r < n_rows; ++r) std::copy(b_dec.begin(), b_dec.end(), x_hat + r * d_in);
  gemm<float>(false, false, n_rows, d_in, d_sae, 1.0f, latents, d_sae, W_dec.data(), d_in, 1.0f, x_hat, d_in);
}

std::vector<float> SaeModel::decode(const float* latents, int64_t n_rows) const {
  std::vector<float> out(static_cast<size_t>(n_rows * d_in));
  decode(latents, n_rows, out.data());
  return out;
}

SaeModel load_sae(const std::string& dir) {
  if (!fs::is_directory(dir)) throw Error("SAE folder not found").file(dir);
  if (fs::exists(join(dir, "sae_weights.safetensors"))) return load_saelens(dir);
  if (fs::exists(join(dir, "sae.safetensors"))) return load_sparsify(dir);
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
  f.put("W_dec", TensorData::f32({sae.d_sae, sae.d_in}, sae.W_dec.data()));
  f.put("b_enc", TensorData::f32({sae.d_sae}, sae.b_enc.data()));
  f.put("b_dec", TensorData::f32({sae.d_in}, sae.b_dec.data()));
  if (sae.architecture == "jumprelu") f.put("threshold", TensorData::f32({sae.d_sae}, sae.threshold.data()));
  if (sae.architecture == "gated") {
    f.put("b_gate", TensorData::f32({sae.d_sae}, sae.b_gate.data()));
    f.put("b_mag", TensorData::f32({sae.d_sae}, sae.b_mag.data()));
    f.put("r_mag", TensorData::f32({sae.d_sae}, sae.r_mag.data()));
  }
  f.save(join(dir, "sae_weights.safetensors"));
  nlohmann::json cfg = {{"architecture", sae.architecture},
                        {"d_in", sae.d_in},
                        {"d_sae", sae.d_sae},
                        {"dtype", "float32"},
                        {"device", "cpu"},
                        {"apply_b_dec_to_input", sae.apply_b_dec_to_input},
                        {"normalize_activations", "none"},
                        {"reshape_activations", "none"},
                        {"metadata", metadata}};
  if (sae.architecture == "topk") {
    cfg["k"] = sae.k;
    cfg["rescale_acts_by_decoder_norm"] = false;
  }
  write_file_atomic(join(dir, "cfg.json"), cfg.dump(2) + "\n");
}

}  // namespace husai
