#include "husai/core/progress.hpp"

#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <utility>

#include <fmt/format.h>

namespace husai {

namespace {

// Status text comes from callers; a stray '\n' or '\r' would break the one-line layout.
std::string sanitize(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      c = ' ';
    }
  }
  return out;
}

// Terminal columns taken by UTF-8 text, approximated as one per code point (continuation bytes are free).
size_t columns(std::string_view s) {
  return static_cast<size_t>(std::count_if(
      s.begin(), s.end(), [](char c) { return (static_cast<unsigned char>(c) & 0xC0) != 0x80; }));
}

// Cuts `s` to at most `max_cols` columns without splitting a UTF-8 sequence.
std::string truncate_columns(std::string s, size_t max_cols) {
  size_t cols = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    if ((static_cast<unsigned char>(s[i]) & 0xC0) != 0x80) {
      if (cols == max_cols) {
        s.resize(i);
        break;
      }
      ++cols;
    }
  }
  return s;
}

}  // namespace

Progress::Progress(std::string label, int64_t total, bool quiet)
    : Progress(std::move(label), total, quiet, Options{}) {}

Progress::Progress(std::string label, int64_t total, bool quiet, Options options)
    : label_(std::move(label)), total_(total), quiet_(quiet), opts_(std::move(options)) {
  tty_ = opts_.tty.has_value() ? *opts_.tty : (::isatty(opts_.fd) == 1);
  if (tty_) {
    winsize ws{};
    if (::ioctl(opts_.fd, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) {
      term_width_ = ws.ws_col;
    }
  }
  start_ = now();
  // Plain mode waits a full interval before its first line, so loops shorter than that print only the
  // final line; live mode draws on the first update.
  last_emit_ = start_;
}

Progress::~Progress() {
  if (tty_ && emitted_ && !finished_ && !quiet_) {
    write_all("\n");
  }
}

double Progress::now() const {
  if (opts_.clock) {
    return opts_.clock();
  }
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
}

std::string Progress::format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) {
    return "?";
  }
  const auto s = static_cast<int64_t>(std::llround(seconds));
  if (s >= 3600) {
    return fmt::format("{}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60);
  }
  return fmt::format("{}:{:02}", s / 60, s % 60);
}

std::string Progress::format_rate(double per_second) {
  if (!std::isfinite(per_second) || per_second < 0) {
    return "?";
  }
  if (per_second < 10) {
    return fmt::format("{:.2f}", per_second);
  }
  if (per_second < 100) {
    return fmt::format("{:.1f}", per_second);
  }
  return fmt::format("{:.0f}", per_second);
}

std::string Progress::stats(double t) const {
  const double elapsed = std::max(0.0, t - start_);
  const double rate = elapsed > 0 ? static_cast<double>(done_) / elapsed : 0.0;
  if (total_ <= 0) {
    return fmt::format("{} done, {} it/s, elapsed {}", done_, format_rate(rate), format_duration(elapsed));
  }
  const double frac = std::clamp(static_cast<double>(done_) / static_cast<double>(total_), 0.0, 1.0);
  const double remaining = static_cast<double>(std::max<int64_t>(0, total_ - done_));
  const std::string eta = rate > 0 ? format_duration(remaining / rate) : "?";
  return fmt::format("{}/{} ({:.1f}%), {} it/s, elapsed {}, ETA {}", done_, total_, 100.0 * frac,
                     format_rate(rate), format_duration(elapsed), eta);
}

void Progress::draw_live(double t, bool final) {
  const double elapsed = std::max(0.0, t - start_);
  const double rate = elapsed > 0 ? static_cast<double>(done_) / elapsed : 0.0;
  std::string line = label_;
  if (total_ > 0) {
    const double frac = std::clamp(static_cast<double>(done_) / static_cast<double>(total_), 0.0, 1.0);
    const int width = std::max(1, opts_.bar_width);
    const int filled = static_cast<int>(std::floor(frac * width));
    line += " [" + std::string(static_cast<size_t>(filled), '#') +
            std::string(static_cast<size_t>(width - filled), '-') + "]";
    line += fmt::format(" {:5.1f}% {}/{}", 100.0 * frac, done_, total_);
  } else {
    line += fmt::format(" {}", done_);
  }
  if (final) {
    line += fmt::format(" in {} ({} it/s)", format_duration(elapsed), format_rate(rate));
  } else {
    const double remaining = static_cast<double>(std::max<int64_t>(0, total_ - done_));
    line += fmt::format(" {} it/s", format_rate(rate));
    if (total_ > 0) {
      line += " ETA " + (rate > 0 ? format_duration(remaining / rate) : std::string("?"));
    }
  }
  if (!status_.empty()) {
    line += "  " + status_;
  }
  // A line wider than the terminal wraps, and '\r' then only returns to the start of the last row, so each
  // redraw would scroll instead of overwriting: keep it strictly narrower than the terminal.
  line = truncate_columns(std::move(line), static_cast<size_t>(std::max(1, term_width_ - 1)));
  const size_t width = columns(line);
  std::string out = "\r" + line;
  if (last_width_ > width) {
    out += std::string(last_width_ - width, ' ');  // blank what the longer previous line left behind
  }
  if (final) {
    out += "\n";
  }
  last_width_ = width;
  write_all(out);
}

void Progress::update(int64_t done, std::string_view status) {
  if (quiet_ || finished_) {
    return;
  }
  done_ = done;
  status_ = sanitize(status);
  const double t = now();
  if (tty_) {
    if (!emitted_ || t - last_emit_ >= opts_.tty_interval_s) {
      draw_live(t, false);
      last_emit_ = t;
      emitted_ = true;
    }
  } else if (t - last_emit_ >= opts_.plain_interval_s) {
    std::string line = label_ + ": " + stats(t);
    if (!status_.empty()) {
      line += " | " + status_;
    }
    write_all(line + "\n");
    last_emit_ = t;
    emitted_ = true;
  }
}

void Progress::finish(std::string_view final_status) {
  if (finished_) {
    return;
  }
  finished_ = true;
  if (quiet_) {
    return;
  }
  if (!final_status.empty()) {
    status_ = sanitize(final_status);
  }
  const double t = now();
  if (tty_) {
    draw_live(t, true);
    return;
  }
  const double elapsed = std::max(0.0, t - start_);
  const double rate = elapsed > 0 ? static_cast<double>(done_) / elapsed : 0.0;
  std::string line = total_ > 0 ? fmt::format("{}: done {}/{}", label_, done_, total_)
                                : fmt::format("{}: done {}", label_, done_);
  line += fmt::format(" in {} ({} it/s)", format_duration(elapsed), format_rate(rate));
  if (!status_.empty()) {
    line += " | " + status_;
  }
  write_all(line + "\n");
}

void Progress::write_all(std::string_view text) const {
  // Best effort: a closed or full stderr must not abort a training run, so errors are dropped.
  while (!text.empty()) {
    const ssize_t n = ::write(opts_.fd, text.data(), text.size());
    if (n <= 0) {
      if (n < 0 && errno == EINTR) {
        continue;
      }
      return;
    }
    text.remove_prefix(static_cast<size_t>(n));
  }
}

}  // namespace husai
