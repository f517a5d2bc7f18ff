// The per-layer part of a quantization recipe (quant/recipe.h): what `calq quantize --method`
// does to one decoder layer inside the layer-sequential pipeline (sequential.h), given the
// statistics of the layer's input sites.
//
// Order, per layer:
//  1. scale migration, per input group (q/k/v; gate/up; down; and o when every query head has its
//     own key/value head): "smoothquant" (s = max|x|^α / max|w|^(1−α)) or "awq" (α searched on the
//     Hessian, then per-group clipping). The scales are folded into the producer (model/fold.h),
//     so the float layer computes the same function, and the group's statistics are divided by
//     them (absmax, mean|x|, E[x²], Hessian) so that later steps see the inputs the layer will get.
//  2. the weight quantizer of every linear with a format in the plan: "rtn" (Format::quantize
//     with the observer's ranges and E[x²] importance) or "gptq" (quant/gptq.h, on the site's
//     Hessian; the format must have a grid codec).
//  3. activation quantization of every linear input (W8A8 / LLM.int8()), when asked: a dynamic
//     per-token int8 spec, a static per-tensor one with scale = absmax / 127 from the (scaled)
//     statistics, or LLM.int8() decomposition.
// Steps that need a statistic the run did not collect are an Error (the caller collects what
// required_stats() says).
//
// Determinism: every step is bitwise reproducible for any thread count.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "calib/collectors.h"
#include "calib/observer.h"
#include "core/thread_pool.h"
#include "model/linear_weight.h"
#include "model/model.h"
#include "quant/recipe.h"

namespace calq::pipeline {

struct TensorAssignment;      // model_quantize.h
struct ModelQuantizeOptions;  // model_quantize.h

enum class ActivationScheme : uint8_t { kNone, kInt8PerToken, kInt8PerTensor, kLlmInt8 };
// "none", "int8-token", "int8-tensor", "llm-int8"; Error listing them for an unknown name.
ActivationScheme parse_activation_scheme(const std::string& name);
std::string_view activation_scheme_name(ActivationScheme scheme);

// What a recipe's steps need from calibration (Hessian for awq and gptq).
calib::StatSet required_stats(const quant::Recipe& recipe, ActivationScheme act);

// One line per (layer, step, group or tensor) for the report and the JSON.
struct MethodEvent {
  int64_t layer = 0;
  std::string step;    // "smoothquant", "awq", "gptq"
  std::string target;  // group ("attn_in") or tensor name
  double value = 0;    // awq: α; smoothquant: α; gptq: dampening used (× mean diagonal)
  double error_before = 0, error_after = 0;  // output error Σ δᵀHδ where measured (awq: rtn → awq)
  double seconds = 0;
};

class LayerMethods {
 public:
  // `plan` (plan_model_quantization) and `recipe` must outlive this object.
  LayerMethods(const model::ModelConfig& config, const std::vector<TensorAssignment>& plan,
               const quant::Recipe& recipe, const ModelQuantizeOptions& options, ActivationScheme act,
               float llm_int8_threshold, ThreadPool& pool);

  // Transforms and quantizes layer `layer` in place.
  void apply(int64_t layer, model::LayerWeights& weights, const calib::CalibrationStats& layer_stats);

  const std::vector<MethodEvent>& events() const { return events_; }
  double seconds_quantize() const { return seconds_quantize_; }
  int64_t n_with_importance() const { return n_with_importance_; }

 private:
  const model::ModelConfig& config_;
  std::map<std::pair<int64_t, int>, const TensorAssignment*> by_role_;
  const quant::Recipe& recipe_;
  const ModelQuantizeOptions& options_;
  ActivationScheme act_;
  float llm_int8_threshold_;
  ThreadPool& pool_;
  std::vector<MethodEvent> events_;
  double seconds_quantize_ = 0;
  int64_t n_with_importance_ = 0;
};

}  // namespace calq::pipeline
