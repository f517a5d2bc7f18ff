// Tiny random Qwen2 (q/k/v biases) and Mistral (sliding window shorter than the sequence) models,
// written by calq's own writers, load and match the naive double-precision implementation; the
// bias and the window each demonstrably change the result.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/mapped_file.h"
#include "model/forward.h"
#include "model/tiny_model_testutil.h"
#include "support/shared_dir.h"

namespace calq::model {
namespace {

double max_abs_diff(const Tensor& a, const std::vector<double>& b) {
  double e = 0;
  for (size_t i = 0; i < b.size(); ++i) e = std::max(e, std::abs(a.f32()[i] - b[i]));
  return e;
}

double max_abs_diff(const Tensor& a, const Tensor& b) {
  double e = 0;
  for (int64_t i = 0; i < a.numel(); ++i) e = std::max(e, static_cast<double>(std::abs(a.f32()[i] - b.f32()[i])));
  return e;
}

TEST(Qwen2, BiasPathMatchesNaive) {
  ThreadPool pool(2);
  for (const bool tied : {true, false}) {
    const Model m =
        testutil::load_tiny_model(testing::temp_dir("qwen2"), {.tied = tied, .model_type = "qwen2"}, pool);
    EXPECT_EQ(m.config.model_type, "qwen2");
    ASSERT_TRUE(m.config.qkv_bias);
    EXPECT_EQ(m.config.sliding_window, 0);  // use_sliding_window false: the stored value is ignored
    ASSERT_EQ(m.layers[1].bq.shape(), Shape({32}));
    ASSERT_EQ(m.layers[1].bk.shape(), Shape({16}));
    const int64_t per_layer = 2 * 32 + 32 * 32 + 2 * 16 * 32 + 32 * 32 + 3 * 32 * 48 + 32 + 2 * 16;
    EXPECT_EQ(m.parameter_count(), 61 * 32 * (tied ? 1 : 2) + 32 + 2 * per_layer);

    const auto ids = testutil::test_token_ids(21, m.config.vocab_size);
    const Tensor logits = forward(m, ids, pool);
    EXPECT_LT(max_abs_diff(logits, testutil::naive_forward(m, ids)), 5e-5);

    // The biases matter: without them the naive model disagrees by far more than the tolerance.
    Model no_bias = m;
    for (auto& l : no_bias.layers) {
      for (Tensor* b : {&l.bq, &l.bk, &l.bv}) *b = Tensor::zeros(DType::kF32, b->shape());
    }
    EXPECT_GT(max_abs_diff(logits, testutil::naive_forward(no_bias, ids)), 1e-2);
  }
}

TEST(Qwen2, WindowAppliesFromMaxWindowLayers) {
  ThreadPool pool(2);
  const Model m =
      testutil::load_tiny_model(testing::temp_dir("qwen2w"),
                                {.model_type = "qwen2", .sliding_window = 5, .max_window_layers = 1}, pool);
  EXPECT_EQ(m.config.sliding_window, 5);
  EXPECT_EQ(m.config.window_for_layer(0), 0);
  EXPECT_EQ(m.config.window_for_layer(1), 5);
  const auto ids = testutil::test_token_ids(23, m.config.vocab_size);
  EXPECT_LT(max_abs_diff(forward(m, ids, pool), testutil::naive_forward(m, ids)), 5e-5);
}

TEST(Mistral, SlidingWindowShorterThanSequenceMatchesNaive) {
  ThreadPool pool(2);
  const Model m = testutil::load_tiny_model(testing::temp_dir("mistral"),
                                            {.tied = false, .model_type = "mistral", .sliding_window = 4}, pool);
  EXPECT_EQ(m.config.model_type, "mistral");
  EXPECT_FALSE(m.config.qkv_bias);
  EXPECT_EQ(m.config.window_for_layer(0), 4);
  EXPECT_EQ(m.config.window_for_layer(1), 4);
  // 70 tokens: more than one 64-row query block, so blocks that start past the window are covered.
  const auto ids = testutil::test_token_ids(70, m.config.vocab_size);
  const Tensor windowed = forward(m, ids, pool);
  EXPECT_LT(max_abs_diff(windowed, testutil::naive_forward(m, ids)), 5e-5);

  // The window matters once the sequence is longer than it ...
  Model full = m;
  full.config.sliding_window = 0;
  const Tensor unwindowed = forward(full, ids, pool);
  EXPECT_GT(max_abs_diff(windowed, unwindowed), 1e-2);
  // ... and the first W positions, which see everything either way, agree exactly.
  EXPECT_EQ(std::memcmp(windowed.data(), unwindowed.data(), 4 * sizeof(float) * m.config.vocab_size), 0);

  // A sequence no longer than the window is plain causal attention, bit for bit.
  const std::vector<int32_t> short_ids(ids.begin(), ids.begin() + 4);
  const Tensor a = forward(m, short_ids, pool);
  const Tensor b = forward(full, short_ids, pool);
  EXPECT_EQ(std::memcmp(a.data(), b.data(), a.nbytes()), 0);
}

TEST(Mistral, NullWindowIsFullAttention) {
  ThreadPool pool(1);
  const Model m = testutil::load_tiny_model(testing::temp_dir("mistral0"), {.model_type = "mistral"}, pool);
  EXPECT_EQ(m.config.sliding_window, 0);
  EXPECT_EQ(m.config.window_for_layer(1), 0);
}

TEST(ArchModels, ThreadCountDoesNotChangeLogits) {
  ThreadPool one(1), three(3);
  for (const char* type : {"qwen2", "mistral"}) {
    const Model m =
        testutil::load_tiny_model(testing::temp_dir("threads"), {.model_type = type, .sliding_window = 7}, one);
    const auto ids = testutil::test_token_ids(90, m.config.vocab_size);
    const Tensor a = forward(m, ids, one);
    const Tensor b = forward(m, ids, three);
    EXPECT_EQ(std::memcmp(a.data(), b.data(), a.nbytes()), 0) << type;
  }
}

TEST(ArchModels, HookSeesInputBeforeBias) {
  ThreadPool pool(1);
  const Model m = testutil::load_tiny_model(testing::temp_dir("hookbias"), {.model_type = "qwen2"}, pool);
  const auto ids = testutil::test_token_ids(5, m.config.vocab_size);
  std::vector<float> q_input;
  const LinearHook hook = [&](const LinearInput& in) {
    if (in.layer == 0 && in.role == TensorRole::kAttnQ) q_input.assign(in.x, in.x + in.rows * in.cols);
  };
  forward(m, ids, pool, &hook);
  std::vector<float> emb(5 * 32), normed(5 * 32);
  embed_tokens(m, ids, emb.data());
  rms_norm_rows(emb.data(), m.layers[0].attn_norm.f32(), normed.data(), 5, 32, m.config.rms_norm_eps, pool);
  EXPECT_EQ(q_input, normed);
}

TEST(ArchModels, UnknownModelTypeListsSupported) {
  const auto dir = testing::temp_dir("unknown");
  testutil::write_tiny_model(dir, {});
  auto cfg = nlohmann::json::parse(read_text_file(dir / "config.json"));
  cfg["model_type"] = "phi3";
  const std::string text = cfg.dump();
  write_file_atomic(dir / "config.json", std::as_bytes(std::span(text.data(), text.size())));
  ThreadPool pool(1);
  try {
    load_hf_model(dir, pool);
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kUnsupported);
    EXPECT_NE(std::string(e.what()).find("'phi3' is not supported (supported: llama, mistral, qwen2, qwen3, mixtral, qwen2_moe, qwen3_moe)"),
              std::string::npos)
        << e.what();
  }
  std::filesystem::remove_all(dir);
}

TEST(ArchModels, Qwen2MissingBiasIsNamed) {
  const auto dir = testing::temp_dir("nobias");
  testutil::write_tiny_model(dir, {.model_type = "qwen2"});
  // A Llama-layout folder claiming to be Qwen2 lacks the biases.
  testutil::write_tiny_model(dir / "llama", {});
  std::filesystem::copy_file(dir / "llama/model.safetensors", dir / "model.safetensors",
                             std::filesystem::copy_options::overwrite_existing);
  ThreadPool pool(1);
  try {
    load_hf_model(dir, pool);
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("model.layers.0.self_attn.q_proj.bias"), std::string::npos) << e.what();
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace calq::model
