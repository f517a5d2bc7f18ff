// Inner loops of the k-quant encoders: the scalar reference set and its AVX2 twin (see Kernels in
// gguf_kquants.h). Both round with the same add/subtract of 1.5·2^23 and multiply/subtract in the
// same order without fusing; clamping with max/min only differs on the sign of a zero, which the
// rounding step erases. Partial sums live in 8 lanes and are added in Lanes::sum order.
#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include "formats/gguf_kquants.h"

namespace calq::kquant {
namespace {

void affine_assign_scalar(const float* x, const float* w, int n, float offset, float iscale, float nmax,
                          float* sums3) {
  Lanes a, b, c;
  for (int i = 0; i < n; i += 8) {
    for (int k = 0; k < 8; ++k) {
      const float q = round_clamp((x[i + k] - offset) * iscale, 0.0f, nmax);
      const float wq = w[i + k] * q;
      a.v[k] += wq;
      b.v[k] += wq * q;
      c.v[k] += wq * x[i + k];
    }
  }
  sums3[0] = a.sum();
  sums3[1] = b.sum();
  sums3[2] = c.sum();
}

float affine_exact_scalar(const float* x, const float* w, int n, float d, float m, float nmax, uint8_t* q) {
  Lanes acc;
  const float id = d != 0 ? 1.0f / d : 0.0f;
  for (int i = 0; i < n; i += 8) {
    for (int k = 0; k < 8; ++k) {
      const float l = round_clamp((x[i + k] + m) * id, 0.0f, nmax);
      const float e = (d * l - m) - x[i + k];
      acc.v[k] += w[i + k] * (e * e);
      if (q != nullptr) q[i + k] = static_cast<uint8_t>(l);
    }
  }
  return acc.sum();
}

void sym_assign_scalar(const float* x, const float* w, int n, float iscale, float lmin, float lmax, float* sums2) {
  Lanes a, b;
  for (int i = 0; i < n; i += 8) {
    for (int k = 0; k < 8; ++k) {
      const float l = round_clamp(x[i + k] * iscale, lmin, lmax);
      const float wl = w[i + k] * l;
      a.v[k] += wl * x[i + k];
      b.v[k] += wl * l;
    }
  }
  sums2[0] = a.sum();
  sums2[1] = b.sum();
}

float sym_exact_scalar(const float* x, const float* w, int n, float d, float lmin, float lmax, int8_t* l_out) {
  Lanes acc;
  const float id = d != 0 ? 1.0f / d : 0.0f;
  for (int i = 0; i < n; i += 8) {
    for (int k = 0; k < 8; ++k) {
      const float l = round_clamp(x[i + k] * id, lmin, lmax);
      const float e = d * l - x[i + k];
      acc.v[k] += w[i + k] * (e * e);
      if (l_out != nullptr) l_out[i + k] = static_cast<int8_t>(l);
    }
  }
  return acc.sum();
}

#if defined(__AVX2__)

inline float lane_sum(__m256 v) {
  Lanes l;
  _mm256_storeu_ps(l.v, v);
  return l.sum();
}

inline __m256 round_clamp8(__m256 v, __m256 lo, __m256 hi) {
  const __m256 magic = _mm256_set1_ps(12582912.0f);
  v = _mm256_min_ps(_mm256_max_ps(v, lo), hi);
  return _mm256_sub_ps(_mm256_add_ps(v, magic), magic);
}

// Stores 8 small integral floats as bytes.
inline void store8_bytes(__m256 v, void* dst) {
  const __m256i i32 = _mm256_cvtps_epi32(v);
  const __m128i i16 = _mm_packs_epi32(_mm256_castsi256_si128(i32), _mm256_extracti128_si256(i32, 1));
  const __m128i i8 = _mm_packs_epi16(i16, i16);
  _mm_storel_epi64(static_cast<__m128i*>(dst), i8);
}

void affine_assign_avx2(const float* x, const float* w, int n, float offset, float iscale, float nmax,
                        float* sums3) {
  const __m256 off = _mm256_set1_ps(offset), is = _mm256_set1_ps(iscale), zero = _mm256_setzero_ps(),
               top = _mm256_set1_ps(nmax);
  __m256 a = zero, b = zero, c = zero;
  for (int i = 0; i < n; i += 8) {
    const __m256 xv = _mm256_loadu_ps(x + i);
    const __m256 q = round_clamp8(_mm256_mul_ps(_mm256_sub_ps(xv, off), is), zero, top);
    const __m256 wq = _mm256_mul_ps(_mm256_loadu_ps(w + i), q);
    a = _mm256_add_ps(a, wq);
    b = _mm256_add_ps(b, _mm256_mul_ps(wq, q));
    c = _mm256_add_ps(c, _mm256_mul_ps(wq, xv));
  }
  sums3[0] = lane_sum(a);
  sums3[1] = lane_sum(b);
  sums3[2] = lane_sum(c);
}

float affine_exact_avx2(const float* x, const float* w, int n, float d, float m, float nmax, uint8_t* q) {
  const float id = d != 0 ? 1.0f / d : 0.0f;
  const __m256 dv = _mm256_set1_ps(d), mv = _mm256_set1_ps(m), iv = _mm256_set1_ps(id), zero = _mm256_setzero_ps(),
               top = _mm256_set1_ps(nmax);
  __m256 acc = zero;
  for (int i = 0; i < n; i += 8) {
    const __m256 xv = _mm256_loadu_ps(x + i);
    const __m256 l = round_clamp8(_mm256_mul_ps(_mm256_add_ps(xv, mv), iv), zero, top);
    const __m256 e = _mm256_sub_ps(_mm256_sub_ps(_mm256_mul_ps(dv, l), mv), xv);
    acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_loadu_ps(w + i), _mm256_mul_ps(e, e)));
    if (q != nullptr) store8_bytes(l, q + i);
  }
  return lane_sum(acc);
}

