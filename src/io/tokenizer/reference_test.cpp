// The tokenizer against Hugging Face's own outputs: the tokenizer_cases.json of three tokenizers
// (encode without/with special tokens, decode) and whole-corpus token streams (count, sha256, head).
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "core/sha256.h"
#include "io/tokenizer.h"
#include "support/shared_dir.h"

namespace calq::io {
namespace {

using nlohmann::json;

std::string read_bytes(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

json read_json(const std::filesystem::path& path) { return json::parse(read_bytes(path)); }

std::vector<int32_t> as_ids(const json& value) { return value.get<std::vector<int32_t>>(); }

struct CaseFile {
  const char* tokenizer;
  const char* cases;
};

// Keeps CTest's test names readable (gtest would otherwise print the struct's raw bytes).
void PrintTo(const CaseFile& c, std::ostream* os) { *os << c.cases; }

class TokenizerCases : public ::testing::TestWithParam<CaseFile> {};

TEST_P(TokenizerCases, MatchHuggingFace) {
  CALQ_REQUIRE_SHARED(GetParam().tokenizer);
  CALQ_REQUIRE_SHARED(GetParam().cases);
  const auto shared = testing::shared_dir();
  const Tokenizer tokenizer = Tokenizer::from_file(shared / GetParam().tokenizer);
  const json cases = read_json(shared / GetParam().cases);
  ASSERT_TRUE(cases.is_array());
  ASSERT_FALSE(cases.empty());

  // Ids of special added tokens: decoding with skip_special_tokens drops exactly these.
  std::set<int32_t> special_ids;
  const json tokenizer_json = read_json(shared / GetParam().tokenizer);
  for (const json& added : tokenizer_json.at("added_tokens")) {
    if (added.at("special").get<bool>()) special_ids.insert(added.at("id").get<int32_t>());
  }
  size_t skip_checked = 0;
  size_t plain_ok = 0;
  size_t special_ok = 0;
  size_t decoded_ok = 0;
  for (const json& c : cases) {
    const std::string text = c.at("text").get<std::string>();
    SCOPED_TRACE("text: " + text);
    const std::vector<int32_t> ids = as_ids(c.at("ids"));
    const std::vector<int32_t> with_special = as_ids(c.at("ids_with_special"));
    const std::string decoded = c.at("decoded").get<std::string>();

    const std::vector<int32_t> got = tokenizer.encode(text, false);
    EXPECT_EQ(got, ids);
    plain_ok += got == ids;
    const std::vector<int32_t> got_special = tokenizer.encode(text, true);
    EXPECT_EQ(got_special, with_special);
    special_ok += got_special == with_special;
    // HF's `decoded` is tokenizer.decode(ids) with skip_special_tokens=False: the case with
    // "<s> </s> <unk>" keeps them, and byte-fallback tokens (special in the llama file) decode.
    const std::string got_decoded = tokenizer.decode(ids, false);
    EXPECT_EQ(got_decoded, decoded);
    decoded_ok += got_decoded == decoded;
    // Where HF's ids hold no special token, skipping the template's specials gives the same text.
    if (std::none_of(ids.begin(), ids.end(), [&](int32_t id) { return special_ids.contains(id); })) {
      EXPECT_EQ(tokenizer.decode(with_special, true), decoded);
      ++skip_checked;
    }
  }
  EXPECT_GT(skip_checked, cases.size() / 2);
  std::cout << "[ cases    ] " << GetParam().cases << ": encode " << plain_ok << "/" << cases.size()
            << ", encode+special " << special_ok << "/" << cases.size() << ", decode " << decoded_ok
            << "/" << cases.size() << "\n";
}

INSTANTIATE_TEST_SUITE_P(
    Shared, TokenizerCases,
    ::testing::Values(CaseFile{"models/calq-ref-llama/tokenizer.json", "refs/calq-ref-llama/tokenizer_cases.json"},
                      CaseFile{"tokenizers/bytelevel-16k/tokenizer.json",
                               "tokenizers/bytelevel-16k/tokenizer_cases.json"},
                      CaseFile{"tokenizers/smollm2-49k/tokenizer.json",
                               "tokenizers/smollm2-49k/tokenizer_cases.json"}),
    [](const ::testing::TestParamInfo<CaseFile>& param_info) {
      const std::string name = std::filesystem::path(param_info.param.tokenizer).parent_path().filename().string();
      std::string out;
      for (const char ch : name) out += std::isalnum(static_cast<unsigned char>(ch)) ? ch : '_';
      return out;
    });

// Tokenizes a whole corpus file in one call and compares with the reference stream.
void check_corpus(const char* tokenizer_file, const char* text_file, const json& ref,
                  const char* n_key, const char* sha_key) {
  const auto shared = testing::shared_dir();
  const Tokenizer tokenizer = Tokenizer::from_file(shared / tokenizer_file);
  const std::string text = read_bytes(shared / text_file);
  ASSERT_FALSE(text.empty());
  const auto begin = std::chrono::steady_clock::now();
  const std::vector<int32_t> ids = tokenizer.encode(text, false);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - begin).count();
  std::cout << "[ corpus   ] " << text_file << " with " << tokenizer_file << ": " << ids.size()
            << " tokens in " << seconds << " s\n";

  EXPECT_EQ(ids.size(), ref.at(n_key).get<size_t>());
  const std::string sha = token_ids_sha256(ids);
  EXPECT_EQ(sha, ref.at(sha_key).get<std::string>());
  std::cout << "[ corpus   ] sha256 " << sha << (sha == ref.at(sha_key).get<std::string>() ? " (match)" : " (MISMATCH)")
            << "\n";
  const std::vector<int32_t> head = as_ids(ref.at("first_64_ids"));
  ASSERT_GE(ids.size(), head.size());
  EXPECT_EQ(std::vector<int32_t>(ids.begin(), ids.begin() + static_cast<long>(head.size())), head);
}

TEST(TokenizerCorpus, LlamaWikitext2) {
  CALQ_REQUIRE_SHARED("refs/calq-ref-llama/ppl_ctx512.json");
  CALQ_REQUIRE_SHARED("data/wikitext-2-test.txt");
  const json ref = read_json(testing::shared_dir() / "refs/calq-ref-llama/ppl_ctx512.json");
  check_corpus("models/calq-ref-llama/tokenizer.json", "data/wikitext-2-test.txt", ref, "n_tokens",
               "token_ids_sha256");
}

TEST(TokenizerCorpus, LlamaHeldout) {
  CALQ_REQUIRE_SHARED("refs/calq-ref-llama/heldout/ppl_ctx512.json");
  CALQ_REQUIRE_SHARED("data/heldout.txt");
  const json ref = read_json(testing::shared_dir() / "refs/calq-ref-llama/heldout/ppl_ctx512.json");
  check_corpus("models/calq-ref-llama/tokenizer.json", "data/heldout.txt", ref, "n_tokens",
               "token_ids_sha256");
}

TEST(TokenizerCorpus, Smollm2Wikitext2) {
  CALQ_REQUIRE_SHARED("tokenizers/smollm2-49k/wikitext2_tokens.json");
  CALQ_REQUIRE_SHARED("data/wikitext-2-test.txt");
  const json ref = read_json(testing::shared_dir() / "tokenizers/smollm2-49k/wikitext2_tokens.json");
  check_corpus("tokenizers/smollm2-49k/tokenizer.json", "data/wikitext-2-test.txt", ref,
               "wikitext2_test_n_tokens", "wikitext2_test_token_ids_sha256");
}

// decode(encode(text)) gives the text back: byte-level BPE is lossless, and the llama tokenizer
// (byte_fallback, so never <unk>) loses only a leading space to its Strip decoder.
TEST(TokenizerCorpus, RoundTrips) {
  CALQ_REQUIRE_SHARED("data/wikitext-2-test.txt");
  const auto shared = testing::shared_dir();
  const std::string text = read_bytes(shared / "data/wikitext-2-test.txt");
  ASSERT_EQ(text.front(), ' ');
  const Tokenizer llama = Tokenizer::from_file(shared / "models/calq-ref-llama/tokenizer.json");
  EXPECT_TRUE(llama.decode(llama.encode(text)) == text.substr(1));
  const Tokenizer smollm2 = Tokenizer::from_file(shared / "tokenizers/smollm2-49k/tokenizer.json");
  EXPECT_TRUE(smollm2.decode(smollm2.encode(text)) == text);
}

// Without a regex split the whole file is one word: merging must stay O(n log n).
TEST(TokenizerCorpus, OneHugeWord) {
  CALQ_REQUIRE_SHARED("tokenizers/bytelevel-16k/tokenizer.json");
  CALQ_REQUIRE_SHARED("data/heldout.txt");
  const auto shared = testing::shared_dir();
  json doc = read_json(shared / "tokenizers/bytelevel-16k/tokenizer.json");
  doc["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}};
  const Tokenizer tokenizer = Tokenizer::from_json_text(doc.dump(), "<one-word>");
  const std::string text = read_bytes(shared / "data/heldout.txt");
  const auto begin = std::chrono::steady_clock::now();
  const std::vector<int32_t> ids = tokenizer.encode(text);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - begin).count();
  std::cout << "[ corpus   ] heldout.txt as one word: " << ids.size() << " tokens in " << seconds << " s\n";
  EXPECT_LT(ids.size(), text.size() / 2);  // merges did happen
  EXPECT_TRUE(tokenizer.decode(ids) == text);
}

// vocab_size() is the model vocabulary plus added tokens it lacks; the llama model's config says
// how many embeddings its tokenizer needs.
TEST(TokenizerVocab, LlamaMatchesModelConfig) {
  CALQ_REQUIRE_SHARED("models/calq-ref-llama/config.json");
  const auto dir = testing::shared_dir() / "models/calq-ref-llama";
  const Tokenizer tokenizer = Tokenizer::from_file(dir / "tokenizer.json");
  const json config = read_json(dir / "config.json");
  EXPECT_EQ(tokenizer.vocab_size(), config.at("vocab_size").get<size_t>());
  EXPECT_EQ(tokenizer.token_to_id("<s>"), config.at("bos_token_id").get<int32_t>());
  EXPECT_EQ(tokenizer.token_to_id("</s>"), config.at("eos_token_id").get<int32_t>());
}

TEST(TokenizerVocab, IdsRoundTripThroughTokens) {
  for (const char* file : {"models/calq-ref-llama/tokenizer.json", "tokenizers/smollm2-49k/tokenizer.json"}) {
    CALQ_REQUIRE_SHARED(file);
    SCOPED_TRACE(file);
    const json root = read_json(testing::shared_dir() / file);
    const Tokenizer tokenizer = Tokenizer::from_file(testing::shared_dir() / file);
    size_t expected_size = root.at("model").at("vocab").size();
    for (const auto& [token, id] : root.at("model").at("vocab").items()) {
      ASSERT_EQ(tokenizer.token_to_id(token), id.get<int32_t>()) << token;
      ASSERT_EQ(tokenizer.id_to_token(id.get<int32_t>()), token);
    }
    for (const json& added : root.at("added_tokens")) {
      const auto content = added.at("content").get<std::string>();
      if (!root.at("model").at("vocab").contains(content)) ++expected_size;
      EXPECT_EQ(tokenizer.token_to_id(content), added.at("id").get<int32_t>()) << content;
    }
    EXPECT_EQ(tokenizer.vocab_size(), expected_size);
    EXPECT_FALSE(tokenizer.id_to_token(static_cast<int32_t>(expected_size) + 1000).has_value());
  }
}

}  // namespace
}  // namespace calq::io
