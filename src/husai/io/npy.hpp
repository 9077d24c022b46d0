#pragma once

// NumPy .npy files (format versions 1.0-3.0): little-endian float arrays in C order, as `np.save` writes
// them. dtypes '<f2' (float16), '<f4', '<f8' become TensorData F16 / F32 / F64 (bytes as stored); anything
// else (Fortran order, big-endian, integers, object arrays) is a husai::Error naming the file and the
// problem, as is a file shorter than its header promises.

#include <cstdint>
#include <string>
#include <vector>

#include "husai/io/safetensors.hpp"

namespace husai {

TensorData read_npy(const std::string& path);

// The header only (for files larger than memory): dtype, shape and the byte offset of the data, with the
// same checks as read_npy, including a file shorter than the header promises.
struct NpyHeader {
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  uint64_t data_offset = 0;
};
NpyHeader read_npy_header(const std::string& path);

}  // namespace husai
