// awq — activation-aware scales and clipping per input group (quant/awq.h), folded into the
// group's producer by the pipeline. Options: AwqOptions' recipe keys grid and clip (defaults in
// awq.h). Identity: grid 1 searches α = 0 only (s = 1 exactly) and clip off keeps the weights, so
// the weight quantizer then sees the original weights and statistics.
#include <fmt/format.h>

#include "core/error.h"
#include "quant/awq.h"
#include "quant/method_base.h"

namespace calq::quant {
namespace {

class Awq final : public MethodOf<AwqOptions> {
 public:
  Awq()
      : MethodOf({.name = "awq",
                  .stage = MethodStage::kScaleMigration,
                  .summary = "AWQ: per-channel scales searched on the input Hessian, then per-group clipping",
                  .needs = calib::StatSet()
                               .with(calib::StatKind::kMeanAbs)
                               .with(calib::StatKind::kMeanSq)
                               .with(calib::StatKind::kHessian),
                  .identity = nlohmann::json{{"grid", 1}, {"clip", false}}},
                 {number_option("grid", &AwqOptions::grid, {1, 1000},
                                "scale exponents searched: alpha = 0, 1/grid, ..., (grid-1)/grid (default 20)"),
                  bool_option("clip", &AwqOptions::clip, "run the clip search after the scales (default true)")}) {}

  Migration migrate(const MigrationGroup& g, const StepOptions& options, ThreadPool& pool) const override {
    const InputStats& site = *g.stats;
    if (site.hessian.empty() || site.mean_abs.empty())
      fail(ErrorKind::kInvalidArgument,
           "awq needs the mean_abs and hessian statistics (layer {} {}): calibrate, or use a statistics file with "
           "absmax,mean_abs,mean_sq,hessian", g.layer, g.group);
    AwqOptions o = typed(options);
    o.tensor_name = g.tensor_name;
    o.range = g.range;
    AwqResult r = awq_search(g.consumers, site.mean_abs, site.hessian, *g.format, g.importance, o, pool);
    return {.scales = std::move(r.scales),
            .weights = std::move(r.weights),
            .importance = std::move(r.importance),  // AWQ's own importance / s²
            .event = {.value = r.alpha, .error_before = r.error_rtn, .error_after = r.error_clipped}};
  }

  std::string event_text(const MethodEvent& e) const override {
    return fmt::format("layer {} awq {}: alpha {:.2f}, output error {:.4g} (rtn) -> {:.4g}, {:.2f} s", e.layer,
                       e.target, e.value, e.error_before, e.error_after, e.seconds);
  }
};

}  // namespace

MethodList make_awq_methods() {
  MethodList l;
  l.push_back(std::make_unique<Awq>());
  return l;
}

}  // namespace calq::quant
