// llama.cpp's pre-tokenizer for gpt2-model vocabularies — see llama_pretokenize.h.
#include "io/tokenizer/llama_pretokenize.h"

#include <utf8proc.h>

#include "core/error.h"
#include "io/tokenizer/byte_level.h"
#include "io/tokenizer/unicode.h"

namespace calq::io::tok {

namespace {

constexpr uint32_t kOutOfRange = 0xFFFFFFFF;
constexpr uint32_t kMaxCodePoint = 0x10FFFF;

// The character classes llama.cpp's matchers test. `defined` is llama.cpp's flags.as_uint() != 0:
// true for every code point below 0x110000 (its tables give each one a category, unassigned ones
// \p{C}), false outside the piece being split.
struct Flags {
  bool defined = false;
  bool letter = false;
  bool number = false;
  bool punctuation = false;
  bool whitespace = false;
};

Flags flags_of(uint32_t c) {
  Flags f;
  if (c > kMaxCodePoint) return f;
  f.defined = true;
  f.whitespace = is_whitespace(static_cast<char32_t>(c));
  switch (utf8proc_category(static_cast<utf8proc_int32_t>(c))) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_LO:
      f.letter = true;
      break;
    case UTF8PROC_CATEGORY_ND: case UTF8PROC_CATEGORY_NL: case UTF8PROC_CATEGORY_NO:
      f.number = true;
      break;
    case UTF8PROC_CATEGORY_PC: case UTF8PROC_CATEGORY_PD: case UTF8PROC_CATEGORY_PS:
    case UTF8PROC_CATEGORY_PE: case UTF8PROC_CATEGORY_PI: case UTF8PROC_CATEGORY_PF:
    case UTF8PROC_CATEGORY_PO:
      f.punctuation = true;
      break;
    default:
      break;
  }
  return f;
}

uint32_t to_lower(uint32_t c) {
  if (c > kMaxCodePoint) return c;
  return static_cast<uint32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(c)));
}

// One piece [lo, hi) of the code points being split, and the lengths of the pieces it splits into.
class PieceScanner {
 public:
  PieceScanner(const std::vector<uint32_t>& cpts, size_t lo, size_t hi, std::vector<size_t>& out)
      : cpts_(cpts), lo_(lo), hi_(hi), prev_end_(lo), out_(out) {}

  uint32_t cpt(size_t pos) const { return pos >= lo_ && pos < hi_ ? cpts_[pos] : kOutOfRange; }
  Flags flags(size_t pos) const { return pos >= lo_ && pos < hi_ ? flags_of(cpts_[pos]) : Flags{}; }
  size_t end() const { return hi_; }

  // Closes the current token at `end`; returns its length (0 adds nothing).
  size_t add(size_t end) {
    const size_t len = end - prev_end_;
    if (len > 0) out_.push_back(len);
    prev_end_ = end;
    return len;
  }

  // 's|'t|'re|'ve|'m|'ll|'d at pos (case-insensitive when `fold`); the match length or 0.
  size_t contraction(size_t pos, bool fold) const {
    if (cpt(pos) != '\'' || pos + 1 >= hi_) return 0;
    const uint32_t next = fold ? to_lower(cpt(pos + 1)) : cpt(pos + 1);
    if (next == 's' || next == 't' || next == 'm' || next == 'd') return 2;
    if (pos + 2 >= hi_) return 0;
    const uint32_t next2 = fold ? to_lower(cpt(pos + 2)) : cpt(pos + 2);
    if ((next == 'r' && next2 == 'e') || (next == 'v' && next2 == 'e') || (next == 'l' && next2 == 'l')) {
      return 3;
    }
    return 0;
  }

 private:
  const std::vector<uint32_t>& cpts_;
  size_t lo_;
  size_t hi_;
  size_t prev_end_;
  std::vector<size_t>& out_;
};

// 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ as llama.cpp's
// unicode_regex_split_custom_gpt2 matches it.
// The last alternatives both regexes share, at a run of `spaces` whitespace characters (maybe 0)
// starting at `pos`: \s+(?!\S) leaves the run's last character to the next piece when a non-space
// follows, \s+ takes the whole run at the end of the text, and anything else is one character.
// Returns where the piece ends.
size_t end_of_whitespace_or_char(const PieceScanner& s, size_t pos, size_t spaces) {
  if (spaces > 1 && s.cpt(pos + spaces) != kOutOfRange) return pos + spaces - 1;
  if (spaces > 0) return pos + spaces;
  return pos + 1;
}

