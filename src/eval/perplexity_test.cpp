#include "eval/perplexity.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "core/error.h"
#include "model/forward.h"
#include "model/tiny_model_testutil.h"
#include "support/shared_dir.h"

namespace calq::eval {
namespace {

TEST(SequenceNll, MatchesNaiveLogSoftmax) {
  const int64_t rows = 5, vocab = 1003;
  std::mt19937 rng(3);
  std::normal_distribution<float> d(0.0f, 5.0f);
  std::vector<float> logits(rows * vocab);
  for (auto& x : logits) x = d(rng);
  const std::vector<int32_t> targets = {7, 1002, 0, 500, 99};
  double naive = 0;
  for (int64_t t = 0; t + 1 < rows; ++t) {
    double z = 0;
    for (int64_t v = 0; v < vocab; ++v) z += std::exp(double(logits[t * vocab + v]));
    naive += std::log(z) - logits[t * vocab + targets[t]];
  }
  EXPECT_NEAR(sequence_nll(logits.data(), rows, vocab, targets), naive, 1e-9 * naive);
}

TEST(Perplexity, WindowsAndThreadInvariance) {
  const auto dir = testing::temp_dir("ppl");
  model::testutil::write_tiny_model(dir, {.tied = true});
  ThreadPool one(1), two(2);
  const model::Model m = model::load_hf_model(dir, one);
  std::vector<int32_t> ids(1000);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>((i * i + 3 * i) % 61);

  const PerplexityResult a = evaluate_perplexity(m, ids, {.ctx = 64}, one);
  const PerplexityResult b = evaluate_perplexity(m, ids, {.ctx = 64}, two);
  EXPECT_EQ(a.n_windows, 15);  // 1000 / 64, tail dropped
  EXPECT_EQ(a.n_predicted, 15 * 63);
  EXPECT_EQ(a.nll_per_window, b.nll_per_window);
  EXPECT_EQ(a.ppl, b.ppl);

  // Window 3 by hand: forward + sequence_nll over exactly ids[192, 256).
  const std::span<const int32_t> w3(ids.data() + 192, 64);
  const Tensor logits = model::forward(m, w3, one);
  EXPECT_EQ(a.nll_per_window[3], sequence_nll(logits.f32(), 64, 61, w3.subspan(1)));

  int64_t calls = 0;
  const PerplexityResult c = evaluate_perplexity(
      m, ids, {.ctx = 64, .max_windows = 4, .on_progress = [&](int64_t done, int64_t total) {
                 EXPECT_EQ(total, 4);
                 EXPECT_EQ(done, ++calls);
               }},
      two);
  EXPECT_EQ(c.n_windows, 4);
  EXPECT_EQ(calls, 4);
  EXPECT_DOUBLE_EQ(c.ppl, ppl_of_prefix(a, 4));
  EXPECT_THROW(evaluate_perplexity(m, std::span(ids).first(10), {.ctx = 64}, one), Error);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace calq::eval
