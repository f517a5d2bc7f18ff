#include "quant/lora_compensate.h"

#include <cblas.h>
#include <lapacke.h>

#include <algorithm>
#include <cassert>
#include <cmath>

#include "core/error.h"
#include "core/matmul.h"

namespace calq::quant {
namespace {

constexpr int kDampRetries = 4;

// The lower Cholesky factor of H + damp · mean(diag H) · I (row-major, upper triangle zeroed), or
// empty when that is not positive definite.
std::vector<double> damped_cholesky(std::span<const double> h, int64_t n, double damp) {
  double mean = 0;
  for (int64_t j = 0; j < n; ++j) mean += h[static_cast<size_t>(j * n + j)];
  mean /= static_cast<double>(n);
  if (!(mean > 0)) mean = 1;  // an input that is always zero: any adapter is as good; keep L finite
  std::vector<double> l(h.begin(), h.end());
  for (int64_t j = 0; j < n; ++j) l[static_cast<size_t>(j * n + j)] += damp * mean;
  if (LAPACKE_dpotrf(LAPACK_ROW_MAJOR, 'L', static_cast<lapack_int>(n), l.data(), static_cast<lapack_int>(n)) != 0)
    return {};
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = i + 1; j < n; ++j) l[static_cast<size_t>(i * n + j)] = 0;
  return l;
}

double frobenius_sq(std::span<const double> x) {
  double s = 0;
  for (const double v : x) s += v * v;
  return s;
}

// m ← m · L (m row-major [rows, n], L lower triangular [n, n]).
void times_factor(std::vector<double>& m, int64_t rows, int64_t n, std::span<const double> l) {
  cblas_dtrmm(CblasRowMajor, CblasRight, CblasLower, CblasNoTrans, CblasNonUnit, static_cast<blasint>(rows),
              static_cast<blasint>(n), 1.0, l.data(), static_cast<blasint>(n), m.data(), static_cast<blasint>(n));
}

}  // namespace

std::vector<double> weighting_factor(const InputStats& stats, int64_t cols, ErrorWeighting weighting, double damp,
                                     std::string_view context, double* damp_used) {
  const auto n = static_cast<size_t>(cols);
  std::vector<double> l(n * n, 0.0);
  if (weighting == ErrorWeighting::kNone) {
    for (size_t j = 0; j < n; ++j) l[j * n + j] = 1;
    if (damp_used != nullptr) *damp_used = 0;
    return l;
  }
  const bool full = weighting == ErrorWeighting::kHessian;
  if (full ? stats.hessian.size() != n * n : stats.mean_sq.size() != n) {
    fail(ErrorKind::kInvalidArgument,
         "{}: the error weighting '{}' needs the {} statistic of its input: calibrate, or use a statistics file "
         "with it",
         context, full ? "hessian" : "diagonal", full ? "hessian" : "mean_sq");
  }
  // H = XᵀX / n (the collector holds the sum); the diagonal weighting's E[x²] is that diagonal.
  std::vector<double> h(n * n, 0.0);
  const double rows = std::max<double>(1.0, static_cast<double>(stats.rows));
  for (size_t i = 0; i < n; ++i) {
    if (full) {
      for (size_t j = 0; j < n; ++j) h[i * n + j] = stats.hessian[i * n + j] / rows;
    } else {
      h[i * n + i] = static_cast<double>(stats.mean_sq[i]);
    }
  }
  double d = damp;
  for (int attempt = 0; attempt <= kDampRetries; ++attempt) {
    l = damped_cholesky(h, cols, d);
    if (!l.empty()) {
      if (damp_used != nullptr) *damp_used = d;
      return l;
    }
    d = d > 0 ? d * 10 : 1e-6;
  }
  fail(ErrorKind::kInvalidArgument,
       "{}: the input's second moment is not positive definite even with damp {} (× its mean diagonal); raise "
       "the option damp or use the weighting 'none'",
       context, d / 10);
}

