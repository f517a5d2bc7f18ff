// The row-wise ops of flat_ops.h: the Kronecker product on rows and learnable activation clipping.
#include <algorithm>
#include <cassert>
#include <cmath>
#include <vector>

#include "grad/fake_quant_int.h"  // for_row_chunks
#include "grad/flat_ops.h"
#include "grad/ops_gemm.h"

namespace calq::grad {
namespace {

// Rows per wave of the Kronecker backward: each wave's per-row dA / dB terms are held at once and
// then summed in row order. Fixed (not the thread count), so the sums' order never changes.
constexpr int64_t kKronWave = 32;

// Rows handed to one task of the Kronecker products (a row is n1·n2 values and ~2·n·(n1 + n2)
// multiply-adds).
Grain kron_grain(int64_t n) { return Grain{.min_items = static_cast<size_t>(std::max<int64_t>(1, 4096 / n))}; }

}  // namespace

template <typename T>
void kron_rows_forward(ThreadPool& pool, const T* x, int64_t rows, int64_t n1, int64_t n2, const T* a, const T* b,
                       T* y) {
  assert(rows >= 0 && n1 >= 1 && n2 >= 1);
  const int64_t n = n1 * n2;
  pool.parallel_for(0, static_cast<size_t>(rows), kron_grain(n), [&](size_t r0, size_t r1) {
    std::vector<T> t(static_cast<size_t>(n));
    for (auto r = static_cast<int64_t>(r0); r < static_cast<int64_t>(r1); ++r) {
      // T = X·B, Y = Aᵀ·T.
      gemm_nn_single(Gemm<T>{.a = x + r * n, .lda = n2, .b = b, .ldb = n2, .c = t.data(), .ldc = n2, .m = n1,
                             .n = n2, .k = n2});
      gemm_tn_single(Gemm<T>{.a = a, .lda = n1, .b = t.data(), .ldb = n2, .c = y + r * n, .ldc = n2, .m = n1,
                             .n = n2, .k = n1});
    }
  });
}

template <typename T>
void kron_rows_backward(ThreadPool& pool, const T* x, int64_t rows, int64_t n1, int64_t n2, const T* a, const T* b,
                        const T* dy, T* dx, T* da, T* db) {
  assert(rows >= 0 && n1 >= 1 && n2 >= 1);
  const int64_t n = n1 * n2, na = n1 * n1, nb = n2 * n2;
  std::vector<double> acc_a(da != nullptr ? static_cast<size_t>(na) : 0, 0.0);
  std::vector<double> acc_b(db != nullptr ? static_cast<size_t>(nb) : 0, 0.0);
  std::vector<T> part_a(da != nullptr ? static_cast<size_t>(kKronWave * na) : 0);
  std::vector<T> part_b(db != nullptr ? static_cast<size_t>(kKronWave * nb) : 0);
  for (int64_t w0 = 0; w0 < rows; w0 += kKronWave) {
    const int64_t w1 = std::min(rows, w0 + kKronWave);
    pool.parallel_for(static_cast<size_t>(w0), static_cast<size_t>(w1), kron_grain(n), [&](size_t r0, size_t r1) {
      std::vector<T> t(da != nullptr ? static_cast<size_t>(n) : 0), v(static_cast<size_t>(n));
      for (auto r = static_cast<int64_t>(r0); r < static_cast<int64_t>(r1); ++r) {
        const T* xr = x + r * n;
        const T* gr = dy + r * n;
        // V = A·dY; dX = V·Bᵀ; dB term Xᵀ·V.
        gemm_nn_single(Gemm<T>{.a = a, .lda = n1, .b = gr, .ldb = n2, .c = v.data(), .ldc = n2, .m = n1, .n = n2,
                               .k = n1});
        if (dx != nullptr) {
          gemm_nt_single(Gemm<T>{.a = v.data(), .lda = n2, .b = b, .ldb = n2, .c = dx + r * n, .ldc = n2, .m = n1,
                                 .n = n2, .k = n2});
        }
        if (db != nullptr) {
          gemm_tn_single(Gemm<T>{.a = xr, .lda = n2, .b = v.data(), .ldb = n2, .c = part_b.data() + (r - w0) * nb,
                                 .ldc = n2, .m = n2, .n = n2, .k = n1});
        }
        if (da != nullptr) {  // T = X·B; dA term T·dYᵀ
          gemm_nn_single(Gemm<T>{.a = xr, .lda = n2, .b = b, .ldb = n2, .c = t.data(), .ldc = n2, .m = n1, .n = n2,
                                 .k = n2});
          gemm_nt_single(Gemm<T>{.a = t.data(), .lda = n2, .b = gr, .ldb = n2, .c = part_a.data() + (r - w0) * na,
                                 .ldc = n1, .m = n1, .n = n1, .k = n2});
        }
      }
    });
    for (int64_t r = 0; r < w1 - w0; ++r) {
      for (int64_t e = 0; e < static_cast<int64_t>(acc_a.size()); ++e) {
        acc_a[static_cast<size_t>(e)] += static_cast<double>(part_a[static_cast<size_t>(r * na + e)]);
      }
      for (int64_t e = 0; e < static_cast<int64_t>(acc_b.size()); ++e) {
        acc_b[static_cast<size_t>(e)] += static_cast<double>(part_b[static_cast<size_t>(r * nb + e)]);
      }
    }
  }
  for (size_t e = 0; e < acc_a.size(); ++e) da[e] += static_cast<T>(acc_a[e]);
  for (size_t e = 0; e < acc_b.size(); ++e) db[e] += static_cast<T>(acc_b[e]);
}

// ---- Learnable activation clipping ----

namespace {

template <typename T>
T lac_qmax(int bits) {
  assert(bits >= 2 && bits <= 8);
  return static_cast<T>((1 << (bits - 1)) - 1);
}

// max|row| as model::fake_quantize_activations takes it (NaN entries do not raise it).
template <typename T>
T row_absmax(const T* xr, int64_t cols) {
  T m = 0;
  for (int64_t j = 0; j < cols; ++j) m = std::max(m, std::fabs(xr[j]));
  return m;
}

}  // namespace

template <typename T>
T lac_clip(T gamma) {
  return T(1) / (T(1) + std::exp(-gamma));
}

template <typename T>
void lac_forward(ThreadPool& pool, const T* x, int64_t rows, int64_t cols, int bits, T gamma, T* y) {
  const T qmax = lac_qmax<T>(bits), c = lac_clip(gamma);
  for_row_chunks(pool, rows, cols, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const T* xr = x + r * cols;
      T* yr = y + r * cols;
      // The model's expressions, in the same order: s = clip · absmax / qmax; q · s.
      const T s = c * row_absmax(xr, cols) / qmax;
      if (!(s > T(0))) {
        std::copy(xr, xr + cols, yr);
        continue;
      }
      for (int64_t j = 0; j < cols; ++j) {
        T q = std::nearbyint(xr[j] / s);
        if (q > qmax) {
          q = qmax;
        } else if (q < -qmax) {
          q = -qmax;
        }
        yr[j] = q * s;
      }
    }
  });
}

