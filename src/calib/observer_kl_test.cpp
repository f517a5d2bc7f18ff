// Tests of the KL (entropy calibration) observer, against a plain O(B²) twin of its definition.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

#include "calib/observer.h"

namespace calq::calib {
namespace {

double uniform01(std::mt19937& rng) { return (static_cast<double>(rng()) + 0.5) / 4294967296.0; }

std::vector<float> laplace(size_t n, uint32_t seed) {  // inverse CDF, scale 1
  std::mt19937 rng(seed);
  std::vector<float> x(n);
  for (float& v : x) {
    const double u = uniform01(rng) - 0.5;
    v = static_cast<float>((u < 0 ? 1.0 : -1.0) * std::log(1.0 - 2.0 * std::fabs(u)));
  }
  return x;
}

QuantGrid sym_grid(int32_t qmax) { return QuantGrid{.qmin = -qmax, .qmax = qmax, .symmetric = true}; }
QuantGrid asym_grid(int32_t qmax) { return QuantGrid{.qmin = 0, .qmax = qmax, .symmetric = false}; }

// KL(P‖Q) of candidate i written out directly from the definition in observer_kl.cpp's header.
double reference_kl(const std::vector<int64_t>& c, int64_t i, int64_t levels) {
  std::vector<double> p(static_cast<size_t>(i)), q(static_cast<size_t>(i), 0.0);
  double tail = 0;
  for (size_t k = static_cast<size_t>(i); k < c.size(); ++k) tail += static_cast<double>(c[k]);
  for (int64_t k = 0; k < i; ++k) p[static_cast<size_t>(k)] = static_cast<double>(c[static_cast<size_t>(k)]);
  p[static_cast<size_t>(i - 1)] += tail;
  for (int64_t j = 0; j < levels; ++j) {
    const int64_t a = j * i / levels, b = (j + 1) * i / levels;
    double raw = 0, nonzero = 0;
    for (int64_t k = a; k < b; ++k) {
      raw += static_cast<double>(c[static_cast<size_t>(k)]);
      nonzero += p[static_cast<size_t>(k)] > 0 ? 1 : 0;
    }
    for (int64_t k = a; k < b; ++k) {
      if (p[static_cast<size_t>(k)] > 0) q[static_cast<size_t>(k)] = raw > 0 ? raw / nonzero : 1e-4;
    }
  }
  double sp = 0, sq = 0;
  for (int64_t k = 0; k < i; ++k) {
    sp += p[static_cast<size_t>(k)];
    sq += q[static_cast<size_t>(k)];
  }
  double kl = 0;
  for (int64_t k = 0; k < i; ++k) {
    const double pk = p[static_cast<size_t>(k)] / sp;
    if (pk > 0) kl += pk * std::log(pk / (q[static_cast<size_t>(k)] / sq));
  }
  return kl;
}

// Checks that `chosen` bins is (to 1e-12) the least reference KL over the candidates.
void expect_least_kl(const std::vector<int64_t>& c, int64_t levels, const std::vector<int64_t>& candidates,
                     int64_t chosen) {
  ASSERT_NE(std::find(candidates.begin(), candidates.end(), chosen), candidates.end()) << chosen;
  double best = INFINITY;
  int64_t best_i = -1;
  for (const int64_t i : candidates) {
    // Point-mass P (nothing below bin i − 1) is skipped, except i = B.
    if (i < static_cast<int64_t>(c.size()) &&
        std::all_of(c.begin(), c.begin() + (i - 1), [](int64_t v) { return v == 0; }))
      continue;
    const double kl = reference_kl(c, i, levels);
    if (kl < best) best = kl, best_i = i;
  }
  EXPECT_LE(reference_kl(c, chosen, levels), best + 1e-12) << "chose " << chosen << ", reference best " << best_i;
}

// The histogram's bins up to its highest nonzero one (the default kl_bins needs no merging).
std::vector<int64_t> used_bins(const AbsHistogram& h) {
  const auto used = static_cast<int64_t>(std::llround(histogram_max_edge(h) / h.bin_width()));
  return {h.counts().begin(), h.counts().begin() + used};
}

TEST(KlObserver, UniformActivationsKeepTheMax) {
  // Every one of the 2048 bins of [0, 1) holds 10 values: Q reproduces P exactly at i = B only.
  std::vector<float> x;
  for (int r = 0; r < 10; ++r)
    for (int k = 0; k < 2048; ++k) x.push_back(static_cast<float>((k + 0.5) / 2048.0));
  AbsHistogram h;
  h.add(x);
  ASSERT_EQ(histogram_max_edge(h), 1.0);
  const auto obs = make_observer("kl");
  EXPECT_EQ(obs->activation_clip(h, 127), 1.0);
  EXPECT_EQ(obs->activation_clip(h, 7), 1.0);
}

TEST(KlObserver, FarOutlierIsClippedWhileMinMaxKeepsIt) {
  std::vector<float> x = laplace(100000, 1);  // |x| up to ~12
  x.push_back(1000.0f);
  AbsHistogram h;
  h.add(x);
  const double edge = histogram_max_edge(h);
  EXPECT_EQ(make_observer("minmax")->activation_clip(h, 127), edge);
  const auto kl = make_observer("kl");
  for (const int levels : {7, 127}) {
    const double t = kl->activation_clip(h, levels);
    std::printf("levels %3d: KL clip %.4f, max edge %.4f\n", levels, t, edge);
    EXPECT_LT(t, edge / 10);
    EXPECT_GT(t, 0.0);
    // The chosen bin count is the least KL among all candidates levels..B, by the plain twin.
    const std::vector<int64_t> c = used_bins(h);
    std::vector<int64_t> candidates;
    for (auto i = static_cast<int64_t>(levels); i <= static_cast<int64_t>(c.size()); ++i) candidates.push_back(i);
    expect_least_kl(c, levels, candidates, std::llround(t / h.bin_width()));
  }
}

TEST(KlObserver, ActivationsAgreeWithThePlainTwinOnLaplaceData) {
  AbsHistogram h;
  h.add(laplace(50000, 2));
  const std::vector<int64_t> c = used_bins(h);
  for (const int levels : {1, 7, 127}) {
    std::vector<int64_t> candidates;
    for (auto i = static_cast<int64_t>(levels); i <= static_cast<int64_t>(c.size()); ++i) candidates.push_back(i);
    expect_least_kl(c, levels, candidates,
                    std::llround(make_observer("kl")->activation_clip(h, levels) / h.bin_width()));
  }
}

TEST(KlObserver, FewerBinsMergeTheHistogram) {
  AbsHistogram h;
  h.add(laplace(50000, 3));
  const double w = h.bin_width();
  const auto used = std::llround(histogram_max_edge(h) / w);
  const auto obs = make_observer("kl", {.kl_bins = 256});
  const int64_t group = (used + 255) / 256;
  const double t = obs->activation_clip(h, 7);
  const auto bins = std::llround(t / w);
  EXPECT_TRUE(bins % group == 0 || bins == used) << bins << " " << group;
  EXPECT_LE(t, histogram_max_edge(h));
  EXPECT_GT(t, 0.0);
}

// Weights: the chooser's histogram, B bins over [0, max|x|], rebuilt here.
std::vector<int64_t> weight_bins(const std::vector<float>& x, int64_t bins) {
  float amax = 0;
  for (const float v : x) amax = std::max(amax, std::fabs(v));
  std::vector<int64_t> c(static_cast<size_t>(bins), 0);
  for (const float v : x) {
    const auto k =
        std::min(static_cast<int64_t>(std::fabs(static_cast<double>(v)) * static_cast<double>(bins) / amax), bins - 1);
    ++c[static_cast<size_t>(k)];
  }
  return c;
}

std::vector<int64_t> weight_candidates(int64_t bins, int64_t levels) {
  const int64_t stride = std::max<int64_t>(1, (bins - levels) / std::clamp<int64_t>(2048 / levels, 32, 128));
  std::vector<int64_t> c;
  for (int64_t i = levels; i <= bins; i += stride) c.push_back(i);
  if (c.back() != bins) c.push_back(bins);
  return c;
}

TEST(KlObserver, WeightsWithAFarOutlierAreClipped) {
  std::vector<float> x = laplace(4096, 4);
  x[100] = -100.0f;
  const auto kl = make_observer("kl");
  for (const QuantGrid& g : {sym_grid(7), asym_grid(15), sym_grid(127)}) {
    const QuantParams p = kl->weight_range().choose({.x = x}, g);
    const QuantParams m = min_max_range().choose({.x = x}, g);
    std::printf("qmax %3d %s: KL scale %.6f, min-max scale %.6f\n", g.qmax, g.symmetric ? "sym" : "asym", p.scale,
                m.scale);
    EXPECT_LT(p.scale, m.scale / 4);
    EXPECT_GT(p.scale, 0.0f);
    // The clip the scale implies is the least-KL candidate of the plain twin.
    const int64_t levels = grid_levels(g);
    const float t = g.symmetric ? p.scale * static_cast<float>(g.qmax) : 0.0f;
    if (g.symmetric) {
      const auto chosen = static_cast<int64_t>(std::llround(t / 100.0f * 2048.0f));
      expect_least_kl(weight_bins(x, 2048), levels, weight_candidates(2048, levels), chosen);
    }
  }
}

TEST(KlObserver, UniformWeightsKeepTheMax) {
  // |x| = k + ½, k = 0..2047, alternating signs: exactly one value per bin, so P = Q at i = B.
  std::vector<float> x(2048);
  for (int k = 0; k < 2048; ++k) x[static_cast<size_t>(k)] = static_cast<float>((k % 2 ? -1 : 1) * (k + 0.5));
  const auto kl = make_observer("kl");
  for (const QuantGrid& g : {sym_grid(7), asym_grid(15), sym_grid(127)}) {
    const QuantParams p = kl->weight_range().choose({.x = x}, g);
    const QuantParams m = min_max_range().choose({.x = x}, g);
    EXPECT_EQ(p.scale, m.scale);
    EXPECT_EQ(p.zero_point, m.zero_point);
  }
}

TEST(KlObserver, WeightParamsOnlyNarrowTheRangeAndAreValid) {
  const std::vector<float> x = laplace(128 * 400, 5);
  const auto kl = make_observer("kl");
  int clipped = 0, groups = 0;
  for (const QuantGrid& g : {sym_grid(7), asym_grid(15), sym_grid(1), asym_grid(255)}) {
    for (size_t off = 0; off < x.size(); off += 128) {
      const RangeInput in{.x = std::span<const float>(x.data() + off, 128)};
      const QuantParams p = kl->weight_range().choose(in, g);
      const QuantParams m = min_max_range().choose(in, g);
      EXPECT_TRUE(std::isfinite(p.scale));
      EXPECT_GT(p.scale, 0.0f);
      EXPECT_LE(p.scale, m.scale);
      EXPECT_GE(p.zero_point, g.qmin);
      EXPECT_LE(p.zero_point, g.qmax);
      const QuantParams again = kl->weight_range().choose(in, g);
      EXPECT_EQ(again.scale, p.scale);
      clipped += p.scale < m.scale ? 1 : 0;
      ++groups;
    }
  }
  std::printf("KL clipped %d of %d groups of 128 Laplace values\n", clipped, groups);
  // All zeros: zero scale, as min-max.
  const std::vector<float> zeros(64, 0.0f);
  EXPECT_EQ(kl->weight_range().choose({.x = zeros}, sym_grid(7)).scale, 0.0f);
}

TEST(KlObserver, PointMassCandidatesAreSkipped) {
  // |x| in [½, 1]·amax: every candidate below B/2 would clip all values into its last bin, where
  // P and Q are the same spike (KL 0). They are skipped, so the clip stays at or above ~amax/2.
  std::mt19937 rng(9);
  std::vector<float> x(128);
  for (float& v : x) v = static_cast<float>((rng() & 1 ? -1 : 1) * (0.5 + 0.5 * uniform01(rng)));
  float amax = 0;
  for (const float v : x) amax = std::max(amax, std::fabs(v));
  for (const QuantGrid& g : {sym_grid(7), sym_grid(1)}) {
    const QuantParams p = make_observer("kl")->weight_range().choose({.x = x}, g);
    EXPECT_GE(p.scale * static_cast<float>(g.qmax), 0.49f * amax);
  }
  // One value only: P is a spike at every candidate; B (min-max) remains.
  const std::vector<float> one = {0.0f, 0.0f, 3.0f};
  EXPECT_EQ(make_observer("kl")->weight_range().choose({.x = one}, sym_grid(7)).scale,
            min_max_range().choose({.x = one}, sym_grid(7)).scale);
}

TEST(KlObserver, MoreLevelsThanBinsIsMinMax) {
  const std::vector<float> x = laplace(1024, 6);
  const auto kl = make_observer("kl", {.kl_bins = 16});
  const QuantParams p = kl->weight_range().choose({.x = x}, sym_grid(127));
  EXPECT_EQ(p.scale, min_max_range().choose({.x = x}, sym_grid(127)).scale);
}

}  // namespace
}  // namespace calq::calib
