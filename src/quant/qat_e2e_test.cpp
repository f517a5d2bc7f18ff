// qat-e2e (qat_e2e.h) on the 2-layer tiny model (hidden 32, intermediate 48), started from round to
// nearest in int3: training the step sizes (codes frozen) and, with train_weights, the weights
// lowers the KL to the float model's logits; the written tensors dequantize bit for bit to the
// fake-quantized weights of the final forward, and the runtime's logits of the written model (in
// memory, and written to a GGUF file and read back) equal
// that forward's to 1e-5 relative; 1 and 2 threads give the same bytes; a NaN stops the run with an
// Error naming the step and a parameter; bad options are Errors naming the key.
#include "quant/qat_e2e.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "core/error.h"
#include "formats/format.h"
#include "grad/model_grad.h"
#include "model/architecture.h"
#include "model/forward.h"
#include "model/gguf_export.h"
#include "model/gguf_model.h"
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

const std::vector<float>& linear_of(const grad::LayerParams<float>& p, TensorRole role) {
  for (const auto& [r, v] : p.tensors())
    if (r == role) return *v;
  ADD_FAILURE() << "no tensor of that role";
  return p.wq;
}

const QatE2eOptions kTrain{.epochs = 8, .lr = 5e-3, .lr_weights = 2e-3, .batch = 2, .warmup = 0.1};

void expect_trained_and_exact(const QatE2eOptions& o, double max_ratio) {
  ThreadPool pool(2);
  const Problem p = make_problem(pool);
  const QatE2eResult r = qat_e2e(p.target(), o, pool);
  EXPECT_EQ(r.steps, o.epochs * (kSamples / o.batch));
  EXPECT_EQ(r.curve.size(), static_cast<size_t>(r.steps));
  ASSERT_TRUE(r.trained && r.trained_kept) << r.loss_start << " -> " << r.loss_trained;
  EXPECT_LT(r.loss_trained, max_ratio * r.loss_start);

  // What is written is what was trained: bit for bit.
  ASSERT_EQ(r.weights.size(), 14u);
  model::Model written = p.quantized;
  for (const auto& w : r.weights) {
    std::vector<float> deq(static_cast<size_t>(w.tensor.rows * w.tensor.cols));
    w.tensor.dequantize(pool, deq.data());
    const std::vector<float>& fq = linear_of(r.fake_quantized.layers[static_cast<size_t>(w.layer)], w.role);
    ASSERT_EQ(deq.size(), fq.size());
    EXPECT_EQ(std::memcmp(deq.data(), fq.data(), deq.size() * sizeof(float)), 0);
    written.layers[static_cast<size_t>(w.layer)].linear(w.role) = w.tensor;
  }
  // The runtime's logits of the written model, in memory and as a GGUF file read back (what `calq
  // eval` runs), vs the training engine's fake-quantized forward.
  const std::vector<int32_t> ids = model::testutil::test_token_ids(2 * kSeq, written.config.vocab_size);
  const std::vector<float> trained = grad::model_logits<float>(pool, written.config, r.fake_quantized, ids, 2 * kSeq);
  const auto expect_same = [&](const model::Model& m, const char* what) {
    const Tensor runtime = model::forward(m, ids, pool);
    ASSERT_EQ(static_cast<size_t>(runtime.numel()), trained.size()) << what;
    double max_diff = 0, max_abs = 0;
    for (size_t i = 0; i < trained.size(); ++i) {
      max_diff = std::max(max_diff, std::fabs(static_cast<double>(trained[i]) - runtime.f32()[i]));
      max_abs = std::max(max_abs, std::fabs(static_cast<double>(runtime.f32()[i])));
    }
    EXPECT_LE(max_diff, 1e-5 * max_abs) << what;
  };
  expect_same(written, "in memory");
  const auto file = calq::testing::temp_dir("qat_e2e_written") / "written.gguf";
  written.source.clear();  // no tokenizer to embed (the tiny model has none)
  model::write_gguf_model(written, file, {}, pool);
  expect_same(model::load_gguf_model(file, pool), "written to a GGUF file and read back");
}

