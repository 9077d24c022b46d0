#include "husai/core/error.hpp"

namespace husai {

std::string Error::message() const {
  // Built with append() only: GCC 12 at -O3 raises a false -Wrestrict on `"literal" + std::string`.
  std::string out;
  if (file_) {
    out.append(*file_);
    if (line_) {
      out.append(":");
      out.append(std::to_string(*line_));
    }
    out.append(": ");
  } else if (line_) {
    out.append("line ");
    out.append(std::to_string(*line_));
    out.append(": ");
  }
  if (key_) {
    out.append("key '");
    out.append(*key_);
    out.append("': ");
  }
  out.append(what());
  return out;
}

Error Error::extended(const std::string& more) const {
  Error out(std::string(what()) + more);
  out.file_ = file_;
  out.key_ = key_;
  out.line_ = line_;
  return out;
}

void fail_file(const std::string& path, const std::string& what) {
  throw Error(what).file(path);
}

}  // namespace husai
