#include "pipeline/layer_methods.h"

#include <fmt/format.h>

#include <algorithm>
#include <cassert>
#include <chrono>
#include <cmath>

#include "core/stopwatch.h"
#include "core/error.h"
#include "formats/grid.h"
#include "formats/qtensor.h"
#include "model/architecture.h"
#include "model/fold.h"
#include "pipeline/model_quantize.h"
#include "quant/awq.h"
#include "quant/gptq.h"
#include "quant/smoothquant.h"

namespace calq::pipeline {
namespace {

using model::TensorRole;

// The statistics of one input site as later steps need them; divide_inputs() turns them into the
// statistics of x / s after a scale fold.
struct SiteWork {
  int64_t rows = 0;
  int64_t cols = 0;
  std::vector<float> absmax, mean_abs, mean_sq;  // empty when not collected
  std::vector<double> hessian;

  explicit SiteWork(const calib::SiteStats* s) {
    if (s == nullptr) return;
    rows = s->rows();
    cols = s->cols();
    const calib::StatSet k = s->kinds();
    if (k.contains(calib::StatKind::kAbsMax)) absmax.assign(s->absmax().begin(), s->absmax().end());
    if (k.contains(calib::StatKind::kMeanAbs)) mean_abs = s->mean_abs();
    if (k.contains(calib::StatKind::kMeanSq)) mean_sq = s->mean_sq();
    if (k.contains(calib::StatKind::kHessian)) hessian.assign(s->hessian().begin(), s->hessian().end());
  }

