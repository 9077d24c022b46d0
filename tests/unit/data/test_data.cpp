// The modular-arithmetic task: token layouts (REFERENCE.md section 2), answers, and the split.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "husai/core/error.hpp"
#include "husai/data/modular_arithmetic.hpp"

namespace husai {
namespace {

TEST(ModularTask, Seq7MatchesTheReferenceLayout) {
  ModularTask task;
  task.modulus = 5;
  const auto tokens = task.tokens();
  // Pair (2, 3): row 2*5 + 3 = 13; (2 + 3) mod 5 = 0 -> [BOS=5, 2, +=8, 3, ==7, 0, EOS=6].
  const std::vector<int64_t> row(tokens.begin() + 13 * 7, tokens.begin() + 14 * 7);
  EXPECT_EQ(row, (std::vector<int64_t>{5, 2, 8, 3, 7, 0, 6}));
  EXPECT_EQ(task.d_vocab(), 9);
  EXPECT_EQ(task.n_ctx(), 7);
  EXPECT_EQ(task.answer_position(), 4);
  EXPECT_EQ(task.labels()[13], 0);
}

TEST(ModularTask, AbeqLayoutNeverShowsTheAnswer) {
  ModularTask task;
  task.modulus = 7;
  task.format = TokenFormat::Abeq;
  const auto tokens = task.tokens();
  const std::vector<int64_t> row(tokens.begin() + (3 * 7 + 6) * 3, tokens.begin() + (3 * 7 + 7) * 3);
  EXPECT_EQ(row, (std::vector<int64_t>{3, 6, 7}));
  EXPECT_EQ(task.d_vocab(), 8);
  EXPECT_EQ(task.answer_position(), 2);
}

TEST(ModularTask, NoTokenAtOrBeforeTheScoredPositionRevealsTheAnswer) {
  for (const TokenFormat format : {TokenFormat::Seq7, TokenFormat::Abeq}) {
    ModularTask task;
    task.modulus = 11;
    task.format = format;
    const auto tokens = task.tokens();
    // Pairs with equal answers but different operands have different prefixes, and pairs with the same
    // operands always share the prefix: the prefix is a function of (a, b) alone.
    for (int64_t row = 0; row < task.n_pairs(); ++row) {
      const int64_t* t = tokens.data() + row * task.n_ctx();
      if (format == TokenFormat::Seq7) {
        EXPECT_EQ(t[1], task.a_of(row));
        EXPECT_EQ(t[3], task.b_of(row));
        EXPECT_EQ(t[0], 11);
        EXPECT_EQ(t[2], 14);
        EXPECT_EQ(t[4], 13);
      } else {
        EXPECT_EQ(t[0], task.a_of(row));
        EXPECT_EQ(t[1], task.b_of(row));
        EXPECT_EQ(t[2], 11);
      }
    }
  }
}

TEST(ModularTask, Operations) {
  ModularTask task;
  task.modulus = 7;
  task.op = ModOp::Add;
  EXPECT_EQ(task.answer(5, 4), 2);
  task.op = ModOp::Sub;
  EXPECT_EQ(task.answer(2, 5), 4);
  task.op = ModOp::Mul;
  EXPECT_EQ(task.answer(3, 5), 1);
  EXPECT_EQ(parse_mod_op("sub"), ModOp::Sub);
  EXPECT_THROW(parse_mod_op("div"), Error);
  EXPECT_THROW(parse_token_format("seq9"), Error);
}

TEST(ModularTask, ModulusBelowTwoIsAnError) {
  ModularTask task;
  task.modulus = 1;
  try {
    task.validate();
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(e.message().find("task.modulus"), std::string::npos);
  }
}

TEST(Split, SizesSortedDisjointAndSeeded) {
  const Split s = make_split(12769, 0.3, 0);
  EXPECT_EQ(static_cast<int64_t>(s.train_idx.size()), std::llround(0.3 * 12769));
  EXPECT_EQ(s.train_idx.size() + s.val_idx.size(), 12769u);
  EXPECT_TRUE(std::is_sorted(s.train_idx.begin(), s.train_idx.end()));
  EXPECT_TRUE(std::is_sorted(s.val_idx.begin(), s.val_idx.end()));
  std::vector<int64_t> both;
  std::set_intersection(s.train_idx.begin(), s.train_idx.end(), s.val_idx.begin(), s.val_idx.end(),
                        std::back_inserter(both));
  EXPECT_TRUE(both.empty());
  EXPECT_EQ(s.train_idx, make_split(12769, 0.3, 0).train_idx);
  EXPECT_NE(s.train_idx, make_split(12769, 0.3, 1).train_idx);
  EXPECT_THROW(make_split(10, 1.0, 0), Error);
  EXPECT_THROW(make_split(10, 0.01, 0), Error);
}

}  // namespace
}  // namespace husai
