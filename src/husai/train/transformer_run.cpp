#include "husai/train/transformer_run.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <sstream>

#include <fmt/format.h>

#include "husai/core/atomic_file.hpp"
#include "husai/core/error.hpp"
#include "husai/core/progress.hpp"
#include "husai/core/signals.hpp"
#include "husai/core/text.hpp"
#include "husai/io/gnuplot.hpp"
#include "husai/io/manifest.hpp"
#include "husai/io/safetensors.hpp"
#include "husai/model/model_io.hpp"
#include "husai/train/transformer_config.hpp"

namespace husai {
namespace {

namespace fs = std::filesystem;

constexpr int kMetricsSchemaVersion = 1;
constexpr const char* kCheckpoint = "checkpoint.safetensors";

std::string exact(double v) {
  return fmt::format("{:.17g}", v);
}

nlohmann::json epoch_json(const EpochMetrics& m) {
  return {{"epoch", m.epoch},           {"step", m.step},           {"lr", m.lr},
          {"train_loss", m.train_loss}, {"train_acc", m.train_acc}, {"val_loss", m.val_loss},
          {"val_acc", m.val_acc}};
}

EpochMetrics epoch_from_json(const nlohmann::json& j) {
  EpochMetrics m;
  m.epoch = j.at("epoch").get<int64_t>();
  m.step = j.at("step").get<int64_t>();
  m.lr = j.at("lr").get<double>();
  m.train_loss = j.at("train_loss").get<double>();
  m.train_acc = j.at("train_acc").get<double>();
  m.val_loss = j.at("val_loss").get<double>();
  m.val_acc = j.at("val_acc").get<double>();
  return m;
}

void write_metrics_jsonl(const std::string& dir, const std::vector<EpochMetrics>& history) {
  std::string out;
  for (const EpochMetrics& m : history) out += epoch_json(m).dump() + "\n";
  write_file_atomic(path_join(dir, "metrics.jsonl"), out);
}

void save_checkpoint(const std::string& dir, const TrainState& s, const std::string& config_hash) {
  // Divergence guard, second line: a step can leave non-finite weights behind a finite loss (an overflowing
  // gradient); such a state is never written over the last good checkpoint.
  // The Adam moments are checked too: an overflowing squared gradient shows up there first.
  const auto finite = [](const std::vector<float>& v) {
    return std::all_of(v.begin(), v.end(), [](float x) { return std::isfinite(x); });
  };
  if (!finite(s.params) || !finite(s.adam_m) || !finite(s.adam_v)) {
    throw Error("training diverged: the parameters or their Adam moments are not finite at step " +
                std::to_string(s.step) + " (epoch " + std::to_string(s.epochs_done) +
                "). Lower the learning rate, or check the config");
  }
  SafetensorsFile f;
  const std::vector<int64_t> shape = {static_cast<int64_t>(s.params.size())};
  f.put("params", TensorData::f32(shape, s.params.data()));
  f.put("adam_m", TensorData::f32(shape, s.adam_m.data()));
  f.put("adam_v", TensorData::f32(shape, s.adam_v.data()));
  nlohmann::json history = nlohmann::json::array();
  for (const EpochMetrics& m : s.history) history.push_back(epoch_json(m));
  f.metadata = {{"format", "husai-transformer-checkpoint"},
                {"config_hash", config_hash},
                {"epochs_done", std::to_string(s.epochs_done)},
                {"batch_in_epoch", std::to_string(s.batch_in_epoch)},
                {"step", std::to_string(s.step)},
                {"epoch_loss_sum", exact(s.epoch_loss_sum)},
                {"epoch_correct", std::to_string(s.epoch_correct)},
                {"epoch_count", std::to_string(s.epoch_count)},
                {"grok_epoch", s.grok_epoch ? std::to_string(*s.grok_epoch) : "null"},
                {"history", history.dump()}};
  f.save(path_join(dir, kCheckpoint));
  write_metrics_jsonl(dir, s.history);
}

void read_checkpoint_fields(const std::string& path, TrainState& s, const std::string& config_hash) {
  const SafetensorsFile f = SafetensorsFile::load(path);
  auto meta = [&](const std::string& key) -> const std::string& {
    const auto it = f.metadata.find(key);
    if (it == f.metadata.end()) throw Error("checkpoint metadata lacks '" + key + "'").file(path);
    return it->second;
  };
  if (meta("config_hash") != config_hash) {
    throw Error("the checkpoint was written with a different config (hash " +
                meta("config_hash").substr(0, 12) + ", now " + config_hash.substr(0, 12) +
                "); resume with the same config, or pass --overwrite to start again")
        .file(path);
  }
  const auto load_vec = [&](const char* name, std::vector<float>& dst) {
    const std::vector<float> v = f.get(name).to_f32();
    if (v.size() != dst.size())
      throw Error(std::string("tensor '") + name + "' has the wrong size").file(path);
    dst = v;
  };
  load_vec("params", s.params);
  load_vec("adam_m", s.adam_m);
  load_vec("adam_v", s.adam_v);
  s.epochs_done = std::stoll(meta("epochs_done"));
  s.batch_in_epoch = std::stoll(meta("batch_in_epoch"));
  s.step = std::stoll(meta("step"));
  s.epoch_loss_sum = std::stod(meta("epoch_loss_sum"));
  s.epoch_correct = std::stoll(meta("epoch_correct"));
  s.epoch_count = std::stoll(meta("epoch_count"));
  const std::string& grok = meta("grok_epoch");
  s.grok_epoch = grok == "null" ? std::nullopt : std::optional<int64_t>(std::stoll(grok));
  s.history.clear();
  for (const auto& j : nlohmann::json::parse(meta("history"))) s.history.push_back(epoch_from_json(j));
}

// A checkpoint is written atomically, so a damaged one was edited or corrupted on disk: any value that does
// not parse (a number, the history JSON) is reported as such, naming the file, instead of escaping as a bare
// std::stoll / JSON exception.
void load_checkpoint(const std::string& path, TrainState& s, const std::string& config_hash) {
  try {
    read_checkpoint_fields(path, s, config_hash);
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    throw Error(std::string("corrupt checkpoint (") + e.what() +
                "); delete it, or pass --overwrite to start again")
        .file(path);
  }
}

void write_split(const std::string& path, const ModularTask& task, const Split& split) {
  SafetensorsFile f;
  const std::vector<int64_t> tokens = task.tokens();
  const std::vector<int64_t> labels = task.labels();
  f.put("tokens", TensorData::i64({task.n_pairs(), task.n_ctx()}, tokens.data()));
  f.put("labels", TensorData::i64({task.n_pairs()}, labels.data()));
  f.put("train_idx", TensorData::i64({static_cast<int64_t>(split.train_idx.size())}, split.train_idx.data()));
  f.put("val_idx", TensorData::i64({static_cast<int64_t>(split.val_idx.size())}, split.val_idx.data()));
  f.metadata = {{"modulus", std::to_string(task.modulus)},
                {"operation", to_string(task.op)},
                {"format", to_string(task.format)},
                {"answer_position", std::to_string(task.answer_position())}};
  f.save(path);
}

Split read_split(const std::string& path) {
  const SafetensorsFile f = SafetensorsFile::load(path);
  Split s;
  s.train_idx = f.get("train_idx").to_i64();
  s.val_idx = f.get("val_idx").to_i64();
  return s;
}

// Returns false (and draws nothing) when there is no epoch to plot.
bool render_grokking_figure(const std::string& dir, const std::vector<EpochMetrics>& history,
                            const std::optional<int64_t>& grok_epoch, const std::string& title) {
  if (history.empty()) return false;
  std::ostringstream data;
  data << "$M << EOD\n";
  for (const EpochMetrics& m : history) {
    data << m.epoch << " "
         << fmt::format("{:.6g} {:.6g} {:.6g} {:.6g}", std::max(m.train_loss, 1e-12),
                        std::max(m.val_loss, 1e-12), m.train_acc, m.val_acc)
         << "\n";
  }
  data << "EOD\n";
  std::ostringstream body;
  body << data.str();
  body << "set multiplot layout 2,1 title '" << title << "'\n";
  body << "set logscale x\nset grid\nset key bottom left\nset xlabel 'epoch'\n";
  body << "set xrange [1:" << std::max<int64_t>(history.back().epoch, 2) << "]\n";
  if (grok_epoch) {
    body << "set arrow from " << *grok_epoch << ", graph 0 to " << *grok_epoch
         << ", graph 1 nohead dashtype 2 lc rgb '#444444'\n";
    body << "set label 'val acc >= 0.99 (epoch " << *grok_epoch << ")' at " << *grok_epoch
         << ", graph 0.5 offset 0.5,0 font ',9'\n";
  }
  body << "set ylabel 'cross-entropy at =' \nset logscale y\n";
  body << "plot $M using 1:2 with lines lw 2 lc rgb '#1f77b4' title 'train', "
          "$M using 1:3 with lines lw 2 lc rgb '#d62728' title 'validation'\n";
  body << "unset logscale y\nset ylabel 'accuracy'\nset yrange [0:1.05]\nset key top left\n";
  body << "plot $M using 1:4 with lines lw 2 lc rgb '#1f77b4' title 'train', "
          "$M using 1:5 with lines lw 2 lc rgb '#d62728' title 'validation'\n";
  body << "unset multiplot\n";
  render_figure(body.str(), path_join(dir, "grokking.png"), path_join(dir, "grokking.svg"), 900, 800);
  return true;
}

// Loads the checkpoint into the trainer's state and, unless quiet, says where training resumes.
void resume_from_checkpoint(TransformerTrainer& trainer, const std::string& checkpoint_path,
                            const std::string& config_hash, const std::string& dir, bool quiet) {
  load_checkpoint(checkpoint_path, trainer.state(), config_hash);
  if (!quiet) {
    std::fprintf(stderr, "husai: resuming %s at epoch %lld (step %lld)\n", dir.c_str(),
                 static_cast<long long>(trainer.state().epochs_done),
                 static_cast<long long>(trainer.state().step));
  }
}

// Runs the training loop (progress per epoch, checkpoints when due, stopping on a signal); returns whether
// every epoch ran. A training error is rethrown naming the last good checkpoint.
bool run_training(TransformerTrainer& trainer, Progress& progress, const std::string& dir,
                  const std::string& checkpoint_path, const std::string& config_hash, bool resuming) {
  // The step of the checkpoint on disk, for the message when training stops with an error (divergence, a
  // full disk): that checkpoint is the last good state, left untouched by the failure.
  std::optional<int64_t> checkpoint_step;
  if (resuming && fs::exists(checkpoint_path)) checkpoint_step = trainer.state().step;
  bool completed = false;
  try {
    completed =
        trainer.run([] { return stop_requested(); },
                    [&](const EpochMetrics& m) {
                      progress.update(m.epoch, fmt::format("loss {:.4f} val_loss {:.4f} val_acc {:.4f}",
                                                           m.train_loss, m.val_loss, m.val_acc));
                    },
                    [&] {
                      save_checkpoint(dir, trainer.state(), config_hash);
                      checkpoint_step = trainer.state().step;
                    });
  } catch (const Error& e) {
    progress.finish("failed");
    throw e.extended(checkpoint_step
                         ? "; the last good checkpoint (step " + std::to_string(*checkpoint_step) +
                               ") is kept in " + checkpoint_path
                         : "; no checkpoint had been written yet");
  }
  return completed;
}

// The run's metrics.json: final accuracies and losses, the validation-loss summary, sizes and throughput.
nlohmann::json metrics_json(const TransformerTrainer& trainer, const Split& split,
                            const TrainTransformerResult& result, int64_t start_step, double wall,
                            bool resuming) {
  const ValLossSummary val_summary = summarise_val_loss(trainer.state().history);
  const int64_t steps_run = trainer.state().step - start_step;
  const int64_t samples = steps_run * trainer.batch_size();
  return {
      {"schema_version", kMetricsSchemaVersion},
      {"train_acc", result.train.acc},
      {"val_acc", result.val.acc},
      {"train_loss", result.train.loss},
      {"val_loss", result.val.loss},
      {"grok_epoch", result.grok_epoch ? nlohmann::json(*result.grok_epoch) : nlohmann::json(nullptr)},
      {"grok_threshold", 0.99},
      {"final_val_loss", val_summary.final_val_loss},
      {"best_val_loss", val_summary.best_val_loss},
      {"best_epoch", val_summary.best_epoch},
      {"late_epochs", val_summary.late_epochs},
      {"late_max_val_loss", val_summary.late_max_val_loss},
      {"epochs", result.epochs},
      {"steps", trainer.state().step},
      {"n_train", split.train_idx.size()},
      {"n_val", split.val_idx.size()},
      {"n_params", trainer.layout().total},
      {"wall_time_s", wall},
      {"train_samples", samples},
      {"samples_per_s", wall > 0 ? static_cast<double>(samples) / wall : 0.0},
      {"resumed", resuming},
  };
}

// Writes the run's manifest: every output file (the figure when drawn) and the resolved config.
void write_run_manifest(const std::string& dir, const std::string& config_hash, bool has_figure,
                        const Config& config) {
  Manifest manifest;
  manifest.command = command_line();
  manifest.config_hash = config_hash;
  for (const char* name : {"config.json", "split.safetensors", "model.safetensors", "metrics.json",
                           "metrics.jsonl", kCheckpoint}) {
    manifest.add_output(dir, name);
  }
  if (has_figure) {
    manifest.add_output(dir, "grokking.png");
    manifest.add_output(dir, "grokking.svg");
  }
  manifest.extra["resolved_config"] = config.resolved();
  manifest.write(dir);
}

}  // namespace

TrainTransformerResult train_transformer(const Config& config, const TrainTransformerOptions& options) {
  const TransformerRunConfig rc = transformer_run_config(config);
  rc.task.validate();
  rc.model.validate();
  const std::string& dir = options.out_dir;
  const std::string config_hash = config.hash();
  const bool resuming = prepare_output_dir(dir, options.existing);

  nlohmann::json training = config.resolved().at("training");
  const nlohmann::json config_json = transformer_config_json(rc.model, rc.task, training);
  const Split split = make_split(rc.task.n_pairs(), rc.train.train_fraction, rc.train.seed);

  TransformerTrainer trainer(rc.model, rc.task, rc.train, split);
  trainer.init_fresh();
  const std::string checkpoint_path = path_join(dir, kCheckpoint);
  if (resuming && fs::exists(checkpoint_path)) {
    resume_from_checkpoint(trainer, checkpoint_path, config_hash, dir, options.quiet);
  }
  write_file_atomic(path_join(dir, "config.json"), config_json.dump(2) + "\n");
  write_split(path_join(dir, "split.safetensors"), rc.task, split);

  install_stop_handlers();
  Progress progress("train-transformer", rc.train.epochs, options.quiet);
  const int64_t start_step = trainer.state().step;
  const auto t0 = std::chrono::steady_clock::now();
  const bool completed = run_training(trainer, progress, dir, checkpoint_path, config_hash, resuming);
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  TrainTransformerResult result;
  result.epochs = trainer.state().epochs_done;
  result.grok_epoch = trainer.state().grok_epoch;
  result.wall_time_s = wall;
  if (!completed) {
    progress.finish("interrupted");
    result.completed = false;
    return result;
  }
  save_checkpoint(dir, trainer.state(), config_hash);
  result.completed = true;
  result.train = trainer.evaluate(split.train_idx);
  result.val = trainer.evaluate(split.val_idx);
  progress.finish(fmt::format("val_acc {:.4f} grok_epoch {}", result.val.acc,
                              result.grok_epoch ? std::to_string(*result.grok_epoch) : "none"));

  save_model_safetensors(path_join(dir, "model.safetensors"), trainer.layout(), trainer.state().params.data(),
                         {{"format", "pt"}, {"producer", "husai"}, {"config_hash", config_hash}});
  const nlohmann::json metrics = metrics_json(trainer, split, result, start_step, wall, resuming);
  write_file_atomic(path_join(dir, "metrics.json"), metrics.dump(2) + "\n");
  bool has_figure = false;
  if (options.figures) {
    has_figure = render_grokking_figure(
        dir, trainer.state().history, result.grok_epoch,
        fmt::format("(a {} b) mod {}, {} layer(s), train fraction {}", to_string(rc.task.op), rc.task.modulus,
                    rc.model.n_layers, rc.train.train_fraction));
  }
  write_run_manifest(dir, config_hash, has_figure, config);
  return result;
}

TransformerEvaluation evaluate_transformer_dir(const std::string& dir) {
  LoadedModel m = load_model_dir(dir);
  const std::string split_path = path_join(dir, "split.safetensors");
  const Split split = read_split(split_path);
  TransformerTrainConfig tc;
  TransformerTrainer trainer(m.cfg, m.task, tc, split);
  trainer.init_fresh();
  trainer.state().params = m.params;
  TransformerEvaluation ev;
  ev.train = trainer.evaluate(split.train_idx);
  ev.val = trainer.evaluate(split.val_idx);
  std::vector<int64_t> all(static_cast<size_t>(m.task.n_pairs()));
  for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<int64_t>(i);
  ev.all = trainer.evaluate(all);
  return ev;
}

}  // namespace husai
