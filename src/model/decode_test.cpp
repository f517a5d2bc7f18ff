#include "model/decode.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "core/error.h"
#include "model/forward.h"
#include "model/kv_cache.h"
#include "model/tiny_model_testutil.h"
#include "support/shared_dir.h"

namespace calq::model {
namespace {

// Two different sequences decoded token by token in one batch; every step's logits against
// model::forward on that sequence's prefix.
void expect_decode_matches_forward(const Model& m, int64_t T, ThreadPool& pool) {
  const int64_t V = m.config.vocab_size;
  std::vector<std::vector<int32_t>> seqs = {testutil::test_token_ids(T, V), testutil::test_token_ids(T + 3, V)};
  seqs[1].erase(seqs[1].begin(), seqs[1].begin() + 3);
  ASSERT_NE(seqs[0], seqs[1]);
  std::vector<Tensor> full;
  for (const auto& s : seqs) full.push_back(forward(m, s, pool));
  DecodeCache cache(m.config, 2, T);
  std::vector<float> logits(static_cast<size_t>(2 * V));
  double max_err = 0, max_abs = 0;
  for (int64_t t = 0; t < T; ++t) {
    const std::vector<int32_t> ids = {seqs[0][static_cast<size_t>(t)], seqs[1][static_cast<size_t>(t)]};
    decode_step(m, ids, cache, logits.data(), pool);
    EXPECT_EQ(cache.length(), t + 1);
    for (int64_t b = 0; b < 2; ++b) {
      const float* want = full[static_cast<size_t>(b)].f32() + t * V;
      for (int64_t i = 0; i < V; ++i) {
        max_err = std::max(max_err, static_cast<double>(std::abs(logits[static_cast<size_t>(b * V + i)] - want[i])));
        max_abs = std::max(max_abs, static_cast<double>(std::abs(want[i])));
      }
    }
  }
  EXPECT_GT(max_abs, 0.1);  // the logits are not all ~0 (which would "match" anything)
  EXPECT_LT(max_err, 2e-5 * std::max(1.0, max_abs));
}

TEST(Decode, MatchesForwardLlama) {
  ThreadPool pool(2);
  const Model m = testutil::load_tiny_model(testing::temp_dir("decode_llama"), {.tied = false}, pool);
  expect_decode_matches_forward(m, 21, pool);
}

TEST(Decode, MatchesForwardQwen2BiasesAndWindow) {
  ThreadPool pool(2);
  const Model m = testutil::load_tiny_model(testing::temp_dir("decode_qwen2"),
                                            {.model_type = "qwen2", .sliding_window = 5, .max_window_layers = 1}, pool);
  ASSERT_TRUE(m.config.qkv_bias);
  expect_decode_matches_forward(m, 17, pool);
}

TEST(Decode, MatchesForwardMistralWindow) {
  ThreadPool pool(2);
  const Model m = testutil::load_tiny_model(testing::temp_dir("decode_mistral"),
                                            {.model_type = "mistral", .sliding_window = 4}, pool);
  expect_decode_matches_forward(m, 13, pool);
}

TEST(Decode, MatchesForwardWithQuantizedKvCache) {
  ThreadPool pool(2);
  Model m = testutil::load_tiny_model(testing::temp_dir("decode_kv"), {.tied = true}, pool);
  m.config.kv_cache = kv_cache_format_by_name("int8");
  expect_decode_matches_forward(m, 11, pool);
}

TEST(Decode, ThreadCountDoesNotChangeLogits) {
  ThreadPool one(1), three(3);
  const Model m = testutil::load_tiny_model(testing::temp_dir("decode_threads"), {.tied = true}, one);
  const int64_t V = m.config.vocab_size, T = 9;
  const auto ids = testutil::test_token_ids(3 * T, V);
  DecodeCache a(m.config, 3, T), b(m.config, 3, T);
  std::vector<float> la(static_cast<size_t>(3 * V)), lb(la.size());
  for (int64_t t = 0; t < T; ++t) {
    const std::vector<int32_t> step(ids.begin() + 3 * t, ids.begin() + 3 * t + 3);
    decode_step(m, step, a, la.data(), one);
    decode_step(m, step, b, lb.data(), three);
    ASSERT_EQ(std::memcmp(la.data(), lb.data(), la.size() * sizeof(float)), 0) << "step " << t;
  }
}

TEST(Decode, RejectsStepsPastTheCacheAndWrongBatch) {
  ThreadPool pool(1);
  const Model m = testutil::load_tiny_model(testing::temp_dir("decode_errors"), {.tied = true}, pool);
  DecodeCache cache(m.config, 1, 2);
  std::vector<float> logits(static_cast<size_t>(2 * m.config.vocab_size));
  const std::vector<int32_t> two = {1, 2};
  EXPECT_THROW(decode_step(m, two, cache, logits.data(), pool), Error);
  const std::vector<int32_t> one = {1};
  decode_step(m, one, cache, logits.data(), pool);
  decode_step(m, one, cache, logits.data(), pool);
  try {
    decode_step(m, one, cache, logits.data(), pool);
    FAIL() << "a third step into a cache of 2 must throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cache length 2"), std::string::npos) << e.what();
  }
  EXPECT_EQ(DecodeCache::bytes_for(m.config, 3, 10), 2 * m.config.num_layers * 3 * 10 * m.config.kv_dim() * 4);
}

}  // namespace
}  // namespace calq::model
