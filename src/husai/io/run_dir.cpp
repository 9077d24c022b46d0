#include "husai/io/run_dir.hpp"

#include <filesystem>
#include <system_error>

#include "husai/core/atomic_file.hpp"
#include "husai/core/error.hpp"

namespace husai {

bool prepare_output_dir(const std::string& dir, ExistingOutput policy) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::exists(dir, ec) && !fs::is_directory(dir, ec)) {
    throw Error("output path exists and is not a directory").file(dir);
  }
  const bool non_empty = fs::exists(dir, ec) && !fs::is_empty(dir, ec);
  if (non_empty) {
    if (policy == ExistingOutput::Refuse) {
      throw Error(
          "output directory exists and is not empty; pass --resume to continue it or --overwrite to "
          "replace it")
          .file(dir);
    }
    if (policy == ExistingOutput::Overwrite) {
      for (const auto& entry : fs::directory_iterator(dir)) {
        fs::remove_all(entry.path(), ec);
        if (ec) throw Error("cannot remove " + entry.path().string() + ": " + ec.message()).file(dir);
      }
    }
  }
  ensure_directory(dir);
  return non_empty && policy == ExistingOutput::Resume;
}

}  // namespace husai
