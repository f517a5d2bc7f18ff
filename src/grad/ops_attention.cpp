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

// Causal attention runs in blocks of kQueryBlock query rows (as the runtime does): block
// [i0, i1) only needs keys [first_key(i0), i1), which skips the masked triangles while keeping each
// product one plain matrix product. Column j of probs row i is key j either way.
constexpr int64_t kQueryBlock = 64;

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
      T* oh = out + b * n * q_ld + h * hd;
      T* P = probs + static_cast<int64_t>(p) * n * n;
      for (int64_t i0 = 0; i0 < n; i0 += kQueryBlock) {
        const int64_t i1 = std::min(n, i0 + kQueryBlock);
        const int64_t k0 = first_key(i0, s.window, n), width = i1 - k0;
        T* block = P + i0 * n + k0;
        gemm_nt_single(Gemm<T>{.a = qh + i0 * q_ld, .lda = q_ld, .b = kh + k0 * kv_ld, .ldb = kv_ld, .c = block,
                               .ldc = n, .m = i1 - i0, .n = width, .k = hd});
        for (int64_t i = i0; i < i1; ++i) {
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
        gemm_nn_single(Gemm<T>{.a = block, .lda = n, .b = vh + k0 * kv_ld, .ldb = kv_ld, .c = oh + i0 * q_ld,
                               .ldc = q_ld, .m = i1 - i0, .n = hd, .k = width});
      }
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
    std::vector<T> ds(static_cast<size_t>(std::min(n, kQueryBlock) * n));
    for (size_t p = p0; p < p1; ++p) {
      const int64_t b = static_cast<int64_t>(p) / s.num_kv_heads, kvh = static_cast<int64_t>(p) % s.num_kv_heads;
      const T* kh = k + b * n * kv_ld + kvh * hd;
      const T* vh = v + b * n * kv_ld + kvh * hd;
      T* dkh = dk + b * n * kv_ld + kvh * hd;
      T* dvh = dv + b * n * kv_ld + kvh * hd;
      for (int64_t j = 0; j < n; ++j) {
        std::fill_n(dkh + j * kv_ld, hd, T(0));
        std::fill_n(dvh + j * kv_ld, hd, T(0));
      }
      // The group's query heads in order, then query blocks in order: dk and dv sum in a fixed order.
      for (int64_t g = 0; g < group; ++g) {
        const int64_t h = kvh * group + g;
        const T* qh = q + b * n * q_ld + h * hd;
        const T* doh = dout + b * n * q_ld + h * hd;
        T* dqh = dq + b * n * q_ld + h * hd;
        const T* P = probs + (b * s.num_heads + h) * n * n;
        for (int64_t i0 = 0; i0 < n; i0 += kQueryBlock) {
          const int64_t i1 = std::min(n, i0 + kQueryBlock), rows = i1 - i0;
          const int64_t k0 = first_key(i0, s.window, n), width = i1 - k0;
          const T* pblock = P + i0 * n + k0;
          // dV += Pᵀ · dO.
          gemm_tn_single(Gemm<T>{.a = pblock, .lda = n, .b = doh + i0 * q_ld, .ldb = q_ld, .c = dvh + k0 * kv_ld,
                                 .ldc = kv_ld, .m = width, .n = hd, .k = rows, .accumulate = true});
          // dP = dO · Vᵀ, then dS = P ⊙ (dP − Σ_j P ⊙ dP) · scale (the softmax and score scale).
          gemm_nt_single(Gemm<T>{.a = doh + i0 * q_ld, .lda = q_ld, .b = vh + k0 * kv_ld, .ldb = kv_ld,
                                 .c = ds.data(), .ldc = width, .m = rows, .n = width, .k = hd});
          for (int64_t i = i0; i < i1; ++i) {
            const T* prow = pblock + (i - i0) * n;
            T* row = ds.data() + (i - i0) * width;
            const int64_t lo = first_key(i, s.window, n) - k0;
            double dot = 0.0;
            for (int64_t j = lo; j <= i - k0; ++j) dot += static_cast<double>(prow[j]) * static_cast<double>(row[j]);
            const auto d = static_cast<T>(dot);
            for (int64_t j = 0; j < width; ++j) row[j] = prow[j] * (row[j] - d) * scale;
          }
          // dQ = dS · K; dK += dSᵀ · Q.
          gemm_nn_single(Gemm<T>{.a = ds.data(), .lda = width, .b = kh + k0 * kv_ld, .ldb = kv_ld,
                                 .c = dqh + i0 * q_ld, .ldc = q_ld, .m = rows, .n = hd, .k = width});
          gemm_tn_single(Gemm<T>{.a = ds.data(), .lda = width, .b = qh + i0 * q_ld, .ldb = q_ld,
                                 .c = dkh + k0 * kv_ld, .ldc = kv_ld, .m = width, .n = hd, .k = rows,
                                 .accumulate = true});
        }
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
