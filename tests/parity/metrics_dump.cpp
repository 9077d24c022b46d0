// Computes husai's reconstruction metrics for the NumPy/SciPy parity test (metrics_parity.py).
// Usage: husai_metrics_dump IN.safetensors OUT.json
// IN holds x [N, D], x_hat [N, D] and latents [N, F] (F32). OUT is a JSON object with the metrics three ways,
// each with the per-latent feature density: "dense" (one call), "batched" (dense latents fed in batches of
// 37 rows, which cross the 256-row chunks) and "sparse" (the non-zero latents in CSR form, one call).

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "husai/core/atomic_file.hpp"
#include "husai/core/error.hpp"
#include "husai/io/safetensors.hpp"
#include "husai/metrics/reconstruction.hpp"

int main(int argc, char** argv) {
  using namespace husai;
  if (argc != 3) {
    std::fprintf(stderr, "usage: husai_metrics_dump IN.safetensors OUT.json\n");
    return 1;
  }
  try {
    const SafetensorsFile in = SafetensorsFile::load(argv[1]);
    const TensorData& x_t = in.get("x");
    const TensorData& latents_t = in.get("latents");
    if (x_t.shape.size() != 2 || latents_t.shape.size() != 2) throw Error("x and latents must be 2-D");
    const int64_t N = x_t.shape[0], D = x_t.shape[1], F = latents_t.shape[1];
    const std::vector<float> x = x_t.to_f32();
    const std::vector<float> x_hat = in.get("x_hat").to_f32();
    const std::vector<float> latents = latents_t.to_f32();
    if (x_hat.size() != x.size() || latents_t.shape[0] != N)
      throw Error("x_hat and latents must match x's rows");

    nlohmann::json out;
    out["dense"] = reconstruction_metrics(x.data(), x_hat.data(), latents.data(), N, D, F).to_json(true);

    ReconstructionAccumulator batched(D, F);
    for (int64_t r = 0; r < N; r += 37) {
      const int64_t n = std::min<int64_t>(37, N - r);
      batched.add(x.data() + r * D, x_hat.data() + r * D, latents.data() + r * F, n);
    }
    out["batched"] = batched.finish().to_json(true);

    std::vector<int64_t> offsets{0}, indices;
    std::vector<float> values;
    for (int64_t r = 0; r < N; ++r) {
      for (int64_t j = 0; j < F; ++j) {
        const float v = latents[static_cast<size_t>(r * F + j)];
        if (v != 0.0f) {
          indices.push_back(j);
          values.push_back(v);
        }
      }
      offsets.push_back(static_cast<int64_t>(indices.size()));
    }
    ReconstructionAccumulator sparse(D, F);
    sparse.add(x.data(), x_hat.data(), SparseLatents{offsets.data(), indices.data(), values.data()}, N);
    out["sparse"] = sparse.finish().to_json(true);

    write_file_atomic(argv[2], out.dump(1) + "\n");
  } catch (const Error& e) {
    std::fprintf(stderr, "husai_metrics_dump: %s\n", e.message().c_str());
    return 1;
  }
  return 0;
}
