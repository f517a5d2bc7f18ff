#include "grad/fake_quant_learn.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <type_traits>

#include "core/error.h"

namespace calq::grad {
namespace {

template <typename T>
T stored(const IntLayout& l, T s) {
  if constexpr (std::is_same_v<T, float>) {
    return l.store_scale(s);
  } else {
    return s;  // double (gradient checks): no storage rounding
  }
}

// Effective parameters of one group.
template <typename T>
struct Eff {
  T s = 0;            // scale (as stored)
  T z = 0;            // integer zero point within the grid
  bool z_free = false;  // z's rounding fell inside the grid (z has a gradient)
};

// One element under (s, z): its value, whether w/s + z lies in [qmin, qmax], and ∂Ŵ/∂s there.
// The value is the int formats' arithmetic (quantize_value / dequantize_value) in T.
template <typename T>
inline T element(T w, const Eff<T>& p, T qmin, T qmax, bool& inside, T& d_s) {
  const T inv = p.s == T(0) ? T(0) : T(1) / p.s;
  const T x = w * inv;
  const T rx = std::nearbyint(x);
  const T q = std::clamp(rx + p.z, qmin, qmax);
  const T v = x + p.z;
  inside = v >= qmin && v <= qmax;
  d_s = inside ? rx - x : (v < qmin ? qmin : qmax) - p.z;
  return p.s * (q - p.z);
}

template <typename T>
void check_weight(T v, std::string_view tensor, int64_t r, int64_t c) {
  if (!std::isfinite(v)) {
    fail(ErrorKind::kInvalidArgument, "tensor '{}': non-finite weight {} at row {}, column {}", tensor,
         static_cast<double>(v), r, c);
  }
}

// Group of (row r, k-th group along the row).
int64_t group_index(const IntLayout& l, int64_t r, int64_t k, int64_t cols) { return l.group_of(r, k * l.group_cols(cols), cols); }

// Sums row partials [rows × groups_per_row] into per-group totals (per-tensor: in row order).
std::vector<double> reduce_groups(const IntLayout& l, int64_t rows, int64_t cols, const std::vector<double>& partial) {
  std::vector<double> out(static_cast<size_t>(l.num_groups(rows, cols)), 0.0);
  const int64_t gpr = l.groups_per_row(cols);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t k = 0; k < gpr; ++k) out[static_cast<size_t>(group_index(l, r, k, cols))] += partial[static_cast<size_t>(r * gpr + k)];
  }
  return out;
}

template <typename T>
std::vector<Eff<T>> lsq_effective(const IntLayout& l, std::span<const T> step, std::span<const T> zero,
                                  std::string_view tensor) {
  std::vector<Eff<T>> out(step.size());
  assert(l.symmetric || zero.size() == step.size());
  for (size_t g = 0; g < step.size(); ++g) {
    Eff<T>& e = out[g];
    e.s = std::isfinite(step[g]) ? stored(l, step[g]) : step[g];
    if (!(e.s > T(0)) || !std::isfinite(e.s)) {
      fail(ErrorKind::kInvalidArgument, "tensor '{}': learned step {} of group {} is not a finite number > 0{}", tensor,
           static_cast<double>(step[g]), g, l.f32 ? "" : " as an fp16 value");
    }
    if (!l.symmetric) {
      const T zr = std::nearbyint(zero[g]);
      e.z = std::clamp(zr, static_cast<T>(l.grid.qmin), static_cast<T>(l.grid.qmax));
      e.z_free = zr == e.z;
    }
  }
  return out;
}

// Runs fn(r, k, group, j0, n) over every (row, group along the row) in parallel over rows.
template <typename Fn>
void for_groups(ThreadPool& pool, const IntLayout& l, int64_t rows, int64_t cols, Fn fn) {
  const int64_t gc = l.group_cols(cols), gpr = l.groups_per_row(cols);
  for_row_chunks(pool, rows, cols, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      for (int64_t k = 0; k < gpr; ++k) fn(r, k, group_index(l, r, k, cols), k * gc, gc);
    }
  });
}

