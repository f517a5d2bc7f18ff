// quantize()'s mix form: llama.cpp's mixes, GGUF in, GGUF out, optional imatrix
// (pipeline/gguf_quantize.h).
#include <fmt/format.h>

#include <filesystem>
#include <optional>

#include "api/model_source.h"
#include "api/quantize_forms.h"
#include "core/error.h"
#include "core/thread_pool.h"
#include "io/gguf.h"
#include "pipeline/gguf_quantize.h"
#include "pipeline/imatrix.h"
#include "pipeline/mix.h"

namespace calq::api {
namespace {

std::string shape_text(const std::vector<int64_t>& ne) {
  std::string s;
  for (size_t i = 0; i < ne.size(); ++i) s += (i ? ", " : "") + std::to_string(ne[i]);
  return "[" + s + "]";
}

}  // namespace

QuantizeReport quantize_mix(const QuantizeJob& job, Reporter& report) {
  if (!job.imatrix.empty() && !job.format.empty()) {
    fail(ErrorKind::kInvalidArgument, "an imatrix goes with a mix; with a format give calibration or stats");
  }
  const pipeline::QuantMix& mix = pipeline::mix_by_name(job.mix);
  const ModelLocation loc = resolve_model(job.model);
  if (loc.format != ModelFormat::kGguf) {
    fail(ErrorKind::kUnsupported,
         "{}: a mix quantizes GGUF files (F32/F16/BF16); for a Hugging Face folder give a format instead", job.model);
  }
  check_output_path(job.out, loc.path, job.force);
  std::optional<pipeline::Imatrix> imatrix;
  if (!job.imatrix.empty()) imatrix.emplace(pipeline::read_imatrix(job.imatrix));

  ThreadPool pool(job.threads);
  const io::GgufFile in = io::GgufFile::open(loc.path);
  report("quantize", 0, static_cast<int64_t>(in.tensors().size()),
         fmt::format("{} -> {} ({}, {} threads{})", job.model, job.out, mix.name, pool.num_threads(),
                     imatrix ? fmt::format(", imatrix {} with {} entries", job.imatrix, imatrix->entries.size()) : ""));
  QuantizeReport out{.out = job.out, .form = "mix"};
  const size_t width = std::to_string(in.tensors().size()).size();
  auto on_tensor = [&](const pipeline::TensorDone& d) {
    const pipeline::TensorPlan& p = *d.plan;
    TensorReport t{.name = p.name, .shape = p.ne, .from_type = io::ggml_type_name(p.from_type),
                   .type = io::ggml_type_name(p.choice.quantize ? p.choice.type : p.from_type),
                   .quantized = p.choice.quantize, .fell_back = p.choice.fell_back,
                   .used_importance = d.used_importance, .seconds = d.seconds};
    std::string what = p.choice.quantize ? fmt::format("{} -> {}", t.from_type, t.type)
                                         : fmt::format("{} (copied)", t.from_type);
    if (p.choice.fell_back) what += " (fallback: row length)";
    if (d.used_importance) what += " +imatrix";
    report("tensor", static_cast<int64_t>(d.done), static_cast<int64_t>(d.total),
           fmt::format("[{:>{}}/{}] {:<36} {:<18} {:<24} {:7.3f} s", d.done, width, d.total, p.name, shape_text(p.ne),
                       what, d.seconds));
    out.tensors.push_back(std::move(t));
  };
  const pipeline::QuantizeGgufResult r = pipeline::quantize_gguf(
      in, job.out, {.mix = &mix, .imatrix = imatrix ? &*imatrix : nullptr, .on_tensor = on_tensor}, pool);

  if (imatrix && r.n_with_importance < r.n_quantized) {
    report.warn(fmt::format("{} of {} quantized tensors had no imatrix entry", r.n_quantized - r.n_with_importance,
                            r.n_quantized));
  }
  if (r.n_fallback > 0) {
    report.warn(fmt::format("{} tensors fell back to another type (row length not a multiple of the block)",
                            r.n_fallback));
  }
  uint64_t elements = 0;
  for (const auto& t : in.tensors()) elements += static_cast<uint64_t>(t.element_count());
  out.description = fmt::format("{} ({})", mix.name, mix.description);
  out.bits_per_weight = elements > 0 ? 8.0 * static_cast<double>(r.bytes_out) / static_cast<double>(elements) : 0.0;
  out.bytes_in = r.bytes_in;
  out.bytes_out = r.bytes_out;
  out.n_tensors = static_cast<int64_t>(r.plan.size());
  out.n_quantized = r.n_quantized;
  out.n_with_importance = r.n_with_importance;
  out.n_fallback = r.n_fallback;
  out.seconds_convert = r.seconds_convert;
  out.seconds_encode = r.seconds_encode;
  out.seconds_write = r.seconds_write;
  out.seconds = r.seconds_convert + r.seconds_encode + r.seconds_write;
  out.threads = static_cast<int>(pool.num_threads());
  out.peak_rss_mib = peak_rss_mib();
  out.warnings = report.warnings();
  return out;
}

}  // namespace calq::api
