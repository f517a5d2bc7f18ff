// llama.cpp's pre-tokenizer for gpt2-model vocabularies — see llama_pretokenize.h.
#include "io/tokenizer/llama_pretokenize.h"

#include <utf8proc.h>

#include <memory>

#include "core/error.h"
#include "io/tokenizer/byte_level.h"
#include "io/tokenizer/unicode.h"

namespace calq::io::tok {

namespace {

constexpr uint32_t kOutOfRange = 0xFFFFFFFF;
constexpr uint32_t kMaxCodePoint = 0x10FFFF;

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
  LlamaFlags flags(size_t pos) const { return pos >= lo_ && pos < hi_ ? llama_flags(cpts_[pos]) : LlamaFlags{}; }
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
    const LlamaFlags f = s.flags(pos);
    if (const size_t n = s.contraction(pos, false); n > 0) {
      pos += s.add(pos + n);
      continue;
    }
    LlamaFlags f2 = c == ' ' ? s.flags(pos + 1) : f;
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
// \s*[\r\n]+|\s+(?!\S)|\s+ as llama.cpp's unicode_regex_split_custom_llama3 matches it; with
// `digits` 1 its Qwen2 twin (\p{N} one at a time), and with `marks` also its Qwen3.5 twin, where
// words are runs of letters or marks ([\p{L}\p{M}]+) and marks leave the punctuation runs.
void split_llama3(PieceScanner& s, size_t pos, size_t digits, bool marks) {
  auto wordish = [&](const LlamaFlags& f) { return f.letter || (marks && f.mark); };
  while (pos < s.end()) {
    const uint32_t c = s.cpt(pos);
    const LlamaFlags f = s.flags(pos);
    if (const size_t n = s.contraction(pos, true); n > 0) {
      pos += s.add(pos + n);
      continue;
    }
    if (!(c == '\r' || c == '\n' || f.number) && (wordish(f) || wordish(s.flags(pos + 1)))) {
      ++pos;
      while (wordish(s.flags(pos))) ++pos;
      s.add(pos);
      continue;
    }
    if (f.number) {
      size_t start = pos;
      while (s.flags(pos).number) {
        if (++pos - start >= digits) {
          s.add(pos);
          start = pos;
        }
      }
      s.add(pos);
      continue;
    }
    LlamaFlags f2 = c == ' ' ? s.flags(pos + 1) : f;
    auto other = [&](const LlamaFlags& g) { return !(g.whitespace || g.letter || g.number || (marks && g.mark)); };
    // llama.cpp tests the current character's flags here, not f2's (a lone trailing space matches).
    if (other(f2) && f.defined) {
      pos += c == ' ' ? 1 : 0;
      while (other(f2) && f2.defined) f2 = s.flags(++pos);
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

// [^\n]+|[\n]+ (unicode_regex_split_custom_newlines): runs of U+000A and runs of anything else.
void split_newlines(PieceScanner& s, size_t pos) {
  while (pos < s.end()) {
    const bool newline = s.cpt(pos) == '\n';
    while (pos < s.end() && (s.cpt(pos) == '\n') == newline) ++pos;
    s.add(pos);
  }
}

// llama.cpp's digit grouper for \p{AFMoE_digits} and tiny_aya's \d{1,3}(?=(?:\d{3})*\b): each run
// of n \p{N} characters is cut into a first group of n mod 3 (when not 0) and groups of 3 counted
// from its end; each cut closes the piece since the previous cut, so text before a run stays glued
// to its first group, and text after the last run is one piece.
void split_digit_groups(PieceScanner& s, size_t pos) {
  while (pos < s.end()) {
    if (!s.flags(pos).number) {
      ++pos;
      continue;
    }
    const size_t run = pos;
    while (s.flags(pos).number) ++pos;
    size_t cut = run + (pos - run) % 3;
    if (cut > run) s.add(cut);
    while (cut < pos) s.add(cut += 3);
  }
  s.add(s.end());
}

}  // namespace

LlamaFlags llama_flags(uint32_t c) {
  LlamaFlags f;
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
    case UTF8PROC_CATEGORY_MN: case UTF8PROC_CATEGORY_MC: case UTF8PROC_CATEGORY_ME:
      f.mark = true;
      break;
    case UTF8PROC_CATEGORY_SM: case UTF8PROC_CATEGORY_SC: case UTF8PROC_CATEGORY_SK:
    case UTF8PROC_CATEGORY_SO:
      f.symbol = true;
      break;
    default:
      break;
  }
  return f;
}

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

namespace {

// The exact regex strings llama.cpp's unicode_regex_split_custom answers by hand.
constexpr std::string_view kGpt2Regex = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)";
constexpr std::string_view kLlama3RegexI =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
constexpr std::string_view kLlama3Regex =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
constexpr std::string_view kQwen2Regex =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
constexpr std::string_view kQwen35Regex =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?[\\p{L}\\p{M}]+|\\p{N}| "
    "?[^\\s\\p{L}\\p{M}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
constexpr std::string_view kNewlinesRegex = "[^\\n]+|[\\n]+";
constexpr std::string_view kAfmoeDigits = "\\p{AFMoE_digits}";
constexpr std::string_view kTinyAyaDigits = "\\d{1,3}(?=(?:\\d{3})*\\b)";

}  // namespace

bool is_custom_split(std::string_view regex) {
  for (const std::string_view r : {kGpt2Regex, kLlama3RegexI, kLlama3Regex, kQwen2Regex, kQwen35Regex,
                                   kNewlinesRegex, kAfmoeDigits, kTinyAyaDigits}) {
    if (regex == r) return true;
  }
  return false;
}

LlamaPreTokenizer::LlamaPreTokenizer(std::span<const std::string_view> regexes) {
  for (const std::string_view re : regexes) {
    Pass pass;
    if (re == kGpt2Regex) {
      pass.custom = Custom::kGpt2;
    } else if (re == kLlama3Regex || re == kLlama3RegexI) {
      pass.custom = Custom::kLlama3;
    } else if (re == kQwen2Regex) {
      pass.custom = Custom::kQwen2;
    } else if (re == kQwen35Regex) {
      pass.custom = Custom::kQwen35;
    } else if (re == kNewlinesRegex) {
      pass.custom = Custom::kNewlines;
    } else if (re == kAfmoeDigits || re == kTinyAyaDigits) {
      pass.custom = Custom::kDigitGroups;
    } else {
      pass.custom = Custom::kNone;
      pass.regex = std::make_shared<const LlamaRegex>(re);
    }
    passes_.push_back(std::move(pass));
  }
}

std::vector<std::string> LlamaPreTokenizer::split(std::string_view text) const {
  const std::vector<uint32_t> cpts = llama_code_points(text);
  std::vector<size_t> pieces;
  if (!cpts.empty()) pieces.push_back(cpts.size());
  std::vector<uint32_t> collapsed;
  std::vector<uint32_t> wide;
  for (const Pass& pass : passes_) {
    if (pass.regex) {
      std::vector<uint32_t>& units = pass.regex->collapsed() ? collapsed : wide;
      if (units.empty()) units = pass.regex->units(cpts);
      pieces = pass.regex->split(units, pieces);
      continue;
    }
    std::vector<size_t> out;
    out.reserve(pieces.size() * 2);
    size_t start = 0;
    for (const size_t len : pieces) {
      PieceScanner s(cpts, start, start + len, out);
      switch (pass.custom) {
        case Custom::kGpt2: split_gpt2(s, start); break;
        case Custom::kLlama3: split_llama3(s, start, 3, false); break;
        case Custom::kQwen2: split_llama3(s, start, 1, false); break;
        case Custom::kQwen35: split_llama3(s, start, 1, true); break;
        case Custom::kNewlines: split_newlines(s, start); break;
        case Custom::kDigitGroups: split_digit_groups(s, start); break;
        case Custom::kNone: break;
      }
      start += len;
    }
    pieces = std::move(out);
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