void split_gpt2(PieceScanner& s, size_t pos) {
  while (pos < s.end()) {
    const uint32_t c = s.cpt(pos);
    const Flags f = s.flags(pos);
    if (const size_t n = s.contraction(pos, false); n > 0) {
      pos += s.add(pos + n);
      continue;
    }
    Flags f2 = c == ' ' ? s.flags(pos + 1) : f;
    if (f2.letter || f2.number) {
      const bool letter = f2.letter;
      pos += c == ' ' ? 1 : 0;
      while (letter ? f2.letter : f2.number) f2 = s.flags(++pos);
      s.add(pos);
      continue;
    }
    if (!(f2.whitespace || f2.letter || f2.number) && f2.defined) {
      pos += c == ' ' ? 1 : 0;
      while (!(f2.whitespace || f2.letter || f2.number) && f2.defined) f2 = s.flags(++pos);
      s.add(pos);
      continue;
    }
    size_t spaces = 0;
    while (s.flags(pos + spaces).whitespace) ++spaces;
    pos = end_of_whitespace_or_char(s, pos, spaces);
    s.add(pos);
  }
}

// (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|
// \s*[\r\n]+|\s+(?!\S)|\s+ as llama.cpp's unicode_regex_split_custom_llama3 matches it.
void split_llama3(PieceScanner& s, size_t pos) {
  while (pos < s.end()) {
    const uint32_t c = s.cpt(pos);
    const Flags f = s.flags(pos);
    if (const size_t n = s.contraction(pos, true); n > 0) {
      pos += s.add(pos + n);
      continue;
    }
    if (!(c == '\r' || c == '\n' || f.number) && (f.letter || s.flags(pos + 1).letter)) {
      ++pos;
      while (s.flags(pos).letter) ++pos;
      s.add(pos);
      continue;
    }
    if (f.number) {
      size_t start = pos;
      while (s.flags(pos).number) {
        if (++pos - start >= 3) {
          s.add(pos);
          start = pos;
        }
      }
      s.add(pos);
      continue;
    }
    Flags f2 = c == ' ' ? s.flags(pos + 1) : f;
    // llama.cpp tests the current character's flags here, not f2's (a lone trailing space matches).
    if (!(f2.whitespace || f2.letter || f2.number) && f.defined) {
      pos += c == ' ' ? 1 : 0;
      while (!(f2.whitespace || f2.letter || f2.number) && f2.defined) f2 = s.flags(++pos);
      for (uint32_t c2 = s.cpt(pos); c2 == '\r' || c2 == '\n'; c2 = s.cpt(++pos)) {
      }
      s.add(pos);
      continue;
    }
    size_t spaces = 0;
    size_t last_newline_end = 0;
    while (s.flags(pos + spaces).whitespace) {
      const uint32_t c2 = s.cpt(pos + spaces);
      if (c2 == '\r' || c2 == '\n') last_newline_end = pos + spaces + 1;
      ++spaces;
    }
    if (last_newline_end > 0) {  // \s*[\r\n]+
      pos = last_newline_end;
      s.add(pos);
      continue;
    }
    pos = end_of_whitespace_or_char(s, pos, spaces);
    s.add(pos);
  }
}

// A "[class]+" regex as llama.cpp runs it through std::regex: maximal runs of class members are
// matches; the text between matches stays one piece.
template <typename InClass>
void split_runs(PieceScanner& s, size_t lo, InClass&& in_class) {
  size_t pos = lo;
  while (pos < s.end()) {
    const bool member = in_class(s.cpt(pos));
    while (pos < s.end() && in_class(s.cpt(pos)) == member) ++pos;
    s.add(pos);
  }
}

// "[0-9][0-9][0-9]": non-overlapping ASCII digit triplets, leftmost first.
void split_digit_triplets(PieceScanner& s, size_t lo) {
  auto digit = [&](size_t p) { return s.cpt(p) >= '0' && s.cpt(p) <= '9'; };
  size_t pos = lo;
  while (pos + 3 <= s.end()) {
    if (digit(pos) && digit(pos + 1) && digit(pos + 2)) {
      s.add(pos);
      pos += 3;
      s.add(pos);
    } else {
      ++pos;
    }
  }
  s.add(s.end());
}

// The "default" set's first regex, [\p{P}\$\+<=>\^~\|]+, on llama.cpp's collapsed text: ASCII
// characters by their own class list, others by category (whitespace collapses to \v first).
bool default_punctuation(uint32_t c) {
  if (c < 0x80) {
    return (c >= 0x21 && c <= 0x23) || (c >= 0x25 && c <= 0x2A) || (c >= 0x2C && c <= 0x2F) ||
           c == 0x3A || c == 0x3B || c == 0x3F || c == 0x40 || (c >= 0x5B && c <= 0x5D) || c == 0x5F ||
           c == 0x7B || c == 0x7D || c == '$' || c == '+' || c == '<' || c == '=' || c == '>' ||
           c == '^' || c == '~' || c == '|';
  }
  const Flags f = flags_of(c);
  return !f.whitespace && f.punctuation;
}

