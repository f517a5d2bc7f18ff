#include "grad/ops_basic.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.h"
#include "grad/ops_gemm.h"
#include "model/forward.h"

namespace calq::grad {
namespace {

constexpr Grain kRowGrain{.min_items = 16};
// Column-parallel reductions over tokens: this many columns per task.
constexpr int64_t kColumnChunk = 64;

// fn(c0, c1) over fixed column chunks [c0, c1) of `cols`.
template <typename Fn>
void for_column_chunks(ThreadPool& pool, int64_t cols, const Fn& fn) {
  const int64_t chunks = (cols + kColumnChunk - 1) / kColumnChunk;
  pool.parallel_for(0, static_cast<size_t>(chunks), Grain{.min_items = 1}, [&](size_t b0, size_t b1) {
    for (size_t b = b0; b < b1; ++b) {
      const int64_t c0 = static_cast<int64_t>(b) * kColumnChunk;
      fn(c0, std::min(cols, c0 + kColumnChunk));
    }
  });
}

template <typename Fn>
void for_rows(ThreadPool& pool, int64_t rows, const Fn& fn) {
  pool.parallel_for(0, static_cast<size_t>(rows), kRowGrain, [&](size_t r0, size_t r1) {
    for (size_t r = r0; r < r1; ++r) fn(static_cast<int64_t>(r));
  });
}

void check_ids(std::span<const int32_t> ids, int64_t vocab) {
  for (size_t t = 0; t < ids.size(); ++t) {
    if (ids[t] < 0 || ids[t] >= vocab) {
      fail(ErrorKind::kInvalidArgument, "token id {} at position {} is outside the vocabulary [0, {})", ids[t], t,
           vocab);
    }
  }
}

// 1 / sqrt(mean(x²) + eps) with the sum of squares in double, rounded to T (as the runtime does).
template <typename T>
T inv_rms_row(const T* x, int64_t cols, double eps) {
  double ss = 0.0;
  for (int64_t i = 0; i < cols; ++i) ss += static_cast<double>(x[i]) * static_cast<double>(x[i]);
  return static_cast<T>(1.0 / std::sqrt(ss / static_cast<double>(cols) + eps));
}

}  // namespace

template <typename T>
void linear_forward(ThreadPool& pool, const T* x, int64_t rows, int64_t in, const T* w, int64_t out, const T* bias,
                    T* y) {
  gemm_nt(pool, Gemm<T>{.a = x, .lda = in, .b = w, .ldb = in, .c = y, .ldc = out, .m = rows, .n = out, .k = in});
  if (bias == nullptr) return;
  for_rows(pool, rows, [&](int64_t r) {
    T* yr = y + r * out;
    for (int64_t j = 0; j < out; ++j) yr[j] += bias[j];
  });
}

template <typename T>
void linear_backward(ThreadPool& pool, const T* x, int64_t rows, int64_t in, const T* w, int64_t out, const T* dy,
                     T* dx, bool accumulate_dx, T* dw, T* db) {
  if (dx != nullptr) {
    gemm_nn(pool, Gemm<T>{.a = dy, .lda = out, .b = w, .ldb = in, .c = dx, .ldc = in, .m = rows, .n = in, .k = out,
                          .accumulate = accumulate_dx});
  }
  if (dw != nullptr) {
    gemm_tn(pool, Gemm<T>{.a = dy, .lda = out, .b = x, .ldb = in, .c = dw, .ldc = in, .m = out, .n = in, .k = rows,
                          .accumulate = true});
  }
  if (db != nullptr) {
    for_column_chunks(pool, out, [&](int64_t c0, int64_t c1) {
      for (int64_t j = c0; j < c1; ++j) {
        double acc = 0.0;
        for (int64_t r = 0; r < rows; ++r) acc += static_cast<double>(dy[r * out + j]);
        db[j] += static_cast<T>(acc);
      }
    });
  }
}

template <typename T>
void embedding_forward(const T* table, int64_t vocab, int64_t cols, std::span<const int32_t> ids, T* hidden) {
  check_ids(ids, vocab);
  for (size_t t = 0; t < ids.size(); ++t) {
    std::copy_n(table + static_cast<int64_t>(ids[t]) * cols, cols, hidden + static_cast<int64_t>(t) * cols);
  }
}

template <typename T>
void embedding_backward(ThreadPool& pool, int64_t vocab, int64_t cols, std::span<const int32_t> ids,
                        const T* dhidden, T* dtable) {
  check_ids(ids, vocab);
  // Columns in parallel, tokens in order within each: a row hit twice sums in token order.
  for_column_chunks(pool, cols, [&](int64_t c0, int64_t c1) {
    for (size_t t = 0; t < ids.size(); ++t) {
      const T* src = dhidden + static_cast<int64_t>(t) * cols;
      T* dst = dtable + static_cast<int64_t>(ids[t]) * cols;
      for (int64_t j = c0; j < c1; ++j) dst[j] += src[j];
    }
  });
}

template <typename T>
void rms_norm_forward(ThreadPool& pool, const T* x, const T* weight, int64_t rows, int64_t cols, double eps, T* y,
                      T* inv_rms) {
  for_rows(pool, rows, [&](int64_t r) {
    const T* xr = x + r * cols;
    T* yr = y + r * cols;
    const T inv = inv_rms_row(xr, cols, eps);
    for (int64_t i = 0; i < cols; ++i) yr[i] = weight[i] * (xr[i] * inv);
    if (inv_rms != nullptr) inv_rms[r] = inv;
  });
}

template <typename T>
void rms_norm_backward(ThreadPool& pool, const T* x, const T* weight, int64_t rows, int64_t cols, double eps,
                       const T* dy, T* dx, bool accumulate_dx, T* dweight) {
  std::vector<T> inv(static_cast<size_t>(rows));
  for_rows(pool, rows, [&](int64_t r) {
    const T* xr = x + r * cols;
    const T* dyr = dy + r * cols;
    T* dxr = dx + r * cols;
    const T rr = inv_rms_row(xr, cols, eps);
    inv[static_cast<size_t>(r)] = rr;
    // mean(g ⊙ x̂) with g = dy ⊙ weight.
    double dot = 0.0;
    for (int64_t i = 0; i < cols; ++i) {
      dot += static_cast<double>(dyr[i] * weight[i]) * static_cast<double>(xr[i] * rr);
    }
    const T mean = static_cast<T>(dot / static_cast<double>(cols));
    for (int64_t i = 0; i < cols; ++i) {
      const T v = rr * (dyr[i] * weight[i] - (xr[i] * rr) * mean);
      dxr[i] = accumulate_dx ? dxr[i] + v : v;
    }
  });
  if (dweight == nullptr) return;
  for_column_chunks(pool, cols, [&](int64_t c0, int64_t c1) {
    for (int64_t j = c0; j < c1; ++j) {
      double acc = 0.0;
      for (int64_t r = 0; r < rows; ++r) {
        acc += static_cast<double>(dy[r * cols + j]) * static_cast<double>(x[r * cols + j] * inv[static_cast<size_t>(r)]);
      }
      dweight[j] += static_cast<T>(acc);
    }
  });
}

template <typename T>
void rope_tables_t(int64_t seq_len, int64_t head_dim, double theta, T* cos_out, T* sin_out) {
  const auto n = static_cast<size_t>(seq_len * (head_dim / 2));
  std::vector<float> c(n), s(n);
  model::rope_tables(seq_len, head_dim, theta, c.data(), s.data());
  std::copy(c.begin(), c.end(), cos_out);
  std::copy(s.begin(), s.end(), sin_out);
}

namespace {
template <typename T, bool kBackward>
void rope(ThreadPool& pool, T* x, int64_t ld, int64_t batch, int64_t seq_len, int64_t heads, int64_t head_dim,
          const T* cos_t, const T* sin_t) {
  const int64_t half = head_dim / 2;
  for_rows(pool, batch * seq_len, [&](int64_t row) {
    const int64_t t = row % seq_len;
    const T* c = cos_t + t * half;
    const T* s = sin_t + t * half;
    for (int64_t h = 0; h < heads; ++h) {
      T* v = x + row * ld + h * head_dim;
      for (int64_t i = 0; i < half; ++i) {
        const T a = v[i];
        const T b = v[i + half];
        if constexpr (kBackward) {
          v[i] = a * c[i] + b * s[i];
          v[i + half] = b * c[i] - a * s[i];
        } else {
          v[i] = a * c[i] - b * s[i];
          v[i + half] = b * c[i] + a * s[i];
        }
      }
    }
  });
}
}  // namespace

template <typename T>
void rope_forward(ThreadPool& pool, T* x, int64_t ld, int64_t batch, int64_t seq_len, int64_t heads, int64_t head_dim,
                  const T* cos_t, const T* sin_t) {
  rope<T, false>(pool, x, ld, batch, seq_len, heads, head_dim, cos_t, sin_t);
}

template <typename T>
void rope_backward(ThreadPool& pool, T* dx, int64_t ld, int64_t batch, int64_t seq_len, int64_t heads,
                   int64_t head_dim, const T* cos_t, const T* sin_t) {
  rope<T, true>(pool, dx, ld, batch, seq_len, heads, head_dim, cos_t, sin_t);
}

namespace {
constexpr Grain kElementGrain{.min_items = 4096};
}  // namespace

template <typename T>
void swiglu_forward(ThreadPool& pool, const T* g, const T* u, int64_t n, T* h) {
  pool.parallel_for(0, static_cast<size_t>(n), kElementGrain, [&](size_t i0, size_t i1) {
    for (size_t i = i0; i < i1; ++i) h[i] = g[i] / (T(1) + std::exp(-g[i])) * u[i];
  });
}

template <typename T>
void swiglu_backward(ThreadPool& pool, const T* g, const T* u, const T* dh, int64_t n, T* dg, T* du) {
  pool.parallel_for(0, static_cast<size_t>(n), kElementGrain, [&](size_t i0, size_t i1) {
    for (size_t i = i0; i < i1; ++i) {
      const T sig = T(1) / (T(1) + std::exp(-g[i]));
      const T silu = g[i] * sig;
      const T dhi = dh[i];
      dg[i] = dhi * u[i] * (sig * (T(1) + g[i] * (T(1) - sig)));
      du[i] = dhi * silu;
    }
  });
}

#define CALQ_GRAD_INSTANTIATE(T)                                                                                     \
  template void linear_forward<T>(ThreadPool&, const T*, int64_t, int64_t, const T*, int64_t, const T*, T*);         \
  template void linear_backward<T>(ThreadPool&, const T*, int64_t, int64_t, const T*, int64_t, const T*, T*, bool,   \
                                   T*, T*);                                                                          \
  template void embedding_forward<T>(const T*, int64_t, int64_t, std::span<const int32_t>, T*);                      \
  template void embedding_backward<T>(ThreadPool&, int64_t, int64_t, std::span<const int32_t>, const T*, T*);        \
  template void rms_norm_forward<T>(ThreadPool&, const T*, const T*, int64_t, int64_t, double, T*, T*);              \
  template void rms_norm_backward<T>(ThreadPool&, const T*, const T*, int64_t, int64_t, double, const T*, T*, bool,  \
                                     T*);                                                                            \
  template void rope_tables_t<T>(int64_t, int64_t, double, T*, T*);                                                  \
  template void rope_forward<T>(ThreadPool&, T*, int64_t, int64_t, int64_t, int64_t, int64_t, const T*, const T*);   \
  template void rope_backward<T>(ThreadPool&, T*, int64_t, int64_t, int64_t, int64_t, int64_t, const T*, const T*);  \
  template void swiglu_forward<T>(ThreadPool&, const T*, const T*, int64_t, T*);                                     \
  template void swiglu_backward<T>(ThreadPool&, const T*, const T*, const T*, int64_t, T*, T*);
CALQ_GRAD_INSTANTIATE(float)
CALQ_GRAD_INSTANTIATE(double)
#undef CALQ_GRAD_INSTANTIATE

}  // namespace calq::grad
