// Matrix products of the gradient engine for T ∈ {float, double}, row-major with leading
// dimensions (the three shapes a forward and backward pass need):
//   gemm_nt: c[m, n] (+)= a[m, k] · b[n, k]ᵀ   (forward y = x·Wᵀ; attention scores q·kᵀ)
//   gemm_nn: c[m, n] (+)= a[m, k] · b[k, n]    (dx = dy·W; P·V)
//   gemm_tn: c[m, n] (+)= a[k, m]ᵀ · b[k, n]   (dW = dyᵀ·x; sums over the k rows)
// float goes through core/matmul.h's sgemm products (fixed tiles: the same bits for any thread
// count); double through plain loops accumulating in double, rows of c spread over the pool (each
// element one fixed sequence of operations). The _single versions run on the calling thread (for
// use inside a task that is already parallel).
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "core/matmul.h"
#include "core/thread_pool.h"

namespace calq::grad {

template <typename T>
struct Gemm {
  const T* a = nullptr;
  int64_t lda = 0;
  const T* b = nullptr;
  int64_t ldb = 0;
  T* c = nullptr;
  int64_t ldc = 0;
  int64_t m = 0, n = 0, k = 0;
  bool accumulate = false;
};

namespace detail {

enum class Shape { kNT, kNN, kTN };

inline MatmulArgs to_matmul(const Gemm<float>& g) {
  return MatmulArgs{.x = g.a, .ldx = g.lda, .w = g.b, .ldw = g.ldb, .y = g.c, .ldy = g.ldc, .m = g.m, .n = g.n,
                    .k = g.k, .accumulate = g.accumulate};
}

template <Shape S, typename T>
void loop_rows(const Gemm<T>& g, int64_t i0, int64_t i1) {
  for (int64_t i = i0; i < i1; ++i) {
    for (int64_t j = 0; j < g.n; ++j) {
      double acc = g.accumulate ? static_cast<double>(g.c[i * g.ldc + j]) : 0.0;
      for (int64_t p = 0; p < g.k; ++p) {
        const T av = S == Shape::kTN ? g.a[p * g.lda + i] : g.a[i * g.lda + p];
        const T bv = S == Shape::kNT ? g.b[j * g.ldb + p] : g.b[p * g.ldb + j];
        acc += static_cast<double>(av) * static_cast<double>(bv);
      }
      g.c[i * g.ldc + j] = static_cast<T>(acc);
    }
  }
}

template <Shape S, typename T>
void gemm(ThreadPool* pool, const Gemm<T>& g) {
  if constexpr (std::is_same_v<T, float>) {
    const MatmulArgs a = to_matmul(g);
    if (pool != nullptr) {
      if constexpr (S == Shape::kNT) matmul_nt(*pool, a);
      if constexpr (S == Shape::kNN) matmul_nn(*pool, a);
      if constexpr (S == Shape::kTN) matmul_tn(*pool, a);
    } else {
      if constexpr (S == Shape::kNT) matmul_nt_single(a);
      if constexpr (S == Shape::kNN) matmul_nn_single(a);
      if constexpr (S == Shape::kTN) matmul_tn_single(a);
    }
  } else {
    static_assert(std::is_same_v<T, double>);
    if (pool == nullptr) {
      loop_rows<S>(g, 0, g.m);
      return;
    }
    pool->parallel_for(0, static_cast<size_t>(g.m), Grain{.min_items = 4}, [&](size_t r0, size_t r1) {
      loop_rows<S>(g, static_cast<int64_t>(r0), static_cast<int64_t>(r1));
    });
  }
}

}  // namespace detail

template <typename T>
void gemm_nt(ThreadPool& pool, const Gemm<T>& g) { detail::gemm<detail::Shape::kNT>(&pool, g); }
template <typename T>
void gemm_nn(ThreadPool& pool, const Gemm<T>& g) { detail::gemm<detail::Shape::kNN>(&pool, g); }
template <typename T>
void gemm_tn(ThreadPool& pool, const Gemm<T>& g) { detail::gemm<detail::Shape::kTN>(&pool, g); }
template <typename T>
void gemm_nt_single(const Gemm<T>& g) { detail::gemm<detail::Shape::kNT>(nullptr, g); }
template <typename T>
void gemm_nn_single(const Gemm<T>& g) { detail::gemm<detail::Shape::kNN>(nullptr, g); }
template <typename T>
void gemm_tn_single(const Gemm<T>& g) { detail::gemm<detail::Shape::kTN>(nullptr, g); }

}  // namespace calq::grad
