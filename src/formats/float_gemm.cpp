// The fast float matmul of float_gemm.h: weight rows packed 32 at a time into float32 panels
// ([k][32], widened from f16/bf16 or decoded from 4-bit table codes once per product), then an
// AVX-512 micro-kernel of 12 tokens × 32 rows holding its 24 sums in registers over the whole of k:
// the sequential chain of the header.
#include "formats/float_gemm.h"

#include <immintrin.h>

#include <algorithm>
#include <array>
#include <utility>
#include <cassert>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/cpu_features.h"
#include "core/dtype.h"
#include "core/matmul.h"

namespace calq {
namespace {

constexpr int kPanel = 32;  // weight rows per packed panel (two AVX-512 vectors)
constexpr int kTile = 12;   // tokens per micro-kernel call

#define CALQ_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,fma,f16c")))

// The 16 levels sit in one register; vpermps picks each element's level by its code, then one
// multiplication by the block's scale (blocks are multiples of 16, so a vector never straddles two).
CALQ_AVX512 void lut_decode_avx512(const uint8_t* codes, const float* scale, int block, const float* table, int64_t k,
                                   float* out) {
  const __m512 levels = _mm512_loadu_ps(table);
  for (int64_t j = 0; j < k; j += 16) {
    const __m512i idx = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(codes + j)));
    const __m512 v = _mm512_permutexvar_ps(idx, levels);
    _mm512_storeu_ps(out + j, _mm512_mul_ps(v, _mm512_set1_ps(scale[j / block])));
  }
}

// Decode scratch of one thread: a row as float32, and a lookup-table row's codes and scales.
struct RowScratch {
  std::vector<float> row;
  std::vector<uint8_t> codes;
  std::vector<float> scale;
};

// Row r of the weight as float32 (k values): f32 rows in place, the others decoded into s.row.
// simd: f16/bf16 widened by the SIMD conversion and lookup-table codes by the AVX-512 decoder;
// otherwise by scalar code. Both are exact (widening) or the same single multiplication (tables).
const float* weight_row(const FloatGemmArgs& a, int64_t r, RowScratch& s, bool simd) {
  if (a.type == FloatWeight::kF32) return static_cast<const float*>(a.w) + r * a.ldw;
  s.row.resize(static_cast<size_t>(a.k));
  if (a.type == FloatWeight::kLut4) {
    const LutRowCodec& c = *a.lut->format->lut_row_codec();
    s.codes.resize(static_cast<size_t>(a.k));
    s.scale.resize(static_cast<size_t>(a.k / c.block()));
    c.decode_row(a.lut->bytes.data(), a.lut->rows, a.k, r, s.codes.data(), s.scale.data());
    if (simd) {
      lut_decode_avx512(s.codes.data(), s.scale.data(), c.block(), c.table().data(), a.k, s.row.data());
    } else {
      for (int64_t j = 0; j < a.k; ++j) s.row[j] = c.table()[s.codes[j]] * s.scale[j / c.block()];
    }
    return s.row.data();
  }
  const DType t = a.type == FloatWeight::kF16 ? DType::kF16 : DType::kBF16;
  const auto* h = static_cast<const uint16_t*>(a.w) + r * a.ldw;
  if (simd) {
    convert_to_f32(t, h, s.row.data(), static_cast<size_t>(a.k));
  } else {
    convert_to_f32_scalar(t, h, s.row.data(), static_cast<size_t>(a.k));
  }
  return s.row.data();
}

// Rows [r0, r0 + rows) (rows ≤ kPanel) into panel[k][kPanel], missing rows as zeros; each row is
// decoded whole (weight_row), then placed.
void pack_panel(const FloatGemmArgs& a, int64_t r0, int64_t rows, float* panel, RowScratch& s) {
  for (int64_t l = 0; l < kPanel; ++l) {
    if (l >= rows) {
      for (int64_t j = 0; j < a.k; ++j) panel[j * kPanel + l] = 0.0f;
      continue;
    }
    const float* src = weight_row(a, r0 + l, s, true);
    for (int64_t j = 0; j < a.k; ++j) panel[j * kPanel + l] = src[j];
  }
}

