#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace husai {

// Artifacts (checkpoints, metrics, manifests) must never be observed half-written: a crash, a full disk or a
// file-size limit must leave either the complete new file or the untouched old one under the final name.
// Everything here writes to a temp file in the destination directory (same filesystem, so rename(2) is
// atomic), checks every write, fsyncs, and only then renames over the final name.

// Makes writes past RLIMIT_FSIZE fail with EFBIG instead of killing the process with SIGXFSZ, so a file-size
// limit surfaces as a normal husai::Error. Installs SIG_IGN once per process (thread-safe) and only if the
// disposition is still the default, so an application's own handler is left alone. Called by the writers
// below; exposed so a program can opt in early.
void ignore_sigxfsz();

// Writes `bytes` to `path` atomically. Throws husai::Error naming `path` and the OS reason (e.g. "No space
// left on device", "File too large", "Permission denied"); on any failure the temp file is removed and
// whatever was at `path` before is untouched.
void write_file_atomic(const std::string& path, std::string_view bytes);

// Streaming variant for outputs too large to build in memory:
//   AtomicWriter w(path); w.write(...); ...; w.commit();
// Destroying the writer without commit() (e.g. during exception unwinding) removes the temp file. After a
// failed write() the writer is dead: further write()/commit() calls throw.
class AtomicWriter {
 public:
  explicit AtomicWriter(std::string path);
  ~AtomicWriter();

  AtomicWriter(const AtomicWriter&) = delete;
  AtomicWriter& operator=(const AtomicWriter&) = delete;
  AtomicWriter(AtomicWriter&&) = delete;
  AtomicWriter& operator=(AtomicWriter&&) = delete;

  void write(const void* data, size_t size);
  void write(std::string_view bytes) { write(bytes.data(), bytes.size()); }

  // Flushes to stable storage and renames the temp file over the final path.
  void commit();

  const std::string& path() const { return path_; }
  const std::string& temp_path() const { return temp_path_; }

 private:
  // Closes and unlinks the temp file, then throws an Error naming the final path.
  [[noreturn]] void fail(const std::string& what, int err);
  void discard() noexcept;

  std::string path_;
  std::string temp_path_;
  int fd_ = -1;
  bool committed_ = false;
};

// mkdir -p. An empty string means the current directory and is a no-op. Throws husai::Error naming `dir` if
// it (or a parent) cannot be created or exists as a non-directory.
void ensure_directory(const std::string& dir);

// Reads a whole file. Throws husai::Error naming `path` if it is missing, a directory, or unreadable.
std::string read_file(const std::string& path);

}  // namespace husai
