// AVX2 row decoders for GGUF q8_0 and q4_0 (used by gguf_legacy.cpp's fast path). Each computes
// exactly the scalar formula (int code → float, times the fp16 scale as float), so the result
// equals the scalar reference bit for bit; without AVX2 they run that scalar formula.
#pragma once

#include <cstddef>
#include <cstdint>

namespace calq::simd {

// `blocks` consecutive 34-byte q8_0 blocks at in → blocks·32 floats at out.
void dequantize_q8_0_row(const std::byte* in, int64_t blocks, float* out);
// `blocks` consecutive 18-byte q4_0 blocks at in → blocks·32 floats at out.
void dequantize_q4_0_row(const std::byte* in, int64_t blocks, float* out);

}  // namespace calq::simd
