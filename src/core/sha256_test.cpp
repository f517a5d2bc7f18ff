#include "core/sha256.h"

#include <gtest/gtest.h>

#include <vector>

namespace calq {
namespace {

TEST(Sha256, KnownVectors) {
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(Sha256, TokenIdsUsePythonJsonFormatting) {
  const std::vector<int32_t> ids = {1, 2, 3};
  EXPECT_EQ(token_ids_sha256(ids), sha256_hex("[1, 2, 3]"));
  EXPECT_EQ(token_ids_sha256({}), sha256_hex("[]"));
}

}  // namespace
}  // namespace calq
