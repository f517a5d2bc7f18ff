// LSQ, LWC and learned rounding (AutoRound): the float forward is what encode_with_params writes (bit for bit), the double
// gradients equal central finite differences of the STE surrogate (round(u) → u + frozen residual,
// clamps kept), and results do not depend on the thread count.
#include "grad/fake_quant_learn.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"

namespace calq::grad {
namespace {

template <typename T>
std::vector<T> gaussian(size_t n, uint32_t seed, double sigma = 1.0) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> d(0.0, sigma);
  std::vector<T> x(n);
  for (T& v : x) v = static_cast<T>(d(rng));
  return x;
}

template <typename T>
bool same_bytes(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

std::vector<float> deq(ThreadPool& pool, const Format& f, const std::vector<std::byte>& bytes, int64_t rows,
                       int64_t cols) {
  std::vector<float> out(static_cast<size_t>(rows * cols));
  f.dequantize(pool, bytes.data(), rows, cols, out.data());
  return out;
}

const char* const kLayouts[] = {"int3-g32-asym", "int4-pc-sym", "int2-pt-asym-f32", "int4-g64-sym-f32",
                                "int8-g32-asym", "int2-g64-asym"};

TEST(Lsq, WhatIsWrittenIsWhatWasTrained) {
  ThreadPool pool(2);
  const int64_t rows = 3, cols = 128;
  const auto w = gaussian<float>(static_cast<size_t>(rows * cols), 5);
  for (const char* name : kLayouts) {
    SCOPED_TRACE(name);
    const Format& f = format_by_name(name);
    const IntLayout l = int_layout(f);
    const auto params = choose_int_params(f, w.data(), rows, cols);
    const size_t ng = params.size();
    std::vector<float> step(ng), zero(l.symmetric ? 0 : ng);
    lsq_init(params, step, zero);
    // At the chosen parameters: the format's own quantize.
    std::vector<float> got(w.size());
    lsq_forward<float>(pool, l, rows, cols, w.data(), step, zero, got.data());
    std::vector<std::byte> bytes(f.tensor_bytes(rows, cols));
    f.quantize(pool, w.data(), rows, cols, bytes);
    EXPECT_TRUE(same_bytes(got, deq(pool, f, bytes, rows, cols)));
    // Trained parameters (smaller steps: clipping; moved zero points): forward == deq(encode).
    for (size_t g = 0; g < ng; ++g) {
      step[g] *= 0.7f + 0.01f * static_cast<float>(g % 7);
      if (!zero.empty()) zero[g] += 0.4f - 0.3f * static_cast<float>(g % 3);
    }
    lsq_forward<float>(pool, l, rows, cols, w.data(), step, zero, got.data());
    const auto written = encode_with_params(f, w.data(), rows, cols, lsq_quant_params(l, step, zero));
    EXPECT_TRUE(same_bytes(got, deq(pool, f, written, rows, cols)));
    std::vector<float> fq(w.size());
    std::vector<uint8_t> mask(w.size());
    int_fake_quant(pool, l, lsq_quant_params(l, step, zero), w.data(), rows, cols, fq.data(), mask.data());
    EXPECT_TRUE(same_bytes(got, fq));
    EXPECT_GT(std::count(mask.begin(), mask.end(), 0), 0);
  }
}

TEST(Lwc, AtSigmoidOneItIsTheFormatsMinMaxAndWhatIsWrittenIsWhatWasTrained) {
  ThreadPool pool(2);
  const int64_t rows = 3, cols = 128;
  const auto w = gaussian<float>(static_cast<size_t>(rows * cols), 6);
  for (const char* name : kLayouts) {
    SCOPED_TRACE(name);
    const Format& f = format_by_name(name);
    const IntLayout l = int_layout(f);
    const size_t ng = static_cast<size_t>(l.num_groups(rows, cols));
    std::vector<float> a(ng, 30.0f), b(l.symmetric ? 0 : ng, 30.0f);  // σ(30) == 1.0f
    const auto params = lwc_quant_params(l, rows, cols, w.data(), a, b);
    const auto chosen = choose_int_params(f, w.data(), rows, cols);
    for (size_t g = 0; g < ng; ++g) {
      EXPECT_EQ(params[g].scale, chosen[g].scale) << g;
      EXPECT_EQ(params[g].zero_point, chosen[g].zero_point) << g;
    }
    std::vector<float> got(w.size());
    lwc_forward<float>(pool, l, rows, cols, w.data(), a, b, got.data());
    std::vector<std::byte> bytes(f.tensor_bytes(rows, cols));
    f.quantize(pool, w.data(), rows, cols, bytes);
    EXPECT_TRUE(same_bytes(got, deq(pool, f, bytes, rows, cols)));
    for (size_t g = 0; g < ng; ++g) {
      a[g] = 1.0f + 0.1f * static_cast<float>(g % 5);
      if (!b.empty()) b[g] = 2.0f - 0.2f * static_cast<float>(g % 4);
    }
    lwc_forward<float>(pool, l, rows, cols, w.data(), a, b, got.data());
    const auto written = encode_with_params(f, w.data(), rows, cols, lwc_quant_params(l, rows, cols, w.data(), a, b));
    EXPECT_TRUE(same_bytes(got, deq(pool, f, written, rows, cols)));
  }
}

// ---- The surrogate, written out independently in double ----
// Ŵ_i = s·(clamp(w_i/s + z, qmin, qmax) + res_i − z), res_i = round(u₀) − u₀ of u = clamp(w/s + z) at
// the base point; z = clamp(round(z_param) as zp + cz, qmin, qmax) with cz = round(zp₀) − zp₀ frozen.
struct Surrogate {
  const IntLayout& l;
  int64_t rows, cols;
  std::vector<double> res;  // per element
  std::vector<double> cz;   // per group: residual of the zero point's rounding
  bool frozen = false;

  double zero_of(size_t g, double zp) {
    if (!frozen) cz[g] = std::nearbyint(zp) - zp;
    return std::clamp(zp + cz[g], double(l.grid.qmin), double(l.grid.qmax));
  }
  // Σ c_i Ŵ_i for per-group (s, zp) given by fn(g) (zp ignored for sym).
  template <typename Params>
  double loss(const std::vector<double>& w, const std::vector<double>& c, Params params) {
    if (!frozen) res.assign(w.size(), 0.0), cz.assign(static_cast<size_t>(l.num_groups(rows, cols)), 0.0);
    std::vector<double> s_of(cz.size()), z_of(cz.size());
    for (size_t g = 0; g < cz.size(); ++g) {
      const auto [s, zp] = params(g);
      s_of[g] = s;
      z_of[g] = l.symmetric ? 0.0 : zero_of(g, zp);
    }
    double sum = 0;
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t j = 0; j < cols; ++j) {
        const size_t i = static_cast<size_t>(r * cols + j), g = static_cast<size_t>(l.group_of(r, j, cols));
        const double u = std::clamp(w[i] / s_of[g] + z_of[g], double(l.grid.qmin), double(l.grid.qmax));
        if (!frozen) res[i] = std::nearbyint(u) - u;
        sum += c[i] * s_of[g] * (u + res[i] - z_of[g]);
      }
    }
    frozen = true;
    return sum;
  }
};

