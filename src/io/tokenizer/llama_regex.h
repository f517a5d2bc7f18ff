// The general-purpose regex splitter llama.cpp falls back on for a pre-tokenizer regex that has no
// hand-written matcher (unicode_regex_split with std::regex / std::wregex, ECMAScript grammar).
//
// A regex sees the text as one unit per code point:
//   collapsed (the regex names \p{N}, \p{L}, \p{P}, \p{M} or \p{S}): an ASCII code point is itself;
//     any other is 0x0B when it is White_Space, else its category's byte (N 0xD1, L 0xD2, P 0xD3,
//     M 0xD4, S 0xD5) or 0xD0 for every other category; in the regex, \p{X} becomes the class of
//     X's byte plus llama.cpp's ASCII list for X (L: A-Za-z, N: 0-9, P: !-#%-*,-/:-;?-@[-]_{},
//     S: $+<=>^`|, M: none). The regex itself must be ASCII.
//   wide (no such category): the code point itself, non-ASCII White_Space replaced by 0x0B.
// Character class escapes are the "C" locale's: \s = [ \t\n\v\f\r], \d = [0-9], \w = [A-Za-z0-9_].
//
// Matching is ECMAScript's backtracking semantics (alternatives in order, greedy quantifiers, atomic
// lookaheads, $ only at the end of the piece), run on an explicit stack: deep inputs cannot
// overflow the call stack. Supported syntax: | ( ) (?: ) (?= ) (?! ) [ ] [^ ] ranges, . ^ $ \b \B,
// * + ? {n} {n,} {n,m} (and their lazy forms), escapes \s \S \d \D \w \W \r \n \t \v \f \0 \xHH
// \uHHHH, other escaped characters as themselves (as libstdc++ reads them).
//
// Contract: the constructor throws calq::Error (kUnsupported) naming the regex for syntax outside
// that list or a quantified group that can match the empty string; split() is const and
// thread-safe, and throws kUnsupported when one match attempt exceeds a step budget (a hostile
// input against a backtracking regex) instead of running for ever.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace calq::io::tok {

class LlamaRegex {
 public:
  explicit LlamaRegex(std::string_view pattern);

  bool collapsed() const { return collapsed_; }
  const std::string& pattern() const { return pattern_; }

  // The units this regex matches on, for the code points of a text (see above).
  std::vector<uint32_t> units(const std::vector<uint32_t>& code_points) const;

  // llama.cpp's unicode_regex_split_stl: each piece [start, start + len) of `units` (pieces in
  // order, covering them) is searched for successive matches; the result lists the lengths of
  // the matches and of the non-empty gaps between them, in order.
  std::vector<size_t> split(const std::vector<uint32_t>& units, const std::vector<size_t>& pieces) const;

  // The first match starting at or after `from` in [lo, hi): sets [start, end) and returns true.
  bool search(const std::vector<uint32_t>& units, size_t lo, size_t hi, size_t from, size_t& start,
              size_t& end) const;

 private:
  enum class Op : uint8_t {
    kClass,       // consume one unit in classes_[arg]
    kSplit,       // try x first, then y
    kJump,        // go to x
    kLookahead,   // run the sub-program at x; continue at y when it matches (!= negate)
    kLineStart,   // ^
    kLineEnd,     // $
    kWordBound,   // \b (negate: \B)
    kMatch,
  };
  struct Inst {
    Op op;
    bool negate = false;
    uint32_t x = 0;
    uint32_t y = 0;
  };
  struct Class {
    std::vector<uint32_t> ranges;  // [lo, hi] pairs for units >= 256
    bool low[256] = {};            // membership of units < 256 (before `negate`)
    bool high_default = false;     // membership of units >= 256 outside `ranges` (\S, \D, \W)
    bool negate = false;
    bool contains(uint32_t u) const;
  };
  class Parser;
  friend class Parser;

  struct Frame {  // a backtrack point: resume at instruction pc, unit pos
    uint32_t pc;
    size_t pos;
  };
  // Runs the program from `pc` at `pos`; `stack` is scratch space (cleared here), reused by the caller
  // across start positions so a search allocates once.
  bool run(const std::vector<uint32_t>& units, size_t lo, size_t hi, uint32_t pc, size_t pos, size_t& end,
           size_t& budget, std::vector<Frame>& stack) const;

  std::string pattern_;
  bool collapsed_ = false;
  std::vector<Inst> program_;
  std::vector<Class> classes_;
};

}  // namespace calq::io::tok
