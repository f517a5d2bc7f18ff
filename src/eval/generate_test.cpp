#include "eval/generate.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <vector>

#include "core/error.h"
#include "eval/compare.h"
#include "model/forward.h"
#include "model/tiny_model_testutil.h"
#include "support/error_of.h"
#include "support/shared_dir.h"

namespace calq::eval {
namespace {

class GenerateTiny : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::temp_dir("generate");
    ThreadPool pool(1);
    model_ = model::testutil::load_tiny_model(dir_ / "m", {.seed = 3}, pool);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // Argmax of the last logits row of forward(ids).
  int32_t next_of(const std::vector<int32_t>& ids, ThreadPool& pool) const {
    const Tensor logits = model::forward(model_, ids, pool);
    const int64_t vocab = model_.config.vocab_size;
    return static_cast<int32_t>(argmax_row(logits.f32() + (static_cast<int64_t>(ids.size()) - 1) * vocab, vocab));
  }

  std::filesystem::path dir_;
  model::Model model_;
  std::vector<int32_t> prompt_ = {5, 17, 3, 42, 8};
};

TEST_F(GenerateTiny, EachTokenIsArgmaxOfTheGrowingSequence) {
  ThreadPool pool(2);
  const std::vector<int32_t> out = generate_greedy(model_, prompt_, 6, std::nullopt, pool);
  ASSERT_EQ(out.size(), 6u);
  EXPECT_EQ(out[0], next_of(prompt_, pool));
  std::vector<int32_t> seq = prompt_;
  for (const int32_t t : out) {
    EXPECT_EQ(t, next_of(seq, pool));
    seq.push_back(t);
  }
}

TEST_F(GenerateTiny, DeterministicForAnyThreadCount) {
  ThreadPool one(1), three(3);
  const auto a = generate_greedy(model_, prompt_, 8, std::nullopt, one);
  EXPECT_EQ(a, generate_greedy(model_, prompt_, 8, std::nullopt, one));
  EXPECT_EQ(a, generate_greedy(model_, prompt_, 8, std::nullopt, three));
}

TEST_F(GenerateTiny, StopsAtEosAndAtZeroTokens) {
  ThreadPool pool(2);
  EXPECT_TRUE(generate_greedy(model_, prompt_, 0, std::nullopt, pool).empty());
  const auto free_run = generate_greedy(model_, prompt_, 4, std::nullopt, pool);
  ASSERT_EQ(free_run.size(), 4u);
  // eos = the second token generated: the run ends right after it, eos included.
  const auto stopped = generate_greedy(model_, prompt_, 4, free_run[1], pool);
  const auto first = std::find(free_run.begin(), free_run.end(), free_run[1]);
  EXPECT_EQ(stopped, std::vector<int32_t>(free_run.begin(), first + 1));
  // An eos that never comes changes nothing.
  EXPECT_EQ(generate_greedy(model_, prompt_, 4, int32_t{-7}, pool), free_run);
}

TEST_F(GenerateTiny, BadArgumentsAreErrors) {
  ThreadPool pool(1);
  ErrorKind kind = ErrorKind::kIo;
  std::string msg = testing::error_of([&] { generate_greedy(model_, {}, 3, std::nullopt, pool); }, &kind);
  EXPECT_EQ(kind, ErrorKind::kInvalidArgument);
  EXPECT_NE(msg.find("non-empty prompt"), std::string::npos) << msg;
  msg = testing::error_of([&] { generate_greedy(model_, prompt_, -1, std::nullopt, pool); }, &kind);
  EXPECT_EQ(kind, ErrorKind::kInvalidArgument);
  EXPECT_NE(msg.find("max_new_tokens"), std::string::npos) << msg;
}

}  // namespace
}  // namespace calq::eval
