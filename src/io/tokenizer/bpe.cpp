#include "io/tokenizer/bpe.h"

#include <queue>

#include "core/error.h"
#include "io/tokenizer/unicode.h"

namespace calq::io::tok {

bool WordCache::lookup(std::string_view word, std::vector<int32_t>& out) const {
  const auto it = index_.find(word);
  if (it == index_.end()) return false;
  const auto [offset, count] = it->second;
  out.insert(out.end(), arena_.begin() + offset, arena_.begin() + offset + count);
  return true;
}

void WordCache::store(std::string_view word, const int32_t* ids, size_t count) {
  if (word.size() >= kMaxWordBytes) return;
  const auto offset = static_cast<uint32_t>(arena_.size());
  arena_.insert(arena_.end(), ids, ids + count);
  index_.emplace(std::string(word), std::make_pair(offset, static_cast<uint32_t>(count)));
}

namespace {

uint64_t pair_key(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

std::pair<std::string, std::string> parse_merge(const Json& merge, const JsonPath& at) {
  if (merge.is_string()) {
    const auto& line = merge.get_ref<const std::string&>();
    const size_t space = line.find(' ');
    if (space == std::string::npos) at.format_error(fmt::format("merge '{}' is not \"a b\"", line));
    return {line.substr(0, space), line.substr(space + 1)};
  }
  if (merge.is_array() && merge.size() == 2 && merge[0].is_string() && merge[1].is_string()) {
    return {merge[0].get<std::string>(), merge[1].get<std::string>()};
  }
  at.format_error("expected a merge \"a b\" or [\"a\", \"b\"]");
}

}  // namespace

std::unique_ptr<BpeModel> BpeModel::from_json(const Json& model, const JsonPath& at) {
  auto bpe = std::make_unique<BpeModel>();
  bpe->origin_ = std::string(at.origin());

  const JsonPath vocab_at = at.key("vocab");
  const Json& vocab = require_object(require(model, at, "vocab"), vocab_at);
  bpe->vocab_.reserve(vocab.size());
  int32_t max_id = -1;
  for (const auto& [token, id] : vocab.items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > INT32_MAX) {
      vocab_at.format_error(fmt::format("token '{}' has no valid id", token));
    }
    const auto value = static_cast<int32_t>(id.get<int64_t>());
    bpe->vocab_.emplace(token, value);
    max_id = std::max(max_id, value);
  }
  // The id -> token table is a dense vector. LLM vocabularies number their tokens 0..N-1; a
  // hostile file with one id of 2^31 would otherwise allocate gigabytes (found by fuzz_tokenizer).
  if (static_cast<size_t>(max_id) >= 2 * vocab.size() + 1024) {
    fail(ErrorKind::kUnsupported, "{}: {}: token ids are sparse (largest id {} for {} tokens); calq needs ids 0..N-1",
         at.origin(), vocab_at.path(), max_id, vocab.size());
  }
  bpe->tokens_by_id_.assign(static_cast<size_t>(max_id + 1), nullptr);
  for (const auto& [token, id] : bpe->vocab_) bpe->tokens_by_id_[static_cast<size_t>(id)] = &token;

  bpe->unk_token_ = optional_string(model, at, "unk_token");
  if (bpe->unk_token_) {
    if (const auto id = bpe->token_to_id(*bpe->unk_token_)) bpe->unk_id_ = *id;
  }
  bpe->fuse_unk_ = optional_bool(model, at, "fuse_unk", false);
  bpe->byte_fallback_ = optional_bool(model, at, "byte_fallback", false);
  bpe->ignore_merges_ = optional_bool(model, at, "ignore_merges", false);
  bpe->continuing_subword_prefix_ = optional_string(model, at, "continuing_subword_prefix").value_or("");
  bpe->end_of_word_suffix_ = optional_string(model, at, "end_of_word_suffix").value_or("");
  if (const auto it = model.find("dropout"); it != model.end() && !it->is_null()) {
    if (!it->is_number()) at.key("dropout").format_error("expected a number or null");
    if (it->get<double>() != 0.0) {
      fail(ErrorKind::kUnsupported, "{}: {}: BPE dropout is not supported (encoding would be random)",
           at.origin(), at.key("dropout").path());
    }
  }
  for (int b = 0; b < 256; ++b) {
    bpe->byte_ids_[static_cast<size_t>(b)] = bpe->token_to_id(fmt::format("<0x{:02X}>", b)).value_or(-1);
  }

