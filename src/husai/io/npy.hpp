#pragma once

// NumPy .npy files (format versions 1.0-3.0): little-endian float arrays in C order, as `np.save` writes
// them. dtypes '<f2' (float16), '<f4', '<f8' become TensorData F16 / F32 / F64 (bytes as stored); anything
// else (Fortran order, big-endian, integers, object arrays) is a husai::Error naming the file and the
// problem, as is a file shorter than its header promises.

#include <string>

#include "husai/io/safetensors.hpp"

namespace husai {

TensorData read_npy(const std::string& path);

}  // namespace husai
