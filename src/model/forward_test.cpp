#include "model/forward.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <map>
#include <vector>

#include "core/error.h"
#include "model/tiny_model_testutil.h"
#include "support/shared_dir.h"

namespace calq::model {
namespace {

TEST(Forward, DecoderLayerMatchesNaiveScalar) {
  ThreadPool pool(2);
  const Model m = testutil::load_tiny_model(testing::temp_dir("layer"), {.tied = true}, pool);
  const int64_t T = 19, H = m.config.hidden_size;
  const auto ids = testutil::test_token_ids(T, m.config.vocab_size);
  std::vector<float> hidden(static_cast<size_t>(T * H));
  embed_tokens(m, ids, hidden.data());
  std::vector<double> naive(hidden.begin(), hidden.end());
  LayerScratch scratch(m.config, T);
  decoder_layer_forward(m.config, m.layers[1], 1, hidden.data(), T, scratch, pool);
  testutil::naive_decoder_layer(m.config, m.layers[1], naive, T);
  double max_err = 0;
  for (size_t i = 0; i < hidden.size(); ++i) max_err = std::max(max_err, std::abs(hidden[i] - naive[i]));
  EXPECT_LT(max_err, 2e-5);
  // Sanity: the layer changed the state (a no-op layer would also "match" a broken reference).
  std::vector<float> before(static_cast<size_t>(T * H));
  embed_tokens(m, ids, before.data());
  double moved = 0;
  for (size_t i = 0; i < hidden.size(); ++i) moved = std::max(moved, double(std::abs(hidden[i] - before[i])));
  EXPECT_GT(moved, 0.05);
}

TEST(Forward, HooksSeeEveryLinearInput) {
  ThreadPool pool(2);
  const Model m = testutil::load_tiny_model(testing::temp_dir("hooks"), {.tied = false}, pool);
  const auto ids = testutil::test_token_ids(7, m.config.vocab_size);
  std::vector<std::pair<int64_t, TensorRole>> calls;
  std::map<std::pair<int64_t, TensorRole>, std::vector<float>> inputs;
  const LinearHook hook = [&](const LinearInput& in) {
    calls.emplace_back(in.layer, in.role);
    inputs[{in.layer, in.role}].assign(in.x, in.x + in.rows * in.cols);
    EXPECT_EQ(in.rows, 7);
  };
  forward(m, ids, pool, &hook);
  ASSERT_EQ(calls.size(), 2u * 7u + 1u);
  const std::vector<TensorRole> order = {TensorRole::kAttnQ, TensorRole::kAttnK, TensorRole::kAttnV,
                                         TensorRole::kAttnOut, TensorRole::kMlpGate, TensorRole::kMlpUp,
                                         TensorRole::kMlpDown};
  for (size_t i = 0; i < 14; ++i) {
    EXPECT_EQ(calls[i].first, static_cast<int64_t>(i / 7));
    EXPECT_EQ(calls[i].second, order[i % 7]);
  }
  EXPECT_EQ(calls.back().first, -1);
  EXPECT_EQ(calls.back().second, TensorRole::kOutput);
  // Layer 0's q input is the RMS-normed embedding.
  std::vector<float> emb(7 * 32), normed(7 * 32);
  embed_tokens(m, ids, emb.data());
  rms_norm_rows(emb.data(), m.layers[0].attn_norm.f32(), normed.data(), 7, 32, m.config.rms_norm_eps, pool);
  EXPECT_EQ(inputs[std::make_pair(int64_t{0}, TensorRole::kAttnQ)], normed);
  EXPECT_EQ(inputs[std::make_pair(int64_t{0}, TensorRole::kAttnK)], normed);
  EXPECT_EQ(inputs[std::make_pair(int64_t{1}, TensorRole::kMlpDown)].size(), 7u * 48u);
}

TEST(Forward, ThreadCountDoesNotChangeLogits) {
  ThreadPool one(1), three(3);
  const Model m = testutil::load_tiny_model(testing::temp_dir("threads"), {.tied = true}, one);
  const auto ids = testutil::test_token_ids(33, m.config.vocab_size);
  const Tensor a = forward(m, ids, one);
  const Tensor b = forward(m, ids, three);
  ASSERT_EQ(a.nbytes(), b.nbytes());
  EXPECT_EQ(std::memcmp(a.data(), b.data(), a.nbytes()), 0);
}

TEST(Forward, RejectsOutOfVocabularyIds) {
  ThreadPool pool(1);
  const Model m = testutil::load_tiny_model(testing::temp_dir("oov"), {.tied = true}, pool);
  const std::vector<int32_t> ids = {1, 2, static_cast<int32_t>(m.config.vocab_size)};
  EXPECT_THROW(forward(m, ids, pool), Error);
}

TEST(Forward, RopeTablesMatchClosedForm) {
  const int64_t T = 600, hd = 64;
  std::vector<float> c(T * hd / 2), s(T * hd / 2);
  rope_tables(T, hd, 10000.0, c.data(), s.data());
  for (int64_t t : {0, 1, 255, 599}) {
    for (int64_t i : {0, 1, 17, 31}) {
      const double angle = static_cast<double>(t) * std::pow(10000.0, -2.0 * i / hd);
      // float32 angle rounding (as transformers does) costs at most ~t * 2^-24 radians.
      EXPECT_NEAR(c[t * hd / 2 + i], std::cos(angle), 1e-6 + t * 1.2e-7);
      EXPECT_NEAR(s[t * hd / 2 + i], std::sin(angle), 1e-6 + t * 1.2e-7);
    }
  }
}

}  // namespace
}  // namespace calq::model
