// smoothquant — activation outliers migrated into the weights (quant/smoothquant.h): per input
// group, s = max|x|^α / max|w|^(1−α), folded into the group's producer by the pipeline.
// No identity setting: α = 0 gives s = 1 / max|w| per column, not 1.
#include <fmt/format.h>

#include "core/error.h"
#include "quant/method_base.h"
#include "quant/smoothquant.h"

namespace calq::quant {
namespace {

struct SmoothQuantOptions {
  double alpha = 0.5;  // migration strength in [0, 1]: 0 moves the range into the activations, 1 into the weights
};

class SmoothQuant final : public MethodOf<SmoothQuantOptions> {
 public:
  SmoothQuant()
      : MethodOf({.name = "smoothquant",
                  .stage = MethodStage::kScaleMigration,
                  .summary = "SmoothQuant: activation outliers migrated into the weights by per-channel scales",
                  .needs = calib::StatSet().with(calib::StatKind::kAbsMax),
                  .identity = std::nullopt},
                 {number_option("alpha", &SmoothQuantOptions::alpha, {0, 1},
                                "migration strength: s = max|x|^alpha / max|w|^(1-alpha) (default 0.5)")}) {}

  Migration migrate(const MigrationGroup& g, const StepOptions& options, ThreadPool& /*pool*/) const override {
    if (g.stats->absmax.empty())
      fail(ErrorKind::kInvalidArgument, "smoothquant needs the absmax statistic (layer {} {})", g.layer, g.group);
    const double alpha = typed(options).alpha;
    return {.scales = smoothquant_scales(g.consumers, g.stats->absmax, alpha, g.tensor_name),
            .event = {.value = alpha}};
  }

  std::string event_text(const MethodEvent& e) const override {
    return fmt::format("layer {} smoothquant {}: alpha {:.2f}", e.layer, e.target, e.value);
  }
};

}  // namespace

MethodList make_smoothquant_methods() {
  MethodList l;
  l.push_back(std::make_unique<SmoothQuant>());
  return l;
}

}  // namespace calq::quant
