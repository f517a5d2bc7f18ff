// LSB-first bit packing of unsigned b-bit codes (1 <= b <= 8), eight codes at a time.
//
// Layout: code i occupies bits [i·b, i·b + b) of the packed bit stream, where bit k of the stream
// is bit (k mod 8) of byte k / 8; the lowest bit of each code comes first. Eight codes fill exactly
// b bytes, so n codes (n a multiple of 8) take n·b/8 bytes and groups of 8 start on byte boundaries.
#pragma once

#include <cassert>
#include <cstddef>
#include <cstdint>

namespace calq {

// codes[0..n) (each < 2^bits) -> out[0 .. n·bits/8).
inline void pack_codes(const uint8_t* codes, int64_t n, int bits, std::byte* out) {
  assert(n % 8 == 0 && bits >= 1 && bits <= 8);
  for (int64_t i = 0; i < n; i += 8) {
    uint64_t v = 0;
    for (int k = 0; k < 8; ++k) v |= static_cast<uint64_t>(codes[i + k]) << (k * bits);
    for (int k = 0; k < bits; ++k) *out++ = static_cast<std::byte>(v >> (8 * k));
  }
}

// The inverse: in[0 .. n·bits/8) -> codes[0..n).
inline void unpack_codes(const std::byte* in, int64_t n, int bits, uint8_t* codes) {
  assert(n % 8 == 0 && bits >= 1 && bits <= 8);
  const uint64_t mask = (uint64_t{1} << bits) - 1;
  for (int64_t i = 0; i < n; i += 8) {
    uint64_t v = 0;
    for (int k = 0; k < bits; ++k) v |= static_cast<uint64_t>(*in++) << (8 * k);
    for (int k = 0; k < 8; ++k) codes[i + k] = static_cast<uint8_t>((v >> (k * bits)) & mask);
  }
}

}  // namespace calq
