// LlamaRegex: an ECMAScript-subset backtracking matcher over llama.cpp's regex units — see
// llama_regex.h.
#include "io/tokenizer/llama_regex.h"

#include <array>
#include <memory>
#include <optional>

#include "core/error.h"
#include "io/tokenizer/llama_pretokenize.h"

namespace calq::io::tok {

namespace {

constexpr uint32_t kVerticalTab = 0x0B;

// llama.cpp's representative bytes of the categories a collapsed regex can name, and the ASCII
// characters its \p{X} rewrite adds for each.
struct Category {
  char letter;
  uint32_t unit;
  const char* ascii;  // "a-z" style ranges and single characters
};
constexpr std::array kCategories = {
    Category{'N', 0xD1, "0-9"},
    Category{'L', 0xD2, "A-Za-z"},
    Category{'P', 0xD3, "!-#%-*,-/:-;?-@[-]_{}"},
    Category{'M', 0xD4, ""},
    Category{'S', 0xD5, "$+<->^`|"},
};
constexpr uint32_t kOtherCategory = 0xD0;

uint32_t collapsed_unit(uint32_t cpt) {
  if (cpt < 0x80) return cpt;
  const LlamaFlags f = llama_flags(cpt);
  if (f.whitespace) return kVerticalTab;
  if (f.number) return 0xD1;
  if (f.letter) return 0xD2;
  if (f.punctuation) return 0xD3;
  if (f.mark) return 0xD4;
  if (f.symbol) return 0xD5;
  return kOtherCategory;
}

// The "C" locale's classes, which std::regex uses for \s, \d, \w.
bool c_space(uint32_t u) { return u == ' ' || (u >= '\t' && u <= '\r'); }
bool c_digit(uint32_t u) { return u >= '0' && u <= '9'; }
bool c_word(uint32_t u) {
  return c_digit(u) || (u >= 'A' && u <= 'Z') || (u >= 'a' && u <= 'z') || u == '_';
}

// The \p{...} names llama.cpp collapses: the five categories, and the letter subcategories, which
// all mean \p{L} on the collapsed text.
constexpr std::array<std::string_view, 10> kCategoryNames = {"\\p{N}", "\\p{L}", "\\p{P}", "\\p{M}", "\\p{S}",
                                                             "\\p{Lu}", "\\p{Ll}", "\\p{Lt}", "\\p{Lm}", "\\p{Lo}"};

bool names_category(std::string_view pattern) {
  for (const std::string_view name : kCategoryNames) {
    if (pattern.find(name) != std::string_view::npos) return true;
  }
  return false;
}

}  // namespace

bool LlamaRegex::Class::contains(uint32_t u) const {
  bool in;
  if (u < 256) {
    in = low[u];
  } else {
    in = high_default;
    for (size_t i = 0; !in && i + 1 < ranges.size(); i += 2) in = u >= ranges[i] && u <= ranges[i + 1];
  }
  return in != negate;
}

// Recursive-descent parser to a small tree, then compiled to the instruction list.
class LlamaRegex::Parser {
 public:
  Parser(LlamaRegex& re, std::vector<uint32_t> cpts) : re_(re), p_(std::move(cpts)) {}

  void compile() {
    const std::unique_ptr<Node> root = disjunction();
    if (i_ != p_.size()) error("unbalanced ')'");
    if (nullable(*root)) error("it can match the empty string");
    emit(*root);
    re_.program_.push_back({Op::kMatch});
  }

 private:
  enum class Kind { kEmpty, kClass, kConcat, kAlt, kRepeat, kLook, kLineStart, kLineEnd, kWordBound };
  struct Node {
    Kind kind = Kind::kEmpty;
    uint32_t cls = 0;
    int min = 0;
    int max = 0;  // -1: unbounded
    bool greedy = true;
    bool negate = false;
    std::vector<std::unique_ptr<Node>> kids;
  };
  using NodePtr = std::unique_ptr<Node>;

