// FlatQuant (Sun et al. 2024, arXiv 2410.09426) for one decoder layer: learned affine transforms
// of the layer's input sites that flatten weights and activations before quantization.
//
// Per input site (model/block_topology.h) of width n1·n2 (model::kron_factors):
//  * a transform T = A ⊗ B, each factor parameterised as the paper does, P = U·diag(σ)·Vᵀ with
//    U = U₀·cayley(X_u), V = V₀·cayley(X_v) (U₀, V₀ seeded random orthogonal matrices, X = 0 and
//    σ = 1 at the start: T starts as a random orthogonal Kronecker product); P⁻ᵀ = U·diag(1/σ)·Vᵀ
//    needs no inversion, and P is singular only when some σ reaches 0;
//  * a per-channel smoothing s (sites whose scales fold into their producer only: not the
//    attention output under grouped-query attention), started SmoothQuant-style at
//    s_c = max|x_c|^α / max_k |W_kc|^(1−α) (α = smooth_alpha) — the site reads x / s;
//  * with an activation scheme, a per-token clip ratio σ(γ) of the site (γ₀ = 4, σ ≈ 0.982);
// and per consumer linear, learnable weight clipping (OmniQuant's LWC, grad/fake_quant_learn.h)
// in the linear's int format. The layer computes, for each site and consumer,
//   x̃ = Q_a((x / s)·T),  W̃ = Q_w(W·diag(s)·T⁻ᵀ),  y = x̃·W̃ᵀ
// (Q_a: model::ActivationQuant's per-token fake quantization with the learned clip; Q_w: LWC),
// through grad::layer_forward with SiteMaps, and trains every parameter above by AdamW on the
// mean squared error between its output on the layer's input stream and the full-precision
// layer's output (`targets`), `epochs` passes of `batch` samples per step, cosine learning rate
// from lr (transforms, smoothing) and lr × clip_lr_scale (clips) down to 1/1000 of them.
//
// Contract of flatquant_layer:
//  * The result holds, per site, s (empty where not learned), A, B and the learned activation
//    clip (0 without an activation scheme), and every consumer's weight W·diag(s)·T⁻ᵀ clamped to
//    the learned clipping range of its groups (so a min-max quantizer reproduces LWC's grid). The
//    caller replaces the consumers by those weights, then folds each s into its producer only
//    (model::fold_into_producer), and stores A ⊗ B for the runtime.
//  * The loss over all samples is measured before training and after; when training did not lower
//    it, the start (random orthogonal transforms, the initial smoothing and clips) is returned
//    (event value 0; 1: trained result written).
//  * Errors: a layer linear in a format outside the int family (kUnsupported, naming it), an
//    activation scheme other than a per-token one (kUnsupported), a site width that does not
//    factor as options.n1 asks (kInvalidArgument), a transform factor whose σ turns non-finite,
//    reaches 0 or whose condition max|σ|/min|σ| exceeds options.max_condition (kNumeric, naming the
//    layer, the site, the factor and the step: the run stops with no output), a non-finite loss
//    (kNumeric, naming layer and step), no samples (kInvalidArgument).
//  * Deterministic: same inputs, options and seed give the same bytes for any thread count.
#pragma once

#include <cstdint>
#include <span>

#include "core/thread_pool.h"
#include "model/kron_transform.h"
#include "quant/method.h"

namespace calq::quant {

struct FlatQuantOptions {
  int64_t epochs = 15;           // passes over the calibration samples per layer (the paper's 15)
  int64_t batch = 4;             // samples per optimizer step (the paper's 4)
  double lr = 5e-3;              // transforms and smoothing (the paper's Llama-3 setting)
  double clip_lr_scale = 10;     // the clips' learning rate, × lr (the paper's 10)
  double weight_decay = 0;       // AdamW's decoupled weight decay
  double smooth_alpha = 0.3;     // the smoothing's start (the paper's 0.3)
  bool smooth = true;            // learn per-channel smoothing where it folds
  bool weight_clip = true;       // learn weight clipping (LWC)
  bool act_clip = true;          // learn the activation clip (with an activation scheme)
  int64_t n1 = 0;                // the first factor's size; 0: the divisor of the width nearest √width
  double max_condition = 1e4;    // largest accepted max|σ| / min|σ| of a factor
  uint64_t seed = 0;             // the orthogonal starts and the sample order
};

LayerTransform flatquant_layer(const LayerTransformTarget& target, const FlatQuantOptions& options, ThreadPool& pool);

// The statistics of x̃ = x·T from those of x: the Hessian (Σ or mean of x xᵀ, whichever it holds)
// becomes Tᵀ·H·T and mean_sq its diagonal (rescaled by the same factor); absmax and mean_abs,
// which a linear map does not carry over, are cleared. Without a Hessian every statistic is
// cleared (nothing describes x̃ then).
void transform_input_stats(InputStats& stats, const model::KronTransform& t);

}  // namespace calq::quant
