// Pipeline components on hand-written tokenizer.json files. Expected values are derived from the
// Hugging Face `tokenizers` semantics (noted beside each), not from running this code.
//
// Observing piece boundaries: most tests use a BPE model with ignore_merges and no merges, so a
// piece becomes one token exactly when the whole piece is in the vocab, else one token per char.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <thread>

#include "core/error.h"
#include "io/tokenizer.h"
#include "io/tokenizer/unicode.h"

namespace calq::io {
namespace {

using nlohmann::json;

json vocab_of(std::initializer_list<const char*> tokens) {
  json vocab = json::object();
  int id = 0;
  for (const char* t : tokens) vocab[t] = id++;
  return vocab;
}

json tokenizer_doc(json vocab, json merges = json::array(), bool ignore_merges = true) {
  json doc;
  doc["version"] = "1.0";
  doc["added_tokens"] = json::array();
  doc["normalizer"] = nullptr;
  doc["pre_tokenizer"] = nullptr;
  doc["post_processor"] = nullptr;
  doc["decoder"] = nullptr;
  doc["model"] = {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr},
                  {"continuing_subword_prefix", nullptr}, {"end_of_word_suffix", nullptr},
                  {"fuse_unk", false}, {"byte_fallback", false}, {"ignore_merges", ignore_merges},
                  {"vocab", std::move(vocab)}, {"merges", std::move(merges)}};
  return doc;
}

Tokenizer load(const json& doc) { return Tokenizer::from_json_text(doc.dump(), "<test>"); }

// The ids of `tokens` in `t` (each must exist).
std::vector<int32_t> ids(const Tokenizer& t, std::initializer_list<const char*> tokens) {
  std::vector<int32_t> out;
  for (const char* token : tokens) {
    const auto id = t.token_to_id(token);
    EXPECT_TRUE(id.has_value()) << token;
    out.push_back(id.value_or(-1));
  }
  return out;
}

json added_token(const char* content, int id, bool special, bool normalized, bool lstrip = false,
                 bool rstrip = false, bool single_word = false) {
  return {{"id", id}, {"content", content}, {"single_word", single_word}, {"lstrip", lstrip},
          {"rstrip", rstrip}, {"normalized", normalized}, {"special", special}};
}

// ---- Split behaviours on "a-b--c" with the pattern "-" (spans a | - | b | - | - | c).
json split_doc(const char* behavior, bool invert, json pattern = {{"String", "-"}}) {
  json doc = tokenizer_doc(vocab_of({"a", "b", "c", "-", "a-", "b-", "-b", "-c", "--"}));
  doc["pre_tokenizer"] = {{"type", "Split"}, {"pattern", std::move(pattern)}, {"behavior", behavior},
                          {"invert", invert}};
  return doc;
}

TEST(TokenizerSplit, Behaviours) {
  {
    const Tokenizer t = load(split_doc("Removed", false));
    EXPECT_EQ(t.encode("a-b--c"), ids(t, {"a", "b", "c"}));
  }
  {
    const Tokenizer t = load(split_doc("Isolated", false));
    EXPECT_EQ(t.encode("a-b--c"), ids(t, {"a", "-", "b", "-", "-", "c"}));
  }
  {
    // Only the first of consecutive matches joins the previous piece (HF's fold).
    const Tokenizer t = load(split_doc("MergedWithPrevious", false));
    EXPECT_EQ(t.encode("a-b--c"), ids(t, {"a-", "b-", "-", "c"}));
  }
  {
    const Tokenizer t = load(split_doc("MergedWithNext", false));
    EXPECT_EQ(t.encode("a-b--c"), ids(t, {"a", "-b", "-", "-c"}));
  }
  {
    const Tokenizer t = load(split_doc("Contiguous", false));
    EXPECT_EQ(t.encode("a-b--c"), ids(t, {"a", "-", "b", "--", "c"}));
  }
  {
    // Inverted: the pattern describes what to keep apart; Removed drops everything else.
    const Tokenizer t = load(split_doc("Removed", true));
    EXPECT_EQ(t.encode("a-b--c"), ids(t, {"-", "-", "-"}));
  }
  {
    const Tokenizer t = load(split_doc("Isolated", false, {{"Regex", "-+"}}));
    EXPECT_EQ(t.encode("a-b--c"), ids(t, {"a", "-", "b", "--", "c"}));
  }
}

TEST(TokenizerSplit, CharacterClassPreTokenizers) {
  json doc = tokenizer_doc(vocab_of({"h", "i", ",", " ", "y", "o", "u", "!", "1", "2", "3", "a", "b",
                                     "-", "hi", "you", "hi,", "you!", "123"}));
  doc["pre_tokenizer"] = {{"type", "Whitespace"}};
  EXPECT_EQ(load(doc).encode("hi, you!"), ids(load(doc), {"hi", ",", "you", "!"}));
  doc["pre_tokenizer"] = {{"type", "WhitespaceSplit"}};
  EXPECT_EQ(load(doc).encode("hi, you!"), ids(load(doc), {"hi,", "you!"}));
  doc["pre_tokenizer"] = {{"type", "Punctuation"}, {"behavior", "Isolated"}};
  EXPECT_EQ(load(doc).encode("hi,you"), ids(load(doc), {"hi", ",", "you"}));
  doc["pre_tokenizer"] = {{"type", "Digits"}, {"individual_digits", false}};
  EXPECT_EQ(load(doc).encode("a123b"), ids(load(doc), {"a", "123", "b"}));
  doc["pre_tokenizer"] = {{"type", "Digits"}, {"individual_digits", true}};
  EXPECT_EQ(load(doc).encode("a123b"), ids(load(doc), {"a", "1", "2", "3", "b"}));
  doc["pre_tokenizer"] = {{"type", "CharDelimiterSplit"}, {"delimiter", "-"}};
  EXPECT_EQ(load(doc).encode("a-b"), ids(load(doc), {"a", "b"}));
}

TEST(TokenizerSplit, RegexWhitespaceIncludesNextLine) {
  // Oniguruma's \s is Unicode White_Space, which includes U+0085 (NEL, a control character).
  json doc = tokenizer_doc(vocab_of({"a", "b", "\u0085", "a\u0085b"}));
  doc["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "\\s"}}}, {"behavior", "Removed"}};
  EXPECT_EQ(load(doc).encode("a\u0085b"), (std::vector<int32_t>{0, 1}));
}

// ---- BPE model.
TEST(TokenizerBpe, MergeRanksDecideAndBothMergeFormsAgree) {
  const json vocab = vocab_of({"a", "b", "c", "ab", "bc"});
  // "b c" ranks first: a b c -> a bc.  "a b" first: a b c -> ab c.
  EXPECT_EQ(load(tokenizer_doc(vocab, {"b c", "a b"}, false)).encode("abc"), (std::vector<int32_t>{0, 4}));
  EXPECT_EQ(load(tokenizer_doc(vocab, {"a b", "b c"}, false)).encode("abc"), (std::vector<int32_t>{3, 2}));
  const json pairs = json::parse(R"([["b", "c"], ["a", "b"]])");
  EXPECT_EQ(load(tokenizer_doc(vocab, pairs, false)).encode("abc"), (std::vector<int32_t>{0, 4}));
}

TEST(TokenizerBpe, EqualRanksMergeLeftmostFirst) {
  const Tokenizer t = load(tokenizer_doc(vocab_of({"a", "aa"}), {"a a"}, false));
  EXPECT_EQ(t.encode("aaa"), ids(t, {"aa", "a"}));
  EXPECT_EQ(t.encode("aaaa"), ids(t, {"aa", "aa"}));
}

TEST(TokenizerBpe, IgnoreMergesTakesWholeWords) {
  const json vocab = vocab_of({"a", "b", "c", "ab", "abc"});
  EXPECT_EQ(load(tokenizer_doc(vocab, {"a b"}, true)).encode("abc"), (std::vector<int32_t>{4}));
  EXPECT_EQ(load(tokenizer_doc(vocab, {"a b"}, false)).encode("abc"), (std::vector<int32_t>{3, 2}));
}

TEST(TokenizerBpe, UnknownsFuseOrNot) {
  json doc = tokenizer_doc(vocab_of({"<unk>", "a"}), json::array(), false);
  EXPECT_EQ(load(doc).encode("axya"), (std::vector<int32_t>{1, 1}));  // no unk_token: dropped
  doc["model"]["unk_token"] = "<unk>";
  EXPECT_EQ(load(doc).encode("axya"), (std::vector<int32_t>{1, 0, 0, 1}));
  doc["model"]["fuse_unk"] = true;
  EXPECT_EQ(load(doc).encode("axya"), (std::vector<int32_t>{1, 0, 1}));
}

TEST(TokenizerBpe, ByteFallback) {
  // é = C3 A9; € = E2 82 AC, whose AC has no byte token, so it falls back to <unk>.
  json doc = tokenizer_doc(vocab_of({"<unk>", "a", "<0xC3>", "<0xA9>", "<0xE2>", "<0x82>", "<0xEF>",
                                     "<0xBF>", "<0xBD>"}),
                           json::array(), false);
  doc["model"]["unk_token"] = "<unk>";
  doc["model"]["byte_fallback"] = true;
  doc["decoder"] = json::parse(R"({"type": "Sequence", "decoders": [{"type": "ByteFallback"}, {"type": "Fuse"}]})");
  const Tokenizer t = load(doc);
  EXPECT_EQ(t.encode("a\xC3\xA9"), ids(t, {"a", "<0xC3>", "<0xA9>"}));
  EXPECT_EQ(t.encode("a\xE2\x82\xAC"), ids(t, {"a", "<unk>"}));
  // Invalid UTF-8 input is read as Rust's from_utf8_lossy would: FF -> U+FFFD (EF BF BD).
  EXPECT_EQ(t.encode("a\xFF"), ids(t, {"a", "<0xEF>", "<0xBF>", "<0xBD>"}));

  EXPECT_EQ(t.decode(ids(t, {"<0xC3>", "<0xA9>", "a"})), "\xC3\xA9" "a");
  // An invalid run gives one U+FFFD per byte token (HF), not per maximal subpart (E2 82 is one).
  EXPECT_EQ(t.decode(ids(t, {"<0xE2>", "<0x82>"})), "\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(t.decode(ids(t, {"<0xC3>", "a", "<0xA9>"})), "\xEF\xBF\xBD" "a" "\xEF\xBF\xBD");
}

TEST(TokenizerBpe, SubwordPrefixAndSuffix) {
  json prefixed = tokenizer_doc(vocab_of({"a", "##b", "ab"}), {"a ##b"}, false);
  prefixed["model"]["continuing_subword_prefix"] = "##";
  EXPECT_EQ(load(prefixed).encode("ab"), (std::vector<int32_t>{2}));
  json suffixed = tokenizer_doc(vocab_of({"a", "b</w>", "ab</w>"}), {"a b</w>"}, false);
  suffixed["model"]["end_of_word_suffix"] = "</w>";
  EXPECT_EQ(load(suffixed).encode("ab"), (std::vector<int32_t>{2}));
}

// ---- Normalizers: the vocab holds the expected normalized text as one token.
int32_t normalized_probe(const json& normalizer, const std::string& text, const std::string& expected) {
  json doc = tokenizer_doc(json{{expected, 7}, {"x", 8}});
  doc["normalizer"] = normalizer;
  const auto got = load(doc).encode(text);
  return got.size() == 1 ? got[0] : -1;
}

TEST(TokenizerNormalizers, Components) {
  const json prepend_replace = json::parse(
      R"({"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "▁"},
          {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]})");
  EXPECT_EQ(normalized_probe(prepend_replace, "hi there", "▁hi▁there"), 7);
  const json regex_replace = json::parse(R"({"type": "Replace", "pattern": {"Regex": " +"}, "content": "_"})");
  EXPECT_EQ(normalized_probe(regex_replace, "a   b c", "a_b_c"), 7);
  EXPECT_EQ(normalized_probe({{"type", "NFKC"}}, "\xEF\xAC\x81", "fi"), 7);         // ﬁ ligature
  EXPECT_EQ(normalized_probe({{"type", "NFC"}}, "e\xCC\x81", "\xC3\xA9"), 7);        // e + acute -> é
  EXPECT_EQ(normalized_probe({{"type", "NFD"}}, "\xC3\xA9", "e\xCC\x81"), 7);
  EXPECT_EQ(normalized_probe({{"type", "Lowercase"}}, "\xC3\x80" "B", "\xC3\xA0" "b"), 7);  // ÀB -> àb
  EXPECT_EQ(normalized_probe({{"type", "Strip"}, {"strip_left", true}, {"strip_right", false}}, " \t x ", "x "), 7);
  const json strip_accents = json::parse(R"({"type": "Sequence", "normalizers": [{"type": "NFD"}, {"type": "StripAccents"}]})");
  EXPECT_EQ(normalized_probe(strip_accents, "caf\xC3\xA9", "cafe"), 7);
}

// ---- Added tokens.
TEST(TokenizerAddedTokens, LstripRstrip) {
  // "a  <m> b": <m> spans [3, 6); lstrip pulls its start back over "  ", rstrip its end over " ".
  const auto encode = [](bool lstrip, bool rstrip) {
    json doc = tokenizer_doc(vocab_of({"a", "b", " "}));
    doc["added_tokens"] = json::array({added_token("<m>", 10, true, false, lstrip, rstrip)});
    return load(doc).encode("a  <m> b");
  };
  EXPECT_EQ(encode(false, false), (std::vector<int32_t>{0, 2, 2, 10, 2, 1}));
  EXPECT_EQ(encode(true, false), (std::vector<int32_t>{0, 10, 2, 1}));
  EXPECT_EQ(encode(false, true), (std::vector<int32_t>{0, 2, 2, 10, 1}));
  EXPECT_EQ(encode(true, true), (std::vector<int32_t>{0, 10, 1}));
}

TEST(TokenizerAddedTokens, SingleWordAndLongestMatch) {
  json doc = tokenizer_doc(vocab_of({"a", "b", " ", "c"}));
  doc["added_tokens"] = json::array({added_token("ab", 11, false, false, false, false, true)});
  // The "ab" inside "cab" is not a word of its own.
  EXPECT_EQ(load(doc).encode("ab cab ab"), (std::vector<int32_t>{11, 2, 3, 0, 1, 2, 11}));

  json longest = tokenizer_doc(vocab_of({"a", "b", "c"}));
  longest["added_tokens"] = json::array({added_token("ab", 11, false, false), added_token("abc", 12, false, false)});
  EXPECT_EQ(load(longest).encode("cabcab"), (std::vector<int32_t>{2, 12, 11}));
}

TEST(TokenizerAddedTokens, NormalizedTokensMatchNormalizedText) {
  json doc = tokenizer_doc(vocab_of({"h", "e", "l", "o", "<", ">", "x", "X"}));
  doc["normalizer"] = {{"type", "Lowercase"}};
  doc["added_tokens"] = json::array({added_token("HELLO", 20, false, true), added_token("<X>", 21, true, false)});
  const Tokenizer t = load(doc);
  EXPECT_EQ(t.encode("Hello"), (std::vector<int32_t>{20}));   // "hello" == normalized "HELLO"
  EXPECT_EQ(t.encode("<X>"), (std::vector<int32_t>{21}));     // matched before lowercasing
  EXPECT_EQ(t.encode("<x>"), ids(t, {"<", "x", ">"}));        // raw text has no "<X>"
}

TEST(TokenizerAddedTokens, SkipSpecialTokensOnDecode) {
  json doc = tokenizer_doc(vocab_of({"a", "b"}));
  doc["added_tokens"] = json::array({added_token("<s>", 2, true, false), added_token("<x>", 3, false, false)});
  const Tokenizer t = load(doc);
  const std::vector<int32_t> seq{2, 0, 3, 1};
  EXPECT_EQ(t.decode(seq, false), "<s> a <x> b");  // no decoder: tokens joined by spaces
  EXPECT_EQ(t.decode(seq, true), "a <x> b");
  EXPECT_EQ(t.vocab_size(), 4u);
}

// ---- Metaspace.
json metaspace_doc(const char* scheme, bool split) {
  json doc = tokenizer_doc(vocab_of({"▁", "h", "i", "hi", "▁hi", "<s>", "hi▁"}), {"h i", "hi ▁", "▁ hi"}, false);
  doc["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", "▁"}, {"prepend_scheme", scheme}, {"split", split}};
  doc["added_tokens"] = json::array({added_token("<s>", 5, true, false)});
  doc["decoder"] = {{"type", "Metaspace"}, {"replacement", "▁"}, {"prepend_scheme", scheme}, {"split", split}};
  return doc;
}

