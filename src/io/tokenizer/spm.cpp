// llama.cpp's SPM merging — see spm.h.
#include "io/tokenizer/spm.h"

#include <algorithm>
#include <queue>

#include "core/error.h"
#include "io/tokenizer/llama_pretokenize.h"

namespace calq::io::tok {

namespace {

struct Symbol {
  int32_t prev;
  int32_t next;
  size_t start;  // byte offset in the text
  size_t len;    // bytes; 0 once merged into the left neighbour
};

struct Bigram {
  float score;
  int32_t left;
  int32_t right;
  size_t len;  // bytes of the merged text when queued; a mismatch later means the entry is stale
};

// Max-heap order: higher score first, then the smaller left index.
struct LowerPriority {
  bool operator()(const Bigram& a, const Bigram& b) const {
    return a.score < b.score || (a.score == b.score && a.left > b.left);
  }
};

}  // namespace

SpmModel::SpmModel(const VocabMap& ids, std::span<const float> scores,
                   const std::array<int32_t, 256>& byte_ids, std::string origin)
    : ids_(ids), scores_(scores), byte_ids_(byte_ids), origin_(std::move(origin)) {}

void SpmModel::tokenize(std::string_view text, std::vector<int32_t>& out) const {
  std::vector<Symbol> symbols;
  symbols.reserve(text.size());
  for (size_t offset = 0; offset < text.size();) {
    const size_t len = std::min(llama_utf8_len(static_cast<unsigned char>(text[offset])), text.size() - offset);
    const auto index = static_cast<int32_t>(symbols.size());
    symbols.push_back({index - 1, offset + len == text.size() ? -1 : index + 1, offset, len});
    offset += len;
  }
  if (symbols.empty()) return;

  std::priority_queue<Bigram, std::vector<Bigram>, LowerPriority> queue;
  auto try_add = [&](int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    const Symbol& l = symbols[static_cast<size_t>(left)];
    const size_t len = l.len + symbols[static_cast<size_t>(right)].len;
    const auto it = ids_.find(text.substr(l.start, len));
    if (it == ids_.end()) return;
    queue.push({scores_[static_cast<size_t>(it->second)], left, right, len});
  };
  for (size_t i = 1; i < symbols.size(); ++i) {
    try_add(static_cast<int32_t>(i - 1), static_cast<int32_t>(i));
  }

  while (!queue.empty()) {
    const Bigram bigram = queue.top();
    queue.pop();
    Symbol& left = symbols[static_cast<size_t>(bigram.left)];
    Symbol& right = symbols[static_cast<size_t>(bigram.right)];
    if (left.len == 0 || right.len == 0 || left.len + right.len != bigram.len) continue;
    left.len += right.len;
    right.len = 0;
    left.next = right.next;
    if (right.next >= 0) symbols[static_cast<size_t>(right.next)].prev = bigram.left;
    try_add(left.prev, bigram.left);
    try_add(bigram.left, left.next);
  }

  // A merged symbol is always a token; only a single character can be missing from the vocabulary.
  for (int32_t i = 0; i != -1; i = symbols[static_cast<size_t>(i)].next) {
    const Symbol& symbol = symbols[static_cast<size_t>(i)];
    const std::string_view piece = text.substr(symbol.start, symbol.len);
    if (const auto it = ids_.find(piece); it != ids_.end()) {
      out.push_back(it->second);
      continue;
    }
    for (const char c : piece) {
      const auto b = static_cast<unsigned char>(c);
      if (byte_ids_[b] < 0) {
        fail(ErrorKind::kUnsupported, "{}: tokenizer.ggml.tokens: no byte token for byte 0x{:02X}", origin_, b);
      }
      out.push_back(byte_ids_[b]);
    }
  }
}

}  // namespace calq::io::tok
