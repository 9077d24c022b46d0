#include "husai/train/sae_run_data.hpp"

#include <algorithm>
#include <cmath>

#include "husai/core/error.hpp"
#include "husai/core/rng.hpp"
#include "husai/io/safetensors.hpp"
#include "husai/metrics/sae_eval.hpp"
#include "husai/sae/sae.hpp"

namespace husai {
namespace {

std::vector<float> gather_rows(const std::vector<float>& x, int64_t d, const std::vector<int64_t>& rows) {
  std::vector<float> out(rows.size() * static_cast<size_t>(d));
  for (size_t r = 0; r < rows.size(); ++r) {
    std::copy_n(x.begin() + rows[r] * d, d, out.begin() + static_cast<int64_t>(r) * d);
  }
  return out;
}

// Sum of the row norms of rows [n, d], in double, in row order.
double norm_sum(const float* rows, int64_t n, int64_t d) {
  double sum = 0;
  for (int64_t r = 0; r < n; ++r) {
    double n2 = 0;
    for (int64_t j = 0; j < d; ++j) {
      const auto v = static_cast<double>(rows[r * d + j]);
      n2 += v * v;
    }
    sum += std::sqrt(n2);
  }
  return sum;
}

// SAELens' expected_average_only_in: the factor s with E||s x|| = sqrt(d) for the given sum of norms.
double scale_for(double norm_sum, int64_t n, int64_t d) {
  const double mean_norm = norm_sum / static_cast<double>(n);
  return mean_norm > 0 ? std::sqrt(static_cast<double>(d)) / mean_norm : 1.0;
}

void apply_scale(float* rows, size_t n, double scale) {
  if (scale == 1.0) return;
  for (size_t i = 0; i < n; ++i) rows[i] = static_cast<float>(static_cast<double>(rows[i]) * scale);
}

// The held-out split: a seeded random n_out of 0..n-1 into `out`, the rest into `rest`, each ascending.
void seeded_split(int64_t n, int64_t n_out, int64_t seed, const char* stream, std::vector<int64_t>& out,
                  std::vector<int64_t>& rest) {
  const std::vector<int64_t> perm = permutation(n, static_cast<uint64_t>(seed), stream_id(stream));
  out.assign(perm.begin(), perm.begin() + n_out);
  rest.assign(perm.begin() + n_out, perm.end());
  std::sort(out.begin(), out.end());
  std::sort(rest.begin(), rest.end());
}

// A transcoder's target file must pair row for row with the activation file.
void check_target(const ActivationInfo& acts, const ActivationInfo& target) {
  check_paired_rows(acts, target);
  if (target.d_in != acts.d_in) {
    throw Error("the target rows have width " + std::to_string(target.d_in) + ", the activations " +
                std::to_string(acts.d_in) +
                "; train-sae's transcoders need equal widths (d_out = d_in, as both MLP sites have)")
        .file(target.path);
  }
  const auto same = [&](const char* key) {
    const auto a = acts.metadata.find(key), t = target.metadata.find(key);
    return a == acts.metadata.end() || t == target.metadata.end() || a->second == t->second;
  };
  for (const char* key : {"model_sha256", "position"}) {
    if (!same(key)) {
      throw Error(std::string("the target was extracted with another ") + key + " (" +
                  target.metadata.at(key) + ") than the activations " + acts.path + " (" +
                  acts.metadata.at(key) + ")")
          .file(target.path);
    }
  }
}

}  // namespace

SaeRunData SaeRunData::load(const SaeRunDataOptions& options) {
  SaeRunData d;
  d.opt_ = options;
  if (options.buffer_rows < kSplitBlockRows) {
    throw Error("--buffer-rows must be at least " + std::to_string(kSplitBlockRows) + ", got " +
                std::to_string(options.buffer_rows))
        .key("--buffer-rows");
  }
  d.src_ = ActivationSource::open(options.activations_path, options.key);
  d.acts_ = d.src_->info();
  if (!options.target_path.empty()) {
    d.target_src_ = ActivationSource::open(options.target_path, options.target_key);
    d.target_ = d.target_src_->info();
    check_target(d.acts_, *d.target_);
  }
  d.streamed_ = d.acts_.n_rows > options.buffer_rows;
  if (d.streamed_) {
    d.load_streamed();
  } else {
    d.load_resident();
  }
  return d;
}

void SaeRunData::load_resident() {
  const int64_t N = acts_.n_rows;
  const int64_t D = acts_.d_in;
  const ActivationFile a = load_activation_file(opt_.activations_path, opt_.key);
  acts_ = static_cast<const ActivationInfo&>(a);
  all_x_ = a.x;
  if (transcoder()) {
    const ActivationFile t = load_activation_file(opt_.target_path, opt_.target_key);
    target_ = static_cast<const ActivationInfo&>(t);
    all_y_ = t.x;
  }
  src_.reset();
  target_src_.reset();
  n_eval_ = static_cast<int64_t>(std::llround(opt_.eval_fraction * static_cast<double>(N)));
  if (N - n_eval_ < 1) throw Error("no rows left for training after holding out " + std::to_string(n_eval_));
  seeded_split(N, n_eval_, opt_.split_seed, "sae.eval_split", eval_idx_, train_idx_);
  n_train_ = static_cast<int64_t>(train_idx_.size());
  train_x_ = gather_rows(all_x_, D, train_idx_);
  if (transcoder()) train_y_ = gather_rows(all_y_, D, train_idx_);
  scale_rows_ = n_train_;
  if (opt_.normalize) {
    scale_ = scale_for(norm_sum(train_x_.data(), n_train_, D), n_train_, D);
    apply_scale(train_x_.data(), train_x_.size(), scale_);
    if (transcoder()) {
      target_scale_ = scale_for(norm_sum(train_y_.data(), n_train_, D), n_train_, D);
      apply_scale(train_y_.data(), train_y_.size(), target_scale_);
    } else {
      target_scale_ = scale_;
    }
  }
}

void SaeRunData::load_streamed() {
  const int64_t N = acts_.n_rows;
  const int64_t D = acts_.d_in;
  src_->verify();
  acts_ = src_->info();
  if (transcoder()) {
    target_src_->verify();
    target_ = target_src_->info();
  }
  const int64_t n_blocks = (N + kSplitBlockRows - 1) / kSplitBlockRows;
  const auto n_eval_blocks =
      static_cast<int64_t>(std::llround(opt_.eval_fraction * static_cast<double>(n_blocks)));
  if (n_blocks - n_eval_blocks < 1) {
    throw Error("no rows left for training after holding out " + std::to_string(n_eval_blocks) + " blocks");
  }
  seeded_split(n_blocks, n_eval_blocks, opt_.split_seed, "sae.eval_split.blocks", eval_blocks_,
               train_blocks_);
  const auto rows_of = [&](const std::vector<int64_t>& blocks) {
    int64_t n = 0;
    for (const int64_t b : blocks) n += std::min(kSplitBlockRows, N - b * kSplitBlockRows);
    return n;
  };
  n_train_ = rows_of(train_blocks_);
  n_eval_ = rows_of(eval_blocks_);
  if (!opt_.normalize) return;
  // Norms of up to buffer_rows training rows from evenly spaced blocks, one block in memory at a time.
  const auto n_train_blocks = static_cast<int64_t>(train_blocks_.size());
  const int64_t k = std::min(n_train_blocks, std::max<int64_t>(1, opt_.buffer_rows / kSplitBlockRows));
  std::vector<float> x(static_cast<size_t>(kSplitBlockRows * D), 0.0f);
  std::vector<float> y(transcoder() ? x.size() : 0, 0.0f);
  double sum_x = 0, sum_y = 0;
  scale_rows_ = 0;
  for (int64_t i = 0; i < k; ++i) {
    const int64_t block = train_blocks_[static_cast<size_t>(i * n_train_blocks / k)];
    const int64_t first = block * kSplitBlockRows;
    const int64_t n = std::min(kSplitBlockRows, N - first);
    src_->read_rows(first, n, x.data());
    sum_x += norm_sum(x.data(), n, D);
    if (transcoder()) {
      target_src_->read_rows(first, n, y.data());
      sum_y += norm_sum(y.data(), n, D);
    }
    scale_rows_ += n;
  }
  scale_ = scale_for(sum_x, scale_rows_, D);
  target_scale_ = transcoder() ? scale_for(sum_y, scale_rows_, D) : scale_;
}

void SaeRunData::read_positions(const std::vector<int64_t>& blocks, int64_t first, int64_t count, float* x,
                                float* y) const {
  const int64_t D = acts_.d_in;
  for (int64_t done = 0; done < count;) {
    const int64_t p = first + done;
    const int64_t row =
        blocks[static_cast<size_t>(p / kSplitBlockRows)] * kSplitBlockRows + p % kSplitBlockRows;
    const int64_t n = std::min(count - done, kSplitBlockRows - p % kSplitBlockRows);
    src_->read_rows(row, n, x + done * D);
    if (y != nullptr) target_src_->read_rows(row, n, y + done * D);
    done += n;
  }
}

void SaeRunData::read_train(int64_t first, int64_t count, float* x, float* y) const {
  const auto n = static_cast<size_t>(count * acts_.d_in);
  if (!streamed_) {
    std::copy_n(train_x_.begin() + first * acts_.d_in, n, x);
    if (y != nullptr) std::copy_n(train_y_.begin() + first * acts_.d_in, n, y);
    return;
  }
  read_positions(train_blocks_, first, count, x, y);
  apply_scale(x, n, scale_);
  if (y != nullptr) apply_scale(y, n, target_scale_);
}

void SaeRunData::read_side(const std::vector<int64_t>& idx, const std::vector<int64_t>& blocks, int64_t first,
                           int64_t count, float* x, float* y) const {
  if (streamed_) {
    read_positions(blocks, first, count, x, y);
    return;
  }
  const int64_t D = acts_.d_in;
  for (int64_t r = 0; r < count; ++r) {
    const int64_t row = idx[static_cast<size_t>(first + r)];
    std::copy_n(all_x_.begin() + row * D, D, x + r * D);
    if (y != nullptr) std::copy_n(all_y_.begin() + row * D, D, y + r * D);
  }
}

SaeRowStream SaeRunData::train_rows() const {
  if (!streamed_) {
    return {train_x_.data(), transcoder() ? train_y_.data() : nullptr, n_train_, acts_.d_in};
  }
  return {[this](int64_t first, int64_t count, float* x, float* y) { read_train(first, count, x, y); },
          transcoder(), n_train_, acts_.d_in, opt_.buffer_rows};
}

std::vector<float> SaeRunData::initial_b_dec(const std::string& how) const {
  const int64_t D = acts_.d_in;
  if (how == "zeros") return std::vector<float>(static_cast<size_t>(D), 0.0f);
  const int64_t n = streamed_ || how == "geometric_median" ? std::min(n_train_, kMedianRows) : n_train_;
  std::vector<float> x(static_cast<size_t>(n * D), 0.0f);
  std::vector<float> y(transcoder() ? x.size() : 0, 0.0f);
  read_train(0, n, x.data(), transcoder() ? y.data() : nullptr);
  const std::vector<float>& rows = transcoder() ? y : x;
  if (how == "geometric_median") return geometric_median(rows.data(), n, D);
  return rows_mean(rows.data(), n, D);
}

ReconstructionMetrics SaeRunData::held_out_metrics(const SaeModel& m, int64_t batch) const {
  const auto read = [this](int64_t first, int64_t count, float* x, float* y) {
    read_side(eval_idx_, eval_blocks_, first, count, x, y);
  };
  return sae_reconstruction_metrics(m, read, n_eval_, batch, transcoder());
}

ReconstructionMetrics SaeRunData::train_metrics(const SaeModel& m, int64_t batch) const {
  const int64_t n = streamed_ ? std::min(n_train_, opt_.buffer_rows) : n_train_;
  const auto read = [this](int64_t first, int64_t count, float* x, float* y) {
    read_side(train_idx_, train_blocks_, first, count, x, y);
  };
  return sae_reconstruction_metrics(m, read, n, batch, transcoder());
}

void SaeRunData::write_split(const std::string& path) const {
  SafetensorsFile split;
  if (streamed_) {
    split.put("eval_blocks",
              TensorData::i64({static_cast<int64_t>(eval_blocks_.size())}, eval_blocks_.data()));
    split.metadata["block_rows"] = std::to_string(kSplitBlockRows);
    split.metadata["mode"] = "streamed";
    split.metadata["n_rows"] = std::to_string(acts_.n_rows);
  } else {
    split.put("train_idx", TensorData::i64({n_train_}, train_idx_.data()));
    split.put("eval_idx", TensorData::i64({static_cast<int64_t>(eval_idx_.size())}, eval_idx_.data()));
  }
  split.metadata["activations_sha256"] = acts_.sha256;
  split.metadata["split_seed"] = std::to_string(opt_.split_seed);
  if (transcoder()) split.metadata["target_activations_sha256"] = target_->sha256;
  split.save(path);
}

nlohmann::json SaeRunData::describe() const {
  nlohmann::json j = {{"mode", streamed_ ? "streamed" : "resident"},
                      {"buffer_rows", opt_.buffer_rows},
                      {"n_rows", acts_.n_rows},
                      {"n_train", n_train_},
                      {"n_eval", n_eval_},
                      {"scale_rows", scale_rows_}};
  if (streamed_) {
    j["split"] = "seeded random blocks of " + std::to_string(kSplitBlockRows) + " rows held out";
    j["window_rows"] = opt_.buffer_rows;
    j["train_rows_metrics_rows"] = std::min(n_train_, opt_.buffer_rows);
  } else {
    j["split"] = "seeded random rows held out";
  }
  return j;
}

}  // namespace husai
