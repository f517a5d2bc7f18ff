// llama.cpp's pre-tokenizer for gpt2-model GGUF vocabularies (unicode_regex_split): the text is
// decoded to code points (leniently: each byte that does not start a well-formed sequence becomes
// U+FFFD), split by the regex set of the GgufPreType, and each piece is re-encoded to UTF-8 and
// mapped through the GPT-2 byte-to-unicode alphabet.
//
// The splitting follows llama.cpp's hand-written matchers for the GPT-2 and Llama-3 regexes and its
// character classes (general categories as Python's `regex` module assigns them, whitespace =
// the Unicode White_Space property), including where those differ from a real regex engine.
//
// Contract: pure functions, thread-safe. A code point above U+10FFFF (lead bytes F5..F7) is an
// ErrorKind::kInvalidArgument error, as llama.cpp throws for it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "io/tokenizer/gguf_vocab.h"

namespace calq::io::tok {

// llama.cpp's unicode_len_utf8: sequence length from the high nibble of the lead byte (1 for a
// continuation byte).
size_t llama_utf8_len(unsigned char lead);

// llama.cpp's unicode_cpts_from_utf8.
std::vector<uint32_t> llama_code_points(std::string_view text);

// The pre-tokenized words of `text`, byte-encoded (GPT-2 alphabet), in order; none is empty.
std::vector<std::string> llama_pretokenize(std::string_view text, GgufPreType type);

}  // namespace calq::io::tok
