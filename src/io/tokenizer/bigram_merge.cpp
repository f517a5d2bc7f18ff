// llama.cpp's bigram merge loop — see bigram_merge.h.
#include "io/tokenizer/bigram_merge.h"

#include <algorithm>
#include <cstdint>
#include <queue>

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
  double priority;
  int32_t left;
  int32_t right;
  size_t len;  // bytes of the merged text when queued; a mismatch later means the entry is stale
};

// Max-heap order: higher priority first, then the smaller left index.
struct LowerPriority {
  bool operator()(const Bigram& a, const Bigram& b) const {
    return a.priority < b.priority || (a.priority == b.priority && a.left > b.left);
  }
};

}  // namespace

void merge_bigrams(std::string_view text, const BigramPriority& priority, std::vector<std::string_view>& pieces) {
  pieces.clear();
  std::vector<Symbol> symbols;
  symbols.reserve(text.size());
  for (size_t offset = 0; offset < text.size();) {
    const size_t len = std::min(llama_utf8_len(static_cast<unsigned char>(text[offset])), text.size() - offset);
    const auto index = static_cast<int32_t>(symbols.size());
    symbols.push_back({index - 1, offset + len == text.size() ? -1 : index + 1, offset, len});
    offset += len;
  }

  std::priority_queue<Bigram, std::vector<Bigram>, LowerPriority> queue;
  auto try_add = [&](int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    const Symbol& l = symbols[static_cast<size_t>(left)];
    const Symbol& r = symbols[static_cast<size_t>(right)];
    const std::optional<double> p = priority(text.substr(l.start, l.len), text.substr(r.start, r.len));
    if (!p) return;
    queue.push({*p, left, right, l.len + r.len});
  };
  for (size_t i = 1; i < symbols.size(); ++i) try_add(static_cast<int32_t>(i - 1), static_cast<int32_t>(i));

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

  // A symbol only ever absorbs its right neighbour, so array order is text order.
  for (const Symbol& symbol : symbols) {
    if (symbol.len != 0) pieces.push_back(text.substr(symbol.start, symbol.len));
  }
}

}  // namespace calq::io::tok
