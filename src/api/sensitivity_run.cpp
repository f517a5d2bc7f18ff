#include "api/sensitivity_run.h"

#include <fmt/format.h>

#include <deque>
#include <memory>
#include <optional>

#include "calib/observer.h"
#include "api/calibration_data.h"
#include "api/model_source.h"
#include "core/error.h"
#include "model/model.h"
#include "pipeline/layer_methods.h"
#include "pipeline/model_quantize.h"
#include "quant/method.h"

namespace calq::api {
namespace {

bool fits(const Format& f, const model::LinearWeight& w) { return f.can_store(w.rows(), w.cols()); }

}  // namespace

pipeline::SensitivityMap measure_sensitivity_map(const SensitivityRequest& r, ThreadPool& pool, Reporter& report,
                                                 std::string* tokenizer_source) {
  if (r.formats.empty()) fail(ErrorKind::kInvalidArgument, "sensitivity: no format given");
  for (const quant::MethodStep& s : r.recipe.steps) {
    // Transforms fold scales into norms and neighbours: one such tensor swapped alone into the FP
    // model would not be the tensor the method meant. Activation schemes change no weight.
    if (s.stage() != quant::MethodStage::kWeightQuantizer) {
      fail(ErrorKind::kInvalidArgument, "method {}: sensitivity swaps single tensors, so only weight quantizers "
           "({}) apply", r.recipe.to_string(), quant::method_names(quant::MethodStage::kWeightQuantizer));
    }
  }
  const bool has_calib = r.calib != nullptr && !r.calib->text.empty();
  if (has_calib && !r.stats.empty()) {
    fail(ErrorKind::kInvalidArgument, "give either a calibration text (calibrate now) or a statistics file, not both");
  }
  if (r.recipe.has("gptq") && !has_calib && r.stats.empty()) {
    fail(ErrorKind::kInvalidArgument, "method gptq needs a calibration text or a statistics file (a Hessian)");
  }
  if (r.ctx < 2) fail(ErrorKind::kInvalidArgument, "sensitivity ctx must be at least 2, got {}", r.ctx);

  LoadedModel fp = load_model(r.model, pool, {.keep_source_dtype = true});
  model::set_fast_kernels(fp.model, !r.exact);  // the hybrids copy the flags of both models
  std::string source;
  const io::Tokenizer tokenizer =
      load_model_tokenizer(fp.location, fp.gguf.get(), r.calib != nullptr ? r.calib->tokenizer : "", source);
  if (tokenizer_source != nullptr) *tokenizer_source = source;
  const std::vector<int32_t> ids = load_eval_ids(r.eval_text, tokenizer);

  // Statistics of the float model, shared by every format (float-input calibration).
  std::optional<calib::CalibrationStats> stats;
  if (!r.stats.empty()) {
    stats.emplace(calib::read_stats_file(r.stats));
    pipeline::check_stats_match(*stats, fp.model, r.stats);
  } else if (has_calib) {
    const io::CalibrationSet set = load_calibration(*r.calib, tokenizer, fp.model, pool, report);
    calib::StatSet kinds = calib::StatSet().with(calib::StatKind::kMeanSq).with(calib::StatKind::kAbsMax);
    for (const calib::StatKind k : pipeline::required_stats(r.recipe, pipeline::ActivationScheme::kNone).kinds()) {
      kinds = kinds.with(k);
    }
    report("sensitivity", 0, 0, fmt::format("calibrating on {} samples of {}", set.samples.size(), r.calib->text));
    stats.emplace(pipeline::run_layer_sequential(fp.model, set.samples, {.stats = kinds, .true_sequential = false},
                                                 nullptr, pool)
                      .stats);
  }

  const std::unique_ptr<calib::Observer> observer = calib::make_observer(r.observer, {});
  std::deque<LoadedModel> quantized;  // stable addresses for the variants
  std::vector<pipeline::QuantizedVariant> variants;
  for (const Format* format : r.formats) {
    report("sensitivity", 0, 0, fmt::format("quantizing {} to {} ({})", r.model, format->name(), r.recipe.to_string()));
    LoadedModel& q = quantized.emplace_back(load_model(r.model, pool, {.keep_source_dtype = true}));
    pipeline::ModelQuantizeOptions options{.format = format, .observer = observer.get(),
                                           .use_importance = r.use_importance, .recipe = r.recipe};
    // The head in the same format when it fits, so its entry measures that format too.
    if (fits(*format, q.model.embedding) && fits(*format, q.model.output)) options.head_format = format;
    pipeline::quantize_model(q.model, options, {}, {}, stats ? &*stats : nullptr, nullptr, pool);
    model::set_fast_kernels(q.model, !r.exact);
    variants.push_back({.format = format, .model = &q.model});
  }

  pipeline::KldEvaluator evaluator(fp.model, ids,
                                   {.ctx = r.ctx, .max_windows = r.max_windows,
                                    .on_progress = [&](int64_t done, int64_t total) {
                                      report("forward passes", done, total);
                                    }},
                                   pool);
  report("sensitivity", 0, 0, fmt::format("{} windows x {} tokens of {} ({}), {} threads", evaluator.n_windows(), r.ctx,
                                          r.eval_text, source, pool.num_threads()));
  pipeline::SensitivityMap map = pipeline::measure_sensitivity(
      fp.model, variants, {.granularity = r.granularity, .include_head = r.include_head}, evaluator);
  return map;
}

}  // namespace calq::api
