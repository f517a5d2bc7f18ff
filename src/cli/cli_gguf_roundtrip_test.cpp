// The round trip a user makes for every architecture calq exports (issue: calq could not read back
// its own Qwen2 files): a Hugging Face folder with a byte-level tokenizer -> `calq quantize
// --format f16` -> `calq eval` on the GGUF alone, whose embedded tokenizer must give the folder's
// token ids (same sha256) and so the folder's perplexity. Each architecture gets the split regex of
// a different llama.cpp pre-tokenizer: llama Llama-3's ("llama-bpe"), mistral GPT-2's ("gpt-2"),
// qwen2 Qwen2's ("qwen2"); the vocabulary is ../shared's 16k byte-level tokenizer on a tiny random
// model of the same vocabulary size.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "cli/cli_test_util.h"
#include "core/mapped_file.h"
#include "io/gguf.h"
#include "model/tiny_model_testutil.h"
#include "support/shared_dir.h"

namespace calq {
namespace {

using testing::RunResult;
using testing::eval_json;
using testing::run_calq;

struct Case {
  const char* arch;
  const char* pre;        // tokenizer.ggml.pre calq must write
  const char* gguf_arch;  // general.architecture (llama.cpp's converter writes Mistral as llama)
};

class GgufRoundTrip : public ::testing::TestWithParam<Case> {};

TEST_P(GgufRoundTrip, EmbeddedTokenizerGivesTheFoldersTokensAndPerplexity) {
  const Case c = GetParam();
  CALQ_REQUIRE_SHARED("tokenizers/bytelevel-16k/tokenizer.json");
  CALQ_REQUIRE_SHARED("data/heldout.txt");
  const auto shared = testing::shared_dir();
  const auto dir = testing::temp_dir(std::string("gguf_roundtrip_") + c.arch);
  const auto hf = dir / "hf";
  model::testutil::write_tiny_model(hf, {.tied = false, .dtype = DType::kF16, .model_type = c.arch,
                                         .vocab_size = 16384});
  nlohmann::json tok = nlohmann::json::parse(read_text_file(shared / "tokenizers/bytelevel-16k/tokenizer.json"));
  const std::string pre = c.pre;
  if (pre == "llama-bpe") {
    tok["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] =
        "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
        "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
  } else if (pre == "gpt-2") {
    tok["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true},
                            {"use_regex", true}};
  }
  std::ofstream(hf / "tokenizer.json", std::ios::binary) << tok.dump();

  const RunResult q = run_calq("quantize --quiet --model " + hf.string() + " --format f16 --out " +
                               (dir / "q.gguf").string());
  ASSERT_EQ(q.status, 0) << q.output;
  const io::GgufFile file = io::GgufFile::open(dir / "q.gguf");
  ASSERT_NE(file.find("tokenizer.ggml.pre"), nullptr);
  EXPECT_EQ(file.find("tokenizer.ggml.pre")->s, pre);
  EXPECT_EQ(file.find("general.architecture")->s, c.gguf_arch);

  const std::string common =
      " --text " + (shared / "data/heldout.txt").string() + " --ctx 128 --max-windows 6";
  const auto a = eval_json("--model " + hf.string() + common, dir / "hf.json");
  const auto b = eval_json("--model " + (dir / "q.gguf").string() + common, dir / "gguf.json");
  ASSERT_FALSE(a.empty());
  ASSERT_FALSE(b.empty());
  EXPECT_NE(b["tokenizer"].get<std::string>().find("GGUF metadata"), std::string::npos) << b["tokenizer"];
  EXPECT_EQ(b["n_tokens"], a["n_tokens"]);
  EXPECT_EQ(b["token_ids_sha256"], a["token_ids_sha256"]);
  // The head and embedding keep f16 here as everywhere else, so only rounding order can differ.
  const double pa = a["ppl"].get<double>();
  const double pb = b["ppl"].get<double>();
  EXPECT_LT(std::abs(pb - pa) / pa, 1e-3) << pa << " vs " << pb;
  std::filesystem::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(Architectures, GgufRoundTrip,
                         ::testing::Values(Case{"llama", "llama-bpe", "llama"}, Case{"mistral", "gpt-2", "llama"},
                                           Case{"qwen2", "qwen2", "qwen2"}),
                         [](const ::testing::TestParamInfo<Case>& param) { return std::string(param.param.arch); });

}  // namespace
}  // namespace calq