  void divide_inputs(std::span<const float> s) {
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
};

// The input groups, by their first consumer, and the site each reads.
struct Group {
  TensorRole first;
  calib::InputSite site;
};
constexpr Group kGroups[] = {
    {TensorRole::kAttnQ, calib::InputSite::kAttnIn},
    {TensorRole::kAttnOut, calib::InputSite::kAttnOut},
    {TensorRole::kMlpGate, calib::InputSite::kMlpIn},
    {TensorRole::kMlpDown, calib::InputSite::kMlpDown},
};
// Scale migration folds o's scales into the rows of v and down's into the rows of up, which are
// consumers of the q and gate groups: those two are searched after, on the weights as they are
// then (the other order would rescale their clipped weights row by row after their search).
constexpr Group kMigrationOrder[] = {kGroups[1], kGroups[0], kGroups[3], kGroups[2]};

}  // namespace

ActivationScheme parse_activation_scheme(const std::string& name) {
  for (const auto s : {ActivationScheme::kNone, ActivationScheme::kInt8PerToken, ActivationScheme::kInt8PerTensor,
                       ActivationScheme::kLlmInt8}) {
    if (activation_scheme_name(s) == name) return s;
  }
  fail(ErrorKind::kInvalidArgument, "--act-quant '{}': expected none, int8-token, int8-tensor or llm-int8", name);
}

std::string_view activation_scheme_name(ActivationScheme scheme) {
  switch (scheme) {
    case ActivationScheme::kNone: return "none";
    case ActivationScheme::kInt8PerToken: return "int8-token";
    case ActivationScheme::kInt8PerTensor: return "int8-tensor";
    case ActivationScheme::kLlmInt8: return "llm-int8";
  }
  return "?";
}

calib::StatSet required_stats(const quant::Recipe& recipe, ActivationScheme /*act*/) {
  calib::StatSet s = calib::StatSet().with(calib::StatKind::kAbsMax).with(calib::StatKind::kMeanSq);
  if (recipe.has("awq")) s = s.with(calib::StatKind::kMeanAbs);
  if (recipe.has("awq") || recipe.has("gptq")) s = s.with(calib::StatKind::kHessian);
  return s;
}

LayerMethods::LayerMethods(const model::ModelConfig& config, const std::vector<TensorAssignment>& plan,
                           const quant::Recipe& recipe, const ModelQuantizeOptions& options, ActivationScheme act,
                           float llm_int8_threshold, ThreadPool& pool)
    : config_(config), recipe_(recipe), options_(options), act_(act), llm_int8_threshold_(llm_int8_threshold),
      pool_(pool) {
  for (const auto& a : plan) by_role_[{a.layer, static_cast<int>(a.role)}] = &a;
  for (const auto& step : recipe_.steps) {
    if (step.method == "smoothquant") quant::check_step_keys(step, recipe_, {"alpha"});
    if (step.method == "awq") quant::check_step_keys(step, recipe_, {"grid", "clip"});
    if (step.method == "gptq") quant::check_step_keys(step, recipe_, {"damp", "block", "act_order"});
    if (step.method == "rtn") quant::check_step_keys(step, recipe_, {});
  }
}

void LayerMethods::apply(int64_t l, model::LayerWeights& w, const calib::CalibrationStats& layer_stats) {
  const RangeChooser* range = options_.observer != nullptr ? &options_.observer->weight_range() : nullptr;
  const auto assignment = [&](TensorRole role) { return by_role_.at({l, static_cast<int>(role)}); };

  // Dense float32 weights for the layer (the model may hold bf16 views of the file).
  for (const auto& g : kGroups)
    for (const TensorRole role : calib::site_roles(g.site)) w.linear(role) = w.linear(role).to_dense(pool_);

  std::map<calib::InputSite, SiteWork> sites;
  for (const auto& g : kGroups) sites.emplace(g.site, SiteWork(layer_stats.find(l, g.site)));

  // 1. Scale migration.
  const quant::MethodStep* sq = recipe_.find("smoothquant");
  const quant::MethodStep* awq = recipe_.find("awq");
  if (sq != nullptr || awq != nullptr) {
    for (const auto& g : kMigrationOrder) {
      // o's input is v's output repeated over the query heads sharing it: one scale per kv channel
      // cannot be folded when heads share, so that group is left alone (as AutoAWQ does).
      if (g.first == TensorRole::kAttnOut && config_.num_heads != config_.num_kv_heads) continue;
      const auto roles = calib::site_roles(g.site);
      const TensorAssignment* a0 = assignment(roles[0]);
      if (a0->format == nullptr) continue;  // kept float: nothing to protect
      SiteWork& site = sites.at(g.site);
      std::vector<const Tensor*> consumers;
      for (const TensorRole role : roles) consumers.push_back(&w.linear(role).dense());
      const auto t0 = std::chrono::steady_clock::now();
      MethodEvent ev{.layer = l, .step = sq != nullptr ? "smoothquant" : "awq",
                     .target = std::string(calib::site_name(g.site))};
      if (sq != nullptr) {
        if (site.absmax.empty())
          fail(ErrorKind::kInvalidArgument, "smoothquant needs the absmax statistic (layer {} {})", l, ev.target);
        const double alpha = quant::step_number(*sq, recipe_, "alpha", 0.5);
        if (!(alpha >= 0 && alpha <= 1))
          fail(ErrorKind::kInvalidArgument, "{}: smoothquant alpha {} is outside [0, 1]", recipe_.origin, alpha);
        const std::vector<float> s = quant::smoothquant_scales(consumers, site.absmax, alpha, a0->name);
        model::fold_input_scales(w, config_, l, g.first, s);
        site.divide_inputs(s);
        ev.value = alpha;
      } else {
        if (site.hessian.empty() || site.mean_abs.empty())
          fail(ErrorKind::kInvalidArgument,
               "awq needs the mean_abs and hessian statistics (layer {} {}): calibrate with --calib, or make the "
               "statistics file with calq calibrate --stats absmax,mean_abs,mean_sq,hessian", l, ev.target);
        const bool with_imp = options_.use_importance && !site.mean_sq.empty();
        const quant::AwqResult r = quant::awq_search(
            consumers, site.mean_abs, site.hessian, *a0->format, with_imp ? site.mean_sq.data() : nullptr,
            {.grid = static_cast<int>(quant::step_number(*awq, recipe_, "grid", 20)),
             .clip = quant::step_bool(*awq, recipe_, "clip", true),
             .tensor_name = a0->name,
             .range = range},
            pool_);
        model::fold_input_scales(w, config_, l, g.first, r.scales);
        for (size_t k = 0; k < roles.size(); ++k) w.linear(roles[k]) = r.weights[k];
        site.divide_inputs(r.scales);
        if (!r.importance.empty()) site.mean_sq = r.importance;  // AWQ's own importance / s²
        ev.value = r.alpha;
        ev.error_before = r.error_rtn;
        ev.error_after = r.error_clipped;
      }
      ev.seconds = seconds_since(t0);
      events_.push_back(ev);
    }
  }

  // 2. Weight quantization.
  const quant::MethodStep& wq = recipe_.weight_quantizer();
  for (const auto& g : kGroups) {
    const SiteWork& site = sites.at(g.site);
    for (const TensorRole role : calib::site_roles(g.site)) {
      const TensorAssignment& a = *assignment(role);
      if (a.format == nullptr) continue;
      const auto t0 = std::chrono::steady_clock::now();
      const Tensor& dense = w.linear(role).dense();
      const bool with_imp = options_.use_importance && !site.mean_sq.empty();
      const QuantizeOptions qo{.tensor_name = a.name, .importance = with_imp ? site.mean_sq.data() : nullptr,
                               .range = range};
      if (wq.method == "gptq") {
        if (site.hessian.empty())
          fail(ErrorKind::kInvalidArgument,
               "gptq needs the hessian statistic for {} (layer {} {}): calibrate with --calib, or make the "
               "statistics file with calq calibrate --stats absmax,mean_abs,mean_sq,hessian", a.name, l,
               calib::site_name(g.site));
        if (find_grid_codec(*a.format) == nullptr)
          fail(ErrorKind::kUnsupported, "gptq cannot target format {} of tensor {} (no frozen-scale rounding); use "
               "an int or GGUF block format, or a --rule giving that tensor one", a.format->name(), a.name);
        std::vector<std::byte> bytes(a.format->tensor_bytes(a.rows, a.cols));
        const quant::GptqResult r = quant::gptq_quantize(
            *a.format, dense.f32(), a.rows, a.cols, site.hessian, std::span<std::byte>(bytes), nullptr,
            {.damp = quant::step_number(wq, recipe_, "damp", 0.01),
             .block = static_cast<int64_t>(quant::step_number(wq, recipe_, "block", 128)),
             .act_order = quant::step_bool(wq, recipe_, "act_order", false),
             .tensor_name = a.name,
             .importance = qo.importance,
             .range = range},
            pool_);
        w.linear(role) = QuantizedTensor::copy_of(*a.format, a.rows, a.cols, bytes);
        events_.push_back({.layer = l, .step = "gptq", .target = a.name, .value = r.damp_used,
                           .error_before = 0, .error_after = r.error, .seconds = seconds_since(t0)});
      } else {
        w.linear(role) = QuantizedTensor::quantize(pool_, *a.format, dense.f32(), a.rows, a.cols, qo);
      }
      seconds_quantize_ += seconds_since(t0);
      if (with_imp) ++n_with_importance_;
    }
  }

  // 3. Activation quantization.
  if (act_ != ActivationScheme::kNone) {
    for (const auto& g : kGroups) {
      const SiteWork& site = sites.at(g.site);
      for (const TensorRole role : calib::site_roles(g.site)) {
        model::ActivationQuant spec;
        switch (act_) {
          case ActivationScheme::kInt8PerToken: spec.kind = model::ActivationQuant::Kind::kInt8PerToken; break;
          case ActivationScheme::kInt8PerTensor:
            if (site.absmax.empty())
              fail(ErrorKind::kInvalidArgument, "int8-tensor activations need the absmax statistic (layer {})", l);
            spec.kind = model::ActivationQuant::Kind::kInt8PerTensor;
            spec.scale = *std::max_element(site.absmax.begin(), site.absmax.end()) / 127.0f;
            break;
          case ActivationScheme::kLlmInt8:
            spec.kind = model::ActivationQuant::Kind::kLlmInt8;
            spec.threshold = llm_int8_threshold_;
            break;
          case ActivationScheme::kNone: break;
        }
        w.linear(role).set_act_quant(spec);
      }
    }
  }
}

}  // namespace calq::pipeline
