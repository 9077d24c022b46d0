#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace husai {

// The task: c = (a op b) mod p over all p^2 pairs, row = a * p + b (lexicographic order).
enum class ModOp { Add, Sub, Mul };
// seq7 = [BOS, a, +, b, =, c, EOS] with BOS = p, EOS = p+1, '=' = p+2, '+' = p+3 (vocab p+4), as the
// reference project; abeq = [a, b, =] with '=' = p (vocab p+1), as Nanda et al. (2023).
// Either way the answer is predicted at the '=' position, which (causally) never sees c.
enum class TokenFormat { Seq7, Abeq };

ModOp parse_mod_op(const std::string& name);
std::string to_string(ModOp op);
TokenFormat parse_token_format(const std::string& name);
std::string to_string(TokenFormat format);

struct ModularTask {
  int64_t modulus = 113;
  ModOp op = ModOp::Add;
  TokenFormat format = TokenFormat::Seq7;

  int64_t n_pairs() const { return modulus * modulus; }
  int64_t n_ctx() const { return format == TokenFormat::Seq7 ? 7 : 3; }
  int64_t d_vocab() const { return format == TokenFormat::Seq7 ? modulus + 4 : modulus + 1; }
  // Index of the '=' token, where the answer is scored.
  int64_t answer_position() const { return format == TokenFormat::Seq7 ? 4 : 2; }

  int64_t a_of(int64_t row) const { return row / modulus; }
  int64_t b_of(int64_t row) const { return row % modulus; }
  int64_t answer(int64_t a, int64_t b) const;

  // [n_pairs, n_ctx] row-major model inputs and [n_pairs] labels, in row order.
  std::vector<int64_t> tokens() const;
  std::vector<int64_t> labels() const;
  // Throws husai::Error when the modulus is < 2 or too large for the token ids.
  void validate() const;
};

struct Split {
  std::vector<int64_t> train_idx;  // sorted ascending
  std::vector<int64_t> val_idx;    // sorted ascending
};

// train size = round(train_fraction * n); the train rows are the first of a Philox permutation of
// 0..n-1 keyed by `seed` on the "split" stream, then sorted.
Split make_split(int64_t n, double train_fraction, uint64_t seed);

}  // namespace husai
