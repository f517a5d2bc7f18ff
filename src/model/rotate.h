// Hadamard rotation of a model (QuaRot / SpinQuant-style computational invariance): the residual
// stream is rotated by an orthogonal Q = randomized Hadamard(hidden_size, seed) (core/hadamard.h),
// which leaves the model's function unchanged but spreads outlier channels over all channels, so
// that weights and activations quantize better afterwards.
//
// Contract of rotate_model (dense float32 model, not already rotated):
//  * Every RMSNorm weight g is folded into the linears that read its output (W ← W·diag(g):
//    attn_norm → q, k, v; mlp_norm → gate, up; final_norm → the output head when untied) and set to 1
//    (RMSNorm without weight commutes with Q, which is orthogonal).
//  * Readers of the residual stream ([out, hidden]: q, k, v, gate, up, untied head) get W ← W·Q,
//    writers ([hidden, in]: o, down) W ← Qᵀ·W, an untied embedding E ← E·Q. Biases (Qwen2's q/k/v)
//    are added after the product and are unchanged.
//  * Tied embeddings stay tied and unrotated (rotating them offline would untie them, doubling the
//    largest tensor): the final norm is not folded, and config.rotation->residual_online makes the
//    forward pass apply x·Q after the embedding lookup and x·Qᵀ before the final norm.
//  * rotate_down: w_down ← w_down·Q_d with Q_d = randomized Hadamard(intermediate_size,
//    down_seed(seed)), and config.rotation->down_seed makes the forward pass apply x·Q_d to the MLP
//    intermediate before w_down.
//  * Logits equal the original's up to float rounding. New tensors are written: tensors shared
//    with other Models (copies share storage) are left as they were.
//  * Sets config.rotation (persisted as calq.rotation.* GGUF keys, see docs/formats.md).
//  * Errors: a quantized weight, an already rotated model (config.rotation set), a model with
//    online Kronecker transforms (LayerWeights::transforms), a model with LoRA adapters
//    (LayerWeights::adapters) — kInvalidArgument;
//    a hidden/intermediate size without a Hadamard transform — kUnsupported naming the sizes.
#pragma once

#include <cstdint>

#include "core/thread_pool.h"
#include "model/model.h"

namespace calq::model {

struct RotateOptions {
  uint64_t seed = 0;
  bool rotate_down = false;  // also rotate the MLP intermediate online (Q_d before w_down)
};

// The seed of Q_d derived from the residual seed (so that Q and Q_d differ when sizes agree).
uint64_t down_rotation_seed(uint64_t seed);

void rotate_model(Model& model, const RotateOptions& options, ThreadPool& pool);

}  // namespace calq::model
