#include "eval/multiple_choice.h"

#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/error.h"
#include "model/forward.h"
#include "model/tiny_model_testutil.h"
#include "support/error_of.h"
#include "support/shared_dir.h"

namespace calq::eval {
namespace {

using nlohmann::json;

// ---- Reading HellaSwag JSONL.

std::filesystem::path write_lines(const std::filesystem::path& dir, const std::vector<std::string>& lines) {
  const auto path = dir / "items.jsonl";
  std::ofstream out(path, std::ios::binary);
  for (const std::string& l : lines) out << l << "\n";
  return path;
}

const char* const kGoodLine = R"({"ctx": "A man", "endings": ["runs.", "sits.", "eats.", "é."], "label": 2, "ind": 7})";

TEST(McRead, ParsesItemsAndSkipsBlankLines) {
  const auto dir = testing::temp_dir("mc");
  const auto path = write_lines(dir, {kGoodLine, "", R"({"ctx": "x", "endings": ["a","b","c","d"], "label": 0})"});
  const std::vector<McItem> items = read_hellaswag_jsonl(path);
  ASSERT_EQ(items.size(), 2u);
  EXPECT_EQ(items[0].ctx, "A man");
  EXPECT_EQ(items[0].endings, (std::vector<std::string>{"runs.", "sits.", "eats.", "é."}));
  EXPECT_EQ(items[0].label, 2);
  EXPECT_EQ(items[1].ctx, "x");
  EXPECT_EQ(items[1].label, 0);
  std::filesystem::remove_all(dir);
}

TEST(McRead, BadLinesNameFileAndLine) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {R"({"ctx": "a", "endings": ["a","b","c","d"], "label": 1)", "malformed JSON"},
      {R"(["ctx", "endings", "label"])", "expected a JSON object"},
      {R"({"endings": ["a","b","c","d"], "label": 1})", "missing key 'ctx'"},
      {R"({"ctx": "a", "label": 1})", "missing key 'endings'"},
      {R"({"ctx": "a", "endings": ["a","b","c","d"]})", "missing key 'label'"},
      {R"({"ctx": 5, "endings": ["a","b","c","d"], "label": 1})", "'ctx' must be a string"},
      {R"({"ctx": "a", "endings": ["a","b","c"], "label": 1})", "'endings' must be an array of 4 strings"},
      {R"({"ctx": "a", "endings": "abcd", "label": 1})", "'endings' must be an array of 4 strings"},
      {R"({"ctx": "a", "endings": ["a","b",3,"d"], "label": 1})", "'endings'[2] must be a non-empty string"},
      {R"({"ctx": "a", "endings": ["a","","c","d"], "label": 1})", "'endings'[1] must be a non-empty string"},
      {R"({"ctx": "a", "endings": ["a","b","c","d"], "label": "1"})", "'label' must be an integer"},
      {R"({"ctx": "a", "endings": ["a","b","c","d"], "label": 1.5})", "'label' must be an integer"},
      {R"({"ctx": "a", "endings": ["a","b","c","d"], "label": 4})", "'label' 4 is out of range [0, 4)"},
      {R"({"ctx": "a", "endings": ["a","b","c","d"], "label": -1})", "'label' -1 is out of range [0, 4)"},
  };
  const auto dir = testing::temp_dir("mc");
  for (const auto& [line, what] : cases) {
    const auto path = write_lines(dir, {kGoodLine, "", line, kGoodLine});
    ErrorKind kind = ErrorKind::kIo;
    const std::string msg = testing::error_of([&] { read_hellaswag_jsonl(path); }, &kind);
    EXPECT_EQ(kind, ErrorKind::kInvalidArgument) << line;
    EXPECT_NE(msg.find(path.string() + ": line 3: " + what), std::string::npos) << line << "\n -> " << msg;
  }
  // No items at all.
  for (const std::vector<std::string>& lines : {std::vector<std::string>{}, std::vector<std::string>{"", "  "}}) {
    const auto path = write_lines(dir, lines);
    ErrorKind kind = ErrorKind::kIo;
    const std::string msg = testing::error_of([&] { read_hellaswag_jsonl(path); }, &kind);
    EXPECT_EQ(kind, ErrorKind::kInvalidArgument);
    EXPECT_NE(msg.find(path.string() + ": line "), std::string::npos) << msg;
    EXPECT_NE(msg.find("no items"), std::string::npos) << msg;
  }
  std::filesystem::remove_all(dir);
}

