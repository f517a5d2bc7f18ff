// Pre-tokenizers of tokenizer.json ("pre_tokenizer"): Metaspace, ByteLevel, Split, Digits,
// Whitespace, WhitespaceSplit, Punctuation, BertPreTokenizer, CharDelimiterSplit and Sequence,
// with Hugging Face `tokenizers` semantics (PreTokenizedString::split: pieces already resolved to
// an added token are left alone, empty pieces are dropped).
//
// Contract: pre_tokenize() is const and thread-safe; piece texts are valid UTF-8 in and out.
// make_pre_tokenizer() throws kUnsupported for other types (naming origin and JSON path) and
// kFormat for malformed fields.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "io/tokenizer/json_util.h"
#include "io/tokenizer/pattern.h"

namespace calq::io::tok {

// One split of the input on its way to the model.
struct Piece {
  std::string text;
  int32_t token_id = -1;   // >= 0: an added token, final (text unused)
  bool at_origin = false;  // starts at byte 0 of the original input (HF offsets_original().0 == 0)
};

enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

// HF NormalizedString::split: the byte ranges to keep, given the match spans of a subject.
std::vector<std::pair<size_t, size_t>> split_ranges(const std::vector<Span>& spans,
                                                    SplitBehavior behavior);

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  virtual void pre_tokenize(std::vector<Piece>& pieces) const = 0;
};

// `value` is the (non-null) JSON object of one pre-tokenizer.
std::unique_ptr<PreTokenizer> make_pre_tokenizer(const Json& value, const JsonPath& at);

}  // namespace calq::io::tok
