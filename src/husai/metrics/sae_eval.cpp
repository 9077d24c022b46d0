#include "husai/metrics/sae_eval.hpp"

#include <algorithm>
#include <optional>
#include <vector>

#include "husai/core/error.hpp"
#include "husai/io/activations.hpp"
#include "husai/metrics/splice.hpp"
#include "husai/model/model_io.hpp"

namespace husai {

ReconstructionMetrics sae_reconstruction_metrics(const SaeModel& sae, const float* x, int64_t n_rows,
                                                 int64_t batch_rows, const float* target) {
  const int64_t D = sae.d_in;
  const int64_t O = sae.out_dim();
  const SaeRowReader read = [&](int64_t first, int64_t count, float* xb, float* yb) {
    std::copy_n(x + first * D, count * D, xb);
    if (yb != nullptr) std::copy_n(target + first * O, count * O, yb);
  };
  return sae_reconstruction_metrics(sae, read, n_rows, batch_rows, target != nullptr);
}

ReconstructionMetrics sae_reconstruction_metrics(const SaeModel& sae, const SaeRowReader& read,
                                                 int64_t n_rows, int64_t batch_rows, bool paired) {
  if (!paired && sae.out_dim() != sae.d_in) {
    throw Error("a transcoder with d_out " + std::to_string(sae.out_dim()) + " != d_in " +
                std::to_string(sae.d_in) + " needs its target rows");
  }
  ReconstructionAccumulator acc(sae.out_dim(), sae.d_sae);
  std::vector<float> x, y, f, x_hat;
  for (int64_t start = 0; start < n_rows; start += batch_rows) {
    const int64_t n = std::min(batch_rows, n_rows - start);
    x.resize(static_cast<size_t>(n * sae.d_in));
    if (paired) y.resize(static_cast<size_t>(n * sae.out_dim()));
    read(start, n, x.data(), paired ? y.data() : nullptr);
    f.resize(static_cast<size_t>(n * sae.d_sae));
    x_hat.resize(static_cast<size_t>(n * sae.out_dim()));
    sae.encode(x.data(), n, f.data());
    sae.decode(f.data(), n, x_hat.data());
    acc.add(paired ? y.data() : x.data(), x_hat.data(), f.data(), n);
  }
  return acc.finish();
}

namespace {

void check_same_model(const ActivationInfo& acts, const LoadedModel& model) {
  if (acts.metadata.count("model_sha256") && acts.metadata.at("model_sha256") != model.model_sha256) {
    throw Error("the activations were extracted from another model (model_sha256 " +
                acts.metadata.at("model_sha256").substr(0, 12) + ", --model has " +
                model.model_sha256.substr(0, 12) + ")")
        .file(acts.path);
  }
}

// The target file of a transcoder: as many rows as the input file, the transcoder's output width.
ActivationSource open_target(const EvalSaeOptions& options, const SaeModel& sae, const ActivationInfo& acts) {
  if (!sae.transcoder) {
    throw Error("--target-activations is for transcoders; " + options.sae_dir +
                " is an SAE (it reconstructs its own input)")
        .key("--target-activations");
  }
  if (options.target_activations_path.empty()) {
    throw Error("is a transcoder (output " + (sae.hook_name_out.empty() ? "unknown" : sae.hook_name_out) +
                "): give its target rows with --target-activations")
        .file(options.sae_dir);
  }
  ActivationSource target = ActivationSource::open(options.target_activations_path, options.target_key);
  check_paired_rows(acts, target.info());
  if (target.d_in() != sae.out_dim()) {
    throw Error("target rows have width " + std::to_string(target.d_in()) + " but the transcoder in " +
                options.sae_dir + " writes d_out " + std::to_string(sae.out_dim()))
        .file(target.info().path);
  }
  target.verify();
  return target;
}

}  // namespace

nlohmann::json evaluate_sae(const EvalSaeOptions& options) {
  const SaeModel sae = load_sae(options.sae_dir);
  // Streamed in batches: memory holds the SAE and one batch of rows, whatever the file size.
  ActivationSource src = ActivationSource::open(options.activations_path, options.key);
  const ActivationInfo& acts = src.info();
  if (acts.d_in != sae.d_in) {
    throw Error("activations have d_in " + std::to_string(acts.d_in) + " but the SAE in " + options.sae_dir +
                " expects d_in " + std::to_string(sae.d_in))
        .file(options.activations_path);
  }
  src.verify();
  std::optional<ActivationSource> target_src;
  if (sae.transcoder || !options.target_activations_path.empty()) {
    target_src = open_target(options, sae, acts);
  }
  const ReconstructionMetrics rec = sae_reconstruction_metrics(
      sae,
      [&](int64_t first, int64_t count, float* x, float* y) {
        src.read_rows(first, count, x);
        if (y != nullptr) target_src->read_rows(first, count, y);
      },
      acts.n_rows, 4096, target_src.has_value());
  const ActivationInfo* target = target_src ? &target_src->info() : nullptr;
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
  if (target) {
    out["sae"]["transcoder"] = true;
    out["sae"]["d_out"] = sae.out_dim();
    out["sae"]["hook_name_out"] = sae.hook_name_out;
    out["target_activations"] = {{"path", options.target_activations_path},
                                 {"key", options.target_key},
                                 {"sha256", target->sha256},
                                 {"hook_name", target->hook_name},
                                 {"n_rows", target->n_rows}};
    out["metrics"]["fvu"] = 1.0 - rec.explained_variance;
  }
  if (options.model_dir.empty()) {
    out["splice"] = nullptr;
    out["splice_note"] = "no --model given: ce_loss_score and kl_div_score need the transformer";
    return out;
  }
  const LoadedModel model = load_model_dir(options.model_dir);
  check_same_model(acts, model);
  SpliceSpec spec = splice_spec_from_metadata(acts.metadata);
  if (target) {
    check_same_model(*target, model);
    const SpliceSpec out_spec = splice_spec_from_metadata(target->metadata);
    if (out_spec.position != spec.position) {
      throw Error("the target was extracted at position " + out_spec.position + ", the activations at " +
                  spec.position)
          .file(target->path);
    }
    spec.out_layer = out_spec.layer;
    spec.out_site = out_spec.site;
  }
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
  if (target) out["splice"]["replaced"] = s.hook_name;
  out["metrics"]["ce_loss_score"] = out["splice"]["ce_loss_score"];
  out["metrics"]["kl_div_score"] = out["splice"]["kl_div_score"];
  return out;
}

}  // namespace husai
