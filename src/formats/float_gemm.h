// Float matmul with f32, f16 or bf16 weights used as they are stored: y = x·Wᵀ, fp32 activations
// and fp32 accumulation, on AVX-512 FMA (issue 20's fast float path: OpenBLAS's kernel for this
// build is AVX2, and an f16/bf16 weight would otherwise be widened into a float32 tile first).
//
// The product, defined exactly (the AVX-512 kernel and the scalar twin compute these bits): for
// token i and weight row r, t = 0; for j = 0 .. k−1 in order: t = fma(x[i, j], w(r, j), t), with
// w(r, j) the weight widened to float32 (exact for f16 and bf16); then y[i, r] = t, or y[i, r] + t
// with accumulate. (OpenBLAS sums in another order: results differ from matmul_nt in the last bits.)
// Contract:
//  * float_gemm_available(): the CPU has the kernel level kAvx512Vnni (AVX-512 F/BW/VL; the
//    kernel itself needs only AVX-512F and F16C) and kernel_level() allows it. Callers fall back to
//    matmul_nt / matmul_nt_quantized otherwise.
//  * float_gemm equals float_gemm_reference bit for bit, for any thread count; work is cut into
//    fixed blocks of kMatmulColumnBlock weight rows.
#pragma once

#include <cstdint>

#include "core/thread_pool.h"

namespace calq {

enum class FloatWeight : uint8_t { kF32, kF16, kBF16 };

struct FloatGemmArgs {
  const float* x = nullptr;
  int64_t ldx = 0;            // >= k
  const void* w = nullptr;    // [n, k] row-major, elements of `type`
  int64_t ldw = 0;            // row stride of w in elements (>= k)
  FloatWeight type = FloatWeight::kF32;
  float* y = nullptr;
  int64_t ldy = 0;            // >= n
  int64_t m = 0, n = 0, k = 0;
  bool accumulate = false;
};

bool float_gemm_available();
void float_gemm(ThreadPool& pool, const FloatGemmArgs& args);  // asserts float_gemm_available()
void float_gemm_reference(const FloatGemmArgs& args);

}  // namespace calq
