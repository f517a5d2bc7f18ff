#include "model/rotate.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "core/error.h"
#include "core/hadamard.h"
#include "formats/format.h"
#include "io/gguf.h"
#include "model/forward.h"
#include "model/gguf_export.h"
#include "model/gguf_model.h"
#include "model/tiny_model_testutil.h"
#include "support/shared_dir.h"

namespace calq::model {
namespace {

// Rotation changes the order of float operations everywhere; the logits of the rotated model must
// equal the original's to float rounding: max |Δ| ≤ kRelTol · max |logit|.
constexpr double kRelTol = 1e-5;

Tensor random_tensor(const Shape& shape, std::mt19937& gen, float mean, float stddev) {
  Tensor t = Tensor::zeros(DType::kF32, shape);
  std::normal_distribution<float> d(mean, stddev);
  for (int64_t i = 0; i < t.numel(); ++i) t.mutable_f32()[i] = d(gen);
  return t;
}

// A random in-memory model of any hidden/intermediate size (the tiny test model's are fixed at 32
// and 48). Norm weights are far from 1 so that a missed fold shows.
Model random_model(const std::string& type, int64_t hidden, int64_t inter, bool tied, uint32_t seed) {
  Model m;
  m.config = testutil::tiny_config(tied);
  m.config.model_type = type;
  m.config.hidden_size = hidden;
  m.config.intermediate_size = inter;
  m.config.max_position_embeddings = 128;
  m.arch = find_architecture(type);
  m.config.qkv_bias = has_slot(*m.arch, TensorRole::kAttnQBias);
  std::mt19937 gen(seed);
  const ModelConfig& c = m.config;
  const auto weight = [&](TensorRole role) {
    const Shape s = expected_shape(c, role);
    return random_tensor(s, gen, 0.0f, 1.0f / std::sqrt(static_cast<float>(s[1])));
  };
  const auto norm = [&] { return random_tensor({hidden}, gen, 1.0f, 0.4f); };
  m.embedding = random_tensor({c.vocab_size, hidden}, gen, 0.0f, 1.0f);
  for (int64_t l = 0; l < c.num_layers; ++l) {
    LayerWeights w;
    w.attn_norm = norm();
    w.mlp_norm = norm();
    for (TensorRole role : {TensorRole::kAttnQ, TensorRole::kAttnK, TensorRole::kAttnV, TensorRole::kAttnOut,
                            TensorRole::kMlpGate, TensorRole::kMlpUp, TensorRole::kMlpDown}) {
      w.linear(role) = weight(role);
    }
    if (c.qkv_bias) {
      w.bq = random_tensor({c.q_dim()}, gen, 0.0f, 0.8f);
      w.bk = random_tensor({c.kv_dim()}, gen, 0.0f, 0.8f);
      w.bv = random_tensor({c.kv_dim()}, gen, 0.0f, 0.8f);
    }
    m.layers.push_back(std::move(w));
  }
  m.final_norm = norm();
  m.output = tied ? m.embedding : LinearWeight(weight(TensorRole::kOutput));
  return m;
}

double rel_diff(const Tensor& a, const Tensor& b) {
  EXPECT_EQ(a.shape(), b.shape());
  double max_abs = 0.0, max_diff = 0.0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    max_abs = std::max(max_abs, std::fabs(static_cast<double>(a.f32()[i])));
    max_diff = std::max(max_diff, std::fabs(static_cast<double>(a.f32()[i]) - b.f32()[i]));
  }
  return max_diff / max_abs;
}

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && std::equal(a.bytes().begin(), a.bytes().end(), b.bytes().begin());
}

struct Case {
  std::string type;
  bool tied;
  bool rotate_down;
};

std::string case_name(const Case& c) {
  return c.type + (c.tied ? "_tied" : "_untied") + (c.rotate_down ? "_down" : "");
}

std::vector<Case> all_cases() {
  std::vector<Case> cases;
  for (const char* type : {"llama", "qwen2"}) {
    for (bool tied : {true, false}) {
      for (bool down : {false, true}) cases.push_back({type, tied, down});
    }
  }
  return cases;
}

