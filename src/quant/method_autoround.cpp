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
    return {.weights = std::move(r.weights),
            .event = layer_training_event(r.trained, r.trained_kept, r.loss_start, r.loss_trained, std::move(r.curve))};
  }

  // No optimizer state (SignSGD), but the base weights and the best step's copy beside the offsets
  // and their gradients: counted as 2 values a parameter.
  std::optional<TrainingMemory> training_memory(const model::ModelConfig& config, const StepOptions& options,
                                                const TrainingShape& shape) const override {
    return layer_training_memory(config, typed(options).batch, 2, shape);
  }

  std::string event_text(const MethodEvent& e) const override {
    return layer_training_event_text(name(), "learned rounding written", e);
  }
};

}  // namespace

MethodList make_autoround_methods() {
  MethodList l;
  l.push_back(std::make_unique<AutoRound>());
  return l;
}

}  // namespace calq::quant
