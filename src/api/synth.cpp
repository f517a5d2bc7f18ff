// calq::synthesize (calq/synth.h): a synthetic model (model/synth.h) written as a Hugging Face
// folder, streamed tensor by tensor (write_synth_hf_model), and, on request, as a GGUF file
// (model/gguf_export.h) from the whole model in memory.
#include "calq/synth.h"

#include <fmt/format.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <optional>

#include "api/model_source.h"
#include "api/reporter.h"
#include "calq/calq.h"
#include "core/error.h"
#include "formats/format.h"
#include "model/gguf_export.h"
#include "model/hf_export.h"
#include "model/synth.h"

namespace calq {
namespace {

uint64_t bytes_under(const std::filesystem::path& p) {
  std::error_code ec;
  if (std::filesystem::is_regular_file(p, ec)) return std::filesystem::file_size(p, ec);
  uint64_t n = 0;
  for (const auto& e : std::filesystem::directory_iterator(p, ec)) {
    if (e.is_regular_file(ec)) n += e.file_size(ec);
  }
  return n;
}

// Every matrix (linears, experts, embedding, untied head) re-held in `format`; a tied head stays
// tied; the router and the shared expert's gate stay float32, as llama.cpp's converter keeps them.
void to_format(model::Model& m, const Format& format, ThreadPool& pool) {
  const auto convert = [&](model::LinearWeight& w) {
    const Tensor& d = w.dense();
    w = model::LinearWeight(QuantizedTensor::quantize(pool, format, d.f32(), d.dim(0), d.dim(1)));
  };
  const bool tied = m.output.same_storage(m.embedding);
  convert(m.embedding);
  if (tied) {
    m.output = m.embedding;
  } else {
    convert(m.output);
  }
  const std::vector<model::TensorRole> roles = model::layer_linear_roles(m.config);
  for (model::LayerWeights& l : m.layers) {
    for (const model::TensorRole role : roles) convert(l.linear(role));
    for (model::ExpertWeights& e : l.experts) {
      convert(e.w_gate);
      convert(e.w_up);
      convert(e.w_down);
    }
  }
}

// MemAvailable of /proc/meminfo in bytes; nullopt where it cannot be read (not Linux).
std::optional<uint64_t> memory_available() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  uint64_t kib = 0;
  std::string unit;
  while (in >> key >> kib) {
    std::getline(in, unit);
    if (key == "MemAvailable:") return kib * 1024;
  }
  return std::nullopt;
}

}  // namespace

