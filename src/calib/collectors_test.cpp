#include "calib/collectors.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <tuple>
#include <vector>

#include "core/error.h"
#include "core/thread_pool.h"
#include "support/random_data.h"

namespace calq::calib {
namespace {

using model::TensorRole;

// Naive references, written independently of collectors.cpp.
struct Reference {
  std::vector<float> absmax;
  std::vector<double> sum_abs, sum_sq, hessian;
};

Reference reference(const std::vector<float>& x, int64_t rows, int64_t cols) {
  Reference r;
  const auto c = static_cast<size_t>(cols);
  r.absmax.assign(c, 0.0f);
  r.sum_abs.assign(c, 0.0);
  r.sum_sq.assign(c, 0.0);
  r.hessian.assign(c * c, 0.0);
  for (int64_t i = 0; i < rows; ++i) {
    for (size_t a = 0; a < c; ++a) {
      const double xa = x[static_cast<size_t>(i) * c + a];
      r.absmax[a] = std::max(r.absmax[a], static_cast<float>(std::fabs(xa)));
      r.sum_abs[a] += std::fabs(xa);
      r.sum_sq[a] += xa * xa;
      for (size_t b = 0; b < c; ++b) r.hessian[a * c + b] += xa * x[static_cast<size_t>(i) * c + b];
    }
  }
  return r;
}

void expect_rel_near(std::span<const double> got, std::span<const double> want, double rel, const char* what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_LE(std::fabs(got[i] - want[i]), rel * std::max(std::fabs(want[i]), 1e-300)) << what << "[" << i << "]";
  }
}

TEST(InputSites, RolesAndNames) {
  EXPECT_EQ(input_site(TensorRole::kAttnQ), InputSite::kAttnIn);
  EXPECT_EQ(input_site(TensorRole::kAttnK), InputSite::kAttnIn);
  EXPECT_EQ(input_site(TensorRole::kAttnV), InputSite::kAttnIn);
  EXPECT_EQ(input_site(TensorRole::kAttnOut), InputSite::kAttnOut);
  EXPECT_EQ(input_site(TensorRole::kMlpGate), InputSite::kMlpIn);
  EXPECT_EQ(input_site(TensorRole::kMlpUp), InputSite::kMlpIn);
  EXPECT_EQ(input_site(TensorRole::kMlpDown), InputSite::kMlpDown);
  EXPECT_EQ(input_site(TensorRole::kOutput), InputSite::kHeadIn);
  const std::vector<std::string_view> names = {"attn_in", "attn_out", "mlp_in",    "mlp_down",
                                               "head_in", "moe_in",   "expert_in", "expert_down"};
  ASSERT_EQ(names.size(), static_cast<size_t>(kNumInputSites));
  for (int i = 0; i < kNumInputSites; ++i) {
    const auto site = static_cast<InputSite>(i);
    EXPECT_EQ(site_name(site), names[static_cast<size_t>(i)]);
    EXPECT_EQ(site_by_name(names[static_cast<size_t>(i)]), site);
    // The mixture-of-experts inputs are no site of a block (collectors.h keeps them apart).
    EXPECT_EQ(model::is_expert_site(site), i >= 5);
    if (model::is_expert_site(site)) continue;
    // Every role of a site maps back to it.
    ASSERT_FALSE(site_roles(site).empty());
    for (const TensorRole role : site_roles(site)) EXPECT_EQ(input_site(role), site);
  }
  EXPECT_EQ(site_roles(InputSite::kAttnIn).size(), 3u);
  EXPECT_EQ(site_roles(InputSite::kMlpIn).size(), 2u);
  EXPECT_FALSE(site_by_name("attn_q").has_value());
}

TEST(StatSetTest, NamesParseAndDefaults) {
  for (int i = 0; i < kNumStatKinds; ++i) {
    const auto kind = static_cast<StatKind>(i);
    EXPECT_EQ(stat_by_name(stat_name(kind)), kind);
  }
  EXPECT_EQ(stat_name(StatKind::kMeanSq), "mean_sq");
  EXPECT_FALSE(stat_by_name("sum_sq").has_value());

  const StatSet d = StatSet::defaults();
  EXPECT_EQ(d.to_string(), "absmax,mean_abs,mean_sq,histogram");
  EXPECT_FALSE(d.contains(StatKind::kHessian));
  EXPECT_EQ(StatSet::all(), d.with(StatKind::kHessian));
  EXPECT_TRUE(StatSet{}.empty());

  const StatSet p = StatSet::parse(" hessian, absmax ,absmax,mean_sq");
  EXPECT_EQ(p.to_string(), "absmax,mean_sq,hessian");
  EXPECT_EQ(p.without(StatKind::kHessian).names(), (std::vector<std::string>{"absmax", "mean_sq"}));
  EXPECT_EQ(StatSet::parse(d.to_string()), d);
}

TEST(StatSetTest, UnknownNameListsValidOnes) {
  try {
    StatSet::parse("absmax,imatrix");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidArgument);
    const std::string m = e.what();
    EXPECT_NE(m.find("'imatrix'"), std::string::npos) << m;
    EXPECT_NE(m.find("absmax, mean_abs, mean_sq, histogram, hessian"), std::string::npos) << m;
  }
  EXPECT_THROW(StatSet::parse(""), Error);
  EXPECT_THROW(StatSet::parse("absmax,,mean_sq"), Error);
}

