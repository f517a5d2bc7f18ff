// calq::calibrate and calq::merge_statistics (calq/calibrate.h) over the layer-sequential
// pipeline (pipeline/sequential.h) and the statistics file (calib/collectors.h).
#include <fmt/format.h>

#include <algorithm>

#include "api/calibration_data.h"
#include "api/model_source.h"
#include "api/reporter.h"
#include "calib/collectors.h"
#include "calq/calibrate.h"
#include "core/error.h"
#include "core/thread_pool.h"
#include "model/model.h"
#include "pipeline/sequential.h"

namespace calq {

// Per MoE layer: tokens the router sent to each expert (calq/calibrate.h).
std::vector<ExpertCoverage> expert_coverage(const calib::CalibrationStats& stats, const model::ModelConfig& c,
                                            int64_t min_tokens);

std::vector<ExpertCoverage> expert_coverage(const calib::CalibrationStats& stats, const model::ModelConfig& c,
                                            int64_t min_tokens) {
  std::vector<ExpertCoverage> out;
  if (!c.moe) return out;
  for (int64_t l = 0; l < c.num_layers; ++l) {
    ExpertCoverage cov{.layer = l, .experts = c.moe->num_experts,
                       .threshold = min_tokens > 0 ? min_tokens : c.hidden_size};
    cov.tokens.assign(static_cast<size_t>(c.moe->num_experts), 0);
    if (const auto it = stats.routed_tokens.find(l); it != stats.routed_tokens.end()) {
      for (size_t e = 0; e < it->second.size() && e < cov.tokens.size(); ++e) cov.tokens[e] = it->second[e];
    }
    std::vector<int64_t> sorted = cov.tokens;
    std::sort(sorted.begin(), sorted.end());
    cov.min_tokens = sorted.front();
    cov.max_tokens = sorted.back();
    cov.median_tokens = sorted[sorted.size() / 2];
    for (size_t e = 0; e < cov.tokens.size(); ++e) {
      if (cov.tokens[e] < cov.threshold) cov.under_covered.push_back(static_cast<int64_t>(e));
    }
    out.push_back(std::move(cov));
  }
  return out;
}

CalibrateReport calibrate(const CalibrateJob& job) {
  if (job.model.empty()) fail(ErrorKind::kInvalidArgument, "calibrate: no model given");
  if (job.data.text.empty()) fail(ErrorKind::kInvalidArgument, "calibrate: no calibration text given");
  api::Reporter report(job.progress);
  const calib::StatSet kinds = calib::StatSet::parse(job.stats);
  ThreadPool pool(job.threads);
  api::LoadedModel m = api::load_model(job.model, pool, {.keep_source_dtype = true});
  model::set_fast_kernels(m.model, !job.exact);
  api::check_output_path(job.out, m.location.path, job.force);
  std::string tokenizer_source;
  const io::Tokenizer tokenizer =
      api::load_model_tokenizer(m.location, m.gguf.get(), job.data.tokenizer, tokenizer_source);
  const io::CalibrationSet set = api::load_calibration(job.data, tokenizer, m.model, pool, report);
  const std::string origin = set.generated.empty() ? fmt::format("{} ({} documents, {} windows)", job.data.text,
                                                                 set.n_documents, set.n_windows)
                                                   : set.generated;
  report("calibrate", 0, m.model.config.num_layers,
         fmt::format("{} samples x {} tokens from {}, {} threads, stats {}", set.samples.size(), job.data.seq_len,
                     origin, pool.num_threads(), kinds.to_string()));
  const pipeline::SequentialResult r = pipeline::run_layer_sequential(
      m.model, set.samples,
      {.stats = kinds,
       .true_sequential = false,
       .all_experts = job.all_experts,
       .on_layer =
           [&](const pipeline::LayerProgress& p) {
             report("calibrate", p.layer + 1, p.n_layers,
                    fmt::format("layer {}/{}  {:.2f} s", p.layer + 1, p.n_layers, p.seconds_stats));
           }},
      nullptr, pool);
  calib::CalibrationStats stats = r.stats;
  stats.seed = static_cast<int64_t>(job.data.seed);
  stats.model_name = m.location.path.filename().string();
  stats.calib_sha256 = {api::calibration_source_id(set)};
  calib::write_stats_file(stats, job.out);

  CalibrateReport out{.out = job.out, .samples = r.samples, .seq_len = r.seq_len,
                      .n_documents = static_cast<int64_t>(set.n_documents),
                      .n_windows = static_cast<int64_t>(set.n_windows), .stats = kinds.to_string(),
                      .sites = {}, .seconds = r.seconds,
                      .activation_mib = static_cast<double>(r.activation_bytes) / (1024.0 * 1024.0),
                      .peak_rss_mib = api::peak_rss_mib(),
                      .threads = static_cast<int>(pool.num_threads())};
  for (const auto& [layer, site] : stats.sites()) {
    const calib::SiteStats& s = *stats.find(layer, site);
    SiteSummary sum{.layer = layer, .site = std::string(model::site_name(site)), .cols = s.cols(), .rows = s.rows()};
    if (s.kinds().contains(calib::StatKind::kAbsMax)) {
      for (const float v : s.absmax()) sum.absmax = std::max(sum.absmax, static_cast<double>(v));
    }
    if (s.kinds().contains(calib::StatKind::kMeanSq) && s.rows() > 0) {
      for (const double v : s.sum_sq()) sum.mean_sq += v;
      sum.mean_sq /= static_cast<double>(s.rows()) * static_cast<double>(s.cols());
    }
    out.sites.push_back(std::move(sum));
  }
  out.experts = expert_coverage(stats, m.model.config, job.expert_min_tokens);
  return out;
}

MergeReport merge_statistics(const std::vector<std::string>& files, const std::string& out, bool force) {
  api::check_output_path(out, {}, force);
  const std::vector<std::filesystem::path> paths(files.begin(), files.end());
  const calib::CalibrationStats merged = calib::merge_stats_files(paths);
  calib::write_stats_file(merged, out);
  return {.out = out, .files = static_cast<int64_t>(paths.size()), .samples = merged.samples,
          .sites = static_cast<int64_t>(merged.site_count())};
}

}  // namespace calq