// The tiny test model (hidden 32, intermediate 48 = 12·4: the Kronecker path for Q_d).
TEST(Rotate, TinyModelLogitsUnchanged) {
  ThreadPool pool(2);
  for (const Case& c : all_cases()) {
    SCOPED_TRACE(case_name(c));
    const Model original = testutil::load_tiny_model(testing::temp_dir("rot_" + case_name(c)),
                                                     {.tied = c.tied, .model_type = c.type}, pool);
    const auto ids = testutil::test_token_ids(23, original.config.vocab_size);
    const Tensor before = forward(original, ids, pool);
    Model rotated = original;  // shares tensors: rotate_model must not write into them
    rotate_model(rotated, {.seed = 17, .rotate_down = c.rotate_down}, pool);
    ASSERT_TRUE(rotated.config.rotation);
    EXPECT_EQ(rotated.config.rotation->residual_online, c.tied);
    EXPECT_EQ(rotated.config.rotation->down_seed.has_value(), c.rotate_down);
    EXPECT_EQ(rotated.output.same_storage(rotated.embedding), c.tied);
    // The weights did change (a no-op would pass the logit check trivially).
    EXPECT_FALSE(same_bits(rotated.layers[0].wq.dense(), original.layers[0].wq.dense()));
    for (int64_t i = 0; i < rotated.config.hidden_size; ++i) ASSERT_EQ(rotated.layers[1].mlp_norm.f32()[i], 1.0f);
    if (c.type == "qwen2") {
      // Biases are added after the product: untouched.
      EXPECT_TRUE(same_bits(rotated.layers[0].bq, original.layers[0].bq));
      EXPECT_TRUE(same_bits(rotated.layers[1].bv, original.layers[1].bv));
    }
    const Tensor after = forward(rotated, ids, pool);
    const double rel = rel_diff(before, after);
    EXPECT_LT(rel, kRelTol);
    std::printf("%s: max |Δlogit| / max |logit| = %.2e\n", case_name(c).c_str(), rel);
    // The original model is intact.
    EXPECT_TRUE(same_bits(forward(original, ids, pool), before));
  }
}

// Hidden 48 = 12·4 and intermediate 80 = 20·4: neither is a power of two.
TEST(Rotate, NonPowerOfTwoHiddenLogitsUnchanged) {
  ThreadPool pool(3);
  for (const Case& c : all_cases()) {
    SCOPED_TRACE(case_name(c));
    const Model original = random_model(c.type, 48, 80, c.tied, 5);
    const auto ids = testutil::test_token_ids(19, original.config.vocab_size);
    const Tensor before = forward(original, ids, pool);
    Model rotated = original;
    rotate_model(rotated, {.seed = 3, .rotate_down = c.rotate_down}, pool);
    EXPECT_FALSE(same_bits(rotated.layers[1].w_down.dense(), original.layers[1].w_down.dense()));
    const double rel = rel_diff(before, forward(rotated, ids, pool));
    EXPECT_LT(rel, kRelTol);
    std::printf("hidden 48 %s: max |Δlogit| / max |logit| = %.2e\n", case_name(c).c_str(), rel);
  }
}

// Per-channel absmax over tokens of the layer-0 attention input: max / mean across channels.
double attn_input_peak_ratio(const Model& m, const std::vector<int32_t>& ids, ThreadPool& pool) {
  std::vector<float> absmax;
  const LinearHook hook = [&](const LinearInput& in) {
    if (in.layer != 0 || in.role != TensorRole::kAttnQ) return;
    absmax.assign(static_cast<size_t>(in.cols), 0.0f);
    for (int64_t t = 0; t < in.rows; ++t) {
      for (int64_t j = 0; j < in.cols; ++j) {
        absmax[static_cast<size_t>(j)] = std::max(absmax[static_cast<size_t>(j)], std::fabs(in.x[t * in.cols + j]));
      }
    }
  };
  forward(m, ids, pool, &hook);
  double sum = 0.0, mx = 0.0;
  for (float v : absmax) {
    sum += v;
    mx = std::max(mx, static_cast<double>(v));
  }
  return mx / (sum / static_cast<double>(absmax.size()));
}

