#pragma once

// The table of SAE architectures. Each architecture is one file (relu.cpp, topk.cpp, ...) that fills one
// SaeArchitecture: its name, how its trained SAE is exported (SAELens inference kind, extra tensors), its
// initialisation, loss and backward, its after-step hook, and its config keys with defaults and ranges.
// registry.cpp lists them, one line each. Everything else reads the table:
//   * the trainer (train/sae_trainer.cpp) calls loss/backward and after_step, never a name;
//   * train-sae (train/sae_run.cpp) builds its config schema from the keys (one source of defaults: each
//     key's default is read from SaeConfig{}), the default learning rate, the export and the cfg.json
//     metadata from the table;
//   * the nulls (metrics/nulls.cpp) initialise an untrained SAE through the table;
//   * `--help`, `--keys` and docs/architecture.md list what the table holds.
// Inference (SaeModel in saelens_io.hpp) reads its own, smaller table: one SaeInferenceKind per SAELens
// "architecture" value, which the training architectures point to.
//
// How to add an architecture: docs/architecture.md.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "husai/sae/sae.hpp"
#include "husai/sae/saelens_io.hpp"

namespace husai {

class Config;
class ConfigSchema;
struct FieldSpec;
class SafetensorsFile;

// One train-sae config key an architecture reads. Several architectures may list the same key (the TopK
// family shares k); the schema declares it once, at its first appearance in table order.
struct SaeKey {
  std::string_view path;  // "sae.k"
  // Adds the key: default (from SaeConfig{}), range, help (the schema appends which architectures use it).
  FieldSpec& (*declare)(ConfigSchema& schema);
  void (*apply)(const Config& config, SaeConfig& sae);  // copies its value into the typed settings
};

// How an exported SAE encodes, under its SAELens "architecture" name. W_enc, W_dec, b_dec always exist;
// b_enc unless has_b_enc is false; `tensors` are further [d_sae] tensors written in this order.
struct SaeInferenceKind {
  std::string_view name;  // SAELens "architecture": standard, topk, jumprelu, ...
  // SAELens "architecture" of a transcoder of this kind ("transcoder", "jumprelu_transcoder"); empty when
  // SAELens has none, and then a transcoder is written under `name` with the transcoder keys.
  std::string_view transcoder_name;
  std::vector<std::string_view> tensors;
  bool has_b_enc = true;
  // Reads what this kind needs beyond the common tensors (k from cfg.json, its own tensors; nullptr: every
  // name of `tensors` as [d_sae]). `cfg_path` names cfg.json in errors.
  void (*read)(const nlohmann::json& cfg, const std::string& cfg_path, const SafetensorsFile& weights,
               SaeModel& sae) = nullptr;
  // Checks settings beyond the tensor sizes (topk: 1 <= k <= d_sae); nullptr: nothing more.
  void (*validate)(const SaeModel& sae, const std::string& where) = nullptr;
  // Adds this kind's keys to cfg.json (topk: k); nullptr: none.
  void (*write_cfg)(const SaeModel& sae, nlohmann::json& cfg) = nullptr;
  // Latents of n_rows rows in place: z holds xc W_enc (no bias) on entry, the latents on return.
  void (*activate)(const SaeModel& sae, float* z, int64_t n_rows) = nullptr;
};

template <typename T>
using SaeLossBackwardFn = SaeLossParts (*)(const SaeConfig& cfg, const SaeView<const T>& p,
                                           const SaeView<T>* g, const SaeBatch<T>& batch,
                                           SaeWorkspace<T>& ws);

// A trainer's per-seed state that an architecture may keep beyond its parameters (BatchTopK's running
// threshold); saved in the trainer state and restored on resume.
struct SaeRunningState {
  double threshold = 0;
  bool threshold_set = false;
};

struct SaeArchitecture {
  std::string_view name;     // train-sae sae.architecture, and cfg.json metadata.training_architecture
  std::string_view summary;  // one line: --help, docs
  const SaeInferenceKind* inference = nullptr;
  double default_lr = 1e-3;  // training.lr when the config leaves it null
  // Parameter tensors of d_sae values after b_dec, in this order (jumprelu: log_threshold).
  std::vector<std::string_view> extra_tensors;
  // True when loss_backward writes every gradient entry itself; otherwise the buffer is zeroed first.
  bool writes_all_grads = false;
  // True when the architecture keeps SaeRunningState (logged per step as "threshold").
  bool running_threshold = false;
  std::vector<SaeKey> keys;

  SaeLossBackwardFn<float> loss_backward_f32 = nullptr;
  SaeLossBackwardFn<double> loss_backward_f64 = nullptr;
  // Settings that contradict each other (k > d_sae, ...): throws husai::Error naming the key.
  void (*validate)(const SaeConfig& cfg) = nullptr;
  // After the common initialisation (unit W_dec rows, W_enc = W_dec^T, zero biases, b_dec given): sets this
  // architecture's own tensors. nullptr: they stay 0.
  void (*init)(const SaeConfig& cfg, const SaeLayout& layout, float* params) = nullptr;
  // After each optimizer step, with the step's loss parts and workspace.
  void (*after_step)(const SaeConfig& cfg, const SaeLossParts& parts, const SaeWorkspace<float>& ws,
                     SaeRunningState& state) = nullptr;
  // Fills the inference SAE's own tensors (threshold, ...) from the parameters; the common ones are done.
  void (*export_tensors)(const SaeConfig& cfg, const SaeLayout& layout, const float* params,
                         const SaeRunningState& state, SaeModel& sae) = nullptr;
  // Adds this architecture's entries to the exported cfg.json metadata.
  void (*export_metadata)(const SaeConfig& cfg, const SaeRunningState& state, nlohmann::json& meta) = nullptr;

  template <typename T>
  SaeLossBackwardFn<T> loss_backward() const;
};

template <>
inline SaeLossBackwardFn<float> SaeArchitecture::loss_backward<float>() const {
  return loss_backward_f32;
}
template <>
inline SaeLossBackwardFn<double> SaeArchitecture::loss_backward<double>() const {
  return loss_backward_f64;
}

// Every architecture, in the order of registry.cpp.
const std::vector<const SaeArchitecture*>& sae_architectures();
// By training name; throws husai::Error listing the known names.
const SaeArchitecture& sae_architecture(std::string_view name);
// "relu, topk, ...": for help texts and errors.
std::string sae_architecture_names(std::string_view separator = ", ");

// Every inference kind some architecture exports, plus those husai only reads; by SAELens name.
const std::vector<const SaeInferenceKind*>& sae_inference_kinds();
const SaeInferenceKind* find_sae_inference_kind(std::string_view name);  // nullptr when unknown
// By a SAELens transcoder name ("transcoder", "jumprelu_transcoder"); nullptr when none has it.
const SaeInferenceKind* find_sae_transcoder_kind(std::string_view name);
// The training architecture whose export is this inference kind (the one of the same name, else the first in
// table order), for an SAE read from disk without husai's metadata; nullptr when none.
const SaeArchitecture* sae_architecture_exporting(std::string_view inference_name);

// The entries of the sae section of train-sae's config schema that the architectures declare.
void declare_sae_architecture_keys(ConfigSchema& schema);
// Reads every key of every architecture into `sae` (arch, d_in and d_sae already set): the typed settings are
// whole whatever the architecture, as the resolved config is.
void apply_sae_architecture_keys(const Config& config, SaeConfig& sae);

}  // namespace husai
