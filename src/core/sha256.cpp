#include "core/sha256.h"

#include <fmt/format.h>
#include <openssl/evp.h>

#include <array>
#include <cassert>

namespace calq {

std::string sha256_hex(std::string_view data) {
  std::array<unsigned char, EVP_MAX_MD_SIZE> digest{};
  unsigned int len = 0;
  const int ok = EVP_Digest(data.data(), data.size(), digest.data(), &len, EVP_sha256(), nullptr);
  assert(ok == 1 && len == 32);
  (void)ok;
  std::string hex;
  hex.reserve(2 * len);
  for (unsigned int i = 0; i < len; ++i) fmt::format_to(std::back_inserter(hex), "{:02x}", digest[i]);
  return hex;
}

std::string token_ids_sha256(std::span<const int32_t> ids) {
  std::string text = "[";
  text.reserve(ids.size() * 7 + 2);
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i) text += ", ";
    fmt::format_to(std::back_inserter(text), "{}", ids[i]);
  }
  text += ']';
  return sha256_hex(text);
}

}  // namespace calq
