// Model-level activation quantization: static per-tensor scales from calibration absmax (shared by
// the weights of one input site), set_activation_quant on every linear weight (head optional),
// the per-layer counters after a forward pass, and errors that leave the model untouched.
#include "quant/act_quant.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <vector>

#include "core/error.h"
#include "model/forward.h"
#include "model/tiny_model_testutil.h"
#include "support/random_data.h"
#include "support/shared_dir.h"

namespace calq::quant {
namespace {

using model::ActivationQuant;
using model::TensorRole;
using Kind = ActivationQuant::Kind;

// Statistics with absmax: every site of every layer gets rows drawn with a site-dependent sigma.
calib::CalibrationStats fake_stats(const model::Model& m) {
  calib::CalibrationStats stats(calib::StatSet::parse("absmax"));
  uint32_t seed = 1;
  const auto add = [&](int64_t layer, model::InputSite site, int64_t cols) {
    const auto x = calq::testing::gaussian(static_cast<size_t>(5 * cols), seed, 0.5f * static_cast<float>(seed));
    ++seed;
    stats.observe(layer, site, x.data(), 5, cols);
  };
  const model::ModelConfig& c = m.config;
  for (int64_t l = 0; l < c.num_layers; ++l) {
    add(l, model::InputSite::kAttnIn, c.hidden_size);
    add(l, model::InputSite::kAttnOut, c.q_dim());
    add(l, model::InputSite::kMlpIn, c.hidden_size);
    add(l, model::InputSite::kMlpDown, c.intermediate_size);
  }
  add(-1, model::InputSite::kHeadIn, c.hidden_size);
  return stats;
}

float peak(const calib::CalibrationStats& s, int64_t layer, model::InputSite site) {
  const auto a = s.find(layer, site)->absmax();
  float p = 0;
  for (const float v : a) p = std::max(p, v);
  return p;
}

TEST(ActQuantScales, PerTensorScalesFromAbsmax) {
  ThreadPool pool(2);
  const auto dir = calq::testing::temp_dir("act_quant_scales");
  model::Model m = model::testutil::load_tiny_model(dir / "hf", {.tied = true}, pool);
  const calib::CalibrationStats stats = fake_stats(m);
  EXPECT_EQ(static_int8_scale(stats, 1, model::InputSite::kMlpDown),
            peak(stats, 1, model::InputSite::kMlpDown) / 127.0f);
  EXPECT_EQ(static_int8_scale(stats, 0, model::InputSite::kAttnIn, 0.5f),
            0.5f * peak(stats, 0, model::InputSite::kAttnIn) / 127.0f);

  set_activation_quant(m, {.kind = Kind::kInt8PerTensor, .clip_ratio = 0.9f}, &stats);
  for (int64_t l = 0; l < m.config.num_layers; ++l) {
    const model::LayerWeights& w = m.layers[static_cast<size_t>(l)];
    const float attn_in = 0.9f * peak(stats, l, model::InputSite::kAttnIn) / 127.0f;
    EXPECT_EQ(w.wq.act_quant().kind, Kind::kInt8PerTensor);
    EXPECT_EQ(w.wq.act_quant().scale, attn_in);
    EXPECT_EQ(w.wk.act_quant().scale, attn_in);
    EXPECT_EQ(w.wv.act_quant().scale, attn_in);
    EXPECT_EQ(w.wo.act_quant().scale, 0.9f * peak(stats, l, model::InputSite::kAttnOut) / 127.0f);
    EXPECT_EQ(w.w_gate.act_quant().scale, w.w_up.act_quant().scale);
    EXPECT_EQ(w.w_down.act_quant().scale, 0.9f * peak(stats, l, model::InputSite::kMlpDown) / 127.0f);
  }
  EXPECT_FALSE(m.output.act_quant().enabled());     // head left in float by default
  EXPECT_FALSE(m.embedding.act_quant().enabled());
  std::filesystem::remove_all(dir);
}

TEST(ActQuantScales, CountsAfterForwardAndReset) {
  ThreadPool pool(2);
  const auto dir = calq::testing::temp_dir("act_quant_counts");
  model::Model m = model::testutil::load_tiny_model(dir / "hf", {.tied = true}, pool);
  // A threshold low enough that the tiny model's activations produce some outlier columns.
  set_activation_quant(m, {.kind = Kind::kLlmInt8, .threshold = 0.5f, .include_head = true});
  EXPECT_TRUE(m.output.act_quant().enabled());
  EXPECT_FALSE(m.embedding.act_quant().enabled());  // the tied embedding is not a product input
  const std::vector<int32_t> ids = model::testutil::test_token_ids(9, m.config.vocab_size);
  model::forward(m, ids, pool);
  model::forward(m, ids, pool);
  const std::vector<ActQuantLayerCounts> counts = activation_quant_counts(m);
  ASSERT_EQ(counts.size(), static_cast<size_t>(7 * m.config.num_layers + 1));
  EXPECT_EQ(counts.back().layer, -1);
  EXPECT_EQ(counts[0].role, TensorRole::kAttnQ);
  EXPECT_EQ(counts[6].role, TensorRole::kMlpDown);
  int64_t outliers = 0;
  for (const ActQuantLayerCounts& c : counts) {
    EXPECT_EQ(c.counts.calls, 2);
    EXPECT_EQ(c.counts.rows, 18);
    const int64_t k = c.role == TensorRole::kMlpDown ? m.config.intermediate_size
                      : c.role == TensorRole::kAttnOut ? m.config.q_dim()
                                                       : m.config.hidden_size;
    EXPECT_EQ(c.counts.columns, 2 * k);
    EXPECT_GE(c.outlier_share(), 0.0);
    EXPECT_LE(c.outlier_share(), 1.0);
    outliers += c.counts.outlier_columns;
  }
  EXPECT_GT(outliers, 0);
  // q, k and v see the same input: the same outlier columns.
  EXPECT_EQ(counts[0].counts.outlier_columns, counts[1].counts.outlier_columns);
  EXPECT_EQ(counts[0].counts.outlier_columns, counts[2].counts.outlier_columns);
  reset_activation_quant_counts(m);
  for (const ActQuantLayerCounts& c : activation_quant_counts(m)) EXPECT_EQ(c.counts.calls, 0);
  set_activation_quant(m, {.kind = Kind::kNone, .include_head = true});
  EXPECT_TRUE(activation_quant_counts(m).empty());
  std::filesystem::remove_all(dir);
}

TEST(ActQuantScales, ErrorsLeaveTheModelUntouched) {
  ThreadPool pool(2);
  const auto dir = calq::testing::temp_dir("act_quant_errors");
  model::Model m = model::testutil::load_tiny_model(dir / "hf", {.tied = true}, pool);
  calib::CalibrationStats stats = fake_stats(m);
  const auto message = [&](const ActQuantOptions& o, const calib::CalibrationStats* s) {
    try {
      set_activation_quant(m, o, s);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(message({.kind = Kind::kInt8PerTensor}, nullptr).find("calibration statistics"), std::string::npos);
  EXPECT_NE(message({.kind = Kind::kInt8PerTensor, .clip_ratio = 1.5f}, &stats).find("clip ratio"),
            std::string::npos);
  EXPECT_NE(message({.kind = Kind::kLlmInt8, .threshold = 0.0f}, nullptr).find("threshold"), std::string::npos);
  // The head's site missing: found only when the head is included, after the layers were computed.
  calib::CalibrationStats partial(calib::StatSet::parse("absmax"));
  for (const auto& [layer, site] : stats.sites()) {
    if (layer >= 0) partial.add_site(layer, site, *stats.find(layer, site));
  }
  EXPECT_NE(message({.kind = Kind::kInt8PerTensor, .include_head = true}, &partial).find("output head"),
            std::string::npos);
  const calib::CalibrationStats no_absmax(calib::StatSet::parse("mean_sq"));
  EXPECT_NE(message({.kind = Kind::kInt8PerTensor}, &no_absmax).find("absmax"), std::string::npos);
  for (const model::LayerWeights& l : m.layers) EXPECT_FALSE(l.wq.act_quant().enabled());
  // A site that was all zeros has no scale.
  calib::CalibrationStats zeros(calib::StatSet::parse("absmax"));
  const std::vector<float> z(static_cast<size_t>(3 * m.config.hidden_size), 0.0f);
  zeros.observe(0, model::InputSite::kAttnIn, z.data(), 3, m.config.hidden_size);
  EXPECT_THROW(static_int8_scale(zeros, 0, model::InputSite::kAttnIn), Error);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace calq::quant
