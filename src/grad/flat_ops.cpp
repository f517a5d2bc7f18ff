// The Cayley map, the SVD-parameterised factor and random orthogonal matrices (flat_ops.h). All
// small dense algebra here runs in double on the calling thread (n is a Kronecker factor's size).
#include "grad/flat_ops.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstddef>
#include <limits>
#include <numbers>
#include <random>
#include <string>
#include <utility>

#include "core/error.h"

namespace calq::grad {
namespace {

using Mat = std::vector<double>;  // n×n, row-major

size_t idx(int64_t n, int64_t i, int64_t j) { return static_cast<size_t>(i * n + j); }

// C = op(A)·op(B) for n×n matrices, op = transpose when the flag is set; each entry one fixed
// sequence of double operations.
Mat mul(int64_t n, const Mat& a, bool ta, const Mat& b, bool tb) {
  Mat c(static_cast<size_t>(n * n), 0.0);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t k = 0; k < n; ++k) {
      const double av = ta ? a[idx(n, k, i)] : a[idx(n, i, k)];
      if (av == 0.0) continue;
      double* ci = c.data() + i * n;
      if (tb) {
        for (int64_t j = 0; j < n; ++j) ci[j] += av * b[idx(n, j, k)];
      } else {
        const double* bk = b.data() + k * n;
        for (int64_t j = 0; j < n; ++j) ci[j] += av * bk[j];
      }
    }
  }
  return c;
}

template <typename T>
Mat widen(int64_t n2, const T* x) {
  return Mat(x, x + n2);
}

template <typename T>
void check_finite(int64_t n, const T* x, std::string_view context) {
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      const T v = x[i * n + j];
      if (!std::isfinite(v)) {
        fail(ErrorKind::kInvalidArgument, "{}: entry ({}, {}) is not finite ({})", context, i, j,
             static_cast<double>(v));
      }
    }
  }
}

// The Cayley map of X in double: Q and M = (I − Ω/2)⁻¹. Since I + Ω/2 = 2I − (I − Ω/2),
// Q = (I + Ω/2)·M = 2M − I.
struct Cayley {
  Mat q, m;
};

template <typename T>
Cayley cayley_parts(int64_t n, const T* x, std::string_view context) {
  assert(n >= 1);
  check_finite(n, x, context);
  // L = I − Ω/2, factored in place as P·L = LU (partial pivoting).
  Mat lu(static_cast<size_t>(n * n));
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      const double omega = static_cast<double>(x[i * n + j]) - static_cast<double>(x[j * n + i]);
      lu[idx(n, i, j)] = (i == j ? 1.0 : 0.0) - 0.5 * omega;
    }
  }
  std::vector<int64_t> swap_with(static_cast<size_t>(n));
  for (int64_t k = 0; k < n; ++k) {
    int64_t p = k;
    for (int64_t i = k + 1; i < n; ++i) {
      if (std::fabs(lu[idx(n, i, k)]) > std::fabs(lu[idx(n, p, k)])) p = i;
    }
    const double pivot = lu[idx(n, p, k)];
    // Unreachable for finite skew Ω (|det L| >= 1); guards against overflow to inf / NaN.
    if (!(pivot != 0.0) || !std::isfinite(pivot)) {
      fail(ErrorKind::kInvalidArgument, "{}: the Cayley map's matrix I − Ω/2 has pivot {} at column {}", context,
           pivot, k);
    }
    swap_with[static_cast<size_t>(k)] = p;
    if (p != k) std::swap_ranges(lu.begin() + k * n, lu.begin() + (k + 1) * n, lu.begin() + p * n);
    for (int64_t i = k + 1; i < n; ++i) {
      const double f = lu[idx(n, i, k)] /= pivot;
      if (f == 0.0) continue;
      for (int64_t j = k + 1; j < n; ++j) lu[idx(n, i, j)] -= f * lu[idx(n, k, j)];
    }
  }
  // M = L⁻¹: solve L·M = I (the row swaps applied to I, then the two triangular solves).
  Mat m(static_cast<size_t>(n * n), 0.0);
  for (int64_t i = 0; i < n; ++i) m[idx(n, i, i)] = 1.0;
  for (int64_t k = 0; k < n; ++k) {
    const int64_t p = swap_with[static_cast<size_t>(k)];
    if (p != k) std::swap_ranges(m.begin() + k * n, m.begin() + (k + 1) * n, m.begin() + p * n);
  }
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t k = 0; k < i; ++k) {
      const double f = lu[idx(n, i, k)];
      for (int64_t j = 0; j < n; ++j) m[idx(n, i, j)] -= f * m[idx(n, k, j)];
    }
  }
  for (int64_t i = n - 1; i >= 0; --i) {
    for (int64_t k = i + 1; k < n; ++k) {
      const double f = lu[idx(n, i, k)];
      for (int64_t j = 0; j < n; ++j) m[idx(n, i, j)] -= f * m[idx(n, k, j)];
    }
    const double d = lu[idx(n, i, i)];
    for (int64_t j = 0; j < n; ++j) m[idx(n, i, j)] /= d;
  }
  Cayley c;
  c.m = std::move(m);
  c.q = c.m;
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double& v = c.q[idx(n, i, j)];
      v = 2.0 * v - (i == j ? 1.0 : 0.0);
      if (!std::isfinite(v)) fail(ErrorKind::kInvalidArgument, "{}: the Cayley map is not finite", context);
    }
  }
  return c;
}

