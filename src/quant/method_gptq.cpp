// gptq — error-compensating rounding on the input Hessian (quant/gptq.h), per linear weight.
// Options: GptqOptions' recipe keys damp, block, act_order (defaults in gptq.h). It has no
// identity setting: no option makes it round to nearest.
#include <fmt/format.h>

#include <limits>
#include <vector>

#include "core/error.h"
#include "formats/grid.h"
#include "formats/qtensor.h"
#include "quant/gptq.h"
#include "quant/method_base.h"

namespace calq::quant {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

class Gptq final : public MethodOf<GptqOptions> {
 public:
  Gptq()
      : MethodOf({.name = "gptq",
                  .stage = MethodStage::kWeightQuantizer,
                  .summary = "GPTQ: rounding column by column, the error spread over later columns by the inverse "
                             "input Hessian",
                  .needs = calib::StatSet().with(calib::StatKind::kMeanSq).with(calib::StatKind::kHessian),
                  .identity = std::nullopt},
                 {number_option("damp", &GptqOptions::damp, {0, kInf},
                                "dampening added to the Hessian's diagonal, times its mean (default 0.01)"),
                  number_option("block", &GptqOptions::block, {1, kInf}, "lazy-batch width in columns (default 128)"),
                  bool_option("act_order", &GptqOptions::act_order,
                              "quantize columns by descending Hessian diagonal (default false)")}) {}

  QuantizedWeight quantize(const WeightTarget& t, const StepOptions& options, ThreadPool& pool) const override {
    if (t.stats->hessian.empty())
      fail(ErrorKind::kInvalidArgument,
           "gptq needs the hessian statistic for {} (layer {} {}): calibrate, or use a statistics file with "
           "absmax,mean_abs,mean_sq,hessian", t.name, t.layer, t.group);
    if (t.format->grid_codec() == nullptr)
      fail(ErrorKind::kUnsupported, "gptq cannot target format {} of tensor {} (no frozen-scale rounding); use an int "
           "or GGUF block format, or a rule giving that tensor one", t.format->name(), t.name);
    GptqOptions o = typed(options);
    o.tensor_name = t.name;
    o.importance = t.importance;
    o.range = t.range;
    std::vector<std::byte> bytes(t.format->tensor_bytes(t.rows, t.cols));
    const GptqResult r = gptq_quantize(*t.format, t.weights, t.rows, t.cols, t.stats->hessian,
                                       std::span<std::byte>(bytes), nullptr, o, pool);
    return {.tensor = QuantizedTensor::copy_of(*t.format, t.rows, t.cols, bytes),
            .event = EventValues{.value = r.damp_used, .error_before = 0, .error_after = r.error}};
  }

  std::string event_text(const MethodEvent& e) const override {
    return fmt::format("gptq {}: damp {:.3g}, output error {:.4g}, {:.2f} s", e.target, e.value, e.error_after,
                       e.seconds);
  }
};

}  // namespace

MethodList make_gptq_methods() {
  MethodList l;
  l.push_back(std::make_unique<Gptq>());
  return l;
}

}  // namespace calq::quant