template <typename T>
void forward_with(ThreadPool& pool, const IntLayout& l, int64_t rows, int64_t cols, const T* w,
                  const std::vector<Eff<T>>& eff, T* w_hat, std::string_view tensor) {
  const T qmin = static_cast<T>(l.grid.qmin), qmax = static_cast<T>(l.grid.qmax);
  for_groups(pool, l, rows, cols, [&](int64_t r, int64_t, int64_t g, int64_t j0, int64_t n) {
    for (int64_t j = j0; j < j0 + n; ++j) {
      const int64_t i = r * cols + j;
      check_weight(w[i], tensor, r, j);
      bool inside;
      T d_s;
      w_hat[i] = element(w[i], eff[static_cast<size_t>(g)], qmin, qmax, inside, d_s);
    }
  });
}

// ---- LWC group statistics ----
template <typename T>
struct LwcGroup {
  Eff<T> eff;
  T gamma = 1, beta = 1, hi = 0, lo = 0;  // hi = M (or max|w| for sym), lo = m
  int64_t arg_hi = -1, arg_lo = -1;       // flat index of the weight at M / m (−1: the bound is the 0)
};

template <typename T>
T sigmoid(T a) {
  return T(1) / (T(1) + std::exp(-a));
}

template <typename T>
std::vector<LwcGroup<T>> lwc_groups(const IntLayout& l, int64_t rows, int64_t cols, const T* w, std::span<const T> a,
                                    std::span<const T> b) {
  const auto ng = static_cast<size_t>(l.num_groups(rows, cols));
  assert(a.size() == ng && (l.symmetric || b.size() == ng));
  std::vector<LwcGroup<T>> out(ng);
  const int64_t gc = l.group_cols(cols), gpr = l.groups_per_row(cols);
  // Row-major scan, strict comparisons: the first extreme wins, whatever the granularity.
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t k = 0; k < gpr; ++k) {
      LwcGroup<T>& g = out[static_cast<size_t>(group_index(l, r, k, cols))];
      for (int64_t j = k * gc; j < (k + 1) * gc; ++j) {
        const int64_t i = r * cols + j;
        const T v = l.symmetric ? std::fabs(w[i]) : w[i];
        if (v > g.hi) g.hi = v, g.arg_hi = i;
        if (!l.symmetric && v < g.lo) g.lo = v, g.arg_lo = i;
      }
    }
  }
  const T qmin = static_cast<T>(l.grid.qmin), qmax = static_cast<T>(l.grid.qmax);
  for (size_t k = 0; k < ng; ++k) {
    LwcGroup<T>& g = out[k];
    g.gamma = sigmoid(a[k]);
    if (l.symmetric) {
      g.eff.s = stored(l, g.gamma * g.hi / qmax);
      continue;
    }
    g.beta = sigmoid(b[k]);
    g.eff.s = stored(l, (g.gamma * g.hi - g.beta * g.lo) / (qmax - qmin));
    // params_for_range: z = qmin − round(lo / scale), clamped; a zero scale puts z at qmin.
    const T zr = g.eff.s > T(0) ? qmin - std::nearbyint(g.beta * g.lo / g.eff.s) : qmin;
    g.eff.z = std::clamp(zr, qmin, qmax);
    g.eff.z_free = g.eff.s > T(0) && zr == g.eff.z;
  }
  return out;
}

}  // namespace

// ---- LSQ ----

void lsq_init(std::span<const QuantParams> params, std::span<float> step, std::span<float> zero) {
  assert(step.size() == params.size() && (zero.empty() || zero.size() == params.size()));
  for (size_t g = 0; g < params.size(); ++g) {
    step[g] = params[g].scale;
    if (!zero.empty()) zero[g] = static_cast<float>(params[g].zero_point);
  }
}

std::vector<QuantParams> lsq_quant_params(const IntLayout& l, std::span<const float> step, std::span<const float> zero,
                                          std::string_view tensor_name) {
  const auto eff = lsq_effective<float>(l, step, zero, tensor_name);
  std::vector<QuantParams> out(eff.size());
  for (size_t g = 0; g < eff.size(); ++g) out[g] = QuantParams{.scale = eff[g].s, .zero_point = static_cast<int32_t>(eff[g].z)};
  return out;
}

