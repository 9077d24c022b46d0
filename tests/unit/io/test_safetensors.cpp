#include "husai/io/safetensors.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "husai/core/atomic_file.hpp"
#include "husai/core/error.hpp"

namespace husai {
namespace {

namespace fs = std::filesystem;

constexpr const char* kPath = "model.safetensors";  // name used for in-memory parse() error messages

std::string le64(uint64_t v) {
  std::string out;
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  return out;
}

// A file assembled by hand: size prefix, header text verbatim (no padding added), then data.
std::string raw_file(const std::string& header, const std::string& data = "") {
  return le64(header.size()) + header + data;
}

template <typename T>
std::string bytes_of(std::initializer_list<T> values) {
  std::string out;
  for (T v : values) out.append(reinterpret_cast<const char*>(&v), sizeof v);
  return out;
}

// Parses `bytes` expecting failure; returns Error::message() (which includes the file name).
std::string parse_error(const std::string& bytes) {
  try {
    SafetensorsFile::parse(bytes, kPath);
  } catch (const Error& e) {
    return e.message();
  }
  ADD_FAILURE() << "expected husai::Error";
  return "";
}

// Asserts the message names the file and contains every expected fragment.
#define EXPECT_PARSE_ERROR(bytes, ...)                                                            \
  do {                                                                                            \
    const std::string msg_ = parse_error(bytes);                                                  \
    EXPECT_EQ(msg_.rfind(std::string(kPath) + ": ", 0), 0u) << msg_;                              \
    for (const char* frag_ : {__VA_ARGS__}) {                                                     \
      EXPECT_NE(msg_.find(frag_), std::string::npos) << "missing '" << frag_ << "' in: " << msg_; \
    }                                                                                             \
  } while (0)

TensorData raw_tensor(DType dtype, std::vector<int64_t> shape, std::string bytes) {
  TensorData t;
  t.dtype = dtype;
  t.shape = std::move(shape);
  t.bytes.assign(bytes.begin(), bytes.end());
  return t;
}

// ---------------------------------------------------------------------------------------------------------
// DType helpers and TensorData

TEST(SafetensorsDType, NamesAndSizesRoundTrip) {
  const std::vector<std::pair<DType, size_t>> all = {
      {DType::F64, 8}, {DType::F32, 4}, {DType::F16, 2}, {DType::BF16, 2}, {DType::I64, 8},
      {DType::I32, 4}, {DType::I16, 2}, {DType::I8, 1},  {DType::U8, 1},   {DType::BOOL, 1}};
  for (const auto& [d, size] : all) {
    EXPECT_EQ(dtype_size(d), size) << dtype_name(d);
    EXPECT_EQ(dtype_from_name(dtype_name(d)), d);
  }
  EXPECT_EQ(dtype_name(DType::BF16), "BF16");
  EXPECT_FALSE(dtype_from_name("f32").has_value());
  EXPECT_FALSE(dtype_from_name("F8_E4M3").has_value());
}

TEST(SafetensorsTensorData, NumelAndOverflow) {
  EXPECT_EQ(TensorData::f32({}, std::vector<float>{1.5f}).numel(), 1);
  EXPECT_EQ(TensorData::f32({2, 0, 3}, static_cast<const float*>(nullptr)).numel(), 0);
  EXPECT_THROW(shape_numel(std::vector<int64_t>{1LL << 40, 1LL << 40}), Error);
  EXPECT_THROW(shape_numel(std::vector<int64_t>{2, -1}), Error);
}

TEST(SafetensorsTensorData, SpanConstructorChecksCount) {
  const std::vector<float> v = {1, 2, 3};
  EXPECT_THROW(TensorData::f32({2, 2}, v), Error);
  EXPECT_EQ(TensorData::f32({3}, v).to_f32(), v);
}

TEST(SafetensorsTensorData, ConversionsFromEveryDType) {
  EXPECT_EQ(TensorData::f64({2}, std::vector<double>{0.5, -3.0}).to_f32(), (std::vector<float>{0.5f, -3.0f}));
  EXPECT_EQ(TensorData::i32({2}, std::vector<int32_t>{-7, 9}).to_f32(), (std::vector<float>{-7.0f, 9.0f}));
  EXPECT_EQ(TensorData::i32({2}, std::vector<int32_t>{-7, 9}).to_i64(), (std::vector<int64_t>{-7, 9}));
  EXPECT_EQ(raw_tensor(DType::I16, {2}, bytes_of<int16_t>({-300, 300})).to_i64(),
            (std::vector<int64_t>{-300, 300}));
  EXPECT_EQ(raw_tensor(DType::I8, {2}, bytes_of<int8_t>({-128, 127})).to_i64(),
            (std::vector<int64_t>{-128, 127}));
  EXPECT_EQ(raw_tensor(DType::U8, {2}, bytes_of<uint8_t>({0, 255})).to_i64(), (std::vector<int64_t>{0, 255}));
  EXPECT_EQ(raw_tensor(DType::BOOL, {3}, bytes_of<uint8_t>({0, 1, 2})).to_f32(),
            (std::vector<float>{0.0f, 1.0f, 1.0f}));
  EXPECT_THROW(TensorData::f32({1}, std::vector<float>{1.0f}).to_i64(), Error);

  // F16 bit patterns: 1, -2, max finite 65504, smallest subnormal 2^-24, -0, +inf, NaN.
  const auto f16 = raw_tensor(DType::F16, {7},
                              bytes_of<uint16_t>({0x3C00, 0xC000, 0x7BFF, 0x0001, 0x8000, 0x7C00, 0x7E00}))
                       .to_f32();
  EXPECT_EQ(f16[0], 1.0f);
  EXPECT_EQ(f16[1], -2.0f);
  EXPECT_EQ(f16[2], 65504.0f);
  EXPECT_EQ(f16[3], std::ldexp(1.0f, -24));
  EXPECT_TRUE(f16[4] == 0.0f && std::signbit(f16[4]));
  EXPECT_EQ(f16[5], std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(f16[6]));

  // BF16: 1, -2, 3.140625, 1e38-ish.
  const auto bf16 = raw_tensor(DType::BF16, {3}, bytes_of<uint16_t>({0x3F80, 0xC000, 0x4049})).to_f32();
  EXPECT_EQ(bf16, (std::vector<float>{1.0f, -2.0f, 3.140625f}));
}

TEST(SafetensorsTensorData, InconsistentBytesAreRejected) {
  const auto t = raw_tensor(DType::F32, {2}, "abc");
  EXPECT_THROW(t.to_f32(), Error);
  SafetensorsFile f;
  try {
    f.put("w", t);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(e.message().find("key 'w'"), std::string::npos) << e.message();
    EXPECT_NE(e.message().find("has 3 bytes"), std::string::npos) << e.message();
  }
  EXPECT_THROW(f.put("__metadata__", TensorData::f32({}, std::vector<float>{1})), Error);
}

// ---------------------------------------------------------------------------------------------------------
// Writer

TEST(SafetensorsWriter, ByteExactKnownFile) {
  SafetensorsFile f;
  f.put("b", TensorData::i64({}, std::vector<int64_t>{7}));
  f.put("a", TensorData::f32({2}, std::vector<float>{1.0f, 2.0f}));
  f.metadata["format"] = "pt";

  const std::string header =
      R"({"__metadata__":{"format":"pt"},"a":{"data_offsets":[0,8],"dtype":"F32","shape":[2]},)"
      R"("b":{"data_offsets":[8,16],"dtype":"I64","shape":[]}})";
  ASSERT_EQ(header.size(), 138u);
  std::string expected;
  expected += std::string("\x90\0\0\0\0\0\0\0", 8);  // 144 = 138 + 6 spaces of padding
  expected += header + "      ";
  expected += std::string("\x00\x00\x80\x3f\x00\x00\x00\x40", 8);  // 1.0f, 2.0f little-endian
  expected += std::string("\x07\0\0\0\0\0\0\0", 8);                // int64 7
  EXPECT_EQ(f.serialize(), expected);
}

TEST(SafetensorsWriter, EmptyFileHasEmptyObjectHeader) {
  const std::string bytes = SafetensorsFile().serialize();
  EXPECT_EQ(bytes, le64(8) + "{}      ");
  const auto back = SafetensorsFile::parse(bytes, kPath);
  EXPECT_TRUE(back.tensors.empty());
  EXPECT_TRUE(back.metadata.empty());
}

TEST(SafetensorsWriter, SerializationIsDeterministicRegardlessOfInsertionOrder) {
  SafetensorsFile a, b;
  const std::vector<float> v = {1, 2, 3};
  a.put("x", TensorData::f32({3}, v));
  a.put("y", TensorData::i32({1}, std::vector<int32_t>{5}));
  b.put("y", TensorData::i32({1}, std::vector<int32_t>{5}));
  b.put("x", TensorData::f32({3}, v));
  EXPECT_EQ(a.serialize(), b.serialize());
}

// What a reader in another language (the Python/Rust reference) relies on, checked on a file on disk:
// u64 LE size, size a multiple of 8, header is compact JSON padded only with trailing spaces, data starts
// right after it, and the offsets tile the buffer in name order.
TEST(SafetensorsWriter, SavedFileHasReferenceLayout) {
  const fs::path dir = fs::temp_directory_path() / ("husai_st_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const std::string path = (dir / "layout.safetensors").string();

  SafetensorsFile f;
  f.put("encoder.weight", TensorData::f32({2, 3}, std::vector<float>{1, 2, 3, 4, 5, 6}));
  f.put("encoder.bias", TensorData::f64({3}, std::vector<double>{0.1, 0.2, 0.3}));
  f.put("steps", TensorData::i64({1}, std::vector<int64_t>{12345}));
  f.metadata = {{"format", "pt"}, {"husai_version", "0.1"}};
  f.save(path);

  const std::string bytes = read_file(path);
  ASSERT_GE(bytes.size(), 8u);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(bytes[i]);
  EXPECT_EQ(n % 8, 0u);
  ASSERT_LE(8 + n, bytes.size());
  const std::string header = bytes.substr(8, n);
  const size_t json_end = header.find_last_not_of(' ') + 1;
  EXPECT_LT(header.size() - json_end, 8u);
  EXPECT_EQ(header.find_first_of(" \n\t", 0), json_end == header.size() ? std::string::npos : json_end)
      << "no whitespace inside the JSON, only trailing padding";

  const auto j = nlohmann::json::parse(header);
  EXPECT_EQ(j["__metadata__"]["format"], "pt");
  EXPECT_EQ(j["encoder.bias"]["dtype"], "F64");
  EXPECT_EQ(j["encoder.bias"]["data_offsets"], nlohmann::json({0, 24}));
  EXPECT_EQ(j["encoder.weight"]["data_offsets"], nlohmann::json({24, 48}));
  EXPECT_EQ(j["encoder.weight"]["shape"], nlohmann::json({2, 3}));
  EXPECT_EQ(j["steps"]["data_offsets"], nlohmann::json({48, 56}));
  EXPECT_EQ(bytes.size(), 8 + n + 56);
  float first;
  std::memcpy(&first, bytes.data() + 8 + n + 24, 4);
  EXPECT_EQ(first, 1.0f);

  EXPECT_EQ(SafetensorsFile::load(path).serialize(), bytes);
  fs::remove_all(dir);
}

// ---------------------------------------------------------------------------------------------------------
// Round trips

TEST(SafetensorsRoundTrip, EveryDTypeWithMetadata) {
  SafetensorsFile f;
  f.put("f64", TensorData::f64({2, 2}, std::vector<double>{1.0, -2.5, 1e300, 0.1}));
  f.put("f32", TensorData::f32({3}, std::vector<float>{1.0f, -0.0f, 3.25f}));
  f.put("i64", TensorData::i64({2}, std::vector<int64_t>{std::numeric_limits<int64_t>::min(), 42}));
  f.put("i32", TensorData::i32({1, 1, 2}, std::vector<int32_t>{-1, 2147483647}));
  f.put("f16", raw_tensor(DType::F16, {1}, bytes_of<uint16_t>({0x3C00})));
  f.put("bf16", raw_tensor(DType::BF16, {2}, bytes_of<uint16_t>({0x3F80, 0x4049})));
  f.put("i16", raw_tensor(DType::I16, {1}, bytes_of<int16_t>({-5})));
  f.put("i8", raw_tensor(DType::I8, {3}, bytes_of<int8_t>({-1, 0, 1})));
  f.put("u8", raw_tensor(DType::U8, {2}, bytes_of<uint8_t>({200, 7})));
  f.put("bool", raw_tensor(DType::BOOL, {2}, bytes_of<uint8_t>({1, 0})));
  f.put("empty", TensorData::f32({0, 4}, static_cast<const float*>(nullptr)));
  f.put("scalar", TensorData::f64({}, std::vector<double>{3.5}));
  f.metadata = {{"format", "pt"}, {"note", "unicode \xc3\xa9 and \"quotes\"\n"}};

  const std::string bytes = f.serialize();
  const auto back = SafetensorsFile::parse(bytes, kPath);
  ASSERT_EQ(back.tensors.size(), f.tensors.size());
  for (const auto& [name, t] : f.tensors) {
    const auto& u = back.get(name);
    EXPECT_EQ(u.dtype, t.dtype) << name;
    EXPECT_EQ(u.shape, t.shape) << name;
    EXPECT_EQ(u.bytes, t.bytes) << name;
  }
  EXPECT_EQ(back.metadata, f.metadata);
  EXPECT_EQ(back.get("f64").to_f64(), (std::vector<double>{1.0, -2.5, 1e300, 0.1}));
  EXPECT_EQ(back.get("i64").to_i64()[0], std::numeric_limits<int64_t>::min());
  EXPECT_EQ(back.get("bf16").to_f32(), (std::vector<float>{1.0f, 3.140625f}));
  EXPECT_EQ(back.serialize(), bytes);
}

TEST(SafetensorsRoundTrip, SaveAndLoadThroughDisk) {
  const fs::path dir = fs::temp_directory_path() / ("husai_st_rt_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const std::string path = (dir / "w.safetensors").string();
  std::vector<float> big(10'000);
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<float>(i) * 0.5f;
  SafetensorsFile f;
  f.put("w", TensorData::f32({100, 100}, big));
  f.save(path);
  const auto back = SafetensorsFile::load(path);
  EXPECT_EQ(back.get("w").to_f32(), big);
  EXPECT_EQ(back.source_path(), path);
  fs::remove_all(dir);
}

// A header laid out the way the reference writer emits it (metadata first, fields in dtype/shape/offsets
// order, space padding) must load even though husai itself writes keys sorted.
TEST(SafetensorsRoundTrip, ReadsReferenceWriterFieldOrder) {
  const std::string header =
      R"({"__metadata__":{"format":"pt"},"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
      R"("ids":{"dtype":"I64","shape":[1],"data_offsets":[8,16]}})";
  std::string padded = header;
  padded.append((8 - padded.size() % 8) % 8, ' ');
  const auto f =
      SafetensorsFile::parse(raw_file(padded, bytes_of<float>({0.5f, 1.5f}) + bytes_of<int64_t>({9})), kPath);
  EXPECT_EQ(f.get("w").to_f32(), (std::vector<float>{0.5f, 1.5f}));
  EXPECT_EQ(f.get("ids").to_i64(), (std::vector<int64_t>{9}));
  EXPECT_EQ(f.metadata.at("format"), "pt");
}

TEST(SafetensorsRoundTrip, MissingTensorListsAvailableNames) {
  SafetensorsFile f;
  f.put("alpha", TensorData::f32({1}, std::vector<float>{1}));
  f.put("beta", TensorData::f32({1}, std::vector<float>{1}));
  const auto back = SafetensorsFile::parse(f.serialize(), kPath);
  EXPECT_TRUE(back.has("alpha"));
  EXPECT_FALSE(back.has("gamma"));
  try {
    back.get("gamma");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(e.message().find(kPath), std::string::npos) << e.message();
    EXPECT_NE(e.message().find("'gamma' not found"), std::string::npos) << e.message();
    EXPECT_NE(e.message().find("alpha, beta"), std::string::npos) << e.message();
  }
}

TEST(SafetensorsRoundTrip, LoadMissingFileNamesIt) {
  try {
    SafetensorsFile::load("/nonexistent_husai_dir/x.safetensors");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(e.message().find("/nonexistent_husai_dir/x.safetensors"), std::string::npos) << e.message();
  }
}

// ---------------------------------------------------------------------------------------------------------
// Malformed input: every case must be a husai::Error naming the file and the specific problem.

TEST(SafetensorsMalformed, TooShort) {
  EXPECT_PARSE_ERROR("", "too short", "0 bytes");
  EXPECT_PARSE_ERROR(std::string(7, '\0'), "too short", "7 bytes");
}

TEST(SafetensorsMalformed, HeaderLargerThanFile) {
  EXPECT_PARSE_ERROR(le64(100) + "{}", "header size 100", "2 bytes after the size field");
}

TEST(SafetensorsMalformed, HugeHeaderSizeIsCappedBeforeAllocating) {
  EXPECT_PARSE_ERROR(le64(~0ULL) + "{}", "header size 18446744073709551615", "exceeds the limit");
  EXPECT_PARSE_ERROR(le64(200'000'000) + "{}", "exceeds the limit");
}

TEST(SafetensorsMalformed, InvalidJson) {
  EXPECT_PARSE_ERROR(raw_file("{\"a\":"), "not valid JSON");
  EXPECT_PARSE_ERROR(raw_file(""), "not valid JSON");
  EXPECT_PARSE_ERROR(raw_file("{} trailing"), "not valid JSON");
}

TEST(SafetensorsMalformed, NotAnObject) {
  EXPECT_PARSE_ERROR(raw_file("[1,2]"), "must be a JSON object", "array");
  EXPECT_PARSE_ERROR(raw_file("42"), "must be a JSON object", "number");
}

TEST(SafetensorsMalformed, InvalidUtf8) {
  EXPECT_PARSE_ERROR(raw_file("{\"\xff\":1}"), "not valid UTF-8", "offset 2");
  EXPECT_PARSE_ERROR(raw_file("{\"\xc0\xaf\":1}"), "not valid UTF-8");      // overlong '/'
  EXPECT_PARSE_ERROR(raw_file("{\"\xed\xa0\x80\":1}"), "not valid UTF-8");  // surrogate
}

TEST(SafetensorsMalformed, EntryNotAnObject) {
  EXPECT_PARSE_ERROR(raw_file(R"({"w":[1]})"), "tensor 'w'", "must be a JSON object");
}

TEST(SafetensorsMalformed, MissingFields) {
  EXPECT_PARSE_ERROR(raw_file(R"({"w":{"shape":[1],"data_offsets":[0,4]}})", "\0\0\0\0"), "tensor 'w'",
                     "missing 'dtype'");
  EXPECT_PARSE_ERROR(raw_file(R"({"w":{"dtype":"F32","data_offsets":[0,4]}})"), "tensor 'w'",
                     "missing 'shape'");
  EXPECT_PARSE_ERROR(raw_file(R"({"w":{"dtype":"F32","shape":[1]}})"), "tensor 'w'",
                     "missing 'data_offsets'");
}

TEST(SafetensorsMalformed, WrongFieldTypes) {
  const std::string four(4, '\0');
  EXPECT_PARSE_ERROR(raw_file(R"({"w":{"dtype":4,"shape":[1],"data_offsets":[0,4]}})", four), "tensor 'w'",
                     "'dtype' must be a string");
  EXPECT_PARSE_ERROR(raw_file(R"({"w":{"dtype":"F32","shape":"1","data_offsets":[0,4]}})", four),
                     "tensor 'w'", "'shape' must be an array");
  EXPECT_PARSE_ERROR(raw_file(R"({"w":{"dtype":"F32","shape":[1.0],"data_offsets":[0,4]}})", four),
                     "tensor 'w'", "'shape' must contain integers");
  EXPECT_PARSE_ERROR(raw_file(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":{"a":0}}})", four),
                     "tensor 'w'", "'data_offsets' must be [begin, end]");
  EXPECT_PARSE_ERROR(raw_file(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0]}})", four), "tensor 'w'",
                     "'data_offsets' must be [begin, end]");
  EXPECT_PARSE_ERROR(raw_file(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}})", four),
                     "tensor 'w'", "non-negative integers");
}

