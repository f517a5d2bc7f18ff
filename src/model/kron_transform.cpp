#include "model/kron_transform.h"

#include <fmt/format.h>
#include <immintrin.h>

#include <algorithm>
#include <cassert>
#include <cmath>
#include <string>
#include <utility>

#include "core/error.h"

namespace calq::model {
namespace {

// Rows per chunk of apply_rows (each row costs width·(n1 + n2) multiply-adds).
constexpr Grain kRowGrain{.min_items = 8};
// Rows per chunk of the weight fold (each row costs width·(n1 + n2) double multiply-adds).
constexpr Grain kFoldGrain{.min_items = 8};

void check_factor(const Tensor& f, const char* which, std::string_view context) {
  if (f.dtype() != DType::kF32 || f.rank() != 2 || f.dim(0) != f.dim(1) || f.dim(0) < 1) {
    fail(ErrorKind::kInvalidArgument, "{}: transform factor {} must be a square float32 matrix (it is {} {})", context,
         which, dtype_name(f.dtype()), shape_string(f.shape()));
  }
  const int64_t n = f.dim(0);
  const float* v = f.f32();
  for (int64_t i = 0; i < n * n; ++i) {
    if (!std::isfinite(v[i])) {
      fail(ErrorKind::kInvalidArgument, "{}: transform factor {} holds a non-finite value ({}) at ({}, {})", context,
           which, v[i], i / n, i % n);
    }
  }
}

// c[i, j] = Σ_k L(i, k)·r[k, j] for i < m, j in [j0, j0 + 8·V): L(i, k) = l[i·li + k·lk], r row-major
// [kk, n], c row-major [m, n]. Two rows of c at a time in 2·V AVX2 accumulators; each element is
// one FMA chain over k = 0, 1, ... (the same order for every row, whatever the chunking).
template <int V>
void small_product_columns(const float* l, int64_t li, int64_t lk, const float* r, float* c, int64_t m, int64_t n,
                           int64_t kk, int64_t j0) {
  int64_t i = 0;
  for (; i + 2 <= m; i += 2) {
    __m256 acc0[V], acc1[V];
    for (int v = 0; v < V; ++v) acc0[v] = acc1[v] = _mm256_setzero_ps();
    const float* l0 = l + i * li;
    const float* l1 = l0 + li;
    for (int64_t k = 0; k < kk; ++k) {
      const __m256 a0 = _mm256_broadcast_ss(l0 + k * lk);
      const __m256 a1 = _mm256_broadcast_ss(l1 + k * lk);
      const float* rk = r + k * n + j0;
      for (int v = 0; v < V; ++v) {
        const __m256 rv = _mm256_loadu_ps(rk + 8 * v);
        acc0[v] = _mm256_fmadd_ps(a0, rv, acc0[v]);
        acc1[v] = _mm256_fmadd_ps(a1, rv, acc1[v]);
      }
    }
    for (int v = 0; v < V; ++v) {
      _mm256_storeu_ps(c + i * n + j0 + 8 * v, acc0[v]);
      _mm256_storeu_ps(c + (i + 1) * n + j0 + 8 * v, acc1[v]);
    }
  }
  if (i < m) {
    __m256 acc[V];
    for (int v = 0; v < V; ++v) acc[v] = _mm256_setzero_ps();
    const float* l0 = l + i * li;
    for (int64_t k = 0; k < kk; ++k) {
      const __m256 a0 = _mm256_broadcast_ss(l0 + k * lk);
      for (int v = 0; v < V; ++v) acc[v] = _mm256_fmadd_ps(a0, _mm256_loadu_ps(r + k * n + j0 + 8 * v), acc[v]);
    }
    for (int v = 0; v < V; ++v) _mm256_storeu_ps(c + i * n + j0 + 8 * v, acc[v]);
  }
}

// c[m, n] = L·r (see small_product_columns): 32, 16 and 8 columns per pass, the last n % 8 columns
// by the same FMA chain in scalar code.
void small_product(const float* l, int64_t li, int64_t lk, const float* r, float* c, int64_t m, int64_t n,
                   int64_t kk) {
  int64_t j0 = 0;
  for (; j0 + 32 <= n; j0 += 32) small_product_columns<4>(l, li, lk, r, c, m, n, kk, j0);
  if (j0 + 16 <= n) {
    small_product_columns<2>(l, li, lk, r, c, m, n, kk, j0);
    j0 += 16;
  }
  if (j0 + 8 <= n) {
    small_product_columns<1>(l, li, lk, r, c, m, n, kk, j0);
    j0 += 8;
  }
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = j0; j < n; ++j) {
      float acc = 0.0f;
      for (int64_t k = 0; k < kk; ++k) acc = std::fma(l[i * li + k * lk], r[k * n + j], acc);
      c[i * n + j] = acc;
    }
  }
}

double norm1(const std::vector<double>& m, int64_t n) {
  double best = 0.0;
  for (int64_t c = 0; c < n; ++c) {
    double s = 0.0;
    for (int64_t r = 0; r < n; ++r) s += std::fabs(m[static_cast<size_t>(r * n + c)]);
    best = std::max(best, s);
  }
  return best;
}

