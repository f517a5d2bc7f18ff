// The added vocabulary of tokenizer.json ("added_tokens"): tokens matched in the input before the
// model sees it, as Hugging Face's AddedVocabulary does it — leftmost-longest matching, tokens with
// `normalized: false` against the raw text, tokens with `normalized: true` (content normalized by the
// tokenizer's normalizer) against each normalized piece, honouring lstrip/rstrip/single_word.
//
// Contract: split() is const and thread-safe; texts are valid UTF-8. A token's id is the model's
// id for its content when the model has one (as HF assigns it), else its JSON "id".
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "io/tokenizer/bpe.h"
#include "io/tokenizer/json_util.h"
#include "io/tokenizer/normalizers.h"
#include "io/tokenizer/pre_tokenizers.h"

namespace calq::io::tok {

struct AddedToken {
  std::string content;
  int32_t id = -1;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = true;
  bool special = false;
};

class AddedVocabulary {
 public:
  // `list` is the "added_tokens" array (or null); `normalizer` may be null.
  static AddedVocabulary from_json(const Json& list, const JsonPath& at, const BpeModel& model,
                                   const Normalizer* normalizer);

  // Splits `text` by the tokens of one kind (`normalized_kind` picks the normalized ones) and
  // appends the pieces, non-empty, to `out`; `at_origin` says whether `text` starts the input.
  void split(std::string_view text, bool at_origin, bool normalized_kind, std::vector<Piece>& out) const;

  const AddedToken* find_id(int32_t id) const;
  const AddedToken* find_content(std::string_view content) const;
  bool is_special(std::string_view content) const;
  const std::vector<AddedToken>& tokens() const { return tokens_; }

 private:
  // Byte trie over token contents for leftmost-longest matching.
  class Trie {
   public:
    Trie() { nodes_.emplace_back(); }
    void insert(std::string_view key, int32_t token_index);
    // Longest key starting at text[pos]: (token index, end) or (-1, pos).
    std::pair<int32_t, size_t> longest_at(std::string_view text, size_t pos) const;
    bool empty() const { return nodes_.size() == 1; }

   private:
    struct Node {
      std::vector<std::pair<unsigned char, int32_t>> children;
      int32_t token = -1;
    };
    int32_t child(int32_t node, unsigned char byte) const;
    std::vector<Node> nodes_;
    std::array<int32_t, 256> root_{};  // root children, 0 = none (node 0 is the root itself)
  };

  std::vector<AddedToken> tokens_;
  std::unordered_map<int32_t, size_t> by_id_;
  std::unordered_map<std::string, size_t, StringHash, std::equal_to<>> by_content_;
  Trie raw_trie_;
  Trie normalized_trie_;
};

}  // namespace calq::io::tok