TEST(SafetensorsMalformed, UnknownDType) {
  EXPECT_PARSE_ERROR(raw_file(R"({"w":{"dtype":"F8_E4M3","shape":[1],"data_offsets":[0,1]}})", "x"),
                     "tensor 'w'", "unknown dtype 'F8_E4M3'");
}

TEST(SafetensorsMalformed, NegativeDim) {
  EXPECT_PARSE_ERROR(raw_file(R"({"w":{"dtype":"F32","shape":[2,-3],"data_offsets":[0,0]}})"), "tensor 'w'",
                     "negative dimension -3");
}

TEST(SafetensorsMalformed, ShapeProductOverflow) {
  EXPECT_PARSE_ERROR(
      raw_file(R"({"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}})"), "tensor 'w'",
      "overflows");
  EXPECT_PARSE_ERROR(raw_file(R"({"w":{"dtype":"F64","shape":[18446744073709551615],"data_offsets":[0,0]}})"),
                     "tensor 'w'", "too large");
}

TEST(SafetensorsMalformed, ByteCountMismatch) {
  EXPECT_PARSE_ERROR(
      raw_file(R"({"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,20]}})", std::string(20, '\0')),
      "tensor 'w'", "needs 24 bytes", "data_offsets [0, 20] span 20");
}

