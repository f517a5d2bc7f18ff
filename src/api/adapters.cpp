// calq/adapters.h and api/adapters.h: the base model hash, adapter folders onto loaded models,
// and merging adapters into a float GGUF.
#include "api/adapters.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>

#include "api/reporter.h"
#include "calq/calq.h"
#include "core/error.h"
#include "core/sha256.h"
#include "core/thread_pool.h"
#include "formats/format.h"
#include "formats/qtensor.h"
#include "model/gguf_export.h"
#include "model/peft_adapter.h"

namespace calq {
namespace api {

std::string model_source_sha256(const std::filesystem::path& path) {
  const ModelLocation loc = resolve_model(path);
  if (loc.format == ModelFormat::kGguf) return sha256_file(loc.path);
  std::vector<std::filesystem::path> shards;
  for (const auto& e : std::filesystem::directory_iterator(loc.path)) {
    if (e.is_regular_file() && e.path().extension() == ".safetensors") shards.push_back(e.path());
  }
  if (shards.empty()) fail(ErrorKind::kNotFound, "{}: no *.safetensors files", loc.path.string());
  // std::filesystem::path compares element-wise by its native string: byte order for one name.
  std::sort(shards.begin(), shards.end(),
            [](const auto& a, const auto& b) { return a.filename().native() < b.filename().native(); });
  Sha256 h;
  for (const auto& s : shards) h.update_file(s);
  h.update_file(loc.path / "config.json");
  return h.hex();
}

AdapterInfo load_adapters(LoadedModel& m, const std::string& dir, bool skip_hash_check, const std::string& base_sha256) {
  model::PeftReadOptions options{.check_base_hash = !skip_hash_check};
  if (!skip_hash_check) options.base_model_sha256 = base_sha256.empty() ? model_source_sha256(m.location.path) : base_sha256;
  const uint64_t before = m.model.storage_bytes();
  const model::PeftAdapterSummary s = model::load_peft_adapters(m.model, dir, options);
  const double params = static_cast<double>(m.model.parameter_count());
  return {.folder = dir,
          .count = s.count,
          .r = s.r,
          .rank_min = s.min_rank,
          .rank_max = s.max_rank,
          .lora_alpha = s.lora_alpha,
          .bytes = s.bytes,
          .bits_per_weight = params > 0 ? 8.0 * static_cast<double>(m.model.storage_bytes() - before) / params : 0.0,
          .hash_checked = !skip_hash_check,
          .base_model_sha256 = s.provenance.base_model_sha256};
}

void write_adapters(const model::Model& model, const std::string& dir, const std::string& base_path, bool force,
                    double lora_dropout) {
  model::write_peft_adapters(model, dir,
                             {.provenance = {.base_model_sha256 = model_source_sha256(base_path),
                                             .base_model_path = base_path,
                                             .calq_version = version()},
                              .lora_dropout = lora_dropout,
                              .overwrite = force});
}

}  // namespace api

std::string model_sha256(const std::string& path) { return api::model_source_sha256(path); }

namespace {

// Every matrix of `m` (per-layer linears, embedding, untied head) re-held in `format` (nullptr:
// dense float32), an activation quantization spec kept; a tied head stays tied.
void convert_matrices(model::Model& m, const Format* format, ThreadPool& pool) {
  const auto convert = [&](model::LinearWeight& w) {
    const Tensor dense = w.to_dense(pool);
    const model::ActivationQuant spec = w.act_quant();
    if (format == nullptr) {
      w = model::LinearWeight(dense);
    } else {
      w = model::LinearWeight(QuantizedTensor::quantize(pool, *format, dense.f32(), dense.dim(0), dense.dim(1)));
    }
    if (spec.enabled()) w.set_act_quant(spec);
  };
  const bool tied = m.output.same_storage(m.embedding);
  convert(m.embedding);
  if (tied) {
    const model::ActivationQuant spec = m.output.act_quant();
    m.output = m.embedding;
    if (spec.enabled()) m.output.set_act_quant(spec);
  } else {
    convert(m.output);
  }
  for (model::LayerWeights& l : m.layers) {
    for (const model::TensorRole role : model::layer_linear_roles(m.config)) convert(l.linear(role));
    for (model::ExpertWeights& e : l.experts) {
      convert(e.w_gate);
      convert(e.w_up);
      convert(e.w_down);
    }
  }
}

}  // namespace

AdapterMergeReport merge_adapters(const AdapterMergeJob& job) {
  const auto t0 = std::chrono::steady_clock::now();
  const Format* format = nullptr;
  if (job.type == "f16" || job.type == "bf16") {
    format = &format_by_name(job.type);
  } else if (job.type != "f32") {
    fail(ErrorKind::kInvalidArgument, "type '{}' is not supported for a merged model (f16, bf16 or f32)", job.type);
  }
  if (job.adapter.empty()) fail(ErrorKind::kInvalidArgument, "merge: no adapter folder given");
  if (job.out.empty()) fail(ErrorKind::kInvalidArgument, "merge: no output file given");
  api::check_output_path(job.out, api::resolve_model(job.model).path, job.force);
  api::Reporter report(job.progress);
  ThreadPool pool(job.threads);

  report("load", 0, 0, fmt::format("loading {}", job.model));
  api::LoadedModel m = api::load_model(job.model, pool);
  AdapterMergeReport out{.out = job.out, .type = job.type};
  out.adapters = api::load_adapters(m, job.adapter, job.adapter_skip_hash_check);
  report("merge", 0, 0,
         fmt::format("{} adapters (rank {}{}) from {}", out.adapters.count, out.adapters.rank_min,
                     out.adapters.rank_max != out.adapters.rank_min ? fmt::format("–{}", out.adapters.rank_max) : "",
                     job.adapter));
  model::merge_adapters(m.model, pool);
  convert_matrices(m.model, format, pool);

  model::GgufExportOptions options;
  options.extra_metadata.emplace_back("calq.version", io::GgufValue::of_string(version()));
  options.extra_metadata.emplace_back("calq.merged_adapter.folder", io::GgufValue::of_string(job.adapter));
  options.extra_metadata.emplace_back("calq.merged_adapter.base_sha256",
                                      io::GgufValue::of_string(out.adapters.base_model_sha256));
  report("write", 0, 0, fmt::format("writing {} ({})", job.out, job.type));
  model::write_gguf_model(m.model, job.out, options, pool);
  out.n_params = m.model.parameter_count();
  out.bytes_out = m.model.storage_bytes();
  out.bits_per_weight = m.model.bits_per_weight();
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return out;
}

}  // namespace calq
