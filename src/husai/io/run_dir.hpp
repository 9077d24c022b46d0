#pragma once

#include <string>

namespace husai {

enum class ExistingOutput { Refuse, Resume, Overwrite };

// Prepares an output folder: creates it when missing; an existing non-empty folder is refused with a
// clear error unless `Resume` (kept as it is) or `Overwrite` (emptied). Returns true when the folder
// already held files (so a resume has something to continue).
bool prepare_output_dir(const std::string& dir, ExistingOutput policy);

}  // namespace husai
