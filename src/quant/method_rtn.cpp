// rtn — round to nearest: each weight encoded by its format (Format::quantize) with the weight
// range observer's ranges and, when statistics are available, the input's E[x²] as importance.
// The reference the other weight-changing methods' identity settings are checked against.
#include "formats/qtensor.h"
#include "quant/method_base.h"

namespace calq::quant {
namespace {

struct RtnOptions {};  // no options

class Rtn final : public MethodOf<RtnOptions> {
 public:
  Rtn()
      : MethodOf({.name = "rtn",
                  .stage = MethodStage::kWeightQuantizer,
                  .summary = "round to nearest in the format (the observer's ranges, E[x^2] importance)",
                  .needs = calib::StatSet().with(calib::StatKind::kMeanSq),
                  .identity = nlohmann::json::object()},
                 {}) {}

  QuantizedWeight quantize(const WeightTarget& t, const StepOptions& /*options*/, ThreadPool& pool) const override {
    return {.tensor = QuantizedTensor::quantize(pool, *t.format, t.weights, t.rows, t.cols,
                                                {.tensor_name = t.name, .importance = t.importance, .range = t.range})};
  }
};

}  // namespace

MethodList make_rtn_methods() {
  MethodList l;
  l.push_back(std::make_unique<Rtn>());
  return l;
}

}  // namespace calq::quant
