// Tests of the observer registry and the min-max, percentile and MSE observers, and of every
// observer plugged into an integer format (observer_kl_test.cpp has the KL observer's own tests).
#include "calib/observer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

#include "core/error.h"
#include "core/thread_pool.h"
#include "formats/format.h"

namespace calq::calib {
namespace {

// Uniform in (0, 1) from one 32-bit draw: defined by the generator alone, unlike std distributions.
double uniform01(std::mt19937& rng) { return (static_cast<double>(rng()) + 0.5) / 4294967296.0; }

double normal(std::mt19937& rng) {  // Box–Muller, cosine branch
  const double u = uniform01(rng), v = uniform01(rng);
  return std::sqrt(-2.0 * std::log(u)) * std::cos(6.283185307179586 * v);
}

// Student-t with 3 degrees of freedom: z / sqrt(χ²₃ / 3).
std::vector<float> student_t3(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<float> x(n);
  for (float& v : x) {
    const double z = normal(rng);
    double chi2 = 0;
    for (int k = 0; k < 3; ++k) {
      const double g = normal(rng);
      chi2 += g * g;
    }
    v = static_cast<float>(z / std::sqrt(chi2 / 3.0));
  }
  return x;
}

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

void expect_same(const QuantParams& a, const QuantParams& b) {
  EXPECT_EQ(a.scale, b.scale);
  EXPECT_EQ(a.zero_point, b.zero_point);
}

// 1..1000 in a scrambled order (stride coprime with 1000).
std::vector<float> one_to_thousand() {
  std::vector<float> x(1000);
  for (int i = 0; i < 1000; ++i) x[static_cast<size_t>(i * 337 % 1000)] = static_cast<float>(i + 1);
  return x;
}

// ---- Registry and helpers ----

TEST(Observers, RegistryListsAndBuildsEveryObserver) {
  const std::vector<std::string> expected = {"minmax", "percentile", "kl", "mse"};
  EXPECT_EQ(observer_names(), expected);
  for (const std::string& name : observer_names()) {
    const auto obs = make_observer(name);
    ASSERT_NE(obs, nullptr);
    EXPECT_EQ(obs->name(), name);
    EXPECT_FALSE(obs->weight_range().name().empty());
  }
}

TEST(Observers, UnknownNameListsTheValidOnes) {
  try {
    (void)make_observer("entropy");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidArgument);
    const std::string msg = e.what();
    EXPECT_NE(msg.find("entropy"), std::string::npos);
    for (const std::string& name : observer_names()) EXPECT_NE(msg.find(name), std::string::npos) << msg;
  }
}

TEST(Observers, OptionsOutOfRangeAreErrors) {
  const auto expect_invalid = [](const ObserverOptions& o) {
    try {
      (void)make_observer("minmax", o);
      FAIL() << "no error";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::kInvalidArgument);
    }
  };
  expect_invalid({.percentile = 0.0});
  expect_invalid({.percentile = 100.5});
  expect_invalid({.percentile = std::nan("")});
  expect_invalid({.kl_bins = 8});
  expect_invalid({.mse_min_ratio_percent = 0});
  expect_invalid({.mse_min_ratio_percent = 101});
  EXPECT_NO_THROW((void)make_observer("percentile", {.percentile = 100.0}));
}

TEST(Observers, HistogramMaxEdgeAndGridLevels) {
  AbsHistogram empty;
  EXPECT_EQ(histogram_max_edge(empty), 0.0);
  AbsHistogram zeros;
  const std::vector<float> z(10, 0.0f);
  zeros.add(z);
  EXPECT_EQ(histogram_max_edge(zeros), 0.0);
  // 1..1000: range 1024, bins of 0.5; 1000 is in bin 2000, whose upper edge is 1000.5.
  AbsHistogram h;
  h.add(one_to_thousand());
  EXPECT_EQ(histogram_max_edge(h), 1000.5);
  EXPECT_EQ(grid_levels(sym_grid(7)), 7);
  EXPECT_EQ(grid_levels(sym_grid(127)), 127);
  EXPECT_EQ(grid_levels(asym_grid(15)), 7);
  EXPECT_EQ(grid_levels(asym_grid(3)), 1);
}