TEST(TokenizerMetaspace, PrependSchemes) {
  const Tokenizer first = load(metaspace_doc("first", true));
  // "first": only the piece at offset 0 of the input gets ▁, not the text after an added token.
  EXPECT_EQ(first.encode("hi hi"), ids(first, {"▁hi", "▁hi"}));
  EXPECT_EQ(first.encode("<s>hi hi"), ids(first, {"<s>", "hi", "▁hi"}));
  EXPECT_EQ(first.encode("hi<s>hi"), ids(first, {"▁hi", "<s>", "hi"}));
  const Tokenizer always = load(metaspace_doc("always", true));
  EXPECT_EQ(always.encode("<s>hi hi"), ids(always, {"<s>", "▁hi", "▁hi"}));
  const Tokenizer never = load(metaspace_doc("never", true));
  EXPECT_EQ(never.encode("hi hi"), ids(never, {"hi", "▁hi"}));
}

TEST(TokenizerMetaspace, SplitFalseKeepsOneWord) {
  // One word "▁hi▁hi": h+i twice (rank 0), then "hi ▁" (rank 1) beats "▁ hi" (rank 2).
  const Tokenizer t = load(metaspace_doc("always", false));
  EXPECT_EQ(t.encode("hi hi"), ids(t, {"▁", "hi▁", "hi"}));
}

