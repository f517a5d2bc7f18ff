// calq::bisect and calq::calib_check (calq/bisect.h): pipeline/bisect.h and calib/stats_drift.h
// over models loaded by api/model_source.h.
#include "calq/bisect.h"

#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "api/calibration_data.h"
#include "api/model_source.h"
#include "api/reporter.h"
#include "calib/stats_drift.h"
#include "core/error.h"
#include "core/thread_pool.h"
#include "io/dataset/calib_data.h"
#include "model/block_topology.h"
#include "model/model.h"
#include "pipeline/bisect.h"
#include "pipeline/model_quantize.h"
#include "pipeline/sequential.h"

namespace calq {
namespace {


std::vector<std::string> names_of(const std::vector<pipeline::WeightRef>& refs, std::span<const size_t> idx) {
  std::vector<std::string> out;
  for (const size_t i : idx) out.push_back(refs[i].name);
  return out;
}

std::string bisect_json(const BisectJob& job, const BisectReport& r) {
  nlohmann::ordered_json steps = nlohmann::ordered_json::array();
  for (const BisectStep& s : r.steps) steps.push_back({{"restored", s.restored}, {"kld", s.kld}, {"ok", s.ok}});
  const nlohmann::ordered_json j{{"model", job.model}, {"quantized", job.quantized}, {"eval_text", job.eval_text},
                                 {"ctx", job.ctx}, {"windows", r.windows}, {"restore_format", r.restore_format},
                                 {"candidates", r.candidates.size()}, {"kld_q", r.kld_q}, {"goal", r.goal},
                                 {"found", r.found}, {"restored", r.restored}, {"kld", r.kld},
                                 {"evaluations", r.evaluations}, {"steps", steps}};
  return j.dump(2) + "\n";
}

// Statistics of the linear inputs over windows of one text (a layer-sequential pass of the float
// model: absmax and mean |x| per channel).
calib::CalibrationStats activation_stats(model::Model& m, const std::string& path, const io::Tokenizer& tokenizer,
                                         const CalibCheckJob& job, api::Reporter& report, ThreadPool& pool) {
  // "generate:N": samples of the model itself (data-free calibration, api/calibration_data.h).
  std::optional<io::CalibrationSet> generated = api::generate_calibration(
      {.text = path, .seq_len = job.seq_len, .seed = job.seed}, tokenizer, m, pool, report);
  const io::CalibrationSet set =
      generated ? std::move(*generated)
                : io::load_calibration_set(path, tokenizer,
                                           {.samples = job.samples, .seq_len = job.seq_len, .seed = job.seed,
                                            .separator = m.config.eos_token_id});
  report("calibrate", 0, 0,
         fmt::format("{} samples x {} tokens of {} ({} windows)", set.samples.size(), job.seq_len, path, set.n_windows));
  return pipeline::run_layer_sequential(
             m, set.samples,
             {.stats = calib::StatSet().with(calib::StatKind::kAbsMax).with(calib::StatKind::kMeanAbs),
              .true_sequential = false},
             nullptr, pool)
      .stats;
}

}  // namespace

BisectReport bisect(const BisectJob& job) {
  if (job.model.empty()) fail(ErrorKind::kInvalidArgument, "bisect: no model given");
  if (job.quantized.empty()) fail(ErrorKind::kInvalidArgument, "bisect needs the quantized model to search in");
  if (job.eval_text.empty()) fail(ErrorKind::kInvalidArgument, "bisect: no eval_text given");
  if (job.tolerance && !(*job.tolerance > 0)) {
    fail(ErrorKind::kInvalidArgument, "bisect: tolerance must be > 0, got {}", *job.tolerance);
  }
  if (!(job.target >= 0)) fail(ErrorKind::kInvalidArgument, "bisect: target must be >= 0, got {}", job.target);
  if (job.ctx < 2) fail(ErrorKind::kInvalidArgument, "bisect: ctx must be at least 2, got {}", job.ctx);
  if (job.max_windows < 0) fail(ErrorKind::kInvalidArgument, "bisect: max_windows must be >= 0");
  const Format* restore_format = job.restore_format.empty() ? nullptr : &format_by_name(job.restore_format);
  api::check_output_folder(job.json_out);
  api::Reporter report(job.progress);

  ThreadPool pool(job.threads);
  report("load", 0, 0, fmt::format("loading {} and {}", job.model, job.quantized));
  api::LoadedModel fp = api::load_model(job.model, pool, {.keep_source_dtype = true});
  api::LoadedModel q = api::load_model(job.quantized, pool, {.keep_source_dtype = true});
  pipeline::check_same_layout(fp.model, q.model);
  // Hybrids copy their weights' kernel choice from both models (and the requantized donor below).
  model::set_fast_kernels(fp.model, !job.exact);
  model::set_fast_kernels(q.model, !job.exact);
  std::string source;
  const io::Tokenizer tokenizer = api::load_model_tokenizer(fp.location, fp.gguf.get(), job.tokenizer, source);
  const std::vector<int32_t> ids = api::load_eval_ids(job.eval_text, tokenizer);

  // The donor of restored tensors: the FP model, or the FP model rounded to restore_format.
  std::optional<api::LoadedModel> requantized;
  if (restore_format != nullptr) {
    requantized.emplace(api::load_model(job.model, pool, {.keep_source_dtype = true}));
    pipeline::quantize_model(requantized->model, {.format = restore_format}, {}, {}, nullptr, nullptr, pool);
    model::set_fast_kernels(requantized->model, !job.exact);
  }
  const model::Model& donor = requantized ? requantized->model : fp.model;
  pipeline::KldEvaluator evaluator(fp.model, ids, {.ctx = job.ctx, .max_windows = job.max_windows}, pool);
  BisectReport out{.windows = evaluator.n_windows(),
                   .restore_format = restore_format != nullptr ? restore_format->name() : "f32"};
  report("bisect", 0, 0,
         fmt::format("{} vs {} on {} windows x {} tokens of {}, restoring to {}", job.quantized, job.model,
                     evaluator.n_windows(), job.ctx, job.eval_text,
                     restore_format != nullptr ? restore_format->name() : "full precision"));
  int64_t step = 0;
  const pipeline::BisectResult r = pipeline::bisect_restore(
      q.model, donor,
      {.target = job.target,
       .tolerance = job.tolerance,
       .on_step =
           [&](const pipeline::BisectStep& s) {
             report("bisect", ++step, 0, fmt::format("eval: restore {} -> KLD {:.6g}", s.restored.size(), s.kld));
           }},
      evaluator);
  for (const pipeline::WeightRef& w : r.candidates) out.candidates.push_back(w.name);
  for (const pipeline::WeightRef& w : r.restored) out.restored.push_back(w.name);
  for (const pipeline::BisectStep& s : r.search.steps) {
    out.steps.push_back({.restored = names_of(r.candidates, s.restored), .kld = s.kld, .ok = s.ok});
  }
  out.kld_q = r.search.kld_q;
  out.goal = r.search.goal;
  out.found = r.search.found;
  out.kld = r.search.kld;
  out.evaluations = r.search.evaluations;
  out.json = bisect_json(job, out);
  if (!job.json_out.empty()) api::write_text_atomic(job.json_out, out.json);
  return out;
}

CalibCheckReport calib_check(const CalibCheckJob& job) {
  if (job.model.empty() || job.calib.empty() || job.eval_text.empty()) {
    fail(ErrorKind::kInvalidArgument, "calib_check needs a model, a calib text and an eval_text");
  }
  if (!(job.threshold > 0)) fail(ErrorKind::kInvalidArgument, "calib_check: threshold must be > 0, got {}", job.threshold);
  api::check_output_folder(job.json_out);
  api::Reporter report(job.progress);
  ThreadPool pool(job.threads);
  api::LoadedModel m = api::load_model(job.model, pool, {.keep_source_dtype = true});
  std::string source;
  const io::Tokenizer tokenizer = api::load_model_tokenizer(m.location, m.gguf.get(), job.tokenizer, source);
  const calib::CalibrationStats a = activation_stats(m.model, job.calib, tokenizer, job, report, pool);
  const calib::CalibrationStats b = activation_stats(m.model, job.eval_text, tokenizer, job, report, pool);
  const calib::DriftReport r = calib::compare_activation_stats(a, b, {.threshold = job.threshold});

  CalibCheckReport out{.score = r.score, .absmax_score = r.absmax_score, .threshold = r.threshold,
                       .flagged = r.flagged};
  nlohmann::ordered_json sites = nlohmann::ordered_json::array();
  for (const calib::SiteDrift& s : r.sites) {
    SiteDrift d{.layer = s.layer, .site = std::string(model::site_name(s.site)), .cols = s.cols,
                .absmax_median = s.absmax_median, .absmax_max = s.absmax_max, .mean_abs_median = s.mean_abs_median,
                .mean_abs_max = s.mean_abs_max, .worst_channel = s.worst_channel, .flagged = s.flagged};
    sites.push_back({{"layer", d.layer}, {"site", d.site}, {"cols", d.cols}, {"absmax_median", d.absmax_median},
                     {"absmax_max", d.absmax_max}, {"mean_abs_median", d.mean_abs_median},
                     {"mean_abs_max", d.mean_abs_max}, {"worst_channel", d.worst_channel}, {"flagged", d.flagged}});
    out.sites.push_back(std::move(d));
  }
  if (r.flagged) {
    report.warn(fmt::format("{} does not match {}: the activations it produces drift {:.3f} > {:.3f} from those of "
                            "the evaluation text; statistics from it may tune the quantization for other inputs",
                            job.calib, job.eval_text, r.score, r.threshold));
  }
  const nlohmann::ordered_json j{{"model", job.model}, {"calib", job.calib}, {"eval_text", job.eval_text},
                                 {"samples", job.samples}, {"seq_len", job.seq_len}, {"score", r.score},
                                 {"absmax_score", r.absmax_score}, {"threshold", r.threshold},
                                 {"flagged", r.flagged}, {"sites", sites}};
  out.json = j.dump(2) + "\n";
  if (!job.json_out.empty()) api::write_text_atomic(job.json_out, out.json);
  return out;
}

}  // namespace calq
