#pragma once

// manifest.json: what produced a run folder and what it holds (CONTRACTS.md, "Manifest").

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace husai {

struct FileRecord {
  std::string path;  // relative to the run folder, or as given for inputs outside it
  std::string sha256;
  int64_t bytes = 0;
};

FileRecord describe_file(const std::string& full_path, const std::string& recorded_path);

struct Manifest {
  std::vector<std::string> command;  // argv
  std::string config_hash;
  std::vector<FileRecord> inputs;
  std::vector<FileRecord> outputs;
  nlohmann::json extra = nlohmann::json::object();  // merged in at the top level

  // Records an output file of the run folder `dir` (hashes it now).
  void add_output(const std::string& dir, const std::string& name);
  void add_input(const std::string& path);
  // The same with the file's sha256 already known (an activation shard hashed when it was read), so a large
  // input is not read a second time.
  void add_input(const std::string& path, const std::string& sha256);
  nlohmann::json to_json() const;
  // Writes DIR/manifest.json atomically.
  void write(const std::string& dir) const;
};

// The argv of this process, recorded by main() for manifests.
void set_command_line(int argc, const char* const* argv);
const std::vector<std::string>& command_line();

std::string utc_timestamp_iso();      // 2026-11-28T07:41:41Z
std::string utc_timestamp_compact();  // 20261128T074141Z

}  // namespace husai
