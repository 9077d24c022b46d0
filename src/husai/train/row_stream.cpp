#include "husai/train/row_stream.hpp"

#include <algorithm>
#include <string>

#include "husai/core/error.hpp"
#include "husai/core/rng.hpp"

namespace husai {

SaeRowStream::SaeRowStream(const float* x, const float* y, int64_t n, int64_t d)
    : x_(x), y_(y), paired_(y != nullptr), n_(n), d_(d), window_rows_(n) {
  if (n < 1) throw Error("no training rows");
}

SaeRowStream::SaeRowStream(ReadFn read, bool paired, int64_t n, int64_t d, int64_t window_rows)
    : read_(std::move(read)), paired_(paired), n_(n), d_(d), window_rows_(window_rows) {
  if (n < 1) throw Error("no training rows");
  if (window_rows < 1) throw Error("the row buffer must hold at least 1 row").key("--buffer-rows");
  block_ = std::min(kBlockRows, window_rows_);
  per_window_ = window_rows_ / block_;
}

int64_t SaeRowStream::windows_per_epoch() const {
  if (n_ <= window_rows_) return 1;
  const int64_t n_blocks = (n_ + block_ - 1) / block_;
  return (n_blocks + per_window_ - 1) / per_window_;
}

SaeRowStream::Order& SaeRowStream::order(uint64_t seed) {
  for (Order& o : orders_) {
    if (o.seed == seed) return o;
  }
  orders_.push_back(Order{});
  orders_.back().seed = seed;
  return orders_.back();
}

void SaeRowStream::start_epoch(Order& o, int64_t epoch) {
  o.epoch = epoch;
  if (n_ <= window_rows_) {
    o.perm = permutation(n_, o.seed, stream_id("sae.shuffle") + static_cast<uint64_t>(epoch));
    return;
  }
  const int64_t n_blocks = (n_ + block_ - 1) / block_;
  o.blocks = permutation(n_blocks, o.seed, stream_id("sae.shuffle.blocks") + static_cast<uint64_t>(epoch));
  o.win_start.clear();
  int64_t at = 0;
  for (int64_t b = 0; b < n_blocks; ++b) {
    if (b % per_window_ == 0) o.win_start.push_back(at);
    const int64_t first = o.blocks[static_cast<size_t>(b)] * block_;
    at += std::min(block_, n_ - first);
  }
  o.win_start.push_back(at);
  o.window = -1;
}

void SaeRowStream::load_window(Order& o, int64_t w) {
  const int64_t rows = o.win_start[static_cast<size_t>(w + 1)] - o.win_start[static_cast<size_t>(w)];
  o.x.resize(static_cast<size_t>(rows * d_));
  if (paired_) o.y.resize(static_cast<size_t>(rows * d_));
  int64_t at = 0;
  const auto n_blocks = static_cast<int64_t>(o.blocks.size());
  for (int64_t b = w * per_window_; b < std::min(n_blocks, (w + 1) * per_window_); ++b) {
    const int64_t first = o.blocks[static_cast<size_t>(b)] * block_;
    const int64_t count = std::min(block_, n_ - first);
    read_(first, count, o.x.data() + at * d_, paired_ ? o.y.data() + at * d_ : nullptr);
    at += count;
  }
  o.win_perm = permutation(
      rows, o.seed, stream_id("sae.shuffle.window." + std::to_string(o.epoch) + "." + std::to_string(w)));
  o.window = w;
}

int64_t SaeRowStream::locate(Order& o, int64_t q) {
  if (n_ <= window_rows_) {
    if (x_ == nullptr && o.window != 0) {  // streamed, all rows fit: read them once
      o.x.resize(static_cast<size_t>(n_ * d_));
      if (paired_) o.y.resize(static_cast<size_t>(n_ * d_));
      read_(0, n_, o.x.data(), paired_ ? o.y.data() : nullptr);
      o.window = 0;
    }
    return o.perm[static_cast<size_t>(q)];
  }
  const auto it = std::upper_bound(o.win_start.begin(), o.win_start.end(), q);
  const auto w = static_cast<int64_t>(it - o.win_start.begin()) - 1;
  if (w != o.window) load_window(o, w);
  return o.win_perm[static_cast<size_t>(q - o.win_start[static_cast<size_t>(w)])];
}

int64_t SaeRowStream::position(uint64_t order_seed, int64_t pos) {
  Order& o = order(order_seed);
  const int64_t epoch = pos / n_;
  if (epoch != o.epoch) start_epoch(o, epoch);
  const int64_t local = locate(o, pos % n_);
  if (n_ <= window_rows_) return local;
  // The window's rows are its blocks in visiting order: find the block holding `local`.
  int64_t at = 0;
  for (int64_t b = o.window * per_window_;; ++b) {
    const int64_t first = o.blocks[static_cast<size_t>(b)] * block_;
    const int64_t count = std::min(block_, n_ - first);
    if (local < at + count) return first + (local - at);
    at += count;
  }
}

void SaeRowStream::gather(uint64_t order_seed, int64_t step, int64_t B, float* x, float* y) {
  Order& o = order(order_seed);
  for (int64_t j = 0; j < B; ++j) {
    const int64_t pos = (step - 1) * B + j;
    const int64_t epoch = pos / n_;
    if (epoch != o.epoch) start_epoch(o, epoch);
    const int64_t r = locate(o, pos % n_);
    const float* sx = x_ != nullptr ? x_ + r * d_ : o.x.data() + r * d_;
    std::copy_n(sx, d_, x + j * d_);
    if (paired_ && y != nullptr) {
      const float* sy = y_ != nullptr ? y_ + r * d_ : o.y.data() + r * d_;
      std::copy_n(sy, d_, y + j * d_);
    }
  }
}

}  // namespace husai