void expect_close(double analytic, double numeric, const std::string& what) {
  EXPECT_NEAR(analytic, numeric, 1e-6 * std::max(1.0, std::fabs(numeric))) << what;
}

TEST(Lsq, GradientsEqualFiniteDifferencesOfTheSurrogate) {
  ThreadPool pool(2);
  const int64_t rows = 3, cols = 64;
  for (const char* name : {"int3-g32-asym", "int4-pc-sym", "int2-pt-asym", "int3-g32-sym"}) {
    SCOPED_TRACE(name);
    const IntLayout l = int_layout(format_by_name(name));
    const auto w = gaussian<double>(static_cast<size_t>(rows * cols), 21);
    const auto c = gaussian<double>(w.size(), 22);
    const size_t ng = static_cast<size_t>(l.num_groups(rows, cols));
    std::vector<double> step(ng), zero(l.symmetric ? 0 : ng);
    for (size_t g = 0; g < ng; ++g) {
      step[g] = (l.symmetric ? 1.6 / l.grid.qmax : 0.35) + 0.013 * static_cast<double>(g);  // clips some weights
      if (!zero.empty()) zero[g] = l.grid.qmax / 2.0 + 0.3 - 0.2 * static_cast<double>(g % 3);
    }
    std::vector<double> gw(w.size()), gs(ng), gz(zero.size());
    lsq_backward<double>(pool, l, rows, cols, w.data(), step, zero, c.data(), gw.data(), gs, gz);
    std::vector<double> fwd(w.size());
    lsq_forward<double>(pool, l, rows, cols, w.data(), step, zero, fwd.data());

    Surrogate sur{.l = l, .rows = rows, .cols = cols};
    auto loss = [&](const std::vector<double>& ww, const std::vector<double>& st, const std::vector<double>& zz) {
      return sur.loss(ww, c, [&](size_t g) { return std::pair{st[g], zz.empty() ? 0.0 : zz[g]}; });
    };
    double direct = 0;
    for (size_t i = 0; i < w.size(); ++i) direct += c[i] * fwd[i];
    EXPECT_NEAR(loss(w, step, zero), direct, 1e-9);  // the surrogate is anchored at the forward

    const double h = 1e-6;
    size_t clipped = 0;
    for (size_t g = 0; g < ng; ++g) {
      auto sp = step, sm = step;
      sp[g] += h, sm[g] -= h;
      expect_close(gs[g], (loss(w, sp, zero) - loss(w, sm, zero)) / (2 * h), "step " + std::to_string(g));
      if (!zero.empty()) {
        auto zp = zero, zm = zero;
        zp[g] += h, zm[g] -= h;
        expect_close(gz[g], (loss(w, step, zp) - loss(w, step, zm)) / (2 * h), "zero " + std::to_string(g));
        EXPECT_NE(gz[g], 0.0);
      }
    }
    for (size_t i = 0; i < w.size(); ++i) {
      auto wp = w, wm = w;
      wp[i] += h, wm[i] -= h;
      expect_close(gw[i], (loss(wp, step, zero) - loss(wm, step, zero)) / (2 * h), "w " + std::to_string(i));
      clipped += gw[i] == 0.0;
    }
    EXPECT_GT(clipped, 0u);
  }
}

