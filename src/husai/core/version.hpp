#pragma once

namespace husai {

// Defined in the build's generated version_info.cpp (cmake/version.cmake).
const char* version();
const char* git_commit();
bool git_dirty();

}  // namespace husai