  [[noreturn]] void error(std::string_view what) const {
    fail(ErrorKind::kUnsupported, "pre-tokenizer regex '{}': {} (at offset {})", re_.pattern_, what, i_);
  }
  bool at_end() const { return i_ >= p_.size(); }
  uint32_t peek(size_t ahead = 0) const { return i_ + ahead < p_.size() ? p_[i_ + ahead] : 0xFFFFFFFF; }
  uint32_t take() {
    if (at_end()) error("unexpected end");
    return p_[i_++];
  }

  static NodePtr node(Kind kind) {
    auto n = std::make_unique<Node>();
    n->kind = kind;
    return n;
  }

  bool follows(std::string_view text) const {
    for (size_t j = 0; j < text.size(); ++j) {
      if (peek(j) != static_cast<unsigned char>(text[j])) return false;
    }
    return true;
  }

  NodePtr disjunction() {
    NodePtr first = alternative();
    if (peek() != '|') return first;
    NodePtr alt = node(Kind::kAlt);
    alt->kids.push_back(std::move(first));
    while (peek() == '|') {
      ++i_;
      alt->kids.push_back(alternative());
    }
    return alt;
  }

  NodePtr alternative() {
    NodePtr seq = node(Kind::kConcat);
    while (!at_end() && peek() != '|' && peek() != ')') seq->kids.push_back(term());
    return seq;
  }

  NodePtr term() {
    const uint32_t c = peek();
    if (c == '^' || c == '$') {
      ++i_;
      return node(c == '^' ? Kind::kLineStart : Kind::kLineEnd);
    }
    if (c == '\\' && (peek(1) == 'b' || peek(1) == 'B')) {
      i_ += 2;
      NodePtr n = node(Kind::kWordBound);
      n->negate = p_[i_ - 1] == 'B';
      return n;
    }
    if (c == '(' && peek(1) == '?' && (peek(2) == '=' || peek(2) == '!')) {
      NodePtr n = node(Kind::kLook);
      n->negate = peek(2) == '!';
      i_ += 3;
      n->kids.push_back(disjunction());
      if (take() != ')') error("unclosed lookahead");
      if (quantifier_follows()) error("quantified lookahead");
      return n;
    }
    NodePtr a = atom();
    return quantified(std::move(a));
  }

  bool quantifier_follows() const {
    const uint32_t c = peek();
    return c == '*' || c == '+' || c == '?' || (c == '{' && peek(1) >= '0' && peek(1) <= '9');
  }

  int number() {
    if (!(peek() >= '0' && peek() <= '9')) error("bad {n,m} quantifier");
    int v = 0;
    while (peek() >= '0' && peek() <= '9') {
      v = v * 10 + static_cast<int>(take() - '0');
      if (v > 100000) error("repeat count too large");
    }
    return v;
  }

  NodePtr quantified(NodePtr a) {
    int min = 0;
    int max = 0;
    const uint32_t c = peek();
    if (c == '*') {
      min = 0, max = -1;
    } else if (c == '+') {
      min = 1, max = -1;
    } else if (c == '?') {
      min = 0, max = 1;
    } else if (c == '{') {
      ++i_;
      min = max = number();
      if (peek() == ',') {
        ++i_;
        max = peek() == '}' ? -1 : number();
      }
      if (peek() != '}') error("bad {n,m} quantifier");
      if (max >= 0 && max < min) error("{n,m} with m < n");
    } else {
      return a;
    }
    ++i_;
    NodePtr r = node(Kind::kRepeat);
    r->min = min;
    r->max = max;
    if (peek() == '?') {
      ++i_;
      r->greedy = false;
    }
    if (quantifier_follows()) error("nested quantifier");
    if ((max < 0 || max > 1) && nullable(*a)) error("a repeated group can match the empty string");
    r->kids.push_back(std::move(a));
    return r;
  }

