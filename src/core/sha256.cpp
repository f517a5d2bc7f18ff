#include "core/sha256.h"

#include <fmt/format.h>
#include <openssl/evp.h>

#include <array>
#include <cassert>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <vector>

#include "core/error.h"

namespace calq {
namespace {

std::string to_hex(const unsigned char* digest, unsigned int len) {
  std::string hex;
  hex.reserve(2 * len);
  for (unsigned int i = 0; i < len; ++i) fmt::format_to(std::back_inserter(hex), "{:02x}", digest[i]);
  return hex;
}

}  // namespace

struct Sha256::Ctx {
  EVP_MD_CTX* md = EVP_MD_CTX_new();
  ~Ctx() { EVP_MD_CTX_free(md); }
};

Sha256::Sha256() : ctx_(std::make_unique<Ctx>()) {
  const int ok = ctx_->md != nullptr ? EVP_DigestInit_ex(ctx_->md, EVP_sha256(), nullptr) : 0;
  assert(ok == 1);
  (void)ok;
}

Sha256::~Sha256() = default;

void Sha256::update(std::span<const std::byte> data) {
  assert(!finished_);
  const int ok = EVP_DigestUpdate(ctx_->md, data.data(), data.size());
  assert(ok == 1);
  (void)ok;
}

void Sha256::update(std::string_view data) { update(std::as_bytes(std::span(data.data(), data.size()))); }

void Sha256::update_file(const std::filesystem::path& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) fail(ErrorKind::kNotFound, "{}: no such file", path.string());
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!f) fail(ErrorKind::kIo, "{}: cannot open: {}", path.string(), std::strerror(errno));
  std::vector<std::byte> buf(size_t{1} << 20);
  for (;;) {
    const size_t n = std::fread(buf.data(), 1, buf.size(), f.get());
    if (n > 0) update(std::span(buf.data(), n));
    if (n < buf.size()) {
      if (std::ferror(f.get())) fail(ErrorKind::kIo, "{}: read error: {}", path.string(), std::strerror(errno));
      break;
    }
  }
}

std::string Sha256::hex() {
  assert(!finished_);
  finished_ = true;
  std::array<unsigned char, EVP_MAX_MD_SIZE> digest{};
  unsigned int len = 0;
  const int ok = EVP_DigestFinal_ex(ctx_->md, digest.data(), &len);
  assert(ok == 1 && len == 32);
  (void)ok;
  return to_hex(digest.data(), len);
}

std::string sha256_file(const std::filesystem::path& path) {
  Sha256 h;
  h.update_file(path);
  return h.hex();
}

std::string sha256_hex(std::string_view data) {
  std::array<unsigned char, EVP_MAX_MD_SIZE> digest{};
  unsigned int len = 0;
  const int ok = EVP_Digest(data.data(), data.size(), digest.data(), &len, EVP_sha256(), nullptr);
  assert(ok == 1 && len == 32);
  (void)ok;
  return to_hex(digest.data(), len);
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
