// lora_finetune (lora_finetune.h) on the 2-layer tiny model with 4-bit linears: the validation loss
// falls, the installed adapters reproduce the last validation through the runtime's forward, the
// base is untouched, 1 and 2 threads give the same bytes; bad options, too little text and a
// non-finite loss are Errors that leave the model without adapters; target names.
#include "quant/lora_finetune.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "core/error.h"
#include "formats/format.h"
#include "formats/qtensor.h"
#include "model/forward.h"
#include "model/tiny_model_testutil.h"
#include "support/error_of.h"
#include "support/shared_dir.h"

namespace calq::quant {
namespace {

using calq::testing::error_of;
using model::TensorRole;

constexpr int64_t kSeq = 16;

// The tiny model with every linear in a 4-bit format (nf4-dq where the row fits its blocks).
model::Model quantized_tiny(ThreadPool& pool) {
  model::Model m = model::testutil::load_tiny_model(calq::testing::temp_dir("lora_finetune"), {.tied = true}, pool);
  const Format& nf4 = format_by_name("nf4-dq");
  const Format& int4 = format_by_name("int4-pc-asym");
  for (auto& layer : m.layers) {
    for (const TensorRole role : model::kLayerLinearRoles) {
      model::LinearWeight& w = layer.linear(role);
      const Format& f = nf4.can_store(w.rows(), w.cols()) ? nf4 : int4;
      w = QuantizedTensor::quantize(pool, f, w.dense().f32(), w.rows(), w.cols());
    }
  }
  return m;
}

// A learnable stream: a fixed sequence of 13 tokens repeated, from `offset` on.
std::vector<int32_t> pattern_ids(int64_t n, int64_t offset) {
  const int32_t cycle[] = {5, 17, 3, 41, 29, 8, 56, 12, 33, 2, 47, 21, 38};
  std::vector<int32_t> ids;
  for (int64_t t = 0; t < n; ++t) ids.push_back(cycle[(t + offset) % 13]);
  return ids;
}

const LoraFinetuneOptions kOptions{.rank = 4, .alpha = 8, .targets = {}, .lr = 1e-2, .steps = 24, .batch = 2,
                                   .seq_len = kSeq, .eval_every = 8, .eval_windows = 2, .seed = 3};

LoraFinetuneOptions options_with(std::vector<TensorRole> targets) {
  LoraFinetuneOptions o = kOptions;
  o.targets = std::move(targets);
  return o;
}

std::vector<TensorRole> all_roles() {
  return {std::begin(model::kLayerLinearRoles), std::end(model::kLayerLinearRoles)};
}

// Mean next-token cross-entropy of the runtime's logits on one window.
double runtime_loss(const model::Model& m, std::span<const int32_t> ids, ThreadPool& pool) {
  const Tensor logits = model::forward(m, ids, pool);
  const int64_t v = m.config.vocab_size;
  double sum = 0;
  for (size_t t = 0; t + 1 < ids.size(); ++t) {
    const float* row = logits.f32() + static_cast<int64_t>(t) * v;
    double mx = row[0], z = 0;
    for (int64_t j = 1; j < v; ++j) mx = std::max(mx, static_cast<double>(row[j]));
    for (int64_t j = 0; j < v; ++j) z += std::exp(row[j] - mx);
    sum += mx + std::log(z) - row[ids[t + 1]];
  }
  return sum / static_cast<double>(ids.size() - 1);
}

TEST(LoraFinetune, ValidationLossFallsAndTheRuntimeSeesTheAdapters) {
  ThreadPool pool(2);
  model::Model m = quantized_tiny(pool);
  const model::Model before = m;
  const auto train = pattern_ids(8 * kSeq, 0), val = pattern_ids(2 * kSeq, 5);
  LoraFinetuneOptions o = options_with(all_roles());
  const LoraFinetuneResult r = lora_finetune(m, train, val, o, pool);
  EXPECT_EQ(r.steps, 24);
  EXPECT_EQ(r.tokens, 24 * 2 * kSeq);
  EXPECT_EQ(r.train_windows, 8);
  ASSERT_EQ(r.validation.size(), 4u);  // before, after 8, 16, 24
  EXPECT_EQ(r.validation.back().step, 24);
  EXPECT_LT(r.validation.back().loss, 0.7 * r.validation.front().loss)
      << r.validation.front().loss << " -> " << r.validation.back().loss;
  // 2 layers × 7 linears × rank 4 × (in + out).
  int64_t expected = 0;
  for (const TensorRole role : model::kLayerLinearRoles)
    expected += 2 * 4 * (m.layers[0].linear(role).rows() + m.layers[0].linear(role).cols());
  EXPECT_EQ(r.adapter_parameters, expected);

  ASSERT_TRUE(m.has_adapters());
  ASSERT_NE(m.layers[1].adapter(TensorRole::kMlpDown), nullptr);
  EXPECT_EQ(m.layers[1].adapter(TensorRole::kMlpDown)->rank(), 4);
  EXPECT_DOUBLE_EQ(m.layers[1].adapter(TensorRole::kMlpDown)->alpha(), 8.0);
  // The base is untouched.
  const auto& qa = m.layers[0].linear(TensorRole::kAttnQ).quantized().bytes;
  const auto& qb = before.layers[0].linear(TensorRole::kAttnQ).quantized().bytes;
  ASSERT_EQ(qa.size(), qb.size());
  EXPECT_EQ(std::memcmp(qa.data(), qb.data(), qa.size()), 0);
  // The runtime forward with the installed adapters gives the last validation (mean over 2 windows).
  const double runtime = 0.5 * (runtime_loss(m, std::span(val).first(kSeq), pool) +
                                runtime_loss(m, std::span(val).subspan(kSeq, kSeq), pool));
  EXPECT_NEAR(runtime, r.validation.back().loss, 1e-4 * r.validation.back().loss);
  EXPECT_GT(std::abs(runtime_loss(before, std::span(val).first(kSeq), pool) - runtime), 0.1);
}

TEST(LoraFinetune, SameBytesForOneAndTwoThreads) {
  std::vector<std::vector<float>> adapters;
  std::vector<std::vector<double>> curves;
  for (const size_t threads : {1, 2}) {
    ThreadPool pool(threads);
    model::Model m = quantized_tiny(pool);
    LoraFinetuneOptions o = options_with({TensorRole::kAttnQ, TensorRole::kAttnV, TensorRole::kMlpDown});
    o.dropout = 0.1;
    o.steps = 6;
    const LoraFinetuneResult r = lora_finetune(m, pattern_ids(8 * kSeq, 0), pattern_ids(2 * kSeq, 5), o, pool);
    std::vector<float> all;
    for (const auto& layer : m.layers) {
      for (const TensorRole role : model::kLayerLinearRoles) {
        const model::LoraAdapter* a = layer.adapter(role);
        if (a == nullptr) continue;
        all.insert(all.end(), a->a().f32(), a->a().f32() + a->a().numel());
        all.insert(all.end(), a->b().f32(), a->b().f32() + a->b().numel());
      }
    }
    EXPECT_EQ(m.layers[0].adapter(TensorRole::kAttnK), nullptr);
    adapters.push_back(std::move(all));
    curves.push_back(r.curve);
  }
  ASSERT_EQ(adapters[0].size(), adapters[1].size());
  EXPECT_EQ(std::memcmp(adapters[0].data(), adapters[1].data(), adapters[0].size() * sizeof(float)), 0);
  EXPECT_EQ(curves[0], curves[1]);
}

TEST(LoraFinetune, BadInputsAreErrorsAndLeaveNoAdapters) {
  ThreadPool pool(2);
  model::Model m = quantized_tiny(pool);
  const auto train = pattern_ids(8 * kSeq, 0), val = pattern_ids(2 * kSeq, 5);
  const auto run = [&](const LoraFinetuneOptions& o, std::span<const int32_t> tr, std::span<const int32_t> va) {
    return error_of([&] { lora_finetune(m, tr, va, o, pool); });
  };
  LoraFinetuneOptions o = options_with(all_roles());
  o.rank = 17;  // k and v are [16, 32]
  EXPECT_NE(run(o, train, val).find("'rank' 17 is larger than layer 0 attn_k [16, 32] allows (at most 16)"),
            std::string::npos) << run(o, train, val);
  o = options_with({});
  EXPECT_NE(run(o, train, val).find("option 'targets' names no linear"), std::string::npos);
  o = options_with(all_roles());
  EXPECT_NE(run(o, {}, val).find("the training text has 0 tokens, fewer than one window of seq_len 16"),
            std::string::npos);
  EXPECT_NE(run(o, train, std::span(val).first(5)).find("validation text has 5 tokens"), std::string::npos);
  o.dropout = 1;
  EXPECT_NE(run(o, train, val).find("option 'dropout'"), std::string::npos);
  // A learning rate that blows the adapters up: a non-finite loss names its step.
  o = options_with(all_roles());
  o.lr = 1e30;
  o.max_grad_norm = 0;
  o.warmup = 0;
  const std::string nan = run(o, train, val);
  EXPECT_NE(nan.find("lora: step "), std::string::npos) << nan;
  EXPECT_NE(nan.find("loss is"), std::string::npos) << nan;
  EXPECT_FALSE(m.has_adapters());
}

TEST(LoraFinetune, TargetNames) {
  const std::vector<std::string> peft = {"v_proj", "q_proj", "q"};
  EXPECT_EQ(parse_lora_targets(peft), (std::vector<TensorRole>{TensorRole::kAttnQ, TensorRole::kAttnV}));
  const std::vector<std::string> mixed = {"ffn_down", "gate", "o"};
  EXPECT_EQ(parse_lora_targets(mixed),
            (std::vector<TensorRole>{TensorRole::kAttnOut, TensorRole::kMlpGate, TensorRole::kMlpDown}));
  const std::vector<std::string> all = {"all"};
  EXPECT_EQ(parse_lora_targets(all).size(), 7u);
  const std::vector<std::string> bad = {"q", "qkv"};
  EXPECT_NE(error_of([&] { parse_lora_targets(bad); }).find("'qkv' matches no linear"), std::string::npos);
  EXPECT_NE(error_of([&] { parse_lora_targets({}); }).find("names no linear"), std::string::npos);
}

}  // namespace
}  // namespace calq::quant
