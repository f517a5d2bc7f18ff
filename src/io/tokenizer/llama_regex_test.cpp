// LlamaRegex against the engine llama.cpp itself runs: libstdc++'s std::regex / std::wregex
// (ECMAScript) on llama.cpp's collapsed or wide text, on random strings over an alphabet that
// covers every unit class, for each regex of llama.cpp's table that calq runs through LlamaRegex.
#include "io/tokenizer/llama_regex.h"

#include <gtest/gtest.h>

#include <random>
#include <regex>
#include <string>
#include <vector>

#include "core/error.h"
#include "io/tokenizer/gguf_pre_table.h"
#include "io/tokenizer/llama_pretokenize.h"

namespace calq::io::tok {
namespace {

// llama.cpp's rewrite of \p{X} for std::regex on the collapsed text (the oracle's side).
std::string collapse_regex(const std::string& re) {
  struct Cat {
    char letter;
    char unit;
    const char* ascii;
  };
  const Cat cats[] = {{'N', '\xD1', "0-9"},
                      {'L', '\xD2', "A-Za-z"},
                      {'P', '\xD3', "!-#%-*,-/:-;?-@\\[-\\]_\\{\\}"},
                      {'M', '\xD4', ""},
                      {'S', '\xD5', "\\$\\+<->^`\\|"}};
  std::string out;
  bool inside = false;
  for (size_t i = 0; i < re.size(); ++i) {
    if (re[i] == '[' && (i == 0 || re[i - 1] != '\\')) {
      out += '[';
      inside = true;
      continue;
    }
    if (inside && re[i] == ']' && re[i - 1] != '\\') {
      out += ']';
      inside = false;
      continue;
    }
    // \p{X} for the five categories, and \p{Lu} \p{Ll} \p{Lt} \p{Lm} \p{Lo} as letters.
    if (re.compare(i, 3, "\\p{") == 0) {
      const size_t close = re.find('}', i);
      const std::string name = close == std::string::npos ? "" : re.substr(i + 3, close - i - 3);
      const bool letter_sub = name == "Lu" || name == "Ll" || name == "Lt" || name == "Lm" || name == "Lo";
      bool done = false;
      for (const Cat& c : cats) {
        if (!(name.size() == 1 && name[0] == c.letter) && !(letter_sub && c.letter == 'L')) continue;
        if (!inside) out += '[';
        out += c.unit;
        out += c.ascii;
        if (!inside) out += ']';
        i = close;
        done = true;
        break;
      }
      if (done) continue;
    }
    out += re[i];
  }
  return out;
}

std::vector<size_t> split_with_std(const LlamaRegex& re, const std::vector<uint32_t>& units) {
  std::vector<size_t> out;
  int64_t start_idx = 0;
  auto collect = [&](auto begin, auto end, const auto& expr, auto iter_tag) {
    using Iter = decltype(iter_tag);
    for (Iter it(begin, end, expr), stop; it != stop; ++it) {
      if (it->position() > start_idx) out.push_back(static_cast<size_t>(it->position() - start_idx));
      out.push_back(static_cast<size_t>(it->length()));
      start_idx = it->position() + it->length();
    }
  };
  if (re.collapsed()) {
    std::string text;
    for (const uint32_t u : units) text += static_cast<char>(u);
    const std::regex expr(collapse_regex(re.pattern()));
    collect(text.data(), text.data() + text.size(), expr, std::cregex_iterator());
  } else {
    std::wstring text(units.begin(), units.end());
    std::wstring pattern;
    for (const uint32_t c : llama_code_points(re.pattern())) pattern += static_cast<wchar_t>(c);
    const std::wregex expr(pattern);
    collect(text.data(), text.data() + text.size(), expr, std::wcregex_iterator());
  }
  if (start_idx < static_cast<int64_t>(units.size())) out.push_back(units.size() - static_cast<size_t>(start_idx));
  return out;
}

// Code points of every kind the regexes tell apart: ASCII letters, digits, punctuation, symbols,
// whitespace and controls, apostrophe contractions, and non-ASCII letters (both cases, CJK,
// Hangul, kana), digits, punctuation, marks, symbols, whitespace, controls and unassigned.
const std::vector<uint32_t> kAlphabet = {
    'a', 'b', 'Z', 'Q', 's', 't', 'l', 'd', 'm', 'r', 'e', 'v', 'S', 'T', 'L', 'D', 'M', 'R', 'E', 'V', 'G',
    '0', '1', '7', '9', '\'', '\'', '.', ',', '!', '?', '-', '_', '(', ')', '[', ']', '{', '}', '$', '+', '<',
    '=', '^', '`', '|', '~', '/', '\\', '"', '#', '@', '&', ' ', ' ', ' ', ' ', '\n', '\r', '\t', 0x0B, 0x0C,
    0x01, 0x1F, 0x7F, 0xE9, 0xC9, 0x3A3, 0x3C3, 0x4E2D, 0x6587, 0xAC00, 0x3042, 0x30A2, 0x663, 0xFF11, 0x2160,
    0x3002, 0xFF0C, 0x2026, 0x2018, 0x301, 0x20AC, 0xA9, 0xA0, 0x3000, 0x2028, 0x85, 0x80, 0xE000, 0x378,
    0x1F600, 0x10400, 0xB5, 0x1E9E, 0xFF21};

std::vector<uint32_t> random_text(std::mt19937& rng, size_t n) {
  std::uniform_int_distribution<size_t> pick(0, kAlphabet.size() - 1);
  std::vector<uint32_t> cpts(n);
  for (uint32_t& c : cpts) c = kAlphabet[pick(rng)];
  return cpts;
}

TEST(LlamaRegex, AgreesWithStdRegexOnEveryTableRegex) {
  const std::vector<std::string> patterns = gguf_pre_table_generic_regexes();
  ASSERT_GT(patterns.size(), 10u);
  std::mt19937 rng(1234);
  for (const std::string& pattern : patterns) {
    SCOPED_TRACE(pattern);
    const LlamaRegex re(pattern);
    for (int trial = 0; trial < 300; ++trial) {
      const std::vector<uint32_t> cpts = random_text(rng, 1 + static_cast<size_t>(trial % 40));
      const std::vector<uint32_t> units = re.units(cpts);
      const std::vector<size_t> whole = {units.size()};
      ASSERT_EQ(re.split(units, whole), split_with_std(re, units)) << "trial " << trial;
    }
  }
}

TEST(LlamaRegex, ConstructsAndSplits) {
  const LlamaRegex digits("\\p{N}{1,3}");
  EXPECT_TRUE(digits.collapsed());
  const std::vector<uint32_t> cpts = {'1', '2', '3', '4', 'x', 0x663, 0x663};
  const std::vector<uint32_t> units = digits.units(cpts);
  EXPECT_EQ(units[5], 0xD1u);
  EXPECT_EQ(digits.split(units, {units.size()}), (std::vector<size_t>{3, 1, 1, 2}));
  // Pieces are searched separately.
  EXPECT_EQ(digits.split(units, {2, 5}), (std::vector<size_t>{2, 2, 1, 2}));

  const LlamaRegex wide("[一-龥]+|\\s+$");
  EXPECT_FALSE(wide.collapsed());
  const std::vector<uint32_t> w = wide.units({0x4E2D, 0x6587, 'a', ' ', 0x3000});
  EXPECT_EQ(w[4], 0x0Bu);  // non-ASCII whitespace
  EXPECT_EQ(wide.split(w, {w.size()}), (std::vector<size_t>{2, 1, 2}));
}

TEST(LlamaRegex, RefusesWhatItDoesNotEmulate) {
  for (const char* bad : {"\\p{N}*", "(a|)*", "(?<=a)b", "a\\1", "[abc", "(ab", "a{2,1}", "\\p{L}é", "(?i:a)"}) {
    EXPECT_THROW(LlamaRegex{bad}, Error) << bad;
  }
}

TEST(LlamaRegex, LongInputsUseNoCallStack) {
  // A million-unit run through a backtracking alternative: an explicit stack, no recursion.
  const LlamaRegex re("\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+");
  const std::vector<uint32_t> units(1'000'000, ' ');
  EXPECT_EQ(re.split(units, {units.size()}), (std::vector<size_t>{units.size()}));
}

}  // namespace
}  // namespace calq::io::tok