template <typename T>
void lsq_forward(ThreadPool& pool, const IntLayout& l, int64_t rows, int64_t cols, const T* w, std::span<const T> step,
                 std::span<const T> zero, T* w_hat, std::string_view tensor_name) {
  assert(step.size() == static_cast<size_t>(l.num_groups(rows, cols)));
  forward_with(pool, l, rows, cols, w, lsq_effective<T>(l, step, zero, tensor_name), w_hat, tensor_name);
}

template <typename T>
void lsq_backward(ThreadPool& pool, const IntLayout& l, int64_t rows, int64_t cols, const T* w, std::span<const T> step,
                  std::span<const T> zero, const T* grad_w_hat, T* grad_w, std::span<T> grad_step,
                  std::span<T> grad_zero) {
  const auto eff = lsq_effective<T>(l, step, zero, "<tensor>");
  assert(grad_step.size() == eff.size() && (l.symmetric || grad_zero.size() == eff.size()));
  const T qmin = static_cast<T>(l.grid.qmin), qmax = static_cast<T>(l.grid.qmax);
  const int64_t gpr = l.groups_per_row(cols);
  std::vector<double> ps(static_cast<size_t>(rows * gpr)), pz(ps.size());
  for_groups(pool, l, rows, cols, [&](int64_t r, int64_t k, int64_t g, int64_t j0, int64_t n) {
    const Eff<T>& p = eff[static_cast<size_t>(g)];
    double gs = 0, gz = 0;
    for (int64_t j = j0; j < j0 + n; ++j) {
      const int64_t i = r * cols + j;
      bool inside;
      T d_s;
      element(w[i], p, qmin, qmax, inside, d_s);
      const double gh = grad_w_hat[i];
      if (grad_w != nullptr) grad_w[i] = inside ? grad_w_hat[i] : T(0);
      gs += gh * static_cast<double>(d_s);
      if (!inside) gz -= gh * static_cast<double>(p.s);
    }
    ps[static_cast<size_t>(r * gpr + k)] = gs;
    pz[static_cast<size_t>(r * gpr + k)] = gz;
  });
  const auto gs = reduce_groups(l, rows, cols, ps), gz = reduce_groups(l, rows, cols, pz);
  for (size_t g = 0; g < eff.size(); ++g) {
    grad_step[g] = static_cast<T>(gs[g]);
    if (!l.symmetric) grad_zero[g] = eff[g].z_free ? static_cast<T>(gz[g]) : T(0);
  }
}

// ---- LWC ----

std::vector<QuantParams> lwc_quant_params(const IntLayout& l, int64_t rows, int64_t cols, const float* w,
                                          std::span<const float> a, std::span<const float> b) {
  const auto groups = lwc_groups<float>(l, rows, cols, w, a, b);
  std::vector<QuantParams> out(groups.size());
  for (size_t g = 0; g < groups.size(); ++g) {
    out[g] = QuantParams{.scale = groups[g].eff.s, .zero_point = static_cast<int32_t>(groups[g].eff.z)};
  }
  return out;
}

template <typename T>
void lwc_forward(ThreadPool& pool, const IntLayout& l, int64_t rows, int64_t cols, const T* w, std::span<const T> a,
                 std::span<const T> b, T* w_hat, std::string_view tensor_name) {
  for (int64_t i = 0; i < rows * cols; ++i) check_weight(w[i], tensor_name, i / cols, i % cols);
  const auto groups = lwc_groups<T>(l, rows, cols, w, a, b);
  std::vector<Eff<T>> eff(groups.size());
  for (size_t g = 0; g < groups.size(); ++g) eff[g] = groups[g].eff;
  forward_with(pool, l, rows, cols, w, eff, w_hat, tensor_name);
}

