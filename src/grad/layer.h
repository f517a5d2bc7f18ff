// A trainable decoder layer (Llama, Mistral, Qwen2): dense copies of a model layer's parameters in
// T ∈ {float, double}, its forward (the math of model::decoder_layer_forward) and its backward,
// which recomputes the layer's activations from the layer's input (activation checkpointing: a
// whole-model backward keeps only the hidden state at each layer boundary).
//
// Contract:
//  * hidden states are [batch · seq_len, hidden_size], `batch` independent causal sequences of
//    seq_len tokens each (row t of a sequence at position t).
//  * layer_forward: hidden += attn(norm(hidden)); hidden += mlp(norm(hidden)), with the layer's
//    sliding window (config.window_for_layer(layer)) and q/k/v biases when config.qkv_bias. In
//    float it agrees with model::decoder_layer_forward to float rounding (exp is std::exp here,
//    a polynomial there).
//  * layer_backward ADDS the parameter gradients into `grads` (zero it first; a batch of calls
//    sums) and WRITES d_input.
//  * Same bits for any thread count (see ops_basic.h, ops_attention.h).
//  * Configs the trainable layer does not implement (online Hadamard rotations, online Kronecker
//    input transforms, a quantized KV cache, activation quantization) are an
//    ErrorKind::kUnsupported error from from_weights.
//  * LoRA adapters (grad/lora.h): LayerParams::lora, one slot per linear; a linear with an adapter
//    adds s·(drop(x)·Aᵀ)·Bᵀ to its output (before RoPE for q and k, onto the residual for o and
//    down). from_weights copies a model layer's adapters. Dropout only where a LoraDropout is given.
//  * Frozen parameters: a gradient tensor of `grads` that is empty is not computed (the linears'
//    dW, the norms' and biases' gradients, the adapters' dA / dB), which saves their products;
//    d_input is always complete.
//  * SiteMaps (optional): a map per input site (model/block_topology.h) applied between the tensor
//    that produces the site's activation and the linears that read it — a learned transform and
//    fake-quantized activations (FlatQuant). Without maps (nullptr) the layer computes exactly
//    what it computes without this option, bit for bit.
#pragma once

#include <array>
#include <cstdint>
#include <utility>
#include <vector>

#include "core/thread_pool.h"
#include "grad/lora.h"
#include "model/block_topology.h"
#include "model/model.h"

namespace calq::grad {

// Parameters (or their gradients: same shapes) of one decoder layer; weights [out, in] row-major.
template <typename T>
struct LayerParams {
  std::vector<T> attn_norm;  // [hidden]
  std::vector<T> wq;         // [q_dim, hidden]
  std::vector<T> wk;         // [kv_dim, hidden]
  std::vector<T> wv;         // [kv_dim, hidden]
  std::vector<T> wo;         // [hidden, q_dim]
  std::vector<T> mlp_norm;   // [hidden]
  std::vector<T> w_gate;     // [intermediate, hidden]
  std::vector<T> w_up;       // [intermediate, hidden]
  std::vector<T> w_down;     // [hidden, intermediate]
  std::vector<T> bq, bk, bv;  // [q_dim], [kv_dim], [kv_dim] when config.qkv_bias, else empty
  // LoRA adapters by kLayerLinearRoles position (rank 0: none). Not part of tensors() / numel().
  std::array<LoraParams<T>, std::size(model::kLayerLinearRoles)> lora;

  // Dense copies of a model layer (quantized weights dequantized) and of its adapters, converted
  // to T.
  static LayerParams from_weights(const model::ModelConfig& config, const model::LayerWeights& weights,
                                  ThreadPool& pool);
  // Every tensor of the config's shapes, zero (a gradient buffer); no adapters.
  static LayerParams zeros(const model::ModelConfig& config);
  // The gradient buffer of LoRA training: every base tensor empty (frozen), every adapter of `p`
  // zero with its shapes.
  static LayerParams lora_grads(const LayerParams& p);

