// Fuzz target: the safetensors reader (SafetensorsFile::parse, which SafetensorsFile::load calls after
// reading the file). Contract: any byte string is either rejected with a husai::Error or accepted; an
// accepted file converts every tensor without error and survives serialize() -> parse() unchanged, and
// serialize() is canonical (a fixed point). Anything else escaping, a sanitizer report or a failed check is a
// bug.

#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_check.hpp"
#include "husai/core/error.hpp"
#include "husai/io/safetensors.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  husai::SafetensorsFile f;
  try {
    f = husai::SafetensorsFile::parse(bytes, "fuzz.safetensors");
  } catch (const husai::Error& e) {
    HUSAI_FUZZ_CHECK(e.file() && *e.file() == "fuzz.safetensors");  // every rejection names the file
    return 0;
  }
  for (const auto& [name, t] : f.tensors) {
    const auto n = static_cast<size_t>(t.numel());
    HUSAI_FUZZ_CHECK(t.bytes.size() == n * husai::dtype_size(t.dtype));
    HUSAI_FUZZ_CHECK(t.to_f64().size() == n);
    HUSAI_FUZZ_CHECK(t.to_f32().size() == n);
    if (husai::dtype_is_integer(t.dtype)) HUSAI_FUZZ_CHECK(t.to_i64().size() == n);
    HUSAI_FUZZ_CHECK(&f.get(name) == &t);
  }
  const std::string encoded = f.serialize();
  const husai::SafetensorsFile g = husai::SafetensorsFile::parse(encoded, "roundtrip.safetensors");
  HUSAI_FUZZ_CHECK(g.metadata == f.metadata);
  HUSAI_FUZZ_CHECK(g.tensors.size() == f.tensors.size());
  for (const auto& [name, t] : f.tensors) {
    const husai::TensorData& u = g.get(name);
    HUSAI_FUZZ_CHECK(u.dtype == t.dtype && u.shape == t.shape && u.bytes == t.bytes);
  }
  HUSAI_FUZZ_CHECK(g.serialize() == encoded);
  return 0;
}
