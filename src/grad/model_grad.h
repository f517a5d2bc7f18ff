// Whole-model training forward and backward (Llama, Mistral, Qwen2) with activation
// checkpointing, for T ∈ {float, double}; and the memory estimate of a training run.
//
// model_forward_backward runs the embedding, every decoder layer (keeping only the hidden state at
// each layer boundary), the final norm, the head and the loss, then goes back layer by layer,
// recomputing each layer's activations from its stored input (layer.h). Gradients are ADDED into
// `grads` (zero it first: a batch of calls sums), the loss is returned. A gradient tensor that is
// empty is not computed (a frozen parameter: ModelParams::lora_grads freezes every base tensor,
// which skips the head's, the embedding's and every linear's weight gradient). LoRA adapters
// (layer.h, lora.h) are part of the layers' parameters. Same bits for any thread count.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "core/thread_pool.h"
#include "grad/layer.h"
#include "model/model.h"

namespace calq::grad {

// Every parameter of a model (or its gradient: same shapes), dense, in T.
template <typename T>
struct ModelParams {
  std::vector<T> embedding;  // [vocab, hidden]
  std::vector<LayerParams<T>> layers;
  std::vector<T> final_norm;  // [hidden]
  std::vector<T> output;      // [vocab, hidden]; empty when tied: the head is `embedding`

  // Dense copies (quantized weights dequantized, LoRA adapters included); ErrorKind::kUnsupported
  // as check_trainable.
  static ModelParams from_model(const model::Model& model, ThreadPool& pool);
  static ModelParams zeros(const model::ModelConfig& config);
  // LoRA training's gradient buffer: every base tensor empty (frozen, not computed), each adapter
  // of `p` zero with its shapes (LayerParams::lora_grads).
  static ModelParams lora_grads(const ModelParams& p);
  bool tied() const { return output.empty(); }

  // Every tensor, named as "embedding", "layer 3 attn_q", "final_norm", "output".
  struct Named {
    std::string name;
    std::vector<T>* values;
  };
  std::vector<Named> tensors();
  int64_t numel() const;
  // Every adapter factor, layer then kLayerLinearRoles order, A before B: "layer 3 attn_q lora_A".
  std::vector<Named> lora_tensors();
};

enum class LossKind : uint8_t {
  kCrossEntropy,   // next-token cross-entropy, mean over predicted positions (loss.h)
  kKlDivergence,   // KL(teacher ‖ student), mean over positions; needs teacher_logits
};

template <typename T>
struct LossSpec {
  LossKind kind = LossKind::kCrossEntropy;
  std::span<const T> teacher_logits;  // kKlDivergence: [ids.size(), vocab]
};

// ids: `ids.size() / seq_len` sequences of seq_len tokens (ids.size() a multiple of seq_len).
// Token ids outside the vocabulary are an ErrorKind::kInvalidArgument error.
// `dropout`: the adapters' input dropout of this training step (lora.h; default off).
template <typename T>
double model_forward_backward(ThreadPool& pool, const model::ModelConfig& config, const ModelParams<T>& params,
                              std::span<const int32_t> ids, int64_t seq_len, const LossSpec<T>& loss,
                              ModelParams<T>& grads, const LoraDropout& dropout = {});

// The same forward without the backward (and without dropout): logits [ids.size(), vocab], and
// the loss.
template <typename T>
std::vector<T> model_logits(ThreadPool& pool, const model::ModelConfig& config, const ModelParams<T>& params,
                            std::span<const int32_t> ids, int64_t seq_len);
template <typename T>
double model_loss(ThreadPool& pool, const model::ModelConfig& config, const ModelParams<T>& params,
                  std::span<const int32_t> ids, int64_t seq_len, const LossSpec<T>& loss);

// Bytes a float32 training run holds at its peak (what a `max_memory` option compares against).
// With P = every parameter of the model, P_t = the trained parameters (P for kWholeModel, one
// layer's for kOneLayer), N = batch · seq_len, V = vocab, H = hidden, L = layers, 4 bytes a value:
//   weights        = 4 · P
//   gradients      = 4 · P_t
//   optimizer      = 4 · P_t · optimizer_values_per_parameter (AdamW 2, SignSGD 0)
//   activations    = 4 · LayerWorkspace::values(seq_len, batch)             (one layer, layer.h)
//                  + 4 · threads · seq_len²          (attention backward scratch, per pool thread)
//                  + kWholeModel: 4 · ((L + 5) · N · H + 2 · N · V (+ N · V with a teacher))
//                    (the layer-boundary hidden states, the final norm's output and three
//                    hidden-sized gradients; logits and their gradient; teacher logits)
//                  + kOneLayer:   4 · 3 · N · H (the layer's input, target output, output gradient)
//   total          = the sum.
struct MemoryEstimateOptions {
  enum class Scope : uint8_t { kWholeModel, kOneLayer };
  Scope scope = Scope::kWholeModel;
  int64_t seq_len = 0;
  int64_t batch = 1;
  int64_t optimizer_values_per_parameter = 2;
  bool teacher_logits = false;
  int64_t threads = 1;  // the pool's thread count
};
struct MemoryEstimate {
  uint64_t weights = 0, gradients = 0, optimizer = 0, activations = 0, total = 0;
};
MemoryEstimate estimate_training_memory(const model::ModelConfig& config, const MemoryEstimateOptions& options);

}  // namespace calq::grad
