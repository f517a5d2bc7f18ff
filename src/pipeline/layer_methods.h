// The per-layer part of a quantization recipe (quant/recipe.h): what `calq quantize --method`
// does to one decoder layer inside the layer-sequential pipeline (sequential.h), given the
// statistics of the layer's input sites. apply() walks the recipe's steps and calls each step's
// method (quant/method.h) through the hook of its stage:
//  1. scale migration (smoothquant, awq), per input group (q/k/v; gate/up; down; and o when every
//     query head has its own key/value head): the method's scales are folded into the producer
//     (model/fold.h), so the float layer computes the same function, and the group's statistics
//     are divided by them (absmax, mean|x|, E[x²], Hessian) so that later steps see the inputs the
//     layer will get;
//  2. the weight quantizer (rtn, gptq), on every linear with a format in the plan, with the
//     observer's ranges and E[x²] importance;
//  3. the layer reconstruction (qat-block), when the recipe has one: given the layer before the
//     weight quantizer (after migration), the quantizer's result and the layer's streams (inputs
//     from the quantized stream, targets from the full-precision stream: the caller runs the
//     pipeline with SequentialOptions::float_stream, see needs_float_stream), it replaces the
//     trained linears;
//  3b. the error compensation (lora-compensate), when the recipe has one: given every linear's
//     weight before the weight quantizer, as written after it (and after any reconstruction) and
//     its input's statistics, the method's adapters are stored on the layer
//     (LayerWeights::adapters), so the layer's outputs — the next layer's calibration inputs —
//     include them; n_adapters() counts them (the caller refuses a run where it stays 0: the
//     roles matched no quantized linear);
//  (the model reconstruction, qat-e2e, runs once after the layer pass: model_quantize.cpp)
//  4. the activation scheme (int8-token, int8-tensor, llm-int8), when the recipe has one, on every
//     linear input.
// Model transforms (rotate) ran on the whole model before calibration (model_quantize.cpp).
// Steps that need a statistic the run did not collect are an Error (the caller collects what
// required_stats() says).
//
// Determinism: every step is bitwise reproducible for any thread count.
#pragma once

#include <cstdint>
#include <map>
#include <tuple>
#include <string>
#include <utility>
#include <vector>

#include "calib/collectors.h"
#include "calib/observer.h"
#include "core/thread_pool.h"
#include "model/linear_weight.h"
#include "model/model.h"
#include "pipeline/sequential.h"
#include "quant/method.h"
#include "quant/recipe.h"

namespace calq::pipeline {

struct TensorAssignment;      // model_quantize.h
struct ModelQuantizeOptions;  // model_quantize.h

// The activation scheme given apart from the method chain (ModelQuantizeOptions::act): the
// model's enum (model::ActivationQuant::Kind), under the name the callers know.
using ActivationScheme = model::ActivationQuant::Kind;
// "none" or an activation scheme method's name ("int8-token", "int8-tensor", "llm-int8": the
// model's names, model::activation_quant_by_name); Error listing them for an unknown name.
ActivationScheme parse_activation_scheme(const std::string& name);

// Whether a recipe step reconstructs layers (and so needs the full-precision stream).
bool needs_float_stream(const quant::Recipe& recipe);

// What a recipe's steps (and the activation scheme `act`, when given apart) need from
// calibration: the union of their methods' needs, with absmax and mean_sq always.
calib::StatSet required_stats(const quant::Recipe& recipe, ActivationScheme act = ActivationScheme::kNone);

using MethodEvent = quant::MethodEvent;

class LayerMethods {
 public:
  // `plan` (plan_model_quantization), `recipe` (its activation scheme included) and `options`
  // must outlive this object.
  LayerMethods(const model::ModelConfig& config, const std::vector<TensorAssignment>& plan,
               const quant::Recipe& recipe, const ModelQuantizeOptions& options, ThreadPool& pool);

  // Transforms and quantizes layer `layer` in place. `streams` (sequential.h) are read by a
  // reconstruction step only: it needs inputs and targets (else a kInvalidArgument Error).
  void apply(int64_t layer, model::LayerWeights& weights, const calib::CalibrationStats& layer_stats,
             const LayerStreams& streams = {});
  // The same, moving the layer's block-site Hessians out of `layer_stats` instead of copying them
  // (its last reader: an 8B layer's are 2 GB).
  void apply_taking_hessians(int64_t layer, model::LayerWeights& weights, calib::CalibrationStats& layer_stats,
                             const LayerStreams& streams);

  const std::vector<MethodEvent>& events() const { return events_; }
  double seconds_quantize() const { return seconds_quantize_; }
  int64_t n_with_importance() const { return n_with_importance_; }
  int64_t n_adapters() const { return n_adapters_; }

 private:
  using Sites = std::map<model::InputSite, quant::InputStats>;
  void apply_sites(int64_t layer, model::LayerWeights& weights, Sites& sites,
                   const calib::CalibrationStats& layer_stats, const LayerStreams& streams);
  const TensorAssignment& assignment(int64_t layer, model::TensorRole role) const;
  void check_streams(const quant::MethodStep& step, int64_t layer, const LayerStreams& streams) const;
  void migrate(const quant::MethodStep& step, int64_t layer, model::LayerWeights& weights, Sites& sites);
  void transform(const quant::MethodStep& step, int64_t layer, model::LayerWeights& weights, Sites& sites,
                 const LayerStreams& streams);
  void quantize_weights(const quant::MethodStep& step, int64_t layer, model::LayerWeights& weights,
                        const Sites& sites);
  // A MoE layer's experts with the weight quantizer `step`, each on its own statistics (calib's
  // expert sites) as ModelQuantizeOptions::expert_policy says; an expert with no routed token, or
  // an under-covered one under kRtnFallback, is rounded to nearest instead.
  void quantize_experts(const quant::MethodStep& step, int64_t layer, model::LayerWeights& weights,
                        const calib::CalibrationStats& layer_stats);
  void reconstruct(const quant::MethodStep& step, int64_t layer, model::LayerWeights& weights,
                   const model::LayerWeights& original, const LayerStreams& streams);
  void compensate(const quant::MethodStep& step, int64_t layer, model::LayerWeights& weights,
                  const model::LayerWeights& original, const Sites& sites);
  void quantize_activations(const quant::MethodStep& step, int64_t layer, model::LayerWeights& weights,
                            const Sites& sites) const;

  const model::ModelConfig& config_;
  std::map<std::pair<int64_t, int>, const TensorAssignment*> by_role_;
  std::map<std::tuple<int64_t, int, int64_t>, const TensorAssignment*> experts_;  // (layer, role, expert)
  quant::Recipe rtn_;  // the fallback weight quantizer of experts
  const quant::Recipe& recipe_;
  const ModelQuantizeOptions& options_;
  ThreadPool& pool_;
  std::vector<MethodEvent> events_;
  // Per-token activation clip ratios a layer transform learned, by (layer, site).
  std::map<std::pair<int64_t, int>, float> learned_clip_;
  double seconds_quantize_ = 0;
  int64_t n_with_importance_ = 0;
  int64_t n_adapters_ = 0;
};

}  // namespace calq::pipeline
