#include "husai/metrics/sae_eval.hpp"

#include <algorithm>
#include <vector>

namespace husai {

ReconstructionMetrics sae_reconstruction_metrics(const SaeModel& sae, const float* x, int64_t n_rows,
                                                 int64_t batch_rows) {
  ReconstructionAccumulator acc(sae.d_in, sae.d_sae);
  for (int64_t start = 0; start < n_rows; start += batch_rows) {
    const int64_t n = std::min(batch_rows, n_rows - start);
    const float* xb = x + start * sae.d_in;
    const std::vector<float> f = sae.encode(xb, n);
    const std::vector<float> x_hat = sae.decode(f.data(), n);
    acc.add(xb, x_hat.data(), f.data(), n);
  }
  return acc.finish();
}

}  // namespace husai

#include "husai/core/error.hpp"
#include "husai/io/activations.hpp"
#include "husai/metrics/splice.hpp"
#include "husai/model/model_io.hpp"

namespace husai {

nlohmann::json evaluate_sae(const EvalSaeOptions& options) {
  const SaeModel sae = load_sae(options.sae_dir);
  const ActivationFile acts = load_activation_file(options.activations_path, options.key);
  if (acts.d_in != sae.d_in) {
    throw Error("activations have d_in " + std::to_string(acts.d_in) + " but the SAE in " + options.sae_dir +
                " expects d_in " + std::to_string(sae.d_in))
        .file(options.activations_path);
  }
  const ReconstructionMetrics rec = sae_reconstruction_metrics(sae, acts.x.data(), acts.n_rows);
  nlohmann::json out = {
      {"schema_version", 1},
      {"sae",
       {{"path", options.sae_dir},
        {"architecture", sae.architecture},
        {"d_in", sae.d_in},
        {"d_sae", sae.d_sae}}},
      {"activations",
       {{"path", options.activations_path},
        {"key", options.key},
        {"sha256", acts.sha256},
        {"hook_name", acts.hook_name},
        {"n_rows", acts.n_rows}}},
      {"metrics", rec.to_json()},
  };
  if (options.model_dir.empty()) {
    out["splice"] = nullptr;
    out["splice_note"] = "no --model given: ce_loss_score and kl_div_score need the transformer";
    return out;
  }
  const LoadedModel model = load_model_dir(options.model_dir);
  if (acts.metadata.count("model_sha256") && acts.metadata.at("model_sha256") != model.model_sha256) {
    throw Error("the activations were extracted from another model (model_sha256 " +
                acts.metadata.at("model_sha256").substr(0, 12) + ", --model has " +
                model.model_sha256.substr(0, 12) + ")")
        .file(options.activations_path);
  }
  const SpliceSpec spec = splice_spec_from_metadata(acts.metadata);
  if (!splice_affects_answer(model, spec)) {
    out["splice"] = nullptr;
    out["splice_note"] =
        "the activation file's position cannot influence the answer at '='; CE/KL scores do not apply";
    return out;
  }
  std::vector<float> latents;
  const ReconstructFn reconstruct = [&](const float* x, int64_t n_rows, float* x_hat) {
    latents.resize(static_cast<size_t>(n_rows * sae.d_sae));
    sae.encode(x, n_rows, latents.data());
    sae.decode(latents.data(), n_rows, x_hat);
  };
  const SpliceMetrics s = splice_metrics(model, spec, reconstruct, options.quiet);
  out["splice"] = s.to_json();
  out["metrics"]["ce_loss_score"] = out["splice"]["ce_loss_score"];
  out["metrics"]["kl_div_score"] = out["splice"]["kl_div_score"];
  return out;
}

}  // namespace husai
