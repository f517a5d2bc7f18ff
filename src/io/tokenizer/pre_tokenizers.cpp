#include "io/tokenizer/pre_tokenizers.h"

#include <algorithm>
#include <optional>
#include <utility>

#include "io/tokenizer/byte_level.h"
#include "io/tokenizer/unicode.h"

namespace calq::io::tok {

std::vector<std::pair<size_t, size_t>> split_ranges(const std::vector<Span>& spans,
                                                    SplitBehavior behavior) {
  // A transcription of the folds in HF NormalizedString::split, including their quirks (e.g.
  // MergedWithPrevious attaches only the first of several consecutive matches).
  struct Kept {
    size_t start;
    size_t end;
    bool remove;
  };
  std::vector<Kept> kept;
  kept.reserve(spans.size());
  bool previous_match = false;
  switch (behavior) {
    case SplitBehavior::kIsolated:
      for (const Span& s : spans) kept.push_back({s.start, s.end, false});
      break;
    case SplitBehavior::kRemoved:
      for (const Span& s : spans) kept.push_back({s.start, s.end, s.is_match});
      break;
    case SplitBehavior::kContiguous:
      for (const Span& s : spans) {
        if (s.is_match == previous_match && !kept.empty()) {
          kept.back().end = s.end;
        } else {
          kept.push_back({s.start, s.end, false});
        }
        previous_match = s.is_match;
      }
      break;
    case SplitBehavior::kMergedWithPrevious:
      for (const Span& s : spans) {
        if (s.is_match && !previous_match && !kept.empty()) {
          kept.back().end = s.end;
        } else {
          kept.push_back({s.start, s.end, false});
        }
        previous_match = s.is_match;
      }
      break;
    case SplitBehavior::kMergedWithNext:
      for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
        if (it->is_match && !previous_match && !kept.empty()) {
          kept.back().start = it->start;
        } else {
          kept.push_back({it->start, it->end, false});
        }
        previous_match = it->is_match;
      }
      std::reverse(kept.begin(), kept.end());
      break;
  }
  std::vector<std::pair<size_t, size_t>> ranges;
  ranges.reserve(kept.size());
  for (const Kept& k : kept) {
    if (!k.remove) ranges.emplace_back(k.start, k.end);
  }
  return ranges;
}

