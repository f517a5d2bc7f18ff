// lora-compensate — rank-r float adapters fitted, with no training, to each linear's quantization
// error weighted by its inputs (quant/lora_compensate.h; EoRA, LQ-LoRA), per decoder layer after
// the weight quantizer and any layer reconstruction. The pipeline stores them on the layer
// (LayerWeights::adapters): the runtime adds scale · (x·Aᵀ)·Bᵀ to the linear's output, later layers
// calibrate on outputs that include them, and their bytes count in bits per weight.
//
// Options: rank (default 16), roles (which linears, default all seven), weighting (hessian,
// diagonal or none; default hessian), damp (default 0.01, × the mean diagonal, as gptq's). The
// adapters are stored with alpha = rank (scale 1). No identity setting: every setting adds
// adapters to the quantizer's weights.
//
// Errors: a rank above min(rows, cols) of a targeted linear names the tensor and both numbers;
// roles are checked when the recipe is read (unknown or repeated names); the pipeline refuses a
// run in which the roles matched no quantized linear at all (pipeline/layer_methods.h).
#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <limits>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"
#include "model/architecture.h"
#include "quant/lora_compensate.h"
#include "quant/method_base.h"

namespace calq::quant {
namespace {

using model::TensorRole;

struct LoraCompensateOptions {
  int64_t rank = 16;
  std::string roles = "q,k,v,o,gate,up,down";
  std::string weighting = "hessian";
  double damp = 0.01;
};

// The roles' recipe names, in kLayerLinearRoles order.
constexpr std::array<std::pair<std::string_view, TensorRole>, 7> kRoleNames = {{{"q", TensorRole::kAttnQ},
                                                                               {"k", TensorRole::kAttnK},
                                                                               {"v", TensorRole::kAttnV},
                                                                               {"o", TensorRole::kAttnOut},
                                                                               {"gate", TensorRole::kMlpGate},
                                                                               {"up", TensorRole::kMlpUp},
                                                                               {"down", TensorRole::kMlpDown}}};

std::vector<std::string> role_choices() {
  std::vector<std::string> v;
  for (const auto& [name, role] : kRoleNames) v.emplace_back(name);
  return v;
}

// Whether `role` is in the (validated) comma list.
bool selected(std::string_view list, TensorRole role) {
  std::string_view name;
  for (const auto& [n, r] : kRoleNames)
    if (r == role) name = n;
  size_t pos = 0;
  while (pos <= list.size()) {
    const size_t comma = std::min(list.find(',', pos), list.size());
    if (list.substr(pos, comma - pos) == name) return true;
    pos = comma + 1;
  }
  return false;
}

ErrorWeighting weighting_of(std::string_view name) {
  if (name == "diagonal") return ErrorWeighting::kDiagonal;
  if (name == "none") return ErrorWeighting::kNone;
  return ErrorWeighting::kHessian;
}

class LoraCompensate final : public MethodOf<LoraCompensateOptions> {
 public:
  LoraCompensate()
      : MethodOf({.name = "lora-compensate",
                  .stage = MethodStage::kErrorCompensation,
                  .summary = "low-rank error compensation (EoRA): rank-r float adapters from the truncated SVD of "
                             "each linear's input-weighted quantization error, no training",
                  .needs = calib::StatSet().with(calib::StatKind::kMeanSq).with(calib::StatKind::kHessian),
                  .identity = std::nullopt},
                 {number_option("rank", &LoraCompensateOptions::rank, {1, 65536},
                                "adapter rank r: 32·r·(in + out) bits per linear (default 16)"),
                  string_option("roles", &LoraCompensateOptions::roles, role_choices(), true,
                                "the linears that get adapters (default q,k,v,o,gate,up,down)"),
                  string_option("weighting", &LoraCompensateOptions::weighting, {"hessian", "diagonal", "none"}, false,
                                "error metric: the inputs' second moment XᵀX/n, its diagonal, or none (plain SVD; "
                                "default hessian)"),
                  number_option("damp", &LoraCompensateOptions::damp, {0, kInf},
                                "dampening added to the second moment's diagonal, times its mean (default 0.01)")}) {}

