#include "husai/core/progress.hpp"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include <gtest/gtest.h>

namespace husai {
namespace {

// A temporary file to write progress output into, read back afterwards.
class TempOutput {
 public:
  TempOutput() {
    path_ = "/tmp/husai_progress_XXXXXX";
    fd_ = ::mkstemp(path_.data());
    EXPECT_GE(fd_, 0);
  }
  ~TempOutput() {
    ::close(fd_);
    ::unlink(path_.c_str());
  }
  TempOutput(const TempOutput&) = delete;
  TempOutput& operator=(const TempOutput&) = delete;

  int fd() const { return fd_; }
  std::string read() const {
    std::ifstream in(path_, std::ios::binary);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
  }

 private:
  std::string path_;
  int fd_ = -1;
};

// Points fd 2 at `fd` for the lifetime of the object, as the CLI's stderr would be in a log file.
class RedirectStderr {
 public:
  explicit RedirectStderr(int fd) : saved_(::dup(2)) {
    std::fflush(stderr);
    ::dup2(fd, 2);
  }
  ~RedirectStderr() {
    std::fflush(stderr);
    ::dup2(saved_, 2);
    ::close(saved_);
  }
  RedirectStderr(const RedirectStderr&) = delete;
  RedirectStderr& operator=(const RedirectStderr&) = delete;

 private:
  int saved_;
};

Progress::Options fake_clock_options(const double* t, int fd, bool tty) {
  Progress::Options o;
  o.clock = [t] { return *t; };
  o.fd = fd;
  o.tty = tty;
  return o;
}

TEST(ProgressTest, PlainOutputIsRateLimitedAndEndsWithFinalLine) {
  TempOutput out;
  double t = 0.0;
  {
    Progress p("train", 100, false, fake_clock_options(&t, out.fd(), false));
    t = 1.0;
    p.update(10, "loss 0.9");  // under the 5 s interval: silent
    t = 5.0;
    p.update(50, "loss 0.5");
    t = 6.0;
    p.update(60, "loss 0.4");  // 1 s after the last line: silent
    t = 10.0;
    p.update(100, "loss 0.1");
    p.finish("loss 0.1 val_acc 0.98");
    p.update(100, "ignored after finish");
    p.finish("ignored too");
  }
  EXPECT_EQ(out.read(),
            "train: 50/100 (50.0%), 10.0 it/s, elapsed 0:05, ETA 0:05 | loss 0.5\n"
            "train: 100/100 (100.0%), 10.0 it/s, elapsed 0:10, ETA 0:00 | loss 0.1\n"
            "train: done 100/100 in 0:10 (10.0 it/s) | loss 0.1 val_acc 0.98\n");
}

TEST(ProgressTest, PlainIntervalIsConfigurableAndTotalMayBeUnknown) {
  TempOutput out;
  double t = 0.0;
  auto opts = fake_clock_options(&t, out.fd(), false);
  opts.plain_interval_s = 1.0;
  {
    Progress p("scan", 0, false, opts);
    t = 1.0;
    p.update(4, "line1\nline2");  // control characters cannot break the one-line format
    t = 1.5;
    p.update(6);
    t = 2.0;
    p.update(8);
    p.finish();  // keeps the last status (none)
  }
  EXPECT_EQ(out.read(),
            "scan: 4 done, 4.00 it/s, elapsed 0:01 | line1 line2\n"
            "scan: 8 done, 4.00 it/s, elapsed 0:02\n"
            "scan: done 8 in 0:02 (4.00 it/s)\n");
}

TEST(ProgressTest, FinishWithoutStatusKeepsLastStatus) {
  TempOutput out;
  double t = 0.0;
  {
    Progress p("eval", 3, false, fake_clock_options(&t, out.fd(), false));
    t = 0.5;
    p.update(3, "acc 0.75");
    p.finish();
  }
  EXPECT_EQ(out.read(), "eval: done 3/3 in 0:01 (6.00 it/s) | acc 0.75\n");
}

TEST(ProgressTest, NonTerminalStderrGetsPlainLines) {
  TempOutput out;
  {
    RedirectStderr redirect(out.fd());
    Progress p("sweep", 3, false);  // real clock, isatty(2) detection: a file is not a terminal
    p.update(1, "a");
    p.update(2, "b");
    p.update(3, "c");
    p.finish("ok");
  }
  const std::string text = out.read();
  EXPECT_EQ(text.find('\r'), std::string::npos);
  EXPECT_EQ(text.rfind("sweep: done 3/3 in 0:00 (", 0), 0u) << text;
  EXPECT_EQ(text.substr(text.size() - 6), " | ok\n") << text;
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 1);
}

TEST(ProgressTest, QuietPrintsNothing) {
  TempOutput out;
  {
    RedirectStderr redirect(out.fd());
    Progress p("train", 10, true);
    for (int i = 1; i <= 10; ++i) {
      p.update(i, "loss 1.0");
    }
    p.finish("done");
  }
  double t = 0.0;
  {
    Progress p("train", 10, true, fake_clock_options(&t, out.fd(), true));
    t = 100.0;
    p.update(5);
  }  // the destructor must not end a line that was never drawn
  EXPECT_EQ(out.read(), "");
}

TEST(ProgressTest, LiveBarRedrawsInPlaceAndClearsLeftovers) {
  TempOutput out;
  double t = 0.0;
  auto opts = fake_clock_options(&t, out.fd(), true);
  opts.bar_width = 10;
  {
    Progress p("fit", 10, false, opts);
    t = 1.0;
    p.update(5, "loss 0.123456");
    t = 1.05;
    p.update(6, "skipped: within 0.1 s");
    t = 2.0;
    p.update(10, "ok");
    p.finish();
  }
  const std::string first = "\rfit [#####-----]  50.0% 5/10 5.00 it/s ETA 0:01  loss 0.123456";
  const std::string second = "\rfit [##########] 100.0% 10/10 5.00 it/s ETA 0:00  ok";
  const std::string pad1(first.size() - second.size(), ' ');
  const std::string final_line = "\rfit [##########] 100.0% 10/10 in 0:02 (5.00 it/s)  ok";
  const std::string pad2(second.size() > final_line.size() ? second.size() - final_line.size() : 0, ' ');
  EXPECT_EQ(out.read(), first + second + pad1 + final_line + pad2 + "\n");
}

TEST(ProgressTest, DestructorEndsAnUnfinishedLiveLine) {
  TempOutput out;
  double t = 0.0;
  {
    Progress p("x", 4, false, fake_clock_options(&t, out.fd(), true));
    t = 1.0;
    p.update(1);
  }
  const std::string text = out.read();
  ASSERT_FALSE(text.empty());
  EXPECT_EQ(text.front(), '\r');
  EXPECT_EQ(text.back(), '\n');
}

TEST(ProgressTest, Formatting) {
  EXPECT_EQ(Progress::format_duration(0), "0:00");
  EXPECT_EQ(Progress::format_duration(7.4), "0:07");
  EXPECT_EQ(Progress::format_duration(754), "12:34");
  EXPECT_EQ(Progress::format_duration(3723), "1:02:03");
  EXPECT_EQ(Progress::format_duration(-1), "?");
  EXPECT_EQ(Progress::format_rate(0.25), "0.25");
  EXPECT_EQ(Progress::format_rate(12.5), "12.5");
  EXPECT_EQ(Progress::format_rate(1234.4), "1234");
}

}  // namespace
}  // namespace husai