// The inverse of the float32 n×n factor `f` (row-major) in double by LU with partial pivoting,
// and its 1-norm condition number; errors name the context and the factor.
std::vector<double> checked_inverse(const Tensor& f, const char* which, std::string_view context,
                                    const KronFoldOptions& options, double* condition) {
  check_factor(f, which, context);
  const int64_t n = f.dim(0);
  const auto at = [n](int64_t r, int64_t c) { return static_cast<size_t>(r * n + c); };
  std::vector<double> lu(static_cast<size_t>(n * n));
  for (int64_t i = 0; i < n * n; ++i) lu[static_cast<size_t>(i)] = f.f32()[i];
  const double norm = norm1(lu, n);
  std::vector<int64_t> perm(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) perm[static_cast<size_t>(i)] = i;
  // P·F = L·U, L unit lower triangular below the diagonal of `lu`, U on and above it.
  for (int64_t k = 0; k < n; ++k) {
    int64_t p = k;
    for (int64_t r = k + 1; r < n; ++r) {
      if (std::fabs(lu[at(r, k)]) > std::fabs(lu[at(p, k)])) p = r;
    }
    const double pivot = lu[at(p, k)];
    if (pivot == 0.0 || !std::isfinite(pivot)) {
      fail(ErrorKind::kInvalidArgument, "{}: transform factor {} is singular (pivot {} of {} is {})", context, which,
           k, n, pivot);
    }
    if (p != k) {
      for (int64_t c = 0; c < n; ++c) std::swap(lu[at(p, c)], lu[at(k, c)]);
      std::swap(perm[static_cast<size_t>(p)], perm[static_cast<size_t>(k)]);
    }
    for (int64_t r = k + 1; r < n; ++r) {
      const double l = lu[at(r, k)] / pivot;
      lu[at(r, k)] = l;
      if (l == 0.0) continue;
      for (int64_t c = k + 1; c < n; ++c) lu[at(r, c)] -= l * lu[at(k, c)];
    }
  }
  // Column j of F^{-1} solves L·U·x = P·e_j.
  std::vector<double> inv(static_cast<size_t>(n * n));
  std::vector<double> x(static_cast<size_t>(n));
  for (int64_t j = 0; j < n; ++j) {
    for (int64_t r = 0; r < n; ++r) {
      double s = perm[static_cast<size_t>(r)] == j ? 1.0 : 0.0;
      for (int64_t c = 0; c < r; ++c) s -= lu[at(r, c)] * x[static_cast<size_t>(c)];
      x[static_cast<size_t>(r)] = s;
    }
    for (int64_t r = n - 1; r >= 0; --r) {
      double s = x[static_cast<size_t>(r)];
      for (int64_t c = r + 1; c < n; ++c) s -= lu[at(r, c)] * x[static_cast<size_t>(c)];
      x[static_cast<size_t>(r)] = s / lu[at(r, r)];
    }
    for (int64_t r = 0; r < n; ++r) inv[at(r, j)] = x[static_cast<size_t>(r)];
  }
  const double cond = norm * norm1(inv, n);
  if (!std::isfinite(cond)) {
    fail(ErrorKind::kInvalidArgument, "{}: transform factor {} is singular (its inverse overflows)", context, which);
  }
  if (cond > options.max_condition) {
    fail(ErrorKind::kInvalidArgument, "{}: transform factor {} is ill-conditioned (condition ≈ {:.1e} > {:g})",
         context, which, cond, options.max_condition);
  }
  *condition = cond;
  return inv;
}

}  // namespace

KronShape kron_factors(int64_t width, int64_t n1) {
  if (width < 1) fail(ErrorKind::kInvalidArgument, "transform width {} must be positive", width);
  if (n1 < 0) fail(ErrorKind::kInvalidArgument, "transform factor size n1 = {} must not be negative", n1);
  if (n1 > 0) {
    if (width % n1 != 0) fail(ErrorKind::kInvalidArgument, "width {} does not factor as n1 = {} × n2", width, n1);
    return {.n1 = n1, .n2 = width / n1};
  }
  int64_t best = 1;
  for (int64_t d = 1; d * d <= width; ++d) {
    if (width % d == 0) best = d;
  }
  return {.n1 = best, .n2 = width / best};
}

KronTransform KronTransform::make(Tensor a, Tensor b, std::string_view context) {
  check_factor(a, "A", context);
  check_factor(b, "B", context);
  KronTransform t;
  t.n1_ = a.dim(0);
  t.n2_ = b.dim(0);
  t.a_ = std::move(a);
  t.b_ = std::move(b);
  return t;
}

KronTransform KronTransform::identity(KronShape shape) {
  assert(shape.n1 >= 1 && shape.n2 >= 1);
  const auto eye = [](int64_t n) {
    Tensor t = Tensor::zeros(DType::kF32, {n, n});
    for (int64_t i = 0; i < n; ++i) t.mutable_f32()[i * n + i] = 1.0f;
    return t;
  };
  return make(eye(shape.n1), eye(shape.n2), "identity");
}

