// The trainable decoder layer: its float forward against the runtime's, its backward against
// central finite differences in double (GQA, biases, a sliding window, two sequences; with site
// maps too), and the same bits for any thread count.
#include "grad/layer.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <map>

#include "core/error.h"
#include "grad/grad_check_testutil.h"
#include "model/forward.h"
#include "model/site_transform.h"
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

ModelConfig small_config(bool bias, int64_t window) {
  ModelConfig c = model::testutil::tiny_config(false);
  c.hidden_size = 12;
  c.intermediate_size = 20;
  c.num_heads = 4;
  c.num_kv_heads = 2;  // two query heads per kv head
  c.head_dim = 4;
  c.num_layers = 1;
  c.qkv_bias = bias;
  c.sliding_window = window;
  c.layer_window = {window > 0};
  return c;
}

template <typename T>
LayerParams<T> random_layer(const ModelConfig& c, uint32_t seed) {
  LayerParams<T> p = LayerParams<T>::zeros(c);
  for (auto& [role, v] : p.tensors()) {
    const bool norm = role == model::TensorRole::kAttnNorm || role == model::TensorRole::kMlpNorm;
    const auto r = random_values(v->size(), seed++, norm ? 0.2 : 0.4);
    for (size_t i = 0; i < v->size(); ++i) (*v)[i] = static_cast<T>(norm ? 1.0 + r[i] : r[i]);
  }
  return p;
}

TEST(GradLayer, FloatForwardMatchesRuntimeLayer) {
  ThreadPool pool(2);
  // Qwen2 (q/k/v biases) with a window of 3 on layer 1; 70 tokens (two 64-row query blocks).
  const model::Model m = model::testutil::load_tiny_model(
      testing::temp_dir("grad_layer"), {.tied = false, .model_type = "qwen2", .sliding_window = 3,
                                        .max_window_layers = 1}, pool);
  ASSERT_EQ(m.config.window_for_layer(1), 3);
  const int64_t seq = 70, h = m.config.hidden_size;
  const auto ids = model::testutil::test_token_ids(seq, m.config.vocab_size);
  for (int64_t l = 0; l < 2; ++l) {
    std::vector<float> runtime(static_cast<size_t>(seq * h));
    model::embed_tokens(m, ids, runtime.data());
    std::vector<float> mine(runtime), input(runtime);
    model::LayerScratch scratch(m.config, seq);
    model::decoder_layer_forward(m.config, m.layers[static_cast<size_t>(l)], l, runtime.data(), seq, scratch, pool);
    const auto params = LayerParams<float>::from_weights(m.config, m.layers[static_cast<size_t>(l)], pool);
    LayerWorkspace<float> ws(m.config, seq);
    layer_forward(pool, m.config, l, params, mine.data(), ws);
    double diff = 0, scale = 0, moved = 0;
    for (size_t i = 0; i < mine.size(); ++i) {
      diff = std::max(diff, static_cast<double>(std::abs(mine[i] - runtime[i])));
      scale = std::max(scale, static_cast<double>(std::abs(runtime[i])));
      moved = std::max(moved, static_cast<double>(std::abs(runtime[i] - input[i])));
    }
    EXPECT_LT(diff, 1e-5 * scale) << "layer " << l;
    EXPECT_GT(moved, 0.05);
  }
}

// d_input and every parameter tensor of one layer against finite differences of Σ r ⊙ output.
void check_layer_backward(const ModelConfig& c, int64_t seq, int64_t batch) {
  ThreadPool pool(2);
  const int64_t n = seq * batch, h = c.hidden_size;
  LayerParams<double> p = random_layer<double>(c, 20);
  auto input = random_values(n * h, 1);
  const auto r = random_values(n * h, 2);
  LayerWorkspace<double> ws(c, seq, batch);
  auto loss = [&] {
    std::vector<double> out(input);
    layer_forward(pool, c, 0, p, out.data(), ws);
    return project(out, r);
  };
  std::vector<double> d_input(input.size());
  LayerGrads<double> g = LayerGrads<double>::zeros(c);
  layer_backward(pool, c, 0, p, input.data(), r.data(), d_input.data(), g, ws);

  const auto all = check_entries(input.size(), input.size());
  EXPECT_LT(rel_error(numeric_grad(input, all, loss), d_input), 1e-6) << "d_input";
  auto grads = g.tensors();
  auto params = p.tensors();
  ASSERT_EQ(grads.size(), c.qkv_bias ? 12u : 9u);
  for (size_t t = 0; t < params.size(); ++t) {
    const auto entries = check_entries(params[t].second->size(), 24, static_cast<uint32_t>(t));
    const auto fd = numeric_grad(*params[t].second, entries, loss);
    const auto an = pick(*grads[t].second, entries);
    EXPECT_GT(testutil::norm(fd), 1e-4) << model::role_name(params[t].first);
    EXPECT_LT(rel_error(fd, an), 1e-6) << model::role_name(params[t].first);
  }
}

TEST(GradLayer, BackwardMatchesFiniteDifferences) { check_layer_backward(small_config(false, 0), 5, 1); }