TEST(Rotate, FlattensAPlantedOutlierChannel) {
  ThreadPool pool(2);
  for (bool tied : {true, false}) {
    SCOPED_TRACE(tied ? "tied" : "untied");
    Model m = random_model("llama", 64, 96, tied, 9);
    // Channel 5 of the residual stream carries 40× the others (as massive activations do) and
    // the attention norm amplifies it further.
    float* e = const_cast<float*>(m.embedding.dense().f32());
    for (int64_t v = 0; v < m.config.vocab_size; ++v) e[v * 64 + 5] *= 40.0f;
    const_cast<float*>(m.layers[0].attn_norm.f32())[5] = 3.0f;
    const auto ids = testutil::test_token_ids(32, m.config.vocab_size);
    const double before = attn_input_peak_ratio(m, ids, pool);
    const Tensor logits = forward(m, ids, pool);
    Model rotated = m;
    rotate_model(rotated, {.seed = 1}, pool);
    const double after = attn_input_peak_ratio(rotated, ids, pool);
    std::printf("layer-0 attention input, max/mean of channel absmax (%s): %.2f -> %.2f\n", tied ? "tied" : "untied",
                before, after);
    // Unrotated, one channel dominates (RMSNorm bounds it near √64 = 8 times the rms, times its
    // gain 3); rotated, its energy is spread evenly over all channels (a Gaussian-like spread:
    // max/mean of the absmax of 64 channels stays below 3).
    EXPECT_GT(before, 8.0);
    EXPECT_LT(after, 3.0);
    EXPECT_LT(after, before / 4.0);
    EXPECT_LT(rel_diff(logits, forward(rotated, ids, pool)), kRelTol);
  }
}

TEST(Rotate, GgufRoundTripKeepsRotationAndLogits) {
  ThreadPool pool(2);
  for (const Case& c : all_cases()) {
    SCOPED_TRACE(case_name(c));
    Model m = random_model(c.type, 48, 80, c.tied, 21);
    rotate_model(m, {.seed = 0xABCDEF0123456789ull, .rotate_down = c.rotate_down}, pool);
    const auto path = testing::temp_dir("rot_gguf_" + case_name(c)) / "m.gguf";
    write_gguf_model(m, path, {}, pool);
    const io::GgufFile file = io::GgufFile::open(path);
    const bool online = c.tied || c.rotate_down;
    const io::GgufValue* requires_calq = file.find(kCalqRequiresCalqKey);
    EXPECT_EQ(requires_calq != nullptr && requires_calq->as_bool("t"), online);
    const Model back = load_gguf_model(path, pool);
    ASSERT_TRUE(back.config.rotation);
    EXPECT_EQ(back.config.rotation->residual_seed, 0xABCDEF0123456789ull);
    EXPECT_EQ(back.config.rotation->residual_online, c.tied);
    EXPECT_EQ(back.config.rotation->down_seed, m.config.rotation->down_seed);
    const auto ids = testutil::test_token_ids(11, m.config.vocab_size);
    // F32 tensors round-trip exactly, so the logits are the same bits.
    EXPECT_TRUE(same_bits(forward(m, ids, pool), forward(back, ids, pool)));
    // Rotating again is refused.
    Model again = back;
    EXPECT_THROW(rotate_model(again, {}, pool), Error);
  }
}

