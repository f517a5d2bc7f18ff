#include "model/fold.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "formats/format.h"
#include "model/forward.h"
#include "model/tiny_model_testutil.h"
#include "support/shared_dir.h"

namespace calq::model {
namespace {

Tensor random_tensor(Shape shape, float sigma, std::mt19937& rng) {
  Tensor t = Tensor::zeros(DType::kF32, std::move(shape));
  std::normal_distribution<float> d(0.0f, sigma);
  float* p = t.mutable_f32();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = d(rng);
  return t;
}

// The tiny model made multi-head (num_kv_heads = num_heads) by drawing new k/v weights (and biases).
void make_multi_head(Model& m, uint32_t seed) {
  std::mt19937 rng(seed);
  m.config.num_kv_heads = m.config.num_heads;
  const int64_t kv = m.config.kv_dim(), h = m.config.hidden_size;
  for (auto& l : m.layers) {
    l.wk = random_tensor({kv, h}, 0.3f, rng);
    l.wv = random_tensor({kv, h}, 0.3f, rng);
    if (m.config.qkv_bias) {
      l.bk = random_tensor({kv}, 0.8f, rng);
      l.bv = random_tensor({kv}, 0.8f, rng);
    }
  }
}

std::vector<float> random_scales(int64_t n, std::mt19937& rng) {
  // Spread over ~[0.14, 7.4] so a wrong fold changes the logits clearly.
  std::uniform_real_distribution<float> d(-2.0f, 2.0f);
  std::vector<float> s(static_cast<size_t>(n));
  for (auto& v : s) v = std::exp(d(rng));
  return s;
}

double max_abs(const Tensor& t) {
  double m = 0;
  for (int64_t i = 0; i < t.numel(); ++i) m = std::max(m, double(std::abs(t.f32()[i])));
  return m;
}

double max_abs_diff(const Tensor& a, const Tensor& b) {
  double m = 0;
  for (int64_t i = 0; i < a.numel(); ++i) m = std::max(m, double(std::abs(a.f32()[i] - b.f32()[i])));
  return m;
}

int64_t group_input_dim(const ModelConfig& c, TensorRole group) {
  switch (group) {
    case TensorRole::kAttnOut: return c.q_dim();
    case TensorRole::kMlpDown: return c.intermediate_size;
    default: return c.hidden_size;
  }
}

void check_folds_preserve_logits(Model m, const std::vector<TensorRole>& groups) {
  ThreadPool pool(2);
  const auto ids = testutil::test_token_ids(13, m.config.vocab_size);
  const Tensor before = forward(m, ids, pool);
  std::mt19937 rng(42);
  // Keep one unfolded copy of a layer to check the fold changed the weights.
  const LayerWeights original = m.layers[0];
  for (size_t l = 0; l < m.layers.size(); ++l) {
    for (const TensorRole g : groups) {
      const auto s = random_scales(group_input_dim(m.config, g), rng);
      fold_input_scales(m.layers[l], m.config, static_cast<int64_t>(l), g, s);
    }
  }
  const Tensor after = forward(m, ids, pool);
  const double rel = max_abs_diff(before, after) / max_abs(before);
  EXPECT_LE(rel, 1e-4) << m.config.model_type;
  EXPECT_GT(max_abs(before), 0.1);
  // The weights did change (a no-op fold would pass the check above).
  for (const TensorRole g : groups) {
    for (const TensorRole r : input_consumers(g)) {
      EXPECT_GT(max_abs_diff(original.linear(r).dense(), m.layers[0].linear(r).dense()), 0.01) << role_name(r);
    }
  }
  EXPECT_GT(max_abs_diff(original.attn_norm, m.layers[0].attn_norm), 0.01);
  EXPECT_GT(max_abs_diff(original.mlp_norm, m.layers[0].mlp_norm), 0.01);
  EXPECT_GT(max_abs_diff(original.w_up.dense(), m.layers[0].w_up.dense()), 0.01);
}

const std::vector<TensorRole> kAllGroups = {TensorRole::kAttnQ, TensorRole::kAttnOut, TensorRole::kMlpGate,
                                            TensorRole::kMlpDown};

TEST(Fold, ConsumersPerGroup) {
  EXPECT_EQ(input_consumers(TensorRole::kAttnQ),
            (std::vector<TensorRole>{TensorRole::kAttnQ, TensorRole::kAttnK, TensorRole::kAttnV}));
  EXPECT_EQ(input_consumers(TensorRole::kMlpGate), (std::vector<TensorRole>{TensorRole::kMlpGate, TensorRole::kMlpUp}));
  EXPECT_EQ(input_consumers(TensorRole::kMlpDown), std::vector<TensorRole>{TensorRole::kMlpDown});
  EXPECT_EQ(input_consumers(TensorRole::kAttnOut), std::vector<TensorRole>{TensorRole::kAttnOut});
  EXPECT_THROW(input_consumers(TensorRole::kAttnK), Error);
  EXPECT_THROW(input_consumers(TensorRole::kAttnNorm), Error);
}

TEST(Fold, LlamaEveryGroupKeepsLogits) {
  ThreadPool pool(1);
  Model m = testutil::load_tiny_model(testing::temp_dir("fold_llama"), {.tied = true}, pool);
  make_multi_head(m, 7);
  check_folds_preserve_logits(std::move(m), kAllGroups);
}

TEST(Fold, Qwen2WithBiasesEveryGroupKeepsLogits) {
  ThreadPool pool(1);
  Model m = testutil::load_tiny_model(testing::temp_dir("fold_qwen2"), {.tied = false, .model_type = "qwen2"}, pool);
  ASSERT_TRUE(m.config.qkv_bias);
  make_multi_head(m, 8);
  check_folds_preserve_logits(std::move(m), kAllGroups);
}

TEST(Fold, GroupedQueryAttentionFoldsAllButAttnOut) {
  ThreadPool pool(1);
  Model m = testutil::load_tiny_model(testing::temp_dir("fold_gqa"), {.tied = true}, pool);
  ASSERT_NE(m.config.num_heads, m.config.num_kv_heads);
  const std::vector<float> s(static_cast<size_t>(m.config.q_dim()), 2.0f);
  const Tensor wo = m.layers[1].wo.dense();
  const Tensor wv = m.layers[1].wv.dense();
  try {
    fold_input_scales(m.layers[1], m.config, 1, TensorRole::kAttnOut, s);
    FAIL() << "GQA o fold accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kUnsupported);
    EXPECT_NE(std::string(e.what()).find("layer 1"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(m.layers[1].wo.same_storage(wo));
  EXPECT_TRUE(m.layers[1].wv.same_storage(wv));
  check_folds_preserve_logits(std::move(m), {TensorRole::kAttnQ, TensorRole::kMlpGate, TensorRole::kMlpDown});
}

// The fold as calq wrote it out before the block topology: each group's consumers, producer and
// whether the producer is a norm weight (else rows, plus v's bias with qkv biases). The topology's
// fold must give these bits exactly, through either overload.
TEST(Fold, SameBitsAsTheHandWrittenFold) {
  ThreadPool pool(1);
  Model m = testutil::load_tiny_model(testing::temp_dir("fold_bits"), {.tied = false, .model_type = "qwen2"}, pool);
  make_multi_head(m, 9);
  struct Old {
    TensorRole group;
    InputSite site;
    TensorRole producer;
    bool norm;
  };
  const Old old[] = {{TensorRole::kAttnQ, InputSite::kAttnIn, TensorRole::kAttnNorm, true},
                     {TensorRole::kAttnOut, InputSite::kAttnOut, TensorRole::kAttnV, false},
                     {TensorRole::kMlpGate, InputSite::kMlpIn, TensorRole::kMlpNorm, true},
                     {TensorRole::kMlpDown, InputSite::kMlpDown, TensorRole::kMlpUp, false}};
  std::mt19937 rng(11);
  for (const Old& g : old) {
    SCOPED_TRACE(role_name(g.group));
    const LayerWeights before = m.layers[0];
    const auto s = random_scales(group_input_dim(m.config, g.group), rng);
    LayerWeights by_role = before, by_site = before;
    fold_input_scales(by_role, m.config, 0, g.group, s);
    fold_input_scales(by_site, m.config, 0, g.site, s);
    const auto same_bits = [](const Tensor& a, const std::vector<float>& b) {
      return a.numel() == static_cast<int64_t>(b.size()) && std::equal(b.begin(), b.end(), a.f32());
    };
    for (const LayerWeights* after : {&by_role, &by_site}) {
      std::vector<TensorRole> changed;
      for (const TensorRole r : input_consumers(g.group)) {
        const Tensor& w = before.linear(r).dense();
        std::vector<float> want(w.f32(), w.f32() + w.numel());
        for (int64_t i = 0; i < w.numel(); ++i) want[static_cast<size_t>(i)] *= s[static_cast<size_t>(i % w.dim(1))];
        EXPECT_TRUE(same_bits(after->linear(r).dense(), want)) << role_name(r);
        changed.push_back(r);
      }
      if (g.norm) {
        const Tensor& v = before.vector(g.producer);
        std::vector<float> want(v.f32(), v.f32() + v.numel());
        for (size_t c = 0; c < want.size(); ++c) want[c] /= s[c];
        EXPECT_TRUE(same_bits(after->vector(g.producer), want));
      } else {
        const Tensor& w = before.linear(g.producer).dense();
        std::vector<float> want(w.f32(), w.f32() + w.numel());
        for (int64_t i = 0; i < w.numel(); ++i) want[static_cast<size_t>(i)] /= s[static_cast<size_t>(i / w.dim(1))];
        EXPECT_TRUE(same_bits(after->linear(g.producer).dense(), want));
        changed.push_back(g.producer);
      }
      // v's bias only with the o group; every other tensor untouched.
      const Tensor& bv = before.bv;
      std::vector<float> want_bv(bv.f32(), bv.f32() + bv.numel());
      if (g.group == TensorRole::kAttnOut) {
        for (size_t c = 0; c < want_bv.size(); ++c) want_bv[c] /= s[c];
      }
      EXPECT_TRUE(same_bits(after->bv, want_bv));
      for (const TensorRole r : kLayerLinearRoles) {
        if (std::find(changed.begin(), changed.end(), r) == changed.end()) {
          EXPECT_TRUE(after->linear(r).same_storage(before.linear(r))) << role_name(r);
        }
      }
      for (const TensorRole r : {TensorRole::kAttnNorm, TensorRole::kMlpNorm}) {
        if (!(g.norm && r == g.producer)) {
          EXPECT_EQ(after->vector(r).data(), before.vector(r).data()) << role_name(r);
        }
      }
      EXPECT_EQ(after->bq.data(), before.bq.data());
      EXPECT_EQ(after->bk.data(), before.bk.data());
    }
  }
  Model head = std::move(m);
  const std::vector<float> s(static_cast<size_t>(head.config.hidden_size), 2.0f);
  EXPECT_THROW(fold_input_scales(head.layers[0], head.config, 0, InputSite::kHeadIn, s), Error);
  EXPECT_THROW(fold_input_scales(head.layers[0], head.config, 0, TensorRole::kOutput, s), Error);
}

TEST(Fold, DoesNotWriteSharedStorage) {
  ThreadPool pool(1);
  Model m = testutil::load_tiny_model(testing::temp_dir("fold_shared"), {.tied = true}, pool);
  const LayerWeights copy = m.layers[0];  // shares every tensor's bytes
  const std::vector<float> before(copy.w_gate.dense().f32(), copy.w_gate.dense().f32() + copy.w_gate.numel());
  std::mt19937 rng(3);
  fold_input_scales(m.layers[0], m.config, 0, TensorRole::kMlpGate, random_scales(m.config.hidden_size, rng));
  EXPECT_TRUE(std::equal(before.begin(), before.end(), copy.w_gate.dense().f32()));
  EXPECT_FALSE(m.layers[0].w_gate.same_storage(copy.w_gate));
}

TEST(Fold, RejectsBadScalesAndQuantizedWeights) {
  ThreadPool pool(1);
  Model m = testutil::load_tiny_model(testing::temp_dir("fold_bad"), {.tied = true}, pool);
  const int64_t h = m.config.hidden_size;
  std::vector<float> s(static_cast<size_t>(h), 1.5f);
  const auto expect_kind = [&](std::span<const float> scales, ErrorKind kind, const std::string& needle) {
    const Tensor q = m.layers[0].wq.dense();
    try {
      fold_input_scales(m.layers[0], m.config, 0, TensorRole::kAttnQ, scales);
      ADD_FAILURE() << "accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), kind) << e.what();
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
    EXPECT_TRUE(m.layers[0].wq.is_quantized() || m.layers[0].wq.same_storage(q));  // nothing changed
  };
  expect_kind(std::span(s).first(static_cast<size_t>(h - 1)), ErrorKind::kInvalidArgument, "q_proj");
  s[5] = 0.0f;
  expect_kind(s, ErrorKind::kInvalidArgument, "q_proj");
  s[5] = std::nanf("");
  expect_kind(s, ErrorKind::kInvalidArgument, "q_proj");
  s[5] = -1.0f;
  expect_kind(s, ErrorKind::kInvalidArgument, "q_proj");
  s[5] = 1.5f;
  // A quantized consumer: the error names it.
  const Format& fmt = format_by_name("int8-g32-sym");
  const Tensor& wk = m.layers[0].wk.dense();
  QuantizedTensor qt = QuantizedTensor::quantize(pool, fmt, wk.f32(), wk.dim(0), wk.dim(1));
  m.layers[0].wk = LinearWeight(std::move(qt));
  expect_kind(s, ErrorKind::kUnsupported, "k_proj");
}

}  // namespace
}  // namespace calq::model
