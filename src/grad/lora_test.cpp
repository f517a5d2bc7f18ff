// LoRA adapters in the gradient engine: the layer's and the whole model's gradients to A, B, the
// input and the base parameters against central finite differences in double (with and without
// dropout), frozen base tensors (empty gradients) giving the same adapter gradients, the float
// forward against the runtime's (model::LoraAdapter), the dropout mask, and the same bits for any
// thread count.
#include "grad/lora.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "grad/grad_check_testutil.h"
#include "grad/layer.h"
#include "grad/model_grad.h"
#include "model/forward.h"
#include "model/tiny_model_testutil.h"
#include "support/shared_dir.h"

namespace calq::grad {
namespace {

using model::ModelConfig;
using testutil::check_entries;
using testutil::numeric_grad;
using testutil::pick;
using testutil::project;
using testutil::random_values;
using testutil::rel_error;

ModelConfig layer_config() {
  ModelConfig c = model::testutil::tiny_config(false);
  c.hidden_size = 12;
  c.intermediate_size = 20;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 4;
  c.num_layers = 1;
  c.qkv_bias = true;
  c.sliding_window = 3;
  c.layer_window = {true};
  return c;
}

ModelConfig model_config() {
  ModelConfig c = model::testutil::tiny_config(true);
  c.vocab_size = 13;
  c.hidden_size = 8;
  c.intermediate_size = 12;
  c.num_heads = 2;
  c.num_kv_heads = 1;
  c.head_dim = 4;
  c.num_layers = 2;
  return c;
}

// [out, in] of the linear in kLayerLinearRoles position `slot`.
std::pair<int64_t, int64_t> linear_shape(const ModelConfig& c, size_t slot) {
  const int64_t h = c.hidden_size, q = c.q_dim(), kv = c.kv_dim(), i = c.intermediate_size;
  const std::pair<int64_t, int64_t> shapes[] = {{q, h}, {kv, h}, {kv, h}, {h, q}, {i, h}, {i, h}, {h, i}};
  return shapes[slot];
}

template <typename T>
void fill(std::vector<T>& v, uint32_t seed, double scale, double offset = 0) {
  const auto r = random_values(v.size(), seed, scale);
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<T>(offset + r[i]);
}

template <typename T>
LayerParams<T> random_layer(const ModelConfig& c, uint32_t seed) {
  LayerParams<T> p = LayerParams<T>::zeros(c);
  for (auto& [role, v] : p.tensors()) {
    const bool norm = role == model::TensorRole::kAttnNorm || role == model::TensorRole::kMlpNorm;
    fill(*v, seed++, norm ? 0.2 : 0.4, norm ? 1.0 : 0.0);
  }
  return p;
}

// Adapters on every linear, ranks 1..3, B non-zero (a trained adapter: B = 0 would hide dA).
template <typename T>
void add_adapters(const ModelConfig& c, LayerParams<T>& p, uint32_t seed) {
  for (size_t s = 0; s < p.lora.size(); ++s) {
    const auto [out, in] = linear_shape(c, s);
    LoraParams<T>& a = p.lora[s];
    a.rank = 1 + static_cast<int64_t>(s % 3);
    a.scale = static_cast<T>(1.5 / static_cast<double>(a.rank));
    a.a.resize(static_cast<size_t>(a.rank * in));
    a.b.resize(static_cast<size_t>(out * a.rank));
    fill(a.a, seed++, 0.4);
    fill(a.b, seed++, 0.4);
  }
}

void check_layer(const LoraDropout& dropout) {
  ThreadPool pool(2);
  const ModelConfig c = layer_config();
  const int64_t seq = 6, batch = 2, n = seq * batch, h = c.hidden_size;
  LayerParams<double> p = random_layer<double>(c, 20);
  add_adapters(c, p, 60);
  auto input = random_values(n * h, 1);
  const auto r = random_values(n * h, 2);
  LayerWorkspace<double> ws(c, seq, batch);
  auto loss = [&] {
    std::vector<double> out(input);
    layer_forward(pool, c, 0, p, out.data(), ws, static_cast<const SiteMaps<double>*>(nullptr), dropout);
    return project(out, r);
  };
  std::vector<double> d_input(input.size());
  LayerGrads<double> g = LayerGrads<double>::zeros(c);
  g.lora = LayerGrads<double>::lora_grads(p).lora;
  layer_backward(pool, c, 0, p, input.data(), r.data(), d_input.data(), g, ws, static_cast<SiteMaps<double>*>(nullptr), dropout);

  const auto all = check_entries(input.size(), input.size());
  EXPECT_LT(rel_error(numeric_grad(input, all, loss), d_input), 1e-6) << "d_input";
  auto params = p.tensors();
  auto grads = g.tensors();
  for (size_t t = 0; t < params.size(); ++t) {
    const auto entries = check_entries(params[t].second->size(), 12, static_cast<uint32_t>(t));
    const auto fd = numeric_grad(*params[t].second, entries, loss);
    EXPECT_LT(rel_error(fd, pick(*grads[t].second, entries)), 1e-6) << model::role_name(params[t].first);
  }
  for (size_t s = 0; s < p.lora.size(); ++s) {
    const std::string_view role = model::role_name(model::kLayerLinearRoles[s]);
    for (const bool is_a : {true, false}) {
      std::vector<double>& v = is_a ? p.lora[s].a : p.lora[s].b;
      const auto entries = check_entries(v.size(), 12, static_cast<uint32_t>(s));
      const auto fd = numeric_grad(v, entries, loss);
      EXPECT_GT(testutil::norm(fd), 1e-4) << role << (is_a ? " A" : " B");
      EXPECT_LT(rel_error(fd, pick(is_a ? g.lora[s].a : g.lora[s].b, entries)), 1e-6) << role << (is_a ? " A" : " B");
    }
  }

  // The frozen base (empty gradients): the same d_input and adapter gradients, nothing else.
  std::vector<double> d_input2(input.size());
  LayerGrads<double> g2 = LayerGrads<double>::lora_grads(p);
  layer_backward(pool, c, 0, p, input.data(), r.data(), d_input2.data(), g2, ws, static_cast<SiteMaps<double>*>(nullptr), dropout);
  EXPECT_EQ(d_input2, d_input);
  EXPECT_EQ(g2.numel(), 0);
  for (size_t s = 0; s < p.lora.size(); ++s) {
    EXPECT_EQ(g2.lora[s].a, g.lora[s].a);
    EXPECT_EQ(g2.lora[s].b, g.lora[s].b);
  }
}

TEST(GradLora, LayerGradientsMatchFiniteDifferences) { check_layer({}); }

TEST(GradLora, LayerGradientsWithDropoutMatchFiniteDifferences) {
  check_layer({.p = 0.3, .seed = 7, .step = 4});
}

// Σ over the adapters of a 2-layer model's cross-entropy gradients against finite differences, the
// base frozen.
void check_model(bool tied, const LoraDropout& dropout) {
  ThreadPool pool(2);
  ModelConfig c = model_config();
  c.tie_word_embeddings = tied;
  const int64_t seq = 5;
  const std::vector<int32_t> ids = {1, 4, 12, 4, 7, 0, 3, 3, 9, 1};
  ModelParams<double> p = ModelParams<double>::zeros(c);
  uint32_t seed = 40;
  for (auto& t : p.tensors()) {
    const bool norm = t.name.ends_with("norm");
    fill(*t.values, seed++, norm ? 0.2 : 0.5, norm ? 1.0 : 0.0);
  }
  for (auto& l : p.layers) add_adapters(c, l, seed += 20);
  ModelParams<double> g = ModelParams<double>::lora_grads(p);
  const LossSpec<double> loss{};
  const double value = model_forward_backward(pool, c, p, ids, seq, loss, g, dropout);
  if (!dropout.active()) {
    EXPECT_DOUBLE_EQ(value, model_loss(pool, c, p, ids, seq, loss));
  }
  // The training loss (with the step's dropout) as a function of the parameters.
  auto f = [&] {
    ModelParams<double> scratch = ModelParams<double>::lora_grads(p);
    return model_forward_backward(pool, c, p, ids, seq, loss, scratch, dropout);
  };
  auto params = p.lora_tensors();
  auto grads = g.lora_tensors();
  ASSERT_EQ(params.size(), 2u * 2u * 7u);
  ASSERT_EQ(grads.size(), params.size());
  EXPECT_TRUE(g.embedding.empty() && g.final_norm.empty() && g.layers[0].wq.empty());
  for (size_t t = 0; t < params.size(); ++t) {
    EXPECT_EQ(params[t].name, grads[t].name);
    const auto entries = check_entries(params[t].values->size(), 5, static_cast<uint32_t>(t));
    const auto fd = numeric_grad(*params[t].values, entries, f, 1e-5);
    EXPECT_GT(testutil::norm(fd), 1e-6) << params[t].name;
    EXPECT_LT(rel_error(fd, pick(*grads[t].values, entries)), 1e-6) << params[t].name;
  }
}

TEST(GradLora, ModelGradientsMatchFiniteDifferences) { check_model(true, {}); }

TEST(GradLora, ModelGradientsWithDropoutUntiedHead) { check_model(false, {.p = 0.25, .seed = 3, .step = 1}); }

TEST(GradLora, DropoutMaskHasRatePAndDependsOnEveryKey) {
  const LoraDropout d{.p = 0.3, .seed = 11, .step = 2};
  int64_t kept = 0, differ_step = 0, differ_slot = 0, differ_layer = 0, differ_seed = 0;
  const int64_t n = 100000;
  for (int64_t e = 0; e < n; ++e) {
    const bool k = lora_keep(d, 1, 2, e);
    kept += k ? 1 : 0;
    differ_step += k != lora_keep({.p = 0.3, .seed = 11, .step = 3}, 1, 2, e) ? 1 : 0;
    differ_seed += k != lora_keep({.p = 0.3, .seed = 12, .step = 2}, 1, 2, e) ? 1 : 0;
    differ_slot += k != lora_keep(d, 1, 3, e) ? 1 : 0;
    differ_layer += k != lora_keep(d, 0, 2, e) ? 1 : 0;
  }
  // Independent masks of rate 0.3 differ at 2·0.3·0.7 = 42 % of the elements.
  EXPECT_NEAR(static_cast<double>(kept) / n, 0.7, 0.01);
  for (const int64_t d2 : {differ_step, differ_seed, differ_slot, differ_layer})
    EXPECT_NEAR(static_cast<double>(d2) / n, 0.42, 0.01);
  EXPECT_TRUE(lora_keep({}, 0, 0, 5));
}

TEST(GradLora, FloatLogitsMatchRuntimeAdapters) {
  ThreadPool pool(2);
  model::Model m = model::testutil::load_tiny_model(testing::temp_dir("grad_lora"),
                                                    {.tied = false, .model_type = "qwen2"}, pool);
  uint32_t seed = 5;
  for (size_t l = 0; l < m.layers.size(); ++l) {
    for (const model::TensorRole role : model::kLayerLinearRoles) {
      const model::LinearWeight& w = m.layers[l].linear(role);
      const int64_t rank = 2;
      Tensor a = Tensor::zeros(DType::kF32, {rank, w.cols()}), b = Tensor::zeros(DType::kF32, {w.rows(), rank});
      const auto va = random_values(static_cast<size_t>(a.numel()), seed++, 0.3);
      const auto vb = random_values(static_cast<size_t>(b.numel()), seed++, 0.3);
      std::copy(va.begin(), va.end(), a.mutable_f32());
      std::copy(vb.begin(), vb.end(), b.mutable_f32());
      m.layers[l].adapter_slot(role) =
          model::LoraAdapter::make(std::move(a), std::move(b), 3.0, w.cols(), w.rows(), "test adapter");
    }
  }
  const auto ids = model::testutil::test_token_ids(9, m.config.vocab_size);
  const Tensor runtime = model::forward(m, ids, pool);
  const auto params = ModelParams<float>::from_model(m, pool);
  EXPECT_EQ(params.layers[1].lora[6].rank, 2);
  EXPECT_FLOAT_EQ(params.layers[1].lora[6].scale, 1.5f);
  const std::vector<float> mine = model_logits(pool, m.config, params, ids, 9);
  // Without the adapters the logits are far from the runtime's: they matter.
  ModelParams<float> bare = params;
  for (auto& l : bare.layers) l.lora = {};
  const std::vector<float> without = model_logits(pool, m.config, bare, ids, 9);
  double diff = 0, moved = 0, scale = 0;
  for (size_t i = 0; i < mine.size(); ++i) {
    diff = std::max(diff, static_cast<double>(std::abs(mine[i] - runtime.f32()[i])));
    moved = std::max(moved, static_cast<double>(std::abs(without[i] - runtime.f32()[i])));
    scale = std::max(scale, static_cast<double>(std::abs(runtime.f32()[i])));
  }
  EXPECT_LT(diff, 1e-5 * scale);
  EXPECT_GT(moved, 1e-2 * scale);
}

TEST(GradLora, SameBitsForAnyThreadCount) {
  ModelConfig c = model_config();
  c.vocab_size = 300;
  c.hidden_size = 96;
  c.intermediate_size = 80;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 24;
  ModelParams<float> p = ModelParams<float>::zeros(c);
  uint32_t seed = 9;
  for (auto& t : p.tensors()) fill(*t.values, seed++, 0.3, t.name.ends_with("norm") ? 1.0 : 0.0);
  for (auto& l : p.layers) add_adapters(c, l, seed += 20);
  std::vector<int32_t> ids;
  for (int32_t i = 0; i < 40; ++i) ids.push_back((i * 37 + 5) % 300);
  std::vector<std::vector<float>> results;
  for (const size_t threads : {1, 2, 3}) {
    ThreadPool pool(threads);
    ModelParams<float> g = ModelParams<float>::lora_grads(p);
    const double value =
        model_forward_backward(pool, c, p, ids, 20, LossSpec<float>{}, g, {.p = 0.1, .seed = 1, .step = 2});
    std::vector<float> all{static_cast<float>(value)};
    for (const auto& t : g.lora_tensors()) all.insert(all.end(), t.values->begin(), t.values->end());
    results.push_back(std::move(all));
  }
  for (size_t i = 1; i < results.size(); ++i) {
    ASSERT_EQ(results[i].size(), results[0].size());
    EXPECT_EQ(std::memcmp(results[i].data(), results[0].data(), results[0].size() * sizeof(float)), 0);
  }
}

}  // namespace
}  // namespace calq::grad
