#include "formats/gguf_legacy_simd.h"

#include <cstring>

#include "core/dtype.h"
#include "formats/format_util.h"

#if defined(__AVX2__)
#include <immintrin.h>
#endif

namespace calq::simd {
// Block scales: load_f16 (format_util.h) is exact, as is F16C's conversion: both give the one
// float equal to the stored bits.

void dequantize_q8_0_row(const std::byte* in, int64_t blocks, float* out) {
  for (int64_t b = 0; b < blocks; ++b, in += 34, out += 32) {
    const float d = load_f16(in);
#if defined(__AVX2__)
    const __m256 vd = _mm256_set1_ps(d);
    for (int k = 0; k < 4; ++k) {
      const __m128i q8 = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(in + 2 + 8 * k));
      const __m256 v = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q8));
      _mm256_storeu_ps(out + 8 * k, _mm256_mul_ps(v, vd));
    }
#else
    const auto* q = reinterpret_cast<const int8_t*>(in + 2);
    for (int j = 0; j < 32; ++j) out[j] = static_cast<float>(q[j]) * d;
#endif
  }
}

void dequantize_q4_0_row(const std::byte* in, int64_t blocks, float* out) {
  for (int64_t b = 0; b < blocks; ++b, in += 18, out += 32) {
    const float d = load_f16(in);
#if defined(__AVX2__)
    const __m256 vd = _mm256_set1_ps(d);
    const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in + 2));
    const __m128i mask = _mm_set1_epi8(0x0f), eight = _mm_set1_epi8(8);
    const __m128i lo = _mm_sub_epi8(_mm_and_si128(packed, mask), eight);                     // elements 0..15
    const __m128i hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(packed, 4), mask), eight);  // 16..31
    const __m128i parts[4] = {lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)};
    for (int k = 0; k < 4; ++k) {
      const __m256 v = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(parts[k]));
      _mm256_storeu_ps(out + 8 * k, _mm256_mul_ps(v, vd));
    }
#else
    const auto* qs = reinterpret_cast<const uint8_t*>(in + 2);
    for (int j = 0; j < 16; ++j) {
      out[j] = static_cast<float>((qs[j] & 0x0f) - 8) * d;
      out[j + 16] = static_cast<float>((qs[j] >> 4) - 8) * d;
    }
#endif
  }
}

}  // namespace calq::simd