TEST(GradLayer, BackwardWithBiasesWindowAndTwoSequences) { check_layer_backward(small_config(true, 3), 7, 2); }

// A nonlinear, channel-mixing test map per mapped site: y_j = a_j·tanh(x_j) + b·x_{(j+1) mod w},
// with its parameters a[w] and b; gradients added into da, db.
class TestMaps final : public SiteMaps<double> {
 public:
  TestMaps(const ModelConfig& c, std::vector<model::InputSite> sites) : sites_(std::move(sites)) {
    uint32_t seed = 40;
    for (const model::InputSite site : sites_) {
      const int64_t w = site == model::InputSite::kMlpDown   ? c.intermediate_size
                        : site == model::InputSite::kAttnOut ? c.q_dim()
                                                             : c.hidden_size;
      Params& p = params_[site];
      p.a = random_values(w, seed++, 0.3);
      for (double& v : p.a) v += 1.0;
      p.b = {0.25};
      p.da.assign(p.a.size(), 0.0);
      p.db = {0.0};
    }
  }
  bool maps(model::InputSite site) const override { return params_.contains(site); }
  void forward(ThreadPool&, model::InputSite site, const double* x, int64_t rows, int64_t w,
               double* y) const override {
    const Params& p = params_.at(site);
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t j = 0; j < w; ++j) y[r * w + j] = p.a[j] * std::tanh(x[r * w + j]) + p.b[0] * x[r * w + (j + 1) % w];
    }
  }
  void backward(ThreadPool&, model::InputSite site, const double* x, int64_t rows, int64_t w, const double* dy,
                double* dx) override {
    Params& p = params_.at(site);
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t j = 0; j < w; ++j) {
        const double t = std::tanh(x[r * w + j]);
        dx[r * w + j] = dy[r * w + j] * p.a[j] * (1 - t * t) + dy[r * w + (j + w - 1) % w] * p.b[0];
        p.da[j] += dy[r * w + j] * t;
        p.db[0] += dy[r * w + j] * x[r * w + (j + 1) % w];
      }
    }
  }
  struct Params {
    std::vector<double> a, b, da, db;
  };
  std::map<model::InputSite, Params> params_;

 private:
  std::vector<model::InputSite> sites_;
};

// With site maps: d_input, every layer parameter and every map parameter against finite differences.
void check_mapped_backward(const ModelConfig& c, std::vector<model::InputSite> sites) {
  ThreadPool pool(2);
  const int64_t seq = 5, batch = 2, n = seq * batch, h = c.hidden_size;
  LayerParams<double> p = random_layer<double>(c, 30);
  auto input = random_values(n * h, 11);
  const auto r = random_values(n * h, 12);
  LayerWorkspace<double> ws(c, seq, batch);
  TestMaps maps(c, sites);
  auto loss = [&] {
    std::vector<double> out(input);
    layer_forward(pool, c, 0, p, out.data(), ws, &maps);
    return project(out, r);
  };
  std::vector<double> d_input(input.size());
  LayerGrads<double> g = LayerGrads<double>::zeros(c);
  layer_backward(pool, c, 0, p, input.data(), r.data(), d_input.data(), g, ws, &maps);
  const auto all = check_entries(input.size(), input.size());
  EXPECT_LT(rel_error(numeric_grad(input, all, loss), d_input), 1e-6) << "d_input";
  auto grads = g.tensors();
  auto params = p.tensors();
  for (size_t t = 0; t < params.size(); ++t) {
    const auto entries = check_entries(params[t].second->size(), 24, static_cast<uint32_t>(t));
    EXPECT_LT(rel_error(numeric_grad(*params[t].second, entries, loss), pick(*grads[t].second, entries)), 1e-6)
        << model::role_name(params[t].first);
  }
  for (auto& [site, mp] : maps.params_) {
    const auto entries = check_entries(mp.a.size(), mp.a.size());
    const auto fd_a = numeric_grad(mp.a, entries, loss);
    EXPECT_GT(testutil::norm(fd_a), 1e-4) << model::site_name(site);
    EXPECT_LT(rel_error(fd_a, pick(mp.da, entries)), 1e-6) << model::site_name(site);
    EXPECT_LT(rel_error(numeric_grad(mp.b, check_entries(1, 1), loss), mp.db), 1e-6) << model::site_name(site);
  }
}

TEST(GradLayer, SiteMapsBackwardMatchesFiniteDifferences) {
  using model::InputSite;
  check_mapped_backward(small_config(true, 3),
                        {InputSite::kAttnIn, InputSite::kAttnOut, InputSite::kMlpIn, InputSite::kMlpDown});
  check_mapped_backward(small_config(false, 0), {InputSite::kAttnOut, InputSite::kMlpDown});
  check_mapped_backward(small_config(false, 0), {InputSite::kAttnIn, InputSite::kMlpIn});
}

