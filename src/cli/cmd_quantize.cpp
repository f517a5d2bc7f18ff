// `calq quantize`: a whole model to a GGUF file.
//  * --type MIX: llama.cpp's mixes, GGUF in, GGUF out, optional imatrix (pipeline/gguf_quantize.h).
//  * --format FORMAT: any registered format, Hugging Face or GGUF in, with calibration (--calib or
//    --stats), a range observer and per-tensor rules (pipeline/model_quantize.h); the output is a
//    GGUF llama.cpp loads when every type is GGUF-native, else a calq GGUF (docs/formats.md).
//  * --target-bpw B --candidates LIST --sensitivity FILE: the --format form with one exact rule per
//    tensor from the bit allocation (pipeline/bit_alloc.h, cli/quantize_target.h); --format, when
//    given, is the format of linear weights outside the map.
//
// Flag parsing (QuantizeFlags, register_quantize) and the work are kept apart per form.
#include <fmt/format.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <span>
#include <optional>

#include "core/stopwatch.h"
#include "calib/collectors.h"
#include "calib/observer.h"
#include "cli/calib_flags.h"
#include "cli/commands.h"
#include "cli/model_paths.h"
#include "cli/quantize_target.h"
#include "cli/sensitivity_run.h"
#include "core/error.h"
#include "core/thread_pool.h"
#include "io/gguf.h"
#include "pipeline/gguf_quantize.h"
#include "pipeline/imatrix.h"
#include "pipeline/mix.h"
#include "pipeline/bit_alloc.h"
#include "pipeline/model_quantize.h"
#include "pipeline/sensitivity_report.h"
#include "quant/method.h"
#include "model/gguf_export.h"

