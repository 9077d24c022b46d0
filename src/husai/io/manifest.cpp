#include "husai/io/manifest.hpp"

#include <ctime>
#include <filesystem>

#include "husai/core/atomic_file.hpp"
#include "husai/core/threading.hpp"
#include "husai/core/version.hpp"
#include "husai/io/sha256.hpp"

namespace husai {
namespace {

std::vector<std::string>& command_storage() {
  static std::vector<std::string> argv;
  return argv;
}

std::tm utc_now() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  return tm;
}

constexpr int kManifestSchemaVersion = 1;

}  // namespace

FileRecord describe_file(const std::string& full_path, const std::string& recorded_path) {
  FileRecord r;
  r.path = recorded_path;
  r.sha256 = sha256_file_hex(full_path);
  r.bytes = static_cast<int64_t>(std::filesystem::file_size(full_path));
  return r;
}

void Manifest::add_output(const std::string& dir, const std::string& name) {
  outputs.push_back(describe_file((std::filesystem::path(dir) / name).string(), name));
}

void Manifest::add_input(const std::string& path) {
  inputs.push_back(describe_file(path, path));
}

void Manifest::add_input(const std::string& path, const std::string& sha256) {
  inputs.push_back({path, sha256, static_cast<int64_t>(std::filesystem::file_size(path))});
}

nlohmann::json Manifest::to_json() const {
  auto files = [](const std::vector<FileRecord>& records) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& r : records) out.push_back({{"path", r.path}, {"sha256", r.sha256}, {"bytes", r.bytes}});
    return out;
  };
  nlohmann::json j = {
      {"schema_version", kManifestSchemaVersion},
      {"timestamp_utc", utc_timestamp_iso()},
      {"git_commit", git_commit()},
      {"git_dirty", git_dirty()},
      {"command", command},
      {"husai_version", version()},
      {"threads", num_threads()},
      {"config_hash", config_hash},
      {"inputs", files(inputs)},
      {"outputs", files(outputs)},
  };
  for (const auto& [k, v] : extra.items()) j[k] = v;
  return j;
}

void Manifest::write(const std::string& dir) const {
  write_file_atomic((std::filesystem::path(dir) / "manifest.json").string(), to_json().dump(2) + "\n");
}

void set_command_line(int argc, const char* const* argv) {
  command_storage().assign(argv, argv + argc);
}

const std::vector<std::string>& command_line() {
  return command_storage();
}

std::string utc_timestamp_iso() {
  const std::tm tm = utc_now();
  char buf[64];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string utc_timestamp_compact() {
  const std::tm tm = utc_now();
  char buf[64];
  std::strftime(buf, sizeof buf, "%Y%m%dT%H%M%SZ", &tm);
  return buf;
}

}  // namespace husai
