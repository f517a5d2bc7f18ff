#include "grad/ops_attention.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <vector>

#include "grad/ops_gemm.h"

namespace calq::grad {
namespace {

template <typename T>
T score_scale(int64_t head_dim) {
  // The runtime's float rounding of 1/sqrt(d) (model/forward.cpp), widened for double.
  return static_cast<T>(1.0f / std::sqrt(static_cast<float>(head_dim)));
}

// First visible key of query i.
int64_t first_key(int64_t i, int64_t window, int64_t seq_len) {
  return window > 0 && window < seq_len ? std::max<int64_t>(0, i - window + 1) : 0;
}

}  // namespace

template <typename T>
void attention_forward(ThreadPool& pool, const AttentionShape& s, const T* q, const T* k, const T* v, T* probs,
                       T* out) {
  assert(s.num_heads % s.num_kv_heads == 0);
  const int64_t n = s.seq_len, hd = s.head_dim, q_ld = s.q_dim(), kv_ld = s.kv_dim();
  const int64_t group = s.num_heads / s.num_kv_heads;
  const T scale = score_scale<T>(hd);
  pool.parallel_for(0, static_cast<size_t>(s.batch * s.num_heads), Grain{.min_items = 1}, [&](size_t p0, size_t p1) {
    for (size_t p = p0; p < p1; ++p) {
      const int64_t b = static_cast<int64_t>(p) / s.num_heads, h = static_cast<int64_t>(p) % s.num_heads;
      const int64_t kvh = h / group;
      const T* qh = q + b * n * q_ld + h * hd;
      const T* kh = k + b * n * kv_ld + kvh * hd;
      const T* vh = v + b * n * kv_ld + kvh * hd;
      T* P = probs + static_cast<int64_t>(p) * n * n;
      gemm_nt_single(Gemm<T>{.a = qh, .lda = q_ld, .b = kh, .ldb = kv_ld, .c = P, .ldc = n, .m = n, .n = n, .k = hd});
      for (int64_t i = 0; i < n; ++i) {
        T* row = P + i * n;
        const int64_t lo = first_key(i, s.window, n);
        T mx = row[lo] * scale;
        for (int64_t j = lo; j <= i; ++j) {
          row[j] *= scale;
          mx = std::max(mx, row[j]);
        }
        double sum = 0.0;
        for (int64_t j = lo; j <= i; ++j) {
          row[j] = std::exp(row[j] - mx);
          sum += static_cast<double>(row[j]);
        }
        const T inv = static_cast<T>(1.0 / sum);
        for (int64_t j = lo; j <= i; ++j) row[j] *= inv;
        std::fill(row, row + lo, T(0));
        std::fill(row + i + 1, row + n, T(0));
      }
      gemm_nn_single(Gemm<T>{.a = P, .lda = n, .b = vh, .ldb = kv_ld, .c = out + b * n * q_ld + h * hd, .ldc = q_ld,
                             .m = n, .n = hd, .k = n});
    }
  });
}

template <typename T>
void attention_backward(ThreadPool& pool, const AttentionShape& s, const T* q, const T* k, const T* v, const T* probs,
                        const T* dout, T* dq, T* dk, T* dv) {
  const int64_t n = s.seq_len, hd = s.head_dim, q_ld = s.q_dim(), kv_ld = s.kv_dim();
  const int64_t group = s.num_heads / s.num_kv_heads;
  const T scale = score_scale<T>(hd);
  pool.parallel_for(0, static_cast<size_t>(s.batch * s.num_kv_heads), Grain{.min_items = 1}, [&](size_t p0,
                                                                                                   size_t p1) {
    std::vector<T> ds(static_cast<size_t>(n * n));
    for (size_t p = p0; p < p1; ++p) {
      const int64_t b = static_cast<int64_t>(p) / s.num_kv_heads, kvh = static_cast<int64_t>(p) % s.num_kv_heads;
      const T* kh = k + b * n * kv_ld + kvh * hd;
      const T* vh = v + b * n * kv_ld + kvh * hd;
      T* dkh = dk + b * n * kv_ld + kvh * hd;
      T* dvh = dv + b * n * kv_ld + kvh * hd;
      for (int64_t g = 0; g < group; ++g) {
        const int64_t h = kvh * group + g;
        const T* qh = q + b * n * q_ld + h * hd;
        const T* doh = dout + b * n * q_ld + h * hd;
        const T* P = probs + (b * s.num_heads + h) * n * n;
        const bool acc = g > 0;  // the group's heads add into one dk, dv
        // dV += Pᵀ · dO.
        gemm_tn_single(Gemm<T>{.a = P, .lda = n, .b = doh, .ldb = q_ld, .c = dvh, .ldc = kv_ld, .m = n, .n = hd,
                               .k = n, .accumulate = acc});
        // dP = dO · Vᵀ, then dS = P ⊙ (dP − Σ_j P ⊙ dP) · scale (the softmax and score scale).
        gemm_nt_single(Gemm<T>{.a = doh, .lda = q_ld, .b = vh, .ldb = kv_ld, .c = ds.data(), .ldc = n, .m = n, .n = n,
                               .k = hd});
        for (int64_t i = 0; i < n; ++i) {
          const T* prow = P + i * n;
          T* row = ds.data() + i * n;
          const int64_t lo = first_key(i, s.window, n);
          double dot = 0.0;
          for (int64_t j = lo; j <= i; ++j) dot += static_cast<double>(prow[j]) * static_cast<double>(row[j]);
          const auto d = static_cast<T>(dot);
          for (int64_t j = 0; j < n; ++j) row[j] = prow[j] * (row[j] - d) * scale;
        }
        // dQ = dS · K; dK += dSᵀ · Q.
        gemm_nn_single(Gemm<T>{.a = ds.data(), .lda = n, .b = kh, .ldb = kv_ld, .c = dq + b * n * q_ld + h * hd,
                               .ldc = q_ld, .m = n, .n = hd, .k = n});
        gemm_tn_single(Gemm<T>{.a = ds.data(), .lda = n, .b = qh, .ldb = q_ld, .c = dkh, .ldc = kv_ld, .m = n, .n = hd,
                               .k = n, .accumulate = acc});
      }
    }
  });
}

template void attention_forward<float>(ThreadPool&, const AttentionShape&, const float*, const float*, const float*,
                                       float*, float*);
template void attention_forward<double>(ThreadPool&, const AttentionShape&, const double*, const double*,
                                        const double*, double*, double*);
template void attention_backward<float>(ThreadPool&, const AttentionShape&, const float*, const float*, const float*,
                                        const float*, const float*, float*, float*, float*);
template void attention_backward<double>(ThreadPool&, const AttentionShape&, const double*, const double*,
                                         const double*, const double*, const double*, double*, double*, double*);

}  // namespace calq::grad
