// zeroqat — quantization-aware training by zeroth-order estimates (quant/zeroqat.h), once after the
// layer pass. Options: ZeroQatOptions' recipe keys (defaults in zeroqat.h). No identity setting.
//
// Defaults: MeZO and ZeroQAT perturb by ε = 1e-3 in the weights' own units; the step sizes here are
// trained as log-multipliers, whose rounding to the format's fp16 scales is ~5e-4 relative, so ε is
// 1e-2 (a perturbation of 1 % of a step size, twenty fp16 steps). The rate and the step count are
// the reference model's measured best (docs/RESULTS.md, "zeroqat").
#include <fmt/format.h>

#include <algorithm>
#include <vector>

#include "core/error.h"
#include "quant/method_base.h"
#include "quant/zeroqat.h"

namespace calq::quant {
namespace {

class ZeroQat final : public MethodOf<ZeroQatOptions> {
 public:
  ZeroQat()
      : MethodOf({.name = "zeroqat",
                  .stage = MethodStage::kModelReconstruction,
                  .summary = "end-to-end QAT without backpropagation (ZeroQAT): after all layers are quantized, train "
                             "the int step sizes (and optionally latent weights) from two-forward zeroth-order "
                             "gradient estimates, at inference memory",
                  .needs = calib::StatSet(),
                  .identity = std::nullopt},
                 {number_option("steps", &ZeroQatOptions::steps, {1, 1e7}, "optimizer steps (default 200)"),
                  number_option("batch", &ZeroQatOptions::batch, {1, 1 << 20},
                                "calibration samples per step (default 1)"),
                  number_option("directions", &ZeroQatOptions::directions, {1, 64},
                                "random directions averaged per step, q (default 1)"),
                  number_option("eps", &ZeroQatOptions::eps, {0, 0.1, true},
                                "perturbation of the step sizes' log-multipliers (default 0.01)"),
                  number_option("lr", &ZeroQatOptions::lr, {0, 1, true},
                                "learning rate of the step sizes' log-multipliers (default 0.01)"),
                  number_option("granularity", &ZeroQatOptions::granularity, {0, 2},
                                "step-size multipliers: 0 one per group, 1 one per output row, 2 one per tensor "
                                "(default 0)"),
                  bool_option("train_weights", &ZeroQatOptions::train_weights,
                              "train latent weights too, re-quantized every forward, rather than freeze the start's "
                              "codes (default false)"),
                  number_option("eps_weights", &ZeroQatOptions::eps_weights, {0, 1, true},
                                "perturbation of the latent weights, in start step sizes (default 0.1)"),
                  number_option("lr_weights", &ZeroQatOptions::lr_weights, {0, 1, true},
                                "learning rate of the latent weights, in start step sizes (default 1e-3)"),
                  bool_option("cross_entropy", &ZeroQatOptions::cross_entropy,
                              "loss: next-token cross-entropy on the samples rather than KL divergence to the float "
                              "model's logits (default false)"),
                  number_option("seed", &ZeroQatOptions::seed, {}, "seed of the directions and the sample order "
                                "(default 0)")}) {}

  ModelReconstruction reconstruct_model(const ModelReconstructionTarget& t, const StepOptions& options,
                                        ThreadPool& pool) const override {
    ZeroQatResult r = zeroqat(t, typed(options), pool);
    ModelReconstruction out;
    out.weights = std::move(r.weights);
    out.event = layer_training_event(r.trained, r.trained_kept, r.loss_start, r.loss_trained, std::move(r.curve));
    return out;
  }

  // No gradients and no optimizer state. Held beside the models (the pipeline's float teacher and
  // quantized student, counted by the caller): the trained values (one float a group — at most one
  // a weight; with train_weights one a weight more), the frozen codes (a byte a weight), 2q
  // perturbed copies of the linears (at most a byte a weight each, for formats of <= 8 bits), and
  // one sample's logits three times (teacher, student, softmax scratch).
  std::optional<TrainingMemory> training_memory(const model::ModelConfig& config, const StepOptions& options,
                                                const TrainingShape& shape) const override {
    const ZeroQatOptions& o = typed(options);
    const auto c = config;
    const auto linear = static_cast<uint64_t>(
        c.num_layers * (c.hidden_size * (c.q_dim() + 2 * c.kv_dim()) + c.q_dim() * c.hidden_size +
                        3 * c.hidden_size * c.intermediate_size));
    TrainingMemory m;
    m.training.weights = o.train_weights ? 4 * linear : linear;
    m.training.activations = 3 * sizeof(float) * static_cast<uint64_t>(shape.seq_len * c.vocab_size);
    m.training.total = m.training.weights + m.training.activations;
    m.extra.emplace_back("perturbed linears", 2 * static_cast<uint64_t>(o.directions) * linear);
    return m;
  }

  std::string event_text(const MethodEvent& e) const override {
    const char* what = e.value > 0    ? "trained model written"
                       : e.value == 0 ? "not lower than the start: kept the quantized model"
                                      : "nothing to train (no int-format linear): kept the quantized model";
    return fmt::format("zeroqat: loss on the calibration samples {:.5g} -> {:.5g}, {}, {} steps, {:.2f} s{}",
                       e.error_before, e.error_after, what, e.curve.size(), e.seconds, curve_text(e.curve));
  }
};

}  // namespace

MethodList make_zeroqat_methods() {
  MethodList l;
  l.push_back(std::make_unique<ZeroQat>());
  return l;
}

}  // namespace calq::quant