TEST(Observers, EmptyOrZeroHistogramGivesZeroAndOtherwiseAClipWithinTheMaxEdge) {
  AbsHistogram empty;
  AbsHistogram h;
  h.add(laplace(100000, 7));
  for (const std::string& name : observer_names()) {
    const auto obs = make_observer(name);
    EXPECT_EQ(obs->activation_clip(empty, 127), 0.0) << name;
    for (const int levels : {1, 7, 127}) {
      const double t = obs->activation_clip(h, levels);
      EXPECT_TRUE(std::isfinite(t)) << name;
      EXPECT_GT(t, 0.0) << name;
      EXPECT_LE(t, histogram_max_edge(h)) << name;
      EXPECT_EQ(t, obs->activation_clip(h, levels)) << name;  // deterministic
      std::printf("activation clip %-10s levels %3d: %.4f (max edge %.4f)\n", name.c_str(), levels, t,
                  histogram_max_edge(h));
    }
  }
}

// ---- Min-max ----

TEST(MinMaxObserver, WeightsUseFormatsMinMaxAndActivationsTheMaxEdge) {
  const auto obs = make_observer("minmax");
  EXPECT_EQ(&obs->weight_range(), &min_max_range());
  AbsHistogram h;
  h.add(one_to_thousand());
  EXPECT_EQ(obs->activation_clip(h, 127), 1000.5);
}

// ---- Percentile ----

TEST(PercentileObserver, NearestRankOnOneToThousand) {
  const std::vector<float> x = one_to_thousand();
  const QuantGrid g = sym_grid(127);
  // p → the ⌈p·10⌉-th smallest; 99.9·1000/100 is not exactly 999 in double, yet the rank is 999.
  const std::vector<std::pair<double, float>> cases = {{50.0, 500.0f},   {90.0, 900.0f},   {99.9, 999.0f},
                                                       {99.99, 1000.0f}, {100.0, 1000.0f}, {0.05, 1.0f},
                                                       {12.34, 124.0f}};
  for (const auto& [p, t] : cases) {
    const auto obs = make_observer("percentile", {.percentile = p});
    expect_same(obs->weight_range().choose({.x = x}, g), params_for_range(-t, t, g));
  }
  // Negated values: the symmetric grid uses |x|.
  std::vector<float> neg(x);
  for (float& v : neg) v = -v;
  const auto obs = make_observer("percentile", {.percentile = 90.0});
  expect_same(obs->weight_range().choose({.x = neg}, g), params_for_range(-900.0f, 900.0f, g));
}

TEST(PercentileObserver, AsymmetricClipsBothTailsAndKeepsZeroInRange) {
  const QuantGrid g = asym_grid(15);
  const auto obs = make_observer("percentile", {.percentile = 99.0});
  // −500..499: the 10th smallest is −491, the 990th is 489.
  std::vector<float> x(1000);
  for (int i = 0; i < 1000; ++i) x[static_cast<size_t>(i * 337 % 1000)] = static_cast<float>(i - 500);
  expect_same(obs->weight_range().choose({.x = x}, g), params_for_range(-491.0f, 489.0f, g));
  // All positive: lo (the 10th smallest, 10) widens to 0.
  expect_same(obs->weight_range().choose({.x = one_to_thousand()}, g), params_for_range(0.0f, 990.0f, g));
}

TEST(PercentileObserver, DefaultEqualsMinMaxOnGroupsUpTo256) {
  const auto obs = make_observer("percentile");
  const std::vector<float> x = student_t3(256, 3);
  for (const size_t n : {32u, 64u, 128u, 256u}) {
    for (const QuantGrid& g : {sym_grid(7), asym_grid(15)}) {
      const RangeInput in{.x = std::span<const float>(x.data(), n)};
      expect_same(obs->weight_range().choose(in, g), min_max_range().choose(in, g));
    }
  }
}

TEST(PercentileObserver, ActivationsClipAtTheBinWhereTheCountReachesP) {
  AbsHistogram h;
  h.add(one_to_thousand());  // value v in bin 2v, upper edge v + 0.5
  EXPECT_EQ(make_observer("percentile", {.percentile = 50.0})->activation_clip(h, 127), 500.5);
  EXPECT_EQ(make_observer("percentile", {.percentile = 99.9})->activation_clip(h, 127), 999.5);
  EXPECT_EQ(make_observer("percentile", {.percentile = 100.0})->activation_clip(h, 127), 1000.5);
}

// ---- MSE ----

TEST(MseObserver, WeightsAreFormatsMseGridRange) {
  const std::vector<float> x = student_t3(4096, 5);
  for (const int min_percent : {50, 80}) {
    const auto obs = make_observer("mse", {.mse_min_ratio_percent = min_percent});
    const MseGridRange ref(min_percent);
    for (size_t off = 0; off < x.size(); off += 128) {
      const RangeInput in{.x = std::span<const float>(x.data() + off, 128)};
      for (const QuantGrid& g : {sym_grid(7), asym_grid(15), sym_grid(1)}) {
        expect_same(obs->weight_range().choose(in, g), ref.choose(in, g));
      }
    }
  }
}