TEST(TokenizerMetaspace, DecoderDropsReplacementOfFirstToken) {
  const Tokenizer t = load(metaspace_doc("always", true));
  EXPECT_EQ(t.decode(ids(t, {"▁hi", "▁hi"})), "hi hi");
  const Tokenizer never = load(metaspace_doc("never", true));
  EXPECT_EQ(never.decode(ids(never, {"▁hi", "▁hi"})), " hi hi");
}

// ---- ByteLevel: GPT-2 alphabet (space -> Ġ U+0120, newline -> Ċ U+010A, 0xAD -> Ń U+0143).
TEST(TokenizerByteLevel, AlphabetBothWays) {
  json doc = tokenizer_doc(vocab_of({"Ġ", "a", "Ċ", "Ń"}));
  doc["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}};
  doc["decoder"] = {{"type", "ByteLevel"}};
  const Tokenizer t = load(doc);
  EXPECT_EQ(t.encode(" a\n"), ids(t, {"Ġ", "a", "Ċ"}));
  EXPECT_EQ(t.decode(ids(t, {"Ġ", "a", "Ċ"})), " a\n");
  EXPECT_EQ(t.decode(ids(t, {"a", "Ń"})), "a\xEF\xBF\xBD");  // lone 0xAD is not UTF-8
  doc["pre_tokenizer"]["add_prefix_space"] = true;
  EXPECT_EQ(load(doc).encode("a"), ids(t, {"Ġ", "a"}));
}

// ---- Decoders.
TEST(TokenizerDecoders, StripWordPieceBpe) {
  json doc = tokenizer_doc(vocab_of({"  a", " b "}));
  doc["decoder"] = {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 1}};
  // Each token: at most one leading and one trailing ' ' removed: " a" + "b".
  EXPECT_EQ(load(doc).decode(std::vector<int32_t>{0, 1}), " ab");

  json wp = tokenizer_doc(vocab_of({"hel", "##lo", "world", "."}));
  wp["decoder"] = {{"type", "WordPiece"}, {"prefix", "##"}, {"cleanup", true}};
  EXPECT_EQ(load(wp).decode(std::vector<int32_t>{0, 1, 2, 3}), "hello world.");

  json bpe = tokenizer_doc(vocab_of({"hel", "lo</w>", "world</w>"}));
  bpe["decoder"] = {{"type", "BPEDecoder"}, {"suffix", "</w>"}};
  EXPECT_EQ(load(bpe).decode(std::vector<int32_t>{0, 1, 2}), "hello world");
}

