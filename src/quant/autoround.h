// autoround — learned rounding (AutoRound, arXiv 2309.05516), per decoder layer, after the layer's
// weight quantizer (rtn by default, or gptq): every weight gets a rounding offset v, in steps, kept
// in [−0.5, 0.5], and — for the int family — every group two factors of its range's top and
// bottom kept in [0.1, 1] (AutoRound's min-max tuning; grad/fake_quant_learn.h, "Learned
// rounding"), trained by SignSGD (p ← p − lr·sign(g)) at lr·(1 − step/iters) to minimise the MSE
// between the full-precision layer's output (on full-precision inputs) and the quantized layer's
// output (on the already quantized layers' outputs). The output is an ordinary tensor of the same
// format: runtimes load it unchanged.
//
// The start, per linear with a format (kept-float linears, norms and biases are not trained):
//  * int family: the range is the grid of the parameters the weight quantizer stored, the base
//    weight the point of the quantizer's rounding cell nearest the original weight, at most
//    start_reach steps from its centre (qat_block.h's start; after rtn that is the original weight
//    itself wherever it lies within start_reach of its code) — so v = 0 and factors 1 reproduce the
//    quantizer's result.
//  * GGUF block types (every format with a GridCodec, formats/grid.h): the block and super-block
//    scales stay as the quantizer chose them (frozen, grad/fake_quant.h); the offset is measured
//    in the spacing of the block's grid (FakeQuantizer::spacing), base as above. Only rounding is
//    learned; the min-max factors have nothing to act on.
//  * Formats without frozen parameters (nf4, fp8, mx, ...): calq::Error(kUnsupported) naming the
//    tensor and the format.
// Loop: `iters` steps; each takes the next `batch` samples of a seeded shuffled order (reshuffled
// when fewer than `batch` remain). The parameters of the step whose batch loss, relative to the same
// samples' loss at the start, was lowest are kept (AutoRound keeps its best step; relative, so an
// easy batch does not win by being easy). Guard: the MSE over all samples of the layer as written is
// compared with the quantizer's; when not lower, the quantizer's layer is kept (trained_kept false).
// Written: int, encode_with_params of the latent weights under the trained parameters; codecs,
// FakeQuantizer::encode of the latent weights — bit for bit the fake-quantized forward.
//
// Errors (calq::Error naming the layer): a non-finite loss names the step and the first parameter
// or gradient that is not finite and stops (no output); a non-finite gradient with a finite loss
// names its tensor and element (grad/optim.h); unsupported formats as above.
//
// Memory (float32): per trained linear its base, offsets, their gradient and the best step's copy
// (4 values a weight; codecs also the spacing and latent weights), the layer's workspace for `batch`
// samples and the batch's tensors (as qat-block). Deterministic: the same bytes for any thread count.
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

struct AutoRoundOptions {
  int64_t iters = 200;      // SignSGD steps per layer (>= 1)
  double lr = 0;            // offsets' rate, in steps per step; 0: 1/iters (AutoRound's default)
  double lr_minmax = 0;     // the range factors' rate; 0: the offsets' rate
  int64_t batch = 8;        // samples per step (more than the samples: all of them)
  bool minmax = true;       // int family: train the range factors too
  double start_reach = detail::kDefaultStartReach;  // in [0, 0.49]
  uint64_t seed = 0;        // sample order
};

// The smallest range factor (a factor of 0 would give a zero scale).
inline constexpr float kAutoRoundMinFactor = 0.1f;

struct AutoRoundResult {
  std::vector<std::pair<model::TensorRole, QuantizedTensor>> weights;  // as written, when trained_kept
  double loss_start = 0;    // MSE over all samples of the weight quantizer's layer
  double loss_trained = 0;  // of the layer written from the kept step's parameters (kept or not)
  bool trained = false;     // some linear had something to train
  bool trained_kept = false;
  int64_t steps = 0;
  int64_t best_step = -1;     // 0-based step whose parameters were kept
  std::vector<double> curve;  // the batch loss of every step
  // The layer's parameters as written (trained linears fake-quantized from the kept parameters).
  grad::LayerParams<float> fake_quantized;
};

// `t` as method.h describes it. Options are assumed valid (the recipe parser checks them).
AutoRoundResult autoround(const LayerReconstructionTarget& t, const AutoRoundOptions& options, ThreadPool& pool);

}  // namespace calq::quant
