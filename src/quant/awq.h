// AWQ — activation-aware weight quantization (Lin et al. 2023) for one group of linears that
// share an input, with the error measured through the input Hessian so no activations are stored.
//
// Given consumers W_k (dense float32 [out_k, in]) reading one input x with statistics
// mean|x| (per column) and H = Σ xᵀx (double, [in × in], full symmetric):
//  1. Scale search. For α = i / grid, i = 0..grid−1: s = (mean|x|)^α clamped below at 1e-4 and
//     normalised by sqrt(max(s) · min(s)) (as AutoAWQ does); Q = the format's round trip
//     (quantize + dequantize) of W·diag(s); ΔW = Q·diag(s)⁻¹ − W; error = Σ_k Σ_rows Δwᵀ H Δw,
//     which is exactly ‖Q(W·diag(s))·(diag(s)⁻¹ X) − W X‖² over the calibration rows. The α with the
//     least error is kept (ties keep the smaller α). α = 0 gives s = 1 exactly, so the result is
//     never worse than round-to-nearest on this objective.
//  2. Clip search (options.clip). On the scaled weights, per row and per group of the format's
//     block (128 when the block is under 16 elements, i.e. per-channel / per-tensor / element
//     formats), values are clamped to ±max|w|·(1 − k/clip_steps), k = 0..⌊max_shrink·clip_steps⌋;
//     each group keeps the k minimising δᵀ H_gg δ (δ the group's round-trip error in the original
//     input domain, H_gg the group's diagonal block of H). Because that ignores cross-group terms
//     (and per-channel formats couple groups through one scale), each row then keeps its clipped
//     weights only if its full error Δwᵀ H Δw did not grow, and the whole clip step is dropped if
//     the re-quantized result is worse than the unclipped one: error_clipped ≤ error_scaled always.
//
// Importance (imatrix, mean x² per column of the original input): the scaled weights see the
// input x/s, so the format is given importance[c] / s[c]² for them; AwqResult::importance is that
// vector, for the caller to pass when it quantizes AwqResult::weights.
//
// The caller folds `scales` into the producer of the input (model/fold.h: fold_input_scales, which
// multiplies the consumers by s — the result's `weights` already are the consumers times s, clipped)
// and quantizes `weights` with RTN or GPTQ.
//
// Deterministic: the same inputs give the same result bit for bit for any pool size (work is
// split in fixed row blocks, partial sums are added in block order, BLAS runs single-threaded).
#pragma once

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "core/tensor.h"
#include "core/thread_pool.h"
#include "formats/format.h"

namespace calq::quant {

struct AwqOptions {
  int grid = 20;            // α = 0, 1/grid, ..., (grid−1)/grid
  bool clip = true;         // run the clip search
  int clip_steps = 20;      // clamp to max·(1 − k/clip_steps)
  double max_shrink = 0.5;  // k goes up to ⌊max_shrink · clip_steps⌋
  std::string_view tensor_name = "<tensor>";  // for error messages
  const RangeChooser* range = nullptr;        // passed to the format (QuantizeOptions::range)
};

struct AwqResult {
  std::vector<float> scales;  // s, length in (all ones when α = 0 wins)
  double alpha = 0;
  double error_rtn = 0;       // Σ Δwᵀ H Δw of the plain round trip (α = 0)
  double error_scaled = 0;    // the same with the best scales (<= error_rtn)
  double error_clipped = 0;   // after the clip search (<= error_scaled; == it when clip is off)
  std::vector<Tensor> weights;     // clipped W_k·diag(s), one float32 [out_k, in] per consumer
  std::vector<float> importance;   // importance / s² (empty when no importance was given)
};

// Errors (calq::Error naming options.tensor_name): a consumer not float32 [*, in]; mean_abs not
// finite and >= 0; hessian not in² finite values; a shape the format cannot store; bad options.
AwqResult awq_search(std::span<const Tensor* const> consumers, std::span<const float> mean_abs,
                     std::span<const double> hessian, const Format& format, const float* importance,
                     const AwqOptions& options, ThreadPool& pool);

// Σ_rows Δwᵀ H Δw for ΔW = w − reference ([rows, in] each, H [in × in]) — the objective above,
// exposed for tests and for callers comparing methods. Deterministic for any pool size.
double hessian_weighted_error(const float* w, const float* reference, int64_t rows, int64_t in,
                              std::span<const double> hessian, ThreadPool& pool);

}  // namespace calq::quant
