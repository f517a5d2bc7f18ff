// Whole-model backward: every parameter tensor of a 2-layer tiny model against finite differences
// of the full loss (cross-entropy and KL; tied and untied head; a window on one layer; two
// sequences), float logits against the runtime's forward, thread-count independence, and the
// memory estimate against the buffers the engine really allocates.
#include "grad/model_grad.h"

#include <gtest/gtest.h>

#include <cstring>

#include "core/error.h"
#include "grad/grad_check_testutil.h"
#include "model/forward.h"
#include "model/tiny_model_testutil.h"
#include "support/shared_dir.h"

namespace calq::grad {
namespace {

using model::ModelConfig;
using testutil::check_entries;
using testutil::numeric_grad;
using testutil::pick;
using testutil::random_values;
using testutil::rel_error;

ModelConfig two_layer_config(bool tied) {
  ModelConfig c = model::testutil::tiny_config(tied);
  c.vocab_size = 13;
  c.hidden_size = 8;
  c.intermediate_size = 12;
  c.num_heads = 2;
  c.num_kv_heads = 1;
  c.head_dim = 4;
  c.num_layers = 2;
  c.sliding_window = 3;
  c.layer_window = {false, true};
  return c;
}

template <typename T>
ModelParams<T> random_model(const ModelConfig& c, uint32_t seed) {
  ModelParams<T> p = ModelParams<T>::zeros(c);
  for (auto& t : p.tensors()) {
    const bool norm = t.name.ends_with("norm");
    const auto r = random_values(t.values->size(), seed++, norm ? 0.2 : 0.5);
    for (size_t i = 0; i < r.size(); ++i) (*t.values)[i] = static_cast<T>(norm ? 1.0 + r[i] : r[i]);
  }
  return p;
}

void check_model_gradients(bool tied, LossKind kind) {
  ThreadPool pool(2);
  const ModelConfig c = two_layer_config(tied);
  const int64_t seq = 5;
  const std::vector<int32_t> ids = {1, 4, 12, 4, 7, 0, 3, 3, 9, 1};  // two sequences
  ModelParams<double> p = random_model<double>(c, 40);
  const auto teacher = random_values(ids.size() * c.vocab_size, 3, 2.0);
  const LossSpec<double> loss{.kind = kind, .teacher_logits = teacher};
  ModelParams<double> g = ModelParams<double>::zeros(c);
  const double value = model_forward_backward(pool, c, p, ids, seq, loss, g);
  EXPECT_DOUBLE_EQ(value, model_loss(pool, c, p, ids, seq, loss));
  auto f = [&] { return model_loss(pool, c, p, ids, seq, loss); };
  auto params = p.tensors();
  auto grads = g.tensors();
  ASSERT_EQ(params.size(), tied ? 20u : 21u);
  for (size_t t = 0; t < params.size(); ++t) {
    // The embedding: the rows of the tokens used (a few of them), where the gradient lives.
    const auto entries = t == 0 ? std::vector<size_t>{1 * 8 + 2, 3 * 8 + 5, 4 * 8 + 0, 12 * 8 + 7, 9 * 8 + 3}
                                : check_entries(params[t].values->size(), 6, static_cast<uint32_t>(t));
    const auto fd = numeric_grad(*params[t].values, entries, f, 1e-5);
    const auto an = pick(*grads[t].values, entries);
    EXPECT_GT(testutil::norm(fd), 1e-5) << params[t].name;
    EXPECT_LT(rel_error(fd, an), 1e-6) << params[t].name;
  }
}

TEST(GradModel, CrossEntropyGradientsTiedHead) { check_model_gradients(true, LossKind::kCrossEntropy); }
TEST(GradModel, CrossEntropyGradientsUntiedHead) { check_model_gradients(false, LossKind::kCrossEntropy); }
TEST(GradModel, KlGradientsTiedHead) { check_model_gradients(true, LossKind::kKlDivergence); }
TEST(GradModel, KlGradientsUntiedHead) { check_model_gradients(false, LossKind::kKlDivergence); }

TEST(GradModel, FloatLogitsMatchRuntimeForward) {
  ThreadPool pool(2);
  for (const bool tied : {true, false}) {
    const model::Model m = model::testutil::load_tiny_model(
        testing::temp_dir("grad_model"), {.tied = tied, .model_type = "qwen2", .sliding_window = 4,
                                          .max_window_layers = 1}, pool);
    const auto ids = model::testutil::test_token_ids(9, m.config.vocab_size);
    const Tensor runtime = model::forward(m, ids, pool);
    const auto params = ModelParams<float>::from_model(m, pool);
    EXPECT_EQ(params.tied(), tied);
    const std::vector<float> mine = model_logits(pool, m.config, params, ids, 9);
    ASSERT_EQ(static_cast<int64_t>(mine.size()), runtime.numel());
    double diff = 0, scale = 0;
    for (size_t i = 0; i < mine.size(); ++i) {
      diff = std::max(diff, static_cast<double>(std::abs(mine[i] - runtime.f32()[i])));
      scale = std::max(scale, static_cast<double>(std::abs(runtime.f32()[i])));
    }
    EXPECT_LT(diff, 1e-5 * scale);
  }
}

TEST(GradModel, SameBitsForAnyThreadCount) {
  ModelConfig c = two_layer_config(false);
  c.vocab_size = 300;
  c.hidden_size = 96;
  c.intermediate_size = 80;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 24;
  const ModelParams<float> p = random_model<float>(c, 9);
  std::vector<int32_t> ids;
  for (int32_t i = 0; i < 40; ++i) ids.push_back((i * 37 + 5) % 300);
  std::vector<std::vector<float>> results;
  for (const size_t threads : {1, 2, 3}) {
    ThreadPool pool(threads);
    ModelParams<float> g = ModelParams<float>::zeros(c);
    const double value = model_forward_backward(pool, c, p, ids, 20, LossSpec<float>{}, g);
    std::vector<float> all{static_cast<float>(value)};
    for (const auto& t : g.tensors()) all.insert(all.end(), t.values->begin(), t.values->end());
    results.push_back(std::move(all));
  }
  for (size_t i = 1; i < results.size(); ++i) {
    EXPECT_EQ(std::memcmp(results[i].data(), results[0].data(), results[0].size() * sizeof(float)), 0);
  }
}

TEST(GradModel, BadTokenIdIsAnError) {
  ThreadPool pool(1);
  const ModelConfig c = two_layer_config(true);
  const auto p = random_model<float>(c, 1);
  auto g = ModelParams<float>::zeros(c);
  const std::vector<int32_t> ids = {1, 13};
  EXPECT_THROW(model_forward_backward(pool, c, p, ids, 2, LossSpec<float>{}, g), Error);
}

TEST(GradModel, MemoryEstimateCountsTheEngineBuffers) {
  for (const bool tied : {true, false}) {
    ModelConfig c = two_layer_config(tied);
    c.qkv_bias = !tied;
    const int64_t seq = 16, batch = 3, n = seq * batch;
    const auto params = ModelParams<float>::zeros(c);
    // LayerWorkspace::values is what the workspace really holds.
    const LayerWorkspace<float> ws(c, seq, batch);
    size_t held = 0;
    for (const auto* v : {&ws.norm1_, &ws.q_, &ws.k_, &ws.v_, &ws.probs_, &ws.attn_, &ws.h1_, &ws.norm2_, &ws.gate_,
                          &ws.up_, &ws.act_, &ws.d_h1_, &ws.d_norm_, &ws.d_attn_, &ws.dq_, &ws.dk_, &ws.dv_,
                          &ws.d_act_, &ws.d_gate_, &ws.d_up_, &ws.rope_cos_, &ws.rope_sin_}) {
      held += v->size();
    }
    EXPECT_EQ(static_cast<int64_t>(held), LayerWorkspace<float>::values(c, seq, batch));
    const auto whole =
        estimate_training_memory(c, {.seq_len = seq, .batch = batch, .teacher_logits = true, .threads = 2});
    EXPECT_EQ(whole.weights, 4u * static_cast<uint64_t>(params.numel()));
    EXPECT_EQ(whole.gradients, whole.weights);
    EXPECT_EQ(whole.optimizer, 2 * whole.weights);
    const int64_t layer_values = LayerWorkspace<float>::values(c, seq, batch);
    EXPECT_EQ(whole.activations,
              4u * static_cast<uint64_t>(layer_values + 2 * seq * seq + (c.num_layers + 5) * n * c.hidden_size +
                                         3 * n * c.vocab_size));
    EXPECT_EQ(whole.total, whole.weights + whole.gradients + whole.optimizer + whole.activations);
    const auto block = estimate_training_memory(
        c, {.scope = MemoryEstimateOptions::Scope::kOneLayer, .seq_len = seq, .batch = batch,
            .optimizer_values_per_parameter = 0});
    EXPECT_EQ(block.gradients, 4u * static_cast<uint64_t>(params.layers[0].numel()));
    EXPECT_EQ(block.optimizer, 0u);
    EXPECT_EQ(block.activations, 4u * static_cast<uint64_t>(layer_values + seq * seq + 3 * n * c.hidden_size));
  }
}

}  // namespace
}  // namespace calq::grad
