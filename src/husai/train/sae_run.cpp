#include "husai/train/sae_run.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <optional>

#include <fmt/format.h>
#include <unistd.h>

#include "husai/core/atomic_file.hpp"
#include "husai/core/cluster.hpp"
#include "husai/core/error.hpp"
#include "husai/core/progress.hpp"
#include "husai/core/rng.hpp"
#include "husai/core/signals.hpp"
#include "husai/core/text.hpp"
#include "husai/io/activations.hpp"
#include "husai/io/json_file.hpp"
#include "husai/io/manifest.hpp"
#include "husai/io/safetensors.hpp"
#include "husai/io/sha256.hpp"
#include "husai/metrics/sae_eval.hpp"
#include "husai/sae/architecture.hpp"
#include "husai/sae/saelens_io.hpp"
#include "husai/train/sae_run_data.hpp"
#include "husai/train/sae_trainer.hpp"

namespace husai {
namespace {

namespace fs = std::filesystem;

constexpr int kSchemaVersion = 1;
constexpr const char* kState = "trainer_state.safetensors";

std::string seed_dir(const std::string& dir, uint64_t seed) {
  return sae_seed_dir(dir, static_cast<int64_t>(seed));
}
std::string exact(double v) {
  return fmt::format("{:.17g}", v);
}

SaeTrainSettings settings_from(const Config& c, int64_t d_in, int64_t n_train) {
  SaeTrainSettings s;
  SaeConfig& m = s.sae;
  m.arch = &sae_architecture(c.get_string("sae.architecture"));
  m.d_in = d_in;
  m.d_sae =
      c.is_null("sae.d_sae")
          ? static_cast<int64_t>(std::llround(c.get_double("sae.expansion") * static_cast<double>(d_in)))
          : c.get_int("sae.d_sae");
  m.apply_b_dec_to_input = c.get_bool("sae.apply_b_dec_to_input");
  apply_sae_architecture_keys(c, m);
  s.batch_size = c.get_int("training.batch_size");
  if (!c.is_null("training.epochs")) {
    if (c.source("training.steps").kind != ValueSource::Kind::kDefault) {
      c.fail("give training.steps or training.epochs, not both", {"training.steps", "training.epochs"});
    }
    const double samples = c.get_double("training.epochs") * static_cast<double>(n_train);
    s.steps =
        std::max<int64_t>(1, static_cast<int64_t>(std::ceil(samples / static_cast<double>(s.batch_size))));
  } else {
    s.steps = c.get_int("training.steps");
  }
  s.adam.lr = c.is_null("training.lr") ? m.arch->default_lr : c.get_double("training.lr");
  const std::vector<double> betas = c.get_double_list("training.betas");
  s.adam.beta1 = betas[0];
  s.adam.beta2 = betas[1];
  s.adam.eps = c.get_double("training.eps");
  s.adam.weight_decay = 0;
  s.lr_warmup_steps = c.get_int("training.lr_warmup_steps");
  s.lr_decay_fraction = c.get_double("training.lr_decay_fraction");
  s.min_lr_ratio = c.get_double("training.min_lr_ratio");
  s.grad_clip_norm = c.get_double("training.grad_clip_norm");
  s.normalize_decoder = c.get_bool("sae.normalize_decoder");
  s.seeds.clear();
  for (int64_t seed : c.get_int_list("training.seeds")) s.seeds.push_back(static_cast<uint64_t>(seed));
  if (!c.is_null("training.data_order_seed"))
    s.data_order_seed = static_cast<uint64_t>(c.get_int("training.data_order_seed"));
  s.checkpoint_every = c.get_int("training.checkpoint_every");
  s.log_every = c.get_int("training.log_every");
  s.consistency_lambda = c.get_double("consistency.lambda");
  return s;
}

nlohmann::json log_json(const SaeLogRow& r, bool with_threshold, bool with_consistency = false) {
  nlohmann::json j = {
      {"step", r.step},          {"samples", r.samples}, {"lr", r.lr},
      {"loss", r.loss},          {"mse", r.mse},         {"aux", r.aux},
      {"sparsity", r.sparsity},  {"l0", r.l0},           {"explained_variance", r.explained_variance},
      {"frac_dead", r.frac_dead}};
  if (with_threshold) j["threshold"] = r.threshold;
  if (with_consistency) j["consistency_alignment"] = r.consistency_alignment;
  return j;
}

SaeLogRow log_from_json(const nlohmann::json& j) {
  SaeLogRow r;
  r.step = j.at("step").get<int64_t>();
  r.samples = j.at("samples").get<int64_t>();
  r.lr = j.at("lr").get<double>();
  r.loss = j.at("loss").get<double>();
  r.mse = j.at("mse").get<double>();
  r.aux = j.at("aux").get<double>();
  r.sparsity = j.at("sparsity").get<double>();
  r.l0 = j.at("l0").get<double>();
  r.explained_variance = j.at("explained_variance").get<double>();
  r.frac_dead = j.at("frac_dead").get<double>();
  r.threshold = j.value("threshold", 0.0);
  r.consistency_alignment = j.value("consistency_alignment", 0.0);
  return r;
}

void write_curves(const std::string& dir, const SaeTrainer& t) {
  const bool thr = t.settings().sae.arch->running_threshold;
  const bool cons = t.settings().consistency_active();
  for (const SaeSeedState& s : t.seeds()) {
    std::string out;
    for (const SaeLogRow& r : s.history) out += log_json(r, thr, cons).dump() + "\n";
    ensure_directory(seed_dir(dir, s.seed));
    write_file_atomic(path_join(seed_dir(dir, s.seed), "metrics.jsonl"), out);
  }
}

void save_state(const std::string& dir, const std::string& state_path, const SaeTrainer& t,
                const std::string& config_hash, const SaeRunData& data) {
  // Divergence guard, second line: a step can leave non-finite weights behind a finite loss (an overflowing
  // gradient); such a state is never written over the last good checkpoint.
  // The Adam moments are checked too: an overflowing squared gradient shows up there first.
  const auto finite = [](const std::vector<float>& v) {
    return std::all_of(v.begin(), v.end(), [](float x) { return std::isfinite(x); });
  };
  for (const SaeSeedState& s : t.seeds()) {
    if (!finite(s.params) || !finite(s.adam_m) || !finite(s.adam_v)) {
      throw Error("training diverged: the parameters or Adam moments of seed " + std::to_string(s.seed) +
                  " are not finite at step " + std::to_string(t.step()) +
                  ". Lower the learning rate or check the activations");
    }
  }
  SafetensorsFile f;
  nlohmann::json seeds = nlohmann::json::array();
  for (const SaeSeedState& s : t.seeds()) {
    const std::string p = "seed" + std::to_string(s.seed) + ".";
    const std::vector<int64_t> shape = {static_cast<int64_t>(s.params.size())};
    f.put(p + "params", TensorData::f32(shape, s.params.data()));
    f.put(p + "adam_m", TensorData::f32(shape, s.adam_m.data()));
    f.put(p + "adam_v", TensorData::f32(shape, s.adam_v.data()));
    f.put(p + "since_fired",
          TensorData::i64({static_cast<int64_t>(s.since_fired.size())}, s.since_fired.data()));
    nlohmann::json history = nlohmann::json::array();
    for (const SaeLogRow& r : s.history)
      history.push_back(log_json(r, true, t.settings().consistency_active()));
    f.metadata[p + "history"] = history.dump();
    f.metadata[p + "threshold"] = exact(s.running.threshold);
    f.metadata[p + "threshold_set"] = s.running.threshold_set ? "1" : "0";
    seeds.push_back(s.seed);
  }
  f.metadata["format"] = "husai-sae-trainer-state";
  f.metadata["config_hash"] = config_hash;
  f.metadata["step"] = std::to_string(t.step());
  f.metadata["d_in"] = std::to_string(t.settings().sae.d_in);
  f.metadata["activations_sha256"] = data.acts().sha256;
  if (data.transcoder()) f.metadata["target_activations_sha256"] = data.target()->sha256;
  f.metadata["seeds"] = seeds.dump();
  f.save(state_path);
  write_curves(dir, t);
}

void read_state_fields(const std::string& path, SaeTrainer& t, const std::string& config_hash,
                       const SaeRunData& data) {
  const ActivationInfo& acts = data.acts();
  const std::string& acts_path = data.options().activations_path;
  const SafetensorsFile f = SafetensorsFile::load(path);
  auto meta = [&](const std::string& key) -> const std::string& {
    const auto it = f.metadata.find(key);
    if (it == f.metadata.end()) throw Error("trainer state lacks '" + key + "'").file(path);
    return it->second;
  };
  if (meta("format") != "husai-sae-trainer-state") throw Error("not a husai SAE trainer state").file(path);
  const int64_t d_in = std::stoll(meta("d_in"));
  if (d_in != t.settings().sae.d_in) {
    throw Error("cannot resume: the run was trained on d_in = " + std::to_string(d_in) + ", but " +
                acts_path + " has d_in = " + std::to_string(t.settings().sae.d_in) +
                "; use the same activation file, or --overwrite to start again")
        .file(path);
  }
  if (meta("activations_sha256") != acts.sha256) {
    throw Error("cannot resume: the run was trained on another activation file (sha256 " +
                meta("activations_sha256").substr(0, 12) + ", now " + acts.sha256.substr(0, 12) +
                "); use the same file, or --overwrite to start again")
        .file(path);
  }
  const auto target_it = f.metadata.find("target_activations_sha256");
  const std::string was_target = target_it == f.metadata.end() ? "" : target_it->second;
  const std::string now_target = data.transcoder() ? data.target()->sha256 : "";
  if (was_target != now_target) {
    throw Error(std::string("cannot resume: the run was trained ") +
                (was_target.empty() ? "as an SAE (no --target-activations)"
                                    : "as a transcoder on target sha256 " + was_target.substr(0, 12)) +
                ", now " +
                (now_target.empty() ? "without --target-activations"
                                    : "with target sha256 " + now_target.substr(0, 12)) +
                "; use the same files, or --overwrite to start again")
        .file(path);
  }
  if (meta("config_hash") != config_hash) {
    throw Error("cannot resume: the run was started with a different config (hash " +
                meta("config_hash").substr(0, 12) + ", now " + config_hash.substr(0, 12) +
                "); resume with the same settings, or pass --overwrite to start again")
        .file(path);
  }
  for (SaeSeedState& s : t.seeds()) {
    const std::string p = "seed" + std::to_string(s.seed) + ".";
    auto load = [&](const std::string& name, std::vector<float>& dst) {
      std::vector<float> v = f.get(p + name).to_f32();
      if (v.size() != dst.size()) throw Error("tensor '" + p + name + "' has the wrong size").file(path);
      dst = std::move(v);
    };
    load("params", s.params);
    load("adam_m", s.adam_m);
    load("adam_v", s.adam_v);
    s.since_fired = f.get(p + "since_fired").to_i64();
    s.running.threshold = std::stod(meta(p + "threshold"));
    s.running.threshold_set = meta(p + "threshold_set") == "1";
    s.history.clear();
    for (const auto& j : nlohmann::json::parse(meta(p + "history"))) s.history.push_back(log_from_json(j));
  }
  t.set_step(std::stoll(meta("step")));
}

// The state is written atomically, so a damaged one was edited or corrupted on disk: a value that does not
// parse is reported naming the file rather than escaping as a bare std::stoll / JSON exception.
void load_state(const std::string& path, SaeTrainer& t, const std::string& config_hash,
                const SaeRunData& data) {
  try {
    read_state_fields(path, t, config_hash, data);
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    throw Error(std::string("corrupt trainer state (") + e.what() +
                "); delete it, or pass --overwrite to start again")
        .file(path);
  }
}

// The inference SAE of a trained seed, with the input scaling folded into the weights (SAELens
// fold_activation_norm_scaling_factor): the same latents on unscaled x, and x_hat in unscaled units.
// A transcoder: the input's factor goes into W_enc, the target's into W_dec and b_dec.
SaeModel export_model(const SaeTrainer& t, const SaeSeedState& s, const SaeRunData& data) {
  const SaeConfig& cfg = t.settings().sae;
  const SaeLayout& l = t.layout();
  SaeModel m;
  m.architecture = std::string(cfg.arch->inference->name);
  m.d_in = cfg.d_in;
  m.d_sae = cfg.d_sae;
  m.apply_b_dec_to_input = cfg.apply_b_dec_to_input;
  if (data.transcoder()) {
    m.transcoder = true;
    m.d_out = cfg.d_in;
    m.hook_name_out = data.target()->hook_name;
    const auto layer = data.target()->metadata.find("layer");
    if (layer != data.target()->metadata.end()) m.hook_layer_out = std::stoll(layer->second);
  }
  const float* p = s.params.data();
  m.W_enc.assign(p + l.W_enc, p + l.W_enc + cfg.d_in * cfg.d_sae);
  m.W_dec.assign(p + l.W_dec, p + l.W_dec + cfg.d_in * cfg.d_sae);
  m.b_enc.assign(p + l.b_enc, p + l.b_enc + cfg.d_sae);
  m.b_dec.assign(p + l.b_dec, p + l.b_dec + cfg.d_in);
  if (data.scale() != 1.0) {
    const auto sf = static_cast<float>(data.scale());
    for (float& w : m.W_enc) w *= sf;
  }
  const double out_scale = data.transcoder() ? data.target_scale() : data.scale();
  if (out_scale != 1.0) {
    const auto sf = static_cast<float>(out_scale);
    for (float& w : m.W_dec) w /= sf;
    for (float& b : m.b_dec) b /= sf;
  }
  if (cfg.arch->export_tensors != nullptr) cfg.arch->export_tensors(cfg, l, p, s.running, m);
  return m;
}

// What an exported SAE's cfg.json metadata needs besides the seed state.
struct ExportContext {
  const Config& config;
  const SaeTrainSettings& settings;
  const SaeRunData& data;
};

// cfg.json metadata of one seed's SAE after `step` steps: the final export and the stability snapshots.
nlohmann::json seed_metadata(const ExportContext& e, const SaeSeedState& s, int64_t step) {
  nlohmann::json meta = e.config.resolved();
  meta["training_architecture"] = e.settings.sae.arch->name;
  meta["seed"] = s.seed;
  meta["steps"] = step;
  meta["d_sae"] = e.settings.sae.d_sae;
  meta["lr"] = e.settings.adam.lr;
  meta["samples"] = step * e.settings.batch_size;
  // The seed whose permutations ordered this SAE's batches: its own seed unless one order is shared.
  meta["data_order_seed"] = e.settings.data_order_seed.value_or(s.seed);
  meta["data_order_shared"] = e.settings.data_order_seed.has_value();
  meta["hook_name"] = e.data.acts().hook_name;
  meta["model_name"] = e.data.acts().model_name;
  meta["activations_path"] = e.data.options().activations_path;
  meta["activations_sha256"] = e.data.acts().sha256;
  meta["activation_scaling_factor"] = e.data.scale();
  meta["activation_scaling_folded"] = true;
  if (e.data.transcoder()) {
    meta["transcoder"] = true;
    meta["hook_name_out"] = e.data.target()->hook_name;
    meta["target_activations_path"] = e.data.options().target_path;
    meta["target_activations_sha256"] = e.data.target()->sha256;
    meta["target_scaling_factor"] = e.data.target_scale();
  }
  if (e.settings.sae.arch->export_metadata != nullptr)
    e.settings.sae.arch->export_metadata(e.settings.sae, s.running, meta);
  meta["producer"] = "husai";
  return meta;
}

// A stability snapshot appears whole or not at all: both files are written into a temporary folder beside
// the final one, which is then renamed into place. When the snapshot exists already (a run killed after
// writing it resumes from an earlier checkpoint and reaches the step again) its files are replaced one rename
// each, by the same bytes, so the folder never vanishes: a checkpoint past this step can only exist once the
// snapshot was complete, and resuming from it never rewrites the snapshot.
void write_snapshot(const std::string& final_dir, const SaeModel& model, const nlohmann::json& meta) {
  const fs::path target(final_dir);
  const fs::path parent = target.parent_path();
  const std::string prefix = "." + target.filename().string() + ".tmp.";
  ensure_directory(parent.string());
  std::error_code ec;
  // Leftovers of a run killed while writing this snapshot.
  for (const auto& entry : fs::directory_iterator(parent)) {
    if (entry.path().filename().string().rfind(prefix, 0) == 0) fs::remove_all(entry.path(), ec);
  }
  const fs::path tmp = parent / (prefix + std::to_string(::getpid()));
  write_saelens_folder(tmp.string(), model, meta);
  if (!fs::exists(target)) {
    fs::rename(tmp, target, ec);
    if (ec) throw Error("cannot rename " + tmp.string() + " to " + target.string() + ": " + ec.message());
    return;
  }
  for (const char* name : {"sae_weights.safetensors", "cfg.json"}) {
    fs::rename(tmp / name, target / name, ec);
    if (ec)
      throw Error("cannot rename " + (tmp / name).string() + " into " + final_dir + ": " + ec.message());
  }
  fs::remove_all(tmp, ec);
}

nlohmann::json plateau_info(const std::vector<SaeLogRow>& h) {
  // Relative loss improvement over the last 20% of the logged curve: below 1% counts as a plateau.
  nlohmann::json j = {{"rule", "loss(at 80% of logged steps) vs final loss: relative improvement < 0.01"}};
  if (h.size() < 5) {
    j["plateaued"] = nullptr;
    j["relative_improvement_last_20pct"] = nullptr;
    return j;
  }
  const SaeLogRow& a = h[static_cast<size_t>(static_cast<double>(h.size() - 1) * 0.8)];
  const SaeLogRow& b = h.back();
  const double rel = a.loss != 0 ? (a.loss - b.loss) / std::abs(a.loss) : 0.0;
  j["from_step"] = a.step;
  j["to_step"] = b.step;
  j["relative_improvement_last_20pct"] = rel;
  j["ev_gain_last_20pct"] = b.explained_variance - a.explained_variance;
  j["plateaued"] = rel < 0.01;
  return j;
}

}  // namespace

ConfigSchema sae_config_schema() {
  ConfigSchema s;
  const SaeConfig d{};  // the one source of the SAE defaults
  std::vector<std::string> names;
  for (const SaeArchitecture* a : sae_architectures()) names.emplace_back(a->name);
  s.add_enum("sae.architecture", std::string(d.arch->name), names, "training architecture");
  s.add_int("sae.d_sae", nullptr, "latents; null = expansion * d_in").nullable().min(1).max(1 << 24);
  s.add_float("sae.expansion", 8.0, "d_sae / d_in when d_sae is null").greater_than(0.0);
  declare_sae_architecture_keys(s);  // each architecture's own keys (sae/architecture.hpp)
  s.add_bool("sae.apply_b_dec_to_input", d.apply_b_dec_to_input,
             "subtract b_dec from the input before encoding (SAELens)");
  s.add_bool("sae.normalize_decoder", true,
             "unit-norm decoder rows after every step, parallel gradient removed");
  s.add_enum("sae.b_dec_init", "geometric_median", {"geometric_median", "mean", "zeros"}, "b_dec at init");
  s.add_enum("sae.normalize_activations", "expected_average_only_in", {"expected_average_only_in", "none"},
             "scale inputs so E||x|| = sqrt(d_in) during training (folded into the saved weights)");

  s.add_string("data.key", "activations", "tensor of the activation file holding the rows [N, d_in]");
  s.add_float("data.eval_fraction", 0.1, "fraction of rows held out from training").min(0.0).less_than(1.0);
  s.add_int("data.split_seed", 0, "seed of the held-out permutation (independent of the SAE seeds)").min(0);
  s.add_int("data.buffer_rows", 131072,
            "rows held in memory: a file with more rows is streamed through a shuffle window this size "
            "(held-out blocks, train/sae_run_data.hpp)")
      .min(SaeRunData::kSplitBlockRows);

  s.add_int("training.steps", 3000, "optimizer steps (each seed)").min(1);
  s.add_float("training.epochs", nullptr, "passes over the training rows instead of steps")
      .nullable()
      .greater_than(0.0);
  s.add_int("training.batch_size", 1024, "rows per step").min(1);
  s.add_float("training.lr", nullptr, "Adam learning rate; null = 5e-4 relu, 1e-3 others")
      .nullable()
      .greater_than(0.0);
  s.add_float_list("training.betas", nlohmann::json::array({0.9, 0.999}), "Adam betas")
      .length(2)
      .min(0.0)
      .less_than(1.0);
  s.add_float("training.eps", 1e-8, "Adam epsilon").greater_than(0.0);
  s.add_int("training.lr_warmup_steps", 50, "linear learning-rate warm-up").min(0);
  s.add_float("training.lr_decay_fraction", 0.2, "linear decay over this final fraction of the steps")
      .min(0.0)
      .max(1.0);
  s.add_float("training.min_lr_ratio", 0.0, "final lr / lr").min(0.0).max(1.0);
  s.add_float("training.grad_clip_norm", 1.0, "global gradient-norm clip (0: none)").min(0.0);
  s.add_int_list("training.seeds", nlohmann::json::array({42}), "SAE seeds, trained in one pass").min(0);
  s.add_int("training.data_order_seed", nullptr,
            "null = each SAE seed shuffles the rows with its own seed; an int = one data order shared by all "
            "seeds")
      .nullable()
      .min(0);
  s.add_float_list(
       "training.stability_checkpoints", nlohmann::json::array({0.125, 0.25, 0.5}),
       "fractions of training at which every seed's SAE is saved under seed<S>/checkpoints/step_<N>/ "
       "(stability against steps; the final SAE is the 1.0 point); [] = none")
      .greater_than(0.0)
      .less_than(1.0);
  s.add_int("training.checkpoint_every", 500, "steps between resumable checkpoints (0: only at stop/end)")
      .min(0);
  s.add_int("training.log_every", 50, "steps between metrics.jsonl rows").min(1);
  s.add_int("training.eval_batch_size", 4096, "rows per pass when computing metrics").min(1);
  s.add_string("consistency.reference", nullptr,
               "SAE folder whose decoder rows the alignment penalty pulls towards; null = no penalty")
      .nullable();
  s.add_float("consistency.lambda", 0.0,
              "weight of the penalty lambda * (1 - mean_i max_j |cos(D_i, R_j)|) (scaled-input MSE units)")
      .min(0.0);
  s.add_check([](const Config& c) {
    if (!c.is_null("training.epochs") && c.source("training.steps").kind != ValueSource::Kind::kDefault) {
      c.fail("give training.steps or training.epochs, not both", {"training.steps", "training.epochs"});
    }
    std::vector<int64_t> seeds = c.get_int_list("training.seeds");
    if (seeds.empty()) c.fail("training.seeds needs at least one seed", {"training.seeds"});
    std::sort(seeds.begin(), seeds.end());
    if (std::adjacent_find(seeds.begin(), seeds.end()) != seeds.end()) {
      c.fail("training.seeds has a repeated seed", {"training.seeds"});
    }
    if (c.get_double("consistency.lambda") > 0 && c.is_null("consistency.reference")) {
      c.fail("consistency.lambda > 0 needs consistency.reference (an SAE folder)",
             {"consistency.lambda", "consistency.reference"});
    }
  });
  return s;
}

namespace {

std::shared_ptr<const ConsistencyReference> consistency_reference(const std::string& dir, int64_t d_in) {
  const SaeModel reference = load_sae(dir);
  if (reference.d_in != d_in) {
    throw Error("the consistency reference " + dir + " has d_in " + std::to_string(reference.d_in) +
                ", the activations " + std::to_string(d_in))
        .key("consistency.reference");
  }
  return std::make_shared<const ConsistencyReference>(
      make_consistency_reference(reference.W_dec.data(), reference.d_sae, reference.d_in));
}

// The final folders and metrics of the seeds of a completed run that this process trained.
void write_final_outputs(const std::string& dir, const Config& config, const SaeTrainer& trainer,
                         const SaeRunData& data, const std::string& consistency_dir, bool resuming,
                         TrainSaeResult& result) {
  const SaeTrainSettings& settings = trainer.settings();
  const int64_t D = settings.sae.d_in;
  const int64_t eval_batch = config.get_int("training.eval_batch_size");
  const ExportContext export_ctx{config, settings, data};
  for (const SaeSeedState& s : trainer.seeds()) {
    const SaeModel model = export_model(trainer, s, data);
    const std::string sdir = seed_dir(dir, s.seed);
    write_saelens_folder(sdir, model, seed_metadata(export_ctx, s, trainer.step()));
    const ReconstructionMetrics held = data.held_out_metrics(model, eval_batch);
    const ReconstructionMetrics tr = data.train_metrics(model, eval_batch);
    nlohmann::json metrics = {{"schema_version", kSchemaVersion},
                              {"seed", s.seed},
                              {"architecture", model.architecture},
                              {"training_architecture", settings.sae.arch->name},
                              {"d_in", D},
                              {"d_sae", settings.sae.d_sae},
                              {"steps", trainer.step()},
                              {"samples", trainer.step() * settings.batch_size},
                              {"held_out", held.to_json()},
                              {"train_rows", tr.to_json()},
                              {"final_batch", log_json(s.history.empty() ? SaeLogRow{} : s.history.back(),
                                                       true, settings.consistency_active())},
                              {"plateau", plateau_info(s.history)},
                              {"activation_scaling_factor", data.scale()},
                              {"data", data.describe()},
                              {"wall_time_s", result.wall_time_s},
                              {"samples_per_s", result.samples_per_s},
                              {"resumed", resuming}};
    if (data.transcoder()) {
      // The metrics above compare the prediction with the target rows: fvu = 1 - explained variance.
      metrics["transcoder"] = {{"hook_name_in", data.acts().hook_name},
                               {"hook_name_out", data.target()->hook_name},
                               {"held_out_fvu", 1.0 - held.explained_variance},
                               {"target_scaling_factor", data.target_scale()}};
    }
    if (settings.consistency_active()) {
      metrics["consistency"] = {
          {"reference", consistency_dir},
          {"lambda", settings.consistency_lambda},
          {"alignment_final_batch", s.history.empty() ? 0.0 : s.history.back().consistency_alignment}};
    }
    write_file_atomic(path_join(sdir, "metrics.json"), metrics.dump(2) + "\n");
    result.eval_explained_variance.push_back(held.explained_variance);
    result.eval_l0.push_back(held.l0);
  }
}

// The manifest of a completed run: inputs, the split, the trainer states and every seed's outputs.
void write_run_manifest(const std::string& dir, const Config& config, const SaeRunData& data,
                        const std::vector<uint64_t>& seeds, const std::vector<std::string>& state_files,
                        const std::vector<SaeSnapshotPoint>& snapshots, const std::string& consistency_dir) {
  Manifest manifest;
  manifest.command = command_line();
  manifest.config_hash = config.hash();
  add_activation_inputs(manifest, data.acts());
  if (data.transcoder()) add_activation_inputs(manifest, *data.target());
  if (!consistency_dir.empty()) manifest.add_input(path_join(consistency_dir, "sae_weights.safetensors"));
  manifest.add_output(dir, "split.safetensors");
  for (const std::string& f : state_files) manifest.add_output(dir, f);
  for (const uint64_t seed : seeds) {
    for (const char* name : {"cfg.json", "sae_weights.safetensors", "metrics.json", "metrics.jsonl"}) {
      manifest.add_output(dir, SaeRunLayout::seed_name(static_cast<int64_t>(seed)) + "/" + name);
    }
    for (const SaeSnapshotPoint& p : snapshots) {
      const std::string rel = fmt::format("seed{}/checkpoints/step_{}", seed, p.step);
      // A snapshot removed by hand before a resume stays missing (warned about in train_sae).
      if (!fs::exists(path_join(dir, rel + "/cfg.json"))) continue;
      for (const char* name : {"cfg.json", "sae_weights.safetensors"})
        manifest.add_output(dir, rel + "/" + name);
    }
  }
  if (cluster::size() > 1) manifest.extra["mpi_ranks"] = cluster::size();
  manifest.extra["resolved_config"] = config.resolved();
  manifest.write(dir);
}

void warn_missing_snapshots(const std::string& dir, const SaeTrainer& trainer,
                            const std::vector<SaeSnapshotPoint>& snapshots) {
  for (const SaeSnapshotPoint& p : snapshots) {
    for (const SaeSeedState& s : trainer.seeds()) {
      const std::string sdir = sae_snapshot_dir(dir, static_cast<int64_t>(s.seed), p.step);
      if (p.step <= trainer.step() && !fs::exists(path_join(sdir, "cfg.json"))) {
        std::fprintf(stderr,
                     "husai: warning: stability snapshot %s is missing and cannot be recreated when resuming "
                     "from step %lld; rerun with --overwrite to have it\n",
                     sdir.c_str(), static_cast<long long>(trainer.step()));
      }
    }
  }
}

// The trainer state of rank r of n: trainer_state.safetensors for one process, else
// trainer_state.rank<r>-of-<n>.safetensors (each rank's seeds).
std::string state_file_name(int r, int n) {
  if (n == 1) return kState;
  return fmt::format("trainer_state.rank{}-of-{}.safetensors", r, n);
}

// The state this process resumes from: its own file, else a one-process run's state holding its seeds (a
// run resumed under mpirun after starting as one process); none when neither exists.
std::string find_resume_state(const std::string& dir, const std::string& own_name,
                              const std::vector<uint64_t>& seeds) {
  std::string own = path_join(dir, own_name);
  if (fs::exists(own)) return own;
  std::string single = path_join(dir, kState);
  if (cluster::size() > 1 && fs::exists(single)) {
    const SafetensorsFile f = SafetensorsFile::load(single);
    const auto it = f.metadata.find("seeds");
    if (it != f.metadata.end()) {
      const nlohmann::json held = nlohmann::json::parse(it->second, nullptr, false);
      bool all = held.is_array();
      for (const uint64_t seed : seeds) {
        all = all && std::find(held.begin(), held.end(), nlohmann::json(seed)) != held.end();
      }
      if (all) return single;
    }
  }
  return "";
}

// Trains settings.seeds (this process's share of the run's seeds) to the end or to a stop request, with
// checkpoints, snapshots and, when completed, their final folders and metrics.
TrainSaeResult train_seeds(const Config& config, const TrainSaeOptions& options,
                           const SaeTrainSettings& settings, const SaeRunData& data,
                           const std::string& config_hash, const std::string& consistency_dir,
                           const std::vector<SaeSnapshotPoint>& snapshots, bool resuming) {
  const std::string& dir = options.out_dir;
  // Data-parallel: every rank runs the same steps on the same state, rank 0 alone writes.
  const bool data_parallel = options.data_parallel && cluster::active();
  const bool writer = !data_parallel || cluster::rank() == 0;
  SaeTrainer trainer(settings, data.train_rows(), data.initial_b_dec(config.get_string("sae.b_dec_init")));
  trainer.init_fresh();
  if (data_parallel) trainer.set_row_share(cluster::rank(), cluster::size());
  const std::string state_name = data_parallel ? kState : state_file_name(cluster::rank(), cluster::size());
  const std::string state_path = path_join(dir, state_name);
  const std::string resume_from = resuming ? find_resume_state(dir, state_name, settings.seeds) : "";
  if (!resume_from.empty()) load_state(resume_from, trainer, config_hash, data);
  // After the state is known to fit these activations: a refused resume leaves the folder as it was.
  if (cluster::rank() == 0) {
    try {
      data.write_split(SaeRunLayout(dir).split_file());
    } catch (const std::exception& e) {
      // Under --data-parallel the other ranks are about to wait for rank 0 in the first step's exchange.
      if (data_parallel) {
        cluster::abort_all(std::string(" (data-parallel): ") + e.what());
      }
      throw;
    }
  }

  const ExportContext export_ctx{config, settings, data};
  // A snapshot is written at its step before any checkpoint at or after it, so a resumed run finds every
  // earlier snapshot on disk unless it was removed by hand; that one cannot be recreated from a later state.
  warn_missing_snapshots(dir, trainer, snapshots);
  const auto write_snapshots = [&](int64_t step) {
    if (!writer) return;
    for (const SaeSnapshotPoint& p : snapshots) {
      if (p.step != step) continue;
      for (const SaeSeedState& s : trainer.seeds()) {
        nlohmann::json meta = seed_metadata(export_ctx, s, step);
        meta["checkpoint_fraction"] = p.fraction;
        write_snapshot(sae_snapshot_dir(dir, static_cast<int64_t>(s.seed), step),
                       export_model(trainer, s, data), meta);
      }
    }
  };

  install_stop_handlers();
  const int64_t start_step = trainer.step();
  Progress progress(std::string(data.transcoder() ? "train-sae (transcoder) " : "train-sae ") +
                        std::string(settings.sae.arch->name) + " x" + std::to_string(settings.seeds.size()) +
                        " seed(s)",
                    settings.steps, options.quiet || cluster::rank() != 0);
  const auto t0 = std::chrono::steady_clock::now();
  // The step of the state on disk, for the message when training stops with an error (divergence, a full
  // disk): that state is the last good one, left untouched by the failure.
  std::optional<int64_t> checkpoint_step;
  if (!resume_from.empty()) checkpoint_step = trainer.step();
  bool completed = false;
  try {
    completed =
        trainer.run([&] { return data_parallel ? cluster::any(stop_requested()) : stop_requested(); },
                    [&](int64_t step) {
                      const SaeLogRow& r = trainer.seeds().front().history.back();
                      progress.update(step, fmt::format("loss {:.4g} ev {:.4f} l0 {:.1f} dead {:.3f}", r.loss,
                                                        r.explained_variance, r.l0, r.frac_dead));
                    },
                    [&] {
                      if (writer) save_state(dir, state_path, trainer, config_hash, data);
                      checkpoint_step = trainer.step();
                    },
                    write_snapshots);
  } catch (const Error& e) {
    progress.finish("failed");
    if (data_parallel) {
      // The other ranks may be waiting in this step's exchange: end them all, saying why.
      cluster::abort_all(" (data-parallel): " + e.message());
    }
    throw e.extended(checkpoint_step ? "; the last good checkpoint (step " +
                                           std::to_string(*checkpoint_step) + ") is kept in " + state_path
                                     : "; no checkpoint had been written yet");
  } catch (const std::exception& e) {
    // Not a husai::Error (a filesystem or allocation failure): the same, without the checkpoint hint.
    progress.finish("failed");
    if (data_parallel) {
      cluster::abort_all(std::string(" (data-parallel): ") + e.what());
    }
    throw;
  }
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  TrainSaeResult result;
  result.steps = trainer.step();
  result.seeds = settings.seeds;
  result.wall_time_s = wall;
  const double samples = static_cast<double>((trainer.step() - start_step) * settings.batch_size) *
                         static_cast<double>(settings.seeds.size());
  result.samples_per_s = wall > 0 ? samples / wall : 0.0;
  if (!completed) {
    progress.finish("interrupted");
    return result;
  }
  progress.finish();
  if (writer) {
    save_state(dir, state_path, trainer, config_hash, data);
    write_final_outputs(dir, config, trainer, data, consistency_dir, resuming, result);
  }
  result.completed = true;
  return result;
}

}  // namespace

namespace {

// A run's rows and resolved settings: everything that can be wrong with the inputs, found before anything is
// written.
struct LoadedRun {
  SaeRunData data;
  SaeTrainSettings settings;
  std::string consistency_dir;
};

LoadedRun load_run(const Config& config, const TrainSaeOptions& options) {
  SaeRunDataOptions data_options;
  data_options.activations_path = options.activations_path;
  data_options.key = config.get_string("data.key");
  data_options.target_path = options.target_activations_path;
  data_options.target_key = options.target_key;
  data_options.eval_fraction = config.get_double("data.eval_fraction");
  data_options.split_seed = config.get_int("data.split_seed");
  data_options.normalize = config.get_string("sae.normalize_activations") == "expected_average_only_in";
  data_options.buffer_rows = config.get_int("data.buffer_rows");
  SaeRunData data = SaeRunData::load(data_options);
  if (data.transcoder() && config.source("sae.apply_b_dec_to_input").kind != ValueSource::Kind::kDefault &&
      config.get_bool("sae.apply_b_dec_to_input")) {
    config.fail("a transcoder's b_dec lives at its target site, so it cannot centre the input",
                {"sae.apply_b_dec_to_input"});
  }
  const int64_t D = data.d_in();
  SaeTrainSettings settings = settings_from(config, D, data.n_train());
  if (data.transcoder()) settings.sae.apply_b_dec_to_input = false;
  settings.sae.validate();
  if (options.data_parallel && cluster::active() && settings.sae.arch->name != "topk") {
    throw Error(
        "--data-parallel splits each batch's rows over the ranks, which needs a per-row selection: it "
        "trains topk, not " +
        std::string(settings.sae.arch->name))
        .key("sae.architecture");
  }
  std::string consistency_dir;
  if (!config.is_null("consistency.reference")) {
    consistency_dir = config.get_string("consistency.reference");
    settings.consistency_reference = consistency_reference(consistency_dir, D);
  }
  return LoadedRun{std::move(data), std::move(settings), std::move(consistency_dir)};
}

constexpr const char* kServiceEnd = "husai:end-of-train-sae-calls";

std::string encode_call(const Config& config, const TrainSaeOptions& options) {
  const nlohmann::json j = {{"config", config.to_transfer_json()},
                            {"activations", options.activations_path},
                            {"target_activations", options.target_activations_path},
                            {"target_key", options.target_key},
                            {"out_dir", options.out_dir},
                            {"existing", static_cast<int>(options.existing)},
                            {"quiet", options.quiet},
                            {"data_parallel", options.data_parallel}};
  return j.dump();
}

}  // namespace

TrainSaeService::TrainSaeService() {
  if (cluster::active() && cluster::rank() == 0) cluster::set_serving(true);
}

TrainSaeService::~TrainSaeService() {
  if (!cluster::serving()) return;
  cluster::set_serving(false);
  cluster::broadcast(kServiceEnd);
}

void serve_train_sae_calls() {
  // Ctrl-C (mpirun forwards it) is rank 0's to act on: this rank stops with the call it is in.
  install_stop_handlers();
  while (true) {
    const std::string call = cluster::broadcast("");
    if (call == kServiceEnd) return;
    std::optional<Config> config;
    TrainSaeOptions options;
    try {
      const nlohmann::json j = nlohmann::json::parse(call);
      config.emplace(Config::from_transfer_json(sae_config_schema(), j.at("config")));
      options.activations_path = j.at("activations").get<std::string>();
      options.target_activations_path = j.at("target_activations").get<std::string>();
      options.target_key = j.at("target_key").get<std::string>();
      options.out_dir = j.at("out_dir").get<std::string>();
      options.existing = static_cast<ExistingOutput>(j.at("existing").get<int>());
      options.quiet = j.at("quiet").get<bool>();
      options.data_parallel = j.at("data_parallel").get<bool>();
    } catch (const std::exception& e) {
      // Rank 0 is already inside the call and this rank cannot join it (a version mismatch between ranks,
      // say): end every rank.
      cluster::abort_all(std::string(": cannot take part in rank 0's train-sae call: ") + e.what());
    }
    try {
      train_sae(*config, options);
    } catch (const std::exception&) {
      // Every rank learnt of the failure inside train_sae; rank 0 reports it and decides what follows.
    }
  }
}

TrainSaeResult train_sae(const Config& config, const TrainSaeOptions& options) {
  install_stop_handlers();  // on every rank, those without seeds too
  // In an experiment or the demo, the other ranks are waiting in serve_train_sae_calls: bring them in.
  if (cluster::serving() && cluster::rank() == 0) cluster::broadcast(encode_call(config, options));
  const std::string& dir = options.out_dir;
  // Every rank loads and checks the inputs; a failure on any rank fails them all alike.
  std::optional<LoadedRun> loaded;
  cluster::run_on_every_rank("loading " + options.activations_path,
                             [&] { loaded.emplace(load_run(config, options)); });
  const SaeRunData& data = loaded->data;
  SaeTrainSettings settings = loaded->settings;
  const std::string consistency_dir = loaded->consistency_dir;

  const std::string config_hash = config.hash();
  // Under mpirun (husai/core/cluster.hpp) rank r trains the seeds at positions r, r + N, ... of
  // training.seeds: seeds never interact, so each seed's files are the bytes one process writes. Rank 0
  // prepares the folder and writes the split and the manifest; each rank writes its seeds and its own
  // trainer state (docs/cluster.md).
  const int n_ranks = cluster::size();
  const int my_rank = cluster::rank();
  const std::vector<uint64_t> all_seeds = settings.seeds;
  const bool data_parallel = options.data_parallel && n_ranks > 1;
  if (!data_parallel) {
    settings.seeds.clear();
    for (size_t j = 0; j < all_seeds.size(); ++j) {
      if (static_cast<int>(j % static_cast<size_t>(n_ranks)) == my_rank)
        settings.seeds.push_back(all_seeds[j]);
    }
  }
  std::string share = "seeds";
  for (const uint64_t seed : settings.seeds) share += (share == "seeds" ? " " : ", ") + std::to_string(seed);
  if (settings.seeds.empty()) share = "no seeds";
  bool resuming = false;
  cluster::run_on_every_rank(share, [&] {
    if (my_rank == 0) resuming = prepare_output_dir(dir, options.existing);
  });
  if (n_ranks > 1) resuming = cluster::all_gather(resuming ? "1" : "0").front() == "1";
  const std::vector<SaeSnapshotPoint> snapshots =
      sae_snapshot_points(config.get_double_list("training.stability_checkpoints"), settings.steps);
  TrainSaeResult mine;
  mine.completed = true;
  const auto t0 = std::chrono::steady_clock::now();
  cluster::run_on_every_rank(share, [&] {
    if (settings.seeds.empty()) return;  // never rank 0: it has the first seed
    mine = train_seeds(config, options, settings, data, config_hash, consistency_dir, snapshots, resuming);
  });
  if (n_ranks == 1 || data_parallel) {
    if (mine.completed && my_rank == 0)
      write_run_manifest(dir, config, data, all_seeds, {kState}, snapshots, consistency_dir);
    return mine;
  }
  TrainSaeResult result;
  result.seeds = all_seeds;
  result.wall_time_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  bool completed = true;
  double samples = mine.samples_per_s * mine.wall_time_s;
  {
    // Every rank's completion and samples; the result rank 0 reports covers every seed.
    const std::vector<std::string> parts =
        cluster::all_gather(fmt::format("{} {} {:.17g}", mine.completed ? 1 : 0, mine.steps, samples));
    samples = 0;
    for (const std::string& part : parts) {
      int done = 0;
      long long steps = 0;
      double smp = 0;
      if (std::sscanf(part.c_str(), "%d %lld %lf", &done, &steps, &smp) != 3) throw Error("bad rank status");
      completed = completed && done == 1;
      result.steps = std::max<int64_t>(result.steps, steps);
      samples += smp;
    }
    if (completed && my_rank == 0) {
      for (const uint64_t seed : all_seeds) {
        const nlohmann::json m = read_json_file(SaeRunLayout(dir).seed_metrics(static_cast<int64_t>(seed)));
        result.eval_explained_variance.push_back(m.at("held_out").at("explained_variance").get<double>());
        result.eval_l0.push_back(m.at("held_out").at("l0").get<double>());
      }
    }
  }
  result.samples_per_s = result.wall_time_s > 0 ? samples / result.wall_time_s : 0.0;
  if (!completed) return result;
  if (my_rank == 0) {
    std::vector<std::string> state_files;
    for (int r = 0; r < std::min(n_ranks, static_cast<int>(all_seeds.size())); ++r)
      state_files.push_back(state_file_name(r, n_ranks));
    write_run_manifest(dir, config, data, all_seeds, state_files, snapshots, consistency_dir);
  }
  result.completed = true;
  return result;
}

std::string SaeRunLayout::seed_dir(int64_t seed) const {
  return path_join(dir, seed_name(seed));
}
std::vector<std::string> SaeRunLayout::seed_dirs(const std::vector<int64_t>& seeds) const {
  std::vector<std::string> out;
  out.reserve(seeds.size());
  for (const int64_t seed : seeds) out.push_back(seed_dir(seed));
  return out;
}
std::string SaeRunLayout::seed_metrics(int64_t seed) const {
  return path_join(seed_dir(seed), "metrics.json");
}
std::string SaeRunLayout::snapshot_dir(int64_t seed, int64_t step) const {
  return (fs::path(seed_dir(seed)) / "checkpoints" / ("step_" + std::to_string(step))).string();
}
std::string SaeRunLayout::split_file() const {
  return path_join(dir, "split.safetensors");
}
std::string SaeRunLayout::trainer_state_file() const {
  return path_join(dir, kState);
}
std::string SaeRunLayout::manifest_file() const {
  return path_join(dir, "manifest.json");
}

std::string sae_seed_dir(const std::string& run_dir, int64_t seed) {
  return SaeRunLayout(run_dir).seed_dir(seed);
}

std::string sae_snapshot_dir(const std::string& run_dir, int64_t seed, int64_t step) {
  return SaeRunLayout(run_dir).snapshot_dir(seed, step);
}

std::vector<SaeSnapshotPoint> sae_snapshot_points(const std::vector<double>& fractions, int64_t steps) {
  std::vector<SaeSnapshotPoint> points;
  for (const double f : fractions) {
    const auto step = static_cast<int64_t>(std::llround(f * static_cast<double>(steps)));
    if (step < 1 || step >= steps) continue;
    const bool repeated =
        std::any_of(points.begin(), points.end(), [&](const auto& p) { return p.step == step; });
    if (!repeated) points.push_back({f, step});
  }
  std::sort(points.begin(), points.end(), [](const auto& a, const auto& b) { return a.step < b.step; });
  return points;
}

std::vector<SaeCheckpointSet> list_sae_checkpoints(const std::vector<std::string>& sae_dirs,
                                                   bool include_final) {
  if (sae_dirs.empty()) throw Error("list_sae_checkpoints: no SAE folders given");
  const auto read_meta = [](const std::string& sae_dir) {
    const std::string path = path_join(sae_dir, "cfg.json");
    const nlohmann::json cfg = read_json_file(path);
    nlohmann::json meta = cfg.is_object() ? cfg.value("metadata", nlohmann::json()) : nlohmann::json();
    if (!meta.is_object() || !meta.contains("steps") || !meta["steps"].is_number_integer()) {
      throw Error("cfg.json has no integer metadata.steps: not a husai train-sae folder").file(path);
    }
    return meta;
  };
  // The snapshot steps of the first folder define the sets; every other folder must have the same ones.
  std::vector<SaeCheckpointSet> sets;
  const fs::path first_dir = fs::path(sae_dirs.front()) / "checkpoints";
  if (fs::is_directory(first_dir)) {
    for (const auto& entry : fs::directory_iterator(first_dir)) {
      const std::string name = entry.path().filename().string();
      // Temporary folders of a snapshot being written start with '.'.
      if (!entry.is_directory() || name.rfind("step_", 0) != 0) continue;
      const nlohmann::json meta = read_meta(entry.path().string());
      SaeCheckpointSet set;
      set.step = meta.at("steps").get<int64_t>();
      if (!meta.contains("checkpoint_fraction") || !meta["checkpoint_fraction"].is_number()) {
        throw Error("a stability snapshot without metadata.checkpoint_fraction").file(entry.path().string());
      }
      set.fraction = meta["checkpoint_fraction"].get<double>();
      sets.push_back(set);
    }
  }
  std::sort(sets.begin(), sets.end(), [](const auto& a, const auto& b) { return a.step < b.step; });
  for (SaeCheckpointSet& set : sets) {
    for (const std::string& dir : sae_dirs) {
      const std::string sdir =
          (fs::path(dir) / "checkpoints" / ("step_" + std::to_string(set.step))).string();
      if (!fs::exists(path_join(sdir, "cfg.json"))) {
        throw Error("no stability snapshot at step " + std::to_string(set.step) + " (" + sae_dirs.front() +
                    " has one)")
            .file(sdir);
      }
      set.sae_dirs.push_back(sdir);
    }
  }
  if (include_final) {
    SaeCheckpointSet final_set;
    final_set.fraction = 1.0;
    for (const std::string& sdir : sae_dirs) {
      const auto steps = read_meta(sdir).at("steps").get<int64_t>();
      if (final_set.sae_dirs.empty()) final_set.step = steps;
      if (steps != final_set.step) {
        throw Error("trained for " + std::to_string(steps) + " steps, " + sae_dirs.front() + " for " +
                    std::to_string(final_set.step))
            .file(sdir);
      }
      final_set.sae_dirs.push_back(sdir);
    }
    sets.push_back(final_set);
  }
  return sets;
}

std::vector<SaeCheckpointSet> list_sae_checkpoints(const std::string& run_dir,
                                                   const std::vector<int64_t>& seeds, bool include_final) {
  if (seeds.empty()) throw Error("list_sae_checkpoints: no seeds given").file(run_dir);
  return list_sae_checkpoints(SaeRunLayout(run_dir).seed_dirs(seeds), include_final);
}

}  // namespace husai
