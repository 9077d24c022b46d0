#pragma once

// Downstream metrics of a reconstruction spliced into the transformer (CONTRACTS.md, eval-sae): over all
// p^2 pairs, the answer position's cross-entropy, answer distribution and accuracy for three runs:
//   clean   the model as it is;
//   sae     the hook's activations at the one spliced position replaced by reconstruct(those activations);
//   zero    the same activations replaced by zeros (zero ablation).
// Only that position of that hook point is replaced; everything else flows as in the clean model (later
// positions and layers see the replaced value through attention and the residual stream).
//
//   ce_loss_score = (ce_zero_ablation - ce_sae) / (ce_zero_ablation - ce_clean)    1 = as good as clean
//   kl_*          = mean over pairs of KL(clean || patched) of the answer distribution (softmax of logits)
//   kl_div_score  = (kl_zero_ablation - kl_sae) / kl_zero_ablation                   1 = as good as clean
// A score whose denominator is 0 is NaN (written null). CE and KL are mean nats over pairs; every per-pair
// value is computed in double from the float logits and summed in pair order, so the results do not depend
// on the thread count.
//
// Forward path: when the spliced position is the answer ('=') position the model runs the answer-only
// prefix (n_pos = answer + 1, n_query = 1), as `husai extract` does; otherwise the full sequence. All three
// runs use the same path, so identity reconstruction reproduces the clean logits bitwise.

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "husai/model/model_io.hpp"
#include "husai/model/transformer.hpp"

namespace husai {

struct SpliceSpec {
  int64_t layer = -1;  // -1: last layer (negative counts from the end)
  HookSite site = HookSite::ResidPost;
  std::string position = "answer";  // "answer" (the '=' position) or an index (negative from the end)
  int64_t batch_size = 2048;        // pairs per forward pass
  // A transcoder: reconstruct() maps the rows read at (layer, site) to rows written at (out_layer, out_site),
  // later in the forward pass (e.g. resid_mid -> mlp_out of one block: the transcoder in place of the
  // MLP). The sae run replaces the output site's rows with the prediction, the zero run zero-ablates them
  // (the MLP's output removed); the input site is never changed. Unset: the read site is the written one.
  std::optional<HookSite> out_site;
  int64_t out_layer = -1;

  // Where the runs write: (out_layer, out_site) for a transcoder, else (layer, site).
  SpliceSpec written() const;
};

// The spec of an activations file written by `husai extract`, from its safetensors __metadata__ (`layer`,
// `site`, `position`). Throws husai::Error for a missing key or for position "all" (rows of every position
// cannot be spliced as one position).
SpliceSpec splice_spec_from_metadata(const std::map<std::string, std::string>& metadata);

// Fills x_hat_out [n_rows, d_model] with the reconstruction of x [n_rows, d_model] (both row-major); for a
// transcoder, its prediction of the output site from the input site's rows x.
// Called once per batch, outside any parallel region, so it may use husai's threads itself.
using ReconstructFn = std::function<void(const float* x, int64_t n_rows, float* x_hat_out)>;

struct SpliceMetrics {
  int64_t n_pairs = 0;
  std::string hook_name;  // e.g. "blocks.1.hook_resid_post"
  int64_t position = 0;   // the resolved index of the spliced position
  double ce_clean = 0;
  double ce_sae = 0;
  double ce_zero_ablation = 0;
  double ce_loss_score = 0;
  double kl_sae = 0;
  double kl_zero_ablation = 0;
  double kl_div_score = 0;
  double accuracy_clean = 0;  // fraction of pairs whose arg-max logit (lowest index on ties) is the answer
  double accuracy_sae = 0;
  double accuracy_zero_ablation = 0;

  // The numbers above under their own names plus "n_pairs"; NaN becomes null. (hook_name and position are
  // for the caller's messages; the activations file's metadata already records them.)
  nlohmann::json to_json() const;
};

// Resolves spec.position against the model ('answer' -> the '=' index; negatives from the end) and checks
// the layer. Throws husai::Error (key --layer / --position) when out of range or "all".
int64_t resolve_splice_position(const LoadedModel& model, const SpliceSpec& spec);

// False when replacing the spec's activations cannot change the answer's logits under causal attention:
// a position after the answer, or a non-answer position of a last-block site other than resid_pre (those
// rows only feed their own position's logits). splice_metrics refuses such specs; a caller reports the
// causal metrics as not applicable instead.
bool splice_affects_answer(const LoadedModel& model, const SpliceSpec& spec);

// Runs the three forward passes over all pairs in batches of spec.batch_size. Throws husai::Error for a
// spec that is out of range or cannot affect the answer, or a transcoder whose output site does not come
// after its input site.
SpliceMetrics splice_metrics(const LoadedModel& model, const SpliceSpec& spec,
                             const ReconstructFn& reconstruct, bool quiet = true);

}  // namespace husai
