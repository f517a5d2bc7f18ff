// Forward and backward of the elementwise and linear ops of a Llama-layout decoder, for
// T ∈ {float, double} (float for training, double for finite-difference checks).
//
// Conventions (every op):
//  * Tensors are contiguous row-major arrays; `rows` are tokens. Weights are [out, in] as PyTorch.
//  * A backward writes the input gradient (dx) unless it says it accumulates, and ADDS parameter
//    gradients (dw, db, dweight) into the caller's buffers (zero them first), so a batch of calls
//    sums gradients.
//  * Work is spread over the pool in fixed partitions; reductions over tokens (dW, db, dweight,
//    the embedding gradient) run in token order per output element: results are the same bits for
//    any thread count.
//  * Shapes are the caller's responsibility (mismatches are programming errors); token ids out of
//    range are an ErrorKind::kInvalidArgument error.
#pragma once

#include <cstdint>
#include <span>

#include "core/thread_pool.h"

namespace calq::grad {

// y[rows, out] = x[rows, in] · w[out, in]ᵀ (+ bias[out] when non-null, added after the product).
template <typename T>
void linear_forward(ThreadPool& pool, const T* x, int64_t rows, int64_t in, const T* w, int64_t out,
                    const T* bias, T* y);

// Given dy[rows, out]: dx[rows, in] = dy · w (accumulated into dx when accumulate_dx; skipped
// when dx is null), dw[out, in] += dyᵀ · x (skipped when null), db[out] += Σ_rows dy (skipped when
// null).
template <typename T>
void linear_backward(ThreadPool& pool, const T* x, int64_t rows, int64_t in, const T* w, int64_t out, const T* dy,
                     T* dx, bool accumulate_dx, T* dw, T* db);

// hidden[t, :] = table[ids[t], :] for a [vocab, cols] table; ids outside [0, vocab) are an error.
template <typename T>
void embedding_forward(const T* table, int64_t vocab, int64_t cols, std::span<const int32_t> ids, T* hidden);

// dtable[ids[t], :] += dhidden[t, :], in token order (ids checked as above).
template <typename T>
void embedding_backward(ThreadPool& pool, int64_t vocab, int64_t cols, std::span<const int32_t> ids,
                        const T* dhidden, T* dtable);

// RMSNorm as model::rms_norm_rows: y = weight ⊙ x · r, r = 1 / sqrt(mean(x²) + eps) per row (the sum
// of squares in double). inv_rms[rows] receives r when non-null.
template <typename T>
void rms_norm_forward(ThreadPool& pool, const T* x, const T* weight, int64_t rows, int64_t cols, double eps, T* y,
                      T* inv_rms = nullptr);

// Given dy: dx = r · (g − x̂ · mean(g ⊙ x̂)) with g = dy ⊙ weight, x̂ = x · r (written into dx, or
// added to it when accumulate_dx); dweight += Σ_rows dy ⊙ x̂. r is recomputed from x.
template <typename T>
void rms_norm_backward(ThreadPool& pool, const T* x, const T* weight, int64_t rows, int64_t cols, double eps,
                       const T* dy, T* dx, bool accumulate_dx, T* dweight);

// Rotary tables [seq_len, head_dim / 2] in T: model::rope_tables' float32 values, widened.
template <typename T>
void rope_tables_t(int64_t seq_len, int64_t head_dim, double theta, T* cos_out, T* sin_out);

// In place on x[batch · seq_len, ld] with `heads` heads of head_dim at the start of each row, row
// t of each sequence at position t: HF rotate_half pairs (i, i + half):
// forward (a, b) → (a·c − b·s, b·c + a·s); backward (the transpose) (da, db) → (da·c + db·s, db·c − da·s).
template <typename T>
void rope_forward(ThreadPool& pool, T* x, int64_t ld, int64_t batch, int64_t seq_len, int64_t heads,
                  int64_t head_dim, const T* cos_t, const T* sin_t);
template <typename T>
void rope_backward(ThreadPool& pool, T* dx, int64_t ld, int64_t batch, int64_t seq_len, int64_t heads,
                   int64_t head_dim, const T* cos_t, const T* sin_t);

// SwiGLU: h = silu(g) ⊙ u over n values; backward: dg = dh ⊙ u ⊙ silu'(g), du = dh ⊙ silu(g).
template <typename T>
void swiglu_forward(ThreadPool& pool, const T* g, const T* u, int64_t n, T* h);
template <typename T>
void swiglu_backward(ThreadPool& pool, const T* g, const T* u, const T* dh, int64_t n, T* dg, T* du);

}  // namespace calq::grad