namespace {

// Applies `fn(Piece&&, out)` to every piece not yet resolved to an added token.
template <typename Fn>
void split_pieces(std::vector<Piece>& pieces, Fn&& fn) {
  std::vector<Piece> out;
  out.reserve(pieces.size());
  for (Piece& piece : pieces) {
    if (piece.token_id >= 0) {
      out.push_back(std::move(piece));
    } else {
      fn(std::move(piece), out);
    }
  }
  pieces = std::move(out);
}

// Emits the non-empty sub-pieces of `text` (the parent's possibly modified text) for `spans`.
void emit(const std::string& text, bool at_origin, const std::vector<Span>& spans,
          SplitBehavior behavior, std::vector<Piece>& out) {
  for (const auto& [start, end] : split_ranges(spans, behavior)) {
    if (start == end) continue;
    Piece piece;
    piece.text = text.substr(start, end - start);
    piece.at_origin = at_origin && start == 0;
    out.push_back(std::move(piece));
  }
}

SplitBehavior parse_behavior(const Json& value, const JsonPath& at, std::string_view key,
                             SplitBehavior fallback) {
  const std::optional<std::string> name = optional_string(value, at, key);
  if (!name) return fallback;
  if (*name == "Removed") return SplitBehavior::kRemoved;
  if (*name == "Isolated") return SplitBehavior::kIsolated;
  if (*name == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (*name == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (*name == "Contiguous") return SplitBehavior::kContiguous;
  at.key(key).format_error(fmt::format("unknown split behavior '{}'", *name));
}

class ByteLevel final : public PreTokenizer {
 public:
  ByteLevel(bool add_prefix_space, bool use_regex, const JsonPath& at)
      : add_prefix_space_(add_prefix_space), use_regex_(use_regex) {
    if (use_regex_) {
      regex_ = Pattern::regex(
          R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)", at);
    }
  }

  void pre_tokenize(std::vector<Piece>& pieces) const override {
    split_pieces(pieces, [&](Piece&& piece, std::vector<Piece>& out) {
      if (add_prefix_space_ && piece.text.front() != ' ') {
        std::string spaced(1, ' ');
        spaced += piece.text;
        piece.text = std::move(spaced);
      }
      const size_t first = out.size();
      if (use_regex_) {
        emit(piece.text, piece.at_origin, regex_.find_matches(piece.text), SplitBehavior::kIsolated, out);
      } else {
        out.push_back(std::move(piece));
      }
      const auto& chars = byte_level_chars();
      for (size_t i = first; i < out.size(); ++i) {
        std::string mapped;
        mapped.reserve(out[i].text.size() * 2);
        for (const char ch : out[i].text) mapped += chars[static_cast<unsigned char>(ch)];
        out[i].text = std::move(mapped);
      }
    });
  }

 private:
  bool add_prefix_space_;
  bool use_regex_;
  Pattern regex_;
};

enum class PrependScheme { kAlways, kFirst, kNever };

class Metaspace final : public PreTokenizer {
 public:
  Metaspace(char32_t replacement, PrependScheme scheme, bool split)
      : replacement_(replacement), replacement_text_(utf8_encode(replacement)), scheme_(scheme),
        split_(split) {}

  void pre_tokenize(std::vector<Piece>& pieces) const override {
    split_pieces(pieces, [&](Piece&& piece, std::vector<Piece>& out) {
      std::string text;
      text.reserve(piece.text.size() + piece.text.size() / 4 + replacement_text_.size());
      // HF replaces ' ' first, then prepends unless the result already starts with the replacement.
      const bool starts_with_replacement =
          piece.text.front() == ' ' ||
          piece.text.compare(0, replacement_text_.size(), replacement_text_) == 0;
      const bool prepend = !starts_with_replacement &&
                           (scheme_ == PrependScheme::kAlways ||
                            (scheme_ == PrependScheme::kFirst && piece.at_origin));
      if (prepend) text = replacement_text_;
      for (const char ch : piece.text) {
        if (ch == ' ') {
          text += replacement_text_;
        } else {
          text += ch;
        }
      }
      if (!split_) {
        piece.text = std::move(text);
        out.push_back(std::move(piece));
        return;
      }
      const char32_t rep = replacement_;
      emit(text, piece.at_origin, char_matches(text, [rep](char32_t c) { return c == rep; }),
           SplitBehavior::kMergedWithNext, out);
    });
  }

 private:
  char32_t replacement_;
  std::string replacement_text_;
  PrependScheme scheme_;
  bool split_;
};

class Split final : public PreTokenizer {
 public:
  Split(Pattern pattern, SplitBehavior behavior, bool invert)
      : pattern_(std::move(pattern)), behavior_(behavior), invert_(invert) {}

  void pre_tokenize(std::vector<Piece>& pieces) const override {
    split_pieces(pieces, [&](Piece&& piece, std::vector<Piece>& out) {
      std::vector<Span> spans = pattern_.find_matches(piece.text);
      if (invert_) {
        for (Span& s : spans) s.is_match = !s.is_match;
      }
      emit(piece.text, piece.at_origin, spans, behavior_, out);
    });
  }

 private:
  Pattern pattern_;
  SplitBehavior behavior_;
  bool invert_;
};

// Splits with a per-character predicate (Digits, WhitespaceSplit, Punctuation, CharDelimiterSplit).
template <typename Pred>
class CharSplit final : public PreTokenizer {
 public:
  CharSplit(Pred pred, SplitBehavior behavior) : pred_(std::move(pred)), behavior_(behavior) {}

  void pre_tokenize(std::vector<Piece>& pieces) const override {
    split_pieces(pieces, [&](Piece&& piece, std::vector<Piece>& out) {
      emit(piece.text, piece.at_origin, char_matches(piece.text, pred_), behavior_, out);
    });
  }

 private:
  Pred pred_;
  SplitBehavior behavior_;
};

template <typename Pred>
std::unique_ptr<PreTokenizer> make_char_split(Pred pred, SplitBehavior behavior) {
  return std::make_unique<CharSplit<Pred>>(std::move(pred), behavior);
}

class SequencePreTokenizer final : public PreTokenizer {
 public:
  explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> parts)
      : parts_(std::move(parts)) {}
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    for (const auto& part : parts_) part->pre_tokenize(pieces);
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> parts_;
};

std::unique_ptr<PreTokenizer> make_metaspace(const Json& value, const JsonPath& at) {
  const char32_t replacement = require_char(value, at, "replacement");
  // Older files carry add_prefix_space instead of prepend_scheme.
  PrependScheme scheme =
      optional_bool(value, at, "add_prefix_space", true) ? PrependScheme::kAlways : PrependScheme::kNever;
  if (const auto name = optional_string(value, at, "prepend_scheme")) {
    if (*name == "always") {
      scheme = PrependScheme::kAlways;
    } else if (*name == "first") {
      scheme = PrependScheme::kFirst;
    } else if (*name == "never") {
      scheme = PrependScheme::kNever;
    } else {
      at.key("prepend_scheme").format_error(fmt::format("unknown prepend_scheme '{}'", *name));
    }
  }
  return std::make_unique<Metaspace>(replacement, scheme, optional_bool(value, at, "split", true));
}

}  // namespace

std::unique_ptr<PreTokenizer> make_pre_tokenizer(const Json& value, const JsonPath& at) {
  const std::string type = component_type(value, at);
  if (type == "Metaspace") return make_metaspace(value, at);
  if (type == "ByteLevel") {
    return std::make_unique<ByteLevel>(optional_bool(value, at, "add_prefix_space", true),
                                       optional_bool(value, at, "use_regex", true), at);
  }
  if (type == "Split") {
    return std::make_unique<Split>(
        Pattern::from_json(require(value, at, "pattern"), at.key("pattern")),
        parse_behavior(value, at, "behavior", SplitBehavior::kIsolated),
        optional_bool(value, at, "invert", false));
  }
  if (type == "Digits") {
    const bool individual = optional_bool(value, at, "individual_digits", false);
    return make_char_split([](char32_t c) { return is_numeric(c); },
                           individual ? SplitBehavior::kIsolated : SplitBehavior::kContiguous);
  }
  if (type == "WhitespaceSplit") {
    return make_char_split([](char32_t c) { return is_whitespace(c); }, SplitBehavior::kRemoved);
  }
  if (type == "Whitespace") {
    // HF: split on Invert(\w+|[^\w\s]+) with Removed; \w and \s as the Rust regex crate has them.
    const char* word = R"([\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\x{200C}\x{200D}])";
    const char* not_word_space = R"([^\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\x{200C}\x{200D}\s])";
    return std::make_unique<Split>(
        Pattern::regex(fmt::format("{}+|{}+", word, not_word_space), at), SplitBehavior::kRemoved,
        true);
  }
  if (type == "Punctuation") {
    return make_char_split([](char32_t c) { return is_punctuation(c); },
                           parse_behavior(value, at, "behavior", SplitBehavior::kIsolated));
  }
  if (type == "BertPreTokenizer") {
    std::vector<std::unique_ptr<PreTokenizer>> parts;
    parts.push_back(make_char_split([](char32_t c) { return is_whitespace(c); }, SplitBehavior::kRemoved));
    parts.push_back(make_char_split([](char32_t c) { return is_punctuation(c); }, SplitBehavior::kIsolated));
    return std::make_unique<SequencePreTokenizer>(std::move(parts));
  }
  if (type == "CharDelimiterSplit") {
    const char32_t delimiter = require_char(value, at, "delimiter");
    return make_char_split([delimiter](char32_t c) { return c == delimiter; }, SplitBehavior::kRemoved);
  }
  if (type == "Sequence") {
    const JsonPath list_at = at.key("pretokenizers");
    const Json& list = require_array(require(value, at, "pretokenizers"), list_at);
    std::vector<std::unique_ptr<PreTokenizer>> parts;
    for (size_t i = 0; i < list.size(); ++i) {
      parts.push_back(make_pre_tokenizer(list[i], list_at.index(i)));
    }
    return std::make_unique<SequencePreTokenizer>(std::move(parts));
  }
  at.unsupported("pre-tokenizer", type);
}

}  // namespace calq::io::tok
