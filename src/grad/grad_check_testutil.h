// Test-only helpers for gradient checks: random vectors, central finite differences in double and
// a norm-wise relative error.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

namespace calq::grad::testutil {

inline std::vector<double> random_values(size_t n, uint32_t seed, double scale = 1.0) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> d(0.0, scale);
  std::vector<double> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// Σ r ⊙ y: a scalar whose gradient with respect to y is r.
inline double project(const std::vector<double>& y, const std::vector<double>& r) {
  double s = 0.0;
  for (size_t i = 0; i < y.size(); ++i) s += y[i] * r[i];
  return s;
}

// The entries of a tensor a check looks at: all of them up to `limit`, else `limit` of them at a
// fixed stride (offset by seed so different tensors see different positions).
inline std::vector<size_t> check_entries(size_t n, size_t limit, uint32_t seed = 0) {
  std::vector<size_t> idx;
  if (n <= limit) {
    for (size_t i = 0; i < n; ++i) idx.push_back(i);
    return idx;
  }
  const size_t stride = n / limit;
  for (size_t k = 0; k < limit; ++k) idx.push_back((k * stride + seed % stride) % n);
  return idx;
}

// Central differences (f(x + eps) − f(x − eps)) / 2 eps of f() at x[i] for each i in `entries`
// (x is changed and restored).
template <typename F>
std::vector<double> numeric_grad(std::vector<double>& x, const std::vector<size_t>& entries, const F& f,
                                 double eps = 1e-6) {
  std::vector<double> g;
  for (const size_t i : entries) {
    const double saved = x[i];
    x[i] = saved + eps;
    const double up = f();
    x[i] = saved - eps;
    const double down = f();
    x[i] = saved;
    g.push_back((up - down) / (2 * eps));
  }
  return g;
}

inline std::vector<double> pick(const std::vector<double>& v, const std::vector<size_t>& entries) {
  std::vector<double> out;
  for (const size_t i : entries) out.push_back(v[i]);
  return out;
}

// ‖a − b‖ / max(‖a‖, ‖b‖) (0 when both are 0).
inline double rel_error(const std::vector<double>& a, const std::vector<double>& b) {
  double diff = 0, na = 0, nb = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff += (a[i] - b[i]) * (a[i] - b[i]);
    na += a[i] * a[i];
    nb += b[i] * b[i];
  }
  const double scale = std::sqrt(std::max(na, nb));
  return scale == 0 ? 0 : std::sqrt(diff) / scale;
}

inline double norm(const std::vector<double>& a) {
  double s = 0;
  for (const double x : a) s += x * x;
  return std::sqrt(s);
}

}  // namespace calq::grad::testutil