TEST(Lwc, GradientsEqualFiniteDifferencesOfTheSurrogate) {
  ThreadPool pool(2);
  const int64_t rows = 3, cols = 64;
  for (const char* name : {"int3-g32-asym", "int4-pc-sym", "int2-pt-asym", "int3-g32-sym"}) {
    SCOPED_TRACE(name);
    const IntLayout l = int_layout(format_by_name(name));
    const auto w = gaussian<double>(static_cast<size_t>(rows * cols), 31);
    const auto c = gaussian<double>(w.size(), 32);
    const size_t ng = static_cast<size_t>(l.num_groups(rows, cols));
    std::vector<double> a(ng), b(l.symmetric ? 0 : ng);
    for (size_t g = 0; g < ng; ++g) {
      a[g] = 0.8 + 0.17 * static_cast<double>(g);
      if (!b.empty()) b[g] = 1.3 - 0.11 * static_cast<double>(g);
    }
    std::vector<double> gw(w.size()), ga(ng), gb(b.size());
    lwc_backward<double>(pool, l, rows, cols, w.data(), a, b, c.data(), gw.data(), ga, gb);
    std::vector<double> fwd(w.size());
    lwc_forward<double>(pool, l, rows, cols, w.data(), a, b, fwd.data());

    Surrogate sur{.l = l, .rows = rows, .cols = cols};
    // OmniQuant's h and z from the group's max / min (with 0), in the surrogate's terms: the zero
    // parameter is −β·m/h (its rounding frozen by the surrogate).
    auto loss = [&](const std::vector<double>& ww, const std::vector<double>& aa, const std::vector<double>& bb) {
      std::vector<double> hi(ng, 0.0), lo(ng, 0.0);
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t j = 0; j < cols; ++j) {
          const size_t i = static_cast<size_t>(r * cols + j), g = static_cast<size_t>(l.group_of(r, j, cols));
          hi[g] = std::max(hi[g], l.symmetric ? std::fabs(ww[i]) : ww[i]);
          lo[g] = std::min(lo[g], ww[i]);
        }
      }
      return sur.loss(ww, c, [&](size_t g) {
        const double gamma = 1 / (1 + std::exp(-aa[g]));
        if (l.symmetric) return std::pair{gamma * hi[g] / l.grid.qmax, 0.0};
        const double beta = 1 / (1 + std::exp(-bb[g]));
        const double s = (gamma * hi[g] - beta * lo[g]) / (l.grid.qmax - l.grid.qmin);
        return std::pair{s, -beta * lo[g] / s};
      });
    };
    double direct = 0;
    for (size_t i = 0; i < w.size(); ++i) direct += c[i] * fwd[i];
    EXPECT_NEAR(loss(w, a, b), direct, 1e-9);

    const double h = 1e-6;
    for (size_t g = 0; g < ng; ++g) {
      auto ap = a, am = a;
      ap[g] += h, am[g] -= h;
      expect_close(ga[g], (loss(w, ap, b) - loss(w, am, b)) / (2 * h), "a " + std::to_string(g));
      EXPECT_NE(ga[g], 0.0);
      if (!b.empty()) {
        auto bp = b, bm = b;
        bp[g] += h, bm[g] -= h;
        expect_close(gb[g], (loss(w, a, bp) - loss(w, a, bm)) / (2 * h), "b " + std::to_string(g));
        EXPECT_NE(gb[g], 0.0);
      }
    }
    for (size_t i = 0; i < w.size(); ++i) {  // includes each group's max and min
      auto wp = w, wm = w;
      wp[i] += h, wm[i] -= h;
      expect_close(gw[i], (loss(wp, a, b) - loss(wm, a, b)) / (2 * h), "w " + std::to_string(i));
    }
  }
}

