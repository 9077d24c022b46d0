#include "husai/io/safetensors.hpp"

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>
#include <tuple>

#include <nlohmann/json.hpp>

#include "husai/core/atomic_file.hpp"
#include "husai/core/error.hpp"

namespace husai {

// The format stores elements little-endian and TensorData keeps the file's bytes verbatim, so conversions
// below reinterpret them directly. Supporting a big-endian host would mean byte-swapping in those loaders.
static_assert(std::endian::native == std::endian::little, "safetensors I/O assumes a little-endian host");

namespace {

using nlohmann::json;

struct DTypeInfo {
  DType dtype;
  std::string_view name;
  size_t size;
};

constexpr DTypeInfo kDTypes[] = {
    {DType::F64, "F64", 8}, {DType::F32, "F32", 4},   {DType::F16, "F16", 2}, {DType::BF16, "BF16", 2},
    {DType::I64, "I64", 8}, {DType::I32, "I32", 4},   {DType::I16, "I16", 2}, {DType::I8, "I8", 1},
    {DType::U8, "U8", 1},   {DType::BOOL, "BOOL", 1},
};

const DTypeInfo& info(DType dtype) {
  for (const auto& d : kDTypes) {
    if (d.dtype == dtype) {
      return d;
    }
  }
  throw Error("invalid DType value " + std::to_string(static_cast<int>(dtype)));
}

std::string shape_to_string(std::span<const int64_t> shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i > 0) {
      out += ", ";
    }
    out += std::to_string(shape[i]);
  }
  return out + "]";
}

// numel * element size, or nullopt on overflow.
std::optional<uint64_t> byte_count(std::span<const int64_t> shape, DType dtype) {
  uint64_t total = dtype_size(dtype);
  for (int64_t d : shape) {
    if (d < 0) {
      return std::nullopt;
    }
    if (__builtin_mul_overflow(total, static_cast<uint64_t>(d), &total)) {
      return std::nullopt;
    }
  }
  return total;
}

// Throws unless bytes.size() matches shape and dtype; every accessor relies on this invariant.
void check_consistent(const TensorData& t) {
  const int64_t n = shape_numel(t.shape);
  const auto need = byte_count(t.shape, t.dtype);
  if (!need || *need != t.bytes.size()) {
    throw Error("tensor data has " + std::to_string(t.bytes.size()) + " bytes but shape " +
                shape_to_string(t.shape) + " (" + std::to_string(n) + " elements) of dtype " +
                std::string(dtype_name(t.dtype)) + " needs " +
                (need ? std::to_string(*need) : std::string("more than 2^64")));
  }
}

template <typename T>
T load(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof v);  // memcpy: the byte buffer gives no alignment guarantee for T
  return v;
}

// Sign-extends a two's-complement byte explicitly rather than through `signed char`, whose implicit
// widening is a classic source of bugs (and flagged by clang-tidy's bugprone-signed-char-misuse).
int64_t load_i8(const uint8_t* p) {
  return p[0] >= 0x80 ? int64_t{p[0]} - 0x100 : int64_t{p[0]};
}

// IEEE 754 binary16 -> binary32. Every half value is exactly representable as a float.
float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu;
  const uint32_t mantissa = h & 0x3ffu;
  if (exponent == 0) {
    // Zero or subnormal: value = mantissa * 2^-24.
    const float magnitude = std::ldexp(static_cast<float>(mantissa), -24);
    return sign ? -magnitude : magnitude;
  }
  uint32_t bits;
  if (exponent == 0x1f) {
    bits = sign | 0x7f800000u | (mantissa << 13);  // inf / NaN (payload kept)
  } else {
    bits = sign | ((exponent + 127 - 15) << 23) | (mantissa << 13);
  }
  return std::bit_cast<float>(bits);
}

// bfloat16 is the top half of a binary32.
float bf16_to_f32(uint16_t h) {
  return std::bit_cast<float>(static_cast<uint32_t>(h) << 16);
}

