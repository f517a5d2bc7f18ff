// qat-block (qat_block.h) on layer 0 of the tiny model (hidden 32, intermediate 48), started from
// round to nearest: it lowers the layer's output MSE; the written tensors dequantize bit for bit to
// the fake-quantized weights of the final training forward, and the model with them gives the
// logits of the fake-quantized forward (grad/model_grad.h) to 1e-5 relative (issue 17 item 7);
// the guard keeps a start that cannot be improved on; a NaN stops the run with an Error naming the
// layer, the step and a parameter; bad options are Errors naming the key.
#include "quant/qat_block.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "core/error.h"
#include "grad/layer.h"
#include "quant/recipe.h"
#include "quant/reconstruction_testutil.h"
#include "support/error_of.h"

namespace calq::quant {
namespace {

using calq::testing::error_of;
using namespace calq::quant::testutil;

const QatBlockOptions kTrain{.epochs = 6, .lr_weights = 2e-3, .lr_quant = 2e-3, .batch = 2};

// max_ratio: the trained loss over the start's (measured: int3 asym 0.56, sym 0.60, q4_0 0.92).
// out: a copy of the result (losses) for the caller's comparisons.
void expect_trained_and_exact(const std::string& group_format, const std::string& row_format, double max_ratio,
                              const QatBlockOptions& o = kTrain, QatBlockResult* out = nullptr) {
  ThreadPool pool(2);
  const model::Model& m = tiny_model();
  const Problem p = make_problem(group_format, row_format, pool);
  const QatBlockResult r = qat_block(p.target(m), o, pool);
  if (out != nullptr) *out = r;
  EXPECT_EQ(r.steps, o.epochs * (kSamples / o.batch));
  ASSERT_TRUE(r.trained && r.trained_kept) << r.loss_start << " -> " << r.loss_trained;
  EXPECT_LT(r.loss_trained, max_ratio * r.loss_start) << group_format;
  // The start's loss is the weight quantizer's layer through the runtime.
  EXPECT_NEAR(r.loss_start, runtime_mse(m, p, p.quantized, pool), 1e-5 * r.loss_start);

  expect_written_is_trained(m, p, r, pool, group_format);
}

TEST(QatBlock, IntFormatLowersTheOutputErrorAndWritesWhatWasTrained) {
  expect_trained_and_exact("int3-g32-asym", "int3-pc-asym", 0.7);
}

// A warmup and latent weights started at their codes' centres (start_reach 0) train too, to a
// different result than the default start near the cells' edges (measured on this problem, 24
// steps: 0.85× the start's loss centred, 0.57× at the edges: few steps re-round fewer centred weights).
TEST(QatBlock, WarmupAndCentredStart) {
  QatBlockOptions o = kTrain;
  o.warmup = 0.25;
  o.start_reach = 0;
  QatBlockResult centred, edge;
  expect_trained_and_exact("int3-g32-asym", "int3-pc-asym", 0.9, o, &centred);
  o.start_reach = kTrain.start_reach;
  expect_trained_and_exact("int3-g32-asym", "int3-pc-asym", 0.65, o, &edge);
  EXPECT_NE(centred.loss_trained, edge.loss_trained);
  EXPECT_EQ(centred.loss_start, edge.loss_start);  // the same first forward (the quantizer's result)
}

TEST(QatBlock, SymmetricIntFormat) { expect_trained_and_exact("int3-g32-sym", "int3-pc-sym", 0.7); }

// GGUF block types train their latent weights through the frozen grid; fp8 re-quantizes each forward.
TEST(QatBlock, GgufBlockFormatTrainsThroughItsFrozenGrid) { expect_trained_and_exact("q4_0", "fp8-e4m3", 0.95); }

TEST(QatBlock, StepSizesAloneLowerTheError) {
  ThreadPool pool(2);
  const model::Model& m = tiny_model();
  const Problem p = make_problem("int3-g32-asym", "int3-pc-asym", pool);
  QatBlockOptions o = kTrain;
  o.train_weights = false;
  const QatBlockResult r = qat_block(p.target(m), o, pool);
  ASSERT_TRUE(r.trained_kept);
  EXPECT_LT(r.loss_trained, r.loss_start);
  // Without trained weights a non-int format has nothing to train.
  const Problem q = make_problem("q4_0", "fp8-e4m3", pool);
  const QatBlockResult n = qat_block(q.target(m), o, pool);
  EXPECT_FALSE(n.trained);
  EXPECT_TRUE(n.weights.empty());
  EXPECT_EQ(n.loss_trained, n.loss_start);
}

TEST(QatBlock, SameBytesForAnyThreadCount) {
  const model::Model& m = tiny_model();
  ThreadPool one(1), two(2);
  const Problem p = make_problem("int3-g32-asym", "int3-pc-asym", two);
  const QatBlockResult a = qat_block(p.target(m), kTrain, one);
  const QatBlockResult b = qat_block(p.target(m), kTrain, two);
  ASSERT_EQ(a.weights.size(), b.weights.size());
  for (size_t i = 0; i < a.weights.size(); ++i) {
    const auto& x = a.weights[i].second.bytes;
    const auto& y = b.weights[i].second.bytes;
    EXPECT_TRUE(std::equal(x.begin(), x.end(), y.begin(), y.end()));
  }
  EXPECT_EQ(a.loss_trained, b.loss_trained);
  // Another seed takes the samples in another order: other bytes.
  QatBlockOptions o = kTrain;
  o.seed = 7;
  const QatBlockResult c = qat_block(p.target(m), o, two);
  EXPECT_NE(c.loss_trained, a.loss_trained);
}

// Targets the start reproduces exactly: no training can lower a zero loss, so the start is kept.
TEST(QatBlock, GuardKeepsAStartThatTrainingDoesNotBeat) {
  ThreadPool pool(2);
  const model::Model& m = tiny_model();
  Problem p = make_problem("int3-g32-asym", "int3-pc-asym", pool);
  set_targets_to_start(m, p, kTrain.batch, pool);
  const QatBlockResult r = qat_block(p.target(m), kTrain, pool);
  EXPECT_EQ(r.loss_start, 0.0);
  EXPECT_TRUE(r.trained);
  EXPECT_FALSE(r.trained_kept);
  EXPECT_TRUE(r.weights.empty());
  EXPECT_GE(r.loss_trained, r.loss_start);
}

TEST(QatBlock, NonFiniteLossIsAnErrorNamingLayerStepAndParameter) {
  ThreadPool pool(2);
  const model::Model& m = tiny_model();
  Problem p = make_problem("int3-g32-asym", "int3-pc-asym", pool);
  p.targets[5] = std::numeric_limits<float>::quiet_NaN();
  const std::string e = error_of([&] { (void)qat_block(p.target(m), kTrain, pool); });
  EXPECT_NE(e.find("qat-block layer 0"), std::string::npos) << e;
  EXPECT_NE(e.find("step 1"), std::string::npos) << e;
  EXPECT_NE(e.find("blk.0.attn_q.weight"), std::string::npos) << e;
}

TEST(QatBlock, BadOptionsAreErrorsNamingTheKey) {
  for (const auto& [key, value] : std::vector<std::pair<std::string, nlohmann::json>>{
           {"epochs", 0}, {"lr_weights", 0.0}, {"lr_quant", -1e-4}, {"batch", 0}, {"train_weights", 1},
           {"warmup", 0.6}, {"start_reach", 0.5}, {"start_reach", -0.1}}) {
    nlohmann::json step = {{"method", "qat-block"}};
    step[key] = value;
    const std::string e = error_of([&] { (void)recipe_from_json(nlohmann::json::array({step}), "r.json"); });
    EXPECT_NE(e.find("qat-block option '" + key + "'"), std::string::npos) << e;
  }
  // qat-block alone gets rtn before it; it cannot come before the weight quantizer.
  EXPECT_EQ(parse_method_chain("qat-block").to_string(), "rtn+qat-block");
  EXPECT_EQ(parse_method_chain("gptq+qat-block+int8-token").to_string(), "gptq+qat-block+int8-token");
  const std::string e = error_of([] { (void)parse_method_chain("qat-block+gptq"); });
  EXPECT_NE(e.find("'gptq' comes after the layer reconstruction 'qat-block'"), std::string::npos) << e;
}

}  // namespace
}  // namespace calq::quant
