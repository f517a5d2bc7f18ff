// `calq merge --model M --adapter DIR --out OUT.gguf [--type f16|bf16|f32]`: LoRA adapters folded
// into their base model's weights, written as a float GGUF (calq::merge_adapters, calq/adapters.h).
#include <fmt/format.h>

#include <memory>
#include <string>

#include "calq/adapters.h"
#include "cli/commands.h"
#include "cli/progress.h"

namespace calq::cli {
namespace {

struct MergeFlags {
  AdapterMergeJob job;
  bool quiet = false;
};

void run_merge(MergeFlags& f) {
  f.job.progress = progress_printer("calq merge", f.quiet);
  const AdapterMergeReport r = merge_adapters(f.job);
  const AdapterInfo& a = r.adapters;
  fmt::print("merged      {} linears from {} (rank {}{}, alpha {:g}; base sha256 {})\n", a.count, a.folder, a.rank_min,
             a.rank_max != a.rank_min ? fmt::format("–{}", a.rank_max) : "", a.lora_alpha,
             a.hash_checked ? "checked" : "not checked");
  fmt::print("wrote       {} ({}, {:.3f} bits/weight, {:.1f} MiB) in {:.1f} s\n", r.out, r.type, r.bits_per_weight,
             static_cast<double>(r.bytes_out) / (1 << 20), r.seconds);
}

}  // namespace

void register_merge(CLI::App& app) {
  auto flags = std::make_shared<MergeFlags>();
  CLI::App* cmd = app.add_subcommand(
      "merge",
      "Fold LoRA adapters (a PEFT adapter folder) into their base model: every adapted weight becomes the base "
      "weight (dequantized) + (lora_alpha / r)·B·A, and the whole model is written as a float GGUF");
  cmd->add_option("--model", flags->job.model, "The adapters' base model: Hugging Face folder or GGUF file")->required();
  cmd->add_option("--adapter", flags->job.adapter, "PEFT adapter folder (adapter_model.safetensors, adapter_config.json)")
      ->required();
  cmd->add_option("--out,-o", flags->job.out, "GGUF file to write")->required();
  cmd->add_option("--type", flags->job.type, "Type of every matrix of the output: f16, bf16 or f32")
      ->capture_default_str();
  cmd->add_flag("--adapter-skip-hash-check", flags->job.adapter_skip_hash_check,
                "Merge without checking the adapters' recorded base model sha256 against --model");
  cmd->add_option("--threads", flags->job.threads, "Worker threads (0 = all cores)")->check(CLI::Range(0, 1024));
  cmd->add_flag("--force", flags->job.force, "Overwrite an existing --out");
  cmd->add_flag("--quiet,-q", flags->quiet, "No progress output on stderr");
  cmd->callback([flags] { run_merge(*flags); });
}

}  // namespace calq::cli
