// `calq bisect`: which tensors of a quantized model, restored to full precision (or re-quantized
// to --restore-format), bring KL(FP ‖ hybrid) to the goal (pipeline/bisect.h), with the number of
// evaluations. `calq calib-check` (also `calq bisect --calib-check`): activation statistics of a
// calibration set against those of the evaluation text (calib/stats_drift.h).
#include <fmt/format.h>

#include <nlohmann/json.hpp>
#include <memory>
#include <optional>

#include "calib/stats_drift.h"
#include "cli/calib_flags.h"
#include "io/dataset/calib_data.h"
#include "cli/commands.h"
#include "core/error.h"
#include "core/thread_pool.h"
#include "pipeline/bisect.h"
#include "pipeline/model_quantize.h"
#include "pipeline/sequential.h"

namespace calq::cli {
namespace {

struct CalibCheckFlags {
  std::string model;
  std::string calib;
  std::string eval_text;
  int64_t samples = 32;
  int64_t seq_len = 512;
  uint64_t seed = 0;
  std::string tokenizer;
  double threshold = calib::kDefaultDriftThreshold;
  std::string json_out;
  size_t threads = 0;
  bool quiet = false;
};

struct BisectFlags {
  std::string model;
  std::string quantized;
  std::string eval_text;
  std::string tokenizer;
  std::optional<double> tolerance;
  double target = 0.0;
  std::string restore_format;
  int64_t ctx = 512;
  int64_t max_windows = 8;
  std::string json_out;
  size_t threads = 0;
  bool quiet = false;
  bool calib_check = false;
  CalibCheckFlags check;  // --calib-check: the same flags as calq calib-check
};

// ---- calib-check ----

calib::CalibrationStats activation_stats(model::Model& m, const std::string& path, const io::Tokenizer& tokenizer,
                                         const CalibCheckFlags& f, ThreadPool& pool) {
  const io::CalibrationSet set = io::load_calibration_set(
      path, tokenizer, {.samples = f.samples, .seq_len = f.seq_len, .seed = f.seed, .separator = m.config.eos_token_id});
  if (!f.quiet) {
    fmt::print(stderr, "calq calib-check: {} samples x {} tokens of {} ({} windows)\n", set.samples.size(), f.seq_len,
               path, set.n_windows);
  }
  return pipeline::run_layer_sequential(
             m, set.samples,
             {.stats = calib::StatSet().with(calib::StatKind::kAbsMax).with(calib::StatKind::kMeanAbs),
              .true_sequential = false},
             nullptr, pool)
      .stats;
}

void run_calib_check(const CalibCheckFlags& f) {
  if (f.model.empty() || f.calib.empty() || f.eval_text.empty()) {
    fail(ErrorKind::kInvalidArgument, "calib-check needs --model, --calib and --eval-text");
  }
  if (!(f.threshold > 0)) fail(ErrorKind::kInvalidArgument, "--threshold must be > 0, got {}", f.threshold);
  check_output_folder(f.json_out);
  ThreadPool pool(f.threads);
  api::LoadedModel m = api::load_model(f.model, pool, {.keep_source_dtype = true});
  std::string source;
  const io::Tokenizer tokenizer = load_model_tokenizer(m.location, m.gguf.get(), f.tokenizer, source);
  const calib::CalibrationStats a = activation_stats(m.model, f.calib, tokenizer, f, pool);
  const calib::CalibrationStats b = activation_stats(m.model, f.eval_text, tokenizer, f, pool);
  const calib::DriftReport r = calib::compare_activation_stats(a, b, {.threshold = f.threshold});

  fmt::print("{:<6} {:<9} {:>6} {:>14} {:>14} {:>14} {:>14}  {}\n", "layer", "site", "cols", "absmax med", "absmax max",
             "mean|x| med", "mean|x| max", "");
  nlohmann::ordered_json sites = nlohmann::ordered_json::array();
  for (const calib::SiteDrift& s : r.sites) {
    fmt::print("{:<6} {:<9} {:>6} {:>14.4f} {:>14.4f} {:>14.4f} {:>14.4f}  {}\n",
               s.layer < 0 ? std::string("head") : std::to_string(s.layer), calib::site_name(s.site), s.cols,
               s.absmax_median, s.absmax_max, s.mean_abs_median, s.mean_abs_max, s.flagged ? "DRIFT" : "");
    sites.push_back({{"layer", s.layer}, {"site", calib::site_name(s.site)}, {"cols", s.cols},
                     {"absmax_median", s.absmax_median}, {"absmax_max", s.absmax_max},
                     {"mean_abs_median", s.mean_abs_median}, {"mean_abs_max", s.mean_abs_max},
                     {"worst_channel", s.worst_channel}, {"flagged", s.flagged}});
  }
  fmt::print("drift score {:.4f} (mean|x|, median over channels, mean over sites; absmax {:.4f}), threshold {:.4f}\n",
             r.score, r.absmax_score, r.threshold);
  if (r.flagged) {
    fmt::print(stderr,
               "calq calib-check: warning: {} does not match {}: the activations it produces drift {:.3f} > {:.3f} "
               "from those of the evaluation text; statistics from it may tune the quantization for other inputs\n",
               f.calib, f.eval_text, r.score, r.threshold);
  } else {
    fmt::print("calibration set matches the evaluation text (drift within the threshold)\n");
  }
  if (!f.json_out.empty()) {
    nlohmann::ordered_json j{{"model", f.model}, {"calib", f.calib}, {"eval_text", f.eval_text},
                             {"samples", f.samples}, {"seq_len", f.seq_len}, {"score", r.score},
                             {"absmax_score", r.absmax_score}, {"threshold", r.threshold}, {"flagged", r.flagged},
                             {"sites", sites}};
    write_text_atomic(f.json_out, j.dump(2) + "\n");
  }
}

void add_calib_check_flags(CLI::App* cmd, CalibCheckFlags& f) {
  cmd->add_option("--samples", f.samples, "Windows drawn from each text")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  cmd->add_option("--seq-len", f.seq_len, "Tokens per window")->capture_default_str()->check(CLI::Range(int64_t{2}, int64_t{1} << 20));
  cmd->add_option("--seed", f.seed, "Seed of the window draw")->capture_default_str();
  cmd->add_option("--threshold", f.threshold, "Drift score above which the calibration set is flagged")
      ->capture_default_str();
}

// ---- bisect ----

std::string names_of(const std::vector<pipeline::WeightRef>& refs, std::span<const size_t> idx) {
  if (idx.empty()) return "nothing";
  if (idx.size() > 4) return fmt::format("{} tensors ({} .. {})", idx.size(), refs[idx.front()].name, refs[idx.back()].name);
  std::string s;
  for (const size_t i : idx) s += (s.empty() ? "" : ", ") + refs[i].name;
  return s;
}

void run_bisect(BisectFlags& f) {
  if (f.calib_check) {
    f.check.model = f.model;
    f.check.eval_text = f.eval_text;
    f.check.tokenizer = f.tokenizer;
    f.check.json_out = f.json_out;
    f.check.threads = f.threads;
    f.check.quiet = f.quiet;
    if (!f.quantized.empty()) fail(ErrorKind::kInvalidArgument, "--calib-check compares two texts; it takes no --quantized");
    return run_calib_check(f.check);
  }
  if (f.quantized.empty()) fail(ErrorKind::kInvalidArgument, "calq bisect needs --quantized Q.gguf (or --calib-check)");
  if (f.tolerance && !(*f.tolerance > 0)) fail(ErrorKind::kInvalidArgument, "--tolerance must be > 0, got {}", *f.tolerance);
  if (!(f.target >= 0)) fail(ErrorKind::kInvalidArgument, "--target must be >= 0, got {}", f.target);
  const Format* restore_format = f.restore_format.empty() ? nullptr : &format_by_name(f.restore_format);
  check_output_folder(f.json_out);

  ThreadPool pool(f.threads);
  api::LoadedModel fp = api::load_model(f.model, pool, {.keep_source_dtype = true});
  api::LoadedModel q = api::load_model(f.quantized, pool, {.keep_source_dtype = true});
  pipeline::check_same_layout(fp.model, q.model);
  std::string source;
  const io::Tokenizer tokenizer = load_model_tokenizer(fp.location, fp.gguf.get(), f.tokenizer, source);
  const std::vector<int32_t> ids = load_eval_ids(f.eval_text, tokenizer);

  // The donor of restored tensors: the FP model, or the FP model rounded to --restore-format.
  std::optional<api::LoadedModel> requantized;
  if (restore_format != nullptr) {
    requantized.emplace(api::load_model(f.model, pool, {.keep_source_dtype = true}));
    pipeline::quantize_model(requantized->model, {.format = restore_format}, {}, {}, nullptr, nullptr, pool);
  }
  const model::Model& donor = requantized ? requantized->model : fp.model;
  pipeline::KldEvaluator evaluator(fp.model, ids, {.ctx = f.ctx, .max_windows = f.max_windows}, pool);
  if (!f.quiet) {
    fmt::print(stderr, "calq bisect: {} vs {} on {} windows x {} tokens of {}, restoring to {}\n", f.quantized, f.model,
               evaluator.n_windows(), f.ctx, f.eval_text, restore_format ? restore_format->name() : "full precision");
  }
  const pipeline::BisectResult r = pipeline::bisect_restore(
      q.model, donor,
      {.target = f.target,
       .tolerance = f.tolerance,
       .on_step =
           [&](const pipeline::BisectStep& s) {
             if (f.quiet) return;
             fmt::print(stderr, "  eval: restore {} -> KLD {:.6g}\n", s.restored.size(), s.kld);
           }},
      evaluator);

  fmt::print("candidates  {} tensors of {} differ from the {}\n", r.candidates.size(), f.quantized,
             restore_format ? "restore format" : "full-precision model");
  fmt::print("KLD(Q)      {:.6g} nats/token; goal {:.6g} (target {:.6g} + tolerance {})\n", r.search.kld_q,
             r.search.goal, f.target, f.tolerance ? fmt::format("{:.6g}", *f.tolerance) : "default: half the gap");
  for (size_t i = 0; i < r.search.steps.size(); ++i) {
    const pipeline::BisectStep& s = r.search.steps[i];
    fmt::print("eval {:>3}    restore {:<60} KLD {:.6g} {}\n", i + 1, names_of(r.candidates, s.restored), s.kld,
               s.ok ? "ok" : "");
  }
  if (r.search.found) {
    fmt::print("found       {} tensor(s): {}\n", r.restored.size(), names_of(r.candidates, r.search.set));
  } else {
    fmt::print("not found   restoring all {} candidates does not reach the goal\n", r.candidates.size());
  }
  fmt::print("KLD         {:.6g} with the set restored, {} evaluations\n", r.search.kld, r.search.evaluations);
  if (!f.json_out.empty()) {
    nlohmann::ordered_json steps = nlohmann::ordered_json::array();
    for (const auto& s : r.search.steps) {
      std::vector<std::string> names;
      for (const size_t i : s.restored) names.push_back(r.candidates[i].name);
      steps.push_back({{"restored", names}, {"kld", s.kld}, {"ok", s.ok}});
    }
    std::vector<std::string> found;
    for (const auto& w : r.restored) found.push_back(w.name);
    nlohmann::ordered_json j{{"model", f.model}, {"quantized", f.quantized}, {"eval_text", f.eval_text},
                             {"ctx", f.ctx}, {"windows", evaluator.n_windows()},
                             {"restore_format", restore_format ? restore_format->name() : "f32"},
                             {"candidates", r.candidates.size()}, {"kld_q", r.search.kld_q}, {"goal", r.search.goal},
                             {"found", r.search.found}, {"restored", found}, {"kld", r.search.kld},
                             {"evaluations", r.search.evaluations}, {"steps", steps}};
    write_text_atomic(f.json_out, j.dump(2) + "\n");
  }
}

}  // namespace

void register_bisect(CLI::App& app) {
  auto flags = std::make_shared<BisectFlags>();
  CLI::App* cmd = app.add_subcommand(
      "bisect", "Find the fewest tensors of a quantized model whose restoration brings KLD to a goal");
  cmd->add_option("--model", flags->model, "Full-precision model: Hugging Face folder or GGUF file")->required();
  cmd->add_option("--quantized", flags->quantized, "Quantized model (GGUF) of the same architecture");
  cmd->add_option("--eval-text", flags->eval_text, "Evaluation text (plain text)")->required();
  cmd->add_option("--tolerance", flags->tolerance,
                  "Goal = target + tolerance (KLD, nats/token; default: half the gap between target and KLD(Q))");
  cmd->add_option("--target", flags->target, "KLD level to come back to (default 0: the full-precision model)")
      ->capture_default_str();
  cmd->add_option("--restore-format", flags->restore_format,
                  "Restore tensors re-quantized to this format (round to nearest) instead of full precision");
  cmd->add_option("--ctx", flags->ctx, "Tokens per evaluation window")->capture_default_str();
  cmd->add_option("--max-windows", flags->max_windows, "Evaluation windows (0 = the whole text)")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 30));
  cmd->add_option("--tokenizer", flags->tokenizer, "tokenizer.json instead of the model's own");
  cmd->add_option("--json", flags->json_out, "Write the steps and the result as JSON");
  cmd->add_flag("--calib-check", flags->calib_check,
                "Instead: compare the activation statistics of --calib with those of --eval-text (as calq calib-check)");
  cmd->add_option("--calib", flags->check.calib, "--calib-check: the calibration text");
  add_calib_check_flags(cmd, flags->check);
  cmd->add_option("--threads", flags->threads, "Worker threads (0 = all cores)")->check(CLI::Range(0, 1024));
  cmd->add_flag("--quiet,-q", flags->quiet, "No progress output on stderr");
  cmd->callback([flags] { run_bisect(*flags); });
}

void register_calib_check(CLI::App& app) {
  auto flags = std::make_shared<CalibCheckFlags>();
  CLI::App* cmd = app.add_subcommand(
      "calib-check", "Compare per-channel activation statistics of a calibration set with an evaluation text");
  cmd->add_option("--model", flags->model, "Full-precision model: Hugging Face folder or GGUF file")->required();
  cmd->add_option("--calib", flags->calib, "Calibration text")->required();
  cmd->add_option("--eval-text", flags->eval_text, "Evaluation text")->required();
  add_calib_check_flags(cmd, *flags);
  cmd->add_option("--tokenizer", flags->tokenizer, "tokenizer.json instead of the model's own");
  cmd->add_option("--json", flags->json_out, "Write the per-site drift as JSON");
  cmd->add_option("--threads", flags->threads, "Worker threads (0 = all cores)")->check(CLI::Range(0, 1024));
  cmd->add_flag("--quiet,-q", flags->quiet, "No progress output on stderr");
  cmd->callback([flags] { run_calib_check(*flags); });
}

}  // namespace calq::cli