template <typename T>
void lwc_backward(ThreadPool& pool, const IntLayout& l, int64_t rows, int64_t cols, const T* w, std::span<const T> a,
                  std::span<const T> b, const T* grad_w_hat, T* grad_w, std::span<T> grad_a, std::span<T> grad_b) {
  const auto groups = lwc_groups<T>(l, rows, cols, w, a, b);
  assert(grad_w != nullptr && grad_a.size() == groups.size() && (l.symmetric || grad_b.size() == groups.size()));
  const T qmin = static_cast<T>(l.grid.qmin), qmax = static_cast<T>(l.grid.qmax);
  const int64_t gpr = l.groups_per_row(cols);
  std::vector<double> ph(static_cast<size_t>(rows * gpr)), pz(ph.size());
  for_groups(pool, l, rows, cols, [&](int64_t r, int64_t k, int64_t g, int64_t j0, int64_t n) {
    const Eff<T>& p = groups[static_cast<size_t>(g)].eff;
    double gh_sum = 0, gz = 0;
    for (int64_t j = j0; j < j0 + n; ++j) {
      const int64_t i = r * cols + j;
      bool inside;
      T d_s;
      element(w[i], p, qmin, qmax, inside, d_s);
      if (p.s == T(0)) inside = true;  // a zero-scale group: mask 1, no parameter gradient
      grad_w[i] = inside ? grad_w_hat[i] : T(0);
      if (p.s == T(0)) continue;
      const double gh = grad_w_hat[i];
      gh_sum += gh * static_cast<double>(d_s);
      if (!inside) gz -= gh * static_cast<double>(p.s);
    }
    ph[static_cast<size_t>(r * gpr + k)] = gh_sum;
    pz[static_cast<size_t>(r * gpr + k)] = gz;
  });
  const auto gh = reduce_groups(l, rows, cols, ph), gz = reduce_groups(l, rows, cols, pz);
  // Per group, in group order (each group's extremes are its own elements): chain rule through
  // h(γ, β, M, m) and z(β, m, h).
  const double range = l.symmetric ? static_cast<double>(qmax) : static_cast<double>(qmax - qmin);
  for (size_t k = 0; k < groups.size(); ++k) {
    const LwcGroup<T>& g = groups[k];
    grad_a[k] = T(0);
    if (!l.symmetric) grad_b[k] = T(0);
    const double s = g.eff.s;
    if (s == 0) continue;
    const double gamma = g.gamma, beta = g.beta, hi = g.hi, lo = g.lo;
    if (l.symmetric) {
      const double d_gamma = gh[k] * hi / range, d_hi = gh[k] * gamma / range;
      grad_a[k] = static_cast<T>(d_gamma * gamma * (1 - gamma));
      if (g.arg_hi >= 0) {
        grad_w[g.arg_hi] += static_cast<T>(w[g.arg_hi] < 0 ? -d_hi : d_hi);
      }
      continue;
    }
    const double zg = g.eff.z_free ? gz[k] : 0.0;  // dL/dz through the elements, if z moves
    const double h_total = gh[k] + zg * beta * lo / (s * s);
    const double d_gamma = h_total * hi / range;
    const double d_beta = -h_total * lo / range - zg * lo / s;
    const double d_hi = h_total * gamma / range;
    const double d_lo = -h_total * beta / range - zg * beta / s;
    grad_a[k] = static_cast<T>(d_gamma * gamma * (1 - gamma));
    grad_b[k] = static_cast<T>(d_beta * beta * (1 - beta));
    if (g.arg_hi >= 0) grad_w[g.arg_hi] += static_cast<T>(d_hi);
    if (g.arg_lo >= 0) grad_w[g.arg_lo] += static_cast<T>(d_lo);
  }
}

// ---- Learned rounding ----

