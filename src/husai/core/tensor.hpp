#pragma once

#include <Eigen/Core>
#include <cstdint>

namespace husai {

// Row-major everywhere: it matches safetensors (C order), PyTorch and the TransformerLens shapes, so a
// parameter view is written to disk as it is.
template <typename T>
using MatrixR = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <typename T>
using VectorX = Eigen::Matrix<T, Eigen::Dynamic, 1>;
template <typename T>
using MapR = Eigen::Map<MatrixR<T>>;
template <typename T>
using ConstMapR = Eigen::Map<const MatrixR<T>>;
template <typename T>
using MapV = Eigen::Map<VectorX<T>>;
template <typename T>
using ConstMapV = Eigen::Map<const VectorX<T>>;

using MatrixRf = MatrixR<float>;
using MatrixRd = MatrixR<double>;

}  // namespace husai
