#include "calib/weight_stats.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "core/error.h"
#include "model/tiny_model_testutil.h"
#include "support/shared_dir.h"

namespace calq::calib {
namespace {

// n weights: k equal to +c, k equal to -c, the rest 0. Mean 0, m2 = 2kc^2/n, m4 = 2kc^4/n, so the
// kurtosis is n / (2k) and |w| = c lies beyond 6 sigma iff n > 72k.
TEST(WeightStats, SparseSpikesHaveKnownMomentsAndTail) {
  ThreadPool pool(2);
  const int64_t rows = 100, cols = 100, k = 10;
  const double c = 0.75;
  std::vector<float> w(static_cast<size_t>(rows * cols), 0.0f);
  for (int64_t i = 0; i < k; ++i) {
    w[static_cast<size_t>(i * 997 % (rows * cols))] = static_cast<float>(c);
    w[static_cast<size_t>((i * 997 + 500) % (rows * cols))] = static_cast<float>(-c);
  }
  const WeightStats s = weight_stats(w.data(), rows, cols, {}, pool);
  const double n = static_cast<double>(rows * cols);
  EXPECT_EQ(s.min, -c);
  EXPECT_EQ(s.max, c);
  EXPECT_EQ(s.absmax, c);
  EXPECT_EQ(s.mean, 0.0);
  EXPECT_NEAR(s.std, c * std::sqrt(2.0 * k / n), 1e-15);
  EXPECT_NEAR(s.excess_kurtosis, n / (2.0 * k) - 3.0, 1e-9);
  EXPECT_EQ(s.beyond_sigma_count, 2 * k);
  EXPECT_DOUBLE_EQ(s.beyond_sigma_share, 2.0 * k / n);
}

// A discrete uniform distribution on n equally spaced points has variance (n^2 - 1) / 12 (unit
// spacing) and excess kurtosis -6 (n^2 + 1) / (5 (n^2 - 1)); nothing lies beyond 6 sigma.
TEST(WeightStats, DiscreteUniformKurtosis) {
  ThreadPool pool(3);
  const int64_t rows = 48, cols = 64;
  const int64_t n = rows * cols;
  std::vector<float> w(static_cast<size_t>(n));
  // Every value i - (n-1)/2 exactly once, scattered by a stride coprime with n.
  for (int64_t i = 0; i < n; ++i) {
    const double value = static_cast<double>(i) - 0.5 * static_cast<double>(n - 1);
    w[static_cast<size_t>(i * 1237 % n)] = static_cast<float>(value);
  }
  const WeightStats s = weight_stats(w.data(), rows, cols, {}, pool);
  const auto nn = static_cast<double>(n);
  EXPECT_EQ(s.mean, 0.0);
  EXPECT_NEAR(s.std, std::sqrt((nn * nn - 1.0) / 12.0), 1e-9);
  EXPECT_NEAR(s.excess_kurtosis, -6.0 * (nn * nn + 1.0) / (5.0 * (nn * nn - 1.0)), 1e-12);
  EXPECT_EQ(s.beyond_sigma_count, 0);
  EXPECT_EQ(s.absmax, 0.5 * (nn - 1.0));
}

// Every column of w[r][c] = ((7r + 13c) mod 17 - 8) / 8 takes all 17 residues once per 17 rows,
// so every channel's max |w| is exactly 1; planted values make channels 3 and 17 outliers (5 and
// 2.5 > 2 x median) while 1.9 in channel 20 stays below the factor.
TEST(WeightStats, PlantedOutlierChannels) {
  ThreadPool pool(2);
  const int64_t rows = 34, cols = 40;
  std::vector<float> w(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      w[static_cast<size_t>(r * cols + c)] = static_cast<float>((7 * r + 13 * c) % 17 - 8) / 8.0f;
    }
  }
  w[5 * cols + 3] = 5.0f;
  w[9 * cols + 17] = -2.5f;
  w[1 * cols + 20] = 1.9f;
  const WeightStats s = weight_stats(w.data(), rows, cols, {.top_channels = 3}, pool);
  ASSERT_EQ(s.channel_absmax.size(), static_cast<size_t>(cols));
  for (int64_t c = 0; c < cols; ++c) {
    const float expect = c == 3 ? 5.0f : c == 17 ? 2.5f : c == 20 ? 1.9f : 1.0f;
    EXPECT_EQ(s.channel_absmax[static_cast<size_t>(c)], expect) << "channel " << c;
  }
  EXPECT_EQ(s.channels.median, 1.0);
  EXPECT_EQ(s.channels.max_over_median, 5.0);
  EXPECT_EQ(s.outlier_channels, (std::vector<int64_t>{3, 17}));
  ASSERT_EQ(s.channels.top.size(), 3u);
  EXPECT_EQ(s.channels.top[0].channel, 3);
  EXPECT_EQ(s.channels.top[1].channel, 17);
  EXPECT_EQ(s.channels.top[2].channel, 20);
  // A stricter factor flags only the larger plant.
  EXPECT_EQ(weight_stats(w.data(), rows, cols, {.outlier_channel_factor = 3.0}, pool).outlier_channels,
            (std::vector<int64_t>{3}));
}

TEST(WeightStats, IdenticalForAnyThreadCount) {
  const int64_t rows = 301, cols = 77;
  std::vector<float> w(static_cast<size_t>(rows * cols));
  uint32_t state = 12345;
  for (float& v : w) {
    state = state * 1664525u + 1013904223u;
    const double u = (static_cast<double>(state >> 8) + 0.5) / 16777216.0;
    v = static_cast<float>(u < 0.5 ? std::log(2 * u) : -std::log(2 * (1 - u)));  // Laplace
  }
  ThreadPool one(1), three(3);
  const WeightStats a = weight_stats(w.data(), rows, cols, {}, one);
  const WeightStats b = weight_stats(w.data(), rows, cols, {}, three);
  EXPECT_EQ(a.mean, b.mean);
  EXPECT_EQ(a.std, b.std);
  EXPECT_EQ(a.excess_kurtosis, b.excess_kurtosis);
  EXPECT_EQ(a.beyond_sigma_count, b.beyond_sigma_count);
  EXPECT_EQ(a.channel_absmax, b.channel_absmax);
  EXPECT_GT(a.excess_kurtosis, 1.0);  // heavy-tailed sample (population value 3)
}

TEST(WeightStats, NonFiniteIsAnError) {
  ThreadPool pool(1);
  std::vector<float> w = {1.0f, 2.0f, NAN, 0.0f};
  EXPECT_THROW(weight_stats(w.data(), 2, 2, {}, pool), Error);
}

TEST(WeightStats, ModelCoversEveryLinearWeight) {
  ThreadPool pool(2);
  for (const bool tied : {true, false}) {
    const auto dir = testing::temp_dir(tied ? "ws_tied" : "ws_untied");
    model::testutil::write_tiny_model(dir, {.tied = tied, .layers = 3});
    const model::Model m = model::load_hf_model(dir, pool);
    const auto all = model_weight_stats(m, {}, pool);
    ASSERT_EQ(all.size(), 3u * 7u + (tied ? 1u : 2u));
    const std::vector<model::TensorRole> order = {
        model::TensorRole::kAttnQ,    model::TensorRole::kAttnK,  model::TensorRole::kAttnV,
        model::TensorRole::kAttnOut,  model::TensorRole::kMlpGate, model::TensorRole::kMlpUp,
        model::TensorRole::kMlpDown};
    for (size_t i = 0; i < 21; ++i) {
      EXPECT_EQ(all[i].layer, static_cast<int64_t>(i / 7));
      EXPECT_EQ(all[i].role, order[i % 7]);
      const Tensor& t = m.layers[i / 7].linear(order[i % 7]).dense();
      EXPECT_EQ(all[i].stats.rows, t.dim(0));
      EXPECT_EQ(all[i].stats.cols, t.dim(1));
      EXPECT_EQ(all[i].stats.std, weight_stats(t, {}, pool).std);
    }
    EXPECT_EQ(all[21].role, model::TensorRole::kOutput);
    EXPECT_EQ(all[21].tied, tied);
    if (!tied) {
      EXPECT_EQ(all[22].role, model::TensorRole::kTokenEmbedding);
    }
    std::filesystem::remove_all(dir);
  }
}

}  // namespace
}  // namespace calq::calib
