// AVX2 decoders of q4_K and q6_K (the formats the runtime decodes tile by tile for matmuls).
// They perform the scalar decoders' operations lane for lane — (d·sc)·q − d_min·mn as a multiply
// then a subtract, never fused — so their floats are bit-identical (checked by the tests).
#include <cstring>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include "formats/gguf_kquants.h"
#include "formats/format_util.h"

namespace calq::kquant {

#if defined(__AVX2__)
namespace {

// 8 bytes (as unsigned) -> 8 floats.
inline __m256 bytes_to_ps(__m128i v8) { return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v8)); }

}  // namespace

void decode_q4_k_fast(const std::byte* in, int64_t n, float* out) {
  const __m256i low4 = _mm256_set1_epi8(15);
  for (int64_t blk = 0; blk < n / kSuper; ++blk, in += 144, out += kSuper) {
    const auto* p = reinterpret_cast<const uint8_t*>(in);
    const float d = load_f16(in), dmin = load_f16(in + 2);
    for (int c = 0; c < 4; ++c) {
      const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 16 + 32 * c));
      const __m256i nib[2] = {_mm256_and_si256(q, low4), _mm256_and_si256(_mm256_srli_epi16(q, 4), low4)};
      for (int half = 0; half < 2; ++half) {
        const int j = 2 * c + half;
        uint8_t sc, mn;
        unpack_scale_k4(p + 4, j, sc, mn);
        const __m256 dl = _mm256_set1_ps(d * float(sc)), ml = _mm256_set1_ps(dmin * float(mn));
        const __m128i lo = _mm256_castsi256_si128(nib[half]), hi = _mm256_extracti128_si256(nib[half], 1);
        const __m128i parts[4] = {lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)};
        for (int k = 0; k < 4; ++k) {
          const __m256 y = _mm256_sub_ps(_mm256_mul_ps(dl, bytes_to_ps(parts[k])), ml);
          _mm256_storeu_ps(out + 32 * j + 8 * k, y);
        }
      }
    }
  }
}

void decode_q6_k_fast(const std::byte* in, int64_t n, float* out) {
  const __m256i low4 = _mm256_set1_epi8(15), two = _mm256_set1_epi8(3), off = _mm256_set1_epi8(32);
  for (int64_t blk = 0; blk < n / kSuper; ++blk, in += 210, out += kSuper) {
    const auto* p = reinterpret_cast<const uint8_t*>(in);
    const float d = load_f16(in + 208);
    const auto* scales = reinterpret_cast<const int8_t*>(p + 192);
    for (int h = 0; h < 2; ++h) {
      const __m256i ql0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 64 * h));
      const __m256i ql1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 64 * h + 32));
      const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 128 + 32 * h));
      const __m256i low[4] = {_mm256_and_si256(ql0, low4), _mm256_and_si256(ql1, low4),
                              _mm256_and_si256(_mm256_srli_epi16(ql0, 4), low4),
                              _mm256_and_si256(_mm256_srli_epi16(ql1, 4), low4)};
      for (int g = 0; g < 4; ++g) {
        const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(qh, 2 * g), two);
        // q − 32 in −32..31 as signed bytes.
        const __m256i q = _mm256_sub_epi8(_mm256_or_si256(low[g], _mm256_slli_epi16(hi, 4)), off);
        const __m128i qlo = _mm256_castsi256_si128(q), qhi = _mm256_extracti128_si256(q, 1);
        const __m128i parts[4] = {qlo, _mm_srli_si128(qlo, 8), qhi, _mm_srli_si128(qhi, 8)};
        for (int k = 0; k < 4; ++k) {
          const int e = 128 * h + 32 * g + 8 * k;
          const __m256 dl = _mm256_set1_ps(d * float(scales[e / 16]));
          const __m256 v = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(parts[k]));
          _mm256_storeu_ps(out + e, _mm256_mul_ps(dl, v));
        }
      }
    }
  }
}

#else

void decode_q4_k_fast(const std::byte* in, int64_t n, float* out) { decode_q4_k(in, n, out); }
void decode_q6_k_fast(const std::byte* in, int64_t n, float* out) { decode_q6_k(in, n, out); }

#endif

}  // namespace calq::kquant
