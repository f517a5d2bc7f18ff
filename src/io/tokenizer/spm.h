// The score-driven merging of llama.cpp's SPM tokenizer (tokenizer.ggml.model "llama",
// llm_tokenizer_spm): the text is cut into UTF-8 characters (by lead byte, without validation);
// then, while any two adjacent symbols concatenate to a vocabulary token, the pair whose token has
// the highest score is merged (ties: the leftmost pair). Each final symbol is its token, or, when
// a single character is not in the vocabulary, one byte token per byte (<0xNN>, else the raw byte
// as a token). This is not ranked-merge BPE: with equal scores it merges left to right. The merge
// loop itself is merge_bigrams (bigram_merge.h), shared with the GGUF BPE tokenizer.
//
// Contract: tokenize() is const and thread-safe. A byte with no byte token is an
// ErrorKind::kUnsupported error naming the origin, raised only when such a byte must be emitted.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "io/tokenizer/bpe.h"

namespace calq::io::tok {

class SpmModel {
 public:
  // `ids` maps every token text to its id; `scores` is indexed by id; byte_ids[b] is the token of
  // byte b or -1. All must outlive the model.
  SpmModel(const VocabMap& ids, std::span<const float> scores, const std::array<int32_t, 256>& byte_ids,
           std::string origin);

  // Appends the ids of `text` (already whitespace-escaped by the caller) to `out`.
  void tokenize(std::string_view text, std::vector<int32_t>& out) const;

 private:
  const VocabMap& ids_;
  std::span<const float> scores_;
  const std::array<int32_t, 256>& byte_ids_;
  std::string origin_;
};

}  // namespace calq::io::tok
