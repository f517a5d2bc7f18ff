// autoround (autoround.h) on layer 0 of the tiny model, started from round to nearest: it lowers the
// layer's output MSE for int formats (with and without range factors) and GGUF block types; what it
// writes is what it trained (reconstruction_testutil.h); the same bytes for any thread count; the
// guard keeps a start that cannot be improved on; a NaN, an unsupported format and bad options are
// errors naming the layer, step, tensor or key.
#include "quant/autoround.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <limits>
#include <string>
#include <vector>

#include "core/error.h"
#include "grad/fake_quant_int.h"
#include "grad/layer.h"
#include "quant/recipe.h"
#include "quant/reconstruction_testutil.h"
#include "support/error_of.h"

namespace calq::quant {
namespace {

using calq::testing::error_of;
using namespace calq::quant::testutil;

const AutoRoundOptions kTrain{.iters = 40, .batch = 2};

// max_ratio: the trained loss over the start's (measured, 40 steps: int3 asym 0.22, sym 0.19, asym
// without range factors 0.26, q4_0 0.22).

AutoRoundResult expect_trained_and_exact(const std::string& group_format, const std::string& row_format,
                                         double max_ratio, const AutoRoundOptions& o = kTrain) {
  ThreadPool pool(2);
  const model::Model& m = tiny_model();
  const Problem p = make_problem(group_format, row_format, pool);
  const AutoRoundResult r = autoround(p.target(m), o, pool);
  EXPECT_EQ(r.steps, o.iters);
  EXPECT_EQ(r.curve.size(), static_cast<size_t>(o.iters));
  EXPECT_GE(r.best_step, 0);
  EXPECT_LT(r.best_step, o.iters);
  EXPECT_TRUE(r.trained && r.trained_kept) << r.loss_start << " -> " << r.loss_trained;
  EXPECT_LT(r.loss_trained, max_ratio * r.loss_start) << group_format;
  EXPECT_NEAR(r.loss_start, runtime_mse(m, p, p.quantized, pool), 1e-5 * r.loss_start);
  if (r.trained_kept) expect_written_is_trained(m, p, r, pool, group_format);
  return r;
}

// The int format's group parameters as stored in the written (or the start's) tensor of `role`.
std::vector<QuantParams> stored_params(const QuantizedTensor& t) {
  return grad::read_int_params(*t.format, t.bytes, t.rows, t.cols);
}

TEST(AutoRound, IntFormatLowersTheOutputErrorAndWritesWhatWasTrained) {
  expect_trained_and_exact("int3-g32-asym", "int3-pc-asym", 0.35);
}

TEST(AutoRound, SymmetricIntFormat) { expect_trained_and_exact("int3-g32-sym", "int3-pc-sym", 0.3); }

// Without range factors the stored group scales stay the quantizer's; with them some move, and the
// loss falls further.
TEST(AutoRound, RangeFactorsMoveTheScalesOnlyWhenTrained) {
  ThreadPool pool(2);
  const Problem p = make_problem("int3-g32-asym", "int3-pc-asym", pool);
  AutoRoundOptions o = kTrain;
  o.minmax = false;
  const AutoRoundResult fixed = expect_trained_and_exact("int3-g32-asym", "int3-pc-asym", 0.4, o);
  const AutoRoundResult tuned = expect_trained_and_exact("int3-g32-asym", "int3-pc-asym", 0.35);
  EXPECT_LT(tuned.loss_trained, fixed.loss_trained);
  size_t moved_fixed = 0, moved_tuned = 0, groups = 0;
  for (size_t k = 0; k < fixed.weights.size() && k < tuned.weights.size(); ++k) {
    const auto start = stored_params(p.quantized.linear(fixed.weights[k].first).quantized());
    const auto a = stored_params(fixed.weights[k].second), b = stored_params(tuned.weights[k].second);
    for (size_t g = 0; g < start.size(); ++g) {
      ++groups;
      moved_fixed += a[g].scale != start[g].scale || a[g].zero_point != start[g].zero_point;
      moved_tuned += b[g].scale != start[g].scale || b[g].zero_point != start[g].zero_point;
    }
  }
  EXPECT_GT(groups, 0u);
  EXPECT_EQ(moved_fixed, 0u);
  EXPECT_GT(moved_tuned, 0u);
}

// GGUF block types learn their rounding on the frozen grid (q4_0 where a row holds its 32-blocks).
TEST(AutoRound, GgufBlockFormatLearnsItsRounding) { expect_trained_and_exact("q4_0", "int4-pc-asym", 0.35); }

TEST(AutoRound, FormatWithoutFrozenParametersIsAnError) {
  ThreadPool pool(2);
  const Problem p = make_problem("fp8-e4m3", "fp8-e4m3", pool);
  try {
    (void)autoround(p.target(tiny_model()), kTrain, pool);
    FAIL() << "no error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_EQ(e.kind(), ErrorKind::kUnsupported);
    EXPECT_NE(msg.find("autoround layer 0"), std::string::npos) << msg;
    EXPECT_NE(msg.find("blk.0.attn_q.weight"), std::string::npos) << msg;
    EXPECT_NE(msg.find("fp8-e4m3"), std::string::npos) << msg;
  }
}

TEST(AutoRound, SameBytesForAnyThreadCount) {
  const model::Model& m = tiny_model();
  ThreadPool one(1), two(2);
  const Problem p = make_problem("int3-g32-asym", "int3-pc-asym", two);
  const AutoRoundResult a = autoround(p.target(m), kTrain, one);
  const AutoRoundResult b = autoround(p.target(m), kTrain, two);
  ASSERT_EQ(a.weights.size(), b.weights.size());
  ASSERT_FALSE(a.weights.empty());
  for (size_t i = 0; i < a.weights.size(); ++i) {
    const auto& x = a.weights[i].second.bytes;
    const auto& y = b.weights[i].second.bytes;
    EXPECT_TRUE(std::equal(x.begin(), x.end(), y.begin(), y.end()));
  }
  EXPECT_EQ(a.loss_trained, b.loss_trained);
  EXPECT_EQ(a.curve, b.curve);
  AutoRoundOptions o = kTrain;
  o.seed = 7;  // another sample order: another result
  EXPECT_NE(autoround(p.target(m), o, two).curve, a.curve);
}

// Targets the start reproduces exactly: no training can lower a zero loss, so the start is kept.
TEST(AutoRound, GuardKeepsAStartThatTrainingDoesNotBeat) {
  ThreadPool pool(2);
  const model::Model& m = tiny_model();
  Problem p = make_problem("int3-g32-asym", "int3-pc-asym", pool);
  set_targets_to_start(m, p, kTrain.batch, pool);
  const AutoRoundResult r = autoround(p.target(m), kTrain, pool);
  EXPECT_EQ(r.loss_start, 0.0);
  EXPECT_TRUE(r.trained);
  EXPECT_FALSE(r.trained_kept);
  EXPECT_TRUE(r.weights.empty());
}

TEST(AutoRound, NonFiniteLossIsAnErrorNamingLayerStepAndParameter) {
  ThreadPool pool(2);
  const model::Model& m = tiny_model();
  Problem p = make_problem("int3-g32-asym", "int3-pc-asym", pool);
  p.targets[5] = std::numeric_limits<float>::quiet_NaN();
  const std::string e = error_of([&] { (void)autoround(p.target(m), kTrain, pool); });
  EXPECT_NE(e.find("autoround layer 0"), std::string::npos) << e;
  EXPECT_NE(e.find("step 1"), std::string::npos) << e;
  EXPECT_NE(e.find("blk.0.attn_q.weight"), std::string::npos) << e;
}

TEST(AutoRound, BadOptionsAreErrorsNamingTheKey) {
  for (const auto& [key, value] : std::vector<std::pair<std::string, nlohmann::json>>{
           {"iters", 0}, {"lr", -1e-3}, {"lr", 1.5}, {"lr_minmax", -1.0}, {"batch", 0}, {"minmax", 1},
           {"start_reach", 0.5}}) {
    nlohmann::json step = {{"method", "autoround"}};
    step[key] = value;
    const std::string e = error_of([&] { (void)recipe_from_json(nlohmann::json::array({step}), "r.json"); });
    EXPECT_NE(e.find("autoround option '" + key + "'"), std::string::npos) << e;
  }
  EXPECT_EQ(parse_method_chain("autoround").to_string(), "rtn+autoround");
  EXPECT_EQ(parse_method_chain("gptq+autoround").to_string(), "gptq+autoround");
  EXPECT_EQ(parse_method_chain("gptq+autoround+qat-e2e").to_string(), "gptq+autoround+qat-e2e");
}

}  // namespace
}  // namespace calq::quant