namespace {

template <typename T>
std::vector<Eff<T>> round_effective(const IntLayout& l, const RoundRange& range, std::span<const T> gamma,
                                    std::span<const T> beta) {
  const size_t ng = gamma.size();
  assert(range.hi.size() == ng && range.lo.size() == ng && (l.symmetric || beta.size() == ng));
  const double qmin = l.grid.qmin, qmax = l.grid.qmax;
  std::vector<Eff<T>> out(ng);
  for (size_t g = 0; g < ng; ++g) {
    Eff<T>& e = out[g];
    // In double: at γ = β = 1 the range's own scale comes back exactly (round_range's products of a
    // float scale and small integers are exact in double).
    const double h = l.symmetric ? static_cast<double>(gamma[g]) * range.hi[g] / qmax
                                 : (static_cast<double>(gamma[g]) * range.hi[g] -
                                    static_cast<double>(beta[g]) * range.lo[g]) / (qmax - qmin);
    e.s = stored(l, static_cast<T>(h));
    if (l.symmetric) continue;
    const double zr = e.s > T(0) ? qmin - std::nearbyint(static_cast<double>(beta[g]) * range.lo[g] /
                                                         static_cast<double>(e.s))
                                 : qmin;
    e.z = static_cast<T>(std::clamp(zr, qmin, qmax));
    e.z_free = e.s > T(0) && zr == static_cast<double>(e.z);
  }
  return out;
}

}  // namespace

RoundRange round_range(const IntLayout& l, std::span<const QuantParams> params) {
  RoundRange r{.hi = std::vector<double>(params.size()), .lo = std::vector<double>(params.size())};
  for (size_t g = 0; g < params.size(); ++g) {
    const double s = params[g].scale, z = l.symmetric ? 0.0 : params[g].zero_point;
    r.hi[g] = s * (l.grid.qmax - z);
    r.lo[g] = l.symmetric ? 0.0 : s * (l.grid.qmin - z);
  }
  return r;
}

std::vector<QuantParams> round_quant_params(const IntLayout& l, const RoundRange& range, std::span<const float> gamma,
                                            std::span<const float> beta) {
  const auto eff = round_effective<float>(l, range, gamma, beta);
  std::vector<QuantParams> out(eff.size());
  for (size_t g = 0; g < eff.size(); ++g) out[g] = {.scale = eff[g].s, .zero_point = static_cast<int32_t>(eff[g].z)};
  return out;
}

template <typename T>
void round_latent(ThreadPool& pool, const IntLayout& l, int64_t rows, int64_t cols, const T* base, std::span<const T> v,
                  const RoundRange& range, std::span<const T> gamma, std::span<const T> beta, T* w_latent) {
  const auto eff = round_effective<T>(l, range, gamma, beta);
  for_groups(pool, l, rows, cols, [&](int64_t r, int64_t, int64_t g, int64_t j0, int64_t n) {
    const T s = eff[static_cast<size_t>(g)].s;
    for (int64_t i = r * cols + j0; i < r * cols + j0 + n; ++i) w_latent[i] = base[i] + v[static_cast<size_t>(i)] * s;
  });
}

template <typename T>
void round_forward(ThreadPool& pool, const IntLayout& l, int64_t rows, int64_t cols, const T* base, std::span<const T> v,
                   const RoundRange& range, std::span<const T> gamma, std::span<const T> beta, T* w_hat,
                   std::string_view tensor_name) {
  std::vector<T> latent(static_cast<size_t>(rows * cols));
  round_latent<T>(pool, l, rows, cols, base, v, range, gamma, beta, latent.data());
  forward_with(pool, l, rows, cols, latent.data(), round_effective<T>(l, range, gamma, beta), w_hat, tensor_name);
}

