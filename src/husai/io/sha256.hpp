#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace husai {

// SHA-256 as specified in FIPS 180-4. Used to fingerprint artifacts (checkpoints, datasets, configs) so runs
// can prove which inputs they consumed; it is not meant to be a high-throughput or constant-time primitive.
class Sha256 {
 public:
  Sha256();

  // Feeds more message bytes; may be called any number of times with any chunk sizes.
  void update(const void* data, size_t size);
  void update(std::string_view bytes) { update(bytes.data(), bytes.size()); }

  // Finishes the hash and returns 64 lowercase hex digits. The object is reset afterwards, so it can be
  // reused for a new message.
  std::string hex_digest();

 private:
  void compress(const uint8_t* block);
  void reset();

  std::array<uint32_t, 8> state_{};
  std::array<uint8_t, 64> buffer_{};
  size_t buffered_ = 0;
  uint64_t total_bytes_ = 0;
};

// One-shot hash of a byte string, as 64 lowercase hex digits.
std::string sha256_hex(std::string_view bytes);

// Hash of a file's contents, read in chunks so large checkpoints need not fit in memory.
// Throws husai::Error naming the file if it cannot be opened or read.
std::string sha256_file_hex(const std::string& path);

}  // namespace husai
