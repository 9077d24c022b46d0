#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "husai/core/atomic_file.hpp"
#include "husai/core/error.hpp"
#include "husai/io/json_file.hpp"

namespace husai {
namespace {

namespace fs = std::filesystem;

class JsonFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ =
        fs::temp_directory_path() /
        ("husai_json_file_" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  fs::path dir_;
};

TEST_F(JsonFileTest, ReadsADocument) {
  write_file_atomic(path("a.json"), R"({"x": [1, 2.5], "y": "z"})");
  const nlohmann::json j = read_json_file(path("a.json"));
  EXPECT_EQ(j["x"][0].get<int>(), 1);
  EXPECT_DOUBLE_EQ(j["x"][1].get<double>(), 2.5);
  EXPECT_EQ(j["y"].get<std::string>(), "z");
}

TEST_F(JsonFileTest, InvalidJsonNamesTheFile) {
  write_file_atomic(path("bad.json"), R"({"x": )");
  try {
    (void)read_json_file(path("bad.json"));
    FAIL() << "invalid JSON accepted";
  } catch (const Error& e) {
    ASSERT_TRUE(e.file().has_value());
    EXPECT_EQ(*e.file(), path("bad.json"));
    EXPECT_NE(e.message().find("invalid JSON"), std::string::npos) << e.message();
    EXPECT_NE(e.message().find("bad.json"), std::string::npos) << e.message();
  }
}

TEST_F(JsonFileTest, MissingFileNamesTheFile) {
  try {
    (void)read_json_file(path("missing.json"));
    FAIL() << "missing file accepted";
  } catch (const Error& e) {
    EXPECT_NE(e.message().find("missing.json"), std::string::npos) << e.message();
  }
}

}  // namespace
}  // namespace husai
