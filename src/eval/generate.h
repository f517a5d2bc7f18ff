// Greedy decoding for a human look at what a (quantized) model writes.
//
// Contract: each step re-runs model::forward over the whole sequence so far (prompt + tokens
// generated so far; no KV cache, so the cost grows quadratically — meant for ≤ ~64 new tokens) and
// appends the argmax of the last logits row (argmax_row of compare.h: the lowest index on ties).
// Generation stops after max_new_tokens tokens or right after `eos` is generated; the returned
// tokens are the new ones only, the eos token included when it ended the run. The result is
// deterministic and the same for any thread count (forward's guarantee). An empty prompt or a
// negative max_new_tokens is an ErrorKind::kInvalidArgument error; prompt ids outside the
// vocabulary are one from model::forward.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "core/thread_pool.h"
#include "model/model.h"

namespace calq::eval {

std::vector<int32_t> generate_greedy(const model::Model& model, std::span<const int32_t> prompt,
                                     int64_t max_new_tokens, std::optional<int32_t> eos, ThreadPool& pool);

}  // namespace calq::eval
