// `calq eval --ref`: models compared with a full-precision reference on identical tokens. A model
// against an exact copy of itself gives KLD 0, top-1 agreement 1 and ΔPPL 0; the reported
// perplexities are those of plain `calq eval` runs of each model; bad combinations exit 2.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "cli/cli_test_util.h"
#include "core/mapped_file.h"
#include "model/model.h"
#include "model/tiny_model_testutil.h"
#include "support/shared_dir.h"

namespace calq {
namespace {

using testing::RunResult;
using testing::eval_json;
using testing::run_calq;

class CliCompare : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::temp_dir("cli_compare");
    ThreadPool pool(1);
    model::testutil::write_tiny_model(dir_ / "hf", {.tied = false});
    const model::Model m = model::load_hf_model(dir_ / "hf", pool);
    model::testutil::write_tiny_gguf(m, dir_ / "same.gguf", DType::kF32);  // the same f32 weights
    model::testutil::write_tiny_gguf(m, dir_ / "half.gguf", DType::kF16);  // weights rounded to f16
    testing::write_letter_tokenizer(dir_ / "hf/tokenizer.json", "abcde");  // every letter is one token
    std::string text;
    for (int i = 0; i < 101; ++i) text += "abcde"[(i * i + 3 * i) % 5];
    std::ofstream(text_ = dir_ / "text.txt") << text;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::filesystem::path dir_, text_;
};

TEST_F(CliCompare, TinyModelAgainstItsGgufCopies) {
  const std::string common = " --text " + text_.string() + " --ctx 16";
  const RunResult r = run_calq("eval --quiet --ref " + (dir_ / "hf").string() + " --model " +
                               (dir_ / "same.gguf").string() + " --model " + (dir_ / "half.gguf").string() + common +
                               " --json " + (dir_ / "c.json").string());
  ASSERT_EQ(r.status, 0) << r.output;
  for (const char* needle : {"same.gguf", "half.gguf", "KLD mean", "top-1"}) {
    EXPECT_NE(r.output.find(needle), std::string::npos) << needle << " in " << r.output;
  }
  const auto j = nlohmann::json::parse(read_text_file(dir_ / "c.json"));
  ASSERT_EQ(j["candidates"].size(), 2u);
  EXPECT_EQ(j["n_windows"], 6);  // 101 tokens / 16
  EXPECT_EQ(j["n_predicted"], 6 * 15);
  EXPECT_EQ(j["reference"]["model_format"], "hf");
  const auto& same = j["candidates"][0];
  const auto& half = j["candidates"][1];
  EXPECT_EQ(same["model_format"], "gguf");
  EXPECT_EQ(same["kld_mean"], 0.0);
  EXPECT_EQ(same["kld_max"], 0.0);
  EXPECT_EQ(same["top1_agreement"], 1.0);
  EXPECT_EQ(same["delta_ppl"], 0.0);
  EXPECT_EQ(same["delta_ppl_ci95"][0], 0.0);
  EXPECT_EQ(same["delta_ppl_ci95"][1], 0.0);
  EXPECT_GT(half["kld_mean"].get<double>(), 0.0);
  EXPECT_LE(half["kld_mean_ci95"][0].get<double>(), half["kld_mean"].get<double>());
  EXPECT_GE(half["kld_mean_ci95"][1].get<double>(), half["kld_mean"].get<double>());
  EXPECT_EQ(half["kld_per_window"].size(), 6u);

  // The perplexities are exactly those of plain single-model runs on the reference's tokens.
  const auto ref = eval_json("--model " + (dir_ / "hf").string() + common, dir_ / "r.json");
  const auto h = eval_json("--model " + (dir_ / "half.gguf").string() + " --tokenizer " +
                               (dir_ / "hf/tokenizer.json").string() + common,
                           dir_ / "h.json");
  ASSERT_FALSE(ref.empty());
  ASSERT_FALSE(h.empty());
  EXPECT_EQ(j["token_ids_sha256"], ref["token_ids_sha256"]);
  EXPECT_EQ(j["ppl_ref"], ref["ppl"]);
  EXPECT_EQ(j["nll_ref_per_window"], ref["nll_per_window"]);
  EXPECT_EQ(half["ppl"], h["ppl"]);
  EXPECT_EQ(half["nll_per_window"], h["nll_per_window"]);
  EXPECT_EQ(half["delta_ppl"].get<double>(), h["ppl"].get<double>() - ref["ppl"].get<double>());

  // One window: the intervals are undefined and written as null.
  const auto one = eval_json("--ref " + (dir_ / "hf").string() + " --model " + (dir_ / "half.gguf").string() +
                                 common + " --max-windows 1",
                             dir_ / "one.json");
  ASSERT_FALSE(one.empty());
  EXPECT_TRUE(one["candidates"][0]["kld_mean_ci95"][0].is_null());
}

TEST_F(CliCompare, BadCombinationsExitTwo) {
  const std::string common = " --text " + text_.string() + " --ctx 16";
  // Several models need a reference.
  RunResult r = run_calq("eval --quiet --model " + (dir_ / "hf").string() + " --model " + (dir_ / "hf").string() + common);
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("reference"), std::string::npos) << r.output;
  // A reference that is not a model.
  r = run_calq("eval --quiet --model " + (dir_ / "hf").string() + " --ref " + text_.string() + common);
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("text.txt"), std::string::npos) << r.output;
}