  NodePtr atom() {
    const uint32_t c = take();
    if (c == '(') {
      if (peek() == '?') {
        if (peek(1) != ':') error("unsupported group syntax");
        i_ += 2;
      }
      NodePtr inner = disjunction();
      if (take() != ')') error("unclosed group");
      return inner;
    }
    if (c == '[') return class_node(bracket());
    if (c == '.') {
      Class k;
      k.negate = true;
      for (const uint32_t u : {0x0Au, 0x0Du}) k.low[u] = true;
      k.ranges = {0x2028, 0x2029};
      return class_node(std::move(k));
    }
    if (c == '*' || c == '+' || c == '?' || c == ')') error("misplaced quantifier or ')'");
    if (c == '{') error("bad {n,m} quantifier");
    Class k;
    if (c == '\\') {
      escape(k, false);
    } else {
      add(k, c, c);
    }
    return class_node(std::move(k));
  }

  NodePtr class_node(Class k) {
    NodePtr n = node(Kind::kClass);
    n->cls = static_cast<uint32_t>(re_.classes_.size());
    re_.classes_.push_back(std::move(k));
    return n;
  }

  void add(Class& k, uint32_t lo, uint32_t hi) {
    for (uint32_t u = lo; u <= hi && u < 256; ++u) k.low[u] = true;
    if (hi >= 256) {
      k.ranges.push_back(std::max<uint32_t>(lo, 256));
      k.ranges.push_back(hi);
    }
  }

  template <typename Pred>
  void add_named(Class& k, Pred pred, bool complement) {
    for (uint32_t u = 0; u < 256; ++u) {
      if (pred(u) != complement) k.low[u] = true;
    }
    if (complement) k.high_default = true;
  }

  // After a backslash: a class escape adds its members; otherwise returns the escaped character
  // (also added to k unless `in_bracket`, where it may start a range).
  std::optional<uint32_t> escape(Class& k, bool in_bracket) {
    const uint32_t c = take();
    switch (c) {
      case 's': add_named(k, c_space, false); return std::nullopt;
      case 'S': add_named(k, c_space, true); return std::nullopt;
      case 'd': add_named(k, c_digit, false); return std::nullopt;
      case 'D': add_named(k, c_digit, true); return std::nullopt;
      case 'w': add_named(k, c_word, false); return std::nullopt;
      case 'W': add_named(k, c_word, true); return std::nullopt;
      case 'p':
        for (const std::string_view name : kCategoryNames) {
          if (!follows(name.substr(2))) continue;
          const char letter = name[3];
          for (const Category& cat : kCategories) {
            if (cat.letter != letter) continue;
            i_ += name.size() - 2;
            k.low[cat.unit] = true;
            add_ascii_list(k, cat.ascii);
            return std::nullopt;
          }
        }
        break;
      default:
        break;
    }
    uint32_t ch = c;
    switch (c) {
      case 'n': ch = '\n'; break;
      case 'r': ch = '\r'; break;
      case 't': ch = '\t'; break;
      case 'v': ch = '\v'; break;
      case 'f': ch = '\f'; break;
      case '0': ch = 0; break;
      case 'b': ch = 0x08; break;  // only reached inside brackets
      case 'x': ch = hex(2); break;
      case 'u': ch = hex(4); break;
      default:
        if (c >= '1' && c <= '9') error("back-references are not supported");
        break;
    }
    if (!in_bracket) add(k, ch, ch);
    return ch;
  }

  uint32_t hex(int digits) {
    uint32_t v = 0;
    for (int d = 0; d < digits; ++d) {
      const uint32_t h = take();
      uint32_t x;
      if (h >= '0' && h <= '9') {
        x = h - '0';
      } else if (h >= 'a' && h <= 'f') {
        x = h - 'a' + 10;
      } else if (h >= 'A' && h <= 'F') {
        x = h - 'A' + 10;
      } else {
        error("bad hex escape");
      }
      v = v * 16 + x;
    }
    return v;
  }

  void add_ascii_list(Class& k, std::string_view list) {
    for (size_t j = 0; j < list.size(); ++j) {
      if (j + 2 < list.size() && list[j + 1] == '-') {
        add(k, static_cast<unsigned char>(list[j]), static_cast<unsigned char>(list[j + 2]));
        j += 2;
      } else {
        add(k, static_cast<unsigned char>(list[j]), static_cast<unsigned char>(list[j]));
      }
    }
  }

