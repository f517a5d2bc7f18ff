// `calq eval`: perplexity of a model on a text file (protocol gptq-windows); with --ref, the
// comparison of one or more models against a full-precision reference (eval/compare.h).
#include <fmt/format.h>

#include <nlohmann/json.hpp>
#include <memory>

#include "cli/commands.h"
#include "cli/eval_tasks.h"
#include "api/model_source.h"
#include "cli/progress.h"
#include "core/error.h"
#include "core/mapped_file.h"
#include "core/sha256.h"
#include "eval/compare.h"
#include "eval/perplexity.h"
#include "io/gguf.h"
#include "io/tokenizer.h"
#include "io/tokenizer/gguf_vocab.h"
#include "model/gguf_model.h"
#include "model/kv_cache.h"
#include "model/model.h"
#include "quant/act_quant.h"

namespace calq::cli {
namespace {

// Per layer: the tensors' activation-quantization counters summed (LLM.int8(): outlier columns
// over columns seen; int8-tensor: saturated values over values).
struct LayerActCounts {
  int64_t layer = 0;
  std::string kind;
  int64_t columns = 0, outlier_columns = 0, saturated = 0;
};

std::vector<LayerActCounts> by_layer(const std::vector<quant::ActQuantLayerCounts>& counts) {
  std::vector<LayerActCounts> out;
  for (const auto& c : counts) {
    if (out.empty() || out.back().layer != c.layer) out.push_back({.layer = c.layer, .kind = std::string(model::activation_quant_name(c.spec.kind))});
    LayerActCounts& l = out.back();
    l.columns += c.counts.columns;
    l.outlier_columns += c.counts.outlier_columns;
    l.saturated += c.counts.saturated;
  }
  return out;
}

void print_act_quant_counts(const std::string& name, const std::vector<quant::ActQuantLayerCounts>& counts) {
  if (counts.empty()) return;
  fmt::print("activations {}: {}", name, model::activation_quant_name(counts.front().spec.kind));
  for (const auto& l : by_layer(counts)) {
    if (l.kind == "llm-int8") {
      fmt::print("{} {}: {:.2f}% outlier columns", l.layer == counts.front().layer ? ";" : ",",
                 l.layer < 0 ? std::string("head") : fmt::format("layer {}", l.layer),
                 l.columns > 0 ? 100.0 * static_cast<double>(l.outlier_columns) / static_cast<double>(l.columns) : 0.0);
    } else if (l.kind == "int8-tensor") {
      fmt::print("{} {}: {} saturated", l.layer == counts.front().layer ? ";" : ",",
                 l.layer < 0 ? std::string("head") : fmt::format("layer {}", l.layer), l.saturated);
    }
  }
  fmt::print("\n");
}

nlohmann::ordered_json act_counts_json(const std::vector<quant::ActQuantLayerCounts>& counts) {
  nlohmann::ordered_json list = nlohmann::ordered_json::array();
  for (const auto& c : counts) {
    list.push_back({{"layer", c.layer},
                    {"role", model::role_name(c.role)},
                    {"kind", model::activation_quant_name(c.spec.kind)},
                    {"calls", c.counts.calls},
                    {"rows", c.counts.rows},
                    {"columns", c.counts.columns},
                    {"outlier_columns", c.counts.outlier_columns},
                    {"outlier_share", c.outlier_share()},
                    {"saturated", c.counts.saturated}});
  }
  return list;
}

struct EvalFlags {
  std::vector<std::string> models;
  std::string ref;  // full-precision reference: compare every --model against it
  std::string text;
  std::string protocol = "gptq-windows";
  int64_t ctx = 512;
  int64_t max_windows = 0;
  size_t threads = 0;
  std::string json_out;
  std::string tokenizer;  // tokenizer.json overriding the model's own
  std::vector<std::string> kv_cache;  // KV-cache formats (model/kv_cache.h); each --model runs once per entry
  std::string hellaswag;              // multiple-choice JSONL (eval/multiple_choice.h)
  int64_t mc_items = 0;
  std::vector<std::string> generate;  // prompts for greedy generation
  int64_t max_new_tokens = 48;
  bool quiet = false;
};

// --hellaswag and --generate over `models` (the reference first when has_reference), into `j`.
void run_tasks(const EvalFlags& f, std::span<const TaskModel> models, bool has_reference,
               const io::Tokenizer& tokenizer, ThreadPool& pool, nlohmann::ordered_json& j) {
  if (!f.hellaswag.empty()) {
    j["multiple_choice"] = run_multiple_choice_task(f.hellaswag, f.mc_items, models, has_reference, tokenizer, f.quiet, pool);
  }
  if (!f.generate.empty()) j["generate"] = run_generate_task(f.generate, f.max_new_tokens, models, tokenizer, pool);
}

void write_json(const EvalFlags& f, const nlohmann::ordered_json& j) {
  if (f.json_out.empty()) return;
  const std::string out = j.dump(1) + "\n";
  write_file_atomic(f.json_out, std::as_bytes(std::span(out.data(), out.size())));
}

// The --kv-cache entries as formats (nullptr: float cache); none given = one float run.
std::vector<const Format*> kv_cache_formats(const EvalFlags& f) {
  std::vector<const Format*> out;
  for (const std::string& name : f.kv_cache) out.push_back(model::kv_cache_format_by_name(name));
  if (out.empty()) out.push_back(nullptr);
  return out;
}

void set_kv_cache(model::Model& m, const Format* format) {
  if (format != nullptr) model::check_kv_cache_format(*format, m.config);
  m.config.kv_cache = format;
}

// llama.cpp's converter gives a SentencePiece-style ("llama") vocabulary built from a BPE
// tokenizer.json the placeholder score -1000 for every token and no merges; llama.cpp's
// score-driven merging then degenerates to left-to-right merging and segments text differently
// from the model's own tokenizer (the reference model's GGUF: 4.6 % more tokens on heldout.txt).
// Perplexities over such a token stream are not comparable with the HF model's, so say so.
void warn_if_flat_spm_scores(const io::GgufFile& gguf) {
  const io::GgufVocab vocab = io::read_gguf_vocab(gguf);
  if (vocab.type != io::GgufVocabType::kSpm || vocab.scores.size() < 2) return;
  const float first = vocab.scores.front();
  for (const float s : vocab.scores) {
    if (s != first) return;
  }
  fmt::print(stderr,
             "calq eval: warning: {}: every tokenizer.ggml.scores entry is {} (a GGUF converted from a BPE "
             "tokenizer.json); llama.cpp's score-driven merging then segments text differently from the "
             "original tokenizer. To compare with the HF model on identical tokens, pass --tokenizer "
             "path/to/tokenizer.json.\n",
             gguf.path().string(), first);
}

// The model's own tokenizer (model_paths.h) unless --tokenizer names a tokenizer.json; a GGUF's
// embedded vocabulary segments as llama.cpp does, which need not equal Hugging Face's (warned).
io::Tokenizer load_tokenizer(const EvalFlags& f, const ModelLocation& loc, const io::GgufFile* gguf,
                             std::string& source) {
  if (f.tokenizer.empty() && gguf != nullptr) warn_if_flat_spm_scores(*gguf);
  return load_model_tokenizer(loc, gguf, f.tokenizer, source);
}

void run_single_perplexity(const EvalFlags& f, const model::Model& model, const ModelLocation& loc,
                           const io::Tokenizer& tokenizer, const std::string& tokenizer_source, ThreadPool& pool,
                           nlohmann::ordered_json& j);

void run_single(const EvalFlags& f) {
  ThreadPool pool(f.threads);
  const std::string& model_path = f.models.front();
  const ModelLocation loc = resolve_model(model_path);
  // Shared with the Model, whose quantized weights view the mapped file.
  std::shared_ptr<const io::GgufFile> gguf;
  if (loc.format == ModelFormat::kGguf) gguf = std::make_shared<const io::GgufFile>(io::GgufFile::open(loc.path));
  std::string tokenizer_source;
  const io::Tokenizer tokenizer = load_tokenizer(f, loc, gguf.get(), tokenizer_source);
  if (!f.quiet) fmt::print(stderr, "calq eval: loading {}\n", model_path);
  model::Model model = gguf ? model::load_gguf_model(gguf, pool) : model::load_hf_model(loc.path, pool);
  const std::vector<const Format*> kv = kv_cache_formats(f);
  if (kv.size() > 1) {
    fail(ErrorKind::kInvalidArgument, "--kv-cache lists {} formats; one model without --ref takes one", kv.size());
  }
  set_kv_cache(model, kv.front());
  nlohmann::ordered_json j;
  if (!f.text.empty()) run_single_perplexity(f, model, loc, tokenizer, tokenizer_source, pool, j);
  const TaskModel task_models[] = {{.name = model_path, .model = &model}};
  run_tasks(f, task_models, /*has_reference=*/false, tokenizer, pool, j);
  write_json(f, j);
}

void run_single_perplexity(const EvalFlags& f, const model::Model& model, const ModelLocation& loc,
                           const io::Tokenizer& tokenizer, const std::string& tokenizer_source, ThreadPool& pool,
                           nlohmann::ordered_json& j) {
  const std::string& model_path = f.models.front();
  const std::string text = read_text_file(f.text);
  const std::vector<int32_t> ids = tokenizer.encode(text, /*add_special_tokens=*/false);
  if (!f.quiet) fmt::print(stderr, "calq eval: {} tokens from {}\n", ids.size(), f.text);
  ProgressBar bar("windows", f.ctx, !f.quiet);
  const eval::PerplexityResult r = eval::evaluate_perplexity(
      model, ids, {.ctx = f.ctx, .max_windows = f.max_windows, .on_progress = [&](int64_t d, int64_t t) { bar.update(d, t); }},
      pool);
  bar.finish();
  const std::string sha = token_ids_sha256(ids);

  fmt::print("model       {} ({}, {})\n", model_path, format_name(loc.format), model.config.model_type);
  fmt::print("tokenizer   {}\n", tokenizer_source);
  fmt::print("text        {}\n", f.text);
  fmt::print("protocol    gptq-windows, ctx {}\n", f.ctx);
  fmt::print("tokens      {} (sha256 {})\n", ids.size(), sha);
  fmt::print("windows     {} ({} predicted tokens)\n", r.n_windows, r.n_predicted);
  if (model.config.kv_cache != nullptr) fmt::print("KV cache    {}\n", model.config.kv_cache->name());
  fmt::print("PPL         {:.4f}\n", r.ppl);
  fmt::print("speed       {:.1f} s, {:.0f} tokens/s on {} threads\n", r.seconds, r.tokens_per_second,
             pool.num_threads());

  {
    j["protocol"] = "gptq-windows";
    j["ctx"] = f.ctx;
    j["model"] = model_path;
    j["model_format"] = format_name(loc.format);
    j["architecture"] = model.config.model_type;
    j["tokenizer"] = tokenizer_source;
    j["text"] = f.text;
    j["n_tokens"] = ids.size();
    j["n_windows"] = r.n_windows;
    j["n_predicted"] = r.n_predicted;
    j["token_ids_sha256"] = sha;
    j["first_64_ids"] = std::vector<int32_t>(ids.begin(), ids.begin() + std::min<size_t>(64, ids.size()));
    j["kv_cache"] = model.config.kv_cache != nullptr ? model.config.kv_cache->name() : "f32";
    j["ppl"] = r.ppl;
    if (r.n_windows >= 8) j["ppl_first_8_windows"] = eval::ppl_of_prefix(r, 8);
    j["nll_per_window"] = r.nll_per_window;
    j["seconds"] = r.seconds;
    j["tokens_per_second"] = r.tokens_per_second;
    j["threads"] = pool.num_threads();
  }
}

using api::LoadedModel;

LoadedModel load_any_model(const std::string& arg, const Format* kv_cache, ThreadPool& pool) {
  return api::load_model(arg, pool, {.kv_cache = kv_cache});
}

nlohmann::json interval_json(const eval::Interval& i) { return nlohmann::json::array({i.lo, i.hi}); }

std::string display_name(const LoadedModel& m) {
  const std::filesystem::path p = m.location.path.has_filename() ? m.location.path : m.location.path.parent_path();
  const Format* kv = m.model.config.kv_cache;
  return kv != nullptr ? p.filename().string() + " kv:" + kv->name() : p.filename().string();
}

void compare_on_text(const EvalFlags& f, const LoadedModel& ref, const std::vector<LoadedModel>& cands,
                     const io::Tokenizer& tokenizer, const std::string& tokenizer_source, ThreadPool& pool,
                     nlohmann::ordered_json& j);

// Every --model against --ref on the token ids of one tokenizer: --tokenizer if given, else the
// reference's own (so all models see identical ids, whatever tokenizer a candidate GGUF embeds).
void run_compare(const EvalFlags& f) {
  ThreadPool pool(f.threads);
  const ModelLocation ref_loc = resolve_model(f.ref);
  std::shared_ptr<const io::GgufFile> ref_gguf;
  if (ref_loc.format == ModelFormat::kGguf) ref_gguf = std::make_shared<const io::GgufFile>(io::GgufFile::open(ref_loc.path));
  std::string tokenizer_source;
  const io::Tokenizer tokenizer = load_tokenizer(f, ref_loc, ref_gguf.get(), tokenizer_source);
  if (!f.quiet) fmt::print(stderr, "calq eval: loading {} and {} model(s)\n", f.ref, f.models.size());
  LoadedModel ref{.arg = f.ref, .location = ref_loc, .gguf = ref_gguf, .model = {}};
  ref.model = ref_gguf ? model::load_gguf_model(ref_gguf, pool) : model::load_hf_model(ref_loc.path, pool);
  std::vector<LoadedModel> cands;
  cands.reserve(f.models.size());
  for (const std::string& m : f.models) {
    for (const Format* kv : kv_cache_formats(f)) cands.push_back(load_any_model(m, kv, pool));
  }
  nlohmann::ordered_json j;
  if (!f.text.empty()) compare_on_text(f, ref, cands, tokenizer, tokenizer_source, pool, j);
  std::vector<TaskModel> task_models = {{.name = "reference", .model = &ref.model}};
  for (const LoadedModel& c : cands) task_models.push_back({.name = display_name(c), .model = &c.model});
  run_tasks(f, task_models, /*has_reference=*/true, tokenizer, pool, j);
  write_json(f, j);
}

void compare_on_text(const EvalFlags& f, const LoadedModel& ref, const std::vector<LoadedModel>& cands,
                     const io::Tokenizer& tokenizer, const std::string& tokenizer_source, ThreadPool& pool,
                     nlohmann::ordered_json& j) {
  const ModelLocation& ref_loc = ref.location;
  const std::string text = read_text_file(f.text);
  const std::vector<int32_t> ids = tokenizer.encode(text, /*add_special_tokens=*/false);
  if (!f.quiet) fmt::print(stderr, "calq eval: {} tokens from {}\n", ids.size(), f.text);
  std::vector<const model::Model*> cand_ptrs;
  for (const LoadedModel& c : cands) cand_ptrs.push_back(&c.model);

  ProgressBar bar("windows", f.ctx, !f.quiet);
  const eval::CompareReport rep = eval::compare_models(
      ref.model, cand_ptrs, ids,
      {.ctx = f.ctx, .max_windows = f.max_windows, .on_progress = [&](int64_t d, int64_t t) { bar.update(d, t); }}, pool);
  bar.finish();
  const std::string sha = token_ids_sha256(ids);

  fmt::print("reference   {} ({}, {})\n", f.ref, format_name(ref_loc.format), ref.model.config.model_type);
  fmt::print("tokenizer   {} (for every model)\n", tokenizer_source);
  fmt::print("text        {}\n", f.text);
  fmt::print("protocol    gptq-windows, ctx {}\n", f.ctx);
  fmt::print("tokens      {} (sha256 {})\n", ids.size(), sha);
  fmt::print("windows     {} ({} predicted tokens); 95% CIs over windows\n\n", rep.n_windows, rep.n_predicted);
  size_t name_w = 5;
  for (const LoadedModel& c : cands) name_w = std::max(name_w, display_name(c).size());
  fmt::print("{:<{}}  {:>9}  {:>9}  {:>28}  {:>22}  {:>9}  {:>9}  {:>9}  {:>17}\n", "model", name_w, "PPL ref", "PPL",
             "ΔPPL [95% CI]", "KLD mean ± 95%", "KLD med", "KLD p99", "KLD max", "top-1 % ± 95%");
  for (size_t i = 0; i < cands.size(); ++i) {
    const eval::CompareResult& r = rep.candidates[i];
    fmt::print("{:<{}}  {:>9.4f}  {:>9.4f}  {:>28}  {:>22}  {:>9.6f}  {:>9.5f}  {:>9.4f}  {:>17}\n",
               display_name(cands[i]), name_w, r.ppl_ref, r.ppl,
               fmt::format("{:+.4f} [{:+.4f}, {:+.4f}]", r.delta_ppl, r.delta_ppl_ci.lo, r.delta_ppl_ci.hi),
               fmt::format("{:.6f} ± {:.6f}", r.kld_mean, r.kld_mean_ci.hi - r.kld_mean), r.kld.median, r.kld.p99,
               r.kld.max,
               fmt::format("{:.3f} ± {:.3f}", 100 * r.top1_agreement, 100 * (r.top1_agreement_ci.hi - r.top1_agreement)));
  }
  // Next-token accuracy, calibration (ECE, 15 bins) and flips against the actual next token.
  fmt::print("\n{:<{}}  {:>10}  {:>9}  {:>10}  {:>12}  {:>14}\n", "model", name_w, "accuracy", "ECE", "ΔECE",
             "flips lost", "flips gained");
  fmt::print("{:<{}}  {:>9.3f}%  {:>9.5f}  {:>10}  {:>12}  {:>14}\n", "reference", name_w, 100 * rep.ref_accuracy,
             rep.ref_ece, "", "", "");
  for (size_t i = 0; i < cands.size(); ++i) {
    const eval::CompareResult& r = rep.candidates[i];
    fmt::print("{:<{}}  {:>9.3f}%  {:>9.5f}  {:>+10.5f}  {:>12}  {:>14}\n", display_name(cands[i]), name_w,
               100 * r.accuracy, r.ece, r.ece_delta, r.flips_lost, r.flips_gained);
  }
  fmt::print("\nspeed       {:.1f} s on {} threads; tokens/s: reference {:.0f}", rep.seconds, pool.num_threads(),
             rep.ref_tokens_per_second);
  for (size_t i = 0; i < cands.size(); ++i) {
    fmt::print(", {} {:.0f}", display_name(cands[i]), rep.candidates[i].tokens_per_second);
  }
  fmt::print("\n");
  // Models with simulated activation quantization: what it did, per layer (LLM.int8()'s share of
  // outlier columns kept in float; values a static int8 scale saturated).
  std::vector<std::vector<quant::ActQuantLayerCounts>> act_counts;
  for (size_t i = 0; i < cands.size(); ++i) {
    act_counts.push_back(quant::activation_quant_counts(cands[i].model));
    print_act_quant_counts(display_name(cands[i]), act_counts.back());
  }

  j["protocol"] = "gptq-windows";
  j["ctx"] = f.ctx;
  j["reference"] = {{"model", f.ref},
                    {"model_format", format_name(ref_loc.format)},
                    {"architecture", ref.model.config.model_type}};
  j["tokenizer"] = tokenizer_source;
  j["text"] = f.text;
  j["n_tokens"] = ids.size();
  j["n_windows"] = rep.n_windows;
  j["n_predicted"] = rep.n_predicted;
  j["token_ids_sha256"] = sha;
  j["ci"] = "95%, Student t over per-window values (windows as independent units); null with one window";
  j["kld_percentile_method"] = "linear interpolation between order statistics (Hyndman-Fan type 7)";
  j["ppl_ref"] = rep.candidates.empty() ? 0.0 : rep.candidates[0].ppl_ref;
  j["nll_ref_per_window"] = rep.candidates.empty() ? std::vector<double>{} : rep.candidates[0].nll_ref_per_window;
  j["ref_accuracy"] = rep.ref_accuracy;
  j["ref_ece"] = rep.ref_ece;
  j["ece_bins"] = eval::kEceBins;
  j["ref_forward_seconds"] = rep.ref_forward_seconds;
  j["ref_tokens_per_second"] = rep.ref_tokens_per_second;
  j["seconds"] = rep.seconds;
  j["threads"] = pool.num_threads();
  nlohmann::ordered_json list = nlohmann::ordered_json::array();
  for (size_t i = 0; i < cands.size(); ++i) {
    const eval::CompareResult& r = rep.candidates[i];
    nlohmann::ordered_json c;
    c["model"] = cands[i].arg;
    c["model_format"] = format_name(cands[i].location.format);
    c["architecture"] = cands[i].model.config.model_type;
    c["bits_per_weight"] = cands[i].model.bits_per_weight();
    c["kv_cache"] = cands[i].model.config.kv_cache != nullptr ? cands[i].model.config.kv_cache->name() : "f32";
    c["ppl_ref"] = r.ppl_ref;
    c["ppl"] = r.ppl;
    c["delta_ppl"] = r.delta_ppl;
    c["delta_ppl_ci95"] = interval_json(r.delta_ppl_ci);
    c["ppl_ratio"] = r.ppl_ratio;
    c["ppl_ratio_ci95"] = interval_json(r.ppl_ratio_ci);
    c["kld_mean"] = r.kld_mean;
    c["kld_mean_ci95"] = interval_json(r.kld_mean_ci);
    c["kld_median"] = r.kld.median;
    c["kld_p90"] = r.kld.p90;
    c["kld_p99"] = r.kld.p99;
    c["kld_p999"] = r.kld.p999;
    c["kld_max"] = r.kld.max;
    c["top1_agreement"] = r.top1_agreement;
    c["top1_agreement_ci95"] = interval_json(r.top1_agreement_ci);
    c["accuracy"] = r.accuracy;
    c["ece"] = r.ece;
    c["ece_delta"] = r.ece_delta;
    c["flips_lost"] = r.flips_lost;
    c["flips_gained"] = r.flips_gained;
    c["n_windows"] = r.n_windows;
    c["n_predicted"] = r.n_predicted;
    c["nll_per_window"] = r.nll_per_window;
    c["kld_per_window"] = r.kld_per_window;
    c["top1_per_window"] = r.top1_per_window;
    if (!act_counts[i].empty()) c["activation_quant"] = act_counts_json(act_counts[i]);
    c["forward_seconds"] = r.forward_seconds;
    c["tokens_per_second"] = r.tokens_per_second;
    list.push_back(std::move(c));
  }
  j["candidates"] = std::move(list);
}

void run_eval(const EvalFlags& f) {
  if (f.protocol != "gptq-windows") {
    fail(ErrorKind::kInvalidArgument, "--protocol '{}' is not supported (supported: gptq-windows)", f.protocol);
  }
  if (f.text.empty() && f.hellaswag.empty() && f.generate.empty()) {
    fail(ErrorKind::kInvalidArgument, "nothing to evaluate: give --text (perplexity, and with --ref the comparison), "
         "--hellaswag or --generate");
  }
  if (f.mc_items < 0 || f.max_new_tokens < 0) {
    fail(ErrorKind::kInvalidArgument, "--mc-items and --max-new-tokens must be >= 0");
  }
  if (!f.ref.empty()) return run_compare(f);
  if (f.models.size() != 1) {
    fail(ErrorKind::kInvalidArgument, "{} --model given; evaluating several models needs --ref (the full-precision "
         "reference they are compared with)", f.models.size());
  }
  run_single(f);
}

}  // namespace

void register_eval(CLI::App& app) {
  auto flags = std::make_shared<EvalFlags>();
  CLI::App* cmd = app.add_subcommand("eval", "Perplexity of a model on a text file, or models against a reference");
  cmd->add_option("--model", flags->models,
                  "Hugging Face model folder or GGUF file (repeatable with --ref: each is compared with it)")
      ->required()
      ->allow_extra_args(false);
  cmd->add_option("--ref", flags->ref,
                  "Full-precision reference model: report ΔPPL, KL(ref‖model), top-1 agreement with 95% CIs");
  cmd->add_option("--text", flags->text, "Plain-text file for perplexity (and, with --ref, the comparison)");
  cmd->add_option("--protocol", flags->protocol, "Evaluation protocol")->capture_default_str();
  cmd->add_option("--ctx", flags->ctx, "Window length in tokens")->capture_default_str()->check(CLI::Range(2, 1 << 20));
  cmd->add_option("--max-windows", flags->max_windows, "Evaluate at most this many windows (0 = all)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--threads", flags->threads, "Worker threads (0 = all cores)")->check(CLI::Range(0, 1024));
  cmd->add_option("--json", flags->json_out, "Write the full result as JSON to this file");
  cmd->add_option("--tokenizer", flags->tokenizer,
                  "tokenizer.json to use instead of the model's own (e.g. the HF tokenizer for a GGUF); with --ref, "
                  "instead of the reference's, for all models");
  cmd->add_option("--kv-cache", flags->kv_cache,
                  "Quantize the KV cache of every --model (not the reference): keys after RoPE and values stored "
                  "token by token in a format and read back before attention. f32 (none), int8 (int8-pc-sym: "
                  "per head and token), int4 (int4-g32-sym), fp8 (fp8-e4m3), or any format, e.g. q8_0, q4_0; a "
                  "comma-separated list runs each --model once per entry")
      ->delimiter(',');
  cmd->add_option("--hellaswag", flags->hellaswag,
                  "Multiple-choice accuracy (acc and length-normalized acc_norm) on a HellaSwag JSONL file, e.g. "
                  "../shared/data/hellaswag-val-1000.jsonl; with --ref also each model's agreement with the reference");
  cmd->add_option("--mc-items", flags->mc_items, "Score at most this many multiple-choice items (0 = all)");
  cmd->add_option("--generate", flags->generate,
                  "Greedy generation from this prompt by every model (the reference first), side by side "
                  "(repeatable)");
  cmd->add_option("--max-new-tokens", flags->max_new_tokens, "Tokens to generate per prompt")->capture_default_str();
  cmd->add_flag("--quiet,-q", flags->quiet, "No progress output on stderr");
  cmd->callback([flags] { run_eval(*flags); });
}

}  // namespace calq::cli
