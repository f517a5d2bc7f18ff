// GGUF-embedded tokenizers on synthetic vocabularies: the SPM merge rule (score first, leftmost on
// ties, checked also against a naive reference on random vocabularies), byte fallback, space
// prefix, special tokens, BOS/EOS, decoding; the gpt2 model's ranked merges, ignore_merges and
// pre-tokenizers; and read_gguf_vocab's errors.
#include <gtest/gtest.h>

#include <random>
#include <set>

#include "core/error.h"
#include "io/gguf.h"
#include "io/tokenizer.h"
#include "io/tokenizer/gguf_test_util.h"
#include "io/tokenizer/gguf_vocab.h"
#include "io/tokenizer/llama_pretokenize.h"

namespace calq::io {
namespace {

using calq::testing::gguf_from_metadata;
using calq::testing::SynthToken;
using calq::testing::vocab_metadata;
using Ids = std::vector<int32_t>;
constexpr GgufTokenType kControl = GgufTokenType::kControl;
constexpr GgufTokenType kByte = GgufTokenType::kByte;

const std::string kSpace = "\xE2\x96\x81";  // U+2581

Tokenizer tokenizer_of(const GgufMetadata& metadata, bool parse_special = false) {
  return Tokenizer::from_gguf(gguf_from_metadata(metadata), parse_special);
}

GgufMetadata no_space_prefix() {
  return {{"tokenizer.ggml.add_space_prefix", GgufValue::of_bool(false)}};
}

// <unk> <s> </s> a b c, then `extra` from id 6.
std::vector<SynthToken> abc_vocab(std::vector<SynthToken> extra) {
  std::vector<SynthToken> tokens = {{"<unk>", 0, GgufTokenType::kUnknown},
                                    {"<s>", 0, kControl},
                                    {"</s>", 0, kControl},
                                    {"a", -1},
                                    {"b", -1},
                                    {"c", -1}};
  tokens.insert(tokens.end(), extra.begin(), extra.end());
  return tokens;
}

TEST(GgufSpm, HighestScoreMergesFirst) {
  // "ab" (6) and "bc" (7) compete for the middle "b": the higher score wins wherever it is.
  const Tokenizer bc_wins = tokenizer_of(vocab_metadata("llama", abc_vocab({{"ab", -5}, {"bc", -3}}), no_space_prefix()));
  EXPECT_EQ(bc_wins.encode("abc"), (Ids{3, 7}));
  const Tokenizer ab_wins = tokenizer_of(vocab_metadata("llama", abc_vocab({{"ab", -2}, {"bc", -3}}), no_space_prefix()));
  EXPECT_EQ(ab_wins.encode("abc"), (Ids{6, 5}));
  // Merge ranks play no part: a gpt2-style merge list in a llama vocabulary is ignored.
  GgufMetadata with_merges = no_space_prefix();
  with_merges.emplace_back("tokenizer.ggml.merges", GgufValue::of_strings({"a b"}));
  EXPECT_EQ(tokenizer_of(vocab_metadata("llama", abc_vocab({{"ab", -5}, {"bc", -3}}), with_merges)).encode("abc"),
            (Ids{3, 7}));
}

TEST(GgufSpm, TiesMergeLeftmostFirst) {
  const Tokenizer tie = tokenizer_of(vocab_metadata("llama", abc_vocab({{"ab", -4}, {"bc", -4}}), no_space_prefix()));
  EXPECT_EQ(tie.encode("abc"), (Ids{6, 5}));
  EXPECT_EQ(tie.encode("cabc"), (Ids{5, 6, 5}));
  // Merged symbols keep merging: "abc" is reached through "bc" even though "ab" scores higher.
  const Tokenizer chain =
      tokenizer_of(vocab_metadata("llama", abc_vocab({{"ab", -9}, {"bc", -3}, {"abc", -4}}), no_space_prefix()));
  EXPECT_EQ(chain.encode("abc"), (Ids{8}));
  EXPECT_EQ(chain.encode("abcab"), (Ids{8, 6}));
}

TEST(GgufSpm, MatchesNaiveDefinitionOnRandomVocabularies) {
  std::mt19937 rng(1234);
  const std::string alphabet = "ab c";
  size_t cases = 0;
  for (int v = 0; v < 30; ++v) {
    std::vector<SynthToken> tokens = {{"<unk>", 0, GgufTokenType::kUnknown}, {"<s>", 0, kControl}, {"</s>", 0, kControl}};
    for (int b = 0; b < 256; ++b) tokens.push_back({fmt::format("<0x{:02X}>", b), 0, kByte});
    std::set<std::string> seen;
    for (const std::string& single : std::vector<std::string>{"a", "b", "c", kSpace}) {
      if (rng() % 4 == 0) continue;
      tokens.push_back({single, -static_cast<float>(rng() % 5)});
      seen.insert(single);
    }
    for (int t = 0; t < 40; ++t) {
      std::string text;
      const size_t len = 2 + rng() % 4;
      for (size_t i = 0; i < len; ++i) {
        const char c = alphabet[rng() % alphabet.size()];
        text += c == ' ' ? kSpace : std::string(1, c);
      }
      if (seen.insert(text).second) tokens.push_back({text, -static_cast<float>(rng() % 6)});  // many ties
    }
    const GgufFile file = gguf_from_metadata(vocab_metadata("llama", tokens));
    const GgufVocab vocab = read_gguf_vocab(file);
    const Tokenizer tokenizer = Tokenizer::from_gguf(file);
    for (int s = 0; s < 20; ++s) {
      std::string text;
      const size_t len = 1 + rng() % 24;
      for (size_t i = 0; i < len; ++i) text += alphabet[rng() % alphabet.size()];
      ASSERT_EQ(tokenizer.encode(text), calq::testing::naive_spm_encode(vocab, text)) << "vocab " << v << " text '" << text << "'";
      ++cases;
    }
  }
  EXPECT_EQ(cases, 600u);
}

// <unk> <s> </s>, 256 byte tokens (3..258), then ▁ a b ▁a <sep>(user-defined).
std::vector<SynthToken> byte_vocab() {
  std::vector<SynthToken> tokens = {{"<unk>", 0, GgufTokenType::kUnknown}, {"<s>", 0, kControl}, {"</s>", 0, kControl}};
  for (int b = 0; b < 256; ++b) tokens.push_back({fmt::format("<0x{:02X}>", b), 0, kByte});
  tokens.push_back({kSpace, -1});                               // 259
  tokens.push_back({"a", -2});                                  // 260
  tokens.push_back({"b", -2});                                  // 261
  tokens.push_back({kSpace + "a", -3});                         // 262
  tokens.push_back({"<sep>", 0, GgufTokenType::kUserDefined});  // 263
  return tokens;
}

TEST(GgufSpm, SpacePrefixAndByteFallback) {
  const Tokenizer tokenizer = tokenizer_of(vocab_metadata("llama", byte_vocab()));
  // " " is prepended and spaces become U+2581: "a b" -> "▁a▁b".
  EXPECT_EQ(tokenizer.encode("a b"), (Ids{262, 259, 261}));
  // Characters outside the vocabulary fall back to their UTF-8 bytes.
  EXPECT_EQ(tokenizer.encode("\xC3\xA9" "a"), (Ids{259, 3 + 0xC3, 3 + 0xA9, 260}));
  EXPECT_EQ(tokenizer.encode(""), Ids{});
  // Invalid UTF-8 is cut by lead byte (E2 claims three bytes, two remain) and falls back to bytes.
  EXPECT_EQ(tokenizer.encode("\xE2" "a"), (Ids{259, 3 + 0xE2, 3 + 'a'}));
}

TEST(GgufSpm, RawByteTokenFallbackAndMissingByte) {
  // No <0xNN> tokens: a single-byte token stands for its byte; a byte with neither is an error.
  const Tokenizer tokenizer = tokenizer_of(vocab_metadata(
      "llama", {{"<unk>", 0, GgufTokenType::kUnknown}, {"<s>", 0, kControl}, {"</s>", 0, kControl}, {"\xC3", -1}, {"a", -1}},
      no_space_prefix()));
  try {
    (void)tokenizer.encode("a\xC3\xA9");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kUnsupported);
    EXPECT_NE(std::string(e.what()).find("0xA9"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("synthetic.gguf"), std::string::npos) << e.what();
  }
  const Tokenizer with_both = tokenizer_of(vocab_metadata(
      "llama", {{"<unk>", 0, GgufTokenType::kUnknown}, {"<s>", 0, kControl}, {"</s>", 0, kControl}, {"\xC3", -1}, {"\xA9", -1}},
      no_space_prefix()));
  EXPECT_EQ(with_both.encode("\xC3\xA9"), (Ids{3, 4}));
}

TEST(GgufSpm, SpecialTokensAndBosEos) {
  const auto metadata = vocab_metadata("llama", byte_vocab());
  const Tokenizer plain = tokenizer_of(metadata);
  const Tokenizer parsing = tokenizer_of(metadata, /*parse_special=*/true);
  // User-defined tokens are always matched; each fragment after a special token gets the prefix.
  EXPECT_EQ(plain.encode("a<sep>a"), (Ids{262, 263, 262}));
  // Control tokens only with parse_special; otherwise "</s>" is text (bytes here).
  EXPECT_EQ(parsing.encode("a</s>a"), (Ids{262, 2, 262}));
  EXPECT_EQ(plain.encode("a</s>a"), (Ids{262, 3 + '<', 3 + '/', 3 + 's', 3 + '>', 260}));
  // add_special_tokens: BOS per add_bos (default true for llama), EOS per add_eos (default false).
  EXPECT_EQ(plain.encode("a", true), (Ids{1, 262}));
  auto with_eos = metadata;
  with_eos.emplace_back("tokenizer.ggml.add_eos_token", GgufValue::of_bool(true));
  with_eos.emplace_back("tokenizer.ggml.add_bos_token", GgufValue::of_bool(false));
  EXPECT_EQ(tokenizer_of(with_eos).encode("a", true), (Ids{262, 2}));
}

TEST(GgufSpm, Decode) {
  const Tokenizer tokenizer = tokenizer_of(vocab_metadata("llama", byte_vocab()));
  const Ids ids = {1, 262, 259, 261, 3 + 0xC3, 3 + 0xA9, 263, 2};
  // Specials rendered; the leading space is dropped from the first piece only ("<s>" has none).
  EXPECT_EQ(tokenizer.decode(ids, false), "<s> a b\xC3\xA9<sep></s>");
  // Skipping specials drops BOS (and then keeps the space after it) and control tokens; user-defined
  // tokens stay.
  EXPECT_EQ(tokenizer.decode(ids, true), " a b\xC3\xA9<sep>");
  EXPECT_EQ(tokenizer.decode(tokenizer.encode("a b a"), false), "a b a");
  EXPECT_EQ(tokenizer.vocab_size(), 264u);
  EXPECT_EQ(tokenizer.token_to_id(kSpace + "a"), 262);
  EXPECT_EQ(tokenizer.id_to_token(263), "<sep>");
  EXPECT_EQ(tokenizer.id_to_token(264), std::nullopt);
}

// gpt2 model: byte-level tokens (Ġ is the space), ranked merges.
GgufMetadata bpe_metadata(const std::string& pre, std::vector<std::string> merges) {
  const std::vector<SynthToken> tokens = {{"a"}, {"b"}, {"c"}, {"\xC4\xA0"}, {"ab"}, {"bc"}, {"abc"},
                                          {"\xC4\xA0" "a"}, {"<|endoftext|>", 0, kControl}};
  GgufMetadata extra = {{"tokenizer.ggml.pre", GgufValue::of_string(pre)},
                        {"tokenizer.ggml.merges", GgufValue::of_strings(std::move(merges))},
                        {"tokenizer.ggml.bos_token_id", GgufValue::of_uint32(8)},
                        {"tokenizer.ggml.eos_token_id", GgufValue::of_uint32(8)}};
  return vocab_metadata("gpt2", tokens, std::move(extra));
}

TEST(GgufBpe, LowestRankMergesFirst) {
  EXPECT_EQ(tokenizer_of(bpe_metadata("gpt-2", {"b c", "a b", "\xC4\xA0 a"})).encode("abc"), (Ids{0, 5}));
  EXPECT_EQ(tokenizer_of(bpe_metadata("gpt-2", {"a b", "b c", "\xC4\xA0 a"})).encode("abc"), (Ids{4, 2}));
  // Pre-tokenized words are merged separately: " a" is one word.
  EXPECT_EQ(tokenizer_of(bpe_metadata("gpt-2", {"a b", "\xC4\xA0 a"})).encode("ab a"), (Ids{4, 7}));
  // A final symbol that is no token is replaced by its single-byte tokens where they exist; "d"
  // has none and is dropped, as llama.cpp drops it.
  EXPECT_EQ(tokenizer_of(bpe_metadata("gpt-2", {"a b"})).encode("abd"), (Ids{4}));
}

TEST(GgufBpe, IgnoreMergesForLlama3) {
  // llama-bpe looks a whole pre-token up first ("abc" is a token no merge reaches) and adds BOS.
  const Tokenizer llama3 = tokenizer_of(bpe_metadata("llama-bpe", {"b c"}));
  EXPECT_EQ(llama3.encode("abc"), (Ids{6}));
  EXPECT_EQ(llama3.encode("abc", true), (Ids{8, 6}));
  const Tokenizer gpt2 = tokenizer_of(bpe_metadata("gpt-2", {"b c"}));
  EXPECT_EQ(gpt2.encode("abc"), (Ids{0, 5}));
  EXPECT_EQ(gpt2.encode("abc", true), (Ids{0, 5}));
  EXPECT_EQ(gpt2.decode(Ids{7, 5, 8}, false), " abc<|endoftext|>");
}

std::vector<std::string> words(std::string_view text, std::string_view pre) {
  const GgufPreSpec* spec = find_gguf_pre(pre);
  EXPECT_NE(spec, nullptr) << pre;
  return tok::LlamaPreTokenizer(spec->regexes).split(text);
}

TEST(GgufPretokenize, Gpt2) {
  // Ġ = space, Ċ = newline in the GPT-2 alphabet.
  EXPECT_EQ(words("Hello world's  test 123!!  \n", "gpt-2"),
            (std::vector<std::string>{"Hello", "\xC4\xA0world", "'s", "\xC4\xA0", "\xC4\xA0test", "\xC4\xA0" "123", "!!",
                                      "\xC4\xA0\xC4\xA0\xC4\x8A"}));
  // Contractions are case-sensitive here.
  EXPECT_EQ(words("IT'S", "gpt-2"), (std::vector<std::string>{"IT", "'", "S"}));
}

TEST(GgufPretokenize, Llama3) {
  EXPECT_EQ(words("Hello WORLD'S 12345\n\n  x", "llama-bpe"),
            (std::vector<std::string>{"Hello", "\xC4\xA0WORLD", "'S", "\xC4\xA0", "123", "45", "\xC4\x8A\xC4\x8A",
                                      "\xC4\xA0", "\xC4\xA0x"}));
}

TEST(GgufPretokenize, Default) {
  // Punctuation runs, then the GPT-2 regex, then digit runs, then digit triplets.
  EXPECT_EQ(words("a,b  1234567 ok", "default"),
            (std::vector<std::string>{"a", ",", "b", "\xC4\xA0", "\xC4\xA0", "123", "456", "7", "\xC4\xA0ok"}));
}

TEST(GgufPretokenize, Qwen2AndFriends) {
  // Qwen2: digits one at a time, case-insensitive contractions, newline runs.
  EXPECT_EQ(words("It'S 2024\n\nok", "qwen2"),
            (std::vector<std::string>{"It", "'S", "\xC4\xA0", "2", "0", "2", "4", "\xC4\x8A\xC4\x8A", "ok"}));
  // Qwen3.5: a combining mark stays inside the word (U+0301 after e).
  EXPECT_EQ(words("caf" "e\xCC\x81!", "qwen35"), (std::vector<std::string>{"cafe\xC3\x8C\xC4\xA3", "!"}));
  EXPECT_EQ(words("caf" "e\xCC\x81!", "qwen2"), (std::vector<std::string>{"cafe", "\xC3\x8C\xC4\xA3!"}));
  // AFMoE's digit grouper alone glues the text before a run to its first group (afmoe's later
  // regexes split the letters off again).
  const std::string_view digit_grouper[] = {"\\p{AFMoE_digits}"};
  EXPECT_EQ(tok::LlamaPreTokenizer(digit_grouper).split("ab12345 x"),
            (std::vector<std::string>{"ab12", "345", "\xC4\xA0x"}));
  EXPECT_EQ(words("ab12345 x", "afmoe"), (std::vector<std::string>{"ab", "12", "345", "\xC4\xA0x"}));
  // deepseek-coder: newlines alone, letters, punctuation, CJK, single digits (std::regex fallback).
  EXPECT_EQ(words("a1, \xE4\xB8\xAD\n", "deepseek-coder"),
            (std::vector<std::string>{"a", "1", ",", "\xC4\xA0", "\xC3\xA4\xC2\xB8\xC5\x83", "\xC4\x8A"}));
}

TEST(GgufPretokenize, EverySupportedEntryCompiles) {
  size_t supported = 0;
  for (const GgufPreSpec& spec : gguf_pre_table()) {
    if (!spec.refused.empty()) continue;
    ++supported;
    SCOPED_TRACE(std::string(spec.name));
    const tok::LlamaPreTokenizer pre(spec.regexes);
    const std::vector<std::string> w = pre.split("Hello, World's 12345 \xE4\xB8\xAD\xE6\x96\x87!\n\n  x");
    std::string joined;
    for (const std::string& word : w) {
      EXPECT_FALSE(word.empty());
      joined += word;
    }
    // Splitting loses nothing: the words concatenate to the byte-encoded text.
    EXPECT_EQ(joined, tok::LlamaPreTokenizer(std::vector<std::string_view>{}).split(
                          "Hello, World's 12345 \xE4\xB8\xAD\xE6\x96\x87!\n\n  x")[0]);
  }
  EXPECT_GE(supported, 80u);
}

TEST(GgufPretokenize, LenientUtf8) {
  EXPECT_EQ(tok::llama_code_points("a\xC3(\xE2\x82"), (std::vector<uint32_t>{0x61, 0xFFFD, 0x28, 0xFFFD, 0xFFFD}));
  EXPECT_EQ(tok::llama_code_points("\xF0\x9F\xA6\x99\xC3\xA9"), (std::vector<uint32_t>{0x1F999, 0xE9}));
}

void expect_error(const GgufMetadata& metadata, ErrorKind kind, std::vector<std::string> parts) {
  try {
    (void)read_gguf_vocab(gguf_from_metadata(metadata));
    ADD_FAILURE() << "expected an error mentioning " << parts.front();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), kind) << e.what();
    parts.push_back("synthetic.gguf");
    for (const std::string& part : parts) {
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << "'" << part << "' not in: " << e.what();
    }
  }
}

