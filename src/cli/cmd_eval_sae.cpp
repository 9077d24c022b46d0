// eval-sae: reconstruction metrics of an SAE and, with the transformer, its spliced CE/KL scores.

#include <cstdio>
#include <filesystem>
#include <memory>

#include "commands.hpp"
#include "common.hpp"
#include "husai/core/atomic_file.hpp"
#include "husai/core/error.hpp"
#include "husai/metrics/sae_eval.hpp"

namespace husai::cli {

Runner register_eval_sae(CLI::App& app) {
  CLI::App* sub = app.add_subcommand("eval-sae",
                                     "Evaluate an SAE (a SAELens folder written by anyone, or sparsify's) on "
                                     "every row of an activation file: "
                                     "mse, explained variance (centred, per-dim, uncentred), l0, l1, "
                                     "frac_dead, frac_dense, cossim, l2_ratio, "
                                     "relative_reconstruction_bias; with --model also ce_loss_score, "
                                     "kl_div_score and answer accuracy with the SAE "
                                     "spliced into the transformer at the file's hook and position.");
  struct Opts {
    CommonOptions common;
    EvalSaeOptions eval;
    std::string out;
    bool overwrite = false;
  };
  auto o = std::make_shared<Opts>();
  add_common(sub, o->common);
  sub->add_option("--sae", o->eval.sae_dir, "SAE folder (cfg.json + sae_weights.safetensors)")->required();
  sub->add_option(
         "--activations", o->eval.activations_path,
         "activation rows (streamed in batches): a safetensors or .npy file, or a folder or glob of shards")
      ->required();
  sub->add_option("--key", o->eval.key, "tensor name in the activation file (default: activations)");
  sub->add_option("--target-activations", o->eval.target_activations_path,
                  "a transcoder's output-site rows (required for transcoders): metrics against them, and "
                  "with --model the transcoder spliced in place of that site");
  sub->add_option("--target-key", o->eval.target_key,
                  "tensor name in the target file (default: activations)");
  sub->add_option("-m,--model", o->eval.model_dir, "transformer run folder the activations came from");
  sub->add_option("-o,--out", o->out, "output JSON file")->required();
  sub->add_flag("--overwrite", o->overwrite, "replace an existing output file");
  return [o] {
    apply_common(o->common);
    if (!o->overwrite && std::filesystem::exists(o->out)) {
      throw Error("output file exists; pass --overwrite to replace it").file(o->out);
    }
    o->eval.quiet = o->common.quiet;
    const nlohmann::json result = evaluate_sae(o->eval);
    write_file_atomic(o->out, result.dump(2) + "\n");
    if (!o->common.quiet) {
      const auto& m = result["metrics"];
      if (m.contains("fvu")) std::printf("fvu %.4f  ", m["fvu"].get<double>());
      std::printf("explained_variance %.4f  l0 %.2f  frac_dead %.4f  mse %.4g",
                  m["explained_variance"].get<double>(), m["l0"].get<double>(), m["frac_dead"].get<double>(),
                  m["mse"].get<double>());
      if (m.contains("ce_loss_score") && m["ce_loss_score"].is_number()) {
        std::printf("  ce_loss_score %.4f  kl_div_score %.4f", m["ce_loss_score"].get<double>(),
                    m["kl_div_score"].get<double>());
      }
      std::printf("\nwrote %s\n", o->out.c_str());
    }
    return 0;
  };
}

}  // namespace husai::cli
