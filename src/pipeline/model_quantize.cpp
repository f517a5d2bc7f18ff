#include "pipeline/model_quantize.h"

#include <fmt/format.h>

#include <cassert>
#include <chrono>
#include <map>
#include <optional>

#include "core/stopwatch.h"
#include "core/error.h"
#include "core/mapped_file.h"
#include "pipeline/layer_store.h"
#include "formats/qtensor.h"
#include "grad/fake_quant.h"
#include "grad/fake_quant_int.h"
#include "model/architecture.h"
#include "model/block_topology.h"

namespace calq::pipeline {
namespace {

const Format* first_fitting(std::initializer_list<const char*> names, int64_t rows, int64_t cols) {
  for (const char* n : names) {
    const Format* f = find_format(n);
    if (f != nullptr && f->can_store(rows, cols)) return f;
  }
  return nullptr;  // float32
}

// Σ weight importance: the site's E[x²] per input channel, when collected.
std::vector<float> importance_of(const calib::CalibrationStats* stats, int64_t layer, model::InputSite site) {
  if (stats == nullptr || !stats->kinds().contains(calib::StatKind::kMeanSq)) return {};
  const calib::SiteStats* s = stats->find(layer, site);
  if (s == nullptr || s->rows() == 0) return {};
  return s->mean_sq();
}

// The recipe the layers run: "rtn" when none is given, and the activation scheme given apart
// from the chain (options.act) as its last step.
quant::Recipe effective_recipe(const ModelQuantizeOptions& o) {
  quant::Recipe recipe = o.recipe.steps.empty() ? quant::parse_method_chain("rtn") : o.recipe;
  if (o.act == ActivationScheme::kNone) return recipe;
  if (const quant::MethodStep* a = recipe.activation())
    fail(ErrorKind::kInvalidArgument, "{} has the activation scheme {}; the activation scheme option gives {}: "
         "give one", recipe.origin, a->name(), model::activation_quant_name(o.act));
  nlohmann::json options = nlohmann::json::object();
  if (o.act == ActivationScheme::kLlmInt8) options["threshold"] = o.llm_int8_threshold;
  return quant::with_step(recipe, model::activation_quant_name(o.act), options);
}

}  // namespace

std::string_view expert_policy_name(ExpertPolicy policy) {
  switch (policy) {
    case ExpertPolicy::kNatural: return "natural";
    case ExpertPolicy::kAllExperts: return "all";
    case ExpertPolicy::kRtnFallback: return "rtn-fallback";
  }
  return "";
}

ExpertPolicy expert_policy_by_name(std::string_view name) {
  for (const ExpertPolicy p : {ExpertPolicy::kNatural, ExpertPolicy::kAllExperts, ExpertPolicy::kRtnFallback}) {
    if (expert_policy_name(p) == name) return p;
  }
  fail(ErrorKind::kInvalidArgument, "expert policy '{}': expected natural, all or rtn-fallback", name);
}

const Format* default_head_format(double main_bits_per_weight, int64_t rows, int64_t cols) {
  return main_bits_per_weight < 6.5 ? first_fitting({"q6_k", "q8_0", "f16"}, rows, cols)
                                    : first_fitting({"q8_0", "f16"}, rows, cols);
}

TensorRule parse_tensor_rule(const std::string& text) {
  const size_t eq = text.rfind('=');
  if (eq == std::string::npos || eq == 0 || eq + 1 == text.size()) {
    fail(ErrorKind::kInvalidArgument, "rule '{}': expected REGEX=FORMAT, e.g. 'attn_v=q6_k'", text);
  }
  TensorRule r;
  r.text = text;
  r.pattern = text.substr(0, eq);
  const std::string format = text.substr(eq + 1);
  try {
    r.regex = std::regex(r.pattern, std::regex::ECMAScript);
  } catch (const std::regex_error& e) {
    fail(ErrorKind::kInvalidArgument, "rule '{}': invalid regular expression '{}': {}", text, r.pattern, e.what());
  }
  if (format != "f32") r.format = &format_by_name(format);
  return r;
}

namespace {

// llama.cpp's mix over the tensors no rule (nor a given head format) placed, as llama-quantize would
// type them (mix.h): the experts of a layer are its one stacked tensor there.
void apply_mix(const QuantMix& mix, const model::Model& m, bool head_format_given, std::vector<TensorAssignment>& plan) {
  const model::ModelConfig& c = m.config;
  const ModelShape shape{.arch = std::string(m.arch->gguf_arch), .n_layer = c.num_layers, .n_head = c.num_heads,
                         .n_head_kv = c.num_kv_heads, .n_expert = c.moe ? c.moe->num_experts : 0};
  std::vector<MixTensor> tensors;
  std::map<std::string, size_t, std::less<>> index;
  for (const TensorAssignment& a : plan) {
    if (index.contains(a.name)) continue;
    index.emplace(a.name, tensors.size());
    std::vector<int64_t> ne{a.cols, a.rows};
    if (a.expert >= 0) ne.push_back(shape.n_expert);
    tensors.push_back({.name = a.name, .ne = std::move(ne), .type = io::kGgmlF32});
  }
  const std::vector<TypeChoice> choices = assign_types(mix, shape, tensors);
  for (TensorAssignment& a : plan) {
    const bool head = a.role == model::TensorRole::kTokenEmbedding || a.role == model::TensorRole::kOutput;
    if (a.rule >= 0 || (head && head_format_given)) continue;
    const TypeChoice& t = choices[index.at(a.name)];
    a.format = t.type == io::kGgmlF32 ? nullptr : format_by_ggml_type(t.type);
    if (t.type != io::kGgmlF32 && a.format == nullptr) {
      fail(ErrorKind::kUnsupported, "mix {}: tensor {} gets ggml type {}, which has no calq format", mix.name, a.name,
           io::ggml_type_name(t.type));
    }
    a.fell_back = t.fell_back;
  }
}

}  // namespace

std::vector<TensorAssignment> plan_model_quantization(const model::Model& m, const ModelQuantizeOptions& o) {
  assert(o.format != nullptr);
  const model::Architecture& arch = *m.arch;
  std::vector<TensorAssignment> plan;
  const auto add = [&](model::TensorRole role, int64_t layer, const model::LinearWeight& w, int64_t expert = -1) {
    TensorAssignment a{.role = role, .layer = layer, .expert = expert,
                       .name = model::gguf_tensor_name(arch, role, layer), .rows = w.rows(), .cols = w.cols()};
    const std::string hf_name = model::hf_tensor_name(arch, role, layer, expert);
    for (size_t i = 0; i < o.rules.size(); ++i) {
      if (std::regex_search(a.name, o.rules[i].regex) || std::regex_search(hf_name, o.rules[i].regex)) {
        a.rule = static_cast<int>(i);
        a.format = o.rules[i].format;
        if (a.format != nullptr && !a.format->can_store(a.rows, a.cols)) {
          fail(ErrorKind::kInvalidArgument, "rule '{}': tensor {} [{}, {}] cannot be stored in {} (rows of {} values)",
               o.rules[i].text, a.name, a.rows, a.cols, a.format->name(), a.cols);
        }
        plan.push_back(a);
        return;
      }
    }
    const bool head = role == model::TensorRole::kTokenEmbedding || role == model::TensorRole::kOutput;
    if (head) {
      a.format = o.head_format != nullptr ? o.head_format
                                          : default_head_format(o.format->traits().bits_per_weight, a.rows, a.cols);
      if (a.format != nullptr && !a.format->can_store(a.rows, a.cols)) {
        fail(ErrorKind::kInvalidArgument, "head format {}: tensor {} [{}, {}] cannot be stored in it",
             a.format->name(), a.name, a.rows, a.cols);
      }
    } else if (o.format->can_store(a.rows, a.cols)) {
      a.format = o.format;
    } else {
      a.format = first_fitting({"q8_0", "f16"}, a.rows, a.cols);
      a.fell_back = true;
    }
    plan.push_back(a);
  };
  add(model::TensorRole::kTokenEmbedding, -1, m.embedding);
  const std::vector<model::TensorRole> layer_roles = model::layer_linear_roles(m.config);
  for (int64_t l = 0; l < m.config.num_layers; ++l) {
    const model::LayerWeights& lw = m.layers[static_cast<size_t>(l)];
    for (const model::TensorRole role : layer_roles) add(role, l, lw.linear(role));
    for (int64_t e = 0; e < static_cast<int64_t>(lw.experts.size()); ++e) {
      for (const model::TensorRole role :
           {model::TensorRole::kExpertGate, model::TensorRole::kExpertUp, model::TensorRole::kExpertDown}) {
        add(role, l, lw.experts[static_cast<size_t>(e)].linear(role), e);
      }
    }
  }
  if (!m.output.same_storage(m.embedding)) add(model::TensorRole::kOutput, -1, m.output);
  if (o.mix != nullptr) apply_mix(*o.mix, m, o.head_format != nullptr, plan);

  for (size_t i = 0; i < o.rules.size(); ++i) {
    bool used = false;
    for (const auto& a : plan) used = used || a.rule == static_cast<int>(i);
    // A rule shadowed by an earlier one for every tensor it matches also "matches nothing" here.
    if (!used) {
      fail(ErrorKind::kInvalidArgument,
           "rule '{}' matches no tensor of the model (rules match GGUF names such as 'blk.0.attn_v.weight' or "
           "Hugging Face names such as 'model.layers.0.self_attn.v_proj.weight'; an earlier rule wins)",
           o.rules[i].text);
    }
  }
  // The training engine, the layer transforms and the rotations know the plain Llama block only.
  if (!m.config.plain_llama_block()) {
    for (const quant::MethodStep& step : o.recipe.steps) {
      const quant::MethodStage st = step.stage();
      if (st == quant::MethodStage::kLayerReconstruction || st == quant::MethodStage::kModelReconstruction ||
          st == quant::MethodStage::kLayerTransform || st == quant::MethodStage::kModelTransform) {
        fail(ErrorKind::kUnsupported, "{}: {} does not run on this '{}' model yet (its block has {}); use "
             "rtn, gptq, awq or smoothquant", o.recipe.origin, step.name(), m.config.model_type,
             m.config.moe ? "experts" : m.config.qk_norm ? "q/k head norms" : "rotary scaling");
      }
    }
  }
  // Integer activations (int8/int4 per token, int8 per tensor, LLM.int8()'s int8 part) are meant
  // for an integer product with the weight's codes (W4A4, W8A8): a weight whose codes are not
  // integers times a scale (nf4's table, fp8, mx's floats) has no such product, so the request is
  // refused before any work. Float weights (f32, f16, bf16) are unquantized and stay allowed.
  ActivationScheme act = o.act;
  if (const quant::MethodStep* step = o.recipe.activation()) act = *model::activation_quant_by_name(step->name());
  if (act != ActivationScheme::kNone) {
    for (const auto& a : plan) {
      if (a.layer < 0 || a.format == nullptr) continue;
      const std::string& family = a.format->traits().family;
      if (family == "int" || family == "gguf" || family == "float") continue;
      fail(ErrorKind::kInvalidArgument,
           "activation scheme {}: tensor {} has format {} ({} codes are not integers), which has no integer "
           "product with quantized activations; use an int or GGUF format for the layers (or no activation scheme)",
           model::activation_quant_name(act), a.name, a.format->name(), family);
    }
  }
  // A layer transform (flatquant) learns weight clipping in the int formats of every layer linear,
  // and leaves online transforms that the gradient engine does not run: no training step after it.
  for (const quant::MethodStep& step : o.recipe.steps) {
    if (step.stage() != quant::MethodStage::kLayerTransform) continue;
    for (const quant::MethodStep& later : o.recipe.steps) {
      if (later.stage() == quant::MethodStage::kLayerReconstruction ||
          later.stage() == quant::MethodStage::kModelReconstruction)
        fail(ErrorKind::kUnsupported, "{} leaves online input transforms, which {} cannot train through yet; use "
             "one of them", step.name(), later.name());
    }
    for (const auto& a : plan) {
      if (a.layer >= 0 && (a.format == nullptr || !grad::is_int_format(*a.format))) {
        fail(ErrorKind::kUnsupported, "{}: tensor {}: format {} is not an int format (it learns int weight clipping)",
             step.name(), a.name, a.format == nullptr ? std::string("f32") : a.format->name());
      }
    }
  }
  // A training step trains every quantized linear of the layers through its format's fake
  // quantization: a format without one is refused here, before any work, not at the first layer.
  for (const quant::MethodStep& step : o.recipe.steps) {
    if (step.stage() != quant::MethodStage::kLayerReconstruction &&
        step.stage() != quant::MethodStage::kModelReconstruction)
      continue;
    for (const auto& a : plan) {
      if (a.layer >= 0 && a.format != nullptr && !grad::has_fake_quant(*a.format)) {
        fail(ErrorKind::kUnsupported, "{}: tensor {}: format {} has no fake-quantization path to train through",
             step.name(), a.name, a.format->name());
      }
    }
  }
  return plan;
}

void check_stats_match(const calib::CalibrationStats& stats, const model::Model& m, const std::string& origin) {
  const auto need = [&](int64_t layer, model::InputSite site, int64_t cols) {
    const calib::SiteStats* s = stats.find(layer, site);
    if (s == nullptr) {
      fail(ErrorKind::kInvalidArgument, "{}: no statistics for layer {} {} (the file was made for another model?)",
           origin, layer, model::site_name(site));
    }
    if (s->cols() != cols) {
      fail(ErrorKind::kInvalidArgument, "{}: statistics of layer {} {} have {} channels but the model has {}", origin,
           layer, model::site_name(site), s->cols(), cols);
    }
  };
  const model::ModelConfig& c = m.config;
  const model::BlockTopology& block = model::block_topology(c);
  for (int64_t l = 0; l < c.num_layers; ++l) {
    for (const model::SiteWiring& site : block.layer_sites) need(l, site.site, model::site_width(site, c));
  }
  need(-1, block.head.site, model::site_width(block.head, c));
}

ModelQuantizeResult quantize_model(model::Model& m, const ModelQuantizeOptions& o,
                                   std::span<const std::vector<int32_t>> samples, const SequentialOptions& sequential,
                                   const calib::CalibrationStats* stats,
                                   const std::function<void(const QuantizeProgress&)>& on_tensor, ThreadPool& pool) {
  ModelQuantizeResult r;
  const quant::Recipe recipe = effective_recipe(o);
  // Adapters belong to the weights they were made with: re-quantizing those under them would
  // keep adapters fitted to other weights (and an error compensation would replace them).
  for (size_t l = 0; l < m.layers.size(); ++l) {
    for (const model::TensorRole role : model::kLayerLinearRoles) {
      if (m.layers[l].adapter(role) != nullptr)
        fail(ErrorKind::kUnsupported, "{}: the model carries LoRA adapters (layer {} {}); quantize the model without "
             "them (merged into its weights, or its base before the adapters were added)", m.source.string(), l,
             model::role_name(role));
    }
  }
  if (needs_float_stream(recipe)) {  // checked before any work
    if (samples.empty())
      fail(ErrorKind::kInvalidArgument, "{}: per-layer training (layer reconstruction, layer transform) needs "
           "calibration samples (a statistics file holds no hidden states)", recipe.origin);
    if (!sequential.true_sequential)
      fail(ErrorKind::kInvalidArgument, "{}: per-layer training trains on the quantized layers' outputs: it "
           "needs true-sequential calibration (not float inputs)", recipe.origin);
  }
  for (const quant::MethodStep& step : recipe.steps) {
    if (step.stage() != quant::MethodStage::kModelTransform) continue;
    // The statistics must describe the transformed model, so they come from calibrating it.
    if (samples.empty())
      fail(ErrorKind::kInvalidArgument, "{}: {} needs calibration data (samples): statistics from a file "
           "describe the model before the transform", recipe.origin, step.name());
    const auto t0 = std::chrono::steady_clock::now();
    step.method->transform_model(m, step.options, pool);
    r.events.push_back({.layer = -1, .step = step.name(), .target = "model", .seconds = seconds_since(t0)});
  }
  const quant::MethodStep* model_step = nullptr;
  for (const quant::MethodStep& step : recipe.steps)
    if (step.stage() == quant::MethodStage::kModelReconstruction) model_step = &step;
  if (model_step != nullptr && samples.empty())
    fail(ErrorKind::kInvalidArgument, "{}: {} trains on calibration samples (a statistics file holds no token "
         "sequences)", recipe.origin, model_step->name());
  // The teacher: the float model as the transforms left it (a copy shares its tensors; the layer
  // pass replaces the copy's linears, never writes into them).
  std::optional<model::Model> teacher;
  if (model_step != nullptr) teacher = m;
  r.plan = plan_model_quantization(m, o);
  std::map<std::pair<int64_t, int>, const TensorAssignment*> by_role;  // experts: not in it
  for (const auto& a : r.plan)
    if (a.expert < 0) by_role[{a.layer, static_cast<int>(a.role)}] = &a;
  const RangeChooser* range = o.observer != nullptr ? &o.observer->weight_range() : nullptr;

  const auto quantize_one = [&](model::LinearWeight& w, const TensorAssignment& a, const std::vector<float>& imp) {
    if (a.format == nullptr) return;  // stays as loaded (float)
    const auto t0 = std::chrono::steady_clock::now();
    const Tensor dense = w.to_dense(pool);
    if (w.is_quantized()) release_mapped_pages(w.quantized().bytes);  // a view of the source file: done with it
    const bool with_importance = o.use_importance && !imp.empty();
    w = QuantizedTensor::quantize(pool, *a.format, dense.f32(), a.rows, a.cols,
                                  {.tensor_name = a.name, .importance = with_importance ? imp.data() : nullptr,
                                   .range = range});
    const double s = seconds_since(t0);
    r.seconds_quantize += s;
    if (with_importance) ++r.n_with_importance;
    if (on_tensor) on_tensor({.tensor = &a, .used_importance = with_importance, .seconds = s});
  };
  LayerMethods methods(m.config, r.plan, recipe, o, pool);
  // Each quantized tensor of layer l, with an equal share of the layer's time.
  const auto report_layer = [&](int64_t l, double seconds) {
    if (!on_tensor) return;
    std::vector<const TensorAssignment*> layer_plan;
    for (const auto& a : r.plan)
      if (a.layer == l && a.format != nullptr) layer_plan.push_back(&a);
    for (const TensorAssignment* a : layer_plan) {
      on_tensor({.tensor = a, .used_importance = o.use_importance,
                 .seconds = seconds / static_cast<double>(layer_plan.size())});
    }
  };
  // The layer's statistics are read by nothing after its quantizer: its Hessians move, not copy.
  const LayerQuantizer layer_quantizer = [&](int64_t l, model::LayerWeights& weights,
                                             calib::CalibrationStats& layer_stats, const LayerStreams& streams) {
    const auto t0 = std::chrono::steady_clock::now();
    methods.apply_taking_hessians(l, weights, layer_stats, streams);
    report_layer(l, seconds_since(t0));
  };

  // Finished layers to files (layer_store.h): after the layer's last use in the pass.
  std::optional<LayerStore> store;
  if (!o.layer_store.empty()) store.emplace(o.layer_store);
  const auto finish_layer = [&](int64_t l) {
    if (store) store->store(l, m.layers[static_cast<size_t>(l)]);
  };
  const calib::CalibrationStats* head_stats = stats;
  if (!samples.empty()) {
    SequentialOptions seq = sequential;
    seq.on_layer = [&](const LayerProgress& p) {
      finish_layer(p.layer);
      if (sequential.on_layer) sequential.on_layer(p);
    };
    for (const calib::StatKind k : required_stats(recipe).kinds()) seq.stats = seq.stats.with(k);
    seq.all_experts = seq.all_experts || (m.config.moe && o.expert_policy == ExpertPolicy::kAllExperts);
    seq.float_stream = seq.float_stream || needs_float_stream(recipe);
    seq.keep_layer_stats = false;  // only the head's are read after the layers (below)
    r.calibration = run_layer_sequential(m, samples, seq, &layer_quantizer, pool);
    head_stats = &r.calibration->stats;
  } else {
    for (int64_t l = 0; l < m.config.num_layers; ++l) {
      const auto t0 = std::chrono::steady_clock::now();
      methods.apply(l, m.layers[static_cast<size_t>(l)], stats != nullptr ? *stats : calib::CalibrationStats{});
      report_layer(l, seconds_since(t0));
      finish_layer(l);
    }
  }
  r.seconds_quantize += methods.seconds_quantize();
  r.n_with_importance += methods.n_with_importance();
  for (const quant::MethodStep& step : recipe.steps) {
    if (step.stage() == quant::MethodStage::kErrorCompensation && methods.n_adapters() == 0)
      fail(ErrorKind::kInvalidArgument, "{}: {} made no adapter: its roles {} match no quantized linear of the model",
           recipe.origin, step.name(), step.method->options_json(step.options, true).value("roles", std::string("?")));
  }
  r.events.insert(r.events.end(), methods.events().begin(), methods.events().end());
  // The embedding (tied: it is also the head, whose input statistics then weigh its columns) and
  // the untied head, always round to nearest. The embedding lookup reads rows, so its own "input"
  // has no statistics.
  const bool tied = m.output.same_storage(m.embedding);
  const std::vector<float> head_imp = importance_of(head_stats, -1, model::InputSite::kHeadIn);
  quantize_one(m.embedding, *by_role.at({-1, static_cast<int>(model::TensorRole::kTokenEmbedding)}),
               tied ? head_imp : std::vector<float>{});
  if (tied) {
    m.output = m.embedding;
  } else {
    quantize_one(m.output, *by_role.at({-1, static_cast<int>(model::TensorRole::kOutput)}), head_imp);
  }
  if (model_step != nullptr) {
    std::vector<quant::ModelReconstructionLinear> linears;
    for (const auto& a : r.plan)
      if (a.layer >= 0) linears.push_back({.layer = a.layer, .role = a.role, .format = a.format, .name = a.name});
    const auto t0 = std::chrono::steady_clock::now();
    quant::ModelReconstruction rec = model_step->method->reconstruct_model(
        {.teacher = &*teacher, .quantized = &m, .linears = linears, .samples = samples, .progress = &o.on_training},
        model_step->options, pool);
    for (auto& w : rec.weights) m.layers[static_cast<size_t>(w.layer)].linear(w.role) = std::move(w.tensor);
    const double s = seconds_since(t0);
    r.seconds_quantize += s;
    r.events.push_back({.layer = -1, .step = model_step->name(), .target = "model", .value = rec.event.value,
                        .error_before = rec.event.error_before, .error_after = rec.event.error_after, .seconds = s,
                        .curve = std::move(rec.event.curve)});
  }
  return r;
}

}  // namespace calq::pipeline