  const JsonPath merges_at = at.key("merges");
  const Json& merges = require_array(require(model, at, "merges"), merges_at);
  bpe->merges_.reserve(merges.size());
  const size_t prefix_len = bpe->continuing_subword_prefix_.size();
  for (size_t i = 0; i < merges.size(); ++i) {
    const JsonPath merge_at = merges_at.index(i);
    const auto [left, right] = parse_merge(merges[i], merge_at);
    const auto left_id = bpe->token_to_id(left);
    const auto right_id = bpe->token_to_id(right);
    const std::string merged = left + (right.size() >= prefix_len ? right.substr(prefix_len) : right);
    const auto merged_id = bpe->token_to_id(merged);
    if (!left_id || !right_id || !merged_id) {
      merge_at.format_error(fmt::format("merge '{} {}' uses a token missing from the vocab", left, right));
    }
    // A repeated pair keeps its last rank, as HF's HashMap collection does.
    bpe->merges_[pair_key(*left_id, *right_id)] = MergeTarget{static_cast<uint32_t>(i), *merged_id};
  }
  return bpe;
}

std::optional<int32_t> BpeModel::token_to_id(std::string_view token) const {
  const auto it = vocab_.find(token);
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

const std::string* BpeModel::id_to_token(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= tokens_by_id_.size()) return nullptr;
  return tokens_by_id_[static_cast<size_t>(id)];
}

const BpeModel::MergeTarget* BpeModel::find_merge(int32_t left, int32_t right) const {
  const auto it = merges_.find(pair_key(left, right));
  return it == merges_.end() ? nullptr : &it->second;
}

int32_t BpeModel::unk_id() const {
  if (unk_id_ < 0) {
    fail(ErrorKind::kFormat, "{}: model.unk_token: '{}' is not in the vocabulary", origin_,
         unk_token_.value_or(""));
  }
  return unk_id_;
}

void BpeModel::tokenize(std::string_view word, std::vector<int32_t>& out, WordCache* cache) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    if (const auto id = token_to_id(word)) {
      out.push_back(*id);
      return;
    }
  }
  if (cache != nullptr && cache->lookup(word, out)) return;
  const size_t first = out.size();
  merge_word(word, out);
  if (cache != nullptr) cache->store(word, out.data() + first, out.size() - first);
}

void BpeModel::merge_word(std::string_view word, std::vector<int32_t>& out) const {
  std::vector<Symbol> symbols;
  symbols.reserve(word.size());
  const auto add = [&symbols](int32_t id, size_t len) {
    const auto n = static_cast<int32_t>(symbols.size());
    if (!symbols.empty()) symbols.back().next = n;
    symbols.push_back(Symbol{id, n - 1, -1, static_cast<uint32_t>(len)});
  };
  // A pending unknown: its id and byte length (HF defers it so that fuse_unk can extend it).
  int32_t unk = -1;
  size_t unk_len = 0;
  std::string piece;
  size_t pos = 0;
  while (pos < word.size()) {
    const size_t start = pos;
    pos += utf8_sequence_length(static_cast<unsigned char>(word[pos]));
    pos = std::min(pos, word.size());
    const size_t byte_len = pos - start;
    piece.clear();
    if (start != 0) piece += continuing_subword_prefix_;
    piece.append(word.substr(start, byte_len));
    if (pos == word.size()) piece += end_of_word_suffix_;

    if (const auto id = token_to_id(piece)) {
      if (unk >= 0) {
        add(unk, unk_len);
        unk = -1;
      }
      add(*id, byte_len);
      continue;
    }
    if (byte_fallback_) {
      bool all_bytes = true;
      for (const char ch : piece) all_bytes = all_bytes && byte_ids_[static_cast<unsigned char>(ch)] >= 0;
      if (all_bytes) {
        // HF adds the byte tokens without flushing a pending unknown first; so do we.
        for (const char ch : piece) add(byte_ids_[static_cast<unsigned char>(ch)], 1);
        continue;
      }
    }
    if (unk_token_) {
      if (unk >= 0 && fuse_unk_) {
        unk_len += byte_len;
      } else {
        if (unk >= 0) add(unk, unk_len);
        unk = unk_id();
        unk_len = byte_len;
      }
    }
  }
  if (unk >= 0) add(unk, unk_len);

  merge_all(symbols);
  for (const Symbol& s : symbols) {
    if (s.len != 0) out.push_back(s.id);
  }
}

void BpeModel::merge_all(std::vector<Symbol>& symbols) const {
  struct Candidate {
    uint32_t rank;
    int32_t pos;
    int32_t new_id;
    // Lowest rank first, then leftmost (std::priority_queue pops the largest).
    bool operator<(const Candidate& other) const {
      return rank != other.rank ? rank > other.rank : pos > other.pos;
    }
  };
  std::vector<Candidate> storage;
  storage.reserve(symbols.size());
  std::priority_queue<Candidate> queue(std::less<Candidate>(), std::move(storage));
  for (size_t i = 0; i + 1 < symbols.size(); ++i) {
    if (const MergeTarget* m = find_merge(symbols[i].id, symbols[i + 1].id)) {
      queue.push(Candidate{m->rank, static_cast<int32_t>(i), m->new_id});
    }
  }
  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    Symbol& current = symbols[static_cast<size_t>(top.pos)];
    if (current.len == 0 || current.next == -1) continue;
    const Symbol right = symbols[static_cast<size_t>(current.next)];
    // Skip entries made stale by earlier merges: the pair must still produce the same token.
    const MergeTarget* still = find_merge(current.id, right.id);
    if (still == nullptr || still->new_id != top.new_id) continue;

    symbols[static_cast<size_t>(current.next)].len = 0;
    current.id = top.new_id;
    current.len += right.len;
    current.next = right.next;
    if (right.next >= 0) symbols[static_cast<size_t>(right.next)].prev = top.pos;

    if (current.prev >= 0) {
      const Symbol& prev = symbols[static_cast<size_t>(current.prev)];
      if (const MergeTarget* m = find_merge(prev.id, current.id)) {
        queue.push(Candidate{m->rank, current.prev, m->new_id});
      }
    }
    if (current.next >= 0) {
      const Symbol& next = symbols[static_cast<size_t>(current.next)];
      if (const MergeTarget* m = find_merge(current.id, next.id)) {
        queue.push(Candidate{m->rank, top.pos, m->new_id});
      }
    }
  }
}

}  // namespace calq::io::tok
