// calq::inspect (calq/inspect.h): model headers (model::inspect_hf_model, io::GgufFile), weight
// statistics (calib/weight_stats.h) and activation statistics over calibration windows
// (calib/activation_stats.h), as text tables and JSON (api/inspect_report.h, api/inspect_gguf.h).
#include "calq/inspect.h"

#include <fmt/format.h>

#include <chrono>
#include <iterator>
#include <nlohmann/json.hpp>

#include "api/inspect_gguf.h"
#include "api/inspect_report.h"
#include "api/model_source.h"
#include "api/reporter.h"
#include "calib/activation_stats.h"
#include "calib/calibration.h"
#include "calib/weight_stats.h"
#include "core/error.h"
#include "core/mapped_file.h"
#include "core/stopwatch.h"
#include "core/thread_pool.h"
#include "model/gguf_model.h"
#include "model/model.h"

namespace calq {
namespace {

using Json = nlohmann::ordered_json;

std::string hf_summary_text(const std::string& path, const model::ModelSummary& s, Json& j) {
  const auto& c = s.config;
  std::string text;
  const auto out = std::back_inserter(text);
  fmt::format_to(out, "model          {}\n", path);
  fmt::format_to(out, "architecture   {}\n", c.model_type);
  fmt::format_to(out, "layers         {}\n", c.num_layers);
  fmt::format_to(out, "hidden         {}\n", c.hidden_size);
  fmt::format_to(out, "intermediate   {}\n", c.intermediate_size);
  fmt::format_to(out, "heads          {} (kv heads {}, head dim {})\n", c.num_heads, c.num_kv_heads, c.head_dim);
  fmt::format_to(out, "vocab          {}\n", c.vocab_size);
  fmt::format_to(out, "rope theta     {}\n", c.rope_theta);
  fmt::format_to(out, "rms norm eps   {}\n", c.rms_norm_eps);
  fmt::format_to(out, "tied embedding {}\n", c.tie_word_embeddings ? "yes" : "no");
  if (c.qk_norm) fmt::format_to(out, "q/k norm       per head\n");
  if (c.rope_scaling) {
    fmt::format_to(out, "rope scaling   {} (factor {})\n", c.rope_scaling->type, c.rope_scaling->factor);
  } else if (!c.rope_freq_factors.empty()) {
    fmt::format_to(out, "rope scaling   per-frequency factors (rope_freqs)\n");
  }
  if (c.moe) {
    fmt::format_to(out, "experts        {} per layer, {} per token, width {}{}{}\n", c.moe->num_experts,
                   c.moe->experts_per_token, c.moe->expert_intermediate,
                   c.moe->shared_intermediate > 0 ? fmt::format(", shared expert width {}", c.moe->shared_intermediate)
                                                  : std::string(),
                   c.moe->norm_topk_prob ? ", weights renormalised" : "");
  }
  fmt::format_to(out, "parameters     {} ({:.1f} M)\n\n", s.parameter_count,
                 static_cast<double>(s.parameter_count) / 1e6);
  size_t width = 4;
  for (const auto& t : s.tensors) width = std::max(width, t.name.size());
  fmt::format_to(out, "{:<{}}  {:<5}  {}\n", "name", width, "dtype", "shape");
  for (const auto& t : s.tensors) fmt::format_to(out, "{:<{}}  {:<5}  {}\n", t.name, width, t.dtype, shape_string(t.shape));

  j["model"] = path;
  j["architecture"] = c.model_type;
  j["num_layers"] = c.num_layers;
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.intermediate_size;
  j["num_heads"] = c.num_heads;
  j["num_kv_heads"] = c.num_kv_heads;
  j["head_dim"] = c.head_dim;
  j["vocab_size"] = c.vocab_size;
  j["rope_theta"] = c.rope_theta;
  j["rms_norm_eps"] = c.rms_norm_eps;
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  j["qk_norm"] = c.qk_norm;
  if (c.rope_scaling) j["rope_scaling"] = {{"type", c.rope_scaling->type}, {"factor", c.rope_scaling->factor}};
  if (!c.rope_freq_factors.empty()) j["rope_freq_factors"] = c.rope_freq_factors;
  if (c.moe) {
    j["moe"] = {{"num_experts", c.moe->num_experts},
                {"experts_per_token", c.moe->experts_per_token},
                {"expert_intermediate_size", c.moe->expert_intermediate},
                {"shared_expert_intermediate_size", c.moe->shared_intermediate},
                {"norm_topk_prob", c.moe->norm_topk_prob}};
  }
  j["parameter_count"] = s.parameter_count;
  auto& tensors = j["tensors"] = Json::array();
  for (const auto& t : s.tensors) tensors.push_back({{"name", t.name}, {"dtype", t.dtype}, {"shape", t.shape}});
  return text;
}

// The name of a weight in the model's own file format.
std::string weight_name(const model::Model& m, api::ModelFormat format, const calib::ModelWeightStats& w) {
  const auto name = [&](model::TensorRole role) {
    return format == api::ModelFormat::kGguf ? model::gguf_tensor_name(*m.arch, role, w.layer)
                                             : model::hf_tensor_name(*m.arch, role, w.layer);
  };
  if (w.tied) return name(model::TensorRole::kTokenEmbedding) + " (tied output)";
  return name(w.role);
}

std::string activations_text(const InspectJob& job, const api::LoadedModel& m, api::Reporter& report, ThreadPool& pool,
                             Json& j) {
  std::string source;
  const io::Tokenizer tokenizer = api::load_model_tokenizer(m.location, m.gguf.get(), job.tokenizer, source);
  const std::vector<int32_t> ids = tokenizer.encode(read_text_file(job.text), /*add_special_tokens=*/false);
  const std::vector<int64_t> starts =
      calib::calibration_windows(static_cast<int64_t>(ids.size()), job.ctx, job.samples);
  report("activations", 0, 0,
         fmt::format("{} tokens from {}; {} windows of {} tokens", ids.size(), job.text, starts.size(), job.ctx));
  const auto start = std::chrono::steady_clock::now();
  const calib::ActivationObserver obs = calib::observe_activations(
      m.model, ids,
      {.ctx = job.ctx, .samples = job.samples,
       .on_progress = [&](int64_t d, int64_t t) { report("activations", d, t); }},
      pool);
  const double seconds = seconds_since(start);
  const calib::ActivationStats st = calib::summarize_activations(obs, job.top);
  const double tokens = static_cast<double>(job.samples * job.ctx);
  std::string text = fmt::format(
      "\nactivation pass: {} windows x {} tokens of {} ({} tokens in the text), {:.1f} s, {:.0f} tokens/s on {} "
      "threads\n",
      job.samples, job.ctx, job.text, ids.size(), seconds, tokens / seconds, pool.num_threads());
  text += api::activation_table_text(st);

  Json a = api::activation_stats_json(st);
  a["text"] = job.text;
  a["text_tokens"] = ids.size();
  a["ctx"] = job.ctx;
  a["samples"] = job.samples;
  a["window_selection"] = "evenly spaced over the gptq-windows grid: window floor(i * W / samples), W = tokens / ctx";
  a["window_starts"] = starts;
  a["seconds"] = seconds;
  a["tokens_per_second"] = tokens / seconds;
  a["threads"] = pool.num_threads();
  j["activation_stats"] = std::move(a);
  return text;
}

}  // namespace

InspectReport inspect(const InspectJob& job) {
  if (job.model.empty()) fail(ErrorKind::kInvalidArgument, "inspect: no model given");
  if (job.activations && job.text.empty()) {
    fail(ErrorKind::kInvalidArgument, "inspect: activations need a text to run through the model");
  }
  if (!job.activations && !job.text.empty()) {
    fail(ErrorKind::kInvalidArgument, "inspect: a text is only read for activations (set activations)");
  }
  if (job.top < 1) fail(ErrorKind::kInvalidArgument, "inspect: top must be at least 1");
  api::check_output_folder(job.json_out);
  api::Reporter report(job.progress);
  const api::ModelLocation loc = api::resolve_model(job.model);
  InspectReport out{.format = std::string(api::format_name(loc.format))};
  Json j;
  if (loc.format == api::ModelFormat::kGguf) {
    const io::GgufFile file = io::GgufFile::open(loc.path);
    out.text = api::gguf_listing_text(file);
    j = api::gguf_listing_json(file);
    if (const io::GgufValue* arch = file.find("general.architecture"); arch && arch->type == io::GgufValueType::kString) {
      out.architecture = arch->s;
    }
  } else {
    const model::ModelSummary s = model::inspect_hf_model(loc.path);
    out.architecture = s.config.model_type;
    out.text = hf_summary_text(job.model, s, j);
  }

  if (job.weights || job.activations) {
    ThreadPool pool(job.threads);
    report("load", 0, 0, fmt::format("loading {}", job.model));
    const api::LoadedModel m = api::load_model(job.model, pool);
    if (job.weights) {
      const calib::WeightStatsOptions options{.top_channels = job.top};
      const auto stats = calib::model_weight_stats(m.model, options, pool);
      std::vector<std::string> names;
      for (const auto& w : stats) names.push_back(weight_name(m.model, loc.format, w));
      out.text += api::weight_table_text(stats, names, options);
      j["weight_stats"] = api::weight_stats_json(stats, names, options);
    }
    if (job.activations) out.text += activations_text(job, m, report, pool, j);
  }
  // GGUF strings are arbitrary bytes: invalid UTF-8 is replaced rather than refused.
  out.json = j.dump(1, ' ', false, Json::error_handler_t::replace) + "\n";
  if (!job.json_out.empty()) api::write_text_atomic(job.json_out, out.json);
  return out;
}

}  // namespace calq
