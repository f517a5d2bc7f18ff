// `calq synth --arch A [shape options] --out FOLDER [--gguf FILE]`: a model with deterministic
// random weights and a small generated tokenizer, as a Hugging Face folder and optionally a GGUF
// file (calq::synthesize, calq/synth.h) — for reference checks against other implementations and
// for shape-only experiments.
#include <fmt/format.h>

#include <memory>
#include <string>

#include "calq/synth.h"
#include "cli/commands.h"
#include "cli/progress.h"

namespace calq::cli {
namespace {

struct SynthFlags {
  SynthJob job;
  bool quiet = false;
};

void run_synth(SynthFlags& f) {
  f.job.progress = progress_printer("calq synth", f.quiet);
  const SynthReport r = synthesize(f.job);
  fmt::print("wrote       {} ({}, {} parameters, vocab {}, {:.2f} MiB)\n", r.out, f.job.dtype, r.n_params, r.vocab,
             static_cast<double>(r.bytes_hf) / (1 << 20));
  if (!r.gguf.empty()) {
    fmt::print("wrote       {} ({} matrices, {:.2f} MiB)\n", r.gguf, f.job.gguf_type,
               static_cast<double>(r.bytes_gguf) / (1 << 20));
  }
  fmt::print("in {:.1f} s\n", r.seconds);
}

}  // namespace

void register_synth(CLI::App& app) {
  auto flags = std::make_shared<SynthFlags>();
  SynthJob& j = flags->job;
  CLI::App* cmd = app.add_subcommand(
      "synth",
      "Write a model with deterministic random weights (the same seed gives the same bytes anywhere) and a small "
      "generated SentencePiece-style tokenizer, as a Hugging Face folder and optionally a GGUF file that llama.cpp "
      "loads: for checks against other implementations and shape-only experiments.");
  cmd->add_option("--arch", j.arch, "Architecture (config.json model_type: llama, mistral, qwen2, qwen3, mixtral, qwen2_moe, qwen3_moe, ...)")->required();
  cmd->add_option("--layers", j.layers, "Decoder layers")->capture_default_str()->check(CLI::Range(1, 4096));
  cmd->add_option("--hidden", j.hidden, "Hidden size")->capture_default_str();
  cmd->add_option("--heads", j.heads, "Attention heads")->capture_default_str();
  cmd->add_option("--kv-heads", j.kv_heads, "Key/value heads (0 = --heads)")->capture_default_str();
  cmd->add_option("--head-dim", j.head_dim, "Head dimension (0 = hidden / heads)")->capture_default_str();
  cmd->add_option("--ffn", j.ffn, "MLP intermediate size")->capture_default_str();
  cmd->add_option("--vocab", j.vocab, "Vocabulary size (at least 260)")->capture_default_str();
  cmd->add_option("--sliding-window", j.sliding_window, "Attention window on every layer (0 = none; mistral, qwen2)")
      ->capture_default_str();
  cmd->add_flag("--tied", j.tied, "Tie the output head to the embedding");
  cmd->add_option("--max-position", j.max_position, "max_position_embeddings")->capture_default_str();
  cmd->add_option("--rope-theta", j.rope_theta, "Rotary base")->capture_default_str();
  cmd->add_option("--rms-norm-eps", j.rms_norm_eps, "RMSNorm epsilon")->capture_default_str();
  cmd->add_option("--rope-scaling", j.rope_scaling, "Rotary scaling: linear or llama3 (default none)");
  cmd->add_option("--rope-factor", j.rope_factor, "Rotary scaling factor")->capture_default_str();
  cmd->add_option("--rope-low-freq-factor", j.rope_low_freq_factor, "llama3 rotary scaling: low_freq_factor")
      ->capture_default_str();
  cmd->add_option("--rope-high-freq-factor", j.rope_high_freq_factor, "llama3 rotary scaling: high_freq_factor")
      ->capture_default_str();
  cmd->add_option("--rope-original-max-position", j.rope_original_max_position,
                  "llama3 rotary scaling: original_max_position_embeddings")
      ->capture_default_str();
  cmd->add_option("--experts", j.experts, "Experts per layer (mixture-of-experts types; 0 = 4)")->capture_default_str();
  cmd->add_option("--experts-per-token", j.experts_per_token, "Experts picked per token (0 = 2)")->capture_default_str();
  cmd->add_option("--expert-ffn", j.expert_ffn, "Each expert's intermediate size (0 = --ffn)")->capture_default_str();
  cmd->add_option("--shared-ffn", j.shared_ffn, "The shared expert's intermediate size (qwen2_moe; 0 = --ffn)")
      ->capture_default_str();
  cmd->add_option("--norm-topk-prob", j.norm_topk_prob,
                  "Renormalise the picked experts' weights (true/false; default: what llama.cpp does for the type)");
  cmd->add_option("--seed", j.seed, "Seed of the weights")->capture_default_str();
  cmd->add_option("--dtype", j.dtype, "dtype of the folder's safetensors (and of the weights): f32 or bf16")
      ->capture_default_str();
  cmd->add_option("--weights", j.weights,
                  "How the weights are drawn: uniform, or outliers (row scales, outlier input columns, norms with a "
                  "few recurring channels 10-50x the others, as trained models have)")
      ->capture_default_str();
  cmd->add_option("--out,-o", j.out, "Hugging Face folder to write (written tensor by tensor: the memory of one tensor)")
      ->required();
  cmd->add_option("--gguf", j.gguf,
                  "Also write the model as this GGUF file (llama.cpp's layout; made from the whole model in float32, "
                  "refused when that exceeds the available memory)");
  cmd->add_option("--gguf-type", j.gguf_type, "Type of the GGUF's matrices: f32, f16 or bf16")->capture_default_str();
  cmd->add_option("--threads", j.threads, "Worker threads (0 = all cores)")->check(CLI::Range(0, 1024));
  cmd->add_flag("--force", j.force, "Replace existing outputs");
  cmd->add_flag("--quiet,-q", flags->quiet, "No progress output on stderr");
  cmd->callback([flags] { run_synth(*flags); });
}

}  // namespace calq::cli
