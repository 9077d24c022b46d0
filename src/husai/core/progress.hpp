#pragma once

// Progress reporting for long loops (training steps, dataset passes, sweeps).
//
// On a terminal it is a live one-line bar redrawn in place; in a log file (CI, nohup, a cluster job) it is a
// plain line every few seconds, because '\r' redraws turn logs into unreadable megabyte-long lines while
// silence for an hour looks like a hang. Output goes straight to a file descriptor (stderr by default) so it
// never mixes with results written to stdout.

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace husai {

class Progress {
 public:
  struct Options {
    // Live bar: redraw at most this often, so a tight loop does not spend its time writing to the terminal.
    double tty_interval_s = 0.1;
    // Plain output: at most one line per this many seconds (the final line is always written).
    double plain_interval_s = 5.0;
    // Terminal or not; nullopt = isatty(fd). Tests force it to exercise either format on a pipe or file.
    std::optional<bool> tty;
    // Where to write; 2 (stderr) unless a test wants its own descriptor.
    int fd = 2;
    // Seconds on a monotonic clock; empty = std::chrono::steady_clock. Injectable so tests need not sleep.
    std::function<double()> clock;
    // Columns of the bar itself (live mode only).
    int bar_width = 24;
  };

  // `total` <= 0 means unknown: no bar, percentage or ETA, just counts and rate. `quiet` silences everything
  // (it is an explicit argument rather than global state so library code never prints behind a caller).
  Progress(std::string label, int64_t total, bool quiet);
  Progress(std::string label, int64_t total, bool quiet, Options options);
  // Ends a live line that finish() never ended, so later messages do not overwrite the bar.
  ~Progress();

  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  // Records that `done` items are complete; `status` is free text such as "loss 0.123 val_acc 0.98". Cheap
  // to call every iteration: it only writes when the rate limit allows. Ignored after finish().
  void update(int64_t done, std::string_view status = {});

  // Writes the final line (count, elapsed time, average rate and `final_status`, or the last status when
  // empty). Idempotent.
  void finish(std::string_view final_status = {});

  // "0:07", "12:34", "1:02:03"; "?" for negative or non-finite input.
  static std::string format_duration(double seconds);
  // Items per second with precision that suits the magnitude: "0.25", "12.5", "1234".
  static std::string format_rate(double per_second);

 private:
  double now() const;
  std::string stats(double t) const;  // "123/1000 (12.3%) 45.6 it/s, elapsed 0:03, ETA 0:19"
  void draw_live(double t, bool final);
  void write_all(std::string_view text) const;

  std::string label_;
  int64_t total_;
  bool quiet_;
  Options opts_;
  bool tty_ = false;
  int term_width_ = 100;
  double start_ = 0.0;
  double last_emit_ = 0.0;
  bool emitted_ = false;  // anything written yet (live mode: the line needs ending)
  bool finished_ = false;
  int64_t done_ = 0;
  std::string status_;
  size_t last_width_ = 0;  // columns of the previous live line, to blank its leftovers
};

}  // namespace husai