  // After '[': the class up to its ']'.
  Class bracket() {
    Class k;
    if (peek() == '^') {
      ++i_;
      k.negate = true;
    }
    bool first = true;
    while (true) {
      if (at_end()) error("unclosed '['");
      uint32_t c = take();
      if (c == ']' && !first) break;
      first = false;
      std::optional<uint32_t> lo = c;
      if (c == '\\') lo = escape(k, true);
      if (!lo) continue;
      if (peek() == '-' && peek(1) != ']' && peek(1) != 0xFFFFFFFF) {
        ++i_;
        uint32_t hi = take();
        if (hi == '\\') {
          Class scratch;
          const std::optional<uint32_t> e = escape(scratch, true);
          if (!e) error("class escape as a range end");
          hi = *e;
        }
        if (hi < *lo) error("range out of order");
        add(k, *lo, hi);
      } else {
        add(k, *lo, *lo);
      }
    }
    return k;
  }

  static bool nullable(const Node& n) {
    switch (n.kind) {
      case Kind::kClass: return false;
      case Kind::kConcat:
        for (const NodePtr& kid : n.kids) {
          if (!nullable(*kid)) return false;
        }
        return true;
      case Kind::kAlt:
        for (const NodePtr& kid : n.kids) {
          if (nullable(*kid)) return true;
        }
        return false;
      case Kind::kRepeat: return n.min == 0 || nullable(*n.kids[0]);
      default: return true;
    }
  }

  uint32_t here() const { return static_cast<uint32_t>(re_.program_.size()); }
  uint32_t push(Inst inst) {
    re_.program_.push_back(inst);
    return here() - 1;
  }

  void emit(const Node& n) {
    auto& prog = re_.program_;
    switch (n.kind) {
      case Kind::kEmpty: break;
      case Kind::kClass: push({Op::kClass, false, n.cls, 0}); break;
      case Kind::kConcat:
        for (const NodePtr& kid : n.kids) emit(*kid);
        break;
      case Kind::kAlt: {
        std::vector<uint32_t> exits;
        for (size_t k = 0; k < n.kids.size(); ++k) {
          const bool last = k + 1 == n.kids.size();
          const uint32_t split = last ? 0 : push({Op::kSplit});
          if (!last) prog[split].x = here();
          emit(*n.kids[k]);
          if (!last) {
            exits.push_back(push({Op::kJump}));
            prog[split].y = here();
          }
        }
        for (const uint32_t e : exits) prog[e].x = here();
        break;
      }
      case Kind::kRepeat: {
        for (int k = 0; k < n.min; ++k) emit(*n.kids[0]);
        if (n.max < 0) {
          const uint32_t split = push({Op::kSplit});
          emit(*n.kids[0]);
          push({Op::kJump, false, split, 0});
          set_branches(split, split + 1, here(), n.greedy);
        } else {
          std::vector<uint32_t> splits;
          for (int k = n.min; k < n.max; ++k) {
            splits.push_back(push({Op::kSplit}));
            emit(*n.kids[0]);
          }
          for (const uint32_t s : splits) set_branches(s, s + 1, here(), n.greedy);
        }
        break;
      }
      case Kind::kLook: {
        const uint32_t look = push({Op::kLookahead, n.negate, 0, 0});
        prog[look].x = here();
        emit(*n.kids[0]);
        push({Op::kMatch});
        prog[look].y = here();
        break;
      }
      case Kind::kLineStart: push({Op::kLineStart}); break;
      case Kind::kLineEnd: push({Op::kLineEnd}); break;
      case Kind::kWordBound: push({Op::kWordBound, n.negate}); break;
    }
  }

  void set_branches(uint32_t split, uint32_t body, uint32_t out, bool greedy) {
    re_.program_[split].x = greedy ? body : out;
    re_.program_[split].y = greedy ? out : body;
  }

