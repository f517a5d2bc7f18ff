#include "eval/perplexity.h"

#include <vector>
#include <chrono>
#include <cmath>
#include <mutex>

#include "core/stopwatch.h"
#include "core/error.h"
#include "core/vec_math.h"
#include "model/forward.h"

namespace calq::eval {

double sequence_nll(const float* logits, int64_t rows, int64_t vocab, std::span<const int32_t> targets) {
  std::vector<float> row(static_cast<size_t>(vocab));
  double total = 0.0;
  for (int64_t t = 0; t + 1 < rows; ++t) {
    const float* l = logits + t * vocab;
    const float mx = max_value(l, vocab);
    std::copy_n(l, vocab, row.data());
    const double sum = exp_sub_sum(row.data(), vocab, mx);
    const double log_z = static_cast<double>(mx) + std::log(sum);
    total += log_z - static_cast<double>(l[targets[static_cast<size_t>(t)]]);
  }
  return total;
}

double ppl_of_prefix(const PerplexityResult& r, int64_t n) {
  double nll = 0.0;
  for (int64_t i = 0; i < n; ++i) nll += r.nll_per_window[static_cast<size_t>(i)];
  return std::exp(nll / static_cast<double>(n * (r.ctx - 1)));
}

PerplexityResult evaluate_perplexity(const model::Model& model, std::span<const int32_t> ids,
                                     const PerplexityOptions& options, ThreadPool& pool) {
  const int64_t ctx = options.ctx;
  if (ctx < 2) fail(ErrorKind::kInvalidArgument, "ctx must be at least 2, got {}", ctx);
  int64_t n_windows = static_cast<int64_t>(ids.size()) / ctx;
  if (n_windows == 0) {
    fail(ErrorKind::kInvalidArgument, "the text has {} tokens, fewer than one window of ctx {}", ids.size(), ctx);
  }
  if (options.max_windows > 0) n_windows = std::min(n_windows, options.max_windows);

  PerplexityResult r;
  r.ctx = ctx;
  r.n_windows = n_windows;
  r.n_predicted = n_windows * (ctx - 1);
  r.nll_per_window.assign(static_cast<size_t>(n_windows), 0.0);

  std::mutex progress_mutex;
  int64_t done = 0;
  const auto start = std::chrono::steady_clock::now();
  pool.parallel_for(0, static_cast<size_t>(n_windows), Grain{.min_items = 1}, [&](size_t w0, size_t w1) {
    // One logits buffer for all the windows of this chunk (see model::forward_into).
    std::vector<float> logits(static_cast<size_t>(ctx * model.config.vocab_size));
    for (size_t w = w0; w < w1; ++w) {
      const auto window = ids.subspan(w * static_cast<size_t>(ctx), static_cast<size_t>(ctx));
      model::forward_into(model, window, logits.data(), pool);
      r.nll_per_window[w] = sequence_nll(logits.data(), ctx, model.config.vocab_size, window.subspan(1));
      if (options.on_progress) {
        std::lock_guard lock(progress_mutex);
        options.on_progress(++done, n_windows);
      }
    }
  });
  r.seconds = seconds_since(start);
  r.tokens_per_second = static_cast<double>(n_windows * ctx) / r.seconds;
  r.ppl = ppl_of_prefix(r, n_windows);
  return r;
}

}  // namespace calq::eval
