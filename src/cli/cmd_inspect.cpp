// `calq inspect`: what a model file holds, and (on request) its outlier statistics; calq::inspect
// (calq/inspect.h) does the work, this file holds the flags and prints the report.
//
//  * A Hugging Face folder: architecture, hyper-parameters and tensor list, from headers only.
//  * A GGUF file: header, every metadata key and every tensor with its ggml type and ne.
//  * --weights: per weight tensor min/max/mean/std/excess kurtosis, share beyond 6 sigma, per
//    input channel max |w| and outlier channels (calib/weight_stats.h).
//  * --activations --text F --samples N [--ctx C]: N calibration windows through the model,
//    per linear input the per-channel max |x|, max/median ratio, channels above LLM.int8()'s 6.0
//    (calib/activation_stats.h, windows chosen as calib/calibration.h says).
#include <fmt/format.h>

#include <memory>

#include "calq/inspect.h"
#include "cli/commands.h"
#include "cli/progress.h"

namespace calq::cli {
namespace {

struct InspectFlags {
  InspectJob job;
  bool quiet = false;
};

void run_inspect(InspectFlags& f) {
  f.job.progress = progress_printer("calq inspect", f.quiet, f.job.ctx);
  fmt::print("{}", inspect(f.job).text);
}

}  // namespace

void register_inspect(CLI::App& app) {
  auto flags = std::make_shared<InspectFlags>();
  CLI::App* cmd = app.add_subcommand(
      "inspect",
      "Show what a model holds (a Hugging Face folder: architecture and tensors; a GGUF file: metadata and tensors "
      "with their ggml types) and, on request, its weight and activation outlier statistics.\n"
      "--activations runs --samples windows of --ctx tokens of --text through the model: the text is tokenized "
      "without special tokens and cut into non-overlapping windows of --ctx tokens (tail dropped), and the windows "
      "taken are evenly spaced over the whole text (window floor(i * W / samples) of the W windows).");
  cmd->add_option("model", flags->job.model, "Hugging Face model folder or GGUF file")->required();
  cmd->add_flag("--weights", flags->job.weights,
                "Per weight tensor: min/max/mean/std/excess kurtosis, share beyond 6 sigma, per input channel max "
                "|w| and outlier channels (max |w| > 2 x median)");
  CLI::Option* act = cmd->add_flag("--activations", flags->job.activations,
                                   "Per linear input: per channel max |x| over the calibration windows, max/median "
                                   "ratio, channels above the LLM.int8() threshold 6.0 (needs --text)");
  cmd->add_option("--text", flags->job.text, "Calibration text for --activations")->needs(act);
  cmd->add_option("--samples", flags->job.samples, "Calibration windows for --activations")
      ->capture_default_str()
      ->needs(act);
  cmd->add_option("--ctx", flags->job.ctx, "Calibration window length in tokens")
      ->capture_default_str()
      ->check(CLI::Range(2, 1 << 20))
      ->needs(act);
  cmd->add_option("--tokenizer", flags->job.tokenizer, "tokenizer.json to use instead of the model's own")->needs(act);
  cmd->add_option("--threads", flags->job.threads, "Worker threads (0 = all cores)")->check(CLI::Range(0, 1024));
  cmd->add_option("--top", flags->job.top, "Top channels listed per tensor/input in the JSON (the table shows 3)")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--json", flags->job.json_out, "Also write everything as JSON to this file");
  cmd->add_flag("--quiet,-q", flags->quiet, "No progress output on stderr");
  cmd->callback([flags] { run_inspect(*flags); });
}

}  // namespace calq::cli