  LlamaRegex& re_;
  std::vector<uint32_t> p_;
  size_t i_ = 0;
};

LlamaRegex::LlamaRegex(std::string_view pattern) : pattern_(pattern), collapsed_(names_category(pattern)) {
  std::vector<uint32_t> cpts = llama_code_points(pattern);
  for (const uint32_t c : cpts) {
    // llama.cpp refuses these too ("Regex includes both unicode categories and non-ASCII characters").
    if (collapsed_ && c >= 0x80) {
      fail(ErrorKind::kUnsupported, "pre-tokenizer regex '{}': names a Unicode category and has non-ASCII characters",
           pattern_);
    }
  }
  Parser(*this, std::move(cpts)).compile();
}

std::vector<uint32_t> LlamaRegex::units(const std::vector<uint32_t>& code_points) const {
  std::vector<uint32_t> out(code_points.size());
  for (size_t i = 0; i < code_points.size(); ++i) {
    const uint32_t c = code_points[i];
    if (collapsed_) {
      out[i] = collapsed_unit(c);
    } else {
      out[i] = c > 0x7F && llama_flags(c).whitespace ? kVerticalTab : c;
    }
  }
  return out;
}

bool LlamaRegex::run(const std::vector<uint32_t>& units, size_t lo, size_t hi, uint32_t pc, size_t pos,
                     size_t& end, size_t& budget, std::vector<Frame>& stack) const {
  stack.clear();
  stack.push_back({pc, pos});
  while (!stack.empty()) {
    Frame f = stack.back();
    stack.pop_back();
    while (true) {
      if (budget-- == 0) {
        fail(ErrorKind::kUnsupported,
             "pre-tokenizer regex '{}': the text makes matching take too long (backtracking limit)", pattern_);
      }
      const Inst& in = program_[f.pc];
      bool ok = true;
      switch (in.op) {
        case Op::kClass:
          ok = f.pos < hi && classes_[in.x].contains(units[f.pos]);
          if (ok) ++f.pos, ++f.pc;
          break;
        case Op::kSplit:
          stack.push_back({in.y, f.pos});
          f.pc = in.x;
          break;
        case Op::kJump: f.pc = in.x; break;
        case Op::kLookahead: {
          size_t ignored = 0;
          std::vector<Frame> sub;  // lookaheads are rare; the outer stack stays untouched
          ok = run(units, lo, hi, in.x, f.pos, ignored, budget, sub) != in.negate;
          if (ok) f.pc = in.y;
          break;
        }
        case Op::kLineStart:
          ok = f.pos == lo;
          ++f.pc;
          break;
        case Op::kLineEnd:
          ok = f.pos == hi;
          ++f.pc;
          break;
        case Op::kWordBound: {
          const bool before = f.pos > lo && c_word(units[f.pos - 1]);
          const bool after = f.pos < hi && c_word(units[f.pos]);
          ok = (before != after) != in.negate;
          ++f.pc;
          break;
        }
        case Op::kMatch:
          end = f.pos;
          return true;
      }
      if (!ok) break;
    }
  }
  return false;
}

bool LlamaRegex::search(const std::vector<uint32_t>& units, size_t lo, size_t hi, size_t from, size_t& start,
                        size_t& end) const {
  // Generous for any regex of llama.cpp's table (linear in the text); a bound, not a tuning knob.
  size_t budget = 100000 + 4096 * (hi - from);
  std::vector<Frame> stack;
  for (size_t s = from; s < hi; ++s) {
    if (run(units, lo, hi, 0, s, end, budget, stack)) {
      start = s;
      return true;
    }
  }
  return false;
}

std::vector<size_t> LlamaRegex::split(const std::vector<uint32_t>& units, const std::vector<size_t>& pieces) const {
  std::vector<size_t> out;
  out.reserve(pieces.size() * 2);
  size_t lo = 0;
  for (const size_t len : pieces) {
    const size_t hi = lo + len;
    size_t from = lo;
    size_t start = 0;
    size_t end = 0;
    while (from < hi && search(units, lo, hi, from, start, end)) {
      if (start > from) out.push_back(start - from);
      out.push_back(end - start);
      from = end;
    }
    if (from < hi) out.push_back(hi - from);
    lo = hi;
  }
  return out;
}

}  // namespace calq::io::tok
