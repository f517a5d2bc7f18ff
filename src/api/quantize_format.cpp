// quantize()'s format and bit-allocation forms: any registered format, Hugging Face or GGUF in,
// with calibration or a statistics file, a range observer, method steps and per-tensor rules
// (pipeline/model_quantize.h); with a target, one exact rule per tensor from the bit allocation
// (pipeline/bit_alloc.h, api/target_alloc.h).
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>

#include "api/calibration_data.h"
#include "api/model_source.h"
#include "api/quantize_forms.h"
#include "api/sensitivity_run.h"
#include "api/target_alloc.h"
#include "api/training.h"
#include "calib/collectors.h"
#include "calib/observer.h"
#include "core/error.h"
#include "core/stopwatch.h"
#include "core/thread_pool.h"
#include "core/mapped_file.h"
#include "model/gguf_export.h"
#include "model/hf_export.h"
#include "model/hf_quant.h"
#include "model/model.h"
#include "pipeline/bit_alloc.h"
#include "pipeline/model_quantize.h"
#include "pipeline/sensitivity_report.h"
#include "quant/method.h"

namespace calq::api {
namespace {

// The recipe from the method chain or the recipe file, with the job's method options written
// into their steps (an option for a step the recipe does not have is an Error: it would
// silently do nothing).
quant::Recipe build_recipe(const QuantizeJob& job) {
  if (!job.recipe.empty() && job.method != "rtn") {
    fail(ErrorKind::kInvalidArgument, "give either a method chain or a recipe file, not both");
  }
  quant::Recipe r = job.recipe.empty() ? quant::parse_method_chain(job.method) : quant::read_recipe_file(job.recipe);
  for (const MethodOption& o : job.method_options) {
    nlohmann::json value;
    try {
      value = nlohmann::json::parse(o.value);
    } catch (const nlohmann::json::exception&) {
      fail(ErrorKind::kInvalidArgument, "{} option '{}': '{}' is not a JSON value", o.method, o.key, o.value);
    }
    if (!r.set_option(o.method, o.key, value)) {
      fail(ErrorKind::kInvalidArgument, "option '{}' applies to the {} step, which {} does not have", o.key, o.method,
           r.origin);
    }
  }
  return r;
}

// The calq.recipe metadata: everything that decided the bytes, in one line.
std::string recipe_text(const QuantizeJob& job, const pipeline::ModelQuantizeOptions& o, bool calibrated,
                        const pipeline::TargetAllocation* alloc) {
  std::string r = fmt::format("method={};{};observer={}", o.recipe.to_string(),
                              o.mix != nullptr ? "mix=" + o.mix->name
                                               : "format=" + std::string(alloc != nullptr && job.format.empty()
                                                                             ? "alloc"
                                                                             : o.format->name()),
                              job.observer);
  bool with_options = false;
  for (const auto& step : o.recipe.steps) with_options = with_options || !step.options.empty();
  if (with_options) r += ";steps=" + o.recipe.to_json()["steps"].dump();
  if (o.act != pipeline::ActivationScheme::kNone) {
    r += fmt::format(";act_quant={}", model::activation_quant_name(o.act));
    if (o.act == pipeline::ActivationScheme::kLlmInt8) r += fmt::format(";threshold={}", o.llm_int8_threshold);
  }
  if (job.observer == "percentile") r += fmt::format(";percentile={}", job.percentile);
  if (!job.head_format.empty()) r += ";head=" + job.head_format;
  for (const auto& rule : job.rules) r += ";rule=" + rule;
  if (alloc != nullptr) {
    const TargetOptions& t = job.target;
    const std::string map_source =
        t.sensitivity.empty()
            ? fmt::format("measured:{}:{}{}", std::filesystem::path(t.sensitivity_text).filename().string(),
                          t.sensitivity_windows,
                          t.sensitivity_ctx == 512 ? "" : fmt::format(":ctx{}", t.sensitivity_ctx))
            : std::filesystem::path(t.sensitivity).filename().string();
    std::string candidates;
    for (const auto& c : t.candidates) candidates += (candidates.empty() ? "" : ",") + c;
    r += fmt::format(";target_bpw={};candidates={};sensitivity={};predicted_kld={:.6g}", t.bits_per_weight,
                     candidates, map_source, alloc->predicted_kld());
    for (const auto& rule : alloc->rule_texts()) r += ";rule=" + rule;
  }
  if (calibrated) {
    const CalibrationData& c = job.calibration;
    r += fmt::format(";calib={};samples={};seq_len={};seed={};sequential={}",
                     std::filesystem::path(c.text).filename().string(), c.samples, c.seq_len, c.seed,
                     job.float_inputs ? "float" : "true");
  } else if (!job.stats.empty()) {
    r += ";stats=" + std::filesystem::path(job.stats).filename().string();
  }
  r += fmt::format(";importance={}", job.use_importance ? "e[x^2]" : "off");
  if (job.expert_policy != "natural") r += ";experts=" + job.expert_policy;
  return r;
}

// The sensitivity map measured now over the candidates, with this job's method, statistics and
// observer (api/sensitivity_run.h).
pipeline::SensitivityFile measure_target_map(const QuantizeJob& job, const std::vector<const Format*>& candidates,
                                             const quant::Recipe& recipe, ThreadPool& pool, Reporter& report) {
  const TargetOptions& t = job.target;
  const pipeline::SensitivityMap map = measure_sensitivity_map(
      {.model = job.model, .eval_text = t.sensitivity_text, .formats = candidates, .recipe = recipe,
       .observer = job.observer, .calib = &job.calibration, .stats = job.stats, .use_importance = job.use_importance,
       .include_head = job.head_format.empty(), .ctx = t.sensitivity_ctx, .max_windows = t.sensitivity_windows},
      pool, report);
  return pipeline::sensitivity_file_from_map(map, "the sensitivity map measured on " + t.sensitivity_text, job.model,
                                             t.sensitivity_text, recipe.to_string());
}

// The folder of a run's layer store, beside the output; removed with everything in it when the run
// ends, written or not (the model may still map its files: unlinked files stay mapped).
struct LayerStoreFolder {
  std::filesystem::path path;
  explicit LayerStoreFolder(const std::string& out) : path(fmt::format("{}.layers.tmp.{}", out, ::getpid())) {}
  LayerStoreFolder(const LayerStoreFolder&) = delete;
  LayerStoreFolder& operator=(const LayerStoreFolder&) = delete;
  ~LayerStoreFolder() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

// The checkpoint scheme of job.export_scheme (kNone for a GGUF), after the checks that need no model:
// the scheme holds the format, and nothing asks for more than one format or for what a checkpoint
// cannot say.
model::HfQuantScheme export_scheme_of(const QuantizeJob& job, const pipeline::ModelQuantizeOptions& options) {
  if (job.export_scheme.empty()) return model::HfQuantScheme::kNone;
  const std::optional<model::HfQuantScheme> scheme = model::parse_hf_quant_scheme(job.export_scheme);
  if (!scheme || *scheme == model::HfQuantScheme::kNone) {
    fail(ErrorKind::kInvalidArgument, "export_scheme '{}' is not one of gptq, gptq-v2, awq, compressed-tensors, bnb-nf4",
         job.export_scheme);
  }
  const std::string_view name = model::hf_quant_scheme_name(*scheme);
  if (job.target.bits_per_weight > 0) {
    fail(ErrorKind::kInvalidArgument, "a {} checkpoint holds every linear in one format; a target bits_per_weight "
         "mixes formats (write a GGUF instead)", name);
  }
  if (!job.rules.empty()) {
    fail(ErrorKind::kInvalidArgument, "a {} checkpoint holds every linear in one format; per-tensor rules are not "
         "allowed with export_scheme", name);
  }
  if (options.act != pipeline::ActivationScheme::kNone) {
    fail(ErrorKind::kInvalidArgument, "a {} checkpoint is weight-only; act_quant '{}' cannot be written into it", name,
         job.act_quant);
  }
  if (const std::string why = model::hf_quant_scheme_fits(*scheme, *options.format); !why.empty()) {
    fail(ErrorKind::kInvalidArgument, "export_scheme {}: {}", name, why);
  }
  std::error_code ec;
  if (std::filesystem::exists(job.out, ec) && !job.force) {
    fail(ErrorKind::kInvalidArgument, "{}: output exists; overwriting it needs the force option", job.out);
  }
  return *scheme;
}

// A checkpoint's embedding and head stay as the source holds them (bf16/f16 views, or float32)
// unless head_format says otherwise.
void keep_head_in_source_dtype(const QuantizeJob& job, const model::Model& m, pipeline::ModelQuantizeOptions& options) {
  if (!job.head_format.empty()) return;
  if (m.embedding.is_quantized() && (m.embedding.format_name() == "bf16" || m.embedding.format_name() == "f16")) {
    options.head_format = m.embedding.quantized().format;
  } else {
    options.rules.insert(options.rules.begin(), pipeline::parse_tensor_rule("^(token_embd|output)\\.weight$=f32"));
  }
}

// Every linear of the plan in the job's format (a fallback for a shape the format cannot store has
// no place in a one-format checkpoint).
void check_export_plan(const QuantizeJob& job, const std::vector<pipeline::TensorAssignment>& plan,
                       const pipeline::ModelQuantizeOptions& options) {
  for (const pipeline::TensorAssignment& a : plan) {
    if (a.role == model::TensorRole::kTokenEmbedding || a.role == model::TensorRole::kOutput) continue;
    if (a.format != options.format) {
      fail(ErrorKind::kInvalidArgument, "{}: tensor {} [{}, {}] cannot be stored in {}; a {} checkpoint holds every "
           "linear in that one format", job.out, a.name, a.rows, a.cols, options.format->name(), job.export_scheme);
    }
  }
}

// The Hugging Face folder: the model (float tensors in the source's dtype: bf16 when its embedding
// is, else float32) and the source folder's tokenizer and generation files.
void write_export(const QuantizeJob& job, const LoadedModel& m, model::HfQuantScheme scheme, ThreadPool& pool) {
  model::HfExportOptions o{.dtype = m.model.embedding.format_name() == "bf16" ? DType::kBF16 : DType::kF32,
                           .overwrite = job.force, .max_shard_bytes = job.max_shard_bytes, .quant = scheme};
  const std::filesystem::path source = m.model.source;
  std::error_code ec;
  if (std::filesystem::is_directory(source, ec)) {
    for (const char* name : {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                             "generation_config.json", "chat_template.jinja"}) {
      if (std::filesystem::exists(source / name, ec)) o.extra_files.emplace_back(name, read_text_file(source / name));
    }
  }
  model::write_hf_model(m.model, job.out, o, pool);
}

}  // namespace

QuantizeReport quantize_format(const QuantizeJob& job, Reporter& report) {
  if (!job.calibration.text.empty() && !job.stats.empty()) {
    fail(ErrorKind::kInvalidArgument, "give either a calibration text (calibrate now) or a statistics file, not both");
  }
  const TargetOptions& t = job.target;
  check_target_options(t);
  const bool target = t.bits_per_weight > 0;
  std::vector<const Format*> candidates;
  std::optional<pipeline::SensitivityFile> sensitivity;
  if (target) {
    candidates = parse_candidates(t.candidates);
    if (!t.sensitivity.empty()) sensitivity.emplace(pipeline::read_sensitivity_file(t.sensitivity));
  }
  // With a target and no format every linear weight gets an allocation rule; the first candidate
  // only stands in as the main format the plan requires. A mix (quantize.cpp sends one here with a
  // method or calibration) types every tensor itself; its main type stands in likewise.
  const pipeline::QuantMix* mix = job.mix.empty() ? nullptr : &pipeline::mix_by_name(job.mix);
  if (mix != nullptr && format_by_ggml_type(mix->default_type) == nullptr) {
    fail(ErrorKind::kUnsupported, "mix {} has no calq format for its type", mix->name);
  }
  pipeline::ModelQuantizeOptions options{
      .format = mix != nullptr           ? format_by_ggml_type(mix->default_type)
                : job.format.empty() ? candidates.at(0)
                                     : &format_by_name(job.format)};
  options.mix = mix;
  for (const auto& rule : job.rules) options.rules.push_back(pipeline::parse_tensor_rule(rule));
  if (!job.head_format.empty()) options.head_format = &format_by_name(job.head_format);
  const std::unique_ptr<calib::Observer> observer = calib::make_observer(job.observer, {.percentile = job.percentile});
  options.observer = observer.get();
  options.use_importance = job.use_importance;
  options.expert_policy = pipeline::expert_policy_by_name(job.expert_policy);
  options.expert_min_tokens = job.expert_min_tokens;
  options.recipe = build_recipe(job);
  if (target) {
    for (const quant::MethodStep& step : options.recipe.steps) {
      if (step.stage() == quant::MethodStage::kErrorCompensation)
        fail(ErrorKind::kInvalidArgument, "{}: {}'s adapters are not part of the bit allocation (it budgets the "
             "linears' formats only); give a format instead of a target bits_per_weight", options.recipe.origin,
             step.name());
    }
  }
  options.act = pipeline::parse_activation_scheme(job.act_quant);
  options.llm_int8_threshold = job.llm_int8_threshold;
  // The memory estimates (made below, before any work), each announced when its step starts training.
  std::vector<TrainingMemoryReport> estimates;
  std::vector<std::string> announced;
  options.on_training = [&report, &estimates, &announced](const quant::TrainingProgress& p) {
    if (std::find(announced.begin(), announced.end(), p.step) == announced.end()) {
      announced.emplace_back(p.step);
      for (const TrainingMemoryReport& e : estimates)
        if (e.method == p.step) report("train", 0, p.total, e.text);
    }
    const std::string where = p.layer >= 0 ? fmt::format(" layer {}", p.layer) : std::string();
    report("train", p.done, p.total,
           fmt::format("{}{} step {}/{}: loss {:.5g}, {:.1f} s, ETA {:.0f} s", p.step, where, p.done, p.total, p.loss,
                       p.seconds, p.eta_seconds));
  };
  if (!(job.llm_int8_threshold > 0)) fail(ErrorKind::kInvalidArgument, "llm_int8_threshold must be > 0");

  const model::HfQuantScheme scheme = export_scheme_of(job, options);
  ThreadPool pool(job.threads);
  if (scheme == model::HfQuantScheme::kNone) check_output_path(job.out, resolve_model(job.model).path, job.force);
  if (target && !sensitivity) sensitivity.emplace(measure_target_map(job, candidates, options.recipe, pool, report));
  std::optional<calib::CalibrationStats> stats;
  if (!job.stats.empty()) stats.emplace(calib::read_stats_file(job.stats));
  LoadedModel m = load_model(job.model, pool, {.keep_source_dtype = true});
  if (stats) pipeline::check_stats_match(*stats, m.model, job.stats);

  QuantizeReport out{.out = job.out, .form = target ? "target" : "format"};
  std::optional<pipeline::TargetAllocation> alloc;
  std::optional<VerifyPlan> verify;
  if (sensitivity) {
    if (job.head_format.empty()) {
      options.head_format =
          pipeline::default_head_format(t.bits_per_weight, m.model.embedding.rows(), m.model.embedding.cols());
    }
    alloc.emplace(pipeline::allocate_to_target(m.model, options, *sensitivity,
                                               {.target_bpw = t.bits_per_weight, .candidates = candidates,
                                                .allocate_head = job.head_format.empty(),
                                                .map_must_cover = job.format.empty()}));
    for (const auto& rule : alloc->rule_texts()) options.rules.push_back(pipeline::parse_tensor_rule(rule));
    out.allocation = allocation_report(*alloc, *sensitivity, t.bits_per_weight);
    out.predicted_kld = alloc->predicted_kld();
    report("allocate", 1, 1, out.allocation);
    if (!t.verify_text.empty()) {
      std::string source;
      const io::Tokenizer tokenizer = load_model_tokenizer(m.location, m.gguf.get(), job.calibration.tokenizer, source);
      verify.emplace(plan_verify(t, *sensitivity, tokenizer));
    }
  }
  if (scheme != model::HfQuantScheme::kNone) keep_head_in_source_dtype(job, m.model, options);
  // Fail on rules and shapes, and on a training step's memory estimate, before the (long) calibration.
  const std::vector<pipeline::TensorAssignment> plan = pipeline::plan_model_quantization(m.model, options);
  if (scheme != model::HfQuantScheme::kNone) check_export_plan(job, plan, options);
  estimates = estimate_training_memory(options.recipe, m.model, job.calibration, pool.num_threads());
  const TrainingMemoryReport pass =
      estimate_layer_pass_memory(options.recipe, m.model, job.calibration, static_cast<int64_t>(pool.num_threads()));
  report("note", 0, 0, pass.text);
  check_max_memory(estimates, job.max_memory);
  check_max_memory({pass}, job.max_memory);
  check_available_memory(pass);
  // Finished layers go to a store beside the output (pipeline/layer_store.h), removed at the end:
  // the disk must hold it and the output together.
  uint64_t quantized_bytes = 0, output_bytes = 0;
  for (const pipeline::TensorAssignment& a : plan) {
    const uint64_t b = a.format != nullptr ? a.format->tensor_bytes(a.rows, a.cols)
                                           : static_cast<uint64_t>(a.rows * a.cols) * sizeof(float);
    output_bytes += b;
    if (a.format != nullptr && a.layer >= 0) quantized_bytes += b;
  }
  check_disk_space(job.out, output_bytes + quantized_bytes, fmt::format("{} (with its layer store)", job.out));
  const LayerStoreFolder store(job.out);
  options.layer_store = store.path;

  std::optional<io::CalibrationSet> set;
  if (!job.calibration.text.empty()) {
    std::string source;
    const io::Tokenizer tokenizer = load_model_tokenizer(m.location, m.gguf.get(), job.calibration.tokenizer, source);
    set.emplace(load_calibration(job.calibration, tokenizer, m.model, pool, report));
  } else if (job.stats.empty()) {
    report("note", 0, 0, "no calibration text or statistics file: rounding without importance statistics");
  }
  report("quantize", 0, static_cast<int64_t>(plan.size()),
         fmt::format("{} -> {} ({} {}, observer {}, {} threads{})", job.model, job.out, options.recipe.to_string(),
                     mix != nullptr ? mix->name : options.format->name(), job.observer, pool.num_threads(),
                     set ? fmt::format(", {} samples x {} tokens", set->samples.size(), job.calibration.seq_len) : ""));
  const auto t0 = std::chrono::steady_clock::now();
  const size_t width = std::to_string(plan.size()).size();
  int64_t done = 0;
  const pipeline::ModelQuantizeResult r = pipeline::quantize_model(
      m.model, options,
      set ? std::span<const std::vector<int32_t>>(set->samples) : std::span<const std::vector<int32_t>>{},
      {.stats = calib::StatSet().with(calib::StatKind::kMeanSq).with(calib::StatKind::kAbsMax),
       .true_sequential = !job.float_inputs,
       .on_layer =
           [&](const pipeline::LayerProgress& p) {
             report("layer", p.layer + 1, p.n_layers,
                    fmt::format("layer {}/{}: statistics {:.2f} s, quantize {:.2f} s, outputs {:.2f} s", p.layer + 1,
                                p.n_layers, p.seconds_stats, p.seconds_quantize, p.seconds_outputs));
           }},
      stats ? &*stats : nullptr,
      [&](const pipeline::QuantizeProgress& p) {
        ++done;
        const pipeline::TensorAssignment& a = *p.tensor;
        const std::string type = a.format != nullptr ? a.format->name() : std::string("f32");
        out.tensors.push_back({.name = a.name, .shape = {a.rows, a.cols}, .from_type = "", .type = type,
                               .quantized = a.format != nullptr, .fell_back = a.fell_back,
                               .used_importance = p.used_importance, .seconds = p.seconds});
        report("tensor", done, static_cast<int64_t>(plan.size()),
               fmt::format("[{:>{}}/{}] {:<28} [{}, {}] -> {}{}{}", done, width, plan.size(), a.name, a.rows, a.cols,
                           type, a.fell_back ? " (fallback)" : "", p.used_importance ? " +importance" : ""));
      },
      pool);
  out.seconds = seconds_since(t0);

  out.recipe = recipe_text(job, options, set.has_value(), alloc ? &*alloc : nullptr);
  model::GgufExportOptions export_options;
  export_options.extra_metadata.emplace_back("calq.recipe", io::GgufValue::of_string(out.recipe));
  if (alloc) {
    // Checked before anything is written: the allocation's accounting is exact, so this only
    // fails when a method changed how a fixed tensor is stored.
    const double bpw = m.model.bits_per_weight();
    if (bpw > t.bits_per_weight) {
      fail(ErrorKind::kInvalidArgument,
           "the quantized model has {:.4f} bits per weight, above the target {} (predicted {:.4f}); nothing written",
           bpw, t.bits_per_weight, alloc->predicted_bpw());
    }
    if (m.model.storage_bytes() != alloc->total_bytes()) {
      report("note", 0, 0,
             fmt::format("{} bytes stored, the allocation counted {}", m.model.storage_bytes(), alloc->total_bytes()));
    }
  }
  if (set) {
    export_options.extra_metadata.emplace_back("calq.calib_sha256",
                                               io::GgufValue::of_string(calibration_source_id(*set)));
  }
  if (stats) {
    export_options.extra_metadata.emplace_back("calq.calib_sha256", io::GgufValue::of_strings(stats->calib_sha256));
  }
  if (scheme == model::HfQuantScheme::kNone) {
    model::write_gguf_model(m.model, job.out, export_options, pool);
  } else {
    write_export(job, m, scheme, pool);
    report("note", 0, 0, fmt::format("wrote {} checkpoint {}", model::hf_quant_scheme_name(scheme), job.out));
  }

  out.description = fmt::format("{} ({})", alloc ? "bit allocation" : mix != nullptr ? mix->name : options.format->name(),
                                options.recipe.to_string());
  out.bits_per_weight = m.model.bits_per_weight();
  out.bytes_out = m.model.storage_bytes();
  out.n_tensors = static_cast<int64_t>(r.plan.size());
  for (const auto& a : r.plan) out.n_quantized += a.format != nullptr ? 1 : 0;
  out.n_with_importance = r.n_with_importance;
  out.seconds_encode = r.seconds_quantize;
  for (const auto& e : r.events) out.method_events.push_back(quant::method_by_name(e.step).event_text(e));
  out.training = training_records(r.events);
  out.training_memory = std::move(estimates);
  if (r.calibration) {
    out.calibration = fmt::format(
        "calibration {} samples x {} tokens: {:.2f} s in forward passes ({}), activations {:.1f} MiB",
        r.calibration->samples, r.calibration->seq_len, r.calibration->seconds_forward,
        job.float_inputs ? "float inputs" : "true sequential: each layer twice",
        static_cast<double>(r.calibration->activation_bytes) / (1024.0 * 1024.0));
  }
  out.threads = static_cast<int>(pool.num_threads());
  out.peak_rss_mib = peak_rss_mib();
  if (verify) {
    // The full-precision reference, loaded again: `m` was quantized in place.
    LoadedModel ref = load_model(job.model, pool, {.keep_source_dtype = true});
    model::set_fast_kernels(ref.model, true, /*float_only=*/true);
    report("verify", 0, 0, "");
    out.verify = verify_allocation(*verify, ref.model, job.out, *alloc, pool);
  }
  out.warnings = report.warnings();
  return out;
}

}  // namespace calq::api
