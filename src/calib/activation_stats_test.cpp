#include "calib/activation_stats.h"

#include <gtest/gtest.h>

#include <vector>

#include "model/forward.h"
#include "model/tiny_model_testutil.h"
#include "support/shared_dir.h"

namespace calq::calib {
namespace {

using model::LinearInput;
using model::TensorRole;

// 4 tokens x 8 channels of 0.5 (or -0.5), with 10 in channel 2 (row 1) and -7 in channel 5
// (rows 0 and 3): all values are multiples of 0.5, so every sum below is exact.
std::vector<float> planted() {
  std::vector<float> x(32);
  for (size_t i = 0; i < x.size(); ++i) x[i] = i % 3 == 0 ? -0.5f : 0.5f;
  x[1 * 8 + 2] = 10.0f;
  x[0 * 8 + 5] = -7.0f;
  x[3 * 8 + 5] = -7.0f;
  return x;
}

TEST(ActivationStats, PlantedOutlierChannels) {
  const std::vector<float> x = planted();
  ActivationObserver obs;
  obs.observe(LinearInput{3, TensorRole::kMlpDown, x.data(), 4, 8});
  const ActivationStats st = summarize_activations(obs, 2);
  ASSERT_EQ(st.inputs.size(), 1u);
  const LinearInputStats& s = st.inputs[0];
  EXPECT_EQ(s.layer, 3);
  EXPECT_EQ(s.role, TensorRole::kMlpDown);
  EXPECT_EQ(s.rows, 4);
  EXPECT_EQ(s.channel_absmax, (std::vector<float>{0.5f, 0.5f, 10.0f, 0.5f, 0.5f, 7.0f, 0.5f, 0.5f}));
  EXPECT_EQ(s.channel_above, (std::vector<int64_t>{0, 0, 1, 0, 0, 2, 0, 0}));
  EXPECT_EQ(s.channel_mean_abs[2], (10.0 + 1.5) / 4.0);
  EXPECT_EQ(s.channel_mean_abs[5], (14.0 + 1.0) / 4.0);
  EXPECT_EQ(s.channel_mean_abs[0], 0.5);
  EXPECT_EQ(s.channels.median, 0.5);
  EXPECT_EQ(s.channels.max_over_median, 20.0);
  EXPECT_EQ(s.channels_above_threshold, 2);
  EXPECT_EQ(s.values_above_share, 3.0 / 32.0);
  EXPECT_EQ(s.mean_abs, (10.0 + 14.0 + 29 * 0.5) / 32.0);
  ASSERT_EQ(s.channels.top.size(), 2u);
  EXPECT_EQ(s.channels.top[0].channel, 2);
  EXPECT_EQ(s.channels.top[1].channel, 5);
}

TEST(ActivationStats, ThresholdIsStrictAndConfigurable) {
  const std::vector<float> x = {6.0f, -6.0f, 6.5f, 1.0f};
  ActivationObserver six;
  six.observe(LinearInput{0, TensorRole::kAttnQ, x.data(), 1, 4});
  EXPECT_EQ(summarize_activations(six).inputs[0].channels_above_threshold, 1);
  ActivationObserver one(0.5);
  one.observe(LinearInput{0, TensorRole::kAttnQ, x.data(), 1, 4});
  EXPECT_EQ(summarize_activations(one).inputs[0].channels_above_threshold, 4);
}

TEST(ActivationStats, MergeEqualsObservingTogether) {
  const std::vector<float> x = planted();
  ActivationObserver whole, first, second;
  whole.observe(LinearInput{0, TensorRole::kAttnOut, x.data(), 4, 8});
  first.observe(LinearInput{0, TensorRole::kAttnOut, x.data(), 2, 8});
  second.observe(LinearInput{0, TensorRole::kAttnOut, x.data() + 16, 2, 8});
  second.observe(LinearInput{1, TensorRole::kAttnOut, x.data(), 1, 8});
  first.merge(second);
  ASSERT_EQ(first.inputs().size(), 2u);
  const ActivationAccumulator& a = first.inputs()[0];
  const ActivationAccumulator& b = whole.inputs()[0];
  EXPECT_EQ(a.rows, 4);
  EXPECT_EQ(a.absmax, b.absmax);
  EXPECT_EQ(a.sum_abs, b.sum_abs);
  EXPECT_EQ(a.above, b.above);
  EXPECT_EQ(first.inputs()[1].layer, 1);
  EXPECT_EQ(first.calls(), 3);
}

TEST(ActivationStats, ObserverSeesEveryLinearRoleOfEveryLayer) {
  ThreadPool pool(2);
  const auto dir = testing::temp_dir("act_roles");
  model::testutil::write_tiny_model(dir, {.tied = false, .layers = 3});
  const model::Model m = model::load_hf_model(dir, pool);
  const std::vector<int32_t> ids = {1, 5, 9, 60, 2, 33, 17, 8, 40};
  ActivationObserver obs;
  const model::LinearHook hook = obs.hook();
  model::forward(m, ids, pool, &hook);
  const auto& in = obs.inputs();
  ASSERT_EQ(in.size(), 3u * 7u + 1u);
  const std::vector<TensorRole> order = {TensorRole::kAttnQ, TensorRole::kAttnK,   TensorRole::kAttnV,
                                         TensorRole::kAttnOut, TensorRole::kMlpGate, TensorRole::kMlpUp,
                                         TensorRole::kMlpDown};
  const auto& c = m.config;
  for (size_t i = 0; i < 21; ++i) {
    EXPECT_EQ(in[i].layer, static_cast<int64_t>(i / 7));
    EXPECT_EQ(in[i].role, order[i % 7]);
    EXPECT_EQ(in[i].rows, 9);
    // Each input is as wide as its weight's input dimension.
    EXPECT_EQ(in[i].cols, m.layers[i / 7].linear(order[i % 7]).cols());
    EXPECT_GT(in[i].absmax[0], 0.0f);
  }
  EXPECT_EQ(in[3].cols, c.q_dim());
  EXPECT_EQ(in[6].cols, c.intermediate_size);
  EXPECT_EQ(in[21].layer, -1);
  EXPECT_EQ(in[21].role, TensorRole::kOutput);
  EXPECT_EQ(in[21].cols, c.hidden_size);
  // q/k/v and gate/up share their input.
  EXPECT_EQ(in[0].sum_abs, in[2].sum_abs);
  EXPECT_EQ(in[4].absmax, in[5].absmax);
  EXPECT_NE(in[0].sum_abs, in[4].sum_abs);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace calq::calib
