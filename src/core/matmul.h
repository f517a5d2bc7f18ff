// Dense float32 matrix products used by the runtime.
//
// matmul_nt: y[m, n] = x[m, k] · w[n, k]^T  (w is a PyTorch-layout [out, in] weight), row-major,
// with leading dimensions. The fast path calls single-threaded OpenBLAS sgemm on fixed 256-column
// blocks of the output, spread over the injected ThreadPool; the blocks do not depend on the
// thread count, so neither do the results (bit for bit).
// matmul_nt_reference is the plain scalar twin (double accumulation) that tests compare against.
#pragma once

#include <cstdint>

#include "core/thread_pool.h"

namespace calq {

// Every product is computed as sgemm calls on fixed blocks of this many output columns (rows of
// w), whatever the thread count: OpenBLAS's rounding of an element depends on the shape of the
// call it is in, so fixing the blocks is what makes results identical on 1 or N threads. Kernels
// that produce w block by block (formats/qtensor.h) use the same blocks to get the same bits.
inline constexpr int64_t kMatmulColumnBlock = 256;

struct MatmulArgs {
  const float* x = nullptr;
  int64_t ldx = 0;  // row stride of x (>= k)
  const float* w = nullptr;
  int64_t ldw = 0;  // row stride of w (>= k)
  float* y = nullptr;
  int64_t ldy = 0;  // row stride of y (>= n)
  int64_t m = 0, n = 0, k = 0;
  bool accumulate = false;  // y += x·wᵀ instead of y = x·wᵀ
};

void matmul_nt(ThreadPool& pool, const MatmulArgs& args);
void matmul_nt_single(const MatmulArgs& args);  // one sgemm call on the calling thread
void matmul_nt_reference(const MatmulArgs& args);

// The other two products a backward pass needs, with the same MatmulArgs (and its accumulate):
//  * matmul_nn: y[m, n] (+)= x[m, k] · w[k, n]  (w row-major [k, n], ldw >= n): dx = dy · W.
//  * matmul_tn: y[m, n] (+)= x[k, m]ᵀ · w[k, n] (x row-major [k, m], ldx >= m): dW = dyᵀ · x,
//    summing over the k rows (tokens).
// The pooled versions cut y into fixed tiles of kMatmulColumnBlock × kMatmulColumnBlock and call
// one single-threaded sgemm per tile: the tiles do not depend on the thread count, so neither do
// the bits. The _single versions are one sgemm call on the calling thread; the _reference versions
// their scalar twins (double accumulation) for tests.
void matmul_nn(ThreadPool& pool, const MatmulArgs& args);
void matmul_nn_single(const MatmulArgs& args);
void matmul_nn_reference(const MatmulArgs& args);
void matmul_tn(ThreadPool& pool, const MatmulArgs& args);
void matmul_tn_single(const MatmulArgs& args);
void matmul_tn_reference(const MatmulArgs& args);

// y[m, n] = x[m, k] · v[k, n] (both row-major), single-threaded sgemm; for attention P·V.
void matmul_nn_single(const float* x, int64_t ldx, const float* v, int64_t ldv, float* y, int64_t ldy,
                      int64_t m, int64_t n, int64_t k);

// Makes the BLAS library single-threaded: calq parallelises over its own pool.
void init_blas_threading();

}  // namespace calq
