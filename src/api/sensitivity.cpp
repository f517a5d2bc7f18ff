// calq::sensitivity (calq/sensitivity.h) over api/sensitivity_run.h and pipeline/sensitivity_report.h.
#include "calq/sensitivity.h"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>

#include "api/model_source.h"
#include "api/reporter.h"
#include "api/sensitivity_run.h"
#include "core/error.h"
#include "core/thread_pool.h"
#include "pipeline/sensitivity_report.h"
#include "quant/recipe.h"

namespace calq {
namespace {

// "out.svg" for one format; "out-q4_k.svg" when several formats each get a file.
std::string per_format_path(const std::string& path, const std::string& format, bool several) {
  if (!several) return path;
  const std::filesystem::path p(path);
  return (p.parent_path() / (p.stem().string() + "-" + format + p.extension().string())).string();
}

}  // namespace

SensitivityReport sensitivity(const SensitivityJob& job) {
  if (job.formats.empty()) fail(ErrorKind::kInvalidArgument, "sensitivity needs at least one format");
  std::vector<const Format*> formats;
  for (const std::string& name : job.formats) {
    const Format* format = &format_by_name(name);
    if (std::find(formats.begin(), formats.end(), format) != formats.end()) {
      fail(ErrorKind::kInvalidArgument, "sensitivity formats list {} twice", name);
    }
    formats.push_back(format);
  }
  const quant::Recipe recipe = quant::parse_method_chain(job.method);
  api::check_output_folder(job.json_out);
  api::check_output_folder(job.svg_out);
  api::Reporter report(job.progress);
  ThreadPool pool(job.threads);
  const pipeline::SensitivityMap map = api::measure_sensitivity_map(
      {.model = job.model, .eval_text = job.eval_text, .formats = formats, .recipe = recipe,
       .observer = job.observer, .calib = &job.calibration, .stats = job.stats,
       .use_importance = job.use_importance, .include_head = job.include_head,
       .granularity = pipeline::granularity_by_name(job.granularity), .ctx = job.ctx,
       .max_windows = job.max_windows, .exact = job.exact},
      pool, report);

  SensitivityReport out{.formats = map.formats, .entries = {}, .ctx = map.ctx, .windows = map.windows,
                        .evaluations = map.evaluations, .seconds = map.seconds,
                        .table = pipeline::sensitivity_table(map), .json = {}, .written = {}};
  for (const auto& e : map.entries) {
    out.entries.push_back({.tensor = e.tensor, .layer = e.layer, .role = e.role, .params = e.params, .kld = e.kld});
  }
  const pipeline::SensitivityMeta meta{.model = job.model, .eval_text = job.eval_text, .method = recipe.to_string()};
  out.json = pipeline::sensitivity_json(map, meta).dump(2) + "\n";
  if (!job.json_out.empty()) {
    api::write_text_atomic(job.json_out, out.json);
    out.written.push_back(job.json_out);
  }
  if (!job.svg_out.empty()) {
    for (size_t i = 0; i < map.formats.size(); ++i) {
      const std::string path = per_format_path(job.svg_out, map.formats[i], map.formats.size() > 1);
      api::write_text_atomic(path, pipeline::sensitivity_svg(map, i, fmt::format("calq sensitivity: {} ({})", map.formats[i],
                                                                      job.model)));
      out.written.push_back(path);
    }
  }
  return out;
}

}  // namespace calq
