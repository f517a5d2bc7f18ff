// llama.cpp's SPM merging — see spm.h.
#include "io/tokenizer/spm.h"

#include <optional>

#include "core/error.h"
#include "io/tokenizer/bigram_merge.h"

namespace calq::io::tok {

SpmModel::SpmModel(const VocabMap& ids, std::span<const float> scores,
                   const std::array<int32_t, 256>& byte_ids, std::string origin)
    : ids_(ids), scores_(scores), byte_ids_(byte_ids), origin_(std::move(origin)) {}

void SpmModel::tokenize(std::string_view text, std::vector<int32_t>& out) const {
  // Two adjacent symbols merge when their concatenation is a token; the higher score first.
  std::vector<std::string_view> pieces;
  merge_bigrams(
      text,
      [&](std::string_view left, std::string_view right) -> std::optional<double> {
        const auto it = ids_.find(std::string_view(left.data(), left.size() + right.size()));
        if (it == ids_.end()) return std::nullopt;
        return scores_[static_cast<size_t>(it->second)];
      },
      pieces);

  // A merged symbol is always a token; only a single character can be missing from the vocabulary.
  for (const std::string_view piece : pieces) {
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
