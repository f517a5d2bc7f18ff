// KldEvaluator — mean KL(P_ref ‖ P_candidate) per predicted token of many candidate models against
// one full-precision reference on a fixed slice of token windows: the measurement behind the
// sensitivity map and bisection, where hundreds of nearly identical models are compared with the
// same reference.
//
// Protocol: the ids are cut into non-overlapping windows of `ctx` tokens (tail dropped; at most
// `max_windows` when > 0); every position of a window but the last is predicted (as
// eval/compare.h), KL per position = eval::kl_divergence_row of the two logit rows in double; the
// result is Σ KL / (windows × (ctx − 1)) — equal to compare_models()'s kld_mean for the same
// windows.
//
// Cost: the reference runs ONCE per window for all candidates of a call. Its logits (and log Z per
// row) are kept across calls when all windows fit in `cache_bytes`, else recomputed per call in
// chunks of windows that fit (bisection calls evaluate() once per step, so the cache halves its
// cost).
//
// Determinism: the work is spread over the pool as (window) for the reference and (window,
// candidate) pairs for candidates, each forward pass single-threaded inside; per-pair KL sums are
// stored by index and reduced in window order, so results are bit-identical for any thread count.
// The evaluator keeps a reference to `ref` (which must outlive it) and its own copy of the ids.
// Errors: ctx < 2, fewer ids than one window, a candidate whose vocabulary differs — all
// ErrorKind::kInvalidArgument.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "core/tensor.h"
#include "core/thread_pool.h"
#include "model/model.h"

namespace calq::pipeline {

struct KldEvalOptions {
  int64_t ctx = 512;
  int64_t max_windows = 0;                  // 0 = all windows of the text
  size_t cache_bytes = size_t{1} << 30;     // reference logits kept across calls up to this size
  // After each finished (window, candidate) forward: (done, total) of this call; serialised.
  std::function<void(int64_t, int64_t)> on_progress;
};

class KldEvaluator {
 public:
  KldEvaluator(const model::Model& ref, std::vector<int32_t> ids, const KldEvalOptions& options, ThreadPool& pool);

  int64_t ctx() const { return options_.ctx; }
  int64_t n_windows() const { return n_windows_; }
  int64_t n_predicted() const { return n_windows_ * (options_.ctx - 1); }

  // Mean KL(ref ‖ c) per predicted token, in nats, for every candidate (in order).
  std::vector<double> evaluate(std::span<const model::Model* const> candidates);
  double evaluate(const model::Model& candidate);

 private:
  struct RefWindow {
    Tensor logits;               // [ctx, vocab]
    std::vector<double> log_z;   // [ctx − 1]
  };
  RefWindow reference_window(int64_t w) const;
  // Fills kl[c * n + (w − w0)] for windows [w0, w1) given their reference windows.
  void candidate_pass(std::span<const model::Model* const> candidates, int64_t w0, int64_t w1,
                      std::span<const RefWindow> refs, std::vector<double>& kl, int64_t& done, int64_t total);

  const model::Model& ref_;
  std::vector<int32_t> ids_;
  KldEvalOptions options_;
  ThreadPool& pool_;
  int64_t n_windows_ = 0;
  int64_t chunk_windows_ = 1;       // windows whose reference logits fit in cache_bytes
  std::vector<RefWindow> cache_;    // all windows, when chunk_windows_ >= n_windows_
};

}  // namespace calq::pipeline
