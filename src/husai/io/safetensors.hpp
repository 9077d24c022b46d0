#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace husai {

// Element types of the safetensors format. husai writes F64/F32/I64/I32; the rest are read so that files
// produced by other tools (fp16/bf16 checkpoints, masks, token ids) can be loaded and converted.
enum class DType { F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL };

// The spelling used in safetensors headers, e.g. "F32", "BF16", "BOOL".
std::string_view dtype_name(DType dtype);
// Bytes per element.
size_t dtype_size(DType dtype);
// Inverse of dtype_name; nullopt for names husai does not know (e.g. "F8_E4M3", "U32").
std::optional<DType> dtype_from_name(std::string_view name);
bool dtype_is_integer(DType dtype);  // I*, U8 and BOOL

// Product of the dims (1 for a scalar shape []). Throws husai::Error on a negative dim or int64 overflow.
int64_t shape_numel(std::span<const int64_t> shape);

// One tensor: raw little-endian element bytes in row-major order, exactly as stored in the file.
struct TensorData {
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;

  int64_t numel() const { return shape_numel(shape); }

  // Element-wise conversions. to_f32/to_f64 accept every dtype (ints and BOOL convert by value); to_i64
  // accepts only integer dtypes and BOOL. Throw husai::Error if bytes.size() does not match the shape.
  std::vector<float> to_f32() const;
  std::vector<double> to_f64() const;
  std::vector<int64_t> to_i64() const;

  // Copy numel(shape) elements from `data` (may be null only when numel is 0).
  static TensorData f32(std::vector<int64_t> shape, const float* data);
  static TensorData f64(std::vector<int64_t> shape, const double* data);
  static TensorData i64(std::vector<int64_t> shape, const int64_t* data);
  static TensorData i32(std::vector<int64_t> shape, const int32_t* data);
  // Same, but check that the span holds exactly numel(shape) elements.
  static TensorData f32(std::vector<int64_t> shape, std::span<const float> data);
  static TensorData f64(std::vector<int64_t> shape, std::span<const double> data);
  static TensorData i64(std::vector<int64_t> shape, std::span<const int64_t> data);
  static TensorData i32(std::vector<int64_t> shape, std::span<const int32_t> data);
};

// A whole safetensors file held in memory.
//
// Layout: u64 little-endian header length N, N bytes of UTF-8 JSON header, then the data buffer. The
// header maps each tensor name to {"dtype", "shape", "data_offsets": [begin, end]} (offsets relative to the
// data buffer) plus an optional "__metadata__" object of string -> string.
class SafetensorsFile {
 public:
  // Largest header accepted, the same cap as the reference Rust implementation: a corrupt or hostile size
  // field must not make us allocate gigabytes before we even look at the JSON.
  static constexpr uint64_t kMaxHeaderBytes = 100'000'000;

  std::map<std::string, TensorData> tensors;
  std::map<std::string, std::string> metadata;

  // Throws husai::Error naming the file (if loaded from one), the missing tensor, and the available names.
  const TensorData& get(const std::string& name) const;
  bool has(const std::string& name) const { return tensors.count(name) != 0; }
  // Inserts or replaces. Throws if the name is "__metadata__" or bytes.size() does not match shape/dtype.
  void put(const std::string& name, TensorData tensor);

  // Deterministic encoding: tensors in name order, data packed contiguously in that order, compact header
  // JSON with sorted keys, "__metadata__" only when non-empty, header padded with spaces to a multiple of
  // 8 bytes so the data buffer starts 8-byte aligned.
  std::string serialize() const;
  // serialize() + write_file_atomic().
  void save(const std::string& path) const;

  // Strict parse: every malformed input is a husai::Error naming `path_for_errors` and the problem.
  static SafetensorsFile parse(std::string_view bytes, const std::string& path_for_errors);
  static SafetensorsFile load(const std::string& path);

  // Where this file was loaded from ("" if built in memory); used in error messages.
  const std::string& source_path() const { return source_path_; }

 private:
  std::string source_path_;
};

// Converts n floating elements stored as `dtype` (little-endian bytes, F64/F32/F16/BF16) to float, the
// same conversion as TensorData::to_f32. Throws husai::Error for an integer dtype.
void convert_to_f32(DType dtype, const uint8_t* bytes, size_t n, float* out);

// A safetensors file's header, read without its data (for files larger than memory). offset is the
// tensor's first byte counted from the start of the file.
struct SafetensorsEntry {
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  uint64_t offset = 0, size = 0;
};
struct SafetensorsHeader {
  std::map<std::string, SafetensorsEntry> tensors;
  std::map<std::string, std::string> metadata;
  uint64_t file_size = 0;
};
// The same checks as SafetensorsFile::load (header size, UTF-8, entries, tensors tiling the data buffer,
// a file shorter than its header promises), each a husai::Error naming the file.
SafetensorsHeader read_safetensors_header(const std::string& path);

}  // namespace husai
