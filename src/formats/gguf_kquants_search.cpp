// Encoders of the k-quant super-blocks (see gguf_kquants.h). Strategy, for both shapes:
//  1. per sub-block, a grid of inverse scales; for each, round every weight and solve the weighted
//     least-squares scale (and min) for that assignment; keep the assignment of least error, then a
//     few Lloyd passes (re-round under the fitted scale, refit);
//  2. the fp16 super-scale(s): a grid of candidates, each scored by the quadratic growth of every
//     sub-block's error when its scale (min) moves to the nearest code (curvature Σw·l² and friends);
//  3. exact pass: for every sub-block the neighbouring codes are tried with every quant re-rounded
//     under the stored effective scale, the error computed from y exactly as the decoder forms it;
//  4. the super-scale(s) are refitted by least squares over the chosen codes and quants, rounded to
//     fp16, and step 3 repeated; kept only if the exact error drops.
// llama.cpp minimises proxies (weights av|x|+|x| or x², importance·sqrt(σ²+x²)); this minimises
// the objective itself, Σ w·(x − y)² with w = 1 or the importance.
//
// All arithmetic is plain scalar C++ in a fixed order (8-lane partial sums that the compiler may
// vectorise without reassociation), so the bytes do not depend on the thread or the caller.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "formats/gguf_kquants.h"