// ---- Choosing.

TEST(McChoose, TiesGoToLowestIndexAndDivisorsNormalize) {
  EXPECT_EQ(choose_best(std::vector<double>{-3.0, -1.0, -1.0, -2.0}), 1);
  EXPECT_EQ(choose_best(std::vector<double>{-5.0}), 0);
  // -10/5 = -2 < -12/8 = -1.5: normalization flips the choice.
  EXPECT_EQ(choose_best(std::vector<double>{-10.0, -12.0}), 0);
  EXPECT_EQ(choose_best(std::vector<double>{-10.0, -12.0}, std::vector<double>{5.0, 8.0}), 1);
  EXPECT_EQ(choose_best(std::vector<double>{-4.0, -8.0, -2.0}, std::vector<double>{2.0, 4.0, 1.0}), 0);
}

// ---- Scoring with a tiny model and a character-level tokenizer.

// BPE with ignore_merges and no merges or pre-tokenizer: the whole text is one token when it is in
// the vocabulary, else one token per character. "x y" is a token, so "x" + " y" merges across the
// boundary (the fallback case).
io::Tokenizer char_tokenizer() {
  json vocab = json::object();
  int id = 0;
  for (const char* t : {" ", ".", "é", "x y"}) vocab[t] = id++;
  for (char c = 'a'; c <= 'z'; ++c) vocab[std::string(1, c)] = id++;
  json doc;
  doc["version"] = "1.0";
  doc["added_tokens"] = json::array();
  doc["normalizer"] = nullptr;
  doc["pre_tokenizer"] = nullptr;
  doc["post_processor"] = nullptr;
  doc["decoder"] = nullptr;
  doc["model"] = {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr},
                  {"continuing_subword_prefix", nullptr}, {"end_of_word_suffix", nullptr},
                  {"fuse_unk", false}, {"byte_fallback", false}, {"ignore_merges", true},
                  {"vocab", std::move(vocab)}, {"merges", json::array()}};
  return io::Tokenizer::from_json_text(doc.dump(), "<test>");
}

// log p(ids[t] | ids[<t]) summed over t ≥ n_ctx, from the logits in long double (no shift).
double naive_loglik(const Tensor& logits, const std::vector<int32_t>& ids, size_t n_ctx) {
  const int64_t vocab = logits.dim(1);
  long double sum = 0;
  for (size_t t = n_ctx; t < ids.size(); ++t) {
    const float* row = logits.f32() + static_cast<int64_t>(t - 1) * vocab;
    long double z = 0;
    for (int64_t v = 0; v < vocab; ++v) z += std::exp(static_cast<long double>(row[v]));
    sum += static_cast<long double>(row[ids[t]]) - std::log(z);
  }
  return static_cast<double>(sum);
}

