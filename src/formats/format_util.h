// Small byte-level helpers shared by the format families' encoders and decoders.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "core/dtype.h"

namespace calq {

// The fp16 value stored (little-endian, unaligned) at p, as float (exact).
inline float load_f16(const std::byte* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return f16_to_f32(h);
}

// Stores fp16 bits h at p (unaligned).
inline void store_f16(std::byte* p, uint16_t h) { std::memcpy(p, &h, 2); }

}  // namespace calq
