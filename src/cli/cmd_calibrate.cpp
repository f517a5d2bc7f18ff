// `calq calibrate`: run calibration samples through a model layer by layer and write the
// statistics of every linear layer's input to a file (calib/collectors.h: a GGUF container);
// `--merge` combines statistics files. `calq quantize --stats FILE` reuses them.
#include <fmt/format.h>

#include <filesystem>
#include <memory>

#include "calib/collectors.h"
#include "cli/calib_flags.h"
#include "cli/commands.h"
#include "core/error.h"
#include "core/thread_pool.h"
#include "pipeline/sequential.h"

namespace calq::cli {
namespace {

struct CalibrateFlags {
  std::string model;
  std::string out;
  CalibFlags calib;
  std::string stats = calib::StatSet::defaults().to_string();
  std::vector<std::string> merge;
  size_t threads = 0;
  bool force = false;
  bool quiet = false;
};

void print_summary(const calib::CalibrationStats& stats) {
  fmt::print("{:<6} {:<9} {:>6} {:>10} {:>12} {:>12}\n", "layer", "site", "cols", "rows", "max |x|", "mean x^2");
  for (const auto& [layer, site] : stats.sites()) {
    const calib::SiteStats& s = *stats.find(layer, site);
    float amax = 0;
    if (s.kinds().contains(calib::StatKind::kAbsMax)) {
      for (const float v : s.absmax()) amax = std::max(amax, v);
    }
    double msq = 0;
    if (s.kinds().contains(calib::StatKind::kMeanSq) && s.rows() > 0) {
      for (const double v : s.sum_sq()) msq += v;
      msq /= static_cast<double>(s.rows()) * static_cast<double>(s.cols());
    }
    fmt::print("{:<6} {:<9} {:>6} {:>10} {:>12.4g} {:>12.4g}\n", layer < 0 ? std::string("head") : std::to_string(layer),
               calib::site_name(site), s.cols(), s.rows(), amax, msq);
  }
}

void run_merge(const CalibrateFlags& f) {
  if (!f.model.empty() || !f.calib.calib.empty()) {
    fail(ErrorKind::kInvalidArgument, "calq calibrate --merge combines statistics files; it takes no --model/--calib");
  }
  check_output_path(f.out, {}, f.force);
  std::vector<std::filesystem::path> paths(f.merge.begin(), f.merge.end());
  const calib::CalibrationStats merged = calib::merge_stats_files(paths);
  calib::write_stats_file(merged, f.out);
  fmt::print("wrote {}: {} files merged, {} samples, {} sites\n", f.out, paths.size(), merged.samples,
             merged.site_count());
}

void run_calibrate(const CalibrateFlags& f) {
  if (!f.merge.empty()) return run_merge(f);
  if (f.model.empty() || f.calib.calib.empty()) {
    fail(ErrorKind::kInvalidArgument, "calq calibrate needs --model and --calib (or --merge FILES)");
  }
  const calib::StatSet kinds = calib::StatSet::parse(f.stats);
  ThreadPool pool(f.threads);
  LoadedModel m = load_model_for_calibration(f.model, pool);
  check_output_path(f.out, m.location.path, f.force);
  std::string tokenizer_source;
  const io::Tokenizer tokenizer = load_model_tokenizer(m.location, m.gguf.get(), f.calib.tokenizer, tokenizer_source);
  const io::CalibrationSet set = load_calibration(f.calib, tokenizer, m.model.config, f.quiet);
  if (!f.quiet) {
    fmt::print(stderr, "calq calibrate: {} samples x {} tokens from {} ({} documents, {} windows), {} threads, stats {}\n",
               set.samples.size(), f.calib.seq_len, f.calib.calib, set.n_documents, set.n_windows, pool.num_threads(),
               kinds.to_string());
  }
  const pipeline::SequentialResult r = pipeline::run_layer_sequential(
      m.model, set.samples,
      {.stats = kinds,
       .true_sequential = false,
       .on_layer =
           [&](const pipeline::LayerProgress& p) {
             if (!f.quiet) fmt::print(stderr, "  layer {}/{}  {:.2f} s\n", p.layer + 1, p.n_layers, p.seconds_stats);
           }},
      nullptr, pool);
  calib::CalibrationStats stats = r.stats;
  stats.seed = static_cast<int64_t>(f.calib.seed);
  stats.model_name = m.location.path.filename().string();
  stats.calib_sha256 = {set.file_sha256};
  calib::write_stats_file(stats, f.out);
  if (!f.quiet) print_summary(stats);
  const double tokens = static_cast<double>(r.samples * r.seq_len);
  fmt::print("wrote {}: {} samples x {} tokens, {} sites, {:.2f} s ({:.0f} tokens/s), activations {:.1f} MiB, peak RSS "
             "{:.1f} MiB\n",
             f.out, r.samples, r.seq_len, stats.site_count(), r.seconds, tokens / r.seconds,
             static_cast<double>(r.activation_bytes) / (1024.0 * 1024.0), peak_rss_mib());
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
  cmd->add_flag("--quiet,-q", flags->quiet, "No progress output on stderr");
  cmd->callback([flags] { run_calibrate(*flags); });
}

}  // namespace calq::cli
