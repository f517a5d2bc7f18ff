// Synthetic models: a Model of any shape of any architecture with deterministic random weights,
// plus a small generated SentencePiece-style tokenizer — what reference checks against other
// implementations need (llama.cpp's logits on `calq synth` models, tests/fixtures/llama_cpp_logits)
// when no real model of an architecture is at hand, and what shape-only experiments need (memory,
// speed of a Llama-3-8B-shaped model).
//
// Contract of synth_config(spec): the ModelConfig of a config.json with these hyper-parameters
// (built by hf_config_json and read back by parse_hf_config_text, so it is exactly what loading
// the written folder gives: qkv_bias, layer windows and the rest follow the architecture table),
// bos 1 and eos 2 (the generated tokenizer's). A sliding window applies to every layer, and only
// to an architecture with a window rule; experts only to a mixture-of-experts architecture (every
// layer sparse). Bad values are kInvalidArgument naming the SynthSpec field (an unknown model_type
// is kUnsupported listing the supported ones).
//
// Contract of synth_model(config, seed, pool, dtype): every tensor the config calls for (the same
// set and shapes load_hf_model reads; no output head when tied), each row drawn from its own
// std::mt19937_64, seeded from (seed, role, layer, expert, row), uniformly with a mean and standard
// deviation by role, with exact IEEE arithmetic only (the same bits on every machine, compiler and
// thread count; no std::normal_distribution, whose algorithm the standard leaves open), then
// rounded to `dtype` (kF32, or kBF16: bf16 numbers held in float32, so a BF16 folder and an F32
// GGUF of the model hold the same values). Adding a role or a layer leaves the others' draws
// unchanged (o and down still scale with the depth, below). The scales keep the forward pass O(1)
// at any depth and width and make the logits spread (std of order 1–3), so that a relative
// comparison of logits means something:
//   norms (head norms too) 1 ± 0.3 (uniform); q/k/v biases std 0.5; embedding std 1 (2/√hidden
//   when tied, as it is then the head); q, k std 1.5/√hidden (attention scores of std ~2); v,
//   gate, up (experts' too), router, shared-expert gate std 1/√fan_in; o and down (experts' too)
//   std 1/√fan_in and 1.5/√fan_in, times 1/√layers (so the residual stream does not grow with
//   depth); head std 2/√hidden.
// `source` stays empty; write_hf_model then write_gguf_model with source = the folder gives files.
// That is the in-memory path: a whole float32 model (32 GB for Llama-3-8B's shapes).
//
// weights = SynthWeights::kOutliers ("outliers") draws the same roles with the same average scales,
// with the structure measured on trained models instead of flat uniform values; biases are drawn as
// above. Exact arithmetic as above (the exponential is a fixed polynomial, normals are Irwin-Hall
// sums of a draw's four 16-bit parts), every value from its row's stream, so the same bits for any
// thread count. The parameters, and why (docs/OUTLIERS.md has the reference model's measurements):
//   * Values: near-normal (Irwin-Hall of 4) times a per-row (per-output-channel) scale e^(0.25 z),
//     z near-normal from the row's first draw, normalised so the role's std is kept on average.
//     Excess kurtosis about 0.4 (0.8 with the outlier columns below) and no far tail: the reference model's weights are near-Gaussian
//     (kurtosis 0.02-0.95, almost nothing beyond 6 sigma), where uniform draws have -1.2.
//   * Outlier input columns of every linear (head, router and experts included; not the embedding):
//     1 in 256 of its columns (at least one), chosen from the stream of (seed, role, layer, expert),
//     times a factor in [2, 3], the columns then scaled to keep the rows' mean square. The reference
//     model's flagged weight channels stand at 2.0-2.2 × the median channel max (max/median 1.35-2.2
//     per tensor), and weights there have no channels 10× larger: trained models' large outliers are
//     in the activations, which the next point makes.
//   * Norm gains (attention, MLP and final norms): log-normal e^(0.2 z) around 1, and in the model's
//     recurring outlier channels — 1 in 512 of the hidden channels (at least one), the same channels
//     in every norm (seeded by the seed alone; the reference model's largest channels recur layer
//     after layer, docs/OUTLIERS.md) — times a factor in [10, 50] drawn per norm; then scaled to a
//     mean square of 1. So the inputs of q/k/v, gate/up and the head carry a few channels 10-50×
//     the others' magnitude (LLM.int8()'s and SmoothQuant's outlier features of multi-billion
//     models, which the 26 M reference model is too small to show: its max/median is 1.3-3.0),
//     while the residual stream keeps the uniform weights' scale. Per-head q/k norms get the
//     log-normal spread only.
//
// Contract of synth_tokenizer_json(vocab): a Hugging Face tokenizer.json of exactly `vocab`
// tokens (>= kSynthMinVocab) in the SentencePiece-BPE layout of Llama-2-style models (Metaspace
// pre-tokenizer, byte_fallback, a Sequence decoder, a TemplateProcessing that prepends <s>):
// <unk> 0, <s> 1, </s> 2, the 256 byte tokens <0x00>..<0xFF> at 3..258, "▁" at 259, then single
// characters (letters by English frequency, digits, punctuation) and pieces made by merges
// (a piece + a character), in a fixed order, filling the rest. io::hf_tokenizer_to_gguf converts it
// to llama.cpp's "llama" vocabulary; calq's Tokenizer and llama.cpp load it.
// synth_tokenizer_config_json(): the tokenizer_config.json beside it (add_bos_token true,
// special tokens by name).
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

