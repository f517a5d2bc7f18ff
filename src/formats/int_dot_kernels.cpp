// Packing and micro-kernels of the integer matmul. Every kernel computes, per output element, the
// chain of int_dot.h in block order: exact int32 block sums, then two explicit FMAs per block.
// Why the AVX2 kernel has two forms: vpmaddubsw adds two u8·s8 products into a saturating int16,
// exact while u ≤ 128 (2·128·127 < 32767); for larger codes (q8_0's u = q + 128) it multiplies
// |u − 128| by x with u − 128's sign moved onto x, and adds 128·Σx back per block.
#include "formats/int_dot_kernels.h"

#include <immintrin.h>

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstring>

namespace calq::intdot {

int lanes_for(KernelLevel level) {
  switch (level) {
    case KernelLevel::kAvx512Vnni: return 16;
    case KernelLevel::kAvxVnni:
    case KernelLevel::kAvx2: return 8;
    case KernelLevel::kScalar: return 1;
  }
  return 1;
}

void pack_rows(const QuantizedTensor& w, const IntRowCodec& codec, int64_t r0, int64_t n, KernelLevel level,
               PackedRows& out) {
  out.n = n;
  out.k = w.cols;
  out.block = codec.block();
  out.nb = w.cols / codec.block();
  out.lanes = lanes_for(level);
  out.max_code = codec.max_code();
  const int64_t L = out.lanes, panels = out.panels(), steps = out.block / 4;
  // resize, not assign: the buffers are reused call after call, and every lane is written below
  // (the padding lanes of the last panel with zeros).
  out.codes.resize(static_cast<size_t>(panels * L * out.k));
  out.scale.resize(static_cast<size_t>(panels * L * out.nb));
  out.offset.resize(static_cast<size_t>(panels * L * out.nb));
  out.row_u.resize(static_cast<size_t>(out.k));
  out.row_scale.resize(static_cast<size_t>(out.nb));
  out.row_offset.resize(static_cast<size_t>(out.nb));
  for (int64_t r = 0; r < panels * L; ++r) {
    if (r < n) {
      codec.decode_row(w.bytes.data(), w.rows, w.cols, r0 + r, out.row_u.data(), out.row_scale.data(),
                       out.row_offset.data());
    } else {
      std::fill(out.row_u.begin(), out.row_u.end(), uint8_t{0});
      std::fill(out.row_scale.begin(), out.row_scale.end(), 0.0f);
      std::fill(out.row_offset.begin(), out.row_offset.end(), 0.0f);
    }
    const int64_t p = r / L, lane = r % L;
    for (int64_t b = 0; b < out.nb; ++b) {
      out.scale[(p * out.nb + b) * L + lane] = out.row_scale[b];
      out.offset[(p * out.nb + b) * L + lane] = out.row_offset[b];
      for (int64_t s = 0; s < steps; ++s) {
        std::memcpy(&out.codes[static_cast<size_t>(((p * out.nb + b) * steps + s) * L * 4 + lane * 4)],
                    &out.row_u[b * out.block + 4 * s], 4);
      }
    }
  }
}

void run_packed(const PackedRows& w, const QuantizedActivations& qa, float* y, int64_t ldy, bool accumulate,
                KernelLevel level) {
  assert(lanes_for(level) == w.lanes && qa.block == w.block && qa.k == w.k);
  switch (level) {
    case KernelLevel::kAvx512Vnni: return run_avx512_vnni(w, qa, y, ldy, accumulate);
    case KernelLevel::kAvxVnni: return run_avx_vnni(w, qa, y, ldy, accumulate);
    case KernelLevel::kAvx2: return run_avx2(w, qa, y, ldy, accumulate);
    case KernelLevel::kScalar: return run_scalar(w, qa, y, ldy, accumulate);
  }
}

namespace {

// Writes the `lanes` results of one panel for token i: only the rows that exist.
inline void store_panel(const float* t, int64_t lanes, int64_t row0, int64_t n, float* yi, bool accumulate) {
  const int64_t valid = std::min(lanes, n - row0);
  for (int64_t l = 0; l < valid; ++l) yi[row0 + l] = accumulate ? yi[row0 + l] + t[l] : t[l];
}

}  // namespace

void run_scalar(const PackedRows& w, const QuantizedActivations& qa, float* y, int64_t ldy, bool accumulate) {
  const int64_t L = w.lanes, steps = w.block / 4, nb = w.nb;
  for (int64_t p = 0; p < w.panels(); ++p) {
    for (int64_t i = 0; i < qa.m; ++i) {
      float t[16] = {};
      for (int64_t lane = 0; lane < L; ++lane) {
        float acc_f = 0;
        for (int64_t b = 0; b < nb; ++b) {
          const int8_t* q = qa.q.data() + i * qa.k + b * w.block;
          int32_t acc = 0;
          for (int64_t s = 0; s < steps; ++s) {
            const uint8_t* u = &w.codes[static_cast<size_t>(((p * nb + b) * steps + s) * L * 4 + lane * 4)];
            for (int e = 0; e < 4; ++e) acc += int32_t{u[e]} * int32_t{q[4 * s + e]};
          }
          const size_t si = static_cast<size_t>((p * nb + b) * L + lane);
          acc_f = std::fma(static_cast<float>(acc), qa.dx[i * nb + b] * w.scale[si], acc_f);
          acc_f = std::fma(w.offset[si], qa.dsx[i * nb + b], acc_f);
        }
        t[lane] = acc_f;
      }
      store_panel(t, L, p * L, w.n, y + i * ldy, accumulate);
    }
  }
}

namespace {

// AVX2: one panel of 8 rows against MR tokens at a time.
template <int MR, bool kWide>
void avx2_tile(const PackedRows& w, const QuantizedActivations& qa, int64_t p, int64_t i0, float* y, int64_t ldy,
               bool accumulate) {
  const int64_t steps = w.block / 4, nb = w.nb;
  const __m256i ones = _mm256_set1_epi16(1);
  const __m256i flip = _mm256_set1_epi8(static_cast<char>(0x80));
  __m256 t[MR];
  for (int i = 0; i < MR; ++i) t[i] = _mm256_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    __m256i acc[MR];
    for (int i = 0; i < MR; ++i) acc[i] = _mm256_setzero_si256();
    const uint8_t* wb = &w.codes[static_cast<size_t>((p * nb + b) * steps * 32)];
    for (int64_t s = 0; s < steps; ++s) {
      const __m256i wu = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wb + s * 32));
      if constexpr (kWide) {
        const __m256i ws = _mm256_xor_si256(wu, flip);  // u − 128 as int8
        const __m256i wa = _mm256_abs_epi8(ws);
        for (int i = 0; i < MR; ++i) {
          int32_t xv;
          std::memcpy(&xv, qa.q.data() + (i0 + i) * qa.k + b * w.block + 4 * s, 4);
          const __m256i xs = _mm256_sign_epi8(_mm256_set1_epi32(xv), ws);
          acc[i] = _mm256_add_epi32(acc[i], _mm256_madd_epi16(_mm256_maddubs_epi16(wa, xs), ones));
        }
      } else {
        for (int i = 0; i < MR; ++i) {
          int32_t xv;
          std::memcpy(&xv, qa.q.data() + (i0 + i) * qa.k + b * w.block + 4 * s, 4);
          acc[i] = _mm256_add_epi32(acc[i], _mm256_madd_epi16(_mm256_maddubs_epi16(wu, _mm256_set1_epi32(xv)), ones));
        }
      }
    }
    const __m256 sc = _mm256_loadu_ps(&w.scale[static_cast<size_t>((p * nb + b) * 8)]);
    const __m256 of = _mm256_loadu_ps(&w.offset[static_cast<size_t>((p * nb + b) * 8)]);
    for (int i = 0; i < MR; ++i) {
      const int64_t qi = (i0 + i) * nb + b;
      if constexpr (kWide) acc[i] = _mm256_add_epi32(acc[i], _mm256_set1_epi32(128 * qa.sx[qi]));
      const __m256 ds = _mm256_mul_ps(_mm256_set1_ps(qa.dx[qi]), sc);
      t[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[i]), ds, t[i]);
      t[i] = _mm256_fmadd_ps(of, _mm256_set1_ps(qa.dsx[qi]), t[i]);
    }
  }
  for (int i = 0; i < MR; ++i) {
    float out[8];
    _mm256_storeu_ps(out, t[i]);
    store_panel(out, 8, p * 8, w.n, y + (i0 + i) * ldy, accumulate);
  }
}