// The "default" set's third regex, \p{N}+, on the collapsed text.
bool default_number(uint32_t c) {
  if (c < 0x80) return c >= '0' && c <= '9';
  const Flags f = flags_of(c);
  return !f.whitespace && f.number;
}

enum class Pass { kGpt2, kLlama3, kPunctuationRuns, kNumberRuns, kDigitTriplets };

std::vector<size_t> apply(const std::vector<uint32_t>& cpts, const std::vector<size_t>& pieces, Pass pass) {
  std::vector<size_t> out;
  out.reserve(pieces.size() * 2);
  size_t start = 0;
  for (const size_t len : pieces) {
    PieceScanner s(cpts, start, start + len, out);
    switch (pass) {
      case Pass::kGpt2: split_gpt2(s, start); break;
      case Pass::kLlama3: split_llama3(s, start); break;
      case Pass::kPunctuationRuns: split_runs(s, start, default_punctuation); break;
      case Pass::kNumberRuns: split_runs(s, start, default_number); break;
      case Pass::kDigitTriplets: split_digit_triplets(s, start); break;
    }
    start += len;
  }
  return out;
}

}  // namespace

size_t llama_utf8_len(unsigned char lead) {
  static constexpr size_t kLengths[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
  return kLengths[lead >> 4];
}

std::vector<uint32_t> llama_code_points(std::string_view text) {
  std::vector<uint32_t> cpts;
  cpts.reserve(text.size());
  const size_t n = text.size();
  auto cont = [&](size_t i) { return i < n && (static_cast<unsigned char>(text[i]) & 0xC0) == 0x80; };
  auto byte = [&](size_t i) { return static_cast<uint32_t>(static_cast<unsigned char>(text[i])); };
  size_t pos = 0;
  while (pos < n) {
    const uint32_t b0 = byte(pos);
    if ((b0 & 0x80) == 0) {
      cpts.push_back(b0);
      pos += 1;
    } else if ((b0 & 0x40) != 0 && (b0 & 0x20) == 0 && cont(pos + 1)) {
      cpts.push_back(((b0 & 0x1F) << 6) | (byte(pos + 1) & 0x3F));
      pos += 2;
    } else if ((b0 & 0x60) == 0x60 && (b0 & 0x10) == 0 && cont(pos + 1) && cont(pos + 2)) {
      cpts.push_back(((b0 & 0x0F) << 12) | ((byte(pos + 1) & 0x3F) << 6) | (byte(pos + 2) & 0x3F));
      pos += 3;
    } else if ((b0 & 0x70) == 0x70 && (b0 & 0x08) == 0 && cont(pos + 1) && cont(pos + 2) && cont(pos + 3)) {
      cpts.push_back(((b0 & 0x07) << 18) | ((byte(pos + 1) & 0x3F) << 12) | ((byte(pos + 2) & 0x3F) << 6) |
                     (byte(pos + 3) & 0x3F));
      pos += 4;
    } else {
      cpts.push_back(0xFFFD);  // llama.cpp skips one byte of a malformed sequence
      pos += 1;
    }
  }
  return cpts;
}

std::vector<std::string> llama_pretokenize(std::string_view text, GgufPreType type) {
  const std::vector<uint32_t> cpts = llama_code_points(text);
  std::vector<size_t> pieces;
  if (!cpts.empty()) pieces.push_back(cpts.size());
  switch (type) {
    case GgufPreType::kDefault:
      pieces = apply(cpts, pieces, Pass::kPunctuationRuns);
      pieces = apply(cpts, pieces, Pass::kGpt2);
      pieces = apply(cpts, pieces, Pass::kNumberRuns);
      pieces = apply(cpts, pieces, Pass::kDigitTriplets);
      break;
    case GgufPreType::kGpt2:
      pieces = apply(cpts, pieces, Pass::kGpt2);
      break;
    case GgufPreType::kLlama3:
      pieces = apply(cpts, pieces, Pass::kLlama3);
      break;
  }

  const auto& alphabet = byte_level_chars();
  std::vector<std::string> words;
  words.reserve(pieces.size());
  std::string utf8;
  size_t start = 0;
  for (const size_t len : pieces) {
    utf8.clear();
    for (size_t i = start; i < start + len; ++i) {
      if (cpts[i] > kMaxCodePoint) {
        fail(ErrorKind::kInvalidArgument, "tokenizer: text contains an invalid code point U+{:X}", cpts[i]);
      }
      append_utf8(utf8, static_cast<char32_t>(cpts[i]));
    }
    std::string& word = words.emplace_back();
    for (const char b : utf8) word += alphabet[static_cast<unsigned char>(b)];
    start += len;
  }
  return words;
}

}  // namespace calq::io::tok