TEST(SiteStatsTest, ExactValuesOnHandData) {
  // 3 rows × 4 columns of dyadic values: every statistic is exact in double.
  const std::vector<float> x = {1.0f, -2.0f, 0.5f,  0.0f,   //
                                -3.0f, 1.5f, 0.25f, 0.0f,   //
                                2.0f, -0.5f, -4.0f, 0.125f};
  SiteStats s(4, StatSet::all());
  s.observe(x.data(), 3, 4);
  EXPECT_EQ(s.rows(), 3);
  EXPECT_EQ(s.cols(), 4);
  EXPECT_EQ(std::vector<float>(s.absmax().begin(), s.absmax().end()), (std::vector<float>{3.0f, 2.0f, 4.0f, 0.125f}));
  EXPECT_EQ(std::vector<double>(s.sum_abs().begin(), s.sum_abs().end()),
            (std::vector<double>{6.0, 4.0, 4.75, 0.125}));
  EXPECT_EQ(std::vector<double>(s.sum_sq().begin(), s.sum_sq().end()),
            (std::vector<double>{14.0, 6.5, 16.3125, 0.015625}));
  EXPECT_EQ(s.mean_sq(), (std::vector<float>{static_cast<float>(14.0 / 3), static_cast<float>(6.5 / 3),
                                             static_cast<float>(16.3125 / 3), static_cast<float>(0.015625 / 3)}));
  EXPECT_EQ(s.mean_abs(), (std::vector<float>{2.0f, static_cast<float>(4.0 / 3), static_cast<float>(4.75 / 3),
                                              static_cast<float>(0.125 / 3)}));
  const Reference r = reference(x, 3, 4);
  EXPECT_EQ(std::vector<double>(s.hessian().begin(), s.hessian().end()), r.hessian);
  EXPECT_EQ(s.hessian()[0 * 4 + 1], 1.0 * -2.0 + -3.0 * 1.5 + 2.0 * -0.5);
  EXPECT_EQ(s.histogram().total(), 12);
  EXPECT_EQ(s.histogram().exp(), 3);              // 4.0 needs range 8
  EXPECT_EQ(s.histogram().counts()[1024], 1);     // 4.0
  EXPECT_EQ(s.histogram().counts()[0], 2);        // the zeros
  EXPECT_EQ(s.histogram().counts()[32], 1);       // 0.125 · 256
}

TEST(SiteStatsTest, NoRowsGiveZeroMeans) {
  SiteStats s(3, StatSet::defaults());
  EXPECT_EQ(s.mean_sq(), (std::vector<float>{0, 0, 0}));
  EXPECT_EQ(s.mean_abs(), (std::vector<float>{0, 0, 0}));
  SiteStats none(3, StatSet{});
  const std::vector<float> x(6, 1.0f);
  none.observe(x.data(), 2, 3);
  EXPECT_EQ(none.rows(), 2);
}

