// `calq sensitivity`: flags over calq::sensitivity (calq/sensitivity.h) and printing: the KLD cost
// of quantizing each tensor (or layer) alone to one or more formats, everything else in full
// precision. Outputs: a ranked table (stdout), --json (the map `--target-bpw` reads), --svg heat-maps.
#include <fmt/format.h>

#include <memory>

#include "calq/sensitivity.h"
#include "cli/calib_flags.h"
#include "cli/commands.h"
#include "cli/progress.h"
#include "core/error.h"

namespace calq::cli {
namespace {

struct SensitivityFlags {
  std::string model;
  std::string eval_text;
  std::vector<std::string> formats;
  std::string granularity = "tensor";
  std::string method = "rtn";
  std::string observer = "minmax";
  CalibFlags calib;
  std::string stats;
  bool no_importance = false;
  bool no_head = false;
  int64_t ctx = 512;
  int64_t max_windows = 8;
  std::string json_out;
  std::string svg_out;
  bool exact = false;
  size_t threads = 0;
  bool quiet = false;
};

void run_sensitivity(const SensitivityFlags& f) {
  if (f.formats.empty()) fail(ErrorKind::kInvalidArgument, "calq sensitivity needs --format F[,F2,...]");
  const SensitivityReport r = sensitivity(
      {.model = f.model, .eval_text = f.eval_text, .formats = f.formats, .granularity = f.granularity,
       .method = f.method, .observer = f.observer, .calibration = f.calib, .stats = f.stats,
       .use_importance = !f.no_importance, .include_head = !f.no_head, .ctx = f.ctx, .max_windows = f.max_windows,
       .json_out = f.json_out, .svg_out = f.svg_out, .exact = f.exact, .threads = f.threads,
       .progress = progress_printer("calq sensitivity", f.quiet, f.ctx)});
  fmt::print("{}", r.table);
  fmt::print("{} entries x {} formats: {} evaluations of {} windows x {} tokens, {:.1f} s\n", r.entries.size(),
             r.formats.size(), r.evaluations, r.windows, r.ctx, r.seconds);
  for (const std::string& path : r.written) fmt::print("wrote {}\n", path);
}

}  // namespace

void register_sensitivity(CLI::App& app) {
  auto flags = std::make_shared<SensitivityFlags>();
  CLI::App* cmd = app.add_subcommand(
      "sensitivity", "KLD of quantizing each tensor (or layer) alone to a format, everything else in full precision");
  cmd->add_option("--model", flags->model, "Full-precision model: Hugging Face folder or GGUF file")->required();
  cmd->add_option("--eval-text", flags->eval_text, "Evaluation text (plain text)")->required();
  cmd->add_option("--format", flags->formats, "Format(s), comma separated: q3_k,q4_k,q5_k,q6_k,q8_0")
      ->delimiter(',')
      ->required();
  cmd->add_option("--granularity", flags->granularity, "tensor or layer")->capture_default_str();
  cmd->add_option("--method", flags->method, "Weight quantizer: rtn or gptq (gptq needs --calib or --stats)")
      ->capture_default_str();
  cmd->add_option("--observer", flags->observer, "Weight range observer: minmax, percentile, kl, mse")
      ->capture_default_str();
  add_calib_flags(cmd, flags->calib);
  cmd->add_option("--stats", flags->stats, "Statistics file from calq calibrate (instead of --calib)");
  cmd->add_flag("--no-importance", flags->no_importance, "Do not weight the rounding error by E[x^2]");
  cmd->add_flag("--no-head", flags->no_head, "Leave the token embedding and output head out of the map");
  cmd->add_option("--ctx", flags->ctx, "Tokens per evaluation window")->capture_default_str();
  cmd->add_option("--max-windows", flags->max_windows, "Evaluation windows (0 = the whole text)")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 30));
  cmd->add_option("--json", flags->json_out, "Write the sensitivity map as JSON");
  cmd->add_option("--svg", flags->svg_out, "Write the heat-map (several formats: one file each, NAME-<format>.svg)");
  cmd->add_option("--threads", flags->threads, "Worker threads (0 = all cores)")->check(CLI::Range(0, 1024));
  cmd->add_flag("--exact", flags->exact,
                "Run the forward passes on the exact path (OpenBLAS sgemm, quantized weights dequantized) instead of "
                "the fast kernels");
  cmd->add_flag("--quiet,-q", flags->quiet, "No progress output on stderr");
  cmd->callback([flags] { run_sensitivity(*flags); });
}

}  // namespace calq::cli
