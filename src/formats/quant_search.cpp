#include "formats/quant_search.h"

#include <cassert>
#include <cstring>
#include <limits>
#include <type_traits>

#include "core/dtype.h"
#include "formats/quant_search_kernels.h"

namespace calq::quant {

uint16_t to_f16_bits(float x) {
  assert(!std::isnan(x));
  return f32_to_f16(std::clamp(x, -kMaxF16, kMaxF16));
}

float round_to_f16(float x) { return f16_to_f32(to_f16_bits(x)); }

TableLevels16::TableLevels16(std::span<const int8_t, 16> table) {
  for (size_t k = 0; k < 16; ++k) values[k] = static_cast<float>(table[k]);
  for (size_t k = 0; k + 1 < 16; ++k) {
    assert(values[k] < values[k + 1]);
    mids[k] = 0.5f * (values[k] + values[k + 1]);
  }
  mids[15] = std::numeric_limits<float>::infinity();
}

void block_weights(const float* importance, int n, float* w) {
  float max_w = 0;
  if (importance != nullptr) {
    for (int i = 0; i < n; ++i) max_w = std::max(max_w, importance[i]);
  }
  if (max_w == 0) {
    std::fill(w, w + n, 1.0f);
    return;
  }
  for (int i = 0; i < n; ++i) w[i] = importance[i] / max_w;
}

template <class Levels>
double assign_symmetric(const float* x, const float* w, int n, const Levels& levels, float s, uint8_t* q, double* sxl,
                        double* sll, bool fast) {
  const float inv = 1.0f / s;
  if (s == 0 || !std::isfinite(inv)) {
    // Every element decodes to (about) zero; the level nearest to 0 keeps it exactly zero when 0 is a level.
    const int z = levels.nearest(0.0f);
    const float l = levels.value(z);
    double err = 0, a = 0, b = 0;
    for (int i = 0; i < n; ++i) {
      const double e = static_cast<double>(x[i]) - static_cast<double>(l * s);
      err += w[i] * e * e;
      a += static_cast<double>(w[i]) * x[i] * l;
      b += static_cast<double>(w[i]) * l * l;
      if (q != nullptr) q[i] = static_cast<uint8_t>(z);
    }
    if (sxl != nullptr) *sxl = a;
    if (sll != nullptr) *sll = b;
    return err;
  }
  detail::SymmetricSums sums;
  if constexpr (std::is_same_v<Levels, UniformLevels>) {
    sums = detail::assign_uniform(x, w, n, levels.lo, levels.hi, s, inv, q, fast);
  } else {
    sums = detail::assign_table(x, w, n, levels, s, inv, q, fast);
  }
  if (sxl != nullptr) *sxl = sums.sxl;
  if (sll != nullptr) *sll = sums.sll;
  return sums.err;
}

template <class Levels>
SymmetricFit fit_symmetric(const float* x, const float* w, int n, const Levels& levels, const ScaleSearch& search,
                           uint8_t* q) {
  assert(n > 0 && n <= 256);
  float tamed[256];
  x = tame_block(x, n, tamed);
  float amax = 0;
  for (int i = 0; i < n; ++i) {
    if (std::fabs(x[i]) > std::fabs(amax)) amax = x[i];
  }
  SymmetricFit best{.scale = 0, .error = assign_symmetric(x, w, n, levels, 0.0f, q)};
  if (amax == 0) return best;

  // Evaluates scale s as stored; keeps it when it beats the best so far. Returns whether it did.
  // (The codes are assigned once, for the winner, at the end.)
  auto consider = [&](float s, double* sxl, double* sll) {
    if (search.fp16) s = round_to_f16(s);
    if (s == 0 || !std::isfinite(s)) {
      if (sll != nullptr) *sll = 0;
      return false;
    }
    const double err = assign_symmetric(x, w, n, levels, s, nullptr, sxl, sll, search.fast);
    if (err < best.error) {
      best = SymmetricFit{.scale = s, .error = err};
      return true;
    }
    return false;
  };
  auto least_squares_step = [&](double sxl, double sll) {
    if (sll > 0) return consider(static_cast<float>(sxl / sll), nullptr, nullptr);
    return false;
  };

  for (const float extreme : {levels.min_value(), levels.max_value()}) {
    if (extreme == 0) continue;
    const float s0 = amax / extreme;
    for (int t = 0; t <= search.steps; ++t) {
      const float f = search.steps == 0 ? 1.0f : search.lo + (search.hi - search.lo) * static_cast<float>(t) /
                                                                   static_cast<float>(search.steps);
      double sxl = 0, sll = 0;
      consider(s0 * f, &sxl, &sll);
      least_squares_step(sxl, sll);
    }
  }
  if (search.dominant_lo > 0) {
    // With uneven weights a few elements may dominate the objective: scales that put one of them
    // exactly on a level (the levels whose scale lies in [dominant_lo, hi]·s0 of either extreme).
    const float ext = std::max(std::fabs(levels.min_value()), std::fabs(levels.max_value()));
    const float ext_small = std::min(std::fabs(levels.min_value()), std::fabs(levels.max_value()));
    const float s_min = search.dominant_lo * std::fabs(amax) / ext;
    const float s_max = search.hi * std::fabs(amax) / (ext_small > 0 ? ext_small : ext);
    bool taken[256] = {};
    for (int d = 0; d < search.dominant_elements; ++d) {
      int dom = -1;
      double dom_wxx = 0;
      for (int i = 0; i < n; ++i) {
        const double v = static_cast<double>(w[i]) * x[i] * x[i];
        if (!taken[i] && v > dom_wxx) {
          dom_wxx = v;
          dom = i;
        }
      }
      if (dom < 0) break;
      taken[dom] = true;
      int in_range = 0;
      for (int k = 0; k < levels.count(); ++k) {
        const float l = levels.value(k);
        const float s = l == 0 ? 0 : std::fabs(x[dom] / l);
        in_range += s >= s_min && s <= s_max;
      }
      const int stride = std::max(1, in_range / std::max(1, search.dominant_candidates));
      int seen = 0;
      for (int k = 0; k < levels.count(); ++k) {
        const float l = levels.value(k);
        if (l == 0) continue;
        const float s = x[dom] / l;
        if (!(std::fabs(s) >= s_min && std::fabs(s) <= s_max) || seen++ % stride != 0) continue;
        double sxl = 0, sll = 0;
        consider(s, &sxl, &sll);
        least_squares_step(sxl, sll);
      }
    }
  }
  if (search.fp16 && search.sweep_hi > 1) {
    const float ext = std::fabs(levels.min_value()) > std::fabs(levels.max_value()) ? levels.min_value()
                                                                                     : levels.max_value();
    const uint16_t from = to_f16_bits(amax / ext), to = to_f16_bits(amax / ext * search.sweep_hi);
    for (int mag = from & 0x7fff; mag <= (to & 0x7fff) && mag <= 0x7bff; ++mag) {
      const float s = f16_to_f32(static_cast<uint16_t>((from & 0x8000) | mag));
      consider(s, nullptr, nullptr);
    }
  }
  for (int r = 0; r < search.refine && best.scale != 0; ++r) {
    double sxl = 0, sll = 0;
    assign_symmetric(x, w, n, levels, best.scale, nullptr, &sxl, &sll, search.fast);
    if (!least_squares_step(sxl, sll)) break;
  }
  if (search.fp16 && best.scale != 0) {
    // The fp16 grid is coarse (11 significant bits): the neighbours of the best are worth a look.
    const uint16_t bits = to_f16_bits(best.scale);
    for (const int delta : {-1, 1}) {
      const int mag = (bits & 0x7fff) + delta;
      if (mag < 1 || mag > 0x7bff) continue;
      const uint16_t nb = static_cast<uint16_t>((bits & 0x8000) | mag);
      consider(f16_to_f32(nb), nullptr, nullptr);
    }
  }
  if (best.scale != 0) assign_symmetric(x, w, n, levels, best.scale, q, nullptr, nullptr, search.fast);
  return best;
}

namespace {

struct AffineSums {
  double w = 0, wq = 0, wqq = 0, wx = 0, wxq = 0;
};

// sw, swx: Σ w and Σ w·x of the block (the same for every candidate).
double assign_affine_sums(const float* x, const float* w, int n, int qmax, bool fused, float s, float m, uint8_t* q,
                          AffineSums* sums, double sw, double swx, bool fast) {
  const float inv = s > 0 ? 1.0f / s : 0.0f;
  if (!(s > 0) || !std::isfinite(inv)) {  // flat: every code 0, every value m
    double err = 0;
    for (int i = 0; i < n; ++i) {
      const double e = static_cast<double>(x[i]) - affine_value(0, s, m, fused);
      err += w[i] * e * e;
      if (q != nullptr) q[i] = 0;
    }
    if (sums != nullptr) *sums = AffineSums{.w = sw, .wq = 0, .wqq = 0, .wx = swx, .wxq = 0};
    return err;
  }
  const detail::AffineSums a = detail::assign_affine(x, w, n, qmax, fused, s, m, inv, q, fast);
  if (sums != nullptr) *sums = AffineSums{.w = sw, .wq = a.wq, .wqq = a.wqq, .wx = swx, .wxq = a.wxq};
  return a.err;
}

void weight_sums(const float* x, const float* w, int n, double& sw, double& swx) {
  sw = 0;
  swx = 0;
  for (int i = 0; i < n; ++i) {
    sw += w[i];
    swx += static_cast<double>(w[i]) * x[i];
  }
}

}  // namespace

double assign_affine(const float* x, const float* w, int n, int qmax, bool fused, float s, float m, uint8_t* q,
                     bool fast) {
  return assign_affine_sums(x, w, n, qmax, fused, s, m, q, nullptr, 0, 0, fast);
}

const float* tame_block(const float* x, int n, float* buf) {
  bool wild = false;
  for (int i = 0; i < n; ++i) wild |= std::fabs(x[i]) > kTameLimit;
  if (!wild) return x;
  for (int i = 0; i < n; ++i) buf[i] = std::clamp(x[i], -kTameLimit, kTameLimit);
  return buf;
}

AffineFit fit_affine(const float* x, const float* w, int n, int qmax, bool fused, const ScaleSearch& search,
                     uint8_t* q) {
  assert(n > 0 && n <= 256 && qmax > 0 && qmax < 256);
  float tamed[256];
  x = tame_block(x, n, tamed);
  float mn = x[0], mx = x[0];
  for (int i = 1; i < n; ++i) {
    mn = std::min(mn, x[i]);
    mx = std::max(mx, x[i]);
  }
  // The flat candidate (scale 0): every element decodes to the offset; the weighted mean is best.
  double sw = 0, swx = 0;
  weight_sums(x, w, n, sw, swx);
  const float flat_m = search.fp16 ? round_to_f16(static_cast<float>(swx / sw)) : static_cast<float>(swx / sw);
  AffineFit best{.scale = 0, .offset = flat_m, .error = assign_affine(x, w, n, qmax, fused, 0.0f, flat_m, q)};
  if (mx == mn) return best;

  auto round = [&](float v) { return search.fp16 ? round_to_f16(v) : v; };
  auto consider = [&](float s, float m, AffineSums* sums) {
    s = round(s);
    m = round(m);
    if (!(s > 0) || !std::isfinite(s) || !std::isfinite(m)) {
      if (sums != nullptr) sums->w = 0;
      return false;
    }
    const double err = assign_affine_sums(x, w, n, qmax, fused, s, m, nullptr, sums, sw, swx, search.fast);
    if (err < best.error) {  // (the codes are assigned once, for the winner, at the end)
      best = AffineFit{.scale = s, .offset = m, .error = err};
      return true;
    }
    return false;
  };
  // Weighted least squares for (s, m) with the codes fixed: the 2×2 normal equations.
  auto least_squares_step = [&](const AffineSums& a) {
    const double det = a.w * a.wqq - a.wq * a.wq;
    if (!(a.w > 0) || !(det > 0)) return false;
    const double s = (a.w * a.wxq - a.wq * a.wx) / det;
    const double m = (a.wqq * a.wx - a.wq * a.wxq) / det;
    return consider(static_cast<float>(s), static_cast<float>(m), nullptr);
  };

  const float d0 = (mx - mn) / static_cast<float>(qmax);
  const float fq = static_cast<float>(qmax);
  for (int t = 0; t <= search.steps; ++t) {
    const float f = search.steps == 0 ? 1.0f : search.lo + (search.hi - search.lo) * static_cast<float>(t) /
                                                                 static_cast<float>(search.steps);
    const float s = d0 * f;
    // The grid's range [m, m + qmax·s] anchored at the minimum, at the maximum, and centred.
    for (const float m : {mn, mx - s * fq, 0.5f * (mn + mx) - 0.5f * s * fq}) {
      AffineSums sums;
      consider(s, m, &sums);
      least_squares_step(sums);
    }
  }
  for (int r = 0; r < search.refine && best.scale > 0; ++r) {
    AffineSums sums;
    assign_affine_sums(x, w, n, qmax, fused, best.scale, best.offset, nullptr, &sums, sw, swx, search.fast);
    if (!least_squares_step(sums)) break;
  }
  if (search.fp16 && best.scale > 0) {
    // fp16 neighbours of the scale (offset re-fitted to the codes) and of the offset.
    const AffineFit start = best;
    AffineSums sums;
    assign_affine_sums(x, w, n, qmax, fused, start.scale, start.offset, nullptr, &sums, sw, swx, search.fast);
    const uint16_t sb = to_f16_bits(start.scale), mb = to_f16_bits(start.offset);
    for (const int delta : {-1, 1}) {
      const int mag = (sb & 0x7fff) + delta;
      if (mag >= 1 && mag <= 0x7bff) {
        const float s = f16_to_f32(static_cast<uint16_t>(mag));
        consider(s, static_cast<float>((sums.wx - s * sums.wq) / sums.w), nullptr);
        consider(s, start.offset, nullptr);
      }
      const int mmag = (mb & 0x7fff) + delta;
      if (mmag >= 0 && mmag <= 0x7bff) {
        consider(start.scale, f16_to_f32(static_cast<uint16_t>((mb & 0x8000) | mmag)), nullptr);
      }
    }
  }
  if (best.scale > 0) {
    assign_affine_sums(x, w, n, qmax, fused, best.scale, best.offset, q, nullptr, sw, swx, search.fast);
  }
  return best;
}

template double assign_symmetric<UniformLevels>(const float*, const float*, int, const UniformLevels&, float,
                                                uint8_t*, double*, double*, bool);
template double assign_symmetric<TableLevels16>(const float*, const float*, int, const TableLevels16&, float,
                                                uint8_t*, double*, double*, bool);
template SymmetricFit fit_symmetric<UniformLevels>(const float*, const float*, int, const UniformLevels&,
                                                   const ScaleSearch&, uint8_t*);
template SymmetricFit fit_symmetric<TableLevels16>(const float*, const float*, int, const TableLevels16&,
                                                   const ScaleSearch&, uint8_t*);

}  // namespace calq::quant
