// flatquant — learned per-layer input transforms (quant/flatquant.h), before the weight quantizer:
// `flatquant+rtn`, `flatquant+gptq` (GPTQ on the transformed weights, with the transformed inputs'
// Hessians), usually with an activation scheme (`+int4-token` for W4A4). Options: FlatQuantOptions'
// recipe keys (defaults in flatquant.h: the paper's 15 epochs, batch 4, lr 5e-3, clips at 10×).
// No identity setting: the transforms change every weight.
#include <fmt/format.h>

#include <limits>
#include <utility>

#include "quant/flatquant.h"
#include "quant/method_base.h"

namespace calq::quant {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

class FlatQuant final : public MethodOf<FlatQuantOptions> {
 public:
  FlatQuant()
      : MethodOf({.name = "flatquant",
                  .stage = MethodStage::kLayerTransform,
                  .summary = "FlatQuant: per layer, learn Kronecker-factored affine transforms of every linear input, "
                             "smoothing and weight / activation clipping against the float layer's outputs; the "
                             "transforms are applied online at run time (calq's runtime)",
                  .needs = calib::StatSet().with(calib::StatKind::kAbsMax).with(calib::StatKind::kHessian),
                  .identity = std::nullopt},
                 {number_option("epochs", &FlatQuantOptions::epochs, {1, 1000},
                                "passes over the calibration samples per layer (default 15)"),
                  number_option("batch", &FlatQuantOptions::batch, {1, 1 << 20},
                                "calibration samples per training step (default 4)"),
                  number_option("lr", &FlatQuantOptions::lr, {0, 1, true},
                                "AdamW learning rate of the transforms and the smoothing (default 5e-3)"),
                  number_option("clip_lr_scale", &FlatQuantOptions::clip_lr_scale, {0, 1000, true},
                                "the clips' learning rate as a multiple of lr (default 10)"),
                  number_option("weight_decay", &FlatQuantOptions::weight_decay, {0, 1},
                                "AdamW's decoupled weight decay (default 0)"),
                  number_option("smooth_alpha", &FlatQuantOptions::smooth_alpha, {0, 1},
                                "the smoothing's start, SmoothQuant's migration strength (default 0.3)"),
                  bool_option("smooth", &FlatQuantOptions::smooth,
                              "learn a per-channel smoothing where it folds into the producer (default true)"),
                  bool_option("weight_clip", &FlatQuantOptions::weight_clip,
                              "learn per-group weight clipping (default true)"),
                  bool_option("act_clip", &FlatQuantOptions::act_clip,
                              "learn each site's per-token activation clip (default true)"),
                  number_option("n1", &FlatQuantOptions::n1, {0, 1 << 20},
                                "size of the first Kronecker factor; 0: the divisor of the width nearest its square "
                                "root (heads for the attention output)"),
                  number_option("max_condition", &FlatQuantOptions::max_condition, {1, kInf},
                                "largest accepted condition number of a transform factor (default 1e4)"),
                  number_option("seed", &FlatQuantOptions::seed, {},
                                "seed of the orthogonal starts and the sample order (default 0)")}) {}

  LayerTransform transform_layer(const LayerTransformTarget& t, const StepOptions& options,
                                 ThreadPool& pool) const override {
    return flatquant_layer(t, typed(options), pool);
  }

  // AdamW's two moments per trained value; the trained values are few (factors, clips), the
  // layer's activations and the site maps' copies dominate.
  std::optional<TrainingMemory> training_memory(const model::ModelConfig& config, const StepOptions& options,
                                                const TrainingShape& shape) const override {
    return layer_training_memory(config, typed(options).batch, 2, shape);
  }

  std::string event_text(const MethodEvent& e) const override {
    return layer_training_event_text(name(), "trained transforms written", e,
                                     "the start (random rotations, initial smoothing and clips)");
  }
};

}  // namespace

MethodList make_flatquant_methods() {
  MethodList l;
  l.push_back(std::make_unique<FlatQuant>());
  return l;
}

}  // namespace calq::quant
