// hf_tokenizer_to_gguf: the reference model's tokenizer.json gives exactly the tokenizer keys
// llama.cpp's converter wrote into calq-ref-llama-f16.gguf, and they tokenize like that file; the
// byte-level tokenizer becomes a gpt2 vocabulary with its merges.
#include "io/tokenizer/hf_gguf_vocab.h"

#include <gtest/gtest.h>

#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "core/error.h"
#include "io/gguf.h"
#include "io/tokenizer.h"
#include "support/shared_dir.h"

namespace calq::io {
namespace {

std::filesystem::path shared(const char* rel) { return calq::testing::shared_dir() / rel; }

bool same_value(const GgufValue& a, const GgufValue& b) {
  return a.type == b.type && a.u == b.u && a.i == b.i && a.f == b.f && a.s == b.s && a.array_type == b.array_type &&
         a.uints == b.uints && a.ints == b.ints && a.floats == b.floats && a.strings == b.strings;
}

TEST(HfGgufVocab, ReferenceModelMatchesLlamaCppConverter) {
  CALQ_REQUIRE_SHARED("models/calq-ref-llama/tokenizer.json");
  CALQ_REQUIRE_SHARED("models/calq-ref-llama-f16.gguf");
  const GgufMetadata ours = hf_tokenizer_to_gguf(shared("models/calq-ref-llama"));
  const GgufFile ref = GgufFile::open(shared("models/calq-ref-llama-f16.gguf"));
  GgufMetadata theirs;
  for (const auto& kv : ref.metadata()) {
    if (kv.first.rfind("tokenizer.", 0) == 0) theirs.push_back(kv);
  }
  ASSERT_EQ(ours.size(), theirs.size());
  for (size_t i = 0; i < ours.size(); ++i) {
    EXPECT_EQ(ours[i].first, theirs[i].first) << i;
    EXPECT_TRUE(same_value(ours[i].second, theirs[i].second)) << ours[i].first;
  }

  // Tokenizing heldout.txt with calq's GGUF tokenizer over these keys gives llama.cpp's file's ids.
  CALQ_REQUIRE_SHARED("data/heldout.txt");
  std::ifstream in(shared("data/heldout.txt"), std::ios::binary);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const GgufFile vocab_only = GgufFile::from_bytes(gguf_to_bytes(ours, {}), "converted");
  const std::vector<int32_t> a = Tokenizer::from_gguf(vocab_only).encode(text, true);
  const std::vector<int32_t> b = Tokenizer::from_gguf(ref).encode(text, true);
  EXPECT_GT(b.size(), 1000u);
  EXPECT_EQ(a, b);
}

TEST(HfGgufVocab, ByteLevelBecomesGpt2) {
  CALQ_REQUIRE_SHARED("tokenizers/bytelevel-16k/tokenizer.json");
  const GgufMetadata m = hf_tokenizer_to_gguf(shared("tokenizers/bytelevel-16k"));
  std::vector<std::string> keys;
  for (const auto& kv : m) keys.push_back(kv.first);
  EXPECT_EQ(keys, (std::vector<std::string>{"tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens",
                                            "tokenizer.ggml.token_type", "tokenizer.ggml.merges",
                                            "tokenizer.ggml.eos_token_id"}));
  EXPECT_EQ(m[0].second.s, "gpt2");
  EXPECT_EQ(m[1].second.s, "qwen2");  // its split regex is Qwen2's (\p{N} one digit at a time)
  ASSERT_EQ(m[2].second.strings.size(), 16384u);
  EXPECT_EQ(m[2].second.strings[0], "<|endoftext|>");
  EXPECT_EQ(m[3].second.ints[0], 3);  // CONTROL
  EXPECT_EQ(m[3].second.ints[1000], 1);
  ASSERT_EQ(m[4].second.strings.size(), 16127u);
  EXPECT_EQ(m[4].second.strings[0], "\xC4\xA0 t");  // "Ġ t"
  EXPECT_EQ(m[5].second.u, 0u);
}

TEST(HfGgufVocab, Errors) {
  const auto dir = calq::testing::temp_dir("hf_gguf_vocab_errors");
  EXPECT_THROW(hf_tokenizer_to_gguf(dir), Error);  // no tokenizer.json
  {
    std::ofstream(dir / "tokenizer.json") << R"({"model": {"type": "Unigram", "vocab": []}})";
  }
  try {
    hf_tokenizer_to_gguf(dir);
    FAIL() << "Unigram accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kUnsupported);
    EXPECT_NE(std::string(e.what()).find("tokenizer.json"), std::string::npos) << e.what();
  }
  {
    std::ofstream(dir / "tokenizer.json") << R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []},
      "pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": "\\d+"}},
                        {"type": "ByteLevel", "use_regex": false}]}})";
  }
  try {
    hf_tokenizer_to_gguf(dir);
    FAIL() << "unknown split regex accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kUnsupported);
    EXPECT_NE(std::string(e.what()).find("split regex"), std::string::npos) << e.what();
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace calq::io