namespace calq::cli {
namespace {

struct QuantizeFlags {
  std::string model;
  std::string out;
  std::string type;
  std::string imatrix;
  size_t threads = 0;
  bool force = false;
  bool quiet = false;
  // --format form
  std::string format;
  std::string method = "rtn";
  std::string observer = "minmax";
  double percentile = 99.99;
  std::vector<std::string> rules;
  std::string head_format;
  CalibFlags calib;
  std::string stats;
  bool float_inputs = false;
  bool no_importance = false;
  // method steps and their most used options
  std::string recipe;
  std::optional<double> damp;
  bool act_order = false;
  std::optional<double> sq_alpha;
  std::optional<uint64_t> rotate_seed;
  bool rotate_down = false;
  std::string act_quant = "none";
  float llm_int8_threshold = 6.0f;
  TargetFlags target;  // --target-bpw bit allocation
};

// The recipe from --method or --recipe, with the option flags written into their steps (a flag
// for a step the recipe does not have is an Error: it would silently do nothing). Each flag is
// one option of one method; the method checks its value like a recipe file's key.
quant::Recipe build_recipe(const QuantizeFlags& f) {
  if (!f.recipe.empty() && f.method != "rtn") {
    fail(ErrorKind::kInvalidArgument, "give either --method or --recipe, not both");
  }
  quant::Recipe r = f.recipe.empty() ? quant::parse_method_chain(f.method) : quant::read_recipe_file(f.recipe);
  const auto set = [&](const char* flag, const char* method, const char* key, const nlohmann::json& value) {
    if (!r.set_option(method, key, value)) {
      fail(ErrorKind::kInvalidArgument, "{} applies to the {} step, which {} does not have", flag, method, r.origin);
    }
  };
  if (f.damp) set("--damp", "gptq", "damp", *f.damp);
  if (f.act_order) set("--act-order", "gptq", "act_order", true);
  if (f.sq_alpha) set("--sq-alpha", "smoothquant", "alpha", *f.sq_alpha);
  if (f.rotate_seed) set("--rotate-seed", "rotate", "seed", *f.rotate_seed);
  if (f.rotate_down) set("--rotate-down", "rotate", "rotate_down", true);
  return r;
}

std::string type_name(uint32_t type) {
  const io::GgmlTypeInfo* info = io::ggml_type_info(type);
  return info != nullptr ? std::string(info->name) : fmt::format("type {}", type);
}

std::string shape_text(const std::vector<int64_t>& ne) {
  std::string s;
  for (size_t i = 0; i < ne.size(); ++i) s += (i ? ", " : "") + std::to_string(ne[i]);
  return "[" + s + "]";
}

// Everything checkable before reading tensors: the mix name, the input kind, the output path.
void check_paths(const QuantizeFlags& f, const ModelLocation& loc) {
  if (loc.format != ModelFormat::kGguf) {
    fail(ErrorKind::kUnsupported,
         "{}: Hugging Face folders are not yet accepted by calq quantize; give a GGUF file (F32/F16/BF16)", f.model);
  }
  const std::filesystem::path out(f.out);
  std::error_code ec;
  if (std::filesystem::exists(out, ec)) {
    if (std::filesystem::equivalent(out, loc.path, ec)) {
      fail(ErrorKind::kInvalidArgument, "{}: --out is the input model; choose another file", f.out);
    }
    if (!f.force) fail(ErrorKind::kInvalidArgument, "{}: output file exists; pass --force to overwrite it", f.out);
    if (std::filesystem::is_directory(out, ec)) fail(ErrorKind::kInvalidArgument, "{}: --out is a directory", f.out);
  }
  const std::filesystem::path dir = out.has_parent_path() ? out.parent_path() : std::filesystem::path(".");
  if (!std::filesystem::is_directory(dir, ec)) {
    fail(ErrorKind::kIo, "{}: the output folder {} does not exist", f.out, dir.string());
  }
}

void run_quantize_format(const QuantizeFlags& f);

void run_quantize(const QuantizeFlags& f) {
  check_target_flags(f.target);
  if (!f.format.empty() || f.target.active()) {
    if (!f.type.empty()) {
      fail(ErrorKind::kInvalidArgument, "give either --type (a llama.cpp mix) or {}, not both",
           f.target.active() ? "--target-bpw" : "--format");
    }
    if (!f.imatrix.empty()) {
      fail(ErrorKind::kInvalidArgument, "--imatrix goes with --type; with --format use --calib or --stats");
    }
    return run_quantize_format(f);
  }
  if (f.type.empty()) fail(ErrorKind::kInvalidArgument, "calq quantize needs --type MIX or --format FORMAT");
  const pipeline::QuantMix& mix = pipeline::mix_by_name(f.type);
  const ModelLocation loc = resolve_model(f.model);
  check_paths(f, loc);
  std::optional<pipeline::Imatrix> imatrix;
  if (!f.imatrix.empty()) imatrix.emplace(pipeline::read_imatrix(f.imatrix));

  ThreadPool pool(f.threads);
  const io::GgufFile in = io::GgufFile::open(loc.path);
  if (!f.quiet) {
    fmt::print(stderr, "calq quantize: {} -> {} ({}, {} threads{})\n", f.model, f.out, mix.name, pool.num_threads(),
               imatrix ? fmt::format(", imatrix {} with {} entries", f.imatrix, imatrix->entries.size()) : "");
  }
  const size_t width = std::to_string(in.tensors().size()).size();
  auto on_tensor = [&](const pipeline::TensorDone& d) {
    if (f.quiet) return;
    const pipeline::TensorPlan& p = *d.plan;
    std::string what = p.choice.quantize ? fmt::format("{} -> {}", type_name(p.from_type), type_name(p.choice.type))
                                         : fmt::format("{} (copied)", type_name(p.from_type));
    if (p.choice.fell_back) what += " (fallback: row length)";
    if (d.used_importance) what += " +imatrix";
    fmt::print(stderr, "[{:>{}}/{}] {:<36} {:<18} {:<24} {:7.3f} s\n", d.done, width, d.total, p.name,
               shape_text(p.ne), what, d.seconds);
  };
  const pipeline::QuantizeGgufResult r = pipeline::quantize_gguf(
      in, f.out, {.mix = &mix, .imatrix = imatrix ? &*imatrix : nullptr, .on_tensor = on_tensor}, pool);

  if (imatrix && r.n_with_importance < r.n_quantized) {
    fmt::print(stderr, "calq quantize: warning: {} of {} quantized tensors had no imatrix entry\n",
               r.n_quantized - r.n_with_importance, r.n_quantized);
  }
  if (r.n_fallback > 0) {
    fmt::print(stderr, "calq quantize: {} tensors fell back to another type (row length not a multiple of the block)\n",
               r.n_fallback);
  }
  constexpr double kMiB = 1024.0 * 1024.0;
  uint64_t elements = 0;
  for (const auto& t : in.tensors()) elements += static_cast<uint64_t>(t.element_count());
  fmt::print("wrote {}: {} ({}), {} tensors, {} quantized{}\n", f.out, mix.name, mix.description, r.plan.size(),
             r.n_quantized, imatrix ? fmt::format(" ({} with imatrix)", r.n_with_importance) : "");
  fmt::print("size  {:.2f} MiB -> {:.2f} MiB ({:.2f} bits per weight)\n", r.bytes_in / kMiB, r.bytes_out / kMiB,
             elements > 0 ? 8.0 * static_cast<double>(r.bytes_out) / static_cast<double>(elements) : 0.0);
  fmt::print("time  {:.2f} s convert, {:.2f} s encode, {:.2f} s write\n", r.seconds_convert, r.seconds_encode,
             r.seconds_write);
}

std::string recipe_text(const QuantizeFlags& f, const pipeline::ModelQuantizeOptions& o, bool calibrated,
                        const pipeline::TargetAllocation* alloc) {
  std::string r = fmt::format("method={};format={};observer={}", o.recipe.to_string(),
                              alloc != nullptr && f.format.empty() ? "alloc" : o.format->name(), f.observer);
  bool with_options = false;
  for (const auto& step : o.recipe.steps) with_options = with_options || !step.options.empty();
  if (with_options) r += ";steps=" + o.recipe.to_json()["steps"].dump();
  if (o.act != pipeline::ActivationScheme::kNone) {
    r += fmt::format(";act_quant={}", pipeline::activation_scheme_name(o.act));
    if (o.act == pipeline::ActivationScheme::kLlmInt8) r += fmt::format(";threshold={}", o.llm_int8_threshold);
  }
  if (f.observer == "percentile") r += fmt::format(";percentile={}", f.percentile);
  if (!f.head_format.empty()) r += ";head=" + f.head_format;
  for (const auto& rule : f.rules) r += ";rule=" + rule;
  if (alloc != nullptr) {
    const std::string map_source =
        f.target.sensitivity.empty()
            ? fmt::format("measured:{}:{}{}", std::filesystem::path(f.target.sensitivity_text).filename().string(),
                          f.target.sensitivity_windows,
                          f.target.sensitivity_ctx == 512 ? "" : fmt::format(":ctx{}", f.target.sensitivity_ctx))
            : std::filesystem::path(f.target.sensitivity).filename().string();
    r += fmt::format(";target_bpw={};candidates={};sensitivity={};predicted_kld={:.6g}", *f.target.target_bpw,
                     f.target.candidates, map_source, alloc->predicted_kld());
    for (const auto& rule : alloc->rule_texts()) r += ";rule=" + rule;
  }
  if (calibrated) {
    r += fmt::format(";calib={};samples={};seq_len={};seed={};sequential={}",
                     std::filesystem::path(f.calib.calib).filename().string(), f.calib.samples, f.calib.seq_len,
                     f.calib.seed, f.float_inputs ? "float" : "true");
  } else if (!f.stats.empty()) {
    r += ";stats=" + std::filesystem::path(f.stats).filename().string();
  }
  r += fmt::format(";importance={}", f.no_importance ? "off" : "e[x^2]");
  return r;
}

void print_method_events(const std::vector<pipeline::MethodEvent>& events) {
  for (const auto& e : events) fmt::print(stderr, "  {}\n", quant::method_by_name(e.step).event_text(e));
}

// --target-bpw with --sensitivity-text: the map measured now over the candidates, with this run's
// method, statistics and observer (cli/sensitivity_run.h), in the form a map file is read.
pipeline::SensitivityFile measure_target_map(const QuantizeFlags& f, const std::vector<const Format*>& candidates,
                                             const quant::Recipe& recipe, ThreadPool& pool) {
  const pipeline::SensitivityMap map = measure_sensitivity_map(
      {.model = f.model, .eval_text = f.target.sensitivity_text, .formats = candidates, .recipe = recipe,
       .observer = f.observer, .calib = &f.calib, .stats = f.stats, .use_importance = !f.no_importance,
       .include_head = f.head_format.empty(), .ctx = f.target.sensitivity_ctx,
       .max_windows = f.target.sensitivity_windows, .quiet = f.quiet,
       .progress_prefix = "calq quantize: sensitivity"},
      pool);
  const pipeline::SensitivityMeta meta{.model = f.model, .eval_text = f.target.sensitivity_text,
                                       .method = recipe.to_string()};
  return pipeline::parse_sensitivity_file(pipeline::sensitivity_json(map, meta).dump(),
                                          "the sensitivity map measured on " + f.target.sensitivity_text);
}

void run_quantize_format(const QuantizeFlags& f) {
  if (!f.calib.calib.empty() && !f.stats.empty()) {
    fail(ErrorKind::kInvalidArgument, "give either --calib (calibrate now) or --stats (reuse a statistics file)");
  }
  std::vector<const Format*> candidates;
  std::optional<pipeline::SensitivityFile> sensitivity;
  if (f.target.active()) {
    candidates = parse_candidates(f.target.candidates);
    if (!f.target.sensitivity.empty()) sensitivity.emplace(pipeline::read_sensitivity_file(f.target.sensitivity));
  }
  // With --target-bpw and no --format every linear weight gets an allocation rule; the first
  // candidate only stands in as the main format the plan requires.
  pipeline::ModelQuantizeOptions options{.format = f.format.empty() ? candidates.at(0) : &format_by_name(f.format)};
  for (const auto& rule : f.rules) options.rules.push_back(pipeline::parse_tensor_rule(rule));
  if (!f.head_format.empty()) options.head_format = &format_by_name(f.head_format);
  const std::unique_ptr<calib::Observer> observer =
      calib::make_observer(f.observer, {.percentile = f.percentile});
  options.observer = observer.get();
  options.use_importance = !f.no_importance;
  options.recipe = build_recipe(f);
  options.act = pipeline::parse_activation_scheme(f.act_quant);
  options.llm_int8_threshold = f.llm_int8_threshold;
  if (!(f.llm_int8_threshold > 0)) fail(ErrorKind::kInvalidArgument, "--llm-int8-threshold must be > 0");

  ThreadPool pool(f.threads);
  check_output_path(f.out, resolve_model(f.model).path, f.force);
  if (f.target.active() && !sensitivity) sensitivity.emplace(measure_target_map(f, candidates, options.recipe, pool));
  std::optional<calib::CalibrationStats> stats;
  if (!f.stats.empty()) stats.emplace(calib::read_stats_file(f.stats));
  cli::LoadedModel m = load_model_for_calibration(f.model, pool);
  if (stats) pipeline::check_stats_match(*stats, m.model, f.stats);
  std::optional<pipeline::TargetAllocation> alloc;
  std::optional<VerifyPlan> verify;
  if (sensitivity) {
    const double bpw = *f.target.target_bpw;
    if (f.head_format.empty()) {
      options.head_format = pipeline::default_head_format(bpw, m.model.embedding.rows(), m.model.embedding.cols());
    }
    alloc.emplace(pipeline::allocate_to_target(m.model, options, *sensitivity,
                                               {.target_bpw = bpw, .candidates = candidates,
                                                .allocate_head = f.head_format.empty(),
                                                .map_must_cover = f.format.empty()}));
    for (const auto& rule : alloc->rule_texts()) options.rules.push_back(pipeline::parse_tensor_rule(rule));
    fmt::print("{}", allocation_report(*alloc, *sensitivity, bpw));
    if (!f.target.verify_text.empty()) {
      std::string source;
      const io::Tokenizer tokenizer = load_model_tokenizer(m.location, m.gguf.get(), f.calib.tokenizer, source);
      verify.emplace(plan_verify(f.target, *sensitivity, tokenizer));
    }
  }
  // Fail on rules and shapes before the (long) calibration.
  const std::vector<pipeline::TensorAssignment> plan = pipeline::plan_model_quantization(m.model, options);

  std::optional<io::CalibrationSet> set;
  std::string tokenizer_source;
  if (!f.calib.calib.empty()) {
    const io::Tokenizer tokenizer = load_model_tokenizer(m.location, m.gguf.get(), f.calib.tokenizer, tokenizer_source);
    set.emplace(load_calibration(f.calib, tokenizer, m.model.config, f.quiet));
  } else if (!f.quiet && f.stats.empty()) {
    fmt::print(stderr, "calq quantize: no --calib or --stats: rounding without importance statistics\n");
  }
  if (!f.quiet) {
    fmt::print(stderr, "calq quantize: {} -> {} ({} {}, observer {}, {} threads{})\n", f.model, f.out,
               options.recipe.to_string(),
               options.format->name(), f.observer, pool.num_threads(),
               set ? fmt::format(", {} samples x {} tokens", set->samples.size(), f.calib.seq_len) : "");
  }
  const auto t0 = std::chrono::steady_clock::now();
  const size_t width = std::to_string(plan.size()).size();
  size_t done = 0;
  const pipeline::ModelQuantizeResult r = pipeline::quantize_model(
      m.model, options, set ? std::span<const std::vector<int32_t>>(set->samples) : std::span<const std::vector<int32_t>>{},
      {.stats = calib::StatSet().with(calib::StatKind::kMeanSq).with(calib::StatKind::kAbsMax),
       .true_sequential = !f.float_inputs,
       .on_layer =
           [&](const pipeline::LayerProgress& p) {
             if (!f.quiet) {
               fmt::print(stderr, "  layer {}/{}: statistics {:.2f} s, quantize {:.2f} s, outputs {:.2f} s\n",
                          p.layer + 1, p.n_layers, p.seconds_stats, p.seconds_quantize, p.seconds_outputs);
             }
           }},
      stats ? &*stats : nullptr,
      [&](const pipeline::QuantizeProgress& p) {
        ++done;
        if (f.quiet) return;
        const pipeline::TensorAssignment& a = *p.tensor;
        fmt::print(stderr, "[{:>{}}/{}] {:<28} [{}, {}] -> {}{}{}\n", done, width, plan.size(), a.name, a.rows, a.cols,
                   a.format != nullptr ? a.format->name() : std::string("f32"), a.fell_back ? " (fallback)" : "",
                   p.used_importance ? " +importance" : "");
      },
      pool);
  const double seconds = seconds_since(t0);

  model::GgufExportOptions export_options;
  export_options.extra_metadata.emplace_back(
      "calq.recipe", io::GgufValue::of_string(recipe_text(f, options, set.has_value(), alloc ? &*alloc : nullptr)));
  if (alloc) {
    // Checked before anything is written: the allocation's accounting is exact, so this only
    // fails when a method changed how a fixed tensor is stored.
    const double bpw = m.model.bits_per_weight();
    if (bpw > *f.target.target_bpw) {
      fail(ErrorKind::kInvalidArgument,
           "the quantized model has {:.4f} bits per weight, above --target-bpw {} (predicted {:.4f}); nothing written",
           bpw, *f.target.target_bpw, alloc->predicted_bpw());
    }
    if (m.model.storage_bytes() != alloc->total_bytes()) {
      fmt::print(stderr, "calq quantize: note: {} bytes stored, the allocation counted {}\n", m.model.storage_bytes(),
                 alloc->total_bytes());
    }
  }
  if (set) export_options.extra_metadata.emplace_back("calq.calib_sha256", io::GgufValue::of_string(set->file_sha256));
  if (stats) {
    export_options.extra_metadata.emplace_back("calq.calib_sha256", io::GgufValue::of_strings(stats->calib_sha256));
  }
  model::write_gguf_model(m.model, f.out, export_options, pool);

  fmt::print("wrote {}: {} ({}), {:.4f} bits per weight, {} tensors quantized ({} with importance)\n", f.out,
             alloc ? "bit allocation" : options.format->name(), options.recipe.to_string(), m.model.bits_per_weight(),
             r.plan.size(),
             r.n_with_importance);
  if (!f.quiet) print_method_events(r.events);
  if (r.calibration) {
    fmt::print("calibration {} samples x {} tokens: {:.2f} s in forward passes ({}), activations {:.1f} MiB\n",
               r.calibration->samples, r.calibration->seq_len, r.calibration->seconds_forward,
               f.float_inputs ? "float inputs" : "true sequential: each layer twice",
               static_cast<double>(r.calibration->activation_bytes) / (1024.0 * 1024.0));
  }
  fmt::print("time {:.2f} s (encode {:.2f} s), peak RSS {:.1f} MiB\n", seconds, r.seconds_quantize, peak_rss_mib());
  if (alloc) {
    fmt::print("target      {} bits per weight: {:.4f} written, predicted KLD {:.6g}\n", *f.target.target_bpw,
               m.model.bits_per_weight(), alloc->predicted_kld());
  }
  if (verify) {
    // The full-precision reference, loaded again: `m` was quantized in place.
    const cli::LoadedModel ref = load_model_for_calibration(f.model, pool);
    verify_allocation(*verify, ref.model, f.out, *alloc, pool);
  }
}

}  // namespace

void register_quantize(CLI::App& app) {
  auto flags = std::make_shared<QuantizeFlags>();
  CLI::App* cmd = app.add_subcommand("quantize", "Quantize a model into a GGUF file");
  cmd->add_option("--model", flags->model,
                  "Model: a GGUF file (F32/F16/BF16 tensors) for --type; a Hugging Face folder or GGUF for --format")
      ->required();
  cmd->add_option("--out", flags->out, "Output GGUF file")->required();
  cmd->add_option("--type", flags->type,
                  "Mix: llama.cpp's q2_k, q3_k_s/m/l, q4_k_s/m, q5_k_s/m, q6_k, q8_0, or one type for every "
                  "weight (q4_0, q4_1, q5_0, q5_1, q3_k, q4_k, q5_k, iq4_nl, iq4_xs, f16, bf16, pure-<type>)");
  cmd->add_option("--format", flags->format,
                  "Any registered number format for the linear weights (e.g. int4-g128-asym, nf4-dq, fp8-e4m3, q4_k; "
                  "docs/formats.md lists them)");
  cmd->add_option("--method", flags->method,
                  "Method chain, e.g. rtn, gptq, awq, awq+gptq, rotate+gptq, smoothquant (transforms first, then "
                  "rtn or gptq; rtn is appended when no weight quantizer is named)")
      ->capture_default_str();
  cmd->add_option("--recipe", flags->recipe,
                  "Recipe file (JSON): {\"steps\": [{\"method\": \"awq\"}, {\"method\": \"gptq\", \"act_order\": true}]}");
  cmd->add_option("--damp", flags->damp, "gptq: dampening, times the mean diagonal of the Hessian (default 0.01)");
  cmd->add_flag("--act-order", flags->act_order, "gptq: quantize columns by descending Hessian diagonal");
  cmd->add_option("--sq-alpha", flags->sq_alpha, "smoothquant: migration strength alpha in [0, 1] (default 0.5)");
  cmd->add_option("--rotate-seed", flags->rotate_seed, "rotate: seed of the random Hadamard signs (default 0)");
  cmd->add_flag("--rotate-down", flags->rotate_down, "rotate: also rotate the MLP intermediate online");
  cmd->add_option("--act-quant", flags->act_quant,
                  "Activation quantization simulated at every linear input: none, int8-token (dynamic), int8-tensor "
                  "(static, from calibration), llm-int8 (outlier columns in float)")
      ->capture_default_str();
  cmd->add_option("--llm-int8-threshold", flags->llm_int8_threshold, "llm-int8: outlier threshold on |x|")
      ->capture_default_str();
  cmd->add_option("--observer", flags->observer, "Weight range observer: minmax, percentile, kl, mse")
      ->capture_default_str();
  cmd->add_option("--percentile", flags->percentile, "Percentile of the percentile observer")->capture_default_str();
  cmd->add_option("--rule", flags->rules,
                  "Per-tensor format 'REGEX=FORMAT' (repeatable, first match wins; FORMAT may be f32), matched on "
                  "GGUF or Hugging Face tensor names");
  cmd->add_option("--head-format", flags->head_format,
                  "Format of the token embedding and output head (default: q6_k below 6.5 bits, else q8_0)");
  add_calib_flags(cmd, flags->calib);
  add_target_flags(cmd, flags->target);
  cmd->add_option("--stats", flags->stats, "Statistics file from calq calibrate (instead of --calib)");
  cmd->add_flag("--float-inputs", flags->float_inputs,
                "Calibrate every layer on the float model's activations (default: true sequential, each layer "
                "sees the outputs of the already quantized layers before it)");
  cmd->add_flag("--no-importance", flags->no_importance, "Do not weight the rounding error by E[x^2]");
  cmd->add_option("--imatrix", flags->imatrix, "Importance matrix (llama.cpp's imatrix.dat or GGUF imatrix)");
  cmd->add_option("--threads", flags->threads, "Worker threads (0 = all cores)")->check(CLI::Range(0, 1024));
  cmd->add_flag("--force", flags->force, "Overwrite an existing output file");
  cmd->add_flag("--quiet,-q", flags->quiet, "No progress output on stderr");
  cmd->callback([flags] { run_quantize(*flags); });
}

}  // namespace calq::cli
