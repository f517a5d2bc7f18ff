// Patterns as Hugging Face `tokenizers` uses them: a literal string or an Oniguruma regex (here
// PCRE2 with UTF+UCP, whose \s, \p{L}, \p{N} agree with Oniguruma's Unicode classes).
//
// Contract: subjects must be valid UTF-8. Matching is const and thread-safe (per-call match data).
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "io/tokenizer/json_util.h"
#include "io/tokenizer/unicode.h"

namespace calq::io::tok {

// A byte span [start, end) of a subject, flagged as a pattern match or not.
struct Span {
  size_t start;
  size_t end;
  bool is_match;
};

class Pattern {
 public:
  static Pattern literal(std::string text);
  // kFormat naming `at` when PCRE2 cannot compile the pattern.
  static Pattern regex(std::string_view pattern, const JsonPath& at);
  // {"String": "..."} (a literal) or {"Regex": "..."}.
  static Pattern from_json(const Json& value, const JsonPath& at);

  // Non-overlapping matches, leftmost first, as Oniguruma's find_iter gives them: an empty match
  // is reported unless it sits right where the previous match ended.
  std::vector<std::pair<size_t, size_t>> find_all(std::string_view subject) const;
  // HF Pattern::find_matches: consecutive spans covering the subject (one non-match span for "").
  std::vector<Span> find_matches(std::string_view subject) const;
  // Every match replaced by `content` (taken literally).
  std::string replace_all(std::string_view subject, std::string_view content) const;

  class Compiled;

 private:
  std::string literal_;
  std::shared_ptr<const Compiled> regex_;  // null for a literal
};

// HF's Pattern impl for a char predicate: every matching character is its own match span.
template <typename Pred>
std::vector<Span> char_matches(std::string_view subject, Pred&& pred) {
  std::vector<Span> spans;
  if (subject.empty()) {
    spans.push_back({0, 0, false});
    return spans;
  }
  size_t last = 0;
  size_t pos = 0;
  while (pos < subject.size()) {
    const size_t start = pos;
    const char32_t c = next_code_point(subject, pos);
    if (pred(c)) {
      if (last < start) spans.push_back({last, start, false});
      spans.push_back({start, pos, true});
      last = pos;
    }
  }
  if (last < subject.size()) spans.push_back({last, subject.size(), false});
  return spans;
}

}  // namespace calq::io::tok
