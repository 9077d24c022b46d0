#pragma once

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>

namespace husai {

// The one exception type husai throws for anything a user can cause: bad input, bad config, failed I/O.
// It carries where the problem is (file, key, line, row, byte offset) so the CLI can print one clear message.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}

  Error& file(std::string path) {
    file_ = std::move(path);
    return *this;
  }
  Error& key(std::string k) {
    key_ = std::move(k);
    return *this;
  }
  Error& line(int64_t l) {
    line_ = l;
    return *this;
  }

  const std::optional<std::string>& file() const { return file_; }
  const std::optional<std::string>& key() const { return key_; }
  const std::optional<int64_t>& line() const { return line_; }

  // The same error with `more` appended to its text (file, key and line kept), e.g. to add context at a
  // higher layer: throw e.extended("; the last checkpoint is kept in ...").
  Error extended(const std::string& more) const;

  // "FILE:LINE: key 'KEY': WHAT" with the parts that are known.
  std::string message() const;

 private:
  std::optional<std::string> file_;
  std::optional<std::string> key_;
  std::optional<int64_t> line_;
};

// Convenience: throw Error(fmt) with a file attached.
[[noreturn]] void fail_file(const std::string& path, const std::string& what);

}  // namespace husai