template <int MR>
CALQ_AVX512 void tile(const float* panel, const float* x, int64_t ldx, int64_t k, float* y, int64_t ldy, int64_t rows,
                      bool accumulate) {
  __m512 t0[MR], t1[MR];
  for (int i = 0; i < MR; ++i) t0[i] = t1[i] = _mm512_setzero_ps();
  for (int64_t j = 0; j < k; ++j) {
    const __m512 w0 = _mm512_loadu_ps(panel + j * kPanel);
    const __m512 w1 = _mm512_loadu_ps(panel + j * kPanel + 16);
    for (int i = 0; i < MR; ++i) {
      const __m512 xb = _mm512_set1_ps(x[i * ldx + j]);
      t0[i] = _mm512_fmadd_ps(xb, w0, t0[i]);
      t1[i] = _mm512_fmadd_ps(xb, w1, t1[i]);
    }
  }
  for (int i = 0; i < MR; ++i) {
    float out[kPanel];
    _mm512_storeu_ps(out, t0[i]);
    _mm512_storeu_ps(out + 16, t1[i]);
    float* yi = y + i * ldy;
    for (int64_t l = 0; l < rows; ++l) yi[l] = accumulate ? yi[l] + out[l] : out[l];
  }
}

using TileFn = void (*)(const float*, const float*, int64_t, int64_t, float*, int64_t, int64_t, bool);

template <int... MR>
constexpr auto make_tiles(std::integer_sequence<int, MR...>) {
  return std::array<TileFn, sizeof...(MR)>{&tile<MR + 1>...};
}
constexpr auto kTiles = make_tiles(std::make_integer_sequence<int, kTile>{});

}  // namespace

bool float_gemm_lut_supported(const QuantizedTensor& w) {
  return w.format != nullptr && w.format->lut_row_codec() != nullptr && w.cols % w.format->lut_row_codec()->block() == 0;
}

bool float_gemm_available() { return static_cast<int>(kernel_level()) >= static_cast<int>(KernelLevel::kAvx512Vnni); }

void float_gemm(ThreadPool& pool, const FloatGemmArgs& a) {
  assert(float_gemm_available());
  assert(a.type != FloatWeight::kLut4 ||
         (a.lut != nullptr && float_gemm_lut_supported(*a.lut) && a.lut->rows == a.n && a.lut->cols == a.k));
  if (a.m == 0 || a.n == 0) return;
  const int64_t blocks = (a.n + kMatmulColumnBlock - 1) / kMatmulColumnBlock;
  pool.parallel_for(0, static_cast<size_t>(blocks), Grain{.min_items = 1}, [&](size_t b0, size_t b1) {
    thread_local std::vector<float> panel;  // per thread, kept between calls
    thread_local RowScratch scratch;
    panel.resize(static_cast<size_t>(a.k * kPanel));
    for (size_t b = b0; b < b1; ++b) {
      const int64_t n0 = static_cast<int64_t>(b) * kMatmulColumnBlock;
      const int64_t n1 = std::min(a.n, n0 + kMatmulColumnBlock);
      for (int64_t r0 = n0; r0 < n1; r0 += kPanel) {
        const int64_t rows = std::min<int64_t>(kPanel, n1 - r0);
        pack_panel(a, r0, rows, panel.data(), scratch);
        for (int64_t i = 0; i < a.m; i += kTile) {
          const int64_t mr = std::min<int64_t>(kTile, a.m - i);
          kTiles[static_cast<size_t>(mr - 1)](panel.data(), a.x + i * a.ldx, a.ldx, a.k, a.y + i * a.ldy + r0, a.ldy,
                                              rows, a.accumulate);
        }
      }
    }
  });
}

void float_gemm_reference(const FloatGemmArgs& a) {
  assert(a.type != FloatWeight::kLut4 ||
         (a.lut != nullptr && float_gemm_lut_supported(*a.lut) && a.lut->rows == a.n && a.lut->cols == a.k));
  RowScratch s;
  for (int64_t r = 0; r < a.n; ++r) {
    const float* w = weight_row(a, r, s, false);
    for (int64_t i = 0; i < a.m; ++i) {
      float t = 0.0f;
      for (int64_t j = 0; j < a.k; ++j) t = std::fma(a.x[i * a.ldx + j], w[j], t);
      float& y = a.y[i * a.ldy + r];
      y = a.accumulate ? y + t : t;
    }
  }
}

}  // namespace calq