TEST(QatE2e, StepSizesWithFrozenCodesLowerTheKlAndWriteWhatWasTrained) { expect_trained_and_exact(kTrain, 0.95); }

TEST(QatE2e, TrainedWeightsLowerTheKlAndWriteWhatWasTrained) {
  QatE2eOptions o = kTrain;
  o.train_weights = true;
  o.cache_teacher = false;
  expect_trained_and_exact(o, 0.95);
}

TEST(QatE2e, SameBytesForAnyThreadCountAndWithoutTheTeacherCache) {
  ThreadPool one(1), two(2);
  const Problem p = make_problem(two);
  const QatE2eResult a = qat_e2e(p.target(), kTrain, one);
  QatE2eOptions o = kTrain;
  o.cache_teacher = false;
  const QatE2eResult b = qat_e2e(p.target(), o, two);
  ASSERT_EQ(a.weights.size(), b.weights.size());
  ASSERT_FALSE(a.weights.empty());
  for (size_t i = 0; i < a.weights.size(); ++i) {
    const auto& x = a.weights[i].tensor.bytes;
    const auto& y = b.weights[i].tensor.bytes;
    EXPECT_TRUE(std::equal(x.begin(), x.end(), y.begin(), y.end()));
  }
  EXPECT_EQ(a.curve, b.curve);
}

// A student equal to the teacher (every linear kept float) has nothing to train.
TEST(QatE2e, NothingToTrainKeepsTheModel) {
  ThreadPool pool(2);
  Problem p = make_problem(pool);
  for (auto& l : p.linears) l.format = nullptr;
  p.quantized = p.teacher;
  const QatE2eResult r = qat_e2e(p.target(), kTrain, pool);
  EXPECT_FALSE(r.trained);
  EXPECT_TRUE(r.weights.empty());
  EXPECT_NEAR(r.loss_start, 0.0, 1e-9);
}

TEST(QatE2e, NonFiniteLossIsAnErrorNamingStepAndParameter) {
  ThreadPool pool(2);
  Problem p = make_problem(pool);
  // A NaN in the teacher's final norm: its logits, the loss and the gradients are NaN.
  Tensor norm = p.teacher.final_norm.to_f32();  // an owned copy
  norm.mutable_f32()[3] = std::numeric_limits<float>::quiet_NaN();
  p.teacher.final_norm = std::move(norm);
  const std::string e = error_of([&] { (void)qat_e2e(p.target(), kTrain, pool); });
  EXPECT_NE(e.find("qat-e2e: step 1"), std::string::npos) << e;
  EXPECT_NE(e.find("blk.0.attn_q.weight"), std::string::npos) << e;
}

TEST(QatE2e, BadOptionsAndSamplesAreErrors) {
  for (const auto& [key, value] : std::vector<std::pair<std::string, nlohmann::json>>{
           {"epochs", 0}, {"lr", 0.0}, {"lr_weights", -1e-4}, {"batch", 0}, {"warmup", 0.6}, {"train_weights", 1}}) {
    nlohmann::json step = {{"method", "qat-e2e"}};
    step[key] = value;
    const std::string e = error_of([&] { (void)recipe_from_json(nlohmann::json::array({step}), "r.json"); });
    EXPECT_NE(e.find("qat-e2e option '" + key + "'"), std::string::npos) << e;
  }
  EXPECT_EQ(parse_method_chain("gptq+qat-block+qat-e2e").to_string(), "gptq+qat-block+qat-e2e");
  EXPECT_EQ(parse_method_chain("qat-e2e").to_string(), "rtn+qat-e2e");
  const std::string e = error_of([] { (void)parse_method_chain("qat-e2e+qat-block"); });
  EXPECT_NE(e.find("'qat-block' comes after the model reconstruction 'qat-e2e'"), std::string::npos) << e;
  ThreadPool pool(2);
  Problem p = make_problem(pool);
  p.samples[1].pop_back();
  const std::string s = error_of([&] { (void)qat_e2e(p.target(), kTrain, pool); });
  EXPECT_NE(s.find("calibration sample 1 has 15 tokens"), std::string::npos) << s;
}

}  // namespace
}  // namespace calq::quant
