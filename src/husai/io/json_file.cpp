#include "husai/io/json_file.hpp"

#include "husai/core/atomic_file.hpp"
#include "husai/core/error.hpp"

namespace husai {

nlohmann::json read_json_file(const std::string& path) {
  const std::string text = read_file(path);
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    throw Error(std::string("invalid JSON: ") + e.what()).file(path);
  }
}

}  // namespace husai