SynthReport synthesize(const SynthJob& job) {
  const auto t0 = std::chrono::steady_clock::now();
  if (job.out.empty()) fail(ErrorKind::kInvalidArgument, "synthesize: no output folder given (out)");
  if (job.dtype != "f32" && job.dtype != "bf16") {
    fail(ErrorKind::kInvalidArgument, "dtype '{}' is not supported for a synthetic model (f32 or bf16)", job.dtype);
  }
  if (job.gguf_type != "f32" && job.gguf_type != "f16" && job.gguf_type != "bf16") {
    fail(ErrorKind::kInvalidArgument, "gguf_type '{}' is not supported (f32, f16 or bf16)", job.gguf_type);
  }
  const DType dtype = job.dtype == "bf16" ? DType::kBF16 : DType::kF32;
  const model::SynthWeights weights = model::parse_synth_weights(job.weights);
  const model::ModelConfig config = model::synth_config({.model_type = job.arch,
                                                         .layers = job.layers,
                                                         .hidden = job.hidden,
                                                         .heads = job.heads,
                                                         .kv_heads = job.kv_heads,
                                                         .head_dim = job.head_dim,
                                                         .ffn = job.ffn,
                                                         .vocab = job.vocab,
                                                         .sliding_window = job.sliding_window,
                                                         .tied = job.tied,
                                                         .max_position = job.max_position,
                                                         .rope_theta = job.rope_theta,
                                                         .rms_norm_eps = job.rms_norm_eps,
                                                         .rope_scaling = job.rope_scaling,
                                                         .rope_factor = job.rope_factor,
                                                         .rope_low_freq_factor = job.rope_low_freq_factor,
                                                         .rope_high_freq_factor = job.rope_high_freq_factor,
                                                         .rope_original_max_position = job.rope_original_max_position,
                                                         .experts = job.experts,
                                                         .experts_per_token = job.experts_per_token,
                                                         .expert_ffn = job.expert_ffn,
                                                         .shared_ffn = job.shared_ffn,
                                                         .norm_topk_prob = job.norm_topk_prob});
  // Existing outputs are refused before any work (write_hf_model checks the folder again, and what
  // it may replace).
  std::error_code ec;
  if (std::filesystem::exists(job.out, ec) && !job.force) {
    fail(ErrorKind::kInvalidArgument, "{}: output folder exists; overwriting it needs the force option", job.out);
  }
  if (!job.gguf.empty()) api::check_output_path(job.gguf, job.out, job.force);
  int64_t n_params = 0;
  for (const model::HfTensorEntry& t : model::hf_tensor_entries(config)) n_params += shape_numel(t.shape);
  // The GGUF is made from the whole model in float32: refused before any work when that cannot fit.
  if (!job.gguf.empty()) {
    const uint64_t need = static_cast<uint64_t>(n_params) * sizeof(float);
    const std::optional<uint64_t> available = memory_available();
    if (available && need > *available) {
      constexpr double kGiB = 1024.0 * 1024 * 1024;
      fail(ErrorKind::kInvalidArgument,
           "{}: writing the GGUF holds the whole model in float32, {:.1f} GiB ({} parameters × 4 bytes), but only "
           "{:.1f} GiB of memory is available (MemAvailable in /proc/meminfo); leave out the gguf option (the "
           "folder alone is written tensor by tensor)",
           job.gguf, static_cast<double>(need) / kGiB, n_params, static_cast<double>(*available) / kGiB);
    }
  }
  api::Reporter report(job.progress);
  ThreadPool pool(job.threads);

  std::string experts;
  if (config.moe) {
    experts = fmt::format(", {} experts (top {}, width {}{})", config.moe->num_experts, config.moe->experts_per_token,
                          config.moe->expert_intermediate,
                          config.moe->shared_intermediate > 0
                              ? fmt::format(", shared {}", config.moe->shared_intermediate)
                              : std::string());
  }
  report("generate", 0, 0,
         fmt::format("{}: {} layers, hidden {}, {} heads ({} kv, head_dim {}), ffn {}{}, vocab {}, seed {}, {} weights",
                     job.arch, config.num_layers, config.hidden_size, config.num_heads, config.num_kv_heads,
                     config.head_dim, config.intermediate_size, experts, config.vocab_size, job.seed, job.weights));
  report("write", 0, 0,
         fmt::format("writing {} ({}, {} parameters, {:.3g} GB)", job.out, job.dtype, n_params,
                     static_cast<double>(n_params) * static_cast<double>(dtype_size(dtype)) / 1e9));
  const auto t_write = std::chrono::steady_clock::now();
  model::write_synth_hf_model(
      config, job.seed, job.out,
      {.dtype = dtype,
       .weights = weights,
       .overwrite = job.force,
       .progress =
           [&](const io::TensorToProduce& t, size_t index, size_t total, const std::string& file) {
             const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_write).count();
             report("tensor", static_cast<int64_t>(index), static_cast<int64_t>(total),
                    fmt::format("  [{}/{}] {} {} -> {} ({:.0f} s)", index + 1, total, t.name, shape_string(t.shape),
                                file, secs));
           }},
      pool);
  SynthReport r{.arch = job.arch, .out = job.out, .gguf = job.gguf};
  r.config_json = model::hf_config_json(config, dtype);
  r.n_params = n_params;
  r.vocab = config.vocab_size;
  r.bytes_hf = bytes_under(job.out);
  if (!job.gguf.empty()) {
    report("write", 0, 0, fmt::format("writing {} ({} matrices)", job.gguf, job.gguf_type));
    model::Model m = model::synth_model(config, job.seed, pool, dtype, weights);
    if (job.gguf_type != "f32") to_format(m, format_by_name(job.gguf_type), pool);
    m.source = job.out;  // the tokenizer comes from the folder's tokenizer.json
    model::GgufExportOptions options;
    options.extra_metadata.emplace_back("calq.version", io::GgufValue::of_string(version()));
    options.extra_metadata.emplace_back("calq.synth.seed", io::GgufValue::of_uint64(job.seed));
    if (weights != model::SynthWeights::kUniform) {
      options.extra_metadata.emplace_back("calq.synth.weights", io::GgufValue::of_string(job.weights));
    }
    model::write_gguf_model(m, job.gguf, options, pool);
    r.bytes_gguf = bytes_under(job.gguf);
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

}  // namespace calq
