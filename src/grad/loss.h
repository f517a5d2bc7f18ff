// Training losses and their gradients, for T ∈ {float, double}. Each returns the loss (a mean, as
// stated per function) in double and, when the gradient pointer is non-null, writes the loss's
// gradient with respect to its first argument (the same scale as the returned mean: what a
// backward pass propagates). Rows are computed in parallel and their losses summed in row order:
// the same bits for any thread count. Softmaxes subtract the row maximum; sums run in double.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "core/thread_pool.h"

namespace calq::grad {

// Cross-entropy of logits[rows, vocab] against targets[rows]: mean over the rows whose target is
// >= 0 of −log softmax(logits)[target] (a target of −1 ignores its row: gradient 0). No counted
// row gives 0 and a zero gradient. A target >= vocab is an ErrorKind::kInvalidArgument error.
// For next-token prediction use next_token_targets.
template <typename T>
double cross_entropy(ThreadPool& pool, const T* logits, int64_t rows, int64_t vocab, std::span<const int32_t> targets,
                     T* dlogits);

// The targets of next-token prediction for `batch` sequences of seq_len ids each (ids.size() =
// batch · seq_len): row t of a sequence predicts its token t + 1; its last row is ignored (−1).
std::vector<int32_t> next_token_targets(std::span<const int32_t> ids, int64_t seq_len);

// KL(teacher ‖ student) = Σ_v p_t (log p_t − log p_s) per row, with p = softmax of each side's
// logits [rows, vocab]; mean over rows. Gradient w.r.t. the student's logits: (p_s − p_t) / rows.
template <typename T>
double kl_divergence(ThreadPool& pool, const T* student_logits, const T* teacher_logits, int64_t rows, int64_t vocab,
                     T* dstudent);

// Mean over the n elements of (a − b)²; gradient w.r.t. a: 2 (a − b) / n.
template <typename T>
double mse(ThreadPool& pool, const T* a, const T* b, int64_t n, T* da);

}  // namespace calq::grad