TEST(SiteStatsTest, HessianMatchesNaiveLoopAcrossRowBlocks) {
  // More rows than one dsyrk block, and an odd width.
  const int64_t rows = kHessianRowBlock + 77, cols = 13;
  const auto x = testing::gaussian(static_cast<size_t>(rows * cols), 5, 3.0f);
  SiteStats s(cols, StatSet::all());
  s.observe(x.data(), rows, cols);
  const Reference r = reference(x, rows, cols);
  expect_rel_near(s.hessian(), r.hessian, 1e-12, "hessian");
  expect_rel_near(s.sum_sq(), r.sum_sq, 0.0, "sum_sq");    // same order: exact
  expect_rel_near(s.sum_abs(), r.sum_abs, 0.0, "sum_abs");
  EXPECT_EQ(std::vector<float>(s.absmax().begin(), s.absmax().end()), r.absmax);
  for (int64_t i = 0; i < cols; ++i) {
    for (int64_t j = 0; j < cols; ++j) EXPECT_EQ(s.hessian()[i * cols + j], s.hessian()[j * cols + i]);
  }
}

TEST(SiteStatsTest, MergedSamplesEqualOneObservation) {
  const int64_t cols = 24, samples = 9, seq = 31;
  auto x = testing::gaussian(static_cast<size_t>(samples * seq * cols), 9);
  for (size_t i = 0; i < x.size(); i += 97) x[i] *= 40.0f;  // outliers that grow the histogram
  SiteStats whole(cols, StatSet::all());
  whole.observe(x.data(), samples * seq, cols);
  SiteStats merged(cols, StatSet::all());
  for (int64_t k = 0; k < samples; ++k) {
    SiteStats one(cols, StatSet::all());
    one.observe(x.data() + k * seq * cols, seq, cols);
    merged.merge(one);
  }
  EXPECT_EQ(merged.rows(), whole.rows());
  EXPECT_EQ(std::vector<float>(merged.absmax().begin(), merged.absmax().end()),
            std::vector<float>(whole.absmax().begin(), whole.absmax().end()));
  EXPECT_EQ(merged.histogram(), whole.histogram());
  expect_rel_near(merged.sum_abs(), whole.sum_abs(), 1e-12, "sum_abs");
  expect_rel_near(merged.sum_sq(), whole.sum_sq(), 1e-12, "sum_sq");
  expect_rel_near(merged.hessian(), whole.hessian(), 1e-12, "hessian");
}

// Per-sample stats built on any number of threads and merged in sample order: identical bits.
CalibrationStats run_samples(const std::vector<float>& x, int64_t samples, int64_t seq, int64_t cols,
                             size_t threads) {
  ThreadPool pool(threads);
  std::vector<CalibrationStats> per(static_cast<size_t>(samples), CalibrationStats(StatSet::all()));
  pool.parallel_for(0, static_cast<size_t>(samples), Grain{.min_items = 1}, [&](size_t b, size_t e) {
    for (size_t k = b; k < e; ++k) {
      const float* xs = x.data() + k * static_cast<size_t>(seq * cols);
      per[k].samples = 1;
      per[k].observe(0, InputSite::kAttnIn, xs, seq, cols);
      per[k].observe(0, InputSite::kMlpDown, xs, seq, cols);
      per[k].observe(-1, InputSite::kHeadIn, xs, seq, cols);
    }
  });
  CalibrationStats total(StatSet::all());
  for (const auto& p : per) total.merge(p);
  return total;
}

TEST(CalibrationStatsTest, BitIdenticalForAnyThreadCount) {
  const int64_t samples = 8, seq = 40, cols = 33;
  const auto x = testing::gaussian(static_cast<size_t>(samples * seq * cols), 21);
  const CalibrationStats one = run_samples(x, samples, seq, cols, 1);
  const CalibrationStats four = run_samples(x, samples, seq, cols, 4);
  EXPECT_EQ(one.samples, 8);
  EXPECT_TRUE(one == four);
  const auto* a = one.find(0, InputSite::kMlpDown);
  const auto* b = four.find(0, InputSite::kMlpDown);
  ASSERT_TRUE(a && b);
  EXPECT_EQ(0, std::memcmp(a->hessian().data(), b->hessian().data(), a->hessian().size_bytes()));
  EXPECT_EQ(0, std::memcmp(a->sum_sq().data(), b->sum_sq().data(), a->sum_sq().size_bytes()));
}