template <bool kWide>
void avx2_all(const PackedRows& w, const QuantizedActivations& qa, float* y, int64_t ldy, bool accumulate) {
  constexpr int MR = 4;
  for (int64_t p = 0; p < w.panels(); ++p) {
    int64_t i = 0;
    for (; i + MR <= qa.m; i += MR) avx2_tile<MR, kWide>(w, qa, p, i, y, ldy, accumulate);
    for (; i < qa.m; ++i) avx2_tile<1, kWide>(w, qa, p, i, y, ldy, accumulate);
  }
}

}  // namespace

void run_avx2(const PackedRows& w, const QuantizedActivations& qa, float* y, int64_t ldy, bool accumulate) {
  if (w.max_code > 128) return avx2_all<true>(w, qa, y, ldy, accumulate);
  avx2_all<false>(w, qa, y, ldy, accumulate);
}

namespace {

// AVX-VNNI: the VEX vpdpbusd on 256-bit vectors (8-row panels, as AVX2's), 6 tokens × 2 panels
// per tile. Unlike vpmaddubsw it adds the four u8·s8 products into int32 without saturation, so
// every code up to 255 is exact and one form serves all codecs. VEX reaches only 16 vector
// registers: the 12 int32 sums, 2 weight vectors and one broadcast fill 15 of them in the inner loop.
#define CALQ_AVX_VNNI __attribute__((target("avx2,fma,avxvnni")))

// The running sums t live in memory (a few loads and stores per block): held in registers they
// would push the int32 sums out of the inner loop's 16.
template <int MR, int NP, int kSteps>
CALQ_AVX_VNNI void avx_vnni_tile(const PackedRows& w, const QuantizedActivations& qa, int64_t p, int64_t i0, float* y,
                                 int64_t ldy, bool accumulate) {
  const int64_t nb = w.nb;
  alignas(32) float t[MR][NP][8] = {};
  const int8_t* xq = qa.q.data();
  for (int64_t b = 0; b < nb; ++b) {
    __m256i acc[MR][NP];
    for (int i = 0; i < MR; ++i) {
      for (int j = 0; j < NP; ++j) acc[i][j] = _mm256_setzero_si256();
    }
    const uint8_t* wb[NP];
    for (int j = 0; j < NP; ++j) wb[j] = &w.codes[static_cast<size_t>(((p + j) * nb + b) * kSteps * 32)];
    const int8_t* xb0 = xq + i0 * qa.k + b * w.block;
    for (int s = 0; s < kSteps; ++s) {
      __m256i wv[NP];
      for (int j = 0; j < NP; ++j) wv[j] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wb[j] + s * 32));
      for (int i = 0; i < MR; ++i) {
        int32_t xv;
        std::memcpy(&xv, xb0 + i * qa.k + 4 * s, 4);
        const __m256i xb = _mm256_set1_epi32(xv);
        for (int j = 0; j < NP; ++j) acc[i][j] = _mm256_dpbusd_avx_epi32(acc[i][j], wv[j], xb);
      }
    }
    for (int j = 0; j < NP; ++j) {
      const __m256 sc = _mm256_loadu_ps(&w.scale[static_cast<size_t>(((p + j) * nb + b) * 8)]);
      const __m256 of = _mm256_loadu_ps(&w.offset[static_cast<size_t>(((p + j) * nb + b) * 8)]);
      for (int i = 0; i < MR; ++i) {
        const int64_t qi = (i0 + i) * nb + b;
        __m256 ti = _mm256_load_ps(t[i][j]);
        ti = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[i][j]), _mm256_mul_ps(_mm256_set1_ps(qa.dx[qi]), sc), ti);
        ti = _mm256_fmadd_ps(of, _mm256_set1_ps(qa.dsx[qi]), ti);
        _mm256_store_ps(t[i][j], ti);
      }
    }
  }
  for (int i = 0; i < MR; ++i) {
    for (int j = 0; j < NP; ++j) store_panel(t[i][j], 8, (p + j) * 8, w.n, y + (i0 + i) * ldy, accumulate);
  }
}