TEST(SafetensorsMalformed, BeginAfterEnd) {
  EXPECT_PARSE_ERROR(
      raw_file(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}})", std::string(8, '\0')),
      "tensor 'w'", "[8, 4]", "begin > end");
}

TEST(SafetensorsMalformed, EndBeyondDataBuffer) {
  EXPECT_PARSE_ERROR(
      raw_file(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", std::string(6, '\0')),
      "tensor 'w'", "[0, 8]", "beyond the data buffer (6 bytes)");
}

TEST(SafetensorsMalformed, OverlappingRanges) {
  EXPECT_PARSE_ERROR(raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                              R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                              std::string(12, '\0')),
                     "'a' [0, 8]", "'b' [4, 12]", "overlap");
  // Two names for the very same bytes are an overlap too.
  EXPECT_PARSE_ERROR(raw_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                              R"("b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
                              std::string(4, '\0')),
                     "overlap");
}

TEST(SafetensorsMalformed, GapBetweenTensors) {
  EXPECT_PARSE_ERROR(raw_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                              R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
                              std::string(12, '\0')),
                     "bytes [4, 8)", "not covered", "'b'");
  EXPECT_PARSE_ERROR(
      raw_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", std::string(8, '\0')),
      "bytes [0, 4)", "not covered");
}

