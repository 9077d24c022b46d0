#include "husai/io/sha256.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>
#include <string>

#include "husai/core/error.hpp"

namespace husai {
namespace {

// Test vectors from the NIST "SHA-256 example" documents accompanying FIPS 180-4.
constexpr const char* kEmpty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
constexpr const char* kAbc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
constexpr const char* k448Msg = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
constexpr const char* k448 = "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1";
constexpr const char* k896Msg =
    "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrst"
    "nopqrstu";
constexpr const char* k896 = "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1";
constexpr const char* kMillionA = "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0";

TEST(Sha256, EmptyString) {
  EXPECT_EQ(sha256_hex(""), kEmpty);
}

TEST(Sha256, Abc) {
  EXPECT_EQ(sha256_hex("abc"), kAbc);
}

TEST(Sha256, TwoBlockMessage448Bits) {
  EXPECT_EQ(sha256_hex(k448Msg), k448);
}

TEST(Sha256, Message896Bits) {
  EXPECT_EQ(sha256_hex(k896Msg), k896);
}

TEST(Sha256, OneMillionA) {
  EXPECT_EQ(sha256_hex(std::string(1'000'000, 'a')), kMillionA);
}

// Lengths around the 55/56/64-byte padding boundaries are where length encoding bugs hide; compare the
// one-shot result with byte-at-a-time feeding, which takes a different path through update().
TEST(Sha256, PaddingBoundariesAgreeWithByteWiseUpdates) {
  for (size_t len : {54, 55, 56, 57, 63, 64, 65, 119, 120, 127, 128, 129}) {
    const std::string msg(len, 'x');
    Sha256 h;
    for (char c : msg) h.update(&c, 1);
    EXPECT_EQ(h.hex_digest(), sha256_hex(msg)) << "len=" << len;
  }
}

TEST(Sha256, IncrementalOddChunksMatchOneShot) {
  std::string msg;
  for (int i = 0; i < 100'000; ++i) msg.push_back(static_cast<char>((i * 131 + 7) & 0xff));
  const std::string expected = sha256_hex(msg);
  for (size_t chunk : {1, 3, 7, 63, 65, 127, 1000, 4099}) {
    Sha256 h;
    for (size_t pos = 0; pos < msg.size(); pos += chunk) {
      h.update(msg.data() + pos, std::min(chunk, msg.size() - pos));
    }
    EXPECT_EQ(h.hex_digest(), expected) << "chunk=" << chunk;
  }
}

TEST(Sha256, MillionAInIrregularChunks) {
  const std::string a(1'000'000, 'a');
  Sha256 h;
  size_t pos = 0;
  size_t chunk = 1;
  while (pos < a.size()) {
    const size_t n = std::min(chunk, a.size() - pos);
    h.update(a.data() + pos, n);
    pos += n;
    chunk = chunk * 3 % 1021 + 1;
  }
  EXPECT_EQ(h.hex_digest(), kMillionA);
}

TEST(Sha256, ZeroLengthUpdatesAreNoOps) {
  Sha256 h;
  h.update(nullptr, 0);
  h.update("ab", 2);
  h.update(nullptr, 0);
  h.update("c", 1);
  EXPECT_EQ(h.hex_digest(), kAbc);
}

TEST(Sha256, ObjectIsReusableAfterDigest) {
  Sha256 h;
  h.update("abc");
  EXPECT_EQ(h.hex_digest(), kAbc);
  EXPECT_EQ(h.hex_digest(), kEmpty);
  h.update("abc");
  EXPECT_EQ(h.hex_digest(), kAbc);
}

TEST(Sha256, FileMatchesInMemoryHash) {
  const std::string path = "/tmp/husai_sha256_test_" + std::to_string(::getpid());
  // Bigger than the 1 MiB read chunk so more than one read is exercised.
  std::string content(3 * (1 << 20) + 12345, '\0');
  for (size_t i = 0; i < content.size(); ++i) content[i] = static_cast<char>(i * 2654435761u >> 24);
  {
    std::ofstream out(path, std::ios::binary);
    out.write(content.data(), static_cast<std::streamsize>(content.size()));
  }
  EXPECT_EQ(sha256_file_hex(path), sha256_hex(content));
  ::unlink(path.c_str());
}

TEST(Sha256, MissingFileErrorNamesTheFile) {
  const std::string path = "/tmp/husai_definitely_missing_dir/no_such_file.bin";
  try {
    sha256_file_hex(path);
    FAIL() << "expected husai::Error";
  } catch (const Error& e) {
    EXPECT_NE(e.message().find(path), std::string::npos) << e.message();
    EXPECT_NE(e.message().find("No such file"), std::string::npos) << e.message();
  }
}

TEST(Sha256, DirectoryIsAnError) {
  try {
    sha256_file_hex("/tmp");
    FAIL() << "expected husai::Error";
  } catch (const Error& e) {
    EXPECT_NE(e.message().find("/tmp"), std::string::npos) << e.message();
  }
}

}  // namespace
}  // namespace husai
