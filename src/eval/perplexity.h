// Perplexity under the `gptq-windows` protocol (GPTQ/AWQ papers' WikiText-2 protocol):
// the token stream is cut into non-overlapping windows of `ctx` tokens (the tail is dropped); in
// each window every token after the first is predicted from the tokens before it;
// PPL = exp(total NLL / number of predicted tokens).
//
// Contract: NLLs are accumulated in double; per-window values are summed in window order, so the
// result does not depend on the thread count. Windows are spread over the pool (one window per
// worker at a time, each forward pass single-threaded inside), which is the fastest split on few
// cores. Too few tokens for one window is an ErrorKind::kInvalidArgument error.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "core/thread_pool.h"
#include "model/model.h"

namespace calq::eval {

struct PerplexityOptions {
  int64_t ctx = 512;
  int64_t max_windows = 0;  // 0 = all windows
  // Called after each finished window with (windows done, windows total); may run on any
  // thread but never concurrently with itself.
  std::function<void(int64_t, int64_t)> on_progress;
};

struct PerplexityResult {
  int64_t ctx = 0;
  int64_t n_windows = 0;
  int64_t n_predicted = 0;  // n_windows * (ctx - 1)
  double ppl = 0.0;
  std::vector<double> nll_per_window;  // NLL sum of each window
  double seconds = 0.0;                // forward passes only
  double tokens_per_second = 0.0;      // evaluated tokens (n_windows * ctx) per second
};

PerplexityResult evaluate_perplexity(const model::Model& model, std::span<const int32_t> ids,
                                     const PerplexityOptions& options, ThreadPool& pool);

// Sum over positions t < rows-1 of -log softmax(logits[t])[targets[t]], in double.
double sequence_nll(const float* logits, int64_t rows, int64_t vocab, std::span<const int32_t> targets);

// PPL of the first `n` windows of a result.
double ppl_of_prefix(const PerplexityResult& result, int64_t n);

}  // namespace calq::eval