bool KronTransform::same_values(const KronTransform& o) const {
  const auto same = [](const Tensor& x, const Tensor& y) {
    return x.shape() == y.shape() && std::equal(x.bytes().begin(), x.bytes().end(), y.bytes().begin());
  };
  return n1_ == o.n1_ && n2_ == o.n2_ && same(a_, o.a_) && same(b_, o.b_);
}

void KronTransform::apply_rows(float* x, int64_t m, ThreadPool& pool) const {
  assert(n1_ > 0 && n2_ > 0);
  if (m <= 0) return;
  const int64_t n1 = n1_, n2 = n2_, w = width();
  pool.parallel_for(0, static_cast<size_t>(m), kRowGrain, [&](size_t r0, size_t r1) {
    std::vector<float> y(static_cast<size_t>(w));
    for (auto r = static_cast<int64_t>(r0); r < static_cast<int64_t>(r1); ++r) {
      float* xr = x + r * w;
      // Y = X·B: Y[i, :] = Σ_k X[i, k]·B[k, :].
      small_product(xr, n2, 1, b_.f32(), y.data(), n1, n2, n2);
      // X̃ = Aᵀ·Y: X̃[i, :] = Σ_k A[k, i]·Y[k, :].
      small_product(a_.f32(), 1, n1, y.data(), xr, n1, n2, n1);
    }
  });
}

void KronTransform::apply_rows_reference(float* x, int64_t m) const {
  const int64_t n1 = n1_, n2 = n2_, w = width();
  const float* a = a_.f32();
  const float* b = b_.f32();
  std::vector<double> y(static_cast<size_t>(w));
  for (int64_t r = 0; r < m; ++r) {
    float* xr = x + r * w;
    for (int64_t i = 0; i < n1; ++i) {
      for (int64_t j = 0; j < n2; ++j) {
        double s = 0.0;
        for (int64_t k = 0; k < n2; ++k) s += static_cast<double>(xr[i * n2 + k]) * b[k * n2 + j];
        y[static_cast<size_t>(i * n2 + j)] = s;
      }
    }
    for (int64_t i = 0; i < n1; ++i) {
      for (int64_t j = 0; j < n2; ++j) {
        double s = 0.0;
        for (int64_t k = 0; k < n1; ++k) s += static_cast<double>(a[k * n1 + i]) * y[static_cast<size_t>(k * n2 + j)];
        xr[i * n2 + j] = static_cast<float>(s);
      }
    }
  }
}

KronFold::KronFold(const KronTransform& t, std::string_view context, const KronFoldOptions& options)
    : n1_(t.n1()), n2_(t.n2()) {
  a_inv_ = checked_inverse(t.a(), "A", context, options, &cond_a_);
  b_inv_ = checked_inverse(t.b(), "B", context, options, &cond_b_);
}

Tensor KronFold::apply(const Tensor& w, ThreadPool& pool) const {
  const int64_t n1 = n1_, n2 = n2_, width = n1 * n2;
  assert(w.dtype() == DType::kF32 && w.rank() == 2 && w.dim(1) == width);
  const int64_t rows = w.dim(0);
  Tensor out = Tensor::zeros(DType::kF32, {rows, width});
  const float* src = w.f32();
  float* dst = out.mutable_f32();
  pool.parallel_for(0, static_cast<size_t>(rows), kFoldGrain, [&](size_t r0, size_t r1) {
    std::vector<double> y(static_cast<size_t>(width)), z(y.size());
    for (auto r = static_cast<int64_t>(r0); r < static_cast<int64_t>(r1); ++r) {
      const float* wr = src + r * width;
      // Y = W_r·B^{-T}: y[i, j] = Σ_k W_r[i, k]·B^{-1}[j, k].
      for (int64_t i = 0; i < n1; ++i) {
        for (int64_t j = 0; j < n2; ++j) {
          const double* bj = b_inv_.data() + j * n2;
          double s = 0.0;
          for (int64_t k = 0; k < n2; ++k) s += static_cast<double>(wr[i * n2 + k]) * bj[k];
          y[static_cast<size_t>(i * n2 + j)] = s;
        }
      }
      // Z = A^{-1}·Y, row by row as sums of Y's rows.
      std::fill(z.begin(), z.end(), 0.0);
      for (int64_t i = 0; i < n1; ++i) {
        double* zi = z.data() + i * n2;
        for (int64_t k = 0; k < n1; ++k) {
          const double aik = a_inv_[static_cast<size_t>(i * n1 + k)];
          const double* yk = y.data() + k * n2;
          for (int64_t j = 0; j < n2; ++j) zi[j] += aik * yk[j];
        }
      }
      for (int64_t i = 0; i < width; ++i) dst[r * width + i] = static_cast<float>(z[static_cast<size_t>(i)]);
    }
  });
  return out;
}

}  // namespace calq::model
