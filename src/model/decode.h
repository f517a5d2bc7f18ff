// Incremental decoding with a key/value cache: a batch of sequences advanced one token at a time,
// each step costing one token's worth of products plus attention over the cached keys, instead
// of re-running model::forward over the whole prefix (quadratic in the length).
//
// Contract:
//  * DecodeCache holds, for `batch` sequences of at most `max_len` tokens, every layer's keys
//    (after RoPE) and values of the tokens fed so far; all sequences advance together, so they
//    share one position (cache.length()).
//  * decode_step feeds one token per sequence at position cache.length() and writes the logits of
//    that position; the logits equal those of model::forward on the sequence so far, row for row,
//    up to float rounding (the products run on `batch` rows instead of the whole prefix; the
//    same math otherwise: q/k/v biases, q/k head norms, rotary scaling, expert layers (the
//    batch's tokens routed as in moe.h), sliding windows, a simulated quantized KV cache, online
//    rotations, online input transforms (LayerWeights::transforms) and activation quantization of
//    LinearWeight all apply as in forward.h).
//  * Deterministic and independent of the thread count (linear_nt's fixed blocks; attention of one
//    (sequence, head) pair runs on one thread in a fixed order). The bits may depend on `batch`.
//  * Errors (kInvalidArgument): a step past max_len, ids.size() != batch, ids outside the
//    vocabulary (embed_tokens).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "core/thread_pool.h"
#include "model/model.h"

namespace calq::model {

class MoeScratch;  // model/moe.h

class DecodeCache {
 public:
  DecodeCache(const ModelConfig& config, int64_t batch, int64_t max_len);
  int64_t batch() const { return batch_; }
  int64_t max_len() const { return max_len_; }
  int64_t length() const { return length_; }  // tokens per sequence already fed
  // Bytes of keys and values a cache of these dimensions holds (for sizing batches).
  static int64_t bytes_for(const ModelConfig& config, int64_t batch, int64_t max_len);

 private:
  friend void decode_step(const Model&, std::span<const int32_t>, DecodeCache&, float*, ThreadPool&);
  int64_t batch_, max_len_, length_ = 0;
  std::vector<float> k_, v_;                // [layer][batch][max_len][kv_dim]
  std::vector<float> rope_cos_, rope_sin_;  // [max_len, head_dim / 2]
  std::vector<float> hidden_, norm_, q_, k_new_, v_new_, attn_, gate_, up_;
  std::shared_ptr<MoeScratch> moe_;  // MoE models only
};

// logits[batch, vocab] of the tokens `ids` (one per sequence) appended at position cache.length().
void decode_step(const Model& model, std::span<const int32_t> ids, DecodeCache& cache, float* logits,
                 ThreadPool& pool);

}  // namespace calq::model