ErrorCompensation compensate_error(const float* original, const float* dequantized, int64_t rows, int64_t cols,
                                   std::span<const double> factor, int64_t rank, std::string_view context) {
  assert(rank >= 1 && rank <= std::min(rows, cols));
  assert(factor.size() == static_cast<size_t>(cols * cols));
  init_blas_threading();
  const auto total = static_cast<size_t>(rows * cols);
  std::vector<double> e(total);
  for (size_t i = 0; i < total; ++i) e[i] = static_cast<double>(original[i]) - static_cast<double>(dequantized[i]);

  ErrorCompensation out;
  std::vector<double> m = e;
  times_factor(m, rows, cols, factor);
  out.error_before = frobenius_sq(m);

  // Thin SVD of the weighted error: U [rows, k], σ [k], Vᵀ [k, cols], k = min(rows, cols).
  const int64_t k = std::min(rows, cols);
  out.singular_values.assign(static_cast<size_t>(k), 0.0);
  std::vector<double> u(static_cast<size_t>(rows * k)), vt(static_cast<size_t>(k * cols));
  std::vector<double> work = m;  // dgesdd overwrites its input
  lapack_int info = LAPACKE_dgesdd(LAPACK_ROW_MAJOR, 'S', static_cast<lapack_int>(rows), static_cast<lapack_int>(cols),
                                   work.data(), static_cast<lapack_int>(cols), out.singular_values.data(), u.data(),
                                   static_cast<lapack_int>(k), vt.data(), static_cast<lapack_int>(cols));
  if (info != 0) {  // divide and conquer did not converge: the QR iteration is slower but sturdier
    std::vector<double> superb(static_cast<size_t>(std::max<int64_t>(k - 1, 1)));
    work = m;
    info = LAPACKE_dgesvd(LAPACK_ROW_MAJOR, 'S', 'S', static_cast<lapack_int>(rows), static_cast<lapack_int>(cols),
                          work.data(), static_cast<lapack_int>(cols), out.singular_values.data(), u.data(),
                          static_cast<lapack_int>(k), vt.data(), static_cast<lapack_int>(cols), superb.data());
    if (info != 0) fail(ErrorKind::kInvalidArgument, "{}: the SVD of the weighted quantization error did not converge", context);
  }

  // B = U_r Σ_r^½; A = Σ_r^½ V_rᵀ L⁻¹ (solve A·L = Σ_r^½ V_rᵀ).
  std::vector<double> a(static_cast<size_t>(rank * cols));
  out.b.assign(static_cast<size_t>(rows * rank), 0.0f);
  for (int64_t j = 0; j < rank; ++j) {
    const double root = std::sqrt(out.singular_values[static_cast<size_t>(j)]);
    for (int64_t c = 0; c < cols; ++c) a[static_cast<size_t>(j * cols + c)] = root * vt[static_cast<size_t>(j * cols + c)];
    for (int64_t r = 0; r < rows; ++r)
      out.b[static_cast<size_t>(r * rank + j)] = static_cast<float>(root * u[static_cast<size_t>(r * k + j)]);
  }
  cblas_dtrsm(CblasRowMajor, CblasRight, CblasLower, CblasNoTrans, CblasNonUnit, static_cast<blasint>(rank),
              static_cast<blasint>(cols), 1.0, factor.data(), static_cast<blasint>(cols), a.data(),
              static_cast<blasint>(cols));
  out.a.assign(a.size(), 0.0f);
  for (size_t i = 0; i < a.size(); ++i) out.a[i] = static_cast<float>(a[i]);

  // The error left with the factors as stored: (E − B·A)·L.
  std::vector<double> af(out.a.begin(), out.a.end()), bf(out.b.begin(), out.b.end());
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<blasint>(rows), static_cast<blasint>(cols),
              static_cast<blasint>(rank), -1.0, bf.data(), static_cast<blasint>(rank), af.data(),
              static_cast<blasint>(cols), 1.0, e.data(), static_cast<blasint>(cols));
  times_factor(e, rows, cols, factor);
  out.error_after = frobenius_sq(e);
  return out;
}

}  // namespace calq::quant
