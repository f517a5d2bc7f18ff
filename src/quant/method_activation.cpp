// The activation schemes — int8-token, int4-token, int8-tensor, llm-int8: the model::ActivationQuant spec
// (model/linear_weight.h, whose enum and names they use) set on every linear input of a layer, after
// the weights are quantized. They leave the weights as the weight quantizer wrote them (identity:
// any options). One file for the family: they differ only in the spec they build.
#include <algorithm>

#include "core/error.h"
#include "quant/method_base.h"

namespace calq::quant {
namespace {

using Kind = model::ActivationQuant::Kind;
constexpr double kInf = std::numeric_limits<double>::infinity();

struct NoOptions {};
struct PerTokenOptions {
  double clip = 1.0;  // the clipping ratio of every row's absmax (model::ActivationQuant::clip)
};
struct LlmInt8Options {
  double threshold = model::ActivationQuant{}.threshold;  // |x| above it marks an outlier column (6)
};

MethodTraits scheme_traits(Kind kind, std::string summary, calib::StatSet needs) {
  return {.name = std::string(model::activation_quant_name(kind)),
          .stage = MethodStage::kActivation,
          .summary = std::move(summary),
          .needs = needs,
          .identity = nlohmann::json::object()};
}

// int8-token and int4-token: symmetric codes, a dynamic scale per token, an optional clip.
class PerToken final : public MethodOf<PerTokenOptions> {
 public:
  PerToken(Kind kind, std::string summary)
      : MethodOf(scheme_traits(kind, std::move(summary), {}),
                 {number_option("clip", &PerTokenOptions::clip, {.min = 0, .max = 1, .min_exclusive = true},
                                "scale = clip × the token's absmax / qmax; values beyond saturate (default 1)")}),
        kind_(kind) {}
  // The clip: the step's option when given, else one a layer transform learned, else 1.
  model::ActivationQuant activation(const ActivationSite& site, const StepOptions& options) const override {
    const float clip = options.given(0) || site.learned_clip <= 0 ? static_cast<float>(typed(options).clip)
                                                                   : site.learned_clip;
    return {.kind = kind_, .clip = clip};
  }

 private:
  Kind kind_;
};

class Int8Tensor final : public MethodOf<NoOptions> {
 public:
  Int8Tensor()
      : MethodOf(scheme_traits(Kind::kInt8PerTensor,
                               "int8 activations, static scale per input = absmax / 127 from calibration",
                               calib::StatSet().with(calib::StatKind::kAbsMax)),
                 {}) {}
  model::ActivationQuant activation(const ActivationSite& site, const StepOptions& /*options*/) const override {
    const std::vector<float>& absmax = site.stats->absmax;
    if (absmax.empty())
      fail(ErrorKind::kInvalidArgument, "int8-tensor activations need the absmax statistic (layer {})", site.layer);
    return {.kind = Kind::kInt8PerTensor, .scale = *std::max_element(absmax.begin(), absmax.end()) / 127.0f};
  }
};

class LlmInt8 final : public MethodOf<LlmInt8Options> {
 public:
  LlmInt8()
      : MethodOf(scheme_traits(Kind::kLlmInt8, "LLM.int8(): int8 per token, outlier columns kept in float", {}),
                 {number_option("threshold", &LlmInt8Options::threshold, {.min = 0, .max = kInf, .min_exclusive = true},
                                "|x| above it marks an outlier column (default 6)")}) {}
  model::ActivationQuant activation(const ActivationSite& /*site*/, const StepOptions& options) const override {
    return {.kind = Kind::kLlmInt8, .threshold = static_cast<float>(typed(options).threshold)};
  }
};

}  // namespace

MethodList make_activation_methods() {
  MethodList l;
  l.push_back(std::make_unique<PerToken>(Kind::kInt8PerToken, "int8 activations, dynamic scale per token (W8A8)"));
  l.push_back(std::make_unique<PerToken>(Kind::kInt4PerToken, "int4 activations, dynamic scale per token (W4A4)"));
  l.push_back(std::make_unique<Int8Tensor>());
  l.push_back(std::make_unique<LlmInt8>());
  return l;
}

}  // namespace calq::quant