// Converts every element to Out by value. Integers, bools and floats are all representable (possibly
// rounded) as float/double, so this is total for floating Out.
template <typename Out>
std::vector<Out> convert_floating(const TensorData& t) {
  check_consistent(t);
  const size_t elem = dtype_size(t.dtype);
  const size_t n = t.bytes.size() / elem;
  std::vector<Out> out(n);
  const uint8_t* p = t.bytes.data();
  for (size_t i = 0; i < n; ++i, p += elem) {
    switch (t.dtype) {
      case DType::F64:
        out[i] = static_cast<Out>(load<double>(p));
        break;
      case DType::F32:
        out[i] = static_cast<Out>(load<float>(p));
        break;
      case DType::F16:
        out[i] = static_cast<Out>(f16_to_f32(load<uint16_t>(p)));
        break;
      case DType::BF16:
        out[i] = static_cast<Out>(bf16_to_f32(load<uint16_t>(p)));
        break;
      case DType::I64:
        out[i] = static_cast<Out>(load<int64_t>(p));
        break;
      case DType::I32:
        out[i] = static_cast<Out>(load<int32_t>(p));
        break;
      case DType::I16:
        out[i] = static_cast<Out>(load<int16_t>(p));
        break;
      case DType::I8:
        out[i] = static_cast<Out>(load_i8(p));
        break;
      case DType::U8:
        out[i] = static_cast<Out>(load<uint8_t>(p));
        break;
      case DType::BOOL:
        out[i] = load<uint8_t>(p) != 0 ? Out{1} : Out{0};
        break;
    }
  }
  return out;
}

TensorData make_tensor(DType dtype, std::vector<int64_t> shape, const void* data) {
  TensorData t;
  t.dtype = dtype;
  shape_numel(shape);  // validates dims and overflow of the element count
  const auto bytes = byte_count(shape, dtype);
  if (!bytes || *bytes > std::numeric_limits<size_t>::max()) {
    throw Error("tensor shape " + shape_to_string(shape) + " is too large");
  }
  if (*bytes > 0 && data == nullptr) {
    throw Error("null data pointer for a non-empty tensor");
  }
  t.shape = std::move(shape);
  t.bytes.resize(static_cast<size_t>(*bytes));
  if (*bytes > 0) {
    std::memcpy(t.bytes.data(), data, t.bytes.size());
  }
  return t;
}

template <typename T>
TensorData make_tensor_span(DType dtype, std::vector<int64_t> shape, std::span<const T> data) {
  const int64_t n = shape_numel(shape);
  if (static_cast<uint64_t>(n) != data.size()) {
    throw Error("tensor shape " + shape_to_string(shape) + " has " + std::to_string(n) + " elements but " +
                std::to_string(data.size()) + " values were given");
  }
  return make_tensor(dtype, std::move(shape), data.data());
}

// Returns the byte offset of the first invalid UTF-8 sequence, or nullopt. Rejects overlong encodings,
// UTF-16 surrogates and code points above U+10FFFF, like a strict decoder (Rust's str::from_utf8) does.
std::optional<size_t> find_invalid_utf8(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    const unsigned char c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    uint32_t cp;
    if ((c & 0xe0) == 0xc0) {
      len = 2;
      cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      len = 3;
      cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      len = 4;
      cp = c & 0x07;
    } else {
      return i;
    }
    if (n - i < len) {
      return i;
    }
    for (size_t k = 1; k < len; ++k) {
      if ((p[i + k] & 0xc0) != 0x80) {
        return i;
      }
      cp = (cp << 6) | (p[i + k] & 0x3f);
    }
    const uint32_t min_for_len = len == 2 ? 0x80 : len == 3 ? 0x800 : 0x10000;
    if (cp < min_for_len || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
      return i;
    }
    i += len;
  }
  return std::nullopt;
}

const char* json_type(const json& v) {
  return v.type_name();
}

// A JSON non-negative integer that fits in u64; floats (even 4.0) and negatives are rejected.
std::optional<uint64_t> as_u64(const json& v) {
  if (v.is_number_unsigned()) {
    return v.get<uint64_t>();
  }
  if (v.is_number_integer() && v.get<int64_t>() >= 0) {
    return static_cast<uint64_t>(v.get<int64_t>());
  }
  return std::nullopt;
}

struct Range {
  uint64_t begin;
  uint64_t end;
  const std::string* name;
};

// Parses the header JSON, rejecting duplicate keys at any depth: nlohmann (like most DOM parsers) silently
// keeps the last duplicate, which would let two tools disagree about which tensor a name refers to.
json parse_header_json(std::string_view header, const std::string& path) {
  std::vector<std::set<std::string>> seen_keys;  // one set per currently open object
  std::optional<std::string> duplicate;
  const json::parser_callback_t callback = [&](int /*depth*/, json::parse_event_t event, json& parsed) {
    switch (event) {
      case json::parse_event_t::object_start:
        seen_keys.emplace_back();
        break;
      case json::parse_event_t::object_end:
        if (!seen_keys.empty()) {
          seen_keys.pop_back();
        }
        break;
      case json::parse_event_t::key:
        if (!seen_keys.empty() && !seen_keys.back().insert(parsed.get<std::string>()).second && !duplicate) {
          duplicate = parsed.get<std::string>();
        }
        break;
      default:
        break;
    }
    return true;
  };
  json root;
  try {
    root = json::parse(header.begin(), header.end(), callback);
  } catch (const json::exception& e) {
    fail_file(path, std::string("safetensors header is not valid JSON: ") + e.what());
  }
  if (duplicate) {
    fail_file(path, "safetensors header has duplicate key '" + *duplicate + "'");
  }
  return root;
}

