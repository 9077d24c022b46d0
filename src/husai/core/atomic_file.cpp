#include "husai/core/atomic_file.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <system_error>

#include "husai/core/error.hpp"

namespace husai {

namespace {

std::string errno_text(int err) {
  return std::strerror(err);
}

// Splits "dir/name" so the temp file can live next to the target: rename(2) is only atomic within one
// filesystem, and a temp under /tmp could be on another mount.
std::string temp_path_for(const std::string& path) {
  const size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "" : path.substr(0, slash + 1);
  const std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
  if (base.empty() || base == "." || base == "..") {
    fail_file(path, "output path does not name a file");
  }
  // pid + per-process counter keeps concurrent writers (threads or processes) from sharing a temp file.
  static std::atomic<uint64_t> counter{0};
  return dir + "." + base + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter++);
}

// Best-effort: makes the rename itself durable. The new file is already in place when this runs, so a
// failure here is not reported as a failed write.
void fsync_parent_dir(const std::string& path) {
  const size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    return;
  }
  (void)::fsync(fd);
  (void)::close(fd);
}

}  // namespace

void ignore_sigxfsz() {
  // A function-local static is initialised exactly once even under concurrent first calls.
  static const bool installed = [] {
    struct sigaction current {};
    if (::sigaction(SIGXFSZ, nullptr, &current) != 0) {
      return false;
    }
    if (current.sa_handler != SIG_DFL || (current.sa_flags & SA_SIGINFO) != 0) {
      return false;
    }
    struct sigaction ignore {};
    ignore.sa_handler = SIG_IGN;
    sigemptyset(&ignore.sa_mask);
    return ::sigaction(SIGXFSZ, &ignore, nullptr) == 0;
  }();
  (void)installed;
}

AtomicWriter::AtomicWriter(std::string path) : path_(std::move(path)) {
  ignore_sigxfsz();
  temp_path_ = temp_path_for(path_);
  // O_EXCL: never write through a stale temp (or a symlink an attacker planted) with the same name.
  fd_ = ::open(temp_path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
  if (fd_ < 0) {
    const int err = errno;
    throw Error("cannot create temporary file '" + temp_path_ + "' for writing: " + errno_text(err))
        .file(path_);
  }
}

AtomicWriter::~AtomicWriter() {
  if (!committed_) {
    discard();
  }
}

void AtomicWriter::discard() noexcept {
  if (fd_ >= 0) {
    (void)::close(fd_);
    fd_ = -1;
  }
  if (!temp_path_.empty()) {
    (void)::unlink(temp_path_.c_str());
    temp_path_.clear();
  }
}

void AtomicWriter::fail(const std::string& what, int err) {
  discard();
  throw Error(what + ": " + errno_text(err)).file(path_);
}

void AtomicWriter::write(const void* data, size_t size) {
  if (fd_ < 0) {
    throw Error("write after the file was committed or failed").file(path_);
  }
  const auto* p = static_cast<const char*>(data);
  // write(2) may accept fewer bytes than asked (signals, a file-size limit being reached part-way); loop so
  // a short write becomes either progress or the errno of the next attempt (ENOSPC, EFBIG, EIO, ...).
  while (size > 0) {
    const ssize_t n = ::write(fd_, p, size);
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      fail("cannot write file", errno);
    }
    if (n == 0) {
      fail("cannot write file (no progress)", EIO);
    }
    p += n;
    size -= static_cast<size_t>(n);
  }
}

void AtomicWriter::commit() {
  if (fd_ < 0) {
    throw Error("commit after the file was committed or failed").file(path_);
  }
  // Delayed-allocation filesystems and NFS may only report ENOSPC/EIO at fsync or close, so both are checked
  // before the rename publishes the file.
  if (::fsync(fd_) != 0) {
    fail("cannot flush file to disk", errno);
  }
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) {
    fail("cannot close file", errno);
  }
  if (::rename(temp_path_.c_str(), path_.c_str()) != 0) {
    fail("cannot rename temporary file into place", errno);
  }
  temp_path_.clear();
  committed_ = true;
  fsync_parent_dir(path_);
}

void write_file_atomic(const std::string& path, std::string_view bytes) {
  AtomicWriter writer(path);
  writer.write(bytes);
  writer.commit();
}

void ensure_directory(const std::string& dir) {
  if (dir.empty()) {
    return;
  }
  std::error_code ec;
  // Checked first so the common mistake (a file where a directory should be) gets a plain message rather
  // than whatever errno create_directories happens to surface.
  if (std::filesystem::exists(dir, ec) && !std::filesystem::is_directory(dir, ec)) {
    fail_file(dir, "exists but is not a directory");
  }
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    fail_file(dir, "cannot create directory: " + ec.message());
  }
  // Guards against races and against implementations that report success for an existing non-directory.
  if (!std::filesystem::is_directory(dir, ec)) {
    fail_file(dir, "exists but is not a directory");
  }
}

std::string read_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    fail_file(path, "cannot open file: " + errno_text(err));
  }
  struct stat st {};
  if (::fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
    (void)::close(fd);
    fail_file(path, "is a directory, expected a file");
  }
  std::string out;
  if (st.st_size > 0) {
    out.reserve(static_cast<size_t>(st.st_size));
  }
  // Read until EOF rather than trusting st_size, which is 0 for pipes and /proc files.
  char chunk[1 << 16];
  for (;;) {
    const ssize_t n = ::read(fd, chunk, sizeof chunk);
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      const int err = errno;
      (void)::close(fd);
      fail_file(path, "cannot read file: " + errno_text(err));
    }
    if (n == 0) {
      break;
    }
    out.append(chunk, static_cast<size_t>(n));
  }
  (void)::close(fd);
  return out;
}

}  // namespace husai
