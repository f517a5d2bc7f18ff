// SHA-256 helpers (OpenSSL libcrypto).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace calq {

std::string sha256_hex(std::string_view data);

// sha256 of the ids formatted as Python's json.dumps(ids): "[1, 2, 3]" (the refs' convention).
std::string token_ids_sha256(std::span<const int32_t> ids);

}  // namespace calq
