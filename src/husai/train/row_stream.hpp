#pragma once

// The order in which SAE training sees its rows, and where the rows come from: resident in memory, or read
// on demand through a bounded window (for activation files larger than memory).
//
// Order. Rows are numbered by training position 0..n-1. Batches run continuously through epochs: step s
// (1-based) uses stream positions [(s-1) B, s B), position p belonging to epoch e = p / n. The order of an
// epoch is a pure function of (order seed, e), so any step can be resumed without replaying the ones
// before it:
//   * one window (the rows are resident, or n <= window_rows): position p is row perm_e[p mod n], perm_e a
//     seeded permutation of all n rows;
//   * several windows: the positions are cut into blocks of kBlockRows consecutive rows; epoch e visits the
//     blocks in a seeded order, window_rows / kBlockRows blocks at a time (a window: rows read in that block
//     order), and each window is visited in a seeded permutation of its rows. Memory holds one window per
//     order seed; a window is read once per epoch.

#include <cstdint>
#include <functional>
#include <vector>

namespace husai {

class SaeRowStream {
 public:
  static constexpr int64_t kBlockRows = 1024;
  // read(first, count, x, y): training positions [first, first + count) into x [count, d] and, for paired
  // rows (a transcoder's targets), y [count, d]; y is null otherwise.
  using ReadFn = std::function<void(int64_t first, int64_t count, float* x, float* y)>;

  // Resident rows x (and y, or null) [n, d], read in place; they must outlive the stream.
  SaeRowStream(const float* x, const float* y, int64_t n, int64_t d);
  // Rows read on demand through a window of at most window_rows rows (>= 1) per order seed.
  SaeRowStream(ReadFn read, bool paired, int64_t n, int64_t d, int64_t window_rows);

  int64_t n_rows() const { return n_; }
  int64_t d_in() const { return d_; }
  bool paired() const { return paired_; }
  int64_t windows_per_epoch() const;

  // The B rows of `step` (1-based) in the order of order_seed, into x [B, d] (and y when paired).
  void gather(uint64_t order_seed, int64_t step, int64_t B, float* x, float* y);
  // The training position of stream position pos in the order of order_seed (for tests).
  int64_t position(uint64_t order_seed, int64_t pos);

 private:
  struct Order {
    uint64_t seed = 0;
    int64_t epoch = -1;
    std::vector<int64_t> perm;       // one window: the epoch's permutation of all rows
    std::vector<int64_t> blocks;     // several windows: the epoch's block order
    std::vector<int64_t> win_start;  // several windows: first offset in the epoch of each window, and n
    int64_t window = -1;             // the window held in x / y (several windows), or 0 once all rows are
    std::vector<int64_t> win_perm;   // its visiting order (several windows)
    std::vector<float> x, y;         // its rows (streamed only)
  };
  Order& order(uint64_t seed);
  void start_epoch(Order& o, int64_t epoch);
  // Makes the window holding epoch offset q current; returns the row's index within the window's rows.
  int64_t locate(Order& o, int64_t q);
  void load_window(Order& o, int64_t w);

  const float* x_ = nullptr;
  const float* y_ = nullptr;
  ReadFn read_;
  bool paired_ = false;
  int64_t n_ = 0, d_ = 0, window_rows_ = 0;
  int64_t block_ = 0, per_window_ = 0;  // several windows: rows per block, blocks per window
  std::vector<Order> orders_;
};

}  // namespace husai
