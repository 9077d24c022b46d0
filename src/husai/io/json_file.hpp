#pragma once

#include <string>

#include <nlohmann/json.hpp>

namespace husai {

// Reads and parses a JSON file. A missing file or invalid JSON throws husai::Error naming the file, so a
// corrupt results.json, metrics.json or config.json is reported by path rather than by the parser alone.
nlohmann::json read_json_file(const std::string& path);

}  // namespace husai
