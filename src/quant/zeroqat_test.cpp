// zeroqat (zeroqat.h) on the 2-layer tiny model (hidden 32, intermediate 48), started from round to
// nearest in int3: zeroth-order training of the step sizes (codes frozen), with latent weights, and
// on cross-entropy lowers the loss over the samples; what is written is what the last evaluation
// measured (the test recomputes it from the written tensors); frozen codes stay the start's; 1 and
// 2 threads give the same bytes; the direction generator is counter-based; a diverging rate is an
// Error naming the step and the tensor; bad options are Errors naming the key.
#include "quant/zeroqat.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "core/error.h"
#include "formats/format.h"
#include "grad/fake_quant_int.h"
#include "grad/loss.h"
#include "model/architecture.h"
#include "model/forward.h"
#include "model/tiny_model_testutil.h"
#include "quant/model_reconstruction_testutil.h"
#include "quant/recipe.h"
#include "support/error_of.h"
#include "support/shared_dir.h"

namespace calq::quant {
namespace {

using calq::testing::error_of;
using model::TensorRole;

using namespace e2e_testutil;

// The loss the contract states, recomputed here from a model: mean over the samples of the mean KL
// over positions (or the next-token cross-entropy).
double loss_of(const Problem& p, const model::Model& m, bool cross_entropy, ThreadPool& pool) {
  const int64_t vocab = m.config.vocab_size;
  double sum = 0;
  for (const auto& s : p.samples) {
    const Tensor student = model::forward(m, s, pool);
    if (cross_entropy) {
      sum += grad::cross_entropy<float>(pool, student.f32(), kSeq, vocab, grad::next_token_targets(s, kSeq), nullptr);
    } else {
      const Tensor teacher = model::forward(p.teacher, s, pool);
      sum += grad::kl_divergence<float>(pool, student.f32(), teacher.f32(), kSeq, vocab, nullptr);
    }
  }
  return sum / static_cast<double>(p.samples.size());
}

const ZeroQatOptions kTrain{.steps = 300, .batch = 2, .directions = 2, .eps = 1e-2, .lr = 2e-3};

ZeroQatResult expect_trained(const ZeroQatOptions& o, double max_ratio, model::Model* written_out = nullptr) {
  ThreadPool pool(2);
  const Problem p = make_problem(pool);
  const ZeroQatResult r = zeroqat(p.target(), o, pool);
  EXPECT_EQ(r.steps, o.steps);
  EXPECT_EQ(r.curve.size(), static_cast<size_t>(o.steps));
  EXPECT_NEAR(r.loss_start, loss_of(p, p.quantized, o.cross_entropy, pool), 1e-12 * r.loss_start);
  EXPECT_TRUE(r.trained && r.trained_kept) << r.loss_start << " -> " << r.loss_trained;
  EXPECT_LT(r.loss_trained, max_ratio * r.loss_start) << r.loss_start << " -> " << r.loss_trained;
  EXPECT_EQ(r.weights.size(), 14u);
  model::Model written = p.quantized;
  for (const auto& w : r.weights) written.layers[static_cast<size_t>(w.layer)].linear(w.role) = w.tensor;
  // What is written is what the guard measured.
  EXPECT_NEAR(r.loss_trained, loss_of(p, written, o.cross_entropy, pool), 1e-12 * r.loss_start);
  if (written_out != nullptr) *written_out = std::move(written);
  return r;
}

// Codes q − z of an int tensor, from its bytes' parameters.
std::vector<int> codes_of(const QuantizedTensor& t, ThreadPool& pool) {
  const grad::IntLayout l = grad::int_layout(*t.format);
  const std::vector<QuantParams> params = grad::read_int_params(*t.format, t.bytes, t.rows, t.cols);
  std::vector<float> deq(static_cast<size_t>(t.rows * t.cols));
  t.dequantize(pool, deq.data());
  std::vector<int> k(deq.size());
  for (int64_t r = 0; r < t.rows; ++r)
    for (int64_t c = 0; c < t.cols; ++c) {
      const QuantParams& q = params[static_cast<size_t>(l.group_of(r, c, t.cols))];
      k[static_cast<size_t>(r * t.cols + c)] = q.scale > 0 ? static_cast<int>(std::nearbyint(deq[static_cast<size_t>(r * t.cols + c)] / q.scale)) : 0;
    }
  return k;
}

TEST(ZeroQat, StepSizesWithFrozenCodesLowerTheKlAndKeepTheCodes) {
  model::Model written;
  expect_trained(kTrain, 0.9, &written);
  ThreadPool pool(2);
  const Problem p = make_problem(pool);
  bool scales_moved = false;
  for (int64_t l = 0; l < 2; ++l)
    for (const TensorRole role : model::kLayerLinearRoles) {
      const QuantizedTensor& a = p.quantized.layers[static_cast<size_t>(l)].linear(role).quantized();
      const QuantizedTensor& b = written.layers[static_cast<size_t>(l)].linear(role).quantized();
      EXPECT_EQ(codes_of(a, pool), codes_of(b, pool)) << "layer " << l << " " << model::role_name(role);
      scales_moved = scales_moved || std::memcmp(a.bytes.data(), b.bytes.data(), a.bytes.size()) != 0;
    }
  EXPECT_TRUE(scales_moved);
}

TEST(ZeroQat, SharedMultipliersScaleEveryGroupOfARowOrTensorAlike) {
  ThreadPool pool(2);
  for (const int64_t granularity : {1, 2}) {
    ZeroQatOptions o = kTrain;
    o.granularity = granularity;
    o.lr = 2e-2;
    model::Model written;
    expect_trained(o, granularity == 1 ? 0.9 : 0.99, &written);  // measured 0.67 and 0.96
    const Problem p = make_problem(pool);
    for (int64_t l = 0; l < 2; ++l)
      for (const TensorRole role : model::kLayerLinearRoles) {
        const QuantizedTensor& a = p.quantized.layers[static_cast<size_t>(l)].linear(role).quantized();
        const QuantizedTensor& b = written.layers[static_cast<size_t>(l)].linear(role).quantized();
        const std::vector<QuantParams> pa = grad::read_int_params(*a.format, a.bytes, a.rows, a.cols);
        const std::vector<QuantParams> pb = grad::read_int_params(*b.format, b.bytes, b.rows, b.cols);
        const size_t per = granularity == 2 ? pa.size() : pa.size() / static_cast<size_t>(a.rows);
        for (size_t g0 = 0; g0 < pa.size(); g0 += per)
          for (size_t g = g0; g < g0 + per; ++g)  // the same factor, up to the fp16 scales' rounding
            EXPECT_NEAR(pb[g].scale / pa[g].scale, pb[g0].scale / pa[g0].scale, 2e-3)
                << "granularity " << granularity << " layer " << l << " " << model::role_name(role) << " group " << g;
      }
  }
}

TEST(ZeroQat, TrainedWeightsLowerTheKl) {
  ZeroQatOptions o = kTrain;
  o.steps = 150;
  o.directions = 4;
  o.train_weights = true;
  o.lr_weights = 1e-2;
  // The latent weights' trajectory is chaotic (a code flips or not): 0.747 in the release build,
  // 0.886 in the sanitizer build (-O1, last-bit differences) on an AMD EPYC. What is asserted: a 5 %
  // lower KL, written as measured.
  expect_trained(o, 0.95);
}

TEST(ZeroQat, CrossEntropyLowersTheCrossEntropy) {
  ZeroQatOptions o = kTrain;
  o.cross_entropy = true;
  expect_trained(o, 0.995);
}

TEST(ZeroQat, SameBytesForAnyThreadCount) {
  ThreadPool one(1), two(2);
  const Problem p = make_problem(two);
  ZeroQatOptions o = kTrain;
  o.steps = 20;
  o.train_weights = true;
  const ZeroQatResult a = zeroqat(p.target(), o, one);
  const ZeroQatResult b = zeroqat(p.target(), o, two);
  ASSERT_EQ(a.curve, b.curve);
  ASSERT_EQ(a.weights.size(), b.weights.size());
  for (size_t i = 0; i < a.weights.size(); ++i) {
    ASSERT_EQ(a.weights[i].tensor.bytes.size(), b.weights[i].tensor.bytes.size());
    EXPECT_EQ(std::memcmp(a.weights[i].tensor.bytes.data(), b.weights[i].tensor.bytes.data(),
                          a.weights[i].tensor.bytes.size()), 0);
  }
}

TEST(ZeroQat, DirectionsAreCounterBasedStandardNormals) {
  // The same value whoever asks and in whatever order; other steps, directions and seeds differ.
  EXPECT_EQ(zeroqat_normal(3, 7, 1, 12345), zeroqat_normal(3, 7, 1, 12345));
  EXPECT_NE(zeroqat_normal(3, 7, 1, 12345), zeroqat_normal(3, 8, 1, 12345));
  EXPECT_NE(zeroqat_normal(3, 7, 1, 12345), zeroqat_normal(3, 7, 0, 12345));
  EXPECT_NE(zeroqat_normal(3, 7, 1, 12345), zeroqat_normal(4, 7, 1, 12345));
  // Moments of 2^17 values: mean 0 ± 0.01 (≈ 3.6 standard errors), variance 1 ± 0.02, and the
  // fraction beyond 2σ 4.55 % ± 0.3 %.
  constexpr int kN = 1 << 17;
  double sum = 0, sq = 0;
  int beyond = 0;
  for (int i = 0; i < kN; ++i) {
    const double x = zeroqat_normal(0, 0, 0, static_cast<uint64_t>(i));
    sum += x;
    sq += x * x;
    beyond += std::fabs(x) > 2 ? 1 : 0;
  }
  EXPECT_NEAR(sum / kN, 0.0, 0.01);
  EXPECT_NEAR(sq / kN, 1.0, 0.02);
  EXPECT_NEAR(static_cast<double>(beyond) / kN, 0.0455, 0.003);
}

TEST(ZeroQat, AHugeRateKeepsStepSizesWithinTheirBoundsAndTheGuardKeepsTheStart) {
  ThreadPool pool(2);
  const Problem p = make_problem(pool);
  ZeroQatOptions o = kTrain;
  o.steps = 20;
  o.lr = 1;
  const ZeroQatResult r = zeroqat(p.target(), o, pool);
  EXPECT_TRUE(r.trained);
  EXPECT_GT(r.loss_trained, r.loss_start);  // thrown about: worse, so not kept
  EXPECT_FALSE(r.trained_kept);
  EXPECT_TRUE(r.weights.empty());
}

TEST(ZeroQat, ANonFiniteLossIsAnError) {
  ThreadPool pool(2);
  Problem p = make_problem(pool);
  p.teacher.final_norm = Tensor::zeros(DType::kF32, p.teacher.final_norm.shape());
  p.teacher.final_norm.mutable_f32()[3] = std::numeric_limits<float>::quiet_NaN();
  const std::string e = error_of([&] { zeroqat(p.target(), kTrain, pool); });
  EXPECT_NE(e.find("zeroqat: the loss of the start over the calibration samples is not finite"), std::string::npos)
      << e;
}

TEST(ZeroQat, SamplesOfUnequalLengthAreAnError) {
  ThreadPool pool(2);
  Problem p = make_problem(pool);
  p.samples[1].pop_back();
  EXPECT_NE(error_of([&] { zeroqat(p.target(), kTrain, pool); }).find("calibration sample 1 has 15 tokens"),
            std::string::npos);
  p.samples.clear();
  EXPECT_NE(error_of([&] { zeroqat(p.target(), kTrain, pool); }).find("needs calibration samples"), std::string::npos);
}

TEST(ZeroQat, RecipeOptionsAreChecked) {
  const auto recipe = [](const char* zeroqat) {
    return recipe_from_json(nlohmann::json::parse(std::string(R"({"steps": [{"method": "gptq"}, )") + zeroqat + "]}"),
                            "r");
  };
  EXPECT_NE(error_of([&] { recipe(R"({"method": "zeroqat", "eps": 0})"); }).find("eps"), std::string::npos);
  EXPECT_NE(error_of([&] { recipe(R"({"method": "zeroqat", "directions": 0})"); }).find("directions"),
            std::string::npos);
  const Recipe r = recipe(R"({"method": "zeroqat", "steps": 3})");
  EXPECT_EQ(r.steps.back().options.get<ZeroQatOptions>().steps, 3);
}

}  // namespace
}  // namespace calq::quant