// dx += G_Ω − G_Ωᵀ with G_Ω = Mᵀ·G_Q·Mᵀ (dQ = 2 dM = M·dΩ·M, the hint's ½(I + Q) being M).
template <typename T>
void add_cayley_grad(int64_t n, const Cayley& c, const Mat& g_q, T* dx) {
  const Mat g_omega = mul(n, mul(n, c.m, true, g_q, false), false, c.m, true);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      dx[i * n + j] += static_cast<T>(g_omega[idx(n, i, j)] - g_omega[idx(n, j, i)]);
    }
  }
}

// The factor's orthogonal parts in double.
struct Parts {
  Cayley ru, rv;
  Mat u, v;
};

template <typename T>
Parts parts_of(const SvdFactor<T>& f, std::string_view context) {
  Parts p{.ru = cayley_parts(f.n, f.xu.data(), std::string(context) + ", parameter Xu"),
          .rv = cayley_parts(f.n, f.xv.data(), std::string(context) + ", parameter Xv")};
  p.u = mul(f.n, f.u0, false, p.ru.q, false);
  p.v = mul(f.n, f.v0, false, p.rv.q, false);
  return p;
}

// Standard normal draws from 53-bit uniforms in (0, 1) (Box–Muller): fixed by the engine's
// specified output sequence, unlike std::normal_distribution.
class Gaussian {
 public:
  explicit Gaussian(uint64_t seed) : rng_(seed) {}
  double next() {
    if (has_spare_) {
      has_spare_ = false;
      return spare_;
    }
    const double u1 = uniform(), u2 = uniform();
    const double r = std::sqrt(-2.0 * std::log(u1)), t = 2.0 * std::numbers::pi * u2;
    spare_ = r * std::sin(t);
    has_spare_ = true;
    return r * std::cos(t);
  }

 private:
  double uniform() { return (static_cast<double>(rng_() >> 11) + 0.5) * 0x1p-53; }
  std::mt19937_64 rng_;
  double spare_ = 0;
  bool has_spare_ = false;
};

}  // namespace

template <typename T>
void cayley_forward(int64_t n, const T* x, T* q, std::string_view context) {
  const Cayley c = cayley_parts(n, x, context);
  for (size_t i = 0; i < c.q.size(); ++i) q[i] = static_cast<T>(c.q[i]);
}

template <typename T>
void cayley_backward(int64_t n, const T* x, const T* dq, T* dx, std::string_view context) {
  add_cayley_grad(n, cayley_parts(n, x, context), widen(n * n, dq), dx);
}