// The tiled accumulation over a width that is not a multiple of the tile and rows over two row
// blocks: close to the naive sum, exactly symmetric, and the same bits inline and on 1 or 3 workers.
TEST(SiteStatsTest, TiledHessianAnyPoolSameBitsAndNearNaive) {
  const int64_t rows = kHessianRowBlock + 35, cols = kHessianTile + 45;
  const auto x = testing::gaussian(static_cast<size_t>(rows * cols), 31, 2.0f);
  SiteStats inl(cols, StatSet::all());
  inl.observe(x.data(), rows, cols);
  for (const size_t threads : {size_t{1}, size_t{3}}) {
    ThreadPool pool(threads);
    SiteStats s(cols, StatSet().with(StatKind::kHessian));
    s.add_hessian(x.data(), rows, &pool);
    EXPECT_EQ(s.rows(), 0);  // the Hessian only
    EXPECT_EQ(0, std::memcmp(s.hessian().data(), inl.hessian().data(), inl.hessian().size_bytes())) << threads;
  }
  // Each entry is a sum of `rows` products: its rounding error is within rows·ε·Σ|x_i x_j| ≤
  // rows·ε·sqrt(H_ii H_jj) (Cauchy–Schwarz), however the sum is ordered.
  const Reference r = reference(x, rows, cols);
  for (int64_t i = 0; i < cols; ++i) {
    for (int64_t j = 0; j < cols; ++j) {
      const double bound = static_cast<double>(rows) * 0x1p-52 *
                           std::sqrt(r.hessian[static_cast<size_t>(i * cols + i)] * r.hessian[static_cast<size_t>(j * cols + j)]);
      ASSERT_LE(std::fabs(inl.hessian()[i * cols + j] - r.hessian[static_cast<size_t>(i * cols + j)]), bound) << i << "," << j;
    }
  }
  for (int64_t i = 0; i < cols; ++i) {
    for (int64_t j = 0; j < i; ++j) ASSERT_EQ(inl.hessian()[i * cols + j], inl.hessian()[j * cols + i]) << i << "," << j;
  }
}

// The pipeline's deferred Hessians: per-sample statistics without the Hessian, merged in sample
// order, each sample's rows added after its merge. The Hessian is summed in place, as observing
// every sample in turn on one CalibrationStats sums it (same bits); the other statistics are the
// per-sample ones merged (same bits as merging per-sample statistics of every kind).
TEST(CalibrationStatsTest, DeferredHessianEqualsObservingInTurn) {
  const int64_t samples = 5, seq = 23, cols = 40;
  const auto x = testing::gaussian(static_cast<size_t>(samples * seq * cols), 41);
  const CalibrationStats::ExpertSite expert{2, 1, InputSite::kExpertIn};
  CalibrationStats in_turn(StatSet::all());
  CalibrationStats merged(StatSet::all());
  CalibrationStats deferred(StatSet::all());
  ThreadPool pool(2);
  for (int64_t k = 0; k < samples; ++k) {
    const float* xs = x.data() + k * seq * cols;
    in_turn.observe(2, InputSite::kMlpIn, xs, seq, cols);
    in_turn.observe_expert(expert, xs, seq - 3, cols);
    CalibrationStats all(StatSet::all());
    all.observe(2, InputSite::kMlpIn, xs, seq, cols);
    all.observe_expert(expert, xs, seq - 3, cols);
    merged.merge(all);
    CalibrationStats one(StatSet::all().without(StatKind::kHessian));
    one.observe(2, InputSite::kMlpIn, xs, seq, cols);
    one.observe_expert(expert, xs, seq - 3, cols);
    deferred.merge(one);
    deferred.add_hessian(2, InputSite::kMlpIn, xs, seq, &pool);
    deferred.add_expert_hessian(expert, xs, seq - 3, &pool);
  }
  using Sites = std::tuple<const SiteStats*, const SiteStats*, const SiteStats*>;
  const auto& cd = deferred;
  const auto& ct = in_turn;
  const auto& cm = merged;
  for (const auto& [d, t, m] : {Sites{cd.find(2, InputSite::kMlpIn), ct.find(2, InputSite::kMlpIn),
                                      cm.find(2, InputSite::kMlpIn)},
                                Sites{cd.find_expert(expert), ct.find_expert(expert), cm.find_expert(expert)}}) {
    ASSERT_TRUE(d != nullptr && t != nullptr && m != nullptr);
    EXPECT_TRUE(d->kinds() == StatSet::all());
    EXPECT_EQ(d->rows(), m->rows());
    EXPECT_EQ(0, std::memcmp(d->hessian().data(), t->hessian().data(), t->hessian().size_bytes()));
    EXPECT_EQ(0, std::memcmp(d->sum_sq().data(), m->sum_sq().data(), m->sum_sq().size_bytes()));
    EXPECT_EQ(0, std::memcmp(d->sum_abs().data(), m->sum_abs().data(), m->sum_abs().size_bytes()));
    EXPECT_EQ(0, std::memcmp(d->absmax().data(), m->absmax().data(), m->absmax().size_bytes()));
    EXPECT_EQ(d->histogram(), m->histogram());
    EXPECT_NE(d->hessian()[0], 0.0);
  }
}