TEST(LsqLwc, SameBytesForAnyThreadCount) {
  ThreadPool one(1), two(2);
  const int64_t rows = 64, cols = 512;
  const auto w = gaussian<float>(static_cast<size_t>(rows * cols), 41);
  const auto c = gaussian<float>(w.size(), 42);
  for (const char* name : {"int4-g128-asym", "int3-pt-asym", "int2-pc-sym"}) {
    SCOPED_TRACE(name);
    const Format& f = format_by_name(name);
    const IntLayout l = int_layout(f);
    const auto params = choose_int_params(f, w.data(), rows, cols);
    std::vector<float> step(params.size()), zero(l.symmetric ? 0 : params.size());
    lsq_init(params, step, zero);
    for (float& s : step) s *= 0.8f;
    auto run = [&](ThreadPool& pool) {
      std::vector<float> gw(w.size()), gs(step.size()), gz(zero.size()), ga(step.size()), gb(zero.size()),
          gw2(w.size());
      lsq_backward<float>(pool, l, rows, cols, w.data(), step, zero, c.data(), gw.data(), gs, gz);
      std::vector<float> a(step.size(), 2.0f), b(zero.size(), 2.5f);
      lwc_backward<float>(pool, l, rows, cols, w.data(), a, b, c.data(), gw2.data(), ga, gb);
      gw.insert(gw.end(), gs.begin(), gs.end());
      gw.insert(gw.end(), gz.begin(), gz.end());
      gw.insert(gw.end(), ga.begin(), ga.end());
      gw.insert(gw.end(), gb.begin(), gb.end());
      gw.insert(gw.end(), gw2.begin(), gw2.end());
      return gw;
    };
    EXPECT_TRUE(same_bytes(run(one), run(two)));
  }
}

// ---- Learned rounding ----