TEST(SafetensorsMalformed, TrailingBytes) {
  EXPECT_PARSE_ERROR(
      raw_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", std::string(7, '\0')),
      "3 unused trailing bytes");
  EXPECT_PARSE_ERROR(raw_file("{}", "x"), "1 unused trailing bytes");
}

TEST(SafetensorsMalformed, MetadataValuesMustBeStrings) {
  EXPECT_PARSE_ERROR(raw_file(R"({"__metadata__":{"epoch":3}})"), "'__metadata__'", "key 'epoch'",
                     "must be a string");
  EXPECT_PARSE_ERROR(raw_file(R"({"__metadata__":["x"]})"), "'__metadata__' must be a JSON object");
}

TEST(SafetensorsMalformed, DuplicateKeys) {
  EXPECT_PARSE_ERROR(raw_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                              R"("a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
                              std::string(4, '\0')),
                     "duplicate key 'a'");
  EXPECT_PARSE_ERROR(raw_file(R"({"a":{"dtype":"F32","dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
                              std::string(4, '\0')),
                     "duplicate key 'dtype'");
}

TEST(SafetensorsMalformed, ZeroSizeTensorsAreFineAnywhereOnABoundary) {
  const auto f = SafetensorsFile::parse(raw_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                                                 R"("e":{"dtype":"F32","shape":[0],"data_offsets":[4,4]},)"
                                                 R"("z":{"dtype":"I64","shape":[0,3],"data_offsets":[0,0]}})",
                                                 std::string(4, '\0')),
                                        kPath);
  EXPECT_EQ(f.get("e").numel(), 0);
  EXPECT_EQ(f.get("z").shape, (std::vector<int64_t>{0, 3}));
}

TEST(SafetensorsMalformed, LoadErrorNamesTheRealPath) {
  const fs::path dir = fs::temp_directory_path() / ("husai_st_bad_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const std::string path = (dir / "bad.safetensors").string();
  write_file_atomic(path, "abc");
  try {
    SafetensorsFile::load(path);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.file(), path);
    EXPECT_NE(e.message().find(path + ": "), std::string::npos) << e.message();
    EXPECT_NE(e.message().find("too short"), std::string::npos) << e.message();
  }
  fs::remove_all(dir);
}

}  // namespace
}  // namespace husai