template <int NP, int kSteps>
CALQ_AVX_VNNI void avx_vnni_panels(const PackedRows& w, const QuantizedActivations& qa, int64_t p, float* y,
                                   int64_t ldy, bool accumulate) {
  constexpr int MR = 6;
  int64_t i = 0;
  for (; i + MR <= qa.m; i += MR) avx_vnni_tile<MR, NP, kSteps>(w, qa, p, i, y, ldy, accumulate);
  for (; i < qa.m; ++i) avx_vnni_tile<1, NP, kSteps>(w, qa, p, i, y, ldy, accumulate);
}

template <int kSteps>
CALQ_AVX_VNNI void avx_vnni_all(const PackedRows& w, const QuantizedActivations& qa, float* y, int64_t ldy,
                                bool accumulate) {
  constexpr int NP = 2;
  int64_t p = 0;
  for (; p + NP <= w.panels(); p += NP) avx_vnni_panels<NP, kSteps>(w, qa, p, y, ldy, accumulate);
  for (; p < w.panels(); ++p) avx_vnni_panels<1, kSteps>(w, qa, p, y, ldy, accumulate);
}

}  // namespace

CALQ_AVX_VNNI void run_avx_vnni(const PackedRows& w, const QuantizedActivations& qa, float* y, int64_t ldy,
                                bool accumulate) {
  // Blocks of 16 or 32 codes: 4 or 8 steps of 4, unrolled.
  if (w.block == 16) return avx_vnni_all<4>(w, qa, y, ldy, accumulate);
  assert(w.block == 32);
  avx_vnni_all<8>(w, qa, y, ldy, accumulate);
}

