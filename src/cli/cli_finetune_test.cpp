// `calq finetune` on the tiny model with a byte-level tokenizer and a WikiText-like text of
// four articles: the output folder holds the quantized base and the report, the trained adapters
// lower the validation perplexity; bad inputs (rank, targets, an empty text, an existing output, a
// non-finite loss) exit 2 naming the problem and leave no output folder; --force replaces only an
// output folder of its own; calq eval of the written base with the written adapters gives the
// reported perplexity.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "cli/cli_test_util.h"
#include "core/mapped_file.h"
#include "model/tiny_model_testutil.h"
#include "support/shared_dir.h"

namespace calq {
namespace {

using testing::RunResult;
using testing::run_calq;

class CliFinetune : public ::testing::Test {
 protected:
  void SetUp() override {
    CALQ_REQUIRE_SHARED("tokenizers/bytelevel-16k/tokenizer.json");
    dir_ = calq::testing::temp_dir("cli_finetune");
    // A tiny model with a real byte-level tokenizer (the GGUF writer embeds it).
    model::testutil::write_tiny_model(dir_ / "hf", {.tied = true, .vocab_size = 16384});
    std::filesystem::copy_file(calq::testing::shared_dir() / "tokenizers/bytelevel-16k/tokenizer.json",
                               dir_ / "hf/tokenizer.json");
    // Four articles of one repeated sentence (learnable), each with a sub-heading.
    std::string article;
    for (int i = 0; i < 5; ++i) article += " The quick brown fox jumps over the lazy dog .\n";
    article += " = = More = = \n" + article;
    std::ofstream text(dir_ / "text.txt"), val(dir_ / "val.txt");  // val.txt: the validation half
    for (const char* title : {"Alpha", "Beta", "Gamma", "Delta"}) {
      const std::string a = std::string(" = ") + title + " = \n" + article;
      text << a;
      if (title[0] == 'G' || title[0] == 'D') val << a;
    }
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string base_args() const {
    return "finetune " + (dir_ / "hf").string() + " --text " + (dir_ / "text.txt").string() +
           " --ctx 32 --batch 2 --eval-windows 2 --threads 1 --quiet";
  }
  std::filesystem::path out() const { return dir_ / "out"; }
  // Nothing left in dir_ but the inputs: no output folder, no temporary one.
  bool no_outputs() const {
    for (const auto& e : std::filesystem::directory_iterator(dir_)) {
      const std::string n = e.path().filename().string();
      if (n != "hf" && n != "text.txt" && n != "val.txt") return false;
    }
    return true;
  }

  std::filesystem::path dir_;
};

TEST_F(CliFinetune, WritesTheBaseAndReportAndLowersThePerplexity) {
  const RunResult r = run_calq(base_args() + " --rank 2 --steps 12 --lr 1e-2 --reference " + (dir_ / "hf").string() +
                               " -o " + out().string());
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("base + LoRA"), std::string::npos) << r.output;
  for (const char* f : {"base.gguf", "adapter_model.safetensors", "adapter_config.json", "calq_adapter.json"})
    EXPECT_TRUE(std::filesystem::exists(out() / f)) << f;
  const auto j = nlohmann::json::parse(read_text_file(out() / "finetune.json"));
  EXPECT_EQ(j["split"]["train_units"], 2);
  EXPECT_EQ(j["split"]["validation_units"], 2);
  EXPECT_EQ(j["training"]["steps"], 12);
  EXPECT_EQ(j["training"]["curve"].size(), 12u);
  EXPECT_EQ(j["lora"]["targets"].size(), 7u);
  EXPECT_GT(j["ppl"]["reference"]["ppl"].get<double>(), 0);
  EXPECT_LT(j["ppl"]["trained"].get<double>(), 0.8 * j["ppl"]["base"].get<double>()) << j.dump();
  // calq eval runs the written base with the written adapters: the trained PPL (on the exact path, as
  // finetune measured it; the default integer kernels quantize the activations).
  const auto e = testing::eval_json("--exact --model " + (out() / "base.gguf").string() + " --adapter " + out().string() +
                                        " --text " + (dir_ / "val.txt").string() + " --ctx 32 --tokenizer " +
                                        (dir_ / "hf/tokenizer.json").string(),
                                    dir_ / "eval.json");
  ASSERT_TRUE(e.contains("ppl")) << e.dump();
  EXPECT_NEAR(e["ppl"].get<double>(), j["ppl"]["trained"].get<double>(),
              1e-6 * j["ppl"]["trained"].get<double>());
  // An existing output folder needs --force (refused before any work).
  const RunResult again = run_calq(base_args() + " --steps 1 -o " + out().string());
  EXPECT_EQ(again.status, 2) << again.output;
  EXPECT_NE(again.output.find("output folder exists; replacing it needs the force option"), std::string::npos);
}

TEST_F(CliFinetune, BadInputsExit2WithNoOutput) {
  const auto expect_error = [&](const std::string& extra, const std::string& message) {
    const RunResult r = run_calq(base_args() + " --steps 2 " + extra + " -o " + out().string());
    EXPECT_EQ(r.status, 2) << extra << "\n" << r.output;
    EXPECT_NE(r.output.find(message), std::string::npos) << extra << "\n" << r.output;
    EXPECT_TRUE(no_outputs()) << extra;
  };
  expect_error("--rank 17", "larger than layer 0 attn_k [16, 32] allows (at most 16)");
  expect_error("--targets q,qkv", "'qkv' matches no linear");
  expect_error("--lr 1e30 --max-grad-norm 0 --warmup 0", "loss is");
  expect_error("--format nope", "nope");
  std::ofstream(dir_ / "empty.txt") << "\n \n";
  const RunResult r = run_calq("finetune " + (dir_ / "hf").string() + " --text " + (dir_ / "empty.txt").string() +
                               " --quiet -o " + out().string());
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("the text is empty"), std::string::npos) << r.output;
  std::filesystem::remove(dir_ / "empty.txt");
  EXPECT_TRUE(no_outputs());
  // --force replaces only a folder finetune (or an adapter writer) made, or an empty one.
  std::filesystem::create_directories(out());
  std::ofstream(out() / "notes.txt") << "mine";
  const RunResult forced = run_calq(base_args() + " --steps 1 --force -o " + out().string());
  EXPECT_EQ(forced.status, 2) << forced.output;
  EXPECT_NE(forced.output.find("is not a finetune output folder"), std::string::npos) << forced.output;
  EXPECT_TRUE(std::filesystem::exists(out() / "notes.txt"));
}

}  // namespace
}  // namespace calq