// Maps that copy their input give the unmapped layer's bits; no maps at all is the plain layer.
TEST(GradLayer, IdentityMapsGiveTheUnmappedBits) {
  class Copy final : public SiteMaps<float> {
   public:
    bool maps(model::InputSite) const override { return true; }
    void forward(ThreadPool&, model::InputSite, const float* x, int64_t rows, int64_t w, float* y) const override {
      std::copy_n(x, rows * w, y);
    }
    void backward(ThreadPool&, model::InputSite, const float*, int64_t rows, int64_t w, const float* dy,
                  float* dx) override {
      std::copy_n(dy, rows * w, dx);
    }
  };
  const ModelConfig c = small_config(true, 3);
  ThreadPool pool(2);
  const int64_t seq = 6, batch = 2, n = seq * batch;
  const LayerParams<float> p = random_layer<float>(c, 3);
  std::vector<float> input(static_cast<size_t>(n * c.hidden_size)), d_out(input.size());
  const auto a = random_values(input.size(), 4), b = random_values(input.size(), 5);
  std::copy(a.begin(), a.end(), input.begin());
  std::copy(b.begin(), b.end(), d_out.begin());
  Copy copy;
  std::vector<std::vector<float>> results;
  for (Copy* maps : {static_cast<Copy*>(nullptr), &copy}) {
    LayerWorkspace<float> ws(c, seq, batch);
    LayerGrads<float> g = LayerGrads<float>::zeros(c);
    std::vector<float> d_in(input.size()), out(input);
    layer_backward(pool, c, 0, p, input.data(), d_out.data(), d_in.data(), g, ws, maps);
    layer_forward(pool, c, 0, p, out.data(), ws, maps);
    std::vector<float> all(d_in);
    all.insert(all.end(), out.begin(), out.end());
    for (const auto& [role, v] : g.tensors()) all.insert(all.end(), v->begin(), v->end());
    results.push_back(std::move(all));
  }
  EXPECT_EQ(std::memcmp(results[1].data(), results[0].data(), results[0].size() * sizeof(float)), 0);
}

TEST(GradLayer, SameBitsForAnyThreadCount) {
  // Wide enough that products span several 256-wide tiles and reductions several column chunks.
  ModelConfig c = small_config(true, 20);
  c.hidden_size = 320;
  c.intermediate_size = 520;
  c.num_heads = 5;
  c.num_kv_heads = 1;
  c.head_dim = 64;
  const int64_t seq = 33, batch = 2, n = seq * batch;
  const LayerParams<float> p = random_layer<float>(c, 3);
  std::vector<float> input(static_cast<size_t>(n * c.hidden_size)), d_out(input.size());
  const auto a = random_values(input.size(), 4), b = random_values(input.size(), 5);
  std::copy(a.begin(), a.end(), input.begin());
  std::copy(b.begin(), b.end(), d_out.begin());
  std::vector<std::vector<float>> results;
  for (const size_t threads : {1, 2, 3}) {
    ThreadPool pool(threads);
    LayerWorkspace<float> ws(c, seq, batch);
    LayerGrads<float> g = LayerGrads<float>::zeros(c);
    std::vector<float> d_in(input.size());
    layer_backward(pool, c, 0, p, input.data(), d_out.data(), d_in.data(), g, ws);
    std::vector<float> out(input);
    layer_forward(pool, c, 0, p, out.data(), ws);
    std::vector<float> all(d_in);
    all.insert(all.end(), out.begin(), out.end());
    for (const auto& [role, v] : g.tensors()) all.insert(all.end(), v->begin(), v->end());
    results.push_back(std::move(all));
  }
  for (size_t i = 1; i < results.size(); ++i) {
    ASSERT_EQ(results[i].size(), results[0].size());
    EXPECT_EQ(std::memcmp(results[i].data(), results[0].data(), results[0].size() * sizeof(float)), 0);
  }
}

TEST(GradLayer, UnsupportedRuntimePartsAreErrors) {
  ModelConfig c = small_config(false, 0);
  EXPECT_NO_THROW(check_trainable(c));
  c.rotation = ModelConfig::Rotation{.residual_seed = 1, .residual_online = true};
  EXPECT_THROW(check_trainable(c), Error);
  c.rotation = ModelConfig::Rotation{.residual_seed = 1, .residual_online = false, .down_seed = 7};
  EXPECT_THROW(check_trainable(c), Error);
  c.rotation = ModelConfig::Rotation{.residual_seed = 1, .residual_online = false};
  EXPECT_NO_THROW(check_trainable(c));  // folded rotations are ordinary weights
}

TEST(GradLayer, OnlineInputTransformsAreRefused) {
  ThreadPool pool(1);
  model::Model m = model::testutil::load_tiny_model(::calq::testing::temp_dir("grad_kron"), {}, pool);
  EXPECT_NO_THROW(LayerParams<float>::from_weights(m.config, m.layers[1], pool));
  model::set_site_transform(m, 1, model::InputSite::kMlpDown,
                            model::KronTransform::identity(model::kron_factors(m.config.intermediate_size)), pool);
  try {
    LayerParams<float>::from_weights(m.config, m.layers[1], pool);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kUnsupported);
    EXPECT_NE(std::string(e.what()).find("online Kronecker input transforms"), std::string::npos) << e.what();
  }
  EXPECT_NO_THROW(LayerParams<float>::from_weights(m.config, m.layers[0], pool));
}

}  // namespace
}  // namespace calq::grad
