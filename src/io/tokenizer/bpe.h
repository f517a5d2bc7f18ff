// The BPE model of tokenizer.json ("model": {"type": "BPE", ...}) with Hugging Face semantics:
// vocab, merges (both "a b" strings and ["a", "b"] pairs; a merge's rank is its index), unk_token
// with fuse_unk, byte_fallback to <0xNN> tokens, ignore_merges, continuing_subword_prefix and
// end_of_word_suffix. Merging is HF's: a priority queue of (rank, position) over a linked list of
// symbols, O(n log n) in the word length.
//
// Contract: tokenize() is const and thread-safe; a WordCache belongs to one thread at a time.
// from_json() throws kFormat (naming origin and JSON path) for malformed vocab/merges and
// kUnsupported for BPE dropout.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "io/tokenizer/json_util.h"

namespace calq::io::tok {

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using VocabMap = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

// Memo of word -> ids for one encode() call (repeated words are the common case in prose).
class WordCache {
 public:
  static constexpr size_t kMaxWordBytes = 256;  // longer words are rare; not worth keeping

  bool lookup(std::string_view word, std::vector<int32_t>& out) const;
  void store(std::string_view word, const int32_t* ids, size_t count);

 private:
  std::unordered_map<std::string, std::pair<uint32_t, uint32_t>, StringHash, std::equal_to<>> index_;
  std::vector<int32_t> arena_;
};

class BpeModel {
 public:
  static std::unique_ptr<BpeModel> from_json(const Json& model, const JsonPath& at);

  // Appends the ids of one pre-tokenized word (valid UTF-8); `cache` may be null.
  void tokenize(std::string_view word, std::vector<int32_t>& out, WordCache* cache) const;

  std::optional<int32_t> token_to_id(std::string_view token) const;
  const std::string* id_to_token(int32_t id) const;  // null when unknown
  const VocabMap& vocab() const { return vocab_; }

 private:
  struct MergeTarget {
    uint32_t rank;
    int32_t new_id;
  };
  struct Symbol {
    int32_t id;
    int32_t prev;
    int32_t next;
    uint32_t len;  // bytes of the word covered; 0 once merged into its left neighbour
  };

  void merge_word(std::string_view word, std::vector<int32_t>& out) const;
  void merge_all(std::vector<Symbol>& symbols) const;
  const MergeTarget* find_merge(int32_t left, int32_t right) const;
  int32_t unk_id() const;

  std::string origin_;
  VocabMap vocab_;
  std::vector<const std::string*> tokens_by_id_;  // points into vocab_'s keys
  std::unordered_map<uint64_t, MergeTarget> merges_;
  std::optional<std::string> unk_token_;
  int32_t unk_id_ = -1;
  bool fuse_unk_ = false;
  bool byte_fallback_ = false;
  bool ignore_merges_ = false;
  std::string continuing_subword_prefix_;
  std::string end_of_word_suffix_;
  std::array<int32_t, 256> byte_ids_{};  // <0xNN> token ids, -1 where absent
};

}  // namespace calq::io::tok
