// The bigram-merge loop that llama.cpp's SPM tokenizer (llm_tokenizer_spm) and its GGUF BPE
// tokenizer (llm_tokenizer_bpe, per pre-tokenized word) share: the text is cut into UTF-8
// characters (by lead byte, llama_utf8_len, without validation); then, while some pair of adjacent
// symbols has a priority, the pair with the highest priority is merged (ties: the leftmost pair),
// and the new symbol's pairs with its neighbours are queued. Queue entries made stale by an earlier
// merge (either side merged away or grown) are skipped.
//
// The callers differ only in the priority and in what they do with the final pieces:
//   SPM: priority = the score of the vocabulary token spelled by left+right (absent: no token);
//   BPE: priority = -rank of the merge "left right" (absent: no such merge), so the lowest rank wins.
//
// Contract: pure function of its arguments; `priority` is called only with adjacent, non-empty
// pieces of `text` (left directly followed by right in memory).
#pragma once

#include <functional>
#include <optional>
#include <string_view>
#include <vector>

namespace calq::io::tok {

// Priority of merging `left` with the piece `right` that follows it; nullopt: never merge them.
// Higher merges first. A float score or an int32 rank converts to double exactly, so comparing
// doubles orders pairs exactly as comparing the caller's own values would.
using BigramPriority = std::function<std::optional<double>(std::string_view left, std::string_view right)>;

// Replaces `pieces` with the final symbols of `text`, in text order (views into `text`).
void merge_bigrams(std::string_view text, const BigramPriority& priority, std::vector<std::string_view>& pieces);

}  // namespace calq::io::tok