TEST(GgufVocabErrors, UnsupportedModelAndPre) {
  expect_error(vocab_metadata("bert", abc_vocab({})), ErrorKind::kUnsupported,
               {"tokenizer.ggml.model", "'bert'", "supported: llama, gpt2"});
  expect_error(bpe_metadata("no-such-pre", {"a b"}), ErrorKind::kUnsupported,
               {"tokenizer.ggml.pre", "'no-such-pre'", "default", "gpt-2", "llama-bpe", "qwen2", "deepseek-llm"});
  // Names llama.cpp knows but calq does not reproduce give the reason.
  expect_error(bpe_metadata("kimi-k2", {"a b"}), ErrorKind::kUnsupported, {"'kimi-k2'", "Kimi-K2"});
  expect_error(bpe_metadata("gemma4", {"a b"}), ErrorKind::kUnsupported, {"'gemma4'", "U+2581"});
  expect_error(bpe_metadata("superbpe", {"a b"}), ErrorKind::kUnsupported, {"'superbpe'", "empty string"});
  // A llama vocabulary ignores tokenizer.ggml.pre, as llama.cpp does.
  auto llama_with_pre = vocab_metadata("llama", abc_vocab({}), {{"tokenizer.ggml.pre", GgufValue::of_string("qwen2")}});
  EXPECT_EQ(read_gguf_vocab(gguf_from_metadata(llama_with_pre)).type, GgufVocabType::kSpm);
}

