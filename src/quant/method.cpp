// The non-template parts of method.h / method_base.h: option checking, the statistics a layer's
// steps share, and the default hooks.
#include "quant/method.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cassert>
#include <cmath>
#include <string>
#include <vector>

#include "core/error.h"
#include "quant/method_base.h"

namespace calq::quant {

std::string_view stage_name(MethodStage stage) {
  switch (stage) {
    case MethodStage::kModelTransform: return "model transform";
    case MethodStage::kScaleMigration: return "scale migration";
    case MethodStage::kWeightQuantizer: return "weight quantizer";
    case MethodStage::kLayerReconstruction: return "layer reconstruction";
    case MethodStage::kModelReconstruction: return "model reconstruction";
    case MethodStage::kActivation: return "activation scheme";
    case MethodStage::kLayerTransform: return "layer transform";
    case MethodStage::kErrorCompensation: return "error compensation";
  }
  return "?";
}

std::string OptionSpec::expected() const {
  if (type == OptionType::kBool) return "true or false";
  if (type == OptionType::kString) {
    return fmt::format("{} {}", list ? "a comma-separated list of distinct values of" : "one of",
                       fmt::join(choices, ", "));
  }
  std::string s = type == OptionType::kInteger ? "an integer" : "a number";
  // Integer keys bounded only by their type (seeds) read as unbounded.
  const bool has_min = std::isfinite(min) && min > -9e18;
  const bool has_max = std::isfinite(max) && max < 9e18;
  if (has_min && has_max) return s + fmt::format(" in {}{}, {}]", min_exclusive ? "(" : "[", min, max);
  if (has_min) return s + fmt::format(" {} {}", min_exclusive ? ">" : ">=", min);
  if (has_max) return s + fmt::format(" <= {}", max);
  return s;
}

void StepOptions::check_type([[maybe_unused]] const std::type_info& type) const {
  assert(type_ != nullptr && *type_ == type && "StepOptions read as another method's options");
}

InputStats::InputStats(const calib::SiteStats* s) {
  if (s == nullptr) return;
  rows = s->rows();
  cols = s->cols();
  const calib::StatSet k = s->kinds();
  if (k.contains(calib::StatKind::kAbsMax)) absmax.assign(s->absmax().begin(), s->absmax().end());
  if (k.contains(calib::StatKind::kMeanAbs)) mean_abs = s->mean_abs();
  if (k.contains(calib::StatKind::kMeanSq)) mean_sq = s->mean_sq();
  if (k.contains(calib::StatKind::kHessian)) hessian.assign(s->hessian().begin(), s->hessian().end());
}

void InputStats::divide_inputs(std::span<const float> s) {
  assert(static_cast<int64_t>(s.size()) == cols);
  for (int64_t j = 0; j < cols; ++j) {
    if (!absmax.empty()) absmax[j] /= s[j];
    if (!mean_abs.empty()) mean_abs[j] /= s[j];
    if (!mean_sq.empty()) mean_sq[j] /= s[j] * s[j];
  }
  if (!hessian.empty()) {
    for (int64_t i = 0; i < cols; ++i)
      for (int64_t j = 0; j < cols; ++j)
        hessian[i * cols + j] /= static_cast<double>(s[i]) * static_cast<double>(s[j]);
  }
}

std::string Method::event_text(const MethodEvent& e) const {
  return fmt::format("{} {}: {:.2f} s", e.step, e.target, e.seconds);
}

std::optional<TrainingMemory> Method::training_memory(const model::ModelConfig&, const StepOptions&,
                                                     const TrainingShape&) const {
  return std::nullopt;
}

uint64_t TrainingMemory::total() const {
  uint64_t t = training.total;
  for (const auto& [what, bytes] : extra) t += bytes;
  return t;
}

namespace {

[[noreturn]] void no_hook(const Method& m, std::string_view hook) {
  assert(false && "a method's hook called outside its stage");
  fail(ErrorKind::kUnsupported, "method {} ({}) has no {} hook", m.name(), stage_name(m.stage()), hook);
}

}  // namespace

void Method::transform_model(model::Model&, const StepOptions&, ThreadPool&) const { no_hook(*this, "model"); }
Migration Method::migrate(const MigrationGroup&, const StepOptions&, ThreadPool&) const {
  no_hook(*this, "migration");
}
QuantizedWeight Method::quantize(const WeightTarget&, const StepOptions&, ThreadPool&) const {
  no_hook(*this, "weight");
}
Reconstruction Method::reconstruct(const LayerReconstructionTarget&, const StepOptions&, ThreadPool&) const {
  no_hook(*this, "reconstruction");
}

LayerTransform Method::transform_layer(const LayerTransformTarget&, const StepOptions&, ThreadPool&) const {
  no_hook(*this, "layer transform");
}

std::string curve_text(std::span<const double> curve) {
  if (curve.empty()) return "";
  std::string s = "; loss curve";
  const size_t n = curve.size(), shown = std::min<size_t>(n, 12);
  for (size_t k = 0; k < shown; ++k) {
    const size_t i = shown == 1 ? 0 : k * (n - 1) / (shown - 1);
    s += fmt::format(" {:.4g}", curve[i]);
  }
  return s;
}

EventValues layer_training_event(bool trained, bool kept, double loss_start, double loss_trained,
                                 std::vector<double> curve) {
  return {.value = !trained ? -1.0 : kept ? 1.0 : 0.0, .error_before = loss_start, .error_after = loss_trained,
          .curve = std::move(curve)};
}

std::string layer_training_event_text(std::string_view method, std::string_view written, const MethodEvent& e,
                                      std::string_view start) {
  const std::string what = e.value > 0    ? std::string(written)
                           : e.value == 0 ? fmt::format("not lower than the start: kept {}", start)
                                          : fmt::format("nothing to train: kept {}", start);
  return fmt::format("{} layer {}: output mse {:.4g} -> {:.4g}, {}, {:.2f} s{}", method, e.layer, e.error_before,
                     e.error_after, what, e.seconds, curve_text(e.curve));
}

TrainingMemory layer_training_memory(const model::ModelConfig& config, int64_t batch, int64_t optimizer_values,
                                     const TrainingShape& shape) {
  TrainingMemory m;
  m.training = grad::estimate_training_memory(
      config, {.scope = grad::MemoryEstimateOptions::Scope::kOneLayer, .seq_len = shape.seq_len,
               .batch = std::min(batch, std::max<int64_t>(shape.samples, 1)),
               .optimizer_values_per_parameter = optimizer_values, .teacher_logits = false, .threads = shape.threads});
  m.extra.emplace_back("calibration streams",
                       2 * sizeof(float) * static_cast<uint64_t>(shape.samples * shape.seq_len * config.hidden_size));
  return m;
}

LayerCompensation Method::compensate(const LayerCompensationTarget&, const StepOptions&, ThreadPool&) const {
  no_hook(*this, "error compensation");
}
ModelReconstruction Method::reconstruct_model(const ModelReconstructionTarget&, const StepOptions&, ThreadPool&) const {
  no_hook(*this, "model reconstruction");
}
model::ActivationQuant Method::activation(const ActivationSite&, const StepOptions&) const {
  no_hook(*this, "activation");
}

namespace detail {

void check_options_object(const Method& method, const nlohmann::json& object, std::string_view origin) {
  if (!object.is_object())
    fail(ErrorKind::kInvalidArgument, "{}: options of step '{}' must be an object", origin, method.name());
}

size_t option_index(const Method& method, std::string_view key, std::string_view origin) {
  const auto specs = method.options();
  std::string known;
  for (size_t i = 0; i < specs.size(); ++i) {
    if (specs[i].key == key) return i;
    known += (known.empty() ? "" : ", ") + specs[i].key;
  }
  fail(ErrorKind::kInvalidArgument, "{}: method {} has no option '{}' ({})", origin, method.name(), key,
       known.empty() ? "it has no options" : "options: " + known);
}

nlohmann::json checked_option_value(const Method& method, const OptionSpec& spec, const nlohmann::json& value,
                                    std::string_view origin) {
  const auto bad = [&]() {
    fail(ErrorKind::kInvalidArgument, "{}: method {} option '{}' must be {}, got {}", origin, method.name(), spec.key,
         spec.expected(), value.dump());
  };
  switch (spec.type) {
    case OptionType::kBool:
      if (!value.is_boolean()) bad();
      return value;
    case OptionType::kString: {
      if (!value.is_string()) bad();
      const std::string& v = value.get_ref<const std::string&>();
      const auto known = [&](std::string_view item) {
        return std::find(spec.choices.begin(), spec.choices.end(), item) != spec.choices.end();
      };
      if (!spec.list) {
        if (!known(v)) bad();
        return value;
      }
      std::vector<std::string_view> seen;
      size_t pos = 0;
      while (pos <= v.size()) {
        const size_t comma = std::min(v.find(',', pos), v.size());
        const std::string_view item = std::string_view(v).substr(pos, comma - pos);
        if (!known(item) || std::find(seen.begin(), seen.end(), item) != seen.end()) bad();
        seen.push_back(item);
        pos = comma + 1;
      }
      return value;
    }
    case OptionType::kNumber: {
      if (!value.is_number()) bad();
      const double v = value.get<double>();
      if (!std::isfinite(v) || v < spec.min || v > spec.max || (spec.min_exclusive && v == spec.min)) bad();
      return v;
    }
    case OptionType::kInteger: {
      if (!value.is_number()) bad();
      nlohmann::json j = value;
      if (value.is_number_float()) {  // 20.0 for 20; 20.5 is not an integer
        const double v = value.get<double>();
        if (!std::isfinite(v) || v != std::floor(v) || v < -0x1p63 || v >= 0x1p64) bad();
        j = v < 0 ? nlohmann::json(static_cast<int64_t>(v)) : nlohmann::json(static_cast<uint64_t>(v));
      }
      // long double holds every int64 and uint64 exactly.
      const long double v = j.is_number_unsigned() ? static_cast<long double>(j.get<uint64_t>())
                                                   : static_cast<long double>(j.get<int64_t>());
      if (v < spec.min || v > spec.max || (spec.min_exclusive && v == spec.min)) bad();
      return j;
    }
  }
  return value;
}

}  // namespace detail
}  // namespace calq::quant
