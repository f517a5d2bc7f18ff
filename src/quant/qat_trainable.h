// The trainable linears shared by the training methods (qat-block, qat-e2e): one quantized linear's
// latent weights and / or quantization parameters, their fake-quantized forward, the backward to
// them, and the bytes written from the final parameters (what is written is what was trained).
//
// Modes of a Trainable:
//  * int family, LSQ (frozen_codes false): latent weights w, learned step sizes and zero points per
//    group (grad/fake_quant_learn.h); Ŵ = lsq_forward(w, step, zero). Start: init_int.
//  * int family, frozen codes (EfficientQAT E2E-QP): the integer codes k = q − z of the weight
//    quantizer are kept, only the step sizes learn: Ŵ = store_scale(step_g) · k. ∂Ŵ/∂step_g = k
//    (straight through the scale's storage rounding). Written as encode_with_params(Ŵ, {stored
//    step, z}): Ŵ / step rounds back to k, so the bytes dequantize to Ŵ exactly. Start: init_frozen.
//    Group sums run serially, element order: the same bytes for any thread count.
//  * other formats with a fake-quant path: latent weights through the format's grid (STE mask).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/thread_pool.h"
#include "formats/qtensor.h"
#include "grad/fake_quant.h"
#include "grad/fake_quant_int.h"
#include "grad/layer.h"
#include "grad/optim.h"
#include "model/model.h"
#include "quant/method.h"

namespace calq::quant::detail {

// The linear of `role` (one of kLayerLinearRoles) in a layer's parameters.
std::vector<float>& linear_of(grad::LayerParams<float>& p, model::TensorRole role);

struct Trainable {
  model::TensorRole role{};
  int64_t layer = 0;
  const Format* format = nullptr;
  std::string name;
  int64_t rows = 0, cols = 0;
  bool is_int = false;
  bool frozen_codes = false;  // int family only
  grad::IntLayout layout;
  std::vector<float> w, step, zero, min_step;
  std::vector<float> codes;                 // frozen_codes: k = q − z per element
  std::vector<int32_t> zero_points;         // frozen_codes: the stored zero point per group
  std::unique_ptr<grad::FakeQuantizer> fq;  // non-int formats
  std::vector<uint8_t> mask;
  std::vector<float> grad_w, grad_step, grad_zero;

  void forward(ThreadPool& pool, float* w_hat);
  // grad_w_hat: dL/dŴ. Fills grad_w (when sized), grad_step, grad_zero.
  void backward(ThreadPool& pool, const float* grad_w_hat);
  QuantizedTensor encode(ThreadPool& pool);
};

// init_int's reach unless a method's options say otherwise (qat-block's start_reach default, and
// qat-e2e's when it trains latent weights): measured best on the reference model (docs/RESULTS.md).
inline constexpr double kDefaultStartReach = 0.45;

// Latent weights of an int linear: the point of the quantizer's rounding cell nearest the original
// weight, at most `reach` steps (in [0, 0.5)) from the cell's centre (qat_block.h), with LSQ steps /
// zero points from the stored parameters.
void init_int(Trainable& tr, const float* original, const std::vector<float>& start,
              std::span<const QuantParams> params, double reach);
// The latent weights init_int starts from (its contract), for a [rows, cols] int linear.
std::vector<float> start_latent(const grad::IntLayout& layout, int64_t rows, int64_t cols, const float* original,
                                const std::vector<float>& start, std::span<const QuantParams> params, double reach);
// Frozen codes from the quantizer's dequantized weights `start` and its stored parameters.
void init_frozen(Trainable& tr, const std::vector<float>& start, std::span<const QuantParams> params);

// The optimizer side of the training loop qat-block and qat-e2e share: AdamW (no weight decay) over
// the trained values — latent weights (train_weights) at lr_weights, step sizes and zero points at
// lr_quant — under a cosine decay over total_steps after a linear warmup over the first `warmup`
// fraction of them. `trs` must outlive it and keep its elements in place (the groups point into them).
class Trainer {
 public:
  struct Options {
    bool train_weights = false;
    double lr_weights = 0, lr_quant = 0, warmup = 0;
    int64_t total_steps = 1;
    std::string_view method;                       // the progress's step name
    int64_t layer = -1;                            // the progress's layer (−1: the whole model)
    const TrainingProgressFn* progress = nullptr;  // may be null
  };
  Trainer(std::vector<Trainable>& trs, const Options& options);
  // After the backward of step `step` (from 0) with batch loss `loss`: a non-finite loss is an Error
  // naming the step and the first non-finite parameter or gradient; otherwise the AdamW update at
  // the schedule's rate, the steps clamped, the loss appended to `curve`, and the progress reported.
  void step(int64_t step, double loss, std::vector<double>& curve);

 private:
  std::vector<Trainable>& trs_;
  Options o_;
  std::vector<grad::ParamGroup> groups_;
  std::optional<grad::AdamW> adam_;
  std::optional<grad::CosineSchedule> schedule_;
  std::chrono::steady_clock::time_point t0_;
};

// The MSE of layer `p` on each calibration sample of `t` (its input against its target), run `batch`
// samples at a time in sample order (`ws` reused while its batch fits).
std::vector<double> sample_losses(ThreadPool& pool, const LayerReconstructionTarget& t, const grad::LayerParams<float>& p,
                                  int64_t batch, std::optional<grad::LayerWorkspace<float>>& ws);

// Seeded Fisher–Yates on raw 64-bit outputs (std::shuffle's use of the engine is not specified).
void shuffle(std::vector<int64_t>& v, std::mt19937_64& rng);

}  // namespace calq::quant::detail
