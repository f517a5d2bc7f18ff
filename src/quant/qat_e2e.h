// qat-e2e — end-to-end training of the quantization parameters (EfficientQAT's E2E-QP, arXiv
// 2407.11062), once, after every layer is quantized: the model's quantized linears are trained to
// minimise KL(full-precision teacher's logits ‖ student's logits), the mean over every position of
// the calibration samples, through grad::model_forward_backward (activation checkpointing) with
// fake quantization in the forward.
//
// What is trained, per linear with a format (kept-float linears, norms, the embedding and the head
// stay as they are):
//  * train_weights false (default, E2E-QP): int family only — the step size of every group, with the
//    weight quantizer's integer codes frozen (quant/qat_trainable.h: Ŵ = store_scale(s)·(q − z)).
//    Other formats have nothing to train and keep the quantizer's result.
//  * train_weights true: latent weights and LSQ step sizes / zero points (int family, started as
//    qat-block starts them, quant/qat_block.h), latent weights through the format's grid (others).
// Loop: `epochs` passes over the samples in a seeded shuffled order, `batch` samples per step (the
// last step of an epoch takes the rest); AdamW (no weight decay), lr for the step sizes and zero
// points, lr_weights for latent weights, under a cosine decay over all steps after a linear warmup
// over the first `warmup` fraction of them; steps are kept ≥ 1% of their start (and > 0).
// Teacher logits: with cache_teacher, computed once per sample before training and kept
// (samples · seq_len · vocab floats: 32 × 512 × 16384 = 1 GiB for the reference model); without,
// recomputed from the full-precision model for every batch (one more forward a step: about a third
// more time).
// Written: each trained linear encoded from its final parameters (encode_with_params), so its
// dequantized bytes are bit for bit the fake-quantized weights of the final forward.
// Guard: the KL over all samples of the model as written is compared with the start's; when it is
// not lower, the start is kept (trained_kept = false).
//
// Errors (calq::Error): samples of unequal length or none; a non-finite loss names the step and the
// first parameter (value or gradient) that is not finite; a format with no fake-quant path
// (kUnsupported); configs the trainable layer lacks (grad/layer.h).
//
// Memory (float32): the student's and the teacher's dense parameters, the gradients of the whole
// model, AdamW's two moments of the trained values, one layer's workspace for `batch` samples and
// the boundary hidden states and logits of a batch (grad/model_grad.h), plus the teacher cache.
//
// Deterministic: the same bytes for any thread count.
#pragma once

#include <cstdint>
#include <vector>

#include "core/thread_pool.h"
#include "grad/model_grad.h"
#include "quant/method.h"

namespace calq::quant {

struct QatE2eOptions {
  int64_t epochs = 2;          // passes over the calibration samples (>= 1)
  double lr = 1e-4;            // AdamW learning rate of the step sizes and zero points (> 0)
  double lr_weights = 1e-5;    // of the latent weights (train_weights) (> 0)
  int64_t batch = 4;           // samples per step (>= 1; more than the samples: all of them)
  double warmup = 0;           // fraction of the steps with a linear warmup, in [0, 0.5]
  bool train_weights = false;  // true: latent weights and LSQ parameters; false: step sizes, codes frozen
  bool cache_teacher = true;   // keep the teacher's logits of every sample (else recompute per batch)
  uint64_t seed = 0;           // sample order
};

struct QatE2eResult {
  std::vector<ModelReconstruction::Weight> weights;  // as written when trained_kept; empty otherwise
  double loss_start = 0;    // KL over all samples of the start
  double loss_trained = 0;  // of the model as written (= loss_start untrained)
  bool trained = false;
  bool trained_kept = false;
  int64_t steps = 0;
  std::vector<double> curve;  // the loss of every step
  // When trained_kept: the model's parameters of the final training forward (trained linears
  // fake-quantized from the final parameters: their written tensors dequantize to exactly these).
  grad::ModelParams<float> fake_quantized;
};

// Options are assumed valid (the recipe parser checks them).
QatE2eResult qat_e2e(const ModelReconstructionTarget& t, const QatE2eOptions& options, ThreadPool& pool);

}  // namespace calq::quant
