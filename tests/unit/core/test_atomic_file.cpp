#include "husai/core/atomic_file.hpp"

#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

#include "husai/core/error.hpp"

namespace husai {
namespace {

namespace fs = std::filesystem;

// Each test gets its own fresh directory so leftover temp files are attributable to that test.
class AtomicFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() / ("husai_atomic_" + std::to_string(::getpid()) + "_" + info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ec;
    fs::permissions(dir_, fs::perms::owner_all, fs::perm_options::add, ec);
    fs::remove_all(dir_, ec);
  }

  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  // Everything in the directory except the given final names; temp files would show up here.
  std::vector<std::string> stray_entries(std::initializer_list<std::string> expected) const {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(dir_)) {
      const std::string name = e.path().filename().string();
      if (std::find(expected.begin(), expected.end(), name) == expected.end()) out.push_back(name);
    }
    return out;
  }

  fs::path dir_;
};

template <typename F>
std::string error_message(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.message();
  }
  ADD_FAILURE() << "expected husai::Error";
  return "";
}

TEST_F(AtomicFileTest, WritesAndOverwrites) {
  const std::string p = path("out.bin");
  write_file_atomic(p, "first");
  EXPECT_EQ(read_file(p), "first");
  write_file_atomic(p, std::string("second\0with nul", 15));
  EXPECT_EQ(read_file(p), std::string("second\0with nul", 15));
  write_file_atomic(p, "");
  EXPECT_EQ(read_file(p), "");
  EXPECT_TRUE(stray_entries({"out.bin"}).empty());
}

TEST_F(AtomicFileTest, RelativePathInCurrentDirectory) {
  const fs::path old_cwd = fs::current_path();
  fs::current_path(dir_);
  write_file_atomic("rel.txt", "x");
  fs::current_path(old_cwd);
  EXPECT_EQ(read_file(path("rel.txt")), "x");
  EXPECT_TRUE(stray_entries({"rel.txt"}).empty());
}

TEST_F(AtomicFileTest, StreamingWriterCommits) {
  const std::string p = path("stream.bin");
  std::string expected;
  {
    AtomicWriter w(p);
    EXPECT_EQ(fs::path(w.temp_path()).parent_path(), dir_);
    EXPECT_EQ(fs::path(w.temp_path()).filename().string().rfind(".stream.bin.tmp.", 0), 0u) << w.temp_path();
    for (int i = 0; i < 1000; ++i) {
      const std::string chunk = "chunk " + std::to_string(i) + "\n";
      w.write(chunk);
      expected += chunk;
    }
    // Nothing is visible under the final name before commit.
    EXPECT_FALSE(fs::exists(p));
    w.commit();
  }
  EXPECT_EQ(read_file(p), expected);
  EXPECT_TRUE(stray_entries({"stream.bin"}).empty());
}

TEST_F(AtomicFileTest, WriterWithoutCommitRemovesTempAndKeepsOldFile) {
  const std::string p = path("keep.txt");
  write_file_atomic(p, "old contents");
  {
    AtomicWriter w(p);
    w.write("new partial data");
    EXPECT_TRUE(fs::exists(w.temp_path()));
  }
  EXPECT_EQ(read_file(p), "old contents");
  EXPECT_TRUE(stray_entries({"keep.txt"}).empty());
}

TEST_F(AtomicFileTest, WriteAfterCommitThrows) {
  AtomicWriter w(path("c.txt"));
  w.commit();
  EXPECT_THROW(w.write("x"), Error);
  EXPECT_THROW(w.commit(), Error);
}

TEST_F(AtomicFileTest, MissingParentDirectoryNamesThePath) {
  const std::string p = path("no_such_dir/out.bin");
  const std::string msg = error_message([&] { write_file_atomic(p, "x"); });
  EXPECT_NE(msg.find(p), std::string::npos) << msg;
  EXPECT_NE(msg.find("No such file or directory"), std::string::npos) << msg;
}

TEST_F(AtomicFileTest, ParentIsAFileNamesThePath) {
  write_file_atomic(path("plain"), "x");
  const std::string p = path("plain/out.bin");
  const std::string msg = error_message([&] { write_file_atomic(p, "x"); });
  EXPECT_NE(msg.find(p), std::string::npos) << msg;
  EXPECT_NE(msg.find("Not a directory"), std::string::npos) << msg;
}

TEST_F(AtomicFileTest, UnwritableDirectoryNamesThePath) {
  // root bypasses permission bits, so the permission case can only be observed as an ordinary user.
  if (::geteuid() == 0) GTEST_SKIP() << "running as root: directory permissions are not enforced";
  const fs::path ro = dir_ / "readonly";
  fs::create_directories(ro);
  fs::permissions(ro, fs::perms::owner_read | fs::perms::owner_exec);
  const std::string p = (ro / "out.bin").string();
  const std::string msg = error_message([&] { write_file_atomic(p, "x"); });
  EXPECT_NE(msg.find(p), std::string::npos) << msg;
  EXPECT_NE(msg.find("Permission denied"), std::string::npos) << msg;
}

TEST_F(AtomicFileTest, PathNamingADirectoryIsRejected) {
  const std::string p = path("sub/");
  const std::string msg = error_message([&] { write_file_atomic(p, "x"); });
  EXPECT_NE(msg.find(p), std::string::npos) << msg;
}

