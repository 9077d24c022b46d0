// Dumps what the PyTorch parity test compares: initial parameters (model.safetensors + config.json), a
// batch, the full-forward logits, the loss and every parameter gradient at the '=' position, and the
// losses of `steps` full-batch AdamW steps on that batch (parity.safetensors).
// Usage: husai_parity_dump --out DIR --modulus P --format seq7|abeq --n-layers L --d-model D --n-heads H
//        --d-mlp M --act-fn A --normalization LN|none --seed S --batch B --lr X --weight-decay W
//        --beta1 B1 --beta2 B2 --steps N

#include <cstdio>
#include <filesystem>
#include <map>
#include <numeric>
#include <string>

#include "husai/core/atomic_file.hpp"
#include "husai/core/error.hpp"
#include "husai/core/rng.hpp"
#include "husai/io/safetensors.hpp"
#include "husai/model/cross_entropy.hpp"
#include "husai/model/model_io.hpp"
#include "husai/model/transformer.hpp"
#include "husai/train/adamw.hpp"

namespace {

using namespace husai;

std::string exact(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

std::map<std::string, std::string> parse_args(int argc, char** argv) {
  std::map<std::string, std::string> args;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string key = argv[i];
    if (key.rfind("--", 0) != 0) throw Error("expected --key value pairs, got " + key);
    args[key.substr(2)] = argv[i + 1];
  }
  return args;
}

int run(int argc, char** argv) {
  auto args = parse_args(argc, argv);
  auto get = [&](const std::string& k, const std::string& dflt) { return args.count(k) ? args[k] : dflt; };
  const std::string out = get("out", "");
  if (out.empty()) throw Error("--out is required");
  ModularTask task;
  task.modulus = std::stoll(get("modulus", "113"));
  task.format = parse_token_format(get("format", "seq7"));
  TransformerConfig cfg;
  cfg.n_layers = std::stoll(get("n-layers", "2"));
  cfg.d_model = std::stoll(get("d-model", "128"));
  cfg.n_heads = std::stoll(get("n-heads", "4"));
  cfg.d_head = cfg.d_model / cfg.n_heads;
  cfg.d_mlp = std::stoll(get("d-mlp", "512"));
  cfg.act_fn = parse_act_fn(get("act-fn", "relu"));
  cfg.layer_norm = get("normalization", "LN") == "LN";
  cfg.d_vocab = task.d_vocab();
  cfg.n_ctx = task.n_ctx();
  const auto seed = static_cast<uint64_t>(std::stoll(get("seed", "0")));
  const int64_t B = std::stoll(get("batch", "64"));
  const int64_t steps = std::stoll(get("steps", "10"));
  AdamWConfig adamw;
  adamw.lr = std::stod(get("lr", "1e-3"));
  adamw.weight_decay = std::stod(get("weight-decay", "1.0"));
  adamw.beta1 = std::stod(get("beta1", "0.9"));
  adamw.beta2 = std::stod(get("beta2", "0.98"));
  adamw.eps = std::stod(get("eps", "1e-8"));

  const ParamLayout layout = make_param_layout(cfg);
  std::vector<float> params(static_cast<size_t>(layout.total));
  init_params(layout, params.data(), seed, 0.8 / std::sqrt(static_cast<double>(cfg.d_model)));
  ensure_directory(out);
  const nlohmann::json training = {{"seed", seed},
                                   {"lr", adamw.lr},
                                   {"weight_decay", adamw.weight_decay},
                                   {"betas", {adamw.beta1, adamw.beta2}}};
  write_file_atomic(out + "/config.json", transformer_config_json(cfg, task, training).dump(2));
  save_model_safetensors(out + "/model.safetensors", layout, params.data());

  // A seeded batch of distinct pairs.
  const std::vector<int64_t> perm = permutation(task.n_pairs(), seed, stream_id("parity-batch"));
  const std::vector<int64_t> all_tokens = task.tokens();
  const std::vector<int64_t> all_labels = task.labels();
  std::vector<int64_t> tokens, labels;
  for (int64_t i = 0; i < B; ++i) {
    const int64_t row = perm[static_cast<size_t>(i)];
    tokens.insert(tokens.end(), all_tokens.begin() + row * cfg.n_ctx,
                  all_tokens.begin() + (row + 1) * cfg.n_ctx);
    labels.push_back(all_labels[static_cast<size_t>(row)]);
  }
  SafetensorsFile dump;
  dump.put("tokens", TensorData::i64({B, cfg.n_ctx}, tokens.data()));
  dump.put("labels", TensorData::i64({B}, labels.data()));

  TransformerWorkspace<float> ws;
  const ParamViews<float> pv = make_views(cfg, layout, params.data());
  transformer_forward(cfg, pv, ws, tokens.data(), B, cfg.n_ctx, cfg.n_ctx);
  dump.put("logits", TensorData::f32({B, cfg.n_ctx, cfg.d_vocab}, ws.logits.data()));

  const int64_t V = cfg.d_vocab;
  const int64_t n_pos = task.answer_position() + 1;
  std::vector<float> losses(static_cast<size_t>(B)), dlogits(static_cast<size_t>(B * V));
  std::vector<float> grads(params.size()), m(params.size(), 0.0f), v(params.size(), 0.0f);
  std::vector<float> step_losses;
  auto loss_and_grad = [&] {
    transformer_forward(cfg, pv, ws, tokens.data(), B, n_pos, 1);
    cross_entropy_forward_backward(losses.data(), nullptr, dlogits.data(), ws.logits.data(), labels.data(), B,
                                   V, 1.0f / static_cast<float>(B));
    std::fill(grads.begin(), grads.end(), 0.0f);
    transformer_backward(cfg, pv, make_views(cfg, layout, grads.data()), ws, tokens.data(), dlogits.data());
    double sum = 0;
    for (const float l : losses) sum += static_cast<double>(l);
    return static_cast<float>(sum / static_cast<double>(B));
  };
  const float loss0 = loss_and_grad();
  dump.put("loss", TensorData::f32({1}, &loss0));
  for (const ParamEntry& e : layout.entries)
    dump.put("grad." + e.name, TensorData::f32(e.shape, grads.data() + e.offset));
  for (int64_t s = 1; s <= steps; ++s) {
    step_losses.push_back(s == 1 ? loss0 : loss_and_grad());
    adamw_step(params.data(), grads.data(), m.data(), v.data(), layout.total, s, adamw.lr, adamw);
  }
  dump.put("adamw_losses", TensorData::f32({steps}, step_losses.data()));
  for (const ParamEntry& e : layout.entries)
    dump.put("final." + e.name, TensorData::f32(e.shape, params.data() + e.offset));
  dump.metadata = {
      {"lr", exact(adamw.lr)},       {"weight_decay", exact(adamw.weight_decay)},
      {"beta1", exact(adamw.beta1)}, {"beta2", exact(adamw.beta2)},
      {"eps", exact(adamw.eps)},     {"answer_position", std::to_string(task.answer_position())}};
  dump.save(out + "/parity.safetensors");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const husai::Error& e) {
    std::fprintf(stderr, "husai_parity_dump: %s\n", e.message().c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "husai_parity_dump: %s\n", e.what());
  }
  return 1;
}