void parse_metadata(const json& value, const std::string& path, std::map<std::string, std::string>& out) {
  // The Rust reference models __metadata__ as Option<HashMap<String, String>>, so null means "none".
  if (value.is_null()) {
    return;
  }
  if (!value.is_object()) {
    fail_file(path, std::string("'__metadata__' must be a JSON object of strings, got ") + json_type(value));
  }
  for (const auto& [k, v] : value.items()) {
    if (!v.is_string()) {
      fail_file(path, "'__metadata__' value for key '" + k + "' must be a string, got " + json_type(v));
    }
    out[k] = v.get<std::string>();
  }
}

// Validates one header entry and returns its dtype, shape and byte range (not yet checked against the
// other tensors' ranges).
std::tuple<DType, std::vector<int64_t>, uint64_t, uint64_t> parse_entry(const std::string& name,
                                                                        const json& entry, uint64_t data_size,
                                                                        const std::string& path) {
  const std::string where = "tensor '" + name + "': ";
  if (!entry.is_object()) {
    fail_file(path, where + "header entry must be a JSON object, got " + json_type(entry));
  }
  for (const char* field : {"dtype", "shape", "data_offsets"}) {
    if (!entry.contains(field)) {
      fail_file(path, where + "missing '" + field + "'");
    }
  }

  const json& dtype_json = entry.at("dtype");
  if (!dtype_json.is_string()) {
    fail_file(path, where + "'dtype' must be a string, got " + json_type(dtype_json));
  }
  const auto dtype = dtype_from_name(dtype_json.get<std::string>());
  if (!dtype) {
    fail_file(path, where + "unknown dtype '" + dtype_json.get<std::string>() +
                        "' (supported: F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL)");
  }

  const json& shape_json = entry.at("shape");
  if (!shape_json.is_array()) {
    fail_file(path, where + "'shape' must be an array of integers, got " + json_type(shape_json));
  }
  std::vector<int64_t> shape;
  for (const json& d : shape_json) {
    if (d.is_number_integer() && !d.is_number_unsigned() && d.get<int64_t>() < 0) {
      fail_file(path, where + "negative dimension " + std::to_string(d.get<int64_t>()) + " in 'shape'");
    }
    const auto dim = as_u64(d);
    if (!dim) {
      fail_file(path, where + "'shape' must contain integers, found " + d.dump());
    }
    if (*dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      fail_file(path, where + "dimension " + std::to_string(*dim) + " in 'shape' is too large");
    }
    shape.push_back(static_cast<int64_t>(*dim));
  }

  const json& offsets_json = entry.at("data_offsets");
  if (!offsets_json.is_array() || offsets_json.size() != 2 || !as_u64(offsets_json[0]) ||
      !as_u64(offsets_json[1])) {
    fail_file(path, where + "'data_offsets' must be [begin, end] with non-negative integers, got " +
                        offsets_json.dump());
  }
  const uint64_t begin = *as_u64(offsets_json[0]);
  const uint64_t end = *as_u64(offsets_json[1]);
  const std::string range = "[" + std::to_string(begin) + ", " + std::to_string(end) + "]";
  if (begin > end) {
    fail_file(path, where + "data_offsets " + range + " have begin > end");
  }
  if (end > data_size) {
    fail_file(path, where + "data_offsets " + range + " end beyond the data buffer (" +
                        std::to_string(data_size) + " bytes); the file may be truncated");
  }
  const auto need = byte_count(shape, *dtype);
  if (!need) {
    fail_file(path, where + "shape " + shape_to_string(shape) + " overflows the element count");
  }
  if (*need != end - begin) {
    fail_file(path, where + "shape " + shape_to_string(shape) + " with dtype " +
                        std::string(dtype_name(*dtype)) + " needs " + std::to_string(*need) +
                        " bytes but data_offsets " + range + " span " + std::to_string(end - begin));
  }
  return {*dtype, std::move(shape), begin, end};
}