class McTiny : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const auto dir = testing::temp_dir("mc_tiny");
    ThreadPool pool(1);
    a_ = new model::Model(model::testutil::load_tiny_model(dir / "a", {.seed = 1}, pool));
    b_ = new model::Model(model::testutil::load_tiny_model(dir / "b", {.seed = 2}, pool));
    tok_ = new io::Tokenizer(char_tokenizer());
    std::filesystem::remove_all(dir);
  }
  static void TearDownTestSuite() {
    delete tok_;
    delete b_;
    delete a_;
  }
  // Items with ASCII and multi-byte endings of varied lengths.
  static std::vector<McItem> items() {
    std::vector<McItem> out;
    const std::vector<std::string> ctxs = {"the cat", "a dog ", "we go to", "x", "she is"};
    for (size_t i = 0; i < 24; ++i) {
      McItem it;
      it.ctx = ctxs[i % ctxs.size()];
      for (size_t e = 0; e < 4; ++e) {
        std::string ending;
        const size_t len = 1 + (i * 7 + e * 3) % 6;
        for (size_t k = 0; k < len; ++k) {
          ending += (i + e + k) % 3 == 0 ? std::string("é") : std::string(1, static_cast<char>('a' + (i * 5 + e + k) % 26));
        }
        it.endings.push_back(ending + (e % 2 == 0 ? "." : ""));
      }
      it.endings[(i + 1) % 4] = "y";  // with ctx "x": "x y" is one token
      it.label = static_cast<int64_t>(i % 4);
      out.push_back(std::move(it));
    }
    return out;
  }

  static model::Model* a_;
  static model::Model* b_;
  static io::Tokenizer* tok_;
};
model::Model* McTiny::a_ = nullptr;
model::Model* McTiny::b_ = nullptr;
io::Tokenizer* McTiny::tok_ = nullptr;

TEST_F(McTiny, TokenizesLikeLmEvalWithFallback) {
  const McTokens t = tokenize_choices({.ctx = "a b ", .endings = {"c", "dé"}, .label = 0}, *tok_);
  EXPECT_EQ(t.ctx_ids, tok_->encode("a b"));  // trailing space moved to the continuation
  EXPECT_EQ(t.continuations[0], tok_->encode("  c"));
  EXPECT_EQ(t.continuations[1], tok_->encode("  dé"));
  EXPECT_EQ(t.fallback, (std::vector<bool>{false, false}));

  const McTokens f = tokenize_choices({.ctx = "x", .endings = {"y", "z"}, .label = 0}, *tok_);
  ASSERT_EQ(tok_->encode("x y").size(), 1u);  // merges across the boundary
  EXPECT_EQ(f.continuations[0], tok_->encode(" y"));
  EXPECT_EQ(f.continuations[1], tok_->encode(" z"));
  EXPECT_EQ(f.fallback, (std::vector<bool>{true, false}));
}

TEST_F(McTiny, ScoresEqualDirectComputationFromLogits) {
  ThreadPool pool(2);
  const std::vector<McItem> its = items();
  const model::Model* models[] = {a_};
  const McReport rep = score_multiple_choice(models, *tok_, its, {}, pool);
  ASSERT_EQ(rep.models.size(), 1u);
  EXPECT_EQ(rep.n_items, 24);
  EXPECT_EQ(rep.n_fallback_endings, 5);  // the "y" ending of the items with context "x": 3, 8, 13, 18, 23
  const McModelResult& r = rep.models[0];
  for (const size_t i : {0u, 3u}) {
    const McTokens t = tokenize_choices(its[i], *tok_);
    for (size_t e = 0; e < 4; ++e) {
      std::vector<int32_t> ids = t.ctx_ids;
      ids.insert(ids.end(), t.continuations[e].begin(), t.continuations[e].end());
      const Tensor logits = model::forward(*a_, ids, pool);
      EXPECT_NEAR(r.loglik[i][e], naive_loglik(logits, ids, t.ctx_ids.size()), 1e-9) << i << " " << e;
    }
  }
  // Choices: acc by raw sums, acc_norm by UTF-8 bytes of the ending; and bytes matter here: some
  // item's choice would differ if normalized by characters ("é" is 2 bytes, 1 character).
  int64_t correct = 0, correct_norm = 0, bytes_vs_chars_differ = 0;
  for (size_t i = 0; i < its.size(); ++i) {
    std::vector<double> bytes, chars;
    for (const std::string& e : its[i].endings) {
      bytes.push_back(static_cast<double>(e.size()));
      double c = 0;
      for (const unsigned char ch : e) c += (ch & 0xC0) != 0x80 ? 1 : 0;
      chars.push_back(c);
    }
    EXPECT_EQ(r.chosen[i], choose_best(r.loglik[i])) << i;
    EXPECT_EQ(r.chosen_norm[i], choose_best(r.loglik[i], bytes)) << i;
    bytes_vs_chars_differ += choose_best(r.loglik[i], bytes) != choose_best(r.loglik[i], chars) ? 1 : 0;
    correct += r.chosen[i] == its[i].label ? 1 : 0;
    correct_norm += r.chosen_norm[i] == its[i].label ? 1 : 0;
  }
  EXPECT_GT(bytes_vs_chars_differ, 0);
  EXPECT_EQ(r.correct, correct);
  EXPECT_EQ(r.correct_norm, correct_norm);
  EXPECT_DOUBLE_EQ(r.acc, static_cast<double>(correct) / 24.0);
  EXPECT_DOUBLE_EQ(r.acc_norm, static_cast<double>(correct_norm) / 24.0);
  EXPECT_LE(r.acc_ci.lo, r.acc);
  EXPECT_GE(r.acc_ci.hi, r.acc);
}

