// GGUF-embedded tokenizers against real files: llama.cpp's own vocab tests (test-tokenizer-0 on
// ggml-vocab-*.gguf) and the reference model's GGUF against its Hugging Face tokenizer.
// Synthetic vocabularies (merge rule, byte fallback, pre-tokenizers, errors): gguf_tokenizer_test.cpp.
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"
#include "core/sha256.h"
#include "io/gguf.h"
#include "io/tokenizer.h"
#include "io/tokenizer/gguf_vocab.h"
#include "io/tokenizer/gguf_test_util.h"
#include "io/tokenizer/vocab_cases.h"
#include "support/shared_dir.h"

namespace calq::io {
namespace {

using testing_vocab::read_bytes;
using testing_vocab::read_vocab_cases;
using testing_vocab::show_ids;
using testing_vocab::VocabCase;

class LlamaCppVocab : public ::testing::TestWithParam<const char*> {};

TEST_P(LlamaCppVocab, EveryStringMatchesLlamaCpp) {
  const std::string rel = std::string("peer-tests/llama.cpp-vocab/") + GetParam();
  CALQ_REQUIRE_SHARED(rel);
  const auto path = testing::shared_dir() / rel;
  const GgufFile file = GgufFile::open(path);
  const Tokenizer tokenizer = Tokenizer::from_gguf(file);
  const std::vector<VocabCase> cases =
      read_vocab_cases(path.string() + ".inp", path.string() + ".out");
  ASSERT_GE(cases.size(), 40u);

  size_t matched = 0;
  for (const VocabCase& c : cases) {
    // test-tokenizer-0: common_tokenize(ctx, text, add_special = false, parse_special = false).
    const std::vector<int32_t> ids = tokenizer.encode(c.text, false);
    EXPECT_EQ(ids, c.ids) << "text '" << c.text << "'\n got:      " << show_ids(ids)
                          << "\n expected: " << show_ids(c.ids);
    if (ids == c.ids) ++matched;
  }
  std::cout << "[ llama.cpp vocab ] " << GetParam() << ": " << matched << "/" << cases.size()
            << " strings match\n";
}

// Keeps CTest's test names readable.
std::string vocab_name(const ::testing::TestParamInfo<const char*>& info) {
  std::string name = info.param;
  for (char& c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  }
  return name;
}

INSTANTIATE_TEST_SUITE_P(Files, LlamaCppVocab,
                         ::testing::Values("ggml-vocab-llama-spm.gguf", "ggml-vocab-gpt-2.gguf"), vocab_name);

// SPM text comes back exactly (the prepended space is stripped again); llama.cpp's gpt2 decode
// also cleans tokenization spaces, so only texts without those patterns come back exactly.
TEST(LlamaCppVocabDecode, RoundTrips) {
  const char* kDir = "peer-tests/llama.cpp-vocab/";
  CALQ_REQUIRE_SHARED(std::string(kDir) + "ggml-vocab-llama-spm.gguf");
  size_t checked = 0;
  for (const char* name : {"ggml-vocab-llama-spm.gguf", "ggml-vocab-gpt-2.gguf"}) {
    const auto path = testing::shared_dir() / kDir / name;
    const Tokenizer tokenizer = Tokenizer::from_gguf(GgufFile::open(path));
    const bool spm = std::string(name).find("spm") != std::string::npos;
    for (const VocabCase& c : read_vocab_cases(path.string() + ".inp", path.string() + ".out")) {
      if (!spm) {
        bool cleaned = false;
        for (const char* p : {" ?", " !", " .", " ,", " '"}) cleaned |= c.text.find(p) != std::string::npos;
        if (cleaned) continue;
      }
      EXPECT_EQ(tokenizer.decode(c.ids), c.text) << name;
      ++checked;
    }
  }
  EXPECT_GE(checked, 70u);
}

TEST(LlamaCppVocabFiles, ResolvedLikeLlamaCpp) {
  const char* kDir = "peer-tests/llama.cpp-vocab/";
  CALQ_REQUIRE_SHARED(std::string(kDir) + "ggml-vocab-gpt-2.gguf");
  const GgufVocab spm = read_gguf_vocab(GgufFile::open(testing::shared_dir() / kDir / "ggml-vocab-llama-spm.gguf"));
  EXPECT_EQ(spm.type, GgufVocabType::kSpm);
  EXPECT_EQ(spm.size(), 32000u);
  EXPECT_TRUE(spm.add_bos);
  EXPECT_FALSE(spm.add_eos);
  EXPECT_TRUE(spm.add_space_prefix);
  EXPECT_FALSE(spm.clean_spaces);
  EXPECT_EQ(spm.bos_id, 1);
  EXPECT_EQ(spm.eos_id, 2);
  EXPECT_EQ(spm.unk_id, 0);
  EXPECT_EQ(spm.attrs[0], gguf_attr::kUnknown);
  EXPECT_EQ(spm.attrs[1], gguf_attr::kControl);
  EXPECT_EQ(spm.attrs[3], gguf_attr::kByte);

  const GgufVocab bpe = read_gguf_vocab(GgufFile::open(testing::shared_dir() / kDir / "ggml-vocab-gpt-2.gguf"));
  EXPECT_EQ(bpe.type, GgufVocabType::kBpe);
  EXPECT_EQ(bpe.pre_spec, find_gguf_pre("gpt-2"));
  EXPECT_EQ(bpe.size(), 50257u);
  EXPECT_EQ(bpe.merges.size(), 50000u);
  EXPECT_EQ(bpe.bos_id, 50256);
  EXPECT_EQ(bpe.eos_id, 50256);
  EXPECT_EQ(bpe.unk_id, -1);
  EXPECT_FALSE(bpe.add_bos);
  EXPECT_FALSE(bpe.add_space_prefix);
  EXPECT_TRUE(bpe.clean_spaces);
  EXPECT_EQ(bpe.attrs[50256], gguf_attr::kControl);

  // add_special_tokens: BOS per add_bos (llama: yes; gpt-2: no); control text is parsed only with
  // parse_special.
  const Tokenizer llama = Tokenizer::from_gguf(GgufFile::open(testing::shared_dir() / kDir / "ggml-vocab-llama-spm.gguf"));
  EXPECT_EQ(llama.encode("", true), std::vector<int32_t>{1});
  EXPECT_EQ(llama.encode("", false), std::vector<int32_t>{});
  const auto gpt2_file = GgufFile::open(testing::shared_dir() / kDir / "ggml-vocab-gpt-2.gguf");
  const Tokenizer gpt2 = Tokenizer::from_gguf(gpt2_file);
  const Tokenizer gpt2_special = Tokenizer::from_gguf(gpt2_file, /*parse_special=*/true);
  EXPECT_EQ(gpt2.encode("Hello", true), gpt2.encode("Hello", false));
  EXPECT_EQ(gpt2_special.encode("a<|endoftext|>", false), (std::vector<int32_t>{64, 50256}));
  EXPECT_GT(gpt2.encode("a<|endoftext|>", false).size(), 2u);
  EXPECT_EQ(gpt2.decode(std::vector<int32_t>{64, 50256}, false), "a<|endoftext|>");
  EXPECT_EQ(gpt2.decode(std::vector<int32_t>{64, 50256}, true), "a");
}

// The reference model's GGUF was converted by llama.cpp from tokenizer.json alone (no
// tokenizer.model): tokenizer.ggml.model "llama" with the same 16384 tokens, but every score is the
// converter's placeholder -1000 and there are no merges. llama.cpp's SPM merging then has no
// preference but position and merges left to right, so its token stream differs from Hugging
// Face's BPE (which ranks merges): same vocabulary, same text back, a longer segmentation.
TEST(ReferenceModelGguf, LlamaCppSegmentsHeldoutDifferentlyFromHuggingFace) {
  CALQ_REQUIRE_SHARED("models/calq-ref-llama-f16.gguf");
  CALQ_REQUIRE_SHARED("models/calq-ref-llama/tokenizer.json");
  CALQ_REQUIRE_SHARED("data/heldout.txt");
  CALQ_REQUIRE_SHARED("refs/calq-ref-llama/heldout/ppl_ctx512.json");
  const auto shared = testing::shared_dir();
  const GgufFile file = GgufFile::open(shared / "models/calq-ref-llama-f16.gguf");
  const GgufVocab vocab = read_gguf_vocab(file);
  const Tokenizer hf = Tokenizer::from_file(shared / "models/calq-ref-llama/tokenizer.json");
  const Tokenizer gguf = Tokenizer::from_gguf(file);

  ASSERT_EQ(vocab.type, GgufVocabType::kSpm);
  EXPECT_EQ(file.find("tokenizer.ggml.merges"), nullptr);
  ASSERT_EQ(vocab.size(), hf.vocab_size());
  for (size_t id = 0; id < vocab.size(); ++id) {
    ASSERT_EQ(hf.id_to_token(static_cast<int32_t>(id)), vocab.tokens[id]) << "id " << id;
  }
  EXPECT_TRUE(std::all_of(vocab.scores.begin(), vocab.scores.end(),
                          [&](float s) { return s == vocab.scores.front(); }));

  const std::string text = read_bytes(shared / "data/heldout.txt");
  const auto ref = nlohmann::json::parse(read_bytes(shared / "refs/calq-ref-llama/heldout/ppl_ctx512.json"));
  const std::vector<int32_t> hf_ids = hf.encode(text, false);
  const std::vector<int32_t> gguf_ids = gguf.encode(text, false);
  ASSERT_EQ(token_ids_sha256(hf_ids), ref.at("token_ids_sha256").get<std::string>());
  EXPECT_NE(token_ids_sha256(gguf_ids), token_ids_sha256(hf_ids));
  EXPECT_GT(gguf_ids.size(), hf_ids.size());
  // Both segmentations spell the text exactly.
  EXPECT_TRUE(gguf.decode(gguf_ids) == text);
  EXPECT_TRUE(gguf.decode(hf_ids) == text);
  size_t common_prefix = 0;
  while (common_prefix < hf_ids.size() && gguf_ids[common_prefix] == hf_ids[common_prefix]) ++common_prefix;
  std::cout << "[ heldout ] Hugging Face " << hf_ids.size() << " tokens, llama.cpp (GGUF) " << gguf_ids.size()
            << " tokens (+" << 100.0 * (static_cast<double>(gguf_ids.size()) / static_cast<double>(hf_ids.size()) - 1.0)
            << "%), identical for the first " << common_prefix << " tokens; sha256 " << token_ids_sha256(gguf_ids)
            << "\n";

  // The llama.cpp stream is the score-driven merge by definition: the naive merge loop (highest
  // score, leftmost on ties) gives the same ids on the first 4000 bytes (cut at a newline).
  const std::string head = text.substr(0, text.rfind('\n', 4000) + 1);
  EXPECT_EQ(gguf.encode(head, false), testing::naive_spm_encode(vocab, head));
}

}  // namespace
}  // namespace calq::io

