// lora_finetune — LoRA on a frozen base (QLoRA when the base is quantized): low-rank adapters
// (model/lora_adapter.h) on the chosen linears of every layer, trained by backpropagation through
// the base (grad/model_grad.h, its linears dequantized and frozen) on a token stream, with a
// held-out token stream for validation.
//
// Contract:
//  * Adapters start as PEFT starts them: A [rank, in] uniform in ±1/√in (kaiming_uniform with
//    a = √5), drawn from `seed` layer by layer in kLayerLinearRoles order; B [out, rank] zero, so the
//    first forward is the base's. scale = alpha / rank.
//  * Data: the training ids cut into non-overlapping windows of seq_len tokens (the tail dropped);
//    every step takes `batch` windows (min(batch, windows)) in an order shuffled per epoch from
//    `seed` (an epoch's last windows that do not fill a batch wait for the next epoch's shuffle).
//    Loss: next-token cross-entropy, mean over the predicted positions (each window's first
//    `seq_len − 1` tokens predict the next).
//  * Steps: `steps`, or when 0, epochs · ⌊windows / batch⌋. AdamW (torch's, grad/optim.h; lr 2e-4 and
//    weight decay 0 as QLoRA) under a cosine decay to 0 after a linear warmup over the first
//    `warmup` fraction of the steps; the global gradient norm clipped to max_grad_norm (0: off).
//    Dropout p on each adapter's input (grad/lora.h: seeded by (seed, step, layer, linear, element)).
//  * Validation: the cross-entropy over the first `eval_windows` windows (0: all) of seq_len tokens of
//    the validation ids, with adapters and no dropout, before training (step 0), every `eval_every`
//    steps (0: never between) and after the last step. The adapters kept are the LAST step's (not the
//    best validation's): the schedule decays to 0, so the last step is where it settles.
//  * On return the trained adapters are installed into model.layers[l].adapters (the base tensors
//    are untouched). On an error the model is unchanged.
//  * Memory (float32): the base's dense parameters (ModelParams::from_model dequantizes every
//    tensor: 4 bytes a base parameter, beside the quantized model itself), the adapters, their
//    gradients and AdamW's two moments (4 × 4 bytes an adapter parameter), and the activations of one
//    batch (grad/model_grad.h's estimate: one layer's workspace, the layer-boundary hidden states,
//    the logits and their gradient).
//  * Deterministic: the same bytes for any thread count.
//
// Errors (calq::Error kInvalidArgument, naming the option): rank < 1 or larger than
// min(in, out) of a targeted linear (naming the layer and linear), no targets, alpha <= 0, dropout
// outside [0, 1), batch < 1, seq_len < 2, fewer training or validation tokens than one window, a
// model that already has adapters; a non-finite training or validation loss names the step (and
// nothing is installed). Configs the trainable layer lacks: grad/layer.h's errors.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "core/thread_pool.h"
#include "model/model.h"

namespace calq::quant {

struct LoraFinetuneOptions {
  int64_t rank = 16;
  double alpha = 32;
  double dropout = 0;
  std::vector<model::TensorRole> targets;  // per-layer linear roles; parse_lora_targets
  double lr = 2e-4;
  double weight_decay = 0;
  double warmup = 0.03;        // fraction of the steps, in [0, 0.5]
  double max_grad_norm = 1.0;  // 0: no clipping
  int64_t steps = 0;           // 0: from epochs
  int64_t epochs = 1;
  int64_t batch = 4;           // windows per step
  int64_t seq_len = 512;       // tokens per window (training and validation)
  int64_t eval_every = 0;      // validation every this many steps (0: only before and after)
  int64_t eval_windows = 16;   // validation windows (0: all)
  uint64_t seed = 0;
};

// The roles of target names: "q", "k", "v", "o", "gate", "up", "down", PEFT's module names
// ("q_proj", ..., "down_proj"), calq's role names ("attn_q", ..., "ffn_down"), or "all"; duplicates merged, in
// kLayerLinearRoles order. An unknown name or none is an Error(kInvalidArgument) naming option
// `targets` and the names it takes.
std::vector<model::TensorRole> parse_lora_targets(std::span<const std::string> names);

struct LoraProgress {
  int64_t done = 0, total = 0;  // optimizer steps
  double loss = 0;              // the step's batch loss
  double lr = 0;                // the step's learning rate
  double tokens_per_second = 0;
  double seconds = 0, eta_seconds = 0;
  std::optional<double> val_loss;  // when the step ran a validation
};
using LoraProgressFn = std::function<void(const LoraProgress&)>;

struct LoraValidation {
  int64_t step = 0;  // steps taken when measured (0: the base)
  double loss = 0;   // mean next-token cross-entropy
  double ppl = 0;    // exp(loss)
};

struct LoraFinetuneResult {
  int64_t steps = 0, tokens = 0;          // optimizer steps, training tokens seen
  int64_t train_windows = 0, val_windows = 0;
  int64_t adapter_parameters = 0;
  std::vector<double> curve;               // each step's batch loss
  std::vector<LoraValidation> validation;  // in step order
  double seconds = 0;                      // training and validation
};

// The option and shape checks lora_finetune makes first (the errors above but the texts' and the
// losses'), for callers that want them before other work.
void check_lora_finetune(const model::Model& model, const LoraFinetuneOptions& options);

LoraFinetuneResult lora_finetune(model::Model& model, std::span<const int32_t> train_ids,
                                 std::span<const int32_t> val_ids, const LoraFinetuneOptions& options,
                                 ThreadPool& pool, const LoraProgressFn* progress = nullptr);

}  // namespace calq::quant