  // Every non-empty tensor with its role: norms, the seven linears (kLayerLinearRoles order),
  // biases.
  std::vector<std::pair<model::TensorRole, std::vector<T>*>> tensors();
  std::vector<std::pair<model::TensorRole, const std::vector<T>*>> tensors() const;
  int64_t numel() const;
};
template <typename T>
using LayerGrads = LayerParams<T>;

// Maps of a layer's input sites. forward is const (the layer's forward may run from several
// threads' batches only through the pool it is given); backward adds the map's own parameter
// gradients into the map's buffers, so it is not.
template <typename T>
class SiteMaps {
 public:
  virtual ~SiteMaps() = default;
  // Whether `site` is mapped; an unmapped site is read as produced, at no cost.
  virtual bool maps(model::InputSite site) const = 0;
  // y[rows, width] = map(x[rows, width]) (y never aliases x).
  virtual void forward(ThreadPool& pool, model::InputSite site, const T* x, int64_t rows, int64_t width,
                       T* y) const = 0;
  // Given the map's input x and dL/dy: WRITES dx and ADDS the map's parameter gradients.
  virtual void backward(ThreadPool& pool, model::InputSite site, const T* x, int64_t rows, int64_t width, const T* dy,
                        T* dx) = 0;
};

// Throws ErrorKind::kUnsupported when the config needs runtime parts the trainable layer lacks.
void check_trainable(const model::ModelConfig& config);

// Activations and backward scratch of one layer for `batch` sequences of seq_len tokens, reused
// across layers and calls. Holds, in values of T (N = batch · seq_len, H = hidden, Q = q_dim,
// K = kv_dim, I = intermediate, nh = num_heads, hd = head_dim):
//   N·(5H + 4Q + 4K + 6I) + batch·nh·seq_len² + seq_len·hd
// (forward: the two norm outputs, the post-attention hidden state, q, k, v, the attention output,
// gate, up, their product, the softmax probabilities; backward: the post-attention hidden state's
// and a norm output's gradients, the attention output's gradient, dq, dk, dv, three
// intermediate-sized gradients; the rope tables).
template <typename T>
class LayerWorkspace {
 public:
  LayerWorkspace(const model::ModelConfig& config, int64_t seq_len, int64_t batch = 1);
  static int64_t values(const model::ModelConfig& config, int64_t seq_len, int64_t batch);
  int64_t seq_len() const { return seq_len_; }
  int64_t batch() const { return batch_; }
  int64_t rows() const { return seq_len_ * batch_; }

 private:
  int64_t seq_len_, batch_;

 public:
  // The buffers themselves, layer.cpp's to use: callers only size the workspace and pass it on.
  std::vector<T> norm1_, q_, k_, v_, probs_, attn_, h1_, norm2_, gate_, up_, act_;
  std::vector<T> d_h1_, d_norm_, d_attn_, dq_, dk_, dv_, d_act_, d_gate_, d_up_;
  std::vector<T> rope_cos_, rope_sin_;
  // With SiteMaps only (sized on first use): the mapped inputs of the four sites, and the
  // gradients of a mapped input of each width — N·(4H + 2Q + 2I) values more.
  std::vector<T> m_attn_in_, m_attn_out_, m_mlp_in_, m_mlp_down_, dm_h_, dm_q_, dm_i_;
  // With adapters only (sized on first use): each adapter's scaled intermediate [N, rank] and one
  // adapter's scratch (grad/lora.h) — N·(Σ rank + 2·max in + max rank) values more.
  std::array<std::vector<T>, std::size(model::kLayerLinearRoles)> lora_us_;
  LoraScratch<T> lora_scratch_;
};

// hidden[ws.rows(), hidden_size] updated in place by decoder layer number `layer` (selects the
// window). `dropout`: the adapters' input dropout of a training forward (default off).
template <typename T>
void layer_forward(ThreadPool& pool, const model::ModelConfig& config, int64_t layer, const LayerParams<T>& params,
                   T* hidden, LayerWorkspace<T>& ws, const SiteMaps<T>* maps = nullptr,
                   const LoraDropout& dropout = {});

// Given the layer's input[ws.rows(), hidden] and the loss gradient w.r.t. its output, recomputes
// the forward, writes d_input (may not alias input or d_output) and adds the parameter gradients.
template <typename T>
void layer_backward(ThreadPool& pool, const model::ModelConfig& config, int64_t layer, const LayerParams<T>& params,
                    const T* input, const T* d_output, T* d_input, LayerGrads<T>& grads, LayerWorkspace<T>& ws,
                    SiteMaps<T>* maps = nullptr, const LoraDropout& dropout = {});

}  // namespace calq::grad