TEST(Round, AtFactorsOneAndNoOffsetItIsTheStartAndWhatIsWrittenIsWhatWasTrained) {
  ThreadPool pool(2);
  const int64_t rows = 3, cols = 128;
  const auto w = gaussian<float>(static_cast<size_t>(rows * cols), 7);
  for (const char* name : kLayouts) {
    SCOPED_TRACE(name);
    const Format& f = format_by_name(name);
    const IntLayout l = int_layout(f);
    const auto params = choose_int_params(f, w.data(), rows, cols);
    const RoundRange range = round_range(l, params);
    const size_t ng = params.size();
    std::vector<float> gamma(ng, 1.0f), beta(l.symmetric ? 0 : ng, 1.0f), v(w.size(), 0.0f);
    const auto back = round_quant_params(l, range, gamma, beta);
    for (size_t g = 0; g < ng; ++g) {
      EXPECT_EQ(back[g].scale, params[g].scale) << g;
      EXPECT_EQ(back[g].zero_point, params[g].zero_point) << g;
    }
    // Round to nearest under the format's own choice.
    std::vector<float> got(w.size());
    round_forward<float>(pool, l, rows, cols, w.data(), v, range, gamma, beta, got.data());
    std::vector<std::byte> bytes(f.tensor_bytes(rows, cols));
    f.quantize(pool, w.data(), rows, cols, bytes);
    EXPECT_TRUE(same_bytes(got, deq(pool, f, bytes, rows, cols)));
    // Trained offsets and factors: forward == deq(encode_with_params(latent, params)), and some
    // codes differ from round to nearest.
    std::mt19937 rng(8);
    std::uniform_real_distribution<float> off(-0.5f, 0.5f), fac(0.7f, 1.0f);
    for (float& x : v) x = off(rng);
    for (float& x : gamma) x = fac(rng);
    for (float& x : beta) x = fac(rng);
    round_forward<float>(pool, l, rows, cols, w.data(), v, range, gamma, beta, got.data());
    std::vector<float> latent(w.size());
    round_latent<float>(pool, l, rows, cols, w.data(), v, range, gamma, beta, latent.data());
    const auto written =
        encode_with_params(f, latent.data(), rows, cols, round_quant_params(l, range, gamma, beta));
    EXPECT_TRUE(same_bytes(got, deq(pool, f, written, rows, cols)));
    EXPECT_FALSE(same_bytes(got, deq(pool, f, bytes, rows, cols)));
  }
}

TEST(Round, GradientsEqualFiniteDifferencesOfTheSurrogate) {
  ThreadPool pool(2);
  const int64_t rows = 3, cols = 64;
  for (const char* name : {"int3-g32-asym", "int4-pc-sym", "int2-pt-asym", "int3-g32-sym"}) {
    SCOPED_TRACE(name);
    const IntLayout l = int_layout(format_by_name(name));
    const auto base = gaussian<double>(static_cast<size_t>(rows * cols), 51);
    const auto c = gaussian<double>(base.size(), 52);
    const size_t ng = static_cast<size_t>(l.num_groups(rows, cols));
    // A range narrower than the weights' (some clip), offsets across [−0.5, 0.5].
    RoundRange range{.hi = std::vector<double>(ng), .lo = std::vector<double>(ng)};
    std::vector<double> gamma(ng), beta(l.symmetric ? 0 : ng), v(base.size());
    for (size_t g = 0; g < ng; ++g) {
      range.hi[g] = 1.4 + 0.05 * static_cast<double>(g);
      range.lo[g] = l.symmetric ? 0.0 : -1.2 - 0.04 * static_cast<double>(g);
      gamma[g] = 0.93 - 0.03 * static_cast<double>(g % 4);
      if (!beta.empty()) beta[g] = 0.88 + 0.02 * static_cast<double>(g % 5);
    }
    for (size_t i = 0; i < v.size(); ++i) v[i] = 0.45 * std::sin(1.7 * static_cast<double>(i));
    std::vector<double> gv(base.size()), gg(ng), gb(beta.size());
    round_backward<double>(pool, l, rows, cols, base.data(), v, range, gamma, beta, c.data(), gv.data(), gg, gb);
    std::vector<double> fwd(base.size());
    round_forward<double>(pool, l, rows, cols, base.data(), v, range, gamma, beta, fwd.data());

    Surrogate sur{.l = l, .rows = rows, .cols = cols};
    auto loss = [&](const std::vector<double>& vv, const std::vector<double>& ga, const std::vector<double>& be) {
      const double qr = l.symmetric ? l.grid.qmax : l.grid.qmax - l.grid.qmin;
      auto scale = [&](size_t g) {
        return l.symmetric ? ga[g] * range.hi[g] / qr : (ga[g] * range.hi[g] - be[g] * range.lo[g]) / qr;
      };
      std::vector<double> latent(base.size());
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t j = 0; j < cols; ++j) {
          const size_t i = static_cast<size_t>(r * cols + j);
          latent[i] = base[i] + vv[i] * scale(static_cast<size_t>(l.group_of(r, j, cols)));
        }
      }
      return sur.loss(latent, c, [&](size_t g) {
        const double s = scale(g);
        return std::pair{s, l.symmetric ? 0.0 : -be[g] * range.lo[g] / s};
      });
    };
    double direct = 0;
    for (size_t i = 0; i < base.size(); ++i) direct += c[i] * fwd[i];
    EXPECT_NEAR(loss(v, gamma, beta), direct, 1e-9);

    const double h = 1e-6;
    for (size_t g = 0; g < ng; ++g) {
      auto ap = gamma, am = gamma;
      ap[g] += h, am[g] -= h;
      expect_close(gg[g], (loss(v, ap, beta) - loss(v, am, beta)) / (2 * h), "gamma " + std::to_string(g));
      EXPECT_NE(gg[g], 0.0);
      if (!beta.empty()) {
        auto bp = beta, bm = beta;
        bp[g] += h, bm[g] -= h;
        expect_close(gb[g], (loss(v, gamma, bp) - loss(v, gamma, bm)) / (2 * h), "beta " + std::to_string(g));
        EXPECT_NE(gb[g], 0.0);
      }
    }
    size_t clipped = 0;
    for (size_t i = 0; i < v.size(); ++i) {
      auto vp = v, vm = v;
      vp[i] += h, vm[i] -= h;
      expect_close(gv[i], (loss(vp, gamma, beta) - loss(vm, gamma, beta)) / (2 * h), "v " + std::to_string(i));
      clipped += gv[i] == 0.0;
    }
    EXPECT_GT(clipped, 0u);
    EXPECT_LT(clipped, v.size());
  }
}

