// Encoder of the symmetric k-quant super-blocks (q3_K, q6_K): y = (D·c_j)·l. Same four steps as
// the affine encoder (gguf_kquants_search.cpp): per-sub-block grid + least squares + Lloyd passes,
// fp16 super-scale chosen on a curvature-weighted proxy, exact code search with re-rounded
// quants, least-squares refit of the super-scale.
#include <cmath>
#include <cstring>
#include <limits>

#include "formats/gguf_kquants.h"

namespace calq::kquant {
namespace {

struct SymFit {
  float s = 0;      // signed least-squares scale
  double curv = 0;  // Σw·l² of its assignment: error growth per Δs²
};

SymFit fit_sym_sub(const SymmetricSpec& spec, const Kernels& kn, const float* x, const float* w) {
  const int n = spec.sub;
  float vmax = 0, amax = 0;
  double sw = 0;
  for (int i = 0; i < n; ++i) {
    sw += w[i];
    if (std::fabs(x[i]) > amax) {
      amax = std::fabs(x[i]);
      vmax = x[i];
    }
  }
  SymFit fit;
  if (!(amax > kTiny) || !(sw > 0)) return fit;
  const float lmin = float(spec.lmin), lmax = float(spec.lmax);
  // Maximises (Σwlx)²/Σwl², i.e. minimises Σwx² − (Σwlx)²/Σwl².
  double best_num = -1, best_sll = 1, best_slx = 0;
  auto consider = [&](float iscale) {
    float sums[2];
    kn.sym_assign(x, w, n, iscale, lmin, lmax, sums);
    const double slx = sums[0], sll = sums[1];
    if (sll > 0 && slx * slx * best_sll > best_num * sll) {
      best_num = slx * slx;
      best_sll = sll;
      best_slx = slx;
    }
  };
  // The largest |x| lands near the long end (lmin) or near lmax.
  for (int k = 0; k <= spec.nstep; ++k) {
    const float r = spec.rmin + spec.rdelta * float(k);
    consider(-(-lmin + r) / vmax);
    consider((lmax + r) / vmax);
  }
  if (best_num < 0) return fit;
  for (int it = 0; it < 2; ++it) {
    const double s = best_slx / best_sll;
    if (s == 0) break;
    const double old = best_num / best_sll;
    consider(float(1.0 / s));
    if (!(best_num / best_sll > old)) break;
  }
  fit.s = float(best_slx / best_sll);
  fit.curv = best_sll;
  return fit;
}

// fp16 D minimising Σ a_j (D·c_j − t_j)², c_j = round(t_j / D) in [cmin, cmax]; D may be negative
// so the largest target can use the long end of the code range.
float choose_sym_scale(const float* t, const double* a, int count, int cmin, int cmax) {
  float tmax = 0, amax = 0;
  for (int j = 0; j < count; ++j) {
    if (std::fabs(t[j]) > amax) {
      amax = std::fabs(t[j]);
      tmax = t[j];
    }
  }
  if (!(amax > 0)) return 0.0f;
  float best_d = half_round(tmax / float(cmin));
  double best = std::numeric_limits<double>::infinity();
  constexpr int kSteps = 12;
  for (int side = 0; side < 2; ++side) {
    const float top = side == 0 ? float(-cmin) : float(cmax);
    const float hi = top + 0.5f, lo = 0.8f * top;
    for (int k = 0; k <= kSteps; ++k) {
      const float den = hi - (hi - lo) * float(k) / float(kSteps);
      const float d = half_round(side == 0 ? -tmax / den : tmax / den);
      if (d == 0) continue;
      const double e = scale_code_error(t, a, count, d, float(cmin), float(cmax));
      if (e < best) {
        best = e;
        best_d = d;
      }
    }
  }
  return best_d;
}

struct SymState {
  float D = 0;
  int8_t c[16];  // written by sym_codes
  int8_t l[kSuper];
  double err = 0;
};

void sym_codes(const SymmetricSpec& spec, const Kernels& kn, const float* x, const float* w, const float* ts, SymState& st) {
  const int nsub = kSuper / spec.sub;
  const float lmin = float(spec.lmin), lmax = float(spec.lmax);
  st.err = 0;
  for (int j = 0; j < nsub; ++j) {
    const float* xj = x + j * spec.sub;
    const float* wj = w + j * spec.sub;
    const int c0 = st.D != 0 ? int(round_clamp(ts[j] / st.D, float(spec.cmin), float(spec.cmax))) : 0;
    float best = std::numeric_limits<float>::infinity();
    int bc = c0;
    for (int dc = -spec.code_radius; dc <= spec.code_radius; ++dc) {
      const int c = c0 + dc;
      if (c < spec.cmin || c > spec.cmax || (st.D == 0 && dc != 0)) continue;
      const float e = kn.sym_exact(xj, wj, spec.sub, st.D * float(c), lmin, lmax, nullptr);
      if (e < best) {
        best = e;
        bc = c;
      }
    }
    st.c[j] = int8_t(bc);
    st.err += kn.sym_exact(xj, wj, spec.sub, st.D * float(bc), lmin, lmax, st.l + j * spec.sub);
  }
}

}  // namespace

void encode_symmetric(const SymmetricSpec& spec, const Kernels& kn, const float* x, const float* w,
                      SymmetricBlock& out) {
  const int nsub = kSuper / spec.sub;
  float ts[16];
  double curv[16];
  for (int j = 0; j < nsub; ++j) {
    const SymFit f = fit_sym_sub(spec, kn, x + j * spec.sub, w + j * spec.sub);
    ts[j] = f.s;
    curv[j] = f.curv;
  }
  SymState st;
  st.D = choose_sym_scale(ts, curv, nsub, spec.cmin, spec.cmax);
  sym_codes(spec, kn, x, w, ts, st);

  for (int it = 0; it < 1 && st.D != 0; ++it) {  // one refit (see encode_affine)
    double suu = 0, sux = 0;
    for (int i = 0; i < kSuper; ++i) {
      const double u = double(st.c[i / spec.sub]) * st.l[i];
      suu += w[i] * u * u;
      sux += w[i] * u * x[i];
    }
    if (!(suu > 0)) break;
    const float D = half_round(float(sux / suu));
    if (D == st.D || D == 0) break;
    float ts2[16];
    for (int j = 0; j < nsub; ++j) ts2[j] = st.D * float(st.c[j]);
    SymState trial;
    trial.D = D;
    sym_codes(spec, kn, x, w, ts2, trial);
    if (!(trial.err < st.err)) break;
    st = trial;
  }

  out.d = f32_to_f16(st.D);
  std::memcpy(out.c, st.c, sizeof out.c);
  std::memcpy(out.l, st.l, sizeof out.l);
}

}  // namespace calq::kquant
