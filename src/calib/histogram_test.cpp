#include "calib/histogram.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

namespace calq::calib {
namespace {

// Reference: the bin of |v| in a histogram with range 2^exp, computed in long double
// (independently of the float scaling the implementation uses).
int64_t reference_bin(float v, int exp) {
  const long double scaled = std::fabs(static_cast<long double>(v)) * std::ldexp(1.0L, AbsHistogram::kLog2Bins - exp);
  return static_cast<int64_t>(std::floor(scaled));
}

// Reference counts of `values` for range 2^exp.
std::vector<int64_t> reference_counts(const std::vector<float>& values, int exp) {
  std::vector<int64_t> counts(AbsHistogram::kBins, 0);
  for (const float v : values) {
    const int64_t bin = reference_bin(v, exp);
    if (bin >= AbsHistogram::kBins) {
      ADD_FAILURE() << v << " is outside the range 2^" << exp;
      continue;
    }
    counts[static_cast<size_t>(bin)]++;
  }
  return counts;
}

// Values spread over many binades, negative ones included.
std::vector<float> wide_values(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> mant(-1.0f, 1.0f);
  std::uniform_int_distribution<int> e(-30, 12);
  std::vector<float> v(n);
  for (auto& x : v) x = std::ldexp(mant(rng), e(rng));
  return v;
}

TEST(AbsHistogram, EmptyHasMinimalRange) {
  const AbsHistogram h;
  EXPECT_EQ(h.exp(), AbsHistogram::kMinExp);
  EXPECT_EQ(h.total(), 0);
  EXPECT_EQ(h.counts().size(), static_cast<size_t>(AbsHistogram::kBins));
  EXPECT_EQ(h.range(), std::ldexp(1.0, AbsHistogram::kMinExp));
  EXPECT_EQ(h.bin_width(), std::ldexp(1.0, AbsHistogram::kMinExp - 11));
}

TEST(AbsHistogram, ExactBinsAtEdges) {
  AbsHistogram h;
  // 1.0 needs range 2 (1 < 2^1): bin width 2^-10.
  const float w = std::ldexp(1.0f, -10);
  const std::vector<float> v = {1.0f, 0.0f, -1.0f, 5 * w, std::nextafter(5 * w, 0.0f), std::nextafter(2.0f, 0.0f),
                                w, std::nextafter(w, 0.0f)};
  h.add(v);
  EXPECT_EQ(h.exp(), 1);
  EXPECT_EQ(h.total(), 8);
  EXPECT_EQ(h.counts()[1024], 2);  // 1.0 and -1.0
  EXPECT_EQ(h.counts()[0], 2);     // 0 and just below one bin width
  EXPECT_EQ(h.counts()[5], 1);     // an edge value falls into the bin it starts
  EXPECT_EQ(h.counts()[4], 1);     // just below that edge
  EXPECT_EQ(h.counts()[2047], 1);  // the largest float below the range
  EXPECT_EQ(h.counts()[1], 1);
  EXPECT_EQ(h.counts(), reference_counts(v, 1));
}

TEST(AbsHistogram, PowerOfTwoNeedsTheNextRange) {
  AbsHistogram h;
  h.add(std::vector<float>{4.0f});
  EXPECT_EQ(h.exp(), 3);  // 4 is not < 2^2
  EXPECT_EQ(h.counts()[1024], 1);
}

TEST(AbsHistogram, GrowthKeepsBinsAligned) {
  const std::vector<float> first = {0.75f, 0.1f, 0.3f, -0.9f};
  const std::vector<float> second = {3.0f};
  AbsHistogram h;
  h.add(first);
  EXPECT_EQ(h.exp(), 0);
  EXPECT_EQ(h.counts()[1536], 1);  // 0.75 · 2048
  h.add(second);
  EXPECT_EQ(h.exp(), 2);
  std::vector<float> all = first;
  all.insert(all.end(), second.begin(), second.end());
  EXPECT_EQ(h.counts(), reference_counts(all, 2));
  EXPECT_EQ(h.counts()[384], 1);   // 0.75 · 512
  EXPECT_EQ(h.counts()[1536], 1);  // 3.0 · 512
  // The same values with the largest first give the same histogram.
  AbsHistogram r;
  r.add(second);
  r.add(first);
  EXPECT_EQ(r, h);
}

TEST(AbsHistogram, HugeGrowthPutsEverythingSmallInBinZero) {
  AbsHistogram h;
  h.add(std::vector<float>{1e-6f, 2e-6f, 0.5f});
  h.add(std::vector<float>{1e30f});
  EXPECT_EQ(h.total(), 4);
  const std::vector<float> all = {1e-6f, 2e-6f, 0.5f, 1e30f};
  EXPECT_EQ(h.counts(), reference_counts(all, h.exp()));
  EXPECT_EQ(h.counts()[0], 3);
}

TEST(AbsHistogram, ExtremeFloats) {
  AbsHistogram h;
  const float tiny = std::numeric_limits<float>::denorm_min();
  h.add(std::vector<float>{tiny, std::ldexp(1.0f, -60)});
  EXPECT_EQ(h.exp(), AbsHistogram::kMinExp);
  EXPECT_EQ(h.counts()[0], 2);
  h.add(std::vector<float>{std::numeric_limits<float>::max(), -std::numeric_limits<float>::max()});
  EXPECT_EQ(h.exp(), AbsHistogram::kMaxExp);
  EXPECT_EQ(h.counts()[2047], 2);
  EXPECT_EQ(h.counts()[0], 2);
}

TEST(AbsHistogram, GrowToMatchesBuildingAtThatRange) {
  const auto v = wide_values(5000, 7);
  AbsHistogram h;
  h.add(v);
  for (int e = h.exp(); e <= h.exp() + 13; ++e) {
    AbsHistogram g = h;
    g.grow_to(e);
    EXPECT_EQ(g.exp(), e);
    EXPECT_EQ(g.total(), h.total());
    EXPECT_EQ(g.counts(), reference_counts(v, e)) << "exp " << e;
  }
}

TEST(AbsHistogram, MergeOrderAndSplitDoNotMatter) {
  const auto v = wide_values(6000, 11);
  AbsHistogram whole;
  whole.add(v);
  EXPECT_EQ(whole.counts(), reference_counts(v, whole.exp()));
  EXPECT_EQ(whole.total(), 6000);

  for (const size_t chunk : {3u, 37u, 1000u, 2999u}) {
    std::vector<AbsHistogram> parts;
    for (size_t i = 0; i < v.size(); i += chunk) {
      AbsHistogram p;
      p.add(std::span<const float>(v).subspan(i, std::min(chunk, v.size() - i)));
      parts.push_back(p);
    }
    AbsHistogram forward, backward, tree;
    for (const auto& p : parts) forward.merge(p);
    for (auto it = parts.rbegin(); it != parts.rend(); ++it) backward.merge(*it);
    // Pairwise tree reduction.
    std::vector<AbsHistogram> level = parts;
    while (level.size() > 1) {
      std::vector<AbsHistogram> next;
      for (size_t i = 0; i < level.size(); i += 2) {
        AbsHistogram m = level[i];
        if (i + 1 < level.size()) m.merge(level[i + 1]);
        next.push_back(m);
      }
      level = next;
    }
    tree = level[0];
    EXPECT_EQ(forward, whole) << "chunk " << chunk;
    EXPECT_EQ(backward, whole) << "chunk " << chunk;
    EXPECT_EQ(tree, whole) << "chunk " << chunk;
  }
}

TEST(AbsHistogram, MergeIntoSmallerRange) {
  AbsHistogram small, large;
  small.add(std::vector<float>{0.01f, 0.02f});
  large.add(std::vector<float>{100.0f});
  AbsHistogram a = small;
  a.merge(large);
  AbsHistogram b = large;
  b.merge(small);
  EXPECT_EQ(a, b);
  EXPECT_EQ(a.exp(), 7);
  EXPECT_EQ(a.counts(), reference_counts({0.01f, 0.02f, 100.0f}, 7));
}

TEST(AbsHistogram, FromCountsRoundTrip) {
  AbsHistogram h;
  h.add(wide_values(3000, 3));
  const AbsHistogram r = AbsHistogram::from_counts(h.exp(), h.counts());
  EXPECT_EQ(r, h);
  EXPECT_EQ(r.total(), 3000);
}

}  // namespace
}  // namespace calq::calib
