#include "husai/train/sae_trainer.hpp"

#include <algorithm>
#include <cmath>

#include "husai/core/error.hpp"
#include "husai/core/lanes.hpp"
#include "husai/core/rng.hpp"
#include "husai/core/threading.hpp"

namespace husai {

SaeTrainer::SaeTrainer(const SaeTrainSettings& settings, const float* train_x, int64_t n_train,
                       std::vector<float> b_dec_init, const float* train_y)
    : SaeTrainer(settings, SaeRowStream(train_x, train_y, n_train, settings.sae.d_in),
                 std::move(b_dec_init)) {}

SaeTrainer::SaeTrainer(SaeTrainSettings settings, SaeRowStream rows, std::vector<float> b_dec_init)
    : settings_(std::move(settings)),
      rows_(std::move(rows)),
      b_dec_init_(std::move(b_dec_init)),
      layout_(make_sae_layout(settings_.sae)) {
  settings_.adam.weight_decay = 0.0;
  settings_.sae.validate();
  if (settings_.seeds.empty()) throw Error("no seeds given").key("training.seeds");
  if (rows_.d_in() != settings_.sae.d_in) {
    throw Error("the rows have width " + std::to_string(rows_.d_in()) + ", the SAE d_in " +
                std::to_string(settings_.sae.d_in));
  }
  if (rows_.paired() && settings_.sae.apply_b_dec_to_input) {
    throw Error("a transcoder's b_dec lives at its target site: apply_b_dec_to_input must be false")
        .key("sae.apply_b_dec_to_input");
  }
  if (settings_.consistency_active() && settings_.consistency_reference->d_in != settings_.sae.d_in) {
    throw Error("the consistency reference has d_in " +
                std::to_string(settings_.consistency_reference->d_in) + ", the SAE " +
                std::to_string(settings_.sae.d_in))
        .key("consistency.reference");
  }
}

void SaeTrainer::init_fresh() {
  seeds_.clear();
  step_ = 0;
  for (uint64_t seed : settings_.seeds) {
    SaeSeedState s;
    s.seed = seed;
    s.params.assign(static_cast<size_t>(layout_.total), 0.0f);
    init_sae_params(settings_.sae, layout_, s.params.data(), seed, b_dec_init_);
    s.adam_m.assign(s.params.size(), 0.0f);
    s.adam_v.assign(s.params.size(), 0.0f);
    s.since_fired.assign(static_cast<size_t>(settings_.sae.d_sae), 0);
    seeds_.push_back(std::move(s));
  }
}

double SaeTrainer::lr_at(int64_t step) const {
  const double lr = settings_.adam.lr;
  const int64_t total = settings_.steps;
  if (settings_.lr_warmup_steps > 0 && step < settings_.lr_warmup_steps) {
    return lr * static_cast<double>(step) / static_cast<double>(settings_.lr_warmup_steps);
  }
  const auto decay_steps =
      static_cast<int64_t>(std::llround(settings_.lr_decay_fraction * static_cast<double>(total)));
  const int64_t decay_start = total - decay_steps;
  if (decay_steps <= 0 || step <= decay_start) return lr;
  const double left = static_cast<double>(total - step) / static_cast<double>(decay_steps);
  return lr * (settings_.min_lr_ratio + (1.0 - settings_.min_lr_ratio) * std::max(0.0, left));
}

SaeLogRow SaeTrainer::train_step(SaeSeedState& s, const float* x, const float* y) {
  const SaeConfig& cfg = settings_.sae;
  const int64_t B = settings_.batch_size;
  const int64_t step = step_ + 1;
  dead_.resize(static_cast<size_t>(cfg.d_sae));
  int64_t n_dead = 0;
  for (int64_t i = 0; i < cfg.d_sae; ++i) {
    const bool dead = s.since_fired[static_cast<size_t>(i)] >= cfg.dead_window;
    dead_[static_cast<size_t>(i)] = dead ? 1 : 0;
    n_dead += dead ? 1 : 0;
  }
  grads_.resize(static_cast<size_t>(layout_.total));
  const SaeBatch<float> batch{x, B, step, dead_.data(), y};
  SaeLossParts parts = sae_loss_backward<float>(cfg, layout_, s.params.data(), grads_.data(), batch, ws_);
  double alignment = 0;
  if (settings_.consistency_active()) {
    const double lambda = settings_.consistency_lambda;
    alignment = consistency_alignment<float>(s.params.data() + layout_.W_dec, cfg.d_sae,
                                             *settings_.consistency_reference, lambda,
                                             grads_.data() + layout_.W_dec, consistency_ws_);
    parts.loss += lambda * (1.0 - alignment);
  }
  if (!std::isfinite(parts.loss)) {
    throw Error("training diverged: the loss is " + std::to_string(parts.loss) + " at step " +
                std::to_string(step) + " (seed " + std::to_string(s.seed) +
                "). Lower the learning rate or check the activations");
  }
  bool clip = false;
  float clip_scale = 1.0f;
  if (settings_.grad_clip_norm > 0) {
    // Fixed chunks, kLanes partial sums each, combined in chunk order: independent of the thread count.
    constexpr int64_t kChunk = 16384;
    const auto n = static_cast<int64_t>(grads_.size());
    norm_parts_.assign(static_cast<size_t>((n + kChunk - 1) / kChunk), 0.0);
    parallel_chunks(n, kChunk, [&](int64_t i0, int64_t i1) {
      double part[kLanes] = {};
      int64_t i = i0;
      for (; i + kLanes <= i1; i += kLanes) {
        for (int l = 0; l < kLanes; ++l) {
          const auto v = static_cast<double>(grads_[static_cast<size_t>(i + l)]);
          part[l] += v * v;
        }
      }
      for (int l = 0; i < i1; ++i, ++l) {
        const auto v = static_cast<double>(grads_[static_cast<size_t>(i)]);
        part[l] += v * v;
      }
      double sum = 0;
      for (const double v : part) sum += v;
      norm_parts_[static_cast<size_t>(i0 / kChunk)] = sum;
    });
    double n2 = 0;
    for (const double v : norm_parts_) n2 += v;
    const double norm = std::sqrt(n2);
    if (norm > settings_.grad_clip_norm) {
      clip = true;
      clip_scale = static_cast<float>(settings_.grad_clip_norm / norm);
    }
  }
  optimizer_step(s, step, clip, clip_scale);
  for (int64_t i = 0; i < cfg.d_sae; ++i) {
    int64_t& c = s.since_fired[static_cast<size_t>(i)];
    c = ws_.fired[static_cast<size_t>(i)] != 0 ? 0 : c + B;
  }
  if (cfg.arch->after_step != nullptr) cfg.arch->after_step(cfg, parts, ws_, s.running);
  SaeLogRow row;
  row.step = step;
  row.samples = step * B;
  row.lr = lr_at(step);
  row.loss = parts.loss;
  row.mse = parts.mse;
  row.aux = parts.aux;
  row.sparsity = parts.sparsity;
  row.l0 = parts.l0;
  row.explained_variance = parts.explained_variance;
  row.frac_dead = static_cast<double>(n_dead) / static_cast<double>(cfg.d_sae);
  row.threshold = s.running.threshold;
  row.consistency_alignment = alignment;
  return row;
}

void fused_sae_optimizer_step(const SaeConfig& cfg, const SaeLayout& layout, float* P, float* G, float* M,
                              float* V, const AdamWScalars<float>& sc, bool clip, float clip_scale,
                              bool renorm) {
  // One fused pass, the same arithmetic as the sequence clip -> remove_parallel_decoder_grad -> adamw_step ->
  // normalize_decoder_rows: each W_dec row is scaled, projected, updated and renormalised while in cache; the
  // other parameters are scaled and updated. Tasks are fixed ranges, each element's operations are its own:
  // independent of the thread count.
  const int64_t D = cfg.d_in;
  const auto plain = [&](int64_t i0, int64_t i1) {
    if (clip) {
      for (int64_t i = i0; i < i1; ++i) G[i] *= clip_scale;
    }
    adamw_update(P, G, M, V, i0, i1, sc);
  };
  constexpr int64_t kRows = 64;
  constexpr int64_t kChunk = 16384;
  // Tasks: W_dec row blocks (when renormalising), then fixed chunks of everything else.
  const int64_t dec_begin = layout.W_dec;
  const int64_t dec_end = layout.b_enc;
  const int64_t n_row_tasks = renorm ? (cfg.d_sae + kRows - 1) / kRows : 0;
  const int64_t rest = renorm ? layout.total - (dec_end - dec_begin) : layout.total;
  const int64_t n_rest_tasks = (rest + kChunk - 1) / kChunk;
  // Position p of the "everything else" index space -> flat offset (skipping W_dec when renormalising).
  const auto flat = [&](int64_t pos) {
    return renorm && pos >= dec_begin ? pos + (dec_end - dec_begin) : pos;
  };
  parallel_for(n_row_tasks + n_rest_tasks, [&](int64_t t) {
    if (t < n_row_tasks) {
      const int64_t r1 = std::min(cfg.d_sae, (t + 1) * kRows);
      for (int64_t r = t * kRows; r < r1; ++r) {
        const int64_t o = dec_begin + r * D;
        float* g = G + o;
        float* w = P + o;
        if (clip) {
          for (int64_t d = 0; d < D; ++d) g[d] *= clip_scale;
        }
        const float dot = dot_lanes(g, w, D);
        const float nn = dot_lanes(w, w, D);
        if (nn > 0) {
          const float c = dot / nn;
          for (int64_t d = 0; d < D; ++d) g[d] -= c * w[d];
        }
        adamw_update(P, G, M, V, o, o + D, sc);
        const float nn2 = dot_lanes(w, w, D);
        if (nn2 > 0) {
          const float inv = 1.0f / std::sqrt(nn2);
          for (int64_t d = 0; d < D; ++d) w[d] *= inv;
        }
      }
      return;
    }
    const int64_t p0 = (t - n_row_tasks) * kChunk;
    const int64_t p1 = std::min(rest, p0 + kChunk);
    if (renorm && p0 < dec_begin && p1 > dec_begin) {
      plain(flat(p0), dec_begin);
      plain(dec_end, flat(p1 - 1) + 1);
    } else {
      plain(flat(p0), flat(p1 - 1) + 1);
    }
  });
}

void SaeTrainer::optimizer_step(SaeSeedState& s, int64_t step, bool clip, float clip_scale) {
  fused_sae_optimizer_step(settings_.sae, layout_, s.params.data(), grads_.data(), s.adam_m.data(),
                           s.adam_v.data(), adamw_scalars<float>(step, lr_at(step), settings_.adam), clip,
                           clip_scale, settings_.normalize_decoder);
}

bool SaeTrainer::run(const std::function<bool()>& should_stop, const std::function<void(int64_t)>& on_log,
                     const std::function<void()>& on_checkpoint,
                     const std::function<void(int64_t)>& on_step) {
  const int64_t B = settings_.batch_size;
  const int64_t D = settings_.sae.d_in;
  // Seeds grouped by data order: each group's batch is gathered once and shared.
  std::vector<std::pair<uint64_t, std::vector<size_t>>> groups;
  for (size_t i = 0; i < seeds_.size(); ++i) {
    const uint64_t order = settings_.data_order_seed ? *settings_.data_order_seed : seeds_[i].seed;
    auto it = std::find_if(groups.begin(), groups.end(), [&](const auto& g) { return g.first == order; });
    if (it == groups.end()) {
      groups.push_back({order, {i}});
    } else {
      it->second.push_back(i);
    }
  }
  batch_.resize(static_cast<size_t>(B * D));
  if (rows_.paired()) target_batch_.resize(static_cast<size_t>(B * D));
  while (step_ < settings_.steps) {
    if (should_stop()) {
      on_checkpoint();
      return false;
    }
    const int64_t step = step_ + 1;
    const bool log = settings_.log_every > 0 ? (step % settings_.log_every == 0 || step == settings_.steps)
                                             : step == settings_.steps;
    for (const auto& [order, members] : groups) {
      rows_.gather(order, step, B, batch_.data(), rows_.paired() ? target_batch_.data() : nullptr);
      const float* y = rows_.paired() ? target_batch_.data() : nullptr;
      for (size_t i : members) {
        const SaeLogRow row = train_step(seeds_[i], batch_.data(), y);
        if (log) seeds_[i].history.push_back(row);
      }
    }
    step_ = step;
    if (log) on_log(step);
    if (on_step) on_step(step);
    if (settings_.checkpoint_every > 0 && step % settings_.checkpoint_every == 0 && step < settings_.steps) {
      on_checkpoint();
    }
  }
  return true;
}

}  // namespace husai