// The objective at bin centers, written independently of the observer.
double center_error(const AbsHistogram& h, double t, int levels) {
  const double s = t / levels;
  double sum = 0;
  for (int64_t k = 0; k < AbsHistogram::kBins; ++k) {
    const double v = (static_cast<double>(k) + 0.5) * h.bin_width();
    const double q = std::min(std::nearbyint(v / s), static_cast<double>(levels));
    sum += static_cast<double>(h.counts()[static_cast<size_t>(k)]) * (v - s * q) * (v - s * q);
  }
  return sum;
}

TEST(MseObserver, ActivationsKnownAnswerAndNoWorseThanMinMax) {
  // 1000 values at 30 and one at 100, one positive level: at the max edge the bulk rounds to 0
  // (error ≈ 1000·30²); clipping at half the range rounds it to T ≈ 50 (error ≈ 1000·20²), and any
  // larger T only adds to that error, so the search ends at the smallest ratio.
  AbsHistogram h;
  std::vector<float> x(1000, 30.0f);
  x.push_back(100.0f);
  h.add(x);
  const double edge = histogram_max_edge(h);
  EXPECT_EQ(edge, 100.0625);  // range 128, bins of 1/16
  const auto obs = make_observer("mse");
  EXPECT_EQ(obs->activation_clip(h, 1), edge * 50 / 100.0);
  // Down to 60 % only: at 0.60 the bulk reaches code 1 but its error 1000·30.006² plus the
  // outlier's 39.99² exceeds the max edge's 1000·30.031², so min-max stays.
  EXPECT_EQ(make_observer("mse", {.mse_min_ratio_percent = 60})->activation_clip(h, 1), edge);
  // Heavy tails, int4/int8 levels: never worse than min-max on the objective, within the ratio range.
  AbsHistogram heavy;
  heavy.add(student_t3(200000, 11));
  const double heavy_edge = histogram_max_edge(heavy);
  for (const int levels : {7, 127}) {
    const double t = obs->activation_clip(heavy, levels);
    EXPECT_LE(center_error(heavy, t, levels), center_error(heavy, heavy_edge, levels));
    EXPECT_GE(t, heavy_edge * 0.5);
    EXPECT_LE(t, heavy_edge);
  }
}

// ---- Every observer in an integer format ----

double mse_of(const Format& f, const std::vector<float>& x, int64_t rows, int64_t cols, const QuantizeOptions& o) {
  std::vector<std::byte> q(f.tensor_bytes(rows, cols));
  f.quantize_reference(x.data(), rows, cols, q, o);
  std::vector<float> y(x.size());
  f.dequantize_rows(q.data(), rows, cols, 0, rows, y.data());
  double sum = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    EXPECT_TRUE(std::isfinite(y[i]));
    sum += (static_cast<double>(x[i]) - y[i]) * (static_cast<double>(x[i]) - y[i]);
  }
  return sum / static_cast<double>(x.size());
}

TEST(Observers, InIntFormatsGiveThreadIndependentBytesAndMseNeverLosesToMinMax) {
  const int64_t rows = 32, cols = 1024;
  const std::vector<std::vector<float>> data = {student_t3(static_cast<size_t>(rows * cols), 21),
                                                laplace(static_cast<size_t>(rows * cols), 22)};
  const char* data_names[] = {"student-t3", "laplace"};
  ThreadPool pool(3);
  for (const char* fname : {"int4-g128-sym", "int4-g128-asym", "int3-g128-asym", "int8-pc-sym"}) {
    const Format& f = format_by_name(fname);
    for (size_t d = 0; d < data.size(); ++d) {
      const std::vector<float>& x = data[d];
      const double minmax_mse = mse_of(f, x, rows, cols, {});
      for (const std::string& name : observer_names()) {
        const auto obs = make_observer(name);
        const QuantizeOptions o{.range = &obs->weight_range()};
        std::vector<std::byte> ref(f.tensor_bytes(rows, cols)), fast(f.tensor_bytes(rows, cols));
        f.quantize_reference(x.data(), rows, cols, ref, o);
        f.quantize(pool, x.data(), rows, cols, fast, o);
        EXPECT_EQ(ref, fast) << fname << " " << name;
        const double m = mse_of(f, x, rows, cols, o);
        if (name == "mse" || name == "minmax") {
          EXPECT_LE(m, minmax_mse) << fname << " " << name;
        }
        std::printf("%-15s %-10s %-10s MSE %.6g (minmax %.6g, ratio %.4f)\n", fname, data_names[d], name.c_str(), m,
                    minmax_mse, m / minmax_mse);
      }
    }
  }
}

}  // namespace
}  // namespace calq::calib
