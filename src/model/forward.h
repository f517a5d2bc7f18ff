// The CPU reference forward pass of a Llama-layout decoder (Llama, Mistral, Qwen2), in float32:
// optional q/k/v biases (config.qkv_bias) and per-layer sliding windows
// (config.window_for_layer) are the only differences between them. Linear weights, the embedding
// and the head may be quantized (LinearWeight): products then dequantize blocks of weight rows on
// the fly (linear_nt), an embedding lookup one row, with the same bits as a float copy would give.
//
// One decoder layer is callable on its own (decoder_layer_forward) so calibration can run a
// model layer by layer; a LinearHook sees the input of every linear layer before it is applied.
// All parallel work goes through the injected ThreadPool; results are identical for any thread
// count (each output element is produced by one fixed sequence of operations).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "core/tensor.h"
#include "core/thread_pool.h"
#include "model/model.h"

namespace calq::model {

// The input of one linear layer for a whole sequence: rows = tokens, cols = in-features.
// q/k/v share one input (and gate/up another); the hook is called once per linear role.
struct LinearInput {
  int64_t layer;  // -1 for the output head
  TensorRole role;
  const float* x;
  int64_t rows;
  int64_t cols;
  int64_t expert = -1;  // a MoE expert's input (role kExpertGate/Up/Down): its index (model/moe.h)
  // An expert's input: how many of the rows the router sent to it (all of them, unless
  // config.moe_hook_all_experts shows it every token).
  int64_t routed_rows = -1;
};
using LinearHook = std::function<void(const LinearInput&)>;

class MoeScratch;  // model/moe.h

// Scratch buffers for one sequence length; reused across layers and calls.
class LayerScratch {
 public:
  LayerScratch(const ModelConfig& config, int64_t seq_len);
  int64_t seq_len() const { return seq_len_; }

 private:
  friend void decoder_layer_forward(const ModelConfig&, const LayerWeights&, int64_t, float*, int64_t,
                                    LayerScratch&, ThreadPool&, const LinearHook*);
  int64_t seq_len_;
  std::vector<float> norm_, q_, k_, v_, attn_, gate_, up_;
  std::vector<float> rope_cos_, rope_sin_;  // [seq_len, head_dim / 2]
  std::shared_ptr<MoeScratch> moe_;         // MoE models only
};

// hidden[seq_len, hidden_size] is updated in place: h += attn(norm(h)); h += mlp(norm(h)).
// Positions are 0..seq_len-1 (one causal sequence). `layer_index` selects the layer's attention
// window. `hook` may be null; it sees the input of q/k/v (before any bias is involved) and, with
// an online down rotation (config.rotation->down_seed), the rotated input of w_down. A site with
// an online transform (weights.transforms, kron_transform.h) has its input replaced by x·T first
// (after the down rotation for mlp_down): the hook sees what the stored weights multiply.
void decoder_layer_forward(const ModelConfig& config, const LayerWeights& weights, int64_t layer_index,
                           float* hidden, int64_t seq_len, LayerScratch& scratch, ThreadPool& pool,
                           const LinearHook* hook = nullptr);

// Writes the embeddings of `ids` into hidden[ids.size(), hidden_size] (rotated by Q when the
// model has a runtime residual rotation, config.rotation->residual_online). Ids outside the
// vocabulary are an ErrorKind::kInvalidArgument error.
void embed_tokens(const Model& model, std::span<const int32_t> ids, float* hidden);

// normed[seq_len, hidden_size] = final_norm(hidden): the output head's input (with a runtime
// residual rotation, config.rotation->residual_online, hidden·Qᵀ is normed). `normed` may not
// alias `hidden`.
void final_norm_rows(const Model& model, const float* hidden, int64_t seq_len, float* normed, ThreadPool& pool);

// logits[seq_len, vocab] = output(final_norm(hidden)).
void output_logits(const Model& model, const float* hidden, int64_t seq_len, float* logits, ThreadPool& pool,
                   const LinearHook* hook = nullptr);

// Whole model on one sequence: returns logits [ids.size(), vocab].
Tensor forward(const Model& model, std::span<const int32_t> ids, ThreadPool& pool,
               const LinearHook* hook = nullptr);
// The same into logits[ids.size() × vocab] (every element written): loops over many windows reuse
// one buffer instead of faulting in a fresh one per window (32 MiB at ctx 512 and vocab 16384).
void forward_into(const Model& model, std::span<const int32_t> ids, float* logits, ThreadPool& pool,
                  const LinearHook* hook = nullptr);

// Building blocks, exposed for tests and for the calibration pipeline.
// y[rows, out] = x·Wᵀ (+= with accumulate) for the layer's linear `role` (linear_nt), plus its LoRA
// adapter's term when it has one (lora_adapter.h). Every path that runs a layer's linears uses it.
void layer_linear(ThreadPool& pool, const LayerWeights& weights, TensorRole role, const float* x, int64_t rows,
                  float* y, bool accumulate = false);

void rms_norm_rows(const float* x, const float* weight, float* y, int64_t rows, int64_t cols, double eps,
                   ThreadPool& pool);
// Rotary tables as Hugging Face computes them (float32 inverse frequencies and angles); with
// `freq_factors` (head_dim / 2 of them, config.rope_freq_factors) each inverse frequency is
// divided by its factor first.
void rope_tables(int64_t seq_len, int64_t head_dim, double theta, float* cos_out, float* sin_out,
                 std::span<const float> freq_factors = {});

}  // namespace calq::model