TEST(GgufVocabErrors, MissingAndMistypedKeys) {
  expect_error({{"general.architecture", GgufValue::of_string("llama")}}, ErrorKind::kNotFound, {"tokenizer.ggml.model"});
  expect_error({{"tokenizer.ggml.model", GgufValue::of_string("llama")}}, ErrorKind::kNotFound, {"tokenizer.ggml.tokens"});
  expect_error({{"tokenizer.ggml.model", GgufValue::of_uint32(1)}}, ErrorKind::kFormat, {"tokenizer.ggml.model"});
  expect_error({{"tokenizer.ggml.model", GgufValue::of_string("llama")},
                {"tokenizer.ggml.tokens", GgufValue::of_int32s({1, 2})}},
               ErrorKind::kFormat, {"tokenizer.ggml.tokens", "array of string"});
  auto float_types = vocab_metadata("llama", abc_vocab({}));
  float_types[4].second = GgufValue::of_float32s({1, 1, 1, 1, 1, 1});
  expect_error(float_types, ErrorKind::kFormat, {"tokenizer.ggml.token_type", "int32"});
  auto no_merges = bpe_metadata("gpt-2", {});
  no_merges.erase(no_merges.begin() + 6);
  expect_error(no_merges, ErrorKind::kNotFound, {"tokenizer.ggml.merges"});
  expect_error(vocab_metadata("llama", abc_vocab({}), {{"tokenizer.ggml.add_bos_token", GgufValue::of_uint32(1)}}),
               ErrorKind::kFormat, {"tokenizer.ggml.add_bos_token", "bool"});
  expect_error(vocab_metadata("llama", abc_vocab({}), {{"tokenizer.ggml.bos_token_id", GgufValue::of_string("1")}}),
               ErrorKind::kFormat, {"tokenizer.ggml.bos_token_id"});
}

