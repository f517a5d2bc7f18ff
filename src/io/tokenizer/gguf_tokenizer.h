// llama.cpp's tokenizer over a GGUF-embedded vocabulary (llama_tokenize / llama_detokenize):
//   1. special-token partition: the text is split at occurrences of special tokens, longest token
//      first; user-defined tokens always, control and unknown tokens only with parse_special;
//      lstrip/rstrip attributes eat ASCII whitespace beside a match;
//   2. each remaining fragment is tokenized alone:
//      llama (SPM): " " prepended when add_space_prefix and the fragment starts the text or follows
//        a special token, spaces replaced by U+2581, then score-driven merging (spm.h);
//      gpt2 (BPE): pre-tokenized by the tokenizer.ggml.pre entry's regexes (llama_pretokenize.h), byte-encoded, each word merged by merge
//        rank (lowest first, ties leftmost); a final symbol that is not a token is replaced by the
//        tokens of its single bytes where they exist (llama.cpp drops the others);
//   3. add_special: BOS first when add_bos, EOS last when add_eos.
// Detokenizing concatenates token pieces (control/unknown tokens only with unparse_special; normal
// SPM tokens with U+2581 as space; normal BPE tokens through the GPT-2 alphabet; byte tokens as
// their byte), strips one leading space when add_space_prefix, and applies llama.cpp's
// clean_up_tokenization_spaces rules when the vocabulary sets clean_spaces.
//
// Contract: const methods are thread-safe. Ids outside the vocabulary are skipped by
// detokenize() (llama.cpp would throw).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "io/tokenizer/bpe.h"
#include "io/tokenizer/gguf_vocab.h"
#include "io/tokenizer/llama_pretokenize.h"
#include "io/tokenizer/spm.h"

namespace calq::io::tok {

class GgufTokenizer {
 public:
  explicit GgufTokenizer(GgufVocab vocab);
  GgufTokenizer(const GgufTokenizer&) = delete;
  GgufTokenizer& operator=(const GgufTokenizer&) = delete;

  std::vector<int32_t> tokenize(std::string_view text, bool add_special, bool parse_special) const;
  std::string detokenize(std::span<const int32_t> ids, bool remove_special, bool unparse_special) const;
  // llama_token_to_piece(id, lstrip = 0, special); "" for an id outside the vocabulary.
  std::string token_to_piece(int32_t id, bool special) const;

  const GgufVocab& vocab() const { return vocab_; }
  std::optional<int32_t> token_to_id(std::string_view text) const;

 private:
  struct Fragment {
    int32_t token;  // >= 0: a special token; -1: raw text [offset, offset + length)
    size_t offset;
    size_t length;
  };

  std::vector<Fragment> partition(std::string_view text, bool parse_special) const;
  void bpe_word(const std::string& word, std::vector<int32_t>& out, std::string& key) const;
  std::string decode_bpe_text(const std::string& token) const;

  GgufVocab vocab_;
  VocabMap ids_;
  std::vector<int32_t> special_tokens_;  // control, user-defined and unknown ids, longest text first
  std::array<int32_t, 256> spm_byte_ids_{};
  std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>> merge_ranks_;  // "left right"
  std::unique_ptr<SpmModel> spm_;
  LlamaPreTokenizer pre_;  // gpt2 vocabularies
};

}  // namespace calq::io::tok