  LayerCompensation compensate(const LayerCompensationTarget& t, const StepOptions& options,
                               ThreadPool& pool) const override {
    const LoraCompensateOptions& o = typed(options);
    const ErrorWeighting weighting = weighting_of(o.weighting);
    // The linears to compensate, checked before any work.
    std::vector<const CompensationLinear*> todo;
    for (const CompensationLinear& l : t.linears) {
      if (l.quantized == nullptr || !selected(o.roles, l.role)) continue;
      if (o.rank > std::min(l.rows, l.cols)) {
        fail(ErrorKind::kInvalidArgument,
             "lora-compensate: option 'rank' {} is larger than tensor {} (layer {}) allows: it is {} × {}, so its "
             "rank is at most {}",
             o.rank, l.name, t.layer, l.rows, l.cols, std::min(l.rows, l.cols));
      }
      todo.push_back(&l);
    }
    // One weighting factor per distinct input (q, k and v read the same statistics).
    std::map<const InputStats*, std::vector<double>> factors;
    for (const CompensationLinear* l : todo) {
      if (factors.count(l->stats) != 0) continue;
      if (l->stats == nullptr) fail(ErrorKind::kInvalidArgument, "lora-compensate: no statistics for {}", l->name);
      factors.emplace(l->stats, weighting_factor(*l->stats, l->cols, weighting, o.damp,
                                                 fmt::format("lora-compensate: tensor {} (layer {})", l->name, t.layer)));
    }
    // The linears in parallel, each on one thread in double: the same bytes for any pool.
    std::vector<ErrorCompensation> results(todo.size());
    pool.parallel_for(0, todo.size(), Grain{.min_items = 1}, [&](size_t i0, size_t i1) {
      for (size_t i = i0; i < i1; ++i) {
        const CompensationLinear& l = *todo[i];
        std::vector<float> dequantized(static_cast<size_t>(l.rows * l.cols));
        if (l.quantized->is_quantized()) {
          l.quantized->quantized().dequantize_rows(0, l.rows, dequantized.data());
        } else {
          std::copy_n(l.quantized->dense().f32(), dequantized.size(), dequantized.data());
        }
        results[i] = compensate_error(l.original, dequantized.data(), l.rows, l.cols, factors.at(l.stats), o.rank,
                                      fmt::format("lora-compensate: tensor {} (layer {})", l.name, t.layer));
      }
    });
    LayerCompensation out;
    for (size_t i = 0; i < todo.size(); ++i) {
      const CompensationLinear& l = *todo[i];
      ErrorCompensation& r = results[i];
      Tensor a = Tensor::zeros(DType::kF32, {o.rank, l.cols});
      Tensor b = Tensor::zeros(DType::kF32, {l.rows, o.rank});
      std::copy(r.a.begin(), r.a.end(), a.mutable_f32());
      std::copy(r.b.begin(), r.b.end(), b.mutable_f32());
      out.adapters.push_back(
          {.role = l.role,
           .adapter = model::LoraAdapter::make(std::move(a), std::move(b), static_cast<double>(o.rank), l.cols, l.rows,
                                               fmt::format("lora-compensate: tensor {} (layer {})", l.name, t.layer)),
           .event = {.value = static_cast<double>(o.rank), .error_before = r.error_before,
                     .error_after = r.error_after}});
    }
    return out;
  }

  std::string event_text(const MethodEvent& e) const override {
    const double ratio = e.error_before > 0 ? e.error_after / e.error_before : 0.0;
    return fmt::format("lora-compensate {}: rank {:.0f}, weighted error {:.4g} -> {:.4g} ({:.3f}×), {:.2f} s", e.target,
                       e.value, e.error_before, e.error_after, ratio, e.seconds);
  }

 private:
  static constexpr double kInf = std::numeric_limits<double>::infinity();
};

}  // namespace

MethodList make_lora_compensate_methods() {
  MethodList l;
  l.push_back(std::make_unique<LoraCompensate>());
  return l;
}

}  // namespace calq::quant
