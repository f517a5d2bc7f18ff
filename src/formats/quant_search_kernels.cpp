#include "formats/quant_search_kernels.h"

#include <algorithm>
#include <cmath>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define CALQ_QUANT_AVX2 1
#endif

namespace calq::quant::detail {
namespace {

constexpr int kLanes = 8;

float lane_sum(const float* a) {
  float s = a[0];
  for (int l = 1; l < kLanes; ++l) s += a[l];
  return s;
}

// MAXPS/MINPS semantics (the second operand when the first does not compare greater/less, which
// also fixes the sign of a zero result), so the scalar and AVX2 kernels agree bit for bit.
inline float max_ps(float a, float b) { return a > b ? a : b; }
inline float min_ps(float a, float b) { return a < b ? a : b; }

// One element of each kernel, into lane accumulators (the scalar definition of the result).
// Products and sums written separately must stay separately rounded (as in the decoders): this
// file is compiled with -ffp-contract=off (src/formats/CMakeLists.txt), since g++ otherwise fuses
// them into fmas even in ISO C++ mode, intrinsics included; the fmas wanted are spelled out.

// The symmetric kernels' sums for element xi (weight wi) decoded as level l times s.
inline void symmetric_sums(float xi, float wi, float l, float s, float& ae, float& aa, float& ab) {
  const float t = l * s;
  const float e = xi - t;
  const float we = wi * e;
  ae = std::fma(we, e, ae);
  const float wl = wi * l;
  aa = std::fma(wl, xi, aa);
  ab = std::fma(wl, l, ab);
}

inline void uniform_step(float xi, float wi, float flo, float fhi, int lo, float s, float inv, float& ae, float& aa,
                         float& ab, uint8_t* qi) {
  const float r = min_ps(max_ps(std::nearbyint(xi * inv), flo), fhi);
  symmetric_sums(xi, wi, r, s, ae, aa, ab);
  if (qi != nullptr) *qi = static_cast<uint8_t>(static_cast<int>(r) - lo);
}

inline void table_step(float xi, float wi, const TableLevels16& levels, float s, float inv, float& ae, float& aa,
                       float& ab, uint8_t* qi) {
  const int k = levels.nearest(xi * inv);
  symmetric_sums(xi, wi, levels.value(k), s, ae, aa, ab);
  if (qi != nullptr) *qi = static_cast<uint8_t>(k);
}

inline void affine_step(float xi, float wi, float fqmax, bool fused, float s, float m, float inv, float& ae,
                        float& aq, float& aqq, float& axq, uint8_t* qi) {
  const float r = min_ps(max_ps(std::nearbyint((xi - m) * inv), 0.0f), fqmax);
  float y;
  if (fused) {
    y = std::fma(r, s, m);
  } else {
    const float t = r * s;
    y = t + m;
  }
  const float e = xi - y;
  const float we = wi * e;
  ae = std::fma(we, e, ae);
  const float wr = wi * r;
  aq += wr;
  aqq = std::fma(wr, r, aqq);
  axq = std::fma(wr, xi, axq);
  if (qi != nullptr) *qi = static_cast<uint8_t>(r);
}

#if CALQ_QUANT_AVX2
// AVX2 twin of symmetric_sums, eight elements (one per lane).
inline void symmetric_sums8(__m256 vx, __m256 vw, __m256 l, __m256 vs, __m256& ve, __m256& va, __m256& vb) {
  const __m256 e = _mm256_sub_ps(vx, _mm256_mul_ps(l, vs));
  ve = _mm256_fmadd_ps(_mm256_mul_ps(vw, e), e, ve);
  const __m256 wl = _mm256_mul_ps(vw, l);
  va = _mm256_fmadd_ps(wl, vx, va);
  vb = _mm256_fmadd_ps(wl, l, vb);
}

void store_codes(__m256 r, float offset, uint8_t* q) {
  alignas(32) int32_t k[kLanes];
  _mm256_store_si256(reinterpret_cast<__m256i*>(k), _mm256_cvtps_epi32(_mm256_sub_ps(r, _mm256_set1_ps(offset))));
  for (int l = 0; l < kLanes; ++l) q[l] = static_cast<uint8_t>(k[l]);
}
constexpr int kRound = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
#endif

}  // namespace

SymmetricSums assign_uniform(const float* x, const float* w, int n, int lo, int hi, float s, float inv, uint8_t* q,
                             bool avx2) {
  alignas(32) float ae[kLanes] = {}, aa[kLanes] = {}, ab[kLanes] = {};
  const float flo = static_cast<float>(lo), fhi = static_cast<float>(hi);
  int i = 0;
#if CALQ_QUANT_AVX2
  if (avx2) {
    const __m256 vlo = _mm256_set1_ps(flo), vhi = _mm256_set1_ps(fhi), vs = _mm256_set1_ps(s),
                 vinv = _mm256_set1_ps(inv);
    __m256 ve = _mm256_setzero_ps(), va = _mm256_setzero_ps(), vb = _mm256_setzero_ps();
    for (; i + kLanes <= n; i += kLanes) {
      const __m256 vx = _mm256_loadu_ps(x + i), vw = _mm256_loadu_ps(w + i);
      const __m256 r = _mm256_min_ps(_mm256_max_ps(_mm256_round_ps(_mm256_mul_ps(vx, vinv), kRound), vlo), vhi);
      symmetric_sums8(vx, vw, r, vs, ve, va, vb);
      if (q != nullptr) store_codes(r, flo, q + i);
    }
    _mm256_store_ps(ae, ve);
    _mm256_store_ps(aa, va);
    _mm256_store_ps(ab, vb);
  }
#else
  (void)avx2;
#endif
  for (; i < n; ++i) {
    const int l = i % kLanes;
    uniform_step(x[i], w[i], flo, fhi, lo, s, inv, ae[l], aa[l], ab[l], q == nullptr ? nullptr : q + i);
  }
  return SymmetricSums{.err = lane_sum(ae), .sxl = lane_sum(aa), .sll = lane_sum(ab)};
}

SymmetricSums assign_table(const float* x, const float* w, int n, const TableLevels16& levels, float s, float inv,
                           uint8_t* q, bool avx2) {
  alignas(32) float ae[kLanes] = {}, aa[kLanes] = {}, ab[kLanes] = {};
  int i = 0;
#if CALQ_QUANT_AVX2
  if (avx2) {
    const __m256 vs = _mm256_set1_ps(s), vinv = _mm256_set1_ps(inv);
    const __m256 low = _mm256_loadu_ps(levels.values.data()), high = _mm256_loadu_ps(levels.values.data() + 8);
    __m256 ve = _mm256_setzero_ps(), va = _mm256_setzero_ps(), vb = _mm256_setzero_ps();
    for (; i + kLanes <= n; i += kLanes) {
      const __m256 vx = _mm256_loadu_ps(x + i), vw = _mm256_loadu_ps(w + i);
      const __m256 v = _mm256_mul_ps(vx, vinv);
      // The nearest level's index is the number of midpoints below v (what nearest() computes).
      __m256i k = _mm256_setzero_si256();
      for (size_t m = 0; m < 15; ++m) {
        const __m256 gt = _mm256_cmp_ps(v, _mm256_set1_ps(levels.mids[m]), _CMP_GT_OQ);
        k = _mm256_sub_epi32(k, _mm256_castps_si256(gt));
      }
      const __m256 upper = _mm256_castsi256_ps(_mm256_cmpgt_epi32(k, _mm256_set1_epi32(7)));
      const __m256 l = _mm256_blendv_ps(_mm256_permutevar8x32_ps(low, k), _mm256_permutevar8x32_ps(high, k), upper);
      symmetric_sums8(vx, vw, l, vs, ve, va, vb);
      if (q != nullptr) {
        alignas(32) int32_t kk[kLanes];
        _mm256_store_si256(reinterpret_cast<__m256i*>(kk), k);
        for (int j = 0; j < kLanes; ++j) q[i + j] = static_cast<uint8_t>(kk[j]);
      }
    }
    _mm256_store_ps(ae, ve);
    _mm256_store_ps(aa, va);
    _mm256_store_ps(ab, vb);
  }
#else
  (void)avx2;
#endif
  for (; i < n; ++i) {
    const int l = i % kLanes;
    table_step(x[i], w[i], levels, s, inv, ae[l], aa[l], ab[l], q == nullptr ? nullptr : q + i);
  }
  return SymmetricSums{.err = lane_sum(ae), .sxl = lane_sum(aa), .sll = lane_sum(ab)};
}

AffineSums assign_affine(const float* x, const float* w, int n, int qmax, bool fused, float s, float m, float inv,
                         uint8_t* q, bool avx2) {
  alignas(32) float ae[kLanes] = {}, aq[kLanes] = {}, aqq[kLanes] = {}, axq[kLanes] = {};
  const float fqmax = static_cast<float>(qmax);
  int i = 0;
#if CALQ_QUANT_AVX2
  if (avx2) {
    const __m256 vs = _mm256_set1_ps(s), vm = _mm256_set1_ps(m), vinv = _mm256_set1_ps(inv),
                 vq = _mm256_set1_ps(fqmax), zero = _mm256_setzero_ps();
    __m256 ve = zero, vaq = zero, vaqq = zero, vaxq = zero;
    for (; i + kLanes <= n; i += kLanes) {
      const __m256 vx = _mm256_loadu_ps(x + i), vw = _mm256_loadu_ps(w + i);
      const __m256 v = _mm256_mul_ps(_mm256_sub_ps(vx, vm), vinv);
      const __m256 r = _mm256_min_ps(_mm256_max_ps(_mm256_round_ps(v, kRound), zero), vq);
      const __m256 y = fused ? _mm256_fmadd_ps(r, vs, vm) : _mm256_add_ps(_mm256_mul_ps(r, vs), vm);
      const __m256 e = _mm256_sub_ps(vx, y);
      ve = _mm256_fmadd_ps(_mm256_mul_ps(vw, e), e, ve);
      const __m256 wr = _mm256_mul_ps(vw, r);
      vaq = _mm256_add_ps(vaq, wr);
      vaqq = _mm256_fmadd_ps(wr, r, vaqq);
      vaxq = _mm256_fmadd_ps(wr, vx, vaxq);
      if (q != nullptr) store_codes(r, 0.0f, q + i);
    }
    _mm256_store_ps(ae, ve);
    _mm256_store_ps(aq, vaq);
    _mm256_store_ps(aqq, vaqq);
    _mm256_store_ps(axq, vaxq);
  }
#else
  (void)avx2;
#endif
  for (; i < n; ++i) {
    const int l = i % kLanes;
    affine_step(x[i], w[i], fqmax, fused, s, m, inv, ae[l], aq[l], aqq[l], axq[l], q == nullptr ? nullptr : q + i);
  }
  return AffineSums{.err = lane_sum(ae), .wq = lane_sum(aq), .wqq = lane_sum(aqq), .wxq = lane_sum(axq)};
}

}  // namespace calq::quant::detail