TEST_F(AtomicFileTest, RenameOntoDirectoryFailsAndCleansUp) {
  fs::create_directories(dir_ / "target");
  fs::create_directories(dir_ / "target" / "child");  // non-empty: rename(2) cannot replace it
  const std::string p = path("target");
  const std::string msg = error_message([&] { write_file_atomic(p, "x"); });
  EXPECT_NE(msg.find(p), std::string::npos) << msg;
  EXPECT_TRUE(fs::is_directory(p));
  EXPECT_TRUE(stray_entries({"target"}).empty());
}

// A child process gets a tiny RLIMIT_FSIZE so writing past it fails the way a full disk does. Without
// ignore_sigxfsz() the child would be killed by SIGXFSZ instead of reporting an error.
TEST_F(AtomicFileTest, FileSizeLimitIsACleanErrorAndKeepsOldContents) {
  const std::string p = path("big.bin");
  write_file_atomic(p, "earlier contents");

  constexpr int kReportedError = 42;
  constexpr int kUnexpectedSuccess = 43;
  constexpr int kWrongMessage = 44;
  constexpr int kOtherException = 45;
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // Only async-signal-safe-ish work and _exit() here: gtest must not run its machinery in the child.
    struct rlimit lim {};
    lim.rlim_cur = 4096;
    lim.rlim_max = 4096;
    if (::setrlimit(RLIMIT_FSIZE, &lim) != 0) ::_exit(2);
    try {
      write_file_atomic(p, std::string(1 << 20, 'z'));
      ::_exit(kUnexpectedSuccess);
    } catch (const Error& e) {
      const std::string msg = e.message();
      const bool ok = msg.find(p) != std::string::npos && msg.find("File too large") != std::string::npos;
      ::_exit(ok ? kReportedError : kWrongMessage);
    } catch (...) {
      ::_exit(kOtherException);
    }
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status)) << "child died from signal "
                                 << (WIFSIGNALED(status) ? WTERMSIG(status) : -1);
  EXPECT_EQ(WEXITSTATUS(status), kReportedError);
  EXPECT_EQ(read_file(p), "earlier contents");
  EXPECT_TRUE(stray_entries({"big.bin"}).empty());
}

TEST_F(AtomicFileTest, StreamingWriterHitsSizeLimitCleanly) {
  const std::string p = path("stream_big.bin");
  constexpr int kReportedError = 42;
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    struct rlimit lim {};
    lim.rlim_cur = 10000;
    lim.rlim_max = 10000;
    if (::setrlimit(RLIMIT_FSIZE, &lim) != 0) ::_exit(2);
    try {
      AtomicWriter w(p);
      const std::string chunk(3000, 'q');  // the 4th chunk crosses the limit part-way
      for (int i = 0; i < 10; ++i) w.write(chunk);
      w.commit();
      ::_exit(43);
    } catch (const Error& e) {
      ::_exit(e.message().find("File too large") != std::string::npos ? kReportedError : 44);
    } catch (...) {
      ::_exit(45);
    }
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), kReportedError);
  EXPECT_FALSE(fs::exists(p));
  EXPECT_TRUE(stray_entries({}).empty());
}

TEST_F(AtomicFileTest, EnsureDirectoryCreatesNestedAndIsIdempotent) {
  const std::string d = path("a/b/c");
  ensure_directory(d);
  EXPECT_TRUE(fs::is_directory(d));
  ensure_directory(d);
  ensure_directory(d + "/");
  ensure_directory("");
  EXPECT_TRUE(fs::is_directory(d));
}

TEST_F(AtomicFileTest, EnsureDirectoryOverAFileNamesThePath) {
  write_file_atomic(path("f"), "x");
  const std::string d = path("f/sub");
  const std::string msg = error_message([&] { ensure_directory(d); });
  EXPECT_NE(msg.find(d), std::string::npos) << msg;
  const std::string msg2 = error_message([&] { ensure_directory(path("f")); });
  EXPECT_NE(msg2.find("not a directory"), std::string::npos) << msg2;
}

TEST_F(AtomicFileTest, ReadFileErrorsNameThePath) {
  const std::string missing = path("missing.txt");
  const std::string msg = error_message([&] { read_file(missing); });
  EXPECT_NE(msg.find(missing), std::string::npos) << msg;
  EXPECT_NE(msg.find("No such file or directory"), std::string::npos) << msg;

  const std::string msg2 = error_message([&] { read_file(dir_.string()); });
  EXPECT_NE(msg2.find(dir_.string()), std::string::npos) << msg2;
  EXPECT_NE(msg2.find("directory"), std::string::npos) << msg2;
}

TEST_F(AtomicFileTest, ReadFileHandlesLargeBinary) {
  std::string big(5'000'000, '\0');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i % 251);
  write_file_atomic(path("large"), big);
  EXPECT_EQ(read_file(path("large")), big);
}

TEST_F(AtomicFileTest, ConcurrentWritersUseDistinctTempFiles) {
  AtomicWriter a(path("same"));
  AtomicWriter b(path("same"));
  EXPECT_NE(a.temp_path(), b.temp_path());
  a.write("from a");
  b.write("from b");
  a.commit();
  b.commit();
  EXPECT_EQ(read_file(path("same")), "from b");
  EXPECT_TRUE(stray_entries({"same"}).empty());
}

}  // namespace
}  // namespace husai