TEST_F(McTiny, IdenticalModelsAgreeFullyAndDifferentOnesAsCounted) {
  ThreadPool pool(2);
  const std::vector<McItem> its = items();
  const model::Model* models[] = {a_, a_, b_};
  const McReport rep = score_multiple_choice(models, *tok_, its, {}, pool);
  ASSERT_EQ(rep.agreement.size(), 2u);
  EXPECT_EQ(rep.agreement[0].model, 1u);
  EXPECT_EQ(rep.agreement[0].chosen_agreement, 1.0);
  EXPECT_EQ(rep.agreement[0].chosen_norm_agreement, 1.0);
  EXPECT_EQ(rep.models[1].loglik, rep.models[0].loglik);
  EXPECT_NE(rep.models[2].loglik, rep.models[0].loglik);
  int64_t same = 0, same_norm = 0;
  for (size_t i = 0; i < its.size(); ++i) {
    same += rep.models[2].chosen[i] == rep.models[0].chosen[i] ? 1 : 0;
    same_norm += rep.models[2].chosen_norm[i] == rep.models[0].chosen_norm[i] ? 1 : 0;
  }
  EXPECT_LT(same, 24);  // two random models disagree somewhere
  EXPECT_DOUBLE_EQ(rep.agreement[1].chosen_agreement, static_cast<double>(same) / 24.0);
  EXPECT_DOUBLE_EQ(rep.agreement[1].chosen_norm_agreement, static_cast<double>(same_norm) / 24.0);
}

TEST_F(McTiny, SameResultsForAnyThreadCount) {
  const std::vector<McItem> its = items();
  const model::Model* models[] = {a_, b_};
  ThreadPool one(1), three(3);
  const McReport r1 = score_multiple_choice(models, *tok_, its, {}, one);
  const McReport r3 = score_multiple_choice(models, *tok_, its, {}, three);
  for (size_t m = 0; m < 2; ++m) {
    EXPECT_EQ(r1.models[m].loglik, r3.models[m].loglik);
    EXPECT_EQ(r1.models[m].chosen, r3.models[m].chosen);
    EXPECT_EQ(r1.models[m].chosen_norm, r3.models[m].chosen_norm);
    EXPECT_EQ(r1.models[m].acc, r3.models[m].acc);
    EXPECT_EQ(r1.models[m].acc_ci.lo, r3.models[m].acc_ci.lo);
    EXPECT_EQ(r1.models[m].acc_norm_ci.hi, r3.models[m].acc_norm_ci.hi);
  }
  EXPECT_EQ(r1.agreement[0].chosen_agreement, r3.agreement[0].chosen_agreement);
}

