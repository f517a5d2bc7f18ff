// `calq calibrate`: flags over calq::calibrate (calq/calibrate.h): run calibration samples through
// a model layer by layer and write the statistics of every linear layer's input to a file;
// `--merge` combines statistics files. `calq quantize --stats FILE` reuses them.
#include <fmt/format.h>

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
  bool quiet = false;
};

void print_summary(const CalibrateReport& r) {
  fmt::print("{:<6} {:<9} {:>6} {:>10} {:>12} {:>12}\n", "layer", "site", "cols", "rows", "max |x|", "mean x^2");
  for (const SiteSummary& s : r.sites) {
    fmt::print("{:<6} {:<9} {:>6} {:>10} {:>12.4g} {:>12.4g}\n", s.layer < 0 ? std::string("head") : std::to_string(s.layer),
               s.site, s.cols, s.rows, s.absmax, s.mean_sq);
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
  cmd->add_flag("--quiet,-q", flags->quiet, "No progress output on stderr");
  cmd->callback([flags] { run_calibrate(*flags); });
}

}  // namespace calq::cli