namespace calq::kquant {
namespace {

// ---------------------------------------------------------------- affine: y = d·q − m

struct AffineFit {
  float s = 0, m = 0;      // continuous optimum (s >= 0, m >= 0)
  double curv_d = 0;       // error growth per Δd² once m has re-adjusted: Σwl² − (Σwl)²/Σw
  double curv_m = 0;       // Σw
  double dm_ratio = 0;     // Δm that follows Δd: Σwl/Σw
};

struct AffineSums {
  double sw = 0, sx = 0, sxx = 0;
};

struct AffineCandidate {
  double err = std::numeric_limits<double>::infinity();
  double s = 0, b = 0, sl = 0, sll = 0;
};

// Least-squares (s, b) for the assignment q (y = s·q + b, b <= 0) and its error from the sums.
inline bool solve_affine(const AffineSums& t, double sl, double sll, double slx, AffineCandidate& c) {
  const double det = t.sw * sll - sl * sl;
  if (!(det > 0)) return false;
  double s = (t.sw * slx - t.sx * sl) / det;
  double b = (sll * t.sx - sl * slx) / det;
  if (b > 0) {
    b = 0;
    s = slx / sll;
  }
  if (!(s > 0)) return false;
  c.err = t.sxx - 2 * s * slx - 2 * b * t.sx + s * s * sll + 2 * s * b * sl + b * b * t.sw;
  c.s = s;
  c.b = b;
  c.sl = sl;
  c.sll = sll;
  return true;
}

AffineFit fit_affine_sub(const AffineSpec& spec, const Kernels& kn, const float* x, const float* w) {
  const int n = spec.sub;
  AffineSums t;
  float xmin = x[0], xmax = x[0];
  for (int i = 0; i < n; ++i) {
    t.sw += w[i];
    t.sx += double(w[i]) * x[i];
    t.sxx += double(w[i]) * x[i] * x[i];
    xmin = std::min(xmin, x[i]);
    xmax = std::max(xmax, x[i]);
  }
  xmin = std::min(xmin, 0.0f);
  AffineFit fit;
  const float range = xmax - xmin;
  if (!(range > kTiny) || !(t.sw > 0)) {
    fit.m = -xmin;
    fit.curv_m = t.sw;
    return fit;
  }
  const float nmax = float(spec.nmax);
  AffineCandidate best;
  for (int k = 0; k <= spec.nstep; ++k) {
    const float iscale = (nmax + spec.rmin + spec.rdelta * float(k)) / range;
    float sums[3];
    kn.affine_assign(x, w, n, xmin, iscale, nmax, sums);
    AffineCandidate c;
    if (solve_affine(t, sums[0], sums[1], sums[2], c) && c.err < best.err) best = c;
  }
  if (!(best.err < std::numeric_limits<double>::infinity())) {
    fit.m = -xmin;
    fit.curv_m = t.sw;
    return fit;
  }
  // Lloyd passes: nearest levels under the fitted (s, b), then refit.
  for (int it = 0; it < 2; ++it) {
    float sums[3];
    kn.affine_assign(x, w, n, float(best.b), float(1.0 / best.s), nmax, sums);
    AffineCandidate c;
    if (!solve_affine(t, sums[0], sums[1], sums[2], c) || !(c.err < best.err)) break;
    best = c;
  }
  fit.s = float(best.s);
  fit.m = float(-best.b);
  fit.curv_d = std::max(0.0, best.sll - best.sl * best.sl / t.sw);
  fit.curv_m = t.sw;
  fit.dm_ratio = best.sl / t.sw;
  return fit;
}

// Picks the fp16 scale D for targets t_j (>= 0) with curvatures a_j: minimises Σ a_j (D·c_j − t_j)²
// with c_j = round(t_j / D) in [0, code_max]. Returns the fp16-exact D (0 when all targets are 0).
float choose_super_scale(const float* t, const double* a, int count, int code_max) {
  float tmax = 0;
  for (int j = 0; j < count; ++j) tmax = std::max(tmax, t[j]);
  if (!(tmax > 0)) return 0.0f;
  float best_d = half_round(tmax / float(code_max));
  double best = std::numeric_limits<double>::infinity();
  // Denominators from 0.7·code_max (coarser scales, fewer clamped) to code_max + 0.5.
  const int steps = code_max >= 63 ? 16 : 24;
  const float lo = 0.7f * float(code_max), hi = float(code_max) + 0.5f;
  for (int k = 0; k <= steps; ++k) {
    const float den = hi - (hi - lo) * float(k) / float(steps);
    const float d = half_round(tmax / den);
    if (!(d > 0)) continue;
    const double e = scale_code_error(t, a, count, d, 0.0f, float(code_max));
    if (e < best) {
      best = e;
      best_d = d;
    }
  }
  return best_d;
}

struct AffineState {
  float D = 0, M = 0;
  uint8_t sc[16], mn[16];  // written by affine_codes
  uint8_t q[kSuper];
  double err = 0;
};

// Step 3: per sub-block, the code pair around the rounded targets with the least exact error.
void affine_codes(const AffineSpec& spec, const Kernels& kn, const float* x, const float* w, const float* ts,
                  const float* tm, AffineState& st) {
  const int nsub = kSuper / spec.sub;
  const float nmax = float(spec.nmax);
  st.err = 0;
  for (int j = 0; j < nsub; ++j) {
    const float* xj = x + j * spec.sub;
    const float* wj = w + j * spec.sub;
    const int s0 = st.D > 0 ? int(round_clamp(ts[j] / st.D, 0.0f, float(spec.code_max))) : 0;
    const int m0 = st.M > 0 ? int(round_clamp(tm[j] / st.M, 0.0f, float(spec.code_max))) : 0;
    float best = std::numeric_limits<float>::infinity();
    int bs = s0, bm = m0;
    for (int ds = -1; ds <= 1; ++ds) {
      const int sc = s0 + ds;
      if (sc < 0 || sc > spec.code_max || (st.D == 0 && ds != 0)) continue;
      // mn = 0 is tried too: when fp16 flushes D to 0 (tiny blocks) a min alone can be worse than 0.
      for (int dm = -2; dm <= 1; ++dm) {
        const int mn = dm == -2 ? 0 : m0 + dm;
        if (mn < 0 || mn > spec.code_max || (st.M == 0 && dm != 0) || (dm == -2 && m0 <= 1)) continue;
        const float e = kn.affine_exact(xj, wj, spec.sub, st.D * float(sc), st.M * float(mn), nmax, nullptr);
        if (e < best) {
          best = e;
          bs = sc;
          bm = mn;
        }
      }
    }
    st.sc[j] = uint8_t(bs);
    st.mn[j] = uint8_t(bm);
    st.err += kn.affine_exact(xj, wj, spec.sub, st.D * float(bs), st.M * float(bm), nmax, st.q + j * spec.sub);
  }
}

// Step 4: least-squares (D, M) for fixed codes and quants: y = D·(sc_j·q) − M·mn_j.
bool refit_affine_super(const AffineSpec& spec, const float* x, const float* w, const AffineState& st, float& D,
                        float& M) {
  // Per sub-block sums of w·q², w·q, w, w·q·x, w·x, combined with the codes in double.
  double suu = 0, suv = 0, svv = 0, sux = 0, svx = 0;
  for (int j = 0; j < kSuper / spec.sub; ++j) {
    Lanes qq, q1, w1, qx, x1;
    for (int i = 0; i < spec.sub; i += 8) {
      for (int k = 0; k < 8; ++k) {
        const int e = j * spec.sub + i + k;
        const float q = st.q[e], wq = w[e] * q;
        qq.v[k] += wq * q;
        q1.v[k] += wq;
        w1.v[k] += w[e];
        qx.v[k] += wq * x[e];
        x1.v[k] += w[e] * x[e];
      }
    }
    const double sc = st.sc[j], mn = st.mn[j];
    suu += sc * sc * qq.sum();
    suv += sc * mn * q1.sum();
    svv += mn * mn * w1.sum();
    sux += sc * qx.sum();
    svx += mn * x1.sum();
  }
  // Normal equations of min Σw(D·u − M·v − x)².
  const double det = suu * svv - suv * suv;
  if (!(det > 0)) return false;
  const double d = (sux * svv - svx * suv) / det;
  const double m = (sux * suv - svx * suu) / det;
  if (!(d > 0) || m < 0) return false;
  D = half_round(float(d));
  M = half_round(float(m));
  return D > 0;
}

}  // namespace

void block_weights(const float* importance, float* w) {
  if (importance == nullptr) {
    std::fill(w, w + kSuper, 1.0f);
    return;
  }
  double mean = 0;
  for (int i = 0; i < kSuper; ++i) mean += importance[i];
  mean /= kSuper;
  if (!(mean > 0) || !std::isfinite(mean)) {
    std::fill(w, w + kSuper, 1.0f);
    return;
  }
  // Normalised (scale-free) plus a floor of 1e-4 of the mean: all-zero sub-blocks still get fitted.
  const float inv = float(1.0 / mean);
  for (int i = 0; i < kSuper; ++i) w[i] = importance[i] * inv + 1e-4f;
}

void encode_affine(const AffineSpec& spec, const Kernels& kn, const float* x, const float* w, AffineBlock& out) {
  const int nsub = kSuper / spec.sub;
  float ts[16], tm[16];
  double cd[16], cm[16];
  AffineFit fits[16];
  for (int j = 0; j < nsub; ++j) {
    fits[j] = fit_affine_sub(spec, kn, x + j * spec.sub, w + j * spec.sub);
    ts[j] = fits[j].s;
    cd[j] = fits[j].curv_d;
  }
  AffineState st;
  st.D = choose_super_scale(ts, cd, nsub, spec.code_max);
  // The mins follow the scale errors: Δm = (Σwl/Σw)·Δd keeps the sub-block mean in place.
  for (int j = 0; j < nsub; ++j) {
    float dq = 0;
    if (st.D > 0) dq = st.D * round_clamp(ts[j] / st.D, 0.0f, float(spec.code_max)) - ts[j];
    tm[j] = std::max(0.0f, fits[j].m + float(fits[j].dm_ratio) * dq);
    cm[j] = fits[j].curv_m;
  }
  st.M = choose_super_scale(tm, cm, nsub, spec.code_max);
  affine_codes(spec, kn, x, w, ts, tm, st);

  for (int it = 0; it < 1; ++it) {  // one refit: a second one gains ~0.5 % MSE for ~25 % time
    float D, M;
    if (!refit_affine_super(spec, x, w, st, D, M)) break;
    if (D == st.D && M == st.M) break;
    // Targets for the new super-scales are the effective scales now in use.
    float ts2[16], tm2[16];
    for (int j = 0; j < nsub; ++j) {
      ts2[j] = st.D * float(st.sc[j]);
      tm2[j] = st.M * float(st.mn[j]);
    }
    AffineState trial;
    trial.D = D;
    trial.M = M;
    affine_codes(spec, kn, x, w, ts2, tm2, trial);
    if (!(trial.err < st.err)) break;
    st = trial;
  }

  out.d = f32_to_f16(st.D);
  out.dmin = f32_to_f16(st.M);
  std::memcpy(out.sc, st.sc, sizeof out.sc);
  std::memcpy(out.mn, st.mn, sizeof out.mn);
  std::memcpy(out.q, st.q, sizeof out.q);
}

}  // namespace calq::kquant
