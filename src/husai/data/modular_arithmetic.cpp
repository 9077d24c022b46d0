#include "husai/data/modular_arithmetic.hpp"

#include <algorithm>
#include <cmath>

#include "husai/core/error.hpp"
#include "husai/core/rng.hpp"

namespace husai {

ModOp parse_mod_op(const std::string& name) {
  if (name == "add") return ModOp::Add;
  if (name == "sub") return ModOp::Sub;
  if (name == "mul") return ModOp::Mul;
  throw Error("unknown operation '" + name + "' (expected add, sub or mul)");
}

std::string to_string(ModOp op) {
  switch (op) {
    case ModOp::Add:
      return "add";
    case ModOp::Sub:
      return "sub";
    case ModOp::Mul:
      return "mul";
  }
  return "add";
}

TokenFormat parse_token_format(const std::string& name) {
  if (name == "seq7") return TokenFormat::Seq7;
  if (name == "abeq") return TokenFormat::Abeq;
  throw Error("unknown token format '" + name + "' (expected seq7 or abeq)");
}

std::string to_string(TokenFormat format) {
  return format == TokenFormat::Seq7 ? "seq7" : "abeq";
}

int64_t ModularTask::answer(int64_t a, int64_t b) const {
  const int64_t p = modulus;
  switch (op) {
    case ModOp::Add:
      return (a + b) % p;
    case ModOp::Sub:
      return ((a - b) % p + p) % p;
    case ModOp::Mul:
      return (a * b) % p;
  }
  return 0;
}

void ModularTask::validate() const {
  if (modulus < 2) throw Error("modulus must be >= 2, got " + std::to_string(modulus)).key("task.modulus");
  if (modulus > 100000) {
    throw Error("modulus must be <= 100000 (all p^2 pairs are materialised), got " + std::to_string(modulus))
        .key("task.modulus");
  }
}

std::vector<int64_t> ModularTask::tokens() const {
  const int64_t p = modulus;
  const int64_t ctx = n_ctx();
  std::vector<int64_t> out(static_cast<size_t>(n_pairs() * ctx));
  for (int64_t row = 0; row < n_pairs(); ++row) {
    const int64_t a = a_of(row);
    const int64_t b = b_of(row);
    int64_t* t = out.data() + row * ctx;
    if (format == TokenFormat::Seq7) {
      const int64_t seq[7] = {p, a, p + 3, b, p + 2, answer(a, b), p + 1};
      std::copy(seq, seq + 7, t);
    } else {
      t[0] = a;
      t[1] = b;
      t[2] = p;
    }
  }
  return out;
}

std::vector<int64_t> ModularTask::labels() const {
  std::vector<int64_t> out(static_cast<size_t>(n_pairs()));
  for (int64_t row = 0; row < n_pairs(); ++row) out[static_cast<size_t>(row)] = answer(a_of(row), b_of(row));
  return out;
}

Split make_split(int64_t n, double train_fraction, uint64_t seed) {
  if (!(train_fraction > 0.0 && train_fraction < 1.0)) {
    throw Error("train_fraction must be in (0, 1), got " + std::to_string(train_fraction))
        .key("training.train_fraction");
  }
  const auto n_train = static_cast<int64_t>(std::llround(train_fraction * static_cast<double>(n)));
  if (n_train < 1 || n_train >= n) {
    throw Error("train_fraction " + std::to_string(train_fraction) +
                " leaves an empty train or validation set")
        .key("training.train_fraction");
  }
  const std::vector<int64_t> perm = permutation(n, seed, stream_id("split"));
  Split split;
  split.train_idx.assign(perm.begin(), perm.begin() + n_train);
  split.val_idx.assign(perm.begin() + n_train, perm.end());
  std::sort(split.train_idx.begin(), split.train_idx.end());
  std::sort(split.val_idx.begin(), split.val_idx.end());
  return split;
}

}  // namespace husai
