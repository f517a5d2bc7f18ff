// `calq bisect`: which tensors of a quantized model, restored to full precision (or re-quantized
// to --restore-format), bring KL(FP ‖ hybrid) to the goal (pipeline/bisect.h), with the number of
// evaluations. `calq calib-check` (also `calq bisect --calib-check`): activation statistics of a
// calibration set against those of the evaluation text (calib/stats_drift.h).
#include <fmt/format.h>

#include <memory>

#include "calq/bisect.h"
#include "cli/commands.h"
#include "cli/progress.h"
#include "core/error.h"

namespace calq::cli {
namespace {

struct CalibCheckFlags {
  CalibCheckJob job;
  bool quiet = false;
};

struct BisectFlags {
  BisectJob job;
  bool quiet = false;
  bool calib_check = false;
  CalibCheckJob check;  // --calib-check: the same flags as calq calib-check
};

// ---- calib-check ----

void run_calib_check(CalibCheckFlags& f) {
  f.job.progress = progress_printer("calq calib-check", f.quiet);
  const CalibCheckReport r = calib_check(f.job);
  fmt::print("{:<6} {:<9} {:>6} {:>14} {:>14} {:>14} {:>14}  {}\n", "layer", "site", "cols", "absmax med", "absmax max",
             "mean|x| med", "mean|x| max", "");
  for (const SiteDrift& s : r.sites) {
    fmt::print("{:<6} {:<9} {:>6} {:>14.4f} {:>14.4f} {:>14.4f} {:>14.4f}  {}\n",
               s.layer < 0 ? std::string("head") : std::to_string(s.layer), s.site, s.cols, s.absmax_median,
               s.absmax_max, s.mean_abs_median, s.mean_abs_max, s.flagged ? "DRIFT" : "");
  }
  fmt::print("drift score {:.4f} (mean|x|, median over channels, mean over sites; absmax {:.4f}), threshold {:.4f}\n",
             r.score, r.absmax_score, r.threshold);
  if (!r.flagged) fmt::print("calibration set matches the evaluation text (drift within the threshold)\n");
}

void add_calib_check_flags(CLI::App* cmd, CalibCheckJob& f) {
  cmd->add_option("--samples", f.samples, "Windows drawn from each text")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  cmd->add_option("--seq-len", f.seq_len, "Tokens per window")->capture_default_str()->check(CLI::Range(int64_t{2}, int64_t{1} << 20));
  cmd->add_option("--seed", f.seed, "Seed of the window draw")->capture_default_str();
  cmd->add_option("--threshold", f.threshold, "Drift score above which the calibration set is flagged")
      ->capture_default_str();
}

// ---- bisect ----

std::string names_of(const std::vector<std::string>& names) {
  if (names.empty()) return "nothing";
  if (names.size() > 4) return fmt::format("{} tensors ({} .. {})", names.size(), names.front(), names.back());
  std::string s;
  for (const std::string& n : names) s += (s.empty() ? "" : ", ") + n;
  return s;
}

void run_bisect(BisectFlags& f) {
  if (f.calib_check) {
    if (!f.job.quantized.empty()) fail(ErrorKind::kInvalidArgument, "--calib-check compares two texts; it takes no --quantized");
    CalibCheckFlags check{.job = f.check, .quiet = f.quiet};
    check.job.model = f.job.model;
    check.job.eval_text = f.job.eval_text;
    check.job.tokenizer = f.job.tokenizer;
    check.job.json_out = f.job.json_out;
    check.job.threads = f.job.threads;
    return run_calib_check(check);
  }
  f.job.progress = progress_printer("calq bisect", f.quiet);
  const BisectReport r = bisect(f.job);
  const bool full = f.job.restore_format.empty();
  fmt::print("candidates  {} tensors of {} differ from the {}\n", r.candidates.size(), f.job.quantized,
             full ? "full-precision model" : "restore format");
  fmt::print("KLD(Q)      {:.6g} nats/token; goal {:.6g} (target {:.6g} + tolerance {})\n", r.kld_q, r.goal,
             f.job.target, f.job.tolerance ? fmt::format("{:.6g}", *f.job.tolerance) : "default: half the gap");
  for (size_t i = 0; i < r.steps.size(); ++i) {
    const BisectStep& s = r.steps[i];
    fmt::print("eval {:>3}    restore {:<60} KLD {:.6g} {}\n", i + 1, names_of(s.restored), s.kld, s.ok ? "ok" : "");
  }
  if (r.found) {
    fmt::print("found       {} tensor(s): {}\n", r.restored.size(), names_of(r.restored));
  } else {
    fmt::print("not found   restoring all {} candidates does not reach the goal\n", r.candidates.size());
  }
  fmt::print("KLD         {:.6g} with the set restored, {} evaluations\n", r.kld, r.evaluations);
}

}  // namespace

void register_bisect(CLI::App& app) {
  auto flags = std::make_shared<BisectFlags>();
  CLI::App* cmd = app.add_subcommand(
      "bisect", "Find the fewest tensors of a quantized model whose restoration brings KLD to a goal");
  cmd->add_option("--model", flags->job.model, "Full-precision model: Hugging Face folder or GGUF file")->required();
  cmd->add_option("--quantized", flags->job.quantized, "Quantized model (GGUF) of the same architecture");
  cmd->add_option("--eval-text", flags->job.eval_text, "Evaluation text (plain text)")->required();
  cmd->add_option("--tolerance", flags->job.tolerance,
                  "Goal = target + tolerance (KLD, nats/token; default: half the gap between target and KLD(Q))");
  cmd->add_option("--target", flags->job.target, "KLD level to come back to (default 0: the full-precision model)")
      ->capture_default_str();
  cmd->add_option("--restore-format", flags->job.restore_format,
                  "Restore tensors re-quantized to this format (round to nearest) instead of full precision");
  cmd->add_option("--ctx", flags->job.ctx, "Tokens per evaluation window")->capture_default_str();
  cmd->add_option("--max-windows", flags->job.max_windows, "Evaluation windows (0 = the whole text)")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 30));
  cmd->add_option("--tokenizer", flags->job.tokenizer, "tokenizer.json instead of the model's own");
  cmd->add_option("--json", flags->job.json_out, "Write the steps and the result as JSON");
  cmd->add_flag("--exact", flags->job.exact,
                "Run the forward passes on the exact path (OpenBLAS sgemm, quantized weights dequantized) instead of "
                "the fast kernels");
  cmd->add_flag("--calib-check", flags->calib_check,
                "Instead: compare the activation statistics of --calib with those of --eval-text (as calq calib-check)");
  cmd->add_option("--calib", flags->check.calib,
                  "--calib-check: the calibration text, or generate:N (N sequences sampled from the model)");
  add_calib_check_flags(cmd, flags->check);
  cmd->add_option("--threads", flags->job.threads, "Worker threads (0 = all cores)")->check(CLI::Range(0, 1024));
  cmd->add_flag("--quiet,-q", flags->quiet, "No progress output on stderr");
  cmd->callback([flags] { run_bisect(*flags); });
}

void register_calib_check(CLI::App& app) {
  auto flags = std::make_shared<CalibCheckFlags>();
  CLI::App* cmd = app.add_subcommand(
      "calib-check", "Compare per-channel activation statistics of a calibration set with an evaluation text");
  cmd->add_option("--model", flags->job.model, "Full-precision model: Hugging Face folder or GGUF file")->required();
  cmd->add_option("--calib", flags->job.calib, "Calibration text, or generate:N (N sequences sampled from the model)")
      ->required();
  cmd->add_option("--eval-text", flags->job.eval_text, "Evaluation text")->required();
  add_calib_check_flags(cmd, flags->job);
  cmd->add_option("--tokenizer", flags->job.tokenizer, "tokenizer.json instead of the model's own");
  cmd->add_option("--json", flags->job.json_out, "Write the per-site drift as JSON");
  cmd->add_option("--threads", flags->job.threads, "Worker threads (0 = all cores)")->check(CLI::Range(0, 1024));
  cmd->add_flag("--quiet,-q", flags->quiet, "No progress output on stderr");
  cmd->callback([flags] { run_calib_check(*flags); });
}

}  // namespace calq::cli