#include "core/dtype.h"
#include "io/safetensors.h"
#include "model/model.h"

namespace calq::model {

inline constexpr int64_t kSynthMinVocab = 260;  // 3 specials, 256 bytes, "▁"

struct SynthSpec {
  std::string model_type = "llama";
  int64_t layers = 2;
  int64_t hidden = 64;
  int64_t heads = 4;
  int64_t kv_heads = 0;  // 0: heads
  int64_t head_dim = 0;  // 0: hidden / heads
  int64_t ffn = 128;     // intermediate_size
  int64_t vocab = 320;
  int64_t sliding_window = 0;  // 0: none
  bool tied = false;
  int64_t max_position = 4096;
  double rope_theta = 10000.0;
  double rms_norm_eps = 1e-5;
  // Rotary scaling: "" (none), "linear" (rope_factor) or "llama3" (all four).
  std::string rope_scaling;
  double rope_factor = 8.0;
  double rope_low_freq_factor = 1.0;
  double rope_high_freq_factor = 4.0;
  int64_t rope_original_max_position = 8192;
  // Mixture-of-experts architectures only (0 = the default, given for a dense one is an error):
  // experts per layer (default 4), picked per token (default 2), each expert's width (default
  // ffn), the shared expert's width where the architecture has one (default ffn).
  int64_t experts = 0;
  int64_t experts_per_token = 0;
  int64_t expert_ffn = 0;
  int64_t shared_ffn = 0;
  // Renormalise the picked experts' weights; default: what llama.cpp does for the architecture
  // (so that the model can be written as GGUF).
  std::optional<bool> norm_topk_prob;
};

ModelConfig synth_config(const SynthSpec& spec);

enum class SynthWeights { kUniform, kOutliers };
// "uniform" or "outliers"; anything else is kInvalidArgument naming the option "weights".
SynthWeights parse_synth_weights(std::string_view name);

Model synth_model(const ModelConfig& config, uint64_t seed, ThreadPool& pool, DType dtype = DType::kF32,
                  SynthWeights weights = SynthWeights::kUniform);

struct SynthFolderOptions {
  DType dtype = DType::kF32;  // kF32 or kBF16 (else kInvalidArgument)
  SynthWeights weights = SynthWeights::kUniform;
  bool overwrite = false;
  uint64_t max_shard_bytes = 5'000'000'000;  // save_pretrained's default "5GB"
  io::ShardProgress progress;                // before each tensor is drawn
};
// The Hugging Face folder of synth_model(config, seed, pool, options.dtype, options.weights) with the
// generated tokenizer — config.json, the safetensors, tokenizer.json, tokenizer_config.json; the
// same bytes as write_hf_model of that model with those two files as extra_files — written tensor
// by tensor, each drawn straight into the file's dtype as its turn comes, never holding the model:
// the memory it needs is one tensor in the file's dtype (the embedding: 1 GB for Llama-3-8B's
// shapes in bf16). Folder rules and errors as write_hf_model (hf_export.h).
void write_synth_hf_model(const ModelConfig& config, uint64_t seed, const std::filesystem::path& folder,
                          const SynthFolderOptions& options, ThreadPool& pool);

std::string synth_tokenizer_json(int64_t vocab);
std::string synth_tokenizer_config_json();

}  // namespace calq::model