template <typename T>
void round_backward(ThreadPool& pool, const IntLayout& l, int64_t rows, int64_t cols, const T* base,
                    std::span<const T> v, const RoundRange& range, std::span<const T> gamma, std::span<const T> beta,
                    const T* grad_w_hat, T* grad_v, std::span<T> grad_gamma, std::span<T> grad_beta) {
  const auto eff = round_effective<T>(l, range, gamma, beta);
  assert(grad_v != nullptr && grad_gamma.size() == eff.size() && (l.symmetric || grad_beta.size() == eff.size()));
  const T qmin = static_cast<T>(l.grid.qmin), qmax = static_cast<T>(l.grid.qmax);
  const int64_t gpr = l.groups_per_row(cols);
  // The forward's latent values, by the same function (one expression, whatever the contraction).
  std::vector<T> latent(static_cast<size_t>(rows * cols));
  round_latent<T>(pool, l, rows, cols, base, v, range, gamma, beta, latent.data());
  std::vector<double> ps(static_cast<size_t>(rows * gpr)), pz(ps.size());
  for_groups(pool, l, rows, cols, [&](int64_t r, int64_t k, int64_t g, int64_t j0, int64_t n) {
    const Eff<T>& p = eff[static_cast<size_t>(g)];
    double gs = 0, gz = 0;
    for (int64_t i = r * cols + j0; i < r * cols + j0 + n; ++i) {
      const T vi = v[static_cast<size_t>(i)];
      bool inside;
      T d_s;
      element(latent[static_cast<size_t>(i)], p, qmin, qmax, inside, d_s);
      if (p.s == T(0)) {  // a zero-scale group decodes to 0 whatever its offsets
        grad_v[i] = T(0);
        continue;
      }
      const double gh = grad_w_hat[i];
      grad_v[i] = inside ? grad_w_hat[i] * p.s : T(0);
      gs += gh * (static_cast<double>(d_s) + (inside ? static_cast<double>(vi) : 0.0));
      if (!inside) gz -= gh * static_cast<double>(p.s);
    }
    ps[static_cast<size_t>(r * gpr + k)] = gs;
    pz[static_cast<size_t>(r * gpr + k)] = gz;
  });
  const auto gs = reduce_groups(l, rows, cols, ps), gz = reduce_groups(l, rows, cols, pz);
  const double range_q = l.symmetric ? static_cast<double>(qmax) : static_cast<double>(qmax - qmin);
  for (size_t k = 0; k < eff.size(); ++k) {
    grad_gamma[k] = T(0);
    if (!l.symmetric) grad_beta[k] = T(0);
    const double s = eff[k].s;
    if (s == 0) continue;
    const double hi = range.hi[k], lo = range.lo[k];
    if (l.symmetric) {
      grad_gamma[k] = static_cast<T>(gs[k] * hi / range_q);
      continue;
    }
    const double beta_k = beta[k];
    const double zg = eff[k].z_free ? gz[k] : 0.0;  // dL/dz through the elements, if z moves
    const double h_total = gs[k] + zg * beta_k * lo / (s * s);
    grad_gamma[k] = static_cast<T>(h_total * hi / range_q);
    grad_beta[k] = static_cast<T>(-h_total * lo / range_q - zg * lo / s);
  }
}

#define CALQ_GRAD_INSTANTIATE(T)                                                                                     \
  template void lsq_forward<T>(ThreadPool&, const IntLayout&, int64_t, int64_t, const T*, std::span<const T>,        \
                               std::span<const T>, T*, std::string_view);                                            \
  template void lsq_backward<T>(ThreadPool&, const IntLayout&, int64_t, int64_t, const T*, std::span<const T>,       \
                                std::span<const T>, const T*, T*, std::span<T>, std::span<T>);                       \
  template void lwc_forward<T>(ThreadPool&, const IntLayout&, int64_t, int64_t, const T*, std::span<const T>,        \
                               std::span<const T>, T*, std::string_view);                                            \
  template void lwc_backward<T>(ThreadPool&, const IntLayout&, int64_t, int64_t, const T*, std::span<const T>,       \
                                std::span<const T>, const T*, T*, std::span<T>, std::span<T>);                       \
  template void round_latent<T>(ThreadPool&, const IntLayout&, int64_t, int64_t, const T*, std::span<const T>,       \
                                const RoundRange&, std::span<const T>, std::span<const T>, T*);                      \
  template void round_forward<T>(ThreadPool&, const IntLayout&, int64_t, int64_t, const T*, std::span<const T>,      \
                                 const RoundRange&, std::span<const T>, std::span<const T>, T*, std::string_view);   \
  template void round_backward<T>(ThreadPool&, const IntLayout&, int64_t, int64_t, const T*, std::span<const T>,     \
                                  const RoundRange&, std::span<const T>, std::span<const T>, const T*, T*,           \
                                  std::span<T>, std::span<T>);
CALQ_GRAD_INSTANTIATE(float)
CALQ_GRAD_INSTANTIATE(double)
#undef CALQ_GRAD_INSTANTIATE

}  // namespace calq::grad
