#include "husai/train/transformer_config.hpp"

namespace husai {

ConfigSchema transformer_config_schema() {
  ConfigSchema s;
  s.add_int("model.n_layers", 2, "number of transformer blocks").min(1).max(64);
  s.add_int("model.d_model", 128, "residual stream width").min(1).max(8192);
  s.add_int("model.n_heads", 4, "attention heads per block").min(1).max(256);
  s.add_int("model.d_head", nullptr, "width of one head; null = d_model / n_heads")
      .nullable()
      .min(1)
      .max(8192);
  s.add_int("model.d_mlp", 512, "MLP hidden width").min(1).max(65536);
  s.add_enum("model.act_fn", "relu", {"relu", "gelu", "gelu_new", "gelu_fast", "silu"}, "MLP activation");
  s.add_enum("model.normalization_type", "LN", {"LN", "none"},
             "LayerNorm before attention, MLP and unembed, or none");

  s.add_int("task.modulus", 113, "the prime (or any modulus) p; all p^2 pairs are used").min(2).max(100000);
  s.add_enum("task.operation", "add", {"add", "sub", "mul"}, "c = (a op b) mod p");
  s.add_enum("task.format", "seq7", {"seq7", "abeq"},
             "seq7 = [BOS,a,+,b,=,c,EOS] (reference layout), abeq = [a,b,=] (Nanda et al.); scored at '='");

  s.add_int("training.epochs", 100, "passes over the training pairs").min(0).max(10000000);
  s.add_int_or_string("training.batch_size", 512, "full", "rows per AdamW step, or 'full' for full batch")
      .min(1);
  s.add_float("training.train_fraction", 0.8, "fraction of the p^2 pairs trained on; the rest is validation")
      .greater_than(0.0)
      .less_than(1.0);
  s.add_float("training.lr", 1e-3, "AdamW learning rate").greater_than(0.0).max(10.0);
  s.add_float("training.weight_decay", 1.0, "AdamW decoupled weight decay (on every parameter)").min(0.0);
  s.add_float_list("training.betas", nlohmann::json::array({0.9, 0.98}), "AdamW betas")
      .length(2)
      .min(0.0)
      .less_than(1.0);
  s.add_float("training.eps", 1e-8, "AdamW epsilon").greater_than(0.0);
  s.add_int("training.warmup_steps", 10, "linear learning-rate warm-up steps").min(0);
  s.add_enum("training.lr_schedule", "cosine", {"constant", "cosine"},
             "after warm-up: constant, or cosine decay to lr * min_lr_ratio at the last step");
  s.add_float("training.min_lr_ratio", 0.01, "final lr / lr for the cosine schedule").min(0.0).max(1.0);
  s.add_int("training.seed", 0, "seed of the initialisation, the split and the data order").min(0);
  s.add_float("training.init_range", nullptr,
              "std of W_* at init; null = 0.8 / sqrt(d_model) (TransformerLens)")
      .nullable()
      .greater_than(0.0);
  s.add_int("training.checkpoint_every", 50,
            "epochs between resumable checkpoints (0: only at the end or on stop)")
      .min(0);
  s.add_int("training.eval_batch_size", 4096, "rows per forward pass when evaluating").min(1);

  s.add_check([](const Config& c) {
    if (c.is_null("model.d_head") && c.get_int("model.d_model") % c.get_int("model.n_heads") != 0) {
      c.fail("model.d_model must be divisible by model.n_heads (or set model.d_head)",
             {"model.d_model", "model.n_heads"});
    }
  });
  return s;
}

TransformerRunConfig transformer_run_config(const Config& config) {
  TransformerRunConfig r;
  r.task.modulus = config.get_int("task.modulus");
  r.task.op = parse_mod_op(config.get_string("task.operation"));
  r.task.format = parse_token_format(config.get_string("task.format"));

  TransformerConfig& m = r.model;
  m.n_layers = config.get_int("model.n_layers");
  m.d_model = config.get_int("model.d_model");
  m.n_heads = config.get_int("model.n_heads");
  m.d_head = config.is_null("model.d_head") ? m.d_model / m.n_heads : config.get_int("model.d_head");
  m.d_mlp = config.get_int("model.d_mlp");
  m.act_fn = parse_act_fn(config.get_string("model.act_fn"));
  m.layer_norm = config.get_string("model.normalization_type") == "LN";
  m.d_vocab = r.task.d_vocab();
  m.n_ctx = r.task.n_ctx();

  TransformerTrainConfig& t = r.train;
  t.epochs = config.get_int("training.epochs");
  const nlohmann::json& bs = config.get("training.batch_size");
  t.batch_size = bs.is_string() ? 0 : bs.get<int64_t>();
  t.train_fraction = config.get_double("training.train_fraction");
  t.adamw.lr = config.get_double("training.lr");
  t.adamw.weight_decay = config.get_double("training.weight_decay");
  const std::vector<double> betas = config.get_double_list("training.betas");
  t.adamw.beta1 = betas[0];
  t.adamw.beta2 = betas[1];
  t.adamw.eps = config.get_double("training.eps");
  t.warmup_steps = config.get_int("training.warmup_steps");
  t.lr_schedule =
      config.get_string("training.lr_schedule") == "cosine" ? LrSchedule::Cosine : LrSchedule::Constant;
  t.min_lr_ratio = config.get_double("training.min_lr_ratio");
  t.seed = static_cast<uint64_t>(config.get_int("training.seed"));
  t.init_range = config.is_null("training.init_range") ? 0.0 : config.get_double("training.init_range");
  t.checkpoint_every = config.get_int("training.checkpoint_every");
  t.eval_batch_size = config.get_int("training.eval_batch_size");
  return r;
}

}  // namespace husai
