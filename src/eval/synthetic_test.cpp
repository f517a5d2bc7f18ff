#include "eval/synthetic.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core/error.h"
#include "eval/generate.h"
#include "model/tiny_model_testutil.h"
#include "support/shared_dir.h"

namespace calq::eval {
namespace {

model::Model tiny(const std::string& name, ThreadPool& pool) {
  model::Model m = model::testutil::load_tiny_model(testing::temp_dir(name), {.tied = true}, pool);
  m.config.bos_token_id = 1;
  m.config.eos_token_id = 2;
  return m;
}

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(Synthetic, SameSequencesForAnyThreadCount) {
  ThreadPool one(1), two(2);
  const model::Model m = tiny("synth_threads", one);
  const SyntheticOptions o{.sequences = 5, .seq_len = 24, .seed = 7, .bos = 1, .max_batch = 3};
  const auto a = generate_synthetic(m, o, one);
  const auto b = generate_synthetic(m, o, two);
  EXPECT_EQ(a, b);
  EXPECT_EQ(generate_synthetic(m, o, two), b);  // and run to run
}

TEST(Synthetic, ShapeVocabularyAndOpening) {
  ThreadPool pool(2);
  const model::Model m = tiny("synth_shape", pool);
  std::vector<int64_t> done;
  const auto seqs = generate_synthetic(m, {.sequences = 7, .seq_len = 19, .seed = 3, .bos = 1, .max_batch = 4}, pool,
                                       [&](int64_t d, int64_t total) {
                                         EXPECT_EQ(total, 7);
                                         done.push_back(d);
                                       });
  EXPECT_EQ(done, (std::vector<int64_t>{4, 7}));
  ASSERT_EQ(seqs.size(), 7u);
  std::vector<int32_t> firsts;
  for (const auto& s : seqs) {
    ASSERT_EQ(s.size(), 19u);
    EXPECT_EQ(s[0], 1);                   // BOS
    EXPECT_NE(s[1], 1);                   // the random token is neither BOS
    EXPECT_NE(s[1], 2);                   // nor EOS
    for (const int32_t id : s) {
      EXPECT_GE(id, 0);
      EXPECT_LT(id, m.config.vocab_size);
    }
    firsts.push_back(s[1]);
  }
  std::sort(firsts.begin(), firsts.end());
  EXPECT_GT(std::unique(firsts.begin(), firsts.end()) - firsts.begin(), 3);  // spread over the vocabulary
}

TEST(Synthetic, GreedyOpeningThenSampling) {
  ThreadPool pool(2);
  const model::Model m = tiny("synth_greedy", pool);
  const int64_t T = 16;
  // top_k = 1 makes every token after the random one the argmax: exactly greedy decoding with
  // the full forward pass (generate.h) from [BOS, random token].
  const auto all_greedy = generate_synthetic(m, {.sequences = 3, .seq_len = T, .seed = 11, .top_k = 1, .bos = 1}, pool);
  for (const auto& s : all_greedy) {
    const std::vector<int32_t> prompt(s.begin(), s.begin() + 2);
    const std::vector<int32_t> rest = generate_greedy(m, prompt, T - 2, std::nullopt, pool);
    EXPECT_EQ(std::vector<int32_t>(s.begin() + 2, s.end()), rest);
  }
  // Sampling at temperature 1: same opening (the first 2 + greedy tokens), then another path.
  const auto sampled = generate_synthetic(m, {.sequences = 3, .seq_len = T, .seed = 11, .greedy = 3, .bos = 1}, pool);
  int differing = 0;
  for (size_t i = 0; i < sampled.size(); ++i) {
    EXPECT_EQ(std::vector<int32_t>(sampled[i].begin(), sampled[i].begin() + 5),
              std::vector<int32_t>(all_greedy[i].begin(), all_greedy[i].begin() + 5));
    differing += sampled[i] != all_greedy[i];
  }
  EXPECT_GT(differing, 0);
}

TEST(Synthetic, SeedsGiveDifferentSequences) {
  ThreadPool pool(2);
  const model::Model m = tiny("synth_seeds", pool);
  const auto a = generate_synthetic(m, {.sequences = 4, .seq_len = 12, .seed = 0, .bos = 1}, pool);
  const auto b = generate_synthetic(m, {.sequences = 4, .seq_len = 12, .seed = 1, .bos = 1}, pool);
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NE(a[i], b[i]) << "sequence " << i;
  // Within one run the sequences differ from each other too (each has its own stream).
  EXPECT_NE(a[0], a[1]);
}

TEST(Synthetic, WithoutStartTokenBeginsWithTheRandomToken) {
  ThreadPool pool(1);
  model::Model m = tiny("synth_nobos", pool);
  m.config.bos_token_id.reset();
  m.config.eos_token_id.reset();
  EXPECT_EQ(default_start_token(m.config), std::nullopt);
  m.config.eos_token_id = 2;
  EXPECT_EQ(default_start_token(m.config), 2);  // GPT-2 style: EOS starts documents
  m.config.bos_token_id = 1;
  EXPECT_EQ(default_start_token(m.config), 1);
  const auto s = generate_synthetic(m, {.sequences = 2, .seq_len = 6, .seed = 5, .first_token_vocab = 3}, pool);
  for (const auto& seq : s) {
    ASSERT_EQ(seq.size(), 6u);
    EXPECT_EQ(seq[0], 0);  // [0, 3) without BOS 1 and EOS 2
  }
}

TEST(Synthetic, OptionErrorsNameTheOption) {
  ThreadPool pool(1);
  model::Model m = tiny("synth_errors", pool);
  EXPECT_NE(error_of([&] { generate_synthetic(m, {.sequences = 0}, pool); }).find("sequence count"), std::string::npos);
  EXPECT_NE(error_of([&] { generate_synthetic(m, {.seq_len = 1}, pool); }).find("seq_len"), std::string::npos);
  EXPECT_NE(error_of([&] { generate_synthetic(m, {.greedy = -1}, pool); }).find("'greedy'"), std::string::npos);
  EXPECT_NE(error_of([&] { generate_synthetic(m, {.top_k = -2}, pool); }).find("'top_k'"), std::string::npos);
  EXPECT_NE(error_of([&] { generate_synthetic(m, {.bos = 999}, pool); }).find("start token 999"), std::string::npos);
  generate_synthetic(m, {.seq_len = 3, .first_token_vocab = 2}, pool);  // token 0 is left (EOS is 2)
  m.config.eos_token_id = 0;
  EXPECT_NE(error_of([&] { generate_synthetic(m, {.first_token_vocab = 2}, pool); }).find("besides BOS/EOS"),
            std::string::npos);
}

TEST(Synthetic, ParsesTheCalibrationSpelling) {
  EXPECT_EQ(parse_synthetic_spec("calib.txt"), std::nullopt);
  EXPECT_EQ(parse_synthetic_spec("data/generate:3"), std::nullopt);
  const auto a = parse_synthetic_spec("generate:32");
  ASSERT_TRUE(a);
  EXPECT_EQ(a->sequences, 32);
  EXPECT_EQ(a->greedy, 3);
  EXPECT_EQ(a->top_k, 0);
  const auto b = parse_synthetic_spec("generate:8,top_k=40,greedy=5");
  ASSERT_TRUE(b);
  EXPECT_EQ(b->sequences, 8);
  EXPECT_EQ(b->greedy, 5);
  EXPECT_EQ(b->top_k, 40);
  for (const char* bad : {"generate:0", "generate:x", "generate:", "generate:-4", "generate:3x"}) {
    const std::string e = error_of([&] { parse_synthetic_spec(bad); });
    EXPECT_NE(e.find(std::string("'") + bad + "'"), std::string::npos) << e;
    EXPECT_NE(e.find("number of sequences"), std::string::npos) << e;
  }
  EXPECT_NE(error_of([] { parse_synthetic_spec("generate:4,temp=2"); }).find("unknown generate option 'temp'"),
            std::string::npos);
  EXPECT_NE(error_of([] { parse_synthetic_spec("generate:4,top_k=a"); }).find("option 'top_k'"), std::string::npos);
  EXPECT_NE(error_of([] { parse_synthetic_spec("generate:4,greedy"); }).find("option 'greedy'"), std::string::npos);
}

TEST(Synthetic, ProvenanceNamesTheDraw) {
  EXPECT_EQ(synthetic_provenance({.sequences = 32, .seq_len = 512, .seed = 9, .greedy = 3, .top_k = 0, .bos = 1}),
            "generated:n=32,seq_len=512,seed=9,bos=1,greedy=3,top_k=0");
  EXPECT_EQ(synthetic_provenance({.sequences = 2, .seq_len = 8}),
            "generated:n=2,seq_len=8,seed=0,bos=none,greedy=3,top_k=0");
}

}  // namespace
}  // namespace calq::eval
