#include "eval/generate.h"

#include "core/error.h"
#include "eval/compare.h"
#include "model/forward.h"

namespace calq::eval {

std::vector<int32_t> generate_greedy(const model::Model& model, std::span<const int32_t> prompt,
                                     int64_t max_new_tokens, std::optional<int32_t> eos, ThreadPool& pool) {
  if (prompt.empty()) fail(ErrorKind::kInvalidArgument, "greedy generation needs a non-empty prompt");
  if (max_new_tokens < 0) {
    fail(ErrorKind::kInvalidArgument, "max_new_tokens must be at least 0, got {}", max_new_tokens);
  }
  const int64_t vocab = model.config.vocab_size;
  std::vector<int32_t> ids(prompt.begin(), prompt.end());
  std::vector<int32_t> generated;
  generated.reserve(static_cast<size_t>(max_new_tokens));
  for (int64_t step = 0; step < max_new_tokens; ++step) {
    const Tensor logits = model::forward(model, ids, pool);
    const float* last = logits.f32() + (static_cast<int64_t>(ids.size()) - 1) * vocab;
    const auto next = static_cast<int32_t>(argmax_row(last, vocab));
    generated.push_back(next);
    if (eos && next == *eos) break;
    ids.push_back(next);
  }
  return generated;
}

}  // namespace calq::eval
