// llama.cpp's pre-tokenizer for gpt2-model GGUF vocabularies (unicode_regex_split): the text is
// decoded to code points (leniently: each byte that does not start a well-formed sequence becomes
// U+FFFD), split by each regex of the pre-tokenizer's list in turn (each regex splits only inside
// the pieces the previous ones made), and each piece is re-encoded to UTF-8 and mapped through the
// GPT-2 byte-to-unicode alphabet.
//
// A regex llama.cpp answers with a hand-written matcher (chosen by the exact regex string: the
// GPT-2, Llama-3, Qwen2 and Qwen3.5 regexes, newline runs, the AFMoE/tiny_aya digit grouper) is
// split the way that matcher splits, with its character classes (general categories as llama.cpp's
// tables assign them, whitespace = the Unicode White_Space property), including where those differ
// from a real regex engine; every other regex runs through LlamaRegex, calq's emulation of
// llama.cpp's std::regex fallback (llama_regex.h).
//
// Contract: pure functions and const methods, thread-safe. A code point above U+10FFFF (lead bytes
// F5..F7) is an ErrorKind::kInvalidArgument error, as llama.cpp throws for it; a regex LlamaRegex
// cannot emulate is a kUnsupported error from the constructor.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "io/tokenizer/llama_regex.h"

namespace calq::io::tok {

// The character classes of a code point as llama.cpp's unicode_cpt_flags gives them (general
// categories; whitespace = the Unicode White_Space property). `defined` is its flags != 0: true for
// every code point below 0x110000 (unassigned ones are \p{C}), false above, where all are false.
struct LlamaFlags {
  bool defined = false;
  bool letter = false;
  bool number = false;
  bool punctuation = false;
  bool mark = false;
  bool symbol = false;
  bool whitespace = false;
};
LlamaFlags llama_flags(uint32_t c);

// llama.cpp's unicode_len_utf8: sequence length from the high nibble of the lead byte (1 for a
// continuation byte).
size_t llama_utf8_len(unsigned char lead);

// llama.cpp's unicode_cpts_from_utf8.
std::vector<uint32_t> llama_code_points(std::string_view text);

// Whether llama.cpp splits with this exact regex string by hand rather than through std::regex.
bool is_custom_split(std::string_view regex);

class LlamaPreTokenizer {
 public:
  LlamaPreTokenizer() = default;
  explicit LlamaPreTokenizer(std::span<const std::string_view> regexes);

  // The pre-tokenized words of `text`, byte-encoded (GPT-2 alphabet), in order; none is empty.
  std::vector<std::string> split(std::string_view text) const;

 private:
  enum class Custom { kNone, kGpt2, kLlama3, kQwen2, kQwen35, kNewlines, kDigitGroups };
  struct Pass {
    Custom custom = Custom::kNone;
    std::shared_ptr<const LlamaRegex> regex;  // kNone
  };
  std::vector<Pass> passes_;
};

}  // namespace calq::io::tok
