// Calibration drift (calib/stats_drift.h): two halves of one token distribution drift less than
// that distribution against a degenerate text (one token repeated); identical inputs drift 0.
#include "calib/stats_drift.h"

#include <gtest/gtest.h>

#include <random>

#include "core/error.h"
#include "model/tiny_model_testutil.h"
#include "pipeline/sequential.h"
#include "support/error_of.h"
#include "support/shared_dir.h"

namespace calq::calib {
namespace {

std::vector<std::vector<int32_t>> random_samples(int64_t n, int64_t seq, int64_t vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<std::vector<int32_t>> out(static_cast<size_t>(n), std::vector<int32_t>(static_cast<size_t>(seq)));
  for (auto& s : out) {
    for (auto& id : s) id = static_cast<int32_t>(rng() % static_cast<uint64_t>(vocab));
  }
  return out;
}

CalibrationStats stats_of(model::Model& m, const std::vector<std::vector<int32_t>>& samples, ThreadPool& pool) {
  return pipeline::run_layer_sequential(
             m, samples, {.stats = StatSet().with(StatKind::kAbsMax).with(StatKind::kMeanAbs), .true_sequential = false},
             nullptr, pool)
      .stats;
}

TEST(StatsDrift, RelativeDrift) {
  EXPECT_EQ(relative_drift(0, 0), 0.0);
  EXPECT_DOUBLE_EQ(relative_drift(1, 2), 0.5);
  EXPECT_DOUBLE_EQ(relative_drift(2, 1), 0.5);
  EXPECT_DOUBLE_EQ(relative_drift(0, 3), 1.0);
}

TEST(StatsDrift, OtherDistributionDriftsMoreThanTwoHalves) {
  ThreadPool pool(2);
  model::Model m = model::testutil::load_tiny_model(testing::temp_dir("drift"), {.tied = true, .layers = 2}, pool);
  const int64_t vocab = m.config.vocab_size;
  const CalibrationStats a = stats_of(m, random_samples(8, 32, vocab, 1), pool);
  const CalibrationStats b = stats_of(m, random_samples(8, 32, vocab, 2), pool);
  std::vector<std::vector<int32_t>> repeated(8, std::vector<int32_t>(32, 7));
  const CalibrationStats c = stats_of(m, repeated, pool);

  const DriftReport self = compare_activation_stats(a, a, {});
  EXPECT_EQ(self.score, 0.0);
  EXPECT_FALSE(self.flagged);
  const DriftReport halves = compare_activation_stats(a, b, {});
  const DriftReport other = compare_activation_stats(a, c, {});
  ASSERT_EQ(halves.sites.size(), 2u * 4u + 1u);  // four sites per layer and the head's input
  EXPECT_GT(halves.score, 0.0);
  EXPECT_GT(other.score, 2 * halves.score);
  EXPECT_GT(other.absmax_score, halves.absmax_score);
  EXPECT_FALSE(halves.flagged) << halves.score;
  EXPECT_TRUE(other.flagged) << other.score;
  int flagged_sites = 0;
  for (const SiteDrift& s : other.sites) {
    EXPECT_LE(s.mean_abs_median, s.mean_abs_max);
    EXPECT_GE(s.worst_channel, 0);
    EXPECT_LT(s.worst_channel, s.cols);
    flagged_sites += s.flagged ? 1 : 0;
  }
  EXPECT_GT(flagged_sites, 0);

  EXPECT_NE(testing::error_of([&] { compare_activation_stats(a, b, {.threshold = 0}); }).find("threshold"),
            std::string::npos);
  CalibrationStats only_max(StatSet().with(StatKind::kAbsMax));
  EXPECT_NE(testing::error_of([&] { compare_activation_stats(a, only_max, {}); }).find("mean_abs"), std::string::npos);
}

}  // namespace
}  // namespace calq::calib
