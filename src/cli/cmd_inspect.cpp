// `calq inspect`: what a model file holds, and (on request) its outlier statistics.
//
//  * A Hugging Face folder: architecture, hyper-parameters and tensor list, from headers only.
//  * A GGUF file: header, every metadata key and every tensor with its ggml type and ne.
//  * --weights: per weight tensor min/max/mean/std/excess kurtosis, share beyond 6 sigma, per
//    input channel max |w| and outlier channels (calib/weight_stats.h).
//  * --activations --text F --samples N [--ctx C]: N calibration windows through the model,
//    per linear input the per-channel max |x|, max/median ratio, channels above LLM.int8()'s 6.0
//    (calib/activation_stats.h, windows chosen as calib/calibration.h says).
#include <fmt/format.h>

#include <chrono>
#include <nlohmann/json.hpp>

#include "core/stopwatch.h"
#include "calib/activation_stats.h"
#include "calib/calibration.h"
#include "calib/weight_stats.h"
#include "cli/commands.h"
#include "cli/inspect_gguf.h"
#include "cli/inspect_report.h"
#include "api/model_source.h"
#include "cli/progress.h"
#include "core/error.h"
#include "core/mapped_file.h"
#include "io/gguf.h"
#include "io/tokenizer.h"
#include "model/gguf_model.h"
#include "model/model.h"

