#include "pipeline/layer_methods.h"

#include <fmt/format.h>

#include <cassert>
#include <chrono>
#include <utility>

#include "core/mapped_file.h"
#include "core/stopwatch.h"
#include "core/error.h"
#include "model/architecture.h"
#include "model/block_topology.h"
#include "model/fold.h"
#include "pipeline/model_quantize.h"
#include "quant/flatquant.h"

namespace calq::pipeline {
using model::TensorRole;

ActivationScheme parse_activation_scheme(const std::string& name) {
  if (const auto kind = model::activation_quant_by_name(name)) return *kind;
  fail(ErrorKind::kInvalidArgument, "activation scheme '{}': expected none, {}", name,
       quant::method_names(quant::MethodStage::kActivation));
}


bool needs_float_stream(const quant::Recipe& recipe) {
  for (const auto& step : recipe.steps)
    if (step.stage() == quant::MethodStage::kLayerReconstruction || step.stage() == quant::MethodStage::kLayerTransform)
      return true;
  return false;
}

calib::StatSet required_stats(const quant::Recipe& recipe, ActivationScheme act) {
  calib::StatSet s = calib::StatSet().with(calib::StatKind::kAbsMax).with(calib::StatKind::kMeanSq);
  const auto add = [&](const quant::Method& m) {
    for (const calib::StatKind k : m.traits().needs.kinds()) s = s.with(k);
  };
  for (const auto& step : recipe.steps) add(*step.method);
  if (act != ActivationScheme::kNone) add(quant::method_by_name(model::activation_quant_name(act)));
  return s;
}

LayerMethods::LayerMethods(const model::ModelConfig& config, const std::vector<TensorAssignment>& plan,
                           const quant::Recipe& recipe, const ModelQuantizeOptions& options, ThreadPool& pool)
    : config_(config), rtn_(quant::parse_method_chain("rtn")), recipe_(recipe), options_(options), pool_(pool) {
  for (const auto& a : plan) {
    if (a.expert >= 0) {
      experts_[{a.layer, static_cast<int>(a.role), a.expert}] = &a;
    } else {
      by_role_[{a.layer, static_cast<int>(a.role)}] = &a;
    }
  }
}

const TensorAssignment& LayerMethods::assignment(int64_t layer, TensorRole role) const {
  return *by_role_.at({layer, static_cast<int>(role)});
}

void LayerMethods::apply(int64_t l, model::LayerWeights& w, const calib::CalibrationStats& layer_stats,
                         const LayerStreams& streams) {
  // The layer's input sites, in forward order (model/block_topology.h).
  const model::BlockTopology& block = model::block_topology(config_);
  Sites sites;
  for (const model::SiteWiring& g : block.layer_sites) {
    sites.emplace(g.site, quant::InputStats(layer_stats.find(l, g.site)));
  }
  apply_sites(l, w, sites, layer_stats, streams);
}

void LayerMethods::apply_taking_hessians(int64_t l, model::LayerWeights& w, calib::CalibrationStats& layer_stats,
                                         const LayerStreams& streams) {
  const model::BlockTopology& block = model::block_topology(config_);
  Sites sites;
  for (const model::SiteWiring& g : block.layer_sites) {
    calib::SiteStats* s = layer_stats.find(l, g.site);
    std::vector<double> hessian;
    if (s != nullptr && s->kinds().contains(calib::StatKind::kHessian)) hessian = s->take_hessian();
    quant::InputStats& in = sites.emplace(g.site, quant::InputStats(s)).first->second;
    in.hessian = std::move(hessian);
  }
  apply_sites(l, w, sites, layer_stats, streams);
}

void LayerMethods::apply_sites(int64_t l, model::LayerWeights& w, Sites& sites,
                               const calib::CalibrationStats& layer_stats, const LayerStreams& streams) {
  // Dense float32 weights for the layer (the model may hold bf16 views of the file, whose pages
  // the run is then done with: core/mapped_file.h).
  for (const model::SiteWiring& g : model::block_topology(config_).layer_sites) {
    for (const TensorRole role : g.consumers) {
      model::LinearWeight& lw = w.linear(role);
      const std::span<const std::byte> source = lw.is_quantized() ? lw.quantized().bytes : std::span<const std::byte>();
      lw = lw.to_dense(pool_);
      release_mapped_pages(source);
    }
  }

  // The recipe is in stage order (quant/recipe.h): migration, then the weight quantizer, then
  // the reconstruction, then the activation scheme.
  model::LayerWeights original;  // before the weight quantizer (copies share the dense tensors)
  // Kept only for a step that reads it: otherwise each float32 linear is freed as soon as it is
  // quantized, which is most of the layer's float32 weights by the widest (and last) site's GPTQ.
  bool keep_original = false;
  for (const quant::MethodStep& step : recipe_.steps) {
    keep_original = keep_original || step.stage() == quant::MethodStage::kLayerReconstruction ||
                    step.stage() == quant::MethodStage::kErrorCompensation;
  }
  for (const quant::MethodStep& step : recipe_.steps) {
    switch (step.stage()) {
      case quant::MethodStage::kModelTransform: break;  // ran on the whole model (model_quantize.cpp)
      case quant::MethodStage::kScaleMigration: migrate(step, l, w, sites); break;
      case quant::MethodStage::kLayerTransform: transform(step, l, w, sites, streams); break;
      case quant::MethodStage::kWeightQuantizer:
        if (keep_original) original = w;
        quantize_weights(step, l, w, sites);
        if (!w.experts.empty()) quantize_experts(step, l, w, layer_stats);
        break;
      case quant::MethodStage::kLayerReconstruction: reconstruct(step, l, w, original, streams); break;
      case quant::MethodStage::kErrorCompensation: compensate(step, l, w, original, sites); break;
      case quant::MethodStage::kModelReconstruction: break;  // once after the layer pass (model_quantize.cpp)
      case quant::MethodStage::kActivation: quantize_activations(step, l, w, sites); break;
    }
  }
}

void LayerMethods::migrate(const quant::MethodStep& step, int64_t l, model::LayerWeights& w, Sites& sites) {
  const RangeChooser* range = options_.observer != nullptr ? &options_.observer->weight_range() : nullptr;
  // In the block's migration order (a fold into a producer linear goes before that linear's own
  // search). A group this config cannot fold is left alone: o's input under grouped-query
  // attention, v's output repeated over the query heads sharing it (as AutoAWQ does).
  for (const model::MigrationGroup& mg : model::migration_groups(model::block_topology(config_), config_)) {
    if (!mg.foldable) continue;
    const model::SiteWiring& g = *mg.site;
    const std::span<const TensorRole> roles = g.consumers;
    const TensorAssignment& a0 = assignment(l, roles[0]);
    if (a0.format == nullptr) continue;  // kept float: nothing to protect
    quant::InputStats& site = sites.at(g.site);
    std::vector<const Tensor*> consumers;
    for (const TensorRole role : roles) consumers.push_back(&w.linear(role).dense());
    const auto t0 = std::chrono::steady_clock::now();
    const bool with_imp = options_.use_importance && !site.mean_sq.empty();
    const std::string group(model::site_name(g.site));
    quant::Migration m = step.method->migrate({.layer = l, .group = group, .consumers = consumers,
                                               .format = a0.format, .tensor_name = a0.name, .stats = &site,
                                               .importance = with_imp ? site.mean_sq.data() : nullptr,
                                               .range = range},
                                              step.options, pool_);
    model::fold_input_scales(w, config_, l, g.site, m.scales);
    if (!m.weights.empty()) {
      assert(m.weights.size() == roles.size());
      for (size_t k = 0; k < roles.size(); ++k) w.linear(roles[k]) = std::move(m.weights[k]);
    }
    site.divide_inputs(m.scales);
    if (!m.importance.empty()) site.mean_sq = std::move(m.importance);
    events_.push_back({.layer = l, .step = step.name(), .target = group, .value = m.event.value,
                       .error_before = m.event.error_before, .error_after = m.event.error_after,
                       .seconds = seconds_since(t0)});
  }
}

// The layer's input streams, checked: a training step needs both (true-sequential calibration
// with the full-precision stream).
void LayerMethods::check_streams(const quant::MethodStep& step, int64_t l, const LayerStreams& streams) const {
  const auto rows = streams.samples * streams.seq_len * config_.hidden_size;
  if (streams.inputs.size() != static_cast<size_t>(rows) || streams.targets.size() != static_cast<size_t>(rows) ||
      rows == 0)
    fail(ErrorKind::kInvalidArgument, "{}: {} needs calibration samples run true-sequentially with the "
         "full-precision stream (layer {})", recipe_.origin, step.name(), l);
}

void LayerMethods::transform(const quant::MethodStep& step, int64_t l, model::LayerWeights& w, Sites& sites,
                             const LayerStreams& streams) {
  check_streams(step, l, streams);
  const model::BlockTopology& block = model::block_topology(config_);
  std::vector<quant::TransformSite> targets;
  for (const model::SiteWiring& g : block.layer_sites) {
    targets.push_back({.site = g.site, .consumers = g.consumers,
                       .foldable = model::can_fold(g, config_),
                       .stats = &sites.at(g.site)});
  }
  std::vector<quant::ReconstructionLinear> linears;
  for (const TensorRole role : model::kLayerLinearRoles) {
    const TensorAssignment& a = assignment(l, role);
    linears.push_back({.role = role, .format = a.format, .name = a.name});
  }
  // The activation quantization the layer will run with (its clip learned by the transform); the
  // per-token schemes read no statistics, the others are named by kind only (and refused there).
  model::ActivationQuant act;
  if (const quant::MethodStep* a = recipe_.activation()) {
    act.kind = *model::activation_quant_by_name(a->name());
    if (act.per_token()) act = a->method->activation({.layer = l, .group = "", .stats = nullptr}, a->options);
  }
  const auto t0 = std::chrono::steady_clock::now();
  quant::LayerTransform t = step.method->transform_layer(
      {.layer = l, .config = &config_, .weights = &w, .linears = linears, .sites = targets, .activation = act,
       .samples = streams.samples, .seq_len = streams.seq_len, .inputs = streams.inputs, .targets = streams.targets,
       .progress = &options_.on_training},
      step.options, pool_);
  // The consumers take the transformed weights W·diag(s)·T⁻ᵀ; then each smoothing folds into its
  // producer only (a producer linear — up for mlp_down — is itself a consumer replaced above); the
  // transform is stored for the runtime to apply.
  for (auto& [role, tensor] : t.weights) w.linear(role) = std::move(tensor);
  for (const quant::SiteTransform& st : t.sites) {
    if (st.smoothing.empty()) continue;
    model::fold_into_producer(w, config_, l, st.site, st.smoothing);
    sites.at(st.site).divide_inputs(st.smoothing);
  }
  for (const quant::SiteTransform& st : t.sites) {
    quant::InputStats& site = sites.at(st.site);
    Tensor a = Tensor::zeros(DType::kF32, {st.n1, st.n1});
    Tensor b = Tensor::zeros(DType::kF32, {st.n2, st.n2});
    std::copy(st.a.begin(), st.a.end(), a.mutable_f32());
    std::copy(st.b.begin(), st.b.end(), b.mutable_f32());
    const std::string context = fmt::format("layer {} site {}", l, model::site_name(st.site));
    model::KronTransform kt = model::KronTransform::make(std::move(a), std::move(b), context);
    quant::transform_input_stats(site, kt);
    w.transforms[static_cast<size_t>(st.site)] = std::move(kt);
    if (st.act_clip > 0) learned_clip_[{l, static_cast<int>(st.site)}] = st.act_clip;
  }
  const double seconds = seconds_since(t0);
  seconds_quantize_ += seconds;
  events_.push_back({.layer = l, .step = step.name(), .target = fmt::format("blk.{}", l), .value = t.event.value,
                     .error_before = t.event.error_before, .error_after = t.event.error_after,
                     .seconds = seconds, .curve = std::move(t.event.curve)});
}

void LayerMethods::quantize_weights(const quant::MethodStep& step, int64_t l, model::LayerWeights& w,
                                    const Sites& sites) {
  const RangeChooser* range = options_.observer != nullptr ? &options_.observer->weight_range() : nullptr;
  for (const model::SiteWiring& g : model::block_topology(config_).layer_sites) {
    const quant::InputStats& site = sites.at(g.site);
    for (const TensorRole role : g.consumers) {
      const TensorAssignment& a = assignment(l, role);
      if (a.format == nullptr) continue;
      const auto t0 = std::chrono::steady_clock::now();
      const Tensor& dense = w.linear(role).dense();
      const bool with_imp = options_.use_importance && !site.mean_sq.empty();
      quant::QuantizedWeight q = step.method->quantize(
          {.layer = l, .group = model::site_name(g.site), .format = a.format, .name = a.name, .rows = a.rows,
           .cols = a.cols, .weights = dense.f32(), .stats = &site,
           .importance = with_imp ? site.mean_sq.data() : nullptr, .range = range},
          step.options, pool_);
      w.linear(role) = std::move(q.tensor);
      const double seconds = seconds_since(t0);
      if (q.event) {
        events_.push_back({.layer = l, .step = step.name(), .target = a.name, .value = q.event->value,
                           .error_before = q.event->error_before, .error_after = q.event->error_after,
                           .seconds = seconds});
      }
      seconds_quantize_ += seconds;
      if (with_imp) ++n_with_importance_;
    }
  }
}

void LayerMethods::quantize_experts(const quant::MethodStep& step, int64_t l, model::LayerWeights& w,
                                    const calib::CalibrationStats& layer_stats) {
  using model::InputSite;
  const RangeChooser* range = options_.observer != nullptr ? &options_.observer->weight_range() : nullptr;
  const std::vector<int64_t>* routed = nullptr;
  if (const auto it = layer_stats.routed_tokens.find(l); it != layer_stats.routed_tokens.end()) routed = &it->second;
  // The layer's MLP input over all tokens: the fallback importance of gate/up.
  const quant::InputStats shared(layer_stats.find_expert({l, -1, InputSite::kMoeIn}));
  for (int64_t e = 0; e < static_cast<int64_t>(w.experts.size()); ++e) {
    const int64_t tokens = routed != nullptr && e < static_cast<int64_t>(routed->size()) ? (*routed)[static_cast<size_t>(e)] : 0;
    for (const TensorRole role : {TensorRole::kExpertGate, TensorRole::kExpertUp, TensorRole::kExpertDown}) {
      const TensorAssignment& a = *experts_.at({l, static_cast<int>(role), e});
      if (a.format == nullptr) continue;
      const InputSite site = role == TensorRole::kExpertDown ? InputSite::kExpertDown : InputSite::kExpertIn;
      const quant::InputStats own(layer_stats.find_expert({l, e, site}));
      const int64_t min_tokens = options_.expert_min_tokens > 0 ? options_.expert_min_tokens : a.cols;
      const bool fallback = (options_.expert_policy == ExpertPolicy::kRtnFallback && tokens < min_tokens) ||
                            own.rows == 0;
      const quant::MethodStep& use = fallback ? rtn_.steps.front() : step;
      // Under the fallback gate/up take the layer's shared input's importance; down has no shared
      // input, so it keeps its own (when it saw any token).
      const quant::InputStats& stats = fallback && site == InputSite::kExpertIn ? shared : own;
      const bool with_imp = options_.use_importance && stats.rows > 0 && !stats.mean_sq.empty();
      const auto t0 = std::chrono::steady_clock::now();
      const Tensor dense = w.experts[static_cast<size_t>(e)].linear(role).to_dense(pool_);
      const std::string name = fmt::format("{} (expert {})", a.name, e);
      quant::QuantizedWeight q = use.method->quantize(
          {.layer = l, .group = model::site_name(site), .format = a.format, .name = name, .rows = a.rows,
           .cols = a.cols, .weights = dense.f32(), .stats = &stats,
           .importance = with_imp ? stats.mean_sq.data() : nullptr, .range = range},
          use.options, pool_);
      w.experts[static_cast<size_t>(e)].linear(role) = std::move(q.tensor);
      const double seconds = seconds_since(t0);
      seconds_quantize_ += seconds;
      if (with_imp) ++n_with_importance_;
      // The step is the method that ran (reports look its event text up by name); a fallback says so
      // in the target, with the expert's routed tokens (not when nothing was calibrated at all).
      if (q.event || (fallback && shared.rows > 0)) {
        events_.push_back({.layer = l, .step = std::string(use.name()),
                           .target = fallback ? fmt::format("{} fallback: {} routed tokens", name, tokens) : name,
                           .value = q.event ? q.event->value : 0.0,
                           .error_before = q.event ? q.event->error_before : 0,
                           .error_after = q.event ? q.event->error_after : 0, .seconds = seconds});
      }
    }
  }
}

void LayerMethods::reconstruct(const quant::MethodStep& step, int64_t l, model::LayerWeights& w,
                               const model::LayerWeights& original, const LayerStreams& streams) {
  check_streams(step, l, streams);
  std::vector<quant::ReconstructionLinear> linears;
  for (const TensorRole role : model::kLayerLinearRoles) {
    const TensorAssignment& a = assignment(l, role);
    linears.push_back({.role = role, .format = a.format, .name = a.name});
  }
  const auto t0 = std::chrono::steady_clock::now();
  quant::Reconstruction rec = step.method->reconstruct(
      {.layer = l, .config = &config_, .original = &original, .quantized = &w, .linears = linears,
       .samples = streams.samples, .seq_len = streams.seq_len, .inputs = streams.inputs, .targets = streams.targets,
       .progress = &options_.on_training},
      step.options, pool_);
  for (auto& [role, tensor] : rec.weights) w.linear(role) = std::move(tensor);
  const double seconds = seconds_since(t0);
  seconds_quantize_ += seconds;
  events_.push_back({.layer = l, .step = step.name(), .target = fmt::format("blk.{}", l), .value = rec.event.value,
                     .error_before = rec.event.error_before, .error_after = rec.event.error_after,
                     .seconds = seconds, .curve = std::move(rec.event.curve)});
}

void LayerMethods::compensate(const quant::MethodStep& step, int64_t l, model::LayerWeights& w,
                              const model::LayerWeights& original, const Sites& sites) {
  std::vector<quant::CompensationLinear> linears;
  for (const model::SiteWiring& g : model::block_topology(config_).layer_sites) {
    for (const TensorRole role : g.consumers) {
      const TensorAssignment& a = assignment(l, role);
      linears.push_back({.role = role, .name = a.name, .rows = a.rows, .cols = a.cols,
                         .original = original.linear(role).dense().f32(),
                         .quantized = a.format != nullptr ? &w.linear(role) : nullptr, .stats = &sites.at(g.site)});
    }
  }
  const auto t0 = std::chrono::steady_clock::now();
  quant::LayerCompensation c = step.method->compensate({.layer = l, .linears = linears}, step.options, pool_);
  const double seconds = seconds_since(t0);
  seconds_quantize_ += seconds;
  for (quant::CompensationAdapter& ca : c.adapters) {
    const TensorAssignment& a = assignment(l, ca.role);
    w.adapter_slot(ca.role) = std::move(ca.adapter);
    ++n_adapters_;
    // The layer's time is shared evenly by its linears' events (they ran together).
    events_.push_back({.layer = l, .step = step.name(), .target = a.name, .value = ca.event.value,
                       .error_before = ca.event.error_before, .error_after = ca.event.error_after,
                       .seconds = seconds / static_cast<double>(c.adapters.size())});
  }
}

void LayerMethods::quantize_activations(const quant::MethodStep& step, int64_t l, model::LayerWeights& w,
                                        const Sites& sites) const {
  for (const model::SiteWiring& g : model::block_topology(config_).layer_sites) {
    const quant::InputStats& site = sites.at(g.site);
    const auto learned = learned_clip_.find({l, static_cast<int>(g.site)});
    const float clip = learned == learned_clip_.end() ? 0.0f : learned->second;
    for (const TensorRole role : g.consumers) {
      w.linear(role).set_act_quant(step.method->activation(
          {.layer = l, .group = model::site_name(g.site), .stats = &site, .learned_clip = clip}, step.options));
    }
  }
}

}  // namespace calq::pipeline
