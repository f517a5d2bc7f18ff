// zeroqat — quantization-aware training without backpropagation (ZeroQAT, arXiv 2509.00031): the
// quantized model's int-family linears are trained end to end, after every layer is quantized, from
// a zeroth-order gradient estimate — two forward passes of the inference runtime per direction, no
// activations kept, no optimizer state — so that memory stays at what evaluating the model takes.
//
// Trained, per linear in an int-family format (others, kept-float linears, norms, the embedding and
// the head stay as they are):
//  * the step size of every group, as a log-multiplier θ of the start's: s_g = s0_g · exp(θ),
//    stored as the format stores scales (fp16 or fp32); θ is the group's own (granularity 0), or
//    shared by the groups of an output row (1) or of the whole tensor (2): fewer values for the
//    estimate to find its way in (its variance grows with their number); with train_weights false
//    the start's integer codes are frozen (Ŵ = s_g · k, as qat-e2e's E2E-QP);
//  * with train_weights, latent weights too: v (in units of the group's start step, started as
//    qat-block starts them: the point of the start's rounding cell nearest the original weight, at
//    most 0.45 steps from its centre, so the start's codes are kept) re-quantized every forward
//    with the current step: q = clamp(round(v·s0/s) + z), Ŵ = s·(q − z). A smaller step then clips
//    the group's extreme weights at the grid's ends: the step is the group's clipping factor.
//    Zero points are integers in the int formats and stay the start's.
// Estimate (MeZO's SPSA, as ZeroQAT): at step t, direction j, u ~ N(0, I) over every trained value,
// generated from (seed, t, j, value index) by a counter-based generator (never stored; the same
// numbers for any thread count); the loss of the batch at θ + ε·u and at θ − ε·u, g_j = (L₊ − L₋)
// / (2ε); update θ −= lr · (1/q) Σ_j g_j · u_j (ε_weights and lr_weights for the latent weights).
// The trained values themselves are never perturbed: each forward's quantized bytes are encoded
// from θ ± ε·u directly (no +ε, −2ε, +ε round trip in float, so no drift), one linear at a time.
// Loss: KL(full-precision teacher ‖ student) over the next-token distributions of every position
// (the teacher's logits recomputed per sample, never cached) or, with cross_entropy, next-token
// cross-entropy on the samples (no teacher forward).
// Step sizes stay within [1 %, 100 ×] of their start (θ clamped after each update).
// Batches: `batch` samples per step in a seeded shuffled order (reshuffled after each pass).
// Guard: the loss over all samples of the model as written is compared with the start's; when it is
// not lower, the start is kept (trained_kept = false).
//
// Memory: the student as quantized bytes (2q perturbed copies of the trained linears' bytes at a
// time), θ (one float a group), with train_weights the latent weights (one float a weight) and the
// int8 codes, and the runtime forward's buffers for one sample: one to three logits matrices
// [seq_len, vocab]. Nothing scales with the number of samples beyond their token ids.
//
// Errors (calq::Error): samples of unequal length or none; a non-finite loss at the start, or at a
// step (naming it and the first non-finite trained value).
// Deterministic: the same bytes for any thread count.
#pragma once

#include <cstdint>
#include <vector>

#include "core/thread_pool.h"
#include "quant/method.h"

namespace calq::quant {

struct ZeroQatOptions {
  int64_t steps = 200;          // optimizer steps (>= 1)
  int64_t batch = 1;            // samples per step (>= 1; more than the samples: all of them)
  int64_t directions = 1;       // q: random directions averaged per step (>= 1)
  double eps = 1e-2;            // perturbation of the step sizes' log-multipliers (> 0)
  double lr = 1e-2;             // learning rate of the log-multipliers (> 0)
  int64_t granularity = 0;      // step multipliers: 0 one per group, 1 one per output row, 2 one per tensor
  bool train_weights = false;   // latent weights too (else codes frozen)
  double eps_weights = 0.1;     // perturbation of the latent weights, in start steps (> 0)
  double lr_weights = 1e-3;     // learning rate of the latent weights (> 0)
  bool cross_entropy = false;   // loss: next-token cross-entropy (else KL to the teacher)
  uint64_t seed = 0;            // directions and sample order
};

struct ZeroQatResult {
  std::vector<ModelReconstruction::Weight> weights;  // as written when trained_kept; empty otherwise
  double loss_start = 0;    // loss over all samples of the start
  double loss_trained = 0;  // of the model as written (= loss_start untrained)
  bool trained = false;
  bool trained_kept = false;
  int64_t steps = 0;
  int64_t trained_values = 0;  // θ plus latent weights
  std::vector<double> curve;   // (L₊ + L₋) / 2 of every step's batch (first direction)
};

// Options are assumed valid (the recipe parser checks them).
ZeroQatResult zeroqat(const ModelReconstructionTarget& t, const ZeroQatOptions& options, ThreadPool& pool);

// The counter-based standard normal of the estimate: value `index` of direction (seed, step, dir).
// Exposed for tests (the same number whoever asks, in any order).
float zeroqat_normal(uint64_t seed, int64_t step, int64_t direction, uint64_t index);

}  // namespace calq::quant
