// The data order of SAE training (train/row_stream.hpp): resident and streamed rows give the same batches
// when the window holds every row; with several windows every epoch visits every row exactly once, memory
// holds at most one window, each window is read once per epoch, and the order of any step is a pure function
// of (seed, step): a fresh stream (a resumed run) gathers the same rows as one that walked every earlier
// step.

#include <gtest/gtest.h>

#include <algorithm>
#include <vector>

#include "husai/core/error.hpp"
#include "husai/train/row_stream.hpp"

namespace husai {
namespace {

constexpr int64_t kD = 3;

// Row r holds (r, -r, 0.5 r); y row r holds (r + 0.25, ...).
std::vector<float> rows(int64_t n, float shift) {
  std::vector<float> x(static_cast<size_t>(n * kD));
  for (int64_t r = 0; r < n; ++r) {
    x[static_cast<size_t>(r * kD)] = static_cast<float>(r) + shift;
    x[static_cast<size_t>(r * kD + 1)] = -static_cast<float>(r);
    x[static_cast<size_t>(r * kD + 2)] = 0.5f * static_cast<float>(r);
  }
  return x;
}

struct Reader {
  const std::vector<float>* x;
  const std::vector<float>* y;
  int64_t* rows_read;
  void operator()(int64_t first, int64_t count, float* xo, float* yo) const {
    *rows_read += count;
    std::copy_n(x->begin() + first * kD, count * kD, xo);
    if (yo != nullptr) std::copy_n(y->begin() + first * kD, count * kD, yo);
  }
};

// Training positions of `steps` batches of B rows, read back from gathered x (row r has x[0] = r).
std::vector<int64_t> walk(SaeRowStream& s, uint64_t seed, int64_t first_step, int64_t steps, int64_t B) {
  std::vector<int64_t> out;
  std::vector<float> x(static_cast<size_t>(B * kD)), y(static_cast<size_t>(B * kD));
  for (int64_t step = first_step; step < first_step + steps; ++step) {
    s.gather(seed, step, B, x.data(), s.paired() ? y.data() : nullptr);
    for (int64_t j = 0; j < B; ++j) {
      const auto r = static_cast<int64_t>(x[static_cast<size_t>(j * kD)]);
      EXPECT_EQ(x[static_cast<size_t>(j * kD + 1)], -static_cast<float>(r));
      if (s.paired()) {
        EXPECT_EQ(y[static_cast<size_t>(j * kD)], static_cast<float>(r) + 0.25f);
      }
      out.push_back(r);
    }
  }
  return out;
}

TEST(SaeRowStream, OneWindowStreamedEqualsResident) {
  const int64_t n = 700;
  const std::vector<float> x = rows(n, 0.0f), y = rows(n, 0.25f);
  int64_t read = 0;
  SaeRowStream resident(x.data(), y.data(), n, kD);
  SaeRowStream streamed(Reader{&x, &y, &read}, true, n, kD, 4096);
  EXPECT_EQ(walk(resident, 7, 1, 9, 256), walk(streamed, 7, 1, 9, 256));  // > 3 epochs
  EXPECT_EQ(read, n);                                                     // read once, kept across epochs
  EXPECT_EQ(streamed.windows_per_epoch(), 1);
}

TEST(SaeRowStream, SeveralWindowsVisitEveryRowOncePerEpoch) {
  const int64_t n = 5000;  // blocks of 1024, the last one 904 rows; windows of 2 blocks
  const std::vector<float> x = rows(n, 0.0f), y = rows(n, 0.25f);
  int64_t read = 0;
  SaeRowStream s(Reader{&x, &y, &read}, true, n, kD, 2048);
  EXPECT_EQ(s.windows_per_epoch(), 3);
  const std::vector<int64_t> order = walk(s, 3, 1, 3 * n / 100, 100);  // 3 epochs of 50 batches
  EXPECT_EQ(read, 3 * n);                                              // each window read once per epoch
  for (int64_t e = 0; e < 3; ++e) {
    std::vector<int64_t> epoch(order.begin() + e * n, order.begin() + (e + 1) * n);
    std::vector<int64_t> sorted = epoch;
    std::sort(sorted.begin(), sorted.end());
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(sorted[static_cast<size_t>(i)], i) << "epoch " << e;
    if (e > 0) {
      EXPECT_NE(epoch, std::vector<int64_t>(order.begin() + (e - 1) * n, order.begin() + e * n));
    }
  }
  // Shuffled within windows: the first 2048 positions are not two blocks in file order.
  EXPECT_FALSE(std::is_sorted(order.begin(), order.begin() + 2048));
  // position() agrees with what gather read.
  SaeRowStream t(Reader{&x, &y, &read}, true, n, kD, 2048);
  for (int64_t p : {0L, 1L, 2047L, 2048L, 4999L, 5000L, 12345L}) {
    EXPECT_EQ(t.position(3, p), order[static_cast<size_t>(p)]) << p;
  }
}

TEST(SaeRowStream, AnyStepIsAPureFunctionOfSeedAndStep) {
  const int64_t n = 5000;
  const std::vector<float> x = rows(n, 0.0f);
  int64_t read = 0;
  SaeRowStream walked(Reader{&x, nullptr, &read}, false, n, kD, 2048);
  const std::vector<int64_t> all = walk(walked, 11, 1, 130, 96);
  for (int64_t resume_at : {2L, 22L, 53L, 104L, 129L}) {  // inside windows, across windows and epochs
    SaeRowStream fresh(Reader{&x, nullptr, &read}, false, n, kD, 2048);
    const std::vector<int64_t> tail = walk(fresh, 11, resume_at, 130 - resume_at + 1, 96);
    EXPECT_TRUE(std::equal(tail.begin(), tail.end(), all.begin() + (resume_at - 1) * 96)) << resume_at;
  }
  SaeRowStream other(Reader{&x, nullptr, &read}, false, n, kD, 2048);
  EXPECT_NE(walk(other, 12, 1, 10, 96), std::vector<int64_t>(all.begin(), all.begin() + 960));
}

TEST(SaeRowStream, RefusesNoRowsAndAnEmptyWindow) {
  int64_t read = 0;
  const std::vector<float> x = rows(4, 0.0f);
  EXPECT_THROW(SaeRowStream(Reader{&x, nullptr, &read}, false, 0, kD, 16), Error);
  EXPECT_THROW(SaeRowStream(Reader{&x, nullptr, &read}, false, 4, kD, 0), Error);
}

}  // namespace
}  // namespace husai
