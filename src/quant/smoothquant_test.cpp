#include "quant/smoothquant.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <vector>

#include "core/error.h"
#include "model/fold.h"
#include "model/forward.h"
#include "model/tiny_model_testutil.h"
#include "support/shared_dir.h"

namespace calq::quant {
namespace {

Tensor matrix(int64_t rows, int64_t cols, std::vector<float> v) {
  Tensor t = Tensor::zeros(DType::kF32, {rows, cols});
  std::copy(v.begin(), v.end(), t.mutable_f32());
  return t;
}

TEST(SmoothQuant, HandMadeScales) {
  // Column maxima over both consumers: [3, 4, 0, 2]; activation absmax: [9, 1, 5, 0].
  const Tensor w1 = matrix(2, 4, {1, -4, 0, 2, 2, 0.5f, 0, 0});
  const Tensor w2 = matrix(1, 4, {-3, 1, 0, -1});
  const std::vector<const Tensor*> ws = {&w1, &w2};
  const std::vector<float> absmax = {9, 1, 5, 0};
  const auto s = smoothquant_scales(ws, absmax, 0.5);
  ASSERT_EQ(s.size(), 4u);
  EXPECT_FLOAT_EQ(s[0], std::sqrt(9.0f) / std::sqrt(3.0f));
  EXPECT_FLOAT_EQ(s[1], 1.0f / 2.0f);
  EXPECT_EQ(s[2], 1.0f);  // zero weight column
  EXPECT_EQ(s[3], 1.0f);  // zero activation
  const auto s8 = smoothquant_scales(ws, absmax, 0.8);
  EXPECT_FLOAT_EQ(s8[0], static_cast<float>(std::pow(9.0, 0.8) / std::pow(3.0, 0.2)));
  EXPECT_FLOAT_EQ(s8[1], static_cast<float>(1.0 / std::pow(4.0, 0.2)));
  // α = 0 moves the whole range into the activations (s = 1 / weight max), α = 1 into the weights.
  const auto s0 = smoothquant_scales(ws, absmax, 0.0);
  EXPECT_FLOAT_EQ(s0[0], 1.0f / 3.0f);
  const auto s1 = smoothquant_scales(ws, absmax, 1.0);
  EXPECT_FLOAT_EQ(s1[0], 9.0f);
}

TEST(SmoothQuant, ScalesAreClamped) {
  const Tensor w = matrix(1, 2, {1e-12f, 1e12f});
  const std::vector<const Tensor*> ws = {&w};
  const std::vector<float> absmax = {1e12f, 1e-12f};
  const auto s = smoothquant_scales(ws, absmax, 0.5);
  EXPECT_FLOAT_EQ(s[0], 1e5f);
  EXPECT_FLOAT_EQ(s[1], 1e-5f);
}

TEST(SmoothQuant, RejectsBadInput) {
  const Tensor w = matrix(1, 2, {1, 2});
  const std::vector<const Tensor*> ws = {&w};
  EXPECT_THROW(smoothquant_scales(ws, std::vector<float>{1, -1}, 0.5, "x"), Error);
  EXPECT_THROW(smoothquant_scales(ws, std::vector<float>{1, NAN}, 0.5, "x"), Error);
  EXPECT_THROW(smoothquant_scales(ws, std::vector<float>{1, 2, 3}, 0.5, "x"), Error);
  EXPECT_THROW(smoothquant_scales(ws, std::vector<float>{1, 2}, 1.5, "x"), Error);
  try {
    smoothquant_scales(ws, std::vector<float>{1, 2}, -0.1, "blk.3.attn_q");
    ADD_FAILURE() << "accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("blk.3.attn_q"), std::string::npos);
  }
}

// Per-column max |x| of every linear input, by (layer, role).
std::map<std::pair<int64_t, model::TensorRole>, std::vector<float>> input_absmax(const model::Model& m,
                                                                                   ThreadPool& pool) {
  std::map<std::pair<int64_t, model::TensorRole>, std::vector<float>> out;
  const model::LinearHook hook = [&](const model::LinearInput& in) {
    auto& v = out[{in.layer, in.role}];
    v.resize(static_cast<size_t>(in.cols), 0.0f);
    for (int64_t t = 0; t < in.rows; ++t) {
      for (int64_t j = 0; j < in.cols; ++j) {
        v[static_cast<size_t>(j)] = std::max(v[static_cast<size_t>(j)], std::abs(in.x[t * in.cols + j]));
      }
    }
  };
  model::forward(m, model::testutil::test_token_ids(21, m.config.vocab_size), pool, &hook);
  return out;
}

TEST(SmoothQuant, FoldedHalfAlphaBalancesActivationAndWeightRanges) {
  ThreadPool pool(2);
  model::Model m = model::testutil::load_tiny_model(testing::temp_dir("sq_balance"), {.tied = true}, pool);
  const auto before = input_absmax(m, pool);
  {
    // Unbalanced to start with (else the check below would prove nothing).
    const auto& act = before.at({0, model::TensorRole::kAttnQ});
    const Tensor& wq = m.layers[0].wq.dense();
    double worst = 0;
    for (size_t j = 0; j < act.size(); ++j) {
      float wmax = 0;
      for (int64_t i = 0; i < wq.dim(0); ++i) wmax = std::max(wmax, std::abs(wq.f32()[i * wq.dim(1) + int64_t(j)]));
      worst = std::max(worst, std::abs(double(act[j]) - wmax) / wmax);
    }
    EXPECT_GT(worst, 0.5);
  }
  // Layer 0 only: its inputs do not depend on other folds (layer 1's inputs change with layer 0's
  // rounding, slightly). Both norm-produced groups and the down projection; down first, because
  // its fold rescales the rows of up, a consumer of the gate group (folding gate first would
  // unbalance gate/up's columns afterwards).
  for (const auto group : {model::TensorRole::kAttnQ, model::TensorRole::kMlpDown, model::TensorRole::kMlpGate}) {
    const auto roles = model::input_consumers(group);
    std::vector<const Tensor*> ws;
    for (const auto r : roles) ws.push_back(&m.layers[0].linear(r).dense());
    const auto& absmax = before.at({0, group});
    const auto s = smoothquant_scales(ws, absmax, 0.5);
    model::fold_input_scales(m.layers[0], m.config, 0, group, s);
  }
  const auto after = input_absmax(m, pool);
  for (const auto group : {model::TensorRole::kAttnQ, model::TensorRole::kMlpGate, model::TensorRole::kMlpDown}) {
    const auto& act = after.at({0, group});
    const auto roles = model::input_consumers(group);
    double worst = 0;
    for (size_t j = 0; j < act.size(); ++j) {
      float wmax = 0;
      for (const auto r : roles) {
        const Tensor& w = m.layers[0].linear(r).dense();
        for (int64_t i = 0; i < w.dim(0); ++i) wmax = std::max(wmax, std::abs(w.f32()[i * w.dim(1) + int64_t(j)]));
      }
      // max|X_j / s_j| = max|W_j · s_j| (α = 0.5).
      worst = std::max(worst, std::abs(double(act[j]) - wmax) / wmax);
    }
    EXPECT_LT(worst, 1e-4) << model::role_name(group);
  }
  // The folds kept the function (logits) while changing what the linears see.
  EXPECT_NE(before.at({0, model::TensorRole::kAttnQ}), after.at({0, model::TensorRole::kAttnQ}));
}

}  // namespace
}  // namespace calq::quant
