// `calq eval`: perplexity of a model on a text file (protocol gptq-windows); with --ref, the
// comparison of one or more models against a full-precision reference; HellaSwag-style multiple
// choice and greedy generation on the same models. calq::evaluate (calq/evaluate.h) does the work;
// this file holds the flags and prints the report.
#include <fmt/format.h>

#include <memory>

#include "calq/evaluate.h"
#include "cli/commands.h"
#include "cli/eval_tasks.h"
#include "cli/progress.h"
#include "core/error.h"

namespace calq::cli {
namespace {

struct EvalFlags {
  EvalJob job;
  std::string protocol = "gptq-windows";
  bool quiet = false;
};

std::string layer_name(int64_t layer) { return layer < 0 ? std::string("head") : fmt::format("layer {}", layer); }

// Per layer, what simulated activation quantization did (LLM.int8(): the share of outlier columns
// kept in float; int8-tensor, and int8/int4-token with a clip below 1: values saturated), on one
// line per model.
void print_act_quant_counts(const ModelScore& m) {
  const std::vector<ActQuantCounts>& counts = m.activation_quant;
  if (counts.empty()) return;
  fmt::print("activations {}: {}", m.name, counts.front().kind);
  for (size_t i = 0; i < counts.size();) {
    const int64_t layer = counts[i].layer;
    const std::string& kind = counts[i].kind;
    int64_t columns = 0, outliers = 0, saturated = 0;
    for (; i < counts.size() && counts[i].layer == layer; ++i) {
      columns += counts[i].columns;
      outliers += counts[i].outlier_columns;
      saturated += counts[i].saturated;
    }
    const char* sep = layer == counts.front().layer ? ";" : ",";
    if (kind == "llm-int8") {
      fmt::print("{} {}: {:.2f}% outlier columns", sep, layer_name(layer),
                 columns > 0 ? 100.0 * static_cast<double>(outliers) / static_cast<double>(columns) : 0.0);
    } else if (kind == "int8-tensor" || saturated > 0) {  // per-token kinds saturate only when clipped
      fmt::print("{} {}: {} saturated", sep, layer_name(layer), saturated);
    }
  }
  fmt::print("\n");
}

std::string rank_text(const AdapterInfo& a) {
  return a.rank_min == a.rank_max ? fmt::format("{}", a.rank_min) : fmt::format("{}–{}", a.rank_min, a.rank_max);
}

// "adapters    DIR: 14 linears, rank 8, alpha 16; +0.512 bits/weight (4.637 with them); base sha256 checked"
void print_adapters(const ModelScore& m, bool with_name) {
  if (!m.adapters) return;
  const AdapterInfo& a = *m.adapters;
  fmt::print("adapters    {}{}: {} linears, rank {}, alpha {:g}; +{:.3f} bits/weight ({:.3f} with them); base sha256 "
             "{}\n",
             with_name ? m.name + ": " : "", a.folder, a.count, rank_text(a), a.lora_alpha, a.bits_per_weight,
             m.bits_per_weight, a.hash_checked ? "checked" : "not checked");
}

void print_header(const EvalReport& r) {
  fmt::print("text        {}\n", r.text);
  fmt::print("protocol    gptq-windows, ctx {}\n", r.ctx);
  fmt::print("tokens      {} (sha256 {})\n", r.n_tokens, r.token_ids_sha256);
}

// One line: the kernel level in use and the matmul calls per kernel (the integer path, or float).
void print_kernels(const EvalReport& r) {
  std::string calls;
  for (const auto& [key, n] : r.kernel_calls) calls += fmt::format("{}{} ×{}", calls.empty() ? "" : ", ", key, n);
  fmt::print("kernels: level {}; {}\n", r.kernel_level, calls.empty() ? "no matmuls" : calls);
}

void print_single(const EvalReport& r) {
  const ModelScore& m = r.models.front();
  fmt::print("model       {} ({}, {})\n", m.model, m.format, m.architecture);
  print_adapters(m, false);
  fmt::print("tokenizer   {}\n", r.tokenizer);
  print_header(r);
  fmt::print("windows     {} ({} predicted tokens)\n", r.n_windows, r.n_predicted);
  if (m.kv_cache != "f32") fmt::print("KV cache    {}\n", m.kv_cache);
  fmt::print("PPL         {:.4f}\n", m.ppl);
  fmt::print("speed       {:.1f} s, {:.0f} tokens/s on {} threads\n", r.seconds, m.tokens_per_second, r.threads);
}

void print_compare(const EvalReport& r) {
  fmt::print("reference   {} ({}, {})\n", r.reference, r.reference_format, r.reference_architecture);
  for (const ModelScore& m : r.models) print_adapters(m, true);
  fmt::print("tokenizer   {} (for every model)\n", r.tokenizer);
  print_header(r);
  fmt::print("windows     {} ({} predicted tokens); 95% CIs over windows\n\n", r.n_windows, r.n_predicted);
  size_t name_w = 5;
  for (const ModelScore& m : r.models) name_w = std::max(name_w, m.name.size());
  fmt::print("{:<{}}  {:>9}  {:>9}  {:>28}  {:>22}  {:>9}  {:>9}  {:>9}  {:>17}\n", "model", name_w, "PPL ref", "PPL",
             "ΔPPL [95% CI]", "KLD mean ± 95%", "KLD med", "KLD p99", "KLD max", "top-1 % ± 95%");
  for (const ModelScore& m : r.models) {
    fmt::print("{:<{}}  {:>9.4f}  {:>9.4f}  {:>28}  {:>22}  {:>9.6f}  {:>9.5f}  {:>9.4f}  {:>17}\n", m.name, name_w,
               m.ppl_ref, m.ppl,
               fmt::format("{:+.4f} [{:+.4f}, {:+.4f}]", m.delta_ppl, m.delta_ppl_ci.lo, m.delta_ppl_ci.hi),
               fmt::format("{:.6f} ± {:.6f}", m.kld_mean, m.kld_mean_ci.hi - m.kld_mean), m.kld_median, m.kld_p99,
               m.kld_max,
               fmt::format("{:.3f} ± {:.3f}", 100 * m.top1_agreement, 100 * (m.top1_agreement_ci.hi - m.top1_agreement)));
  }
  // Next-token accuracy, calibration (ECE, 15 bins) and flips against the actual next token.
  fmt::print("\n{:<{}}  {:>10}  {:>9}  {:>10}  {:>12}  {:>14}\n", "model", name_w, "accuracy", "ECE", "ΔECE",
             "flips lost", "flips gained");
  fmt::print("{:<{}}  {:>9.3f}%  {:>9.5f}  {:>10}  {:>12}  {:>14}\n", "reference", name_w, 100 * r.ref_accuracy,
             r.ref_ece, "", "", "");
  for (const ModelScore& m : r.models) {
    fmt::print("{:<{}}  {:>9.3f}%  {:>9.5f}  {:>+10.5f}  {:>12}  {:>14}\n", m.name, name_w, 100 * m.accuracy, m.ece,
               m.ece_delta, m.flips_lost, m.flips_gained);
  }
  fmt::print("\nspeed       {:.1f} s on {} threads; tokens/s: reference {:.0f}", r.seconds, r.threads,
             r.ref_tokens_per_second);
  for (const ModelScore& m : r.models) fmt::print(", {} {:.0f}", m.name, m.tokens_per_second);
  fmt::print("\n");
  for (const ModelScore& m : r.models) print_act_quant_counts(m);
}

void run_eval(EvalFlags& f) {
  if (f.protocol != "gptq-windows") {
    fail(ErrorKind::kInvalidArgument, "--protocol '{}' is not supported (supported: gptq-windows)", f.protocol);
  }
  f.job.progress = progress_printer("calq eval", f.quiet, f.job.ctx, "evaluate");
  const EvalReport r = evaluate(f.job);
  const bool has_reference = !f.job.reference.empty();
  print_kernels(r);
  if (r.has_text) {
    if (has_reference) {
      print_compare(r);
    } else {
      print_single(r);
    }
  }
  if (r.multiple_choice) print_choices(*r.multiple_choice, has_reference);
  if (!r.generations.empty()) print_generations(r.generations, f.job.max_new_tokens);
}

}  // namespace

void register_eval(CLI::App& app) {
  auto flags = std::make_shared<EvalFlags>();
  CLI::App* cmd = app.add_subcommand("eval", "Perplexity of a model on a text file, or models against a reference");
  cmd->add_option("--model", flags->job.models,
                  "Hugging Face model folder or GGUF file (repeatable with --ref: each is compared with it)")
      ->required()
      ->allow_extra_args(false);
  cmd->add_option("--ref", flags->job.reference,
                  "Full-precision reference model: report ΔPPL, KL(ref‖model), top-1 agreement with 95% CIs");
  cmd->add_option("--text", flags->job.text, "Plain-text file for perplexity (and, with --ref, the comparison)");
  cmd->add_option("--protocol", flags->protocol, "Evaluation protocol")->capture_default_str();
  cmd->add_option("--ctx", flags->job.ctx, "Window length in tokens")->capture_default_str()->check(CLI::Range(2, 1 << 20));
  cmd->add_option("--max-windows", flags->job.max_windows, "Evaluate at most this many windows (0 = all)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--threads", flags->job.threads, "Worker threads (0 = all cores)")->check(CLI::Range(0, 1024));
  cmd->add_option("--json", flags->job.json_out, "Write the full result as JSON to this file");
  cmd->add_option("--tokenizer", flags->job.tokenizer,
                  "tokenizer.json to use instead of the model's own (e.g. the HF tokenizer for a GGUF); with --ref, "
                  "instead of the reference's, for all models");
  cmd->add_option("--kv-cache", flags->job.kv_cache,
                  "Quantize the KV cache of every --model (not the reference): keys after RoPE and values stored "
                  "token by token in a format and read back before attention. f32 (none), int8 (int8-pc-sym: "
                  "per head and token), int4 (int4-g32-sym), fp8 (fp8-e4m3), or any format, e.g. q8_0, q4_0; a "
                  "comma-separated list runs each --model once per entry")
      ->delimiter(',');
  cmd->add_option("--hellaswag", flags->job.hellaswag,
                  "Multiple-choice accuracy (acc and length-normalized acc_norm) on a HellaSwag JSONL file, e.g. "
                  "../shared/data/hellaswag-val-1000.jsonl; with --ref also each model's agreement with the reference");
  cmd->add_option("--mc-items", flags->job.mc_items, "Score at most this many multiple-choice items (0 = all)");
  cmd->add_option("--generate", flags->job.generate,
                  "Greedy generation from this prompt by every model (the reference first), side by side "
                  "(repeatable)");
  cmd->add_option("--max-new-tokens", flags->job.max_new_tokens, "Tokens to generate per prompt")->capture_default_str();
  cmd->add_option("--adapter", flags->job.adapter,
                  "LoRA adapters to load onto every --model (not the reference): a PEFT adapter folder "
                  "(adapter_model.safetensors, adapter_config.json) whose calq_adapter.json records the base model's "
                  "sha256, checked against the model's file");
  cmd->add_flag("--adapter-skip-hash-check", flags->job.adapter_skip_hash_check,
                "Load --adapter without checking its base model's sha256 (e.g. adapters trained elsewhere)");
  cmd->add_flag("--exact", flags->job.exact,
                "Run the models on the exact path (OpenBLAS sgemm; quantized weights dequantized to float32) instead "
                "of the fast kernels: 8-bit integer dot products for GGUF block types, AVX-512 FMA for float weights");
  cmd->add_flag("--quiet,-q", flags->quiet, "No progress output on stderr");
  cmd->callback([flags] { run_eval(*flags); });
}

}  // namespace calq::cli