TEST(GgufVocabErrors, LengthMismatchDuplicatesAndMissingBos) {
  auto short_scores = vocab_metadata("llama", abc_vocab({}));
  short_scores[3].second = GgufValue::of_float32s({0, 0, 0});
  expect_error(short_scores, ErrorKind::kFormat, {"tokenizer.ggml.scores", "3 entries", "has 6"});
  auto long_types = vocab_metadata("llama", abc_vocab({}));
  long_types[4].second = GgufValue::of_int32s({1, 1, 1, 1, 1, 1, 1});
  expect_error(long_types, ErrorKind::kFormat, {"tokenizer.ggml.token_type", "7 entries"});
  expect_error(vocab_metadata("llama", abc_vocab({{"a", -1}})), ErrorKind::kFormat, {"duplicate token 'a'", "3 and 6"});
  // gpt2's default BOS (11) is outside this vocabulary, so add_bos_token has no token to add.
  auto bos_less = bpe_metadata("gpt-2", {"a b"});
  bos_less.erase(bos_less.begin() + 7);
  bos_less.emplace_back("tokenizer.ggml.add_bos_token", GgufValue::of_bool(true));
  expect_error(bos_less, ErrorKind::kFormat, {"tokenizer.ggml.add_bos_token", "no BOS"});
}

