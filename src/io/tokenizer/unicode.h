// UTF-8 and Unicode helpers for the tokenizer, matching the Rust standard library semantics that
// Hugging Face `tokenizers` relies on (char::is_whitespace, char::is_numeric, to_lowercase,
// String::from_utf8_lossy).
//
// Contract: functions taking "valid UTF-8" must be given valid UTF-8 (check with is_valid_utf8 or
// make it so with utf8_lossy); they do not re-validate.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace calq::io::tok {

// Decodes the code point starting at s[pos] of valid UTF-8 and advances pos past it.
char32_t next_code_point(std::string_view s, size_t& pos);
// Byte length of the UTF-8 sequence whose lead byte is `lead` (1 for a stray continuation byte).
size_t utf8_sequence_length(unsigned char lead);
void append_utf8(std::string& out, char32_t c);
std::string utf8_encode(char32_t c);

bool is_valid_utf8(std::string_view bytes);
// Rust's String::from_utf8_lossy: each maximal invalid subpart becomes one U+FFFD.
std::string utf8_lossy(std::string_view bytes);

// Rust char::is_whitespace (the Unicode White_Space property).
bool is_whitespace(char32_t c);
// Rust char::is_numeric (general categories Nd, Nl, No).
bool is_numeric(char32_t c);
// Rust char::is_alphanumeric, approximated as general categories L* and N*.
bool is_alphanumeric(char32_t c);
// HF tokenizers' is_punc: ASCII punctuation or a Unicode P* character.
bool is_punctuation(char32_t c);
// General category M* (what StripAccents removes after decomposition).
bool is_combining_mark(char32_t c);

// Rust str-per-char to_lowercase (full mappings; no context-dependent final sigma).
std::string to_lowercase(std::string_view valid_utf8);

enum class NormalForm { kNfc, kNfd, kNfkc, kNfkd };
std::string normalize(std::string_view valid_utf8, NormalForm form);

}  // namespace calq::io::tok