// The reference implementation requires the tensors to tile the data buffer exactly: no overlaps (two
// names aliasing bytes), no gaps and no trailing bytes (hidden payloads, or a sign of corruption).
void check_coverage(std::vector<Range> ranges, uint64_t data_size, const std::string& path) {
  std::sort(ranges.begin(), ranges.end(), [](const Range& a, const Range& b) {
    return std::tie(a.begin, a.end, *a.name) < std::tie(b.begin, b.end, *b.name);
  });
  uint64_t covered = 0;  // end of the contiguous prefix covered so far
  const Range* last = nullptr;
  for (const Range& r : ranges) {
    if (r.begin < covered) {
      fail_file(path, "tensors '" + *last->name + "' [" + std::to_string(last->begin) + ", " +
                          std::to_string(last->end) + "] and '" + *r.name + "' [" + std::to_string(r.begin) +
                          ", " + std::to_string(r.end) + "] overlap in the data buffer");
    }
    if (r.begin > covered) {
      fail_file(path, "data buffer bytes [" + std::to_string(covered) + ", " + std::to_string(r.begin) +
                          ") are not covered by any tensor (gap before tensor '" + *r.name + "')");
    }
    covered = r.end;
    // Zero-size tensors never advance `covered`, so keep the last tensor that did for overlap messages.
    if (last == nullptr || r.end > r.begin) {
      last = &r;
    }
  }
  if (covered != data_size) {
    fail_file(path, "data buffer has " + std::to_string(data_size - covered) +
                        " unused trailing bytes (tensors end at " + std::to_string(covered) + ", buffer is " +
                        std::to_string(data_size) + " bytes)");
  }
}

// The header length in the 8-byte size field at the start of a file of file_size bytes (head: its first
// bytes, at least 8 when the file has 8), checked against the limit and against the bytes that follow.
uint64_t checked_header_size(std::string_view head, uint64_t file_size, const std::string& path) {
  if (file_size < 8) {
    fail_file(path, "file is too short to be safetensors: " + std::to_string(file_size) +
                        " bytes, need at least 8 for the header size");
  }
  uint64_t header_size = 0;
  for (int i = 7; i >= 0; --i)
    header_size = (header_size << 8) | static_cast<uint8_t>(head[static_cast<size_t>(i)]);
  if (header_size > SafetensorsFile::kMaxHeaderBytes) {
    fail_file(path, "safetensors header size " + std::to_string(header_size) + " exceeds the limit of " +
                        std::to_string(SafetensorsFile::kMaxHeaderBytes) +
                        " bytes (corrupt or not a safetensors file)");
  }
  if (header_size > file_size - 8) {
    fail_file(path, "safetensors header size " + std::to_string(header_size) + " is larger than the " +
                        std::to_string(file_size - 8) + " bytes after the size field (file is " +
                        std::to_string(file_size) + " bytes; truncated?)");
  }
  return header_size;
}

// The header as a JSON object: valid UTF-8, valid JSON without duplicate keys, an object.
json parse_header_object(std::string_view header, const std::string& path) {
  if (const auto bad = find_invalid_utf8(header)) {
    fail_file(path, "safetensors header is not valid UTF-8 (bad byte at header offset " +
                        std::to_string(*bad) + ")");
  }
  json root = parse_header_json(header, path);
  if (!root.is_object()) {
    fail_file(path, std::string("safetensors header must be a JSON object, got ") + json_type(root));
  }
  return root;
}

}  // namespace

std::string_view dtype_name(DType dtype) {
  return info(dtype).name;
}
size_t dtype_size(DType dtype) {
  return info(dtype).size;
}

std::optional<DType> dtype_from_name(std::string_view name) {
  for (const auto& d : kDTypes) {
    if (d.name == name) {
      return d.dtype;
    }
  }
  return std::nullopt;
}

bool dtype_is_integer(DType dtype) {
  switch (dtype) {
    case DType::I64:
    case DType::I32:
    case DType::I16:
    case DType::I8:
    case DType::U8:
    case DType::BOOL:
      return true;
    default:
      return false;
  }
}

int64_t shape_numel(std::span<const int64_t> shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) {
      throw Error("negative dimension in tensor shape " + shape_to_string(shape));
    }
    if (__builtin_mul_overflow(n, d, &n)) {
      throw Error("element count of tensor shape " + shape_to_string(shape) + " overflows int64");
    }
  }
  return n;
}

