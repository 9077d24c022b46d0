#pragma once

// SAE folders on disk, and SAE inference, as Python users know them.
//
// Reads:
//   * SAELens folders (written by husai or anyone): DIR/cfg.json + DIR/sae_weights.safetensors with
//     W_enc [d_in, d_sae], W_dec [d_sae, d_in], b_enc [d_sae], b_dec [d_in], and each architecture's own
//     [d_sae] tensors. The architectures (SAELens "architecture" values) are the inference kinds of the
//     architecture table (architecture.hpp): standard, topk (k from cfg "k", or the pre-v6 activation_fn_str
//     "topk" with activation_fn_kwargs.k), jumprelu (threshold, or log_threshold), and those added since.
//     Any float dtype on disk (F32, F16, BF16, F64) is converted to float. normalize_activations must be
//     "none".
//   * SAELens transcoders: architecture "transcoder" (standard encoding) or "jumprelu_transcoder", or any
//     kind's name with the transcoder keys d_out and hook_name_out (husai's topk-family transcoders): W_dec
//     [d_sae, d_out], b_dec [d_out], input never centred by b_dec.
//   * EleutherAI sparsify folders: DIR/sae.safetensors with encoder.weight [M, d_in], encoder.bias [M],
//     W_dec [M, d_in], b_dec [d_in], and DIR/cfg.json with "k" (and "d_in"): a topk SAE with
//     f = TopK(ReLU((x - b_dec) W_enc + b_enc)), the same latents as SAELens' topk.
// Writes SAELens v6 folders (write_saelens_folder).
//
// Inference (rows are row-major, float):
//   xc = x - b_dec when apply_b_dec_to_input, else x;   f = the kind's activation of xc W_enc (it adds its
//   own biases), e.g. standard: f = ReLU(xc W_enc + b_enc); decode: x_hat = f W_dec + b_dec
// Results do not depend on the thread count.

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace husai {

class SafetensorsFile;

struct SaeModel {
  std::string architecture = "standard";  // SAELens name: an inference kind of architecture.hpp
  int64_t d_in = 0;
  int64_t d_sae = 0;
  int64_t k = 0;  // topk only
  bool apply_b_dec_to_input = true;
  // A transcoder reads one site and writes another (SAELens Transcoder): W_dec and b_dec have the output
  // site's width d_out, and the input is never centred by b_dec (apply_b_dec_to_input is false). For an SAE
  // transcoder is false and d_out is 0 (the output is the input's site): use out_dim().
  bool transcoder = false;
  int64_t d_out = 0;
  std::string hook_name_out;  // the output site, e.g. blocks.0.hook_mlp_out ("" when unknown)
  int64_t hook_layer_out = 0;
  std::vector<float> W_enc;  // [d_in, d_sae]
  std::vector<float> W_dec;  // [d_sae, out_dim()]
  std::vector<float> b_enc;  // [d_sae] (zeros for kinds without b_enc)
  std::vector<float> b_dec;  // [out_dim()]
  std::map<std::string, std::vector<float>>
      extra;  // the kind's own [d_sae] tensors by name (jumprelu: threshold)
  nlohmann::json cfg = nlohmann::json::object();  // cfg.json as read (empty for models built in memory)
  std::string source_format;                      // "saelens", "sparsify", or "" (built in memory)

  int64_t out_dim() const { return d_out > 0 ? d_out : d_in; }

  // Latents of n_rows rows of x [n_rows, d_in] into latents [n_rows, d_sae].
  void encode(const float* x, int64_t n_rows, float* latents) const;
  std::vector<float> encode(const float* x, int64_t n_rows) const;
  // Reconstruction [n_rows, out_dim()] of latents [n_rows, d_sae] (a transcoder's prediction of its output
  // site).
  void decode(const float* latents, int64_t n_rows, float* x_hat) const;
  std::vector<float> decode(const float* latents, int64_t n_rows) const;

  // Throws husai::Error when a tensor's size does not match d_in / d_sae / out_dim(), the architecture lacks
  // a tensor, or a transcoder centres its input by b_dec.
  void validate(const std::string& where) const;
};

// Largest d_in, d_sae or k accepted from a cfg.json (2^24, the same cap as train-sae's sae.d_sae): a corrupt
// value must not overflow d_in * d_sae.
inline constexpr int64_t kMaxSaeDim = int64_t{1} << 24;

// Pieces for the inference kinds' readers: an integer cfg.json key in [1, kMaxSaeDim] (errors name the file
// and key), and a tensor of the given shape as float (errors name the file and tensor).
int64_t saelens_cfg_int(const nlohmann::json& cfg, const std::string& key, const std::string& path);
std::vector<float> saelens_tensor(const SafetensorsFile& f, const std::string& name,
                                  const std::vector<int64_t>& shape);

// Loads a SAELens or sparsify folder (see above). Errors name the folder, the file and, for cfg.json, the
// key.
SaeModel load_sae(const std::string& dir);

// What load_sae does once the bytes are read: cfg.json text plus the parsed weights file (`dir` names the
// folder in errors). Exposed so tests and the fuzzers can feed bytes without a filesystem.
SaeModel saelens_from_parts(const std::string& dir, std::string_view cfg_json,
                            const SafetensorsFile& weights);
SaeModel sparsify_from_parts(const std::string& dir, std::string_view cfg_json,
                             const SafetensorsFile& weights);

// Writes DIR/cfg.json (SAELens v6 keys: architecture, d_in, d_sae, dtype "float32", device "cpu",
// apply_b_dec_to_input, normalize_activations "none", reshape_activations "none", the kind's own keys (k for
// topk), for a transcoder d_out, hook_name_out, hook_layer_out, hook_head_index_out (null) and the SAELens
// transcoder name of its kind where there is one, and `metadata` as given) and DIR/sae_weights.safetensors
// (F32), each atomically. Creates DIR.
void write_saelens_folder(const std::string& dir, const SaeModel& sae, const nlohmann::json& metadata);

}  // namespace husai
