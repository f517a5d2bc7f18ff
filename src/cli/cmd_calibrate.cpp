// `calq calibrate`: flags over calq::calibrate (calq/calibrate.h): run calibration samples through
// a model layer by layer and write the statistics of every linear layer's input to a file;
// `--merge` combines statistics files. `calq quantize --stats FILE` reuses them.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <memory>

#include "calq/calibrate.h"
#include "cli/calib_flags.h"
#include "cli/commands.h"
#include "cli/progress.h"
#include "core/error.h"

namespace calq::cli {
namespace {

struct CalibrateFlags {
  std::string model;
  std::string out;
  CalibFlags calib;
  std::string stats = "absmax,mean_abs,mean_sq,histogram";
  std::vector<std::string> merge;
  size_t threads = 0;
  bool force = false;
  bool exact = false;
  bool all_experts = false;
  int64_t expert_min_tokens = 0;
  bool quiet = false;
};

void print_summary(const CalibrateReport& r) {
  fmt::print("{:<6} {:<9} {:>6} {:>10} {:>12} {:>12}\n", "layer", "site", "cols", "rows", "max |x|", "mean x^2");
  for (const SiteSummary& s : r.sites) {
    fmt::print("{:<6} {:<9} {:>6} {:>10} {:>12.4g} {:>12.4g}\n", s.layer < 0 ? std::string("head") : std::to_string(s.layer),
               s.site, s.cols, s.rows, s.absmax, s.mean_sq);
  }
  if (r.experts.empty()) return;
  fmt::print("\nexpert coverage (calibration tokens the router sent to each expert; under = fewer than {})\n",
             r.experts.front().threshold);
  fmt::print("{:<6} {:>7} {:>8} {:>8} {:>8} {:>6}  {}\n", "layer", "experts", "min", "median", "max", "under",
             "under-covered experts");
  for (const ExpertCoverage& c : r.experts) {
    fmt::print("{:<6} {:>7} {:>8} {:>8} {:>8} {:>6}  {}\n", c.layer, c.experts, c.min_tokens, c.median_tokens,
               c.max_tokens, c.under_covered.size(), fmt::join(c.under_covered, ","));
  }
}

void run_calibrate(const CalibrateFlags& f) {
  if (!f.merge.empty()) {
    if (!f.model.empty() || !f.calib.text.empty()) {
      fail(ErrorKind::kInvalidArgument, "calq calibrate --merge combines statistics files; it takes no --model/--calib");
    }
    const MergeReport r = merge_statistics(f.merge, f.out, f.force);
    fmt::print("wrote {}: {} files merged, {} samples, {} sites\n", r.out, r.files, r.samples, r.sites);
    return;
  }
  if (f.model.empty() || f.calib.text.empty()) {
    fail(ErrorKind::kInvalidArgument, "calq calibrate needs --model and --calib (or --merge FILES)");
  }
  const CalibrateReport r = calibrate({.model = f.model, .out = f.out, .data = f.calib, .stats = f.stats,
                                       .threads = f.threads, .force = f.force, .exact = f.exact,
                                       .all_experts = f.all_experts, .expert_min_tokens = f.expert_min_tokens,
                                       .progress = progress_printer("calq calibrate", f.quiet)});
  if (!f.quiet) print_summary(r);
  const double tokens = static_cast<double>(r.samples * r.seq_len);
  fmt::print("wrote {}: {} samples x {} tokens, {} sites, {:.2f} s ({:.0f} tokens/s), activations {:.1f} MiB, peak RSS "
             "{:.1f} MiB\n",
             r.out, r.samples, r.seq_len, r.sites.size(), r.seconds, tokens / r.seconds, r.activation_mib,
             r.peak_rss_mib);
}

}  // namespace

void register_calibrate(CLI::App& app) {
  auto flags = std::make_shared<CalibrateFlags>();
  CLI::App* cmd = app.add_subcommand("calibrate", "Collect calibration statistics of every linear input into a file");
  cmd->add_option("--model", flags->model, "Hugging Face model folder or GGUF file");
  cmd->add_option("--out", flags->out, "Output statistics file (GGUF container)")->required();
  add_calib_flags(cmd, flags->calib);
  cmd->add_option("--stats", flags->stats,
                  "Statistics to collect: comma list of absmax, mean_abs, mean_sq, histogram, hessian")
      ->capture_default_str();
  cmd->add_option("--merge", flags->merge, "Combine these statistics files into --out instead")->expected(2, 1 << 16);
  cmd->add_option("--threads", flags->threads, "Worker threads (0 = all cores)")->check(CLI::Range(0, 1024));
  cmd->add_flag("--force", flags->force, "Overwrite an existing output file");
  cmd->add_flag("--exact", flags->exact,
                "Run the forward pass on the exact path (OpenBLAS sgemm) instead of the fast kernels (AVX-512 FMA on "
                "float weights, 8-bit integer dot products on GGUF block types)");
  cmd->add_flag("--all-experts", flags->all_experts,
                "MoE models: statistics of every expert on every token (outputs still follow the router)");
  cmd->add_option("--expert-min-tokens", flags->expert_min_tokens,
                  "MoE models: flag experts routed fewer tokens in the coverage report (0 = hidden size)")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 40));
  cmd->add_flag("--quiet,-q", flags->quiet, "No progress output on stderr");
  cmd->callback([flags] { run_calibrate(*flags); });
}

}  // namespace calq::cli