std::vector<double> random_orthogonal(int64_t n, uint64_t seed) {
  assert(n >= 1);
  Gaussian g(seed);
  Mat a(static_cast<size_t>(n * n));
  for (double& v : a) v = g.next();
  // Householder QR: reflector k (v_k, unit norm, over rows k..n−1) zeroes column k below the
  // diagonal; R's diagonal entry is alpha_k.
  std::vector<Mat> refl(static_cast<size_t>(n));
  std::vector<double> diag(static_cast<size_t>(n));
  for (int64_t k = 0; k < n; ++k) {
    Mat v(static_cast<size_t>(n - k));
    double norm2 = 0;
    for (int64_t i = k; i < n; ++i) norm2 += a[idx(n, i, k)] * a[idx(n, i, k)], v[static_cast<size_t>(i - k)] = a[idx(n, i, k)];
    const double norm = std::sqrt(norm2), alpha = v[0] > 0 ? -norm : norm;
    diag[static_cast<size_t>(k)] = alpha;
    v[0] -= alpha;
    double vn = 0;
    for (const double e : v) vn += e * e;
    vn = std::sqrt(vn);
    if (vn > 0) {
      for (double& e : v) e /= vn;
    }
    for (int64_t j = k; j < n; ++j) {  // A[k:, k:] −= 2 v (vᵀ A[k:, k:])
      double d = 0;
      for (int64_t i = k; i < n; ++i) d += v[static_cast<size_t>(i - k)] * a[idx(n, i, j)];
      for (int64_t i = k; i < n; ++i) a[idx(n, i, j)] -= 2.0 * d * v[static_cast<size_t>(i - k)];
    }
    refl[static_cast<size_t>(k)] = std::move(v);
  }
  // Q = H_0·H_1·…·H_{n−1}·I, then column k times sign(R_kk).
  Mat q(static_cast<size_t>(n * n), 0.0);
  for (int64_t i = 0; i < n; ++i) q[idx(n, i, i)] = 1.0;
  for (int64_t k = n - 1; k >= 0; --k) {
    const Mat& v = refl[static_cast<size_t>(k)];
    for (int64_t j = 0; j < n; ++j) {
      double d = 0;
      for (int64_t i = k; i < n; ++i) d += v[static_cast<size_t>(i - k)] * q[idx(n, i, j)];
      for (int64_t i = k; i < n; ++i) q[idx(n, i, j)] -= 2.0 * d * v[static_cast<size_t>(i - k)];
    }
  }
  for (int64_t k = 0; k < n; ++k) {
    if (diag[static_cast<size_t>(k)] < 0) {
      for (int64_t i = 0; i < n; ++i) q[idx(n, i, k)] = -q[idx(n, i, k)];
    }
  }
  return q;
}

template <typename T>
SvdFactor<T> SvdFactor<T>::identity(int64_t n, uint64_t seed) {
  SvdFactor f{.n = n, .u0 = random_orthogonal(n, seed)};
  f.v0 = f.u0;
  f.xu.assign(static_cast<size_t>(n * n), T(0));
  f.xv.assign(static_cast<size_t>(n * n), T(0));
  f.sigma.assign(static_cast<size_t>(n), T(1));
  return f;
}

template <typename T>
void SvdFactor<T>::compose(T* p, T* p_inv_t, std::string_view context) const {
  const Parts pt = parts_of(*this, context);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double s = 0, si = 0;
      for (int64_t k = 0; k < n; ++k) {
        const double uv = pt.u[idx(n, i, k)] * pt.v[idx(n, j, k)];
        const auto sk = static_cast<double>(sigma[static_cast<size_t>(k)]);
        s += uv * sk;
        si += uv / sk;
      }
      if (p != nullptr) p[i * n + j] = static_cast<T>(s);
      if (p_inv_t != nullptr) p_inv_t[i * n + j] = static_cast<T>(si);
    }
  }
}

