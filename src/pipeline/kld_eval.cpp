#include "pipeline/kld_eval.h"

#include <algorithm>
#include <mutex>

#include "core/error.h"
#include "eval/compare.h"
#include "model/forward.h"

namespace calq::pipeline {

KldEvaluator::KldEvaluator(const model::Model& ref, std::vector<int32_t> ids, const KldEvalOptions& options,
                           ThreadPool& pool)
    : ref_(ref), ids_(std::move(ids)), options_(options), pool_(pool) {
  const int64_t ctx = options_.ctx;
  if (ctx < 2) fail(ErrorKind::kInvalidArgument, "ctx must be at least 2, got {}", ctx);
  n_windows_ = static_cast<int64_t>(ids_.size()) / ctx;
  if (n_windows_ == 0) {
    fail(ErrorKind::kInvalidArgument, "the evaluation text has {} tokens, fewer than one window of ctx {}",
         ids_.size(), ctx);
  }
  if (options_.max_windows > 0) n_windows_ = std::min(n_windows_, options_.max_windows);
  const auto window_bytes = static_cast<size_t>(ctx * ref_.config.vocab_size) * sizeof(float);
  chunk_windows_ = std::max<int64_t>(1, static_cast<int64_t>(options_.cache_bytes / window_bytes));
}

KldEvaluator::RefWindow KldEvaluator::reference_window(int64_t w) const {
  const int64_t ctx = options_.ctx;
  const int64_t vocab = ref_.config.vocab_size;
  RefWindow r;
  r.logits = model::forward(ref_, std::span(ids_).subspan(static_cast<size_t>(w * ctx), static_cast<size_t>(ctx)),
                            pool_);
  r.log_z.resize(static_cast<size_t>(ctx - 1));
  for (int64_t t = 0; t < ctx - 1; ++t) r.log_z[static_cast<size_t>(t)] = eval::log_sum_exp(r.logits.f32() + t * vocab, vocab);
  return r;
}

void KldEvaluator::candidate_pass(std::span<const model::Model* const> candidates, int64_t w0, int64_t w1,
                                  std::span<const RefWindow> refs, std::vector<double>& kl, int64_t& done,
                                  int64_t total) {
  const int64_t ctx = options_.ctx;
  const int64_t vocab = ref_.config.vocab_size;
  const int64_t nw = w1 - w0;
  std::mutex progress_mutex;
  // One (candidate, window) forward per item: enough items to keep every worker busy even when
  // the slice has fewer windows than threads.
  pool_.parallel_for(0, candidates.size() * static_cast<size_t>(nw), Grain{.min_items = 1}, [&](size_t i0, size_t i1) {
    // One logits buffer for the chunk's forwards (model::forward_into).
    std::vector<float> logits(static_cast<size_t>(ctx * vocab));
    for (size_t i = i0; i < i1; ++i) {
      const size_t c = i / static_cast<size_t>(nw);
      const int64_t w = w0 + static_cast<int64_t>(i % static_cast<size_t>(nw));
      const RefWindow& ref = refs[static_cast<size_t>(w - w0)];
      model::forward_into(*candidates[c],
                          std::span(ids_).subspan(static_cast<size_t>(w * ctx), static_cast<size_t>(ctx)),
                          logits.data(), pool_);
      double sum = 0.0;
      for (int64_t t = 0; t < ctx - 1; ++t) {
        const float* q = logits.data() + t * vocab;
        sum += eval::kl_divergence_row(ref.logits.f32() + t * vocab, ref.log_z[static_cast<size_t>(t)], q,
                                       eval::log_sum_exp(q, vocab), vocab);
      }
      kl[c * static_cast<size_t>(n_windows_) + static_cast<size_t>(w)] = sum;
      if (options_.on_progress) {
        std::lock_guard lock(progress_mutex);
        options_.on_progress(++done, total);
      }
    }
  });
}

std::vector<double> KldEvaluator::evaluate(std::span<const model::Model* const> candidates) {
  for (const model::Model* c : candidates) {
    if (c->config.vocab_size != ref_.config.vocab_size) {
      fail(ErrorKind::kInvalidArgument, "{}: vocabulary of {} tokens, but the reference {} has {}",
           c->source.string(), c->config.vocab_size, ref_.source.string(), ref_.config.vocab_size);
    }
  }
  const bool cache_all = chunk_windows_ >= n_windows_;
  if (cache_all && cache_.empty()) {
    cache_.resize(static_cast<size_t>(n_windows_));
    pool_.parallel_for(0, cache_.size(), Grain{.min_items = 1}, [&](size_t a, size_t b) {
      for (size_t w = a; w < b; ++w) cache_[w] = reference_window(static_cast<int64_t>(w));
    });
  }
  std::vector<double> kl(candidates.size() * static_cast<size_t>(n_windows_), 0.0);
  int64_t done = 0;
  const int64_t total = static_cast<int64_t>(candidates.size()) * n_windows_;
  for (int64_t w0 = 0; w0 < n_windows_; w0 += chunk_windows_) {
    const int64_t w1 = std::min(n_windows_, w0 + chunk_windows_);
    if (cache_all) {
      candidate_pass(candidates, w0, w1, std::span<const RefWindow>(cache_).subspan(static_cast<size_t>(w0)), kl,
                     done, total);
      continue;
    }
    std::vector<RefWindow> refs(static_cast<size_t>(w1 - w0));
    pool_.parallel_for(0, refs.size(), Grain{.min_items = 1}, [&](size_t a, size_t b) {
      for (size_t i = a; i < b; ++i) refs[i] = reference_window(w0 + static_cast<int64_t>(i));
    });
    candidate_pass(candidates, w0, w1, refs, kl, done, total);
  }
  std::vector<double> out(candidates.size());
  for (size_t c = 0; c < candidates.size(); ++c) {
    double s = 0.0;
    for (int64_t w = 0; w < n_windows_; ++w) s += kl[c * static_cast<size_t>(n_windows_) + static_cast<size_t>(w)];
    out[c] = s / static_cast<double>(n_predicted());
  }
  return out;
}

double KldEvaluator::evaluate(const model::Model& candidate) {
  const model::Model* one[] = {&candidate};
  return evaluate(one).front();
}

}  // namespace calq::pipeline