TEST_F(McTiny, MaxItemsAndProgress) {
  ThreadPool pool(2);
  const std::vector<McItem> its = items();
  const model::Model* models[] = {a_};
  std::vector<int64_t> seen;
  int64_t total = 0;
  const McReport rep = score_multiple_choice(models, *tok_, its,
                                             {.max_items = 5,
                                              .on_progress =
                                                  [&](int64_t done, int64_t n) {
                                                    seen.push_back(done);
                                                    total = n;
                                                  }},
                                             pool);
  EXPECT_EQ(rep.n_items, 5);
  EXPECT_EQ(rep.models[0].chosen.size(), 5u);
  EXPECT_EQ(seen, (std::vector<int64_t>{1, 2, 3, 4, 5}));
  EXPECT_EQ(total, 5);
}

TEST_F(McTiny, BadItemsAreErrors) {
  ThreadPool pool(2);
  const model::Model* models[] = {a_};
  std::vector<McItem> its = items();
  its[7].label = 4;
  its[9].label = -1;
  ErrorKind kind = ErrorKind::kIo;
  std::string msg = testing::error_of([&] { score_multiple_choice(models, *tok_, its, {}, pool); }, &kind);
  EXPECT_EQ(kind, ErrorKind::kInvalidArgument);
  EXPECT_NE(msg.find("item 7: label 4 is out of range"), std::string::npos) << msg;

  its = items();
  its[2].endings[1].clear();
  msg = testing::error_of([&] { score_multiple_choice(models, *tok_, its, {}, pool); });
  EXPECT_NE(msg.find("item 2: ending 1 is empty"), std::string::npos) << msg;

  its = items();
  its[5].ctx = "";
  msg = testing::error_of([&] { score_multiple_choice(models, *tok_, its, {}, pool); });
  EXPECT_NE(msg.find("item 5: the context tokenizes to no tokens"), std::string::npos) << msg;

  msg = testing::error_of([&] { score_multiple_choice(models, *tok_, std::span<const McItem>{}, {}, pool); });
  EXPECT_NE(msg.find("at least one item"), std::string::npos) << msg;
  msg = testing::error_of(
      [&] { score_multiple_choice(std::span<const model::Model* const>{}, *tok_, items(), {}, pool); });
  EXPECT_NE(msg.find("at least one model"), std::string::npos) << msg;
}

// ---- The shared reference model on real HellaSwag items.

TEST(McReference, FirstItemsScoreAsDirectComputation) {
  CALQ_REQUIRE_SHARED("models/calq-ref-llama/model.safetensors");
  CALQ_REQUIRE_SHARED("data/hellaswag-val-1000.jsonl");
  const auto dir = testing::shared_dir() / "models/calq-ref-llama";
  ThreadPool pool(0);
  const model::Model m = model::load_hf_model(dir, pool);
  const io::Tokenizer tok = io::Tokenizer::from_file(dir / "tokenizer.json");
  const std::vector<McItem> items = read_hellaswag_jsonl(testing::shared_dir() / "data/hellaswag-val-1000.jsonl");
  ASSERT_EQ(items.size(), 1000u);
  const model::Model* models[] = {&m};
  const McReport rep = score_multiple_choice(models, tok, items, {.max_items = 6}, pool);
  ASSERT_EQ(rep.n_items, 6);
  // Metaspace splits at spaces, so the context's tokens are always a prefix of the joined text's.
  EXPECT_EQ(rep.n_fallback_endings, 0);
  const McTokens t = tokenize_choices(items[0], tok);
  EXPECT_EQ(t.ctx_ids, tok.encode(items[0].ctx));
  for (size_t e = 0; e < 4; ++e) {
    std::vector<int32_t> ids = t.ctx_ids;
    ids.insert(ids.end(), t.continuations[e].begin(), t.continuations[e].end());
    EXPECT_EQ(ids, tok.encode(items[0].ctx + " " + items[0].endings[e]));
    const Tensor logits = model::forward(m, ids, pool);
    EXPECT_NEAR(rep.models[0].loglik[0][e], naive_loglik(logits, ids, t.ctx_ids.size()), 1e-8) << e;
    EXPECT_LT(rep.models[0].loglik[0][e], 0.0);
  }
}

}  // namespace
}  // namespace calq::eval
