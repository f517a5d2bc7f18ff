// SHA-256 helpers (OpenSSL libcrypto): one-shot, streaming, and of whole files (read in chunks,
// never the whole file in memory). Digests are lowercase hex.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <string_view>

namespace calq {

std::string sha256_hex(std::string_view data);

// Incremental SHA-256: update() any number of times, then hex() once (further use asserts).
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void update(std::span<const std::byte> data);
  void update(std::string_view data);
  // Hashes the bytes of `path`, read in chunks; Error(kIo / kNotFound) naming the path on failure.
  void update_file(const std::filesystem::path& path);
  std::string hex();

 private:
  struct Ctx;
  std::unique_ptr<Ctx> ctx_;
  bool finished_ = false;
};

// sha256 of a file's bytes (Sha256::update_file): what `sha256sum path` prints.
std::string sha256_file(const std::filesystem::path& path);

// sha256 of the ids formatted as Python's json.dumps(ids): "[1, 2, 3]" (the refs' convention).
std::string token_ids_sha256(std::span<const int32_t> ids);

}  // namespace calq