TEST(CalibrationStatsTest, SitesOrderedHeadLastAndMergeCreatesMissing) {
  const std::vector<float> x = {1.0f, 2.0f, 3.0f, 4.0f};
  CalibrationStats a;
  a.observe(-1, InputSite::kHeadIn, x.data(), 1, 4);
  a.observe(1, InputSite::kAttnIn, x.data(), 2, 2);
  a.observe(0, InputSite::kMlpDown, x.data(), 1, 4);
  a.observe(0, InputSite::kAttnIn, x.data(), 2, 2);
  using P = std::pair<int64_t, InputSite>;
  EXPECT_EQ(a.sites(), (std::vector<P>{{0, InputSite::kAttnIn}, {0, InputSite::kMlpDown}, {1, InputSite::kAttnIn},
                                       {-1, InputSite::kHeadIn}}));
  EXPECT_EQ(a.find(2, InputSite::kAttnIn), nullptr);
  a.model_name = "m";
  a.samples = 2;
  a.seed = 7;
  a.calib_sha256 = {"aa"};

  CalibrationStats b;
  b.observe(0, InputSite::kAttnIn, x.data(), 2, 2);
  b.observe(2, InputSite::kMlpIn, x.data(), 1, 4);
  b.samples = 3;
  b.seed = 9;
  b.seq_len = 64;
  b.calib_sha256 = {"bb", "aa"};
  a.merge(b);
  EXPECT_EQ(a.site_count(), 5u);
  EXPECT_EQ(a.find(0, InputSite::kAttnIn)->rows(), 4);
  EXPECT_EQ(a.find(2, InputSite::kMlpIn)->rows(), 1);
  EXPECT_EQ(a.samples, 5);
  EXPECT_EQ(a.seed, 7);
  EXPECT_EQ(a.seq_len, 64);
  EXPECT_EQ(a.model_name, "m");
  EXPECT_EQ(a.calib_sha256, (std::vector<std::string>{"aa", "bb"}));
}

TEST(CheckFinite, MessageNamesLayerSiteTokenAndChannel) {
  std::vector<float> x(4 * 6, 1.0f);
  EXPECT_NO_THROW(check_finite_activations(x.data(), 4, 6, 3, InputSite::kMlpDown));
  x[2 * 6 + 5] = std::numeric_limits<float>::quiet_NaN();
  x[3 * 6 + 0] = std::numeric_limits<float>::infinity();  // later: the first one is reported
  try {
    check_finite_activations(x.data(), 4, 6, 3, InputSite::kMlpDown);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidArgument);
    EXPECT_EQ(std::string(e.what()),
              "non-finite activation (nan) at layer 3 mlp_down input, token 2, channel 5: the model or calibration "
              "data produces NaN/Inf");
  }
  x[2 * 6 + 5] = 1.0f;
  x[1] = -std::numeric_limits<float>::infinity();
  try {
    check_finite_activations(x.data(), 4, 6, -1, InputSite::kHeadIn);
    FAIL() << "no error";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("(-inf) at the output head input (head_in), token 0, channel 1"), std::string::npos) << m;
  }
}

}  // namespace
}  // namespace calq::calib
