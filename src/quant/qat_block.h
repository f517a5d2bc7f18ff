// qat-block — block-wise reconstruction (EfficientQAT's Block-AP, arXiv 2407.11062; OmniQuant-style
// block output matching), per decoder layer, after the layer's weight quantizer: the layer's
// weights and quantization parameters are trained to minimise the MSE between the full-precision
// layer's output on the full-precision stream (target) and the quantized layer's output on the
// already quantized layers' outputs (input), through the straight-through estimator (grad/).
//
// What is trained, per linear with a format (kept-float linears, norms and biases stay as they are):
//  * int family (int<b>-<pt|pc|gN>-<sym|asym>): LSQ step sizes and zero points per group
//    (grad/fake_quant_learn.h) starting from the parameters the weight quantizer stored, and —
//    with train_weights — latent weights W. W starts inside the weight quantizer's rounding cell:
//    W = Ŵ₀ + s·clamp((W_orig − Ŵ₀)/s, −r, r) with r = start_reach (default 0.45; unbounded outward
//    at the grid's ends), the point of the cell of the quantizer's code nearest the original weight
//    (r = 0: the cell's centre, where only a consistent gradient re-rounds), so the first forward
//    reproduces the quantizer's result (e.g. GPTQ's) while the rounding residuals the LSQ gradient
//    reads still come from the original weights.
//  * other formats with a fake-quant path (GGUF block types through their grid with frozen block
//    scales, nf4 / fp4 / fp8 / mx / nv families re-quantizing each forward; grad/fake_quant.h):
//    latent weights W only (train_weights), starting at the quantizer's dequantized result.
//    With train_weights false these have nothing to train and keep the quantizer's result.
// Loop: `epochs` passes over the samples in a seeded shuffled order, `batch` samples per step
// (the last step of an epoch takes the rest), AdamW (no weight decay) with per-kind learning rates
// lr_weights and lr_quant under a cosine decay over all steps after a linear warmup over the first
// `warmup` fraction of them (default none); steps are kept ≥ 1% of
// their start (and > 0).
// Written: each trained linear encoded from the final parameters (int: encode_with_params of W
// under lsq_quant_params; others: FakeQuantizer::encode) — so its dequantized bytes are bit for
// bit the fake-quantized weights of the final forward.
// Guard: the MSE over all samples of the layer as written is compared with the weight quantizer's
// layer; when it is not lower, the quantizer's layer is kept (trained_kept = false).
//
// Errors (calq::Error, naming the layer): a non-finite loss names the step and the first parameter
// (value or gradient) that is not finite, and stops; a non-finite gradient with a finite loss the
// same (grad/optim.h); a linear whose format has no fake-quant path (kUnsupported); configs the
// trainable layer lacks (grad/layer.h).
//
// Memory (float32): one layer's parameters four times (start, fake-quantized, gradients, latent
// weights) plus AdamW's two moments of the trained values, the layer's workspace for `batch`
// samples (grad::LayerWorkspace::values), and the batch's input, target, output and two gradients
// (5 · batch · seq_len · hidden). The pipeline adds the full-precision stream
// (samples · seq_len · hidden floats, as much as the quantized stream it already holds).
//
// Deterministic: the same bytes for any thread count (every grad op is; the shuffle is a seeded
// Fisher–Yates on a 64-bit Mersenne Twister's raw outputs).
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "core/thread_pool.h"
#include "formats/qtensor.h"
#include "grad/layer.h"
#include "quant/method.h"
#include "quant/qat_trainable.h"

namespace calq::quant {

struct QatBlockOptions {
  int64_t epochs = 4;          // passes over the calibration samples (>= 1)
  double lr_weights = 1e-4;    // AdamW learning rate of the latent weights (> 0)
  double lr_quant = 1e-5;      // of the step sizes and zero points (> 0)
  int64_t batch = 2;           // samples per step (>= 1; more than the samples: all of them)
  bool train_weights = true;   // false: step sizes and zero points only (int family)
  double warmup = 0;           // fraction of the steps with a linear warmup, in [0, 0.5]
  // int latent weights start at most this many steps from their code's centre toward the original
  // weight, in [0, 0.49] (default 0.45)
  double start_reach = detail::kDefaultStartReach;
  uint64_t seed = 0;           // sample order
};

struct QatBlockResult {
  // The trained linears as written (role, tensor) when trained_kept; empty otherwise.
  std::vector<std::pair<model::TensorRole, QuantizedTensor>> weights;
  double loss_start = 0;    // MSE over all samples of the weight quantizer's layer
  double loss_trained = 0;  // of the layer as written from the trained parameters (= loss_start untrained)
  bool trained = false;     // some parameter was trainable
  bool trained_kept = false;
  int64_t steps = 0;
  std::vector<double> curve;  // the loss (batch MSE) of every step
  // The layer's parameters of the final training forward: trained linears fake-quantized from the
  // final parameters (their written tensors dequantize to exactly these), the rest as given.
  grad::LayerParams<float> fake_quantized;
};

// `t` as method.h describes it (config, original, quantized, linears, samples · seq_len rows of
// inputs and targets). Options are assumed valid (the recipe parser checks them).
QatBlockResult qat_block(const LayerReconstructionTarget& t, const QatBlockOptions& options, ThreadPool& pool);

}  // namespace calq::quant
