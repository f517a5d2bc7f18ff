#include "io/tokenizer/added_tokens.h"

#include <algorithm>

#include "io/tokenizer/unicode.h"

namespace calq::io::tok {

void AddedVocabulary::Trie::insert(std::string_view key, int32_t token_index) {
  int32_t node = 0;
  for (const char ch : key) {
    const auto byte = static_cast<unsigned char>(ch);
    int32_t next = child(node, byte);
    if (next < 0) {
      next = static_cast<int32_t>(nodes_.size());
      nodes_.emplace_back();
      if (node == 0) {
        root_[byte] = next;
      } else {
        auto& children = nodes_[static_cast<size_t>(node)].children;
        children.insert(std::lower_bound(children.begin(), children.end(), std::make_pair(byte, 0)),
                        std::make_pair(byte, next));
      }
    }
    node = next;
  }
  // The first token with a given content keeps it (HF skips duplicate contents).
  if (nodes_[static_cast<size_t>(node)].token < 0) nodes_[static_cast<size_t>(node)].token = token_index;
}

int32_t AddedVocabulary::Trie::child(int32_t node, unsigned char byte) const {
  if (node == 0) return root_[byte] == 0 ? -1 : root_[byte];
  const auto& children = nodes_[static_cast<size_t>(node)].children;
  const auto it = std::lower_bound(children.begin(), children.end(), std::make_pair(byte, 0));
  return it != children.end() && it->first == byte ? it->second : -1;
}

std::pair<int32_t, size_t> AddedVocabulary::Trie::longest_at(std::string_view text, size_t pos) const {
  std::pair<int32_t, size_t> best{-1, pos};
  int32_t node = 0;
  for (size_t i = pos; i < text.size(); ++i) {
    node = child(node, static_cast<unsigned char>(text[i]));
    if (node < 0) break;
    if (nodes_[static_cast<size_t>(node)].token >= 0) best = {nodes_[static_cast<size_t>(node)].token, i + 1};
  }
  return best;
}

AddedVocabulary AddedVocabulary::from_json(const Json& list, const JsonPath& at,
                                           const BpeModel& model, const Normalizer* normalizer) {
  AddedVocabulary vocab;
  if (list.is_null()) return vocab;
  require_array(list, at);
  for (size_t i = 0; i < list.size(); ++i) {
    const JsonPath token_at = at.index(i);
    const Json& entry = require_object(list[i], token_at);
    AddedToken token;
    token.content = require_string(entry, token_at, "content");
    const int64_t json_id = require_int(entry, token_at, "id");
    if (json_id < 0 || json_id > INT32_MAX) token_at.key("id").format_error("id out of range");
    token.id = model.token_to_id(token.content).value_or(static_cast<int32_t>(json_id));
    token.single_word = optional_bool(entry, token_at, "single_word", false);
    token.lstrip = optional_bool(entry, token_at, "lstrip", false);
    token.rstrip = optional_bool(entry, token_at, "rstrip", false);
    token.special = optional_bool(entry, token_at, "special", false);
    token.normalized = optional_bool(entry, token_at, "normalized", !token.special);
    if (token.content.empty() || vocab.by_content_.contains(token.content)) continue;
    const size_t index = vocab.tokens_.size();
    vocab.by_content_.emplace(token.content, index);
    vocab.by_id_.emplace(token.id, index);
    if (token.normalized) {
      std::string key = token.content;
      if (normalizer != nullptr) normalizer->normalize(key);
      if (!key.empty()) vocab.normalized_trie_.insert(key, static_cast<int32_t>(index));
    } else {
      vocab.raw_trie_.insert(token.content, static_cast<int32_t>(index));
    }
    vocab.tokens_.push_back(std::move(token));
  }
  return vocab;
}

const AddedToken* AddedVocabulary::find_id(int32_t id) const {
  const auto it = by_id_.find(id);
  return it == by_id_.end() ? nullptr : &tokens_[it->second];
}

const AddedToken* AddedVocabulary::find_content(std::string_view content) const {
  const auto it = by_content_.find(content);
  return it == by_content_.end() ? nullptr : &tokens_[it->second];
}

bool AddedVocabulary::is_special(std::string_view content) const {
  const AddedToken* token = find_content(content);
  return token != nullptr && token->special;
}

namespace {

char32_t last_char(std::string_view text) {
  size_t start = text.size() - 1;
  while (start > 0 && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
  return next_code_point(text, start);
}

// Start of the run of whitespace that ends `text` (HF space_leftmost_at_end).
size_t trailing_space_start(std::string_view text) {
  size_t end = text.size();
  while (end > 0) {
    size_t start = end - 1;
    while (start > 0 && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
    size_t probe = start;
    if (!is_whitespace(next_code_point(text, probe))) break;
    end = start;
  }
  return end;
}

// Length of the run of whitespace that starts `text` (HF space_rightmost_at_start).
size_t leading_space_length(std::string_view text) {
  size_t pos = 0;
  while (pos < text.size()) {
    size_t next = pos;
    if (!is_whitespace(next_code_point(text, next))) break;
    pos = next;
  }
  return pos;
}

}  // namespace

void AddedVocabulary::split(std::string_view text, bool at_origin, bool normalized_kind,
                            std::vector<Piece>& out) const {
  const auto push_text = [&](size_t start, size_t end) {
    if (start >= end) return;
    Piece piece;
    piece.text = std::string(text.substr(start, end - start));
    piece.at_origin = at_origin && start == 0;
    out.push_back(std::move(piece));
  };
  const Trie& trie = normalized_kind ? normalized_trie_ : raw_trie_;
  if (trie.empty()) {
    push_text(0, text.size());
    return;
  }
  size_t emitted = 0;  // end of what has been emitted so far (HF start_offset)
  size_t pos = 0;
  while (pos < text.size()) {
    const auto [index, match_end] = trie.longest_at(text, pos);
    if (index < 0) {
      ++pos;
      continue;
    }
    const AddedToken& token = tokens_[static_cast<size_t>(index)];
    size_t start = pos;
    size_t stop = match_end;
    pos = match_end;  // the matcher resumes after this match even when it is discarded below
    if (token.single_word) {
      const bool space_before = start == 0 || !is_alphanumeric(last_char(text.substr(0, start)));
      size_t probe = stop;
      const bool space_after = stop == text.size() || !is_alphanumeric(next_code_point(text, probe));
      if (!space_before || !space_after) continue;
    }
    if (token.lstrip) start = std::max(trailing_space_start(text.substr(0, start)), emitted);
    if (token.rstrip) stop += leading_space_length(text.substr(stop));
    push_text(emitted, start);
    Piece piece;
    piece.token_id = token.id;
    out.push_back(std::move(piece));
    emitted = stop;
    pos = std::max(pos, stop);
  }
  push_text(emitted, text.size());
}

}  // namespace calq::io::tok