template <typename T>
void lac_backward(ThreadPool& pool, const T* x, int64_t rows, int64_t cols, int bits, T gamma, const T* dy, T* dx,
                  T* dgamma) {
  const T qmax = lac_qmax<T>(bits), c = lac_clip(gamma);
  const auto cd = static_cast<double>(c);
  std::vector<double> row_grad(static_cast<size_t>(rows), 0.0);
  for_row_chunks(pool, rows, cols, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const T* xr = x + r * cols;
      const T* gr = dy + r * cols;
      T* dxr = dx != nullptr ? dx + r * cols : nullptr;
      const T m = row_absmax(xr, cols);
      const T s = c * m / qmax;
      if (!(s > T(0))) {  // passed through: identity, nothing to γ
        if (dxr != nullptr) std::copy(gr, gr + cols, dxr);
        continue;
      }
      double g_s = 0;  // Σ_j dy · ∂ŷ/∂s, column order
      for (int64_t j = 0; j < cols; ++j) {
        const T u = xr[j] / s;
        const T q = std::nearbyint(u);
        const bool inside = std::fabs(q) <= qmax;
        if (dxr != nullptr) dxr[j] = inside ? gr[j] : T(0);
        const T d_s = inside ? q - u : (q > T(0) ? qmax : -qmax);
        g_s += static_cast<double>(gr[j]) * static_cast<double>(d_s);
      }
      row_grad[static_cast<size_t>(r)] = g_s * (cd * (1.0 - cd) * static_cast<double>(m) / static_cast<double>(qmax));
    }
  });
  if (dgamma != nullptr) {
    double total = 0;
    for (const double g : row_grad) total += g;
    *dgamma += static_cast<T>(total);
  }
}

#define CALQ_FLAT_ROWS_INSTANTIATE(T)                                                                         \
  template void kron_rows_forward<T>(ThreadPool&, const T*, int64_t, int64_t, int64_t, const T*, const T*, T*); \
  template void kron_rows_backward<T>(ThreadPool&, const T*, int64_t, int64_t, int64_t, const T*, const T*,    \
                                      const T*, T*, T*, T*);                                                  \
  template T lac_clip<T>(T);                                                                                  \
  template void lac_forward<T>(ThreadPool&, const T*, int64_t, int64_t, int, T, T*);                          \
  template void lac_backward<T>(ThreadPool&, const T*, int64_t, int64_t, int, T, const T*, T*, T*);
CALQ_FLAT_ROWS_INSTANTIATE(float)
CALQ_FLAT_ROWS_INSTANTIATE(double)
#undef CALQ_FLAT_ROWS_INSTANTIATE

}  // namespace calq::grad
