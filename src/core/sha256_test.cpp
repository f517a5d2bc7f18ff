#include "core/sha256.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/mapped_file.h"
#include "support/shared_dir.h"

namespace calq {
namespace {

TEST(Sha256, KnownVectors) {
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

// FIPS 180-2 appendix B: "abc", the two-block message, and one million 'a' (fed in uneven
// pieces, so chunk boundaries fall inside SHA-256's 64-byte blocks).
TEST(Sha256, StreamingKnownVectors) {
  Sha256 abc;
  abc.update("a");
  abc.update("");
  abc.update("bc");
  EXPECT_EQ(abc.hex(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  Sha256 two;
  two.update("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq");
  EXPECT_EQ(two.hex(), "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  Sha256 million;
  const std::string chunk(997, 'a');
  size_t fed = 0;
  for (; fed + chunk.size() <= 1000000; fed += chunk.size()) million.update(chunk);
  million.update(std::string(1000000 - fed, 'a'));
  EXPECT_EQ(million.hex(), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

// A file larger than the 1 MiB read buffer hashes as its bytes do.
TEST(Sha256, FileEqualsBytes) {
  const auto dir = testing::temp_dir("sha256_file");
  std::string text((size_t{1} << 20) + 12345, '\0');
  for (size_t i = 0; i < text.size(); ++i) text[i] = static_cast<char>((i * 131 + 7) & 0xff);
  write_file_atomic(dir / "f.bin", std::as_bytes(std::span(text.data(), text.size())));
  EXPECT_EQ(sha256_file(dir / "f.bin"), sha256_hex(text));
  write_file_atomic(dir / "abc", std::as_bytes(std::span("abc", 3)));
  EXPECT_EQ(sha256_file(dir / "abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  ErrorKind kind{};
  try {
    sha256_file(dir / "missing");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    kind = e.kind();
    EXPECT_NE(std::string(e.what()).find("missing"), std::string::npos);
  }
  EXPECT_EQ(kind, ErrorKind::kNotFound);
  std::filesystem::remove_all(dir);
}

TEST(Sha256, TokenIdsUsePythonJsonFormatting) {
  const std::vector<int32_t> ids = {1, 2, 3};
  EXPECT_EQ(token_ids_sha256(ids), sha256_hex("[1, 2, 3]"));
  EXPECT_EQ(token_ids_sha256({}), sha256_hex("[]"));
}

}  // namespace
}  // namespace calq