void sym_assign_avx2(const float* x, const float* w, int n, float iscale, float lmin, float lmax, float* sums2) {
  const __m256 is = _mm256_set1_ps(iscale), lo = _mm256_set1_ps(lmin), hi = _mm256_set1_ps(lmax);
  __m256 a = _mm256_setzero_ps(), b = _mm256_setzero_ps();
  for (int i = 0; i < n; i += 8) {
    const __m256 xv = _mm256_loadu_ps(x + i);
    const __m256 l = round_clamp8(_mm256_mul_ps(xv, is), lo, hi);
    const __m256 wl = _mm256_mul_ps(_mm256_loadu_ps(w + i), l);
    a = _mm256_add_ps(a, _mm256_mul_ps(wl, xv));
    b = _mm256_add_ps(b, _mm256_mul_ps(wl, l));
  }
  sums2[0] = lane_sum(a);
  sums2[1] = lane_sum(b);
}

float sym_exact_avx2(const float* x, const float* w, int n, float d, float lmin, float lmax, int8_t* l_out) {
  const float id = d != 0 ? 1.0f / d : 0.0f;
  const __m256 dv = _mm256_set1_ps(d), iv = _mm256_set1_ps(id), lo = _mm256_set1_ps(lmin), hi = _mm256_set1_ps(lmax);
  __m256 acc = _mm256_setzero_ps();
  for (int i = 0; i < n; i += 8) {
    const __m256 xv = _mm256_loadu_ps(x + i);
    const __m256 l = round_clamp8(_mm256_mul_ps(xv, iv), lo, hi);
    const __m256 e = _mm256_sub_ps(_mm256_mul_ps(dv, l), xv);
    acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_loadu_ps(w + i), _mm256_mul_ps(e, e)));
    if (l_out != nullptr) store8_bytes(l, l_out + i);
  }
  return lane_sum(acc);
}

#endif

}  // namespace

const Kernels& scalar_kernels() {
  static const Kernels k{affine_assign_scalar, affine_exact_scalar, sym_assign_scalar, sym_exact_scalar};
  return k;
}

const Kernels& fast_kernels() {
#if defined(__AVX2__)
  static const Kernels k{affine_assign_avx2, affine_exact_avx2, sym_assign_avx2, sym_exact_avx2};
  return k;
#else
  return scalar_kernels();
#endif
}

}  // namespace calq::kquant