TEST(GgufVocab, LoadRulesOfLlamaCpp) {
  // Defaults, out-of-range ids, empty tokens, int32 scores and end-of-generation texts.
  auto metadata = vocab_metadata("gpt2", {{"a"}, {""}, {"<|im_end|>"}, {"<|endoftext|>", 0, GgufTokenType::kUserDefined}},
                                 {{"tokenizer.ggml.merges", GgufValue::of_strings({})},
                                  {"tokenizer.ggml.eos_token_id", GgufValue::of_uint32(99)},
                                  {"tokenizer.ggml.padding_token_id", GgufValue::of_uint32(0)}});
  metadata[3].second = GgufValue::of_int32s({-3, 0, 0, 0});
  const GgufVocab vocab = read_gguf_vocab(gguf_from_metadata(metadata));
  EXPECT_EQ(vocab.pre_spec, find_gguf_pre("default"));  // no tokenizer.ggml.pre
  EXPECT_EQ(vocab.bos_id, -1);                       // default 11 is outside the vocabulary
  EXPECT_EQ(vocab.eos_id, -1);                       // 99 is ignored, keeping the (disabled) default
  EXPECT_EQ(vocab.pad_id, 0);
  EXPECT_EQ(vocab.tokens[1], "[EMPTY_1]");
  EXPECT_EQ(vocab.scores[0], -3.0f);
  EXPECT_EQ(vocab.attrs[2], gguf_attr::kNormal | gguf_attr::kControl);
  EXPECT_EQ(vocab.attrs[3], gguf_attr::kUserDefined | gguf_attr::kControl);
}

}  // namespace
}  // namespace calq::io
