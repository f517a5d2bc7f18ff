// autoround — learned rounding (AutoRound, arXiv 2309.05516) after the weight quantizer
// (quant/autoround.h), per decoder layer. Options: AutoRoundOptions' recipe keys iters, lr,
// lr_minmax, batch, minmax, start_reach, seed (defaults in autoround.h: AutoRound's 200 steps of
// batch 8 at lr 1/iters, decaying linearly). No identity setting: training moves the rounding.
#include <fmt/format.h>

#include <algorithm>
#include <utility>
#include <vector>

#include "quant/autoround.h"
#include "quant/method_base.h"

namespace calq::quant {
namespace {

class AutoRound final : public MethodOf<AutoRoundOptions> {
 public:
  AutoRound()
      : MethodOf({.name = "autoround",
                  .stage = MethodStage::kLayerReconstruction,
                  .summary = "learned rounding (AutoRound): per layer, SignSGD on each weight's rounding offset and "
                             "each group's range against the float layer's outputs; writes the same format",
                  .needs = calib::StatSet(),
                  .identity = std::nullopt},
                 {number_option("iters", &AutoRoundOptions::iters, {1, 1000000},
                                "SignSGD steps per layer (default 200)"),
                  number_option("lr", &AutoRoundOptions::lr, {0, 1},
                                "learning rate of the rounding offsets, in steps (default 0: 1/iters)"),
                  number_option("lr_minmax", &AutoRoundOptions::lr_minmax, {0, 1},
                                "learning rate of the range factors (default 0: lr's)"),
                  number_option("batch", &AutoRoundOptions::batch, {1, 1 << 20},
                                "calibration samples per step (default 8)"),
                  bool_option("minmax", &AutoRoundOptions::minmax,
                              "int formats: also learn each group's range top and bottom factors (default true)"),
                  number_option("start_reach", &AutoRoundOptions::start_reach, {0, 0.49},
                                "base weights start at most this many steps from the quantizer's code toward "
                                "the original weight (default 0.45)"),
                  number_option("seed", &AutoRoundOptions::seed, {}, "seed of the sample order (default 0)")}) {}

  Reconstruction reconstruct(const LayerReconstructionTarget& t, const StepOptions& options,
                             ThreadPool& pool) const override {
    AutoRoundResult r = autoround(t, typed(options), pool);
    Reconstruction out;
    out.weights = r.weights;
    // value: 1 trained layer written, 0 start kept, −1 nothing to train.
    out.event = {.value = !r.trained ? -1.0 : r.trained_kept ? 1.0 : 0.0, .error_before = r.loss_start,
                 .error_after = r.loss_trained, .curve = std::move(r.curve)};
    return out;
  }

  // One layer at a time: no optimizer state (SignSGD), but the base weights, the best step's copy
  // and the offsets beside the gradients (grad::MemoryEstimateOptions counts 2 values a parameter).
  std::optional<TrainingMemory> training_memory(const model::ModelConfig& config, const StepOptions& options,
                                                const TrainingShape& shape) const override {
    const AutoRoundOptions& o = typed(options);
    TrainingMemory m;
    m.training = grad::estimate_training_memory(
        config, {.scope = grad::MemoryEstimateOptions::Scope::kOneLayer, .seq_len = shape.seq_len,
                 .batch = std::min(o.batch, std::max<int64_t>(shape.samples, 1)),
                 .optimizer_values_per_parameter = 2, .teacher_logits = false, .threads = shape.threads});
    m.extra.emplace_back("calibration streams",
                         2 * sizeof(float) * static_cast<uint64_t>(shape.samples * shape.seq_len * config.hidden_size));
    return m;
  }

  std::string event_text(const MethodEvent& e) const override {
    const char* what = e.value > 0    ? "learned rounding written"
                       : e.value == 0 ? "not lower than the start: kept the weight quantizer's layer"
                                      : "nothing to train: kept the weight quantizer's layer";
    return fmt::format("autoround layer {}: output mse {:.4g} -> {:.4g}, {}, {:.2f} s{}", e.layer, e.error_before,
                       e.error_after, what, e.seconds, curve_text(e.curve));
  }
};

}  // namespace

MethodList make_autoround_methods() {
  MethodList l;
  l.push_back(std::make_unique<AutoRound>());
  return l;
}

}  // namespace calq::quant