TEST_F(CliCompare, KvCacheTasksAndCalibrationColumns) {
  // HellaSwag-style items over the tiny tokenizer's letters.
  std::ofstream(dir_ / "mc.jsonl") << R"({"ctx": "abcab", "endings": ["cde", "aa", "bcd", "e"], "label": 2}
{"ctx": "ddeab", "endings": ["a", "bb", "ccc", "dddd"], "label": 0}
{"ctx": "eeee", "endings": ["ab", "ba", "cd", "dc"], "label": 3}
)";
  const std::string hf = (dir_ / "hf").string();
  const auto j = eval_json("--ref " + hf + " --model " + hf + " --kv-cache f32,int8,int2-pc-sym --text " +
                               text_.string() + " --ctx 16 --hellaswag " + (dir_ / "mc.jsonl").string() +
                               " --generate abc --max-new-tokens 5",
                           dir_ / "kv.json");
  ASSERT_FALSE(j.empty());
  ASSERT_EQ(j["candidates"].size(), 3u);  // one model × three caches
  EXPECT_EQ(j["candidates"][0]["kv_cache"], "f32");
  EXPECT_EQ(j["candidates"][1]["kv_cache"], "int8-pc-sym");
  EXPECT_EQ(j["candidates"][2]["kv_cache"], "int2-pc-sym");
  // The float cache is the reference itself; the quantized caches move the logits, 2 bits most.
  EXPECT_EQ(j["candidates"][0]["kld_mean"], 0.0);
  EXPECT_EQ(j["candidates"][0]["ece"], j["ref_ece"]);
  EXPECT_EQ(j["candidates"][0]["flips_lost"], 0);
  EXPECT_GT(j["candidates"][1]["kld_mean"].get<double>(), 0.0);
  EXPECT_GT(j["candidates"][2]["kld_mean"].get<double>(), j["candidates"][1]["kld_mean"].get<double>());
  const double ref_acc = j["ref_accuracy"].get<double>();
  EXPECT_GE(ref_acc, 0.0);
  EXPECT_LE(ref_acc, 1.0);
  EXPECT_NEAR(j["candidates"][2]["ece_delta"].get<double>(),
              j["candidates"][2]["ece"].get<double>() - j["ref_ece"].get<double>(), 1e-15);
  const auto& mc = j["multiple_choice"];
  EXPECT_EQ(mc["n_items"], 3);
  ASSERT_EQ(mc["models"].size(), 4u);  // the reference, then the three candidates
  EXPECT_EQ(mc["models"][1]["agreement_with_ref"], 1.0);  // float cache: the same answers
  EXPECT_EQ(mc["models"][1]["chosen"], mc["models"][0]["chosen"]);
  const auto& gen = j["generate"];
  ASSERT_EQ(gen.size(), 1u);
  ASSERT_EQ(gen[0]["outputs"].size(), 4u);
  EXPECT_EQ(gen[0]["outputs"][0]["ids"].size(), 5u);
  EXPECT_EQ(gen[0]["outputs"][1]["ids"], gen[0]["outputs"][0]["ids"]);
  EXPECT_EQ(gen[0]["outputs"][1]["same_prefix_as_first"], 5);

  // A cache format whose blocks do not fit the tiny model's 8-value heads, and nothing to do.
  RunResult r = run_calq("eval --quiet --ref " + hf + " --model " + hf + " --kv-cache q8_0 --text " + text_.string());
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("KV cache"), std::string::npos) << r.output;
  r = run_calq("eval --quiet --model " + hf);
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("nothing to evaluate"), std::string::npos) << r.output;
  r = run_calq("eval --quiet --model " + hf + " --kv-cache int8,q4_0 --text " + text_.string());
  EXPECT_EQ(r.status, 2) << r.output;
}

TEST(CliCompareReference, ReferenceModelAgainstItself) {
  CALQ_REQUIRE_SHARED("models/calq-ref-llama/model.safetensors");
  const auto dir = testing::temp_dir("cli_compare_ref");
  const auto shared = testing::shared_dir();
  const std::string model = (shared / "models/calq-ref-llama").string();
  const auto j = eval_json("--model " + model + " --ref " + model + " --text " + (shared / "data/heldout.txt").string() +
                               " --ctx 512 --max-windows 2",
                           dir / "c.json");
  ASSERT_FALSE(j.empty());
  const auto ref = nlohmann::json::parse(read_text_file(shared / "refs/calq-ref-llama/heldout/ppl_ctx512.json"));
  EXPECT_EQ(j["token_ids_sha256"], ref["token_ids_sha256"]);
  EXPECT_EQ(j["n_windows"], 2);
  EXPECT_EQ(j["n_predicted"], 2 * 511);
  ASSERT_EQ(j["candidates"].size(), 1u);
  const auto& c = j["candidates"][0];
  EXPECT_EQ(c["kld_mean"], 0.0);
  EXPECT_EQ(c["kld_max"], 0.0);
  EXPECT_EQ(c["kld_mean_ci95"][1], 0.0);
  EXPECT_EQ(c["top1_agreement"], 1.0);
  EXPECT_EQ(c["delta_ppl"], 0.0);
  EXPECT_EQ(c["ppl"], j["ppl_ref"]);
  // transformers' NLL of the same two windows (documented agreement: within 3e-4 per window).
  for (size_t w = 0; w < 2; ++w) {
    EXPECT_NEAR(c["nll_per_window"][w].get<double>(), ref["nll_per_window"][w].get<double>(), 1e-3) << w;
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace calq
