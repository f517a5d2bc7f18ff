// The reference model against transformers' own outputs (../shared/refs/calq-ref-llama):
// tokens, per-window NLL of the first 8 windows, and window-0 logits.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/mapped_file.h"
#include "core/sha256.h"
#include "eval/perplexity.h"
#include "io/tokenizer.h"
#include "model/forward.h"
#include "support/shared_dir.h"

namespace calq::eval {
namespace {

struct RefCase {
  const char* text;     // under data/
  const char* ref_dir;  // under refs/calq-ref-llama/
};

// Keeps CTest's test names readable (gtest would otherwise print the struct's raw bytes).
void PrintTo(const RefCase& c, std::ostream* os) { *os << c.text; }

class ReferenceModel : public ::testing::TestWithParam<RefCase> {
 protected:
  static void SetUpTestSuite() {
    const auto dir = testing::shared_dir() / "models/calq-ref-llama";
    if (!std::filesystem::exists(dir / "model.safetensors")) return;
    pool_ = new ThreadPool(0);
    model_ = new model::Model(model::load_hf_model(dir, *pool_));
    tokenizer_ = new io::Tokenizer(io::Tokenizer::from_file(dir / "tokenizer.json"));
  }
  static void TearDownTestSuite() {
    delete tokenizer_;
    delete model_;
    delete pool_;
  }
  void SetUp() override {
    CALQ_REQUIRE_SHARED("models/calq-ref-llama/model.safetensors");
    ASSERT_NE(model_, nullptr);
    const auto& p = GetParam();
    ref_dir_ = testing::shared_dir() / "refs/calq-ref-llama" / p.ref_dir;
    ref_ = nlohmann::json::parse(read_text_file(ref_dir_ / "ppl_ctx512.json"));
    ids_ = tokenizer_->encode(read_text_file(testing::shared_dir() / "data" / p.text), false);
  }

  static ThreadPool* pool_;
  static model::Model* model_;
  static io::Tokenizer* tokenizer_;
  std::filesystem::path ref_dir_;
  nlohmann::json ref_;
  std::vector<int32_t> ids_;
};
ThreadPool* ReferenceModel::pool_ = nullptr;
model::Model* ReferenceModel::model_ = nullptr;
io::Tokenizer* ReferenceModel::tokenizer_ = nullptr;

TEST_P(ReferenceModel, TokensMatchTransformers) {
  EXPECT_EQ(static_cast<int64_t>(ids_.size()), ref_["n_tokens"].get<int64_t>());
  EXPECT_EQ(token_ids_sha256(ids_), ref_["token_ids_sha256"].get<std::string>());
}

TEST_P(ReferenceModel, FirstEightWindowsMatchTransformers) {
  const PerplexityResult r = evaluate_perplexity(*model_, ids_, {.ctx = 512, .max_windows = 8}, *pool_);
  ASSERT_EQ(r.n_windows, 8);
  const auto ref_nll = ref_["nll_per_window"].get<std::vector<double>>();
  for (size_t w = 0; w < 8; ++w) {
    // 2e-4 nats per predicted token: 4x tighter than the 0.05% PPL acceptance bound.
    EXPECT_NEAR(r.nll_per_window[w], ref_nll[w], 511 * 2e-4) << "window " << w;
  }
  const double ref_ppl8 = ref_["ppl_first_8_windows"].get<double>();
  EXPECT_NEAR(r.ppl / ref_ppl8 - 1.0, 0.0, 5e-4) << "calq " << r.ppl << " vs transformers " << ref_ppl8;
}

TEST_P(ReferenceModel, WindowZeroLogitsMatchTransformers) {
  const auto summary = nlohmann::json::parse(read_text_file(ref_dir_ / "window0_summary.json"));
  const auto positions = summary["positions"].get<std::vector<int64_t>>();
  const int64_t vocab = summary["vocab"].get<int64_t>();
  const Tensor logits = model::forward(*model_, std::span(ids_).first(512), *pool_);

  const std::string blob = read_text_file(ref_dir_ / "window0_logits_f32.bin");
  ASSERT_EQ(blob.size(), positions.size() * vocab * sizeof(float));
  std::vector<float> ref(positions.size() * vocab);
  std::memcpy(ref.data(), blob.data(), blob.size());
  double max_diff = 0;
  for (size_t r = 0; r < positions.size(); ++r) {
    for (int64_t v = 0; v < vocab; ++v) {
      max_diff = std::max(max_diff, double(std::abs(logits.f32()[positions[r] * vocab + v] - ref[r * vocab + v])));
    }
  }
  EXPECT_LE(max_diff, 2e-3);
  RecordProperty("window0_max_abs_logit_diff", std::to_string(max_diff));

  const auto argmax = summary["argmax"].get<std::vector<int64_t>>();
  const auto lse = summary["logsumexp"].get<std::vector<double>>();
  ASSERT_EQ(argmax.size(), 512u);
  for (int64_t t = 0; t < 512; ++t) {
    const float* row = logits.f32() + t * vocab;
    EXPECT_EQ(std::max_element(row, row + vocab) - row, argmax[t]) << "position " << t;
    double z = 0;
    for (int64_t v = 0; v < vocab; ++v) z += std::exp(double(row[v]));
    EXPECT_NEAR(std::log(z), lse[t], 2e-3) << "position " << t;
  }
}

INSTANTIATE_TEST_SUITE_P(Texts, ReferenceModel,
                         ::testing::Values(RefCase{"heldout.txt", "heldout"}, RefCase{"wikitext-2-test.txt", "."}),
                         [](const auto& param_info) { return param_info.index == 0 ? std::string("heldout") : std::string("wikitext2"); });

}  // namespace
}  // namespace calq::eval