TEST(Round, SameBytesForAnyThreadCount) {
  ThreadPool one(1), two(2);
  const int64_t rows = 64, cols = 512;
  const auto w = gaussian<float>(static_cast<size_t>(rows * cols), 43);
  const auto c = gaussian<float>(w.size(), 44);
  for (const char* name : {"int4-g128-asym", "int3-pt-asym", "int2-pc-sym"}) {
    SCOPED_TRACE(name);
    const Format& f = format_by_name(name);
    const IntLayout l = int_layout(f);
    const auto params = choose_int_params(f, w.data(), rows, cols);
    const RoundRange range = round_range(l, params);
    std::vector<float> gamma(params.size(), 0.9f), beta(l.symmetric ? 0 : params.size(), 0.95f), v(w.size());
    for (size_t i = 0; i < v.size(); ++i) v[i] = 0.3f * static_cast<float>(std::cos(static_cast<double>(i)));
    auto run = [&](ThreadPool& pool) {
      std::vector<float> gv(w.size()), gg(gamma.size()), gb(beta.size()), out(w.size());
      round_backward<float>(pool, l, rows, cols, w.data(), v, range, gamma, beta, c.data(), gv.data(), gg, gb);
      round_forward<float>(pool, l, rows, cols, w.data(), v, range, gamma, beta, out.data());
      gv.insert(gv.end(), gg.begin(), gg.end());
      gv.insert(gv.end(), gb.begin(), gb.end());
      gv.insert(gv.end(), out.begin(), out.end());
      return gv;
    };
    EXPECT_TRUE(same_bytes(run(one), run(two)));
  }
}

TEST(LsqLwc, ParametersThatCannotBeStoredAreErrors) {
  const Format& f = format_by_name("int4-g32-asym");
  const IntLayout l = int_layout(f);
  const std::vector<float> step{0.1f, -0.1f}, zero{3.0f, 4.0f};
  try {
    lsq_quant_params(l, step, zero, "blk.2.attn_q");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("blk.2.attn_q"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("group 1"), std::string::npos) << e.what();
  }
  const std::vector<float> w(64, 0.25f);
  std::vector<QuantParams> p(2, QuantParams{.scale = 0.125f, .zero_point = 16});
  EXPECT_THROW(encode_with_params(f, w.data(), 1, 64, p, "t"), Error);  // zero point outside [0, 15]
  p[1].zero_point = 3;
  p[0].scale = 0.1f;  // not an fp16 value
  EXPECT_THROW(encode_with_params(f, w.data(), 1, 64, p, "t"), Error);
  EXPECT_THROW(int_layout(format_by_name("q4_k")), Error);
}

}  // namespace
}  // namespace calq::grad
