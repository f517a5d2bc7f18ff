// Grouped-query causal self-attention with softmax and an optional sliding window, forward and
// backward, for T ∈ {float, double}; the math of model::decoder_layer_forward's attention.
//
// Layout: q and out are [batch · seq_len, num_heads · head_dim], k and v
// [batch · seq_len, num_kv_heads · head_dim]; each of the `batch` sequences attends within itself,
// its row t at position t. Query head h reads kv head h / (num_heads / num_kv_heads). Scores are
// q·k / sqrt(head_dim); the query at i sees keys j with i − window < j <= i (window 0, or a window
// at least seq_len long: every j <= i).
// probs [batch, num_heads, seq_len, seq_len] holds the softmax (0 where masked): written by the
// forward, read by the backward (which needs it and q, k, v as the forward saw them).
// Forward parallel over (sequence, head), backward over (sequence, kv head) with the group's query
// heads in order: the same bits for any thread count.
#pragma once

#include <cstdint>

#include "core/thread_pool.h"

namespace calq::grad {

struct AttentionShape {
  int64_t batch = 1;
  int64_t seq_len = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t window = 0;  // 0 = full causal

  int64_t q_dim() const { return num_heads * head_dim; }
  int64_t kv_dim() const { return num_kv_heads * head_dim; }
  int64_t probs_size() const { return batch * num_heads * seq_len * seq_len; }
};

template <typename T>
void attention_forward(ThreadPool& pool, const AttentionShape& shape, const T* q, const T* k, const T* v, T* probs,
                       T* out);

// Given dout: writes dq, dk, dv (same layouts as q, k, v).
template <typename T>
void attention_backward(ThreadPool& pool, const AttentionShape& shape, const T* q, const T* k, const T* v,
                        const T* probs, const T* dout, T* dq, T* dk, T* dv);

}  // namespace calq::grad