template <typename T>
void SvdFactor<T>::backward(const T* dp, const T* dp_inv_t, T* dxu, T* dxv, T* dsigma,
                            std::string_view context) const {
  const Parts pt = parts_of(*this, context);
  const auto nn = static_cast<size_t>(n * n);
  const Mat zero(nn, 0.0);
  const Mat gp = dp != nullptr ? widen(n * n, dp) : zero;
  const Mat gi = dp_inv_t != nullptr ? widen(n * n, dp_inv_t) : zero;
  const Mat gp_v = mul(n, gp, false, pt.v, false), gi_v = mul(n, gi, false, pt.v, false);   // dP·V, dP⁻ᵀ·V
  const Mat gp_u = mul(n, gp, true, pt.u, false), gi_u = mul(n, gi, true, pt.u, false);     // dPᵀ·U, dP⁻ᵀᵀ·U
  Mat g_u(nn), g_v(nn);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t k = 0; k < n; ++k) {
      const auto s = static_cast<double>(sigma[static_cast<size_t>(k)]);
      g_u[idx(n, i, k)] = gp_v[idx(n, i, k)] * s + gi_v[idx(n, i, k)] / s;
      g_v[idx(n, i, k)] = gp_u[idx(n, i, k)] * s + gi_u[idx(n, i, k)] / s;
    }
  }
  if (dsigma != nullptr) {
    for (int64_t k = 0; k < n; ++k) {
      double dp_kk = 0, di_kk = 0;  // (Uᵀ·dP·V)_kk, (Uᵀ·dP⁻ᵀ·V)_kk
      for (int64_t i = 0; i < n; ++i) {
        dp_kk += pt.u[idx(n, i, k)] * gp_v[idx(n, i, k)];
        di_kk += pt.u[idx(n, i, k)] * gi_v[idx(n, i, k)];
      }
      const auto s = static_cast<double>(sigma[static_cast<size_t>(k)]);
      dsigma[k] += static_cast<T>(dp_kk - di_kk / (s * s));
    }
  }
  if (dxu != nullptr) add_cayley_grad(n, pt.ru, mul(n, u0, true, g_u, false), dxu);
  if (dxv != nullptr) add_cayley_grad(n, pt.rv, mul(n, v0, true, g_v, false), dxv);
}

template <typename T>
double SvdFactor<T>::condition() const {
  double hi = 0, lo = std::numeric_limits<double>::infinity();
  for (const T s : sigma) {
    const double a = std::fabs(static_cast<double>(s));
    if (!std::isfinite(a)) return std::numeric_limits<double>::quiet_NaN();
    hi = std::max(hi, a);
    lo = std::min(lo, a);
  }
  return lo == 0 ? std::numeric_limits<double>::infinity() : hi / lo;
}

template <typename T>
void SvdFactor<T>::check(std::string_view context, double max_condition) const {
  for (size_t i = 0; i < sigma.size(); ++i) {
    const auto s = static_cast<double>(sigma[i]);
    if (!std::isfinite(s)) {
      fail(ErrorKind::kInvalidArgument, "{} has a non-finite singular value (sigma[{}] = {})", context, i, s);
    }
    if (s == 0) fail(ErrorKind::kInvalidArgument, "{} is singular (sigma[{}] = 0)", context, i);
  }
  const double c = condition();
  if (c > max_condition) {
    fail(ErrorKind::kInvalidArgument, "{} is ill-conditioned (condition {:.3g} > {:.3g})", context, c, max_condition);
  }
}

#define CALQ_FLAT_OPS_INSTANTIATE(T)                                                                  \
  template void cayley_forward<T>(int64_t, const T*, T*, std::string_view);                           \
  template void cayley_backward<T>(int64_t, const T*, const T*, T*, std::string_view);                \
  template struct SvdFactor<T>;
CALQ_FLAT_OPS_INSTANTIATE(float)
CALQ_FLAT_OPS_INSTANTIATE(double)
#undef CALQ_FLAT_OPS_INSTANTIATE

}  // namespace calq::grad