namespace calq::cli {
namespace {

struct InspectFlags {
  std::string model;
  std::string json_out;
  bool weights = false;
  bool activations = false;
  std::string text;
  std::string tokenizer;
  int64_t samples = 128;
  int64_t ctx = 512;
  size_t threads = 0;
  size_t top = 8;
  bool quiet = false;
};

void print_hf_summary(const InspectFlags& f, const model::ModelSummary& s, nlohmann::ordered_json& j) {
  const auto& c = s.config;
  fmt::print("model          {}\n", f.model);
  fmt::print("architecture   {}\n", c.model_type);
  fmt::print("layers         {}\n", c.num_layers);
  fmt::print("hidden         {}\n", c.hidden_size);
  fmt::print("intermediate   {}\n", c.intermediate_size);
  fmt::print("heads          {} (kv heads {}, head dim {})\n", c.num_heads, c.num_kv_heads, c.head_dim);
  fmt::print("vocab          {}\n", c.vocab_size);
  fmt::print("rope theta     {}\n", c.rope_theta);
  fmt::print("rms norm eps   {}\n", c.rms_norm_eps);
  fmt::print("tied embedding {}\n", c.tie_word_embeddings ? "yes" : "no");
  fmt::print("parameters     {} ({:.1f} M)\n\n", s.parameter_count, static_cast<double>(s.parameter_count) / 1e6);
  size_t width = 4;
  for (const auto& t : s.tensors) width = std::max(width, t.name.size());
  fmt::print("{:<{}}  {:<5}  {}\n", "name", width, "dtype", "shape");
  for (const auto& t : s.tensors) fmt::print("{:<{}}  {:<5}  {}\n", t.name, width, t.dtype, shape_string(t.shape));

  j["model"] = f.model;
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
  j["parameter_count"] = s.parameter_count;
  auto& tensors = j["tensors"] = nlohmann::ordered_json::array();
  for (const auto& t : s.tensors) tensors.push_back({{"name", t.name}, {"dtype", t.dtype}, {"shape", t.shape}});
}

// The name of a weight in the model's own file format.
std::string weight_name(const model::Model& m, ModelFormat format, const calib::ModelWeightStats& w) {
  const auto name = [&](model::TensorRole role) {
    return format == ModelFormat::kGguf ? model::gguf_tensor_name(*m.arch, role, w.layer)
                                        : model::hf_tensor_name(*m.arch, role, w.layer);
  };
  if (w.tied) return name(model::TensorRole::kTokenEmbedding) + " (tied output)";
  return name(w.role);
}

io::Tokenizer load_tokenizer(const InspectFlags& f, const ModelLocation& loc) {
  if (!f.tokenizer.empty()) return io::Tokenizer::from_file(f.tokenizer);
  if (loc.format == ModelFormat::kHfFolder) return io::Tokenizer::from_file(loc.path / "tokenizer.json");
  fail(ErrorKind::kUnsupported,
       "{}: the tokenizer embedded in GGUF files is not read by this version; pass --tokenizer tokenizer.json",
       loc.path.string());
}

void run_activations(const InspectFlags& f, const ModelLocation& loc, const model::Model& m, ThreadPool& pool,
                     nlohmann::ordered_json& j) {
  const io::Tokenizer tokenizer = load_tokenizer(f, loc);
  const std::vector<int32_t> ids = tokenizer.encode(read_text_file(f.text), /*add_special_tokens=*/false);
  const std::vector<int64_t> starts = calib::calibration_windows(static_cast<int64_t>(ids.size()), f.ctx, f.samples);
  if (!f.quiet) {
    fmt::print(stderr, "calq inspect: {} tokens from {}; {} windows of {} tokens\n", ids.size(), f.text,
               starts.size(), f.ctx);
  }
  ProgressBar bar("windows", f.ctx, !f.quiet);
  const auto start = std::chrono::steady_clock::now();
  const calib::ActivationObserver obs = calib::observe_activations(
      m, ids,
      {.ctx = f.ctx, .samples = f.samples, .on_progress = [&](int64_t d, int64_t t) { bar.update(d, t); }}, pool);
  const double seconds = seconds_since(start);
  bar.finish();
  const calib::ActivationStats st = calib::summarize_activations(obs, f.top);
  const double tokens = static_cast<double>(f.samples * f.ctx);
  fmt::print("\nactivation pass: {} windows x {} tokens of {} ({} tokens in the text), {:.1f} s, {:.0f} tokens/s on {} "
             "threads\n",
             f.samples, f.ctx, f.text, ids.size(), seconds, tokens / seconds, pool.num_threads());
  print_activation_table(st);

  nlohmann::ordered_json a = activation_stats_json(st);
  a["text"] = f.text;
  a["text_tokens"] = ids.size();
  a["ctx"] = f.ctx;
  a["samples"] = f.samples;
  a["window_selection"] = "evenly spaced over the gptq-windows grid: window floor(i * W / samples), W = tokens / ctx";
  a["window_starts"] = starts;
  a["seconds"] = seconds;
  a["tokens_per_second"] = tokens / seconds;
  a["threads"] = pool.num_threads();
  j["activation_stats"] = std::move(a);
}

void run_inspect(const InspectFlags& f) {
  if (f.activations && f.text.empty()) fail(ErrorKind::kInvalidArgument, "--activations needs --text FILE");
  const ModelLocation loc = resolve_model(f.model);
  nlohmann::ordered_json j;
  if (loc.format == ModelFormat::kGguf) {
    const io::GgufFile file = io::GgufFile::open(loc.path);
    print_gguf_listing(file);
    j = gguf_listing_json(file);
  } else {
    print_hf_summary(f, model::inspect_hf_model(loc.path), j);
  }

  if (f.weights || f.activations) {
    ThreadPool pool(f.threads);
    const model::Model m = loc.format == ModelFormat::kGguf ? model::load_gguf_model(loc.path, pool)
                                                            : model::load_hf_model(loc.path, pool);
    if (f.weights) {
      const calib::WeightStatsOptions options{.top_channels = f.top};
      const auto stats = calib::model_weight_stats(m, options, pool);
      std::vector<std::string> names;
      for (const auto& w : stats) names.push_back(weight_name(m, loc.format, w));
      print_weight_table(stats, names, options);
      j["weight_stats"] = weight_stats_json(stats, names, options);
    }
    if (f.activations) run_activations(f, loc, m, pool, j);
  }

  if (!f.json_out.empty()) {
    // GGUF strings are arbitrary bytes: invalid UTF-8 is replaced rather than refused.
    const std::string out = j.dump(1, ' ', false, nlohmann::ordered_json::error_handler_t::replace) + "\n";
    write_file_atomic(f.json_out, std::as_bytes(std::span(out.data(), out.size())));
  }
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
  cmd->add_option("model", flags->model, "Hugging Face model folder or GGUF file")->required();
  cmd->add_flag("--weights", flags->weights,
                "Per weight tensor: min/max/mean/std/excess kurtosis, share beyond 6 sigma, per input channel max "
                "|w| and outlier channels (max |w| > 2 x median)");
  CLI::Option* act = cmd->add_flag("--activations", flags->activations,
                                   "Per linear input: per channel max |x| over the calibration windows, max/median "
                                   "ratio, channels above the LLM.int8() threshold 6.0 (needs --text)");
  cmd->add_option("--text", flags->text, "Calibration text for --activations")->needs(act);
  cmd->add_option("--samples", flags->samples, "Calibration windows for --activations")
      ->capture_default_str()
      ->needs(act);
  cmd->add_option("--ctx", flags->ctx, "Calibration window length in tokens")
      ->capture_default_str()
      ->check(CLI::Range(2, 1 << 20))
      ->needs(act);
  cmd->add_option("--tokenizer", flags->tokenizer, "tokenizer.json to use instead of the model's own")->needs(act);
  cmd->add_option("--threads", flags->threads, "Worker threads (0 = all cores)")->check(CLI::Range(0, 1024));
  cmd->add_option("--top", flags->top, "Top channels listed per tensor/input in the JSON (the table shows 3)")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--json", flags->json_out, "Also write everything as JSON to this file");
  cmd->add_flag("--quiet,-q", flags->quiet, "No progress output on stderr");
  cmd->callback([flags] { run_inspect(*flags); });
}

}  // namespace calq::cli