std::vector<float> TensorData::to_f32() const {
  return convert_floating<float>(*this);
}
std::vector<double> TensorData::to_f64() const {
  return convert_floating<double>(*this);
}

std::vector<int64_t> TensorData::to_i64() const {
  if (!dtype_is_integer(dtype)) {
    throw Error("cannot read a " + std::string(dtype_name(dtype)) + " tensor as integers");
  }
  check_consistent(*this);
  const size_t elem = dtype_size(dtype);
  const size_t n = bytes.size() / elem;
  std::vector<int64_t> out(n);
  const uint8_t* p = bytes.data();
  for (size_t i = 0; i < n; ++i, p += elem) {
    switch (dtype) {
      case DType::I64:
        out[i] = load<int64_t>(p);
        break;
      case DType::I32:
        out[i] = load<int32_t>(p);
        break;
      case DType::I16:
        out[i] = load<int16_t>(p);
        break;
      case DType::I8:
        out[i] = load_i8(p);
        break;
      case DType::U8:
        out[i] = load<uint8_t>(p);
        break;
      case DType::BOOL:
        out[i] = load<uint8_t>(p) != 0 ? 1 : 0;
        break;
      default:
        break;  // unreachable: rejected above
    }
  }
  return out;
}

TensorData TensorData::f32(std::vector<int64_t> shape, const float* data) {
  return make_tensor(DType::F32, std::move(shape), data);
}
TensorData TensorData::f64(std::vector<int64_t> shape, const double* data) {
  return make_tensor(DType::F64, std::move(shape), data);
}
TensorData TensorData::i64(std::vector<int64_t> shape, const int64_t* data) {
  return make_tensor(DType::I64, std::move(shape), data);
}
TensorData TensorData::i32(std::vector<int64_t> shape, const int32_t* data) {
  return make_tensor(DType::I32, std::move(shape), data);
}
TensorData TensorData::f32(std::vector<int64_t> shape, std::span<const float> data) {
  return make_tensor_span(DType::F32, std::move(shape), data);
}
TensorData TensorData::f64(std::vector<int64_t> shape, std::span<const double> data) {
  return make_tensor_span(DType::F64, std::move(shape), data);
}
TensorData TensorData::i64(std::vector<int64_t> shape, std::span<const int64_t> data) {
  return make_tensor_span(DType::I64, std::move(shape), data);
}
TensorData TensorData::i32(std::vector<int64_t> shape, std::span<const int32_t> data) {
  return make_tensor_span(DType::I32, std::move(shape), data);
}

const TensorData& SafetensorsFile::get(const std::string& name) const {
  const auto it = tensors.find(name);
  if (it != tensors.end()) {
    return it->second;
  }
  // Listing what is there turns "wrong checkpoint" vs "typo in the name" into a one-glance diagnosis.
  constexpr size_t kMaxListed = 20;
  std::string available;
  size_t listed = 0;
  for (const auto& [n, t] : tensors) {
    if (listed == kMaxListed) {
      available += ", ... (" + std::to_string(tensors.size() - kMaxListed) + " more)";
      break;
    }
    available += (listed++ ? ", " : "") + n;
  }
  Error err("tensor '" + name +
            "' not found; available tensors: " + (tensors.empty() ? std::string("(none)") : available));
  if (!source_path_.empty()) {
    err.file(source_path_);
  }
  throw err;
}

void SafetensorsFile::put(const std::string& name, TensorData tensor) {
  if (name == "__metadata__") {
    throw Error("'__metadata__' is reserved and cannot be a tensor name");
  }
  try {
    check_consistent(tensor);
  } catch (Error& e) {
    throw e.key(name);
  }
  tensors[name] = std::move(tensor);
}

