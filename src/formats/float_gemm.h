// Float matmul with f32, f16 or bf16 weights used as they are stored, or with 4-bit lookup-table
// weights (nf4, fp4, mxfp4, nvfp4) decoded in the kernel: y = x·Wᵀ, fp32 activations and fp32
// accumulation, on AVX-512 FMA (issue 20's fast float path: OpenBLAS's kernel for this build is
// AVX2, and a compressed weight would otherwise be widened into a float32 tile first).
//
// LutRowCodec — a format whose elements are one of 16 float levels times a per-block scale:
//     Ŵ[j] = table[c[j]] · scale[j / block],   c ∈ [0, 15],
// one float32 multiplication, the one the format's own decoder performs, so Ŵ is the format's
// dequantized value bit for bit (formats keep that so; float_gemm_test checks it). The levels are
// not integers (nf4's are irrational-looking fractions), so these formats take the float path, not
// the integer one: the weights stay exact and only the summation order differs from the exact path.
//
// The product, defined exactly (the AVX-512 kernel and the scalar twin compute these bits): for
// token i and weight row r, t = 0; for j = 0 .. k−1 in order: t = fma(x[i, j], w(r, j), t), with
// w(r, j) the weight widened to float32 (exact for f16 and bf16; Ŵ above for kLut4); then
// y[i, r] = t, or y[i, r] + t with accumulate. (OpenBLAS sums in another order: results differ
// from matmul_nt and matmul_nt_quantized in the last bits.)
// Contract:
//  * float_gemm_available(): kernel_level() is kAvx512Vnni (AVX-512 F/BW/VL; the kernel itself
//    needs only AVX-512F and F16C). Callers fall back to matmul_nt / matmul_nt_quantized otherwise.
//  * float_gemm_lut_supported(w): w's format has a LutRowCodec (w.cols is then a multiple of its
//    block, a multiple of 16, as the format requires).
//  * float_gemm equals float_gemm_reference bit for bit, for any thread count; work is cut into
//    fixed blocks of kMatmulColumnBlock weight rows.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

#include "core/thread_pool.h"
#include "formats/qtensor.h"

namespace calq {

class LutRowCodec {
 public:
  LutRowCodec(int block, const std::array<float, 16>& table) : block_(block), table_(table) {}
  virtual ~LutRowCodec() = default;
  int block() const { return block_; }  // elements per scale: 16, 32 or 64
  const std::array<float, 16>& table() const { return table_; }
  // Row r of the [rows, cols] tensor whose bytes (all of them, a trailer included) are `data`
  // → codes[cols] (each < 16) and scale[cols / block].
  virtual void decode_row(const std::byte* data, int64_t rows, int64_t cols, int64_t r, uint8_t* codes,
                          float* scale) const = 0;

 private:
  int block_;
  std::array<float, 16> table_;
};

bool float_gemm_lut_supported(const QuantizedTensor& w);

enum class FloatWeight : uint8_t { kF32, kF16, kBF16, kLut4 };

struct FloatGemmArgs {
  const float* x = nullptr;
  int64_t ldx = 0;            // >= k
  const void* w = nullptr;    // [n, k] row-major, elements of `type` (unused for kLut4)
  int64_t ldw = 0;            // row stride of w in elements (>= k; unused for kLut4)
  FloatWeight type = FloatWeight::kF32;
  // kLut4: the weight; float_gemm_lut_supported(*lut), n == lut->rows, k == lut->cols.
  const QuantizedTensor* lut = nullptr;
  float* y = nullptr;
  int64_t ldy = 0;            // >= n
  int64_t m = 0, n = 0, k = 0;
  bool accumulate = false;
};

bool float_gemm_available();
void float_gemm(ThreadPool& pool, const FloatGemmArgs& args);  // asserts float_gemm_available()
void float_gemm_reference(const FloatGemmArgs& args);

}  // namespace calq