// ---- Post-processors.
TEST(TokenizerPostProcessors, TemplateAndRoberta) {
  json doc = tokenizer_doc(vocab_of({"a", "<s>", "</s>"}));
  doc["post_processor"] = json::parse(R"({"type": "TemplateProcessing",
      "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                 {"SpecialToken": {"id": "</s>", "type_id": 0}}],
      "pair": [],
      "special_tokens": {"<s>": {"id": "<s>", "ids": [1, 1], "tokens": ["<s>", "<s>"]},
                         "</s>": {"id": "</s>", "ids": [2], "tokens": ["</s>"]}}})");
  EXPECT_EQ(load(doc).encode("aa", true), (std::vector<int32_t>{1, 1, 0, 0, 2}));
  EXPECT_EQ(load(doc).encode("aa", false), (std::vector<int32_t>{0, 0}));
  doc["post_processor"] = json::parse(R"({"type": "RobertaProcessing", "sep": ["</s>", 2], "cls": ["<s>", 1]})");
  EXPECT_EQ(load(doc).encode("a", true), (std::vector<int32_t>{1, 0, 2}));
}

// ---- UTF-8 repair follows Rust's from_utf8_lossy (one U+FFFD per maximal invalid subpart).
TEST(TokenizerUnicode, LossyUtf8) {
  const std::string r = "\xEF\xBF\xBD";
  EXPECT_EQ(tok::utf8_lossy("\xE2\x82" "A"), r + "A");
  EXPECT_EQ(tok::utf8_lossy("\xF0\x80"), r + r);           // F0 needs 90..BF next
  EXPECT_EQ(tok::utf8_lossy("\xED\xA0\x80"), r + r + r);   // surrogates are invalid
  EXPECT_EQ(tok::utf8_lossy("ok\xC3\xA9"), "ok\xC3\xA9");
  EXPECT_FALSE(tok::is_valid_utf8("\xC0\xAF"));
}

// ---- encode() is const and may run on several threads at once.
TEST(TokenizerThreads, ConcurrentEncodeIsDeterministic) {
  const Tokenizer t = load(metaspace_doc("first", true));
  std::string text;
  for (int i = 0; i < 2000; ++i) text += i % 7 == 0 ? "<s>hi " : "hi hi ";
  const std::vector<int32_t> expected = t.encode(text);
  std::vector<std::vector<int32_t>> results(4);
  std::vector<std::thread> threads;
  for (auto& r : results) threads.emplace_back([&t, &text, &r] { r = t.encode(text); });
  for (auto& th : threads) th.join();
  for (const auto& r : results) EXPECT_EQ(r, expected);
  EXPECT_GT(expected.size(), 2000u);
}

}  // namespace
}  // namespace calq::io