std::string SafetensorsFile::serialize() const {
  json header = json::object();
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    if (name == "__metadata__") {
      throw Error("'__metadata__' is reserved and cannot be a tensor name");
    }
    if (find_invalid_utf8(name)) {
      throw Error("tensor name is not valid UTF-8").key(name);
    }
    try {
      check_consistent(t);
    } catch (Error& e) {
      throw e.key(name);
    }
    const uint64_t end = offset + t.bytes.size();
    header[name] = {{"dtype", dtype_name(t.dtype)}, {"shape", t.shape}, {"data_offsets", {offset, end}}};
    offset = end;
  }
  if (!metadata.empty()) {
    for (const auto& [k, v] : metadata) {
      if (find_invalid_utf8(k) || find_invalid_utf8(v)) {
        throw Error("'__metadata__' entry is not valid UTF-8").key(k);
      }
    }
    header["__metadata__"] = metadata;
  }
  // nlohmann objects are std::maps, so dump() emits keys sorted bytewise and, without an indent, no
  // whitespace: the same header for the same tensors, every time.
  std::string header_text = header.dump();
  // Pad with spaces (valid trailing JSON whitespace) so the data buffer starts at a multiple of 8 bytes,
  // as the reference writer does; readers that mmap the file can then view F64/I64 data in place.
  header_text.append((8 - header_text.size() % 8) % 8, ' ');

  std::string out;
  out.reserve(8 + header_text.size() + offset);
  const uint64_t header_size = header_text.size();
  for (int i = 0; i < 8; ++i) {
    out.push_back(static_cast<char>((header_size >> (8 * i)) & 0xff));
  }
  out += header_text;
  for (const auto& [name, t] : tensors) {
    out.append(reinterpret_cast<const char*>(t.bytes.data()), t.bytes.size());
  }
  return out;
}

void SafetensorsFile::save(const std::string& path) const {
  write_file_atomic(path, serialize());
}

void convert_to_f32(DType dtype, const uint8_t* bytes, size_t n, float* out) {
  switch (dtype) {
    case DType::F64:
      for (size_t i = 0; i < n; ++i) out[i] = static_cast<float>(load<double>(bytes + 8 * i));
      return;
    case DType::F32:
      std::memcpy(out, bytes, n * sizeof(float));
      return;
    case DType::F16:
      for (size_t i = 0; i < n; ++i) out[i] = f16_to_f32(load<uint16_t>(bytes + 2 * i));
      return;
    case DType::BF16:
      for (size_t i = 0; i < n; ++i) out[i] = bf16_to_f32(load<uint16_t>(bytes + 2 * i));
      return;
    default:
      throw Error("cannot read a " + std::string(dtype_name(dtype)) + " tensor as floats");
  }
}

SafetensorsHeader read_safetensors_header(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail_file(path, std::string("cannot open file: ") + std::strerror(errno));
  SafetensorsHeader h;
  std::error_code ec;
  h.file_size = std::filesystem::file_size(path, ec);
  if (ec) fail_file(path, "cannot read the file size: " + ec.message());
  char size_field[8] = {};
  in.read(size_field, 8);
  const uint64_t header_size = checked_header_size(std::string_view(size_field, 8), h.file_size, path);
  std::string header(header_size, '\0');
  in.read(header.data(), static_cast<std::streamsize>(header_size));
  if (!in) fail_file(path, "cannot read the safetensors header");
  const json root = parse_header_object(header, path);
  const uint64_t data_begin = 8 + header_size;
  const uint64_t data_size = h.file_size - data_begin;
  std::vector<Range> ranges;
  for (const auto& [name, entry] : root.items()) {
    if (name == "__metadata__") {
      parse_metadata(entry, path, h.metadata);
      continue;
    }
    auto [dtype, shape, begin, end] = parse_entry(name, entry, data_size, path);
    const auto it =
        h.tensors.emplace(name, SafetensorsEntry{dtype, std::move(shape), data_begin + begin, end - begin})
            .first;
    ranges.push_back({begin, end, &it->first});
  }
  check_coverage(std::move(ranges), data_size, path);
  return h;
}

SafetensorsFile SafetensorsFile::load(const std::string& path) {
  return parse(read_file(path), path);
}

SafetensorsFile SafetensorsFile::parse(std::string_view bytes, const std::string& path) {
  const uint64_t header_size = checked_header_size(bytes, bytes.size(), path);
  const json root = parse_header_object(bytes.substr(8, header_size), path);

  const std::string_view data = bytes.substr(8 + header_size);
  SafetensorsFile file;
  file.source_path_ = path;
  std::vector<Range> ranges;
  for (const auto& [name, entry] : root.items()) {
    if (name == "__metadata__") {
      parse_metadata(entry, path, file.metadata);
      continue;
    }
    auto [dtype, shape, begin, end] = parse_entry(name, entry, data.size(), path);
    TensorData t;
    t.dtype = dtype;
    t.shape = std::move(shape);
    t.bytes.assign(data.begin() + static_cast<std::ptrdiff_t>(begin),
                   data.begin() + static_cast<std::ptrdiff_t>(end));
    const auto it = file.tensors.emplace(name, std::move(t)).first;
    ranges.push_back({begin, end, &it->first});
  }
  check_coverage(std::move(ranges), data.size(), path);
  return file;
}

}  // namespace husai