TEST(Rotate, GgufLoaderRefusesMalformedRotationKeys) {
  ThreadPool pool(1);
  const Model m = random_model("llama", 48, 80, true, 6);
  const auto dir = testing::temp_dir("rot_bad_keys");
  const auto expect_format_error = [&](io::GgufMetadata extra, const std::string& needle) {
    const auto path = dir / "m.gguf";
    write_gguf_model(m, path, {.extra_metadata = std::move(extra)}, pool);
    try {
      load_gguf_model(path, pool);
      ADD_FAILURE() << "no error for " << needle;
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::kFormat);
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_format_error({{"calq.rotation.down_seed", io::GgufValue::of_uint64(1)}}, "calq.rotation.residual_seed");
  expect_format_error({{"calq.rotation.residual_seed", io::GgufValue::of_uint32(1)},
                       {"calq.rotation.residual_online", io::GgufValue::of_bool(true)}},
                      "must be a uint64");
  expect_format_error({{"calq.rotation.residual_seed", io::GgufValue::of_uint64(1)}}, "calq.rotation.residual_online");
  // Without the keys the same file loads unrotated.
  write_gguf_model(m, dir / "plain.gguf", {}, pool);
  EXPECT_FALSE(load_gguf_model(dir / "plain.gguf", pool).config.rotation);
}

TEST(Rotate, ErrorsOnQuantizedOrUnsupported) {
  ThreadPool pool(1);
  Model m = random_model("llama", 64, 96, false, 2);
  const Tensor& wk = m.layers[1].wk.dense();
  m.layers[1].wk = QuantizedTensor::quantize(pool, format_by_name("q8_0"), wk.f32(), wk.dim(0), wk.dim(1),
                                             {.tensor_name = "k"});
  try {
    rotate_model(m, {}, pool);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("model.layers.1.self_attn.k_proj.weight"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(m.config.rotation);

  Model odd = random_model("llama", 52, 96, false, 2);  // 52 = 4·13: no Hadamard matrix here
  try {
    rotate_model(odd, {}, pool);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kUnsupported);
    EXPECT_NE(std::string(e.what()).find("hidden_size 52"), std::string::npos) << e.what();
  }
  Model odd_down = random_model("llama", 64, 100, false, 2);  // intermediate 100 = 4·25
  EXPECT_NO_THROW(rotate_model(odd_down, {}, pool));
  Model odd_down2 = random_model("llama", 64, 100, false, 2);
  EXPECT_THROW(rotate_model(odd_down2, {.rotate_down = true}, pool), Error);
}

// The reference model: hidden 512 (plain FWHT), intermediate 1536 = 12·128 (Kronecker), tied.
TEST(Rotate, ReferenceModelLogitsUnchanged) {
  CALQ_REQUIRE_SHARED("models/calq-ref-llama");
  ThreadPool pool(2);
  const Model original = load_hf_model(testing::shared_dir() / "models/calq-ref-llama", pool);
  const auto ids = testutil::test_token_ids(24, original.config.vocab_size);
  const Tensor before = forward(original, ids, pool);
  Model rotated = original;
  rotate_model(rotated, {.seed = 2024, .rotate_down = true}, pool);
  ASSERT_TRUE(rotated.config.rotation && rotated.config.rotation->residual_online);
  const double rel = rel_diff(before, forward(rotated, ids, pool));
  std::printf("calq-ref-llama, rotate_down: max |Δlogit| / max |logit| = %.2e\n", rel);
  EXPECT_LT(rel, kRelTol);
}

TEST(Rotate, ThreadCountDoesNotChangeBits) {
  ThreadPool one(1), four(4);
  Model a = random_model("qwen2", 48, 80, false, 4);
  Model b = random_model("qwen2", 48, 80, false, 4);
  rotate_model(a, {.seed = 8, .rotate_down = true}, one);
  rotate_model(b, {.seed = 8, .rotate_down = true}, four);
  EXPECT_TRUE(same_bits(a.embedding.dense(), b.embedding.dense()));
  EXPECT_TRUE(same_bits(a.output.dense(), b.output.dense()));
  for (size_t l = 0; l < a.layers.size(); ++l) {
    for (TensorRole role : {TensorRole::kAttnQ, TensorRole::kAttnK, TensorRole::kAttnV, TensorRole::kAttnOut,
                            TensorRole::kMlpGate, TensorRole::kMlpUp, TensorRole::kMlpDown}) {
      EXPECT_TRUE(same_bits(a.layers[l].linear(role).dense(), b.layers[l].linear(role).dense()));
    }
  }
  const auto ids = testutil::test_token_ids(9, a.config.vocab_size);
  EXPECT_TRUE(same_bits(forward(a, ids, one), forward(b, ids, four)));
}

}  // namespace
}  // namespace calq::model