namespace {

#define CALQ_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni")))

// AVX-512 VNNI: two panels (32 rows) against MR tokens; the last panel may be alone (NP = 1).
// As in the AVX-VNNI kernel, the steps of a block are unrolled (kSteps known at compile time) and
// the running sums t live in memory: with a loop over a run-time step count and t in registers,
// GCC copied every int32 sum between registers twice per step.
template <int MR, int NP, int kSteps>
CALQ_VNNI void vnni_tile(const PackedRows& w, const QuantizedActivations& qa, int64_t p, int64_t i0, float* y,
                         int64_t ldy, bool accumulate) {
  const int64_t nb = w.nb;
  alignas(64) float t[MR][NP][16] = {};
  const int8_t* xq = qa.q.data();
  for (int64_t b = 0; b < nb; ++b) {
    __m512i acc[MR][NP];
    for (int i = 0; i < MR; ++i) {
      for (int j = 0; j < NP; ++j) acc[i][j] = _mm512_setzero_si512();
    }
    const uint8_t* wb[NP];
    for (int j = 0; j < NP; ++j) wb[j] = &w.codes[static_cast<size_t>(((p + j) * nb + b) * kSteps * 64)];
    const int8_t* xb0 = xq + i0 * qa.k + b * w.block;
    for (int s = 0; s < kSteps; ++s) {
      __m512i wv[NP];
      for (int j = 0; j < NP; ++j) wv[j] = _mm512_loadu_si512(wb[j] + s * 64);
      for (int i = 0; i < MR; ++i) {
        int32_t xv;
        std::memcpy(&xv, xb0 + i * qa.k + 4 * s, 4);
        const __m512i xb = _mm512_set1_epi32(xv);
        for (int j = 0; j < NP; ++j) acc[i][j] = _mm512_dpbusd_epi32(acc[i][j], wv[j], xb);
      }
    }
    for (int j = 0; j < NP; ++j) {
      const __m512 sc = _mm512_loadu_ps(&w.scale[static_cast<size_t>(((p + j) * nb + b) * 16)]);
      const __m512 of = _mm512_loadu_ps(&w.offset[static_cast<size_t>(((p + j) * nb + b) * 16)]);
      for (int i = 0; i < MR; ++i) {
        const int64_t qi = (i0 + i) * nb + b;
        __m512 ti = _mm512_load_ps(t[i][j]);
        ti = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[i][j]), _mm512_mul_ps(_mm512_set1_ps(qa.dx[qi]), sc), ti);
        ti = _mm512_fmadd_ps(of, _mm512_set1_ps(qa.dsx[qi]), ti);
        _mm512_store_ps(t[i][j], ti);
      }
    }
  }
  for (int i = 0; i < MR; ++i) {
    for (int j = 0; j < NP; ++j) store_panel(t[i][j], 16, (p + j) * 16, w.n, y + (i0 + i) * ldy, accumulate);
  }
}

template <int NP, int kSteps>
CALQ_VNNI void vnni_panels(const PackedRows& w, const QuantizedActivations& qa, int64_t p, float* y, int64_t ldy,
                           bool accumulate) {
  constexpr int MR = 6;
  int64_t i = 0;
  for (; i + MR <= qa.m; i += MR) vnni_tile<MR, NP, kSteps>(w, qa, p, i, y, ldy, accumulate);
  for (; i < qa.m; ++i) vnni_tile<1, NP, kSteps>(w, qa, p, i, y, ldy, accumulate);
}

template <int kSteps>
CALQ_VNNI void vnni_all(const PackedRows& w, const QuantizedActivations& qa, float* y, int64_t ldy, bool accumulate) {
  int64_t p = 0;
  for (; p + 2 <= w.panels(); p += 2) vnni_panels<2, kSteps>(w, qa, p, y, ldy, accumulate);
  if (p < w.panels()) vnni_panels<1, kSteps>(w, qa, p, y, ldy, accumulate);
}

}  // namespace

CALQ_VNNI void run_avx512_vnni(const PackedRows& w, const QuantizedActivations& qa, float* y, int64_t ldy,
                               bool accumulate) {
  if (w.block == 16) return vnni_all<4>(w, qa, y, ldy, accumulate);
  assert(w.block == 32);
  vnni_all<8>(w, qa, y, ldy, accumulate);
}

}  // namespace calq::intdot
